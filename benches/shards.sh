#!/usr/bin/env bash
# Sharding (--shard K/N): N = 1, 2, 4 s3load processes, each with its share,
# against one test server, all into one directory.
#
# Each process stands for one pod limited by its own network: the server caps
# every connection at RATE MB/s and each process opens at most WORKERS
# connections, so one process moves at most RATE x WORKERS MB/s. Reports the
# combined rate, its ratio to N x one process, that the union of the shards is
# exactly the prefix, and that the bytes the shards fetched add up to the
# prefix's bytes (no object fetched twice).
#
# Two workloads: 16 x 32 MiB (even), and the same plus one 256 MiB object
# (skewed: larger than a fair share from N = 3 on, so it is split across the
# shards; with --no-split one shard takes it whole, which bounds the speed-up).
#
# Usage: benches/shards.sh [RUNS]   (env: RATE=20 WORKERS=4 DIR=/work/bench-tmp/shards)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
RATE="${RATE:-20}"
WORKERS="${WORKERS:-4}"
DIR="${DIR:-/work/bench-tmp/shards}"
mkdir -p "$DIR"
SERVER_ARGS="--large 16 --large-mib 32 --rate-mbps $RATE"
# shellcheck source=benches/testserver.sh
source benches/testserver.sh
s3() { "$BIN" --endpoint-url "$EP" --progress off --numworkers "$WORKERS" "$@"; }

# The skewed workload: the 16 objects and one of 256 MiB, under another prefix.
head -c $((256 << 20)) /dev/urandom >"$DIR/big.bin"
s3 cp "$DIR/big.bin" s3://bucket/skewed/big.bin >/dev/null
rm "$DIR/big.bin"
for i in $(seq 0 15); do s3 cp "s3://bucket/large/obj-$i.bin" "$DIR/o.bin" >/dev/null && s3 cp "$DIR/o.bin" "s3://bucket/skewed/obj-$i.bin" >/dev/null; done
rm -f "$DIR/o.bin"

echo "| workload | N | wall s (median of $RUNS) | MB/s combined | ratio to N x one process | files | bytes fetched / prefix |"
echo "|---|---|---|---|---|---|---|"
for workload in large skewed "skewed --no-split"; do
  read -r prefix flags <<<"$workload"
  expected_files=$(s3 ls "s3://bucket/$prefix/*" | wc -l)
  expected_bytes=$(s3 ls "s3://bucket/$prefix/*" | awk '{s += $(NF-1)} END {print s}')
  one=""
  for n in 1 2 4; do
    walls=()
    for run in $(seq "$RUNS"); do
      rm -rf "$DIR/dest" "$DIR"/summary-*.json
      sync
      start=$(date +%s.%N)
      pids=()
      rid="bench-$n-$run-$RANDOM$RANDOM"
      for k in $(seq 0 $((n - 1))); do
        s3 --summary-file "$DIR/summary-$k.json" sync --shard "$k/$n" --run-id "$rid" $flags "s3://bucket/$prefix/*" "$DIR/dest" >/dev/null 2>&1 &
        pids+=($!)
      done
      # Only the shards: a bare `wait` would also wait for the server.
      wait "${pids[@]}"
      end=$(date +%s.%N)
      walls+=("$(echo "$end - $start" | bc)")
      files=$(find "$DIR/dest" -type f ! -path '*/.s3load/*' | wc -l)
      fetched=$(cat "$DIR"/summary-*.json | python3 -c 'import sys, json; print(sum(json.loads(l)["bytes"] for l in sys.stdin))')
    done
    wall=$(printf '%s\n' "${walls[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
    [ -z "$one" ] && one=$wall
    rate=$(echo "scale=1; $expected_bytes / $wall / 1000000" | bc)
    ratio=$(echo "scale=2; $one / $wall / $n" | bc)
    printf '| %s | %s | %.2f | %s | %.2f | %s of %s | %s / %s |\n' "$workload" "$n" "$wall" "$rate" "$ratio" "$files" "$expected_files" "$fetched" "$expected_bytes"
  done
done
