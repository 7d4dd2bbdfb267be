//! The operator CLI: `flowctl node|vpc|subnet|nic create|list|show|update|delete`
//! against the REST API. A thin layer: arguments become the API's JSON, the
//! API's JSON becomes a table (or is printed as is with `-o json`), and an
//! API problem becomes an error carrying its detail.

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
    /// Renames, binds (`--node`) or unbinds (`--unbind`) a NIC.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, conflicts_with = "unbind")]
        node: Option<String>,
        #[arg(long)]
        unbind: bool,
    },
    Delete {
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
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Vpc,
    Subnet,
    Nic,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Vpc => "VPC",
            Kind::Subnet => "subnet",
            Kind::Nic => "NIC",
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
                } => call(
                    M::POST,
                    "/v1/nics".into(),
                    Some(obj(vec![
                        ("subnet_id", Some(json!(subnet_id))),
                        ("name", name.as_ref().map(|s| json!(s))),
                        ("ip", ip.as_ref().map(|s| json!(s))),
                        ("mac", mac.as_ref().map(|s| json!(s))),
                        ("node", node.as_ref().map(|s| json!(s))),
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
                        ])),
                        k,
                    )
                }
                NicCmd::Delete { id } => {
                    call(M::DELETE, format!("/v1/nics/{}", encode(id)), None, k)
                }
            }
        }
    }
}

/// Runs a resource command against the API and returns what to print.
pub async fn run(args: &ApiArgs, cmd: &ResourceCmd) -> Result<String> {
    let c = plan(cmd);
    let url = format!("{}{}", args.api.trim_end_matches('/'), c.path);
    let client = reqwest::Client::new();
    let mut req = client.request(c.method.clone(), &url);
    if let Some(body) = &c.body {
        req = req.json(body);
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
    if c.method == reqwest::Method::DELETE {
        return Ok(match args.output {
            Output::Json => String::new(),
            Output::Table => format!(
                "deleted {} {}",
                c.kind.noun(),
                c.path.rsplit('/').next().unwrap_or("")
            ),
        });
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::Api {
        status: status.as_u16(),
        detail: format!("the API answered something that is not JSON: {e}"),
    })?;
    Ok(match args.output {
        Output::Json => serde_json::to_string_pretty(&value).unwrap_or(text),
        Output::Table => match &value {
            Value::Array(items) => table(c.kind, items),
            v => details(v),
        },
    })
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
        .map(|it| cols.iter().map(|(_, f)| cell(it.get(*f))).collect())
        .collect();
    table_of(&headers, &rows)
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
}
