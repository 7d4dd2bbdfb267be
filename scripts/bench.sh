#!/usr/bin/env bash
# Every benchmark, in release, printing its figures. Needs root (the lab).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked -p flowctl -p vswitch-agent
cargo bench --locked -p flowctl --bench compile
cargo bench --locked -p api --bench store
cargo bench --locked -p api --bench http
cargo bench --locked -p openflow --bench bundle_install
cargo bench --locked -p tests --bench nic_ready
cargo bench --locked -p tests --bench sg_flows
cargo bench --locked -p tests --bench sg_enforce
cargo bench --locked -p tests --bench sg_throughput
cargo bench --locked -p tests --bench nat_throughput
cargo bench --locked -p tests --bench agent_restart
cargo bench --locked -p vswitch-agent --bench fanout
