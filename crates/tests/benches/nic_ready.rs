//! NIC-ready latency: from the API's create returning to the NIC's status
//! `up` (the agent on its node reported its flows installed), with 1,000 and
//! with 10,000 NICs already in the VPC.
//!
//! Runs the real product on a lab (release binaries of flowctl and
//! vswitch-agent: `scripts/bench.sh` builds them). The NICs already present
//! are spread over both nodes, so node0 carries half as local and half as
//! remote endpoints. Each measured NIC is bound to node0 and its VIF is
//! plugged right after the create returns, as a compute driver would, over
//! one persistent OVSDB session (an `ovs-vsctl` process per plug would add
//! ~15 ms of its own); that plug is part of the measured time.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{require_root_and_tools, Cloud};

const SUBNETS: usize = 10;
const SAMPLES: usize = 100;

fn main() {
    require_root_and_tools().unwrap();
    let mut cloud = Cloud::start(2).unwrap();
    let vpc = cloud.vpc("bench", "10.0.0.0/8").unwrap();
    let subnets: Vec<Value> = (0..SUBNETS)
        .map(|i| {
            cloud
                .subnet(&vpc, &format!("s{i}"), &format!("10.{}.0.0/18", i + 1))
                .unwrap()
        })
        .collect();
    let measure_subnet = cloud.subnet(&vpc, "measure", "10.200.0.0/16").unwrap();

    let mut present = 0;
    for target in [1_000, 10_000] {
        let started = Instant::now();
        preload(&cloud, &subnets, present, target);
        println!(
            "preloaded {} NICs in {:.1}s ({:.0} creates/s)",
            target - present,
            started.elapsed().as_secs_f64(),
            (target - present) as f64 / started.elapsed().as_secs_f64()
        );
        present = target;
        let lat = measure(&mut cloud, &measure_subnet, target);
        report(target, &lat);
        agent_breakdown(&cloud, SAMPLES);
    }
}

/// Creates NICs `from..to` (bound alternately to node0 and node1) with 8
/// concurrent clients.
fn preload(cloud: &Cloud, subnets: &[Value], from: usize, to: usize) {
    let next = AtomicUsize::new(from);
    let nodes = [
        cloud.lab.node(0).unwrap().name(),
        cloud.lab.node(1).unwrap().name(),
    ];
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let api = cloud.api.clone();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return;
                    }
                    let subnet = &subnets[i % subnets.len()];
                    api.create(
                        "/v1/nics",
                        &json!({"subnet_id": subnet["id"], "node": nodes[i % 2]}),
                    )
                    .unwrap();
                }
            });
        }
    });
}

/// Create → plugged → up, `SAMPLES` times, one at a time.
fn measure(cloud: &mut Cloud, subnet: &Value, present: usize) -> Vec<Duration> {
    let mut phases: Vec<(f64, f64)> = Vec::new();
    let plug = tests::VifPlug::connect(&cloud.lab.node(0).unwrap().ovs().db_socket()).unwrap();
    let node0 = cloud.lab.node(0).unwrap().name().to_string();
    let mut out = Vec::with_capacity(SAMPLES);
    for k in 0..SAMPLES + 5 {
        let t0 = Instant::now();
        let nic = cloud
            .api
            .create(
                "/v1/nics",
                &json!({"subnet_id": subnet["id"], "node": node0}),
            )
            .unwrap();
        let id = nic["id"].as_str().unwrap();
        let created = t0.elapsed();
        plug.plug(&format!("b{present}x{k}"), id).unwrap();
        let plugged = t0.elapsed();
        let path = format!("/v1/nics/{id}");
        loop {
            let got = cloud.api.get(&path).unwrap();
            if got.body["status"] == "up" {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "NIC {id} never came up"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        // The first few warm up caches and connections.
        if k >= 5 {
            out.push(t0.elapsed());
            phases.push((
                created.as_secs_f64() * 1e3,
                (plugged - created).as_secs_f64() * 1e3,
            ));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "    medians: API create {:.2} ms, VIF plug {:.2} ms (the rest is flowctl + agent + status)",
        median(phases.iter().map(|p| p.0).collect()),
        median(phases.iter().map(|p| p.1).collect()),
    );
    out
}

fn report(present: usize, lat: &[Duration]) {
    let mut ms: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "nic_ready with {present:>6} NICs present: p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  (n={}, goal at 10,000: p50 < 20 ms, p99 < 100 ms)",
        pct(0.50),
        pct(0.99),
        ms[ms.len() - 1],
        ms.len()
    );
}

/// Medians of the agent's own phase timings over its last `n` syncs on
/// node0 (from its log), to see where a NIC's time goes.
fn agent_breakdown(cloud: &Cloud, n: usize) {
    let log = cloud.lab.node(0).unwrap().dir().join("agent/agent.log");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("flows applied"))
        .collect();
    let recent = &lines[lines.len().saturating_sub(n)..];
    let field = |name: &str| {
        let mut v: Vec<u64> = recent
            .iter()
            .filter_map(|l| {
                let rest = &l[l.find(&format!("{name}="))? + name.len() + 1..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64 / 1e3
    };
    println!(
        "    agent node0, median of last {} syncs: bridge+tunnels+ports {:.2} ms, render+diff {:.2} ms, apply {:.2} ms, {} flow changes",
        recent.len(),
        field("prepare_us"),
        field("render_us"),
        field("apply_us"),
        field("changes") * 1e3,
    );
}
