//! `/v1/nat-gateways`: per-VPC NAT gateways on an attached external
//! network, owning one or more EIPs, with SNAT rules (a subnet, a NIC or a
//! CIDR of the VPC leaves with an EIP as source) and DNAT rules (EIP:port
//! forwarded to an address of the VPC).
//!
//! A gateway is served by the gateway nodes of its network, ranked by
//! [`crate::model::gateway_ranking`]; the view shows the ranking as it is
//! now (flowctl compiles the same function from the same records).
//!
//! A DNAT (EIP, protocol, external port) owns the index key
//! `dnat/<eip>/<protocol>/<port>`, created only if absent with the rule.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Access, Caller};
use super::db::{self, index};
use super::eips;
use super::etag::{IfMatch, Tagged};
use super::external_networks;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::list::{page_of, PageOf};
use super::operations::{self, DeleteParams};
use super::problem::{ApiResult, Problem};
use super::quota::{self, Kind};
use super::validate;
use super::{subnets, vpcs, AppState};
use crate::model::{
    self, keys, DnatRule, ExternalNetwork, L4Protocol, NatGateway, Nic, Node, Owned, SnatRule,
};
use crate::operation::{Action, Operation, Target};
use crate::store::{Compare, Op, Store};

/// Index keys of NAT gateways.
pub(super) mod gw_index {
    use crate::model::keys::INDEX;
    use crate::model::L4Protocol;

    /// Gateway names, unique within a VPC.
    pub fn name(vpc_id: &str, name: &str) -> String {
        format!("{INDEX}natgw-name/{vpc_id}/{name}")
    }
    /// A DNAT rule's external (EIP, protocol, port), unique.
    pub fn dnat(eip_id: &str, protocol: L4Protocol, port: u16) -> String {
        format!("{INDEX}dnat/{eip_id}/{}/{port}", protocol.name())
    }
}

/// A gateway needs this many live gateway nodes (one to fail over to).
pub const MIN_GATEWAY_NODES: usize = 2;
/// At most this many EIPs per gateway, SNAT and DNAT rules each.
pub const MAX_GATEWAY_EIPS: usize = 16;
pub const MAX_RULES: usize = 1000;

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNatGateway {
    /// Unique within the VPC.
    pub name: String,
    /// A VPC attached to `external_network_id`.
    pub vpc_id: String,
    pub external_network_id: String,
    /// EIPs of that network, allocated and unbound; the gateway owns them
    /// until it is deleted.
    pub eip_ids: Vec<String>,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// An SNAT rule as requested: exactly one of `subnet_id`, `nic_id`, `cidr`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnatRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_id: Option<String>,
    /// Inside one of the VPC's CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.0.1.0/24")]
    pub cidr: Option<String>,
    /// An EIP of the gateway.
    pub eip_id: String,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// A DNAT rule as requested: `internal_ip` or `nic_id`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDnatRule {
    pub protocol: L4Protocol,
    /// An EIP of the gateway.
    pub eip_id: String,
    /// 1 to 65535.
    pub external_port: u16,
    /// An address inside one of the VPC's CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.0.1.10")]
    pub internal_ip: Option<String>,
    /// A NIC of the VPC (its address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_id: Option<String>,
    /// 1 to 65535.
    pub internal_port: u16,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NatGatewayFilter {
    pub vpc_id: Option<String>,
    /// Only resources with exactly this name.
    pub name: Option<String>,
    /// Only resources with these tags: `key` or `key=value`, several
    /// separated by commas (all must hold).
    pub tag: Option<String>,
    /// At most this many (1 to 1000); absent: every one (no pages).
    pub page_size: Option<u32>,
    /// From a previous page's `Next-Page-Token` (or `Link: rel=next`).
    pub page_token: Option<String>,
}

/// A NAT gateway as the API shows it, with its gateway nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NatGatewayView {
    #[serde(flatten)]
    pub gateway: Owned<NatGateway>,
    /// The gateway nodes serving it now, best first (the first live one
    /// translates); drained nodes are left out.
    pub gateway_nodes: Vec<String>,
}

impl super::etag::Revisioned for NatGatewayView {
    fn set_revision(&mut self, revision: u64) {
        self.gateway.revision = revision;
    }
}

impl super::list::Listed for NatGatewayView {
    fn id(&self) -> &str {
        &self.gateway.id
    }
    fn name(&self) -> &str {
        &self.gateway.name
    }
    fn tags(&self) -> &std::collections::BTreeMap<String, String> {
        &self.gateway.tags
    }
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("NAT gateway {id:?} not found"))
}

async fn load(store: &dyn Store, id: &str) -> ApiResult<Option<db::Versioned<Owned<NatGateway>>>> {
    if !validate::is_id("natgw", id) {
        return Ok(None);
    }
    db::get_json(store, &keys::nat_gateway(id)).await
}

/// Every node record, by name.
async fn all_nodes(store: &dyn Store) -> ApiResult<HashMap<String, Node>> {
    let nodes: Vec<Node> = db::list_json(store, keys::NODES).await?;
    Ok(nodes.into_iter().map(|n| (n.name.clone(), n)).collect())
}

/// The ranking of gateway `id` on `net` given the node records.
fn ranking(id: &str, net: &ExternalNetwork, nodes: &HashMap<String, Node>) -> Vec<String> {
    model::gateway_ranking(id, net, |n| nodes.get(n))
}

async fn view(store: &dyn Store, gateway: Owned<NatGateway>) -> ApiResult<NatGatewayView> {
    let nodes = all_nodes(store).await?;
    let net = external_networks::load(store, &gateway.external_network_id).await?;
    let gateway_nodes = net
        .map(|n| ranking(&gateway.id, &n.value, &nodes))
        .unwrap_or_default();
    Ok(NatGatewayView {
        gateway,
        gateway_nodes,
    })
}

#[utoipa::path(post, path = "/v1/nat-gateways", tag = "nat-gateways",
    request_body = CreateNatGateway,
    responses((status = 202, body = Operation), (status = 400, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(nat_gateway_id = tracing::field::Empty, vpc_id = %req.vpc_id))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateNatGateway>,
) -> ApiResult<Response> {
    caller.tenant_scope()?;
    validate::name("name", &req.name)?;
    let tags = req.tags.clone().unwrap_or_default();
    validate::tags(&tags)?;
    if req.eip_ids.is_empty() {
        return Err(Problem::invalid(
            "eip_ids",
            "`eip_ids` needs at least one EIP",
        ));
    }
    if req.eip_ids.len() > MAX_GATEWAY_EIPS {
        return Err(Problem::invalid(
            "eip_ids",
            format!(
                "`eip_ids` has {} EIPs; at most {MAX_GATEWAY_EIPS}",
                req.eip_ids.len()
            ),
        ));
    }
    for (i, e) in req.eip_ids.iter().enumerate() {
        if req.eip_ids[..i].contains(e) {
            let field = format!("eip_ids[{i}]");
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}` {e:?} is listed twice"),
            ));
        }
    }
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    let id = validate::new_id("natgw");
    tracing::Span::current().record("nat_gateway_id", id.as_str());
    let store = st.store.as_ref();
    let created_at = validate::now_rfc3339();
    let (id, req, tags, created_at, caller, new_op) =
        (&id, &req, &tags, &created_at, &caller, &new_op);
    let (answer, op) = db::retry("create the NAT gateway", || async move {
        let missing = || {
            Problem::invalid(
                "vpc_id",
                format!("`vpc_id`: VPC {:?} does not exist", req.vpc_id),
            )
        };
        let vpc = vpcs::load(store, &req.vpc_id).await?.ok_or_else(missing)?;
        caller.check(&vpc.value.tenant_id, Access::Write, missing)?;
        let vpc_id = &vpc.value.id;
        let net_id = &req.external_network_id;
        let net = external_networks::referenced(store, net_id, "external_network_id").await?;
        if !vpc.value.external_network_ids.contains(net_id) {
            return Err(Problem::invalid(
                "vpc_id",
                format!(
                    "`vpc_id`: VPC {vpc_id:?} has no external attachment to external network \
                     {net_id:?}; attach it first (PATCH /v1/vpcs/{vpc_id} \
                     external_network_ids)"
                ),
            ));
        }
        let nodes = all_nodes(store).await?;
        let ranked = ranking(id, &net.value, &nodes);
        let serving = ranked
            .iter()
            .filter(|n| nodes.get(*n).is_some_and(|n| !n.drained))
            .count();
        if serving < MIN_GATEWAY_NODES {
            return Err(Problem::invalid(
                "external_network_id",
                format!(
                    "a NAT gateway needs at least {MIN_GATEWAY_NODES} gateway nodes attached to \
                     external network {net_id:?} ({}) that are not drained; it has {}",
                    net.value.name, serving
                ),
            ));
        }
        let name_key = gw_index::name(vpc_id, &req.name);
        if let Some(owner) = db::get_text(store, &name_key).await? {
            return Err(Problem::conflict(format!(
                "VPC {vpc_id:?} already has a NAT gateway named {:?} ({owner})",
                req.name
            ))
            .with_field("name"));
        }
        let key = keys::nat_gateway(id);
        let mut compare = vec![
            Compare::mod_revision_is(keys::vpc(vpc_id), vpc.mod_revision),
            db::created_at(keys::external_network(net_id), net.create_revision),
            Compare::absent(&key),
            Compare::absent(&name_key),
        ];
        let mut ops = vec![];
        for (i, eip_id) in req.eip_ids.iter().enumerate() {
            let field = format!("eip_ids[{i}]");
            let missing = || {
                Problem::invalid(
                    field.clone(),
                    format!("`{field}`: EIP {eip_id:?} does not exist"),
                )
            };
            let e = eips::load(store, eip_id).await?.ok_or_else(missing)?;
            if e.value.tenant_id != vpc.value.tenant_id {
                return Err(missing());
            }
            if e.value.external_network_id != *net_id {
                return Err(Problem::invalid(
                    field.clone(),
                    format!(
                        "`{field}`: EIP {eip_id:?} is of external network {:?}, not {net_id:?}",
                        e.value.external_network_id
                    ),
                ));
            }
            if let Some(nic) = &e.value.nic_id {
                return Err(Problem::conflict(format!(
                    "`{field}`: EIP {eip_id:?} is already bound to NIC {nic:?}"
                ))
                .with_field(field.clone()));
            }
            if let Some(gw) = &e.value.nat_gateway_id {
                return Err(Problem::conflict(format!(
                    "`{field}`: EIP {eip_id:?} is already owned by NAT gateway {gw:?}"
                ))
                .with_field(field.clone()));
            }
            let mut owned = e.value.clone();
            owned.nat_gateway_id = Some(id.clone());
            compare.push(Compare::mod_revision_is(keys::eip(eip_id), e.mod_revision));
            ops.push(db::put_json(keys::eip(eip_id), &owned)?);
        }
        // A MAC in the VPC's L2 domain, unique there like a NIC's.
        let mut mac = validate::random_mac();
        for _ in 0..8 {
            if store.get(&index::mac(vpc_id, mac)).await?.is_none() {
                break;
            }
            mac = validate::random_mac();
        }
        let mac_key = index::mac(vpc_id, mac);
        compare.push(Compare::absent(&mac_key));
        let gw = Owned::new(
            vpc.value.tenant_id.as_str(),
            NatGateway {
                id: id.clone(),
                name: req.name.clone(),
                vpc_id: vpc_id.clone(),
                external_network_id: net_id.clone(),
                eip_ids: req.eip_ids.clone(),
                mac,
                snat_rules: vec![],
                dnat_rules: vec![],
                created_at: created_at.clone(),
            },
        )
        .with_tags(tags.clone());
        ops.extend([
            db::put_json(&key, &gw)?,
            Op::put(name_key, id.as_bytes().to_vec()),
            Op::put(mac_key, id.as_bytes().to_vec()),
            // The VPC's delete and detach read its guard first: they see
            // this gateway.
            db::bump(index::vpc_guard(vpc_id)),
        ]);
        let (c, o) = quota::charge(store, &gw.tenant_id, &[(Kind::NatGateways, 1)]).await?;
        compare.extend(c);
        ops.extend(o);
        let answer = NatGatewayView {
            gateway: gw,
            gateway_nodes: ranked,
        };
        let op = new_op.stage(
            &answer.gateway.tenant_id,
            Action::Create,
            Target::nat_gateway(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, (answer, op)).await
    })
    .await?;
    tracing::info!(gateway_nodes = ?answer.gateway_nodes, op_id = %op.id, "NAT gateway created");
    Ok(operations::accepted(op))
}

#[utoipa::path(get, path = "/v1/nat-gateways", tag = "nat-gateways", params(NatGatewayFilter),
    responses((status = 200, body = Vec<NatGatewayView>), (status = 400, body = Problem)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(f): ApiQuery<NatGatewayFilter>,
) -> ApiResult<PageOf<NatGatewayView>> {
    caller.tenant_scope()?;
    let store = st.store.as_ref();
    let gws: Vec<Owned<NatGateway>> = db::list_revisioned(store, keys::NAT_GATEWAYS).await?;
    let nodes = all_nodes(store).await?;
    let nets: Vec<ExternalNetwork> = db::list_json(store, keys::EXTERNAL_NETWORKS).await?;
    let nets: HashMap<&str, &ExternalNetwork> = nets.iter().map(|n| (n.id.as_str(), n)).collect();
    let out = gws
        .into_iter()
        .filter(|g| caller.sees(&g.tenant_id))
        .filter(|g| f.vpc_id.as_ref().is_none_or(|v| &g.vpc_id == v))
        .map(|gateway| {
            let gateway_nodes = nets
                .get(gateway.external_network_id.as_str())
                .map(|n| ranking(&gateway.id, n, &nodes))
                .unwrap_or_default();
            NatGatewayView {
                gateway,
                gateway_nodes,
            }
        })
        .collect();
    let (items, next) = page_of!(f).apply("nat-gateways", &format!("{:?}", f.vpc_id), out)?;
    Ok(PageOf { items, next, uri })
}

#[utoipa::path(get, path = "/v1/nat-gateways/{id}", tag = "nat-gateways",
    params(("id" = String, Path)),
    responses((status = 200, body = NatGatewayView), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(nat_gateway_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<NatGatewayView>> {
    let store = st.store.as_ref();
    let gw = load(store, &id).await?.ok_or_else(|| not_found(&id))?;
    caller.check(&gw.value.tenant_id, Access::Read, || not_found(&id))?;
    Ok(Tagged(view(store, gw.value).await?, gw.mod_revision))
}

#[utoipa::path(delete, path = "/v1/nat-gateways/{id}", tag = "nat-gateways",
    params(("id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(nat_gateway_id = %id))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(q.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (id, caller, if_match, new_op) = (&id, &caller, &if_match, &new_op);
    let op = db::retry("delete the NAT gateway", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let g = &cur.value;
        let key = keys::nat_gateway(id);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![Op::delete(&key)];
        // Its EIPs go back to the tenant, allocated and unbound.
        for eip_id in &g.eip_ids {
            let Some(e) = eips::load(store, eip_id).await? else {
                continue;
            };
            if e.value.nat_gateway_id.as_deref() != Some(id.as_str()) {
                continue;
            }
            let mut freed = e.value.clone();
            freed.nat_gateway_id = None;
            compare.push(Compare::mod_revision_is(keys::eip(eip_id), e.mod_revision));
            ops.push(db::put_json(keys::eip(eip_id), &freed)?);
        }
        let mut idx = vec![
            gw_index::name(&g.vpc_id, &g.name),
            index::mac(&g.vpc_id, g.mac),
        ];
        idx.extend(
            g.dnat_rules
                .iter()
                .map(|r| gw_index::dnat(&r.eip_id, r.protocol, r.external_port)),
        );
        for k in idx {
            if db::get_text(store, &k).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(k));
            }
        }
        let (qc, qo) = quota::charge(store, &g.tenant_id, &[(Kind::NatGateways, -1)]).await?;
        compare.extend(qc);
        ops.extend(qo);
        let op = new_op.stage(
            &g.tenant_id,
            Action::Delete,
            Target::nat_gateway(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "NAT gateway deleted");
    Ok(operations::accepted(op))
}

/// `ip` (or prefix) inside one of the VPC's CIDRs.
fn in_vpc(vpc: &model::Vpc, net: Ipv4Net) -> bool {
    vpc.cidrs.iter().any(|c| c.contains(&net))
}

fn gateway_eip(g: &NatGateway, eip_id: &str) -> ApiResult<()> {
    if g.eip_ids.iter().any(|e| e == eip_id) {
        return Ok(());
    }
    Err(Problem::invalid(
        "eip_id",
        format!(
            "`eip_id`: EIP {eip_id:?} is not an EIP of NAT gateway {:?} ({})",
            g.id,
            g.eip_ids.join(", ")
        ),
    ))
}

/// A NIC of `vpc_id` named in `field`, 422 if there is none.
async fn vpc_nic(store: &dyn Store, nic_id: &str, vpc_id: &str, field: &str) -> ApiResult<Nic> {
    let missing = || {
        Problem::invalid(
            field,
            format!("`{field}`: NIC {nic_id:?} does not exist in VPC {vpc_id:?}"),
        )
    };
    if !validate::is_id("nic", nic_id) {
        return Err(missing());
    }
    let nic: db::Versioned<Nic> = db::get_json(store, &keys::nic(nic_id))
        .await?
        .ok_or_else(missing)?;
    if nic.value.vpc_id != vpc_id {
        return Err(missing());
    }
    Ok(nic.value)
}

#[utoipa::path(post, path = "/v1/nat-gateways/{id}/snat-rules", tag = "nat-gateways",
    request_body = CreateSnatRule, params(("id" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(nat_gateway_id = %id, rule_id = tracing::field::Empty))]
pub async fn add_snat_rule(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateSnatRule>,
) -> ApiResult<Response> {
    let given = [
        req.subnet_id.is_some(),
        req.nic_id.is_some(),
        req.cidr.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(Problem::invalid(
            "source",
            "give exactly one source: `subnet_id`, `nic_id` or `cidr`",
        ));
    }
    let cidr = req
        .cidr
        .as_deref()
        .map(|c| validate::ipv4_prefix("cidr", c))
        .transpose()?;
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    let rule_id = validate::new_id("snat");
    tracing::Span::current().record("rule_id", rule_id.as_str());
    let store = st.store.as_ref();
    let (id, req, caller, rule_id, new_op) = (&id, &req, &caller, &rule_id, &new_op);
    let (rule, op) = db::retry("add the SNAT rule", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        let g = &cur.value;
        gateway_eip(g, &req.eip_id)?;
        if g.snat_rules.len() >= MAX_RULES {
            return Err(Problem::conflict(format!(
                "NAT gateway {id:?} already has {MAX_RULES} SNAT rules, the most it may hold"
            )));
        }
        let source_cidr = if let Some(s) = &req.subnet_id {
            let missing = || {
                Problem::invalid(
                    "subnet_id",
                    format!(
                        "`subnet_id`: subnet {s:?} does not exist in VPC {:?}",
                        g.vpc_id
                    ),
                )
            };
            let sn = subnets::load(store, s).await?.ok_or_else(missing)?;
            if sn.value.vpc_id != g.vpc_id {
                return Err(missing());
            }
            sn.value.cidr
        } else if let Some(n) = &req.nic_id {
            let nic = vpc_nic(store, n, &g.vpc_id, "nic_id").await?;
            Ipv4Net::new(nic.ip, 32).unwrap_or_default()
        } else {
            let c = cidr.unwrap_or_default();
            let vpc = vpcs::load(store, &g.vpc_id)
                .await?
                .ok_or_else(|| not_found(id))?;
            if !in_vpc(&vpc.value, c) {
                return Err(Problem::invalid(
                    "cidr",
                    format!("`cidr` {c} is not inside the CIDRs of VPC {:?}", g.vpc_id),
                ));
            }
            c
        };
        if let Some(same) = g.snat_rules.iter().find(|r| r.source_cidr == source_cidr) {
            return Err(Problem::conflict(format!(
                "NAT gateway {id:?} already has an SNAT rule for {source_cidr} ({})",
                same.id
            )));
        }
        let rule = SnatRule {
            id: rule_id.clone(),
            subnet_id: req.subnet_id.clone(),
            nic_id: req.nic_id.clone(),
            cidr,
            source_cidr,
            eip_id: req.eip_id.clone(),
        };
        let mut gw = g.clone();
        gw.snat_rules.push(rule.clone());
        let key = keys::nat_gateway(id);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![db::put_json(&key, &gw)?];
        let op = new_op.stage(
            &g.tenant_id,
            Action::Update,
            Target::nat_gateway(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, (rule, op)).await
    })
    .await?;
    tracing::info!(source = %rule.source_cidr, op_id = %op.id, "SNAT rule added");
    Ok(operations::accepted(op))
}

#[utoipa::path(post, path = "/v1/nat-gateways/{id}/dnat-rules", tag = "nat-gateways",
    request_body = CreateDnatRule, params(("id" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(nat_gateway_id = %id, rule_id = tracing::field::Empty))]
pub async fn add_dnat_rule(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateDnatRule>,
) -> ApiResult<Response> {
    for (field, port) in [
        ("external_port", req.external_port),
        ("internal_port", req.internal_port),
    ] {
        if port == 0 {
            return Err(Problem::invalid(
                field,
                format!("`{field}` must be 1 to 65535"),
            ));
        }
    }
    if req.internal_ip.is_some() == req.nic_id.is_some() {
        return Err(Problem::invalid(
            "internal_ip",
            "give exactly one of `internal_ip` and `nic_id`",
        ));
    }
    let want_ip = req
        .internal_ip
        .as_deref()
        .map(|s| validate::ipv4("internal_ip", s))
        .transpose()?;
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    let rule_id = validate::new_id("dnat");
    tracing::Span::current().record("rule_id", rule_id.as_str());
    let store = st.store.as_ref();
    let (id, req, caller, rule_id, new_op) = (&id, &req, &caller, &rule_id, &new_op);
    let (rule, op) = db::retry("add the DNAT rule", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        let g = &cur.value;
        gateway_eip(g, &req.eip_id)?;
        if g.dnat_rules.len() >= MAX_RULES {
            return Err(Problem::conflict(format!(
                "NAT gateway {id:?} already has {MAX_RULES} DNAT rules, the most it may hold"
            )));
        }
        let internal_ip = match (want_ip, &req.nic_id) {
            (Some(ip), _) => {
                let vpc = vpcs::load(store, &g.vpc_id)
                    .await?
                    .ok_or_else(|| not_found(id))?;
                if !in_vpc(&vpc.value, Ipv4Net::new(ip, 32).unwrap_or_default()) {
                    return Err(Problem::invalid(
                        "internal_ip",
                        format!(
                            "`internal_ip` {ip} is not inside the CIDRs of VPC {:?}",
                            g.vpc_id
                        ),
                    ));
                }
                ip
            }
            (None, Some(n)) => vpc_nic(store, n, &g.vpc_id, "nic_id").await?.ip,
            (None, None) => unreachable!("checked above"),
        };
        let dnat_key = gw_index::dnat(&req.eip_id, req.protocol, req.external_port);
        let clash = |owner: &str| {
            Problem::conflict(format!(
                "{} port {} of EIP {:?} is already forwarded ({owner})",
                req.protocol.name(),
                req.external_port,
                req.eip_id
            ))
            .with_field("external_port")
        };
        if let Some(owner) = db::get_text(store, &dnat_key).await? {
            return Err(clash(&owner));
        }
        let rule = DnatRule {
            id: rule_id.clone(),
            protocol: req.protocol,
            eip_id: req.eip_id.clone(),
            external_port: req.external_port,
            internal_ip,
            nic_id: req.nic_id.clone(),
            internal_port: req.internal_port,
        };
        let mut gw = g.clone();
        gw.dnat_rules.push(rule.clone());
        let key = keys::nat_gateway(id);
        let mut compare = vec![
            Compare::mod_revision_is(&key, cur.mod_revision),
            // The clash is settled here, not by the read above.
            Compare::absent(&dnat_key),
        ];
        let mut ops = vec![
            db::put_json(&key, &gw)?,
            Op::put(dnat_key, id.as_bytes().to_vec()),
        ];
        let op = new_op.stage(
            &g.tenant_id,
            Action::Update,
            Target::nat_gateway(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, (rule, op)).await
    })
    .await?;
    tracing::info!(eip_id = %rule.eip_id, port = rule.external_port, op_id = %op.id, "DNAT rule added");
    Ok(operations::accepted(op))
}

/// Which rule list a delete is about.
#[derive(Clone, Copy)]
enum RuleKind {
    Snat,
    Dnat,
}

async fn delete_rule(
    st: AppState,
    caller: Caller,
    id: String,
    rule_id: String,
    kind: RuleKind,
    callback_url: Option<String>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (id, rule_id, caller, new_op) = (&id, &rule_id, &caller, &new_op);
    let op = db::retry("delete the rule", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        let mut gw = cur.value.clone();
        let key = keys::nat_gateway(id);
        let mut ops = vec![];
        let found = match kind {
            RuleKind::Snat => {
                let before = gw.snat_rules.len();
                gw.snat_rules.retain(|r| r.id != *rule_id);
                gw.snat_rules.len() != before
            }
            RuleKind::Dnat => match gw.dnat_rules.iter().position(|r| r.id == *rule_id) {
                Some(i) => {
                    let r = gw.dnat_rules.remove(i);
                    let k = gw_index::dnat(&r.eip_id, r.protocol, r.external_port);
                    if db::get_text(store, &k).await?.as_deref() == Some(id.as_str()) {
                        ops.push(Op::delete(k));
                    }
                    true
                }
                None => false,
            },
        };
        if !found {
            return Err(Problem::not_found(format!(
                "NAT gateway {id:?} has no rule {rule_id:?}"
            )));
        }
        ops.push(db::put_json(&key, &gw)?);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let op = new_op.stage(
            &gw.tenant_id,
            Action::Update,
            Target::nat_gateway(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(rule_id = %rule_id, op_id = %op.id, "NAT rule deleted");
    Ok(operations::accepted(op))
}

#[utoipa::path(delete, path = "/v1/nat-gateways/{id}/snat-rules/{rule_id}",
    tag = "nat-gateways", params(("id" = String, Path), ("rule_id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(nat_gateway_id = %path.0, rule_id = %path.1))]
pub async fn delete_snat_rule(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    delete_rule(st, caller, path.0, path.1, RuleKind::Snat, q.callback_url).await
}

#[utoipa::path(delete, path = "/v1/nat-gateways/{id}/dnat-rules/{rule_id}",
    tag = "nat-gateways", params(("id" = String, Path), ("rule_id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(nat_gateway_id = %path.0, rule_id = %path.1))]
pub async fn delete_dnat_rule(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    delete_rule(st, caller, path.0, path.1, RuleKind::Dnat, q.callback_url).await
}

/// What the NAT gateways look like to an operator: for each node, the
/// gateways whose ranking holds it now, with its rank (0: first).
pub(super) async fn served_by(
    store: &dyn Store,
) -> ApiResult<HashMap<String, Vec<(String, usize)>>> {
    let gws: Vec<NatGateway> = db::list_json(store, keys::NAT_GATEWAYS).await?;
    let nets: Vec<ExternalNetwork> = db::list_json(store, keys::EXTERNAL_NETWORKS).await?;
    let nodes = all_nodes(store).await?;
    let mut out: HashMap<String, Vec<(String, usize)>> = HashMap::new();
    for g in gws {
        let Some(net) = nets.iter().find(|n| n.id == g.external_network_id) else {
            continue;
        };
        for (rank, n) in ranking(&g.id, net, &nodes).into_iter().enumerate() {
            out.entry(n).or_default().push((g.id.clone(), rank));
        }
    }
    Ok(out)
}
