#!/usr/bin/env bash
# The atomic-switch reader test with more kill points than CI runs (50):
# a reader checks every version it resolves against the two manifests while the
# loader switches between them and is SIGKILLed at spread-out points.
# Usage: benches/atomic-kills.sh [KILLS]   (default 500)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3load/target}"
S3LOAD_ATOMIC_KILLS="${1:-500}" cargo test --locked --test it -- --exact \
  atomic::readers_never_see_a_mixed_or_partial_tree_across_switches_and_kills --nocapture
