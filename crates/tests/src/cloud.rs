//! stacknet running on a lab: flowctl (all-in-one, embedded store) in the
//! root namespace, every node registered through the API with its agent
//! running, and a small API client to ask for VPCs, subnets and NICs the way
//! a tenant would.

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::bins::{AgentSpec, FlowctlSpec};
use crate::error::{LabError, Result};
use crate::lab::{Lab, LabConfig, Vm, VmSpec};
use crate::util::wait_until;

/// A blocking client of the northbound API, signing its requests when it
/// has a key pair.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: Client,
    creds: Option<proto::sign::Credentials>,
}

/// An answer of the API: status and JSON body (`Null` when empty).
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The body of a 2xx answer, or the problem as an error.
    pub fn ok(self, method: &'static str, path: &str) -> Result<Value> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(LabError::Api {
                method,
                path: path.to_string(),
                detail: format!("{}: {}", self.status, self.body),
            })
        }
    }

    /// `detail` of a problem+json body.
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

impl ApiClient {
    pub fn new(base: impl Into<String>) -> Result<Self> {
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| LabError::Api {
                method: "-",
                path: String::new(),
                detail: e.to_string(),
            })?;
        Ok(ApiClient {
            base: base.into(),
            http,
            creds: None,
        })
    }

    /// The same client, signing as `creds`.
    pub fn with_credentials(self, creds: proto::sign::Credentials) -> Self {
        ApiClient {
            creds: Some(creds),
            ..self
        }
    }

    /// The same client, signing with the key pair in a JSON file with
    /// `key_id` and `secret` (what `flowctl serve --admin-credentials`
    /// writes).
    pub fn with_credentials_file(self, path: &std::path::Path) -> Result<Self> {
        let bad = |detail: String| LabError::Api {
            method: "-",
            path: path.display().to_string(),
            detail,
        };
        let raw = std::fs::read(path).map_err(|e| bad(format!("credentials file: {e}")))?;
        let v: Value = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
        let field = |f: &str| {
            v[f].as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("credentials file lacks `{f}`")))
        };
        Ok(self.with_credentials(proto::sign::Credentials {
            key_id: field("key_id")?,
            secret: field("secret")?,
        }))
    }

    /// The key pair requests are signed with.
    pub fn credentials(&self) -> Option<&proto::sign::Credentials> {
        self.creds.as_ref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn send(&self, method: &'static str, path: &str, body: Option<&Value>) -> Result<Answer> {
        let url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| LabError::Invalid(format!("URL {}{path}: {e}", self.base)))?;
        let m = match method {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            "PATCH" => reqwest::Method::PATCH,
            "DELETE" => reqwest::Method::DELETE,
            other => return Err(LabError::Invalid(format!("method {other}"))),
        };
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| LabError::Invalid(e.to_string()))?,
            None => vec![],
        };
        let mut req = self.http.request(m, url.clone());
        if let Some(c) = &self.creds {
            // Signed over what reqwest sends: its parsed path and query.
            req = req.header(
                reqwest::header::AUTHORIZATION,
                proto::sign::authorization(
                    c,
                    method,
                    url.path(),
                    url.query().unwrap_or(""),
                    &bytes,
                    proto::sign::unix_now(),
                    &proto::sign::new_nonce(),
                ),
            );
        }
        if body.is_some() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let resp = req.send().map_err(|e| LabError::Api {
            method,
            path: path.to_string(),
            detail: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    pub fn get(&self, path: &str) -> Result<Answer> {
        self.send("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Result<Answer> {
        self.send("POST", path, Some(body))
    }
    pub fn patch(&self, path: &str, body: &Value) -> Result<Answer> {
        self.send("PATCH", path, Some(body))
    }
    pub fn delete(&self, path: &str) -> Result<Answer> {
        self.send("DELETE", path, None)
    }

    /// POST that must succeed; returns the created resource. A create
    /// answered `202 Accepted` (NICs, security groups, rules: they are
    /// programmed on nodes) returns the operation's target as read back
    /// at once, without waiting for the operation.
    pub fn create(&self, path: &str, body: &Value) -> Result<Value> {
        let got = self.post(path, body)?;
        self.resource_of("POST", path, got)
    }

    /// PATCH that must succeed; returns the resource as it is now (read
    /// back through the operation's target for a 202).
    pub fn update(&self, path: &str, body: &Value) -> Result<Value> {
        let got = self.patch(path, body)?;
        self.resource_of("PATCH", path, got)
    }

    /// DELETE that must succeed; returns the operation of a 202 (`Null`
    /// for a 204).
    pub fn remove(&self, path: &str) -> Result<Value> {
        self.delete(path)?.ok("DELETE", path)
    }

    fn resource_of(&self, method: &'static str, path: &str, got: Answer) -> Result<Value> {
        if got.status != StatusCode::ACCEPTED {
            return got.ok(method, path);
        }
        let href = got.body["target"]["href"]
            .as_str()
            .ok_or_else(|| LabError::Api {
                method,
                path: path.to_string(),
                detail: format!("a 202 without an operation target: {}", got.body),
            })?
            .to_string();
        self.get(&href)?.ok("GET", &href)
    }

    /// Waits until the operation `op` (a 202's body) ends and returns it
    /// as it ended (`state` `succeeded` or `failed`, with `error`).
    pub fn wait_operation(&self, op: &Value, timeout: Duration) -> Result<Value> {
        let id = op["id"]
            .as_str()
            .ok_or_else(|| LabError::Invalid(format!("not an operation: {op}")))?;
        let path = format!("/v1/operations/{id}");
        let mut last = Value::Null;
        let ended = wait_until(timeout, &format!("operation {id} to end"), || {
            match self.get(&path).and_then(|a| a.ok("GET", &path)) {
                Ok(v) => {
                    let done = matches!(v["state"].as_str(), Some("succeeded" | "failed"));
                    last = v;
                    done
                }
                Err(_) => false,
            }
        });
        ended.map_err(|e| LabError::Invalid(format!("{e}; last seen: {last}")))?;
        Ok(last)
    }
}

/// A stacknet deployment on a lab.
pub struct Cloud {
    pub lab: Lab,
    pub api: ApiClient,
}

impl Cloud {
    /// A lab of `nodes` nodes, flowctl with the API, every node registered
    /// and its agent started.
    pub fn start(nodes: usize) -> Result<Cloud> {
        let mut lab = Lab::new(LabConfig {
            nodes,
            ..LabConfig::default()
        })?;
        let ctx = lab.start_flowctl(&FlowctlSpec::default())?;
        let api =
            ApiClient::new(lab.api_url()?)?.with_credentials_file(&ctx.admin_credentials_file())?;
        Cloud::on(lab, api)
    }

    /// Like [`Cloud::start`], with nodes `external` plugged into the lab's
    /// external segment (before their agents start) and nodes `gateways`
    /// registered with the gateway role.
    pub fn start_external(nodes: usize, external: &[usize], gateways: &[usize]) -> Result<Cloud> {
        let mut lab = Lab::new(LabConfig {
            nodes,
            ..LabConfig::default()
        })?;
        for i in external {
            lab.attach_external(*i)?;
        }
        let ctx = lab.start_flowctl(&FlowctlSpec::default())?;
        let api =
            ApiClient::new(lab.api_url()?)?.with_credentials_file(&ctx.admin_credentials_file())?;
        Cloud::with_roles(lab, api, |i| {
            if gateways.contains(&i) {
                json!(["gateway"])
            } else {
                json!(["compute"])
            }
        })
    }

    /// stacknet on `lab` whose control plane answers at `api` (started by
    /// the caller, e.g. HA replicas): every node registered, agents started.
    pub fn on(lab: Lab, api: ApiClient) -> Result<Cloud> {
        Cloud::with_roles(lab, api, |_| json!(["compute"]))
    }

    fn with_roles(mut lab: Lab, api: ApiClient, roles: impl Fn(usize) -> Value) -> Result<Cloud> {
        for (i, node) in lab.nodes().iter().enumerate() {
            api.create(
                "/v1/nodes",
                &json!({
                    "name": node.name(),
                    "underlay_ip": node.underlay_ip().to_string(),
                    "roles": roles(i),
                }),
            )?;
        }
        for i in 0..lab.nodes().len() {
            lab.start_agent(i, &AgentSpec::default())?;
        }
        Ok(Cloud { lab, api })
    }

    pub fn vpc(&self, name: &str, cidr: &str) -> Result<Value> {
        self.api
            .create("/v1/vpcs", &json!({"name": name, "cidrs": [cidr]}))
    }

    pub fn subnet(&self, vpc: &Value, name: &str, cidr: &str) -> Result<Value> {
        self.api.create(
            "/v1/subnets",
            &json!({"vpc_id": vpc["id"], "name": name, "cidr": cidr}),
        )
    }

    /// A NIC in `subnet` bound to lab node `node`, with `ip` if given.
    pub fn nic(&self, subnet: &Value, node: usize, ip: Option<Ipv4Addr>) -> Result<Value> {
        let mut body = json!({"subnet_id": subnet["id"], "node": self.lab.node(node)?.name()});
        if let Some(ip) = ip {
            body["ip"] = json!(ip.to_string());
        }
        self.api.create("/v1/nics", &body)
    }

    /// Plugs a VM for `nic` into its node with the NIC's address configured
    /// statically (the gateway as default route), and waits for the NIC to
    /// report up.
    pub fn vm(&mut self, name: &str, nic: &Value, subnet: &Value) -> Result<&mut Vm> {
        let node = self.node_index(nic)?;
        let ip: Ipv4Addr = parse(&nic["ip"], "nic ip")?;
        let gw: Ipv4Addr = parse(&subnet["gateway_ip"], "gateway_ip")?;
        let len = prefix_len(subnet)?;
        let spec = VmSpec::new(name, node, str_of(&nic["id"])?, str_of(&nic["mac"])?)
            .with_ip(ip, len, Some(gw))
            .with_mtu(subnet["mtu"].as_u64().unwrap_or(1450) as u32);
        self.lab.add_vm(spec)?;
        self.wait_nic_up(str_of(&nic["id"])?)?;
        self.lab.vm_mut(name)
    }

    /// Which lab node a NIC is bound to.
    pub fn node_index(&self, nic: &Value) -> Result<usize> {
        let node = str_of(&nic["node"])?;
        self.lab
            .nodes()
            .iter()
            .position(|n| n.name() == node)
            .ok_or_else(|| LabError::Invalid(format!("NIC bound to unknown node {node}")))
    }

    /// Waits until the API reports the NIC's flows installed on its node.
    pub fn wait_nic_up(&self, nic_id: &str) -> Result<()> {
        let path = format!("/v1/nics/{nic_id}");
        wait_until(Duration::from_secs(30), &format!("{nic_id} up"), || {
            self.api
                .get(&path)
                .is_ok_and(|a| a.status.is_success() && a.body["status"] == "up")
        })
    }
}

/// External networks, EIPs, NAT gateways and gateway nodes (issue 6).
impl Cloud {
    fn node_name(&self, node: usize) -> Result<String> {
        Ok(self.lab.node(node)?.name().to_string())
    }

    /// An external network (system admin) over `cidr` with its outside
    /// router at `gateway_ip`, EIPs from the inclusive `pool` ranges, and
    /// lab nodes `nodes` attached.
    pub fn external_network(
        &self,
        name: &str,
        physnet: &str,
        cidr: &str,
        gateway_ip: Ipv4Addr,
        pool: &[(Ipv4Addr, Ipv4Addr)],
        nodes: &[usize],
    ) -> Result<Value> {
        let pool: Vec<Value> = pool
            .iter()
            .map(|(a, b)| json!({"first": a.to_string(), "last": b.to_string()}))
            .collect();
        let nodes = nodes
            .iter()
            .map(|n| self.node_name(*n))
            .collect::<Result<Vec<_>>>()?;
        self.api.create(
            "/v1/external-networks",
            &json!({"name": name, "physnet": physnet, "cidr": cidr,
                    "gateway_ip": gateway_ip.to_string(), "pool": pool, "nodes": nodes}),
        )
    }

    /// Sets the roles of lab node `node` (`["compute", "gateway"]`).
    pub fn set_node_roles(&self, node: usize, roles: &[&str]) -> Result<Value> {
        self.patch_node(node, &json!({ "roles": roles }))
    }

    /// Drains (or returns) lab node `node`: it goes last in every NAT
    /// gateway's ranking. The node read back says `safe_to_stop` while
    /// drained.
    pub fn set_node_drained(&self, node: usize, drained: bool) -> Result<Value> {
        self.patch_node(node, &json!({ "drained": drained }))
    }

    /// Higher first in NAT gateway rankings.
    pub fn set_gateway_priority(&self, node: usize, priority: u32) -> Result<Value> {
        self.patch_node(node, &json!({ "gateway_priority": priority }))
    }

    /// A node change reaches nodes (202): the node read back.
    fn patch_node(&self, node: usize, body: &Value) -> Result<Value> {
        let path = format!("/v1/nodes/{}", self.node_name(node)?);
        self.api.update(&path, body)
    }

    /// Attaches `vpc` to exactly `networks`.
    pub fn attach_vpc(&self, vpc: &Value, networks: &[&Value]) -> Result<Value> {
        let ids: Vec<&Value> = networks.iter().map(|n| &n["id"]).collect();
        let path = format!("/v1/vpcs/{}", str_of(&vpc["id"])?);
        self.api
            .patch(&path, &json!({ "external_network_ids": ids }))?
            .ok("PATCH", &path)
    }

    /// Allocates an EIP of `network` (`ip` if given, else the lowest free).
    pub fn allocate_eip(
        &self,
        network: &Value,
        ip: Option<Ipv4Addr>,
        rate_limit_kbps: Option<u32>,
    ) -> Result<Value> {
        let mut body = json!({ "external_network_id": network["id"] });
        if let Some(ip) = ip {
            body["ip"] = json!(ip.to_string());
        }
        if let Some(r) = rate_limit_kbps {
            body["rate_limit_kbps"] = json!(r);
        }
        self.api.create("/v1/eips", &body)
    }

    /// Binds `eip` to `nic` (an operation: it reaches the NIC's node);
    /// returns the EIP read back, which names the node doing the 1:1 NAT.
    pub fn bind_eip(&self, eip: &Value, nic: &Value) -> Result<Value> {
        let path = format!("/v1/eips/{}/bind", str_of(&eip["id"])?);
        self.api.create(&path, &json!({ "nic_id": nic["id"] }))
    }

    /// Unbinds `eip`; returns it read back.
    pub fn unbind_eip(&self, eip: &Value) -> Result<Value> {
        let path = format!("/v1/eips/{}/unbind", str_of(&eip["id"])?);
        self.api.create(&path, &json!({}))
    }

    pub fn release_eip(&self, eip: &Value) -> Result<()> {
        let path = format!("/v1/eips/{}", str_of(&eip["id"])?);
        self.api.delete(&path)?.ok("DELETE", &path).map(|_| ())
    }

    /// A NAT gateway of `vpc` on `network` owning `eips`; its
    /// `gateway_nodes` is the ranking, best first.
    pub fn nat_gateway(
        &self,
        name: &str,
        vpc: &Value,
        network: &Value,
        eips: &[&Value],
    ) -> Result<Value> {
        let ids: Vec<&Value> = eips.iter().map(|e| &e["id"]).collect();
        self.api.create(
            "/v1/nat-gateways",
            &json!({"name": name, "vpc_id": vpc["id"], "external_network_id": network["id"],
                    "eip_ids": ids}),
        )
    }

    /// The NAT gateway's ranked gateway nodes now, best first.
    pub fn nat_gateway_nodes(&self, gateway: &Value) -> Result<Vec<String>> {
        let path = format!("/v1/nat-gateways/{}", str_of(&gateway["id"])?);
        let gw = self.api.get(&path)?.ok("GET", &path)?;
        Ok(gw["gateway_nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect())
    }

    /// An SNAT rule: `source` is `{"subnet_id": ..}`, `{"nic_id": ..}` or
    /// `{"cidr": ..}`; its traffic leaves with `eip` as source. Returns the
    /// NAT gateway read back (the operation's target).
    pub fn snat_rule(&self, gateway: &Value, source: Value, eip: &Value) -> Result<Value> {
        let mut body = source;
        body["eip_id"] = eip["id"].clone();
        let path = format!("/v1/nat-gateways/{}/snat-rules", str_of(&gateway["id"])?);
        self.api.create(&path, &body)
    }

    /// A DNAT rule: `protocol` ("tcp" or "udp") connections to
    /// `eip:external_port` go to `internal_ip:internal_port`. Returns the
    /// NAT gateway read back (the operation's target).
    pub fn dnat_rule(
        &self,
        gateway: &Value,
        protocol: &str,
        eip: &Value,
        external_port: u16,
        internal_ip: Ipv4Addr,
        internal_port: u16,
    ) -> Result<Value> {
        let path = format!("/v1/nat-gateways/{}/dnat-rules", str_of(&gateway["id"])?);
        self.api.create(
            &path,
            &json!({"protocol": protocol, "eip_id": eip["id"], "external_port": external_port,
                    "internal_ip": internal_ip.to_string(), "internal_port": internal_port}),
        )
    }
}

fn str_of(v: &Value) -> Result<&str> {
    v.as_str()
        .ok_or_else(|| LabError::Invalid(format!("expected a string, got {v}")))
}

fn parse<T: std::str::FromStr>(v: &Value, what: &'static str) -> Result<T> {
    str_of(v)?.parse().map_err(|_| LabError::Parse {
        what,
        output: v.to_string(),
    })
}

fn prefix_len(subnet: &Value) -> Result<u8> {
    let cidr = str_of(&subnet["cidr"])?;
    cidr.split_once('/')
        .and_then(|(_, l)| l.parse().ok())
        .ok_or_else(|| LabError::Parse {
            what: "subnet cidr",
            output: cidr.to_string(),
        })
}
