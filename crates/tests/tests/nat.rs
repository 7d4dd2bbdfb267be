//! EIPs and NAT gateways end to end (issue 6): the REST API, flowctl, the
//! agents and real Open vSwitch, asserted on packets that crossed the lab
//! between VMs and an "Internet" host on the external segment.
//!
//! Lab: node0 (compute, on the external segment: it hosts EIPs), node1
//! (compute, not attached), node2 and node3 (gateway nodes). The outside
//! host `inet` is the external network's router, 203.0.113.1, with
//! 198.51.100.10 behind it; its WHOAMI server tells each client the source
//! address it saw.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{json, Value};
use tests::bins::AgentSpec;
use tests::traffic::{
    longest_ping_gap, ping_replies, PingReply, CONNECT_LOOP, ECHO_SERVER, WHOAMI_CLIENT,
    WHOAMI_SERVER,
};
use tests::{require_root_and_tools, wait_until, Cloud, Proc};

const PYTHON: &str = "/usr/bin/python3";
const INTERNET: &str = "198.51.100.10";
const WHOAMI_PORT: &str = "9000";
const SETTLE: Duration = Duration::from_secs(20);
const GATEWAYS: [usize; 2] = [2, 3];

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn ip_of(v: &Value) -> String {
    v["ip"].as_str().unwrap().to_string()
}

/// The cloud, with a VPC attached to the external network, an open
/// security group, VM `a` on node0 and VM `b` on node1, and a NAT gateway
/// (SNAT of the subnet) whose EIP is `natgw_eip`.
struct World {
    cloud: Cloud,
    ext: Value,
    subnet: Value,
    nic_a: Value,
    nic_b: Value,
    natgw: Value,
    natgw_eip: Value,
    _servers: Vec<Proc>,
}

fn world() -> World {
    require_root_and_tools().unwrap();
    let mut cloud = Cloud::start_external(4, &[0, 2, 3], &GATEWAYS).unwrap();
    let inet = cloud
        .lab
        .add_outside_host("inet", &["203.0.113.1/24"], None)
        .unwrap();
    inet.run(&["ip", "addr", "add", &format!("{INTERNET}/32"), "dev", "lo"])
        .unwrap();
    let whoami = inet
        .netns()
        .spawn(
            "whoami",
            &[PYTHON, "-u", "-c", WHOAMI_SERVER, INTERNET, WHOAMI_PORT],
            Some(&inet.dir().join("whoami.out")),
        )
        .unwrap();
    let api = &cloud.api;
    let nodes: Vec<String> = [0, 2, 3]
        .iter()
        .map(|i| cloud.lab.node(*i).unwrap().name().to_string())
        .collect();
    let ext = api
        .create(
            "/v1/external-networks",
            &json!({"name": "internet", "physnet": "internet", "cidr": "203.0.113.0/24",
                "gateway_ip": "203.0.113.1",
                "pool": [{"first": "203.0.113.10", "last": "203.0.113.60"}],
                "nodes": nodes}),
        )
        .unwrap();
    let vpc = cloud.vpc("v", "10.0.0.0/16").unwrap();
    let path = format!("/v1/vpcs/{}", id(&vpc));
    api.patch(&path, &json!({"external_network_ids": [id(&ext)]}))
        .unwrap()
        .ok("PATCH", &path)
        .unwrap();
    let subnet = cloud.subnet(&vpc, "s", "10.0.1.0/24").unwrap();
    let open = api
        .create(
            "/v1/security-groups",
            &json!({"vpc_id": vpc["id"], "name": "open", "rules": [
                {"direction": "egress"},
                {"direction": "ingress", "protocol": "tcp"},
                {"direction": "ingress", "protocol": "udp"},
                {"direction": "ingress", "protocol": "icmp"},
            ]}),
        )
        .unwrap();
    let nic = |node: usize, addr: &str| {
        api.create(
            "/v1/nics",
            &json!({"subnet_id": subnet["id"], "node": cloud.lab.node(node).unwrap().name(),
                "ip": addr, "security_groups": [id(&open)]}),
        )
        .unwrap()
    };
    let nic_a = nic(0, "10.0.1.10");
    let nic_b = nic(1, "10.0.1.20");
    let natgw_eip = api
        .create("/v1/eips", &json!({"external_network_id": id(&ext)}))
        .unwrap();
    let natgw = api
        .create(
            "/v1/nat-gateways",
            &json!({"name": "gw", "vpc_id": vpc["id"], "external_network_id": id(&ext),
                "eip_ids": [id(&natgw_eip)]}),
        )
        .unwrap();
    api.create(
        &format!("/v1/nat-gateways/{}/snat-rules", id(&natgw)),
        &json!({"subnet_id": subnet["id"], "eip_id": id(&natgw_eip)}),
    )
    .unwrap();
    let mut servers = vec![whoami];
    for (name, nic) in [("a", &nic_a), ("b", &nic_b)] {
        let vm = cloud.vm(name, nic, &subnet).unwrap();
        servers.push(vm.spawn_python("echo", ECHO_SERVER, &["7"]).unwrap());
    }
    World {
        cloud,
        ext,
        subnet,
        nic_a,
        nic_b,
        natgw,
        natgw_eip,
        _servers: servers,
    }
}

impl World {
    /// The source the Internet sees for `vm`'s `proto` flow ("fail" if none).
    fn seen_from(&self, vm: &str, proto: &str) -> String {
        let out = self
            .cloud
            .lab
            .vm(vm)
            .unwrap()
            .run(&[PYTHON, "-c", WHOAMI_CLIENT, INTERNET, WHOAMI_PORT, proto])
            .unwrap_or_else(|e| format!("fail ({e})"));
        out.trim().to_string()
    }

    fn wait_seen(&self, vm: &str, proto: &str, want: &str) {
        let ok = wait_until(SETTLE, &format!("{vm} seen as {want}"), || {
            self.seen_from(vm, proto) == want
        });
        if ok.is_err() {
            panic!(
                "{vm} ({proto}) is seen as {:?}, want {want}\n{}",
                self.seen_from(vm, proto),
                self.cloud.lab.dump()
            );
        }
    }

    /// Pings from the Internet host: packets received of `count`.
    fn ping_from_outside(&self, dst: &str, count: u32) -> u32 {
        let inet = self.cloud.lab.host("inet").unwrap();
        inet.ping(dst.parse().unwrap(), count)
            .map(|s| s.received)
            .unwrap_or(0)
    }

    /// An echo through TCP from the Internet host to `dst:port`.
    fn tcp_from_outside(&self, dst: &str, port: u16) -> bool {
        let inet = self.cloud.lab.host("inet").unwrap();
        let script = "import socket,sys\n\
            c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\n\
            c.sendall(b'hello');print(c.recv(16).decode())";
        inet.run(&[PYTHON, "-c", script, dst, &port.to_string()])
            .is_ok_and(|o| o.trim() == "hello")
    }

    fn eip(&self) -> Value {
        self.cloud
            .api
            .create("/v1/eips", &json!({"external_network_id": id(&self.ext)}))
            .unwrap()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.cloud
            .api
            .post(path, &body)
            .unwrap()
            .ok("POST", path)
            .unwrap()
    }

    /// The gateway nodes' names, highest rank first, as the API shows them.
    fn ranking(&self) -> Vec<String> {
        let path = format!("/v1/nat-gateways/{}", id(&self.natgw));
        let v = self.cloud.api.get(&path).unwrap().ok("GET", &path).unwrap();
        v["gateway_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    fn node_index(&self, name: &str) -> usize {
        self.cloud
            .lab
            .nodes()
            .iter()
            .position(|n| n.name() == name)
            .unwrap()
    }

    /// Packets node `i` sent out to the Internet translated by the NAT
    /// gateway (its EXT_EMIT flows), or `None` if its switch is gone.
    fn emitted(&self, i: usize) -> Option<u64> {
        let flows = self.cloud.lab.node(i).unwrap().flows("br-int").ok()?;
        Some(
            flows
                .lines()
                .filter(|l| l.contains("table=47") && l.contains("n_packets="))
                .filter_map(|l| {
                    l.split("n_packets=")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum(),
        )
    }

    /// Runs [`CONNECT_LOOP`] from VM `b` for `secs`, calling `during` at
    /// `at`; the attempts as (seconds, source seen or None).
    fn connect_loop(
        &mut self,
        secs: f64,
        at: Duration,
        during: impl FnOnce(&mut Self),
    ) -> Vec<(f64, Option<String>)> {
        let vm = self.cloud.lab.vm("b").unwrap();
        let out = vm.dir().join("connect-loop.out");
        let _ = std::fs::remove_file(&out);
        let secs_arg = secs.to_string();
        let mut p = vm
            .spawn_python(
                "connect-loop",
                CONNECT_LOOP,
                &[INTERNET, WHOAMI_PORT, "100", &secs_arg],
            )
            .unwrap();
        std::thread::sleep(at);
        during(self);
        let done = wait_until(Duration::from_secs_f64(secs + 10.0), "connect loop", || {
            std::fs::read_to_string(&out).is_ok_and(|s| s.contains("done"))
        });
        p.stop().unwrap();
        done.unwrap();
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter(|l| *l != "done")
            .map(|l| {
                let mut f = l.split_whitespace();
                let t: f64 = f.next().unwrap().parse().unwrap();
                match f.next() {
                    Some("ok") => (t, f.next().map(str::to_string)),
                    _ => (t, None),
                }
            })
            .collect()
    }
}

/// A `ping -D` (timestamped replies) from `ns` to `dst` every `interval_ms`
/// for `secs`, in the background; read with [`ping_log`].
fn start_ping(
    ns: &tests::Netns,
    dir: &std::path::Path,
    name: &str,
    dst: &str,
    interval_ms: u32,
    secs: u32,
) -> (Proc, std::path::PathBuf) {
    let log = dir.join(format!("{name}.out"));
    let interval = format!("{}", f64::from(interval_ms) / 1000.0);
    let p = ns
        .spawn(
            name,
            &[
                "ping",
                "-D",
                "-n",
                "-i",
                &interval,
                "-w",
                &secs.to_string(),
                dst,
            ],
            Some(&log),
        )
        .unwrap();
    (p, log)
}

/// The replies in a ping log so far.
fn ping_log(log: &std::path::Path) -> Vec<PingReply> {
    ping_replies(&std::fs::read_to_string(log).unwrap_or_default())
}

/// The longest time new connections kept failing: from the first failed
/// attempt of a run to the next success.
fn outage(attempts: &[(f64, Option<String>)]) -> (Duration, usize) {
    let mut worst = 0.0f64;
    let mut failed = 0;
    let mut since: Option<f64> = None;
    for (t, ok) in attempts {
        match (ok, since) {
            (None, None) => {
                since = Some(*t);
                failed += 1;
            }
            (None, Some(_)) => failed += 1,
            (Some(_), Some(s)) => {
                worst = worst.max(t - s);
                since = None;
            }
            (Some(_), None) => {}
        }
    }
    if let (Some(s), Some((t, _))) = (since, attempts.last()) {
        worst = worst.max(t - s);
    }
    (Duration::from_secs_f64(worst), failed)
}

/// Scenario 1: a VM with an EIP is reached at the EIP and leaves as the
/// EIP; unbound, it is unreachable and leaves through the NAT gateway.
#[test]
fn eip_in_and_out_then_unbound_through_the_nat_gateway() {
    let w = world();
    let eip = w.eip();
    let eip_ip = ip_of(&eip);
    assert_eq!(w.ping_from_outside(&eip_ip, 2), 0, "not bound yet");

    let inet = w.cloud.lab.host("inet").unwrap();
    let (mut pinger, log) = start_ping(inet.netns(), inet.dir(), "eip-ping", &eip_ip, 5, 20);
    std::thread::sleep(Duration::from_millis(200));
    w.post(
        &format!("/v1/eips/{}/bind", id(&eip)),
        json!({"nic_id": id(&w.nic_a)}),
    );
    let bound_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    wait_until(SETTLE, "EIP reachable", || !ping_log(&log).is_empty()).unwrap();
    pinger.stop().unwrap();
    let first = ping_log(&log)[0].at.unwrap();
    println!(
        "FIGURE EIP bind to reachable (bind returned → first echo reply at the outside host, 5 ms pings): {:.0} ms",
        (first - bound_at) * 1000.0
    );
    assert!(
        w.tcp_from_outside(&eip_ip, 7),
        "TCP to the EIP reaches the VM"
    );
    assert_eq!(w.seen_from("a", "tcp"), eip_ip, "outside sees the EIP");
    assert_eq!(w.seen_from("a", "udp"), eip_ip);
    // The VM without an EIP is still behind the NAT gateway.
    w.wait_seen("b", "tcp", &ip_of(&w.natgw_eip));

    w.post(&format!("/v1/eips/{}/unbind", id(&eip)), json!({}));
    w.wait_seen("a", "tcp", &ip_of(&w.natgw_eip));
    assert_eq!(w.ping_from_outside(&eip_ip, 3), 0, "unbound: unreachable");
    assert!(!w.tcp_from_outside(&eip_ip, 7));
}

/// Scenario 2: a VM without an EIP goes out (TCP, UDP, ICMP) as the NAT
/// gateway's EIP; from outside it is reachable only through a DNAT rule.
#[test]
fn nat_gateway_snat_out_and_dnat_in() {
    let w = world();
    let gw_ip = ip_of(&w.natgw_eip);
    w.wait_seen("b", "tcp", &gw_ip);
    assert_eq!(w.seen_from("b", "udp"), gw_ip);
    let ping = w
        .cloud
        .lab
        .vm("b")
        .unwrap()
        .ping(INTERNET.parse::<Ipv4Addr>().unwrap(), 3)
        .unwrap();
    assert_eq!(ping.received, 3, "ICMP out through the NAT gateway");

    assert!(!w.tcp_from_outside(&gw_ip, 8080), "no DNAT rule yet");
    assert!(!w.tcp_from_outside(&gw_ip, 7));
    w.cloud
        .api
        .create(
            &format!("/v1/nat-gateways/{}/dnat-rules", id(&w.natgw)),
            &json!({"protocol": "tcp", "eip_id": id(&w.natgw_eip), "external_port": 8080,
                "nic_id": id(&w.nic_b), "internal_port": 7}),
        )
        .unwrap();
    wait_until(SETTLE, "DNAT reaches b", || {
        w.tcp_from_outside(&gw_ip, 8080)
    })
    .unwrap();
    assert!(
        !w.tcp_from_outside(&gw_ip, 7),
        "only the rule's port is open"
    );
    let _ = &w.subnet;
}

/// Scenarios 3 and 4: the active gateway's ovs-vswitchd and agent killed
/// while VM b opens a connection every 100 ms; `headless`: with the
/// control plane down first.
fn failover(headless: bool) {
    let mut w = world();
    let gw_ip = ip_of(&w.natgw_eip);
    w.wait_seen("b", "tcp", &gw_ip);
    let ranking = w.ranking();
    assert_eq!(ranking.len(), 2, "{ranking:?}");
    let active = w.node_index(&ranking[0]);
    let standby = w.node_index(&ranking[1]);
    if headless {
        w.cloud.lab.stop_flowctl(true).unwrap();
    }
    let before = w.emitted(standby).unwrap();
    let vm = w.cloud.lab.vm("b").unwrap();
    let (mut pinger, log) = start_ping(vm.netns(), vm.dir(), "failover-ping", INTERNET, 10, 9);
    let attempts = w.connect_loop(8.0, Duration::from_secs(2), |w| {
        w.cloud.lab.stop_agent(active, true).unwrap();
        w.cloud
            .lab
            .node_mut(active)
            .unwrap()
            .ovs_mut()
            .kill_vswitchd()
            .unwrap();
    });
    pinger.stop().unwrap();
    let (down, failed) = outage(&attempts);
    let total = attempts.len();
    let lost = Duration::from_millis(u64::from(longest_ping_gap(&ping_log(&log))) * 10);
    println!(
        "FIGURE gateway failover{}: pings (every 10 ms) lost for {lost:?}; new connections (0.5 s connect timeout) failed for {down:?} ({failed} of {total} attempts)",
        if headless { " (control plane down)" } else { "" }
    );
    assert!(lost < Duration::from_secs(1), "outage {lost:?}");
    let tail = &attempts[attempts.len() - 20..];
    assert!(
        tail.iter()
            .all(|(_, ok)| ok.as_deref() == Some(gw_ip.as_str())),
        "after the failover every connection works, as the NAT gateway's EIP: {tail:?}"
    );
    assert!(down < Duration::from_secs(3), "outage {down:?}");
    // Exactly one gateway forwards: the standby, whose counters moved; the
    // other has no switch left.
    assert!(w.emitted(active).is_none(), "the killed gateway is gone");
    assert!(
        w.emitted(standby).unwrap() > before,
        "the standby took over"
    );

    // The failed gateway returns (ovs-vswitchd, then its agent): it stands
    // by, takes nothing back, and no new connection fails meanwhile.
    let attempts = w.connect_loop(8.0, Duration::from_millis(500), |w| {
        let node = w.cloud.lab.node_mut(active).unwrap();
        node.ovs_mut().restart_vswitchd().unwrap();
        w.cloud
            .lab
            .start_agent(active, &AgentSpec::default())
            .unwrap();
    });
    let (down, failed) = outage(&attempts);
    println!(
        "FIGURE gateway return: {failed} of {} new connections failed, longest gap {down:?}",
        attempts.len()
    );
    assert_eq!(failed, 0, "{attempts:?}");
    assert_one_gateway_forwards(&w, standby, active, &gw_ip);
}

/// New connections leave through gateway `serving` only: its counters
/// move, `idle`'s do not.
fn assert_one_gateway_forwards(w: &World, serving: usize, idle: usize, gw_ip: &str) {
    // Counters reach the flow table a moment later (revalidation): let
    // what came before settle first.
    std::thread::sleep(Duration::from_secs(2));
    let (s0, i0) = (w.emitted(serving).unwrap(), w.emitted(idle).unwrap());
    for _ in 0..3 {
        assert_eq!(w.seen_from("b", "tcp"), gw_ip);
    }
    wait_until(
        Duration::from_secs(5),
        "the serving gateway counts them",
        || w.emitted(serving).unwrap() > s0,
    )
    .unwrap();
    assert_eq!(
        w.emitted(idle).unwrap(),
        i0,
        "the other gateway carries nothing"
    );
}

/// An agent restart on the active gateway is no failover: its data path
/// keeps serving, and the standby stays idle.
#[test]
fn agent_restart_on_the_active_gateway_moves_nothing() {
    let mut w = world();
    let gw_ip = ip_of(&w.natgw_eip);
    w.wait_seen("b", "tcp", &gw_ip);
    let ranking = w.ranking();
    let active = w.node_index(&ranking[0]);
    let standby = w.node_index(&ranking[1]);
    let attempts = w.connect_loop(6.0, Duration::from_secs(1), |w| {
        w.cloud.lab.stop_agent(active, true).unwrap();
        w.cloud
            .lab
            .start_agent(active, &AgentSpec::default())
            .unwrap();
    });
    let (_, failed) = outage(&attempts);
    assert_eq!(failed, 0, "{attempts:?}");
    // Past the restarted agent's BFD grace: it still serves.
    std::thread::sleep(Duration::from_secs(3));
    assert_one_gateway_forwards(&w, active, standby, &gw_ip);
}

#[test]
fn gateway_failover() {
    failover(false);
}

#[test]
fn gateway_failover_headless() {
    failover(true);
}

/// Scenario 5: draining the active gateway moves traffic to the other with
/// no failed connection; then it carries none and is safe to stop.
#[test]
fn drain_moves_traffic_without_failed_connections() {
    let mut w = world();
    let gw_ip = ip_of(&w.natgw_eip);
    w.wait_seen("b", "tcp", &gw_ip);
    let ranking = w.ranking();
    let active = w.node_index(&ranking[0]);
    let standby = w.node_index(&ranking[1]);
    let name = ranking[0].clone();
    let attempts = w.connect_loop(6.0, Duration::from_secs(2), |w| {
        let path = format!("/v1/nodes/{name}");
        w.cloud
            .api
            .patch(&path, &json!({"drained": true}))
            .unwrap()
            .ok("PATCH", &path)
            .unwrap();
    });
    let (down, failed) = outage(&attempts);
    println!(
        "FIGURE drain: {failed} of {} new connections failed, longest gap {down:?}",
        attempts.len()
    );
    assert_eq!(failed, 0, "{attempts:?}");
    assert_eq!(
        w.ranking(),
        vec![ranking[1].clone(), ranking[0].clone()],
        "drained: ranked last"
    );
    let path = format!("/v1/nodes/{name}");
    let node = w.cloud.api.get(&path).unwrap().ok("GET", &path).unwrap();
    assert_eq!(node["safe_to_stop"], true, "{node}");
    assert_one_gateway_forwards(&w, standby, active, &gw_ip);
}

/// The EIP's bandwidth limit (OVS meters, both directions): a TCP stream
/// through the EIP stays near the limit each way.
#[test]
fn eip_bandwidth_limit_holds_both_ways() {
    const KBPS: u64 = 4_000;
    let w = world();
    let eip = w
        .cloud
        .api
        .create(
            "/v1/eips",
            &json!({"external_network_id": id(&w.ext), "rate_limit_kbps": KBPS}),
        )
        .unwrap();
    let eip_ip = ip_of(&eip);
    w.post(
        &format!("/v1/eips/{}/bind", id(&eip)),
        json!({"nic_id": id(&w.nic_a)}),
    );
    wait_until(SETTLE, "EIP reachable", || {
        w.ping_from_outside(&eip_ip, 1) == 1
    })
    .unwrap();
    let vm = w.cloud.lab.vm("a").unwrap();
    let _server = vm
        .netns()
        .spawn(
            "iperf3",
            &["iperf3", "-s"],
            Some(&vm.dir().join("iperf3.out")),
        )
        .unwrap();
    let inet = w.cloud.lab.host("inet").unwrap();
    let rate = |reverse: bool| -> f64 {
        let mut args = vec!["iperf3", "-c", eip_ip.as_str(), "-t", "3", "-J"];
        if reverse {
            args.push("-R");
        }
        // The server may not listen yet: a short run until one gets through.
        wait_until(SETTLE, "iperf3 through the EIP", || {
            inet.run(&["iperf3", "-c", eip_ip.as_str(), "-t", "1"])
                .is_ok()
        })
        .unwrap();
        let out = inet.run(&args).map_err(|e| e.to_string());
        let v: Value = serde_json::from_str(&out.unwrap()).unwrap();
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap()
            / 1000.0
    };
    let inbound = rate(false);
    let outbound = rate(true);
    println!(
        "FIGURE EIP limit {KBPS} kbit/s: inbound {inbound:.0} kbit/s, outbound {outbound:.0} kbit/s"
    );
    for got in [inbound, outbound] {
        assert!(
            got < KBPS as f64 * 1.3 && got > KBPS as f64 * 0.3,
            "{got:.0} kbit/s against a {KBPS} kbit/s limit"
        );
    }
}
