//! TCP throughput between two VMs on different nodes (iperf3 in the lab)
//! with a 1,000-rule security group on both NICs, as a ratio to the same
//! run with port security off. Goal: at least 0.9.
//!
//! The group's 1,000 ingress rules mix what tenants write: 600 TCP port
//! ranges from remote groups (conjunctive matches), 300 single ports from
//! /32 and /24 CIDRs, 99 ICMP and UDP rules, and the one rule that admits
//! iperf3 (tcp 5201 from the VPC's subnet). Runs alternate between the two
//! configurations on the same VMs (the NICs are switched through the API),
//! `ROUNDS` pairs of `SECS`-second runs. The machine is shared (other
//! builds come and go), so each pair's ratio is taken from two runs close
//! in time, and the median of those ratios is the figure; the load average
//! is printed with it.
//!
//! Runs the real product on a lab (release binaries: `scripts/bench.sh`).

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{json, Value};
use tests::{require_root_and_tools, wait_until, Cloud};

const ROUNDS: usize = 8;
const SECS: u32 = 4;

fn main() {
    require_root_and_tools().unwrap();
    let mut cloud = Cloud::start(2).unwrap();
    let vpc = cloud.vpc("sgperf", "10.70.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.70.1.0/24").unwrap();
    let create_group = |name: &str, rules: Vec<Value>| {
        cloud
            .api
            .create(
                "/v1/security-groups",
                &json!({"vpc_id": vpc["id"], "name": name, "rules": rules}),
            )
            .unwrap()
    };
    let remotes: Vec<Value> = (0..10)
        .map(|i| create_group(&format!("clients{i}"), vec![]))
        .collect();
    let mut rules = vec![json!({"direction": "egress"})];
    rules.push(
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 5201,
        "remote_cidr": "10.70.1.0/24"}),
    );
    for i in 0..600 {
        rules.push(json!({"direction": "ingress", "protocol": "tcp",
            "port_range_min": 20000 + 16 * i, "port_range_max": 20000 + 16 * i + 9,
            "remote_group_id": remotes[i % 10]["id"]}));
    }
    for i in 0..300u32 {
        let cidr = if i % 2 == 0 {
            format!("198.51.{}.{}/32", i / 250, i % 250)
        } else {
            format!("203.0.{}.0/24", i % 250)
        };
        rules.push(json!({"direction": "ingress", "protocol": "tcp",
            "port_range_min": 30000 + i, "remote_cidr": cidr}));
    }
    for i in 0..98u32 {
        rules.push(if i % 2 == 0 {
            json!({"direction": "ingress", "protocol": "udp", "port_range_min": 40000 + i,
                "remote_group_id": remotes[(i % 10) as usize]["id"]})
        } else {
            json!({"direction": "ingress", "protocol": "icmp", "icmp_type": 8,
                "remote_cidr": format!("192.0.2.{i}/32")})
        });
    }
    assert_eq!(rules.len(), 1000, "egress rule + 999 ingress rules");
    let big = create_group("big", rules);
    println!(
        "group `big`: {} rules",
        big["rules"].as_array().unwrap().len()
    );
    // Members of the remote groups, so their address sets are not empty.
    let node1 = cloud.lab.node(1).unwrap().name().to_string();
    for (i, r) in remotes.iter().enumerate() {
        for k in 0..10 {
            cloud
                .api
                .create(
                    "/v1/nics",
                    &json!({"subnet_id": sn["id"], "node": node1,
                        "ip": format!("10.70.1.{}", 100 + i * 10 + k), "security_groups": [r["id"]]}),
                )
                .unwrap();
        }
    }
    let nic = |node: usize, addr: &str| {
        cloud
            .api
            .create(
                "/v1/nics",
                &json!({"subnet_id": sn["id"], "node": cloud.lab.node(node).unwrap().name(),
                    "ip": addr, "security_groups": [big["id"]]}),
            )
            .unwrap()
    };
    let a = nic(0, "10.70.1.10");
    let b = nic(1, "10.70.1.20");
    cloud.vm("a", &a, &sn).unwrap();
    cloud.vm("b", &b, &sn).unwrap();
    let ip_b: Ipv4Addr = b["ip"].as_str().unwrap().parse().unwrap();
    let server = cloud
        .lab
        .vm("b")
        .unwrap()
        .netns()
        .spawn("iperf3-s", &["iperf3", "-s", "-B", &ip_b.to_string()], None)
        .unwrap();

    let set = |secure: bool| {
        for n in [&a, &b] {
            let uri = format!("/v1/nics/{}", n["id"].as_str().unwrap());
            let body = if secure {
                json!({"port_security": true, "security_groups": [big["id"]]})
            } else {
                json!({"port_security": false, "security_groups": []})
            };
            cloud
                .api
                .patch(&uri, &body)
                .unwrap()
                .ok("PATCH", &uri)
                .unwrap();
        }
        // Applied on both nodes: a fresh connection goes through.
        let va = cloud.lab.vm("a").unwrap();
        wait_until(Duration::from_secs(30), "iperf3 port reachable", || {
            va.run(&[
                "timeout",
                "3",
                "nc",
                "-z",
                "-n",
                "-w",
                "2",
                &ip_b.to_string(),
                "5201",
            ])
            .is_ok()
        })
        .unwrap();
        // And the flows of the configuration are in place (the group's
        // rule tables present or absent on node1).
        let node1 = cloud.lab.node(1).unwrap();
        wait_until(Duration::from_secs(30), "node1 flows", || {
            let dump = node1
                .ovs()
                .ofctl(&["dump-flows", "br-int", "table=51", "--no-stats"])
                .unwrap_or_default();
            dump.contains("ct_tp_dst=5201") == secure
        })
        .unwrap();
    };
    let mut runs: Vec<(bool, f64)> = Vec::new();
    for round in 0..ROUNDS {
        for secure in [false, true] {
            set(secure);
            let gbps = iperf(&cloud, ip_b);
            println!(
                "round {round}: {} {gbps:.3} Gbit/s",
                if secure {
                    "1,000-rule group "
                } else {
                    "port security off"
                }
            );
            runs.push((secure, gbps));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let off = median(runs.iter().filter(|r| !r.0).map(|r| r.1).collect());
    let on = median(runs.iter().filter(|r| r.0).map(|r| r.1).collect());
    let ratios: Vec<f64> = runs.chunks(2).map(|p| p[1].1 / p[0].1).collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "iperf3 a(node0) → b(node1), {ROUNDS} pairs of {SECS}s runs: medians security off {off:.3} Gbit/s, \
         1,000-rule group {on:.3} Gbit/s; median of pair ratios {:.3} (goal ≥ 0.9); pair ratios {:?}; \
         load average {}",
        median(ratios.clone()),
        ratios.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let flows = cloud
        .lab
        .node(1)
        .unwrap()
        .ovs()
        .ofctl(&["dump-flows", "br-int", "--no-stats"])
        .unwrap();
    println!(
        "node1 holds {} flows with the group",
        flows.lines().count().saturating_sub(1)
    );
    drop(server);
}

/// One iperf3 run from a to b; the receiver's rate in Gbit/s.
fn iperf(cloud: &Cloud, dst: Ipv4Addr) -> f64 {
    let out = cloud
        .lab
        .vm("a")
        .unwrap()
        .run(&[
            "iperf3",
            "-c",
            &dst.to_string(),
            "-t",
            &SECS.to_string(),
            "-J",
        ])
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}
