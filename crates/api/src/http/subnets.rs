//! `/v1/subnets`: IPv4 subnets of a VPC, routed by the distributed router.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Access, Caller};
use super::db::{self, index};
use super::etag::{IfMatch, Tagged};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::list::{page_of, PageOf};
use super::operations::{self, DeleteParams};
use super::problem::{ApiResult, Problem};
use super::quota::{self, Kind};
use super::validate;
use super::vpcs;
use super::AppState;
use crate::model::{keys, Nic, Owned, Subnet};
use crate::operation::{Action, Operation, Target};
use crate::store::{Compare, Op, Store};

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubnet {
    pub vpc_id: String,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters). On a PATCH: the new set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,

    /// The subnet id if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Inside one of the VPC's CIDRs, overlapping no other subnet of it.
    #[schema(example = "10.0.1.0/24")]
    pub cidr: String,
    /// The first host address if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.0.1.1")]
    pub gateway_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    /// 1450 (1500 less VXLAN) if omitted; 576..=8950.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSubnet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters). On a PATCH: the new set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubnetFilter {
    /// Only the subnets of this VPC.
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

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("subnet {id:?} not found"))
}

pub(super) async fn load(
    store: &dyn Store,
    id: &str,
) -> ApiResult<Option<db::Versioned<Owned<Subnet>>>> {
    if !validate::is_id("subnet", id) {
        return Ok(None);
    }
    db::get_json(store, &keys::subnet(id)).await
}

/// NICs in `subnet_id`, from the NIC objects themselves.
async fn nics_of(store: &dyn Store, subnet_id: &str) -> ApiResult<Vec<String>> {
    let all: Vec<Owned<Nic>> = db::list_json(store, keys::NICS).await?;
    Ok(all
        .into_iter()
        .filter(|n| n.subnet_id == subnet_id)
        .map(|n| n.inner.id)
        .collect())
}

#[utoipa::path(post, path = "/v1/subnets", tag = "subnets", request_body = CreateSubnet,
    responses((status = 202, body = Operation), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(subnet_id = tracing::field::Empty, vpc_id = %req.vpc_id))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSubnet>,
) -> ApiResult<Response> {
    caller.tenant_scope()?;
    let tags = req.tags.clone().unwrap_or_default();
    validate::tags(&tags)?;
    let tags = &tags;
    let id = validate::new_id("subnet");
    tracing::Span::current().record("subnet_id", id.as_str());
    let name = req.name.clone().unwrap_or_else(|| id.clone());
    validate::name("name", &name)?;
    let cidr = validate::cidr("cidr", &req.cidr)?;
    let gateway_ip = match &req.gateway_ip {
        Some(s) => {
            let ip = validate::ipv4("gateway_ip", s)?;
            validate::host_in(cidr, ip)
                .map_err(|why| Problem::invalid("gateway_ip", format!("`gateway_ip` {why}")))?;
            ip
        }
        None => validate::first_host(cidr),
    };
    let dns_servers = validate::dns_servers(req.dns_servers.as_deref().unwrap_or_default())?;
    let mtu = validate::mtu(req.mtu.unwrap_or(validate::DEFAULT_MTU))?;
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let created_at = validate::now_rfc3339();
    let (id, name, req, dns_servers, created_at) = (&id, &name, &req, &dns_servers, &created_at);
    let (caller, new_op) = (&caller, &new_op);
    let (subnet, op) = db::retry("create the subnet", || async move {
        let missing = || {
            Problem::invalid(
                "vpc_id",
                format!("`vpc_id`: VPC {:?} does not exist", req.vpc_id),
            )
        };
        let vpc = vpcs::load(store, &req.vpc_id).await?.ok_or_else(missing)?;
        caller.check(&vpc.value.tenant_id, Access::Write, missing)?;
        if !vpc.value.cidrs.iter().any(|c| c.contains(&cidr)) {
            let cidrs: Vec<String> = vpc.value.cidrs.iter().map(|c| c.to_string()).collect();
            return Err(Problem::invalid(
                "cidr",
                format!(
                    "`cidr` {cidr} is not inside any CIDR of VPC {:?} ({})",
                    vpc.value.id,
                    cidrs.join(", ")
                ),
            ));
        }
        // Guard first, then the siblings: a subnet added after this read
        // bumps the guard and fails the compare.
        let guard = index::vpc_guard(&vpc.value.id);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let siblings = vpcs::subnets_of(store, &vpc.value.id).await?;
        if let Some(other) = siblings.iter().find(|s| validate::overlaps(s.cidr, cidr)) {
            return Err(Problem::conflict(format!(
                "`cidr` {cidr} overlaps subnet {:?} ({}) of VPC {:?}",
                other.id, other.cidr, vpc.value.id
            ))
            .with_field("cidr"));
        }
        let gateway_mac = validate::random_mac();
        let mac_key = index::mac(&vpc.value.id, gateway_mac);
        let subnet = Owned::new(
            vpc.value.tenant_id.as_str(),
            Subnet {
                id: id.clone(),
                name: name.clone(),
                vpc_id: vpc.value.id.clone(),
                cidr,
                gateway_ip,
                gateway_mac,
                dns_servers: dns_servers.clone(),
                mtu,
                created_at: created_at.clone(),
            },
        );
        let subnet = subnet.with_tags(tags.clone());
        let key = keys::subnet(id);
        let (qc, qo) = quota::charge(store, &vpc.value.tenant_id, &[(Kind::Subnets, 1)]).await?;
        let mut compare: Vec<Compare> = [
            db::created_at(keys::vpc(&vpc.value.id), vpc.create_revision),
            Compare::mod_revision_is(&guard, guard_rev),
            Compare::absent(&key),
            Compare::absent(&mac_key),
        ]
        .into_iter()
        .chain(qc)
        .collect();
        let mut ops: Vec<Op> = [
            db::put_json(&key, &subnet)?,
            Op::put(mac_key, id.as_bytes().to_vec()),
            db::bump(guard),
        ]
        .into_iter()
        .chain(qo)
        .collect();
        let op = new_op.stage(
            &subnet.tenant_id,
            Action::Create,
            Target::subnet(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, (subnet, op)).await
    })
    .await?;
    tracing::info!(cidr = %subnet.cidr, op_id = %op.id, "subnet created");
    Ok(operations::accepted(op))
}

#[utoipa::path(get, path = "/v1/subnets", tag = "subnets", params(SubnetFilter),
    responses((status = 200, body = [Owned<Subnet>]), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(filter): ApiQuery<SubnetFilter>,
) -> ApiResult<PageOf<Owned<Subnet>>> {
    caller.tenant_scope()?;
    let all: Vec<Owned<Subnet>> = db::list_revisioned(st.store.as_ref(), keys::SUBNETS).await?;
    let seen = all
        .into_iter()
        .filter(|s| caller.sees(&s.tenant_id))
        .filter(|s| filter.vpc_id.as_ref().is_none_or(|v| &s.vpc_id == v))
        .collect();
    let filters = format!("{:?}", filter.vpc_id);
    let (items, next) = page_of!(filter).apply("subnets", &filters, seen)?;
    Ok(PageOf { items, next, uri })
}

#[utoipa::path(get, path = "/v1/subnets/{id}", tag = "subnets", params(("id" = String, Path)),
    responses((status = 200, body = Owned<Subnet>), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(subnet_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<Owned<Subnet>>> {
    let s = load(st.store.as_ref(), &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    caller.check(&s.value.tenant_id, Access::Read, || not_found(&id))?;
    Ok(Tagged(s.value, s.mod_revision))
}

#[utoipa::path(patch, path = "/v1/subnets/{id}", tag = "subnets", request_body = PatchSubnet,
    params(("id" = String, Path)),
    responses((status = 202, body = Operation), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
#[instrument(skip_all, fields(subnet_id = %id))]
pub async fn patch(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiJson(req): ApiJson<PatchSubnet>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    if let Some(name) = &req.name {
        validate::name("name", name)?;
    }
    if let Some(t) = &req.tags {
        validate::tags(t)?;
    }
    let dns = req
        .dns_servers
        .as_deref()
        .map(validate::dns_servers)
        .transpose()?;
    let store = st.store.as_ref();
    let (id, req, dns, caller, if_match, new_op) = (&id, &req, &dns, &caller, &if_match, &new_op);
    let op = db::retry("update the subnet", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let mut subnet = cur.value.clone();
        if let Some(name) = &req.name {
            subnet.name = name.clone();
        }
        if let Some(t) = &req.tags {
            subnet.tags = t.clone();
        }
        if let Some(dns) = dns {
            subnet.dns_servers = dns.clone();
        }
        let key = keys::subnet(id);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        // Nothing changed: only the operation is written (it succeeds at once).
        let mut ops = Vec::new();
        if subnet != cur.value {
            ops.push(db::put_json(&key, &subnet)?);
        }
        let op = new_op.stage(
            &subnet.tenant_id,
            Action::Update,
            Target::subnet(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "subnet updated");
    Ok(operations::accepted(op))
}

#[utoipa::path(delete, path = "/v1/subnets/{id}", tag = "subnets",
    params(("id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
#[instrument(skip_all, fields(subnet_id = %id))]
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
    let op = db::retry("delete the subnet", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        // Guard first, then the NICs: a NIC added after this read bumps the
        // guard and fails the compare.
        let guard = index::subnet_guard(id);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let nics = nics_of(store, id).await?;
        if !nics.is_empty() {
            return Err(Problem::conflict(format!(
                "subnet {id:?} still has {}; delete them first",
                db::in_use("NICs", &nics)
            )));
        }
        let key = keys::subnet(id);
        let (qc, qo) = quota::charge(store, &cur.value.tenant_id, &[(Kind::Subnets, -1)]).await?;
        let mut ops = vec![Op::delete(&key), Op::delete(&guard)];
        ops.extend(qo);
        let mac_key = index::mac(&cur.value.vpc_id, cur.value.gateway_mac);
        if db::get_text(store, &mac_key).await?.as_deref() == Some(id.as_str()) {
            ops.push(Op::delete(mac_key));
        }
        let mut compare: Vec<Compare> = vec![
            Compare::mod_revision_is(&key, cur.mod_revision),
            Compare::mod_revision_is(&guard, guard_rev),
        ]
        .into_iter()
        .chain(qc)
        .collect();
        let op = new_op.stage(
            &cur.value.tenant_id,
            Action::Delete,
            Target::subnet(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "subnet deleted");
    Ok(operations::accepted(op))
}
