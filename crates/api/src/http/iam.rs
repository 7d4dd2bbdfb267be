//! `/v1/tenants`, `/v1/users`, `/v1/users/{id}/keys` and `/v1/audit`.
//!
//! Who may do what (see [`super::auth::Caller`]):
//! - tenants: a system admin creates, lists and deletes them; anyone else
//!   sees only their own tenant;
//! - users: a system admin manages every user; a tenant admin manages the
//!   users of their tenant (with tenant roles only); everyone sees the users
//!   of their own tenant, an operator only themself;
//! - keys: a user manages their own keys; so do the admins who manage the
//!   user; the secret is shown once, at creation;
//! - audit: every role reads its own tenant's records; a system admin any
//!   tenant's (`?tenant_id=`).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::{self, Caller};
use super::db::{self, Attempt};
use super::etag::{IfMatch, Tagged, WithRevision};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::problem::{ApiResult, Problem};
use super::validate;
use super::AppState;
use crate::model::{
    keys, ApiKey, ApiKeyRecord, AuditRecord, Owned, Role, Tenant, User, UserRecord, Vpc,
};
use crate::store::{Compare, Op, Store};

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Unique.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique across tenants; the login name.
    pub name: String,
    /// At least 12 characters; stored as an argon2id hash.
    pub password: String,
    /// The caller's tenant if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub role: Role,
}

/// A new key pair; `secret` is shown here only.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    pub secret: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// A system admin may read another tenant's records.
    pub tenant_id: Option<String>,
}

pub const MIN_PASSWORD: usize = 12;

fn tenant_not_found(id: &str) -> Problem {
    Problem::not_found(format!("tenant {id:?} not found"))
}

fn user_not_found(id: &str) -> Problem {
    Problem::not_found(format!("user {id:?} not found"))
}

fn system_admin_only(caller: &Caller, what: &str) -> ApiResult<()> {
    if caller.is_system_admin() {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "{what} needs the system_admin role"
        )))
    }
}

async fn load_tenant(store: &dyn Store, id: &str) -> ApiResult<Option<db::Versioned<Tenant>>> {
    if !validate::is_id("tenant", id) {
        return Ok(None);
    }
    db::get_json(store, &keys::tenant(id)).await
}

/// Bumped by every user and VPC added to the tenant; a tenant delete
/// compares it, so it never leaves either behind. Adding does not compare
/// it, so creates in one tenant do not contend.
fn tenant_guard(id: &str) -> String {
    format!("{}guard/tenant/{id}", keys::IAM_INDEX)
}

/// A tenant the caller may put things in: must exist and be theirs (or
/// any, for a system admin). Returns the compare that keeps it existing
/// and the op that makes a concurrent delete of it retry.
pub(super) async fn tenant_ref(
    store: &dyn Store,
    caller: &Caller,
    id: &str,
    field: &str,
) -> ApiResult<(Compare, Op)> {
    let missing = || Problem::invalid(field, format!("`{field}`: tenant {id:?} does not exist"));
    if !caller.is_system_admin() && caller.tenant_id != id {
        return Err(missing());
    }
    let t = load_tenant(store, id).await?.ok_or_else(missing)?;
    Ok((
        db::created_at(keys::tenant(id), t.create_revision),
        db::bump(tenant_guard(id)),
    ))
}

#[utoipa::path(post, path = "/v1/tenants", tag = "iam", request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(tenant_id = tracing::field::Empty, name = %req.name))]
pub async fn create_tenant(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTenant>,
) -> ApiResult<impl IntoResponse> {
    system_admin_only(&caller, "creating a tenant")?;
    validate::name("name", &req.name)?;
    let description = req.description.clone().unwrap_or_default();
    validate::description("description", &description)?;
    let tenant = Tenant {
        id: validate::new_id("tenant"),
        name: req.name.clone(),
        description,
        created_at: validate::now_rfc3339(),
    };
    tracing::Span::current().record("tenant_id", tenant.id.as_str());
    let store = st.store.as_ref();
    let name_key = keys::tenant_name(&tenant.name);
    auth::respond_with_revision(&format!("/v1/tenants/{}", tenant.id), &tenant);
    let ok = db::commit(
        store,
        vec![Compare::absent(&name_key)],
        vec![
            db::put_json(keys::tenant(&tenant.id), &tenant)?,
            Op::put(name_key, tenant.id.as_bytes().to_vec()),
        ],
    )
    .await?;
    if !ok {
        return Err(
            Problem::conflict(format!("a tenant named {:?} already exists", tenant.name))
                .with_field("name"),
        );
    }
    tracing::info!("tenant created");
    let location = format!("/v1/tenants/{}", tenant.id);
    let revision = auth::last_commit_revision().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Tagged(WithRevision::new(tenant), revision),
    ))
}

#[utoipa::path(get, path = "/v1/tenants", tag = "iam",
    responses((status = 200, body = Vec<Tenant>), (status = 401, body = Problem)))]
#[instrument(skip_all)]
pub async fn list_tenants(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<WithRevision<Tenant>>>> {
    let all: Vec<WithRevision<Tenant>> =
        db::list_revisioned(st.store.as_ref(), keys::TENANTS).await?;
    Ok(Json(
        all.into_iter()
            .filter(|t| caller.is_system_admin() || t.inner.id == caller.tenant_id)
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "iam", params(("id" = String, Path)),
    responses((status = 200, body = Tenant), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
#[instrument(skip_all, fields(tenant_id = %id))]
pub async fn get_tenant(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<WithRevision<Tenant>>> {
    if !caller.is_system_admin() && caller.tenant_id != id {
        return Err(tenant_not_found(&id));
    }
    let t = load_tenant(st.store.as_ref(), &id)
        .await?
        .ok_or_else(|| tenant_not_found(&id))?;
    Ok(Tagged(WithRevision::new(t.value), t.mod_revision))
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    /// Unique. A system admin's to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tenant's own admins may change it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "iam", request_body = PatchTenant,
    params(("id" = String, Path)),
    responses((status = 200, body = Tenant), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 412, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(tenant_id = %id))]
pub async fn patch_tenant(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiJson(req): ApiJson<PatchTenant>,
) -> ApiResult<Tagged<WithRevision<Tenant>>> {
    if !caller.is_system_admin() && caller.tenant_id != id {
        return Err(tenant_not_found(&id));
    }
    match caller.role {
        Role::SystemAdmin => {}
        Role::TenantAdmin if req.name.is_none() => {}
        Role::TenantAdmin => {
            return Err(Problem::forbidden(
                "renaming a tenant needs the system_admin role",
            ))
        }
        _ => {
            return Err(Problem::forbidden(
                "changing a tenant needs the tenant_admin or system_admin role",
            ))
        }
    }
    if let Some(n) = &req.name {
        validate::name("name", n)?;
    }
    if let Some(d) = &req.description {
        validate::description("description", d)?;
    }
    let store = st.store.as_ref();
    let (id, req, if_match) = (&id, &req, &if_match);
    let (tenant, read_at) = db::retry("update the tenant", || async move {
        let cur = load_tenant(store, id)
            .await?
            .ok_or_else(|| tenant_not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let key = keys::tenant(id);
        let mut t = cur.value.clone();
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![];
        if let Some(name) = req.name.as_ref().filter(|n| **n != t.name) {
            let new_key = keys::tenant_name(name);
            if db::get_text(store, &new_key).await?.is_some() {
                return Err(
                    Problem::conflict(format!("a tenant named {name:?} already exists"))
                        .with_field("name"),
                );
            }
            let old_key = keys::tenant_name(&t.name);
            if db::get_text(store, &old_key).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(old_key));
            }
            compare.push(Compare::absent(&new_key));
            ops.push(Op::put(new_key, id.as_bytes().to_vec()));
            t.name = name.clone();
        }
        if let Some(d) = &req.description {
            t.description = d.clone();
        }
        if t == cur.value {
            return Ok(Attempt::Done((t, cur.mod_revision)));
        }
        ops.push(db::put_json(&key, &t)?);
        db::commit_attempt(store, compare, ops, (t, 0)).await
    })
    .await?;
    tracing::info!(name = %tenant.name, "tenant updated");
    let revision = auth::last_commit_revision().unwrap_or(read_at);
    Ok(Tagged(WithRevision::new(tenant), revision))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "iam", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
#[instrument(skip_all, fields(tenant_id = %id))]
pub async fn delete_tenant(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
) -> ApiResult<StatusCode> {
    if !caller.is_system_admin() {
        return Err(if caller.tenant_id == id {
            Problem::forbidden("deleting a tenant needs the system_admin role")
        } else {
            tenant_not_found(&id)
        });
    }
    let store = st.store.as_ref();
    let (id, caller, if_match) = (&id, &caller, &if_match);
    db::retry("delete the tenant", || async move {
        let cur = load_tenant(store, id)
            .await?
            .ok_or_else(|| tenant_not_found(id))?;
        if_match.check(cur.mod_revision)?;
        if *id == caller.tenant_id {
            return Err(Problem::conflict(
                "a system admin cannot delete their own tenant",
            ));
        }
        // Guard first, then the users and VPCs: one added after this read
        // bumps the guard and fails the compare.
        let guard = tenant_guard(id);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let users: Vec<UserRecord> = db::list_json(store, keys::USERS).await?;
        let users: Vec<String> = users
            .into_iter()
            .filter(|u| u.user.tenant_id == *id)
            .map(|u| u.user.id)
            .collect();
        let vpcs: Vec<Owned<Vpc>> = db::list_json(store, keys::VPCS).await?;
        let vpcs: Vec<String> = vpcs
            .into_iter()
            .filter(|v| v.tenant_id == *id)
            .map(|v| v.id.clone())
            .collect();
        if !users.is_empty() || !vpcs.is_empty() {
            return Err(Problem::conflict(format!(
                "tenant {id:?} still has {} and {}; delete them first",
                db::in_use("users", &users),
                db::in_use("VPCs", &vpcs)
            )));
        }
        let key = keys::tenant(id);
        let mut ops = vec![
            Op::delete(&key),
            Op::delete(&guard),
            Op::DeletePrefix {
                prefix: format!("{}{id}/", keys::QUOTA),
            },
            Op::delete(crate::operation::keys::callback_secret(id)),
        ];
        let name_key = keys::tenant_name(&cur.value.name);
        if db::get_text(store, &name_key).await?.as_deref() == Some(id.as_str()) {
            ops.push(Op::delete(name_key));
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
    tracing::info!("tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Whether `caller` manages `user` (creates keys for it, deletes it).
fn manages(caller: &Caller, user: &User) -> bool {
    match caller.role {
        Role::SystemAdmin => true,
        Role::TenantAdmin => {
            caller.tenant_id == user.tenant_id
                && !matches!(user.role, Role::SystemAdmin | Role::Operator)
        }
        _ => false,
    }
}

/// Whether `caller` may see `user`.
fn sees_user(caller: &Caller, user: &User) -> bool {
    caller.user_id == user.id
        || caller.is_system_admin()
        || (caller.role != Role::Operator && caller.tenant_id == user.tenant_id)
}

/// The user at `id` if the caller may see it, else 404.
async fn visible_user(store: &dyn Store, caller: &Caller, id: &str) -> ApiResult<UserRecord> {
    Ok(visible_user_at(store, caller, id).await?.value)
}

#[utoipa::path(post, path = "/v1/users", tag = "iam", request_body = CreateUser,
    responses((status = 201, body = User), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(user_id = tracing::field::Empty, name = %req.name))]
pub async fn create_user(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUser>,
) -> ApiResult<impl IntoResponse> {
    match caller.role {
        Role::SystemAdmin => {}
        Role::TenantAdmin if !matches!(req.role, Role::SystemAdmin | Role::Operator) => {}
        Role::TenantAdmin => {
            return Err(Problem::forbidden(
                "only a system admin may give the system_admin or operator role",
            ))
        }
        _ => return Err(Problem::forbidden("creating users needs an admin role")),
    }
    validate::dns_label("name", &req.name)?;
    if req.password.chars().count() < MIN_PASSWORD {
        return Err(Problem::invalid(
            "password",
            format!("`password` must have at least {MIN_PASSWORD} characters"),
        ));
    }
    let tenant_id = req
        .tenant_id
        .clone()
        .unwrap_or_else(|| caller.tenant_id.clone());
    let store = st.store.as_ref();
    let (tenant_cmp, tenant_op) = tenant_ref(store, &caller, &tenant_id, "tenant_id").await?;
    let user = User {
        id: validate::new_id("user"),
        name: req.name.clone(),
        tenant_id,
        role: req.role,
        created_at: validate::now_rfc3339(),
    };
    tracing::Span::current().record("user_id", user.id.as_str());
    let record = UserRecord {
        user: user.clone(),
        password_hash: auth::hash_password(req.password.clone()).await?,
    };
    let name_key = keys::user_name(&user.name);
    if db::get_text(store, &name_key).await?.is_some() {
        return Err(name_taken(&user.name));
    }
    auth::respond_with_revision(&format!("/v1/users/{}", user.id), &user);
    let ok = db::commit(
        store,
        vec![tenant_cmp, Compare::absent(&name_key)],
        vec![
            db::put_json(keys::user(&user.id), &record)?,
            Op::put(name_key, user.id.as_bytes().to_vec()),
            tenant_op,
        ],
    )
    .await?;
    if !ok {
        // The name was taken, or the tenant changed (is being deleted).
        if db::get_text(store, &keys::user_name(&user.name))
            .await?
            .is_some()
        {
            return Err(name_taken(&user.name));
        }
        return Err(Problem::invalid(
            "tenant_id",
            format!("`tenant_id`: tenant {:?} does not exist", user.tenant_id),
        ));
    }
    tracing::info!(role = ?user.role, "user created");
    let location = format!("/v1/users/{}", user.id);
    let revision = auth::last_commit_revision().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Tagged(WithRevision::new(user), revision),
    ))
}

fn name_taken(name: &str) -> Problem {
    Problem::conflict(format!("a user named {name:?} already exists")).with_field("name")
}

#[utoipa::path(get, path = "/v1/users", tag = "iam",
    responses((status = 200, body = Vec<User>), (status = 401, body = Problem)))]
#[instrument(skip_all)]
pub async fn list_users(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<WithRevision<User>>>> {
    let (kvs, _) = st.store.range(keys::USERS).await?;
    let mut out = vec![];
    for kv in kvs {
        let rec: UserRecord = serde_json::from_slice(&kv.value).map_err(|e| {
            Problem::from(crate::store::StoreError::Corrupt(format!(
                "{}: {e}",
                kv.key
            )))
        })?;
        if sees_user(&caller, &rec.user) {
            out.push(WithRevision {
                inner: rec.user,
                revision: kv.mod_revision,
            });
        }
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "iam", params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
#[instrument(skip_all, fields(user_id = %id))]
pub async fn get_user(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<WithRevision<User>>> {
    let u = visible_user_at(st.store.as_ref(), &caller, &id).await?;
    Ok(Tagged(WithRevision::new(u.value.user), u.mod_revision))
}

/// Like [`visible_user`], with the revisions it was read at.
async fn visible_user_at(
    store: &dyn Store,
    caller: &Caller,
    id: &str,
) -> ApiResult<db::Versioned<UserRecord>> {
    if !validate::is_id("user", id) {
        return Err(user_not_found(id));
    }
    db::get_json::<UserRecord>(store, &keys::user(id))
        .await?
        .filter(|u| sees_user(caller, &u.value.user))
        .ok_or_else(|| user_not_found(id))
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    /// Unique across tenants; the login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// At least 12 characters. A user may change their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An admin over the user may change it (a tenant admin within the
    /// tenant roles); nobody changes their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

#[utoipa::path(patch, path = "/v1/users/{id}", tag = "iam", request_body = PatchUser,
    params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 412, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(user_id = %id))]
pub async fn patch_user(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiJson(req): ApiJson<PatchUser>,
) -> ApiResult<Tagged<WithRevision<User>>> {
    let store = st.store.as_ref();
    let cur = visible_user_at(store, &caller, &id).await?;
    let own = cur.value.user.id == caller.user_id;
    let admin = manages(&caller, &cur.value.user);
    if !own && !admin {
        return Err(Problem::forbidden(
            "changing this user needs an admin role over it",
        ));
    }
    if let Some(role) = req.role.filter(|r| *r != cur.value.user.role) {
        if own {
            return Err(Problem::forbidden("a user cannot change their own role"));
        }
        if caller.role != Role::SystemAdmin && matches!(role, Role::SystemAdmin | Role::Operator) {
            return Err(Problem::forbidden(
                "only a system admin may give the system_admin or operator role",
            ));
        }
    }
    if req.name.is_some() && !admin {
        return Err(Problem::forbidden(
            "renaming a user needs an admin role over it",
        ));
    }
    if let Some(n) = &req.name {
        validate::dns_label("name", n)?;
    }
    let hash = match &req.password {
        Some(p) if p.chars().count() < MIN_PASSWORD => {
            return Err(Problem::invalid(
                "password",
                format!("`password` must have at least {MIN_PASSWORD} characters"),
            ))
        }
        // Hashed once, outside the retry loop: argon2 is slow on purpose.
        Some(p) => Some(auth::hash_password(p.clone()).await?),
        None => None,
    };
    let (id, req, if_match, hash, caller) = (&id, &req, &if_match, &hash, &caller);
    let (user, read_at) = db::retry("update the user", || async move {
        let cur = visible_user_at(store, caller, id).await?;
        if_match.check(cur.mod_revision)?;
        let key = keys::user(id);
        let mut rec = cur.value.clone();
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![];
        if let Some(name) = req.name.as_ref().filter(|n| **n != rec.user.name) {
            let new_key = keys::user_name(name);
            if db::get_text(store, &new_key).await?.is_some() {
                return Err(name_taken(name));
            }
            let old_key = keys::user_name(&rec.user.name);
            if db::get_text(store, &old_key).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(old_key));
            }
            compare.push(Compare::absent(&new_key));
            ops.push(Op::put(new_key, id.as_bytes().to_vec()));
            rec.user.name = name.clone();
        }
        if let Some(role) = req.role {
            rec.user.role = role;
        }
        if let Some(h) = hash {
            rec.password_hash = h.clone();
        }
        if rec == cur.value {
            return Ok(Attempt::Done((rec.user, cur.mod_revision)));
        }
        ops.push(db::put_json(&key, &rec)?);
        db::commit_attempt(store, compare, ops, (rec.user.clone(), 0)).await
    })
    .await?;
    // Its keys act with the new role from the next request on (here; other
    // replicas within their key cache's lifetime).
    st.auth.forget_user(&user.id);
    tracing::info!(role = ?user.role, "user updated");
    let revision = auth::last_commit_revision().unwrap_or(read_at);
    Ok(Tagged(WithRevision::new(user), revision))
}

/// The user's key records.
async fn keys_of(store: &dyn Store, user_id: &str) -> ApiResult<Vec<ApiKeyRecord>> {
    let all: Vec<ApiKeyRecord> = db::list_json(store, keys::API_KEYS).await?;
    Ok(all
        .into_iter()
        .filter(|k| k.key.user_id == user_id)
        .collect())
}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "iam", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
#[instrument(skip_all, fields(user_id = %id))]
pub async fn delete_user(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
) -> ApiResult<StatusCode> {
    let store = st.store.as_ref();
    let cur = visible_user_at(store, &caller, &id).await?;
    if_match.check(cur.mod_revision)?;
    let user = cur.value;
    if !manages(&caller, &user.user) {
        return Err(Problem::forbidden(
            "deleting this user needs an admin role over it",
        ));
    }
    if user.user.id == caller.user_id {
        return Err(Problem::conflict("a user cannot delete themself"));
    }
    let mut ops = vec![Op::delete(keys::user(&id))];
    let name_key = keys::user_name(&user.user.name);
    if db::get_text(store, &name_key).await?.as_deref() == Some(id.as_str()) {
        ops.push(Op::delete(name_key));
    }
    // Its keys go with it (a key whose user is gone authenticates nothing
    // anyway: every request loads the user).
    for k in keys_of(store, &id).await? {
        ops.push(Op::delete(keys::api_key(&k.key.key_id)));
    }
    // Compared on the revision read: a change meanwhile (or a stale
    // If-Match) is not deleted over.
    if !db::commit(
        store,
        vec![Compare::mod_revision_is(keys::user(&id), cur.mod_revision)],
        ops,
    )
    .await?
    {
        return Err(Problem::conflict(
            "the user changed while being deleted; read it again",
        ));
    }
    st.auth.forget_user(&id);
    tracing::info!("user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The user whose keys the caller manages: themself, or a user they manage.
async fn key_owner(store: &dyn Store, caller: &Caller, id: &str) -> ApiResult<UserRecord> {
    let user = visible_user(store, caller, id).await?;
    if user.user.id != caller.user_id && !manages(caller, &user.user) {
        return Err(Problem::forbidden(
            "only the user and the admins over them manage their keys",
        ));
    }
    Ok(user)
}

#[utoipa::path(post, path = "/v1/users/{id}/keys", tag = "iam", params(("id" = String, Path)),
    responses((status = 201, body = NewApiKey), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(user_id = %id))]
pub async fn create_key(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let store = st.store.as_ref();
    key_owner(store, &caller, &id).await?;
    let (record, secret) = auth::new_key(&st.auth, &id)?;
    let key_key = keys::api_key(&record.key.key_id);
    let user_key = keys::user(&id);
    let user_rev = store
        .get(&user_key)
        .await?
        .map_or(0, |kv| kv.create_revision);
    auth::respond_with(
        &format!("/v1/users/{id}/keys/{}", record.key.key_id),
        &NewApiKey {
            key: record.key.clone(),
            secret: secret.clone(),
        },
    );
    let ok = db::commit(
        store,
        vec![
            db::created_at(&user_key, user_rev),
            Compare::absent(&key_key),
        ],
        vec![db::put_json(&key_key, &record)?],
    )
    .await?;
    if !ok {
        return Err(user_not_found(&id));
    }
    tracing::info!(key_id = %record.key.key_id, "API key created");
    let location = format!("/v1/users/{id}/keys/{}", record.key.key_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(NewApiKey {
            key: record.key,
            secret,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/users/{id}/keys", tag = "iam", params(("id" = String, Path)),
    responses((status = 200, body = Vec<ApiKey>), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(user_id = %id))]
pub async fn list_keys(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    let store = st.store.as_ref();
    key_owner(store, &caller, &id).await?;
    Ok(Json(
        keys_of(store, &id)
            .await?
            .into_iter()
            .map(|k| k.key)
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/v1/users/{id}/keys/{key_id}", tag = "iam",
    params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
#[instrument(skip_all, fields(user_id = %path.0, key_id = %path.1))]
pub async fn delete_key(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (id, key_id) = (&path.0, &path.1);
    let store = st.store.as_ref();
    key_owner(store, &caller, id).await?;
    let missing = || Problem::not_found(format!("user {id:?} has no API key {key_id:?}"));
    if !validate::is_id("ak", key_id) {
        return Err(missing());
    }
    let key = keys::api_key(key_id);
    let rec: db::Versioned<ApiKeyRecord> = db::get_json(store, &key).await?.ok_or_else(missing)?;
    if rec.value.key.user_id != *id {
        return Err(missing());
    }
    db::commit(
        store,
        vec![Compare::mod_revision_is(&key, rec.mod_revision)],
        vec![Op::delete(&key)],
    )
    .await?;
    st.auth.forget_key(key_id);
    tracing::info!("API key deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/audit", tag = "iam", params(AuditFilter),
    responses((status = 200, body = Vec<AuditRecord>), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
#[instrument(skip_all)]
pub async fn list_audit(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    let tenant = f.tenant_id.unwrap_or_else(|| caller.tenant_id.clone());
    if !caller.is_system_admin() && tenant != caller.tenant_id {
        return Err(tenant_not_found(&tenant));
    }
    // Tenant ids only ever have the shape new_id makes; anything else has
    // no records (and must not become a key prefix).
    if !validate::is_id("tenant", &tenant) {
        return Ok(Json(vec![]));
    }
    Ok(Json(
        db::list_json(st.store.as_ref(), &keys::audit_prefix(&tenant)).await?,
    ))
}
