//! `/v1/operations`: the asynchronous operations of changes that must reach
//! nodes (see [`crate::operation`] for their life), and
//! `/v1/tenants/{id}/callback-secret`: the key their callbacks are signed
//! with.
//!
//! A handler whose change flowctl compiles into node state stages an
//! operation in its change's transaction ([`stage`]) and answers
//! [`accepted`]: `202`, the operation, `Location: /v1/operations/{id}` and
//! `Retry-After`. The idempotency record of the request is that answer,
//! so a replay gets the same operation.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::{self, Access, AuthConfig, Caller};
use super::db;
use super::extract::{ApiPath, ApiQuery};
use super::list::{Listed, Page, PageOf};
use super::problem::{ApiResult, Problem};
use super::validate;
use super::AppState;
use crate::model::Role;
use crate::operation::{
    check_callback_url, keys, Action, CallbackStatus, Delivery, Operation, OperationState,
    ProgrammingStatus, Target,
};
use crate::store::{Compare, Op, Store};

/// What `Retry-After` says on a 202: poll the operation after this many
/// seconds (programming a node takes well under one).
pub const RETRY_AFTER_SECS: &str = "1";

/// The `callback_url` of a request, checked (422 naming the field).
fn callback_url(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(url) = raw else {
        return Ok(None);
    };
    check_callback_url(url).map_err(|why| {
        Problem::invalid(
            "callback_url",
            format!("`callback_url` {why} (an http:// or https:// URL the callback is POSTed to)"),
        )
    })?;
    Ok(Some(url.to_string()))
}

/// `?callback_url=` of a DELETE (which has no body).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// POSTed the operation, signed, when it ends.
    pub callback_url: Option<String>,
}

/// The operation a handler's change will get: its id (the same on every
/// optimistic retry) and callback, checked before anything is read.
pub(super) struct NewOp {
    id: String,
    callback_url: Option<String>,
}

impl NewOp {
    pub(super) fn new(callback_url: Option<&str>) -> ApiResult<NewOp> {
        Ok(NewOp {
            id: validate::new_id("op"),
            callback_url: self::callback_url(callback_url)?,
        })
    }

    /// Adds the pending operation to the change's transaction and makes it
    /// the answer if the transaction commits.
    pub(super) fn stage(
        &self,
        tenant_id: &str,
        action: Action,
        target: Target,
        compare: &mut Vec<Compare>,
        ops: &mut Vec<Op>,
    ) -> ApiResult<Operation> {
        let op = Operation::new(
            &self.id,
            tenant_id,
            action,
            target,
            self.callback_url.clone(),
            &validate::now_rfc3339(),
        );
        stage(&op, compare, ops)?;
        Ok(op)
    }
}

/// Adds `op` to the change's transaction (created only if absent) and
/// makes it the answer if the transaction commits.
fn stage(op: &Operation, compare: &mut Vec<Compare>, ops: &mut Vec<Op>) -> ApiResult<()> {
    let key = keys::operation(&op.id);
    compare.push(Compare::absent(&key));
    ops.push(db::put_json(&key, &op.stored())?);
    if let Some(r) = op.target.status_resource() {
        // The resource's status follows its last operation; a deleted
        // resource needs none.
        let key = keys::last_op(r);
        let gone = op.action == Action::Delete && op.target.kind != "security_group_rule";
        ops.push(if gone {
            Op::delete(key)
        } else {
            Op::put(key, op.id.as_bytes().to_vec())
        });
    }
    auth::respond_accepted(&location(&op.id), op);
    Ok(())
}

/// A resource's programming status and the operation that decides it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Programming {
    pub status: ProgrammingStatus,
    /// The resource's last operation, while it is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation_id: Option<String>,
}

fn programming(op_id: Option<String>, state: Option<OperationState>) -> Programming {
    match (op_id, state) {
        (Some(id), Some(state)) => Programming {
            status: ProgrammingStatus::of(state),
            last_operation_id: Some(id),
        },
        // No operation, or one that ended and expired: nothing in flight.
        _ => Programming {
            status: ProgrammingStatus::Programmed,
            last_operation_id: None,
        },
    }
}

/// The programming status of one resource.
pub(super) async fn programming_of(store: &dyn Store, resource_id: &str) -> ApiResult<Programming> {
    let Some(op_id) = db::get_text(store, &keys::last_op(resource_id)).await? else {
        return Ok(programming(None, None));
    };
    let op: Option<db::Versioned<Operation>> =
        db::get_json(store, &keys::operation(&op_id)).await?;
    Ok(programming(Some(op_id), op.map(|o| o.value.state)))
}

/// The programming status of every resource with a last operation (those
/// without one are programmed).
pub(super) async fn programming_all(store: &dyn Store) -> ApiResult<HashMap<String, Programming>> {
    let (last, _) = store.range(keys::LAST_OP).await?;
    let (ops, _) = store.range(keys::OPERATIONS).await?;
    let states: HashMap<String, OperationState> = ops
        .iter()
        .filter_map(|kv| {
            let op: Operation = serde_json::from_slice(&kv.value).ok()?;
            Some((op.id, op.state))
        })
        .collect();
    Ok(last
        .into_iter()
        .map(|kv| {
            let resource = kv.key.trim_start_matches(keys::LAST_OP).to_string();
            let op_id = String::from_utf8_lossy(&kv.value).into_owned();
            let state = states.get(&op_id).copied();
            (resource, programming(Some(op_id), state))
        })
        .collect())
}

/// The time now as operations show it (RFC 3339, UTC), for flowctl.
pub fn now_rfc3339() -> String {
    validate::now_rfc3339()
}

fn location(id: &str) -> String {
    format!("/v1/operations/{id}")
}

/// `202 Accepted` with the operation the request's commit wrote.
pub(super) fn accepted(mut op: Operation) -> Response {
    let revision = auth::last_commit_revision().unwrap_or_default();
    op.revision = revision;
    tracing::info!(op_id = %op.id, target = %op.target.href, revision, "operation accepted");
    (
        StatusCode::ACCEPTED,
        [
            (header::LOCATION, location(&op.id)),
            (header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()),
        ],
        Json(op),
    )
        .into_response()
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("operation {id:?} not found"))
}

/// The delivery status of `op_id`'s callback, if any.
async fn callback_of(store: &dyn Store, op_id: &str) -> ApiResult<Option<CallbackStatus>> {
    for key in [keys::callback_done(op_id), keys::callback_pending(op_id)] {
        if let Some(d) = db::get_json::<Delivery>(store, &key).await? {
            return Ok(Some(d.value.status));
        }
    }
    Ok(None)
}

/// The operation as answered: with its revision, and its callback's
/// delivery (a pending one if it has not ended yet).
fn view(mut op: Operation, create_revision: u64, callback: Option<CallbackStatus>) -> Operation {
    op.revision = create_revision;
    op.callback = callback.or_else(|| {
        op.callback_url.clone().map(|url| CallbackStatus {
            url,
            state: crate::operation::CallbackState::Pending,
            attempts: 0,
            next_attempt_at_ms: None,
            last_error: None,
            ended_at_ms: None,
            first_attempt_at_ms: 0,
        })
    });
    op
}

#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations",
    params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(op_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Operation>> {
    let store = st.store.as_ref();
    if !validate::is_id("op", &id) {
        return Err(not_found(&id));
    }
    let op: db::Versioned<Operation> = db::get_json(store, &keys::operation(&id))
        .await?
        .ok_or_else(|| not_found(&id))?;
    caller.check(&op.value.tenant_id, Access::Read, || not_found(&id))?;
    let callback = match op.value.callback_url {
        Some(_) => callback_of(store, &id).await?,
        None => None,
    };
    Ok(Json(view(op.value, op.create_revision, callback)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperationFilter {
    /// Only operations in this state.
    pub state: Option<OperationState>,
    /// Only operations about this resource (its id).
    pub target_id: Option<String>,
    /// Only operations about this kind of resource (`nic`,
    /// `security_group`, `security_group_rule`).
    pub target_kind: Option<String>,
    /// At most this many (1 to 1000); absent: every one (no pages).
    pub page_size: Option<u32>,
    /// From a previous page's `Next-Page-Token` (or `Link: rel=next`).
    pub page_token: Option<String>,
}

impl Listed for Operation {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.id
    }
    fn tags(&self) -> &std::collections::BTreeMap<String, String> {
        static NONE: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        &NONE
    }
}

#[utoipa::path(get, path = "/v1/operations", tag = "operations", params(OperationFilter),
    responses((status = 200, body = [Operation]), (status = 400, body = Problem)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(f): ApiQuery<OperationFilter>,
) -> ApiResult<PageOf<Operation>> {
    caller.tenant_scope()?;
    let store = st.store.as_ref();
    let (kvs, _) = store.range(keys::OPERATIONS).await?;
    let mut callbacks: HashMap<String, CallbackStatus> = HashMap::new();
    // Done after pending: a record in both (a moment's overlap) shows done.
    for prefix in [keys::CALLBACKS_PENDING, keys::CALLBACKS_DONE] {
        let (cbs, _) = store.range(prefix).await?;
        for kv in cbs {
            match serde_json::from_slice::<Delivery>(&kv.value) {
                Ok(d) => {
                    callbacks.insert(d.op_id, d.status);
                }
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable callback record"),
            }
        }
    }
    let mut out = vec![];
    for kv in kvs {
        let op: Operation = match serde_json::from_slice(&kv.value) {
            Ok(op) => op,
            // One bad record must not hide every operation.
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "unreadable operation record");
                continue;
            }
        };
        if !caller.sees(&op.tenant_id)
            || f.state.is_some_and(|s| s != op.state)
            || f.target_id.as_ref().is_some_and(|t| *t != op.target.id)
            || f.target_kind.as_ref().is_some_and(|k| *k != op.target.kind)
        {
            continue;
        }
        let cb = callbacks.remove(&op.id);
        out.push(view(op, kv.create_revision, cb));
    }
    let page = Page {
        page_size: f.page_size,
        page_token: f.page_token.as_deref(),
        name: None,
        tag: None,
    };
    let filters = format!("{:?}", (&f.state, &f.target_id, &f.target_kind));
    let (items, next) = page.apply("operations", &filters, out)?;
    Ok(PageOf { items, next, uri })
}

/// A tenant's callback signing secret as shown to its admins.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CallbackSecret {
    pub tenant_id: String,
    /// The HMAC-SHA256 key of `Stacknet-Signature` (its UTF-8 bytes).
    pub secret: String,
    pub created_at: String,
}

/// As stored: the secret sealed under the cluster secret's key, the store
/// key as associated data.
#[derive(Serialize, Deserialize)]
struct SecretRecord {
    sealed: String,
    created_at: String,
}

fn new_secret() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    format!("whsec-{}", hex::encode(raw))
}

/// Reads `tenant_id`'s callback secret, making one (create-if-absent: two
/// replicas racing agree on the winner's) if it has none yet. The callback
/// duty signs with it; the tenant's admins read and rotate it.
pub async fn callback_secret(
    store: &dyn Store,
    auth: &AuthConfig,
    tenant_id: &str,
) -> ApiResult<CallbackSecret> {
    let key = keys::callback_secret(tenant_id);
    for _ in 0..3 {
        if let Some(rec) = db::get_json::<SecretRecord>(store, &key).await? {
            let secret = auth.unseal(&key, &rec.value.sealed).ok_or_else(|| {
                Problem::from(crate::store::StoreError::Corrupt(format!(
                    "{key}: cannot unseal the callback secret (wrong master secret?)"
                )))
            })?;
            return Ok(CallbackSecret {
                tenant_id: tenant_id.to_string(),
                secret,
                created_at: rec.value.created_at,
            });
        }
        let secret = new_secret();
        let rec = SecretRecord {
            sealed: auth.seal(&key, &secret)?,
            created_at: validate::now_rfc3339(),
        };
        let r = store
            .txn(crate::store::Txn {
                compare: vec![Compare::absent(&key)],
                success: vec![db::put_json(&key, &rec)?],
                failure: vec![],
            })
            .await?;
        if r.succeeded {
            return Ok(CallbackSecret {
                tenant_id: tenant_id.to_string(),
                secret,
                created_at: rec.created_at,
            });
        }
    }
    Err(Problem::contention(
        "the callback secret changed repeatedly while being read; retry",
    ))
}

/// Only the tenant's admins (and system admins) read or rotate its secret.
fn secret_access(caller: &Caller, tenant_id: &str) -> ApiResult<()> {
    let missing = || Problem::not_found(format!("tenant {tenant_id:?} not found"));
    if !caller.is_system_admin() && caller.tenant_id != tenant_id {
        return Err(missing());
    }
    if !matches!(caller.role, Role::SystemAdmin | Role::TenantAdmin) {
        return Err(Problem::forbidden(
            "the callback secret needs the tenant_admin or system_admin role",
        ));
    }
    Ok(())
}

async fn tenant_exists(store: &dyn Store, id: &str) -> ApiResult<()> {
    if validate::is_id("tenant", id) && store.get(&crate::model::keys::tenant(id)).await?.is_some()
    {
        return Ok(());
    }
    Err(Problem::not_found(format!("tenant {id:?} not found")))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/callback-secret", tag = "operations",
    params(("id" = String, Path)),
    responses((status = 200, body = CallbackSecret), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
#[instrument(skip_all, fields(tenant_id = %id))]
pub async fn get_secret(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CallbackSecret>> {
    secret_access(&caller, &id)?;
    tenant_exists(st.store.as_ref(), &id).await?;
    Ok(Json(
        callback_secret(st.store.as_ref(), &st.auth, &id).await?,
    ))
}

#[utoipa::path(post, path = "/v1/tenants/{id}/callback-secret", tag = "operations",
    params(("id" = String, Path)),
    responses((status = 201, body = CallbackSecret), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
#[instrument(skip_all, fields(tenant_id = %id))]
pub async fn rotate_secret(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    secret_access(&caller, &id)?;
    let store = st.store.as_ref();
    tenant_exists(store, &id).await?;
    let key = keys::callback_secret(&id);
    let secret = new_secret();
    let created_at = validate::now_rfc3339();
    let rec = SecretRecord {
        sealed: st.auth.seal(&key, &secret)?,
        created_at: created_at.clone(),
    };
    let answer = CallbackSecret {
        tenant_id: id.clone(),
        secret,
        created_at,
    };
    let location = format!("/v1/tenants/{id}/callback-secret");
    auth::respond_with(&location, &answer);
    // Unconditional: the newest rotation wins; deliveries sign with
    // whatever secret is current when they are made.
    if !db::commit(store, vec![], vec![db::put_json(&key, &rec)?]).await? {
        return Err(Problem::contention("the rotation did not commit; retry"));
    }
    tracing::info!("callback secret rotated");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(answer),
    ))
}
