#!/bin/sh
# Starts one replica of the reference service, built by `cargo build -p harbor-service` (or with
# `--release` and HARBOR_REFERENCE_BUILD=release, as `cargo xtask bench` does), with the
# environment the harness computed from target.toml.
here=$(cd "$(dirname "$0")" && pwd)
exec "${CARGO_TARGET_DIR:-$here/../../target}/${HARBOR_REFERENCE_BUILD:-debug}/harbor-service" serve
