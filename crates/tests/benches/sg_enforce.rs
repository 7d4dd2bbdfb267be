//! From a rule change in the API to its enforcement on every node.
//!
//! A group with members on both nodes (200 NICs per node, plugged, so the
//! group is live on both) gets a rule added, then removed, `SAMPLES` times.
//! The clock starts when the API call is made and stops when the rule's
//! flow is installed (added) or gone (removed) in OVS on the last of the
//! two nodes, read with `ovs-ofctl dump-flows table=51` on each node in
//! turn (the cost of one such poll, printed, bounds the resolution; OVS's
//! flow monitor does not report changes made in bundles, so polling it
//! is). The agent installs a change in one OpenFlow bundle, so "installed"
//! is "enforced"; the lab scenario
//! `rule_changes_apply_to_new_and_established_connections` checks the same
//! with packets.
//!
//! Runs the real product on a lab (release binaries: `scripts/bench.sh`).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tests::{require_root_and_tools, Cloud, Node};

const SAMPLES: usize = 50;
const PER_NODE: usize = 200;

fn main() {
    require_root_and_tools().unwrap();
    let cloud = Cloud::start(2).unwrap();
    let vpc = cloud.vpc("sgenforce", "10.0.0.0/8").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.1.0.0/16").unwrap();
    let g = cloud
        .api
        .create(
            "/v1/security-groups",
            &json!({"vpc_id": vpc["id"], "name": "web",
                "rules": [{"direction": "egress"},
                          {"direction": "ingress", "protocol": "icmp"}]}),
        )
        .unwrap();
    let gid = g["id"].as_str().unwrap().to_string();
    for n in 0..2 {
        let node = cloud.lab.node(n).unwrap();
        let plug = tests::VifPlug::connect(&node.ovs().db_socket()).unwrap();
        for k in 0..PER_NODE {
            let nic = cloud
                .api
                .create(
                    "/v1/nics",
                    &json!({"subnet_id": sn["id"], "node": node.name(), "security_groups": [gid]}),
                )
                .unwrap();
            plug.plug(&format!("w{n}x{k}"), nic["id"].as_str().unwrap())
                .unwrap();
        }
    }
    let nodes = [cloud.lab.node(0).unwrap(), cloud.lab.node(1).unwrap()];
    // Live: the group's ICMP rule is on both nodes.
    wait_all(&nodes, "ct_nw_proto=1", true, Duration::from_secs(120));

    let (mut add, mut del) = (Vec::new(), Vec::new());
    let (mut logged_add, mut logged_del) = (Vec::new(), Vec::new());
    for k in 0..SAMPLES + 3 {
        let port = 10_000 + k;
        let needle = format!("ct_tp_dst={port}");
        let wall0 = SystemTime::now();
        let t0 = Instant::now();
        let rule: Value = cloud
            .api
            .create(
                &format!("/v1/security-groups/{gid}/rules"),
                &json!({"direction": "ingress", "protocol": "tcp", "port_range_min": port}),
            )
            .unwrap();
        let api_add = t0.elapsed();
        let on_all = api_add + wait_all(&nodes, &needle, true, Duration::from_secs(30));
        let wall1 = SystemTime::now();
        let t1 = Instant::now();
        cloud
            .api
            .delete(&format!(
                "/v1/security-groups/{gid}/rules/{}",
                rule["id"].as_str().unwrap()
            ))
            .unwrap();
        let off_all = t1.elapsed() + wait_all(&nodes, &needle, false, Duration::from_secs(30));
        // The first few warm up caches and connections. The clock runs
        // from the start of the API call.
        if k >= 3 {
            add.push((on_all, api_add));
            del.push(off_all);
            logged_add.push(applied_everywhere(&nodes, wall0));
            logged_del.push(applied_everywhere(&nodes, wall1));
        }
    }
    println!(
        "from the agents' logs (the first bundle applied after the API call, on the last node):"
    );
    report("rule added  ", logged_add);
    report("rule removed", logged_del);
    println!("confirmed by polling OVS (upper bound: includes the polls):");
    report("rule added  ", add.iter().map(|(d, _)| *d).collect());
    report("rule removed", del);
    let mut api: Vec<f64> = add.iter().map(|(_, a)| a.as_secs_f64() * 1e3).collect();
    api.sort_by(f64::total_cmp);
    let polls: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            nodes[0]
                .ovs()
                .ofctl(&["dump-flows", "br-int", "table=51", "--no-stats"])
                .unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mut polls = polls;
    polls.sort_by(f64::total_cmp);
    println!(
        "    of which the API call itself: median {:.2} ms; one ovs-ofctl poll: median {:.2} ms (resolution)",
        api[api.len() / 2],
        polls[polls.len() / 2]
    );
}

/// Polls every node until its flows contain `needle` (or no longer do);
/// the time from the call until the last node got there.
fn wait_all(nodes: &[&Node], needle: &str, present: bool, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut done = vec![false; nodes.len()];
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if done[i] {
                continue;
            }
            let dump = n
                .ovs()
                .ofctl(&["dump-flows", "br-int", "table=51", "--no-stats"])
                .unwrap();
            if dump.contains(needle) == present {
                done[i] = true;
            }
        }
        if done.iter().all(|d| *d) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{needle} {} on every node after {limit:?}",
            if present {
                "not installed"
            } else {
                "still installed"
            }
        );
    }
}

/// The time from `since` until every node's agent logged a bundle applied
/// after it (the bench changes nothing else meanwhile).
fn applied_everywhere(nodes: &[&Node], since: SystemTime) -> Duration {
    nodes
        .iter()
        .map(|n| {
            let log = n.dir().join("agent/agent.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let at = text
                .lines()
                .filter(|l| l.contains("flows applied"))
                .filter_map(|l| parse_rfc3339(l.split_whitespace().next()?))
                .find(|t| *t >= since)
                .unwrap_or_else(|| panic!("no bundle applied in {}", log.display()));
            at.duration_since(since).unwrap_or_default()
        })
        .max()
        .unwrap_or_default()
}

/// `2026-01-31T12:00:00.123456Z` (tracing's timestamps) as a time.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?) + Duration::from_nanos(nanos))
}

fn report(what: &str, lat: Vec<Duration>) {
    let mut ms: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "{what} → enforced on every node ({} nodes, {} NICs in the group): p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  (n={})",
        2,
        2 * PER_NODE,
        pct(0.50),
        pct(0.99),
        ms[ms.len() - 1],
        ms.len()
    );
}
