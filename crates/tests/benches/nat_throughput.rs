//! TCP throughput out through a NAT gateway and through an EIP, as ratios
//! to plain east-west throughput between two VMs of the VPC, in one run
//! (iperf3 in the lab).
//!
//! Lab: node0 (compute, external segment: VM a's EIP), node1 (compute: VM
//! b, the sender), node2 and node3 (gateway nodes). Every path crosses one
//! VXLAN tunnel or one external hop: b → a (east-west, node1 → node0),
//! b → Internet host (SNAT on the active gateway, node1 → gateway →
//! outside), a → Internet host (1:1 NAT on node0, straight out). Runs
//! rotate between the three, `ROUNDS` rounds of `SECS`-second runs; each
//! round's ratios are taken from runs close in time and the medians are
//! the figures, printed with the load average (the machine is shared).
//!
//! Runs the real product on a lab (release binaries: `scripts/bench.sh`).

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{json, Value};
use tests::{require_root_and_tools, wait_until, Cloud, Proc};

const ROUNDS: usize = 6;
const SECS: u32 = 4;
const INTERNET: &str = "198.51.100.10";

fn main() {
    require_root_and_tools().unwrap();
    let mut cloud = Cloud::start_external(4, &[0, 2, 3], &[2, 3]).unwrap();
    let inet = cloud
        .lab
        .add_outside_host("inet", &["203.0.113.1/24"], None)
        .unwrap();
    inet.run(&["ip", "addr", "add", &format!("{INTERNET}/32"), "dev", "lo"])
        .unwrap();
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let ext = cloud
        .external_network(
            "internet",
            "internet",
            "203.0.113.0/24",
            ip("203.0.113.1"),
            &[(ip("203.0.113.10"), ip("203.0.113.60"))],
            &[0, 2, 3],
        )
        .unwrap();
    let vpc = cloud.vpc("natperf", "10.80.0.0/16").unwrap();
    cloud.attach_vpc(&vpc, &[&ext]).unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.80.1.0/24").unwrap();
    let open = cloud
        .api
        .create(
            "/v1/security-groups",
            &json!({"vpc_id": vpc["id"], "name": "open", "rules": [
                {"direction": "egress"}, {"direction": "ingress", "protocol": "tcp"}]}),
        )
        .unwrap();
    let nic = |node: usize, addr: &str| {
        cloud
            .api
            .create(
                "/v1/nics",
                &json!({"subnet_id": sn["id"], "node": cloud.lab.node(node).unwrap().name(),
                    "ip": addr, "security_groups": [open["id"]]}),
            )
            .unwrap()
    };
    let nic_a = nic(0, "10.80.1.10");
    let nic_b = nic(1, "10.80.1.20");
    let gw_eip = cloud.allocate_eip(&ext, None, None).unwrap();
    let gw = cloud.nat_gateway("gw", &vpc, &ext, &[&gw_eip]).unwrap();
    cloud
        .snat_rule(&gw, json!({"subnet_id": sn["id"]}), &gw_eip)
        .unwrap();
    let a_eip = cloud.allocate_eip(&ext, None, None).unwrap();
    cloud.bind_eip(&a_eip, &nic_a).unwrap();
    cloud.vm("a", &nic_a, &sn).unwrap();
    cloud.vm("b", &nic_b, &sn).unwrap();

    let servers: Vec<Proc> = [
        (
            cloud.lab.host("inet").unwrap().netns(),
            INTERNET,
            "iperf3-inet",
        ),
        (cloud.lab.vm("a").unwrap().netns(), "10.80.1.10", "iperf3-a"),
    ]
    .into_iter()
    .map(|(ns, addr, name)| ns.spawn(name, &["iperf3", "-s", "-B", addr], None).unwrap())
    .collect();
    let paths = [
        ("east-west b → a", "b", "10.80.1.10"),
        ("NAT gateway b → Internet", "b", INTERNET),
        ("EIP a → Internet", "a", INTERNET),
    ];
    for (what, vm, dst) in paths {
        wait_until(Duration::from_secs(30), what, || {
            cloud
                .lab
                .vm(vm)
                .unwrap()
                .run(&["iperf3", "-c", dst, "-t", "1"])
                .is_ok()
        })
        .unwrap();
    }
    let mut rounds: Vec<[f64; 3]> = Vec::new();
    for round in 0..ROUNDS {
        let mut r = [0.0; 3];
        for (i, (what, vm, dst)) in paths.iter().enumerate() {
            r[i] = iperf(&cloud, vm, dst);
            println!("round {round}: {what} {:.3} Gbit/s", r[i]);
        }
        rounds.push(r);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let col = |i: usize| median(rounds.iter().map(|r| r[i]).collect());
    let ratio = |i: usize| median(rounds.iter().map(|r| r[i] / r[0]).collect());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "iperf3, {ROUNDS} rounds of {SECS}s runs: medians east-west {:.3}, NAT gateway {:.3}, EIP {:.3} Gbit/s; \
         median of round ratios NAT/east-west {:.3}, EIP/east-west {:.3}; load average {}",
        col(0),
        col(1),
        col(2),
        ratio(1),
        ratio(2),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    drop(servers);
}

/// One iperf3 run from VM `vm` to `dst`; the receiver's rate in Gbit/s.
fn iperf(cloud: &Cloud, vm: &str, dst: &str) -> f64 {
    let out = cloud
        .lab
        .vm(vm)
        .unwrap()
        .run(&["iperf3", "-c", dst, "-t", &SECS.to_string(), "-J"])
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}
