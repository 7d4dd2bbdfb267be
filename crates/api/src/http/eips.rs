//! `/v1/eips`: elastic IPs, addresses of an external network's pool that a
//! tenant allocates, binds to a NIC (1:1 NAT on the NIC's node), unbinds
//! and releases; or hands to a NAT gateway.
//!
//! Uniqueness lives in the store: an allocated address owns the index key
//! `eip-ip/<network>/<ip>` and a bound NIC the key `nic-eip/<nic>`, both
//! created only if absent in the same transaction as the EIP, so two
//! concurrent allocations of one address (or two EIPs bound to one NIC)
//! cannot both commit.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::{self, Access, Caller};
use super::db::{self, index};
use super::etag::{IfMatch, Tagged};
use super::external_networks::{self, net_index};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::list::{page_of, PageOf};
use super::operations::{self, DeleteParams};
use super::problem::{ApiResult, Problem};
use super::quota::{self, Kind};
use super::validate;
use super::{vpcs, AppState};
use crate::model::{keys, Eip, Nic, Owned};
use crate::operation::{Action, Operation, Target};
use crate::store::{Compare, Op, Store};

/// Index keys of EIP bindings.
pub(super) mod eip_index {
    use crate::model::keys::INDEX;

    /// The EIP bound to a NIC: at most one.
    pub fn nic(nic_id: &str) -> String {
        format!("{INDEX}nic-eip/all/{nic_id}")
    }
}

/// The largest rate limit, 100 Gbit/s.
pub const MAX_RATE_LIMIT_KBPS: u32 = 100_000_000;

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEip {
    pub external_network_id: String,
    /// A free address of the network's pool; the lowest free one if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "203.0.113.10")]
    pub ip: Option<String>,
    /// Bandwidth limit in each direction, kbit/s (1 to 100,000,000); none
    /// if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_kbps: Option<u32>,
    /// The EIP id if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindEip {
    /// A NIC of a VPC attached to the EIP's network, bound to a node
    /// attached to that network.
    pub nic_id: String,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EipFilter {
    pub external_network_id: Option<String>,
    /// Only the EIP bound to this NIC.
    pub nic_id: Option<String>,
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

/// An EIP as the API shows it: the stored EIP and where its binding lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EipView {
    #[serde(flatten)]
    pub eip: Owned<Eip>,
    /// The node hosting the bound NIC (where the 1:1 NAT happens), if the
    /// EIP is bound and the NIC is bound to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl super::etag::Revisioned for EipView {
    fn set_revision(&mut self, revision: u64) {
        self.eip.revision = revision;
    }
}

impl super::list::Listed for EipView {
    fn id(&self) -> &str {
        &self.eip.id
    }
    fn name(&self) -> &str {
        &self.eip.name
    }
    fn tags(&self) -> &std::collections::BTreeMap<String, String> {
        &self.eip.tags
    }
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("EIP {id:?} not found"))
}

pub(super) async fn load(
    store: &dyn Store,
    id: &str,
) -> ApiResult<Option<db::Versioned<Owned<Eip>>>> {
    if !validate::is_id("eip", id) {
        return Ok(None);
    }
    db::get_json(store, &keys::eip(id)).await
}

async fn view(store: &dyn Store, eip: Owned<Eip>) -> ApiResult<EipView> {
    let node = match &eip.nic_id {
        Some(nic) if validate::is_id("nic", nic) => {
            let n: Option<db::Versioned<Nic>> = db::get_json(store, &keys::nic(nic)).await?;
            n.and_then(|n| n.value.node)
        }
        _ => None,
    };
    Ok(EipView { eip, node })
}

fn rate_limit(v: Option<u32>) -> ApiResult<Option<u32>> {
    match v {
        Some(r) if r == 0 || r > MAX_RATE_LIMIT_KBPS => Err(Problem::invalid(
            "rate_limit_kbps",
            format!("`rate_limit_kbps` {r} is out of range 1..={MAX_RATE_LIMIT_KBPS}"),
        )),
        v => Ok(v),
    }
}

#[utoipa::path(post, path = "/v1/eips", tag = "eips", request_body = CreateEip,
    responses((status = 201, body = EipView), (status = 400, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(eip_id = tracing::field::Empty,
    external_network_id = %req.external_network_id))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateEip>,
) -> ApiResult<impl IntoResponse> {
    let tenant = caller.tenant_for_create()?;
    let tags = req.tags.clone().unwrap_or_default();
    validate::tags(&tags)?;
    let id = validate::new_id("eip");
    tracing::Span::current().record("eip_id", id.as_str());
    let name = req.name.clone().unwrap_or_else(|| id.clone());
    validate::name("name", &name)?;
    let want_ip = req
        .ip
        .as_deref()
        .map(|s| validate::ipv4("ip", s))
        .transpose()?;
    let rate = rate_limit(req.rate_limit_kbps)?;
    let store = st.store.as_ref();
    let created_at = validate::now_rfc3339();
    let (id, name, req, tags, created_at, tenant) = (&id, &name, &req, &tags, &created_at, &tenant);
    let eip = db::retry("allocate the EIP", || async move {
        let net_id = &req.external_network_id;
        let net = external_networks::referenced(store, net_id, "external_network_id").await?;
        // Guard first, then the addresses in use (the guard is bumped by
        // every allocation, so a delete of the network sees this one).
        let guard = net_index::guard(net_id);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let ip = match want_ip {
            Some(ip) => {
                if !net.value.pool.iter().any(|r| r.contains(ip)) {
                    return Err(Problem::invalid(
                        "ip",
                        format!("`ip` {ip} is not in the EIP pool of external network {net_id:?}"),
                    ));
                }
                if let Some(owner) = db::get_text(store, &net_index::eip_ip(net_id, ip)).await? {
                    return Err(Problem::conflict(format!(
                        "`ip` {ip} of external network {net_id:?} is already allocated \
                         ({owner})"
                    ))
                    .with_field("ip"));
                }
                ip
            }
            None => {
                let (kvs, _) = store.range(&net_index::eip_ip_prefix(net_id)).await?;
                let used: BTreeSet<Ipv4Addr> = kvs
                    .iter()
                    .filter_map(|kv| kv.key.rsplit('/').next()?.parse().ok())
                    .collect();
                net.value
                    .pool
                    .iter()
                    .flat_map(|r| r.iter())
                    .find(|ip| !used.contains(ip))
                    .ok_or_else(|| {
                        Problem::conflict(format!(
                            "the EIP pool of external network {net_id:?} ({}) is exhausted: \
                             every address is allocated",
                            net.value.name
                        ))
                        .with_field("external_network_id")
                    })?
            }
        };
        // 40 random bits: a clash is rare and caught by the compare.
        let mut mac = validate::random_mac();
        for _ in 0..8 {
            if store.get(&index::mac(net_id, mac)).await?.is_none() {
                break;
            }
            mac = validate::random_mac();
        }
        let ip_key = net_index::eip_ip(net_id, ip);
        let mac_key = index::mac(net_id, mac);
        let key = keys::eip(id);
        let eip = Owned::new(
            tenant.as_str(),
            Eip {
                id: id.clone(),
                name: name.clone(),
                external_network_id: net_id.clone(),
                ip,
                mac,
                rate_limit_kbps: rate,
                nic_id: None,
                nat_gateway_id: None,
                created_at: created_at.clone(),
            },
        )
        .with_tags(tags.clone());
        let mut compare = vec![
            db::created_at(keys::external_network(net_id), net.create_revision),
            Compare::mod_revision_is(&guard, guard_rev),
            Compare::absent(&key),
            Compare::absent(&ip_key),
            Compare::absent(&mac_key),
        ];
        let mut ops = vec![
            db::put_json(&key, &eip)?,
            Op::put(ip_key, id.as_bytes().to_vec()),
            Op::put(mac_key, id.as_bytes().to_vec()),
            db::bump(guard),
        ];
        let (c, o) = quota::charge(store, tenant, &[(Kind::Eips, 1)]).await?;
        compare.extend(c);
        ops.extend(o);
        let answer = EipView {
            eip: eip.clone(),
            node: None,
        };
        auth::respond_with_revision(&format!("/v1/eips/{id}"), &answer);
        db::commit_attempt(store, compare, ops, answer).await
    })
    .await?;
    tracing::info!(ip = %eip.eip.ip, mac = %eip.eip.mac, "EIP allocated");
    let location = format!("/v1/eips/{}", eip.eip.id);
    let revision = auth::last_commit_revision().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Tagged(eip, revision),
    ))
}

#[utoipa::path(get, path = "/v1/eips", tag = "eips", params(EipFilter),
    responses((status = 200, body = Vec<EipView>), (status = 400, body = Problem)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(f): ApiQuery<EipFilter>,
) -> ApiResult<PageOf<EipView>> {
    caller.tenant_scope()?;
    let store = st.store.as_ref();
    let eips: Vec<Owned<Eip>> = db::list_revisioned(store, keys::EIPS).await?;
    let nics: Vec<Nic> = db::list_json(store, keys::NICS).await?;
    let node_of: HashMap<&str, Option<&String>> = nics
        .iter()
        .map(|n| (n.id.as_str(), n.node.as_ref()))
        .collect();
    let out = eips
        .into_iter()
        .filter(|e| caller.sees(&e.tenant_id))
        .filter(|e| {
            f.external_network_id
                .as_ref()
                .is_none_or(|x| &e.external_network_id == x)
        })
        .filter(|e| {
            f.nic_id
                .as_ref()
                .is_none_or(|x| e.nic_id.as_ref() == Some(x))
        })
        .map(|eip| {
            let node = eip
                .nic_id
                .as_deref()
                .and_then(|n| node_of.get(n).copied().flatten().cloned());
            EipView { eip, node }
        })
        .collect();
    let filters = format!("{:?}", (&f.external_network_id, &f.nic_id));
    let (items, next) = page_of!(f).apply("eips", &filters, out)?;
    Ok(PageOf { items, next, uri })
}

#[utoipa::path(get, path = "/v1/eips/{id}", tag = "eips", params(("id" = String, Path)),
    responses((status = 200, body = EipView), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(eip_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<EipView>> {
    let store = st.store.as_ref();
    let eip = load(store, &id).await?.ok_or_else(|| not_found(&id))?;
    caller.check(&eip.value.tenant_id, Access::Read, || not_found(&id))?;
    Ok(Tagged(view(store, eip.value).await?, eip.mod_revision))
}

/// Binding reaches the NIC's node (its 1:1 NAT): `202` with an operation
/// that succeeds once that node has it. Binding again to the same NIC has
/// the same outcome (an operation that succeeds at once).
#[utoipa::path(post, path = "/v1/eips/{id}/bind", tag = "eips", request_body = BindEip,
    params(("id" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(eip_id = %id, nic_id = %req.nic_id))]
pub async fn bind(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiJson(req): ApiJson<BindEip>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (id, req, caller, if_match, new_op) = (&id, &req, &caller, &if_match, &new_op);
    let (eip, op) = db::retry("bind the EIP", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let e = &cur.value;
        if let Some(gw) = &e.nat_gateway_id {
            return Err(Problem::conflict(format!(
                "EIP {id:?} is owned by NAT gateway {gw:?}; it cannot be bound to a NIC"
            )));
        }
        match &e.nic_id {
            // The same request again: the same outcome, nothing to change
            // but the operation's record.
            Some(n) if *n == req.nic_id => {
                let mut compare = vec![Compare::mod_revision_is(keys::eip(id), cur.mod_revision)];
                let mut ops = Vec::new();
                let op = new_op.stage(
                    &e.tenant_id,
                    Action::Update,
                    Target::eip(id),
                    &mut compare,
                    &mut ops,
                )?;
                return db::commit_attempt(store, compare, ops, (e.clone(), op)).await;
            }
            Some(n) => {
                return Err(Problem::conflict(format!(
                    "EIP {id:?} is already bound to NIC {n:?}; unbind it first \
                     (POST /v1/eips/{id}/unbind)"
                ))
                .with_field("nic_id"))
            }
            None => {}
        }
        let nic_id = &req.nic_id;
        let missing =
            || Problem::invalid("nic_id", format!("`nic_id`: NIC {nic_id:?} does not exist"));
        if !validate::is_id("nic", nic_id) {
            return Err(missing());
        }
        let nic: db::Versioned<Owned<Nic>> = db::get_json(store, &keys::nic(nic_id))
            .await?
            .ok_or_else(missing)?;
        if nic.value.tenant_id != e.tenant_id {
            // Another tenant's NIC is answered as absent.
            return Err(missing());
        }
        let net_id = &e.external_network_id;
        let vpc = vpcs::load(store, &nic.value.vpc_id)
            .await?
            .ok_or_else(missing)?;
        if !vpc.value.external_network_ids.contains(net_id) {
            return Err(Problem::invalid(
                "nic_id",
                format!(
                    "`nic_id`: NIC {nic_id:?} is in VPC {:?}, which is not attached to \
                     external network {net_id:?}; attach it first (PATCH /v1/vpcs/{{id}} \
                     external_network_ids)",
                    vpc.value.id
                ),
            ));
        }
        let Some(node) = &nic.value.node else {
            return Err(Problem::invalid(
                "nic_id",
                format!(
                    "`nic_id`: NIC {nic_id:?} is not bound to a node; the EIP's 1:1 NAT \
                     runs on the NIC's node"
                ),
            ));
        };
        let net = external_networks::referenced(store, net_id, "nic_id").await?;
        if !net.value.nodes.contains(node) {
            return Err(Problem::invalid(
                "nic_id",
                format!(
                    "`nic_id`: NIC {nic_id:?} is bound to node {node:?}, which is not attached \
                     to external network {net_id:?} ({})",
                    net.value.name
                ),
            ));
        }
        let nic_key = eip_index::nic(nic_id);
        if let Some(other) = db::get_text(store, &nic_key).await? {
            return Err(Problem::conflict(format!(
                "NIC {nic_id:?} already has EIP {other:?}; a NIC holds at most one EIP"
            ))
            .with_field("nic_id"));
        }
        let mut eip = cur.value.clone();
        eip.nic_id = Some(nic_id.clone());
        let key = keys::eip(id);
        let guard = index::vpc_guard(&vpc.value.id);
        let mut compare = vec![
            Compare::mod_revision_is(&key, cur.mod_revision),
            Compare::absent(&nic_key),
            // The NIC is still where it was checked, the VPC still attached.
            Compare::mod_revision_is(keys::nic(nic_id), nic.mod_revision),
            Compare::mod_revision_is(keys::vpc(&vpc.value.id), vpc.mod_revision),
        ];
        let mut ops = vec![
            db::put_json(&key, &eip)?,
            Op::put(nic_key, id.as_bytes().to_vec()),
            // A detach of the network reads this guard before the bindings.
            db::bump(guard),
        ];
        let op = new_op.stage(
            &eip.tenant_id,
            Action::Update,
            Target::eip(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, (eip, op)).await
    })
    .await?;
    tracing::info!(ip = %eip.ip, op_id = %op.id, "EIP bound");
    Ok(operations::accepted(op))
}

/// Unbinding reaches the NIC's node too: `202` with an operation. Not
/// bound: the same outcome (an operation that succeeds at once).
#[utoipa::path(post, path = "/v1/eips/{id}/unbind", tag = "eips",
    params(("id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(eip_id = %id))]
pub async fn unbind(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(q.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (id, caller, if_match, new_op) = (&id, &caller, &if_match, &new_op);
    let op = db::retry("unbind the EIP", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let key = keys::eip(id);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = Vec::new();
        // Not bound: unbinding again has the same outcome.
        if let Some(nic_id) = &cur.value.nic_id {
            let mut eip = cur.value.clone();
            eip.nic_id = None;
            ops.push(db::put_json(&key, &eip)?);
            let nic_key = eip_index::nic(nic_id);
            if db::get_text(store, &nic_key).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(nic_key));
            }
        }
        let op = new_op.stage(
            &cur.value.tenant_id,
            Action::Update,
            Target::eip(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "EIP unbound");
    Ok(operations::accepted(op))
}

#[utoipa::path(delete, path = "/v1/eips/{id}", tag = "eips", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
#[instrument(skip_all, fields(eip_id = %id))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
) -> ApiResult<StatusCode> {
    let store = st.store.as_ref();
    let (id, caller, if_match) = (&id, &caller, &if_match);
    db::retry("release the EIP", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let e = &cur.value;
        if let Some(nic) = &e.nic_id {
            return Err(Problem::conflict(format!(
                "EIP {id:?} is bound to NIC {nic:?}; unbind it first"
            )));
        }
        if let Some(gw) = &e.nat_gateway_id {
            return Err(Problem::conflict(format!(
                "EIP {id:?} is owned by NAT gateway {gw:?}; delete the gateway first"
            )));
        }
        let key = keys::eip(id);
        let mut ops = vec![Op::delete(&key)];
        let (qc, qo) = quota::charge(store, &e.tenant_id, &[(Kind::Eips, -1)]).await?;
        ops.extend(qo);
        for idx in [
            net_index::eip_ip(&e.external_network_id, e.ip),
            index::mac(&e.external_network_id, e.mac),
        ] {
            if db::get_text(store, &idx).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(idx));
            }
        }
        db::commit_attempt(
            store,
            [Compare::mod_revision_is(&key, cur.mod_revision)]
                .into_iter()
                .chain(qc)
                .collect(),
            ops,
            (),
        )
        .await
    })
    .await?;
    tracing::info!("EIP released");
    Ok(StatusCode::NO_CONTENT)
}
