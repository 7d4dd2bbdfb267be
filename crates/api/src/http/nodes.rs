//! `/v1/nodes`: the hypervisors, grouped in Sets of at most 45.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::{self, Caller};
use super::db::{self, index, Attempt};
use super::etag::{IfMatch, Tagged, WithRevision};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::operations;
use super::problem::{ApiResult, Problem};
use super::validate;
use super::AppState;
use crate::model::{keys, Nic, Node, NodeRole, MAX_NODES_PER_SET};
use crate::operation::{Action, Operation, Target};
use crate::store::Compare;

pub const DEFAULT_SET: &str = "default";

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    /// Unique; a lowercase DNS label. The identity the agent presents.
    pub name: String,
    /// The Set to join; "default" if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    #[schema(example = "192.0.2.11")]
    pub underlay_ip: String,
    /// `["compute"]` if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<NodeRole>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchNode {
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Move to another Set; only while no NIC is bound to the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<NodeRole>>,
    /// Drain (true) or return (false) the node: a drained node goes last in
    /// every NAT gateway's ranking, so their traffic moves to other gateway
    /// nodes; the node view says when it is safe to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<bool>,
    /// Higher first in NAT gateway rankings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_priority: Option<u32>,
}

/// A node as `GET /v1/nodes/{name}` shows it: the record, and what it
/// serves.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    /// The NAT gateways whose ranking holds the node now (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_gateways: Vec<String>,
    /// Only while drained: true once no NAT gateway ranks the node first
    /// (each has a gateway that is not drained ahead of it). The other
    /// nodes follow the new ranking once their agents apply that revision
    /// (the API does not see their acks yet); their data path then sends
    /// nothing to this node while a gateway ahead of it is alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_to_stop: Option<bool>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NodeFilter {
    /// Only the nodes of this Set.
    pub set: Option<String>,
}

fn roles(raw: Option<Vec<NodeRole>>) -> ApiResult<Vec<NodeRole>> {
    let mut roles = raw.unwrap_or_else(|| vec![NodeRole::Compute]);
    if roles.is_empty() {
        return Err(Problem::invalid(
            "roles",
            "`roles` must name at least one of compute, gateway",
        ));
    }
    // Keep a canonical order so equal role sets compare equal.
    roles.sort_by_key(|r| *r as u8);
    roles.dedup();
    Ok(roles)
}

fn not_found(name: &str) -> Problem {
    Problem::not_found(format!("node {name:?} not found"))
}

fn set_full(set: &str) -> Problem {
    Problem::conflict(format!(
        "Set {set:?} already has {MAX_NODES_PER_SET} nodes, the maximum; put the node in \
         another Set"
    ))
    .with_field("set")
}

/// NICs bound to `node`, from the NIC objects themselves.
async fn bound_nics(store: &dyn crate::store::Store, node: &str) -> ApiResult<Vec<String>> {
    let nics: Vec<Nic> = db::list_json(store, keys::NICS).await?;
    Ok(nics
        .into_iter()
        .filter(|n| n.node.as_deref() == Some(node))
        .map(|n| n.id)
        .collect())
}

async fn members(store: &dyn crate::store::Store, set: &str) -> ApiResult<usize> {
    let nodes: Vec<Node> = db::list_json(store, keys::NODES).await?;
    Ok(nodes.iter().filter(|n| n.set == set).count())
}

#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", request_body = CreateNode,
    responses((status = 201, body = Node), (status = 400, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(node = %req.name))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateNode>,
) -> ApiResult<impl IntoResponse> {
    caller.infra()?;
    validate::dns_label("name", &req.name)?;
    let set = req.set.unwrap_or_else(|| DEFAULT_SET.to_string());
    validate::dns_label("set", &set)?;
    let underlay_ip = validate::unicast_ipv4("underlay_ip", &req.underlay_ip)?;
    let node = Node {
        name: req.name,
        set,
        underlay_ip,
        roles: roles(req.roles)?,
        drained: false,
        gateway_priority: 0,
        created_at: validate::now_rfc3339(),
    };
    let store = st.store.as_ref();
    let node = &node;
    let node = db::retry("create the node", || async move {
        let key = keys::node(&node.name);
        if store.get(&key).await?.is_some() {
            return Err(
                Problem::conflict(format!("node {:?} already exists", node.name))
                    .with_field("name"),
            );
        }
        let ip_key = index::underlay_ip(node.underlay_ip);
        if let Some(owner) = db::get_text(store, &ip_key).await? {
            return Err(Problem::conflict(format!(
                "underlay_ip {} is already used by node {owner:?}",
                node.underlay_ip
            ))
            .with_field("underlay_ip"));
        }
        // The guard is read before the members, so a node added after this
        // read fails the compare below.
        let guard = index::set_guard(&node.set);
        let guard_rev = db::mod_revision(store, &guard).await?;
        if members(store, &node.set).await? >= MAX_NODES_PER_SET {
            return Err(set_full(&node.set));
        }
        auth::respond_with_revision(&format!("/v1/nodes/{}", node.name), node);
        db::commit_attempt(
            store,
            vec![
                Compare::absent(&key),
                Compare::absent(&ip_key),
                Compare::mod_revision_is(&guard, guard_rev),
            ],
            vec![
                db::put_json(&key, &node)?,
                crate::store::Op::put(&ip_key, node.name.as_bytes().to_vec()),
                db::bump(&guard),
            ],
            node.clone(),
        )
        .await
    })
    .await?;
    tracing::info!(set = %node.set, "node created");
    let location = format!("/v1/nodes/{}", node.name);
    let revision = auth::last_commit_revision().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Tagged(WithRevision::new(node), revision),
    ))
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", params(NodeFilter),
    responses((status = 200, body = Vec<Node>)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<NodeFilter>,
) -> ApiResult<Json<Vec<WithRevision<Node>>>> {
    caller.infra()?;
    let nodes: Vec<WithRevision<Node>> =
        db::list_revisioned(st.store.as_ref(), keys::NODES).await?;
    Ok(Json(
        nodes
            .into_iter()
            .filter(|n| filter.set.as_ref().is_none_or(|s| &n.inner.set == s))
            .collect(),
    ))
}

async fn load(store: &dyn crate::store::Store, name: &str) -> ApiResult<db::Versioned<Node>> {
    if validate::dns_label("name", name).is_err() {
        return Err(not_found(name));
    }
    db::get_json(store, &keys::node(name))
        .await?
        .ok_or_else(|| not_found(name))
}

#[utoipa::path(get, path = "/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(node = %name))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Tagged<WithRevision<NodeView>>> {
    caller.infra()?;
    let store = st.store.as_ref();
    let n = load(store, &name).await?;
    let view = view(store, n.value).await?;
    Ok(Tagged(WithRevision::new(view), n.mod_revision))
}

async fn view(store: &dyn crate::store::Store, node: Node) -> ApiResult<NodeView> {
    let nat_gateways = super::nat_gateways::served_by(store)
        .await?
        .remove(&node.name)
        .unwrap_or_default();
    let safe_to_stop = node
        .drained
        .then_some(nat_gateways.iter().all(|(_, rank)| *rank > 0));
    let nat_gateways = nat_gateways.into_iter().map(|(id, _)| id).collect();
    Ok(NodeView {
        node,
        nat_gateways,
        safe_to_stop,
    })
}

#[utoipa::path(patch, path = "/v1/nodes/{name}", tag = "nodes", request_body = PatchNode,
    params(("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(node = %name))]
pub async fn patch(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    if_match: IfMatch,
    ApiJson(req): ApiJson<PatchNode>,
) -> ApiResult<Response> {
    caller.infra()?;
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    if let Some(set) = &req.set {
        validate::dns_label("set", set)?;
    }
    let new_ip = req
        .underlay_ip
        .as_deref()
        .map(|s| validate::unicast_ipv4("underlay_ip", s))
        .transpose()?;
    let new_roles = req.roles.clone().map(|r| roles(Some(r))).transpose()?;
    let store = st.store.as_ref();
    let (name, req, new_roles, if_match, new_op) = (&name, &req, &new_roles, &if_match, &new_op);
    let tenant_id = &caller.tenant_id;
    let (node, op) = db::retry("update the node", || async move {
        let cur = load(store, name).await?;
        if_match.check(cur.mod_revision)?;
        let mut node = cur.value.clone();
        let key = keys::node(name);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![];
        if let Some(roles) = &new_roles {
            node.roles = roles.clone();
        }
        if let Some(d) = req.drained {
            node.drained = d;
        }
        if let Some(p) = req.gateway_priority {
            node.gateway_priority = p;
        }
        if let Some(ip) = new_ip.filter(|ip| *ip != node.underlay_ip) {
            let new_key = index::underlay_ip(ip);
            if let Some(owner) = db::get_text(store, &new_key).await? {
                return Err(Problem::conflict(format!(
                    "underlay_ip {ip} is already used by node {owner:?}"
                ))
                .with_field("underlay_ip"));
            }
            compare.push(Compare::absent(&new_key));
            ops.push(crate::store::Op::put(&new_key, name.as_bytes().to_vec()));
            let old_key = index::underlay_ip(node.underlay_ip);
            if db::get_text(store, &old_key).await?.as_deref() == Some(name.as_str()) {
                ops.push(crate::store::Op::delete(old_key));
            }
            node.underlay_ip = ip;
        }
        if let Some(set) = req.set.as_ref().filter(|s| **s != node.set) {
            // NICs bound here belong to VPCs of the old Set, whose traffic
            // must stay inside it.
            let node_guard = index::node_guard(name);
            let node_guard_rev = db::mod_revision(store, &node_guard).await?;
            let nics = bound_nics(store, name).await?;
            if !nics.is_empty() {
                return Err(Problem::conflict(format!(
                    "node {name:?} cannot change Set while it has {}; unbind them first",
                    db::in_use("NICs bound", &nics)
                ))
                .with_field("set"));
            }
            let set_guard = index::set_guard(set);
            let set_guard_rev = db::mod_revision(store, &set_guard).await?;
            if members(store, set).await? >= MAX_NODES_PER_SET {
                return Err(set_full(set));
            }
            compare.push(Compare::mod_revision_is(&node_guard, node_guard_rev));
            compare.push(Compare::mod_revision_is(&set_guard, set_guard_rev));
            ops.push(db::bump(set_guard));
            node.set = set.clone();
        }
        // Nothing changed: only the operation is written (done at once).
        if node != cur.value {
            ops.push(db::put_json(&key, &node)?);
        }
        // A node's drain, priority, roles and address reach the nodes it
        // shares VPCs or NAT gateways with: an operation, in the caller's
        // tenant (nodes belong to none).
        let op = new_op.stage(
            tenant_id,
            Action::Update,
            Target::node(name),
            &mut compare,
            &mut ops,
        )?;
        Ok(if db::commit(store, compare, ops).await? {
            Attempt::Done((node, op))
        } else {
            Attempt::Retry
        })
    })
    .await?;
    tracing::info!(set = %node.set, drained = node.drained, op_id = %op.id, "node updated");
    Ok(operations::accepted(op))
}

#[utoipa::path(delete, path = "/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
#[instrument(skip_all, fields(node = %name))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    if_match: IfMatch,
) -> ApiResult<StatusCode> {
    caller.infra()?;
    let store = st.store.as_ref();
    let (name, if_match) = (&name, &if_match);
    db::retry("delete the node", || async move {
        let cur = load(store, name).await?;
        if_match.check(cur.mod_revision)?;
        let guard = index::node_guard(name);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let nics = bound_nics(store, name).await?;
        if !nics.is_empty() {
            return Err(Problem::conflict(format!(
                "node {name:?} still has {}; unbind or delete them first",
                db::in_use("NICs bound", &nics)
            )));
        }
        let key = keys::node(name);
        let mut ops = vec![
            crate::store::Op::delete(&key),
            crate::store::Op::delete(&guard),
        ];
        let ip_key = index::underlay_ip(cur.value.underlay_ip);
        if db::get_text(store, &ip_key).await?.as_deref() == Some(name.as_str()) {
            ops.push(crate::store::Op::delete(ip_key));
        }
        db::commit_attempt(
            store,
            vec![
                Compare::mod_revision_is(&key, cur.mod_revision),
                Compare::mod_revision_is(&guard, guard_rev),
            ],
            ops,
            (),
        )
        .await
    })
    .await?;
    tracing::info!("node deleted");
    Ok(StatusCode::NO_CONTENT)
}
