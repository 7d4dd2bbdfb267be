//! Renders a node's desired state into OpenFlow flows.
//!
//! [`render`] is a pure function of the [`NodeState`], the [`PortMap`] (which
//! OVS port each local NIC and each tunnel got) and a generation number: the
//! same input always gives the same flows in the same order, so the agent can
//! diff the result against what is installed (see `reconcile`).
//!
//! # The pipeline on br-int
//!
//! br-int runs with `fail_mode=secure`: whatever no flow matches is dropped.
//! Every table still gets an explicit priority-0 flow so drops are counted and
//! show up in `ovs-ofctl dump-flows`.
//!
//! | table | name | what it does |
//! |---|---|---|
//! | 0  | [`table::CLASSIFY`] | local NIC port → metadata = VNI, `reg6` = ofport, `reg5` = local; tunnel port → `reg5` = tunnel |
//! | 1  | [`table::TUNNEL_CLASSIFY`] | tun_id of a VPC this node carries → metadata = VNI, straight to L2 (routing happened on the sender) |
//! | 10 | [`table::PORT_SECURITY`] | only the NIC's own MAC/IP (ARP sha/spa too), DHCP from 0.0.0.0; DHCP server replies from a VM dropped |
//! | 20 | [`table::SERVICES`] | ARP responder for every known address of the VPC, DHCP punted to the agent |
//! | 21-23 | [`table::EGRESS_CT`] … | security groups, egress: conntrack in the sender's zone, rules, verdict |
//! | 30 | [`table::ROUTER_MAC`] | IPv4 to a gateway MAC of the VPC → routing, anything else → L2 |
//! | 31 | [`table::ROUTE`] | distributed router: ipv4_dst of a NIC of the VPC → MACs rewritten, TTL decremented; pings to a gateway answered |
//! | 40 | [`table::L2_LOOKUP`] | (VPC, eth_dst) → local port, or tunnel to the NIC's node (only for local senders) |
//! | 41-44 | [`table::INGRESS_CT`] … | security groups, ingress: conntrack in the receiver's zone, rules, verdict, output |
//! | 50, 51 | [`table::SG_EGRESS`], [`table::SG_INGRESS`] | the rules of each group (resubmitted to per group of the NIC) |
//! | 2-4, 32, 45-47 | [`table::EXT_IN`] … | EIPs and NAT gateways ([`nat`]) |
//!
//! Port security and security groups are described in [`security`], the
//! way in and out of the cloud in [`nat`].
//!
//! The router forwards whatever a VM sends to a gateway MAC of its VPC toward
//! the NIC owning ipv4_dst, whichever subnet it is in (same-subnet traffic
//! sent to the gateway is routed too, as a router would). A NIC is known by
//! the VPC-wide L2 and ARP tables, as the data-path design says: the
//! receiving node needs only (VPC, MAC).
//!
//! Every lookup after classification is keyed by the metadata (the VNI), so
//! two VPCs with the same CIDRs, IPs and MACs stay apart. Flows scale with the
//! objects: a NIC of the VPC costs a constant number of flows on each node
//! that carries the VPC, never a flow per pair of NICs.
//!
//! # Cookies
//!
//! `owner:16 | generation:16 | object:32`. [`COOKIE_OWNER`] marks flows this
//! agent owns (reconciliation never deletes anybody else's), the generation
//! says which agent run wrote them, and the object tag ([`object_tag`]) lets
//! the agent find the flows of one NIC, subnet, VPC or peer with a cookie mask
//! ([`object_cookie_match`]). Shared flows use object tag 0.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

mod incremental;
pub mod nat;
pub mod security;

pub use incremental::{IncrementalRenderer, Scope};

use openflow::flow::{port, Action, Field, Flow, Match};
use proto::{Mac, Nic, NodeState, Subnet, Vpc};

/// The tables, in the order a packet from a VM walks them. Gaps are left for
/// stages that come later (security groups, NAT, load balancing).
pub mod table {
    /// Entry table: where did the packet come from?
    pub const CLASSIFY: u8 = 0;
    /// Packets from a tunnel: which VPC (by tun_id)?
    pub const TUNNEL_CLASSIFY: u8 = 1;
    /// Anti-spoofing for packets from local VMs.
    pub const PORT_SECURITY: u8 = 10;
    /// ARP responder and DHCP punt.
    pub const SERVICES: u8 = 20;
    /// Security groups, egress: tracks the packet in the sender's zone.
    pub const EGRESS_CT: u8 = 21;
    /// ... judges it by the sender's groups ...
    pub const EGRESS_STATE: u8 = 22;
    /// ... and passes it on only if a rule allowed it.
    pub const EGRESS_VERDICT: u8 = 23;
    /// Is the packet addressed to the distributed router?
    pub const ROUTER_MAC: u8 = 30;
    /// The distributed router's host routes.
    pub const ROUTE: u8 = 31;
    /// Delivery by (VPC, eth_dst).
    pub const L2_LOOKUP: u8 = 40;
    /// Security groups, ingress: tracks the packet in the receiver's zone.
    pub const INGRESS_CT: u8 = 41;
    /// ... judges it by the receiver's groups ...
    pub const INGRESS_STATE: u8 = 42;
    /// ... and passes it on only if a rule allowed it ...
    pub const INGRESS_VERDICT: u8 = 43;
    /// ... to the port in `reg7`.
    pub const DELIVER: u8 = 44;
    /// The egress rules of every group (by `reg8`), resubmitted to.
    pub const SG_EGRESS: u8 = 50;
    /// The ingress rules of every group (by `reg8`), resubmitted to.
    pub const SG_INGRESS: u8 = 51;
    /// From an external port (numbered low: it hands packets on to the
    /// router and delivery, and a goto only goes forward).
    pub const EXT_IN: u8 = 2;
    /// ... a NAT gateway's EIP, after conntrack.
    pub const EXT_NAT_IN: u8 = 3;
    /// ... a new DNAT-ed connection, after its commit.
    pub const EXT_DNAT: u8 = 4;
    /// A local VM's packet leaving the VPC, after the router.
    pub const EXT_OUT: u8 = 32;
    /// On a gateway node: a VPC's packet to its NAT gateway ...
    pub const SNAT: u8 = 45;
    /// ... after conntrack ...
    pub const SNAT_STATE: u8 = 46;
    /// ... translated, out of the external port.
    pub const EXT_EMIT: u8 = 47;
}

/// Registers the pipeline uses (Nicira `reg0`..`reg15`).
pub mod reg {
    /// `reg5`: where the packet entered br-int, one of the `SRC_*` values.
    pub const SRC: u8 = 5;
    /// Entered from a local NIC.
    pub const SRC_LOCAL: u32 = 1;
    /// Entered from a VXLAN tunnel.
    pub const SRC_TUNNEL: u32 = 2;
    /// Entered from an external network's port.
    pub const SRC_EXTERNAL: u32 = 3;
    /// `reg6`: ofport of the local NIC the packet came from (unset from a tunnel).
    pub const IN_NIC: u8 = 6;
    /// `reg7`: ofport of the local NIC a packet is being delivered to.
    pub const OUT_NIC: u8 = 7;
    /// `reg8`: tag of the security group whose rules are being evaluated.
    pub const SG: u8 = 8;
    /// `reg9`: the security verdict; [`VERDICT_ALLOW`] once a rule allowed.
    pub const VERDICT: u8 = 9;
    pub const VERDICT_ALLOW: u32 = 1;
    /// `reg10`: the conntrack zone of the stage (the NIC's ofport).
    pub const ZONE: u8 = 10;
}

/// Flow priorities within a table.
pub mod priority {
    /// The table-miss flow of every table.
    pub const DEFAULT: u16 = 0;
    /// ARP nobody answered: dropped, never flooded.
    pub const ARP_UNKNOWN: u16 = 10;
    /// Per-object flows.
    pub const OBJECT: u16 = 100;
    /// A NIC asking about its own address (gratuitous ARP) gets no answer.
    pub const ARP_SELF: u16 = 110;
    /// Echo requests to a gateway IP, above the host routes (a NIC wrongly
    /// holding the gateway's IP must not take its pings).
    pub const GATEWAY_ECHO: u16 = 110;
    /// DHCP server traffic from a VM, above every allow rule.
    pub const DHCP_SERVER_DROP: u16 = 300;
}

/// `userdata` of the packet-ins the pipeline sends, so the agent knows why a
/// packet came up without parsing it first.
pub mod userdata {
    /// A DHCP client packet (udp 68→67) from a local NIC.
    pub const DHCP: u8 = 1;
    /// An ARP reply on an external port (the agent resolves next hops).
    pub const ARP_REPLY: u8 = 2;
}

/// The owner tag in the top 16 bits of every cookie this agent writes ("SN").
pub const COOKIE_OWNER: u16 = 0x534e;
/// Selects the owner tag of a cookie.
pub const COOKIE_OWNER_MASK: u64 = 0xffff_0000_0000_0000;
/// Selects the generation of a cookie.
pub const COOKIE_GENERATION_MASK: u64 = 0x0000_ffff_0000_0000;
/// Selects the object tag of a cookie.
pub const COOKIE_OBJECT_MASK: u64 = 0x0000_0000_ffff_ffff;

const ETH_TYPE_IPV4: u16 = 0x0800;
const ETH_TYPE_ARP: u16 = 0x0806;
const IP_PROTO_ICMP: u8 = 1;
const IP_PROTO_UDP: u8 = 17;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// Largest VNI: VXLAN carries 24 bits.
const VNI_MAX: u32 = 0x00ff_ffff;
/// Highest ofport a real port can have (OFPP_MAX).
const OFPORT_MAX: u32 = 0xffff_ff00;
/// `max_len` for packet-ins: the whole packet, never buffered in the switch.
const CONTROLLER_MAX_LEN: u16 = u16::MAX;

/// The kind of object a cookie's object tag refers to. The kind is hashed
/// with the id so a NIC and a subnet with the same id get different tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Vpc,
    Subnet,
    Nic,
    Peer,
    SecurityGroup,
    ExternalNetwork,
    Eip,
    NatGateway,
}

impl ObjectKind {
    fn prefix(self) -> &'static [u8] {
        match self {
            ObjectKind::Vpc => b"vpc/",
            ObjectKind::Subnet => b"subnet/",
            ObjectKind::Nic => b"nic/",
            ObjectKind::Peer => b"peer/",
            ObjectKind::SecurityGroup => b"sg/",
            ObjectKind::ExternalNetwork => b"extnet/",
            ObjectKind::Eip => b"eip/",
            ObjectKind::NatGateway => b"natgw/",
        }
    }
}

/// The 32-bit tag of an object in the cookie: FNV-1a of kind and id, so it is
/// stable across runs and builds. Never 0 (0 marks the shared flows).
pub fn object_tag(kind: ObjectKind, id: &str) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let hash = kind
        .prefix()
        .iter()
        .chain(id.as_bytes())
        .fold(OFFSET, |h, b| (h ^ u32::from(*b)).wrapping_mul(PRIME));
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// The cookie of a flow written by this agent in `generation` for the object
/// with tag `object` (0 for shared flows).
pub fn cookie(generation: u16, object: u32) -> u64 {
    (u64::from(COOKIE_OWNER) << 48) | (u64::from(generation) << 32) | u64::from(object)
}

/// Whether a cookie carries this agent's owner tag.
pub fn is_ours(cookie: u64) -> bool {
    cookie & COOKIE_OWNER_MASK == u64::from(COOKIE_OWNER) << 48
}

/// The generation stored in a cookie.
pub fn cookie_generation(cookie: u64) -> u16 {
    // The mask leaves 16 bits, the cast cannot truncate.
    ((cookie & COOKIE_GENERATION_MASK) >> 32) as u16
}

/// The object tag stored in a cookie.
pub fn cookie_object(cookie: u64) -> u32 {
    // The mask leaves 32 bits, the cast cannot truncate.
    (cookie & COOKIE_OBJECT_MASK) as u32
}

/// `(cookie, cookie_mask)` selecting every flow this agent owns, of any
/// generation, for dumping only ours.
pub fn owner_cookie_match() -> (u64, u64) {
    (cookie(0, 0), COOKIE_OWNER_MASK)
}

/// `(cookie, cookie_mask)` selecting every flow of one object in any
/// generation, for a flow-stats request or a non-strict delete.
pub fn object_cookie_match(kind: ObjectKind, id: &str) -> (u64, u64) {
    (
        cookie(0, object_tag(kind, id)),
        COOKIE_OWNER_MASK | COOKIE_OBJECT_MASK,
    )
}

/// The OVS ports the pipeline may use: the ofport of each local NIC (keyed by
/// the NIC id, OVS `external_ids:iface-id`) and of the VXLAN port to each peer
/// node (keyed by node name). Anything absent gets no flow that would output
/// to it or match on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortMap {
    nics: BTreeMap<String, u32>,
    tunnels: BTreeMap<String, u32>,
    by_port: BTreeMap<u32, String>,
    /// Physical network → the ofport of its external port.
    externals: BTreeMap<String, u32>,
    /// External network id → the MAC of its gateway, once resolved.
    next_hops: BTreeMap<String, Mac>,
    /// Peers whose tunnel's BFD says the path is down.
    dead_peers: BTreeSet<String>,
    /// EIP id → the meters limiting it (inbound, outbound).
    meters: BTreeMap<String, (u32, u32)>,
    /// This node, as a gateway node, does not take NAT gateway traffic (not
    /// ready yet, or deferring to a gateway that serves).
    standing_by: bool,
}

impl PortMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the ofport of a NIC. OVS reports -1 (`u32::MAX`) or 0 for a
    /// port it could not create; such values, and the reserved range, count
    /// as no port.
    pub fn set_nic(&mut self, nic_id: &str, ofport: u32) {
        self.remove_nic(nic_id);
        if valid_ofport(ofport) {
            self.nics.insert(nic_id.to_string(), ofport);
            self.by_port.insert(ofport, nic_id.to_string());
        }
    }

    pub fn remove_nic(&mut self, nic_id: &str) {
        if let Some(old) = self.nics.remove(nic_id) {
            self.by_port.remove(&old);
        }
    }

    /// Records the ofport of the tunnel to `node`.
    pub fn set_tunnel(&mut self, node: &str, ofport: u32) {
        if valid_ofport(ofport) {
            self.tunnels.insert(node.to_string(), ofport);
        } else {
            self.tunnels.remove(node);
        }
    }

    pub fn remove_tunnel(&mut self, node: &str) {
        self.tunnels.remove(node);
    }

    /// Builder form of [`PortMap::set_nic`].
    pub fn with_nic(mut self, nic_id: &str, ofport: u32) -> Self {
        self.set_nic(nic_id, ofport);
        self
    }

    /// Builder form of [`PortMap::set_tunnel`].
    pub fn with_tunnel(mut self, node: &str, ofport: u32) -> Self {
        self.set_tunnel(node, ofport);
        self
    }

    pub fn nic(&self, nic_id: &str) -> Option<u32> {
        self.nics.get(nic_id).copied()
    }

    pub fn tunnel(&self, node: &str) -> Option<u32> {
        self.tunnels.get(node).copied()
    }

    /// The NIC plugged into `ofport`, to attribute a packet-in.
    pub fn nic_at(&self, ofport: u32) -> Option<&str> {
        self.by_port.get(&ofport).map(String::as_str)
    }

    pub fn nics(&self) -> impl Iterator<Item = (&str, u32)> {
        self.nics.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn tunnels(&self) -> impl Iterator<Item = (&str, u32)> {
        self.tunnels.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Records the ofport of the external port of `physnet`.
    pub fn set_external(&mut self, physnet: &str, ofport: u32) {
        if valid_ofport(ofport) {
            self.externals.insert(physnet.to_string(), ofport);
        }
    }

    pub fn external(&self, physnet: &str) -> Option<u32> {
        self.externals.get(physnet).copied()
    }

    /// Records the resolved MAC of external network `network_id`'s gateway.
    pub fn set_next_hop(&mut self, network_id: &str, mac: Mac) {
        self.next_hops.insert(network_id.to_string(), mac);
    }

    pub fn next_hop(&self, network_id: &str) -> Option<Mac> {
        self.next_hops.get(network_id).copied()
    }

    /// Records that BFD on the tunnel to `node` says it is down.
    pub fn set_peer_down(&mut self, node: &str) {
        self.dead_peers.insert(node.to_string());
    }

    /// Whether `node` is reachable: its tunnel exists and BFD, if it runs,
    /// does not say otherwise.
    pub fn peer_alive(&self, node: &str) -> bool {
        self.tunnels.contains_key(node) && !self.dead_peers.contains(node)
    }

    /// Records whether this node holds back from serving as a gateway.
    pub fn set_standing_by(&mut self, standing_by: bool) {
        self.standing_by = standing_by;
    }

    pub fn standing_by(&self) -> bool {
        self.standing_by
    }

    /// Records the meters that limit EIP `eip_id` (inbound, outbound).
    pub fn set_meters(&mut self, eip_id: &str, inbound: u32, outbound: u32) {
        self.meters.insert(eip_id.to_string(), (inbound, outbound));
    }

    pub fn meter(&self, eip_id: &str) -> Option<(u32, u32)> {
        self.meters.get(eip_id).copied()
    }
}

fn valid_ofport(ofport: u32) -> bool {
    ofport != 0 && ofport < OFPORT_MAX
}

/// Renders the complete flow table of br-int for `state`.
///
/// Flows come out sorted by (table, descending priority, match) with unique
/// keys. A VPC without a local NIC renders nothing; a node without any local
/// NIC renders no flow at all.
pub fn render(state: &NodeState, ports: &PortMap, generation: u16) -> Vec<Flow> {
    let ctx = Ctx::new(state, ports, generation);
    let mut out = Vec::new();
    if ctx.local_vpcs.is_empty() {
        return out;
    }
    shared_flows(&ctx, &mut out);
    security::all_group_flows(&ctx, &mut out);
    for nic in state.nics.values() {
        if let Some(vpc) = ctx.local_vpcs.get(nic.vpc_id.as_str()) {
            nic_flows(&ctx, vpc, nic, &mut out);
        }
    }
    finish(out)
}

/// Every flow that is not one NIC's or one security group's: the fixed
/// tables, and the flows of the node's VPCs, their subnets and the peers.
/// Small: it grows with subnets and nodes, not with NICs.
fn shared_flows(ctx: &Ctx<'_>, out: &mut Vec<Flow>) {
    let state = ctx.state;
    base_flows(ctx.generation, out);
    for vpc in ctx.local_vpcs.values() {
        vpc_flows(ctx, vpc, out);
    }
    // Gateways before NICs: if a NIC claims a gateway's IP, the gateway's
    // ARP entry is the one that survives deduplication.
    for subnet in state.subnets.values() {
        if let Some(vpc) = ctx.local_vpcs.get(subnet.vpc_id.as_str()) {
            subnet_flows(ctx, vpc, subnet, out);
        }
    }
    for peer in state.peers.values() {
        if peer.node != state.node.name {
            peer_flows(ctx, &peer.node, out);
        }
    }
    security::stage_flows(ctx, out);
    nat::flows(ctx, out);
}

/// The OpenFlow groups the flows of [`render`] use (NAT gateway choice),
/// sorted by id.
pub fn render_groups(state: &NodeState, ports: &PortMap) -> Vec<openflow::message::GroupMod> {
    // Every sync asks; most nodes have no NAT gateway, and a context costs
    // a walk over the node's NICs.
    if state.nat_gateways.is_empty() {
        return Vec::new();
    }
    let ctx = Ctx::new(state, ports, 0);
    nat::groups(&ctx)
}

/// The external addresses the node answers for: (network id, ip, mac).
pub fn announced_addresses(state: &NodeState, ports: &PortMap) -> Vec<(String, Ipv4Addr, Mac)> {
    if state.external_networks.is_empty() {
        return Vec::new();
    }
    let ctx = Ctx::new(state, ports, 0);
    nat::announced(&ctx)
}

pub fn render_nic(state: &NodeState, ports: &PortMap, generation: u16, nic_id: &str) -> Vec<Flow> {
    let ctx = Ctx::new(state, ports, generation);
    let mut out = Vec::new();
    if let Some(nic) = state.nics.get(nic_id) {
        if let Some(vpc) = ctx.local_vpcs.get(nic.vpc_id.as_str()) {
            nic_flows(&ctx, vpc, nic, &mut out);
        }
    }
    finish(out)
}

/// What every rendering step needs to look up.
struct Ctx<'a> {
    state: &'a NodeState,
    ports: &'a PortMap,
    generation: u16,
    /// VPCs with at least one NIC on this node and a valid VNI.
    local_vpcs: BTreeMap<&'a str, &'a Vpc>,
}

impl<'a> Ctx<'a> {
    fn new(state: &'a NodeState, ports: &'a PortMap, generation: u16) -> Self {
        let mut local_vpcs = BTreeMap::new();
        // A gateway node carries the VPCs of its NAT gateways like a node
        // with NICs there: it routes their inbound traffic.
        let me = state.node.name.as_str();
        let gateway_vpcs = state
            .nat_gateways
            .values()
            .filter(|g| g.gateways.iter().any(|n| n == me))
            .map(|g| (g.id.as_str(), g.vpc_id.as_str()));
        let nic_vpcs = state
            .local_nics()
            .map(|nic| (nic.id.as_str(), nic.vpc_id.as_str()));
        for (owner, vpc_id) in nic_vpcs.chain(gateway_vpcs) {
            let Some(vpc) = state.vpcs.get(vpc_id) else {
                tracing::warn!(owner, vpc = vpc_id, "local object of an unknown VPC");
                continue;
            };
            if vpc.vni > VNI_MAX {
                tracing::warn!(vpc = %vpc.id, vni = vpc.vni, "VNI does not fit in 24 bits");
                continue;
            }
            local_vpcs.insert(vpc.id.as_str(), vpc);
        }
        Self {
            state,
            ports,
            generation,
            local_vpcs,
        }
    }

    fn is_local(&self, nic: &Nic) -> bool {
        nic.node == self.state.node.name
    }

    fn cookie(&self, kind: ObjectKind, id: &str) -> u64 {
        cookie(self.generation, object_tag(kind, id))
    }
}

fn flow(table: u8, priority: u16, cookie: u64, matches: Match) -> Flow {
    Flow {
        table,
        priority,
        cookie,
        matches,
        actions: Vec::new(),
        goto_table: None,
    }
}

trait FlowExt {
    fn actions(self, actions: Vec<Action>) -> Self;
    fn goto(self, table: u8) -> Self;
}

impl FlowExt for Flow {
    fn actions(mut self, actions: Vec<Action>) -> Self {
        self.actions = actions;
        self
    }
    fn goto(mut self, table: u8) -> Self {
        self.goto_table = Some(table);
        self
    }
}

fn set_field(field: Field, value: u128) -> Action {
    Action::SetField { field, value }
}

fn mac_value(mac: Mac) -> u128 {
    openflow::flow::mac_bits(mac)
}

fn ip_value(ip: Ipv4Addr) -> u128 {
    u128::from(u32::from(ip))
}

/// Flows that do not depend on any object: table misses and the DHCP punt
/// (the DHCP-server guard is per NIC: port security off lifts it).
fn base_flows(generation: u16, out: &mut Vec<Flow>) {
    let c = cookie(generation, 0);
    let drop = |t| flow(t, priority::DEFAULT, c, Match::new());
    out.push(drop(table::CLASSIFY));
    out.push(drop(table::TUNNEL_CLASSIFY));
    out.push(drop(table::PORT_SECURITY));
    out.push(
        flow(
            table::SERVICES,
            priority::OBJECT,
            c,
            Match::new()
                .eth_type(ETH_TYPE_IPV4)
                .ip_proto(IP_PROTO_UDP)
                .udp_src(DHCP_CLIENT_PORT)
                .udp_dst(DHCP_SERVER_PORT),
        )
        .actions(vec![Action::Controller {
            max_len: CONTROLLER_MAX_LEN,
            userdata: vec![userdata::DHCP],
        }]),
    );
    out.push(flow(
        table::SERVICES,
        priority::ARP_UNKNOWN,
        c,
        Match::new().eth_type(ETH_TYPE_ARP),
    ));
    out.push(flow(table::SERVICES, priority::DEFAULT, c, Match::new()).goto(table::EGRESS_CT));
    out.push(flow(table::ROUTER_MAC, priority::DEFAULT, c, Match::new()).goto(table::L2_LOOKUP));
    out.push(drop(table::ROUTE));
    out.push(drop(table::L2_LOOKUP));
}

/// Accepts the VPC's VNI from any tunnel.
fn vpc_flows(ctx: &Ctx<'_>, vpc: &Vpc, out: &mut Vec<Flow>) {
    let vni = u64::from(vpc.vni);
    out.push(
        flow(
            table::TUNNEL_CLASSIFY,
            priority::OBJECT,
            ctx.cookie(ObjectKind::Vpc, &vpc.id),
            Match::new().tunnel_id(vni),
        )
        .actions(vec![set_field(Field::Metadata, vni.into())])
        .goto(table::L2_LOOKUP),
    );
}

/// The gateway of a subnet: ARP answer, router MAC and echo reply.
fn subnet_flows(ctx: &Ctx<'_>, vpc: &Vpc, subnet: &Subnet, out: &mut Vec<Flow>) {
    let vni = u64::from(vpc.vni);
    let c = ctx.cookie(ObjectKind::Subnet, &subnet.id);
    out.push(arp_responder(c, vni, subnet.gateway_ip, subnet.gateway_mac));
    // Pinging the gateway is the first thing anyone checks; answer it here
    // by turning the request around (OVS fixes the ICMP and IP checksums).
    out.push(
        flow(
            table::ROUTE,
            priority::GATEWAY_ECHO,
            c,
            Match::new()
                .metadata(vni)
                .eth_type(ETH_TYPE_IPV4)
                .ip_proto(IP_PROTO_ICMP)
                .set(Field::IcmpType, ICMP_ECHO_REQUEST.into())
                .ipv4_dst(subnet.gateway_ip),
        )
        .actions(vec![
            Action::Move {
                src: Field::EthSrc,
                src_ofs: 0,
                dst: Field::EthDst,
                dst_ofs: 0,
                n_bits: 48,
            },
            set_field(Field::EthSrc, mac_value(subnet.gateway_mac)),
            Action::Move {
                src: Field::Ipv4Src,
                src_ofs: 0,
                dst: Field::Ipv4Dst,
                dst_ofs: 0,
                n_bits: 32,
            },
            set_field(Field::Ipv4Src, ip_value(subnet.gateway_ip)),
            set_field(Field::IcmpType, ICMP_ECHO_REPLY.into()),
            Action::Output(port::IN_PORT),
        ]),
    );
    out.push(
        flow(
            table::ROUTER_MAC,
            priority::OBJECT,
            c,
            Match::new()
                .metadata(vni)
                .eth_dst(subnet.gateway_mac)
                .eth_type(ETH_TYPE_IPV4),
        )
        .goto(table::ROUTE),
    );
}

/// Traffic arriving on the tunnel from `node`.
fn peer_flows(ctx: &Ctx<'_>, node: &str, out: &mut Vec<Flow>) {
    let Some(ofport) = ctx.ports.tunnel(node) else {
        return;
    };
    out.push(
        flow(
            table::CLASSIFY,
            priority::OBJECT,
            ctx.cookie(ObjectKind::Peer, node),
            Match::new().in_port(ofport),
        )
        .actions(vec![set_field(
            Field::Reg(reg::SRC),
            reg::SRC_TUNNEL.into(),
        )])
        .goto(table::TUNNEL_CLASSIFY),
    );
}

/// A NIC of a VPC this node carries: its address entries everywhere, its
/// port's flows if it is local and plugged, its tunnel if it is remote.
fn nic_flows(ctx: &Ctx<'_>, vpc: &Vpc, nic: &Nic, out: &mut Vec<Flow>) {
    let vni = u64::from(vpc.vni);
    let c = ctx.cookie(ObjectKind::Nic, &nic.id);
    if ctx.is_local(nic) {
        if let Some(ofport) = ctx.ports.nic(&nic.id) {
            local_port_flows(c, vni, nic, ofport, out);
        }
    } else if let Some(tunnel) = ctx.ports.tunnel(&nic.node) {
        // Only what a local VM sent may leave through a tunnel: a packet
        // that came from one is never sent back out of another.
        let macs = std::iter::once((priority::OBJECT, nic.mac)).chain(
            security::pair_macs(nic)
                .into_iter()
                .map(|m| (security::sg_priority::PAIR, m)),
        );
        for (prio, mac) in macs {
            out.push(
                flow(
                    table::L2_LOOKUP,
                    prio,
                    c,
                    Match::new()
                        .metadata(vni)
                        .eth_dst(mac)
                        .reg(reg::SRC, reg::SRC_LOCAL),
                )
                .actions(vec![
                    set_field(Field::TunnelId, vni.into()),
                    Action::Output(tunnel),
                ]),
            );
        }
    }
    // A pair's single addresses are answered and routed too, below any
    // NIC's own address: a pair never takes over another NIC's address.
    let hosts = std::iter::once((priority::OBJECT, nic.ip, nic.mac)).chain(
        security::pair_hosts(nic)
            .into_iter()
            .map(|(ip, mac)| (security::sg_priority::PAIR, ip, mac)),
    );
    for (prio, ip, mac) in hosts {
        let mut arp = arp_responder(c, vni, ip, mac);
        arp.priority = prio;
        out.push(arp);
        match ctx.state.subnets.get(&nic.subnet_id) {
            Some(subnet) if subnet.vpc_id == nic.vpc_id => out.push(
                flow(
                    table::ROUTE,
                    prio,
                    c,
                    Match::new()
                        .metadata(vni)
                        .eth_type(ETH_TYPE_IPV4)
                        .ipv4_dst(ip),
                )
                .actions(vec![
                    set_field(Field::EthSrc, mac_value(subnet.gateway_mac)),
                    set_field(Field::EthDst, mac_value(mac)),
                    Action::DecTtl,
                ])
                .goto(table::L2_LOOKUP),
            ),
            _ => {
                tracing::debug!(nic = %nic.id, subnet = %nic.subnet_id, "NIC without its subnet: not routable");
            }
        }
    }
}

fn local_port_flows(c: u64, vni: u64, nic: &Nic, ofport: u32, out: &mut Vec<Flow>) {
    out.push(
        flow(
            table::CLASSIFY,
            priority::OBJECT,
            c,
            Match::new().in_port(ofport),
        )
        .actions(vec![
            set_field(Field::Metadata, vni.into()),
            set_field(Field::Reg(reg::IN_NIC), ofport.into()),
            set_field(Field::Reg(reg::SRC), reg::SRC_LOCAL.into()),
        ])
        .goto(table::PORT_SECURITY),
    );
    security::local_nic_flows(c, vni, nic, ofport, out);
    out.push(flow(
        table::SERVICES,
        priority::ARP_SELF,
        c,
        Match::new()
            .in_port(ofport)
            .eth_type(ETH_TYPE_ARP)
            .arp_tpa(nic.ip),
    ));
}

/// Answers "who has `ip`" in the VPC with `mac`, back out of the asking port.
fn arp_responder(c: u64, vni: u64, ip: Ipv4Addr, mac: Mac) -> Flow {
    flow(
        table::SERVICES,
        priority::OBJECT,
        c,
        Match::new()
            .metadata(vni)
            .eth_type(ETH_TYPE_ARP)
            .arp_op(ARP_REQUEST)
            .arp_tpa(ip),
    )
    .actions(arp_reply_actions(ip, mac))
}

/// Turns an ARP request for `ip` into the reply "`ip` is at `mac`", sent
/// back out of the port it came in on.
fn arp_reply_actions(ip: Ipv4Addr, mac: Mac) -> Vec<Action> {
    vec![
        Action::Move {
            src: Field::EthSrc,
            src_ofs: 0,
            dst: Field::EthDst,
            dst_ofs: 0,
            n_bits: 48,
        },
        set_field(Field::EthSrc, mac_value(mac)),
        set_field(Field::ArpOp, ARP_REPLY.into()),
        Action::Move {
            src: Field::ArpSha,
            src_ofs: 0,
            dst: Field::ArpTha,
            dst_ofs: 0,
            n_bits: 48,
        },
        set_field(Field::ArpSha, mac_value(mac)),
        Action::Move {
            src: Field::ArpSpa,
            src_ofs: 0,
            dst: Field::ArpTpa,
            dst_ofs: 0,
            n_bits: 32,
        },
        set_field(Field::ArpSpa, ip_value(ip)),
        Action::Output(port::IN_PORT),
    ]
}

/// Sorts into the canonical order and drops later flows with an already
/// rendered key (two objects claiming the same address): the first one, in
/// rendering order, wins.
fn finish(mut flows: Vec<Flow>) -> Vec<Flow> {
    // Stable sort: among equal keys, rendering order is kept.
    flows.sort_by(|a, b| {
        a.table
            .cmp(&b.table)
            .then(b.priority.cmp(&a.priority))
            .then_with(|| a.matches.cmp(&b.matches))
    });
    flows.dedup_by(|later, kept| {
        let same = later.table == kept.table
            && later.priority == kept.priority
            && later.matches == kept.matches;
        if same && (later.actions != kept.actions || later.goto_table != kept.goto_table) {
            tracing::warn!(
                table = later.table,
                priority = later.priority,
                kept = format_args!("{:#x}", kept.cookie),
                dropped = format_args!("{:#x}", later.cookie),
                "two objects claim the same flow; keeping the first"
            );
        }
        same
    });
    flows
}

#[cfg(test)]
mod tests;
