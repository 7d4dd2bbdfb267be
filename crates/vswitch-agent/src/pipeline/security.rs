//! Port security and security groups on br-int.
//!
//! # Port security
//!
//! A NIC with `port_security` sends IPv4 and ARP only from its own MAC and
//! IP or one of its allowed address pairs (IP or prefix, with the pair's MAC
//! or the NIC's), DHCP only as a client, and never as a DHCP server. Without
//! `port_security` the NIC's packets go on untouched and no security group
//! applies to it in either direction.
//!
//! # Security groups: stateful, one conntrack zone per NIC
//!
//! The zone of a local NIC is its ofport (OVS keeps ofports below 0xff00,
//! so they fit the 16 bits of a zone and are unique on the node). A packet
//! is tracked in the sender's zone on egress ([`table::EGRESS_CT`]) and in
//! the receiver's zone on ingress ([`table::INGRESS_CT`]); both may happen
//! on one node. `+inv` is dropped.
//!
//! Which rules judge a tracked packet depends on who opened the connection,
//! not on which way the packet goes: at egress, `-rpl` means the NIC opened
//! it (its egress rules judge), `+rpl` means the other side did (its ingress
//! rules judge); at ingress the reverse. Rules are matched against the
//! connection's original-direction tuple (`ct_nw_src`, `ct_nw_dst`,
//! `ct_nw_proto`, `ct_tp_src/dst`), which for a new connection is the packet
//! itself, so one set of rule flows serves new connections, replies and
//! re-validation alike.
//!
//! For each group of the NIC the stage sets `reg8` to the group's tag and
//! resubmits to the rule table of the direction; a rule that matches commits
//! the connection in the NIC's zone (`reg10`) and sets `reg9` = 1; the
//! verdict table passes the packet only then. A NIC in no group passes
//! nothing.
//!
//! # Cutting connections when rules go away
//!
//! A committed connection carries in `ct_mark` the *token* of the group and
//! direction that admitted it: a hash of that direction's rules and of the
//! current members of every group they name. A packet of an established
//! connection whose mark equals the current token of one of the NIC's groups
//! passes at once (one flow, no rule lookup). Any change to the rules or to a
//! remote group's members changes the token, so the next packet of every
//! connection it admitted falls through to the rules again: still allowed, it
//! is re-committed with the new token; no longer allowed, it is dropped, in
//! both directions, on every node, without the agent touching conntrack.
//! Related packets (ICMP errors) pass only with a current token.
//!
//! # Compact rule sets
//!
//! A rule is (remote addresses) × (protocol and ports). When both sides have
//! more than one match (a remote group of N members, a port range that
//! splits into M masked matches) the rule becomes a conjunctive match: N + M
//! clause flows and one `conj_id` flow, instead of N × M. A clause flow that
//! equals a plain allow flow of another rule of the group is dropped (the
//! plain flow already admits all of it).
//!
//! Group flows are shared flows (cookie object = the group's tag): they
//! depend on the group and on the members of the groups it names, never on
//! one NIC. A NIC's own flows depend only on the NIC (its groups by id, its
//! pairs, its port), so the incremental renderer's per-NIC inputs stay
//! complete.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use openflow::flow::{ct_state, Action, CtZone, Field, Flow, Match};
use proto::{Direction, Ipv4Prefix, Nic, Remote, RuleProtocol, SecurityGroup, SgRule};

use super::{
    cookie, flow, object_tag, priority, reg, set_field, table, Ctx, FlowExt, ObjectKind,
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, ETH_TYPE_ARP, ETH_TYPE_IPV4, IP_PROTO_ICMP, IP_PROTO_UDP,
};

const IP_PROTO_TCP: u8 = 6;
const ARP_REPLY: u16 = 2;

/// Priorities inside the security tables.
pub mod sg_priority {
    /// `+inv`: dropped before anything else.
    pub const INVALID: u16 = 300;
    /// An established or related packet whose mark is the group's current
    /// token.
    pub const TOKEN: u16 = 200;
    /// A related packet without a current token: not re-judged.
    pub const RELATED: u16 = 150;
    /// Rule flows, plain and conjunctive.
    pub const RULE: u16 = 100;
    /// Pairs' addresses rank below the NICs' own everywhere.
    pub const PAIR: u16 = 90;
    /// ARP replies a VM sends (its sender fields already checked).
    pub const ARP_REPLY: u16 = 20;
    /// ARP passes the conntrack stages untracked.
    pub const ARP: u16 = 10;
}

/// The tag of a group: the value of `reg8` while its rules are evaluated,
/// and the object part of its flows' cookies.
pub fn group_tag(id: &str) -> u32 {
    object_tag(ObjectKind::SecurityGroup, id)
}

/// FNV-1a, 32 bits, for tokens and conjunction ids (stable across runs).
struct Fnv(u32);

impl Fnv {
    fn new() -> Self {
        Fnv(0x811c_9dc5)
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for x in b {
            self.0 = (self.0 ^ u32::from(*x)).wrapping_mul(0x0100_0193);
        }
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        // A separator so ("ab","c") and ("a","bc") differ.
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }
    fn finish(&self) -> u32 {
        // 0 is the mark of a connection nobody committed.
        if self.0 == 0 {
            1
        } else {
            self.0
        }
    }
}

/// The addresses of each group's members, per VPC, built once per render.
struct AddressSets<'a> {
    ctx: &'a Ctx<'a>,
    cache: HashMap<(&'a str, &'a str), BTreeSet<Ipv4Prefix>>,
}

impl<'a> AddressSets<'a> {
    fn new(ctx: &'a Ctx<'a>) -> Self {
        AddressSets {
            ctx,
            cache: HashMap::new(),
        }
    }

    /// The members of `group` in `vpc`: their IPs and their pairs' prefixes.
    fn of(&mut self, vpc: &'a str, group: &'a str) -> &BTreeSet<Ipv4Prefix> {
        let ctx = self.ctx;
        self.cache.entry((vpc, group)).or_insert_with(|| {
            ctx.state
                .nics
                .values()
                .filter(|n| n.vpc_id == vpc && n.port_security)
                .filter(|n| n.security_groups.iter().any(|g| g == group))
                .flat_map(|n| n.source_addresses().map(|(_, p)| canonical_prefix(p)))
                .collect()
        })
    }
}

fn canonical_prefix(p: Ipv4Prefix) -> Ipv4Prefix {
    let len = p.len.min(32);
    let p = Ipv4Prefix { addr: p.addr, len };
    Ipv4Prefix {
        addr: p.network(),
        len,
    }
}

/// The shared flows of the security stages: table misses (drop: a NIC
/// missing its stage flows fails closed), `+inv` drops, verdicts, ARP
/// pass-through, and the flows of every group a local NIC is in.
pub(super) fn shared_flows(ctx: &Ctx<'_>, out: &mut Vec<Flow>) {
    let c = cookie(ctx.generation, 0);
    let drop = |t| flow(t, priority::DEFAULT, c, Match::new());
    let ip = || Match::new().eth_type(ETH_TYPE_IPV4);
    // A VM's ARP reply (its sender fields passed port security) is
    // delivered like any unicast frame; requests are answered or dropped
    // by the services table.
    out.push(
        flow(
            table::SERVICES,
            sg_priority::ARP_REPLY,
            c,
            Match::new().eth_type(ETH_TYPE_ARP).arp_op(ARP_REPLY),
        )
        .goto(table::EGRESS_CT),
    );
    for (ct, state, verdict, next) in [
        (
            table::EGRESS_CT,
            table::EGRESS_STATE,
            table::EGRESS_VERDICT,
            table::ROUTER_MAC,
        ),
        (
            table::INGRESS_CT,
            table::INGRESS_STATE,
            table::INGRESS_VERDICT,
            table::DELIVER,
        ),
    ] {
        out.push(drop(ct));
        out.push(flow(ct, sg_priority::ARP, c, Match::new().eth_type(ETH_TYPE_ARP)).goto(next));
        out.push(drop(state));
        out.push(flow(
            state,
            sg_priority::INVALID,
            c,
            ip().ct_state(ct_state::TRK | ct_state::INV, 0),
        ));
        out.push(drop(verdict));
        out.push(
            flow(
                verdict,
                priority::OBJECT,
                c,
                Match::new().reg(reg::VERDICT, reg::VERDICT_ALLOW),
            )
            .goto(next),
        );
    }
    out.push(drop(table::DELIVER));
    for rules in [table::SG_EGRESS, table::SG_INGRESS] {
        // A miss in a resubmitted table just returns: nothing allowed.
        out.push(drop(rules));
        out.push(flow(
            rules,
            sg_priority::RELATED,
            c,
            ip().ct_state(ct_state::TRK | ct_state::REL, 0),
        ));
    }

    // The groups local NICs are in, by tag; a tag two groups share would
    // merge their rules, so neither is rendered (their NICs pass nothing).
    let mut wanted: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
    for nic in ctx.state.local_nics() {
        if !nic.port_security || !ctx.local_vpcs.contains_key(nic.vpc_id.as_str()) {
            continue;
        }
        for g in &nic.security_groups {
            if ctx
                .state
                .security_groups
                .get(g)
                .is_some_and(|sg| sg.vpc_id == nic.vpc_id)
            {
                wanted.entry(group_tag(g)).or_default().insert(g.as_str());
            }
        }
    }
    let mut sets = AddressSets::new(ctx);
    for (tag, ids) in wanted {
        if ids.len() > 1 {
            tracing::error!(tag, groups = ?ids, "security groups share a tag; none of them is rendered");
            continue;
        }
        for id in ids {
            if let Some(g) = ctx.state.security_groups.get(id) {
                group_flows(ctx, g, tag, &mut sets, out);
            }
        }
    }
}

/// One side of a rule: a set of matches, any of which satisfies it.
/// `None` is "no constraint".
type Side = Option<Vec<Match>>;

/// A rule's remote addresses as matches on the original-direction tuple.
fn address_side<'a>(sets: &mut AddressSets<'a>, g: &'a SecurityGroup, r: &'a SgRule) -> Side {
    let field = match r.direction {
        Direction::Ingress => Field::CtNwSrc,
        Direction::Egress => Field::CtNwDst,
    };
    let prefixes: Vec<Ipv4Prefix> = match &r.remote {
        Remote::Cidr(p) if p.len == 0 => return None,
        Remote::Cidr(p) => vec![canonical_prefix(*p)],
        Remote::Group(rg) => sets.of(&g.vpc_id, rg).iter().copied().collect(),
    };
    Some(
        prefixes
            .into_iter()
            .map(|p| {
                let (v, m) = openflow::flow::prefix_bits(p.addr, p.len);
                Match::new().set_masked(field, v, m)
            })
            .collect(),
    )
}

/// A rule's protocol and ports as matches on the original-direction tuple
/// (for ICMP, `ct_tp_src` is the type and `ct_tp_dst` the code).
fn l4_side(r: &SgRule) -> Side {
    let ports = |proto: u8, range: Option<proto::PortRange>| {
        let m = Match::new().set(Field::CtNwProto, proto.into());
        Some(match range {
            None => vec![m],
            Some(r) => port_masks(r.min, r.max)
                .into_iter()
                .map(|(v, mask)| {
                    let mask = (mask != u16::MAX).then_some(u128::from(mask));
                    m.clone().set_masked(Field::CtTpDst, v.into(), mask)
                })
                .collect(),
        })
    };
    match r.protocol {
        RuleProtocol::Any => None,
        RuleProtocol::Tcp { ports: p } => ports(IP_PROTO_TCP, p),
        RuleProtocol::Udp { ports: p } => ports(IP_PROTO_UDP, p),
        RuleProtocol::Icmp {
            icmp_type,
            icmp_code,
        } => {
            let mut m = Match::new().set(Field::CtNwProto, IP_PROTO_ICMP.into());
            if let Some(t) = icmp_type {
                m = m.set(Field::CtTpSrc, t.into());
                if let Some(code) = icmp_code {
                    m = m.set(Field::CtTpDst, code.into());
                }
            }
            Some(vec![m])
        }
    }
}

/// `[min, max]` as value/mask pairs (all-ones mask = exact), the fewest
/// aligned power-of-two blocks that cover it exactly.
pub fn port_masks(min: u16, max: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(min), u32::from(max));
    while lo <= hi {
        let mut size: u32 = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        // `lo` < 2^16 and `size` ≤ 2^16: both casts keep every bit.
        out.push((lo as u16, (!(size - 1) & 0xffff) as u16));
        lo += size;
    }
    out
}

/// Merges `b`'s fields into `a` (they never share a field here).
fn merge(a: &Match, b: &Match) -> Match {
    b.fields()
        .iter()
        .fold(a.clone(), |m, f| m.set_masked(f.field, f.value, f.mask))
}

/// What one match key of a rule table gets: a plain allow, or clauses of
/// conjunctions `(id, clause, n_clauses)`.
#[derive(Default)]
struct Entry {
    allow: bool,
    clauses: BTreeSet<(u32, u8, u8)>,
}

/// The token of a group's rules in one direction (see the module doc).
fn token<'a>(
    g: &'a SecurityGroup,
    dir: Direction,
    rules: &[&'a SgRule],
    sets: &mut AddressSets<'a>,
) -> u32 {
    let mut h = Fnv::new();
    h.str(&g.id).str(match dir {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    });
    for r in rules {
        h.str(&serde_json::to_string(r).unwrap_or_default());
        if let Remote::Group(rg) = &r.remote {
            for p in sets.of(&g.vpc_id, rg) {
                h.str(&p.to_string());
            }
        }
    }
    h.finish()
}

/// The rule flows of one group, both directions.
fn group_flows<'a>(
    ctx: &Ctx<'_>,
    g: &'a SecurityGroup,
    tag: u32,
    sets: &mut AddressSets<'a>,
    out: &mut Vec<Flow>,
) {
    let c = cookie(ctx.generation, tag);
    for (dir, rule_table) in [
        (Direction::Egress, table::SG_EGRESS),
        (Direction::Ingress, table::SG_INGRESS),
    ] {
        let rules: Vec<&SgRule> = g.rules.iter().filter(|r| r.direction == dir).collect();
        let token = token(g, dir, &rules, sets);
        let base = Match::new()
            .reg(reg::SG, tag)
            .eth_type(ETH_TYPE_IPV4)
            .ct_state(ct_state::TRK, ct_state::INV);
        out.push(
            flow(
                rule_table,
                sg_priority::TOKEN,
                c,
                Match::new()
                    .reg(reg::SG, tag)
                    .eth_type(ETH_TYPE_IPV4)
                    .ct_state(ct_state::TRK, ct_state::NEW | ct_state::INV)
                    .ct_mark(token, u32::MAX),
            )
            .actions(vec![set_field(
                Field::Reg(reg::VERDICT),
                reg::VERDICT_ALLOW.into(),
            )]),
        );
        let allow = vec![
            Action::Ct {
                commit: true,
                zone: CtZone::Field {
                    field: Field::Reg(reg::ZONE),
                    ofs: 0,
                },
                table: None,
                nat: None,
                actions: vec![set_field(Field::CtMark, token.into())],
            },
            set_field(Field::Reg(reg::VERDICT), reg::VERDICT_ALLOW.into()),
        ];
        let mut entries: BTreeMap<Match, Entry> = BTreeMap::new();
        let mut conj_ids: BTreeSet<u32> = BTreeSet::new();
        for r in rules {
            let addrs = address_side(sets, g, r);
            let l4 = l4_side(r);
            let (a, p) = match (addrs, l4) {
                (Some(a), _) if a.is_empty() => continue, // nobody to admit
                (None, None) => (vec![Match::new()], vec![Match::new()]),
                (None, Some(p)) => (vec![Match::new()], p),
                (Some(a), None) => (a, vec![Match::new()]),
                (Some(a), Some(p)) => (a, p),
            };
            if a.len() == 1 || p.len() == 1 {
                for x in &a {
                    for y in &p {
                        entries.entry(merge(&merge(&base, x), y)).or_default().allow = true;
                    }
                }
                continue;
            }
            let mut id = Fnv::new().bytes(&tag.to_be_bytes()).str(&r.id).finish();
            while conj_ids.contains(&id) {
                id = id.wrapping_add(1).max(1);
            }
            conj_ids.insert(id);
            for x in &a {
                entries
                    .entry(merge(&base, x))
                    .or_default()
                    .clauses
                    .insert((id, 0, 2));
            }
            for y in &p {
                entries
                    .entry(merge(&base, y))
                    .or_default()
                    .clauses
                    .insert((id, 1, 2));
            }
            out.push(
                flow(
                    rule_table,
                    sg_priority::RULE,
                    c,
                    merge(&base, &Match::new().set(Field::ConjId, id.into())),
                )
                .actions(allow.clone()),
            );
        }
        for (m, e) in entries {
            let actions = if e.allow {
                allow.clone()
            } else {
                e.clauses
                    .iter()
                    .map(|(id, clause, n_clauses)| Action::Conjunction {
                        id: *id,
                        clause: *clause,
                        n_clauses: *n_clauses,
                    })
                    .collect()
            };
            out.push(flow(rule_table, sg_priority::RULE, c, m).actions(actions));
        }
    }
}

/// The port-security and conntrack-stage flows of a local NIC on `ofport`
/// (the classification flow is the caller's).
pub(super) fn local_nic_flows(c: u64, vni: u64, nic: &Nic, ofport: u32, out: &mut Vec<Flow>) {
    if !nic.port_security {
        out.push(
            flow(
                table::PORT_SECURITY,
                priority::OBJECT,
                c,
                Match::new().in_port(ofport),
            )
            .goto(table::SERVICES),
        );
        out.push(
            flow(
                table::EGRESS_CT,
                priority::OBJECT,
                c,
                Match::new().reg(reg::IN_NIC, ofport),
            )
            .goto(table::ROUTER_MAC),
        );
        l2_to_nic(c, vni, nic, ofport, out);
        return;
    }
    for (mac, prefix) in nic.source_addresses() {
        let p = canonical_prefix(prefix);
        let (v, m) = openflow::flow::prefix_bits(p.addr, p.len);
        let from = Match::new().in_port(ofport).eth_src(mac);
        out.push(
            flow(
                table::PORT_SECURITY,
                priority::OBJECT,
                c,
                from.clone()
                    .eth_type(ETH_TYPE_IPV4)
                    .set_masked(Field::Ipv4Src, v, m),
            )
            .goto(table::SERVICES),
        );
        out.push(
            flow(
                table::PORT_SECURITY,
                priority::OBJECT,
                c,
                from.eth_type(ETH_TYPE_ARP)
                    .arp_sha(mac)
                    .set_masked(Field::ArpSpa, v, m),
            )
            .goto(table::SERVICES),
        );
    }
    // A DHCP client has no address yet.
    out.push(
        flow(
            table::PORT_SECURITY,
            priority::OBJECT,
            c,
            Match::new()
                .in_port(ofport)
                .eth_src(nic.mac)
                .eth_type(ETH_TYPE_IPV4)
                .ipv4_src(std::net::Ipv4Addr::UNSPECIFIED)
                .ip_proto(IP_PROTO_UDP)
                .udp_src(DHCP_CLIENT_PORT)
                .udp_dst(DHCP_SERVER_PORT),
        )
        .goto(table::SERVICES),
    );
    // A VM is never a DHCP server, whatever addresses it may use.
    out.push(flow(
        table::PORT_SECURITY,
        priority::DHCP_SERVER_DROP,
        c,
        Match::new()
            .in_port(ofport)
            .eth_type(ETH_TYPE_IPV4)
            .ip_proto(IP_PROTO_UDP)
            .udp_src(DHCP_SERVER_PORT),
    ));
    l2_to_nic(c, vni, nic, ofport, out);
    let Ok(zone) = u16::try_from(ofport) else {
        // No stage flows: the table misses drop the NIC's IPv4 traffic.
        tracing::error!(nic = %nic.id, ofport, "ofport does not fit a conntrack zone; NIC isolated");
        return;
    };
    let tags: Vec<u32> = nic.security_groups.iter().map(|g| group_tag(g)).collect();
    let judge = |rules: u8| {
        let mut acts = vec![set_field(Field::Reg(reg::VERDICT), 0)];
        for t in &tags {
            acts.push(set_field(Field::Reg(reg::SG), (*t).into()));
            acts.push(Action::Resubmit { table: rules });
        }
        acts
    };
    for (ct, state, verdict, port_reg) in [
        (
            table::EGRESS_CT,
            table::EGRESS_STATE,
            table::EGRESS_VERDICT,
            reg::IN_NIC,
        ),
        (
            table::INGRESS_CT,
            table::INGRESS_STATE,
            table::INGRESS_VERDICT,
            reg::OUT_NIC,
        ),
    ] {
        let this = Match::new().reg(port_reg, ofport).eth_type(ETH_TYPE_IPV4);
        let mut acts = Vec::new();
        if ct == table::INGRESS_CT {
            // Egress on this node may have tracked it in the sender's zone.
            acts.push(Action::CtClear);
        }
        acts.push(set_field(Field::Reg(reg::ZONE), zone.into()));
        acts.push(Action::Ct {
            commit: false,
            zone: CtZone::Imm(zone),
            table: Some(state),
            nat: None,
            actions: vec![],
        });
        out.push(flow(ct, priority::OBJECT, c, this.clone()).actions(acts));
        // Opened by this NIC on egress, or by the other side on ingress:
        // this side's own direction judges; replies the opposite one.
        let (own, other) = if ct == table::EGRESS_CT {
            (table::SG_EGRESS, table::SG_INGRESS)
        } else {
            (table::SG_INGRESS, table::SG_EGRESS)
        };
        for (rpl, rules) in [(false, own), (true, other)] {
            let st = if rpl {
                this.clone().ct_state(ct_state::TRK | ct_state::RPL, 0)
            } else {
                this.clone().ct_state(ct_state::TRK, ct_state::RPL)
            };
            out.push(
                flow(state, priority::OBJECT, c, st)
                    .actions(judge(rules))
                    .goto(verdict),
            );
        }
    }
    out.push(
        flow(
            table::DELIVER,
            priority::OBJECT,
            c,
            Match::new().reg(reg::OUT_NIC, ofport),
        )
        .actions(vec![Action::Output(ofport)]),
    );
}

/// Delivery to a local NIC by destination MAC (its own, then its pairs'):
/// straight out without port security, through the ingress stage with it.
fn l2_to_nic(c: u64, vni: u64, nic: &Nic, ofport: u32, out: &mut Vec<Flow>) {
    let deliver = |f: Flow| {
        if nic.port_security {
            f.actions(vec![set_field(Field::Reg(reg::OUT_NIC), ofport.into())])
                .goto(table::INGRESS_CT)
        } else {
            f.actions(vec![Action::Output(ofport)])
        }
    };
    out.push(deliver(flow(
        table::L2_LOOKUP,
        priority::OBJECT,
        c,
        Match::new().metadata(vni).eth_dst(nic.mac),
    )));
    for mac in pair_macs(nic) {
        out.push(deliver(flow(
            table::L2_LOOKUP,
            sg_priority::PAIR,
            c,
            Match::new().metadata(vni).eth_dst(mac),
        )));
    }
}

/// The MACs of a NIC's address pairs other than its own, once each.
pub(super) fn pair_macs(nic: &Nic) -> BTreeSet<proto::Mac> {
    if !nic.port_security {
        return BTreeSet::new();
    }
    nic.allowed_address_pairs
        .iter()
        .filter_map(|p| p.mac)
        .filter(|m| *m != nic.mac)
        .collect()
}

/// The single addresses of a NIC's pairs, with the MAC they answer ARP with.
pub(super) fn pair_hosts(nic: &Nic) -> Vec<(std::net::Ipv4Addr, proto::Mac)> {
    if !nic.port_security {
        return Vec::new();
    }
    nic.allowed_address_pairs
        .iter()
        .filter(|p| p.ip.len >= 32 && p.ip.addr != nic.ip)
        .map(|p| (p.ip.addr, p.mac.unwrap_or(nic.mac)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(masks: &[(u16, u16)]) -> Vec<u16> {
        (0..=u16::MAX)
            .filter(|p| masks.iter().any(|(v, m)| p & m == *v))
            .collect()
    }

    #[test]
    fn port_ranges_split_into_exact_masked_blocks() {
        for (min, max) in [
            (22, 22),
            (1, 65535),
            (1000, 1999),
            (0, 0),
            (0, 65535),
            (8080, 8089),
            (65535, 65535),
            (1024, 2047),
        ] {
            let masks = port_masks(min, max);
            let want: Vec<u16> = (min..=max).collect();
            assert_eq!(covers(&masks), want, "{min}-{max}: {masks:?}");
            // Every block is disjoint from the others.
            let total: u32 = masks.iter().map(|(_, m)| 1u32 << (!m).count_ones()).sum();
            assert_eq!(total as usize, want.len(), "{min}-{max}");
        }
        assert_eq!(port_masks(22, 22), [(22, 0xffff)]);
        assert_eq!(port_masks(1024, 2047), [(1024, 0xfc00)]);
        assert!(port_masks(1, 65535).len() <= 16);
    }
}
