#!/usr/bin/env bash
# `sync --atomic`: what a version costs on disk and how long the switch takes.
# Loads 8 x 64 MiB through the test server (no network shaping), replaces one
# object, loads again, and reports the versions directory's size (`du`, which
# counts hard-linked files once), then times `rollback` (one switch: a new
# symlink renamed over DEST, the directory flushed, the history appended; the
# newest version is switched back to between rollbacks, untimed) and a no-op
# `sync --atomic` (list, compare the version id, nothing to do).
#
# Usage: benches/atomic.sh [RUNS]   (env: DIR=/work/bench-tmp/atomic)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
DIR="${DIR:-/work/bench-tmp/atomic}"
rm -rf "$DIR" && mkdir -p "$DIR"
SERVER_ARGS="--large 8 --large-mib 64"
# shellcheck source=benches/testserver.sh
source benches/testserver.sh
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
    if [ "$what" = rollback ]; then
      s3 rollback "$DIR/model" 2>/dev/null
      times+=("$(ms "$t")")
      # Back to the newest version for the next rollback (untimed): a switch
      # to a version kept on disk, nothing fetched.
      s3 sync --atomic "s3://bucket/large/*" "$DIR/model" >/dev/null 2>&1
      continue
    fi
    s3 sync --atomic "s3://bucket/large/*" "$DIR/model" 2>/dev/null
    times+=("$(ms "$t")")
  done
  echo "$what: median $(printf '%s\n' "${times[@]}" | median) ms of $RUNS (whole process, start to exit)"
done
