//! Tests of the renderer: written-out flows for a small state, and
//! behaviour checked by walking packets through the rendered tables with a
//! small OpenFlow interpreter ([`trace`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use openflow::flow::{ct_state, port, Action, CtZone, Field, Flow};
use proto::{Ipv4Prefix, Mac, Nic, NodeInfo, NodeState, Peer, Subnet, Vpc};

use super::*;

mod nat;
mod on_ovs;
mod security_groups;

// ---------------------------------------------------------------- fixtures

const NODE: &str = "n1";
const PEER: &str = "n2";
const TUN: u32 = 100;

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn vpc(id: &str, vni: u32) -> Vpc {
    Vpc { id: id.into(), vni }
}

fn subnet(id: &str, vpc: &str, cidr: &str, gw: &str, gw_mac: &str) -> Subnet {
    let (addr, len) = cidr.split_once('/').unwrap();
    Subnet {
        id: id.into(),
        vpc_id: vpc.into(),
        cidr: Ipv4Prefix {
            addr: ip(addr),
            len: len.parse().unwrap(),
        },
        gateway_ip: ip(gw),
        gateway_mac: mac(gw_mac),
        dns_servers: vec![ip("10.255.255.53")],
        mtu: 1450,
        lease_secs: 3600,
    }
}

fn nic(id: &str, vpc: &str, subnet: &str, m: &str, addr: &str, node: &str) -> Nic {
    Nic {
        id: id.into(),
        vpc_id: vpc.into(),
        subnet_id: subnet.into(),
        mac: mac(m),
        ip: ip(addr),
        node: node.into(),
        port_security: true,
        security_groups: vec![open_group(vpc)],
        allowed_address_pairs: vec![],
    }
}

/// The group every fixture NIC is in: any traffic, both directions, so the
/// tests of the other stages see packets cross the security stages.
fn open_group(vpc: &str) -> String {
    format!("open-{vpc}")
}

fn allow_all(vpc: &str) -> proto::SecurityGroup {
    let any = |id: &str, direction| proto::SgRule {
        id: id.into(),
        direction,
        protocol: proto::RuleProtocol::Any,
        remote: proto::Remote::Cidr(Ipv4Prefix {
            addr: Ipv4Addr::UNSPECIFIED,
            len: 0,
        }),
    };
    proto::SecurityGroup {
        id: open_group(vpc),
        vpc_id: vpc.into(),
        rules: vec![
            any("in", proto::Direction::Ingress),
            any("out", proto::Direction::Egress),
        ],
    }
}

fn node_state(vpcs: Vec<Vpc>, subnets: Vec<Subnet>, nics: Vec<Nic>, peers: &[&str]) -> NodeState {
    NodeState {
        node: NodeInfo {
            name: NODE.into(),
            underlay_ip: Some(ip("192.0.2.1")),
        },
        revision: 7,
        security_groups: vpcs
            .iter()
            .map(|v| (open_group(&v.id), allow_all(&v.id)))
            .collect(),
        vpcs: vpcs.into_iter().map(|v| (v.id.clone(), v)).collect(),
        subnets: subnets.into_iter().map(|s| (s.id.clone(), s)).collect(),
        nics: nics.into_iter().map(|n| (n.id.clone(), n)).collect(),
        peers: peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let peer = Peer {
                    node: (*p).into(),
                    underlay_ip: Ipv4Addr::new(192, 0, 2, 10 + i as u8),
                    bfd: false,
                };
                (peer.node.clone(), peer)
            })
            .collect(),
        ..NodeState::default()
    }
}

const GW1_MAC: &str = "02:00:00:00:01:01";
const GW2_MAC: &str = "02:00:00:00:02:01";
const A1_MAC: &str = "02:aa:00:00:00:01";
const A2_MAC: &str = "02:aa:00:00:00:02";
const A3_MAC: &str = "02:aa:00:00:00:03";
const A4_MAC: &str = "02:aa:00:00:00:04";

/// Two VPCs with identical addressing (vpc-b copies vpc-a's CIDR, IPs and
/// MACs), and a third VPC with no NIC on this node.
///
/// - vpc-a (VNI 100): sub-a1 10.0.1.0/24, sub-a2 10.0.2.0/24;
///   nic-a1 local port 5 (sub-a1), nic-a2 local port 6 (sub-a2),
///   nic-a3 on n2 (sub-a1), nic-a4 on n2 (sub-a2)
/// - vpc-b (VNI 200): sub-b1 10.0.1.0/24 (same gateway MAC as sub-a1);
///   nic-b1 local port 7 = nic-a1's MAC/IP, nic-b2 local port 8 = nic-a2's
///   MAC with IP 10.0.1.20, nic-b3 on n2 = nic-a3's MAC/IP
/// - vpc-c (VNI 300): only nic-c1 on n2
fn lab() -> (NodeState, PortMap) {
    let state = node_state(
        vec![vpc("vpc-a", 100), vpc("vpc-b", 200), vpc("vpc-c", 300)],
        vec![
            subnet("sub-a1", "vpc-a", "10.0.1.0/24", "10.0.1.1", GW1_MAC),
            subnet("sub-a2", "vpc-a", "10.0.2.0/24", "10.0.2.1", GW2_MAC),
            subnet("sub-b1", "vpc-b", "10.0.1.0/24", "10.0.1.1", GW1_MAC),
            subnet("sub-c1", "vpc-c", "10.9.0.0/24", "10.9.0.1", GW1_MAC),
        ],
        vec![
            nic("nic-a1", "vpc-a", "sub-a1", A1_MAC, "10.0.1.10", NODE),
            nic("nic-a2", "vpc-a", "sub-a2", A2_MAC, "10.0.2.20", NODE),
            nic("nic-a3", "vpc-a", "sub-a1", A3_MAC, "10.0.1.30", PEER),
            nic("nic-a4", "vpc-a", "sub-a2", A4_MAC, "10.0.2.40", PEER),
            nic("nic-b1", "vpc-b", "sub-b1", A1_MAC, "10.0.1.10", NODE),
            nic("nic-b2", "vpc-b", "sub-b1", A2_MAC, "10.0.1.20", NODE),
            nic("nic-b3", "vpc-b", "sub-b1", A3_MAC, "10.0.1.30", PEER),
            nic("nic-c1", "vpc-c", "sub-c1", A4_MAC, "10.9.0.5", PEER),
        ],
        &[PEER],
    );
    let ports = PortMap::new()
        .with_nic("nic-a1", 5)
        .with_nic("nic-a2", 6)
        .with_nic("nic-b1", 7)
        .with_nic("nic-b2", 8)
        .with_tunnel(PEER, TUN);
    (state, ports)
}

// ------------------------------------------------------------- interpreter

/// A packet as a set of header fields (absent = not present in the packet,
/// so matches needing it fail, as prerequisites do in OVS).
type Packet = BTreeMap<Field, u128>;

#[derive(Debug, Default)]
struct Trace {
    outputs: Vec<(u32, Packet)>,
    controller: Vec<(Vec<u8>, Packet)>,
    /// Groups the packet was handed to (buckets are not walked).
    groups: Vec<(u32, Packet)>,
    ttl_expired: bool,
    /// (table, cookie) of every flow hit.
    path: Vec<(u8, u64)>,
}

impl Trace {
    fn dropped(&self) -> bool {
        self.outputs.is_empty() && self.controller.is_empty() && self.groups.is_empty()
    }
    fn single_output(&self) -> (u32, Packet) {
        assert_eq!(self.outputs.len(), 1, "{self:#?}");
        assert!(self.controller.is_empty(), "{self:#?}");
        self.outputs[0].clone()
    }
}

fn field_mask(field: Field) -> u128 {
    let bits = field.bits();
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

fn matches(flow: &Flow, pkt: &Packet) -> bool {
    flow.matches.fields().iter().all(|fm| {
        let Some(v) = pkt.get(&fm.field) else {
            return false;
        };
        let m = fm.mask.unwrap_or_else(|| field_mask(fm.field));
        v & m == fm.value & m
    })
}

/// Walks `pkt` through `flows` like OVS would: highest priority match per
/// table, apply-actions in order, then goto. Panics if two flows of the same
/// priority match with different actions (OpenFlow leaves that undefined,
/// so the pipeline must not rely on it) or if a goto goes backwards.
/// Conntrack starts empty: every connection is new.
fn trace(flows: &[Flow], pkt: Packet) -> Trace {
    trace_ct(flows, pkt, &mut Conntrack::default())
}

/// The connection key: zone and the (src, dst, proto, sport, dport) tuple.
type Tuple = (u128, u128, u128, u128, u128);

/// A conntrack model: connections per zone, keyed by their original
/// tuple, with their mark. Enough for the security-group stages: new, est,
/// rpl, commit with a mark; never `+inv` or `+rel`.
#[derive(Debug, Default, Clone)]
struct Conntrack {
    conns: BTreeMap<(u16, Tuple), u32>,
}

impl Conntrack {
    fn tuple(pkt: &Packet) -> Tuple {
        let g = |f| pkt.get(&f).copied().unwrap_or(0);
        let proto = g(Field::IpProto);
        let (sp, dp) = match proto {
            1 => (g(Field::IcmpType), g(Field::IcmpCode)),
            6 => (g(Field::TcpSrc), g(Field::TcpDst)),
            17 => (g(Field::UdpSrc), g(Field::UdpDst)),
            _ => (0, 0),
        };
        (g(Field::Ipv4Src), g(Field::Ipv4Dst), proto, sp, dp)
    }

    fn reverse(t: Tuple) -> Tuple {
        let (sp, dp) = if t.2 == 1 {
            // An echo reply (type 0) answers a request (type 8).
            let ty = match t.3 {
                0 => 8,
                8 => 0,
                x => x,
            };
            (ty, t.4)
        } else {
            (t.4, t.3)
        };
        (t.1, t.0, t.2, sp, dp)
    }

    /// `ct(zone)`: sets ct_state, ct_mark and the original tuple.
    fn track(&self, zone: u16, pkt: &mut Packet) {
        let t = Self::tuple(pkt);
        let (state, orig, mark) = if let Some(m) = self.conns.get(&(zone, t)) {
            (ct_state::TRK | ct_state::EST, t, *m)
        } else if let Some(m) = self.conns.get(&(zone, Self::reverse(t))) {
            (
                ct_state::TRK | ct_state::EST | ct_state::RPL,
                Self::reverse(t),
                *m,
            )
        } else {
            (ct_state::TRK | ct_state::NEW, t, 0)
        };
        pkt.insert(Field::CtState, state.into());
        pkt.insert(Field::CtZone, zone.into());
        pkt.insert(Field::CtMark, mark.into());
        pkt.insert(Field::CtNwSrc, orig.0);
        pkt.insert(Field::CtNwDst, orig.1);
        pkt.insert(Field::CtNwProto, orig.2);
        pkt.insert(Field::CtTpSrc, orig.3);
        pkt.insert(Field::CtTpDst, orig.4);
    }

    fn commit(&mut self, zone: u16, pkt: &Packet, mark: Option<u32>) {
        let orig = (
            pkt[&Field::CtNwSrc],
            pkt[&Field::CtNwDst],
            pkt[&Field::CtNwProto],
            pkt[&Field::CtTpSrc],
            pkt[&Field::CtTpDst],
        );
        let m = self.conns.entry((zone, orig)).or_insert(0);
        if let Some(mark) = mark {
            *m = mark;
        }
    }

    fn clear(pkt: &mut Packet) {
        for f in [
            Field::CtState,
            Field::CtZone,
            Field::CtMark,
            Field::CtNwSrc,
            Field::CtNwDst,
            Field::CtNwProto,
            Field::CtTpSrc,
            Field::CtTpDst,
        ] {
            pkt.remove(&f);
        }
    }
}

/// The flow a lookup in `table` picks, with OVS's conjunctive matches:
/// at each priority a plain flow wins; otherwise the clauses matched at
/// that priority may complete a conjunction, whose `conj_id` flow is then
/// looked up (without conjunctive flows); else lower priorities are tried.
fn lookup<'f>(flows: &'f [Flow], table: u8, pkt: &Packet) -> Option<&'f Flow> {
    let is_conj = |f: &Flow| {
        !f.actions.is_empty()
            && f.actions
                .iter()
                .all(|a| matches!(a, Action::Conjunction { .. }))
    };
    let hits: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.table == table && matches(f, pkt))
        .collect();
    let mut prios: Vec<u16> = hits.iter().map(|f| f.priority).collect();
    prios.sort_unstable_by(|a, b| b.cmp(a));
    prios.dedup();
    for prio in prios {
        let at: Vec<&Flow> = hits
            .iter()
            .copied()
            .filter(|f| f.priority == prio)
            .collect();
        let hard: Vec<&Flow> = at.iter().copied().filter(|f| !is_conj(f)).collect();
        if let Some(first) = hard.first() {
            for other in &hard[1..] {
                assert!(
                    other.actions == first.actions && other.goto_table == first.goto_table,
                    "ambiguous match in table {table}: {hard:#?}"
                );
            }
            return Some(first);
        }
        let mut clauses: BTreeMap<u32, (u8, BTreeSet<u8>)> = BTreeMap::new();
        for f in &at {
            for a in &f.actions {
                if let Action::Conjunction {
                    id,
                    clause,
                    n_clauses,
                } = a
                {
                    clauses
                        .entry(*id)
                        .or_insert((*n_clauses, BTreeSet::new()))
                        .1
                        .insert(*clause);
                }
            }
        }
        for (id, (n, got)) in clauses {
            if got.len() == usize::from(n) {
                let mut with = pkt.clone();
                with.insert(Field::ConjId, id.into());
                let found = flows
                    .iter()
                    .filter(|f| f.table == table && !is_conj(f) && matches(f, &with))
                    .max_by_key(|f| f.priority);
                if found.is_some() {
                    return found;
                }
            }
        }
    }
    None
}

/// [`trace`] against a conntrack that keeps what earlier packets committed.
fn trace_ct(flows: &[Flow], mut pkt: Packet, ct: &mut Conntrack) -> Trace {
    for f in [
        Field::Metadata,
        Field::Reg(reg::SRC),
        Field::Reg(reg::IN_NIC),
    ] {
        pkt.entry(f).or_insert(0);
    }
    let mut t = Trace::default();
    run_table(flows, 0, &mut pkt, ct, &mut t, 0);
    t
}

/// Runs one table and what follows it (goto, recirculation); `depth`
/// bounds resubmits like OVS does.
fn run_table(
    flows: &[Flow],
    mut table: u8,
    pkt: &mut Packet,
    ct: &mut Conntrack,
    t: &mut Trace,
    depth: u8,
) {
    assert!(depth < 64, "resubmit loop");
    for r in 8..=10 {
        pkt.entry(Field::Reg(r)).or_insert(0);
    }
    pkt.entry(Field::Reg(reg::OUT_NIC)).or_insert(0);
    loop {
        let Some(f) = lookup(flows, table, pkt) else {
            return; // table miss: dropped (fail_mode=secure)
        };
        t.path.push((table, f.cookie));
        for a in &f.actions {
            match a {
                Action::Output(p) => {
                    let p = if *p == port::IN_PORT {
                        pkt[&Field::InPort] as u32
                    } else {
                        *p
                    };
                    t.outputs.push((p, pkt.clone()));
                }
                Action::Controller { userdata, .. } => {
                    t.controller.push((userdata.clone(), pkt.clone()))
                }
                Action::SetField { field, value } => {
                    pkt.insert(*field, *value);
                }
                Action::Move {
                    src,
                    src_ofs,
                    dst,
                    dst_ofs,
                    n_bits,
                } => {
                    let m = (1u128 << n_bits) - 1;
                    let v = (pkt[src] >> src_ofs) & m;
                    let d = pkt[dst] & !(m << dst_ofs);
                    pkt.insert(*dst, d | (v << dst_ofs));
                }
                Action::DecTtl => {
                    let ttl = pkt[&Field::NwTtl];
                    if ttl <= 1 {
                        t.ttl_expired = true;
                        return;
                    }
                    pkt.insert(Field::NwTtl, ttl - 1);
                }
                Action::Resubmit { table: rt } => {
                    let mut sub = Trace::default();
                    // A resubmitted table's flows have no goto here; its
                    // outputs would still count.
                    run_table(flows, *rt, pkt, ct, &mut sub, depth + 1);
                    t.path.extend(sub.path);
                    t.outputs.extend(sub.outputs);
                    t.controller.extend(sub.controller);
                }
                Action::CtClear => Conntrack::clear(pkt),
                Action::Group(g) => t.groups.push((*g, pkt.clone())),
                // Rate only: the packet passes.
                Action::Meter(_) => {}
                Action::Ct {
                    commit,
                    zone,
                    table: next,
                    nat,
                    actions,
                } => {
                    // NAT is modelled for new connections only: the
                    // translation, no reverse mapping of replies.
                    match nat {
                        None | Some(openflow::CtNat::Existing) => {}
                        Some(openflow::CtNat::Src(r)) => {
                            if let Some((a, _)) = r.addrs {
                                pkt.insert(Field::Ipv4Src, ip_value(a));
                            }
                        }
                        Some(openflow::CtNat::Dst(r)) => {
                            if let Some((a, _)) = r.addrs {
                                pkt.insert(Field::Ipv4Dst, ip_value(a));
                            }
                            if let Some((p, _)) = r.ports {
                                for f in [Field::TcpDst, Field::UdpDst] {
                                    if pkt.contains_key(&f) {
                                        pkt.insert(f, p.into());
                                    }
                                }
                            }
                        }
                    }
                    assert!(
                        f.matches.get(Field::EthType).is_some(),
                        "ct needs an IP eth_type match: {f:?}"
                    );
                    let zone = match zone {
                        CtZone::Imm(z) => *z,
                        CtZone::Field { field, ofs } => (pkt[field] >> ofs) as u16,
                    };
                    if *commit {
                        let mark = actions.iter().find_map(|a| match a {
                            Action::SetField {
                                field: Field::CtMark,
                                value,
                            } => Some(*value as u32),
                            _ => None,
                        });
                        ct.commit(zone, pkt, mark);
                    }
                    if let Some(next) = next {
                        // The tracked copy resumes in `next`; this one
                        // ends here (nothing follows ct in our flows).
                        ct.track(zone, pkt);
                        // Recirculation may go back (unlike goto).
                        table = *next;
                        for r in 8..=10 {
                            pkt.entry(Field::Reg(r)).or_insert(0);
                        }
                        assert!(f.goto_table.is_none());
                        run_table(flows, table, pkt, ct, t, depth);
                        return;
                    }
                }
                other => panic!("interpreter does not model {other:?}"),
            }
        }
        match f.goto_table {
            Some(next) => {
                assert!(next > table, "goto backwards: {f:?}");
                table = next;
            }
            None => return,
        }
    }
}

const BROADCAST: Mac = Mac([0xff; 6]);

fn arp_request(in_port: u32, sha: &str, spa: &str, tpa: &str) -> Packet {
    BTreeMap::from([
        (Field::InPort, in_port.into()),
        (Field::EthSrc, mac_value(mac(sha))),
        (Field::EthDst, mac_value(BROADCAST)),
        (Field::EthType, 0x0806),
        (Field::ArpOp, 1),
        (Field::ArpSha, mac_value(mac(sha))),
        (Field::ArpSpa, ip_value(ip(spa))),
        (Field::ArpTha, 0),
        (Field::ArpTpa, ip_value(ip(tpa))),
    ])
}

fn ipv4(in_port: u32, src_mac: &str, dst_mac: &str, src: &str, dst: &str) -> Packet {
    BTreeMap::from([
        (Field::InPort, in_port.into()),
        (Field::EthSrc, mac_value(mac(src_mac))),
        (Field::EthDst, mac_value(mac(dst_mac))),
        (Field::EthType, 0x0800),
        (Field::Ipv4Src, ip_value(ip(src))),
        (Field::Ipv4Dst, ip_value(ip(dst))),
        (Field::IpProto, 1),
        (Field::NwTtl, 64),
    ])
}

fn udp(mut pkt: Packet, sport: u16, dport: u16) -> Packet {
    pkt.insert(Field::IpProto, 17);
    pkt.insert(Field::UdpSrc, sport.into());
    pkt.insert(Field::UdpDst, dport.into());
    pkt
}

fn from_tunnel(vni: u32, mut inner: Packet) -> Packet {
    inner.insert(Field::InPort, TUN.into());
    inner.insert(Field::TunnelId, vni.into());
    inner
}

fn get(pkt: &Packet, f: Field) -> u128 {
    pkt[&f]
}

// ------------------------------------------------------ written-out flows

fn field_name(f: Field) -> String {
    match f {
        Field::Reg(n) => format!("reg{n}"),
        other => {
            // CamelCase → snake_case.
            let mut s = String::new();
            for (i, c) in format!("{other:?}").chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    s.push('_');
                }
                s.push(c.to_ascii_lowercase());
            }
            s
        }
    }
}

fn field_value(f: Field, v: u128) -> String {
    match f {
        Field::EthSrc | Field::EthDst | Field::ArpSha | Field::ArpTha => {
            let b = v.to_be_bytes();
            let mut m = [0u8; 6];
            m.copy_from_slice(&b[10..16]);
            Mac(m).to_string()
        }
        Field::Ipv4Src | Field::Ipv4Dst | Field::ArpSpa | Field::ArpTpa => {
            Ipv4Addr::from(v as u32).to_string()
        }
        Field::EthType => format!("{v:#06x}"),
        _ => v.to_string(),
    }
}

/// A flow in an `ovs-ofctl`-like line, the cookie shown by its label.
fn show(f: &Flow, labels: &HashMap<u64, &str>) -> String {
    let mut s = format!(
        "table={} priority={} cookie={}",
        f.table,
        f.priority,
        labels.get(&f.cookie).copied().unwrap_or("?")
    );
    for m in f.matches.fields() {
        s += &format!(" {}={}", field_name(m.field), field_value(m.field, m.value));
        if let Some(mask) = m.mask {
            s += &format!("/{mask:#x}");
        }
    }
    let mut acts: Vec<String> = f
        .actions
        .iter()
        .map(|a| match a {
            Action::Output(p) if *p == port::IN_PORT => "output:in_port".into(),
            Action::Output(p) => format!("output:{p}"),
            Action::Controller { userdata, .. } => format!("controller:{userdata:?}"),
            Action::SetField { field, value } => {
                format!("set:{}={}", field_name(*field), field_value(*field, *value))
            }
            Action::Move {
                src, dst, n_bits, ..
            } => format!("move:{}->{}/{n_bits}", field_name(*src), field_name(*dst)),
            Action::DecTtl => "dec_ttl".into(),
            Action::CtClear => "ct_clear".into(),
            Action::Resubmit { table } => format!("resubmit:{table}"),
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
                let zone = match zone {
                    CtZone::Imm(z) => z.to_string(),
                    CtZone::Field { field, ofs } => format!("{}[{ofs}..]", field_name(*field)),
                };
                let mut parts = vec![];
                if *commit {
                    parts.push("commit".to_string());
                }
                parts.push(format!("zone={zone}"));
                if let Some(t) = table {
                    parts.push(format!("table={t}"));
                }
                for a in actions {
                    if let Action::SetField { field, value } = a {
                        parts.push(format!("set:{}={value:#x}", field_name(*field)));
                    }
                }
                format!("ct({})", parts.join(","))
            }
            other => format!("{other:?}"),
        })
        .collect();
    if let Some(t) = f.goto_table {
        acts.push(format!("goto:{t}"));
    }
    if acts.is_empty() {
        acts.push("drop".into());
    }
    s + " => " + &acts.join(",")
}

#[test]
fn small_state_renders_the_written_out_flows() {
    let state = node_state(
        vec![vpc("vpc-a", 100)],
        vec![subnet(
            "sub-a1",
            "vpc-a",
            "10.0.1.0/24",
            "10.0.1.1",
            GW1_MAC,
        )],
        vec![
            nic("nic-a1", "vpc-a", "sub-a1", A1_MAC, "10.0.1.10", NODE),
            nic("nic-a3", "vpc-a", "sub-a1", A3_MAC, "10.0.1.30", PEER),
        ],
        &[PEER],
    );
    let ports = PortMap::new().with_nic("nic-a1", 5).with_tunnel(PEER, TUN);
    let gen = 3;
    let labels = HashMap::from([
        (cookie(gen, 0), "base"),
        (cookie(gen, object_tag(ObjectKind::Vpc, "vpc-a")), "vpc-a"),
        (
            cookie(gen, object_tag(ObjectKind::Subnet, "sub-a1")),
            "sub-a1",
        ),
        (cookie(gen, object_tag(ObjectKind::Peer, PEER)), "peer-n2"),
        (cookie(gen, object_tag(ObjectKind::Nic, "nic-a1")), "nic-a1"),
        (cookie(gen, object_tag(ObjectKind::Nic, "nic-a3")), "nic-a3"),
        (cookie(gen, security::group_tag("open-vpc-a")), "sg-open"),
    ]);
    let got: Vec<String> = render(&state, &ports, gen)
        .iter()
        .map(|f| show(f, &labels))
        .collect();
    let arp_reply = |m: &str, i: &str| {
        format!(
            "move:eth_src->eth_dst/48,set:eth_src={m},set:arp_op=2,move:arp_sha->arp_tha/48,\
             set:arp_sha={m},move:arp_spa->arp_tpa/32,set:arp_spa={i},output:in_port"
        )
    };
    let expected = vec![
        "table=0 priority=100 cookie=nic-a1 in_port=5 => set:metadata=100,set:reg6=5,set:reg5=1,goto:10".to_string(),
        "table=0 priority=100 cookie=peer-n2 in_port=100 => set:reg5=2,goto:1".into(),
        "table=0 priority=0 cookie=base => drop".into(),
        "table=1 priority=100 cookie=vpc-a tunnel_id=100 => set:metadata=100,goto:40".into(),
        "table=1 priority=0 cookie=base => drop".into(),
        "table=10 priority=300 cookie=nic-a1 in_port=5 eth_type=0x0800 ip_proto=17 udp_src=67 => drop".into(),
        "table=10 priority=100 cookie=nic-a1 in_port=5 eth_src=02:aa:00:00:00:01 eth_type=0x0800 ip_proto=17 ipv4_src=0.0.0.0 udp_src=68 udp_dst=67 => goto:20".into(),
        "table=10 priority=100 cookie=nic-a1 in_port=5 eth_src=02:aa:00:00:00:01 eth_type=0x0800 ipv4_src=10.0.1.10 => goto:20".into(),
        "table=10 priority=100 cookie=nic-a1 in_port=5 eth_src=02:aa:00:00:00:01 eth_type=0x0806 arp_spa=10.0.1.10 arp_sha=02:aa:00:00:00:01 => goto:20".into(),
        "table=10 priority=0 cookie=base => drop".into(),
        "table=20 priority=110 cookie=nic-a1 in_port=5 eth_type=0x0806 arp_tpa=10.0.1.10 => drop".into(),
        format!("table=20 priority=100 cookie=sub-a1 metadata=100 eth_type=0x0806 arp_op=1 arp_tpa=10.0.1.1 => {}", arp_reply(GW1_MAC, "10.0.1.1")),
        format!("table=20 priority=100 cookie=nic-a1 metadata=100 eth_type=0x0806 arp_op=1 arp_tpa=10.0.1.10 => {}", arp_reply(A1_MAC, "10.0.1.10")),
        format!("table=20 priority=100 cookie=nic-a3 metadata=100 eth_type=0x0806 arp_op=1 arp_tpa=10.0.1.30 => {}", arp_reply(A3_MAC, "10.0.1.30")),
        "table=20 priority=100 cookie=base eth_type=0x0800 ip_proto=17 udp_src=68 udp_dst=67 => controller:[1]".into(),
        "table=20 priority=20 cookie=base eth_type=0x0806 arp_op=2 => goto:21".into(),
        "table=20 priority=10 cookie=base eth_type=0x0806 => drop".into(),
        "table=20 priority=0 cookie=base => goto:21".into(),
        "table=21 priority=100 cookie=nic-a1 eth_type=0x0800 reg6=5 => set:reg10=5,ct(zone=5,table=22)".into(),
        "table=21 priority=10 cookie=base eth_type=0x0806 => goto:30".into(),
        "table=21 priority=0 cookie=base => drop".into(),
        "table=22 priority=300 cookie=base eth_type=0x0800 ct_state=48/0x30 => drop".into(),
        "table=22 priority=100 cookie=nic-a1 eth_type=0x0800 reg6=5 ct_state=32/0x28 => set:reg9=0,set:reg8=798193376,resubmit:50,goto:23".into(),
        "table=22 priority=100 cookie=nic-a1 eth_type=0x0800 reg6=5 ct_state=40/0x28 => set:reg9=0,set:reg8=798193376,resubmit:51,goto:23".into(),
        "table=22 priority=0 cookie=base => drop".into(),
        "table=23 priority=110 cookie=base eth_type=0x0800 reg9=1 ct_state=33/0x21 => ct(commit,zone=reg10[0..]),goto:30".into(),
        "table=23 priority=100 cookie=base reg9=1 => goto:30".into(),
        "table=23 priority=0 cookie=base => drop".into(),
        "table=30 priority=100 cookie=sub-a1 metadata=100 eth_dst=02:00:00:00:01:01 eth_type=0x0800 => goto:31".into(),
        "table=30 priority=0 cookie=base => goto:40".into(),
        "table=31 priority=110 cookie=sub-a1 metadata=100 eth_type=0x0800 ip_proto=1 ipv4_dst=10.0.1.1 icmp_type=8 => move:eth_src->eth_dst/48,set:eth_src=02:00:00:00:01:01,move:ipv4_src->ipv4_dst/32,set:ipv4_src=10.0.1.1,set:icmp_type=0,output:in_port".into(),
        "table=31 priority=100 cookie=nic-a1 metadata=100 eth_type=0x0800 ipv4_dst=10.0.1.10 => set:eth_src=02:00:00:00:01:01,set:eth_dst=02:aa:00:00:00:01,dec_ttl,goto:40".into(),
        "table=31 priority=100 cookie=nic-a3 metadata=100 eth_type=0x0800 ipv4_dst=10.0.1.30 => set:eth_src=02:00:00:00:01:01,set:eth_dst=02:aa:00:00:00:03,dec_ttl,goto:40".into(),
        "table=31 priority=0 cookie=base => drop".into(),
        "table=40 priority=100 cookie=nic-a1 metadata=100 eth_dst=02:aa:00:00:00:01 => set:reg7=5,goto:41".into(),
        "table=40 priority=100 cookie=nic-a3 metadata=100 eth_dst=02:aa:00:00:00:03 reg5=1 => set:tunnel_id=100,output:100".into(),
        "table=40 priority=0 cookie=base => drop".into(),
        "table=41 priority=100 cookie=nic-a1 eth_type=0x0800 reg7=5 => ct_clear,set:reg10=5,ct(zone=5,table=42)".into(),
        "table=41 priority=10 cookie=base eth_type=0x0806 => goto:44".into(),
        "table=41 priority=0 cookie=base => drop".into(),
        "table=42 priority=300 cookie=base eth_type=0x0800 ct_state=48/0x30 => drop".into(),
        "table=42 priority=100 cookie=nic-a1 eth_type=0x0800 reg7=5 ct_state=32/0x28 => set:reg9=0,set:reg8=798193376,resubmit:51,goto:43".into(),
        "table=42 priority=100 cookie=nic-a1 eth_type=0x0800 reg7=5 ct_state=40/0x28 => set:reg9=0,set:reg8=798193376,resubmit:50,goto:43".into(),
        "table=42 priority=0 cookie=base => drop".into(),
        "table=43 priority=110 cookie=base eth_type=0x0800 reg9=1 ct_state=33/0x21 => ct(commit,zone=reg10[0..]),goto:44".into(),
        "table=43 priority=100 cookie=base reg9=1 => goto:44".into(),
        "table=43 priority=0 cookie=base => drop".into(),
        "table=44 priority=100 cookie=nic-a1 reg7=5 => output:5".into(),
        "table=44 priority=0 cookie=base => drop".into(),
        "table=50 priority=120 cookie=sg-open eth_type=0x0800 reg8=798193376 ct_state=32/0x30 => set:reg9=1".into(),
        "table=50 priority=0 cookie=base => drop".into(),
        "table=51 priority=120 cookie=sg-open eth_type=0x0800 reg8=798193376 ct_state=32/0x30 => set:reg9=1".into(),
        "table=51 priority=0 cookie=base => drop".into(),
    ];
    assert_eq!(got, expected, "\n{}", got.join("\n"));
}

// ---------------------------------------------------------- classification

#[test]
fn classification_sets_vni_and_nic_registers() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    // Follow a packet just far enough to see table 0's effect: an ARP for
    // the gateway goes 0 → 10 → 20 and is answered; the reply carries the
    // registers set by classification.
    let t = trace(&flows, arp_request(5, A1_MAC, "10.0.1.10", "10.0.1.1"));
    let (_, out) = t.single_output();
    assert_eq!(get(&out, Field::Metadata), 100);
    assert_eq!(get(&out, Field::Reg(reg::IN_NIC)), 5);
    assert_eq!(get(&out, Field::Reg(reg::SRC)), u128::from(reg::SRC_LOCAL));
    let t = trace(&flows, arp_request(7, A1_MAC, "10.0.1.10", "10.0.1.1"));
    let (_, out) = t.single_output();
    assert_eq!(get(&out, Field::Metadata), 200, "same MAC/IP, other VPC");
    assert_eq!(get(&out, Field::Reg(reg::IN_NIC)), 7);
}

#[test]
fn tunnel_traffic_is_classified_by_vni_and_unknown_vnis_dropped() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    let inner = ipv4(0, A3_MAC, A1_MAC, "10.0.1.30", "10.0.1.10");
    let t = trace(&flows, from_tunnel(100, inner.clone()));
    let (p, out) = t.single_output();
    assert_eq!(p, 5);
    assert_eq!(get(&out, Field::Metadata), 100);
    assert_eq!(get(&out, Field::Reg(reg::SRC)), u128::from(reg::SRC_TUNNEL));
    // vpc-b has the same MAC on port 7.
    let (p, _) = trace(&flows, from_tunnel(200, inner.clone())).single_output();
    assert_eq!(p, 7);
    // vpc-c has no local NIC; 999 is nobody's.
    assert!(trace(&flows, from_tunnel(300, inner.clone())).dropped());
    assert!(trace(&flows, from_tunnel(999, inner.clone())).dropped());
    // An unknown port is dropped in table 0.
    let mut stray = inner;
    stray.insert(Field::InPort, 42);
    let t = trace(&flows, stray);
    assert!(t.dropped());
    assert_eq!(t.path, vec![(table::CLASSIFY, cookie(1, 0))]);
}

// ----------------------------------------------------------- port security

#[test]
fn port_security_allows_only_own_mac_and_ip() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    let ok = ipv4(5, A1_MAC, A3_MAC, "10.0.1.10", "10.0.1.30");
    assert_eq!(trace(&flows, ok).single_output().0, TUN);
    let spoofed_mac = ipv4(5, "02:aa:00:00:00:99", A3_MAC, "10.0.1.10", "10.0.1.30");
    assert!(trace(&flows, spoofed_mac).dropped());
    let spoofed_ip = ipv4(5, A1_MAC, A3_MAC, "10.0.1.11", "10.0.1.30");
    assert!(trace(&flows, spoofed_ip).dropped());
    // Another local NIC's MAC and IP, from the wrong port.
    let other_nic = ipv4(5, A2_MAC, A3_MAC, "10.0.2.20", "10.0.1.30");
    assert!(trace(&flows, other_nic).dropped());
    // IPv6 is not allowed yet.
    let mut v6 = ipv4(5, A1_MAC, A3_MAC, "10.0.1.10", "10.0.1.30");
    v6.insert(Field::EthType, 0x86dd);
    v6.remove(&Field::Ipv4Src);
    v6.remove(&Field::Ipv4Dst);
    assert!(trace(&flows, v6).dropped());
}

#[test]
fn port_security_checks_arp_sender_fields() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    assert!(!trace(&flows, arp_request(5, A1_MAC, "10.0.1.10", "10.0.1.30")).dropped());
    // Spoofed sender IP.
    assert!(trace(&flows, arp_request(5, A1_MAC, "10.0.1.30", "10.0.1.1")).dropped());
    // Spoofed sender hardware address with the right Ethernet source.
    let mut pkt = arp_request(5, A1_MAC, "10.0.1.10", "10.0.1.1");
    pkt.insert(Field::ArpSha, mac_value(mac(A3_MAC)));
    assert!(trace(&flows, pkt).dropped());
    // ARP probe from 0.0.0.0 (duplicate address detection): dropped, so the
    // VM sees no conflict.
    assert!(trace(&flows, arp_request(5, A1_MAC, "0.0.0.0", "10.0.1.10")).dropped());
}

#[test]
fn dhcp_client_packets_are_punted_and_server_packets_dropped() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    let discover = udp(
        ipv4(5, A1_MAC, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255"),
        68,
        67,
    );
    let t = trace(&flows, discover);
    assert!(t.outputs.is_empty());
    assert_eq!(t.controller.len(), 1);
    assert_eq!(t.controller[0].0, vec![userdata::DHCP]);
    assert_eq!(get(&t.controller[0].1, Field::Reg(reg::IN_NIC)), 5);
    assert_eq!(get(&t.controller[0].1, Field::Metadata), 100);
    // Renewal from the leased address, unicast to the gateway.
    let renew = udp(ipv4(5, A1_MAC, GW1_MAC, "10.0.1.10", "10.0.1.1"), 68, 67);
    assert_eq!(trace(&flows, renew).controller.len(), 1);
    // From 0.0.0.0, only DHCP is allowed.
    let other = udp(ipv4(5, A1_MAC, A3_MAC, "0.0.0.0", "10.0.1.30"), 68, 53);
    assert!(trace(&flows, other).dropped());
    // A VM playing DHCP server, with its own valid addresses.
    for dst in ["255.255.255.255", "10.0.1.30"] {
        let offer = udp(ipv4(5, A1_MAC, A3_MAC, "10.0.1.10", dst), 67, 68);
        assert!(trace(&flows, offer).dropped(), "{dst}");
    }
    // Spoofed MAC with DHCP from 0.0.0.0.
    let spoof = udp(
        ipv4(5, A3_MAC, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255"),
        68,
        67,
    );
    assert!(trace(&flows, spoof).dropped());
}

// ------------------------------------------------------------ ARP responder

#[test]
fn arp_responder_answers_known_addresses_with_the_classic_rewrite() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    for (tpa, answer) in [
        ("10.0.1.30", A3_MAC), // remote NIC
        ("10.0.2.20", A2_MAC), // local NIC, other subnet
        ("10.0.1.1", GW1_MAC), // gateways
        ("10.0.2.1", GW2_MAC),
    ] {
        let t = trace(&flows, arp_request(5, A1_MAC, "10.0.1.10", tpa));
        let (p, out) = t.single_output();
        assert_eq!(p, 5, "back out of the asking port");
        assert_eq!(get(&out, Field::EthDst), mac_value(mac(A1_MAC)));
        assert_eq!(get(&out, Field::EthSrc), mac_value(mac(answer)));
        assert_eq!(get(&out, Field::ArpOp), 2);
        assert_eq!(get(&out, Field::ArpSha), mac_value(mac(answer)));
        assert_eq!(get(&out, Field::ArpSpa), ip_value(ip(tpa)));
        assert_eq!(get(&out, Field::ArpTha), mac_value(mac(A1_MAC)));
        assert_eq!(get(&out, Field::ArpTpa), ip_value(ip("10.0.1.10")));
    }
}

#[test]
fn arp_for_unknown_or_own_addresses_is_dropped_not_flooded() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    let t = trace(&flows, arp_request(5, A1_MAC, "10.0.1.10", "10.0.1.99"));
    assert!(t.dropped(), "{t:#?}");
    // vpc-b has no 10.0.2.20 (vpc-a has): unknown there.
    assert!(trace(&flows, arp_request(7, A1_MAC, "10.0.1.10", "10.0.2.20")).dropped());
    // Gratuitous ARP for the NIC's own address: no answer.
    assert!(trace(&flows, arp_request(5, A1_MAC, "10.0.1.10", "10.0.1.10")).dropped());
    // A VM's ARP reply (sender fields checked) is delivered like unicast,
    // to a known MAC only; it is never answered or flooded.
    let mut reply = arp_request(5, A1_MAC, "10.0.1.10", "10.0.1.20");
    reply.insert(Field::ArpOp, 2);
    reply.insert(Field::EthDst, mac_value(mac(A2_MAC)));
    let (p, out) = trace(&flows, reply.clone()).single_output();
    assert_eq!(p, 6);
    assert_eq!(get(&out, Field::ArpSpa), ip_value(ip("10.0.1.10")));
    reply.insert(Field::EthDst, mac_value(mac("02:aa:00:00:00:99")));
    assert!(trace(&flows, reply.clone()).dropped());
    reply.insert(Field::ArpSpa, ip_value(ip("10.0.1.20")));
    reply.insert(Field::EthDst, mac_value(mac(A2_MAC)));
    assert!(
        trace(&flows, reply).dropped(),
        "claims another NIC's address"
    );
}

// ---------------------------------------------------------------- routing

#[test]
fn routing_rewrites_macs_and_decrements_ttl() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    // nic-a1 (sub-a1) → nic-a2 (sub-a2, local port 6) through gateway 1.
    let t = trace(&flows, ipv4(5, A1_MAC, GW1_MAC, "10.0.1.10", "10.0.2.20"));
    let (p, out) = t.single_output();
    assert_eq!(p, 6);
    assert_eq!(
        get(&out, Field::EthSrc),
        mac_value(mac(GW2_MAC)),
        "destination subnet's gateway"
    );
    assert_eq!(get(&out, Field::EthDst), mac_value(mac(A2_MAC)));
    assert_eq!(get(&out, Field::NwTtl), 63);
    assert_eq!(
        get(&out, Field::Ipv4Dst),
        ip_value(ip("10.0.2.20")),
        "IPs untouched"
    );
    // nic-a1 → nic-a4 on the peer: routed here, tunnelled with the VNI.
    let t = trace(&flows, ipv4(5, A1_MAC, GW1_MAC, "10.0.1.10", "10.0.2.40"));
    let (p, out) = t.single_output();
    assert_eq!(p, TUN);
    assert_eq!(get(&out, Field::TunnelId), 100);
    assert_eq!(get(&out, Field::EthSrc), mac_value(mac(GW2_MAC)));
    assert_eq!(get(&out, Field::EthDst), mac_value(mac(A4_MAC)));
    assert_eq!(get(&out, Field::NwTtl), 63);
    // Back: nic-a2 → nic-a1 through gateway 2.
    let t = trace(&flows, ipv4(6, A2_MAC, GW2_MAC, "10.0.2.20", "10.0.1.10"));
    let (p, out) = t.single_output();
    assert_eq!(p, 5);
    assert_eq!(get(&out, Field::EthSrc), mac_value(mac(GW1_MAC)));
}

#[test]
fn routing_drops_unknown_destinations_and_expired_ttl() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    for dst in ["10.0.2.99", "8.8.8.8", "10.0.2.1"] {
        let t = trace(&flows, ipv4(5, A1_MAC, GW1_MAC, "10.0.1.10", dst));
        assert!(t.dropped(), "{dst}: {t:#?}");
    }
    let mut pkt = ipv4(5, A1_MAC, GW1_MAC, "10.0.1.10", "10.0.2.20");
    pkt.insert(Field::NwTtl, 1);
    let t = trace(&flows, pkt);
    assert!(t.dropped() && t.ttl_expired);
    // vpc-b has no 10.0.2.0/24: its VM cannot reach vpc-a's nic-a2 by IP.
    let t = trace(&flows, ipv4(7, A1_MAC, GW1_MAC, "10.0.1.10", "10.0.2.20"));
    assert!(t.dropped(), "{t:#?}");
}

#[test]
fn gateways_answer_pings() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    let ping = |port: u32, src_mac: &str, src: &str, gw_mac: &str, gw: &str| {
        let mut p = ipv4(port, src_mac, gw_mac, src, gw);
        p.insert(Field::IcmpType, 8);
        p.insert(Field::IcmpCode, 0);
        p
    };
    for (gw, gw_mac) in [("10.0.1.1", GW1_MAC), ("10.0.2.1", GW2_MAC)] {
        let t = trace(&flows, ping(5, A1_MAC, "10.0.1.10", GW1_MAC, gw));
        let (p, out) = t.single_output();
        assert_eq!(p, 5);
        assert_eq!(get(&out, Field::EthSrc), mac_value(mac(gw_mac)));
        assert_eq!(get(&out, Field::EthDst), mac_value(mac(A1_MAC)));
        assert_eq!(get(&out, Field::Ipv4Src), ip_value(ip(gw)));
        assert_eq!(get(&out, Field::Ipv4Dst), ip_value(ip("10.0.1.10")));
        assert_eq!(get(&out, Field::IcmpType), 0);
    }
    // Same gateway address in vpc-b: answered there, on its port.
    let (p, _) = trace(&flows, ping(7, A1_MAC, "10.0.1.10", GW1_MAC, "10.0.1.1")).single_output();
    assert_eq!(p, 7);
    // Anything else to the gateway IP goes nowhere.
    let mut reply = ping(5, A1_MAC, "10.0.1.10", GW1_MAC, "10.0.1.1");
    reply.insert(Field::IcmpType, 0);
    assert!(trace(&flows, reply).dropped());
    let to_gw = udp(ipv4(5, A1_MAC, GW1_MAC, "10.0.1.10", "10.0.1.1"), 5000, 53);
    assert!(trace(&flows, to_gw).dropped());
}

// ------------------------------------------------------------ L2 delivery

#[test]
fn l2_delivery_local_remote_and_drops() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    // Same subnet, remote NIC: straight to the tunnel, nothing rewritten.
    let t = trace(&flows, ipv4(5, A1_MAC, A3_MAC, "10.0.1.10", "10.0.1.30"));
    let (p, out) = t.single_output();
    assert_eq!(p, TUN);
    assert_eq!(get(&out, Field::TunnelId), 100);
    assert_eq!(get(&out, Field::NwTtl), 64);
    assert_eq!(get(&out, Field::EthSrc), mac_value(mac(A1_MAC)));
    // Local NIC of the same VPC by MAC.
    assert_eq!(
        trace(&flows, ipv4(5, A1_MAC, A2_MAC, "10.0.1.10", "10.0.2.20"))
            .single_output()
            .0,
        6
    );
    // Broadcast, multicast, unknown unicast.
    for dst in [
        "ff:ff:ff:ff:ff:ff",
        "01:00:5e:00:00:fb",
        "02:aa:00:00:00:99",
    ] {
        let t = trace(&flows, ipv4(5, A1_MAC, dst, "10.0.1.10", "10.0.1.255"));
        assert!(t.dropped(), "{dst}");
    }
}

#[test]
fn tunnel_traffic_is_only_delivered_locally() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    // To nic-a4's MAC (a NIC on the peer itself): never sent back out.
    let t = trace(
        &flows,
        from_tunnel(100, ipv4(0, A3_MAC, A4_MAC, "10.0.1.30", "10.0.2.40")),
    );
    assert!(t.dropped(), "{t:#?}");
    // Tunnel traffic skips port security and routing: addressed to the
    // gateway MAC it is not routed here.
    let t = trace(
        &flows,
        from_tunnel(100, ipv4(0, A3_MAC, GW1_MAC, "10.0.1.30", "10.0.2.20")),
    );
    assert!(t.dropped(), "{t:#?}");
    // Broadcast from a tunnel.
    let t = trace(
        &flows,
        from_tunnel(100, arp_request(0, A3_MAC, "10.0.1.30", "10.0.1.10")),
    );
    assert!(t.dropped(), "{t:#?}");
}

// --------------------------------------------------------- VPC isolation

#[test]
fn vpcs_with_identical_addressing_stay_apart() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    // nic-b1 (same MAC/IP as nic-a1) to nic-a2's MAC: in vpc-b that MAC is
    // nic-b2 on port 8, never vpc-a's port 6.
    let (p, _) = trace(&flows, ipv4(7, A1_MAC, A2_MAC, "10.0.1.10", "10.0.1.20")).single_output();
    assert_eq!(p, 8);
    let (p, _) = trace(&flows, ipv4(5, A1_MAC, A2_MAC, "10.0.1.10", "10.0.2.20")).single_output();
    assert_eq!(p, 6);
    // Remote copy of nic-a3 in vpc-b: tunnelled with vpc-b's VNI.
    let (p, out) = trace(&flows, ipv4(7, A1_MAC, A3_MAC, "10.0.1.10", "10.0.1.30")).single_output();
    assert_eq!((p, get(&out, Field::TunnelId)), (TUN, 200));
    // ARP answers come from the asker's VPC: 10.0.1.20 is nic-b2 in vpc-b,
    // unknown in vpc-a.
    let (_, out) = trace(&flows, arp_request(7, A1_MAC, "10.0.1.10", "10.0.1.20")).single_output();
    assert_eq!(get(&out, Field::ArpSha), mac_value(mac(A2_MAC)));
    assert!(trace(&flows, arp_request(5, A1_MAC, "10.0.1.10", "10.0.1.20")).dropped());
}

/// Structural form of the isolation rule: every flow after classification
/// that delivers or answers is keyed by the metadata of the right VPC.
#[test]
fn every_delivery_is_keyed_by_the_right_vni() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    let vni_of_port: HashMap<u32, u128> = ports
        .nics()
        .map(|(id, p)| (p, u128::from(state.vpcs[&state.nics[id].vpc_id].vni)))
        .collect();
    for f in &flows {
        if matches!(
            f.table,
            table::SERVICES | table::ROUTER_MAC | table::ROUTE | table::L2_LOOKUP
        ) && f.priority == priority::OBJECT
            && f.matches.get(Field::InPort).is_none()
            && f.cookie != cookie(1, 0)
        {
            let md = f.matches.get(Field::Metadata).map(|m| m.value);
            assert!(md.is_some(), "not keyed by VPC: {f:?}");
            for a in &f.actions {
                if let Action::Output(p) = a {
                    if let Some(vni) = vni_of_port.get(p) {
                        assert_eq!(md, Some(*vni), "{f:?}");
                    }
                }
                if let Action::SetField {
                    field: Field::TunnelId,
                    value,
                } = a
                {
                    assert_eq!(md, Some(*value), "{f:?}");
                }
            }
        }
    }
}

// ------------------------------------------------- structural properties

#[test]
fn rendering_is_deterministic() {
    let (state, ports) = lab();
    let a = render(&state, &ports, 9);
    // Same content built in another order.
    let mut rebuilt = NodeState {
        node: state.node.clone(),
        revision: state.revision,
        ..NodeState::default()
    };
    for (k, v) in state.nics.iter().rev() {
        rebuilt.nics.insert(k.clone(), v.clone());
    }
    for (k, v) in state.subnets.iter().rev() {
        rebuilt.subnets.insert(k.clone(), v.clone());
    }
    rebuilt.vpcs = state.vpcs.clone();
    rebuilt.peers = state.peers.clone();
    rebuilt.security_groups = state.security_groups.clone();
    let mut ports2 = PortMap::new().with_tunnel(PEER, TUN);
    for (id, p) in ports.nics().collect::<Vec<_>>().into_iter().rev() {
        ports2.set_nic(id, p);
    }
    assert_eq!(a, render(&rebuilt, &ports2, 9));
    assert_eq!(a, render(&state, &ports, 9));
    // Another generation changes cookies only.
    let b = render(&state, &ports, 10);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.key(), y.key());
        assert_eq!((&x.actions, x.goto_table), (&y.actions, y.goto_table));
        assert_eq!(cookie_generation(y.cookie), 10);
        assert_eq!(cookie_object(x.cookie), cookie_object(y.cookie));
    }
}

#[test]
fn keys_are_unique_and_cookies_ours() {
    let (mut state, ports) = lab();
    // A NIC claiming its gateway's IP and another NIC's MAC: duplicates are
    // resolved, not emitted twice.
    state.nics.insert(
        "nic-dup".into(),
        nic("nic-dup", "vpc-a", "sub-a1", A3_MAC, "10.0.1.1", PEER),
    );
    let flows = render(&state, &ports, 1);
    let mut keys = HashSet::new();
    for f in &flows {
        assert!(keys.insert(f.key()), "duplicate key {f:?}");
        assert!(is_ours(f.cookie));
        assert_eq!(cookie_generation(f.cookie), 1);
    }
    // The gateway keeps its ARP entry.
    let (_, out) = trace(&flows, arp_request(5, A1_MAC, "10.0.1.10", "10.0.1.1")).single_output();
    assert_eq!(get(&out, Field::ArpSha), mac_value(mac(GW1_MAC)));
}

fn referenced_ports(f: &Flow) -> Vec<u32> {
    let mut v: Vec<u32> = f
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Output(p) if *p != port::IN_PORT => Some(*p),
            _ => None,
        })
        .collect();
    if let Some(m) = f.matches.get(Field::InPort) {
        v.push(m.value as u32);
    }
    for r in [reg::IN_NIC] {
        for a in &f.actions {
            if let Action::SetField {
                field: Field::Reg(n),
                value,
            } = a
            {
                if *n == r {
                    v.push(*value as u32);
                }
            }
        }
    }
    v
}

#[test]
fn no_flow_references_a_missing_port() {
    let (state, _) = lab();
    // nic-a2 and nic-b2 not plugged yet, no tunnel to the peer.
    let ports = PortMap::new().with_nic("nic-a1", 5).with_nic("nic-b1", 7);
    let flows = render(&state, &ports, 1);
    assert!(!flows.is_empty());
    for f in &flows {
        for p in referenced_ports(f) {
            assert!(p == 5 || p == 7, "port {p} in {f:?}");
        }
    }
    // The unplugged NIC has no port-specific flows, but the others can still
    // resolve it and route to it (then it is not deliverable yet).
    let a2 = render_nic(&state, &ports, 1, "nic-a2");
    assert!(a2.iter().all(|f| f.matches.get(Field::InPort).is_none()));
    assert!(a2.iter().all(|f| f.table != table::L2_LOOKUP));
    assert!(a2.iter().any(|f| f.table == table::SERVICES));
    // Remote NICs: no tunnel, no delivery.
    let t = trace(&flows, ipv4(5, A1_MAC, A3_MAC, "10.0.1.10", "10.0.1.30"));
    assert!(t.dropped());
    // Invalid ofports count as absent.
    let ports = PortMap::new()
        .with_nic("nic-a1", 0)
        .with_nic("nic-b1", u32::MAX)
        .with_tunnel(PEER, port::LOCAL);
    assert!(render(&state, &ports, 1)
        .iter()
        .all(|f| referenced_ports(f).is_empty()));
}

#[test]
fn a_vpc_without_local_nics_renders_nothing() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 1);
    let c_tags = [
        object_tag(ObjectKind::Vpc, "vpc-c"),
        object_tag(ObjectKind::Subnet, "sub-c1"),
        object_tag(ObjectKind::Nic, "nic-c1"),
    ];
    assert!(flows
        .iter()
        .all(|f| !c_tags.contains(&cookie_object(f.cookie))));
    assert!(flows.iter().all(
        |f| f.matches.get(Field::Metadata).map(|m| m.value) != Some(300)
            && f.matches.get(Field::TunnelId).map(|m| m.value) != Some(300)
    ));
    // Removing vpc-c changes nothing.
    let mut without = state.clone();
    without.vpcs.remove("vpc-c");
    without.subnets.remove("sub-c1");
    without.nics.remove("nic-c1");
    assert_eq!(flows, render(&without, &ports, 1));
    // A node with only remote NICs renders no flow at all.
    let only_c = node_state(
        vec![vpc("vpc-c", 300)],
        vec![subnet(
            "sub-c1",
            "vpc-c",
            "10.9.0.0/24",
            "10.9.0.1",
            GW1_MAC,
        )],
        vec![nic("nic-c1", "vpc-c", "sub-c1", A4_MAC, "10.9.0.5", PEER)],
        &[PEER],
    );
    assert!(render(&only_c, &PortMap::new().with_tunnel(PEER, TUN), 1).is_empty());
    assert!(render(&NodeState::default(), &PortMap::new(), 1).is_empty());
}

#[test]
fn render_nic_gives_exactly_that_nics_flows() {
    let (state, ports) = lab();
    let flows = render(&state, &ports, 4);
    for id in state.nics.keys() {
        let tag = object_tag(ObjectKind::Nic, id);
        let from_all: Vec<Flow> = flows
            .iter()
            .filter(|f| cookie_object(f.cookie) == tag)
            .cloned()
            .collect();
        assert_eq!(render_nic(&state, &ports, 4, id), from_all, "{id}");
        let (value, mask) = object_cookie_match(ObjectKind::Nic, id);
        assert!(from_all.iter().all(|f| f.cookie & mask == value));
    }
    assert_eq!(render_nic(&state, &ports, 4, "nic-a1").len(), 16);
    assert_eq!(render_nic(&state, &ports, 4, "nic-a3").len(), 3);
    assert!(render_nic(&state, &ports, 4, "nic-c1").is_empty());
    assert!(render_nic(&state, &ports, 4, "nope").is_empty());
}

#[test]
fn cookie_layout() {
    let c = cookie(0xbeef, 0x1234_5678);
    assert_eq!(c, 0x534e_beef_1234_5678);
    assert!(is_ours(c));
    assert!(!is_ours(0));
    assert!(!is_ours(0x1234_beef_1234_5678));
    assert_eq!(cookie_generation(c), 0xbeef);
    assert_eq!(cookie_object(c), 0x1234_5678);
    let (owner, mask) = owner_cookie_match();
    assert_eq!(c & mask, owner);
    assert_ne!(0x1234_beef_1234_5678 & mask, owner);
    assert_ne!(
        object_tag(ObjectKind::Nic, "x"),
        object_tag(ObjectKind::Subnet, "x")
    );
    // FNV-1a is fixed: the tag of a NIC must not change between releases,
    // or an upgraded agent could not find the flows of the previous one.
    assert_eq!(
        object_tag(ObjectKind::Nic, "nic-a1"),
        object_tag(ObjectKind::Nic, "nic-a1")
    );
    assert_eq!(object_tag(ObjectKind::Nic, ""), {
        let mut h: u32 = 0x811c_9dc5;
        for b in b"nic/" {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        h
    });
}

#[test]
fn port_map_lookups() {
    let mut ports = PortMap::new().with_nic("a", 5).with_tunnel("n2", 9);
    assert_eq!(ports.nic("a"), Some(5));
    assert_eq!(ports.nic_at(5), Some("a"));
    ports.set_nic("a", 6);
    assert_eq!(ports.nic_at(5), None);
    assert_eq!(ports.nic_at(6), Some("a"));
    ports.set_nic("a", u32::MAX);
    assert_eq!(ports.nic("a"), None);
    assert_eq!(ports.nic_at(6), None);
    assert_eq!(ports.tunnel("n2"), Some(9));
    ports.remove_tunnel("n2");
    assert_eq!(ports.tunnel("n2"), None);
}

/// Rendering and reconciliation together: a change to one object touches
/// only that object's flows, and a new generation rewrites cookies only.
#[test]
fn one_nic_changes_only_its_own_flows() {
    use crate::reconcile::{diff, FlowChange};
    let (state, ports) = lab();
    let before = render(&state, &ports, 1);
    let mut added = state.clone();
    added.nics.insert(
        "nic-a5".into(),
        nic(
            "nic-a5",
            "vpc-a",
            "sub-a1",
            "02:aa:00:00:00:05",
            "10.0.1.50",
            PEER,
        ),
    );
    let changes = diff(&before, &render(&added, &ports, 1));
    let tag = object_tag(ObjectKind::Nic, "nic-a5");
    assert_eq!(changes.len(), 3, "{changes:#?}");
    assert!(changes
        .iter()
        .all(|c| matches!(c, FlowChange::Add(f) if cookie_object(f.cookie) == tag)));

    let mut removed = state.clone();
    removed.nics.remove("nic-a2");
    let changes = diff(&before, &render(&removed, &ports, 1));
    assert_eq!(changes.len(), 16, "{changes:#?}");
    assert!(changes.iter().all(|c| matches!(c, FlowChange::Delete(_))));

    // A new agent run (generation 2) over the same state changes nothing:
    // flows an earlier run wrote keep their cookie and counters.
    let changes = diff(&before, &render(&state, &ports, 2));
    assert!(changes.is_empty(), "{changes:#?}");
    // A real change is written with the new generation.
    let changes = diff(&before, &render(&removed, &ports, 2));
    assert_eq!(changes.len(), 16);
}

// ------------------------------------------------------------------ scale

/// A VPC of `n` NICs, 50 of them local, the others spread over 44 peers
/// (a Set holds at most 45 nodes).
fn big_vpc(n: usize) -> (NodeState, PortMap) {
    let peers: Vec<String> = (0..44).map(|i| format!("node-{i:02}")).collect();
    let peer_refs: Vec<&str> = peers.iter().map(String::as_str).collect();
    let subnets: Vec<Subnet> = (0..40)
        .map(|s| {
            subnet(
                &format!("sub-{s}"),
                "vpc-big",
                &format!("10.{s}.0.0/16"),
                &format!("10.{s}.0.1"),
                &format!("02:00:00:00:{s:02x}:01"),
            )
        })
        .collect();
    let mut ports = PortMap::new();
    for (i, p) in peers.iter().enumerate() {
        ports.set_tunnel(p, 1000 + i as u32);
    }
    let nics: Vec<Nic> = (0..n)
        .map(|i| {
            let s = i % 40;
            let node = if i < 50 { NODE } else { &peers[i % 44] };
            let id = format!("nic-{i:05}");
            if i < 50 {
                ports.set_nic(&id, 10 + i as u32);
            }
            let hi = ((i / 40) >> 8) as u8;
            let lo = ((i / 40) & 0xff) as u8;
            nic(
                &id,
                "vpc-big",
                &format!("sub-{s}"),
                &format!(
                    "02:10:{:02x}:{:02x}:{:02x}:{:02x}",
                    (i >> 16) & 0xff,
                    (i >> 8) & 0xff,
                    i & 0xff,
                    s
                ),
                &format!("10.{s}.{}.{}", hi + 1, lo),
                node,
            )
        })
        .collect();
    let state = node_state(vec![vpc("vpc-big", 4242)], subnets, nics, &peer_refs);
    (state, ports)
}

#[test]
fn ten_thousand_nics_render_fast_and_linearly() {
    let (state, ports) = big_vpc(10_000);
    let start = Instant::now();
    let flows = render(&state, &ports, 1);
    let took = start.elapsed();
    eprintln!(
        "10,000 NICs: {} flows in {took:?} (debug build)",
        flows.len()
    );
    // Per node: 3 flows per remote NIC, 16 per local NIC (8 of them the
    // security stages), 3 per subnet, 1 per peer, 1 per VPC, 27 shared,
    // 2 for the VPC's one security group.
    assert_eq!(flows.len(), 9_950 * 3 + 50 * 16 + 40 * 3 + 44 + 1 + 27 + 2);
    // Generous bound for an unoptimised build on a shared 2-core machine;
    // a release build takes a few milliseconds.
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
    // Spot check: a remote NIC in the middle is reachable, routed.
    let dst = &state.nics["nic-05003"];
    let src = &state.nics["nic-00001"];
    let gw = &state.subnets[&src.subnet_id];
    let t = trace(
        &flows,
        ipv4(
            11,
            &src.mac.to_string(),
            &gw.gateway_mac.to_string(),
            &src.ip.to_string(),
            &dst.ip.to_string(),
        ),
    );
    let (p, out) = t.single_output();
    assert_eq!(p, ports.tunnel(&dst.node).unwrap());
    assert_eq!(get(&out, Field::EthDst), mac_value(dst.mac));
}
