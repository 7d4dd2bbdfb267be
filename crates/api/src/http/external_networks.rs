//! `/v1/external-networks`: the networks outside the overlay, defined by a
//! system admin and readable by every authenticated user (tenants pick one
//! when they allocate an EIP or attach a VPC).
//!
//! An EIP allocated from a network and a VPC attached to it bump the
//! network's guard key; a delete compares that guard, so a network in use
//! is never deleted (see [`super::db`]).

use std::net::Ipv4Addr;

use axum::extract::State;
use axum::response::Response;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::db;
use super::etag::{IfMatch, Tagged};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::list::{page_of, PageOf};
use super::operations::{self, DeleteParams};
use super::problem::{ApiResult, Problem};
use super::validate;
use super::AppState;
use crate::model::{keys, AddressRange, Eip, ExternalNetwork, Node, Owned, Vpc};
use crate::operation::{Action, Operation, Target};
use crate::store::{Compare, Op, Store};

/// Index and guard keys of external networks and their addresses.
pub(super) mod net_index {
    use std::net::Ipv4Addr;

    use crate::model::keys::INDEX;

    /// Network names, unique in the cloud.
    pub fn name(name: &str) -> String {
        format!("{INDEX}extnet-name/all/{name}")
    }
    /// Bumped by every EIP allocated from the network and every VPC
    /// attached to it.
    pub fn guard(id: &str) -> String {
        format!("{INDEX}guard/extnet/{id}")
    }
    /// Allocated EIP addresses, unique within the network.
    pub fn eip_ip(net_id: &str, ip: Ipv4Addr) -> String {
        format!("{}{ip}", eip_ip_prefix(net_id))
    }
    pub fn eip_ip_prefix(net_id: &str) -> String {
        format!("{INDEX}eip-ip/{net_id}/")
    }
}

/// At most this many addresses in one pool: allocation scans it.
pub const MAX_POOL_SIZE: u64 = 65_536;
/// At most this many ranges in one pool.
pub const MAX_POOL_RANGES: usize = 64;
/// At most this many nodes attached to one network.
pub const MAX_ATTACHED_NODES: usize = 1_000;

/// A range of the pool as requested.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    #[schema(example = "203.0.113.10")]
    pub first: String,
    /// `first` if omitted (one address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "203.0.113.99")]
    pub last: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExternalNetwork {
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Unique.
    pub name: String,
    /// The label each attached node maps to an interface
    /// (`vswitch-agent --external-port PHYSNET=IFACE`); a DNS label.
    pub physnet: String,
    #[schema(example = "203.0.113.0/24")]
    pub cidr: String,
    /// The outside router: a host address of `cidr`, outside the pool.
    #[schema(example = "203.0.113.1")]
    pub gateway_ip: String,
    /// One or more ranges of host addresses of `cidr`, not overlapping.
    pub pool: Vec<RangeRequest>,
    /// Existing nodes: compute nodes that may host EIPs and gateway nodes
    /// that may serve NAT gateways.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExternalNetworkFilter {
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

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("external network {id:?} not found"))
}

pub(super) async fn load(
    store: &dyn Store,
    id: &str,
) -> ApiResult<Option<db::Versioned<Owned<ExternalNetwork>>>> {
    if !validate::is_id("extnet", id) {
        return Ok(None);
    }
    db::get_json(store, &keys::external_network(id)).await
}

/// The external network a tenant request names in `field`: 422 if absent.
pub(super) async fn referenced(
    store: &dyn Store,
    id: &str,
    field: &str,
) -> ApiResult<db::Versioned<Owned<ExternalNetwork>>> {
    load(store, id).await?.ok_or_else(|| {
        Problem::invalid(
            field,
            format!("`{field}`: external network {id:?} does not exist"),
        )
    })
}

/// The external network's CIDR: canonical, /8 to /30.
fn external_cidr(s: &str) -> ApiResult<Ipv4Net> {
    let net: Ipv4Net = s.trim().parse().map_err(|_| {
        Problem::invalid(
            "cidr",
            format!("`cidr` {s:?} is not an IPv4 CIDR like 203.0.113.0/24"),
        )
    })?;
    if net.trunc() != net {
        return Err(Problem::invalid(
            "cidr",
            format!(
                "`cidr` {s:?} has host bits set; the network is {}",
                net.trunc()
            ),
        ));
    }
    if !(8..=30).contains(&net.prefix_len()) {
        return Err(Problem::invalid(
            "cidr",
            format!("`cidr` {s:?}: the prefix length must be between /8 and /30"),
        ));
    }
    Ok(net)
}

/// The pool: ranges of host addresses of `cidr`, not overlapping each
/// other, not containing the gateway, at most [`MAX_POOL_SIZE`] addresses.
pub(super) fn pool(
    raw: &[RangeRequest],
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
) -> ApiResult<Vec<AddressRange>> {
    if raw.is_empty() {
        return Err(Problem::invalid(
            "pool",
            "`pool` needs at least one range of addresses",
        ));
    }
    if raw.len() > MAX_POOL_RANGES {
        return Err(Problem::invalid(
            "pool",
            format!("`pool` has {} ranges; at most {MAX_POOL_RANGES}", raw.len()),
        ));
    }
    let mut out: Vec<AddressRange> = Vec::with_capacity(raw.len());
    let mut total: u64 = 0;
    for (i, r) in raw.iter().enumerate() {
        let field = format!("pool[{i}]");
        let first = validate::ipv4(&format!("{field}.first"), &r.first)?;
        let last = match &r.last {
            Some(l) => validate::ipv4(&format!("{field}.last"), l)?,
            None => first,
        };
        if first > last {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}`: first {first} is after last {last}"),
            ));
        }
        for ip in [first, last] {
            validate::host_in(cidr, ip)
                .map_err(|why| Problem::invalid(field.clone(), format!("`{field}`: {why}")))?;
        }
        let range = AddressRange { first, last };
        if range.contains(gateway) {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}` contains the gateway address {gateway}"),
            ));
        }
        if let Some(j) = out
            .iter()
            .position(|o| o.first <= range.last && range.first <= o.last)
        {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}` overlaps `pool[{j}]`"),
            ));
        }
        total += u64::from(u32::from(last) - u32::from(first)) + 1;
        if total > MAX_POOL_SIZE {
            return Err(Problem::invalid(
                "pool",
                format!("`pool` holds more than {MAX_POOL_SIZE} addresses"),
            ));
        }
        out.push(range);
    }
    Ok(out)
}

/// Checks the attached node names: DNS labels, no duplicates.
fn node_names(raw: &[String]) -> ApiResult<Vec<String>> {
    if raw.len() > MAX_ATTACHED_NODES {
        return Err(Problem::invalid(
            "nodes",
            format!(
                "`nodes` has {} names; at most {MAX_ATTACHED_NODES}",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let field = format!("nodes[{i}]");
        validate::dns_label(&field, n)?;
        if out.contains(n) {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}` {n:?} is listed twice"),
            ));
        }
        out.push(n.clone());
    }
    Ok(out)
}

#[utoipa::path(post, path = "/v1/external-networks", tag = "external-networks",
    request_body = CreateExternalNetwork,
    responses((status = 202, body = Operation), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
#[instrument(skip_all, fields(external_network_id = tracing::field::Empty, name = %req.name))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateExternalNetwork>,
) -> ApiResult<Response> {
    if !caller.is_system_admin() {
        return Err(Problem::forbidden(
            "only a system admin defines external networks",
        ));
    }
    validate::name("name", &req.name)?;
    validate::dns_label("physnet", &req.physnet)?;
    let tags = req.tags.clone().unwrap_or_default();
    validate::tags(&tags)?;
    let cidr = external_cidr(&req.cidr)?;
    let gateway_ip = validate::ipv4("gateway_ip", &req.gateway_ip)?;
    validate::host_in(cidr, gateway_ip)
        .map_err(|why| Problem::invalid("gateway_ip", format!("`gateway_ip` {why}")))?;
    let pool = pool(&req.pool, cidr, gateway_ip)?;
    let nodes = node_names(&req.nodes)?;
    let id = validate::new_id("extnet");
    tracing::Span::current().record("external_network_id", id.as_str());
    let net = Owned::new(
        caller.tenant_id.as_str(),
        ExternalNetwork {
            id: id.clone(),
            name: req.name.clone(),
            physnet: req.physnet.clone(),
            cidr,
            gateway_ip,
            pool,
            nodes,
            created_at: validate::now_rfc3339(),
        },
    )
    .with_tags(tags);
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (net, new_op) = (&net, &new_op);
    let op = db::retry("create the external network", || async move {
        let name_key = net_index::name(&net.name);
        if let Some(owner) = db::get_text(store, &name_key).await? {
            return Err(Problem::conflict(format!(
                "an external network named {:?} already exists ({owner})",
                net.name
            ))
            .with_field("name"));
        }
        let key = keys::external_network(&net.id);
        let mut compare = vec![Compare::absent(&key), Compare::absent(&name_key)];
        // Every attached node exists now, and is not deleted before the
        // commit.
        for (i, n) in net.nodes.iter().enumerate() {
            let v: db::Versioned<Node> =
                db::get_json(store, &keys::node(n)).await?.ok_or_else(|| {
                    Problem::invalid(
                        format!("nodes[{i}]"),
                        format!("`nodes[{i}]`: node {n:?} does not exist"),
                    )
                })?;
            compare.push(db::created_at(keys::node(n), v.create_revision));
        }
        let mut ops = vec![
            db::put_json(&key, net)?,
            Op::put(name_key, net.id.as_bytes().to_vec()),
        ];
        // It reaches its attached nodes: an operation.
        let op = new_op.stage(
            &net.tenant_id,
            Action::Create,
            Target::external_network(&net.id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(cidr = %net.cidr, nodes = net.nodes.len(), op_id = %op.id, "external network created");
    Ok(operations::accepted(op))
}

#[utoipa::path(get, path = "/v1/external-networks", tag = "external-networks",
    params(ExternalNetworkFilter),
    responses((status = 200, body = [Owned<ExternalNetwork>]), (status = 400, body = Problem)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    _caller: Caller,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(f): ApiQuery<ExternalNetworkFilter>,
) -> ApiResult<PageOf<Owned<ExternalNetwork>>> {
    // Every authenticated user reads them: tenants choose among them.
    let all: Vec<Owned<ExternalNetwork>> =
        db::list_revisioned(st.store.as_ref(), keys::EXTERNAL_NETWORKS).await?;
    let (items, next) = page_of!(f).apply("external-networks", "", all)?;
    Ok(PageOf { items, next, uri })
}

#[utoipa::path(get, path = "/v1/external-networks/{id}", tag = "external-networks",
    params(("id" = String, Path)),
    responses((status = 200, body = Owned<ExternalNetwork>), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(external_network_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<Owned<ExternalNetwork>>> {
    let net = load(st.store.as_ref(), &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Tagged(net.value, net.mod_revision))
}

#[utoipa::path(delete, path = "/v1/external-networks/{id}", tag = "external-networks",
    params(("id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
#[instrument(skip_all, fields(external_network_id = %id))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    if !caller.is_system_admin() {
        return Err(Problem::forbidden(
            "only a system admin deletes external networks",
        ));
    }
    let new_op = operations::NewOp::new(q.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (id, if_match, new_op) = (&id, &if_match, &new_op);
    let op = db::retry("delete the external network", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        if_match.check(cur.mod_revision)?;
        // Guard first, then the users: one added after this read bumps the
        // guard and fails the compare.
        let guard = net_index::guard(id);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let eips: Vec<Eip> = db::list_json(store, keys::EIPS).await?;
        let eips: Vec<String> = eips
            .into_iter()
            .filter(|e| e.external_network_id == *id)
            .map(|e| e.id)
            .collect();
        if !eips.is_empty() {
            return Err(Problem::conflict(format!(
                "external network {id:?} still has {} allocated; release them first",
                db::in_use("EIPs", &eips)
            )));
        }
        let vpcs: Vec<Vpc> = db::list_json(store, keys::VPCS).await?;
        let vpcs: Vec<String> = vpcs
            .into_iter()
            .filter(|v| v.external_network_ids.contains(id))
            .map(|v| v.id)
            .collect();
        if !vpcs.is_empty() {
            return Err(Problem::conflict(format!(
                "external network {id:?} is still attached to {}; detach them first",
                db::in_use("VPCs", &vpcs)
            )));
        }
        let key = keys::external_network(id);
        let mut ops = vec![Op::delete(&key), Op::delete(&guard)];
        let name_key = net_index::name(&cur.value.name);
        if db::get_text(store, &name_key).await?.as_deref() == Some(id.as_str()) {
            ops.push(Op::delete(name_key));
        }
        let mut compare = vec![
            Compare::mod_revision_is(&key, cur.mod_revision),
            Compare::mod_revision_is(&guard, guard_rev),
        ];
        let op = new_op.stage(
            &cur.value.tenant_id,
            Action::Delete,
            Target::external_network(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "external network deleted");
    Ok(operations::accepted(op))
}

/// Checks `ids` (a VPC's new attachments) and returns, for those not
/// attached before (`old`), the compares and ops that keep the networks
/// from being deleted before the commit.
pub(super) async fn attach(
    store: &dyn Store,
    ids: &[String],
    old: &[String],
) -> ApiResult<(Vec<Compare>, Vec<Op>)> {
    let (mut compare, mut ops) = (vec![], vec![]);
    for (i, id) in ids.iter().enumerate() {
        let field = format!("external_network_ids[{i}]");
        if ids[..i].contains(id) {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}` {id:?} is listed twice"),
            ));
        }
        if old.contains(id) {
            continue;
        }
        let net = referenced(store, id, &field).await?;
        compare.push(db::created_at(
            keys::external_network(id),
            net.create_revision,
        ));
        ops.push(db::bump(net_index::guard(id)));
    }
    Ok((compare, ops))
}
