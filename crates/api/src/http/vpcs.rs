//! `/v1/vpcs`: tenant networks, one VNI each.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;

use super::auth::{self, Access, Caller};
use super::db::{self, index, Attempt};
use super::etag::{IfMatch, Tagged};
use super::external_networks;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::list::{page_of, PageOf};
use super::nodes::DEFAULT_SET;
use super::problem::{ApiResult, Problem};
use super::quota::{self, Kind};
use super::security_groups::{self, sg_index};
use super::validate;
use super::{iam, AppState};
use crate::model::{keys, Eip, NatGateway, Nic, Owned, Subnet, Vpc};
use crate::store::{Compare, Op, Store};

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVpc {
    /// Unique.
    pub name: String,
    /// The Set the VPC lives in; "default" if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// One or more IPv4 CIDRs that do not overlap each other.
    #[schema(example = json!(["10.0.0.0/16"]))]
    pub cidrs: Vec<String>,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters). On a PATCH: the new set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchVpc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters). On a PATCH: the new set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    /// The external networks the VPC is attached to (the new set): its
    /// NICs may then get EIPs of them and its NAT gateways use them. A
    /// network is detached only while no EIP of it is bound to a NIC of
    /// the VPC and no NAT gateway of the VPC uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_network_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VpcFilter {
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
    Problem::not_found(format!("VPC {id:?} not found"))
}

fn name_taken(name: &str, owner: &str) -> Problem {
    Problem::conflict(format!("a VPC named {name:?} already exists ({owner})")).with_field("name")
}

pub(super) async fn load(
    store: &dyn Store,
    id: &str,
) -> ApiResult<Option<db::Versioned<Owned<Vpc>>>> {
    if !validate::is_id("vpc", id) {
        return Ok(None);
    }
    db::get_json(store, &keys::vpc(id)).await
}

/// What of VPC `vpc_id` uses external network `net`: EIPs of it bound to
/// NICs of the VPC, and NAT gateways of the VPC on it.
async fn external_users(store: &dyn Store, vpc_id: &str, net: &str) -> ApiResult<Vec<String>> {
    let nics: Vec<Nic> = db::list_json(store, keys::NICS).await?;
    let eips: Vec<Eip> = db::list_json(store, keys::EIPS).await?;
    let mut out: Vec<String> = eips
        .into_iter()
        .filter(|e| e.external_network_id == net)
        .filter(|e| {
            e.nic_id
                .as_ref()
                .is_some_and(|n| nics.iter().any(|x| &x.id == n && x.vpc_id == vpc_id))
        })
        .map(|e| format!("EIP {}", e.id))
        .collect();
    out.extend(
        nat_gateways_of(store, vpc_id)
            .await?
            .into_iter()
            .filter(|g| g.external_network_id == net)
            .map(|g| format!("NAT gateway {}", g.id)),
    );
    Ok(out)
}

/// NAT gateways of `vpc_id`.
pub(super) async fn nat_gateways_of(store: &dyn Store, vpc_id: &str) -> ApiResult<Vec<NatGateway>> {
    let all: Vec<NatGateway> = db::list_json(store, keys::NAT_GATEWAYS).await?;
    Ok(all.into_iter().filter(|g| g.vpc_id == vpc_id).collect())
}

/// Subnets of `vpc_id`, from the subnet objects themselves.
pub(super) async fn subnets_of(store: &dyn Store, vpc_id: &str) -> ApiResult<Vec<Owned<Subnet>>> {
    let all: Vec<Owned<Subnet>> = db::list_json(store, keys::SUBNETS).await?;
    Ok(all.into_iter().filter(|s| s.vpc_id == vpc_id).collect())
}

#[utoipa::path(post, path = "/v1/vpcs", tag = "vpcs", request_body = CreateVpc,
    responses((status = 201, body = Owned<Vpc>), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(vpc_id = tracing::field::Empty, name = %req.name))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateVpc>,
) -> ApiResult<impl IntoResponse> {
    let tenant = caller.tenant_for_create()?;
    validate::name("name", &req.name)?;
    let tags = req.tags.clone().unwrap_or_default();
    validate::tags(&tags)?;
    let tags = &tags;
    let set = req.set.unwrap_or_else(|| DEFAULT_SET.to_string());
    validate::dns_label("set", &set)?;
    let cidrs = validate::vpc_cidrs(&req.cidrs)?;
    let id = validate::new_id("vpc");
    tracing::Span::current().record("vpc_id", id.as_str());
    let store = st.store.as_ref();
    let (id, name, set, cidrs) = (&id, &req.name, &set, &cidrs);
    let created_at = validate::now_rfc3339();
    let (created_at, caller, tenant) = (&created_at, &caller, &tenant);
    let vpc = db::retry("create the VPC", || async move {
        let (tenant_cmp, tenant_op) = iam::tenant_ref(store, caller, tenant, "tenant_id").await?;
        let name_key = index::vpc_name(tenant, name);
        if let Some(owner) = db::get_text(store, &name_key).await? {
            return Err(name_taken(name, &owner));
        }
        // A random VNI; a clash is rare, and settled by the absent-compare.
        let mut vni = validate::random_vni();
        for _ in 0..8 {
            if store.get(&index::vni(vni)).await?.is_none() {
                break;
            }
            vni = validate::random_vni();
        }
        let vni_key = index::vni(vni);
        // The default security group is born with the VPC, in the same
        // transaction: a VPC never exists without it.
        let sg_id = validate::new_id("sg");
        let sg = Owned::new(
            tenant.as_str(),
            security_groups::default_group(&sg_id, id, created_at),
        );
        let sg_key = keys::security_group(&sg_id);
        let sg_name_key = sg_index::name(id, &sg.name);
        let vpc = Owned::new(
            tenant.as_str(),
            Vpc {
                id: id.clone(),
                name: name.clone(),
                set: set.clone(),
                cidrs: cidrs.clone(),
                vni,
                default_security_group_id: Some(sg_id.clone()),
                external_network_ids: vec![],
                created_at: created_at.clone(),
            },
        );
        let vpc = vpc.with_tags(tags.clone());
        let key = keys::vpc(id);
        auth::respond_with_revision(&format!("/v1/vpcs/{id}"), &vpc);
        // The default group is part of the VPC: it does not count.
        let (qc, qo) = quota::charge(store, tenant, &[(Kind::Vpcs, 1)]).await?;
        db::commit_attempt(
            store,
            vec![
                Compare::absent(&key),
                Compare::absent(&name_key),
                Compare::absent(&vni_key),
                Compare::absent(&sg_key),
                Compare::absent(&sg_name_key),
                tenant_cmp,
            ]
            .into_iter()
            .chain(qc)
            .collect(),
            vec![
                tenant_op,
                db::put_json(&key, &vpc)?,
                Op::put(name_key, id.as_bytes().to_vec()),
                Op::put(vni_key, id.as_bytes().to_vec()),
                db::put_json(&sg_key, &sg)?,
                Op::put(sg_name_key, sg_id.as_bytes().to_vec()),
            ]
            .into_iter()
            .chain(qo)
            .collect(),
            vpc,
        )
        .await
    })
    .await?;
    tracing::info!(vni = vpc.vni, "VPC created");
    let location = format!("/v1/vpcs/{}", vpc.id);
    let revision = auth::last_commit_revision().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Tagged(vpc, revision),
    ))
}

#[utoipa::path(get, path = "/v1/vpcs", tag = "vpcs", params(VpcFilter),
    responses((status = 200, body = [Owned<Vpc>]), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(f): ApiQuery<VpcFilter>,
) -> ApiResult<PageOf<Owned<Vpc>>> {
    caller.tenant_scope()?;
    let all: Vec<Owned<Vpc>> = db::list_revisioned(st.store.as_ref(), keys::VPCS).await?;
    let seen = all
        .into_iter()
        .filter(|v| caller.sees(&v.tenant_id))
        .collect();
    let (items, next) = page_of!(f).apply("vpcs", "", seen)?;
    Ok(PageOf { items, next, uri })
}

#[utoipa::path(get, path = "/v1/vpcs/{id}", tag = "vpcs", params(("id" = String, Path)),
    responses((status = 200, body = Owned<Vpc>), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(vpc_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<Owned<Vpc>>> {
    let vpc = load(st.store.as_ref(), &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    caller.check(&vpc.value.tenant_id, Access::Read, || not_found(&id))?;
    Ok(Tagged(vpc.value, vpc.mod_revision))
}

#[utoipa::path(patch, path = "/v1/vpcs/{id}", tag = "vpcs", request_body = PatchVpc,
    params(("id" = String, Path)),
    responses((status = 200, body = Owned<Vpc>), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(vpc_id = %id))]
pub async fn patch(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiJson(req): ApiJson<PatchVpc>,
) -> ApiResult<Tagged<Owned<Vpc>>> {
    if let Some(name) = &req.name {
        validate::name("name", name)?;
    }
    if let Some(t) = &req.tags {
        validate::tags(t)?;
    }
    let store = st.store.as_ref();
    let (id, req, caller, if_match) = (&id, &req, &caller, &if_match);
    let (vpc, read_at) = db::retry("update the VPC", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let mut vpc = cur.value.clone();
        if let Some(t) = &req.tags {
            vpc.tags = t.clone();
        }
        let key = keys::vpc(id);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![];
        if let Some(ids) = &req.external_network_ids {
            let old = &cur.value.external_network_ids;
            let (c, o) = external_networks::attach(store, ids, old).await?;
            compare.extend(c);
            ops.extend(o);
            let leaving: Vec<&String> = old.iter().filter(|x| !ids.contains(x)).collect();
            if !leaving.is_empty() {
                // Guard first, then the users: a bind or NAT gateway added
                // after this read bumps the guard and fails the compare.
                let guard = index::vpc_guard(id);
                compare.push(Compare::mod_revision_is(
                    &guard,
                    db::mod_revision(store, &guard).await?,
                ));
                for net in leaving {
                    let users = external_users(store, id, net).await?;
                    if !users.is_empty() {
                        return Err(Problem::conflict(format!(
                            "VPC {id:?} still uses external network {net:?} ({}); unbind or \
                             delete them first",
                            users.join(", ")
                        ))
                        .with_field("external_network_ids"));
                    }
                }
            }
            vpc.external_network_ids = ids.clone();
        }
        if let Some(name) = req.name.as_ref().filter(|n| **n != cur.value.name) {
            let new_key = index::vpc_name(&cur.value.tenant_id, name);
            if let Some(owner) = db::get_text(store, &new_key).await? {
                return Err(name_taken(name, &owner));
            }
            let old_key = index::vpc_name(&cur.value.tenant_id, &cur.value.name);
            vpc.name = name.clone();
            ops.push(Op::put(&new_key, id.as_bytes().to_vec()));
            compare.push(Compare::absent(&new_key));
            if db::get_text(store, &old_key).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(old_key));
            }
        }
        if vpc == cur.value {
            return Ok(Attempt::Done((cur.value, cur.mod_revision)));
        }
        ops.push(db::put_json(&key, &vpc)?);
        db::commit_attempt(store, compare, ops, (vpc, 0)).await
    })
    .await?;
    tracing::info!(name = %vpc.name, "VPC updated");
    let revision = auth::last_commit_revision().unwrap_or(read_at);
    Ok(Tagged(vpc, revision))
}

#[utoipa::path(delete, path = "/v1/vpcs/{id}", tag = "vpcs", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
#[instrument(skip_all, fields(vpc_id = %id))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
) -> ApiResult<StatusCode> {
    let store = st.store.as_ref();
    let (id, caller, if_match) = (&id, &caller, &if_match);
    db::retry("delete the VPC", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        // Guard first, then the subnets: a subnet added after this read
        // bumps the guard and fails the compare.
        let guard = index::vpc_guard(id);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let subnets: Vec<String> = subnets_of(store, id)
            .await?
            .into_iter()
            .map(|s| s.inner.id)
            .collect();
        if !subnets.is_empty() {
            return Err(Problem::conflict(format!(
                "VPC {id:?} still has {}; delete them first",
                db::in_use("subnets", &subnets)
            )));
        }
        let gateways: Vec<String> = nat_gateways_of(store, id)
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect();
        if !gateways.is_empty() {
            return Err(Problem::conflict(format!(
                "VPC {id:?} still has {}; delete them first",
                db::in_use("NAT gateways", &gateways)
            )));
        }
        let (defaults, others): (Vec<_>, Vec<_>) = security_groups::groups_of(store, id)
            .await?
            .into_iter()
            .partition(|g| g.is_default);
        if !others.is_empty() {
            let ids: Vec<String> = others.into_iter().map(|g| g.id).collect();
            return Err(Problem::conflict(format!(
                "VPC {id:?} still has {}; delete them first",
                db::in_use("security groups", &ids)
            )));
        }
        let key = keys::vpc(id);
        let mut ops = vec![Op::delete(&key), Op::delete(&guard)];
        // The default group goes with the VPC (no NIC can be in it: the VPC
        // has no subnets left, so no NICs).
        let (qc, qo) = quota::charge(store, &cur.value.tenant_id, &[(Kind::Vpcs, -1)]).await?;
        ops.extend(qo);
        for g in defaults {
            ops.push(Op::delete(keys::security_group(&g.id)));
            ops.push(Op::delete(sg_index::guard(&g.id)));
            ops.push(Op::delete(crate::operation::keys::last_op(&g.id)));
            let name_key = sg_index::name(id, &g.name);
            if db::get_text(store, &name_key).await?.as_deref() == Some(g.id.as_str()) {
                ops.push(Op::delete(name_key));
            }
        }
        for idx in [
            index::vpc_name(&cur.value.tenant_id, &cur.value.name),
            index::vni(cur.value.vni),
        ] {
            if db::get_text(store, &idx).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(idx));
            }
        }
        db::commit_attempt(
            store,
            vec![
                Compare::mod_revision_is(&key, cur.mod_revision),
                Compare::mod_revision_is(&guard, guard_rev),
            ]
            .into_iter()
            .chain(qc)
            .collect(),
            ops,
            (),
        )
        .await
    })
    .await?;
    tracing::info!("VPC deleted");
    Ok(StatusCode::NO_CONTENT)
}
