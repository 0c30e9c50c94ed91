#!/usr/bin/env bash
# Overlapping runs under a publisher that keeps changing the source, ROUNDS
# times (default 200), against the test server:
#
# - shards: N = 2..8 `sync --delete --shard K/N --run-id ID` processes into
#   one directory, half started before a publish and half after. Every file at
#   a final path must hold the bytes its path had in the source before or
#   after that publish (never a wrong or mixed file, whatever the exit codes).
#   Every 10th round, and after the last, the shards run again with the
#   source quiet: the directory must then equal the source exactly, with no
#   split, temporary or journal file left.
# - atomic: two `sync --atomic --keep 1` loaders at once and a `rollback`,
#   with a publish between them, while a reader resolves DEST over and over
#   and checks that the tree it resolved is one the source held whole at some
#   moment (never partial, never mixed). A version pruned while the reader was
#   still reading it is counted apart (`--keep 1` keeps the live version and
#   the one just replaced; a reader slower than two switches may lose its
#   version, as configuration.md says).
#
# The publisher changes one object at a time (replace, add or delete), so that
# every state of the source is well defined; each state's manifest is kept.
#
# Usage: benches/overlap-stress.sh [ROUNDS]   (env: DIR=$TMPDIR/s3load-overlap-stress)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-200}"
DIR="${DIR:-${TMPDIR:-/tmp}/s3load-overlap-stress}"
rm -rf "$DIR" && mkdir -p "$DIR/pub" "$DIR/states"
SERVER_ARGS=""
# shellcheck source=benches/testserver.sh
source benches/testserver.sh
s3() { "$BIN" --endpoint-url "$EP" --progress off "$@"; }

# The source: ten small files and one of 6 MiB (split across shards with -p 1).
for i in $(seq 0 9); do head -c $(((i + 1) * 65536)) /dev/urandom >"$DIR/pub/f$i.bin"; done
head -c $((6 << 20)) /dev/urandom >"$DIR/pub/big.bin"
s3 sync "$DIR/pub/" s3://bucket/m/ >/dev/null 2>&1
state=0
# A state's manifest: "path sha256" lines, sorted; states/N.txt and its digest.
manifest() { (cd "$1" && find . -type f ! -path './.s3load/*' ! -name '*.s3load-*' -printf '%P\n' | sort | while read -r f; do echo "$f $(sha256sum <"$f" | cut -c1-64)"; done); }
record_state() { manifest "$DIR/pub" >"$DIR/states/$state.txt"; sha256sum <"$DIR/states/$state.txt" | cut -c1-64 >>"$DIR/states/digests"; }
record_state

# One change to the source, one object at a time.
publish() {
  local n=$((RANDOM % 10)) what=$((RANDOM % 6))
  if [ "$what" = 0 ] && [ -e "$DIR/pub/extra-$n.bin" ]; then
    rm "$DIR/pub/extra-$n.bin"
    s3 sync --delete "$DIR/pub/" s3://bucket/m/ >/dev/null 2>&1
  elif [ "$what" = 1 ]; then
    head -c $((RANDOM * 4)) /dev/urandom >"$DIR/pub/extra-$n.bin"
    s3 cp "$DIR/pub/extra-$n.bin" "s3://bucket/m/extra-$n.bin" >/dev/null 2>&1
  elif [ "$what" = 2 ]; then
    head -c $((6 << 20)) /dev/urandom >"$DIR/pub/big.bin"
    s3 cp "$DIR/pub/big.bin" s3://bucket/m/big.bin >/dev/null 2>&1
  else
    head -c $(((n + 1) * 65536)) /dev/urandom >"$DIR/pub/f$n.bin"
    s3 cp "$DIR/pub/f$n.bin" "s3://bucket/m/f$n.bin" >/dev/null 2>&1
  fi
  state=$((state + 1))
  record_state
}

# Files of $1 whose bytes match neither manifest $2 nor $3 for their path.
wrong_files() {
  python3 - "$1" "$2" "$3" <<'EOF'
import hashlib, os, sys
root, a, b = sys.argv[1:4]
want = {}
for m in (a, b):
    for line in open(m):
        p, h = line.split()
        want.setdefault(p, set()).add(h)
bad = 0
for d, dirs, files in os.walk(root):
    dirs[:] = [x for x in dirs if x != ".s3load"]
    for f in files:
        if ".s3load-" in f:
            continue
        p = os.path.relpath(os.path.join(d, f), root)
        h = hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
        if h not in want.get(p, ()):
            bad += 1
            print("wrong:", p, file=sys.stderr)
print(bad)
EOF
}

# The reader of the atomic DEST: resolves it, reads the whole tree, checks its
# manifest is one the source held. Runs until $DIR/stop-reader exists.
reader() {
  local checked=0 mixed=0 pruned=0
  while [ ! -e "$DIR/stop-reader" ]; do
    target=$(readlink -f "$DIR/model" 2>/dev/null) || { sleep 0.01; continue; }
    [ -d "$target" ] || { sleep 0.01; continue; }
    if m=$(manifest "$target" 2>/dev/null) && [ -d "$target" ]; then
      d=$(printf '%s\n' "$m" | sha256sum | cut -c1-64)
      if grep -qx "$d" "$DIR/states/digests"; then checked=$((checked + 1)); else
        # A version pruned mid-read reads short: not a mixed tree.
        if [ -d "$target" ]; then mixed=$((mixed + 1)); echo "mixed tree at $target" >&2; else pruned=$((pruned + 1)); fi
      fi
    else
      pruned=$((pruned + 1))
    fi
  done
  echo "$checked $mixed $pruned" >"$DIR/reader-counts"
}

shard_runs=0 shard_nonzero=0 shard_wrong=0 quiet_checks=0 quiet_missing=0 quiet_extra=0 quiet_wrong=0 left_behind=0
atomic_runs=0 atomic_nonzero=0 atomic_bad_dest=0 rollbacks=0
run_shards() { # N ID
  local pids=() k
  for k in $(seq 0 $(($1 - 1))); do
    s3 --numworkers 2 sync --delete --shard "$k/$1" --run-id "$2" -p 1 's3://bucket/m/*' "$DIR/shards" >/dev/null 2>>"$DIR/shards.err" &
    pids+=($!)
  done
  local p
  for p in "${pids[@]}"; do
    shard_runs=$((shard_runs + 1))
    wait "$p" || shard_nonzero=$((shard_nonzero + 1))
  done
}
quiet_check() {
  local n=$((2 + RANDOM % 7))
  # A quiet point: split files are taken for leftovers only once they have
  # stood for 2 s (another run's may not be locked yet).
  sleep 2.1
  run_shards "$n" "quiet-$1"
  quiet_checks=$((quiet_checks + 1))
  local have want
  have=$(manifest "$DIR/shards")
  want=$(cat "$DIR/states/$state.txt")
  quiet_missing=$((quiet_missing + $(comm -13 <(printf '%s\n' "$have" | cut -d' ' -f1) <(printf '%s\n' "$want" | cut -d' ' -f1) | grep -c . || true)))
  quiet_extra=$((quiet_extra + $(comm -23 <(printf '%s\n' "$have" | cut -d' ' -f1) <(printf '%s\n' "$want" | cut -d' ' -f1) | grep -c . || true)))
  quiet_wrong=$((quiet_wrong + $(comm -13 <(printf '%s\n' "$have") <(printf '%s\n' "$want") | grep -c . || true) - $(comm -13 <(printf '%s\n' "$have" | cut -d' ' -f1) <(printf '%s\n' "$want" | cut -d' ' -f1) | grep -c . || true)))
  find "$DIR/shards" -name '*.s3load-*' -printf 'left after quiet run %f\n' >&2
  left_behind=$((left_behind + $(find "$DIR/shards" -name '*.s3load-*' | wc -l)))
}

reader &
READER=$!
trap 'touch "$DIR/stop-reader"; kill $SERVER 2>/dev/null || true' EXIT
for round in $(seq "$ROUNDS"); do
  # Shards, with a publish between the first half and the rest.
  n=$((2 + round % 7))
  before=$state
  pids=()
  for k in $(seq 0 $((n - 1))); do
    if [ "$k" = $((n / 2)) ]; then publish; fi
    s3 --numworkers 2 sync --delete --shard "$k/$n" --run-id "round-$round" -p 1 's3://bucket/m/*' "$DIR/shards" >/dev/null 2>>"$DIR/shards.err" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    shard_runs=$((shard_runs + 1))
    wait "$p" || shard_nonzero=$((shard_nonzero + 1))
  done
  shard_wrong=$((shard_wrong + $(wrong_files "$DIR/shards" "$DIR/states/$before.txt" "$DIR/states/$state.txt" 2>>"$DIR/wrong.log")))
  if ((round % 10 == 0)) || ((round == ROUNDS)); then quiet_check "$round"; fi

  # Two atomic loaders and a rollback, with a publish between them.
  s3 sync --atomic --keep 1 's3://bucket/m/*' "$DIR/model" >/dev/null 2>>"$DIR/atomic.err" &
  a=$!
  publish
  s3 sync --atomic --keep 1 's3://bucket/m/*' "$DIR/model" >/dev/null 2>>"$DIR/atomic.err" &
  b=$!
  r=-
  if ((RANDOM % 2)); then s3 rollback "$DIR/model" >/dev/null 2>>"$DIR/atomic.err" & r=$!; fi
  for p in $a $b; do
    atomic_runs=$((atomic_runs + 1))
    wait "$p" || atomic_nonzero=$((atomic_nonzero + 1))
  done
  if [ "$r" != - ]; then rollbacks=$((rollbacks + 1)); wait "$r" || true; fi
  # DEST resolves to a whole version the source held.
  if ! m=$(manifest "$(readlink -f "$DIR/model")") || ! grep -qx "$(printf '%s\n' "$m" | sha256sum | cut -c1-64)" "$DIR/states/digests"; then
    atomic_bad_dest=$((atomic_bad_dest + 1))
    echo "round $round: DEST is not a whole published state" >&2
  fi
done
touch "$DIR/stop-reader"
wait "$READER"
# The source quiet: one more load, which also prunes what earlier failed
# builds left (nothing else builds now).
s3 sync --atomic --keep 1 's3://bucket/m/*' "$DIR/model" >/dev/null 2>>"$DIR/atomic.err" || atomic_nonzero=$((atomic_nonzero + 1))
read -r reads mixed pruned <"$DIR/reader-counts"
partials=$(find "$DIR" -maxdepth 2 -name '.*.partial' | wc -l)

echo "rounds: $ROUNDS; source states published: $state"
echo "shards: $shard_runs runs ($shard_nonzero non-zero), files wrong for their path: $shard_wrong"
echo "quiet re-runs: $quiet_checks; files missing: $quiet_missing, extra: $quiet_extra, wrong: $quiet_wrong; split/temporary/journal files left: $left_behind"
echo "atomic: $atomic_runs loader runs ($atomic_nonzero non-zero), $rollbacks rollbacks; DEST not a whole published state after a round: $atomic_bad_dest; .partial builds left: $partials"
echo "reader: $reads trees read whole and found to be a published state, $mixed partial or mixed, $pruned pruned while read"
