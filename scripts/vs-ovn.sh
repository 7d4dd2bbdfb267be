#!/usr/bin/env bash
# The OVN comparison of issue 8, workloads 1-4, on stacknet and on OVN from
# Debian's packages (ovn-central/ovn-host 23.03, same OVS, netdev datapath),
# one system after the other on the same machine, with the ratios
# stacknet / OVN: 1 NIC ready (+ NIC delete), 2 scale shape (100 VPCs x 100
# NICs with routers), 3 rule change on a 10,000-member group, 4 agent /
# ovn-controller restart on a node with >100,000 flows. Needs root (the
# lab). Prints a table per workload; the JSON goes to
# $CARGO_TARGET_DIR/vs-ovn.json (or $VS_OVN_JSON).
#
#   bash scripts/vs-ovn.sh                    # 1 warm-up + 5 rounds each (~1 h)
#   VS_OVN_QUICK=1 bash scripts/vs-ovn.sh     # small sizes, 1 round (~2 min, CI)
#   VS_OVN_REPS=2 VS_OVN_WORKLOADS=2,4 bash scripts/vs-ovn.sh
#   # other knobs: see crates/tests/benches/vs_ovn.rs
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in ovn-central ovn-host; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' init scripts would start a system ovn-northd, NB/SB
  # databases and ovn-controller (against the system OVS). The bench runs
  # its own in the run directory, so forbid service starts for the install:
  # an existing policy-rc.d is left alone, ours is removed afterwards.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  trap 'if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Where init is systemd and something started anyway, stop it again.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for u in ovn-controller ovn-northd ovn-ovsdb-server-nb ovn-ovsdb-server-sb ovn-central ovn-host; do
      systemctl stop "$u" 2>/dev/null || true
      systemctl disable "$u" 2>/dev/null || true
    done
  fi
fi

bash scripts/install-deps.sh
cargo build --release --locked -p flowctl -p vswitch-agent
# cargo runs benches in crates/tests: give the JSON an absolute path.
export VS_OVN_JSON="${VS_OVN_JSON:-${CARGO_TARGET_DIR:-$PWD/target}/vs-ovn.json}"
cargo bench --locked -p tests --bench vs_ovn
