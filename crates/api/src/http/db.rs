//! Store access for the handlers: index and guard keys, typed reads, and
//! the optimistic retry loop.
//!
//! Invariants that span several objects (a name is unique, a Set holds at
//! most 45 nodes, subnets of a VPC do not overlap, a subnet with NICs is not
//! deleted) are kept by compare-and-swap, never by locks:
//! - a unique value owns an index key that is created only if absent, in the
//!   same transaction as the object;
//! - a parent (Set, VPC, subnet, node) has a guard key. A writer that adds a
//!   child reads the guard, reads the children, checks the rule, and commits
//!   with a compare on the guard's `mod_revision` while bumping it. A writer
//!   that needs "no children" (delete) compares the same guard. Two writers
//!   that each read a state the other invalidates cannot both commit.
//!
//! Existence of a parent is compared on its `create_revision`, so renaming
//! a VPC does not make concurrent subnet creates retry.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth;
use super::problem::{ApiResult, Problem};
use crate::store::{Compare, CompareOp, CompareTarget, Op, Revision, Store, StoreError, Txn};

/// Keys this module adds to the layout of [`crate::model::keys`]:
/// `/stacknet/index/<field>/<scope>/<value>` → owner id, and guards.
pub mod index {
    use std::net::Ipv4Addr;

    use proto::Mac;

    use crate::model::keys::INDEX;

    /// VPC names, unique within a tenant.
    pub fn vpc_name(tenant_id: &str, name: &str) -> String {
        format!("{INDEX}vpc-name/{tenant_id}/{name}")
    }
    pub fn vni(vni: u32) -> String {
        format!("{INDEX}vni/all/{vni}")
    }
    pub fn underlay_ip(ip: Ipv4Addr) -> String {
        format!("{INDEX}underlay-ip/all/{ip}")
    }
    /// NIC addresses, unique within a subnet (and so within the VPC, whose
    /// subnets do not overlap).
    pub fn ip(subnet_id: &str, ip: Ipv4Addr) -> String {
        format!("{}{ip}", ip_prefix(subnet_id))
    }
    pub fn ip_prefix(subnet_id: &str) -> String {
        format!("{INDEX}ip/{subnet_id}/")
    }
    /// NIC and gateway MACs, unique within a VPC (one L2 domain per VNI).
    pub fn mac(vpc_id: &str, mac: Mac) -> String {
        format!("{INDEX}mac/{vpc_id}/{mac}")
    }

    /// Bumped by every node added to the Set.
    pub fn set_guard(set: &str) -> String {
        format!("{INDEX}guard/set/{set}")
    }
    /// Bumped by every NIC bound to the node.
    pub fn node_guard(name: &str) -> String {
        format!("{INDEX}guard/node/{name}")
    }
    /// Bumped by every subnet added to the VPC.
    pub fn vpc_guard(id: &str) -> String {
        format!("{INDEX}guard/vpc/{id}")
    }
    /// Bumped by every NIC added to the subnet.
    pub fn subnet_guard(id: &str) -> String {
        format!("{INDEX}guard/subnet/{id}")
    }
}

/// A decoded value and the revisions it was read at.
#[derive(Clone, Debug)]
pub struct Versioned<T> {
    pub value: T,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

pub async fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> ApiResult<Option<Versioned<T>>> {
    let Some(kv) = store.get(key).await? else {
        return Ok(None);
    };
    let value = decode(&kv.key, &kv.value)?;
    Ok(Some(Versioned {
        value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }))
}

/// Every object under `prefix`, decoded.
pub async fn list_json<T: DeserializeOwned>(store: &dyn Store, prefix: &str) -> ApiResult<Vec<T>> {
    let (kvs, _rev) = store.range(prefix).await?;
    kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect()
}

/// Every object under `prefix`, decoded, each with its revision.
pub async fn list_revisioned<T: DeserializeOwned + super::etag::Revisioned>(
    store: &dyn Store,
    prefix: &str,
) -> ApiResult<Vec<T>> {
    let (kvs, _rev) = store.range(prefix).await?;
    kvs.iter()
        .map(|kv| {
            let mut v: T = decode(&kv.key, &kv.value)?;
            v.set_revision(kv.mod_revision);
            Ok(v)
        })
        .collect()
}

/// The `mod_revision` of `key`, 0 if absent (what a compare sees).
pub async fn mod_revision(store: &dyn Store, key: &str) -> ApiResult<Revision> {
    Ok(store.get(key).await?.map_or(0, |kv| kv.mod_revision))
}

/// The raw value of `key` as text (index values are ids).
pub async fn get_text(store: &dyn Store, key: &str) -> ApiResult<Option<String>> {
    Ok(store
        .get(key)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::from(StoreError::Corrupt(format!("{key}: {e}"))))
}

pub fn put_json<T: Serialize>(key: impl Into<String>, value: &T) -> ApiResult<Op> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Problem::from(StoreError::Corrupt(format!("encode: {e}"))))?;
    Ok(Op::put(key, bytes))
}

/// Bumps a guard key's `mod_revision`.
pub fn bump(guard: impl Into<String>) -> Op {
    Op::put(guard, b"guard".to_vec())
}

pub fn created_at(key: impl Into<String>, create_revision: Revision) -> Compare {
    Compare {
        key: key.into(),
        op: CompareOp::Equal,
        target: CompareTarget::CreateRevision(create_revision),
    }
}

/// Commits `compare` → `success`; false if a compare failed. Inside a
/// mutating request the first commit also writes the request's audit
/// record and its replay key (see [`super::auth`]): the change and its
/// record commit together, and a replayed request cannot commit twice.
pub async fn commit(
    store: &dyn Store,
    mut compare: Vec<Compare>,
    mut success: Vec<Op>,
) -> ApiResult<bool> {
    let replay = auth::add_to_txn(store, &mut compare, &mut success).await?;
    let r = store
        .txn(Txn {
            compare,
            success,
            failure: vec![],
        })
        .await?;
    if r.succeeded {
        auth::committed(r.revision);
        return Ok(true);
    }
    auth::check_idempotency_lost(store).await?;
    if let Some(key) = replay {
        // Another replica already committed this very request.
        if store.get(&key).await?.is_some() {
            return Err(auth::replayed());
        }
    }
    Ok(false)
}

/// Commits like [`commit`] and turns the outcome into an [`Attempt`]:
/// `Done(value)` when the compares held, `Retry` when something read moved.
pub async fn commit_attempt<T>(
    store: &dyn Store,
    compare: Vec<Compare>,
    success: Vec<Op>,
    value: T,
) -> ApiResult<Attempt<T>> {
    Ok(if commit(store, compare, success).await? {
        Attempt::Done(value)
    } else {
        Attempt::Retry
    })
}

/// The outcome of one optimistic attempt.
pub enum Attempt<T> {
    Done(T),
    /// Something read changed before the commit: read again and retry.
    Retry,
}

/// More attempts than concurrent writers one resource is expected to see;
/// each failed attempt means another writer made progress.
const MAX_ATTEMPTS: u32 = 256;

/// Runs `attempt` until it is done, backing off with jitter between tries.
pub async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> ApiResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ApiResult<Attempt<T>>>,
{
    for n in 0..MAX_ATTEMPTS {
        match attempt().await? {
            Attempt::Done(v) => return Ok(v),
            Attempt::Retry => {
                tracing::debug!(attempt = n, what, "conflicting concurrent write; retrying");
                let cap_ms = 1u64 << n.min(5);
                let ms = rand::thread_rng().gen_range(0..=cap_ms);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
    tracing::warn!(what, "gave up after {MAX_ATTEMPTS} conflicting attempts");
    Err(Problem::contention(format!(
        "too many concurrent changes while trying to {what}; nothing was changed, retry"
    )))
}

/// "3 NICs (nic-a, nic-b, nic-c)", for messages about what blocks a delete.
pub fn in_use(what: &str, ids: &[String]) -> String {
    let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    let more = if ids.len() > shown.len() { ", ..." } else { "" };
    format!("{} {what} ({}{more})", ids.len(), shown.join(", "))
}
