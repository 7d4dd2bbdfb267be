//! Security groups and port security end to end (issue 3): intent through
//! the REST API, flowctl, the agents and real Open vSwitch with conntrack,
//! asserted on packets that crossed the lab. Every "gets nothing" check has
//! a positive control: the same capture, or the same probe, that shows
//! traffic does arrive when it is allowed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use serde_json::{json, Value};
use tests::traffic::ECHO_SERVER;
use tests::{require_root_and_tools, wait_until, Cloud, Vm};

const SETTLE: Duration = Duration::from_secs(20);
const PYTHON: &str = "/usr/bin/python3";

fn ip(v: &Value) -> Ipv4Addr {
    v.as_str().unwrap().parse().unwrap()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn start(nodes: usize) -> Cloud {
    require_root_and_tools().unwrap();
    Cloud::start(nodes).unwrap()
}

/// A group of `vpc` allowing all egress, plus `ingress` rules.
fn group(cloud: &Cloud, vpc: &Value, name: &str, ingress: Vec<Value>) -> Value {
    let mut rules = vec![json!({"direction": "egress"})];
    for mut r in ingress {
        r["direction"] = json!("ingress");
        rules.push(r);
    }
    cloud
        .api
        .create(
            "/v1/security-groups",
            &json!({"vpc_id": vpc["id"], "name": name, "rules": rules}),
        )
        .unwrap()
}

/// A NIC on lab node `node` in `groups` (the API's default if `None`).
fn nic(cloud: &Cloud, subnet: &Value, node: usize, addr: &str, groups: Option<&[&Value]>) -> Value {
    let mut body = json!({
        "subnet_id": subnet["id"],
        "node": cloud.lab.node(node).unwrap().name(),
        "ip": addr,
    });
    if let Some(g) = groups {
        body["security_groups"] = json!(g.iter().map(|g| id(g)).collect::<Vec<_>>());
    }
    cloud.api.create("/v1/nics", &body).unwrap()
}

fn vm<'a>(cloud: &'a mut Cloud, name: &str, nic: &Value, subnet: &Value) -> &'a mut Vm {
    cloud.vm(name, nic, subnet).unwrap()
}

/// One long-lived connection on which both ends send a byte every 100 ms;
/// each end appends a line to its log per byte received ("rx"). `server`
/// logs to argv[3], `client` to argv[4].
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
            pass
        time.sleep(0.1)
threading.Thread(target=send, daemon=True).start()
while True:
    try:
        d = c.recv(4096)
        if not d:
            break
        with open(log, "a") as f:
            f.write("rx %d %f\n" % (len(d), time.time()))
    except socket.timeout:
        pass
    except OSError:
        time.sleep(0.1)
"#;

/// Sends raw Ethernet frames (hex) out of eth0.
const SEND_FRAMES: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for h in sys.argv[1:]:
    s.send(bytes.fromhex(h))
"#;

fn send_frames(vm: &Vm, frames: &[Vec<u8>]) {
    let hex: Vec<String> = frames.iter().map(|f| tests::traffic::hex(f)).collect();
    let mut args = vec![PYTHON, "-c", SEND_FRAMES];
    args.extend(hex.iter().map(String::as_str));
    vm.run(&args).unwrap();
}

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

fn send_udp(vm: &Vm, dst: Ipv4Addr, port: u16) {
    let cmd = format!("echo probe | timeout 3 nc -u -n -w 1 {dst} {port}");
    let _ = vm.run(&["sh", "-c", &cmd]);
}

fn pings(vm: &Vm, dst: Ipv4Addr) -> bool {
    vm.ping(dst, 2).is_ok_and(|s| s.received > 0)
}

/// Lines in a stream log (bytes received so far).
fn rx_count(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.lines().filter(|l| l.starts_with("rx")).count())
        .unwrap_or(0)
}

/// Waits until the log grows by `n` lines: the stream is alive.
fn flowing(log: &Path, n: usize) {
    let base = rx_count(log);
    wait_until(Duration::from_secs(10), "stream to flow", || {
        rx_count(log) >= base + n
    })
    .unwrap();
}

/// Waits until the log stops growing (1 s without a new line) and checks
/// that it then stays still for another 2 s. Returns how long it took.
fn stopped(log: &Path) -> Duration {
    let t0 = Instant::now();
    let mut last = (rx_count(log), Instant::now());
    wait_until(Duration::from_secs(15), "stream to stop", || {
        let n = rx_count(log);
        if n != last.0 {
            last = (n, Instant::now());
        }
        last.1.elapsed() >= Duration::from_secs(1)
    })
    .unwrap();
    let took = t0.elapsed();
    let frozen = rx_count(log);
    std::thread::sleep(Duration::from_secs(2)); // a quiet period is the assertion
    assert_eq!(rx_count(log), frozen, "stream resumed");
    took
}

/// (source IP, protocol, destination port or ICMP type) of the IPv4
/// packets to `to` in a capture.
fn seen(frames: &[Vec<u8>], to: Ipv4Addr) -> BTreeSet<(Ipv4Addr, &'static str, u16)> {
    let mut out = BTreeSet::new();
    for f in frames {
        let Ok(p) = SlicedPacket::from_ethernet(f) else {
            continue;
        };
        let Some(NetSlice::Ipv4(v4)) = &p.net else {
            continue;
        };
        let h = v4.header();
        if h.destination_addr() != to {
            continue;
        }
        let src = h.source_addr();
        match &p.transport {
            Some(TransportSlice::Tcp(t)) if t.syn() && !t.ack() => {
                out.insert((src, "tcp", t.destination_port()));
            }
            Some(TransportSlice::Udp(u)) => {
                out.insert((src, "udp", u.destination_port()));
            }
            Some(TransportSlice::Icmpv4(i)) => {
                out.insert((src, "icmp", u16::from(i.type_u8())));
            }
            _ => {}
        }
    }
    out
}

/// Scenario 1: the allow/deny matrix. t's group admits tcp 8080 from its
/// own members, udp 5353 from another group, ICMP from another subnet and
/// tcp 9090 from one address; four sources each try all four.
#[test]
fn allow_deny_matrix() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("matrix", "10.41.0.0/16").unwrap();
    let s1 = cloud.subnet(&vpc, "s1", "10.41.1.0/24").unwrap();
    let s2 = cloud.subnet(&vpc, "s2", "10.41.2.0/24").unwrap();
    let go = group(&cloud, &vpc, "other", vec![]);
    let gs = group(&cloud, &vpc, "sources", vec![]);
    let gt = group(
        &cloud,
        &vpc,
        "target",
        vec![
            json!({"protocol": "udp", "port_range_min": 5353, "remote_group_id": go["id"]}),
            json!({"protocol": "icmp", "remote_cidr": "10.41.2.0/24"}),
            json!({"protocol": "tcp", "port_range_min": 9090, "remote_cidr": "10.41.1.14/32"}),
        ],
    );
    // Its own members: a rule naming the group itself.
    cloud
        .api
        .create(
            &format!("/v1/security-groups/{}/rules", id(&gt)),
            &json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 8080,
                "remote_group_id": gt["id"]}),
        )
        .unwrap();
    let t = nic(&cloud, &s1, 0, "10.41.1.10", Some(&[&gt]));
    let sources = [
        ("same", nic(&cloud, &s1, 0, "10.41.1.11", Some(&[&gt])), &s1),
        (
            "other",
            nic(&cloud, &s1, 1, "10.41.1.12", Some(&[&go])),
            &s1,
        ),
        (
            "subnet",
            nic(&cloud, &s2, 1, "10.41.2.13", Some(&[&gs])),
            &s2,
        ),
        ("cidr", nic(&cloud, &s1, 1, "10.41.1.14", Some(&[&gs])), &s1),
    ];
    vm(&mut cloud, "t", &t, &s1);
    for (name, n, sn) in &sources {
        vm(&mut cloud, name, n, sn);
    }
    let t_ip = ip(&t["ip"]);
    let _server = cloud
        .lab
        .vm("t")
        .unwrap()
        .spawn_python("echo", ECHO_SERVER, &["8080", "9090"])
        .unwrap();
    let allowed: BTreeSet<(Ipv4Addr, &str, u16)> = [
        (ip(&sources[0].1["ip"]), "tcp", 8080),
        (ip(&sources[1].1["ip"]), "udp", 5353),
        (ip(&sources[2].1["ip"]), "icmp", 8),
        (ip(&sources[3].1["ip"]), "tcp", 9090),
    ]
    .into();
    // Positive controls first, retried while the nodes catch up.
    let lab = &cloud.lab;
    wait_until(SETTLE, "same → t:8080", || {
        connects(lab.vm("same").unwrap(), t_ip, 8080)
    })
    .unwrap();
    wait_until(SETTLE, "cidr → t:9090", || {
        connects(lab.vm("cidr").unwrap(), t_ip, 9090)
    })
    .unwrap();
    wait_until(SETTLE, "subnet pings t", || {
        pings(lab.vm("subnet").unwrap(), t_ip)
    })
    .unwrap();

    let cap = cloud.lab.vm_mut("t").unwrap().capture("ip").unwrap();
    let lab = &cloud.lab;
    for (name, n, _) in &sources {
        let v = lab.vm(name).unwrap();
        let src = ip(&n["ip"]);
        for port in [8080, 9090] {
            let want = allowed.contains(&(src, "tcp", port));
            assert_eq!(connects(v, t_ip, port), want, "{name} → tcp {port}");
        }
        send_udp(v, t_ip, 5353);
        let want = allowed.contains(&(src, "icmp", 8));
        assert_eq!(pings(v, t_ip), want, "{name} → icmp");
    }
    // The datagram of the one allowed UDP source has had time to arrive
    // (the pings after it took a second or more).
    let got = cap.stop().unwrap();
    let arrived = seen(&got.frames, t_ip);
    assert_eq!(
        arrived, allowed,
        "what reached t (source, protocol, port/type):\n{}",
        got.text
    );
}

/// Scenario 2: what a NIC opens is answered although it admits nothing;
/// nobody can open a connection to it.
#[test]
fn replies_pass_closed_ingress_stays_closed() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("state", "10.42.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.42.1.0/24").unwrap();
    let closed = group(&cloud, &vpc, "closed", vec![]);
    let open = group(
        &cloud,
        &vpc,
        "open",
        vec![json!({"protocol": "tcp", "port_range_min": 7000})],
    );
    let a = nic(&cloud, &sn, 0, "10.42.1.10", Some(&[&closed]));
    let b = nic(&cloud, &sn, 1, "10.42.1.20", Some(&[&open]));
    vm(&mut cloud, "a", &a, &sn);
    vm(&mut cloud, "b", &b, &sn);
    let (ip_a, ip_b) = (ip(&a["ip"]), ip(&b["ip"]));
    let _srv_a = cloud
        .lab
        .vm("a")
        .unwrap()
        .spawn_python("echo", ECHO_SERVER, &["7000"])
        .unwrap();

    let cap = cloud
        .lab
        .vm_mut("a")
        .unwrap()
        .capture("tcp port 7000")
        .unwrap();
    let lab = &cloud.lab;
    let (va, vb) = (lab.vm("a").unwrap(), lab.vm("b").unwrap());
    // a opens: a megabyte goes through, every ACK from b comes back
    // through a's closed ingress.
    va.wait_ping(ip(&sn["gateway_ip"]), SETTLE).unwrap();
    let moved = wait_for_transfer(va, vb, ip_b, 7000);
    assert_eq!(moved, 1 << 20);
    // b opens: refused, and nothing of it reaches a.
    assert!(!connects(vb, ip_a, 7000), "b must not connect to a");
    let got = cap.stop().unwrap();
    let at_a = seen(&got.frames, ip_a);
    assert!(
        !at_a.contains(&(ip_b, "tcp", 7000)),
        "b's SYN reached a:\n{}",
        got.text
    );
    // Positive control: the same capture saw b's answers to a.
    let answers = got
        .frames
        .iter()
        .filter_map(|f| SlicedPacket::from_ethernet(f).ok())
        .filter(|p| match (&p.net, &p.transport) {
            (Some(NetSlice::Ipv4(v4)), Some(TransportSlice::Tcp(t))) => {
                v4.header().source_addr() == ip_b && t.source_port() == 7000 && t.ack()
            }
            _ => false,
        })
        .count();
    assert!(
        answers > 10,
        "b's answers seen at a: {answers}\n{}",
        got.text
    );
}

/// A 1 MiB transfer from `from` to `to`, retried while flows settle.
fn wait_for_transfer(from: &Vm, to: &Vm, dst: Ipv4Addr, port: u16) -> usize {
    let mut moved = 0;
    wait_until(SETTLE, "a transfer", || {
        match from.tcp_to(to, dst, port, 1 << 20) {
            Ok(t) => {
                moved = t.bytes;
                true
            }
            Err(_) => false,
        }
    })
    .unwrap();
    moved
}

/// Scenario 3: a new rule opens new connections at once; removing it
/// closes the established ones too, in both directions.
#[test]
fn rule_changes_apply_to_new_and_established_connections() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("change", "10.43.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.43.1.0/24").unwrap();
    let ga = group(&cloud, &vpc, "client", vec![]);
    let gb = group(&cloud, &vpc, "server", vec![]);
    let a = nic(&cloud, &sn, 0, "10.43.1.10", Some(&[&ga]));
    let b = nic(&cloud, &sn, 1, "10.43.1.20", Some(&[&gb]));
    vm(&mut cloud, "a", &a, &sn);
    vm(&mut cloud, "b", &b, &sn);
    let ip_b = ip(&b["ip"]);
    let lab = &cloud.lab;
    let (va, vb) = (lab.vm("a").unwrap(), lab.vm("b").unwrap());
    let _srv = vb.spawn_python("echo", ECHO_SERVER, &["7100"]).unwrap();
    // The NICs are up and a reaches the gateway; b still refuses 7100.
    va.wait_ping(ip(&sn["gateway_ip"]), SETTLE).unwrap();
    assert!(!connects(va, ip_b, 7100));

    let t0 = Instant::now();
    let rule = cloud
        .api
        .create(
            &format!("/v1/security-groups/{}/rules", id(&gb)),
            &json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 7100,
                "port_range_max": 7101}),
        )
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "a → b:7100 after the rule",
        || connects(va, ip_b, 7100),
    )
    .unwrap();
    eprintln!("rule added → connection accepted in {:?}", t0.elapsed());

    let log_a = va.dir().join("stream-a.log");
    let log_b = vb.dir().join("stream-b.log");
    let _sb = vb
        .spawn_python(
            "stream-b",
            STREAM,
            &["server", "-", "7101", log_b.to_str().unwrap()],
        )
        .unwrap();
    wait_until(Duration::from_secs(5), "stream server", || {
        vb.run(&["ss", "-Hltn"]).is_ok_and(|o| o.contains(":7101"))
    })
    .unwrap();
    let _sa = va
        .spawn_python(
            "stream-a",
            STREAM,
            &["client", &ip_b.to_string(), "7101", log_a.to_str().unwrap()],
        )
        .unwrap();
    // Positive control: the established connection carries data both ways.
    flowing(&log_a, 5);
    flowing(&log_b, 5);

    let t0 = Instant::now();
    cloud
        .api
        .delete(&format!(
            "/v1/security-groups/{}/rules/{}",
            id(&gb),
            id(&rule)
        ))
        .unwrap();
    let cut_b = stopped(&log_b);
    let cut_a = stopped(&log_a);
    eprintln!(
        "rule removed → established connection cut in {:?} (b hears nothing after {cut_b:?}, a after {cut_a:?})",
        t0.elapsed()
    );
    assert!(!connects(va, ip_b, 7100), "new connections refused too");
}

/// Scenario 4: a rule naming group B admits exactly B's members, as
/// membership changes; leaving B cuts the member's connections.
#[test]
fn remote_group_membership_opens_and_closes() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("remote", "10.44.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.44.1.0/24").unwrap();
    let gr = group(&cloud, &vpc, "b-clients", vec![]);
    let plain = group(&cloud, &vpc, "plain", vec![]);
    let gb = group(
        &cloud,
        &vpc,
        "b-server",
        vec![
            json!({"protocol": "tcp", "port_range_min": 7200, "port_range_max": 7201,
            "remote_group_id": gr["id"]}),
        ],
    );
    let b = nic(&cloud, &sn, 1, "10.44.1.20", Some(&[&gb]));
    let c = nic(&cloud, &sn, 0, "10.44.1.30", Some(&[&plain]));
    let member = nic(&cloud, &sn, 0, "10.44.1.40", Some(&[&gr]));
    vm(&mut cloud, "b", &b, &sn);
    vm(&mut cloud, "c", &c, &sn);
    vm(&mut cloud, "m", &member, &sn);
    let ip_b = ip(&b["ip"]);
    let lab = &cloud.lab;
    let (vb, vc, vm_) = (
        lab.vm("b").unwrap(),
        lab.vm("c").unwrap(),
        lab.vm("m").unwrap(),
    );
    let _srv = vb.spawn_python("echo", ECHO_SERVER, &["7200"]).unwrap();
    // Positive control: a member connects; c (not a member) does not.
    wait_until(SETTLE, "member → b", || connects(vm_, ip_b, 7200)).unwrap();
    assert!(!connects(vc, ip_b, 7200), "c is not in b-clients");

    let c_uri = format!("/v1/nics/{}", id(&c));
    let t0 = Instant::now();
    cloud
        .api
        .patch(&c_uri, &json!({"security_groups": [id(&plain), id(&gr)]}))
        .unwrap()
        .ok("PATCH", &c_uri)
        .unwrap();
    wait_until(Duration::from_secs(10), "c → b after joining", || {
        connects(vc, ip_b, 7200)
    })
    .unwrap();
    eprintln!("joined the remote group → admitted in {:?}", t0.elapsed());

    let log_c = vc.dir().join("stream-c.log");
    let log_b = vb.dir().join("stream-b.log");
    let _sb = vb
        .spawn_python(
            "stream-b",
            STREAM,
            &["server", "-", "7201", log_b.to_str().unwrap()],
        )
        .unwrap();
    wait_until(Duration::from_secs(5), "stream server", || {
        vb.run(&["ss", "-Hltn"]).is_ok_and(|o| o.contains(":7201"))
    })
    .unwrap();
    let _sc = vc
        .spawn_python(
            "stream-c",
            STREAM,
            &["client", &ip_b.to_string(), "7201", log_c.to_str().unwrap()],
        )
        .unwrap();
    flowing(&log_b, 5);
    flowing(&log_c, 5);

    cloud
        .api
        .patch(&c_uri, &json!({"security_groups": [id(&plain)]}))
        .unwrap()
        .ok("PATCH", &c_uri)
        .unwrap();
    stopped(&log_b);
    stopped(&log_c);
    assert!(!connects(vc, ip_b, 7200));
    // The member is unaffected.
    assert!(connects(vm_, ip_b, 7200));
}

fn mac_bytes(s: &str) -> [u8; 6] {
    let m: proto::Mac = s.parse().unwrap();
    m.0
}

fn udp_frame(
    src_mac: &str,
    dst_mac: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    marker: &str,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_bytes(src_mac), mac_bytes(dst_mac))
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, marker.as_bytes()).unwrap();
    out
}

/// An ARP reply: `sha`/`spa` to `tha`/`tpa`, from `eth_src`.
fn arp_reply(eth_src: &str, sha: &str, spa: Ipv4Addr, tha: &str, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend(mac_bytes(tha));
    f.extend(mac_bytes(eth_src));
    f.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend(mac_bytes(sha));
    f.extend(spa.octets());
    f.extend(mac_bytes(tha));
    f.extend(tpa.octets());
    f
}

/// Markers of UDP payloads and sender addresses of ARP replies in a capture.
fn delivered(frames: &[Vec<u8>]) -> (BTreeSet<String>, BTreeSet<Ipv4Addr>) {
    let (mut udp, mut arp) = (BTreeSet::new(), BTreeSet::new());
    for f in frames {
        if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] {
            arp.insert(Ipv4Addr::new(f[28], f[29], f[30], f[31]));
            continue;
        }
        if let Ok(p) = SlicedPacket::from_ethernet(f) {
            if let Some(TransportSlice::Udp(u)) = &p.transport {
                udp.insert(String::from_utf8_lossy(u.payload()).into_owned());
            }
        }
    }
    (udp, arp)
}

/// Scenario 5: crafted frames. Forged MAC, forged IP, an ARP reply claiming
/// another VM's address, a DHCP offer: none delivered. The same from an
/// allowed address pair, and the offer from a NIC without port security:
/// delivered.
#[test]
fn spoofed_frames_are_dropped_pairs_and_open_ports_are_not() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("spoof", "10.45.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.45.1.0/24").unwrap();
    let senders = group(&cloud, &vpc, "senders", vec![]);
    // b admits any UDP from the subnet: whatever it does not get was
    // stopped by port security, not by its group.
    let gb = group(
        &cloud,
        &vpc,
        "receiver",
        vec![json!({"protocol": "udp", "remote_cidr": "10.45.1.0/24"})],
    );
    let a = nic(&cloud, &sn, 0, "10.45.1.10", Some(&[&senders]));
    let b = nic(&cloud, &sn, 1, "10.45.1.20", Some(&[&gb]));
    let c = nic(&cloud, &sn, 1, "10.45.1.30", Some(&[&senders]));
    let o = cloud
        .api
        .create(
            "/v1/nics",
            &json!({"subnet_id": sn["id"], "node": cloud.lab.node(0).unwrap().name(),
                "ip": "10.45.1.40", "port_security": false}),
        )
        .unwrap();
    vm(&mut cloud, "a", &a, &sn);
    vm(&mut cloud, "b", &b, &sn);
    vm(&mut cloud, "o", &o, &sn);
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    let (a_mac, b_mac, c_mac, o_mac) = (s(&a, "mac"), s(&b, "mac"), s(&c, "mac"), s(&o, "mac"));
    let (ip_a, ip_b, ip_c, ip_o) = (ip(&a["ip"]), ip(&b["ip"]), ip(&c["ip"]), ip(&o["ip"]));
    let pair_mac = "02:45:00:00:00:c8";
    let (pair_ip, pair_ip2) = (Ipv4Addr::new(10, 45, 1, 200), Ipv4Addr::new(10, 45, 1, 201));

    let legit = udp_frame(&a_mac, &b_mac, ip_a, ip_b, 4000, 4000, "legit");
    let forged = [
        udp_frame(&c_mac, &b_mac, ip_a, ip_b, 4000, 4000, "forged-mac"),
        udp_frame(&a_mac, &b_mac, ip_c, ip_b, 4000, 4000, "forged-ip"),
        udp_frame(&a_mac, &b_mac, ip_a, ip_b, 67, 68, "dhcp-offer"),
        udp_frame(pair_mac, &b_mac, pair_ip, ip_b, 4000, 4000, "pair-mac"),
        udp_frame(&a_mac, &b_mac, pair_ip2, ip_b, 4000, 4000, "pair-ip"),
        arp_reply(&a_mac, &a_mac, ip_c, &b_mac, ip_b),
        arp_reply(pair_mac, pair_mac, pair_ip, &b_mac, ip_b),
    ];
    let arp_ok = arp_reply(&a_mac, &a_mac, ip_a, &b_mac, ip_b);
    let offer_o = udp_frame(&o_mac, &b_mac, ip_o, ip_b, 67, 68, "open-offer");

    // Wait until a legit frame gets through (b's node knows a).
    let mut cap = cloud
        .lab
        .vm_mut("b")
        .unwrap()
        .capture("udp or arp")
        .unwrap();
    wait_until(SETTLE, "a legit frame to reach b", || {
        send_frames(cloud.lab.vm("a").unwrap(), std::slice::from_ref(&legit));
        delivered(&cap.frames_so_far().unwrap_or_default())
            .0
            .contains("legit")
    })
    .unwrap();
    let _ = &mut cap;
    let va = cloud.lab.vm("a").unwrap();
    let mut all = forged.to_vec();
    all.push(arp_ok.clone());
    all.push(legit.clone());
    send_frames(va, &all);
    send_frames(cloud.lab.vm("o").unwrap(), std::slice::from_ref(&offer_o));
    // Positive controls, seen by the same capture: the last legit frame,
    // a's truthful ARP reply and the offer from the port without security.
    wait_until(Duration::from_secs(5), "controls to arrive", || {
        let (u, r) = delivered(&cap.frames_so_far().unwrap_or_default());
        u.contains("open-offer") && r.contains(&ip_a)
    })
    .unwrap();
    let got = cap.stop().unwrap();
    let (udp, arp) = delivered(&got.frames);
    for m in [
        "forged-mac",
        "forged-ip",
        "dhcp-offer",
        "pair-mac",
        "pair-ip",
    ] {
        assert!(!udp.contains(m), "{m} delivered:\n{}", got.text);
    }
    assert!(
        !arp.contains(&ip_c),
        "ARP claiming c's address delivered:\n{}",
        got.text
    );
    assert!(
        !arp.contains(&pair_ip),
        "pair not configured yet:\n{}",
        got.text
    );

    // With the pairs configured, their frames pass; the forgeries still do not.
    let uri = format!("/v1/nics/{}", id(&a));
    cloud
        .api
        .patch(
            &uri,
            &json!({"allowed_address_pairs": [
                {"ip_address": pair_ip.to_string(), "mac_address": pair_mac},
                {"ip_address": format!("{pair_ip2}/32")},
            ]}),
        )
        .unwrap()
        .ok("PATCH", &uri)
        .unwrap();
    let cap = cloud
        .lab
        .vm_mut("b")
        .unwrap()
        .capture("udp or arp")
        .unwrap();
    let va = cloud.lab.vm("a").unwrap();
    wait_until(Duration::from_secs(10), "pair frames to pass", || {
        send_frames(va, &forged);
        let (u, r) = delivered(&cap.frames_so_far().unwrap_or_default());
        u.contains("pair-mac") && u.contains("pair-ip") && r.contains(&pair_ip)
    })
    .unwrap();
    send_frames(va, &forged);
    send_frames(va, std::slice::from_ref(&legit));
    wait_until(Duration::from_secs(5), "the last frame", || {
        cap.frames_so_far().unwrap_or_default().len() > 3
    })
    .unwrap();
    let got = cap.stop().unwrap();
    let (udp, arp) = delivered(&got.frames);
    for m in ["forged-mac", "forged-ip", "dhcp-offer"] {
        assert!(
            !udp.contains(m),
            "{m} delivered with pairs set:\n{}",
            got.text
        );
    }
    assert!(!arp.contains(&ip_c), "{}", got.text);
}

/// Scenario 6: two tenants with the same addresses. A rule of one cannot
/// name the other's group (nor a NIC join it), and traffic of the other
/// tenant never reaches a NIC, even from the address of a member.
#[test]
fn tenants_cannot_admit_each_other() {
    let mut cloud = start(2);
    let vx = cloud.vpc("tenant-x", "10.46.0.0/16").unwrap();
    let vy = cloud.vpc("tenant-y", "10.46.0.0/16").unwrap();
    let sx = cloud.subnet(&vx, "s", "10.46.1.0/24").unwrap();
    let sy = cloud.subnet(&vy, "s", "10.46.1.0/24").unwrap();
    let gy = group(&cloud, &vy, "y-members", vec![]);
    let gx = group(&cloud, &vx, "x-members", vec![]);
    // x1 admits anyone on any protocol, and explicitly its own group.
    let gx1 = group(
        &cloud,
        &vx,
        "x1",
        vec![
            json!({"remote_group_id": gx["id"]}),
            json!({"protocol": "icmp"}),
        ],
    );
    // Naming y's group from x: refused, and so is joining it.
    let r = cloud
        .api
        .post(
            &format!("/v1/security-groups/{}/rules", id(&gx1)),
            &json!({"direction": "ingress", "remote_group_id": gy["id"]}),
        )
        .unwrap();
    assert_eq!(r.status.as_u16(), 422, "{}", r.body);
    assert!(r.detail().contains("not in VPC"), "{}", r.body);
    let r = cloud
        .api
        .post(
            "/v1/nics",
            &json!({"subnet_id": sx["id"], "security_groups": [id(&gy)]}),
        )
        .unwrap();
    assert_eq!(r.status.as_u16(), 422, "{}", r.body);

    let x1 = nic(&cloud, &sx, 0, "10.46.1.10", Some(&[&gx1]));
    let x2 = nic(&cloud, &sx, 1, "10.46.1.20", Some(&[&gx]));
    // y2 has x2's address and MAC: the same packet, another tenant.
    let y2 = cloud
        .api
        .create(
            "/v1/nics",
            &json!({"subnet_id": sy["id"], "node": cloud.lab.node(1).unwrap().name(),
                "ip": "10.46.1.20", "mac": x2["mac"], "security_groups": [id(&gy)]}),
        )
        .unwrap();
    let y1 = nic(&cloud, &sy, 0, "10.46.1.10", Some(&[&gy]));
    vm(&mut cloud, "x1", &x1, &sx);
    vm(&mut cloud, "x2", &x2, &sx);
    vm(&mut cloud, "y1", &y1, &sy);
    vm(&mut cloud, "y2", &y2, &sy);
    let x1_ip = ip(&x1["ip"]);
    // y's members ping each other: the path inside y works.
    cloud
        .api
        .create(
            &format!("/v1/security-groups/{}/rules", id(&gy)),
            &json!({"direction": "ingress", "protocol": "icmp", "remote_group_id": gy["id"]}),
        )
        .unwrap();
    let _srv = cloud
        .lab
        .vm("x1")
        .unwrap()
        .spawn_python("echo", ECHO_SERVER, &["7300"])
        .unwrap();
    let lab = &cloud.lab;
    // Positive controls: x2 (member of x-members) reaches x1 on any port;
    // y2 reaches 10.46.1.10 in its own tenant (y1).
    wait_until(SETTLE, "x2 → x1", || {
        connects(lab.vm("x2").unwrap(), x1_ip, 7300)
    })
    .unwrap();
    wait_until(SETTLE, "y2 → y1", || pings(lab.vm("y2").unwrap(), x1_ip)).unwrap();
    let cap = cloud.lab.vm_mut("x1").unwrap().capture("ip").unwrap();
    let lab = &cloud.lab;
    let vy2 = lab.vm("y2").unwrap();
    assert!(
        !connects(vy2, x1_ip, 7300),
        "y2 connected to 10.46.1.10:7300"
    );
    assert!(pings(vy2, x1_ip), "y2's pings go to y1");
    assert!(connects(lab.vm("x2").unwrap(), x1_ip, 7300));
    let got = cap.stop().unwrap();
    let at_x1 = seen(&got.frames, x1_ip);
    // Only x2's SYN arrived (y2 has the same address and MAC: count them),
    // and none of y2's pings.
    let syns = got
        .frames
        .iter()
        .filter_map(|f| SlicedPacket::from_ethernet(f).ok())
        .filter(|p| matches!(&p.transport, Some(TransportSlice::Tcp(t)) if t.syn() && !t.ack()))
        .count();
    assert_eq!(syns, 1, "{at_x1:?}\n{}", got.text);
    assert!(!at_x1.iter().any(|(_, p, _)| *p == "icmp"), "{}", got.text);
}
