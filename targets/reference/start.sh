#!/bin/sh
# Starts one replica of the reference service, built by `cargo build -p harbor-service`, with the
# environment the harness computed from target.toml.
here=$(cd "$(dirname "$0")" && pwd)
exec "${CARGO_TARGET_DIR:-$here/../../target}/debug/harbor-service" serve
