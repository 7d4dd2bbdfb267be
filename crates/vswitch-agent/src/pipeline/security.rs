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
//! resubmits to the rule table of the direction; a rule that matches sets
//! `reg9` = 1; the verdict table passes the packet only then, and commits a
//! new connection in the NIC's zone (`reg10`). A NIC in no group passes
//! nothing.
//!
//! Every packet is judged, not only the first of a connection (OVS caches
//! the decision per megaflow, so this costs nothing per packet in the
//! datapath). So when a rule, a membership or a remote group's member goes
//! away, the next packet of every connection it admitted is dropped, in both
//! directions, on every node, without the agent touching conntrack. Related
//! packets (ICMP errors) carry their connection's original tuple and are
//! judged by the same rules.
//!
//! # Compact rule sets, incremental address sets
//!
//! A rule is (remote addresses) × (protocol and ports). A rule naming a
//! remote group whose protocol side has more than one match (a port range
//! that splits into M masked matches) is a conjunctive match: one clause
//! flow per member address, M clause flows and one `conj_id` flow — N + M
//! flows instead of N × M. A rule with a single protocol match gets one
//! plain flow per member address.
//!
//! A group's flows come in two parts so that membership changes stay
//! O(1): [`group_flows`] depend only on the group (CIDR rules, the
//! conjunctions' `conj_id` and port clauses), and [`member_flows`] are the
//! flows of the group for one address of the groups it names. When a NIC
//! joins or leaves a group, only the flows of its own addresses change.
//! Plain allows rank above conjunctions, and each kind of flow has its own
//! priority, so no two owners ever render the same flow.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Verdict table: an allowed new connection, committed.
    pub const COMMIT: u16 = 110;
    /// Plain allows of a group's CIDR (or any-address) rules.
    pub const ALLOW: u16 = 120;
    /// Plain allows of one address of a remote group's members.
    pub const MEMBER_ALLOW: u16 = 110;
    /// Conjunctive matches: the clauses and the `conj_id` flows. Below
    /// every plain allow, so a packet one admits outright never depends on
    /// how a conjunction at the same priority resolves.
    pub const CONJUNCTION: u16 = 100;
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

/// FNV-1a, 32 bits, for conjunction ids (stable across runs).
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
        // conj_id 0 is as good as any other, but keep ids nonzero anyway.
        self.0.max(1)
    }
}

/// The addresses a member NIC brings into the address set of each of its
/// groups: its IP and its pairs' prefixes (none without port security).
pub(super) fn member_prefixes(nic: &Nic) -> impl Iterator<Item = Ipv4Prefix> + '_ {
    nic.source_addresses()
        .filter(|_| nic.port_security)
        .map(|(_, p)| canonical_prefix(p))
}

fn canonical_prefix(p: Ipv4Prefix) -> Ipv4Prefix {
    let len = p.len.min(32);
    let p = Ipv4Prefix { addr: p.addr, len };
    Ipv4Prefix {
        addr: p.network(),
        len,
    }
}

/// The fixed flows of the security stages: table misses (drop: a NIC
/// missing its stage flows fails closed), `+inv` drops, verdicts (which
/// commit new connections), ARP pass-through.
pub(super) fn stage_flows(ctx: &Ctx<'_>, out: &mut Vec<Flow>) {
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
    let allowed = || Match::new().reg(reg::VERDICT, reg::VERDICT_ALLOW);
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
        // A new connection is committed in the zone of the stage (`reg10`)
        // once allowed; later packets are judged again without a commit.
        out.push(
            flow(
                verdict,
                sg_priority::COMMIT,
                c,
                allowed()
                    .eth_type(ETH_TYPE_IPV4)
                    .ct_state(ct_state::TRK | ct_state::NEW, 0),
            )
            .actions(vec![Action::Ct {
                commit: true,
                zone: CtZone::Field {
                    field: Field::Reg(reg::ZONE),
                    ofs: 0,
                },
                table: None,
                nat: None,
                actions: vec![],
            }])
            .goto(next),
        );
        out.push(flow(verdict, priority::OBJECT, c, allowed()).goto(next));
    }
    out.push(drop(table::DELIVER));
    for rules in [table::SG_EGRESS, table::SG_INGRESS] {
        // A miss in a resubmitted table just returns: nothing allowed.
        out.push(drop(rules));
    }
}

/// The groups whose rules this node evaluates: those of its local NICs
/// with port security. A tag two groups share would merge their rules, so
/// neither is rendered (their NICs pass nothing).
pub(super) fn local_groups<'a>(ctx: &Ctx<'a>) -> BTreeMap<&'a str, &'a SecurityGroup> {
    let mut by_tag: BTreeMap<u32, BTreeSet<&'a str>> = BTreeMap::new();
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
                by_tag.entry(group_tag(g)).or_default().insert(g.as_str());
            }
        }
    }
    let mut groups = BTreeMap::new();
    for (tag, ids) in by_tag {
        if ids.len() > 1 {
            tracing::error!(tag, groups = ?ids, "security groups share a tag; none of them is rendered");
            continue;
        }
        for id in ids {
            if let Some(g) = ctx.state.security_groups.get(id) {
                groups.insert(id, g);
            }
        }
    }
    groups
}

/// The groups `g`'s rules name as remote.
pub(super) fn remote_groups(g: &SecurityGroup) -> BTreeSet<&str> {
    g.rules
        .iter()
        .filter_map(|r| match &r.remote {
            Remote::Group(rg) => Some(rg.as_str()),
            Remote::Cidr(_) => None,
        })
        .collect()
}

/// Every flow of the node's groups, their address sets included, from
/// scratch: what the incremental renderer keeps current piece by piece.
pub(super) fn all_group_flows(ctx: &Ctx<'_>, out: &mut Vec<Flow>) {
    for g in local_groups(ctx).into_values() {
        let rules = GroupRules::new(g);
        group_flows(ctx, &rules, out);
        let remotes = remote_groups(g);
        let mut sets: BTreeMap<&str, BTreeSet<Ipv4Prefix>> = BTreeMap::new();
        for nic in ctx.state.nics.values().filter(|n| n.vpc_id == g.vpc_id) {
            for rg in nic
                .security_groups
                .iter()
                .filter(|rg| remotes.contains(rg.as_str()))
            {
                sets.entry(rg).or_default().extend(member_prefixes(nic));
            }
        }
        let prefixes: BTreeSet<Ipv4Prefix> = sets.values().flatten().copied().collect();
        for p in prefixes {
            member_flows(
                ctx,
                &rules,
                p,
                |rg| sets.get(rg).is_some_and(|s| s.contains(&p)),
                out,
            );
        }
    }
}

/// A rule's protocol and ports as matches on the original-direction tuple
/// (for ICMP, `ct_tp_src` is the type and `ct_tp_dst` the code); `None`
/// is "any protocol".
fn l4_side(r: &SgRule) -> Option<Vec<Match>> {
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

/// What a rule lookup starts from: the group being evaluated, a tracked
/// IPv4 packet that is not invalid.
fn rule_base(tag: u32) -> Match {
    Match::new()
        .reg(reg::SG, tag)
        .eth_type(ETH_TYPE_IPV4)
        .ct_state(ct_state::TRK, ct_state::INV)
}

fn rule_table(dir: Direction) -> u8 {
    match dir {
        Direction::Egress => table::SG_EGRESS,
        Direction::Ingress => table::SG_INGRESS,
    }
}

/// A remote address as a match on the original-direction tuple.
fn address_match(dir: Direction, p: Ipv4Prefix) -> Match {
    let field = match dir {
        Direction::Ingress => Field::CtNwSrc,
        Direction::Egress => Field::CtNwDst,
    };
    let (v, m) = openflow::flow::prefix_bits(p.addr, p.len);
    Match::new().set_masked(field, v, m)
}

fn allow() -> Vec<Action> {
    vec![set_field(
        Field::Reg(reg::VERDICT),
        reg::VERDICT_ALLOW.into(),
    )]
}

/// What a group's flows are built from, worked out once per render of the
/// group (not once per member address): its tag, each rule's protocol/port
/// matches, and the conjunction id of each rule that is a conjunctive match
/// (a remote group × more than one protocol/port match). Ids are
/// deterministic, so the group's flows and its members' flows agree.
pub(super) struct GroupRules<'a> {
    tag: u32,
    /// Per rule, in order: its protocol/port matches (one empty match for
    /// "any") and its conjunction id, if it is one.
    rules: Vec<(&'a SgRule, Vec<Match>, Option<u32>)>,
}

impl<'a> GroupRules<'a> {
    pub(super) fn new(group: &'a SecurityGroup) -> Self {
        let tag = group_tag(&group.id);
        let mut used = BTreeSet::new();
        let rules = group
            .rules
            .iter()
            .map(|r| {
                let l4 = l4_side(r).unwrap_or_else(|| vec![Match::new()]);
                let conj = (matches!(r.remote, Remote::Group(_)) && l4.len() > 1).then(|| {
                    let mut id = Fnv::new().bytes(&tag.to_be_bytes()).str(&r.id).finish();
                    while !used.insert(id) {
                        id = id.wrapping_add(1).max(1);
                    }
                    id
                });
                (r, l4, conj)
            })
            .collect();
        GroupRules { tag, rules }
    }
}

/// One flow per match holding clause `clause` (of 2) of each of its
/// conjunctions; keys `skip` accepts are left out.
fn clause_flows(
    c: u64,
    clause: u8,
    clauses: BTreeMap<(u8, Match), BTreeSet<u32>>,
    skip: impl Fn(&(u8, Match)) -> bool,
    out: &mut Vec<Flow>,
) {
    for (key, ids) in clauses {
        if skip(&key) {
            continue;
        }
        let acts = ids
            .into_iter()
            .map(|id| Action::Conjunction {
                id,
                clause,
                n_clauses: 2,
            })
            .collect();
        let (t, m) = key;
        out.push(flow(t, sg_priority::CONJUNCTION, c, m).actions(acts));
    }
}

/// The flows of one group that do not depend on who is in the groups it
/// names: plain allows of its CIDR rules, and for each conjunctive rule the
/// `conj_id` flow and the protocol/port clauses. The address clauses come
/// from [`member_flows`].
pub(super) fn group_flows(ctx: &Ctx<'_>, g: &GroupRules<'_>, out: &mut Vec<Flow>) {
    let c = cookie(ctx.generation, g.tag);
    let mut allows: BTreeSet<(u8, Match)> = BTreeSet::new();
    let mut clauses: BTreeMap<(u8, Match), BTreeSet<u32>> = BTreeMap::new();
    for (r, l4, conj) in &g.rules {
        let (t, base) = (rule_table(r.direction), rule_base(g.tag));
        match (&r.remote, conj) {
            (Remote::Group(_), Some(id)) => {
                out.push(
                    flow(
                        t,
                        sg_priority::CONJUNCTION,
                        c,
                        merge(&base, &Match::new().set(Field::ConjId, (*id).into())),
                    )
                    .actions(allow()),
                );
                for y in l4 {
                    clauses.entry((t, merge(&base, y))).or_default().insert(*id);
                }
            }
            (Remote::Group(_), None) => {} // all in member_flows
            (Remote::Cidr(p), _) => {
                // 0.0.0.0/0 is no constraint at all.
                let addr = if p.len == 0 {
                    Match::new()
                } else {
                    address_match(r.direction, canonical_prefix(*p))
                };
                for y in l4 {
                    allows.insert((t, merge(&merge(&base, &addr), y)));
                }
            }
        }
    }
    for (t, m) in allows {
        out.push(flow(t, sg_priority::ALLOW, c, m).actions(allow()));
    }
    clause_flows(c, 1, clauses, |_| false, out);
}

/// The flows of group `g` for one address `p` of the groups it names:
/// a plain allow per rule whose remote group holds `p` (with the rule's
/// protocol and port), or the address clause of its conjunction. `holds`
/// says whether a remote group's address set contains `p`.
pub(super) fn member_flows(
    ctx: &Ctx<'_>,
    g: &GroupRules<'_>,
    p: Ipv4Prefix,
    holds: impl Fn(&str) -> bool,
    out: &mut Vec<Flow>,
) {
    let c = cookie(ctx.generation, g.tag);
    let mut allows: BTreeSet<(u8, Match)> = BTreeSet::new();
    let mut clauses: BTreeMap<(u8, Match), BTreeSet<u32>> = BTreeMap::new();
    for (r, l4, conj) in &g.rules {
        let Remote::Group(rg) = &r.remote else {
            continue;
        };
        if !holds(rg) {
            continue;
        }
        let t = rule_table(r.direction);
        let at = merge(&rule_base(g.tag), &address_match(r.direction, p));
        match conj {
            Some(id) => {
                clauses.entry((t, at)).or_default().insert(*id);
            }
            None => {
                for y in l4 {
                    allows.insert((t, merge(&at, y)));
                }
            }
        }
    }
    // An address another rule admits outright needs no clause.
    clause_flows(c, 0, clauses, |key| allows.contains(key), out);
    for (t, m) in allows {
        out.push(flow(t, sg_priority::MEMBER_ALLOW, c, m).actions(allow()));
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
