//! Flows a node carries for a large security group, and how they grow.
//!
//! The configuration: 1,000 NICs on node0 in one group whose 100
//! rules name 10 remote groups of 100 members (on node1). Each rule is a
//! TCP port range (it splits into 2 masked matches) from one remote group,
//! so without conjunctive matches it would cost members × matches flows.
//! The bench reaches that configuration in steps, first growing the members
//! N at a fixed number of rules M, then M at fixed N, and counts the flows
//! OVS holds on node0 after each step: total, the rule tables (50, 51) and
//! per local NIC.
//!
//! Runs the real product on a lab (release binaries: `scripts/bench.sh`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{require_root_and_tools, wait_until, Cloud};

const REMOTE_GROUPS: usize = 10;
const LOCAL_NICS: usize = 1_000;

fn main() {
    require_root_and_tools().unwrap();
    let cloud = Cloud::start(2).unwrap();
    let vpc = cloud.vpc("sgflows", "10.0.0.0/8").unwrap();
    let members_sn = cloud.subnet(&vpc, "members", "10.1.0.0/16").unwrap();
    let servers_sn = cloud.subnet(&vpc, "servers", "10.2.0.0/16").unwrap();
    let remote: Vec<Value> = (0..REMOTE_GROUPS)
        .map(|i| create_group(&cloud, &vpc, &format!("rg{i}"), vec![]))
        .collect();
    let rule = |i: usize| {
        json!({"direction": "ingress", "protocol": "tcp",
            "port_range_min": 2000 + 16 * i, "port_range_max": 2000 + 16 * i + 9,
            "remote_group_id": remote[i % REMOTE_GROUPS]["id"]})
    };
    let mut rules = 25;
    let g = create_group(
        &cloud,
        &vpc,
        "servers",
        std::iter::once(json!({"direction": "egress"}))
            .chain((0..rules).map(rule))
            .collect(),
    );

    let started = Instant::now();
    let node0 = cloud.lab.node(0).unwrap().name().to_string();
    let ids = create_nics(
        &cloud,
        &servers_sn,
        0,
        LOCAL_NICS,
        |_| json!({"node": node0, "security_groups": [g["id"]]}),
    );
    let plug = tests::VifPlug::connect(&cloud.lab.node(0).unwrap().ovs().db_socket()).unwrap();
    for (k, id) in ids.iter().enumerate() {
        plug.plug(&format!("sv{k}"), id).unwrap();
    }
    println!(
        "{LOCAL_NICS} NICs of group `servers` created and plugged on node0 in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    println!(
        "{:>8} {:>6} {:>12} {:>10} {:>12} {:>14} {:>10}",
        "members", "rules", "rule flows", "N + M", "N x M", "flows/local NIC", "all flows"
    );
    let mut members = 0;
    let mut points = Vec::new();
    for per_group in [25, 50, 100] {
        let node1 = cloud.lab.node(1).unwrap().name().to_string();
        create_nics(
            &cloud,
            &members_sn,
            members,
            per_group * REMOTE_GROUPS,
            |i| json!({"node": node1, "security_groups": [remote[i % REMOTE_GROUPS]["id"]]}),
        );
        members = per_group * REMOTE_GROUPS;
        points.push(measure(&cloud, members, rules));
    }
    for target in [50, 100] {
        for i in rules..target {
            cloud
                .api
                .create(
                    &format!("/v1/security-groups/{}/rules", g["id"].as_str().unwrap()),
                    &rule(i),
                )
                .unwrap();
        }
        rules = target;
        points.push(measure(&cloud, members, rules));
    }
    // Slopes between the steps: flows per added member, per added rule.
    let per_member = (points[2].rule_flows - points[0].rule_flows) as f64
        / (points[2].members - points[0].members) as f64;
    let per_rule = (points[4].rule_flows - points[2].rule_flows) as f64
        / (points[4].rules - points[2].rules) as f64;
    let last = &points[4];
    println!(
        "growth: {per_member:.2} rule flows per member, {per_rule:.2} per rule (2 port matches + 1 conjunction); \
         at N={} M={}: {} rule flows vs N x M x 2 = {} without conjunctions",
        last.members,
        last.rules,
        last.rule_flows,
        last.members * last.rules * 2
    );
}

struct Point {
    members: usize,
    rules: usize,
    rule_flows: usize,
}

/// Waits for node0's flows to settle, then counts them by table.
fn measure(cloud: &Cloud, members: usize, rules: usize) -> Point {
    let node = cloud.lab.node(0).unwrap();
    let count = || -> BTreeMap<u8, usize> {
        let dump = node
            .ovs()
            .ofctl(&["dump-flows", "br-int", "--no-stats"])
            .unwrap();
        let mut by_table = BTreeMap::new();
        for l in dump.lines() {
            let Some(t) = l.split("table=").nth(1) else {
                continue;
            };
            let n: String = t.chars().take_while(char::is_ascii_digit).collect();
            *by_table.entry(n.parse().unwrap_or(0)).or_default() += 1;
        }
        by_table
    };
    // Settled: the same counts for 2 s, and the rule table has at least
    // one flow per member address.
    let mut last = (count(), Instant::now());
    wait_until(Duration::from_secs(300), "node0's flows to settle", || {
        let now = count();
        if now != last.0 {
            last = (now, Instant::now());
        }
        let rules_tbl = last.0.get(&51).copied().unwrap_or(0);
        last.1.elapsed() > Duration::from_secs(2) && rules_tbl > members
    })
    .unwrap();
    let by_table = last.0;
    let total: usize = by_table.values().sum();
    let rule_flows =
        by_table.get(&50).copied().unwrap_or(0) + by_table.get(&51).copied().unwrap_or(0);
    // Per local NIC: the stage tables 21-23 and 41-44 hold its flows
    // besides a handful of shared ones.
    let stage: usize = [21, 22, 23, 41, 42, 43, 44]
        .iter()
        .map(|t| by_table.get(t).copied().unwrap_or(0))
        .sum();
    println!(
        "{members:>8} {rules:>6} {rule_flows:>12} {:>10} {:>12} {:>14.2} {total:>10}",
        members + rules,
        members * rules,
        stage as f64 / LOCAL_NICS as f64,
    );
    Point {
        members,
        rules,
        rule_flows,
    }
}

fn create_group(cloud: &Cloud, vpc: &Value, name: &str, rules: Vec<Value>) -> Value {
    cloud
        .api
        .create(
            "/v1/security-groups",
            &json!({"vpc_id": vpc["id"], "name": name, "rules": rules}),
        )
        .unwrap()
}

/// Creates NICs `from..to` in `subnet` with 8 concurrent clients; `extra`
/// adds fields per index. Returns their ids.
fn create_nics(
    cloud: &Cloud,
    subnet: &Value,
    from: usize,
    to: usize,
    extra: impl Fn(usize) -> Value + Sync,
) -> Vec<String> {
    let next = AtomicUsize::new(from);
    let out = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let api = cloud.api.clone();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return;
                    }
                    let mut body = extra(i);
                    body["subnet_id"] = subnet["id"].clone();
                    let nic = api.create("/v1/nics", &body).unwrap();
                    out.lock()
                        .unwrap()
                        .push(nic["id"].as_str().unwrap().to_string());
                }
            });
        }
    });
    out.into_inner().unwrap()
}
