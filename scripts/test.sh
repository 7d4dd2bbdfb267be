#!/usr/bin/env bash
# The whole test suite: unit, codec, API, store conformance, real-OVS and
# packet-level lab scenarios. Needs root (network namespaces, OVS).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

# Leftovers of an interrupted earlier run (our prefix only).
cargo build --workspace --all-targets --locked 2>&1 | tail -n 3

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Lab tests start OVS instances and namespaces; two at a time fit 2 cores.
cargo test --workspace --locked -- --test-threads="${STACKNET_TEST_THREADS:-2}"
