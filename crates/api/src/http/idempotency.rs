//! Idempotent creates: `Idempotency-Key` (or `client_token` in the body).
//!
//! A create (any `POST`) that carries a key is served at most once per
//! tenant and key:
//! - the answer of the request that created something is stored in the
//!   **same transaction** as the resource ([`add_to_txn`], called by
//!   [`super::db::commit`]), created only if absent. A response lost after
//!   the commit and retried against any replica is answered from that
//!   record: one resource, the original id and status;
//! - the same key with a different request (method, path or body) is a 422;
//! - while a request with the key is in flight (an in-flight marker on a
//!   short lease, so a replica that dies mid-request frees the key within
//!   [`LOCK_TTL`]) another one with the key gets 409 with `Retry-After`;
//! - a request that fails (4xx/5xx) stores nothing: a retry runs again and,
//!   the state being the same, fails the same way.
//!
//! Records live on a lease of [`RECORD_TTL`], renewed every
//! [`RECORD_LEASE_RENEW_AFTER`], so each one is kept at least 24 hours.
//! Stored bodies are sealed like API key secrets (a key's creation answer
//! holds its secret).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::{AuthConfig, Caller};
use super::db;
use super::problem::{ApiResult, Problem};
use super::validate;
use crate::model::keys;
use crate::store::{Compare, CompareOp, CompareTarget, LeaseId, Op, Store, Txn};

/// The request header naming the key.
pub const HEADER: &str = "idempotency-key";
/// The body field that may carry the key instead (stripped before the
/// handler parses the body).
pub const BODY_FIELD: &str = "client_token";
/// Set on an answer replayed from a record.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// How long an in-flight marker outlives a replica that died holding it.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
const LOCK_LEASE_RENEW_AFTER: Duration = Duration::from_secs(10);
/// Records are kept between 24 and 48 hours.
pub const RECORD_TTL: Duration = Duration::from_secs(48 * 3600);
const RECORD_LEASE_RENEW_AFTER: Duration = Duration::from_secs(24 * 3600);

const MAX_KEY_LEN: usize = 255;

/// This replica's leases for markers and records: one grant serves many
/// requests (a grant per request would double the store writes).
#[derive(Default)]
pub struct Leases {
    lock: tokio::sync::Mutex<Option<(LeaseId, Instant)>>,
    record: tokio::sync::Mutex<Option<(LeaseId, Instant)>>,
}

async fn lease(
    slot: &tokio::sync::Mutex<Option<(LeaseId, Instant)>>,
    store: &dyn Store,
    ttl: Duration,
    renew_after: Duration,
) -> ApiResult<LeaseId> {
    let mut cur = slot.lock().await;
    if let Some((id, at)) = *cur {
        if at.elapsed() < renew_after {
            return Ok(id);
        }
    }
    let id = store.grant_lease(ttl).await?;
    *cur = Some((id, Instant::now()));
    Ok(id)
}

/// The stored answer of a request that created something.
#[derive(Serialize, Deserialize)]
struct Record {
    /// SHA-256 of method, path and canonical body (see [`fingerprint`]).
    fingerprint: String,
    status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    /// hex(nonce ‖ sealed JSON body), the record's key as associated data.
    body: String,
    /// The body is a resource whose `revision` (and ETag) is the record's
    /// own: they were written in one transaction.
    #[serde(default)]
    revision: bool,
    created_at: String,
}

/// The answer a handler is about to give if its change commits.
struct Pending {
    location: Option<String>,
    body: Vec<u8>,
    revision: bool,
}

/// An idempotent request in flight (holding its marker).
pub(super) struct Idem {
    record_key: String,
    lock_key: String,
    token: String,
    fingerprint: String,
    pending: Mutex<Option<Pending>>,
    /// The record appeared while this request ran: another request with
    /// the key committed first (its marker had expired).
    lost_race: AtomicBool,
}

/// What [`begin`] decided.
pub(super) enum Begin {
    /// No key: serve normally (the body unchanged).
    None(Bytes),
    /// Serve, holding the key; the body to hand the handler.
    Started(Box<Idem>, Bytes),
    /// Answered already (a replay, 409 or 422).
    Answered(Response),
}

fn record_key(tenant: &str, key: &str) -> String {
    format!("{}{tenant}/{}", keys::IDEMPOTENCY, hash_hex(key.as_bytes()))
}

fn lock_key(tenant: &str, key: &str) -> String {
    format!(
        "{}{tenant}/{}",
        keys::IDEMPOTENCY_LOCK,
        hash_hex(key.as_bytes())
    )
}

fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Method, path and body, with the body compared as JSON (key order and
/// spacing do not matter; `client_token` is left out) when it is JSON.
fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let canonical = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            m.remove(BODY_FIELD);
            // serde_json's map is ordered by key: this is canonical.
            serde_json::to_vec(&Value::Object(m)).unwrap_or_else(|_| body.to_vec())
        }
        Ok(v) => serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec()),
        Err(_) => body.to_vec(),
    };
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(&canonical);
    hex::encode(h.finalize())
}

/// The key of a request, from the header or the body (which then loses the
/// field, so that strict request types still parse it).
fn key_of(headers: &HeaderMap, body: &Bytes) -> ApiResult<Option<(String, Bytes)>> {
    let header = match headers.get(HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| bad_key("the Idempotency-Key header is not text"))?
                .to_string(),
        ),
        None => None,
    };
    let mut out_body = body.clone();
    let mut token = None;
    if let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(body) {
        if let Some(t) = m.remove(BODY_FIELD) {
            let Value::String(t) = t else {
                return Err(Problem::bad_request(format!(
                    "field `{BODY_FIELD}`: expected a string"
                ))
                .with_field(BODY_FIELD));
            };
            token = Some(t);
            out_body =
                Bytes::from(serde_json::to_vec(&Value::Object(m)).map_err(|_| {
                    Problem::bad_request("the request body could not be re-encoded")
                })?);
        }
    }
    let key = match (header, token) {
        (None, None) => return Ok(None),
        (Some(h), Some(t)) if h != t => {
            return Err(bad_key(format!(
                "the Idempotency-Key header and `{BODY_FIELD}` differ; send one, or the same"
            )))
        }
        (Some(k), _) | (None, Some(k)) => k,
    };
    if key.is_empty()
        || key.len() > MAX_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(bad_key(format!(
            "an idempotency key is 1 to {MAX_KEY_LEN} printable ASCII characters"
        )));
    }
    Ok(Some((key, out_body)))
}

fn bad_key(detail: impl Into<String>) -> Problem {
    Problem::bad_request(detail).with_field("Idempotency-Key")
}

/// Before the handler: answers from a record, refuses a clash, or takes
/// the in-flight marker.
pub(super) async fn begin(
    store: &dyn Store,
    auth: &AuthConfig,
    caller: &Caller,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Begin> {
    let Some((key, body)) = key_of(headers, &body)? else {
        return Ok(Begin::None(body));
    };
    // Keys are the tenant's: two tenants may use the same one.
    let tenant = &caller.tenant_id;
    let idem = Idem {
        record_key: record_key(tenant, &key),
        lock_key: lock_key(tenant, &key),
        token: validate::new_id("req"),
        fingerprint: fingerprint(method, path, &body),
        pending: Mutex::new(None),
        lost_race: AtomicBool::new(false),
    };
    if let Some(resp) = answer_from_record(store, auth, &idem).await? {
        return Ok(Begin::Answered(resp));
    }
    let lease_id = lease(
        &auth.idem_leases.lock,
        store,
        LOCK_TTL,
        LOCK_LEASE_RENEW_AFTER,
    )
    .await?;
    let r = store
        .txn(Txn {
            compare: vec![
                Compare::absent(&idem.record_key),
                Compare::absent(&idem.lock_key),
            ],
            success: vec![Op::Put {
                key: idem.lock_key.clone(),
                value: idem.token.as_bytes().to_vec(),
                lease: lease_id,
            }],
            failure: vec![],
        })
        .await?;
    if r.succeeded {
        return Ok(Begin::Started(Box::new(idem), body));
    }
    // Someone else holds it, or finished in between.
    if let Some(resp) = answer_from_record(store, auth, &idem).await? {
        return Ok(Begin::Answered(resp));
    }
    Ok(Begin::Answered(in_flight()))
}

fn in_flight() -> Response {
    let mut resp = Problem::conflict(
        "a request with this idempotency key is in progress; retry when it has finished",
    )
    .with_field("Idempotency-Key")
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The stored answer for `idem`'s key, or a 422 if the key was used for a
/// different request; `None` if there is no record.
async fn answer_from_record(
    store: &dyn Store,
    auth: &AuthConfig,
    idem: &Idem,
) -> ApiResult<Option<Response>> {
    let Some(rec) = db::get_json::<Record>(store, &idem.record_key).await? else {
        return Ok(None);
    };
    let revision = rec.mod_revision;
    let rec = rec.value;
    if rec.fingerprint != idem.fingerprint {
        return Err(Problem::invalid(
            "Idempotency-Key",
            "this idempotency key was used for a different request (method, path or body); \
             use a new key for a new request",
        ));
    }
    let body = auth.unseal(&idem.record_key, &rec.body).ok_or_else(|| {
        Problem::from(crate::store::StoreError::Corrupt(format!(
            "{}: cannot unseal the stored answer (wrong master secret?)",
            idem.record_key
        )))
    })?;
    let mut etag = None;
    let body = match serde_json::from_str::<Value>(&body) {
        Ok(Value::Object(mut m)) if rec.revision => {
            m.insert("revision".into(), revision.into());
            // An operation (202) is no resource with an entity tag.
            if rec.status != 202 {
                etag = Some(super::etag::etag(revision));
            }
            serde_json::to_string(&Value::Object(m)).unwrap_or(body)
        }
        _ => body,
    };
    let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
    let mut resp = if status == StatusCode::NO_CONTENT || body.is_empty() {
        status.into_response()
    } else {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.into_bytes(),
        )
            .into_response()
    };
    if let Some(loc) = rec.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    if status == StatusCode::ACCEPTED {
        // An operation: poll it, as the original answer said.
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(super::operations::RETRY_AFTER_SECS),
        );
    }
    resp.headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    Ok(Some(resp))
}

/// A handler's answer if its change commits, to be stored with the change.
pub(super) fn remember<T: Serialize>(
    idem: &Idem,
    location: Option<String>,
    body: &T,
    revision: bool,
) {
    let body = serde_json::to_vec(body).unwrap_or_default();
    *idem.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(Pending {
        location,
        body,
        revision,
    });
}

/// What the commit of a remembered answer adds to its transaction: the
/// record (created only if absent) and the marker's removal.
pub(super) async fn add_to_txn(
    idem: &Idem,
    store: &dyn Store,
    auth: &AuthConfig,
    status: u16,
    compare: &mut Vec<Compare>,
    success: &mut Vec<Op>,
) -> ApiResult<()> {
    let Some((location, body, revision)) = idem
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|p| (p.location.clone(), p.body.clone(), p.revision))
    else {
        // A create that did not say what it answers: nothing is stored and
        // a retry runs again.
        return Ok(());
    };
    let body = String::from_utf8(body).unwrap_or_default();
    let rec = Record {
        fingerprint: idem.fingerprint.clone(),
        status,
        location,
        body: auth.seal(&idem.record_key, &body)?,
        revision,
        created_at: validate::now_rfc3339(),
    };
    let lease_id = lease(
        &auth.idem_leases.record,
        store,
        RECORD_TTL,
        RECORD_LEASE_RENEW_AFTER,
    )
    .await?;
    compare.push(Compare::absent(&idem.record_key));
    let Op::Put { key, value, .. } = db::put_json(&idem.record_key, &rec)? else {
        unreachable!("put_json makes a put");
    };
    success.push(Op::Put {
        key,
        value,
        lease: lease_id,
    });
    success.push(Op::delete(&idem.lock_key));
    Ok(())
}

/// After a failed commit: whether another request with the key committed
/// (then the caller answers from its record).
pub(super) async fn check_lost(idem: &Idem, store: &dyn Store) -> ApiResult<bool> {
    if store.get(&idem.record_key).await?.is_some() {
        idem.lost_race.store(true, Ordering::Release);
        return Ok(true);
    }
    Ok(false)
}

/// After the handler: the answer to give, and the marker released if the
/// request committed nothing (best effort: it expires with its lease).
pub(super) async fn finish(
    idem: &Idem,
    store: &dyn Store,
    auth: &AuthConfig,
    committed: bool,
    resp: Response,
) -> Response {
    if !committed {
        let released = store
            .txn(Txn {
                compare: vec![Compare {
                    key: idem.lock_key.clone(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Value(idem.token.as_bytes().to_vec()),
                }],
                success: vec![Op::delete(&idem.lock_key)],
                failure: vec![],
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release an idempotency marker; it expires with its lease");
        }
    }
    if idem.lost_race.load(Ordering::Acquire) {
        return match answer_from_record(store, auth, idem).await {
            Ok(Some(r)) => r,
            Ok(None) => in_flight(),
            Err(p) => p.into_response(),
        };
    }
    resp
}

/// The problem a handler answers when [`check_lost`] saw another request
/// with its key commit first ([`finish`] replaces it with the record).
pub(super) fn lost() -> Problem {
    Problem::conflict("another request with this idempotency key committed first")
}
