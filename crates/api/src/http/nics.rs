//! `/v1/nics`: virtual NICs, one MAC and one IPv4 address in a subnet,
//! optionally bound to a node.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Access, Caller};
use super::db::{self, index, Attempt};
use super::etag::{IfMatch, Tagged};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::list::{page_of, PageOf};
use super::operations::{self, DeleteParams};
use super::problem::{ApiResult, Problem};
use super::quota::{self, Kind};
use super::validate;
use super::{security_groups, subnets, vpcs, AppState};
use crate::model::{keys, Nic, NicStatus, NicStatusRecord, Node, Owned};
use crate::operation::{Action, Operation, Target};
use crate::store::{Compare, Op, Store};

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNic {
    pub subnet_id: String,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters). On a PATCH: the new set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,

    /// The NIC id if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A free host address of the subnet; the lowest free one if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.0.1.10")]
    pub ip: Option<String>,
    /// A unicast MAC unused in the VPC; a random `02:...` one if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "02:00:00:12:34:56")]
    pub mac: Option<String>,
    /// The node to bind the NIC to; it must exist and be in the VPC's Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// On if omitted. Off: no anti-spoofing, no security groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<bool>,
    /// Groups of the NIC's VPC; the VPC's default group if omitted (none
    /// with port security off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_address_pairs: Option<Vec<AddressPairRequest>>,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// An allowed address pair as requested.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressPairRequest {
    /// An IPv4 address or CIDR.
    #[schema(example = "10.0.1.100")]
    pub ip_address: String,
    /// The NIC's own MAC if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

fn pair_specs(raw: &[AddressPairRequest]) -> Vec<validate::PairSpec> {
    raw.iter()
        .map(|p| validate::PairSpec {
            ip_address: p.ip_address.clone(),
            mac_address: p.mac_address.clone(),
        })
        .collect()
}

/// Port security off excludes groups and address pairs.
fn check_port_security(nic: &Nic) -> ApiResult<()> {
    if nic.port_security {
        return Ok(());
    }
    if !nic.security_groups.is_empty() {
        return Err(Problem::invalid(
            "security_groups",
            "a NIC with port_security off cannot have security groups; remove them \
             (\"security_groups\": []) in the same request",
        ));
    }
    if !nic.allowed_address_pairs.is_empty() {
        return Err(Problem::invalid(
            "allowed_address_pairs",
            "a NIC with port_security off cannot have allowed address pairs; remove them \
             in the same request",
        ));
    }
    Ok(())
}

/// Checks that every group of `nic` is a group of its VPC; returns the
/// compares and ops that keep them from being deleted before the commit.
async fn group_refs(store: &dyn Store, nic: &Nic) -> ApiResult<(Vec<Compare>, Vec<Op>)> {
    let (mut compare, mut ops) = (vec![], vec![]);
    for (i, g) in nic.security_groups.iter().enumerate() {
        let field = format!("security_groups[{i}]");
        let (c, op) = security_groups::reference(store, g, &nic.vpc_id, &field).await?;
        compare.push(c);
        ops.push(op);
    }
    Ok((compare, ops))
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchNic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters). On a PATCH: the new set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,

    /// A node name to (re)bind the NIC to, or null to unbind it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub node: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<bool>,
    /// Replaces the NIC's groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    /// Replaces the NIC's address pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_address_pairs: Option<Vec<AddressPairRequest>>,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// Tells `"node": null` (unbind) from an absent `node` (leave as is).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NicFilter {
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    /// Only the NICs bound to this node.
    pub node: Option<String>,
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

/// A NIC as the API shows it: the stored NIC plus its data-path status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicView {
    #[serde(flatten)]
    pub nic: Owned<Nic>,
    /// "up" once the NIC's current node reports its flows installed.
    pub status: NicStatus,
}

/// Up only if the node that reported it is the node the NIC is bound to
/// now; a report from a previous binding says nothing about the new one.
fn status_of(nic: &Nic, record: Option<&NicStatusRecord>) -> NicStatus {
    match (record, nic.node.as_deref()) {
        (Some(r), Some(node)) if r.node == node => r.status,
        _ => NicStatus::Down,
    }
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("NIC {id:?} not found"))
}

async fn load(store: &dyn Store, id: &str) -> ApiResult<db::Versioned<Owned<Nic>>> {
    if !validate::is_id("nic", id) {
        return Err(not_found(id));
    }
    db::get_json(store, &keys::nic(id))
        .await?
        .ok_or_else(|| not_found(id))
}

async fn view(store: &dyn Store, nic: Owned<Nic>) -> ApiResult<NicView> {
    let record: Option<db::Versioned<NicStatusRecord>> =
        db::get_json(store, &keys::nic_status(&nic.id)).await?;
    let status = status_of(&nic, record.as_ref().map(|r| &r.value));
    Ok(NicView { nic, status })
}

/// The node a NIC is to be bound to, checked against the VPC's Set. The
/// returned compares and op make the commit fail if the node changed or was
/// deleted meanwhile, and make a concurrent node delete or Set change retry.
async fn bind(
    store: &dyn Store,
    node: &str,
    vpc_set: &str,
    vpc_id: &str,
) -> ApiResult<(Vec<Compare>, Op)> {
    let missing = || Problem::invalid("node", format!("`node`: node {node:?} does not exist"));
    if validate::dns_label("node", node).is_err() {
        return Err(missing());
    }
    let key = keys::node(node);
    let n: db::Versioned<Node> = db::get_json(store, &key).await?.ok_or_else(missing)?;
    if n.value.set != vpc_set {
        return Err(Problem::invalid(
            "node",
            format!(
                "`node`: node {node:?} is in Set {:?} but VPC {vpc_id:?} lives in Set \
                 {vpc_set:?}; a VPC's traffic stays inside its Set",
                n.value.set
            ),
        ));
    }
    let guard = index::node_guard(node);
    let guard_rev = db::mod_revision(store, &guard).await?;
    Ok((
        vec![
            Compare::mod_revision_is(key, n.mod_revision),
            Compare::mod_revision_is(&guard, guard_rev),
        ],
        db::bump(guard),
    ))
}

#[utoipa::path(post, path = "/v1/nics", tag = "nics", request_body = CreateNic,
    responses((status = 202, body = Operation), (status = 400, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(nic_id = tracing::field::Empty, subnet_id = %req.subnet_id))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateNic>,
) -> ApiResult<Response> {
    caller.tenant_scope()?;
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    let tags = req.tags.clone().unwrap_or_default();
    validate::tags(&tags)?;
    let tags = &tags;
    let id = validate::new_id("nic");
    tracing::Span::current().record("nic_id", id.as_str());
    let name = req.name.clone().unwrap_or_else(|| id.clone());
    validate::name("name", &name)?;
    let want_ip = req
        .ip
        .as_deref()
        .map(|s| validate::ipv4("ip", s))
        .transpose()?;
    let want_mac = req
        .mac
        .as_deref()
        .map(|s| validate::mac("mac", s))
        .transpose()?;
    let want_groups = req
        .security_groups
        .as_deref()
        .map(validate::security_group_ids)
        .transpose()?;
    let pairs = validate::address_pairs(&pair_specs(
        req.allowed_address_pairs.as_deref().unwrap_or_default(),
    ))?;
    let port_security = req.port_security.unwrap_or(true);
    let (want_groups, pairs) = (&want_groups, &pairs);
    let store = st.store.as_ref();
    let created_at = validate::now_rfc3339();
    let (id, name, req, created_at, caller) = (&id, &name, &req, &created_at, &caller);
    let new_op = &new_op;
    let (nic, op) = db::retry("create the NIC", || async move {
        let missing = || {
            Problem::invalid(
                "subnet_id",
                format!("`subnet_id`: subnet {:?} does not exist", req.subnet_id),
            )
        };
        let subnet = subnets::load(store, &req.subnet_id)
            .await?
            .ok_or_else(missing)?;
        caller.check(&subnet.value.tenant_id, Access::Write, missing)?;
        let sn = &subnet.value;
        // Guard first, then the addresses in use: a NIC added after this
        // read bumps the guard and fails the compare.
        let guard = index::subnet_guard(&sn.id);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let ip = match want_ip {
            Some(ip) => {
                validate::host_in(sn.cidr, ip)
                    .map_err(|why| Problem::invalid("ip", format!("`ip` {why}")))?;
                if ip == sn.gateway_ip {
                    return Err(Problem::invalid(
                        "ip",
                        format!("`ip` {ip} is the gateway address of subnet {:?}", sn.id),
                    ));
                }
                if let Some(owner) = db::get_text(store, &index::ip(&sn.id, ip)).await? {
                    return Err(Problem::conflict(format!(
                        "`ip` {ip} is already used by NIC {owner:?} in subnet {:?}",
                        sn.id
                    ))
                    .with_field("ip"));
                }
                ip
            }
            None => {
                let (kvs, _) = store.range(&index::ip_prefix(&sn.id)).await?;
                let used: BTreeSet<Ipv4Addr> = kvs
                    .iter()
                    .filter_map(|kv| kv.key.rsplit('/').next()?.parse().ok())
                    .collect();
                validate::lowest_free(sn.cidr, sn.gateway_ip, &used).ok_or_else(|| {
                    Problem::conflict(format!(
                        "subnet {:?} ({}) has no free address left",
                        sn.id, sn.cidr
                    ))
                    .with_field("subnet_id")
                })?
            }
        };
        let mac = match want_mac {
            Some(mac) => {
                if let Some(owner) = db::get_text(store, &index::mac(&sn.vpc_id, mac)).await? {
                    return Err(Problem::conflict(format!(
                        "`mac` {mac} is already used by {owner:?} in VPC {:?}",
                        sn.vpc_id
                    ))
                    .with_field("mac"));
                }
                mac
            }
            None => {
                // 40 random bits: a clash is rare and caught by the compare.
                let mut mac = validate::random_mac();
                for _ in 0..8 {
                    if store.get(&index::mac(&sn.vpc_id, mac)).await?.is_none() {
                        break;
                    }
                    mac = validate::random_mac();
                }
                mac
            }
        };
        let ip_key = index::ip(&sn.id, ip);
        let mac_key = index::mac(&sn.vpc_id, mac);
        let key = keys::nic(id);
        let mut compare = vec![
            db::created_at(keys::subnet(&sn.id), subnet.create_revision),
            Compare::mod_revision_is(&guard, guard_rev),
            Compare::absent(&key),
            Compare::absent(&ip_key),
            Compare::absent(&mac_key),
        ];
        let vpc = vpcs::load(store, &sn.vpc_id).await?.ok_or_else(|| {
            Problem::invalid(
                "subnet_id",
                format!("`subnet_id`: the VPC of subnet {:?} is gone", sn.id),
            )
        })?;
        let security_groups = match want_groups {
            Some(g) => g.clone(),
            None if port_security => vpc
                .value
                .default_security_group_id
                .iter()
                .cloned()
                .collect(),
            None => vec![],
        };
        let nic = Owned::new(
            subnet.value.tenant_id.as_str(),
            Nic {
                id: id.clone(),
                name: name.clone(),
                subnet_id: sn.id.clone(),
                vpc_id: sn.vpc_id.clone(),
                mac,
                ip,
                node: req.node.clone(),
                interface_id: id.clone(),
                port_security,
                security_groups,
                allowed_address_pairs: pairs.clone(),
                created_at: created_at.clone(),
            },
        );
        let nic = nic.with_tags(tags.clone());
        check_port_security(&nic)?;
        let mut ops = vec![
            db::put_json(&key, &nic)?,
            Op::put(ip_key, id.as_bytes().to_vec()),
            Op::put(mac_key, id.as_bytes().to_vec()),
            db::bump(guard),
        ];
        let (c, o) = group_refs(store, &nic).await?;
        compare.extend(c);
        ops.extend(o);
        let (c, o) = quota::charge(store, &nic.tenant_id, &[(Kind::Nics, 1)]).await?;
        compare.extend(c);
        ops.extend(o);
        if let Some(node) = &req.node {
            let (c, op) = bind(store, node, &vpc.value.set, &vpc.value.id).await?;
            compare.extend(c);
            ops.push(op);
        }
        let op = new_op.stage(
            &nic.tenant_id,
            Action::Create,
            Target::nic(id),
            &mut compare,
            &mut ops,
        )?;
        Ok(if db::commit(store, compare, ops).await? {
            Attempt::Done((nic, op))
        } else {
            Attempt::Retry
        })
    })
    .await?;
    tracing::info!(ip = %nic.ip, mac = %nic.mac, node = ?nic.node, op_id = %op.id, "NIC created");
    Ok(operations::accepted(op))
}

#[utoipa::path(get, path = "/v1/nics", tag = "nics", params(NicFilter),
    responses((status = 200, body = Vec<NicView>), (status = 400, body = Problem)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(f): ApiQuery<NicFilter>,
) -> ApiResult<PageOf<NicView>> {
    caller.tenant_scope()?;
    let store = st.store.as_ref();
    let nics: Vec<Owned<Nic>> = db::list_revisioned(store, keys::NICS).await?;
    let (kvs, _) = store.range(keys::NIC_STATUS).await?;
    let mut statuses: HashMap<String, NicStatusRecord> = HashMap::new();
    for kv in kvs {
        let id = kv.key.trim_start_matches(keys::NIC_STATUS).to_string();
        match serde_json::from_slice(&kv.value) {
            Ok(r) => {
                statuses.insert(id, r);
            }
            // One bad status record must not hide every NIC; show it down.
            Err(e) => tracing::warn!(nic_id = %id, error = %e, "unreadable NIC status record"),
        }
    }
    let out = nics
        .into_iter()
        .filter(|n| caller.sees(&n.tenant_id))
        .filter(|n| f.subnet_id.as_ref().is_none_or(|s| &n.subnet_id == s))
        .filter(|n| f.vpc_id.as_ref().is_none_or(|v| &n.vpc_id == v))
        .filter(|n| f.node.as_ref().is_none_or(|x| n.node.as_ref() == Some(x)))
        .map(|nic| {
            let status = status_of(&nic, statuses.get(&nic.id));
            NicView { nic, status }
        })
        .collect();
    let filters = format!("{:?}", (&f.subnet_id, &f.vpc_id, &f.node));
    let (items, next) = page_of!(f).apply("nics", &filters, out)?;
    Ok(PageOf { items, next, uri })
}

#[utoipa::path(get, path = "/v1/nics/{id}", tag = "nics", params(("id" = String, Path)),
    responses((status = 200, body = NicView), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(nic_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<NicView>> {
    let store = st.store.as_ref();
    let nic = load(store, &id).await?;
    caller.check(&nic.value.tenant_id, Access::Read, || not_found(&id))?;
    Ok(Tagged(view(store, nic.value).await?, nic.mod_revision))
}

#[utoipa::path(patch, path = "/v1/nics/{id}", tag = "nics", request_body = PatchNic,
    params(("id" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
#[instrument(skip_all, fields(nic_id = %id))]
pub async fn patch(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiJson(req): ApiJson<PatchNic>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    if let Some(name) = &req.name {
        validate::name("name", name)?;
    }
    if let Some(t) = &req.tags {
        validate::tags(t)?;
    }
    let want_groups = req
        .security_groups
        .as_deref()
        .map(validate::security_group_ids)
        .transpose()?;
    let want_pairs = req
        .allowed_address_pairs
        .as_deref()
        .map(|p| validate::address_pairs(&pair_specs(p)))
        .transpose()?;
    let (want_groups, want_pairs) = (&want_groups, &want_pairs);
    let store = st.store.as_ref();
    let (id, req, caller, if_match) = (&id, &req, &caller, &if_match);
    let new_op = &new_op;
    let (nic, op) = db::retry("update the NIC", || async move {
        let cur = load(store, id).await?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let mut nic = cur.value.clone();
        let key = keys::nic(id);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![];
        if let Some(name) = &req.name {
            nic.name = name.clone();
        }
        if let Some(t) = &req.tags {
            nic.tags = t.clone();
        }
        if let Some(node) = req.node.as_ref().filter(|n| **n != nic.node) {
            if let Some(node) = node {
                let vpc = vpcs::load(store, &nic.vpc_id).await?.ok_or_else(|| {
                    Problem::conflict(format!("the VPC {:?} of NIC {id:?} is gone", nic.vpc_id))
                })?;
                let (c, op) = bind(store, node, &vpc.value.set, &vpc.value.id).await?;
                compare.extend(c);
                ops.push(op);
            }
            // The old node's report says nothing about the new binding.
            ops.push(Op::delete(keys::nic_status(id)));
            nic.node = node.clone();
        }
        if let Some(ps) = req.port_security {
            nic.port_security = ps;
        }
        if let Some(p) = want_pairs {
            nic.allowed_address_pairs = p.clone();
        }
        if let Some(g) = want_groups {
            // Only groups joining now need a reference: the others were
            // checked when they joined and their guards stop their delete.
            let joining = Nic {
                security_groups: g
                    .iter()
                    .filter(|x| !cur.value.security_groups.contains(x))
                    .cloned()
                    .collect(),
                ..nic.inner.clone()
            };
            let (c, o) = group_refs(store, &joining).await?;
            compare.extend(c);
            ops.extend(o);
            nic.security_groups = g.clone();
        }
        check_port_security(&nic)?;
        // A PATCH that changes nothing still gets its operation (flowctl
        // finds no node changed at its revision and ends it at once): one
        // answer shape for every PATCH.
        if nic != cur.value {
            ops.push(db::put_json(&key, &nic)?);
        }
        let op = new_op.stage(
            &nic.tenant_id,
            Action::Update,
            Target::nic(id),
            &mut compare,
            &mut ops,
        )?;
        Ok(if db::commit(store, compare, ops).await? {
            Attempt::Done((nic, op))
        } else {
            Attempt::Retry
        })
    })
    .await?;
    tracing::info!(
        node = ?nic.node,
        port_security = nic.port_security,
        groups = ?nic.security_groups,
        op_id = %op.id,
        "NIC updated"
    );
    Ok(operations::accepted(op))
}

#[utoipa::path(delete, path = "/v1/nics/{id}", tag = "nics",
    params(("id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
#[instrument(skip_all, fields(nic_id = %id))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(q.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (id, caller, if_match) = (&id, &caller, &if_match);
    let new_op = &new_op;
    let op = db::retry("delete the NIC", || async move {
        let cur = load(store, id).await?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let key = keys::nic(id);
        let mut ops = vec![Op::delete(&key), Op::delete(keys::nic_status(id))];
        let (qc, qo) = quota::charge(store, &cur.value.tenant_id, &[(Kind::Nics, -1)]).await?;
        ops.extend(qo);
        for idx in [
            index::ip(&cur.value.subnet_id, cur.value.ip),
            index::mac(&cur.value.vpc_id, cur.value.mac),
        ] {
            if db::get_text(store, &idx).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(idx));
            }
        }
        let mut compare: Vec<Compare> = [Compare::mod_revision_is(&key, cur.mod_revision)]
            .into_iter()
            .chain(qc)
            .collect();
        let op = new_op.stage(
            &cur.value.tenant_id,
            Action::Delete,
            Target::nic(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "NIC deleted");
    Ok(operations::accepted(op))
}
