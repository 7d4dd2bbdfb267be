//! The per-node desired state and the changes that move it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::Revision;

/// A MAC address, kept as six bytes and written `02:00:00:00:00:01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The text is not a MAC address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex octets like 02:00:00:00:00:01")]
pub struct MacParseError(pub String);

impl std::str::FromStr for Mac {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 prefix, `10.0.1.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Prefix {
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len.min(32)))
        };
        Ipv4Addr::from(bits)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask());
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl Ipv4Prefix {
    /// The /32 of one address.
    pub fn host(addr: Ipv4Addr) -> Self {
        Ipv4Prefix { addr, len: 32 }
    }

    /// The address with its host bits cleared.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & u32::from(self.netmask()))
    }
}

impl std::fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The node itself, as the agent needs to know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeInfo {
    pub name: String,
    pub underlay_ip: Option<Ipv4Addr>,
}

/// A VPC present on the node because at least one local NIC is in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    pub id: String,
    /// The VXLAN network identifier: 24 bits, unique per VPC.
    pub vni: u32,
}

/// A subnet of a VPC present on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub cidr: Ipv4Prefix,
    /// The distributed router's address and MAC on this subnet.
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: Mac,
    pub dns_servers: Vec<Ipv4Addr>,
    /// The MTU offered to VMs by DHCP (already less the VXLAN headroom).
    pub mtu: u16,
    pub lease_secs: u32,
}

/// A NIC of a VPC the node carries: local if `node` is this node, else a
/// remote endpoint reached over the tunnel to `node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub node: String,
    /// Anti-spoofing and security groups apply. Off: the NIC sends and
    /// receives anything (and has no groups).
    #[serde(default = "enabled")]
    pub port_security: bool,
    /// Ids of the security groups of the NIC's VPC it is a member of.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Extra addresses the NIC may send from (and is reached at).
    #[serde(default)]
    pub allowed_address_pairs: Vec<AddressPair>,
}

fn enabled() -> bool {
    true
}

impl Nic {
    /// The addresses the NIC may use as source: its own, then its pairs'.
    pub fn source_addresses(&self) -> impl Iterator<Item = (Mac, Ipv4Prefix)> + '_ {
        std::iter::once((self.mac, Ipv4Prefix::host(self.ip))).chain(
            self.allowed_address_pairs
                .iter()
                .map(|p| (p.mac.unwrap_or(self.mac), p.ip)),
        )
    }
}

/// An extra source address of a NIC: an IPv4 address or prefix, with the
/// MAC it is used with (the NIC's own if none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip: Ipv4Prefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
}

/// Which traffic of a NIC a rule admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Connections the NIC accepts.
    Ingress,
    /// Connections the NIC opens.
    Egress,
}

/// An inclusive port range, `min <= max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

/// The protocol part of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum RuleProtocol {
    /// Any IPv4 protocol.
    Any,
    /// TCP to `ports` (all if `None`).
    Tcp {
        ports: Option<PortRange>,
    },
    Udp {
        ports: Option<PortRange>,
    },
    /// ICMP of `icmp_type` (any if `None`) and `icmp_code` (any if `None`;
    /// only with a type).
    Icmp {
        icmp_type: Option<u8>,
        icmp_code: Option<u8>,
    },
}

/// Who is on the other side of a rule's connections.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Remote {
    /// Any address in the prefix (`0.0.0.0/0` for anyone).
    Cidr(Ipv4Prefix),
    /// The addresses of the NICs that are members of this group (of the
    /// same VPC), their allowed address pairs included.
    Group(String),
}

/// One allow rule of a security group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SgRule {
    pub id: String,
    pub direction: Direction,
    #[serde(flatten)]
    pub protocol: RuleProtocol,
    pub remote: Remote,
}

/// A security group of a VPC the node carries. Its members are the NICs
/// whose `security_groups` name it. Traffic is allowed if any rule of any
/// group of the NIC allows it; everything else is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub vpc_id: String,
    pub rules: Vec<SgRule>,
}

/// Another node this node tunnels to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub node: String,
    pub underlay_ip: Ipv4Addr,
    /// Run BFD on the tunnel: set when one side is a gateway node the other
    /// depends on, so a fast-failover group can watch the tunnel's liveness.
    #[serde(default)]
    pub bfd: bool,
}

/// An external network ("the Internet" side) this node is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalNetwork {
    pub id: String,
    /// The label the node maps to one of its interfaces
    /// (`vswitch-agent --external-port PHYSNET=IFACE`).
    pub physnet: String,
    pub cidr: Ipv4Prefix,
    /// The outside router every external packet is sent to.
    pub gateway_ip: Ipv4Addr,
}

/// An elastic IP bound to a NIC hosted on this node: 1:1 NAT here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eip {
    pub id: String,
    pub external_network_id: String,
    pub ip: Ipv4Addr,
    /// The MAC the EIP answers ARP with on the external network.
    pub mac: Mac,
    pub nic_id: String,
    /// Bandwidth limit in each direction, kbit/s (an OVS meter); none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_kbps: Option<u32>,
}

/// An external address a NAT gateway translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExternalAddress {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// Sources of a VPC leaving through a NAT gateway with `eip` as source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SnatRule {
    pub id: String,
    /// A subnet's CIDR or one NIC's address (/32).
    pub source: Ipv4Prefix,
    pub eip: Ipv4Addr,
}

/// The transport protocol of a DNAT rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum L4Protocol {
    Tcp,
    Udp,
}

/// Connections to `eip:external_port` forwarded to `internal_ip:internal_port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DnatRule {
    pub id: String,
    pub protocol: L4Protocol,
    pub eip: Ipv4Addr,
    pub external_port: u16,
    pub internal_ip: Ipv4Addr,
    pub internal_port: u16,
}

/// A NAT gateway of a VPC the node carries. Compute nodes send the VPC's
/// outbound traffic of NICs without their own EIP to the first live node of
/// `gateways`; the gateway nodes translate it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatGateway {
    pub id: String,
    pub vpc_id: String,
    pub external_network_id: String,
    /// The MAC compute nodes address the VPC's outbound packets to.
    pub mac: Mac,
    /// Gateway nodes, highest priority first; drained nodes are left out.
    pub gateways: Vec<String>,
    pub eips: Vec<ExternalAddress>,
    #[serde(default)]
    pub snat_rules: Vec<SnatRule>,
    #[serde(default)]
    pub dnat_rules: Vec<DnatRule>,
}

/// The complete desired state of one node at one revision. Each map holds
/// only what the node needs: its NICs, the VPCs they belong to, the subnets
/// and the other NICs of those VPCs, and the nodes hosting those NICs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeState {
    pub node: NodeInfo,
    pub revision: Revision,
    pub vpcs: BTreeMap<String, Vpc>,
    pub subnets: BTreeMap<String, Subnet>,
    pub nics: BTreeMap<String, Nic>,
    pub peers: BTreeMap<String, Peer>,
    /// Every security group of the VPCs present.
    #[serde(default)]
    pub security_groups: BTreeMap<String, SecurityGroup>,
    /// The external networks the node is attached to.
    #[serde(default)]
    pub external_networks: BTreeMap<String, ExternalNetwork>,
    /// EIPs bound to NICs hosted on this node.
    #[serde(default)]
    pub eips: BTreeMap<String, Eip>,
    /// NAT gateways of the VPCs present, and those this node is a gateway of.
    #[serde(default)]
    pub nat_gateways: BTreeMap<String, NatGateway>,
}

/// One object of a [`NodeState`], the unit a delta carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Object {
    Node(NodeInfo),
    Vpc(Vpc),
    Subnet(Subnet),
    Nic(Nic),
    Peer(Peer),
    SecurityGroup(SecurityGroup),
    ExternalNetwork(ExternalNetwork),
    Eip(Eip),
    NatGateway(NatGateway),
}

/// The key of an [`Object`] within a [`NodeState`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ObjectKey {
    Vpc(String),
    Subnet(String),
    Nic(String),
    Peer(String),
    SecurityGroup(String),
    ExternalNetwork(String),
    Eip(String),
    NatGateway(String),
}

impl Object {
    /// The object's key (`None`: the node's own info, which has no key).
    pub fn key(&self) -> Option<ObjectKey> {
        Some(match self {
            Object::Node(_) => return None,
            Object::Vpc(v) => ObjectKey::Vpc(v.id.clone()),
            Object::Subnet(s) => ObjectKey::Subnet(s.id.clone()),
            Object::Nic(n) => ObjectKey::Nic(n.id.clone()),
            Object::Peer(p) => ObjectKey::Peer(p.node.clone()),
            Object::SecurityGroup(g) => ObjectKey::SecurityGroup(g.id.clone()),
            Object::ExternalNetwork(x) => ObjectKey::ExternalNetwork(x.id.clone()),
            Object::Eip(e) => ObjectKey::Eip(e.id.clone()),
            Object::NatGateway(g) => ObjectKey::NatGateway(g.id.clone()),
        })
    }
}

/// One step of a delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Upsert { object: Object },
    Remove { key: ObjectKey },
}

impl NodeState {
    /// Applies one change. Removing an absent key is not an error: deltas
    /// are idempotent.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Upsert { object } => match object {
                Object::Node(n) => self.node = n.clone(),
                Object::Vpc(v) => {
                    self.vpcs.insert(v.id.clone(), v.clone());
                }
                Object::Subnet(s) => {
                    self.subnets.insert(s.id.clone(), s.clone());
                }
                Object::Nic(n) => {
                    self.nics.insert(n.id.clone(), n.clone());
                }
                Object::Peer(p) => {
                    self.peers.insert(p.node.clone(), p.clone());
                }
                Object::SecurityGroup(g) => {
                    self.security_groups.insert(g.id.clone(), g.clone());
                }
                Object::ExternalNetwork(x) => {
                    self.external_networks.insert(x.id.clone(), x.clone());
                }
                Object::Eip(e) => {
                    self.eips.insert(e.id.clone(), e.clone());
                }
                Object::NatGateway(g) => {
                    self.nat_gateways.insert(g.id.clone(), g.clone());
                }
            },
            Change::Remove { key } => match key {
                ObjectKey::Vpc(id) => {
                    self.vpcs.remove(id);
                }
                ObjectKey::Subnet(id) => {
                    self.subnets.remove(id);
                }
                ObjectKey::Nic(id) => {
                    self.nics.remove(id);
                }
                ObjectKey::Peer(id) => {
                    self.peers.remove(id);
                }
                ObjectKey::SecurityGroup(id) => {
                    self.security_groups.remove(id);
                }
                ObjectKey::ExternalNetwork(id) => {
                    self.external_networks.remove(id);
                }
                ObjectKey::Eip(id) => {
                    self.eips.remove(id);
                }
                ObjectKey::NatGateway(id) => {
                    self.nat_gateways.remove(id);
                }
            },
        }
    }

    /// The changes that turn `self` into `target` (the node info included).
    pub fn diff(&self, target: &NodeState) -> Vec<Change> {
        let mut out = Vec::new();
        if self.node != target.node {
            out.push(Change::Upsert {
                object: Object::Node(target.node.clone()),
            });
        }
        diff_map(
            &self.vpcs,
            &target.vpcs,
            &mut out,
            ObjectKey::Vpc,
            Object::Vpc,
        );
        diff_map(
            &self.subnets,
            &target.subnets,
            &mut out,
            ObjectKey::Subnet,
            Object::Subnet,
        );
        diff_map(
            &self.nics,
            &target.nics,
            &mut out,
            ObjectKey::Nic,
            Object::Nic,
        );
        diff_map(
            &self.peers,
            &target.peers,
            &mut out,
            ObjectKey::Peer,
            Object::Peer,
        );
        diff_map(
            &self.security_groups,
            &target.security_groups,
            &mut out,
            ObjectKey::SecurityGroup,
            Object::SecurityGroup,
        );
        diff_map(
            &self.external_networks,
            &target.external_networks,
            &mut out,
            ObjectKey::ExternalNetwork,
            Object::ExternalNetwork,
        );
        diff_map(
            &self.eips,
            &target.eips,
            &mut out,
            ObjectKey::Eip,
            Object::Eip,
        );
        diff_map(
            &self.nat_gateways,
            &target.nat_gateways,
            &mut out,
            ObjectKey::NatGateway,
            Object::NatGateway,
        );
        out
    }

    /// Whether the state has an object at `key`.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        match key {
            ObjectKey::Vpc(id) => self.vpcs.contains_key(id),
            ObjectKey::Subnet(id) => self.subnets.contains_key(id),
            ObjectKey::Nic(id) => self.nics.contains_key(id),
            ObjectKey::Peer(id) => self.peers.contains_key(id),
            ObjectKey::SecurityGroup(id) => self.security_groups.contains_key(id),
            ObjectKey::ExternalNetwork(id) => self.external_networks.contains_key(id),
            ObjectKey::Eip(id) => self.eips.contains_key(id),
            ObjectKey::NatGateway(id) => self.nat_gateways.contains_key(id),
        }
    }

    /// Whether the state already holds exactly `obj`.
    pub fn holds(&self, obj: &Object) -> bool {
        match obj {
            Object::Node(n) => &self.node == n,
            Object::Vpc(v) => self.vpcs.get(&v.id) == Some(v),
            Object::Subnet(s) => self.subnets.get(&s.id) == Some(s),
            Object::Nic(n) => self.nics.get(&n.id) == Some(n),
            Object::Peer(p) => self.peers.get(&p.node) == Some(p),
            Object::SecurityGroup(g) => self.security_groups.get(&g.id) == Some(g),
            Object::ExternalNetwork(x) => self.external_networks.get(&x.id) == Some(x),
            Object::Eip(e) => self.eips.get(&e.id) == Some(e),
            Object::NatGateway(g) => self.nat_gateways.get(&g.id) == Some(g),
        }
    }

    /// NICs bound to this node.
    pub fn local_nics(&self) -> impl Iterator<Item = &Nic> {
        self.nics.values().filter(|n| n.node == self.node.name)
    }
}

fn diff_map<T: Clone + PartialEq>(
    from: &BTreeMap<String, T>,
    to: &BTreeMap<String, T>,
    out: &mut Vec<Change>,
    key: fn(String) -> ObjectKey,
    object: fn(T) -> Object,
) {
    for id in from.keys().filter(|id| !to.contains_key(*id)) {
        out.push(Change::Remove {
            key: key(id.clone()),
        });
    }
    for (id, value) in to {
        if from.get(id) != Some(value) {
            out.push(Change::Upsert {
                object: object(value.clone()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(id: &str, node: &str) -> Nic {
        Nic {
            id: id.into(),
            vpc_id: "vpc-1".into(),
            subnet_id: "subnet-1".into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            node: node.into(),
            port_security: true,
            security_groups: vec![],
            allowed_address_pairs: vec![],
        }
    }

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let mac: Mac = "02:0a:ff:00:10:01".parse().unwrap();
        assert_eq!(mac.0, [2, 0x0a, 0xff, 0, 0x10, 1]);
        assert_eq!(mac.to_string(), "02:0a:ff:00:10:01");
        for bad in [
            "",
            "02:00",
            "02:00:00:00:00:01:02",
            "zz:00:00:00:00:01",
            "2:0:0:0:0:1",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_contains() {
        let p = Ipv4Prefix {
            addr: Ipv4Addr::new(10, 0, 1, 0),
            len: 24,
        };
        assert!(p.contains(Ipv4Addr::new(10, 0, 1, 200)));
        assert!(!p.contains(Ipv4Addr::new(10, 0, 2, 1)));
        assert_eq!(p.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    }

    #[test]
    fn diff_then_apply_reaches_target() {
        let mut a = NodeState::default();
        a.nics.insert("nic-a".into(), nic("nic-a", "n1"));
        a.nics.insert("nic-b".into(), nic("nic-b", "n1"));
        let mut b = NodeState {
            revision: 9,
            ..NodeState::default()
        };
        b.nics.insert("nic-b".into(), nic("nic-b", "n2"));
        b.nics.insert("nic-c".into(), nic("nic-c", "n1"));
        b.security_groups.insert(
            "sg-1".into(),
            SecurityGroup {
                id: "sg-1".into(),
                vpc_id: "vpc-1".into(),
                rules: vec![],
            },
        );
        let changes = a.diff(&b);
        assert_eq!(changes.len(), 4);
        let mut c = a.clone();
        for ch in &changes {
            c.apply(ch);
        }
        c.revision = b.revision;
        assert_eq!(c, b);
    }

    #[test]
    fn security_types_have_a_stable_wire_form() {
        let rule = SgRule {
            id: "sgr-1".into(),
            direction: Direction::Ingress,
            protocol: RuleProtocol::Tcp {
                ports: Some(PortRange { min: 22, max: 23 }),
            },
            remote: Remote::Group("sg-2".into()),
        };
        let v = serde_json::to_value(&rule).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "sgr-1", "direction": "ingress", "protocol": "tcp",
                "ports": {"min": 22, "max": 23}, "remote": {"kind": "group", "value": "sg-2"}})
        );
        assert_eq!(serde_json::from_value::<SgRule>(v).unwrap(), rule);
        let icmp = SgRule {
            id: "sgr-2".into(),
            direction: Direction::Egress,
            protocol: RuleProtocol::Icmp {
                icmp_type: Some(8),
                icmp_code: None,
            },
            remote: Remote::Cidr(Ipv4Prefix {
                addr: Ipv4Addr::UNSPECIFIED,
                len: 0,
            }),
        };
        let back: SgRule = serde_json::from_str(&serde_json::to_string(&icmp).unwrap()).unwrap();
        assert_eq!(back, icmp);
        // A NIC written by an older flowctl has port security on, no groups.
        let old = r#"{"id":"n","vpc_id":"v","subnet_id":"s","mac":"02:00:00:00:00:01","ip":"10.0.0.5","node":"n1"}"#;
        let n: Nic = serde_json::from_str(old).unwrap();
        assert!(n.port_security && n.security_groups.is_empty());
    }

    #[test]
    fn source_addresses_include_pairs() {
        let mut n = nic("a", "n1");
        n.allowed_address_pairs = vec![
            AddressPair {
                ip: Ipv4Prefix {
                    addr: Ipv4Addr::new(10, 0, 9, 0),
                    len: 24,
                },
                mac: None,
            },
            AddressPair {
                ip: Ipv4Prefix::host(Ipv4Addr::new(10, 0, 0, 99)),
                mac: Some(Mac([2, 0, 0, 0, 0, 0x99])),
            },
        ];
        let got: Vec<_> = n.source_addresses().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (n.mac, Ipv4Prefix::host(n.ip)));
        assert_eq!(got[1].0, n.mac);
        assert_eq!(got[2].0, Mac([2, 0, 0, 0, 0, 0x99]));
    }
}
