#!/bin/sh
# Makes .venv with the pinned dependencies (idempotent: does nothing when they are installed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if [ -x .venv/bin/python ] && cmp -s requirements.txt .venv/requirements.txt; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
cp requirements.txt .venv/requirements.txt
