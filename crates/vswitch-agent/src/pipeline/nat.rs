//! The way out and in: EIPs (1:1 NAT on the node hosting the NIC) and NAT
//! gateways (SNAT/DNAT on gateway nodes, chosen by a fast-failover group).
//!
//! | table | name | what it does |
//! |---|---|---|
//! | 31 | [`table::ROUTE`] | (added) a local VM's packet to no address of the VPC → [`table::EXT_OUT`] |
//! | 2 | [`table::EXT_IN`] | from an external port: ARP for our external addresses, an EIP → its NIC, a NAT gateway's EIP → conntrack |
//! | 3 | [`table::EXT_NAT_IN`] | replies of translated connections → routed in; a DNAT rule's new connection → committed; anything else from outside → handed to the other gateways |
//! | 4 | [`table::EXT_DNAT`] | a DNAT-ed connection → routed in |
//! | 32 | [`table::EXT_OUT`] | a NIC with an EIP → source rewritten, out the external port; others → the NAT gateway's group |
//! | 45 | [`table::SNAT`] | on a gateway: the VPC's outbound packets → conntrack in the gateway's zone |
//! | 46 | [`table::SNAT_STATE`] | established → out; new → the SNAT rule's EIP (longest source prefix first) |
//! | 47 | [`table::EXT_EMIT`] | by EIP source: external MACs, out the external port |
//!
//! EIP translation is stateless (the NIC's connection state lives in its
//! own security-group zone, which sees the real addresses); a NAT gateway's
//! is stateful, in one conntrack zone per gateway.
//!
//! Gateway choice: compute nodes send a VPC's outbound packets to a
//! fast-failover group whose buckets are the tunnels to the gateway nodes in
//! rank order, each watching its tunnel's port. The tunnels run BFD, so a
//! dead gateway's port goes down in OVS and the group moves on with no
//! controller. A gateway node answers ARP for the NAT gateway's EIPs only
//! while it is the first gateway it sees alive ([`is_active`]), by the same
//! BFD view, and the agent announces them (gratuitous ARP) when that starts.
//! A gateway standing by ([`super::PortMap::standing_by`]: not ready, or
//! deferring to one that serves) tells its peers through BFD, so neither
//! compute nodes nor other gateways count it alive.
//!
//! Change-overs: every gateway of a NAT gateway takes inbound packets for
//! its EIPs (a neighbour's ARP cache may lag) and translates what compute
//! nodes send it; an inbound packet whose connection its conntrack does not
//! know is handed, over the tunnels, to the other gateways ([`handoff_mac`]),
//! and the one that knows it routes it in. So a drain or a return of a
//! gateway breaks no new connection.

use std::net::Ipv4Addr;

use openflow::flow::{ct_state, Action, CtNat, CtZone, Field, Flow, Match, NatRange};
use openflow::message::{Bucket, GroupMod, GroupModCommand, GroupType, OFPG_ANY};
use proto::{Eip, ExternalNetwork, L4Protocol, Mac, NatGateway, Nic, Vpc};

use super::{
    arp_reply_actions, cookie, flow, ip_value, mac_value, object_tag, priority, reg, set_field,
    table, userdata, Ctx, FlowExt, ObjectKind, ARP_REPLY, ARP_REQUEST, CONTROLLER_MAX_LEN,
    ETH_TYPE_ARP, ETH_TYPE_IPV4,
};

const IP_PROTO_TCP: u8 = 6;
const IP_PROTO_UDP: u8 = 17;

/// Flow priorities of the NAT tables.
mod prio {
    /// ROUTE: below every host route; a VPC's unknown address drops above it.
    pub const DEFAULT_ROUTE: u16 = 1;
    pub const VPC_UNKNOWN: u16 = 5;
    /// EXT_OUT: a packet that did not come from a local VM never leaves.
    pub const NOT_FROM_VM: u16 = 200;
    pub const EIP: u16 = 100;
    pub const GATEWAY: u16 = 50;
    /// SNAT_STATE: established first, then rules by source prefix length.
    pub const ESTABLISHED: u16 = 200;
    /// EXT_NAT_IN: below the DNAT rules, an unknown connection is handed
    /// to the other gateways.
    pub const HANDOFF: u16 = 10;
    pub const RULE_BASE: u16 = 100;
}

/// Whether this node is the gateway that owns `g`'s EIPs now: it serves,
/// it is ranked, and no gateway ranked above it is alive as far as its BFD
/// sessions tell (a gateway standing by looks down through BFD too).
pub(super) fn is_active(ctx: &Ctx<'_>, g: &NatGateway) -> bool {
    if ctx.ports.standing_by() {
        return false;
    }
    let me = ctx.state.node.name.as_str();
    for gw in &g.gateways {
        if gw == me {
            return true;
        }
        if ctx.ports.peer_alive(gw) {
            return false;
        }
    }
    false
}

/// The MAC a gateway puts on an inbound packet it could not place and hands
/// to the NAT gateway's other gateway nodes (see `gateway_flows`).
pub fn handoff_mac(g: &NatGateway) -> Mac {
    let mut m = g.mac.0;
    m[0] ^= 0x04;
    Mac(m)
}

/// Whether this node is one of `g`'s gateway nodes.
pub(super) fn is_gateway(ctx: &Ctx<'_>, g: &NatGateway) -> bool {
    g.gateways.contains(&ctx.state.node.name)
}

/// The group of a NAT gateway (a valid group id, never OFPG_ANY).
pub fn group_id(nat_gateway: &str) -> u32 {
    object_tag(ObjectKind::NatGateway, nat_gateway) & 0x7fff_ffff
}

/// The conntrack zone of a NAT gateway: above the NICs' zones (their
/// ofports) in practice; two gateways sharing one only share a table.
pub fn zone(nat_gateway: &str) -> u16 {
    // Masked to 12 bits, the cast cannot truncate.
    0xf000 | (object_tag(ObjectKind::NatGateway, nat_gateway) & 0x0fff) as u16
}

/// An external network this node can reach: its port and next hop.
struct Uplink {
    ofport: u32,
    /// `None` until the agent resolved the network's gateway.
    next_hop: Option<Mac>,
}

fn uplink(ctx: &Ctx<'_>, network_id: &str) -> Option<Uplink> {
    let net = ctx.state.external_networks.get(network_id)?;
    let ofport = ctx.ports.external(&net.physnet)?;
    Some(Uplink {
        ofport,
        next_hop: ctx.ports.next_hop(network_id),
    })
}

/// Every NAT flow of the node (none on a node with no external network and
/// no NAT gateway).
pub(super) fn flows(ctx: &Ctx<'_>, out: &mut Vec<Flow>) {
    if ctx.state.external_networks.is_empty() && ctx.state.nat_gateways.is_empty() {
        return;
    }
    let c = cookie(ctx.generation, 0);
    for t in [
        table::EXT_IN,
        table::EXT_NAT_IN,
        table::EXT_DNAT,
        table::EXT_OUT,
        table::SNAT,
        table::SNAT_STATE,
        table::EXT_EMIT,
    ] {
        out.push(flow(t, priority::DEFAULT, c, Match::new()));
    }
    out.push(flow(
        table::EXT_OUT,
        prio::NOT_FROM_VM,
        c,
        Match::new().reg(reg::IN_NIC, 0),
    ));
    for net in ctx.state.external_networks.values() {
        if let Some(ofport) = ctx.ports.external(&net.physnet) {
            uplink_flows(ctx, net, ofport, out);
        }
    }
    for eip in ctx.state.eips.values() {
        eip_flows(ctx, eip, out);
    }
    for g in ctx.state.nat_gateways.values() {
        let Some(vpc) = ctx.local_vpcs.get(g.vpc_id.as_str()) else {
            continue;
        };
        if is_gateway(ctx, g) {
            gateway_flows(ctx, vpc, g, out);
        }
        compute_flows(ctx, vpc, g, out);
    }
    for vpc in ctx.local_vpcs.values() {
        if has_way_out(ctx, vpc) {
            default_route(ctx, vpc, out);
        }
    }
}

/// Whether anything of the VPC can leave: a NAT gateway or a local EIP.
fn has_way_out(ctx: &Ctx<'_>, vpc: &Vpc) -> bool {
    ctx.state.nat_gateways.values().any(|g| g.vpc_id == vpc.id)
        || ctx
            .state
            .eips
            .values()
            .filter_map(|e| ctx.state.nics.get(&e.nic_id))
            .any(|n| n.vpc_id == vpc.id)
}

/// A local VM's packet to an address that is no NIC of the VPC: out, unless
/// it is inside one of the VPC's subnets (nobody there: dropped).
fn default_route(ctx: &Ctx<'_>, vpc: &Vpc, out: &mut Vec<Flow>) {
    let vni = u64::from(vpc.vni);
    let c = ctx.cookie(ObjectKind::Vpc, &vpc.id);
    out.push(
        flow(
            table::ROUTE,
            prio::DEFAULT_ROUTE,
            c,
            Match::new()
                .metadata(vni)
                .eth_type(ETH_TYPE_IPV4)
                .reg(reg::SRC, reg::SRC_LOCAL),
        )
        .actions(vec![Action::DecTtl])
        .goto(table::EXT_OUT),
    );
    for s in ctx.state.subnets.values().filter(|s| s.vpc_id == vpc.id) {
        out.push(flow(
            table::ROUTE,
            prio::VPC_UNKNOWN,
            ctx.cookie(ObjectKind::Subnet, &s.id),
            Match::new()
                .metadata(vni)
                .eth_type(ETH_TYPE_IPV4)
                .ipv4_dst_prefix(s.cidr.addr, s.cidr.len),
        ));
    }
}

/// The external port: classified, and its ARP replies sent up (the agent
/// resolves each network's gateway itself).
fn uplink_flows(ctx: &Ctx<'_>, net: &ExternalNetwork, ofport: u32, out: &mut Vec<Flow>) {
    let c = ctx.cookie(ObjectKind::ExternalNetwork, &net.id);
    out.push(
        flow(
            table::CLASSIFY,
            priority::OBJECT,
            c,
            Match::new().in_port(ofport),
        )
        .actions(vec![set_field(
            Field::Reg(reg::SRC),
            reg::SRC_EXTERNAL.into(),
        )])
        .goto(table::EXT_IN),
    );
    out.push(
        flow(
            table::EXT_IN,
            priority::OBJECT,
            c,
            Match::new()
                .in_port(ofport)
                .eth_type(ETH_TYPE_ARP)
                .arp_op(ARP_REPLY),
        )
        .actions(vec![Action::Controller {
            max_len: CONTROLLER_MAX_LEN,
            userdata: vec![userdata::ARP_REPLY],
        }]),
    );
}

/// Answers "who has `ip`" on the external port `ofport` with `mac`.
fn external_arp(c: u64, ofport: u32, ip: Ipv4Addr, mac: Mac) -> Flow {
    flow(
        table::EXT_IN,
        priority::OBJECT,
        c,
        Match::new()
            .in_port(ofport)
            .eth_type(ETH_TYPE_ARP)
            .arp_op(ARP_REQUEST)
            .arp_tpa(ip),
    )
    .actions(arp_reply_actions(ip, mac))
}

/// The meters of the node: two per local EIP with a bandwidth limit (in,
/// out), numbered from 1 in EIP id order, so they are the same after a
/// restart. (eip id, inbound meter, outbound meter, kbit/s).
pub fn meters(state: &proto::NodeState) -> Vec<(String, u32, u32, u32)> {
    let mut out = Vec::new();
    let mut next = 1u32;
    for eip in state.eips.values() {
        let local = state
            .nics
            .get(&eip.nic_id)
            .is_some_and(|n| n.node == state.node.name);
        if let (true, Some(kbps)) = (local, eip.rate_limit_kbps) {
            out.push((eip.id.clone(), next, next + 1, kbps));
            next += 2;
        }
    }
    out
}

/// The NIC an EIP is bound to, if it is local with a known VPC.
fn eip_nic<'a>(ctx: &Ctx<'a>, eip: &Eip) -> Option<(&'a Nic, &'a Vpc, u32)> {
    let nic = ctx.state.nics.get(&eip.nic_id)?;
    if !ctx.is_local(nic) {
        return None;
    }
    let vpc = ctx.local_vpcs.get(nic.vpc_id.as_str())?;
    let ofport = ctx.ports.nic(&nic.id)?;
    Some((nic, vpc, ofport))
}

/// 1:1 NAT of one EIP on the NIC's node.
fn eip_flows(ctx: &Ctx<'_>, eip: &Eip, out: &mut Vec<Flow>) {
    let Some(up) = uplink(ctx, &eip.external_network_id) else {
        return;
    };
    let Some((nic, vpc, nic_port)) = eip_nic(ctx, eip) else {
        return;
    };
    let Some(subnet) = ctx.state.subnets.get(&nic.subnet_id) else {
        return;
    };
    let vni = u64::from(vpc.vni);
    let c = ctx.cookie(ObjectKind::Eip, &eip.id);
    out.push(external_arp(c, up.ofport, eip.ip, eip.mac));
    let meters = ctx.ports.meter(&eip.id);
    // In: to the NIC, as if routed from the subnet's gateway.
    let mut inbound: Vec<Action> = meters.map(|(m, _)| Action::Meter(m)).into_iter().collect();
    inbound.extend([
        set_field(Field::Metadata, vni.into()),
        set_field(Field::Ipv4Dst, ip_value(nic.ip)),
        set_field(Field::EthSrc, mac_value(subnet.gateway_mac)),
        set_field(Field::EthDst, mac_value(nic.mac)),
        Action::DecTtl,
    ]);
    out.push(
        flow(
            table::EXT_IN,
            priority::OBJECT,
            c,
            Match::new()
                .in_port(up.ofport)
                .eth_type(ETH_TYPE_IPV4)
                .ipv4_dst(eip.ip),
        )
        .actions(inbound)
        .goto(table::L2_LOOKUP),
    );
    // Out: the NIC's own address (not its pairs') leaves as the EIP.
    let Some(next_hop) = up.next_hop else {
        return;
    };
    let mut outbound: Vec<Action> = meters.map(|(_, m)| Action::Meter(m)).into_iter().collect();
    outbound.extend([
        set_field(Field::Ipv4Src, ip_value(eip.ip)),
        set_field(Field::EthSrc, mac_value(eip.mac)),
        set_field(Field::EthDst, mac_value(next_hop)),
        Action::Output(up.ofport),
    ]);
    out.push(
        flow(
            table::EXT_OUT,
            prio::EIP,
            c,
            Match::new()
                .metadata(vni)
                .reg(reg::IN_NIC, nic_port)
                .eth_type(ETH_TYPE_IPV4)
                .ipv4_src(nic.ip),
        )
        .actions(outbound),
    );
}

/// A compute node's side of a NAT gateway: the VPC's outbound packets go to
/// the group that picks the first live gateway.
fn compute_flows(ctx: &Ctx<'_>, vpc: &Vpc, g: &NatGateway, out: &mut Vec<Flow>) {
    let vni = u64::from(vpc.vni);
    out.push(
        flow(
            table::EXT_OUT,
            prio::GATEWAY,
            ctx.cookie(ObjectKind::NatGateway, &g.id),
            Match::new().metadata(vni).eth_type(ETH_TYPE_IPV4),
        )
        .actions(vec![
            set_field(Field::EthDst, mac_value(g.mac)),
            Action::Group(group_id(&g.id)),
        ]),
    );
}

/// A gateway node's side: SNAT of what compute nodes send, and, while
/// active, the EIPs on the external port.
fn gateway_flows(ctx: &Ctx<'_>, vpc: &Vpc, g: &NatGateway, out: &mut Vec<Flow>) {
    let Some(up) = uplink(ctx, &g.external_network_id) else {
        return;
    };
    let vni = u64::from(vpc.vni);
    let c = ctx.cookie(ObjectKind::NatGateway, &g.id);
    let zone = CtZone::Imm(zone(&g.id));
    let vpc_ip = || Match::new().metadata(vni).eth_type(ETH_TYPE_IPV4);
    // From the VPC (a tunnel, or this node's own VMs through the group).
    out.push(
        flow(
            table::L2_LOOKUP,
            priority::OBJECT,
            c,
            Match::new().metadata(vni).eth_dst(g.mac),
        )
        .goto(table::SNAT),
    );
    out.push(
        flow(table::SNAT, priority::OBJECT, c, vpc_ip()).actions(vec![
            // A local sender's packet was tracked in its NIC's zone.
            Action::CtClear,
            Action::Ct {
                commit: false,
                zone,
                table: Some(table::SNAT_STATE),
                nat: Some(CtNat::Existing),
                actions: vec![],
            },
        ]),
    );
    for (state, mask) in [
        (ct_state::TRK | ct_state::EST, ct_state::INV),
        (ct_state::TRK | ct_state::REL, ct_state::INV),
    ] {
        out.push(
            flow(
                table::SNAT_STATE,
                prio::ESTABLISHED,
                c,
                vpc_ip().ct_state(state, mask),
            )
            .goto(table::EXT_EMIT),
        );
    }
    let eips: std::collections::BTreeSet<Ipv4Addr> = g.eips.iter().map(|e| e.ip).collect();
    for rule in &g.snat_rules {
        if !eips.contains(&rule.eip) {
            continue;
        }
        out.push(
            flow(
                table::SNAT_STATE,
                prio::RULE_BASE + u16::from(rule.source.len),
                c,
                vpc_ip()
                    .ct_state(ct_state::TRK | ct_state::NEW, ct_state::INV)
                    .ipv4_src_prefix(rule.source.addr, rule.source.len),
            )
            .actions(vec![Action::Ct {
                commit: true,
                zone,
                table: Some(table::EXT_EMIT),
                nat: Some(CtNat::Src(NatRange::addr(rule.eip))),
                actions: vec![],
            }]),
        );
    }
    if let Some(next_hop) = up.next_hop {
        for e in &g.eips {
            out.push(
                flow(
                    table::EXT_EMIT,
                    priority::OBJECT,
                    c,
                    vpc_ip().ipv4_src(e.ip),
                )
                .actions(vec![
                    set_field(Field::EthSrc, mac_value(e.mac)),
                    set_field(Field::EthDst, mac_value(next_hop)),
                    Action::DecTtl,
                    Action::Output(up.ofport),
                ]),
            );
        }
    }
    // Replies of this node's connections, whoever received them, are
    // routed into the VPC as if a local VM sent them, so the router's host
    // routes and the tunnels to the NICs' nodes apply.
    let route_in = || vec![set_field(Field::Reg(reg::SRC), reg::SRC_LOCAL.into())];
    for (state, mask) in [
        (ct_state::TRK | ct_state::EST, ct_state::INV),
        (ct_state::TRK | ct_state::REL, ct_state::INV),
    ] {
        out.push(
            flow(
                table::EXT_NAT_IN,
                prio::ESTABLISHED,
                c,
                vpc_ip().ct_state(state, mask),
            )
            .actions(route_in())
            .goto(table::ROUTE),
        );
    }
    // While the gateways change over (drain, return), a reply can reach
    // the gateway that did not translate its connection: the one that
    // receives it hands it over, and the others try their conntrack.
    out.push(
        flow(
            table::L2_LOOKUP,
            priority::OBJECT,
            c,
            vpc_ip()
                .eth_dst(handoff_mac(g))
                .reg(reg::SRC, reg::SRC_TUNNEL),
        )
        .actions(vec![Action::Ct {
            commit: false,
            zone,
            table: Some(table::EXT_NAT_IN),
            nat: Some(CtNat::Existing),
            actions: vec![],
        }]),
    );
    let others: Vec<u32> = g
        .gateways
        .iter()
        .filter(|n| **n != ctx.state.node.name && ctx.ports.peer_alive(n))
        .filter_map(|n| ctx.ports.tunnel(n))
        .collect();
    if !others.is_empty() {
        let mut handoff = vec![
            set_field(Field::EthDst, mac_value(handoff_mac(g))),
            set_field(Field::TunnelId, vni.into()),
        ];
        handoff.extend(others.into_iter().map(Action::Output));
        out.push(
            flow(
                table::EXT_NAT_IN,
                prio::HANDOFF,
                c,
                vpc_ip()
                    .reg(reg::SRC, reg::SRC_EXTERNAL)
                    .ct_state(ct_state::TRK | ct_state::NEW, ct_state::INV),
            )
            .actions(handoff),
        );
    }
    // Inbound: every gateway takes what reaches it (a neighbour's ARP cache
    // may still point at it), but only the active one answers ARP ...
    let active = is_active(ctx, g);
    for e in &g.eips {
        if active {
            out.push(external_arp(c, up.ofport, e.ip, e.mac));
        }
        out.push(
            flow(
                table::EXT_IN,
                priority::OBJECT,
                c,
                Match::new()
                    .in_port(up.ofport)
                    .eth_type(ETH_TYPE_IPV4)
                    .ipv4_dst(e.ip),
            )
            .actions(vec![
                set_field(Field::Metadata, vni.into()),
                Action::Ct {
                    commit: false,
                    zone,
                    table: Some(table::EXT_NAT_IN),
                    nat: Some(CtNat::Existing),
                    actions: vec![],
                },
            ]),
        );
    }
    // ... and opens new connections by DNAT rules.
    if !active {
        return;
    }
    for rule in &g.dnat_rules {
        if !eips.contains(&rule.eip) {
            continue;
        }
        let (proto, dst_field) = match rule.protocol {
            L4Protocol::Tcp => (IP_PROTO_TCP, Field::TcpDst),
            L4Protocol::Udp => (IP_PROTO_UDP, Field::UdpDst),
        };
        out.push(
            flow(
                table::EXT_NAT_IN,
                priority::OBJECT,
                c,
                vpc_ip()
                    .ct_state(ct_state::TRK | ct_state::NEW, ct_state::INV)
                    .ip_proto(proto)
                    .ipv4_dst(rule.eip)
                    .set(dst_field, rule.external_port.into()),
            )
            .actions(vec![Action::Ct {
                commit: true,
                zone,
                table: Some(table::EXT_DNAT),
                nat: Some(CtNat::Dst(NatRange {
                    addrs: Some((rule.internal_ip, rule.internal_ip)),
                    ports: Some((rule.internal_port, rule.internal_port)),
                    ..NatRange::default()
                })),
                actions: vec![],
            }]),
        );
    }
    out.push(
        flow(
            table::EXT_DNAT,
            priority::OBJECT,
            c,
            vpc_ip().ct_state(ct_state::TRK, ct_state::INV),
        )
        .actions(route_in())
        .goto(table::ROUTE),
    );
}

/// The fast-failover group of each NAT gateway of a local VPC: a bucket per
/// gateway node in rank order, watching the tunnel to it (BFD). This node's
/// own bucket, if it is a gateway, hands the packet to its SNAT stage while
/// its external port is up.
pub(super) fn groups(ctx: &Ctx<'_>) -> Vec<GroupMod> {
    let mut out = Vec::new();
    for g in ctx.state.nat_gateways.values() {
        let Some(vpc) = ctx.local_vpcs.get(g.vpc_id.as_str()) else {
            continue;
        };
        let vni = u64::from(vpc.vni);
        let buckets = g
            .gateways
            .iter()
            .filter_map(|gw| {
                if *gw == ctx.state.node.name {
                    // A fast-failover bucket must watch something: this
                    // node serves as long as its own uplink is up.
                    let uplink = uplink(ctx, &g.external_network_id)?;
                    return Some(Bucket {
                        weight: 0,
                        watch_port: uplink.ofport,
                        watch_group: OFPG_ANY,
                        actions: vec![Action::Resubmit {
                            table: table::L2_LOOKUP,
                        }],
                    });
                }
                let tunnel = ctx.ports.tunnel(gw)?;
                Some(Bucket {
                    weight: 0,
                    watch_port: tunnel,
                    watch_group: OFPG_ANY,
                    actions: vec![
                        set_field(Field::TunnelId, vni.into()),
                        Action::Output(tunnel),
                    ],
                })
            })
            .collect();
        out.push(GroupMod {
            command: GroupModCommand::AddOrModify,
            group_type: GroupType::FastFailover,
            group_id: group_id(&g.id),
            buckets,
        });
    }
    out.sort_by_key(|g| g.group_id);
    out.dedup_by_key(|g| g.group_id);
    out
}

/// The external addresses this node answers for now, by network: its
/// NICs' EIPs and the EIPs of the NAT gateways it is active for. The agent
/// resolves each network's gateway from one of them and announces new ones.
pub(super) fn announced(ctx: &Ctx<'_>) -> Vec<(String, Ipv4Addr, Mac)> {
    let mut out = Vec::new();
    for eip in ctx.state.eips.values() {
        if uplink(ctx, &eip.external_network_id).is_some() && eip_nic(ctx, eip).is_some() {
            out.push((eip.external_network_id.clone(), eip.ip, eip.mac));
        }
    }
    for g in ctx.state.nat_gateways.values() {
        let serving = ctx.local_vpcs.contains_key(g.vpc_id.as_str())
            && uplink(ctx, &g.external_network_id).is_some()
            && is_active(ctx, g);
        if serving {
            out.extend(
                g.eips
                    .iter()
                    .map(|e| (g.external_network_id.clone(), e.ip, e.mac)),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}
