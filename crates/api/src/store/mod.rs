//! The `Store`: a revisioned key-value store with compare-and-swap
//! transactions, prefix ranges, watches from a revision and leases.
//!
//! The semantics follow etcd v3 so that the embedded backend (one file, the
//! default for one machine) and the etcd backend (HA) are interchangeable and
//! pass the same conformance suite:
//! - every successful write transaction advances the global revision by one,
//!   and every key it touches carries that revision as `mod_revision`;
//! - a watch from revision R delivers every event with revision >= R in
//!   order, or fails with [`StoreError::Compacted`] if R is older than the
//!   retained history (the watcher then relists);
//! - keys put with a lease are deleted when the lease expires or is revoked.
//!
//! Details both backends share (most checked by [`conformance`]): a fresh store
//! is at revision 1, so the first write makes revision 2; a write
//! transaction that changes nothing (a delete of an absent key, a failed
//! compare with no failure ops) keeps the revision; `watch(prefix, 0)`
//! means "from the next revision"; a value compare on an absent key never
//! holds. [`embedded::EmbeddedStore`] is the default backend.

pub mod conformance;
pub mod election;
pub mod embedded;
pub mod etcd;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use proto::Revision;

/// A lease: keys attached to it vanish when it expires.
pub type LeaseId = i64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the transaction that created the key.
    pub create_revision: Revision,
    /// The revision of the last transaction that wrote the key.
    pub mod_revision: Revision,
    /// How many times the key was written since it was created (1 on create).
    pub version: u64,
    /// The lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// 0 when the key does not exist.
    ModRevision(Revision),
    /// 0 when the key does not exist: `CreateRevision(0)` with `Equal`
    /// means "the key is absent".
    CreateRevision(Revision),
    /// 0 when the key does not exist.
    Version(u64),
    Value(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::CreateRevision(0),
        }
    }

    /// The key was last written at `rev` (0: the key does not exist).
    pub fn mod_revision_is(key: impl Into<String>, rev: Revision) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(rev),
        }
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
    Get {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }
}

/// If every compare holds, run `success`, else `failure`; atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// The result of one op of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Put,
    /// How many keys were deleted.
    Delete(u64),
    Get(Option<KeyValue>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held (and so `success` ran).
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged if it wrote nothing).
    pub revision: Revision,
    pub results: Vec<OpResult>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv.value` is empty and
/// `kv.mod_revision` is the revision of the delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Events of a watch, in revision order. Events of one transaction arrive
/// together in one batch.
pub type WatchStream = BoxStream<'static, Result<Vec<WatchEvent>, StoreError>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("revision {requested} is compacted; history starts at {compact_revision}")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    #[error("embedded database")]
    Embedded(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One key at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, sorted by key, and the revision the
    /// listing reflects (use it as the start of a watch, plus one).
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)>;

    /// Runs a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;

    /// Events for keys starting with `prefix` from revision `from` on
    /// (inclusive).
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;

    /// The current revision.
    async fn revision(&self) -> Result<Revision>;

    /// A new lease that expires after `ttl` unless kept alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Restarts the lease's TTL.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends the lease now and deletes its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Forgets history before `revision`; watches from earlier fail.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Writes `value` unconditionally. Returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let r = self
            .txn(Txn {
                success: vec![Op::put(key, value)],
                ..Txn::default()
            })
            .await?;
        Ok(r.revision)
    }

    /// Deletes `key` if present. Returns the revision after.
    async fn delete(&self, key: &str) -> Result<Revision> {
        let r = self
            .txn(Txn {
                success: vec![Op::delete(key)],
                ..Txn::default()
            })
            .await?;
        Ok(r.revision)
    }
}
