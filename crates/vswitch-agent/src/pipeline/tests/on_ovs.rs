//! The rendered pipeline on a real Open vSwitch: every flow is accepted (in
//! one bundle, as the agent installs them) and `ofproto/trace` agrees with
//! the interpreter on what happens to packets. The sandbox (ovsdb-server and
//! ovs-vswitchd in a private namespace and directory) comes from the lab
//! crate; flows are written in `ovs-ofctl` syntax, which is test-only: the
//! product speaks OpenFlow itself.

use std::collections::HashMap;

use openflow::flow::{port, Action, CtZone, Field, Flow};
use proto::Mac;
use tests::{require_root_and_ovs, OvsSandbox};

use super::{lab, A1_MAC, A2_MAC, A3_MAC, GW1_MAC, GW2_MAC, PEER};
use crate::pipeline::{render, PortMap};

fn name(f: Field) -> String {
    match f {
        Field::InPort => "in_port".into(),
        Field::Metadata => "metadata".into(),
        Field::EthDst => "dl_dst".into(),
        Field::EthSrc => "dl_src".into(),
        Field::EthType => "dl_type".into(),
        Field::IpProto => "nw_proto".into(),
        Field::NwTtl => "nw_ttl".into(),
        Field::Ipv4Src => "nw_src".into(),
        Field::Ipv4Dst => "nw_dst".into(),
        Field::UdpSrc => "udp_src".into(),
        Field::UdpDst => "udp_dst".into(),
        Field::ArpOp => "arp_op".into(),
        Field::IcmpType => "icmp_type".into(),
        Field::ArpSpa => "arp_spa".into(),
        Field::ArpTpa => "arp_tpa".into(),
        Field::ArpSha => "arp_sha".into(),
        Field::ArpTha => "arp_tha".into(),
        Field::TunnelId => "tun_id".into(),
        Field::Reg(n) => format!("reg{n}"),
        Field::CtState => "ct_state".into(),
        Field::CtMark => "ct_mark".into(),
        Field::CtNwSrc => "ct_nw_src".into(),
        Field::CtNwDst => "ct_nw_dst".into(),
        Field::CtNwProto => "ct_nw_proto".into(),
        Field::CtTpSrc => "ct_tp_src".into(),
        Field::CtTpDst => "ct_tp_dst".into(),
        Field::ConjId => "conj_id".into(),
        other => panic!("no ovs-ofctl name for {other:?} in this test"),
    }
}

fn nxm(f: Field) -> &'static str {
    match f {
        Field::EthSrc => "NXM_OF_ETH_SRC[]",
        Field::EthDst => "NXM_OF_ETH_DST[]",
        Field::ArpSha => "NXM_NX_ARP_SHA[]",
        Field::ArpTha => "NXM_NX_ARP_THA[]",
        Field::ArpSpa => "NXM_OF_ARP_SPA[]",
        Field::ArpTpa => "NXM_OF_ARP_TPA[]",
        Field::Ipv4Src => "NXM_OF_IP_SRC[]",
        Field::Ipv4Dst => "NXM_OF_IP_DST[]",
        other => panic!("no NXM name for {other:?} in this test"),
    }
}

fn value(f: Field, v: u128) -> String {
    match f {
        Field::EthSrc | Field::EthDst | Field::ArpSha | Field::ArpTha => {
            let b = v.to_be_bytes();
            Mac(b[10..16].try_into().unwrap()).to_string()
        }
        Field::Ipv4Src
        | Field::Ipv4Dst
        | Field::ArpSpa
        | Field::ArpTpa
        | Field::CtNwSrc
        | Field::CtNwDst => std::net::Ipv4Addr::from(v as u32).to_string(),
        Field::InPort | Field::ConjId => v.to_string(),
        _ => format!("{v:#x}"),
    }
}

/// A flow as an `ovs-ofctl add-flows` line.
fn ofctl_line(f: &Flow) -> String {
    let mut s = format!(
        "table={},priority={},cookie={:#x}",
        f.table, f.priority, f.cookie
    );
    for m in f.matches.fields() {
        s += &format!(",{}={}", name(m.field), value(m.field, m.value));
        if let Some(mask) = m.mask {
            s += &format!("/{}", value(m.field, mask));
        }
    }
    let mut acts: Vec<String> = f
        .actions
        .iter()
        .map(|a| match a {
            Action::Output(p) if *p == port::IN_PORT => "in_port".into(),
            Action::Output(p) => format!("output:{p}"),
            Action::Controller { max_len, userdata } => {
                let data: Vec<String> = userdata.iter().map(|b| format!("{b:02x}")).collect();
                format!("controller(max_len={max_len},userdata={})", data.join("."))
            }
            Action::SetField { field, value: v } => {
                format!("set_field:{}->{}", value(*field, *v), name(*field))
            }
            Action::Move { src, dst, .. } => format!("move:{}->{}", nxm(*src), nxm(*dst)),
            Action::DecTtl => "dec_ttl".into(),
            Action::CtClear => "ct_clear".into(),
            Action::Resubmit { table } => format!("resubmit(,{table})"),
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => format!("conjunction({id},{}/{n_clauses})", clause + 1),
            Action::Ct {
                commit,
                zone,
                table,
                actions,
                ..
            } => {
                let mut parts = vec![];
                if *commit {
                    parts.push("commit".to_string());
                }
                parts.push(match zone {
                    CtZone::Imm(z) => format!("zone={z}"),
                    CtZone::Field {
                        field: Field::Reg(n),
                        ofs,
                    } => format!("zone=NXM_NX_REG{n}[{ofs}..{}]", ofs + 15),
                    other => panic!("{other:?} not written in this test"),
                });
                if let Some(t) = table {
                    parts.push(format!("table={t}"));
                }
                let exec: Vec<String> = actions
                    .iter()
                    .map(|a| match a {
                        Action::SetField { field, value: v } => {
                            format!("set_field:{v:#x}->{}", name(*field))
                        }
                        other => panic!("{other:?} not written in this test"),
                    })
                    .collect();
                if !exec.is_empty() {
                    parts.push(format!("exec({})", exec.join(",")));
                }
                format!("ct({})", parts.join(","))
            }
            other => panic!("{other:?} not written in this test"),
        })
        .collect();
    if let Some(t) = f.goto_table {
        acts.push(format!("goto_table:{t}"));
    }
    if acts.is_empty() {
        acts.push("drop".into());
    }
    format!("{s},actions={}", acts.join(","))
}

struct Switch {
    sb: OvsSandbox,
    /// ofport → datapath port number, to read `Datapath actions`.
    odp: HashMap<u32, u32>,
}

impl Switch {
    fn trace(&self, packet: &str) -> String {
        self.sb
            .appctl(&["ofproto/trace", "br-int", packet])
            .unwrap()
    }

    /// The datapath actions of every pass of the packet, joined by " | ":
    /// the trace follows conntrack recirculations (as a new connection),
    /// each with its own "Datapath actions" line.
    fn datapath_actions(&self, packet: &str) -> String {
        let out = self.trace(packet);
        let passes: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("Datapath actions: "))
            .collect();
        assert!(!passes.is_empty(), "no datapath actions in\n{out}");
        passes.join(" | ")
    }
}

/// br-int with the lab's NIC ports and the tunnel, the lab's flows installed.
fn switch() -> (Switch, Vec<Flow>) {
    require_root_and_ovs().unwrap();
    let sb = OvsSandbox::start("pipe").unwrap();
    sb.add_bridge("br-int").unwrap();
    sb.vsctl(&["set", "bridge", "br-int", "fail_mode=secure"])
        .unwrap();
    let (state, _) = lab();
    let mut ports = PortMap::new();
    for (nic, ofport) in [("nic-a1", 5), ("nic-a2", 6), ("nic-b1", 7), ("nic-b2", 8)] {
        let iface = format!("p{ofport}");
        sb.vsctl(&[
            "add-port",
            "br-int",
            &iface,
            "--",
            "set",
            "interface",
            &iface,
            "type=internal",
            &format!("ofport_request={ofport}"),
            &format!("external_ids:iface-id={nic}"),
        ])
        .unwrap();
        ports.set_nic(nic, sb.ofport(&iface).unwrap());
    }
    sb.vsctl(&[
        "add-port",
        "br-int",
        "tun-n2",
        "--",
        "set",
        "interface",
        "tun-n2",
        "type=vxlan",
        "options:remote_ip=192.0.2.2",
        "options:key=flow",
        "ofport_request=100",
    ])
    .unwrap();
    ports.set_tunnel(PEER, sb.ofport("tun-n2").unwrap());
    // The tests below use the fixture's port numbers; OVS granted them.
    assert_eq!(ports, lab().1);
    let flows = render(&state, &ports, 1);
    let file = sb.dir().join("flows.txt");
    let text: Vec<String> = flows.iter().map(ofctl_line).collect();
    std::fs::write(&file, text.join("\n") + "\n").unwrap();
    sb.ofctl(&["--bundle", "add-flows", "br-int", file.to_str().unwrap()])
        .unwrap();
    // "  p5 5/3: (internal)" → ofport 5 is datapath port 3.
    let odp = sb
        .appctl(&["dpif/show"])
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (_, nums) = l.trim().split_once(' ')?;
            let (of, dp) = nums.split(':').next()?.split_once('/')?;
            Some((of.parse().ok()?, dp.parse().ok()?))
        })
        .collect();
    (Switch { sb, odp }, flows)
}

const ARP: &str = "dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1";

/// Whether the last pass outputs nothing (it may still commit a
/// connection in the sender's zone before the packet is dropped).
fn dropped(a: &str) -> bool {
    let pass = a.rsplit(" | ").next().unwrap_or(a);
    pass == "drop" || !split_actions(pass).iter().any(|x| x.parse::<u32>().is_ok())
}

/// Top-level actions of one pass (commas inside parentheses kept).
fn split_actions(pass: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (vec![], 0i32, 0);
    for (i, c) in pass.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&pass[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&pass[start..]);
    out
}

/// The last action of the last pass ("drop" or an output port).
fn last(a: &str) -> &str {
    a.rsplit(" | ")
        .next()
        .and_then(|p| p.rsplit(',').next())
        .unwrap_or(a)
}

#[test]
fn ovs_accepts_every_flow_and_forwards_like_the_model() {
    let (sw, flows) = switch();
    let dumped = sw
        .sb
        .ofctl(&["dump-flows", "br-int", "--no-stats"])
        .unwrap();
    let installed = dumped.lines().filter(|l| l.contains("cookie=")).count();
    assert_eq!(installed, flows.len(), "{dumped}");
    let dp = |ofport: u32| sw.odp[&ofport].to_string();

    // ARP responder: answered back out of port 5 with the remote NIC's MAC.
    let a = sw.datapath_actions(&format!(
        "in_port=5,dl_src={A1_MAC},{ARP},arp_spa=10.0.1.10,arp_sha={A1_MAC},arp_tpa=10.0.1.30"
    ));
    assert_eq!(last(&a), dp(5), "{a}");
    assert!(
        a.contains(&format!("src={A3_MAC}")) && a.contains("op=2"),
        "{a}"
    );
    // Unknown address: dropped.
    let a = sw.datapath_actions(&format!(
        "in_port=5,dl_src={A1_MAC},{ARP},arp_spa=10.0.1.10,arp_sha={A1_MAC},arp_tpa=10.0.1.99"
    ));
    assert!(dropped(&a), "{a}");

    // Routed to the other subnet: gateway MAC as source, TTL 63, port 6.
    // (ICMP: OVS writes no L3 field of an IP packet with protocol 0.)
    let a = sw.datapath_actions(&format!(
        "in_port=5,dl_src={A1_MAC},dl_dst={GW1_MAC},icmp,nw_src=10.0.1.10,nw_dst=10.0.2.20,nw_ttl=64"
    ));
    assert!(a.contains(&format!("src={GW2_MAC},dst={A2_MAC}")), "{a}");
    assert!(a.contains("ttl=63"), "{a}");
    assert_eq!(last(&a), dp(6), "{a}");
    // Unknown destination and spoofed source: dropped.
    for pkt in [
        format!("in_port=5,dl_src={A1_MAC},dl_dst={GW1_MAC},ip,nw_src=10.0.1.10,nw_dst=10.0.2.99"),
        format!("in_port=5,dl_src={A1_MAC},dl_dst={GW1_MAC},ip,nw_src=10.0.1.11,nw_dst=10.0.2.20"),
        format!("in_port=5,dl_src={A3_MAC},dl_dst={A2_MAC},ip,nw_src=10.0.1.10,nw_dst=10.0.2.20"),
        format!("in_port=5,dl_src={A1_MAC},dl_dst=ff:ff:ff:ff:ff:ff,ip,nw_src=10.0.1.10,nw_dst=10.0.1.255"),
        format!("in_port=5,dl_src={A1_MAC},dl_dst={A2_MAC},ipv6"),
    ] {
        let a = sw.datapath_actions(&pkt);
        assert!(dropped(&a), "{pkt}: {a}");
    }

    // Ping the gateway: turned around on port 5.
    let a = sw.datapath_actions(&format!(
        "in_port=5,dl_src={A1_MAC},dl_dst={GW1_MAC},icmp,icmp_type=8,nw_src=10.0.1.10,nw_dst=10.0.1.1"
    ));
    assert!(a.contains(&format!("src={GW1_MAC},dst={A1_MAC}")), "{a}");
    assert!(a.contains("src=10.0.1.1,dst=10.0.1.10"), "{a}");
    assert!(a.contains("type=0"), "{a}");
    assert_eq!(last(&a), dp(5), "{a}");

    // Same MAC in vpc-b: delivered to vpc-b's port, never vpc-a's.
    let a = sw.datapath_actions(&format!(
        "in_port=7,dl_src={A1_MAC},dl_dst={A2_MAC},ip,nw_src=10.0.1.10,nw_dst=10.0.1.20"
    ));
    assert_eq!(last(&a), dp(8), "{a}");
    // Tracked in the sender's zone, then committed in the receiver's.
    assert!(
        a.contains("ct(zone=7)") && a.contains("ct(commit,zone=8"),
        "{a}"
    );

    // To the peer: tun_id = VNI, out of the tunnel port (the datapath may
    // not route to 192.0.2.2 in the sandbox, so read the OpenFlow trace).
    let t = sw.trace(&format!(
        "in_port=5,dl_src={A1_MAC},dl_dst={A3_MAC},ip,nw_src=10.0.1.10,nw_dst=10.0.1.30"
    ));
    assert!(t.contains("set_field:0x64->tun_id"), "{t}");
    assert!(t.contains("output:100"), "{t}");
    // From the tunnel, VNI 100, to nic-a1: port 5; VNI 300 (vpc-c): dropped.
    let a = sw.datapath_actions(&format!(
        "in_port=100,tun_id=100,dl_src={A3_MAC},dl_dst={A1_MAC},ip,nw_src=10.0.1.30,nw_dst=10.0.1.10"
    ));
    assert_eq!(last(&a), dp(5), "{a}");
    let a = sw.datapath_actions(&format!(
        "in_port=100,tun_id=300,dl_src={A3_MAC},dl_dst={A1_MAC},ip,nw_src=10.0.1.30,nw_dst=10.0.1.10"
    ));
    assert!(dropped(&a), "{a}");

    // DHCP DISCOVER from 0.0.0.0 goes to the controller with our userdata.
    let t = sw.trace(&format!(
        "in_port=5,dl_src={A1_MAC},dl_dst=ff:ff:ff:ff:ff:ff,udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,udp_src=68,udp_dst=67"
    ));
    assert!(
        t.contains("controller(") && t.contains("userdata=01"),
        "{t}"
    );
    // A VM sending a DHCP offer: dropped.
    let a = sw.datapath_actions(&format!(
        "in_port=5,dl_src={A1_MAC},dl_dst=ff:ff:ff:ff:ff:ff,udp,nw_src=10.0.1.10,nw_dst=255.255.255.255,udp_src=67,udp_dst=68"
    ));
    assert!(dropped(&a), "{a}");
}
