//! The operator CLI: `flowctl node|vpc|subnet|nic|sg create|list|show|update|delete`,
//! `flowctl sg rule add|delete` and `flowctl op list|show` against the REST
//! API. A thin layer: arguments become the API's JSON, the API's JSON
//! becomes a table (or is printed as is with `-o json`), and an API problem
//! becomes an error carrying its detail.
//!
//! Changes the API answers with `202 Accepted` (NICs, security groups and
//! rules: they are programmed on nodes) print their operation; with
//! `--wait` the CLI follows the operation until it ends and prints the
//! resource as it is then (an operation that failed is an error).

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Compute,
    Gateway,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Compute => "compute",
            Role::Gateway => "gateway",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Registers a node.
    Create {
        name: String,
        #[arg(long)]
        underlay_ip: String,
        /// The Set to join ("default" if omitted).
        #[arg(long)]
        set: Option<String>,
        /// Repeat for several roles (compute if omitted).
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
    List {
        #[arg(long)]
        set: Option<String>,
    },
    Show {
        name: String,
    },
    Update {
        name: String,
        #[arg(long)]
        underlay_ip: Option<String>,
        #[arg(long)]
        set: Option<String>,
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VpcCmd {
    Create {
        name: String,
        /// Repeat for several CIDRs.
        #[arg(long = "cidr", required = true)]
        cidrs: Vec<String>,
        #[arg(long)]
        set: Option<String>,
    },
    List,
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubnetCmd {
    Create {
        #[arg(long = "vpc")]
        vpc_id: String,
        #[arg(long)]
        cidr: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        gateway_ip: Option<String>,
        /// Repeat for several servers.
        #[arg(long = "dns")]
        dns_servers: Vec<String>,
        #[arg(long)]
        mtu: Option<u16>,
    },
    List {
        #[arg(long = "vpc")]
        vpc_id: Option<String>,
    },
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "dns")]
        dns_servers: Vec<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NicCmd {
    Create {
        #[arg(long = "subnet")]
        subnet_id: String,
        #[arg(long)]
        name: Option<String>,
        /// Allocated from the subnet if omitted.
        #[arg(long)]
        ip: Option<String>,
        /// Generated if omitted.
        #[arg(long)]
        mac: Option<String>,
        /// Bind to this node.
        #[arg(long)]
        node: Option<String>,
        /// Repeat for several groups; the VPC's default group if omitted.
        #[arg(long = "security-group", conflicts_with = "no_security_groups")]
        security_groups: Vec<String>,
        /// Join no group (all traffic denied until one is added).
        #[arg(long)]
        no_security_groups: bool,
        /// Turn anti-spoofing and security groups off for this NIC.
        #[arg(long)]
        no_port_security: bool,
        /// `IP[/LEN][,MAC]`; repeat for several.
        #[arg(long = "allowed-address-pair")]
        allowed_address_pairs: Vec<String>,
    },
    List {
        #[arg(long = "subnet")]
        subnet_id: Option<String>,
        #[arg(long = "vpc")]
        vpc_id: Option<String>,
        #[arg(long)]
        node: Option<String>,
    },
    Show {
        id: String,
    },
    /// Renames, binds (`--node`) or unbinds (`--unbind`) a NIC, or changes
    /// its security.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, conflicts_with = "unbind")]
        node: Option<String>,
        #[arg(long)]
        unbind: bool,
        /// Replaces the NIC's groups; repeat for several.
        #[arg(long = "security-group", conflicts_with = "no_security_groups")]
        security_groups: Vec<String>,
        /// Leaves every group.
        #[arg(long)]
        no_security_groups: bool,
        /// `true` or `false`.
        #[arg(long)]
        port_security: Option<bool>,
        /// Replaces the NIC's pairs: `IP[/LEN][,MAC]`; repeat for several.
        #[arg(
            long = "allowed-address-pair",
            conflicts_with = "no_allowed_address_pairs"
        )]
        allowed_address_pairs: Vec<String>,
        /// Removes every allowed address pair.
        #[arg(long)]
        no_allowed_address_pairs: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Ingress,
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Any,
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Subcommand)]
pub enum SgCmd {
    /// Creates a security group (with no rules: it admits nothing yet).
    Create {
        name: String,
        #[arg(long = "vpc")]
        vpc_id: String,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        #[arg(long = "vpc")]
        vpc_id: Option<String>,
    },
    /// Shows a group and its rules.
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        id: String,
    },
    /// Rules of a group.
    #[command(subcommand)]
    Rule(RuleCmd),
}

#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    /// Adds an allow rule to GROUP.
    Add {
        group: String,
        #[arg(long, value_enum)]
        direction: DirectionArg,
        #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
        protocol: ProtocolArg,
        /// `PORT` or `MIN-MAX` (tcp and udp).
        #[arg(long)]
        port: Option<String>,
        #[arg(long)]
        icmp_type: Option<u8>,
        #[arg(long)]
        icmp_code: Option<u8>,
        /// The remote side as an IPv4 address or CIDR (anyone if neither
        /// this nor --remote-group is given).
        #[arg(long, conflicts_with = "remote_group")]
        remote_cidr: Option<String>,
        /// The remote side as the members of a group of the same VPC.
        #[arg(long)]
        remote_group: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Removes rule RULE from GROUP.
    Delete { group: String, rule: String },
}

#[derive(Debug, Subcommand)]
pub enum OpCmd {
    /// The operations of the caller's tenant.
    List {
        /// pending, running, succeeded or failed.
        #[arg(long)]
        state: Option<String>,
        /// Only those about this resource id.
        #[arg(long)]
        target: Option<String>,
    },
    Show {
        id: String,
    },
}

/// A resource command.
#[derive(Debug, Subcommand)]
pub enum ResourceCmd {
    /// Nodes (hypervisors running an agent).
    #[command(subcommand)]
    Node(NodeCmd),
    /// VPCs.
    #[command(subcommand)]
    Vpc(VpcCmd),
    /// Subnets of a VPC.
    #[command(subcommand)]
    Subnet(SubnetCmd),
    /// NICs.
    #[command(subcommand)]
    Nic(NicCmd),
    /// Security groups and their rules.
    #[command(subcommand)]
    Sg(SgCmd),
    /// Asynchronous operations (of NIC and security group changes).
    #[command(subcommand)]
    Op(OpCmd),
}

/// Where the API is and how to print.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The REST API.
    #[arg(
        long,
        env = "STACKNET_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api: String,
    /// A JSON file with the API key pair (`key_id`, `secret`), as
    /// `flowctl serve --admin-credentials` writes it. Without it, the pair
    /// is taken from STACKNET_KEY_ID and STACKNET_SECRET.
    #[arg(long, env = "STACKNET_CREDENTIALS", global = true)]
    pub credentials: Option<std::path::PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// For a change answered with an operation: wait until it ends (every
    /// affected node programmed, or failed) and print the resource.
    #[arg(long, global = true)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 60, global = true)]
    pub wait_timeout: u64,
    /// For a change answered with an operation: where the API POSTs the
    /// operation, signed, when it ends.
    #[arg(long, global = true)]
    pub callback_url: Option<String>,
}

impl ApiArgs {
    /// The key pair requests are signed with.
    pub fn key_pair(&self) -> Result<proto::sign::Credentials> {
        if let Some(path) = &self.credentials {
            let raw = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read credentials file {}: {e}",
                    path.display()
                ))
            })?;
            let v: Value = serde_json::from_slice(&raw).map_err(|e| {
                Error::Config(format!(
                    "credentials file {} is not JSON: {e}",
                    path.display()
                ))
            })?;
            let field = |f: &str| {
                v.get(f)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::Config(format!("credentials file {} has no `{f}`", path.display()))
                    })
            };
            return Ok(proto::sign::Credentials {
                key_id: field("key_id")?,
                secret: field("secret")?,
            });
        }
        match (
            std::env::var("STACKNET_KEY_ID"),
            std::env::var("STACKNET_SECRET"),
        ) {
            (Ok(key_id), Ok(secret)) => Ok(proto::sign::Credentials { key_id, secret }),
            _ => Err(Error::Config(
                "no API credentials: pass --credentials FILE (or STACKNET_CREDENTIALS), or set \
                 STACKNET_KEY_ID and STACKNET_SECRET"
                    .into(),
            )),
        }
    }
}

/// One HTTP call to make.
#[derive(Debug, PartialEq)]
struct Call {
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
    /// What the answer is, for printing.
    kind: Kind,
}

/// `IP[/LEN][,MAC]` as the API's address pair.
fn address_pair(s: &str) -> Value {
    match s.split_once(',') {
        Some((ip, mac)) => json!({"ip_address": ip.trim(), "mac_address": mac.trim()}),
        None => json!({"ip_address": s.trim()}),
    }
}

/// `PORT` or `MIN-MAX` as the API's range; anything else is passed on as
/// is for the API to refuse with its own message.
fn port_range(s: &str) -> (Value, Option<Value>) {
    let num = |p: &str| {
        p.trim()
            .parse::<u64>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(p.trim()))
    };
    match s.split_once('-') {
        Some((a, b)) => (num(a), Some(num(b))),
        None => (num(s), None),
    }
}

/// A rule as one table row.
fn rule_row(r: &Value) -> Vec<String> {
    let ports = match (r.get("port_range_min"), r.get("port_range_max")) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => match (r.get("icmp_type"), r.get("icmp_code")) {
            (Some(t), Some(c)) => format!("type {t} code {c}"),
            (Some(t), None) => format!("type {t}"),
            _ => "any".into(),
        },
    };
    let remote = match (r.get("remote_group_id"), r.get("remote_cidr")) {
        (Some(Value::String(g)), _) => format!("group {g}"),
        (_, Some(Value::String(c))) => c.clone(),
        _ => "0.0.0.0/0".into(),
    };
    vec![
        cell(r.get("id")),
        cell(r.get("direction")),
        cell(r.get("protocol")),
        ports,
        remote,
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Vpc,
    Subnet,
    Nic,
    Sg,
    Rule,
    Op,
}

impl Kind {
    /// Changes of these are answered with an operation.
    fn is_async(self) -> bool {
        matches!(self, Kind::Nic | Kind::Sg | Kind::Rule)
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Vpc => "VPC",
            Kind::Subnet => "subnet",
            Kind::Nic => "NIC",
            Kind::Sg => "security group",
            Kind::Rule => "rule",
            Kind::Op => "operation",
        }
    }

    /// Table columns: header and JSON field.
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Node => &[
                ("NAME", "name"),
                ("SET", "set"),
                ("UNDERLAY IP", "underlay_ip"),
                ("ROLES", "roles"),
            ],
            Kind::Vpc => &[
                ("ID", "id"),
                ("NAME", "name"),
                ("SET", "set"),
                ("CIDRS", "cidrs"),
                ("VNI", "vni"),
            ],
            Kind::Subnet => &[
                ("ID", "id"),
                ("NAME", "name"),
                ("VPC", "vpc_id"),
                ("CIDR", "cidr"),
                ("GATEWAY", "gateway_ip"),
                ("MTU", "mtu"),
            ],
            Kind::Nic => &[
                ("ID", "id"),
                ("NAME", "name"),
                ("SUBNET", "subnet_id"),
                ("IP", "ip"),
                ("MAC", "mac"),
                ("NODE", "node"),
                ("STATUS", "status"),
            ],
            Kind::Sg => &[
                ("ID", "id"),
                ("NAME", "name"),
                ("VPC", "vpc_id"),
                ("DEFAULT", "is_default"),
            ],
            Kind::Rule => &[
                ("ID", "id"),
                ("DIRECTION", "direction"),
                ("PROTOCOL", "protocol"),
            ],
            Kind::Op => &[
                ("ID", "id"),
                ("STATE", "state"),
                ("ACTION", "action"),
                ("KIND", "target.kind"),
                ("TARGET", "target.id"),
                ("WAITING ON", "waiting_on"),
            ],
        }
    }
}

fn obj(pairs: Vec<(&str, Option<Value>)>) -> Value {
    let map: Map<String, Value> = pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
    Value::Object(map)
}

fn some_vec(v: Vec<String>) -> Option<Value> {
    (!v.is_empty()).then(|| json!(v))
}

fn roles(r: &[Role]) -> Option<Value> {
    (!r.is_empty()).then(|| json!(r.iter().map(|r| r.as_str()).collect::<Vec<_>>()))
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn call(method: reqwest::Method, path: String, body: Option<Value>, kind: Kind) -> Call {
    Call {
        method,
        path,
        body,
        kind,
    }
}

/// The HTTP call a command makes.
fn plan(cmd: &ResourceCmd) -> Call {
    use reqwest::Method as M;
    match cmd {
        ResourceCmd::Node(c) => {
            let k = Kind::Node;
            match c {
                NodeCmd::Create {
                    name,
                    underlay_ip,
                    set,
                    roles: r,
                } => call(
                    M::POST,
                    "/v1/nodes".into(),
                    Some(obj(vec![
                        ("name", Some(json!(name))),
                        ("underlay_ip", Some(json!(underlay_ip))),
                        ("set", set.as_ref().map(|s| json!(s))),
                        ("roles", roles(r)),
                    ])),
                    k,
                ),
                NodeCmd::List { set } => call(
                    M::GET,
                    format!("/v1/nodes{}", query(&[("set", set)])),
                    None,
                    k,
                ),
                NodeCmd::Show { name } => {
                    call(M::GET, format!("/v1/nodes/{}", encode(name)), None, k)
                }
                NodeCmd::Update {
                    name,
                    underlay_ip,
                    set,
                    roles: r,
                } => call(
                    M::PATCH,
                    format!("/v1/nodes/{}", encode(name)),
                    Some(obj(vec![
                        ("underlay_ip", underlay_ip.as_ref().map(|s| json!(s))),
                        ("set", set.as_ref().map(|s| json!(s))),
                        ("roles", roles(r)),
                    ])),
                    k,
                ),
                NodeCmd::Delete { name } => {
                    call(M::DELETE, format!("/v1/nodes/{}", encode(name)), None, k)
                }
            }
        }
        ResourceCmd::Vpc(c) => {
            let k = Kind::Vpc;
            match c {
                VpcCmd::Create { name, cidrs, set } => call(
                    M::POST,
                    "/v1/vpcs".into(),
                    Some(obj(vec![
                        ("name", Some(json!(name))),
                        ("cidrs", Some(json!(cidrs))),
                        ("set", set.as_ref().map(|s| json!(s))),
                    ])),
                    k,
                ),
                VpcCmd::List => call(M::GET, "/v1/vpcs".into(), None, k),
                VpcCmd::Show { id } => call(M::GET, format!("/v1/vpcs/{}", encode(id)), None, k),
                VpcCmd::Update { id, name } => call(
                    M::PATCH,
                    format!("/v1/vpcs/{}", encode(id)),
                    Some(obj(vec![("name", name.as_ref().map(|s| json!(s)))])),
                    k,
                ),
                VpcCmd::Delete { id } => {
                    call(M::DELETE, format!("/v1/vpcs/{}", encode(id)), None, k)
                }
            }
        }
        ResourceCmd::Subnet(c) => {
            let k = Kind::Subnet;
            match c {
                SubnetCmd::Create {
                    vpc_id,
                    cidr,
                    name,
                    gateway_ip,
                    dns_servers,
                    mtu,
                } => call(
                    M::POST,
                    "/v1/subnets".into(),
                    Some(obj(vec![
                        ("vpc_id", Some(json!(vpc_id))),
                        ("cidr", Some(json!(cidr))),
                        ("name", name.as_ref().map(|s| json!(s))),
                        ("gateway_ip", gateway_ip.as_ref().map(|s| json!(s))),
                        ("dns_servers", some_vec(dns_servers.clone())),
                        ("mtu", mtu.map(|m| json!(m))),
                    ])),
                    k,
                ),
                SubnetCmd::List { vpc_id } => call(
                    M::GET,
                    format!("/v1/subnets{}", query(&[("vpc_id", vpc_id)])),
                    None,
                    k,
                ),
                SubnetCmd::Show { id } => {
                    call(M::GET, format!("/v1/subnets/{}", encode(id)), None, k)
                }
                SubnetCmd::Update {
                    id,
                    name,
                    dns_servers,
                } => call(
                    M::PATCH,
                    format!("/v1/subnets/{}", encode(id)),
                    Some(obj(vec![
                        ("name", name.as_ref().map(|s| json!(s))),
                        ("dns_servers", some_vec(dns_servers.clone())),
                    ])),
                    k,
                ),
                SubnetCmd::Delete { id } => {
                    call(M::DELETE, format!("/v1/subnets/{}", encode(id)), None, k)
                }
            }
        }
        ResourceCmd::Nic(c) => {
            let k = Kind::Nic;
            match c {
                NicCmd::Create {
                    subnet_id,
                    name,
                    ip,
                    mac,
                    node,
                    security_groups,
                    no_security_groups,
                    no_port_security,
                    allowed_address_pairs,
                } => call(
                    M::POST,
                    "/v1/nics".into(),
                    Some(obj(vec![
                        ("subnet_id", Some(json!(subnet_id))),
                        ("name", name.as_ref().map(|s| json!(s))),
                        ("ip", ip.as_ref().map(|s| json!(s))),
                        ("mac", mac.as_ref().map(|s| json!(s))),
                        ("node", node.as_ref().map(|s| json!(s))),
                        (
                            "security_groups",
                            groups_arg(security_groups, *no_security_groups),
                        ),
                        ("port_security", no_port_security.then(|| json!(false))),
                        (
                            "allowed_address_pairs",
                            pairs_arg(allowed_address_pairs, false),
                        ),
                    ])),
                    k,
                ),
                NicCmd::List {
                    subnet_id,
                    vpc_id,
                    node,
                } => call(
                    M::GET,
                    format!(
                        "/v1/nics{}",
                        query(&[("subnet_id", subnet_id), ("vpc_id", vpc_id), ("node", node)])
                    ),
                    None,
                    k,
                ),
                NicCmd::Show { id } => call(M::GET, format!("/v1/nics/{}", encode(id)), None, k),
                NicCmd::Update {
                    id,
                    name,
                    node,
                    unbind,
                    security_groups,
                    no_security_groups,
                    port_security,
                    allowed_address_pairs,
                    no_allowed_address_pairs,
                } => {
                    // `"node": null` unbinds; an absent field leaves it.
                    let node = if *unbind {
                        Some(Value::Null)
                    } else {
                        node.as_ref().map(|s| json!(s))
                    };
                    call(
                        M::PATCH,
                        format!("/v1/nics/{}", encode(id)),
                        Some(obj(vec![
                            ("name", name.as_ref().map(|s| json!(s))),
                            ("node", node),
                            (
                                "security_groups",
                                groups_arg(security_groups, *no_security_groups),
                            ),
                            ("port_security", port_security.map(|b| json!(b))),
                            (
                                "allowed_address_pairs",
                                pairs_arg(allowed_address_pairs, *no_allowed_address_pairs),
                            ),
                        ])),
                        k,
                    )
                }
                NicCmd::Delete { id } => {
                    call(M::DELETE, format!("/v1/nics/{}", encode(id)), None, k)
                }
            }
        }
        ResourceCmd::Sg(c) => plan_sg(c),
        ResourceCmd::Op(c) => match c {
            OpCmd::List { state, target } => call(
                M::GET,
                format!(
                    "/v1/operations{}",
                    query(&[("state", state), ("target_id", target)])
                ),
                None,
                Kind::Op,
            ),
            OpCmd::Show { id } => call(
                M::GET,
                format!("/v1/operations/{}", encode(id)),
                None,
                Kind::Op,
            ),
        },
    }
}

/// Adds `--callback-url` to a change answered with an operation: a body
/// field, or a query parameter of a DELETE (which has no body).
fn with_callback(mut c: Call, url: Option<&str>) -> Call {
    let Some(url) = url else {
        return c;
    };
    if !c.kind.is_async() || c.method == reqwest::Method::GET {
        return c;
    }
    match &mut c.body {
        Some(Value::Object(m)) => {
            m.insert("callback_url".into(), json!(url));
        }
        _ => {
            let sep = if c.path.contains('?') { '&' } else { '?' };
            c.path = format!("{}{sep}callback_url={}", c.path, encode(url));
        }
    }
    c
}

/// `--security-group` values, or `[]` with `--no-security-groups`; absent
/// (the API's default) if neither was given.
fn groups_arg(groups: &[String], none: bool) -> Option<Value> {
    if none {
        Some(json!([]))
    } else {
        some_vec(groups.to_vec())
    }
}

fn pairs_arg(pairs: &[String], none: bool) -> Option<Value> {
    if none {
        Some(json!([]))
    } else {
        (!pairs.is_empty())
            .then(|| json!(pairs.iter().map(|p| address_pair(p)).collect::<Vec<_>>()))
    }
}

fn plan_sg(c: &SgCmd) -> Call {
    use reqwest::Method as M;
    let k = Kind::Sg;
    let path = |id: &str| format!("/v1/security-groups/{}", encode(id));
    match c {
        SgCmd::Create {
            name,
            vpc_id,
            description,
        } => call(
            M::POST,
            "/v1/security-groups".into(),
            Some(obj(vec![
                ("vpc_id", Some(json!(vpc_id))),
                ("name", Some(json!(name))),
                ("description", description.as_ref().map(|s| json!(s))),
            ])),
            k,
        ),
        SgCmd::List { vpc_id } => call(
            M::GET,
            format!("/v1/security-groups{}", query(&[("vpc_id", vpc_id)])),
            None,
            k,
        ),
        SgCmd::Show { id } => call(M::GET, path(id), None, k),
        SgCmd::Update {
            id,
            name,
            description,
        } => call(
            M::PATCH,
            path(id),
            Some(obj(vec![
                ("name", name.as_ref().map(|s| json!(s))),
                ("description", description.as_ref().map(|s| json!(s))),
            ])),
            k,
        ),
        SgCmd::Delete { id } => call(M::DELETE, path(id), None, k),
        SgCmd::Rule(RuleCmd::Add {
            group,
            direction,
            protocol,
            port,
            icmp_type,
            icmp_code,
            remote_cidr,
            remote_group,
            description,
        }) => {
            let (min, max) = match port.as_deref().map(port_range) {
                Some((a, b)) => (Some(a), b),
                None => (None, None),
            };
            let direction = match direction {
                DirectionArg::Ingress => "ingress",
                DirectionArg::Egress => "egress",
            };
            let protocol = match protocol {
                ProtocolArg::Any => "any",
                ProtocolArg::Tcp => "tcp",
                ProtocolArg::Udp => "udp",
                ProtocolArg::Icmp => "icmp",
            };
            call(
                M::POST,
                format!("{}/rules", path(group)),
                Some(obj(vec![
                    ("direction", Some(json!(direction))),
                    ("protocol", Some(json!(protocol))),
                    ("port_range_min", min),
                    ("port_range_max", max),
                    ("icmp_type", icmp_type.map(|t| json!(t))),
                    ("icmp_code", icmp_code.map(|t| json!(t))),
                    ("remote_cidr", remote_cidr.as_ref().map(|s| json!(s))),
                    ("remote_group_id", remote_group.as_ref().map(|s| json!(s))),
                    ("description", description.as_ref().map(|s| json!(s))),
                ])),
                Kind::Rule,
            )
        }
        SgCmd::Rule(RuleCmd::Delete { group, rule }) => call(
            M::DELETE,
            format!("{}/rules/{}", path(group), encode(rule)),
            None,
            Kind::Rule,
        ),
    }
}

/// Runs a resource command against the API and returns what to print.
pub async fn run(args: &ApiArgs, cmd: &ResourceCmd) -> Result<String> {
    let c = with_callback(plan(cmd), args.callback_url.as_deref());
    let creds = args.key_pair()?;
    let client = reqwest::Client::new();
    let (status, text) = send(&client, args, &creds, &c.method, &c.path, c.body.as_ref()).await?;
    if status == 202 {
        return accepted(&client, args, &creds, &c, &text).await;
    }
    if c.method == reqwest::Method::DELETE {
        return Ok(deleted(args, &c));
    }
    print_value(args, c.kind, status, &text)
}

fn deleted(args: &ApiArgs, c: &Call) -> String {
    match args.output {
        Output::Json => String::new(),
        Output::Table => format!(
            "deleted {} {}",
            c.kind.noun(),
            c.path
                .split('?')
                .next()
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or("")
        ),
    }
}

fn print_value(args: &ApiArgs, kind: Kind, status: u16, text: &str) -> Result<String> {
    let value = parse(status, text)?;
    Ok(match args.output {
        Output::Json => serde_json::to_string_pretty(&value).unwrap_or_else(|_| text.to_string()),
        Output::Table => match &value {
            Value::Array(items) => table(kind, items),
            v if kind == Kind::Sg => group_details(v),
            v => details(v),
        },
    })
}

fn parse(status: u16, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Api {
        status,
        detail: format!("the API answered something that is not JSON: {e}"),
    })
}

/// One signed request; a non-2xx answer is an error with its problem.
async fn send(
    client: &reqwest::Client,
    args: &ApiArgs,
    creds: &proto::sign::Credentials,
    method: &reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    let url = format!("{}{}", args.api.trim_end_matches('/'), path);
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| Error::Config(format!("bad API address {url:?}: {e}")))?;
    let bytes = match body {
        Some(b) => serde_json::to_vec(b)
            .map_err(|e| Error::Config(format!("cannot encode the request: {e}")))?,
        None => vec![],
    };
    // Signed over exactly what goes on the wire: reqwest's parsed path
    // and query, and the body bytes.
    let authorization = proto::sign::authorization(
        creds,
        method.as_str(),
        parsed.path(),
        parsed.query().unwrap_or(""),
        &bytes,
        proto::sign::unix_now(),
        &proto::sign::new_nonce(),
    );
    let mut req = client
        .request(method.clone(), parsed)
        .header(reqwest::header::AUTHORIZATION, authorization);
    if body.is_some() {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
    }
    let resp = req.send().await.map_err(|source| Error::Request {
        url: url.clone(),
        source,
    })?;
    let status = resp.status();
    let text = resp.text().await.map_err(|source| Error::Request {
        url: url.clone(),
        source,
    })?;
    if !status.is_success() {
        return Err(problem(status.as_u16(), &text));
    }
    Ok((status.as_u16(), text))
}

/// A change answered with an operation: print it, or (`--wait`) follow it
/// to its end and print the resource.
async fn accepted(
    client: &reqwest::Client,
    args: &ApiArgs,
    creds: &proto::sign::Credentials,
    c: &Call,
    text: &str,
) -> Result<String> {
    let mut op = parse(202, text)?;
    if !args.wait {
        return Ok(match args.output {
            Output::Json => serde_json::to_string_pretty(&op).unwrap_or_else(|_| text.into()),
            Output::Table => format!(
                "{}\n\n(accepted; follow it with `flowctl op show {}` or pass --wait)",
                details(&op),
                cell(op.get("id"))
            ),
        });
    }
    let id = op["id"].as_str().unwrap_or_default().to_string();
    let path = format!("/v1/operations/{}", encode(&id));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(args.wait_timeout);
    let mut pause = std::time::Duration::from_millis(50);
    while !matches!(op["state"].as_str(), Some("succeeded" | "failed")) {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Operation {
                id,
                detail: format!(
                    "still {} after {} s, waiting on {}",
                    cell(op.get("state")),
                    args.wait_timeout,
                    cell(op.get("waiting_on"))
                ),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
        let (status, text) = send(client, args, creds, &reqwest::Method::GET, &path, None).await?;
        op = parse(status, &text)?;
    }
    if op["state"] == "failed" {
        return Err(Error::Operation {
            id,
            detail: format!(
                "failed: {}",
                op["error"]["message"].as_str().unwrap_or("no error given")
            ),
        });
    }
    if args.output == Output::Json {
        // The operation as it ended says what was done, and where.
        if c.method == reqwest::Method::DELETE {
            return Ok(serde_json::to_string_pretty(&op).unwrap_or_default());
        }
    }
    if c.method == reqwest::Method::DELETE {
        return Ok(deleted(args, c));
    }
    let href = op["target"]["href"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (status, text) = send(client, args, creds, &reqwest::Method::GET, &href, None).await?;
    print_value(args, c.kind, status, &text)
}

/// An error from an API answer: the problem's detail if it is one.
fn problem(status: u16, body: &str) -> Error {
    let detail = match serde_json::from_str::<Value>(body) {
        Ok(v) => {
            let detail = v.get("detail").and_then(Value::as_str);
            let title = v.get("title").and_then(Value::as_str);
            let field = v.get("field").and_then(Value::as_str);
            match (detail.or(title), field) {
                (Some(d), Some(f)) => format!("{d} (field {f})"),
                (Some(d), None) => d.to_string(),
                _ => body.trim().to_string(),
            }
        }
        Err(_) => body.trim().to_string(),
    };
    Error::Api { status, detail }
}

/// A JSON value as one table cell.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Rows aligned under their headers.
pub fn table_of(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

fn table(kind: Kind, items: &[Value]) -> String {
    let cols = kind.columns();
    let headers: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|it| cols.iter().map(|(_, f)| cell(lookup(it, f))).collect())
        .collect();
    table_of(&headers, &rows)
}

/// The field at a dotted path (`target.id`).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A group's fields, then its rules as a table.
fn group_details(v: &Value) -> String {
    let mut head = v.clone();
    let rules = head
        .as_object_mut()
        .and_then(|m| m.remove("rules"))
        .unwrap_or(Value::Null);
    let rows: Vec<Vec<String>> = rules
        .as_array()
        .map(|rs| rs.iter().map(rule_row).collect())
        .unwrap_or_default();
    format!(
        "{}\n\n{}",
        details(&head),
        table_of(&["RULE", "DIRECTION", "PROTOCOL", "PORTS", "REMOTE"], &rows)
    )
}

/// One object as `field: value` lines.
fn details(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let w = m.keys().map(|k| k.len()).max().unwrap_or(0) + 1;
            m.iter()
                .map(|(k, v)| format!("{:<w$} {}", format!("{k}:"), cell(Some(v))))
                .collect::<Vec<_>>()
                .join("\n")
        }
        other => cell(Some(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_api_calls() {
        let c = plan(&ResourceCmd::Nic(NicCmd::Update {
            id: "nic-1".into(),
            name: None,
            node: None,
            unbind: true,
            security_groups: vec![],
            no_security_groups: false,
            port_security: None,
            allowed_address_pairs: vec![],
            no_allowed_address_pairs: false,
        }));
        assert_eq!(c.method, reqwest::Method::PATCH);
        assert_eq!(c.path, "/v1/nics/nic-1");
        assert_eq!(c.body, Some(json!({"node": null})));

        let c = plan(&ResourceCmd::Nic(NicCmd::List {
            subnet_id: None,
            vpc_id: Some("vpc a".into()),
            node: Some("n1".into()),
        }));
        assert_eq!(c.path, "/v1/nics?vpc_id=vpc%20a&node=n1");

        let c = plan(&ResourceCmd::Node(NodeCmd::Create {
            name: "n1".into(),
            underlay_ip: "192.0.2.1".into(),
            set: None,
            roles: vec![Role::Compute, Role::Gateway],
        }));
        assert_eq!(
            c.body,
            Some(
                json!({"name": "n1", "underlay_ip": "192.0.2.1", "roles": ["compute", "gateway"]})
            )
        );
    }

    #[test]
    fn tables_and_problems() {
        let items = vec![
            json!({"id": "nic-1", "name": "web", "subnet_id": "s", "ip": "10.0.0.5",
                   "mac": "02:00:00:00:00:01", "node": null, "status": "down"}),
            json!({"id": "nic-22", "name": "db", "subnet_id": "s", "ip": "10.0.0.6",
                   "mac": "02:00:00:00:00:02", "node": "n1", "status": "up"}),
        ];
        let t = table(Kind::Nic, &items);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID      NAME  SUBNET"), "{t}");
        assert!(lines[1].ends_with("-     down"), "{t}");
        assert!(lines[2].contains("n1"));

        let e = problem(
            422,
            r#"{"type":"urn:stacknet:problem:validation","title":"Validation failed","status":422,"detail":"`cidr`: bad","field":"cidr"}"#,
        );
        assert_eq!(
            e.to_string(),
            "the API refused the request (HTTP 422): `cidr`: bad (field cidr)"
        );
        let e = problem(502, "bad gateway");
        assert!(e.to_string().ends_with("bad gateway"));
    }

    #[test]
    fn security_group_commands_become_api_calls() {
        let c = plan(&ResourceCmd::Sg(SgCmd::Rule(RuleCmd::Add {
            group: "sg-1".into(),
            direction: DirectionArg::Ingress,
            protocol: ProtocolArg::Tcp,
            port: Some("8000-8080".into()),
            icmp_type: None,
            icmp_code: None,
            remote_cidr: None,
            remote_group: Some("sg-2".into()),
            description: None,
        })));
        assert_eq!(c.method, reqwest::Method::POST);
        assert_eq!(c.path, "/v1/security-groups/sg-1/rules");
        assert_eq!(
            c.body,
            Some(
                json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 8000,
                "port_range_max": 8080, "remote_group_id": "sg-2"})
            )
        );
        let c = plan(&ResourceCmd::Sg(SgCmd::Rule(RuleCmd::Delete {
            group: "sg-1".into(),
            rule: "sgr-9".into(),
        })));
        assert_eq!(c.method, reqwest::Method::DELETE);
        assert_eq!(c.path, "/v1/security-groups/sg-1/rules/sgr-9");

        let c = plan(&ResourceCmd::Nic(NicCmd::Create {
            subnet_id: "s".into(),
            name: None,
            ip: None,
            mac: None,
            node: None,
            security_groups: vec!["sg-1".into(), "sg-2".into()],
            no_security_groups: false,
            no_port_security: false,
            allowed_address_pairs: vec!["10.0.0.9".into(), "10.0.5.0/24,02:00:00:00:00:09".into()],
        }));
        assert_eq!(
            c.body,
            Some(
                json!({"subnet_id": "s", "security_groups": ["sg-1", "sg-2"],
                "allowed_address_pairs": [{"ip_address": "10.0.0.9"},
                    {"ip_address": "10.0.5.0/24", "mac_address": "02:00:00:00:00:09"}]})
            )
        );
        let c = plan(&ResourceCmd::Nic(NicCmd::Update {
            id: "nic-1".into(),
            name: None,
            node: None,
            unbind: false,
            security_groups: vec![],
            no_security_groups: true,
            port_security: Some(false),
            allowed_address_pairs: vec![],
            no_allowed_address_pairs: true,
        }));
        assert_eq!(
            c.body,
            Some(
                json!({"security_groups": [], "port_security": false, "allowed_address_pairs": []})
            )
        );
    }

    #[test]
    fn a_group_shows_its_rules_as_a_table() {
        let g = json!({"id": "sg-1", "name": "web", "vpc_id": "vpc-1", "is_default": false,
        "rules": [
            {"id": "sgr-1", "direction": "ingress", "protocol": "tcp",
             "port_range_min": 22, "port_range_max": 22, "remote_cidr": "192.0.2.0/24"},
            {"id": "sgr-2", "direction": "egress", "protocol": "icmp", "icmp_type": 8},
            {"id": "sgr-3", "direction": "ingress", "protocol": "udp",
             "port_range_min": 53, "port_range_max": 54, "remote_group_id": "sg-2"}
        ]});
        let out = group_details(&g);
        assert!(out.contains("name:"), "{out}");
        assert!(!out.contains("rules:"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let rule_lines: Vec<&&str> = lines.iter().filter(|l| l.starts_with("sgr-")).collect();
        assert_eq!(rule_lines.len(), 3, "{out}");
        assert!(rule_lines[0].contains("22") && rule_lines[0].ends_with("192.0.2.0/24"));
        assert!(rule_lines[1].contains("type 8") && rule_lines[1].ends_with("0.0.0.0/0"));
        assert!(rule_lines[2].contains("53-54") && rule_lines[2].ends_with("group sg-2"));
    }
}
