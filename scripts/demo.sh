#!/usr/bin/env bash
# Builds stacknet and brings it up on this machine with the embedded store:
# two compute nodes (namespaces with their own Open vSwitch), flowctl with the
# REST API, an agent per node, a VPC with two subnets and three VMs; shows
# traffic, then tears everything down. `--keep` leaves it running until Enter.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --workspace --bins --locked
export STACKNET_BIN_DIR="$PWD/target/debug"
exec target/debug/stacknet-demo "$@"
