#!/bin/sh
# Starts one replica of the flask-seed target with the environment the harness computed.
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/.venv/bin/python" "$here/app.py"
