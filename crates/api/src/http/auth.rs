//! Who is calling, what they may do, and the audit trail of what they did.
//!
//! Every `/v1` request except the OpenAPI document goes through
//! [`authenticate`]: it reads the body, checks the `SN1-HMAC-SHA256`
//! signature ([`proto::sign`]) against the key's secret, the ±5 minute
//! window and replays, and hands the handler a [`Caller`]. The only other
//! way in is HTTP Basic with a user's password, accepted on
//! `POST /v1/users/{id}/keys` alone (to get a first key pair).
//!
//! Replays: a nonce seen by this replica within the window is refused (an
//! in-memory cache, per replica, so reads cost no store write). A mutation
//! also puts its nonce in the store in the transaction that commits it
//! ([`super::db::commit`]), created only if absent: a mutation replayed on
//! another replica cannot commit twice. A replayed read on another replica
//! within the window is answered; it tells the replayer what the original
//! answer already told them.
//!
//! Audit: a mutation that commits writes its [`AuditRecord`] in the same
//! transaction, so a change is never without its record. A mutation that
//! fails (or changes nothing) is recorded after the answer, best effort.
//!
//! Secrets at rest: the server must know a key's secret to check an HMAC,
//! so it cannot keep only a hash; it keeps the secret sealed with
//! ChaCha20-Poly1305 under a key derived from the master secret
//! (`flowctl serve --cluster-secret-file`), which is not in the store. A
//! copy of the store alone yields no usable key. Passwords are only ever
//! compared, so they are hashed (argon2id).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::db;
use super::idempotency::{self, Idem};
use super::problem::{ApiResult, Problem};
use super::validate;
use super::AppState;
use crate::model::{keys, ApiKey, ApiKeyRecord, AuditRecord, Role, Tenant, User, UserRecord};
use crate::store::{Compare, LeaseId, Op, Store};

/// The largest request body read (and hashed) before the handler runs.
const MAX_BODY: usize = 1 << 20;

/// Replay keys live on a lease granted for this long; a new lease is taken
/// when the current one has less than the signing window (both sides) left.
const REPLAY_LEASE_TTL: Duration = Duration::from_secs(30 * 60);
const REPLAY_LEASE_RENEW_AFTER: Duration = Duration::from_secs(15 * 60);

/// How long a replica trusts a key (its secret, its user's role and
/// tenant) without reading the store again. Each read is a blocking-pool
/// hop on the embedded store; two per request halved read throughput.
/// A key or user deleted through another replica stops working within
/// this time; through this one, at once.
const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// What the server needs to authenticate: the sealing key (derived from
/// the master secret) and this replica's replay state.
pub struct AuthConfig {
    seal_key: [u8; 32],
    replay: ReplayCache,
    lease: tokio::sync::Mutex<Option<(LeaseId, Instant)>>,
    keys: Mutex<HashMap<String, CachedKey>>,
    pub(super) idem_leases: idempotency::Leases,
    /// Per-tenant request rate limits of this replica.
    pub rate_limit: super::ratelimit::RateLimiter,
}

/// A key as last read from the store.
#[derive(Clone)]
struct CachedKey {
    secret: String,
    caller: Caller,
    read_at: tokio::time::Instant,
}

impl AuthConfig {
    /// `master_secret`: the cluster secret; API key secrets are sealed
    /// under a key derived from it, so it must be the same on every replica.
    pub fn new(master_secret: Vec<u8>) -> Arc<AuthConfig> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&master_secret).expect("any key length");
        m.update(b"stacknet-api-key-seal\0v1");
        Arc::new(AuthConfig {
            seal_key: m.finalize().into_bytes().into(),
            replay: ReplayCache::default(),
            lease: tokio::sync::Mutex::new(None),
            keys: Mutex::new(HashMap::new()),
            idem_leases: idempotency::Leases::default(),
            rate_limit: Default::default(),
        })
    }

    fn cached_key(&self, key_id: &str) -> Option<CachedKey> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(key_id)
            .filter(|k| k.read_at.elapsed() < KEY_CACHE_TTL)
            .cloned()
    }

    fn cache_key(&self, key_id: &str, secret: &str, caller: &Caller) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded by the keys used within the TTL; stale entries go as
        // new ones come.
        if keys.len() > 10_000 {
            keys.retain(|_, k| k.read_at.elapsed() < KEY_CACHE_TTL);
        }
        keys.insert(
            key_id.to_string(),
            CachedKey {
                secret: secret.to_string(),
                caller: caller.clone(),
                read_at: tokio::time::Instant::now(),
            },
        );
    }

    /// Forgets a revoked key at once (on this replica).
    pub(super) fn forget_key(&self, key_id: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(key_id);
    }

    /// Forgets every key of a deleted user at once (on this replica).
    pub(super) fn forget_user(&self, user_id: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|_, k| k.caller.user_id != user_id);
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&self.seal_key).into())
    }

    /// hex(nonce ‖ ciphertext); the key id is the associated data, so a
    /// sealed secret cannot be moved to another key record.
    pub(super) fn seal(&self, key_id: &str, secret: &str) -> ApiResult<String> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: secret.as_bytes(),
                    aad: key_id.as_bytes(),
                },
            )
            .map_err(|_| internal("sealing an API key failed"))?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(hex::encode(out))
    }

    pub(super) fn unseal(&self, key_id: &str, sealed: &str) -> Option<String> {
        let bytes = hex::decode(sealed).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, ct) = bytes.split_at(12);
        let pt = self
            .cipher()
            .decrypt(
                nonce.into(),
                Payload {
                    msg: ct,
                    aad: key_id.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(pt).ok()
    }

    /// The lease replay keys are put with, renewed well before it ends.
    async fn replay_lease(&self, store: &dyn Store) -> ApiResult<LeaseId> {
        let mut cur = self.lease.lock().await;
        if let Some((id, at)) = *cur {
            if at.elapsed() < REPLAY_LEASE_RENEW_AFTER {
                return Ok(id);
            }
        }
        let id = store.grant_lease(REPLAY_LEASE_TTL).await?;
        *cur = Some((id, Instant::now()));
        Ok(id)
    }
}

fn internal(what: &str) -> Problem {
    tracing::error!("{what}");
    Problem::from(crate::store::StoreError::Corrupt(what.to_string()))
}

/// Nonces seen by this replica, until their timestamp leaves the window.
/// Sharded so 64 concurrent callers do not queue on one lock.
#[derive(Default)]
struct ReplayCache {
    shards: [Mutex<ReplayShard>; 16],
}

#[derive(Default)]
struct ReplayShard {
    /// First 16 bytes of SHA-256(key id, nonce) → unix time it may be
    /// forgotten (its timestamp plus the window).
    seen: HashMap<[u8; 16], i64>,
    next_purge: i64,
}

impl ReplayCache {
    /// False if (key, nonce) was seen before and is still in the window.
    fn insert(&self, key_id: &str, nonce: &str, timestamp: i64, now: i64) -> bool {
        let mut h = Sha256::new();
        h.update(key_id.as_bytes());
        h.update([0]);
        h.update(nonce.as_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        let shard = &self.shards[id[0] as usize % 16];
        let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
        if now >= s.next_purge {
            s.seen.retain(|_, until| *until >= now);
            s.next_purge = now + 1;
        }
        let until = timestamp + proto::sign::WINDOW_SECS;
        match s.seen.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(until);
                true
            }
        }
    }
}

/// The authenticated caller, for handlers.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: String,
    pub tenant_id: String,
    pub role: Role,
    /// "" for a password login.
    pub key_id: String,
}

/// What a handler is about to do to a tenant's resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Caller {
    /// Whether the caller may see resources of `tenant_id` at all. Anything
    /// they may not see is answered as absent (404), never as forbidden.
    pub fn sees(&self, tenant_id: &str) -> bool {
        match self.role {
            Role::SystemAdmin => true,
            Role::Operator => false,
            Role::TenantAdmin | Role::Member | Role::Reader => self.tenant_id == tenant_id,
        }
    }

    /// Tenant resources need a tenant role (or system admin).
    pub fn tenant_scope(&self) -> ApiResult<()> {
        if self.role == Role::Operator {
            return Err(Problem::forbidden(
                "the operator role manages nodes and Sets, not tenant resources",
            ));
        }
        Ok(())
    }

    /// Checks access to a resource of `tenant_id`: `missing` if the caller
    /// may not see it, 403 if they see it but may not change it. Records the
    /// tenant as the one the request acts in (for the audit).
    pub fn check(
        &self,
        tenant_id: &str,
        access: Access,
        missing: impl FnOnce() -> Problem,
    ) -> ApiResult<()> {
        self.tenant_scope()?;
        if !self.sees(tenant_id) {
            return Err(missing());
        }
        if access == Access::Write && self.role == Role::Reader {
            return Err(Problem::forbidden(
                "the reader role may read but not change resources",
            ));
        }
        act_in(tenant_id);
        Ok(())
    }

    /// The tenant a new top-level resource (a VPC) goes to: the caller's own.
    pub fn tenant_for_create(&self) -> ApiResult<String> {
        self.tenant_scope()?;
        if self.role == Role::Reader {
            return Err(Problem::forbidden(
                "the reader role may read but not create resources",
            ));
        }
        Ok(self.tenant_id.clone())
    }

    /// Nodes and Sets: system admins and operators.
    pub fn infra(&self) -> ApiResult<()> {
        match self.role {
            Role::SystemAdmin | Role::Operator => Ok(()),
            _ => Err(Problem::forbidden(
                "nodes and Sets need the operator or system_admin role",
            )),
        }
    }

    pub fn is_system_admin(&self) -> bool {
        self.role == Role::SystemAdmin
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Problem::unauthorized("this request needs credentials"))
    }
}

tokio::task_local! {
    /// The mutation being served, for [`super::db::commit`] to add its audit
    /// record and replay key to the transaction.
    static MUTATION: Arc<Mutation>;
}

/// A mutating request in flight.
pub(super) struct Mutation {
    caller: Caller,
    method: String,
    path: String,
    nonce: String,
    auth: Arc<AuthConfig>,
    /// The tenant acted in, once a handler resolved it.
    tenant: Mutex<Option<String>>,
    committed: AtomicBool,
    /// The status recorded in the committed record.
    committed_status: Mutex<u16>,
    /// The store revision of the last commit (0: none yet).
    last_revision: std::sync::atomic::AtomicU64,
    /// The create's idempotency key, held while it runs.
    idem: Option<Box<Idem>>,
    /// The handler answers 202 with an operation if its change commits.
    accepted: AtomicBool,
}

impl Mutation {
    fn tenant(&self) -> String {
        self.tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| self.caller.tenant_id.clone())
    }

    fn record(&self, status: u16, outcome: &str) -> (String, AuditRecord) {
        let tenant_id = self.tenant();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let id = validate::new_id("audit");
        let key = format!("{}{ms:013}-{id}", keys::audit_prefix(&tenant_id));
        (
            key,
            AuditRecord {
                id,
                time: validate::now_rfc3339(),
                tenant_id,
                user_id: self.caller.user_id.clone(),
                key_id: self.caller.key_id.clone(),
                method: self.method.clone(),
                path: self.path.clone(),
                status,
                outcome: outcome.to_string(),
            },
        )
    }

    /// The status a handler answers when its change committed.
    fn success_status(&self) -> u16 {
        if self.accepted.load(Ordering::Acquire) {
            return 202;
        }
        success_status(&self.method)
    }

    fn replay_key(&self) -> Option<String> {
        (!self.caller.key_id.is_empty()).then(|| keys::replay(&self.caller.key_id, &self.nonce))
    }
}

/// Records `tenant_id` as the tenant the current mutation acts in.
fn act_in(tenant_id: &str) {
    let _ = MUTATION.try_with(|m| {
        *m.tenant.lock().unwrap_or_else(|p| p.into_inner()) = Some(tenant_id.to_string());
    });
}

/// The status a handler answers when its change committed.
fn success_status(method: &str) -> u16 {
    match method {
        "POST" => 201,
        "DELETE" => 204,
        _ => 200,
    }
}

/// What [`super::db::commit`] adds to a transaction: for the first commit
/// of a mutation, its audit record and (for a signed request) its replay
/// key, created only if absent. Returns the replay key to check when the
/// transaction fails.
pub(super) async fn add_to_txn(
    store: &dyn Store,
    compare: &mut Vec<Compare>,
    success: &mut Vec<Op>,
) -> ApiResult<Option<String>> {
    let Ok(m) = MUTATION.try_with(Arc::clone) else {
        return Ok(None);
    };
    if m.committed.load(Ordering::Acquire) {
        return Ok(None);
    }
    let status = m.success_status();
    let (key, record) = m.record(status, "succeeded");
    success.push(db::put_json(key, &record)?);
    if let Some(idem) = &m.idem {
        idempotency::add_to_txn(idem, store, &m.auth, status, compare, success).await?;
    }
    let replay = m.replay_key();
    if let Some(r) = &replay {
        let lease = m.auth.replay_lease(store).await?;
        compare.push(Compare::absent(r));
        success.push(Op::Put {
            key: r.clone(),
            value: b"1".to_vec(),
            lease,
        });
    }
    Ok(replay)
}

/// After a commit at `revision`: marks the mutation recorded.
pub(super) fn committed(revision: u64) {
    let _ = MUTATION.try_with(|m| {
        m.last_revision.store(revision, Ordering::Release);
        *m.committed_status.lock().unwrap_or_else(|p| p.into_inner()) = m.success_status();
        m.committed.store(true, Ordering::Release);
    });
}

/// After a failed commit: a 409 if another request with this one's
/// idempotency key committed first (the middleware then answers with that
/// request's stored answer).
pub(super) async fn check_idempotency_lost(store: &dyn Store) -> ApiResult<()> {
    let Ok(m) = MUTATION.try_with(Arc::clone) else {
        return Ok(());
    };
    match &m.idem {
        Some(idem) if idempotency::check_lost(idem, store).await? => Err(idempotency::lost()),
        _ => Ok(()),
    }
}

/// What a create answers if its next commit succeeds: stored with the
/// change when the request has an idempotency key (see [`idempotency`]).
/// Call it before the commit that creates the resource.
pub(super) fn respond_with<T: Serialize>(location: &str, body: &T) {
    remember(location, body, false);
}

/// Like [`respond_with`] for a resource that carries its `revision` (the
/// commit's, filled in when the answer is replayed).
pub(super) fn respond_with_revision<T: Serialize>(location: &str, body: &T) {
    remember(location, body, true);
}

/// Like [`respond_with_revision`] for a change answered with `202
/// Accepted` and an operation (whose `revision` is the commit's): the
/// audit record and the idempotency record say 202. Also without an
/// idempotency key.
pub(super) fn respond_accepted<T: Serialize>(location: &str, body: &T) {
    let _ = MUTATION.try_with(|m| m.accepted.store(true, Ordering::Release));
    remember(location, body, true);
}

fn remember<T: Serialize>(location: &str, body: &T, revision: bool) {
    let _ = MUTATION.try_with(|m| {
        if let Some(idem) = &m.idem {
            idempotency::remember(idem, Some(location.to_string()), body, revision);
        }
    });
}

/// The revision of the current mutation's last commit, if it committed.
pub(super) fn last_commit_revision() -> Option<u64> {
    MUTATION
        .try_with(|m| m.last_revision.load(Ordering::Acquire))
        .ok()
        .filter(|r| *r != 0)
}

pub(super) fn replayed() -> Problem {
    Problem::unauthorized("this signed request was already served (replay)")
}

/// The middleware: authenticates, then runs the handler (inside the
/// mutation's scope for POST/PATCH/PUT/DELETE) and audits the outcome.
pub async fn authenticate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::payload_too_large(format!(
                "request bodies are limited to {MAX_BODY} bytes"
            ))
            .into_response()
        }
    };
    let (caller, nonce) = match identify(&st, &parts, &bytes).await {
        Ok(c) => c,
        Err(p) => {
            tracing::info!(method = %parts.method, path = %original_uri(&parts).path(), detail = %p.detail, "request refused");
            return p.into_response();
        }
    };
    if !matches!(caller.role, Role::SystemAdmin | Role::Operator) {
        if let Err(wait) = st.auth.rate_limit.take(&caller.tenant_id) {
            tracing::debug!(tenant_id = %caller.tenant_id, "request over the tenant's rate limit");
            return super::ratelimit::too_many(&caller.tenant_id, wait);
        }
    }
    let span =
        tracing::info_span!("caller", user_id = %caller.user_id, tenant_id = %caller.tenant_id);
    parts.extensions.insert(caller.clone());
    let path = original_uri(&parts).path().to_string();
    let mutating = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !mutating {
        let req = Request::from_parts(parts, Body::from(bytes));
        return tracing::Instrument::instrument(next.run(req), span).await;
    }
    let (idem, bytes) = if parts.method == Method::POST {
        match idempotency::begin(
            st.store.as_ref(),
            &st.auth,
            &caller,
            parts.method.as_str(),
            &path,
            &parts.headers,
            bytes,
        )
        .await
        {
            Ok(idempotency::Begin::None(b)) => (None, b),
            Ok(idempotency::Begin::Started(i, b)) => (Some(i), b),
            Ok(idempotency::Begin::Answered(resp)) => return resp,
            Err(p) => return p.into_response(),
        }
    } else {
        (None, bytes)
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    let m = Arc::new(Mutation {
        caller,
        method: req.method().to_string(),
        path,
        nonce,
        auth: st.auth.clone(),
        tenant: Mutex::new(None),
        committed: AtomicBool::new(false),
        committed_status: Mutex::new(0),
        last_revision: Default::default(),
        idem,
        accepted: AtomicBool::new(false),
    });
    let resp = MUTATION
        .scope(
            m.clone(),
            tracing::Instrument::instrument(next.run(req), span),
        )
        .await;
    let committed = m.committed.load(Ordering::Acquire);
    let resp = match &m.idem {
        Some(idem) => idempotency::finish(idem, st.store.as_ref(), &st.auth, committed, resp).await,
        None => resp,
    };
    let status = resp.status().as_u16();
    let recorded = *m.committed_status.lock().unwrap_or_else(|p| p.into_inner());
    if !committed || recorded != status {
        // Nothing committed (a refusal, or a change that was a no-op), or
        // the answer differs from the committed record: record it now.
        let outcome = if committed {
            "succeeded"
        } else if resp.status().is_success() {
            "unchanged"
        } else {
            "failed"
        };
        let (key, record) = m.record(status, outcome);
        let written = match db::put_json(key, &record) {
            Ok(op) => st
                .store
                .txn(crate::store::Txn {
                    success: vec![op],
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(p) => Err(p.detail),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, status, "could not write the audit record of a request that changed nothing");
        }
    }
    resp
}

/// The URI as the client sent it: inside `/v1` axum strips the prefix
/// from `parts.uri`, and the signature covers the full path.
fn original_uri(parts: &Parts) -> axum::http::Uri {
    parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| parts.uri.clone(), |o| o.0.clone())
}

/// The caller and the request's nonce, from its credentials.
async fn identify(st: &AppState, parts: &Parts, body: &Bytes) -> ApiResult<(Caller, String)> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            Problem::unauthorized(format!(
                "this request needs an Authorization header ({} signature)",
                proto::sign::SCHEME
            ))
        })?
        .to_str()
        .map_err(|_| Problem::unauthorized("the Authorization header is not text"))?;
    if let Some(basic) = value.strip_prefix("Basic ") {
        return password_login(st, parts, basic).await;
    }
    let auth = proto::sign::parse_authorization(value)
        .map_err(|e| Problem::unauthorized(e.to_string()))?;
    let unknown = || Problem::unauthorized("unknown or revoked API key, or a bad signature");
    let key = match st.auth.cached_key(&auth.key_id) {
        Some(k) => k,
        None => {
            let store = st.store.as_ref();
            let rec: db::Versioned<ApiKeyRecord> =
                db::get_json(store, &keys::api_key(&auth.key_id))
                    .await?
                    .ok_or_else(unknown)?;
            let secret = st
                .auth
                .unseal(&auth.key_id, &rec.value.sealed_secret)
                .ok_or_else(|| {
                    tracing::error!(key_id = %auth.key_id, "cannot unseal an API key: wrong master secret?");
                    unknown()
                })?;
            let user = load_user(store, &rec.value.key.user_id)
                .await?
                .ok_or_else(unknown)?;
            let caller = Caller {
                user_id: user.user.id,
                tenant_id: user.user.tenant_id,
                role: user.user.role,
                key_id: auth.key_id.clone(),
            };
            st.auth.cache_key(&auth.key_id, &secret, &caller);
            CachedKey {
                secret,
                caller,
                read_at: tokio::time::Instant::now(),
            }
        }
    };
    let uri = original_uri(parts);
    let req = proto::sign::Request {
        method: parts.method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        body,
    };
    let now = proto::sign::unix_now();
    proto::sign::verify(&auth, &key.secret, &req, now).map_err(|e| match e {
        // Saying which field differs would help a forger; the client can
        // compare its canonical string with the docs.
        proto::sign::SignError::Mismatch => unknown(),
        e => Problem::unauthorized(e.to_string()),
    })?;
    if !st
        .auth
        .replay
        .insert(&auth.key_id, &auth.nonce, auth.timestamp, now)
    {
        return Err(replayed());
    }
    Ok((key.caller, auth.nonce))
}

/// HTTP Basic: only to create one's own API key.
async fn password_login(st: &AppState, parts: &Parts, basic: &str) -> ApiResult<(Caller, String)> {
    let uri = original_uri(parts);
    let path = uri.path();
    let key_create = parts.method == Method::POST
        && path
            .strip_prefix("/v1/users/")
            .and_then(|r| r.strip_suffix("/keys"))
            .is_some_and(|id| !id.contains('/'));
    if !key_create {
        return Err(Problem::unauthorized(format!(
            "a password is accepted only to create an API key (POST /v1/users/{{id}}/keys); \
             sign other requests ({})",
            proto::sign::SCHEME
        )));
    }
    let bad = || Problem::unauthorized("wrong user name or password");
    let decoded = base64_decode(basic.trim()).ok_or_else(bad)?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (name, password) = decoded.split_once(':').ok_or_else(bad)?;
    let store = st.store.as_ref();
    let id = db::get_text(store, &keys::user_name(name))
        .await?
        .ok_or_else(bad)?;
    let user = load_user(store, &id).await?.ok_or_else(bad)?;
    if !verify_password(password.to_string(), user.password_hash.clone()).await {
        return Err(bad());
    }
    Ok((
        Caller {
            user_id: user.user.id,
            tenant_id: user.user.tenant_id,
            role: user.user.role,
            key_id: String::new(),
        },
        String::new(),
    ))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

pub(super) async fn load_user(store: &dyn Store, id: &str) -> ApiResult<Option<UserRecord>> {
    if !validate::is_id("user", id) {
        return Ok(None);
    }
    Ok(db::get_json(store, &keys::user(id)).await?.map(|v| v.value))
}

/// argon2id (the crate's defaults: 19 MiB, 2 passes), off the async threads.
pub(super) async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| internal("the password hashing task failed"))?
    .map_err(|_| internal("hashing a password failed"))
}

async fn verify_password(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(&phc).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A new key pair for `user_id`: the record to store and the secret to show
/// once.
pub(super) fn new_key(auth: &AuthConfig, user_id: &str) -> ApiResult<(ApiKeyRecord, String)> {
    let key_id = validate::new_id("ak");
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let secret = hex::encode(raw);
    let record = ApiKeyRecord {
        key: ApiKey {
            key_id: key_id.clone(),
            user_id: user_id.to_string(),
            created_at: validate::now_rfc3339(),
        },
        sealed_secret: auth.seal(&key_id, &secret)?,
    };
    Ok((record, secret))
}

/// The first system admin, made by [`bootstrap`].
#[derive(Clone, Serialize, Deserialize)]
pub struct Bootstrap {
    pub tenant_id: String,
    pub user_id: String,
    pub user: String,
    pub password: String,
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("user_id", &self.user_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    pub fn credentials(&self) -> proto::sign::Credentials {
        proto::sign::Credentials {
            key_id: self.key_id.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// The bootstrap marker: created once, by whichever replica wins.
fn bootstrap_marker() -> String {
    format!("{}bootstrap", keys::IAM_INDEX)
}

/// The tenant the first system admin lives in.
pub const ADMIN_TENANT: &str = "admin";

/// Makes the first system admin (user `admin` in tenant `admin`, a random
/// password and an API key) unless the store was bootstrapped before;
/// `None` then. Replicas starting together: one wins (create-if-absent on a
/// marker), the others get `None`.
pub async fn bootstrap(store: &dyn Store, auth: &AuthConfig) -> ApiResult<Option<Bootstrap>> {
    let marker = bootstrap_marker();
    if store.get(&marker).await?.is_some() {
        return Ok(None);
    }
    let now = validate::now_rfc3339();
    let tenant = Tenant {
        id: validate::new_id("tenant"),
        name: ADMIN_TENANT.into(),
        description: "made at bootstrap; the first system admin's home".into(),
        created_at: now.clone(),
    };
    let mut raw = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut raw);
    let password = hex::encode(raw);
    let user = User {
        id: validate::new_id("user"),
        name: "admin".into(),
        tenant_id: tenant.id.clone(),
        role: Role::SystemAdmin,
        created_at: now,
    };
    let record = UserRecord {
        user: user.clone(),
        password_hash: hash_password(password.clone()).await?,
    };
    let (key, secret) = new_key(auth, &user.id)?;
    let ok = db::commit(
        store,
        vec![
            Compare::absent(&marker),
            Compare::absent(keys::tenant_name(&tenant.name)),
            Compare::absent(keys::user_name(&user.name)),
        ],
        vec![
            Op::put(&marker, user.id.as_bytes().to_vec()),
            db::put_json(keys::tenant(&tenant.id), &tenant)?,
            Op::put(
                keys::tenant_name(&tenant.name),
                tenant.id.as_bytes().to_vec(),
            ),
            db::put_json(keys::user(&user.id), &record)?,
            Op::put(keys::user_name(&user.name), user.id.as_bytes().to_vec()),
            db::put_json(keys::api_key(&key.key.key_id), &key)?,
            super::quota::bootstrap_limits_op(&tenant.id)?,
        ],
    )
    .await?;
    if !ok {
        return Ok(None);
    }
    tracing::info!(user_id = %user.id, key_id = %key.key.key_id, "bootstrapped the first system admin");
    Ok(Some(Bootstrap {
        tenant_id: tenant.id,
        user_id: user.id,
        user: user.name,
        password,
        key_id: key.key.key_id,
        secret,
    }))
}
