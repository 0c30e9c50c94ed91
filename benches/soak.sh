#!/usr/bin/env bash
# The soak (tests/it/soak.rs) at full size: sync runs, downloads and uploads,
# many of them killed at a random moment, against the in-process test server
# failing at random, while the source changes, until GIB GiB have moved and
# at least 100 runs were made.
# Release builds of s3load and of the test harness. Prints the counters; fails
# if any file was wrong, missing or left behind. S3LOAD_SOAK_REPORT=FILE also
# writes the counters to FILE.
# Usage: benches/soak.sh [GIB (default 50)] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3load/target}"
export S3LOAD_SOAK_GIB="${1:-50}"
export S3LOAD_SOAK_SEED="${2:-20261204}"
exec cargo test --release --locked --test it soak:: -- --nocapture
