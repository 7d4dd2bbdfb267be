//! Test helpers: an in-memory revisioned map that produces store events,
//! and builders for model records.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use api::model::{self, keys, NicStatus, NicStatusRecord};
use api::store::{EventKind, KeyValue, WatchEvent};
use proto::{Mac, Revision};

/// A tiny revisioned key-value map that hands out the events a store watch
/// would.
#[derive(Default)]
pub struct Kv {
    pub rev: Revision,
    pub map: BTreeMap<String, KeyValue>,
}

pub enum Op {
    Put(String, Vec<u8>),
    Del(String),
}

impl Kv {
    pub fn txn(&mut self, ops: Vec<Op>) -> Vec<WatchEvent> {
        // Like the store, a transaction that writes nothing keeps the revision.
        let rev = self.rev + 1;
        let mut evs = Vec::new();
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    let (create, version) = match self.map.get(&key) {
                        Some(kv) => (kv.create_revision, kv.version + 1),
                        None => (rev, 1),
                    };
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: create,
                        mod_revision: rev,
                        version,
                        lease: 0,
                    };
                    self.map.insert(key, kv.clone());
                    evs.push(WatchEvent {
                        kind: EventKind::Put,
                        kv,
                    });
                }
                Op::Del(key) => {
                    if self.map.remove(&key).is_some() {
                        evs.push(WatchEvent {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key,
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: rev,
                                version: 0,
                                lease: 0,
                            },
                        });
                    }
                }
            }
        }
        if !evs.is_empty() {
            self.rev = rev;
        }
        evs
    }

    pub fn listing(&self) -> Vec<KeyValue> {
        self.map.values().cloned().collect()
    }
}

pub fn node(name: &str, ip: u8) -> Op {
    let n = model::Node {
        name: name.into(),
        set: "set-1".into(),
        underlay_ip: Ipv4Addr::new(192, 0, 2, ip),
        roles: vec![model::NodeRole::Compute],
        drained: false,
        gateway_priority: 0,
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::node(name), serde_json::to_vec(&n).unwrap())
}

pub fn vpc(id: &str, vni: u32) -> Op {
    let v = model::Vpc {
        id: id.into(),
        name: id.into(),
        set: "set-1".into(),
        cidrs: vec!["10.0.0.0/16".parse().unwrap()],
        vni,
        default_security_group_id: None,
        external_network_ids: vec![],
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::vpc(id), serde_json::to_vec(&v).unwrap())
}

pub fn subnet(id: &str, vpc: &str, third: u8, mtu: u16) -> Op {
    let s = model::Subnet {
        id: id.into(),
        name: id.into(),
        vpc_id: vpc.into(),
        cidr: format!("10.0.{third}.0/24").parse().unwrap(),
        gateway_ip: Ipv4Addr::new(10, 0, third, 1),
        gateway_mac: Mac([2, 0x5e, 0, 0, 0, third]),
        dns_servers: vec![Ipv4Addr::new(10, 0, third, 2)],
        mtu,
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::subnet(id), serde_json::to_vec(&s).unwrap())
}

pub fn nic(id: &str, vpc: &str, subnet: &str, host: Option<&str>, last: u8) -> Op {
    nic_in(id, vpc, subnet, host, last, &[])
}

/// A NIC that is a member of `groups` (port security off if empty).
pub fn nic_in(
    id: &str,
    vpc: &str,
    subnet: &str,
    host: Option<&str>,
    last: u8,
    groups: &[&str],
) -> Op {
    let n = model::Nic {
        id: id.into(),
        name: id.into(),
        subnet_id: subnet.into(),
        vpc_id: vpc.into(),
        mac: Mac([2, 0, 0, 0, 0, last]),
        ip: Ipv4Addr::new(10, 0, 0, last),
        node: host.map(str::to_string),
        interface_id: id.into(),
        port_security: !groups.is_empty(),
        security_groups: groups.iter().map(|g| g.to_string()).collect(),
        allowed_address_pairs: vec![],
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::nic(id), serde_json::to_vec(&n).unwrap())
}

/// A security group of `vpc` with one rule per port in `ports` (tcp,
/// ingress), from `remote` if given (else from anyone).
pub fn group(id: &str, vpc: &str, ports: &[u16], remote: Option<&str>) -> Op {
    let g = model::SecurityGroup {
        id: id.into(),
        name: id.into(),
        vpc_id: vpc.into(),
        description: String::new(),
        is_default: false,
        rules: ports
            .iter()
            .map(|p| model::SecurityGroupRule {
                id: format!("{id}-r{p}"),
                direction: model::Direction::Ingress,
                protocol: model::Protocol::Tcp,
                port_range_min: Some(*p),
                port_range_max: Some(*p),
                icmp_type: None,
                icmp_code: None,
                remote_cidr: None,
                remote_group_id: remote.map(str::to_string),
                description: String::new(),
            })
            .collect(),
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::security_group(id), serde_json::to_vec(&g).unwrap())
}

pub fn status(id: &str, host: &str) -> Op {
    let r = NicStatusRecord {
        status: NicStatus::Up,
        node: host.into(),
        revision: 1,
    };
    Op::Put(keys::nic_status(id), serde_json::to_vec(&r).unwrap())
}

pub fn small_world() -> Kv {
    let mut kv = Kv::default();
    kv.txn(vec![
        node("n1", 1),
        node("n2", 2),
        node("n3", 3),
        vpc("vpc-a", 100),
        vpc("vpc-b", 200),
        subnet("sub-a", "vpc-a", 1, 1450),
        subnet("sub-b", "vpc-b", 2, 1400),
        nic("nic-a1", "vpc-a", "sub-a", Some("n1"), 11),
        nic("nic-a2", "vpc-a", "sub-a", Some("n2"), 12),
        nic("nic-a3", "vpc-a", "sub-a", None, 13),
        nic("nic-b1", "vpc-b", "sub-b", Some("n3"), 21),
    ]);
    kv
}

/// A node with the gateway role (and compute), drained or not, with a
/// gateway priority.
pub fn gateway_node(name: &str, ip: u8, drained: bool, priority: u32) -> Op {
    let n = model::Node {
        name: name.into(),
        set: "set-1".into(),
        underlay_ip: Ipv4Addr::new(192, 0, 2, ip),
        roles: vec![model::NodeRole::Compute, model::NodeRole::Gateway],
        drained,
        gateway_priority: priority,
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::node(name), serde_json::to_vec(&n).unwrap())
}

/// An external network 203.0.113.0/24 attached to `nodes`.
pub fn ext_net(id: &str, nodes: &[&str]) -> Op {
    let x = model::ExternalNetwork {
        id: id.into(),
        name: id.into(),
        physnet: "public".into(),
        cidr: "203.0.113.0/24".parse().unwrap(),
        gateway_ip: Ipv4Addr::new(203, 0, 113, 1),
        pool: vec![model::AddressRange {
            first: Ipv4Addr::new(203, 0, 113, 10),
            last: Ipv4Addr::new(203, 0, 113, 99),
        }],
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::external_network(id), serde_json::to_vec(&x).unwrap())
}

/// An EIP 203.0.113.`last` of `net`, bound to `nic` if given.
pub fn eip(id: &str, net: &str, last: u8, nic: Option<&str>) -> Op {
    let e = model::Eip {
        id: id.into(),
        name: id.into(),
        external_network_id: net.into(),
        ip: Ipv4Addr::new(203, 0, 113, last),
        mac: Mac([2, 0xee, 0, 0, 0, last]),
        rate_limit_kbps: None,
        nic_id: nic.map(str::to_string),
        nat_gateway_id: None,
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::eip(id), serde_json::to_vec(&e).unwrap())
}

/// A NAT gateway of `vpc` on `net` owning `eips`, with an SNAT rule for
/// 10.0.0.0/16 and a DNAT rule tcp/80 → 10.0.0.11:8080 on the first EIP.
pub fn nat_gateway(id: &str, vpc: &str, net: &str, eips: &[&str]) -> Op {
    let first = eips.first().map(|e| e.to_string()).unwrap_or_default();
    let g = model::NatGateway {
        id: id.into(),
        name: id.into(),
        vpc_id: vpc.into(),
        external_network_id: net.into(),
        eip_ids: eips.iter().map(|e| e.to_string()).collect(),
        mac: Mac([2, 0xaa, 0, 0, 0, 1]),
        snat_rules: vec![model::SnatRule {
            id: format!("{id}-snat"),
            subnet_id: None,
            nic_id: None,
            cidr: Some("10.0.0.0/16".parse().unwrap()),
            source_cidr: "10.0.0.0/16".parse().unwrap(),
            eip_id: first.clone(),
        }],
        dnat_rules: vec![model::DnatRule {
            id: format!("{id}-dnat"),
            protocol: model::L4Protocol::Tcp,
            eip_id: first,
            external_port: 80,
            internal_ip: Ipv4Addr::new(10, 0, 0, 11),
            nic_id: None,
            internal_port: 8080,
        }],
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    Op::Put(keys::nat_gateway(id), serde_json::to_vec(&g).unwrap())
}
