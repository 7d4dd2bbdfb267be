//! The embedded single-file backend (the default for one machine).
//!
//! One redb file holds the keys, the watch history (one record per revision)
//! and the leases. All writes go through a single writer task that drains
//! the queue and evaluates every queued request in order inside ONE redb
//! write transaction (group commit): each transaction still gets its own
//! revision, but a whole batch pays for a single fsync.
//!
//! Watchers first replay the history kept in the file, then follow a
//! broadcast of committed revisions. A watcher that falls behind the
//! broadcast buffer goes back to reading the file, so a slow watcher costs
//! neither writer latency nor unbounded memory; once it falls behind the
//! retained history its stream ends with [`StoreError::Compacted`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, LeaseId, Op, OpResult, Result,
    Revision, Store, StoreError, Txn, TxnResult, WatchEvent, WatchStream,
};

/// key -> encoded record (see [`encode_record`]).
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// revision -> encoded events of that revision's transaction.
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// Counters: see the `META_*` names.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// lease -> TTL in milliseconds.
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
/// (lease, key) for every key attached to a lease.
const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");

const META_REVISION: &str = "revision";
const META_HISTORY_START: &str = "history_start";
const META_NEXT_LEASE: &str = "next_lease";

/// Like etcd, a fresh store is at revision 1; the first write makes 2.
const INITIAL_REVISION: Revision = 1;

/// How many revisions a replaying watcher reads from the file at once.
const REPLAY_CHUNK: u64 = 1024;

/// Tuning knobs; [`Default`] is what production uses.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Revisions of watch history kept; older ones are dropped automatically.
    pub history_retention: u64,
    /// At most this many requests share one commit.
    pub max_batch: usize,
    /// Committed revisions buffered for live watchers; a watcher further
    /// behind than this re-reads the history from the file.
    pub watch_buffer: usize,
    /// Requests waiting for the writer before callers are slowed down.
    pub queue_depth: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            history_retention: 100_000,
            max_batch: 1024,
            watch_buffer: 4096,
            queue_depth: 8192,
        }
    }
}

/// What the writer has done since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Write transactions committed to the file (each one fsync).
    pub commits: u64,
    /// Requests (txns, lease and compact calls) answered by those commits.
    pub requests: u64,
}

/// The embedded [`Store`]. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct EmbeddedStore {
    tx: mpsc::Sender<Msg>,
    /// The writer task owns the database; readers borrow it while it lives,
    /// so closing the store really closes the file.
    db: Weak<Database>,
    hub: Arc<Hub>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path`. Must be called inside
    /// a tokio runtime: it starts the writer task.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    pub fn open_with(path: &Path, options: EmbeddedOptions) -> Result<Self> {
        let runtime = current_runtime()?;
        let db = Database::create(path).map_err(db_err)?;
        Self::start(runtime, db, options, &path.display().to_string())
    }

    /// A store that lives in memory only: for tests of the code above the
    /// store, where durability does not matter.
    pub fn open_in_memory() -> Result<Self> {
        let runtime = current_runtime()?;
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_err)?;
        Self::start(runtime, db, EmbeddedOptions::default(), "(memory)")
    }

    fn start(
        runtime: tokio::runtime::Handle,
        db: Database,
        options: EmbeddedOptions,
        name: &str,
    ) -> Result<Self> {
        init_tables(&db)?;
        let db = Arc::new(db);
        let writer = Writer::load(db, options.history_retention.max(1), Instant::now())?;
        let hub = Arc::new(Hub::new(
            writer.revision,
            writer.history_start,
            options.watch_buffer.max(1),
        ));
        let (tx, rx) = mpsc::channel(options.queue_depth.max(1));
        let store = EmbeddedStore {
            tx,
            db: Arc::downgrade(&writer.db),
            hub: hub.clone(),
        };
        tracing::info!(
            db = name,
            revision = writer.revision,
            history_start = writer.history_start,
            leases = writer.leases.len(),
            "embedded store opened"
        );
        runtime.spawn(run_writer(writer, rx, hub, options.max_batch.max(1)));
        Ok(store)
    }

    /// Finishes the requests queued so far, then closes the file. Other
    /// clones fail with `Unavailable` afterwards; open watches end.
    pub async fn close(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_err() {
            // Already closed.
            return Ok(());
        }
        rx.await.map_err(|_| closed())
    }

    /// Counters of the writer, to see group commit at work.
    pub fn stats(&self) -> EmbeddedStats {
        EmbeddedStats {
            commits: self.hub.commits.load(Ordering::Relaxed),
            requests: self.hub.requests.load(Ordering::Relaxed),
        }
    }

    async fn call(&self, cmd: Cmd) -> Result<Answer> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Cmd(cmd, tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        let db = self.db.upgrade().ok_or_else(closed)?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |db| {
            let r = db.begin_read().map_err(db_err)?;
            let kv = r.open_table(KV).map_err(db_err)?;
            get_kv(&kv, key.as_bytes())
        })
        .await
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_owned();
        self.read(move |db| {
            // One read transaction: the listing and its revision agree.
            let r = db.begin_read().map_err(db_err)?;
            let meta = r.open_table(META).map_err(db_err)?;
            let revision = meta_get(&meta, META_REVISION)?;
            let kv = r.open_table(KV).map_err(db_err)?;
            let mut out = Vec::new();
            for entry in kv.range(prefix.as_bytes()..).map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                if !k.value().starts_with(prefix.as_bytes()) {
                    break;
                }
                out.push(decode_record(k.value(), v.value())?);
            }
            Ok((out, revision))
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        match self.call(Cmd::Txn(txn)).await? {
            Answer::Txn(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (rx, published, history_start) = self.hub.subscribe().ok_or_else(closed)?;
        // etcd: start revision 0 means "from now on".
        let next = if from == 0 { published + 1 } else { from };
        if next < history_start {
            return Err(StoreError::Compacted {
                requested: next,
                compact_revision: history_start,
            });
        }
        tracing::debug!(prefix, from = next, published, "watch started");
        let cursor = WatchCursor {
            db: self.db.clone(),
            hub: self.hub.clone(),
            prefix: prefix.to_owned(),
            next,
            upto: published,
            rx: Some(rx),
            pending: VecDeque::new(),
            done: false,
        };
        Ok(futures::stream::unfold(cursor, WatchCursor::step).boxed())
    }

    async fn revision(&self) -> Result<Revision> {
        self.read(|db| {
            let r = db.begin_read().map_err(db_err)?;
            let meta = r.open_table(META).map_err(db_err)?;
            meta_get(&meta, META_REVISION)
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        match self.call(Cmd::Grant(ttl)).await? {
            Answer::Lease(id) => Ok(id),
            other => Err(unexpected(&other)),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        match self.call(Cmd::KeepAlive(lease)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self.call(Cmd::Revoke(lease)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.call(Cmd::Compact(revision)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn current_runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current()
        .map_err(|_| StoreError::Unavailable("the embedded store needs a tokio runtime".into()))
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Embedded(Box::new(e.into()))
}

fn closed() -> StoreError {
    StoreError::Unavailable("embedded store is closed".into())
}

fn unexpected(answer: &Answer) -> StoreError {
    StoreError::Unavailable(format!("writer gave an unexpected answer: {answer:?}"))
}

fn init_tables(db: &Database) -> Result<()> {
    let w = db.begin_write().map_err(db_err)?;
    {
        w.open_table(KV).map_err(db_err)?;
        w.open_table(HISTORY).map_err(db_err)?;
        w.open_table(LEASES).map_err(db_err)?;
        w.open_table(LEASE_KEYS).map_err(db_err)?;
        let mut meta = w.open_table(META).map_err(db_err)?;
        for (name, initial) in [
            (META_REVISION, INITIAL_REVISION),
            (META_HISTORY_START, INITIAL_REVISION),
            (META_NEXT_LEASE, 1),
        ] {
            if meta.get(name).map_err(db_err)?.is_none() {
                meta.insert(name, initial).map_err(db_err)?;
            }
        }
    }
    w.commit().map_err(db_err)
}

fn meta_get(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<u64> {
    meta.get(name)
        .map_err(db_err)?
        .map(|v| v.value())
        .ok_or_else(|| StoreError::Corrupt(format!("meta record {name} is missing")))
}

fn get_kv(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<KeyValue>> {
    match table.get(key).map_err(db_err)? {
        Some(v) => Ok(Some(decode_record(key, v.value())?)),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// Record encoding. Fixed little-endian header, then the value; the key is the
// table key. Events add a kind byte and length prefixes.

const RECORD_HEADER: usize = 32;

fn encode_record(kv: &KeyValue, out: &mut Vec<u8>) {
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.to_le_bytes());
    out.extend_from_slice(&kv.value);
}

fn le_u64(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("record truncated at byte {at}")))
}

fn le_u32(b: &[u8], at: usize) -> Result<usize> {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(|a| u32::from_le_bytes(a) as usize)
        .ok_or_else(|| StoreError::Corrupt(format!("record truncated at byte {at}")))
}

fn decode_record(key: &[u8], b: &[u8]) -> Result<KeyValue> {
    if b.len() < RECORD_HEADER {
        return Err(StoreError::Corrupt(format!(
            "record of {} bytes is shorter than its header",
            b.len()
        )));
    }
    let key = std::str::from_utf8(key)
        .map_err(|_| StoreError::Corrupt("key is not UTF-8".into()))?
        .to_owned();
    Ok(KeyValue {
        key,
        create_revision: le_u64(b, 0)?,
        mod_revision: le_u64(b, 8)?,
        version: le_u64(b, 16)?,
        lease: le_u64(b, 24)? as i64,
        value: b[RECORD_HEADER..].to_vec(),
    })
}

fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for ev in events {
        out.push(match ev.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        out.extend_from_slice(&(ev.kv.key.len() as u32).to_le_bytes());
        out.extend_from_slice(ev.kv.key.as_bytes());
        out.extend_from_slice(&((RECORD_HEADER + ev.kv.value.len()) as u32).to_le_bytes());
        encode_record(&ev.kv, &mut out);
    }
    out
}

fn decode_events(b: &[u8]) -> Result<Vec<WatchEvent>> {
    let count = le_u32(b, 0)?;
    let mut at = 4;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let kind = match b.get(at) {
            Some(0) => EventKind::Put,
            Some(1) => EventKind::Delete,
            Some(k) => return Err(StoreError::Corrupt(format!("unknown event kind {k}"))),
            None => return Err(StoreError::Corrupt("event truncated".into())),
        };
        at += 1;
        let klen = le_u32(b, at)?;
        at += 4;
        let key = b
            .get(at..at + klen)
            .ok_or_else(|| StoreError::Corrupt("event key truncated".into()))?;
        at += klen;
        let rlen = le_u32(b, at)?;
        at += 4;
        let rec = b
            .get(at..at + rlen)
            .ok_or_else(|| StoreError::Corrupt("event record truncated".into()))?;
        at += rlen;
        out.push(WatchEvent {
            kind,
            kv: decode_record(key, rec)?,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The writer task.

enum Msg {
    Cmd(Cmd, oneshot::Sender<Result<Answer>>),
    Close(oneshot::Sender<()>),
}

#[derive(Debug)]
enum Cmd {
    Txn(Txn),
    Grant(Duration),
    KeepAlive(LeaseId),
    Revoke(LeaseId),
    Compact(Revision),
}

#[derive(Debug)]
enum Answer {
    Txn(TxnResult),
    Lease(LeaseId),
    Done,
}

/// The events of one committed revision, as broadcast to live watchers.
#[derive(Debug)]
struct RevEvents {
    revision: Revision,
    events: Vec<WatchEvent>,
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

/// Everything the writer knows; it moves into the blocking thread for each
/// batch and comes back with the answers.
struct Writer {
    db: Arc<Database>,
    revision: Revision,
    history_start: Revision,
    next_lease: LeaseId,
    leases: HashMap<LeaseId, Lease>,
    /// (deadline, lease) of every lease, to find the next expiry quickly.
    deadlines: BTreeSet<(Instant, LeaseId)>,
    retention: u64,
}

struct Tables<'t> {
    kv: redb::Table<'t, &'static [u8], &'static [u8]>,
    history: redb::Table<'t, u64, &'static [u8]>,
    leases: redb::Table<'t, i64, u64>,
    lease_keys: redb::Table<'t, (i64, &'static [u8]), ()>,
}

struct BatchOutcome {
    /// False when the batch wrote nothing and was not committed.
    committed: bool,
    answers: Vec<Result<Answer>>,
    published: Vec<Arc<RevEvents>>,
}

impl Writer {
    fn load(db: Arc<Database>, retention: u64, now: Instant) -> Result<Writer> {
        let mut w = Writer {
            db,
            revision: 0,
            history_start: 0,
            next_lease: 1,
            leases: HashMap::new(),
            deadlines: BTreeSet::new(),
            retention,
        };
        w.resync(now)?;
        Ok(w)
    }

    /// Reloads the counters and leases from the file (at open, and after a
    /// failed commit left the in-memory copy ahead of the file). Leases
    /// already known keep their deadline; the others restart their TTL, as
    /// etcd does after a restart.
    fn resync(&mut self, now: Instant) -> Result<()> {
        let r = self.db.begin_read().map_err(db_err)?;
        let meta = r.open_table(META).map_err(db_err)?;
        self.revision = meta_get(&meta, META_REVISION)?;
        self.history_start = meta_get(&meta, META_HISTORY_START)?;
        self.next_lease = meta_get(&meta, META_NEXT_LEASE)? as i64;
        let table = r.open_table(LEASES).map_err(db_err)?;
        let mut leases = HashMap::new();
        for entry in table.iter().map_err(db_err)? {
            let (id, ttl) = entry.map_err(db_err)?;
            let ttl = Duration::from_millis(ttl.value());
            let deadline = match self.leases.get(&id.value()) {
                Some(l) => l.deadline,
                None => deadline(now, ttl),
            };
            leases.insert(id.value(), Lease { ttl, deadline });
        }
        self.deadlines = leases.iter().map(|(id, l)| (l.deadline, *id)).collect();
        self.leases = leases;
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    fn set_deadline(&mut self, id: LeaseId, lease: Lease) {
        if let Some(old) = self.leases.insert(id, lease) {
            self.deadlines.remove(&(old.deadline, id));
        }
        self.deadlines.insert((lease.deadline, id));
    }

    fn forget_lease(&mut self, id: LeaseId) {
        if let Some(old) = self.leases.remove(&id) {
            self.deadlines.remove(&(old.deadline, id));
        }
    }

    /// Evaluates `cmds` in order inside one write transaction and commits it.
    /// A failing command answers its own error; only a storage failure fails
    /// the whole batch (the caller then resyncs from the file).
    fn apply_batch(&mut self, cmds: Vec<Cmd>, now: Instant) -> Result<BatchOutcome> {
        let w = self.db.begin_write().map_err(db_err)?;
        let mut answers = Vec::with_capacity(cmds.len());
        let mut published = Vec::new();
        let before = (self.revision, self.history_start, self.next_lease);
        // Set by writes that move none of the counters above.
        let mut leases_changed = false;
        {
            let mut t = Tables {
                kv: w.open_table(KV).map_err(db_err)?,
                history: w.open_table(HISTORY).map_err(db_err)?,
                leases: w.open_table(LEASES).map_err(db_err)?,
                lease_keys: w.open_table(LEASE_KEYS).map_err(db_err)?,
            };

            // Expire leases first so that nothing in this batch can attach a
            // key to a lease whose time is up.
            let expired: Vec<LeaseId> = self
                .deadlines
                .iter()
                .take_while(|(d, _)| *d <= now)
                .map(|(_, id)| *id)
                .collect();
            for id in expired {
                tracing::info!(lease = id, "lease expired");
                leases_changed = true;
                if let Some(ev) = self.revoke(&mut t, id)? {
                    published.push(ev);
                }
            }

            for cmd in cmds {
                let answer = match cmd {
                    Cmd::Txn(txn) => match self.txn(&mut t, txn)? {
                        Ok((result, ev)) => {
                            published.extend(ev);
                            Ok(Answer::Txn(result))
                        }
                        Err(e) => Err(e),
                    },
                    Cmd::Grant(ttl) => {
                        let id = self.next_lease;
                        self.next_lease += 1;
                        t.leases
                            .insert(id, ttl.as_millis().min(u64::MAX as u128) as u64)
                            .map_err(db_err)?;
                        self.set_deadline(
                            id,
                            Lease {
                                ttl,
                                deadline: deadline(now, ttl),
                            },
                        );
                        tracing::debug!(lease = id, ?ttl, "lease granted");
                        Ok(Answer::Lease(id))
                    }
                    Cmd::KeepAlive(id) => match self.leases.get(&id).copied() {
                        Some(l) => {
                            self.set_deadline(
                                id,
                                Lease {
                                    ttl: l.ttl,
                                    deadline: deadline(now, l.ttl),
                                },
                            );
                            Ok(Answer::Done)
                        }
                        None => Err(StoreError::LeaseNotFound(id)),
                    },
                    Cmd::Revoke(id) => {
                        if self.leases.contains_key(&id) {
                            tracing::debug!(lease = id, "lease revoked");
                            leases_changed = true;
                            published.extend(self.revoke(&mut t, id)?);
                            Ok(Answer::Done)
                        } else {
                            Err(StoreError::LeaseNotFound(id))
                        }
                    }
                    Cmd::Compact(rev) => {
                        // Like etcd, history can not start after the present.
                        let target = rev.min(self.revision);
                        self.drop_history(&mut t, target)?;
                        tracing::info!(revision = target, "history compacted");
                        Ok(Answer::Done)
                    }
                };
                answers.push(answer);
            }

            if self.revision >= self.history_start + self.retention {
                let target = self.revision + 1 - self.retention;
                self.drop_history(&mut t, target)?;
            }
        }
        if !leases_changed && before == (self.revision, self.history_start, self.next_lease) {
            // Reads, keep-alives and failed compares only: no fsync needed.
            w.abort().map_err(db_err)?;
            return Ok(BatchOutcome {
                committed: false,
                answers,
                published,
            });
        }
        {
            let mut meta = w.open_table(META).map_err(db_err)?;
            meta.insert(META_REVISION, self.revision).map_err(db_err)?;
            meta.insert(META_HISTORY_START, self.history_start)
                .map_err(db_err)?;
            meta.insert(META_NEXT_LEASE, self.next_lease as u64)
                .map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        Ok(BatchOutcome {
            committed: true,
            answers,
            published,
        })
    }

    fn drop_history(&mut self, t: &mut Tables<'_>, target: Revision) -> Result<()> {
        if target > self.history_start {
            t.history
                .retain_in(self.history_start..target, |_, _| false)
                .map_err(db_err)?;
            self.history_start = target;
        }
        Ok(())
    }

    /// Records the events of a new revision and returns what to broadcast.
    fn commit_revision(
        &mut self,
        t: &mut Tables<'_>,
        rev: Revision,
        events: Vec<WatchEvent>,
    ) -> Result<Arc<RevEvents>> {
        t.history
            .insert(rev, encode_events(&events).as_slice())
            .map_err(db_err)?;
        self.revision = rev;
        Ok(Arc::new(RevEvents {
            revision: rev,
            events,
        }))
    }

    /// Deletes the lease and its keys in one revision (none if it had no
    /// keys).
    fn revoke(&mut self, t: &mut Tables<'_>, id: LeaseId) -> Result<Option<Arc<RevEvents>>> {
        let keys: Vec<Vec<u8>> = {
            let mut keys = Vec::new();
            for entry in t.lease_keys.range((id, b"".as_slice())..).map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                let (lease, key) = k.value();
                if lease != id {
                    break;
                }
                keys.push(key.to_vec());
            }
            keys
        };
        t.leases.remove(id).map_err(db_err)?;
        self.forget_lease(id);
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for key in keys {
            match get_kv(&t.kv, &key)? {
                Some(old) if old.lease == id => delete_key(t, rev, old, &mut events)?,
                // A stale index entry: the key is not (or no longer) ours.
                _ => {
                    t.lease_keys.remove((id, key.as_slice())).map_err(db_err)?;
                }
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.commit_revision(t, rev, events)?))
    }

    /// Runs one transaction. The outer error is a storage failure (fails the
    /// batch); the inner one is this transaction's own (fails only it).
    #[allow(clippy::type_complexity)]
    fn txn(
        &mut self,
        t: &mut Tables<'_>,
        txn: Txn,
    ) -> Result<Result<(TxnResult, Option<Arc<RevEvents>>)>> {
        let mut succeeded = true;
        for c in &txn.compare {
            let current = get_kv(&t.kv, c.key.as_bytes())?;
            if !compare_holds(c, current.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { txn.success } else { txn.failure };
        // Check leases before touching anything: a transaction is all or
        // nothing, and the other transactions of the batch share the commit.
        for op in &ops {
            if let Op::Put { lease, .. } = op {
                if *lease != 0 && !self.leases.contains_key(lease) {
                    return Ok(Err(StoreError::LeaseNotFound(*lease)));
                }
            }
        }
        let rev = self.revision + 1;
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match op {
                Op::Put { key, value, lease } => {
                    let old = get_kv(&t.kv, key.as_bytes())?;
                    if let Some(o) = &old {
                        if o.lease != 0 && o.lease != lease {
                            t.lease_keys
                                .remove((o.lease, key.as_bytes()))
                                .map_err(db_err)?;
                        }
                    }
                    if lease != 0 {
                        t.lease_keys
                            .insert((lease, key.as_bytes()), ())
                            .map_err(db_err)?;
                    }
                    let kv = KeyValue {
                        create_revision: old.as_ref().map_or(rev, |o| o.create_revision),
                        version: old.as_ref().map_or(1, |o| o.version + 1),
                        mod_revision: rev,
                        lease,
                        key,
                        value,
                    };
                    let mut rec = Vec::with_capacity(RECORD_HEADER + kv.value.len());
                    encode_record(&kv, &mut rec);
                    t.kv.insert(kv.key.as_bytes(), rec.as_slice())
                        .map_err(db_err)?;
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv,
                    });
                    OpResult::Put
                }
                Op::Delete { key } => match get_kv(&t.kv, key.as_bytes())? {
                    Some(old) => {
                        delete_key(t, rev, old, &mut events)?;
                        OpResult::Delete(1)
                    }
                    None => OpResult::Delete(0),
                },
                Op::DeletePrefix { prefix } => {
                    let mut doomed = Vec::new();
                    for entry in t.kv.range(prefix.as_bytes()..).map_err(db_err)? {
                        let (k, v) = entry.map_err(db_err)?;
                        if !k.value().starts_with(prefix.as_bytes()) {
                            break;
                        }
                        doomed.push(decode_record(k.value(), v.value())?);
                    }
                    let n = doomed.len() as u64;
                    for old in doomed {
                        delete_key(t, rev, old, &mut events)?;
                    }
                    OpResult::Delete(n)
                }
                Op::Get { key } => OpResult::Get(get_kv(&t.kv, key.as_bytes())?),
            };
            results.push(result);
        }
        let published = if events.is_empty() {
            None
        } else {
            Some(self.commit_revision(t, rev, events)?)
        };
        Ok(Ok((
            TxnResult {
                succeeded,
                revision: self.revision,
                results,
            },
            published,
        )))
    }
}

/// `now + ttl`, saturating: a huge TTL must not overflow the clock.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    // About 30 years: far enough to mean "never", near enough for timers.
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(ttl.min(FAR))
        .unwrap_or_else(|| now + Duration::from_secs(1))
}

fn delete_key(
    t: &mut Tables<'_>,
    rev: Revision,
    old: KeyValue,
    events: &mut Vec<WatchEvent>,
) -> Result<()> {
    t.kv.remove(old.key.as_bytes()).map_err(db_err)?;
    if old.lease != 0 {
        t.lease_keys
            .remove((old.lease, old.key.as_bytes()))
            .map_err(db_err)?;
    }
    // Like etcd, a delete event carries only the key and the revision.
    events.push(WatchEvent {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: old.key,
            value: Vec::new(),
            create_revision: 0,
            mod_revision: rev,
            version: 0,
            lease: 0,
        },
    });
    Ok(())
}

/// etcd's rules: a missing key has revisions and version 0, and a value
/// compare on a missing key never holds.
fn compare_holds(c: &Compare, current: Option<&KeyValue>) -> bool {
    fn op<T: Ord + ?Sized>(a: &T, op: CompareOp, b: &T) -> bool {
        match op {
            CompareOp::Equal => a == b,
            CompareOp::NotEqual => a != b,
            CompareOp::Less => a < b,
            CompareOp::Greater => a > b,
        }
    }
    match &c.target {
        CompareTarget::ModRevision(r) => op(&current.map_or(0, |kv| kv.mod_revision), c.op, r),
        CompareTarget::CreateRevision(r) => {
            op(&current.map_or(0, |kv| kv.create_revision), c.op, r)
        }
        CompareTarget::Version(v) => op(&current.map_or(0, |kv| kv.version), c.op, v),
        CompareTarget::Value(v) => match current {
            Some(kv) => op(kv.value.as_slice(), c.op, v.as_slice()),
            None => false,
        },
    }
}

async fn run_writer(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Msg>,
    hub: Arc<Hub>,
    max_batch: usize,
) {
    let mut close = None;
    'outer: loop {
        let first = match writer.next_deadline() {
            Some(deadline) => tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => Some(m),
                    None => break 'outer,
                },
                _ = tokio::time::sleep_until(deadline) => None,
            },
            None => match rx.recv().await {
                Some(m) => Some(m),
                None => break 'outer,
            },
        };
        let mut cmds = Vec::new();
        let mut responders = Vec::new();
        let mut next = first;
        loop {
            match next {
                Some(Msg::Cmd(cmd, tx)) => {
                    cmds.push(cmd);
                    responders.push(tx);
                }
                Some(Msg::Close(tx)) => {
                    close = Some(tx);
                    break;
                }
                None => {}
            }
            if cmds.len() >= max_batch {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            };
        }
        let now = Instant::now();
        let expiring = writer.next_deadline().is_some_and(|d| d <= now);
        if !cmds.is_empty() || expiring {
            let batch = cmds.len();
            let job = tokio::task::spawn_blocking(move || {
                let outcome = writer.apply_batch(cmds, now);
                (writer, outcome)
            })
            .await;
            let outcome;
            (writer, outcome) = match job {
                Ok(r) => r,
                Err(e) => {
                    // The writer state went down with the thread; callers
                    // see their request dropped as Unavailable.
                    tracing::error!(error = %e, "store writer thread failed");
                    hub.close();
                    return;
                }
            };
            match outcome {
                Ok(o) => {
                    tracing::trace!(batch, revision = writer.revision, o.committed, "batch done");
                    if o.committed {
                        hub.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    hub.requests.fetch_add(batch as u64, Ordering::Relaxed);
                    hub.publish(writer.revision, writer.history_start, o.published);
                    for (tx, answer) in responders.into_iter().zip(o.answers) {
                        // The caller may have gone away; its write stands.
                        let _ = tx.send(answer);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, batch, "store commit failed");
                    let msg = e.to_string();
                    for tx in responders {
                        let _ = tx.send(Err(StoreError::Unavailable(format!(
                            "commit failed: {msg}"
                        ))));
                    }
                    if let Err(e) = writer.resync(now) {
                        tracing::error!(error = %e, "store resync failed; closing");
                        break 'outer;
                    }
                }
            }
        }
        if close.is_some() {
            break;
        }
    }
    hub.close();
    drop(writer);
    if let Some(tx) = close {
        let _ = tx.send(());
    }
    tracing::info!("embedded store closed");
}

// ---------------------------------------------------------------------------
// Live watch fan-out.

struct HubState {
    published: Revision,
    history_start: Revision,
    sender: Option<broadcast::Sender<Arc<RevEvents>>>,
}

/// What the writer has published. Subscribing and publishing take the same
/// lock, so a new watcher gets every revision after `published` live and
/// reads the ones up to it from the file: no gap, no duplicate.
struct Hub {
    state: Mutex<HubState>,
    commits: AtomicU64,
    requests: AtomicU64,
}

impl Hub {
    fn new(revision: Revision, history_start: Revision, buffer: usize) -> Hub {
        let (sender, _) = broadcast::channel(buffer);
        Hub {
            state: Mutex::new(HubState {
                published: revision,
                history_start,
                sender: Some(sender),
            }),
            commits: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, revision: Revision, history_start: Revision, revs: Vec<Arc<RevEvents>>) {
        let mut st = self.lock();
        if let Some(sender) = &st.sender {
            for r in revs {
                // No receiver is fine.
                let _ = sender.send(r);
            }
        }
        st.published = revision;
        st.history_start = history_start;
    }

    fn subscribe(&self) -> Option<(broadcast::Receiver<Arc<RevEvents>>, Revision, Revision)> {
        let st = self.lock();
        let rx = st.sender.as_ref()?.subscribe();
        Some((rx, st.published, st.history_start))
    }

    fn close(&self) {
        self.lock().sender = None;
    }
}

struct WatchCursor {
    db: Weak<Database>,
    hub: Arc<Hub>,
    prefix: String,
    /// The next revision to deliver.
    next: Revision,
    /// Revisions up to here come from the file, later ones from `rx`.
    upto: Revision,
    rx: Option<broadcast::Receiver<Arc<RevEvents>>>,
    pending: VecDeque<Vec<WatchEvent>>,
    done: bool,
}

impl WatchCursor {
    async fn step(mut self) -> Option<(Result<Vec<WatchEvent>>, WatchCursor)> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some((Ok(batch), self));
            }
            if self.done {
                return None;
            }
            if self.rx.is_none() {
                match self.hub.subscribe() {
                    Some((rx, published, _)) => {
                        self.rx = Some(rx);
                        self.upto = published;
                    }
                    None => return self.fail(closed()),
                }
            }
            if self.next <= self.upto {
                let end = self.upto.min(self.next + REPLAY_CHUNK - 1);
                match self.replay(end).await {
                    Ok(batches) => {
                        self.pending.extend(batches);
                        self.next = end + 1;
                    }
                    Err(e) => return self.fail(e),
                }
                continue;
            }
            let Some(rx) = self.rx.as_mut() else {
                continue;
            };
            match rx.recv().await {
                Ok(r) if r.revision < self.next => {}
                Ok(r) if r.revision == self.next => {
                    self.next = r.revision + 1;
                    let events: Vec<WatchEvent> = r
                        .events
                        .iter()
                        .filter(|e| e.kv.key.starts_with(&self.prefix))
                        .cloned()
                        .collect();
                    if !events.is_empty() {
                        return Some((Ok(events), self));
                    }
                }
                // A revision we did not see: catch up from the file.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    tracing::debug!(prefix = %self.prefix, next = self.next, "watcher lagged; replaying");
                    self.rx = None;
                }
                Err(broadcast::error::RecvError::Closed) => return self.fail(closed()),
            }
        }
    }

    fn fail(mut self, e: StoreError) -> Option<(Result<Vec<WatchEvent>>, WatchCursor)> {
        self.done = true;
        self.rx = None;
        Some((Err(e), self))
    }

    async fn replay(&self, end: Revision) -> Result<Vec<Vec<WatchEvent>>> {
        let db = self.db.upgrade().ok_or_else(closed)?;
        let (from, prefix) = (self.next, self.prefix.clone());
        tokio::task::spawn_blocking(move || read_history(&db, &prefix, from, end))
            .await
            .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }
}

fn read_history(
    db: &Database,
    prefix: &str,
    from: Revision,
    to: Revision,
) -> Result<Vec<Vec<WatchEvent>>> {
    let r = db.begin_read().map_err(db_err)?;
    let meta = r.open_table(META).map_err(db_err)?;
    let history_start = meta_get(&meta, META_HISTORY_START)?;
    if from < history_start {
        return Err(StoreError::Compacted {
            requested: from,
            compact_revision: history_start,
        });
    }
    let history = r.open_table(HISTORY).map_err(db_err)?;
    let mut out = Vec::new();
    for entry in history.range(from..=to).map_err(db_err)? {
        let (_, v) = entry.map_err(db_err)?;
        let events: Vec<WatchEvent> = decode_events(v.value())?
            .into_iter()
            .filter(|e| e.kv.key.starts_with(prefix))
            .collect();
        if !events.is_empty() {
            out.push(events);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    fn kv(key: &str, value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.to_vec(),
            create_revision: 7,
            mod_revision: 9,
            version: 3,
            lease: -5,
        }
    }

    #[test]
    fn events_round_trip() {
        let events = vec![
            WatchEvent {
                kind: EventKind::Put,
                kv: kv("/a/é", &[0, 255, 1]),
            },
            WatchEvent {
                kind: EventKind::Delete,
                kv: kv("", b""),
            },
        ];
        assert_eq!(decode_events(&encode_events(&events)).unwrap(), events);
        assert_eq!(decode_events(&encode_events(&[])).unwrap(), vec![]);
    }

    #[test]
    fn truncated_or_garbled_records_are_corrupt_not_panics() {
        let bytes = encode_events(&[WatchEvent {
            kind: EventKind::Put,
            kv: kv("/k", b"value"),
        }]);
        for len in 0..bytes.len() {
            assert!(
                matches!(decode_events(&bytes[..len]), Err(StoreError::Corrupt(_))),
                "prefix of {len} bytes"
            );
        }
        let mut bad_kind = bytes.clone();
        bad_kind[4] = 9;
        assert!(matches!(
            decode_events(&bad_kind),
            Err(StoreError::Corrupt(_))
        ));
        let mut huge_len = bytes;
        huge_len[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_events(&huge_len),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_record(&[0xff], &[0; RECORD_HEADER]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn huge_ttl_does_not_overflow() {
        let now = Instant::now();
        assert!(deadline(now, Duration::MAX) > now);
    }
}
