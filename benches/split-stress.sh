#!/usr/bin/env bash
# Objects split across shards, under stress: N shards (default 8) at once
# into one directory, ITERATIONS times; in every other iteration one shard,
# picked at random, is SIGKILLed after a random delay and then run again (a
# pod restarted by its Job). Each iteration must end with every object in
# place and byte-exact (compared with `s3load cat`), one `cp` line per object
# over all shards, and no temporary file, piece journal or shared file left.
#
# Usage: benches/split-stress.sh [ITERATIONS] [N]   (env: RATE=5 MB/s per
# connection and 2 connections per shard, so that kills land mid-piece;
# DIR=/work/bench-tmp/split-stress)
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS="${1:-20}"
N="${2:-8}"
RATE="${RATE:-5}"
DIR="${DIR:-/work/bench-tmp/split-stress}"
rm -rf "$DIR" && mkdir -p "$DIR"
SERVER_ARGS="--large 2 --large-mib 64 --rate-mbps $RATE"
# shellcheck source=benches/testserver.sh
source benches/testserver.sh
s3() { "$BIN" --endpoint-url "$EP" --progress off "$@"; }
for i in 0 1; do s3 cat "s3://bucket/large/obj-$i.bin" >"$DIR/want-$i"; done
shard() { s3 --numworkers 2 sync --shard "$1/$N" --run-id "stress-$it" -p 1 's3://bucket/large/*' "$DIR/dest" >>"$DIR/out" 2>>"$DIR/err-$1"; }
bad=0
for it in $(seq "$ITERATIONS"); do
  rm -rf "$DIR/dest" "$DIR/out" "$DIR"/err-*
  pids=()
  for k in $(seq 0 $((N - 1))); do shard "$k" & pids+=($!); done
  killed=-
  if ((it % 2 == 0)); then
    killed=$((RANDOM % N))
    sleep "0.$((RANDOM % 10))"
    # The shard's s3load process (the subshell's child).
    if pkill -KILL -P "${pids[$killed]}" s3load; then killed="$killed (mid-run)"; else killed="$killed (had finished)"; fi
  fi
  for p in "${pids[@]}"; do wait "$p" || true; done
  [ "$killed" != - ] && shard "${killed%% *}"
  cps=$(grep -c '^cp ' "$DIR/out" || true)
  left=$(find "$DIR/dest" -name '.*s3load-*' | wc -l)
  same=0
  for i in 0 1; do cmp -s "$DIR/dest/obj-$i.bin" "$DIR/want-$i" && same=$((same + 1)); done
  echo "iteration $it: killed shard $killed; objects byte-exact $same of 2, cp lines $cps, leftovers $left"
  if [ "$same" != 2 ] || [ "$left" != 0 ]; then bad=$((bad + 1)); fi
done
echo "failed iterations: $bad of $ITERATIONS"
