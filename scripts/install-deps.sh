#!/usr/bin/env bash
# Installs what stacknet builds and tests with on a fresh Debian machine (as
# root). Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  openvswitch-switch   # ovsdb-server, ovs-vswitchd, ovs-vsctl/ofctl for inspection
  etcd-server          # the HA store backend's tests
  protobuf-compiler libprotobuf-dev  # protoc + well-known .protos: etcd-client generates its gRPC code at build time
  iproute2             # ip netns, veth
  ethtool              # tx checksum offload off on VM veths (netdev datapath)
  isc-dhcp-client      # a real DHCP client inside VM namespaces
  iputils-ping
  netcat-openbsd       # TCP transfers in the lab
  iperf3
  tcpdump
  busybox
  procps
  ca-certificates
  curl
  pkg-config
  build-essential
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The package's init scripts would start a system OVS; the lab runs its
  # own instances in private namespaces and never uses the system one.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (rustup toolchain); see rust-toolchain.toml" >&2
  exit 1
fi
