//! HA control plane fault scenarios (issue 4), packet-level, on the HA
//! topology (`tests::ha`): a 3-member etcd, two flowctl replicas as
//! processes, agents given both replicas through black-hole-able proxies.
//!
//! VMs ping every 100 ms and hold a TCP stream (a byte each way every
//! 100 ms) through every fault; a denied probe (a port the security group
//! does not open) must stay denied; the flows on every node must come out
//! unchanged. Each test prints its figures ("FIGURE ..." lines).
//!
//! The traffic window is short in CI; `FAULTS_SECS=300 bash
//! scripts/faults.sh` runs the same scenarios with minutes of traffic.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::ha::{HaCloud, HaConfig};
use tests::lab::Lab;
use tests::traffic::{parse_ping, PingStats, ECHO_SERVER};
use tests::{require_root_and_tools, wait_until, ApiClient, Proc, Vm};

const SETTLE: Duration = Duration::from_secs(30);
/// The stream's port (allowed) and the probe's (denied by the group).
const STREAM_PORT: u16 = 5001;
const DENIED_PORT: u16 = 5002;

/// Seconds of traffic a fault is held for (`FAULTS_SECS`, default 8).
fn hold() -> Duration {
    let secs = std::env::var("FAULTS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8u64);
    Duration::from_secs(secs)
}

fn ip(v: &Value) -> Ipv4Addr {
    v.as_str().unwrap().parse().unwrap()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The HA cloud with a VPC, one subnet, a group allowing ICMP and the
/// stream's port, and VMs a (node0) and b (node1) in it.
struct Fixture {
    ha: HaCloud,
    vpc: Value,
    subnet: Value,
    group: Value,
    ip_b: Ipv4Addr,
}

fn setup() -> Fixture {
    setup_with(HaConfig::default())
}

fn setup_with(cfg: HaConfig) -> Fixture {
    require_root_and_tools().unwrap();
    let mut ha = HaCloud::start(cfg).unwrap();
    let c = &mut ha.cloud;
    let vpc = c.vpc("ha", "10.60.0.0/16").unwrap();
    let subnet = c.subnet(&vpc, "s1", "10.60.1.0/24").unwrap();
    let group = c
        .api
        .create(
            "/v1/security-groups",
            &json!({"vpc_id": vpc["id"], "name": "web", "rules": [
                {"direction": "egress"},
                {"direction": "ingress", "protocol": "icmp"},
                {"direction": "ingress", "protocol": "tcp", "port_range_min": STREAM_PORT},
            ]}),
        )
        .unwrap();
    let nic = |node: usize, addr: &str| {
        json!({"subnet_id": subnet["id"], "node": format!("node{node}"), "ip": addr,
            "security_groups": [group["id"]]})
    };
    let a = c.api.create("/v1/nics", &nic(0, "10.60.1.10")).unwrap();
    let b = c.api.create("/v1/nics", &nic(1, "10.60.1.11")).unwrap();
    c.vm("a", &a, &subnet).unwrap();
    c.vm("b", &b, &subnet).unwrap();
    let ip_b = ip(&b["ip"]);
    c.lab.vm("a").unwrap().wait_ping(ip_b, SETTLE).unwrap();
    Fixture {
        ha,
        vpc,
        subnet,
        group,
        ip_b,
    }
}

/// One long-lived connection; both ends send a byte every 100 ms and log
/// "rx <bytes> <unix time>" per receive. The log ends with "closed" if
/// the connection breaks.
const STREAM: &str = r#"
import socket, sys, threading, time
role, host, port, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if role == "server":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    print("listening", flush=True)
    c, _ = s.accept()
else:
    c = socket.create_connection((host, port), timeout=5)
c.settimeout(0.3)
def send():
    while True:
        try:
            c.send(b".")
        except OSError:
            return
        time.sleep(0.1)
threading.Thread(target=send, daemon=True).start()
with open(log, "a") as f:
    while True:
        try:
            d = c.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            d = b""
        if not d:
            f.write("closed %f\n" % time.time())
            f.flush()
            break
        f.write("rx %d %f\n" % (len(d), time.time()))
        f.flush()
"#;

/// Whether a TCP connection to `dst:port` completes within 2 s.
fn connects(vm: &Vm, dst: Ipv4Addr, port: u16) -> bool {
    vm.run(&[
        "timeout",
        "4",
        "nc",
        "-z",
        "-n",
        "-w",
        "2",
        &dst.to_string(),
        &port.to_string(),
    ])
    .is_ok()
}

/// Receive times in a stream log, and whether it saw the connection close.
fn stream_log(path: &Path) -> (Vec<f64>, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let times = text
        .lines()
        .filter(|l| l.starts_with("rx "))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    (times, text.lines().any(|l| l.starts_with("closed")))
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Background traffic a → b: ping every 100 ms and a TCP stream, plus a
/// listener on the denied port (so a refused probe is the group's doing).
struct Traffic {
    ping: Proc,
    ping_out: PathBuf,
    _server: Proc,
    _client: Proc,
    _echo: Proc,
    logs: [PathBuf; 2],
    started: f64,
}

/// What the traffic saw.
#[derive(Debug)]
struct Seen {
    ping: PingStats,
    /// Longest silence on the stream, either direction, in seconds.
    max_gap: f64,
    closed: bool,
}

impl Traffic {
    fn start(lab: &Lab, ip_b: Ipv4Addr) -> Traffic {
        let (va, vb) = (lab.vm("a").unwrap(), lab.vm("b").unwrap());
        let echo = vb
            .spawn_python("echo", ECHO_SERVER, &[&DENIED_PORT.to_string()])
            .unwrap();
        let logs = [va.dir().join("stream-a.log"), vb.dir().join("stream-b.log")];
        for l in &logs {
            let _ = std::fs::remove_file(l);
        }
        let port = STREAM_PORT.to_string();
        let server = vb
            .spawn_python(
                "stream-b",
                STREAM,
                &["server", "-", &port, logs[1].to_str().unwrap()],
            )
            .unwrap();
        wait_until(Duration::from_secs(5), "stream listener", || {
            vb.run(&["ss", "-Hltn"])
                .is_ok_and(|o| o.contains(&format!(":{STREAM_PORT} ")))
        })
        .unwrap();
        let client = va
            .spawn_python(
                "stream-a",
                STREAM,
                &[
                    "client",
                    &ip_b.to_string(),
                    &port,
                    logs[0].to_str().unwrap(),
                ],
            )
            .unwrap();
        wait_until(Duration::from_secs(10), "stream to flow", || {
            logs.iter().all(|l| stream_log(l).0.len() >= 5)
        })
        .unwrap();
        let ping_out = va.dir().join("ping.out");
        let ping = va
            .netns()
            .spawn(
                "ping",
                &[
                    "ping",
                    "-n",
                    "-q",
                    "-i",
                    "0.1",
                    "-W",
                    "1",
                    &ip_b.to_string(),
                ],
                Some(&ping_out),
            )
            .unwrap();
        Traffic {
            ping,
            ping_out,
            _server: server,
            _client: client,
            _echo: echo,
            logs,
            started: now_unix(),
        }
    }

    /// Stops the ping (SIGINT: it prints its summary) and reads the logs.
    fn finish(mut self) -> Seen {
        // Replies still in flight come back within a round trip.
        std::thread::sleep(Duration::from_millis(300));
        tests::util::signal(self.ping.pid(), "INT").unwrap();
        wait_until(Duration::from_secs(5), "ping to exit", || {
            !self.ping.is_running()
        })
        .unwrap();
        let ping = parse_ping(&std::fs::read_to_string(&self.ping_out).unwrap()).unwrap();
        let end = now_unix();
        let mut max_gap: f64 = 0.0;
        let mut closed = false;
        for l in &self.logs {
            let (times, c) = stream_log(l);
            closed |= c;
            let mut last = self.started;
            for t in times.iter().copied().filter(|t| *t >= self.started) {
                max_gap = max_gap.max(t - last);
                last = t;
            }
            max_gap = max_gap.max(end - last);
        }
        Seen {
            ping,
            max_gap,
            closed,
        }
    }
}

/// Asserts the data path did not notice: every ping answered, the stream
/// never silent for more than a second, never closed.
fn assert_no_loss(what: &str, seen: &Seen) {
    let lost = seen.ping.transmitted - seen.ping.received;
    println!(
        "FIGURE {what}: ping {} sent, {} lost; stream longest silence {:.2} s",
        seen.ping.transmitted, lost, seen.max_gap
    );
    assert!(seen.ping.transmitted > 0, "{what}: no ping sent");
    assert_eq!(lost, 0, "{what}: pings lost: {seen:?}");
    assert!(!seen.closed, "{what}: the TCP stream broke: {seen:?}");
    assert!(
        seen.max_gap < 1.0,
        "{what}: the TCP stream stalled: {seen:?}"
    );
}

/// `dump-flows` of br-int without counters, ages and durations (and
/// without cookies if `cookies` is false: a flow a restarted agent had to
/// write carries its new generation), sorted.
fn flows(lab: &Lab, node: usize, cookies: bool) -> BTreeSet<String> {
    let raw = lab.node(node).unwrap().flows("br-int").unwrap();
    raw.lines()
        .filter(|l| l.contains("actions="))
        .map(|l| {
            l.split([',', ' '])
                .filter(|f| {
                    let f = f.trim();
                    !f.is_empty()
                        && !f.starts_with("duration=")
                        && !f.starts_with("n_packets=")
                        && !f.starts_with("n_bytes=")
                        && !f.starts_with("idle_age=")
                        && !f.starts_with("hard_age=")
                        && (cookies || !f.starts_with("cookie="))
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

fn all_flows(lab: &Lab, cookies: bool) -> Vec<BTreeSet<String>> {
    (0..lab.nodes().len())
        .map(|i| flows(lab, i, cookies))
        .collect()
}

fn assert_same_flows(what: &str, before: &[BTreeSet<String>], after: &[BTreeSet<String>]) {
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let gone: Vec<_> = b.difference(a).collect();
        let new: Vec<_> = a.difference(b).collect();
        assert!(
            gone.is_empty() && new.is_empty(),
            "{what}: node{i} flows changed\n  gone: {gone:#?}\n  new: {new:#?}"
        );
    }
    println!(
        "FIGURE {what}: flows unchanged on {} nodes ({} flows)",
        before.len(),
        before.iter().map(BTreeSet::len).sum::<usize>()
    );
}

/// Agents with a live stream through proxy `p` (its replica answered).
fn agents_on(ha: &HaCloud, p: usize) -> usize {
    ha.proxy(p)
        .unwrap()
        .connections()
        .iter()
        .filter(|c| c.client_closed.is_none() && c.server_closed.is_none())
        .filter(|c| !c.black_holed_at_open && c.first_down.is_some())
        .count()
}

fn wait_agents_on(ha: &HaCloud, p: usize, n: usize, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    wait_until(timeout, &format!("{n} agents on replica {p}"), || {
        agents_on(ha, p) >= n
    })
    .unwrap();
    t0.elapsed()
}

/// Waits until `n` agents stream from any replica.
fn wait_agents(ha: &HaCloud, n: usize, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    wait_until(timeout, &format!("{n} agents streaming"), || {
        (0..ha.replicas()).map(|p| agents_on(ha, p)).sum::<usize>() >= n
    })
    .unwrap();
    t0.elapsed()
}

/// Scenario 1: every flowctl replica and every etcd member killed while
/// traffic runs: nothing lost, the denied probe stays denied, the flows
/// stay exactly as they were; the agents come back once it returns.
#[test]
fn control_plane_killed() {
    let mut f = setup();
    let lab = &f.ha.cloud.lab;
    let before = all_flows(lab, true);
    let traffic = Traffic::start(lab, f.ip_b);
    let t0 = Instant::now();
    f.ha.kill_control_plane().unwrap();
    println!("FIGURE control plane killed in {:?}", t0.elapsed());
    let va = f.ha.cloud.lab.vm("a").unwrap();
    // Denied while everything is down (and the allowed port answers).
    assert!(!connects(va, f.ip_b, DENIED_PORT), "denied probe got in");
    assert!(connects(va, f.ip_b, STREAM_PORT), "allowed port refused");
    std::thread::sleep(hold());
    assert_same_flows(
        "control plane down",
        &before,
        &all_flows(&f.ha.cloud.lab, true),
    );
    assert!(!connects(va, f.ip_b, DENIED_PORT), "denied probe got in");
    let t0 = Instant::now();
    f.ha.restart_control_plane().unwrap();
    let up = t0.elapsed();
    wait_until(SETTLE, "agents reconnected", || {
        (0..2).map(|p| agents_on(&f.ha, p)).sum::<usize>() == 2
    })
    .unwrap();
    println!(
        "FIGURE control plane restarted in {up:?}; both agents streaming {:?} after the restart began",
        t0.elapsed()
    );
    let seen = traffic.finish();
    assert_no_loss("control plane killed", &seen);
    assert_same_flows(
        "control plane back",
        &before,
        &all_flows(&f.ha.cloud.lab, true),
    );
    // And the control plane works again: a new VM's NIC comes up.
    let t0 = Instant::now();
    new_vm(&mut f, "c", 0, "10.60.1.20");
    println!(
        "FIGURE control plane back: new NIC up in {:?}",
        t0.elapsed()
    );
}

/// A NIC in the fixture's subnet and group on `node`, with a VM plugged;
/// returns once the API reports it up (its node installed its flows).
fn new_vm(f: &mut Fixture, name: &str, node: usize, addr: &str) -> Value {
    let c = &mut f.ha.cloud;
    let n = c
        .api
        .create(
            "/v1/nics",
            &json!({"subnet_id": f.subnet["id"], "node": format!("node{node}"), "ip": addr,
                "security_groups": [f.group["id"]]}),
        )
        .unwrap();
    c.vm(name, &n, &f.subnet).unwrap();
    n
}

fn restart_agents(ha: &mut HaCloud, kill: bool) -> Duration {
    let t0 = Instant::now();
    let lab = &mut ha.cloud.lab;
    for i in 0..lab.nodes().len() {
        lab.stop_agent(i, kill).unwrap();
    }
    for i in 0..lab.nodes().len() {
        lab.start_agent(i, &tests::bins::AgentSpec::default())
            .unwrap();
    }
    t0.elapsed()
}

/// Scenario 2: the agent on every node restarted at once, with SIGTERM,
/// with SIGKILL, and with SIGKILL while the control plane is down: zero
/// loss, the same flows (up to the generation in the cookies).
#[test]
fn agents_restarted() {
    let mut f = setup();
    // Cookies included: a restarted agent leaves a flow it would write
    // identically (cookie and counters) as it is.
    let before = all_flows(&f.ha.cloud.lab, true);
    let traffic = Traffic::start(&f.ha.cloud.lab, f.ip_b);
    for kill in [false, true] {
        let took = restart_agents(&mut f.ha, kill);
        let back = wait_agents(&f.ha, 2, SETTLE);
        println!(
            "FIGURE agents restarted ({}) in {took:?}; streaming again {back:?} later",
            if kill { "SIGKILL" } else { "SIGTERM" }
        );
        std::thread::sleep(hold() / 2);
        assert_same_flows(
            if kill {
                "after SIGKILL restart"
            } else {
                "after SIGTERM restart"
            },
            &before,
            &all_flows(&f.ha.cloud.lab, true),
        );
    }
    // Headless: no control plane while the agents restart.
    f.ha.kill_control_plane().unwrap();
    restart_agents(&mut f.ha, true);
    // The restarted agents run on their local copies: wait until each
    // started and the flows are what they were.
    wait_until(SETTLE, "headless agents resynced", || {
        let lab = &f.ha.cloud.lab;
        all_flows(lab, true) == before
            && (0..lab.nodes().len()).all(|i| {
                std::fs::read_to_string(lab.node(i).unwrap().dir().join("agent/agent.log"))
                    .is_ok_and(|l| l.matches("starting").count() >= 4)
            })
    })
    .unwrap();
    let va = f.ha.cloud.lab.vm("a").unwrap();
    assert!(!connects(va, f.ip_b, DENIED_PORT), "denied probe got in");
    std::thread::sleep(hold() / 2);
    assert_same_flows(
        "headless restart",
        &before,
        &all_flows(&f.ha.cloud.lab, true),
    );
    f.ha.restart_control_plane().unwrap();
    let back = wait_agents(&f.ha, 2, SETTLE);
    println!("FIGURE headless agents reconnected {back:?} after the control plane returned");
    let seen = traffic.finish();
    assert_no_loss("agents restarted", &seen);
    assert_same_flows(
        "agents restarted",
        &before,
        &all_flows(&f.ha.cloud.lab, true),
    );
}

/// Scenario 3: ovs-vswitchd killed and restarted on node1: the agent
/// notices and replays its flows; the outage is what the pings lost.
#[test]
fn vswitchd_restarted() {
    let mut f = setup();
    let before = all_flows(&f.ha.cloud.lab, false);
    let traffic = Traffic::start(&f.ha.cloud.lab, f.ip_b);
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    {
        let node = f.ha.cloud.lab.node_mut(1).unwrap();
        node.ovs_mut().kill_vswitchd().unwrap();
        node.ovs_mut().restart_vswitchd().unwrap();
    }
    let restarted = t0.elapsed();
    let va = f.ha.cloud.lab.vm("a").unwrap();
    wait_until(SETTLE, "a reaches b again", || {
        va.ping(f.ip_b, 1).is_ok_and(|s| s.received == 1)
    })
    .unwrap();
    let reachable = t0.elapsed();
    wait_until(SETTLE, "flows replayed", || {
        all_flows(&f.ha.cloud.lab, false) == before
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let seen = traffic.finish();
    let lost = seen.ping.transmitted - seen.ping.received;
    println!(
        "FIGURE vswitchd restart: daemon back in {restarted:?}, a reaches b after {reachable:?}; \
         {lost} of {} pings lost (outage ~{} ms at 100 ms per ping); stream longest silence {:.2} s, \
         broken: {}",
        seen.ping.transmitted,
        lost * 100,
        seen.max_gap,
        seen.closed
    );
    assert_same_flows(
        "vswitchd restarted",
        &before,
        &all_flows(&f.ha.cloud.lab, false),
    );
    assert!(!connects(va, f.ip_b, DENIED_PORT), "denied probe got in");
}

/// Scenario 4: the replica the agents stream from is killed: they move to
/// the other and resume from their revision (a delta, not a snapshot).
#[test]
fn replica_killed() {
    // Compaction every second, keeping 5 revisions, a 2 s duty lease: the
    // singleton duty changes hands with the replica too.
    let mut f = setup_with(HaConfig {
        flowctl_args: [
            "--compact-every",
            "1",
            "--compact-keep-revisions",
            "5",
            "--duty-ttl",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..HaConfig::default()
    });
    wait_agents_on(&f.ha, 0, 2, SETTLE);
    let leader = |i: usize| f.ha.replica_metric(i, "flowctl_duty_compaction_leader");
    wait_until(SETTLE, "one compaction duty holder", || {
        leader(0).unwrap_or(0.0) + leader(1).unwrap_or(0.0) == 1.0
    })
    .unwrap();
    let holder = if leader(0) == Some(1.0) { 0 } else { 1 };
    wait_until(SETTLE, "a compaction", || {
        f.ha.replica_metric(holder, "flowctl_compactions_total")
            .is_some_and(|n| n >= 1.0)
    })
    .unwrap();
    assert_eq!(
        f.ha.replica_metric(1 - holder, "flowctl_compactions_total"),
        Some(0.0),
        "the replica without the duty compacted"
    );
    let before = all_flows(&f.ha.cloud.lab, true);
    let snapshots = f.ha.replica_metric(1, "flowctl_snapshots_sent_total");
    let traffic = Traffic::start(&f.ha.cloud.lab, f.ip_b);
    let t0 = Instant::now();
    f.ha.stop_replica(0, true).unwrap();
    let moved = wait_agents_on(&f.ha, 1, 2, SETTLE);
    println!("FIGURE replica killed: both agents streaming from the other replica after {moved:?}");
    // Resumed, not resynced: the other replica sent no snapshot.
    assert_eq!(
        f.ha.replica_metric(1, "flowctl_snapshots_sent_total"),
        snapshots,
        "the agents got a full snapshot on resume"
    );
    let first: u64 = f.ha.proxy(0).unwrap().connections()[..2]
        .iter()
        .map(|c| c.down_bytes)
        .sum();
    let resumed: Vec<_> =
        f.ha.proxy(1)
            .unwrap()
            .connections()
            .into_iter()
            .filter(|c| c.opened >= t0)
            .collect();
    let resume_bytes: u64 = resumed.iter().map(|c| c.down_bytes).sum();
    println!(
        "FIGURE bytes to 2 agents: full sync at start {first} B (whole connection), resume {resume_bytes} B"
    );
    // The duty: replica 1 holds it once replica 0 is gone (at once if it
    // already did; after the 2 s lease ran out if replica 0 held it).
    wait_until(SETTLE, "replica 1 compacting", || {
        f.ha.replica_metric(1, "flowctl_duty_compaction_leader") == Some(1.0)
            && f.ha
                .replica_metric(1, "flowctl_compactions_total")
                .is_some_and(|n| n >= 1.0)
    })
    .unwrap();
    println!(
        "FIGURE compaction duty: held by replica {holder} before the kill; replica 1 \
         compacting {:?} after the kill",
        t0.elapsed()
    );
    // Nothing was reinstalled by the move.
    assert_same_flows("replica killed", &before, &all_flows(&f.ha.cloud.lab, true));
    // A change through the surviving replica reaches the node.
    f.ha.cloud.api = f.ha.api(1).unwrap();
    let t1 = Instant::now();
    new_vm(&mut f, "c", 1, "10.60.1.21");
    println!(
        "FIGURE after failover a new NIC is up in {:?} (kill to up: {:?})",
        t1.elapsed(),
        t0.elapsed()
    );
    std::thread::sleep(hold());
    let seen = traffic.finish();
    assert_no_loss("replica killed", &seen);
}

/// Scenario 5: the agent <-> flowctl link black-holed (no FIN, no RST):
/// the agents notice by their keepalives and move to the other replica.
#[test]
fn link_black_holed() {
    let f = setup();
    wait_agents_on(&f.ha, 0, 2, SETTLE);
    let before = all_flows(&f.ha.cloud.lab, true);
    let traffic = Traffic::start(&f.ha.cloud.lab, f.ip_b);
    let t0 = Instant::now();
    f.ha.proxy(0).unwrap().black_hole();
    let moved = wait_agents_on(&f.ha, 1, 2, SETTLE);
    let conns = f.ha.proxy(0).unwrap().connections();
    let detect: Vec<Duration> = conns
        .iter()
        .filter_map(|c| c.client_closed)
        .filter(|t| *t >= t0)
        .map(|t| t - t0)
        .collect();
    println!(
        "FIGURE black hole: agents gave up the silent stream after {detect:?}; \
         both streaming from the other replica after {moved:?}"
    );
    assert_eq!(
        detect.len(),
        2,
        "both agents closed the black-holed stream: {conns:?}"
    );
    std::thread::sleep(hold());
    f.ha.proxy(0).unwrap().restore();
    let seen = traffic.finish();
    assert_no_loss("black hole", &seen);
    assert_same_flows("black hole", &before, &all_flows(&f.ha.cloud.lab, true));
    let va = f.ha.cloud.lab.vm("a").unwrap();
    assert!(!connects(va, f.ip_b, DENIED_PORT), "denied probe got in");
}

/// Scenario 6: while node1's agent is down, a NIC, a security-group rule
/// and a subnet are deleted and others created; when it returns the node
/// converges with no stale flow left.
#[test]
fn changes_while_agent_down() {
    let mut f = setup();
    let api = f.ha.cloud.api.clone();
    // Things to delete later: a subnet with a NIC on node1, a rule.
    let s2 = f.ha.cloud.subnet(&f.vpc, "s2", "10.60.2.0/24").unwrap();
    let doomed = api
        .create(
            "/v1/nics",
            &json!({"subnet_id": s2["id"], "node": "node1", "ip": "10.60.2.77",
                "security_groups": [f.group["id"]]}),
        )
        .unwrap();
    let rule = api
        .create(
            &format!("/v1/security-groups/{}/rules", id(&f.group)),
            &json!({"direction": "ingress", "protocol": "udp", "port_range_min": 6111}),
        )
        .unwrap();
    // Plugged, and left plugged after the NIC is deleted: its port must
    // lose every flow even though it stays on the bridge.
    f.ha.cloud.vm("d", &doomed, &s2).unwrap();
    let has = |lab: &Lab, needle: &str| flows(lab, 1, false).iter().any(|l| l.contains(needle));
    let doomed_mac = doomed["mac"].as_str().unwrap().to_string();
    wait_until(SETTLE, "node1 has the doomed NIC and rule", || {
        let lab = &f.ha.cloud.lab;
        has(lab, &doomed_mac) && has(lab, "tp_dst=6111")
    })
    .unwrap();
    assert!(has(&f.ha.cloud.lab, "10.60.2.0/24") || has(&f.ha.cloud.lab, "10.60.2."));

    let traffic = Traffic::start(&f.ha.cloud.lab, f.ip_b);
    f.ha.cloud.lab.stop_agent(1, true).unwrap();
    api.delete(&format!("/v1/nics/{}", id(&doomed))).unwrap();
    api.delete(&format!(
        "/v1/security-groups/{}/rules/{}",
        id(&f.group),
        id(&rule)
    ))
    .unwrap();
    wait_until(SETTLE, "subnet deletable", || {
        api.delete(&format!("/v1/subnets/{}", id(&s2)))
            .is_ok_and(|a| a.status.is_success())
    })
    .unwrap();
    let fresh = api
        .create(
            "/v1/nics",
            &json!({"subnet_id": f.subnet["id"], "node": "node1", "ip": "10.60.1.88",
                "security_groups": [f.group["id"]]}),
        )
        .unwrap();
    let fresh_spec = tests::VmSpec::new("e", 1, &id(&fresh), fresh["mac"].as_str().unwrap())
        .with_ip(ip(&fresh["ip"]), 24, None);
    f.ha.cloud.lab.add_vm(fresh_spec).unwrap();
    api.create(
        &format!("/v1/security-groups/{}/rules", id(&f.group)),
        &json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 6222}),
    )
    .unwrap();
    // Down a while, then back.
    std::thread::sleep(hold() / 2);
    let t0 = Instant::now();
    f.ha.cloud
        .lab
        .start_agent(1, &tests::bins::AgentSpec::default())
        .unwrap();
    let fresh_mac = fresh["mac"].as_str().unwrap().to_string();
    wait_until(SETTLE, "node1 converged", || {
        let lab = &f.ha.cloud.lab;
        has(lab, &fresh_mac)
            && has(lab, "tp_dst=6222")
            && !has(lab, &doomed_mac)
            && !has(lab, "tp_dst=6111")
            && !has(lab, "10.60.2.")
    })
    .unwrap();
    println!("FIGURE agent back: node1 converged in {:?}", t0.elapsed());
    let seen = traffic.finish();
    assert_no_loss("changes while agent down", &seen);
    // The converged set is exactly what a fresh agent renders.
    let converged = flows(&f.ha.cloud.lab, 1, false);
    let state = f.ha.cloud.lab.node(1).unwrap().dir().join("agent");
    f.ha.cloud.lab.stop_agent(1, false).unwrap();
    // Its local copy gone, it starts from a full snapshot.
    std::fs::remove_file(state.join("applied-state.json")).unwrap();
    f.ha.cloud
        .lab
        .start_agent(1, &tests::bins::AgentSpec::default())
        .unwrap();
    let resynced = wait_until(SETTLE, "fresh agent resynced", || {
        flows(&f.ha.cloud.lab, 1, false) == converged
    });
    if let Err(e) = resynced {
        let now = flows(&f.ha.cloud.lab, 1, false);
        panic!(
            "{e}: only after the resume {:#?}\nonly after a fresh sync {:#?}",
            converged.difference(&now).collect::<Vec<_>>(),
            now.difference(&converged).collect::<Vec<_>>()
        );
    }
}

/// Scenario 7: the etcd leader killed while clients create VPCs through
/// both replicas concurrently, retrying failures: every acknowledged
/// create is there exactly once; reports the write-unavailability window.
#[test]
fn etcd_leader_killed_under_creates() {
    let mut f = setup();
    let apis: Vec<ApiClient> = (0..f.ha.replicas()).map(|i| f.ha.api(i).unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (api, stop, acked, retries) = (
                apis[w % apis.len()].clone(),
                stop.clone(),
                acked.clone(),
                retries.clone(),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("w{w}-{i}");
                    let body = json!({"name": name, "cidrs": ["10.200.0.0/16"]});
                    // Retry the same create until it is answered: a 409
                    // means an earlier attempt landed (names are unique).
                    loop {
                        match api.post("/v1/vpcs", &body) {
                            Ok(a) if a.status.is_success() || a.status.as_u16() == 409 => {
                                acked.lock().unwrap().push((name.clone(), Instant::now()));
                                break;
                            }
                            _ => {
                                retries.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let leader = f.ha.etcd.leader().unwrap();
    let t0 = Instant::now();
    f.ha.etcd.kill_member(leader).unwrap();
    std::thread::sleep(hold());
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // The window: the longest pause between acknowledgements around the kill.
    let mut times: Vec<Instant> = acked.iter().map(|(_, t)| *t).collect();
    times.sort();
    let window = times
        .windows(2)
        .filter(|w| w[1] >= t0)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let listed = f.ha.api(0).unwrap().get("/v1/vpcs").unwrap();
    let items = listed.body["items"]
        .as_array()
        .or_else(|| listed.body.as_array())
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .filter(|n| n.starts_with('w'))
        .collect();
    let total = names.len();
    names.sort();
    names.dedup();
    println!(
        "FIGURE etcd leader killed: {} creates acknowledged, {} retries, write unavailability window {:?}",
        acked.len(),
        retries.load(Ordering::SeqCst),
        window
    );
    assert_eq!(total, names.len(), "duplicated VPCs");
    let missing: Vec<_> = acked
        .iter()
        .filter(|(n, _)| names.binary_search(n).is_err())
        .collect();
    assert!(missing.is_empty(), "acknowledged creates lost: {missing:?}");
    assert_eq!(names.len(), acked.len(), "VPCs nobody acknowledged");
    // The data path never noticed.
    let va = f.ha.cloud.lab.vm("a").unwrap();
    assert!(va.ping(f.ip_b, 3).unwrap().all_received());
}
