//! Per-node compilation: the logical model in memory and the part of it each
//! node needs, kept current one store event at a time.
//!
//! A node gets a VPC only when at least one NIC of that VPC is bound to it;
//! then it gets the VPC, all its subnets, all its NICs that are bound to some
//! node, all its security groups, and a peer entry for every other node
//! hosting one of those NICs. A group's members are the NICs naming it, so
//! a rule change reaches exactly the nodes carrying the group's VPC.
//!
//! A NAT gateway of a VPC ranks gateway nodes (see
//! [`model::gateway_ranking`]); each ranked node carries the whole VPC too
//! (it delivers inbound traffic), and the tunnels between a gateway node
//! and the other carriers of the VPC run BFD. External networks go to the
//! nodes they list; an EIP goes to the node hosting the NIC it is bound to,
//! if that node is attached to the EIP's network.
//!
//! Incremental updates never recompile whole nodes for tenant changes: an event marks the
//! objects it can have changed ("dirty keys") on the nodes it concerns, found
//! through per-VPC indexes, and only those objects are recomputed and diffed.
//! [`compile_node`] is the reference (full) compilation; a property test
//! checks that the incremental path always agrees with it.
//!
//! This module is pure: store records in, per-node changes out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use api::model::{self, keys};
use api::store::{EventKind, KeyValue, WatchEvent};
use proto::{Change, Ipv4Prefix, NodeInfo, NodeState, Object, ObjectKey, Revision};
use serde::de::DeserializeOwned;

/// An `ipnet::Ipv4Net` (not a dependency here) as the protocol's prefix.
macro_rules! prefix {
    ($net:expr) => {{
        let net = $net;
        Ipv4Prefix {
            addr: net.network(),
            len: net.prefix_len(),
        }
    }};
}

/// The DHCP lease offered to VMs.
pub const LEASE_SECS: u32 = 86_400;

/// What a store key holds, for the keys flowctl cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind<'a> {
    Node(&'a str),
    Vpc(&'a str),
    Subnet(&'a str),
    Nic(&'a str),
    NicStatus(&'a str),
    SecurityGroup(&'a str),
    ExternalNetwork(&'a str),
    Eip(&'a str),
    NatGateway(&'a str),
    /// An asynchronous operation: not compiled, kept so acks can advance it.
    Operation(&'a str),
}

/// Classifies a store key; `None` for keys outside the model (indexes,
/// anything nested deeper than `<kind>/<id>`).
pub fn classify(key: &str) -> Option<KeyKind<'_>> {
    let id = |prefix: &str| {
        key.strip_prefix(prefix)
            .filter(|id| !id.is_empty() && !id.contains('/'))
    };
    if let Some(id) = id(keys::NIC_STATUS) {
        return Some(KeyKind::NicStatus(id));
    }
    if let Some(id) = id(api::operation::keys::OPERATIONS) {
        return Some(KeyKind::Operation(id));
    }
    if let Some(id) = id(keys::NODES) {
        return Some(KeyKind::Node(id));
    }
    if let Some(id) = id(keys::VPCS) {
        return Some(KeyKind::Vpc(id));
    }
    if let Some(id) = id(keys::SUBNETS) {
        return Some(KeyKind::Subnet(id));
    }
    if let Some(id) = id(keys::NICS) {
        return Some(KeyKind::Nic(id));
    }
    if let Some(id) = id(keys::SECURITY_GROUPS) {
        return Some(KeyKind::SecurityGroup(id));
    }
    if let Some(id) = id(keys::EXTERNAL_NETWORKS) {
        return Some(KeyKind::ExternalNetwork(id));
    }
    if let Some(id) = id(keys::EIPS) {
        return Some(KeyKind::Eip(id));
    }
    if let Some(id) = id(keys::NAT_GATEWAYS) {
        return Some(KeyKind::NatGateway(id));
    }
    None
}

/// A NIC as cached, with what the status writer needs to fence its writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicEntry {
    pub nic: model::Nic,
    /// The store revision of the NIC's record.
    pub mod_revision: Revision,
    /// The revision since which the NIC is bound to `nic.node` (for records
    /// found by a listing: their `mod_revision`, which is no later).
    pub bound_since: Revision,
}

/// A NIC status record as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEntry {
    pub record: model::NicStatusRecord,
    pub mod_revision: Revision,
}

/// An operation that has not ended, as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpEntry {
    pub op: api::operation::Operation,
    /// The store revision of the change it is about.
    pub create_revision: Revision,
    /// To fence its next transition.
    pub mod_revision: Revision,
}

/// The logical model in memory, with the indexes compilation needs.
#[derive(Default, Debug)]
pub struct Model {
    revision: Revision,
    nodes: HashMap<String, model::Node>,
    vpcs: HashMap<String, model::Vpc>,
    subnets: HashMap<String, model::Subnet>,
    nics: HashMap<String, NicEntry>,
    groups: HashMap<String, model::SecurityGroup>,
    /// Not compiled: kept so acks and moves can be turned into status writes.
    statuses: HashMap<String, StatusEntry>,
    /// Not compiled: operations that have not ended (ended ones are
    /// dropped), so acks and nacks can advance them.
    operations: HashMap<String, OpEntry>,
    /// VPC → its subnets.
    vpc_subnets: HashMap<String, BTreeSet<String>>,
    /// VPC → its security groups.
    vpc_groups: HashMap<String, BTreeSet<String>>,
    /// VPC → its NICs (bound or not).
    vpc_nics: HashMap<String, BTreeSet<String>>,
    /// VPC → node → how many NICs of the VPC are bound to the node.
    vpc_hosts: HashMap<String, BTreeMap<String, usize>>,
    /// Node → VPCs with at least one NIC bound to the node.
    node_vpcs: HashMap<String, BTreeSet<String>>,
    /// Node → NICs bound to it.
    node_nics: HashMap<String, BTreeSet<String>>,
    ext_nets: HashMap<String, model::ExternalNetwork>,
    eips: HashMap<String, model::Eip>,
    gateways: HashMap<String, model::NatGateway>,
    /// NIC → the EIPs naming it as their binding.
    nic_eips: HashMap<String, BTreeSet<String>>,
    /// EIP → the NAT gateways listing it.
    eip_gws: HashMap<String, BTreeSet<String>>,
    /// VPC → its NAT gateways.
    vpc_gws: HashMap<String, BTreeSet<String>>,
    /// NAT gateway → (its VPC, its ranked gateway nodes), derived from the
    /// gateway, its network and the node records.
    rank: HashMap<String, (String, Vec<String>)>,
    /// Node → VPC → how many NAT gateways of the VPC rank the node.
    gw_vpcs: HashMap<String, BTreeMap<String, usize>>,
}

/// A record that could not be decoded is treated as absent, and logged.
fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %kv.key, revision = kv.mod_revision, error = %e, "undecodable record ignored");
            None
        }
    }
}

fn set_remove(map: &mut HashMap<String, BTreeSet<String>>, k: &str, v: &str) {
    if let Some(set) = map.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

fn set_insert(map: &mut HashMap<String, BTreeSet<String>>, k: &str, v: &str) {
    map.entry(k.to_string()).or_default().insert(v.to_string());
}

impl Model {
    /// The model as of a listing of [`keys::ROOT`] at `revision`.
    pub fn from_listing(kvs: &[KeyValue], revision: Revision) -> Self {
        let mut m = Model::default();
        for kv in kvs {
            match classify(&kv.key) {
                Some(KeyKind::Node(name)) => {
                    if let Some(n) = decode(kv) {
                        m.nodes.insert(name.to_string(), n);
                    }
                }
                Some(KeyKind::Vpc(id)) => {
                    if let Some(v) = decode(kv) {
                        m.vpcs.insert(id.to_string(), v);
                    }
                }
                Some(KeyKind::Subnet(id)) => {
                    if let Some(s) = decode(kv) {
                        m.set_subnet(id, Some(s));
                    }
                }
                Some(KeyKind::Nic(id)) => {
                    if let Some(n) = decode(kv) {
                        m.set_nic(
                            id,
                            Some(NicEntry {
                                nic: n,
                                mod_revision: kv.mod_revision,
                                bound_since: kv.mod_revision,
                            }),
                        );
                    }
                }
                Some(KeyKind::SecurityGroup(id)) => {
                    if let Some(g) = decode(kv) {
                        m.set_group(id, Some(g));
                    }
                }
                Some(KeyKind::ExternalNetwork(id)) => {
                    if let Some(x) = decode(kv) {
                        m.ext_nets.insert(id.to_string(), x);
                    }
                }
                Some(KeyKind::Eip(id)) => {
                    if let Some(e) = decode(kv) {
                        m.set_eip(id, Some(e));
                    }
                }
                Some(KeyKind::NatGateway(id)) => {
                    if let Some(g) = decode(kv) {
                        m.set_gateway(id, Some(g));
                    }
                }
                Some(KeyKind::NicStatus(id)) => {
                    if let Some(record) = decode(kv) {
                        m.statuses.insert(
                            id.to_string(),
                            StatusEntry {
                                record,
                                mod_revision: kv.mod_revision,
                            },
                        );
                    }
                }
                Some(KeyKind::Operation(id)) => m.set_operation(id, kv, true),
                None => {}
            }
        }
        let gws: Vec<String> = m.gateways.keys().cloned().collect();
        for g in gws {
            m.rerank(&g);
        }
        m.revision = revision;
        m
    }

    /// The store revision the model reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn node(&self, name: &str) -> Option<&model::Node> {
        self.nodes.get(name)
    }

    pub fn nic(&self, id: &str) -> Option<&NicEntry> {
        self.nics.get(id)
    }

    pub fn status(&self, nic: &str) -> Option<&StatusEntry> {
        self.statuses.get(nic)
    }

    /// Every cached status record.
    pub fn statuses(&self) -> impl Iterator<Item = (&String, &StatusEntry)> {
        self.statuses.iter()
    }

    /// An operation that has not ended.
    pub fn operation(&self, id: &str) -> Option<&OpEntry> {
        self.operations.get(id)
    }

    /// Every operation that has not ended.
    pub fn operations(&self) -> impl Iterator<Item = (&String, &OpEntry)> {
        self.operations.iter()
    }

    /// Caches an operation record (`put`) or forgets it; ended ones are
    /// forgotten too: nothing advances them any more.
    fn set_operation(&mut self, id: &str, kv: &KeyValue, put: bool) {
        let op: Option<api::operation::Operation> = if put { decode(kv) } else { None };
        match op.filter(|o| !o.state.is_terminal()) {
            Some(op) => {
                self.operations.insert(
                    id.to_string(),
                    OpEntry {
                        op,
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                    },
                );
            }
            None => {
                self.operations.remove(id);
            }
        }
    }

    /// NICs bound to `node`.
    pub fn nics_on(&self, node: &str) -> impl Iterator<Item = &String> {
        self.node_nics.get(node).into_iter().flatten()
    }

    /// Every node name that has a record, a NIC bound to it or an
    /// external network listing it.
    pub fn node_names(&self) -> BTreeSet<String> {
        self.nodes
            .keys()
            .chain(self.node_nics.keys())
            .chain(self.ext_nets.values().flat_map(|x| x.nodes.iter()))
            .cloned()
            .collect()
    }

    /// The ranked gateway nodes of NAT gateway `id` (empty if unknown).
    pub fn gateway_nodes(&self, id: &str) -> &[String] {
        self.rank.get(id).map_or(&[], |(_, r)| r.as_slice())
    }

    /// The node is a ranked gateway node of a NAT gateway of `vpc`.
    fn gw_of(&self, node: &str, vpc: &str) -> bool {
        self.gw_vpcs
            .get(node)
            .is_some_and(|v| v.get(vpc).is_some_and(|c| *c > 0))
    }

    /// VPCs the node hosts a NIC of or serves a NAT gateway of (existing
    /// or not).
    fn carried(&self, node: &str) -> BTreeSet<&String> {
        self.node_vpcs
            .get(node)
            .into_iter()
            .flatten()
            .chain(self.gw_vpcs.get(node).into_iter().flat_map(|v| v.keys()))
            .collect()
    }

    /// Nodes that carry `vpc`: its hosts and its gateway nodes.
    fn carriers(&self, vpc: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.hosts(vpc).cloned().collect();
        for g in self.vpc_gws.get(vpc).into_iter().flatten() {
            out.extend(self.gateway_nodes(g).iter().cloned());
        }
        out
    }

    /// Whether the tunnel between `a` and `b` runs BFD: one of them is a
    /// gateway node of a NAT gateway of a VPC the other hosts or serves
    /// too.
    fn bfd(&self, a: &str, b: &str) -> bool {
        self.carried(a).into_iter().any(|v| {
            self.vpcs.contains_key(v)
                && self.vpc_gws.get(v).into_iter().flatten().any(|g| {
                    let r = self.gateway_nodes(g);
                    let (ra, rb) = (r.iter().any(|n| n == a), r.iter().any(|n| n == b));
                    (ra && (rb || self.hosts_vpc(b, v))) || (rb && self.hosts_vpc(a, v))
                })
        })
    }

    fn set_eip(&mut self, id: &str, new: Option<model::Eip>) -> Option<model::Eip> {
        let old = match new {
            Some(e) => {
                if let Some(n) = &e.nic_id {
                    set_insert(&mut self.nic_eips, n, id);
                }
                self.eips.insert(id.to_string(), e)
            }
            None => self.eips.remove(id),
        };
        if let Some(n) = old.as_ref().and_then(|o| o.nic_id.as_ref()) {
            let still = self
                .eips
                .get(id)
                .is_some_and(|e| e.nic_id.as_ref() == Some(n));
            if !still {
                set_remove(&mut self.nic_eips, n, id);
            }
        }
        old
    }

    /// Replaces a NAT gateway and keeps the indexes (not the ranking).
    fn set_gateway(
        &mut self,
        id: &str,
        new: Option<model::NatGateway>,
    ) -> Option<model::NatGateway> {
        let old = self.gateways.remove(id);
        if let Some(o) = &old {
            set_remove(&mut self.vpc_gws, &o.vpc_id, id);
            for e in &o.eip_ids {
                set_remove(&mut self.eip_gws, e, id);
            }
        }
        if let Some(g) = new {
            set_insert(&mut self.vpc_gws, &g.vpc_id, id);
            for e in &g.eip_ids {
                set_insert(&mut self.eip_gws, e, id);
            }
            self.gateways.insert(id.to_string(), g);
        }
        old
    }

    /// Recomputes the ranking of NAT gateway `id` from the live model;
    /// returns the previous (VPC, ranking), if any.
    fn rerank(&mut self, id: &str) -> Option<(String, Vec<String>)> {
        let old = self.rank.remove(id);
        if let Some((vpc, nodes)) = &old {
            for n in nodes {
                if let Some(v) = self.gw_vpcs.get_mut(n) {
                    match v.get_mut(vpc) {
                        Some(c) if *c > 1 => *c -= 1,
                        Some(_) => {
                            v.remove(vpc);
                        }
                        None => {}
                    }
                    if v.is_empty() {
                        self.gw_vpcs.remove(n);
                    }
                }
            }
        }
        if let Some(g) = self.gateways.get(id) {
            let ranked = match self.ext_nets.get(&g.external_network_id) {
                Some(net) => model::gateway_ranking(id, net, |n| self.nodes.get(n)),
                None => vec![],
            };
            for n in &ranked {
                *self
                    .gw_vpcs
                    .entry(n.clone())
                    .or_default()
                    .entry(g.vpc_id.clone())
                    .or_default() += 1;
            }
            self.rank.insert(id.to_string(), (g.vpc_id.clone(), ranked));
        }
        old
    }

    /// Nodes with at least one NIC of `vpc` bound to them.
    fn hosts(&self, vpc: &str) -> impl Iterator<Item = &String> {
        self.vpc_hosts.get(vpc).into_iter().flat_map(|h| h.keys())
    }

    fn hosts_vpc(&self, node: &str, vpc: &str) -> bool {
        self.vpc_hosts
            .get(vpc)
            .is_some_and(|h| h.get(node).is_some_and(|c| *c > 0))
    }

    /// The node carries `vpc`: the VPC exists and a NIC of it is bound
    /// here or the node is a gateway node of one of its NAT gateways.
    fn vpc_present(&self, node: &str, vpc: &str) -> bool {
        self.vpcs.contains_key(vpc) && (self.hosts_vpc(node, vpc) || self.gw_of(node, vpc))
    }

    fn set_subnet(&mut self, id: &str, new: Option<model::Subnet>) -> Option<model::Subnet> {
        let old = match new {
            Some(s) => {
                set_insert(&mut self.vpc_subnets, &s.vpc_id, id);
                self.subnets.insert(id.to_string(), s)
            }
            None => self.subnets.remove(id),
        };
        if let Some(o) = &old {
            let still = self.subnets.get(id).is_some_and(|s| s.vpc_id == o.vpc_id);
            if !still {
                set_remove(&mut self.vpc_subnets, &o.vpc_id, id);
            }
        }
        old
    }

    fn set_group(
        &mut self,
        id: &str,
        new: Option<model::SecurityGroup>,
    ) -> Option<model::SecurityGroup> {
        let old = match new {
            Some(g) => {
                set_insert(&mut self.vpc_groups, &g.vpc_id, id);
                self.groups.insert(id.to_string(), g)
            }
            None => self.groups.remove(id),
        };
        if let Some(o) = &old {
            let still = self.groups.get(id).is_some_and(|g| g.vpc_id == o.vpc_id);
            if !still {
                set_remove(&mut self.vpc_groups, &o.vpc_id, id);
            }
        }
        old
    }

    /// Replaces a NIC and keeps the indexes; returns the previous entry.
    fn set_nic(&mut self, id: &str, new: Option<NicEntry>) -> Option<NicEntry> {
        let old = self.nics.remove(id);
        if let Some(o) = &old {
            set_remove(&mut self.vpc_nics, &o.nic.vpc_id, id);
            if let Some(node) = &o.nic.node {
                self.unhost(&o.nic.vpc_id, node);
                set_remove(&mut self.node_nics, node, id);
            }
        }
        if let Some(n) = new {
            set_insert(&mut self.vpc_nics, &n.nic.vpc_id, id);
            if let Some(node) = &n.nic.node {
                *self
                    .vpc_hosts
                    .entry(n.nic.vpc_id.clone())
                    .or_default()
                    .entry(node.clone())
                    .or_default() += 1;
                set_insert(&mut self.node_vpcs, node, &n.nic.vpc_id);
                set_insert(&mut self.node_nics, node, id);
            }
            self.nics.insert(id.to_string(), n);
        }
        old
    }

    fn unhost(&mut self, vpc: &str, node: &str) {
        let Some(hosts) = self.vpc_hosts.get_mut(vpc) else {
            return;
        };
        let gone = match hosts.get_mut(node) {
            Some(c) if *c > 1 => {
                *c -= 1;
                false
            }
            Some(_) => {
                hosts.remove(node);
                true
            }
            None => false,
        };
        if hosts.is_empty() {
            self.vpc_hosts.remove(vpc);
        }
        if gone {
            set_remove(&mut self.node_vpcs, node, vpc);
        }
    }

    fn node_info(&self, node: &str) -> NodeInfo {
        NodeInfo {
            name: node.to_string(),
            underlay_ip: self.nodes.get(node).map(|n| n.underlay_ip),
        }
    }

    fn vpc_object(&self, id: &str) -> Option<proto::Vpc> {
        self.vpcs.get(id).map(|v| proto::Vpc {
            id: id.to_string(),
            vni: v.vni,
        })
    }

    fn subnet_object(&self, id: &str) -> Option<proto::Subnet> {
        self.subnets.get(id).map(|s| proto::Subnet {
            id: id.to_string(),
            vpc_id: s.vpc_id.clone(),
            cidr: prefix!(s.cidr),
            gateway_ip: s.gateway_ip,
            gateway_mac: s.gateway_mac,
            dns_servers: s.dns_servers.clone(),
            mtu: s.mtu,
            lease_secs: LEASE_SECS,
        })
    }

    /// The NIC as `for_node` sees it: only if bound, and if bound elsewhere
    /// only to a known node (the tunnel needs its underlay address).
    fn nic_object(&self, id: &str, for_node: &str) -> Option<proto::Nic> {
        let n = &self.nics.get(id)?.nic;
        let bound = n.node.as_deref()?;
        if bound != for_node && !self.nodes.contains_key(bound) {
            return None;
        }
        Some(proto::Nic {
            id: id.to_string(),
            vpc_id: n.vpc_id.clone(),
            subnet_id: n.subnet_id.clone(),
            mac: n.mac,
            ip: n.ip,
            node: bound.to_string(),
            port_security: n.port_security,
            security_groups: n.security_groups.clone(),
            allowed_address_pairs: n
                .allowed_address_pairs
                .iter()
                .map(|p| proto::AddressPair {
                    ip: prefix!(p.ip_address),
                    mac: p.mac_address,
                })
                .collect(),
        })
    }

    fn group_object(&self, id: &str) -> Option<proto::SecurityGroup> {
        let g = self.groups.get(id)?;
        Some(proto::SecurityGroup {
            id: id.to_string(),
            vpc_id: g.vpc_id.clone(),
            rules: g.rules.iter().map(rule_object).collect(),
        })
    }

    fn peer_object(&self, peer: &str, for_node: &str) -> Option<proto::Peer> {
        if peer == for_node {
            return None;
        }
        self.nodes.get(peer).map(|n| proto::Peer {
            node: peer.to_string(),
            underlay_ip: n.underlay_ip,
            bfd: self.bfd(for_node, peer),
        })
    }

    /// The node hosting the NIC an EIP is bound to.
    fn eip_node(&self, e: &model::Eip) -> Option<&str> {
        let nic = e.nic_id.as_ref()?;
        self.nics.get(nic)?.nic.node.as_deref()
    }

    fn external_network_object(&self, id: &str, for_node: &str) -> Option<proto::ExternalNetwork> {
        let x = self.ext_nets.get(id)?;
        x.nodes
            .iter()
            .any(|n| n == for_node)
            .then(|| proto::ExternalNetwork {
                id: id.to_string(),
                physnet: x.physnet.clone(),
                cidr: prefix!(x.cidr),
                gateway_ip: x.gateway_ip,
            })
    }

    /// The EIP on `for_node`: bound to a NIC bound to this node, which is
    /// attached to the EIP's network (the API checks that at bind time; a
    /// NIC moved since to a node off the network loses its EIP there).
    fn eip_object(&self, id: &str, for_node: &str) -> Option<proto::Eip> {
        let e = self.eips.get(id)?;
        let nic_id = e.nic_id.as_ref()?;
        let nic = &self.nics.get(nic_id)?.nic;
        if nic.node.as_deref() != Some(for_node) {
            return None;
        }
        let net = self.ext_nets.get(&e.external_network_id)?;
        if !net.nodes.iter().any(|n| n == for_node) {
            return None;
        }
        Some(proto::Eip {
            id: id.to_string(),
            external_network_id: e.external_network_id.clone(),
            ip: e.ip,
            mac: e.mac,
            nic_id: nic_id.clone(),
            rate_limit_kbps: e.rate_limit_kbps,
        })
    }

    /// The NAT gateway with its live ranking; rules whose EIP is gone are
    /// left out.
    fn gateway_object(&self, id: &str) -> Option<proto::NatGateway> {
        let g = self.gateways.get(id)?;
        let ip = |eip: &str| self.eips.get(eip).map(|e| e.ip);
        Some(proto::NatGateway {
            id: id.to_string(),
            vpc_id: g.vpc_id.clone(),
            external_network_id: g.external_network_id.clone(),
            mac: g.mac,
            gateways: self.gateway_nodes(id).to_vec(),
            eips: g
                .eip_ids
                .iter()
                .filter_map(|e| self.eips.get(e))
                .map(|e| proto::ExternalAddress {
                    ip: e.ip,
                    mac: e.mac,
                })
                .collect(),
            snat_rules: g
                .snat_rules
                .iter()
                .filter_map(|r| {
                    Some(proto::SnatRule {
                        id: r.id.clone(),
                        source: prefix!(r.source_cidr),
                        eip: ip(&r.eip_id)?,
                    })
                })
                .collect(),
            dnat_rules: g
                .dnat_rules
                .iter()
                .filter_map(|r| {
                    Some(proto::DnatRule {
                        id: r.id.clone(),
                        protocol: match r.protocol {
                            model::L4Protocol::Tcp => proto::L4Protocol::Tcp,
                            model::L4Protocol::Udp => proto::L4Protocol::Udp,
                        },
                        eip: ip(&r.eip_id)?,
                        external_port: r.external_port,
                        internal_ip: r.internal_ip,
                        internal_port: r.internal_port,
                    })
                })
                .collect(),
        })
    }

    /// What `key` should be on `node` right now.
    fn desired(&self, node: &str, key: &ObjectKey) -> Option<Object> {
        match key {
            ObjectKey::Vpc(id) => {
                if self.vpc_present(node, id) {
                    self.vpc_object(id).map(Object::Vpc)
                } else {
                    None
                }
            }
            ObjectKey::Subnet(id) => {
                let s = self.subnets.get(id)?;
                if self.vpc_present(node, &s.vpc_id) {
                    self.subnet_object(id).map(Object::Subnet)
                } else {
                    None
                }
            }
            ObjectKey::Nic(id) => {
                let n = &self.nics.get(id)?.nic;
                if self.vpc_present(node, &n.vpc_id) {
                    self.nic_object(id, node).map(Object::Nic)
                } else {
                    None
                }
            }
            ObjectKey::SecurityGroup(id) => {
                let g = self.groups.get(id)?;
                if self.vpc_present(node, &g.vpc_id) {
                    self.group_object(id).map(Object::SecurityGroup)
                } else {
                    None
                }
            }
            ObjectKey::Peer(peer) => {
                let shared = self.carried(node).into_iter().any(|v| {
                    self.vpc_present(node, v) && (self.hosts_vpc(peer, v) || self.gw_of(peer, v))
                });
                if shared {
                    self.peer_object(peer, node).map(Object::Peer)
                } else {
                    None
                }
            }
            ObjectKey::ExternalNetwork(id) => self
                .external_network_object(id, node)
                .map(Object::ExternalNetwork),
            ObjectKey::Eip(id) => self.eip_object(id, node).map(Object::Eip),
            ObjectKey::NatGateway(id) => {
                let g = self.gateways.get(id)?;
                if self.vpc_present(node, &g.vpc_id) {
                    self.gateway_object(id).map(Object::NatGateway)
                } else {
                    None
                }
            }
        }
    }
}

/// The full desired state of `node`, compiled from scratch. `revision` is the
/// model's revision.
pub fn compile_node(model: &Model, node: &str) -> NodeState {
    let mut st = NodeState {
        node: model.node_info(node),
        revision: model.revision,
        ..NodeState::default()
    };
    for (id, x) in &model.ext_nets {
        if x.nodes.iter().any(|n| n == node) {
            if let Some(obj) = model.external_network_object(id, node) {
                st.external_networks.insert(id.clone(), obj);
            }
        }
    }
    for nic in model.node_nics.get(node).into_iter().flatten() {
        for e in model.nic_eips.get(nic).into_iter().flatten() {
            if let Some(obj) = model.eip_object(e, node) {
                st.eips.insert(e.clone(), obj);
            }
        }
    }
    let vpcs = model.carried(node);
    if vpcs.is_empty() {
        return st;
    }
    let mut nics = Vec::new();
    for vpc in vpcs {
        let Some(v) = model.vpc_object(vpc) else {
            continue;
        };
        st.vpcs.insert(vpc.clone(), v);
        for s in model.vpc_subnets.get(vpc).into_iter().flatten() {
            if let Some(obj) = model.subnet_object(s) {
                st.subnets.insert(s.clone(), obj);
            }
        }
        for id in model.vpc_nics.get(vpc).into_iter().flatten() {
            if let Some(obj) = model.nic_object(id, node) {
                nics.push((id.clone(), obj));
            }
        }
        for g in model.vpc_groups.get(vpc).into_iter().flatten() {
            if let Some(obj) = model.group_object(g) {
                st.security_groups.insert(g.clone(), obj);
            }
        }
        for peer in model.carriers(vpc) {
            if let std::collections::btree_map::Entry::Vacant(slot) = st.peers.entry(peer) {
                if let Some(p) = model.peer_object(slot.key(), node) {
                    slot.insert(p);
                }
            }
        }
        for g in model.vpc_gws.get(vpc).into_iter().flatten() {
            if let Some(obj) = model.gateway_object(g) {
                st.nat_gateways.insert(g.clone(), obj);
            }
        }
    }
    // One bulk build instead of 10,000 tree inserts.
    st.nics = nics.into_iter().collect();
    st
}

/// The objects an event may have changed on one node.
#[derive(Default, Debug)]
struct Dirty {
    node_info: bool,
    /// Recompile the node and diff (a NAT gateway's ranking changed: the
    /// node may gain or lose whole VPCs and BFD on many tunnels; rare).
    full: bool,
    keys: BTreeSet<ObjectKey>,
}

/// What applying one batch of store events produced.
#[derive(Default, Debug)]
pub struct Applied {
    /// Per node, the changes (only nodes whose state changed).
    pub changes: BTreeMap<String, Vec<Change>>,
    /// NICs whose record was created, changed or deleted.
    pub nics: BTreeSet<String>,
    /// NICs whose status record was written or deleted.
    pub statuses: BTreeSet<String>,
    /// Operations whose record was written or deleted.
    pub operations: BTreeSet<String>,
    /// Nodes whose objects were re-examined (a superset of `changes`' keys).
    pub touched: BTreeSet<String>,
}

/// The model plus every node's compiled state, updated incrementally.
#[derive(Default, Debug)]
pub struct Compiler {
    model: Model,
    states: HashMap<String, NodeState>,
}

impl Compiler {
    /// Compiles every node from a listing of [`keys::ROOT`].
    pub fn from_listing(kvs: &[KeyValue], revision: Revision) -> Self {
        let model = Model::from_listing(kvs, revision);
        let states = model
            .node_names()
            .into_iter()
            .map(|n| {
                let st = compile_node(&model, &n);
                (n, st)
            })
            .collect();
        Compiler { model, states }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn revision(&self) -> Revision {
        self.model.revision
    }

    /// The compiled state of `node`; a node nothing refers to has an empty
    /// state.
    pub fn state(&self, node: &str) -> NodeState {
        match self.states.get(node) {
            Some(st) => st.clone(),
            None => compile_node(&self.model, node),
        }
    }

    /// Every compiled state (nodes nothing ever referred to are absent).
    pub fn states(&self) -> &HashMap<String, NodeState> {
        &self.states
    }

    /// Replaces the model with a fresh listing (after a compaction) and
    /// returns the changes that bring every node to it.
    pub fn relist(&mut self, kvs: &[KeyValue], revision: Revision) -> Applied {
        let old_model = std::mem::replace(&mut self.model, Model::from_listing(kvs, revision));
        let mut out = Applied::default();
        let mut names: BTreeSet<String> = self.states.keys().cloned().collect();
        names.extend(self.model.node_names());
        for name in names {
            let new = compile_node(&self.model, &name);
            let old = self
                .states
                .entry(name.clone())
                .or_insert_with(|| compile_node(&old_model, &name));
            let changes = old.diff(&new);
            if !changes.is_empty() {
                *old = new;
                out.changes.insert(name, changes);
            }
        }
        let nic_ids: BTreeSet<&String> = old_model
            .nics
            .keys()
            .chain(self.model.nics.keys())
            .collect();
        out.nics = nic_ids
            .into_iter()
            .filter(|id| old_model.nics.get(*id) != self.model.nics.get(*id))
            .cloned()
            .collect();
        let st_ids: BTreeSet<&String> = old_model
            .statuses
            .keys()
            .chain(self.model.statuses.keys())
            .collect();
        out.statuses = st_ids
            .into_iter()
            .filter(|id| old_model.statuses.get(*id) != self.model.statuses.get(*id))
            .cloned()
            .collect();
        out.operations = old_model
            .operations
            .keys()
            .chain(self.model.operations.keys())
            .filter(|id| old_model.operations.get(*id) != self.model.operations.get(*id))
            .cloned()
            .collect();
        out
    }

    /// Applies one batch of watch events (one transaction, or several in
    /// revision order) and returns what changed.
    pub fn apply(&mut self, events: &[WatchEvent]) -> Applied {
        let mut dirty: HashMap<String, Dirty> = HashMap::new();
        let mut out = Applied::default();
        for ev in events {
            self.apply_event(ev, &mut dirty, &mut out);
            self.model.revision = self.model.revision.max(ev.revision());
        }
        let revision = self.model.revision;
        for (node, d) in dirty {
            out.touched.insert(node.clone());
            let info = self.model.node_info(&node);
            let st = self
                .states
                .entry(node.clone())
                .or_insert_with(|| NodeState {
                    node: NodeInfo {
                        name: node.clone(),
                        underlay_ip: None,
                    },
                    ..NodeState::default()
                });
            if d.full {
                let new = compile_node(&self.model, &node);
                let changes = st.diff(&new);
                if !changes.is_empty() {
                    *st = new;
                    out.changes.insert(node, changes);
                }
                continue;
            }
            let mut changes = Vec::new();
            if d.node_info && st.node != info {
                changes.push(Change::Upsert {
                    object: Object::Node(info),
                });
            }
            for key in d.keys {
                let change = match self.model.desired(&node, &key) {
                    None => st.contains(&key).then_some(Change::Remove { key }),
                    Some(obj) => (!st.holds(&obj)).then_some(Change::Upsert { object: obj }),
                };
                changes.extend(change);
            }
            if !changes.is_empty() {
                for c in &changes {
                    st.apply(c);
                }
                st.revision = revision;
                out.changes.insert(node, changes);
            }
        }
        out
    }

    fn apply_event(
        &mut self,
        ev: &WatchEvent,
        dirty: &mut HashMap<String, Dirty>,
        out: &mut Applied,
    ) {
        let put = ev.kind == EventKind::Put;
        let kv = &ev.kv;
        let rev = ev.revision();
        match classify(&kv.key) {
            None => {}
            Some(KeyKind::Operation(id)) => {
                self.model.set_operation(id, kv, put);
                out.operations.insert(id.to_string());
            }
            Some(KeyKind::NicStatus(id)) => {
                let rec = if put { decode(kv) } else { None };
                match rec {
                    Some(record) => {
                        self.model.statuses.insert(
                            id.to_string(),
                            StatusEntry {
                                record,
                                mod_revision: rev,
                            },
                        );
                    }
                    None => {
                        self.model.statuses.remove(id);
                    }
                }
                out.statuses.insert(id.to_string());
            }
            Some(KeyKind::Node(name)) => {
                let new: Option<model::Node> = if put { decode(kv) } else { None };
                match new {
                    Some(n) => self.model.nodes.insert(name.to_string(), n),
                    None => self.model.nodes.remove(name),
                };
                dirty.entry(name.to_string()).or_default().node_info = true;
                // Its peer entry and its NICs, as the nodes sharing a VPC
                // with it see them.
                let m = &self.model;
                for vpc in m.carried(name) {
                    for host in m.carriers(vpc) {
                        let d = dirty.entry(host).or_default();
                        d.keys.insert(ObjectKey::Peer(name.to_string()));
                    }
                }
                for nic in m.node_nics.get(name).into_iter().flatten() {
                    let Some(e) = m.nics.get(nic) else {
                        continue;
                    };
                    for host in m.carriers(&e.nic.vpc_id) {
                        let d = dirty.entry(host).or_default();
                        d.keys.insert(ObjectKey::Nic(nic.clone()));
                    }
                }
                // Its roles, drain and priority rank it in the NAT
                // gateways of the networks it is attached to.
                let gws: Vec<String> = m
                    .gateways
                    .values()
                    .filter(|g| {
                        m.ext_nets
                            .get(&g.external_network_id)
                            .is_some_and(|x| x.nodes.iter().any(|n| n == name))
                    })
                    .map(|g| g.id.clone())
                    .collect();
                for g in gws {
                    self.regateway(dirty, &g);
                }
            }
            Some(KeyKind::ExternalNetwork(id)) => {
                let new: Option<model::ExternalNetwork> = if put { decode(kv) } else { None };
                let old = match new {
                    Some(x) => self.model.ext_nets.insert(id.to_string(), x),
                    None => self.model.ext_nets.remove(id),
                };
                let m = &self.model;
                let listed = old
                    .iter()
                    .chain(m.ext_nets.get(id))
                    .flat_map(|x| x.nodes.iter().cloned())
                    .collect::<BTreeSet<String>>();
                for n in listed {
                    let d = dirty.entry(n).or_default();
                    d.keys.insert(ObjectKey::ExternalNetwork(id.to_string()));
                }
                for e in m.eips.values().filter(|e| e.external_network_id == id) {
                    if let Some(node) = m.eip_node(e) {
                        let d = dirty.entry(node.to_string()).or_default();
                        d.keys.insert(ObjectKey::Eip(e.id.clone()));
                    }
                }
                let gws: Vec<String> = m
                    .gateways
                    .values()
                    .filter(|g| g.external_network_id == id)
                    .map(|g| g.id.clone())
                    .collect();
                for g in gws {
                    self.regateway(dirty, &g);
                }
            }
            Some(KeyKind::Eip(id)) => {
                let new: Option<model::Eip> = if put { decode(kv) } else { None };
                let old = self.model.set_eip(id, new);
                let m = &self.model;
                let nodes: BTreeSet<String> = old
                    .iter()
                    .chain(m.eips.get(id))
                    .filter_map(|e| m.eip_node(e))
                    .map(str::to_string)
                    .collect();
                for n in nodes {
                    let d = dirty.entry(n).or_default();
                    d.keys.insert(ObjectKey::Eip(id.to_string()));
                }
                // Gateways owning it show its address.
                for g in m.eip_gws.get(id).into_iter().flatten() {
                    let Some(vpc) = m.gateways.get(g).map(|g| &g.vpc_id) else {
                        continue;
                    };
                    for c in m.carriers(vpc) {
                        let d = dirty.entry(c).or_default();
                        d.keys.insert(ObjectKey::NatGateway(g.clone()));
                    }
                }
            }
            Some(KeyKind::NatGateway(id)) => {
                let new: Option<model::NatGateway> = if put { decode(kv) } else { None };
                self.model.set_gateway(id, new);
                self.regateway(dirty, id);
            }
            Some(KeyKind::Vpc(id)) => {
                let new: Option<model::Vpc> = if put { decode(kv) } else { None };
                match new {
                    Some(v) => self.model.vpcs.insert(id.to_string(), v),
                    None => self.model.vpcs.remove(id),
                };
                for h in self.model.carriers(id) {
                    self.mark_vpc(dirty, &h, id);
                }
            }
            Some(KeyKind::SecurityGroup(id)) => {
                let new: Option<model::SecurityGroup> = if put { decode(kv) } else { None };
                let new_vpc = new.as_ref().map(|g| g.vpc_id.clone());
                let old = self.model.set_group(id, new);
                for vpc in old.map(|g| g.vpc_id).iter().chain(new_vpc.iter()) {
                    for h in self.model.carriers(vpc) {
                        dirty
                            .entry(h)
                            .or_default()
                            .keys
                            .insert(ObjectKey::SecurityGroup(id.to_string()));
                    }
                }
            }
            Some(KeyKind::Subnet(id)) => {
                let new: Option<model::Subnet> = if put { decode(kv) } else { None };
                let new_vpc = new.as_ref().map(|s| s.vpc_id.clone());
                let old = self.model.set_subnet(id, new);
                for vpc in old.map(|s| s.vpc_id).iter().chain(new_vpc.iter()) {
                    for h in self.model.carriers(vpc) {
                        dirty
                            .entry(h)
                            .or_default()
                            .keys
                            .insert(ObjectKey::Subnet(id.to_string()));
                    }
                }
            }
            Some(KeyKind::Nic(id)) => {
                let new: Option<model::Nic> = if put { decode(kv) } else { None };
                let old = self.model.nics.get(id);
                let (old_vpc, old_node) = match old {
                    Some(e) => (Some(e.nic.vpc_id.clone()), e.nic.node.clone()),
                    None => (None, None),
                };
                let mut affected: BTreeSet<String> = BTreeSet::new();
                if let Some(v) = &old_vpc {
                    affected.extend(self.model.carriers(v));
                }
                let new_entry = new.map(|nic| {
                    let same_binding =
                        old.is_some_and(|o| o.nic.node == nic.node && o.nic.vpc_id == nic.vpc_id);
                    let bound_since = match old {
                        Some(o) if same_binding => o.bound_since,
                        _ => rev,
                    };
                    NicEntry {
                        nic,
                        mod_revision: rev,
                        bound_since,
                    }
                });
                let new_vpc = new_entry.as_ref().map(|e| e.nic.vpc_id.clone());
                let new_node = new_entry.as_ref().and_then(|e| e.nic.node.clone());
                let joined = match (&new_vpc, &new_node) {
                    (Some(v), Some(n)) => !self.model.hosts_vpc(n, v),
                    _ => false,
                };
                self.model.set_nic(id, new_entry);
                if let Some(v) = &new_vpc {
                    affected.extend(self.model.carriers(v));
                }
                // Its EIP moves with it.
                for e in self.model.nic_eips.get(id).into_iter().flatten() {
                    for n in old_node.iter().chain(new_node.iter()) {
                        let d = dirty.entry(n.clone()).or_default();
                        d.keys.insert(ObjectKey::Eip(e.clone()));
                    }
                }
                for n in &affected {
                    let d = dirty.entry(n.clone()).or_default();
                    d.keys.insert(ObjectKey::Nic(id.to_string()));
                    for peer in old_node.iter().chain(new_node.iter()) {
                        d.keys.insert(ObjectKey::Peer(peer.clone()));
                    }
                }
                // A node that left or joined a VPC gains or loses all of it.
                if let (Some(v), Some(n)) = (&old_vpc, &old_node) {
                    if !self.model.hosts_vpc(n, v) {
                        self.mark_vpc(dirty, n, v);
                    }
                }
                if let (true, Some(v), Some(n)) = (joined, &new_vpc, &new_node) {
                    self.mark_vpc(dirty, n, v);
                }
                out.nics.insert(id.to_string());
            }
        }
    }

    /// Marks everything of `vpc` dirty on `node`.
    fn mark_vpc(&self, dirty: &mut HashMap<String, Dirty>, node: &str, vpc: &str) {
        let m = &self.model;
        let d = dirty.entry(node.to_string()).or_default();
        d.keys.insert(ObjectKey::Vpc(vpc.to_string()));
        for s in m.vpc_subnets.get(vpc).into_iter().flatten() {
            d.keys.insert(ObjectKey::Subnet(s.clone()));
        }
        for n in m.vpc_nics.get(vpc).into_iter().flatten() {
            d.keys.insert(ObjectKey::Nic(n.clone()));
        }
        for g in m.vpc_groups.get(vpc).into_iter().flatten() {
            d.keys.insert(ObjectKey::SecurityGroup(g.clone()));
        }
        for h in m.carriers(vpc) {
            d.keys.insert(ObjectKey::Peer(h));
        }
        for g in m.vpc_gws.get(vpc).into_iter().flatten() {
            d.keys.insert(ObjectKey::NatGateway(g.clone()));
        }
    }

    /// Re-ranks NAT gateway `id` after a change of it, its network or a
    /// node. An unchanged ranking only refreshes the gateway object on the
    /// VPC's carriers; a changed one recompiles every node that carried or
    /// carries the VPC (they gain or lose it, or BFD on tunnels).
    fn regateway(&mut self, dirty: &mut HashMap<String, Dirty>, id: &str) {
        let old = self.model.rerank(id);
        let m = &self.model;
        let new = m.rank.get(id);
        if old.as_ref() == new {
            if let Some((vpc, _)) = new {
                for c in m.carriers(vpc) {
                    let d = dirty.entry(c).or_default();
                    d.keys.insert(ObjectKey::NatGateway(id.to_string()));
                }
            }
            return;
        }
        let mut nodes: BTreeSet<String> = BTreeSet::new();
        for (vpc, ranked) in old.iter().chain(new) {
            nodes.extend(ranked.iter().cloned());
            nodes.extend(m.carriers(vpc));
        }
        for n in nodes {
            dirty.entry(n).or_default().full = true;
        }
    }
}

/// A stored rule in the agent's terms. The API has validated it; anything
/// inconsistent that got into the store anyway (a port range on ICMP)
/// compiles to the narrower reading rather than to "allow all".
fn rule_object(r: &model::SecurityGroupRule) -> proto::SgRule {
    let ports = r.port_range_min.map(|min| proto::PortRange {
        min,
        max: r.port_range_max.unwrap_or(min).max(min),
    });
    let protocol = match r.protocol {
        model::Protocol::Any => proto::RuleProtocol::Any,
        model::Protocol::Tcp => proto::RuleProtocol::Tcp { ports },
        model::Protocol::Udp => proto::RuleProtocol::Udp { ports },
        model::Protocol::Icmp => proto::RuleProtocol::Icmp {
            icmp_type: r.icmp_type,
            icmp_code: r.icmp_type.and(r.icmp_code),
        },
    };
    let remote = match (&r.remote_group_id, r.remote_cidr) {
        (Some(g), _) => proto::Remote::Group(g.clone()),
        (None, Some(c)) => proto::Remote::Cidr(prefix!(c)),
        (None, None) => proto::Remote::Cidr(Ipv4Prefix {
            addr: std::net::Ipv4Addr::UNSPECIFIED,
            len: 0,
        }),
    };
    proto::SgRule {
        id: r.id.clone(),
        direction: match r.direction {
            model::Direction::Ingress => proto::Direction::Ingress,
            model::Direction::Egress => proto::Direction::Egress,
        },
        protocol,
        remote,
    }
}

#[cfg(test)]
mod tests;
