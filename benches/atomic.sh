#!/usr/bin/env bash
# `sync --atomic`: what a version costs on disk and how long the switch takes.
# Loads 8 x 64 MiB through the test server (no network shaping), replaces one
# object, loads again, and reports the versions directory's size (`du`, which
# counts hard-linked files once), then times `rollback` (one switch: a new
# symlink renamed over DEST, the directory flushed, the history appended) and a
# no-op `sync --atomic` (list, compare the version id, nothing to do).
#
# Usage: benches/atomic.sh [RUNS]   (env: DIR=/work/bench-tmp/atomic)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3load/target}"
RUNS="${1:-5}"
DIR="${DIR:-/work/bench-tmp/atomic}"
cargo build --release --locked -p s3load --bin s3load >&2
cargo build --release --locked -p s3load-testserver --bin s3load-testserver >&2
BIN="$CARGO_TARGET_DIR/release/s3load"
SRV="$CARGO_TARGET_DIR/release/s3load-testserver"
rm -rf "$DIR" && mkdir -p "$DIR"
LOG="$DIR/server.log"
"$SRV" --large 8 --large-mib 64 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^endpoint' "$LOG" && break; sleep 0.1; done
EP=$(awk '/^endpoint/ {print $2}' "$LOG")
eval "$(grep '^export' "$LOG")"
export AWS_EC2_METADATA_DISABLED=true
s3() { "$BIN" --endpoint-url "$EP" --progress off "$@"; }
ms() { python3 -c 'import sys,time; print(round((time.time()-float(sys.argv[1]))*1000))' "$1"; }
median() { sort -n | sed -n "$(((RUNS + 1) / 2))p"; }

s3 sync --atomic "s3://bucket/large/*" "$DIR/model" 2>/dev/null
one=$(du -sm "$DIR/.model.versions" | cut -f1)
head -c $((64 << 20)) /dev/urandom >"$DIR/new.bin"
s3 cp "$DIR/new.bin" s3://bucket/large/obj-0.bin >/dev/null 2>&1
rm "$DIR/new.bin"
s3 sync --atomic "s3://bucket/large/*" "$DIR/model" 2>/dev/null
two=$(du -sm "$DIR/.model.versions" | cut -f1)
echo "versions directory: one version ${one} MiB; two versions (one 64 MiB object changed) ${two} MiB"
for what in rollback noop; do
  times=()
  for _ in $(seq "$RUNS"); do
    t=$(python3 -c 'import time; print(time.time())')
    if [ "$what" = rollback ]; then s3 rollback "$DIR/model" 2>/dev/null; else s3 sync --atomic "s3://bucket/large/*" "$DIR/model" 2>/dev/null; fi
    times+=("$(ms "$t")")
  done
  echo "$what: median $(printf '%s\n' "${times[@]}" | median) ms of $RUNS (whole process, start to exit)"
done
