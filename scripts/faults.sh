#!/usr/bin/env bash
# The HA fault scenarios (crates/tests/tests/faults.rs) with a long traffic
# window: each fault is held for FAULTS_SECS seconds (default 300) while VMs
# ping every 100 ms and hold a TCP stream. Prints the FIGURE lines of every
# scenario. Needs root (the lab) and etcd-server.
#
#   FAULTS_SECS=300 bash scripts/faults.sh              # every scenario
#   FAULTS_SECS=600 bash scripts/faults.sh control_plane_killed
set -euo pipefail
cd "$(dirname "$0")/.."
export FAULTS_SECS="${FAULTS_SECS:-300}"
cargo build --locked -p flowctl -p vswitch-agent
# One scenario at a time: each holds its fault for minutes, and timing
# figures are cleaner without a neighbour on the 2 cores.
cargo test --locked -p tests --test faults -- --nocapture --test-threads=1 "$@" 2>&1 |
    tee /dev/stderr | grep -E '^FIGURE|^test |^test result' || true
