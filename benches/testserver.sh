# Sourced by the benchmark scripts: builds s3load and the test server, starts
# the server with the arguments given ($SERVER_ARGS) and logs in $DIR/server.log,
# and defines s3 (s3load against it, progress off). The server stops on exit.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3load/target}"
cargo build --release --locked -p s3load --bin s3load >&2
cargo build --release --locked -p s3load-testserver --bin s3load-testserver >&2
BIN="$CARGO_TARGET_DIR/release/s3load"
LOG="$DIR/server.log"
# shellcheck disable=SC2086
"$CARGO_TARGET_DIR/release/s3load-testserver" $SERVER_ARGS >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq "${SERVER_WAIT:-100}"); do grep -q '^endpoint' "$LOG" && break; sleep 0.1; done
EP=$(awk '/^endpoint/ {print $2}' "$LOG")
eval "$(grep '^export' "$LOG")"
export AWS_EC2_METADATA_DISABLED=true
