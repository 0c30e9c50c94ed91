#!/usr/bin/env bash
# s3load with and without a straggling connection (one GET body in twenty at
# 5 MB/s), on the test server shaped at 20 ms and 100 MB/s per connection.
# See benches/straggler.py. Usage: benches/straggler.sh [--runs N] [--dir PATH]
# (S3LOAD_BIN=path measures another build of s3load.)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3load/target}"
cargo build --release --locked -p s3load --bin s3load >&2
cargo build --release --locked -p s3load-testserver --bin s3load-testserver >&2
exec python3 benches/straggler.py --s3load "${S3LOAD_BIN:-$CARGO_TARGET_DIR/release/s3load}" \
    --server "$CARGO_TARGET_DIR/release/s3load-testserver" "$@"
