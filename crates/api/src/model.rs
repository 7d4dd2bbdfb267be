//! The logical model as stored, and where each object lives in the store.
//!
//! Objects are JSON values under `/stacknet/<kind>/<id>`. Uniqueness of
//! business fields is kept by index keys written in the same transaction as
//! the object (created only if absent), never by a check-then-write.
//! flowctl reads the same types to compile per-node state.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use proto::Mac;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// At most this many nodes in one Set.
pub const MAX_NODES_PER_SET: usize = 45;

/// VXLAN leaves this many bytes of the underlay MTU for its headers.
pub const VXLAN_OVERHEAD: u16 = 50;

/// Store key prefixes. The model is under [`keys::ROOT`]; identity and
/// audit under [`keys::IAM`].
pub mod keys {
    pub const ROOT: &str = "/stacknet/";
    pub const NODES: &str = "/stacknet/nodes/";
    pub const VPCS: &str = "/stacknet/vpcs/";
    pub const SUBNETS: &str = "/stacknet/subnets/";
    pub const NICS: &str = "/stacknet/nics/";
    pub const SECURITY_GROUPS: &str = "/stacknet/security-groups/";
    pub const EXTERNAL_NETWORKS: &str = "/stacknet/external-networks/";
    pub const EIPS: &str = "/stacknet/eips/";
    pub const NAT_GATEWAYS: &str = "/stacknet/nat-gateways/";
    /// Status reported from the data path (NIC up/down). Kept apart from the
    /// intent so that status writes never trigger recompilation.
    pub const NIC_STATUS: &str = "/stacknet/status/nics/";
    /// Unique-field indexes: `/stacknet/index/<field>/<scope>/<value>` → id.
    pub const INDEX: &str = "/stacknet/index/";

    pub fn node(name: &str) -> String {
        format!("{NODES}{name}")
    }
    pub fn vpc(id: &str) -> String {
        format!("{VPCS}{id}")
    }
    pub fn subnet(id: &str) -> String {
        format!("{SUBNETS}{id}")
    }
    pub fn nic(id: &str) -> String {
        format!("{NICS}{id}")
    }
    pub fn security_group(id: &str) -> String {
        format!("{SECURITY_GROUPS}{id}")
    }
    pub fn nic_status(id: &str) -> String {
        format!("{NIC_STATUS}{id}")
    }
    pub fn external_network(id: &str) -> String {
        format!("{EXTERNAL_NETWORKS}{id}")
    }
    pub fn eip(id: &str) -> String {
        format!("{EIPS}{id}")
    }
    pub fn nat_gateway(id: &str) -> String {
        format!("{NAT_GATEWAYS}{id}")
    }

    /// Identity and audit live beside [`ROOT`], not under it, so that
    /// flowctl's listing and watch of the model never carry them.
    pub const IAM: &str = "/stacknet-iam/";
    pub const TENANTS: &str = "/stacknet-iam/tenants/";
    pub const USERS: &str = "/stacknet-iam/users/";
    pub const API_KEYS: &str = "/stacknet-iam/keys/";
    /// `/stacknet-iam/audit/<tenant>/<ms since epoch, 13 digits>-<random>`:
    /// a tenant's records list in time order.
    pub const AUDIT: &str = "/stacknet-iam/audit/";
    /// `/stacknet-iam/replay/<key id>/<nonce>`: nonces of committed
    /// mutations, attached to a lease that outlives the signing window.
    pub const REPLAY: &str = "/stacknet-iam/replay/";
    /// `/stacknet-iam/idempotency/<tenant>/<sha256 of the key>`: the stored
    /// answer of a create made with an idempotency key.
    pub const IDEMPOTENCY: &str = "/stacknet-iam/idempotency/";
    /// `/stacknet-iam/idempotency-lock/<tenant>/<sha256 of the key>`: the
    /// in-flight marker of a create with that key, on a short lease.
    pub const IDEMPOTENCY_LOCK: &str = "/stacknet-iam/idempotency-lock/";
    /// `/stacknet-iam/quota/<tenant>/limits` (the tenant's limits) and
    /// `.../usage/<kind>/<shard>` (usage counters, see `http::quota`).
    pub const QUOTA: &str = "/stacknet-iam/quota/";
    /// Unique names of tenants and users: `<kind>/<name>` → id.
    pub const IAM_INDEX: &str = "/stacknet-iam/index/";

    pub fn tenant(id: &str) -> String {
        format!("{TENANTS}{id}")
    }
    pub fn user(id: &str) -> String {
        format!("{USERS}{id}")
    }
    pub fn api_key(key_id: &str) -> String {
        format!("{API_KEYS}{key_id}")
    }
    pub fn audit_prefix(tenant_id: &str) -> String {
        format!("{AUDIT}{tenant_id}/")
    }
    pub fn replay(key_id: &str, nonce: &str) -> String {
        format!("{REPLAY}{key_id}/{nonce}")
    }
    pub fn tenant_name(name: &str) -> String {
        format!("{IAM_INDEX}tenant-name/{name}")
    }
    pub fn user_name(name: &str) -> String {
        format!("{IAM_INDEX}user-name/{name}")
    }
}

/// A tenant resource as stored and shown: the resource and the tenant
/// (project) that owns it. Children (subnets, NICs, security groups) carry
/// their VPC's tenant. The tenant is kept beside the model types, which
/// flowctl reads and does not need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Owned<T> {
    /// The tenant that owns the resource ("" for records written before
    /// tenants existed: only a system admin sees them).
    #[serde(default)]
    pub tenant_id: String,
    /// The store revision of the resource's last change; its `ETag` is
    /// this number in quotes (`If-Match` takes it). Filled in when the API
    /// answers; not stored (0 there, and left out).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// The tenant's labels of the resource (lists filter on them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    pub inner: T,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<T> Owned<T> {
    pub fn new(tenant_id: impl Into<String>, inner: T) -> Self {
        Owned {
            tenant_id: tenant_id.into(),
            revision: 0,
            tags: Default::default(),
            inner,
        }
    }

    pub fn with_tags(mut self, tags: std::collections::BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }

    /// The value as answered: with the revision it was read or written at.
    pub fn at(mut self, revision: u64) -> Self {
        self.revision = revision;
        self
    }
}

impl<T> std::ops::Deref for Owned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> std::ops::DerefMut for Owned<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// What a user may do. `system_admin` and `operator` are global;
/// the others act only inside the user's own tenant.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, in every tenant.
    SystemAdmin,
    /// Nodes and Sets (the infrastructure); no tenant resources.
    Operator,
    /// Everything in the tenant, its users and their keys included.
    TenantAdmin,
    /// Creates, changes and deletes the tenant's network resources.
    Member,
    /// Reads the tenant's resources and audit.
    Reader,
}

/// A tenant (project): the unit resources, quotas and audit belong to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    /// Unique.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub created_at: String,
}

/// A user as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    /// Unique; the login name for HTTP Basic (key creation only).
    pub name: String,
    pub tenant_id: String,
    pub role: Role,
    pub created_at: String,
}

/// A user as stored: with the argon2id PHC string of the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    #[serde(flatten)]
    pub user: User,
    pub password_hash: String,
}

/// An API key as the API shows it (the secret only once, at creation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub key_id: String,
    pub user_id: String,
    pub created_at: String,
}

/// An API key as stored: the secret sealed (ChaCha20-Poly1305) under a key
/// derived from the server's master secret, which is not in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    #[serde(flatten)]
    pub key: ApiKey,
    /// hex(nonce ‖ ciphertext ‖ tag), the key id as associated data.
    pub sealed_secret: String,
}

/// One mutating request: who, what, when, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// The tenant the request acted in (the resource's, else the caller's).
    pub tenant_id: String,
    pub user_id: String,
    /// The API key that signed the request ("" for password logins).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    pub method: String,
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `succeeded` (written in the same transaction as the change) or
    /// `failed` (nothing was changed).
    pub outcome: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Compute,
    Gateway,
}

/// A node (hypervisor) that runs a vswitch-agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// Unique; also the identity the agent presents.
    pub name: String,
    /// The Set (group of at most 45 nodes) the node belongs to.
    pub set: String,
    #[schema(value_type = String, example = "192.0.2.11")]
    pub underlay_ip: Ipv4Addr,
    pub roles: Vec<NodeRole>,
    /// Set by an operator before stopping the node: it leaves every NAT
    /// gateway's ranking (traffic moves to the next gateway node).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// Gateway nodes with a higher priority come first in a NAT gateway's
    /// ranking (ties broken by a stable hash of gateway and node).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub gateway_priority: u32,
    pub created_at: String,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// A tenant network: one VXLAN segment, one or more IPv4 CIDRs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Vpc {
    pub id: String,
    pub name: String,
    /// The Set the VPC lives in; its overlay traffic stays inside it.
    pub set: String,
    #[schema(value_type = Vec<String>, example = json!(["10.0.0.0/16"]))]
    pub cidrs: Vec<Ipv4Net>,
    /// Allocated uniquely, 24 bits.
    pub vni: u32,
    /// The group created with the VPC: egress allowed, ingress only from
    /// its own members. New NICs join it unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_security_group_id: Option<String>,
    /// The external networks the VPC is attached to: its NICs may get EIPs
    /// of them and its NAT gateways may use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_network_ids: Vec<String>,
    pub created_at: String,
}

/// A subnet of a VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subnet {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    #[schema(value_type = String, example = "10.0.1.0/24")]
    pub cidr: Ipv4Net,
    #[schema(value_type = String, example = "10.0.1.1")]
    pub gateway_ip: Ipv4Addr,
    /// The distributed router's MAC on this subnet.
    #[schema(value_type = String, example = "02:5e:00:00:00:01")]
    pub gateway_mac: Mac,
    #[schema(value_type = Vec<String>)]
    pub dns_servers: Vec<Ipv4Addr>,
    /// The MTU of the VM interfaces (already leaves VXLAN headroom).
    pub mtu: u16,
    pub created_at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum NicStatus {
    /// Not bound to a node, or its flows are not installed yet.
    #[default]
    Down,
    /// Its flows are installed on its node.
    Up,
}

/// A virtual NIC: one MAC and one IPv4 address in a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Nic {
    pub id: String,
    pub name: String,
    pub subnet_id: String,
    pub vpc_id: String,
    #[schema(value_type = String, example = "02:00:00:12:34:56")]
    pub mac: Mac,
    #[schema(value_type = String, example = "10.0.1.10")]
    pub ip: Ipv4Addr,
    /// The node the NIC is bound to, if any.
    pub node: Option<String>,
    /// The OVS `external_ids:iface-id` of the interface; the NIC id.
    pub interface_id: String,
    /// Anti-spoofing and security groups are enforced. Off: neither (and
    /// the NIC has no groups and no address pairs).
    #[serde(default = "enabled")]
    pub port_security: bool,
    /// Security groups (of the NIC's VPC) the NIC is a member of.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Extra source addresses the NIC may use (VRRP, a VM routing for a
    /// network behind it).
    #[serde(default)]
    pub allowed_address_pairs: Vec<AllowedAddressPair>,
    pub created_at: String,
}

fn enabled() -> bool {
    true
}

/// An extra source address of a NIC.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct AllowedAddressPair {
    /// An IPv4 address or prefix.
    #[schema(value_type = String, example = "10.0.1.100/32")]
    pub ip_address: Ipv4Net,
    /// The MAC used with it; the NIC's own if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "02:00:00:12:34:99")]
    pub mac_address: Option<Mac>,
}

/// Which connections a rule admits: those the NIC accepts (ingress) or
/// those it opens (egress). Return traffic of an admitted connection always
/// passes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// One allow rule. The remote side is `remote_cidr` or the members of
/// `remote_group_id`; anyone (0.0.0.0/0) if neither is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupRule {
    pub id: String,
    pub direction: Direction,
    pub protocol: Protocol,
    /// TCP/UDP only; both absent means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u16>,
    /// ICMP only; absent means every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP with a type only; absent means every code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "192.0.2.0/24")]
    pub remote_cidr: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl SecurityGroupRule {
    /// Whether two rules admit exactly the same traffic (ids and
    /// descriptions aside).
    pub fn same_match(&self, other: &SecurityGroupRule) -> bool {
        self.direction == other.direction
            && self.protocol == other.protocol
            && self.port_range_min == other.port_range_min
            && self.port_range_max == other.port_range_max
            && self.icmp_type == other.icmp_type
            && self.icmp_code == other.icmp_code
            && self.remote_cidr == other.remote_cidr
            && self.remote_group_id == other.remote_group_id
    }
}

/// A security group: a set of allow rules, scoped to one VPC. A NIC's
/// traffic passes if any rule of any of its groups allows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The VPC's default group; deleted with the VPC, not before.
    #[serde(default)]
    pub is_default: bool,
    pub rules: Vec<SecurityGroupRule>,
    pub created_at: String,
}

/// The data-path status of a NIC, written by flowctl from agent acks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicStatusRecord {
    pub status: NicStatus,
    /// The node that reported it.
    pub node: String,
    /// The store revision whose flows the node had installed.
    pub revision: u64,
}

/// An inclusive range of addresses of an external network's EIP pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct AddressRange {
    #[schema(value_type = String, example = "203.0.113.10")]
    pub first: Ipv4Addr,
    #[schema(value_type = String, example = "203.0.113.99")]
    pub last: Ipv4Addr,
}

impl AddressRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

/// A network outside the overlay ("the Internet" side), defined by an
/// operator: where EIPs come from and which nodes reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExternalNetwork {
    pub id: String,
    /// Unique.
    pub name: String,
    /// The label each attached node maps to one of its interfaces.
    pub physnet: String,
    #[schema(value_type = String, example = "203.0.113.0/24")]
    pub cidr: Ipv4Net,
    /// The outside router; inside `cidr`, outside the pool.
    #[schema(value_type = String, example = "203.0.113.1")]
    pub gateway_ip: Ipv4Addr,
    /// The addresses EIPs are allocated from, inside `cidr`.
    pub pool: Vec<AddressRange>,
    /// Names of the nodes attached: compute nodes that may host EIPs and
    /// gateway nodes that may serve NAT gateways.
    pub nodes: Vec<String>,
    pub created_at: String,
}

/// An elastic IP: an address of an external network's pool, bound to at
/// most one NIC (1:1 NAT on the NIC's node) or owned by a NAT gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Eip {
    pub id: String,
    /// The EIP id if not given.
    pub name: String,
    pub external_network_id: String,
    #[schema(value_type = String, example = "203.0.113.10")]
    pub ip: Ipv4Addr,
    /// The MAC the EIP answers ARP with on the external network.
    #[schema(value_type = String, example = "02:00:00:12:34:56")]
    pub mac: Mac,
    /// Bandwidth limit in each direction, kbit/s; none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_kbps: Option<u32>,
    /// The NIC the EIP is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_id: Option<String>,
    /// The NAT gateway that owns the EIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateway_id: Option<String>,
    pub created_at: String,
}

/// The transport protocol of a DNAT rule.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum L4Protocol {
    Tcp,
    Udp,
}

impl L4Protocol {
    pub fn name(self) -> &'static str {
        match self {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
        }
    }
}

/// Sources of the gateway's VPC that leave with `eip_id` as source address.
/// Exactly one of `subnet_id`, `nic_id`, `cidr` was given; `source_cidr`
/// is what it resolved to when the rule was made (subnet CIDRs and NIC
/// addresses do not change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnatRule {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10.0.1.0/24")]
    pub cidr: Option<Ipv4Net>,
    #[schema(value_type = String, example = "10.0.1.0/24")]
    pub source_cidr: Ipv4Net,
    pub eip_id: String,
}

/// Connections to `eip_id:external_port` forwarded to
/// `internal_ip:internal_port` (a NIC's address when `nic_id` was given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DnatRule {
    pub id: String,
    pub protocol: L4Protocol,
    pub eip_id: String,
    pub external_port: u16,
    #[schema(value_type = String, example = "10.0.1.10")]
    pub internal_ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_id: Option<String>,
    pub internal_port: u16,
}

/// A NAT gateway of a VPC: SNAT for NICs without their own EIP and DNAT
/// port forwards, served by the gateway nodes of its external network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NatGateway {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    pub external_network_id: String,
    /// EIPs owned by the gateway (at least one).
    pub eip_ids: Vec<String>,
    /// The MAC compute nodes address the VPC's outbound packets to; unique
    /// in the VPC like a NIC's.
    #[schema(value_type = String, example = "02:00:00:12:34:56")]
    pub mac: Mac,
    #[serde(default)]
    pub snat_rules: Vec<SnatRule>,
    #[serde(default)]
    pub dnat_rules: Vec<DnatRule>,
    pub created_at: String,
}

/// A stable 64-bit FNV-1a hash: the same on every replica and release,
/// unlike std's randomly seeded hasher.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The gateway nodes of NAT gateway `gateway_id`, best first: the nodes of
/// `network` that exist and have the gateway role, drained ones last, then
/// by `gateway_priority` (higher first), then by a stable hash of (gateway,
/// node) so that the gateways of one network spread over its nodes. A
/// drained node stays ranked (last) so that traffic moves off it without a
/// break: it still translates what reaches it during the change-over, and
/// it is the last resort if every other gateway fails. The API shows this
/// ranking and flowctl compiles it; both call this function.
pub fn gateway_ranking<'a>(
    gateway_id: &str,
    network: &ExternalNetwork,
    node: impl Fn(&str) -> Option<&'a Node>,
) -> Vec<String> {
    let mut ranked: Vec<(bool, u32, u64, &str)> = network
        .nodes
        .iter()
        .filter_map(|name| {
            let n = node(name)?;
            n.roles.contains(&NodeRole::Gateway).then(|| {
                (
                    n.drained,
                    n.gateway_priority,
                    fnv1a(&[gateway_id, name.as_str()]),
                    name.as_str(),
                )
            })
        })
        .collect();
    ranked.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(b.3))
    });
    ranked.dedup_by(|a, b| a.3 == b.3);
    ranked
        .into_iter()
        .map(|(_, _, _, n)| n.to_string())
        .collect()
}
