//! The overlay spine end to end: intent through the REST API, flowctl, the
//! agents and real Open vSwitch, asserted on packets that crossed the lab.
//!
//! Each test brings up its own lab (nodes as namespaces with their own OVS,
//! VMs as namespaces) and stacknet on it, and tears it all down at the end,
//! also on failure (the lab prints every node's flows and logs then).

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket};
use serde_json::{json, Value};
use tests::{require_root_and_tools, wait_until, Cloud};

const SETTLE: Duration = Duration::from_secs(20);

fn ip(v: &Value) -> Ipv4Addr {
    v.as_str().unwrap().parse().unwrap()
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

fn start(nodes: usize) -> Cloud {
    require_root_and_tools().unwrap();
    Cloud::start(nodes).unwrap()
}

/// Scenario 1: two VMs of one subnet on different nodes: ping and TCP both ways.
#[test]
fn same_subnet_across_nodes() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("web", "10.10.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "front", "10.10.1.0/24").unwrap();
    let a = cloud.nic(&sn, 0, None).unwrap();
    let b = cloud.nic(&sn, 1, None).unwrap();
    cloud.vm("a", &a, &sn).unwrap();
    cloud.vm("b", &b, &sn).unwrap();

    let (ip_a, ip_b) = (ip(&a["ip"]), ip(&b["ip"]));
    cloud.lab.vm("a").unwrap().wait_ping(ip_b, SETTLE).unwrap();
    let there = cloud.lab.ping("a", ip_b, 5).unwrap();
    let back = cloud.lab.ping("b", ip_a, 5).unwrap();
    assert!(there.all_received(), "a→b {there:?}");
    assert!(back.all_received(), "b→a {back:?}");

    let lab = &cloud.lab;
    let (va, vb) = (lab.vm("a").unwrap(), lab.vm("b").unwrap());
    let ab = va.tcp_to(vb, ip_b, 5001, 2 << 20).unwrap();
    let ba = vb.tcp_to(va, ip_a, 5002, 2 << 20).unwrap();
    assert_eq!(ab.bytes, 2 << 20);
    assert_eq!(ba.bytes, 2 << 20);
}

/// Scenario 2: two subnets of one VPC on different nodes, routed by the
/// distributed router on the source node: TTL decremented once, the
/// destination subnet's gateway MAC as source.
#[test]
fn routed_between_subnets_on_the_source_node() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("app", "10.20.0.0/16").unwrap();
    let s1 = cloud.subnet(&vpc, "s1", "10.20.1.0/24").unwrap();
    let s2 = cloud.subnet(&vpc, "s2", "10.20.2.0/24").unwrap();
    let a = cloud.nic(&s1, 0, None).unwrap();
    let b = cloud.nic(&s2, 1, None).unwrap();
    cloud.vm("a", &a, &s1).unwrap();
    cloud.vm("b", &b, &s2).unwrap();
    let (ip_a, ip_b) = (ip(&a["ip"]), ip(&b["ip"]));

    cloud.lab.vm("a").unwrap().wait_ping(ip_b, SETTLE).unwrap();
    let cap = cloud.lab.vm_mut("b").unwrap().capture("icmp").unwrap();
    let stats = cloud.lab.ping("a", ip_b, 3).unwrap();
    assert!(stats.all_received(), "{stats:?}");
    let frames = cap_stop(cap);

    let gw2_mac = s2["gateway_mac"].as_str().unwrap().to_string();
    let b_mac = b["mac"].as_str().unwrap().to_string();
    let requests: Vec<_> = frames
        .iter()
        .filter_map(|f| icmp_frame(f))
        .filter(|f| f.dst_ip == ip_b && f.src_ip == ip_a)
        .collect();
    assert!(
        requests.len() >= 3,
        "echo requests seen at b: {requests:?} (of {} frames)",
        frames.len()
    );
    for f in &requests {
        assert_eq!(
            f.src_mac, gw2_mac,
            "routed frames come from the gateway MAC"
        );
        assert_eq!(f.dst_mac, b_mac);
        assert_eq!(f.ttl, 63, "TTL decremented exactly once (ping sends 64)");
    }

    let lab = &cloud.lab;
    let t = lab
        .vm("b")
        .unwrap()
        .tcp_to(lab.vm("a").unwrap(), ip_a, 5003, 1 << 20)
        .unwrap();
    assert_eq!(t.bytes, 1 << 20);
}

/// Scenario 3: two VPCs with the same CIDR and the same VM addresses: each
/// pair talks, nothing crosses.
#[test]
fn overlapping_vpcs_stay_apart() {
    let mut cloud = start(2);
    let mut pairs = Vec::new();
    for tenant in ["red", "blue"] {
        let vpc = cloud.vpc(tenant, "10.30.0.0/16").unwrap();
        let sn = cloud.subnet(&vpc, "s", "10.30.1.0/24").unwrap();
        let x = cloud
            .nic(&sn, 0, Some(Ipv4Addr::new(10, 30, 1, 10)))
            .unwrap();
        let y = cloud
            .nic(&sn, 1, Some(Ipv4Addr::new(10, 30, 1, 20)))
            .unwrap();
        cloud.vm(&format!("{tenant}x"), &x, &sn).unwrap();
        cloud.vm(&format!("{tenant}y"), &y, &sn).unwrap();
        pairs.push((vpc, x, y));
    }
    let target = Ipv4Addr::new(10, 30, 1, 20);
    cloud
        .lab
        .vm("redx")
        .unwrap()
        .wait_ping(target, SETTLE)
        .unwrap();
    cloud
        .lab
        .vm("bluex")
        .unwrap()
        .wait_ping(target, SETTLE)
        .unwrap();

    // Both tenants ping 10.30.1.20; each VM with that address sees only its
    // own tenant's echo requests (by source MAC: the senders share an IP).
    let caps = ["redy", "bluey"].map(|vm| cloud.lab.vm_mut(vm).unwrap().capture("icmp").unwrap());
    for x in ["redx", "bluex"] {
        let stats = cloud.lab.ping(x, target, 5).unwrap();
        assert!(stats.all_received(), "{x}: {stats:?}");
    }
    let senders = |t: usize| pairs[t].1["mac"].as_str().unwrap().to_string();
    for (t, cap) in caps.into_iter().enumerate() {
        let seen: Vec<_> = cap_stop(cap).iter().filter_map(|f| icmp_frame(f)).collect();
        let requests: Vec<_> = seen.iter().filter(|f| f.dst_ip == target).collect();
        assert!(
            requests.len() >= 5,
            "tenant {t} saw its own pings: {seen:?}"
        );
        for f in &requests {
            assert_eq!(
                f.src_mac,
                senders(t),
                "tenant {t} received the other's frame: {f:?}"
            );
        }
    }
}

/// Scenario 4: ARP for an address nobody owns is not flooded to other nodes;
/// ARP for a known address (even of a VM on another node) is answered on
/// the local node.
#[test]
fn arp_is_answered_locally_and_never_flooded() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("arp", "10.40.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.40.1.0/24").unwrap();
    let a = cloud.nic(&sn, 0, None).unwrap();
    let b = cloud.nic(&sn, 1, None).unwrap();
    cloud.vm("a", &a, &sn).unwrap();
    cloud.vm("b", &b, &sn).unwrap();
    cloud
        .lab
        .vm("a")
        .unwrap()
        .wait_ping(ip(&b["ip"]), SETTLE)
        .unwrap();

    let underlay = cloud.lab.underlay_bridge().to_string();
    let tunnel = cloud
        .lab
        .capture(cloud.lab.underlay(), &underlay, "udp port 4789", "vxlan")
        .unwrap();
    let va = cloud.lab.vm("a").unwrap();
    let known = va.arping(ip(&b["ip"])).unwrap();
    let gateway = va.arping(ip(&sn["gateway_ip"])).unwrap();
    let unknown = va.arping(Ipv4Addr::new(10, 40, 1, 200)).unwrap();
    // Positive control: the capture does see tunnelled traffic.
    assert!(cloud.lab.ping("a", ip(&b["ip"]), 2).unwrap().all_received());
    let inner: Vec<u16> = cap_stop(tunnel)
        .iter()
        .filter_map(|f| vxlan_inner_ethertype(f))
        .collect();

    assert_eq!(
        known.as_deref(),
        b["mac"].as_str(),
        "remote VM's MAC answered"
    );
    assert_eq!(
        gateway.as_deref(),
        sn["gateway_mac"].as_str(),
        "gateway answered"
    );
    assert_eq!(unknown, None, "nobody owns 10.40.1.200");
    assert!(
        inner.contains(&0x0800),
        "the capture saw the tunnelled pings: {inner:x?}"
    );
    assert!(
        !inner.contains(&0x0806),
        "ARP crossed the underlay: {inner:x?}"
    );
}

/// Scenario 5: a real DHCP client gets the address the API allocated, the
/// gateway and the MTU, answered by the agent.
#[test]
fn dhcp_gives_the_allocated_address() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("dhcp", "10.50.0.0/16").unwrap();
    let sn = cloud
        .api
        .create(
            "/v1/subnets",
            &json!({"vpc_id": vpc["id"], "name": "s", "cidr": "10.50.1.0/24",
                    "dns_servers": ["10.50.1.53"], "mtu": 1400}),
        )
        .unwrap();
    let a = cloud.nic(&sn, 0, None).unwrap();
    let b = cloud.nic(&sn, 1, None).unwrap();
    cloud.vm("b", &b, &sn).unwrap();
    let node = cloud.node_index(&a).unwrap();
    let spec = tests::VmSpec::new("a", node, id(&a), a["mac"].as_str().unwrap())
        .with_dhcp(tests::traffic::DhcpClient::Dhclient)
        .with_mtu(1500);
    cloud.lab.add_vm(spec).unwrap();
    let lease = cloud.lab.vm("a").unwrap().lease().cloned().unwrap();
    assert_eq!(lease.ip, Some(ip(&a["ip"])), "{lease:?}");
    assert_eq!(lease.prefix_len, Some(24));
    assert_eq!(lease.router, Some(ip(&sn["gateway_ip"])));
    assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 50, 1, 53)]);
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(lease.server_id, Some(ip(&sn["gateway_ip"])));

    // The lease is usable: the VM talks to the other node with it.
    cloud
        .lab
        .vm("a")
        .unwrap()
        .wait_ping(ip(&b["ip"]), SETTLE)
        .unwrap();
}

/// Scenario 6: deleting a NIC stops its traffic and removes its flows on
/// every node; a node with no NIC of a VPC holds no state of that VPC.
#[test]
fn deleting_a_nic_removes_it_everywhere() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("gone", "10.60.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.60.1.0/24").unwrap();
    let a = cloud.nic(&sn, 0, None).unwrap();
    let b = cloud.nic(&sn, 1, None).unwrap();
    cloud.vm("a", &a, &sn).unwrap();
    cloud.vm("b", &b, &sn).unwrap();
    let ip_b = ip(&b["ip"]);
    cloud.lab.vm("a").unwrap().wait_ping(ip_b, SETTLE).unwrap();
    let vni = vpc["vni"].as_u64().unwrap();
    let b_mac = b["mac"].as_str().unwrap().to_string();
    for node in cloud.lab.nodes() {
        let flows = node.flows("br-int").unwrap();
        assert!(
            flows.contains(&b_mac),
            "{} should know b before: {flows}",
            node.name()
        );
    }

    let gone = cloud.api.delete(&format!("/v1/nics/{}", id(&b))).unwrap();
    assert_eq!(gone.status, 202, "{:?}", gone.body);
    // Succeeded only once both nodes (each had b in its state) acked.
    let op = cloud.api.wait_operation(&gone.body, SETTLE).unwrap();
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["nodes"].as_array().unwrap().len(), 2, "{op}");
    for node in cloud.lab.nodes() {
        wait_until(SETTLE, &format!("{} to forget b", node.name()), || {
            node.flows("br-int")
                .is_ok_and(|f| !f.contains(&b_mac) && !f.contains(&ip_b.to_string()))
        })
        .unwrap();
    }
    let stats = cloud.lab.ping("a", ip_b, 3).unwrap();
    assert_eq!(stats.received, 0, "traffic to a deleted NIC: {stats:?}");

    // node1 has no NIC of the VPC left: nothing of it stays there.
    let vni_hex = format!("{vni:#x}");
    let n1 = cloud.lab.node(1).unwrap();
    wait_until(SETTLE, "node1 to drop the VPC", || {
        n1.flows("br-int").is_ok_and(|f| !f.contains(&vni_hex))
    })
    .unwrap();
    let n0 = cloud.lab.node(0).unwrap().flows("br-int").unwrap();
    assert!(
        n0.contains(&vni_hex),
        "node0 still carries the VPC (a is there): {n0}"
    );
}

/// Scenario 7: bad input through the API gets the right 4xx with a clear
/// message and changes nothing, neither in the API nor on the nodes.
#[test]
fn bad_input_changes_nothing() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("strict", "10.70.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.70.1.0/24").unwrap();
    let a = cloud
        .nic(&sn, 0, Some(Ipv4Addr::new(10, 70, 1, 10)))
        .unwrap();
    cloud.vm("a", &a, &sn).unwrap();

    let api = &cloud.api;
    let snapshot = |cloud: &Cloud| {
        let lists: Vec<Value> = ["/v1/nodes", "/v1/vpcs", "/v1/subnets", "/v1/nics"]
            .iter()
            .map(|p| cloud.api.get(p).unwrap().body)
            .collect();
        let flows: Vec<String> = cloud
            .lab
            .nodes()
            .iter()
            .map(|n| strip_counters(&n.flows("br-int").unwrap()))
            .collect();
        (lists, flows)
    };
    let before = snapshot(&cloud);

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/subnets",
            json!({"vpc_id": vpc["id"], "name": "o", "cidr": "10.70.1.128/25"}),
            409,
            "overlap",
        ),
        (
            "/v1/subnets",
            json!({"vpc_id": vpc["id"], "name": "x", "cidr": "10.70.300.0/24"}),
            400,
            "cidr",
        ),
        (
            "/v1/nics",
            json!({"subnet_id": sn["id"], "ip": "10.99.0.5"}),
            422,
            "ip",
        ),
        (
            "/v1/nics",
            json!({"subnet_id": sn["id"], "ip": "10.70.1.10"}),
            409,
            "10.70.1.10",
        ),
        (
            "/v1/vpcs",
            json!({"name": "bad", "cidrs": ["10.0.0.0/33"]}),
            400,
            "cidr",
        ),
        (
            "/v1/nics",
            json!({"subnet_id": sn["id"], "colour": "blue"}),
            400,
            "colour",
        ),
    ];
    for (path, body, status, needle) in &cases {
        let got = api.post(path, body).unwrap();
        assert!(
            got.status.as_u16() == *status || (*status == 400 && got.status.as_u16() == 422),
            "POST {path} {body}: want {status}, got {} {}",
            got.status,
            got.body
        );
        assert!(
            got.body
                .to_string()
                .to_lowercase()
                .contains(&needle.to_lowercase()),
            "POST {path}: message should name {needle:?}: {}",
            got.body
        );
    }
    assert_eq!(
        before,
        snapshot(&cloud),
        "a rejected request changed something"
    );

    // A Set holds at most 45 nodes: two are in already, 43 more fit.
    for i in 0..43u8 {
        api.create(
            "/v1/nodes",
            &json!({"name": format!("extra{i}"), "underlay_ip": format!("198.18.0.{}", i + 1)}),
        )
        .unwrap();
    }
    let full = api
        .post(
            "/v1/nodes",
            &json!({"name": "extra-last", "underlay_ip": "198.18.1.1"}),
        )
        .unwrap();
    assert_eq!(full.status, 409, "{}", full.body);
    assert!(
        full.detail().contains("default"),
        "names the Set: {}",
        full.body
    );
    assert_eq!(
        api.get("/v1/nodes").unwrap().body.as_array().unwrap().len(),
        45
    );
}

/// An ICMP frame's addressing, as seen on the wire.
#[derive(Debug)]
struct IcmpFrame {
    src_mac: String,
    dst_mac: String,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    ttl: u8,
}

fn icmp_frame(frame: &[u8]) -> Option<IcmpFrame> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let eth = match p.link? {
        etherparse::LinkSlice::Ethernet2(e) => e,
        _ => return None,
    };
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        return None;
    };
    let h = ip.header();
    let mac = |m: [u8; 6]| proto::Mac(m).to_string();
    Some(IcmpFrame {
        src_mac: mac(eth.source()),
        dst_mac: mac(eth.destination()),
        src_ip: h.source_addr(),
        dst_ip: h.destination_addr(),
        ttl: h.ttl(),
    })
}

/// The ethertype of the frame inside a VXLAN packet on the underlay.
fn vxlan_inner_ethertype(frame: &[u8]) -> Option<u16> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
        return None;
    };
    // VXLAN header (8 bytes), then the inner Ethernet header.
    let inner = udp.payload().get(8..)?;
    Some(u16::from_be_bytes([*inner.get(12)?, *inner.get(13)?]))
}

fn cap_stop(c: tests::traffic::Capture) -> Vec<Vec<u8>> {
    c.stop().unwrap().frames
}

/// Flow dumps without the counters that change with traffic.
fn strip_counters(flows: &str) -> String {
    flows
        .lines()
        .map(|l| {
            l.split(", ")
                .filter(|f| {
                    !(f.starts_with("duration=")
                        || f.starts_with("n_packets=")
                        || f.starts_with("n_bytes=")
                        || f.starts_with("idle_age=")
                        || f.starts_with("hard_age="))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Scenario 7 (issue 5): a NIC's operation follows the agents. It is
/// `running` while the node it is bound to has no agent, `succeeded` only
/// once that agent is back and acked; an agent that cannot install the
/// change (its OVS refuses the bundle: flow table full) nacks and the
/// operation fails with the agent's error.
#[test]
fn nic_operations_succeed_only_once_the_agent_acked() {
    let mut cloud = start(2);
    let vpc = cloud.vpc("ops", "10.70.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.70.1.0/24").unwrap();
    let (n0, n1) = (
        cloud.lab.node(0).unwrap().name().to_string(),
        cloud.lab.node(1).unwrap().name().to_string(),
    );
    let op_of = |api: &tests::ApiClient, op: &Value| {
        let path = format!("/v1/operations/{}", id(op));
        api.get(&path).unwrap().ok("GET", &path).unwrap()
    };

    // node1 has no agent: the operation waits on it, and keeps waiting.
    cloud.lab.stop_agent(1, false).unwrap();
    let r = cloud
        .api
        .post("/v1/nics", &json!({"subnet_id": sn["id"], "node": n1}))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let op = r.body;
    assert_eq!(op["state"], "pending");
    wait_until(SETTLE, "the operation to run", || {
        op_of(&cloud.api, &op)["state"] == "running"
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let now = op_of(&cloud.api, &op);
    assert_eq!(now["state"], "running", "{now}");
    assert_eq!(now["waiting_on"], json!([n1]), "{now}");

    // Its agent comes back, gets the NIC and acks: succeeded.
    cloud
        .lab
        .start_agent(1, &tests::bins::AgentSpec::default())
        .unwrap();
    let done = cloud.api.wait_operation(&op, SETTLE).unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["nodes"], json!([n1]), "{done}");
    assert_eq!(done["waiting_on"], json!([]), "{done}");

    // node0's OVS refuses any new flow in table 0: its agent nacks the
    // next change it gets, and the operation fails with that error.
    let node0 = cloud.lab.node(0).unwrap();
    let in_table0 = node0
        .ovs()
        .ofctl(&["dump-flows", "br-int", "table=0"])
        .unwrap()
        .lines()
        .filter(|l| l.contains("table=0"))
        .count();
    node0
        .ovs()
        .vsctl(&[
            "--",
            "--id=@ft",
            "create",
            "Flow_Table",
            &format!("flow_limit={in_table0}"),
            "overflow_policy=refuse",
            "--",
            "set",
            "Bridge",
            "br-int",
            "flow_tables:0=@ft",
        ])
        .unwrap();
    let r = cloud
        .api
        .post("/v1/nics", &json!({"subnet_id": sn["id"], "node": n0}))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let failed = cloud.api.wait_operation(&r.body, SETTLE).unwrap();
    cloud
        .lab
        .node(0)
        .unwrap()
        .ovs()
        .vsctl(&["clear", "Bridge", "br-int", "flow_tables"])
        .unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "node_rejected", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains(&n0), "{failed}");
    eprintln!("the nacked operation: {message}");
}
