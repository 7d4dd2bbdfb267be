//! The drivers around the pure parts: a task that follows the store (watch
//! → [`Hub`]) and wakes the sessions of the nodes that changed, and a task
//! that turns acks, nacks and model changes into fenced status writes and
//! operation transitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use api::model::keys;
use api::store::{Store, StoreError};
use futures::StreamExt;
use proto::Revision;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::compile::{Applied, Compiler};
use crate::hub::{HistoryLimits, Hub};
use crate::metrics::Metrics;
use crate::operations::{self as ops, AckBook};
use crate::status::{self, StatusWrite};
use crate::Result;

/// Settings of the distribution service.
#[derive(Clone, Debug)]
pub struct Config {
    /// The secret node tokens are derived from.
    pub cluster_secret: Vec<u8>,
    pub history: HistoryLimits,
}

/// What the status task is asked to do.
#[derive(Debug, Clone)]
pub enum StatusCmd {
    Ack {
        node: String,
        revision: Revision,
        ready: Vec<String>,
    },
    Nack {
        node: String,
        revision: Revision,
        error: String,
    },
    /// The agent of `node` announced (on connecting) that it holds the
    /// state at `revision`: an ack for operations, not for NIC status
    /// (it says nothing about which NICs are ready).
    Holds { node: String, revision: Revision },
    /// Re-check the records of these NICs against the model.
    Check(BTreeSet<String>),
    /// Plan these operations again; `affected`: for those just written,
    /// the nodes whose state their revision changed.
    Ops {
        ids: BTreeSet<String>,
        affected: BTreeMap<String, BTreeSet<String>>,
    },
}

/// Status writes go in transactions of at most this many records.
const STATUS_BATCH: usize = 64;
/// A status command that keeps losing races is dropped after this many tries.
const STATUS_ATTEMPTS: u32 = 5;

/// The state shared by the drivers and the agent sessions.
pub struct Shared {
    hub: Mutex<Hub>,
    /// Per node, the revision of its last change: sessions wait on it.
    nodes: Mutex<HashMap<String, watch::Sender<Revision>>>,
    /// The compiled revision.
    revision: watch::Sender<Revision>,
    status: mpsc::Sender<(StatusCmd, u32)>,
    /// Shared with the singleton duties, which count into it too.
    pub metrics: Arc<Metrics>,
    pub config: Config,
}

impl Shared {
    /// The hub, locked. Never hold it across an await.
    pub fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock leaves the hub as consistent as
        // the last completed call; keep serving.
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes up when `node`'s state changes.
    pub fn subscribe(&self, node: &str) -> watch::Receiver<Revision> {
        let mut map = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(node.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes up when the compiled revision advances.
    pub fn subscribe_revision(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    /// Queues a status command (waits if the status task is behind).
    pub async fn status(&self, cmd: StatusCmd) {
        if self.status.send((cmd, 0)).await.is_err() {
            warn!("status task is gone; status update dropped");
        }
    }

    fn publish(&self, out: &Applied, revision: Revision) {
        self.metrics.store_revision.store(revision, Relaxed);
        {
            let mut map = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            for node in out.changes.keys() {
                if let Some(tx) = map.get(node) {
                    tx.send_replace(revision);
                }
            }
            // Forget nodes nobody listens to any more.
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        self.revision.send_replace(revision);
    }
}

/// The running service: its shared state and its tasks (stopped on drop).
pub struct Service {
    pub shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Service {
    /// Lists the store, compiles every node and starts following the store.
    pub async fn start(store: Arc<dyn Store>, config: Config) -> Result<Service> {
        let (kvs, revision) = store.range(keys::ROOT).await?;
        let compiler = Compiler::from_listing(&kvs, revision);
        info!(
            revision,
            keys = kvs.len(),
            nodes = compiler.states().len(),
            "model loaded"
        );
        let stale: BTreeSet<String> = compiler
            .model()
            .statuses()
            .map(|(k, _)| k.clone())
            .collect();
        let hub = Hub::new(compiler, config.history);
        let (status_tx, status_rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            hub: Mutex::new(hub),
            nodes: Mutex::new(HashMap::new()),
            revision: watch::channel(revision).0,
            status: status_tx,
            metrics: Arc::default(),
            config,
        });
        shared.metrics.store_revision.store(revision, Relaxed);
        let tasks = vec![
            tokio::spawn(follow(store.clone(), shared.clone())),
            tokio::spawn(write_statuses(store, shared.clone(), status_rx)),
        ];
        // Moves and deletions that happened while no flowctl was running.
        if !stale.is_empty() {
            shared.status(StatusCmd::Check(stale)).await;
        }
        // Operations written while no flowctl was running, or left running.
        let open: BTreeSet<String> = shared
            .hub()
            .compiler()
            .model()
            .operations()
            .map(|(id, _)| id.clone())
            .collect();
        check_operations(&shared, open, BTreeMap::new()).await;
        Ok(Service { shared, tasks })
    }
}

/// Follows the store: applies every batch of events, relists after a
/// compaction, reconnects the watch after an error.
async fn follow(store: Arc<dyn Store>, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let from = shared.hub().revision() + 1;
        let mut stream = match store.watch(keys::ROOT, from).await {
            Ok(s) => s,
            Err(StoreError::Compacted { .. }) => {
                relist(&*store, &shared).await;
                continue;
            }
            Err(e) => {
                warn!(error = %e, from, "store watch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        while let Some(item) = stream.next().await {
            match item {
                Ok(events) => apply(&shared, &events).await,
                Err(StoreError::Compacted { .. }) => {
                    relist(&*store, &shared).await;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "store watch broke; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Applies a batch of events. A batch that writes operations is applied
/// one revision (transaction) at a time, so each new operation learns
/// exactly which nodes its own change altered.
async fn apply(shared: &Shared, events: &[api::store::WatchEvent]) {
    let has_ops = events.iter().any(|e| {
        matches!(
            crate::compile::classify(&e.kv.key),
            Some(crate::compile::KeyKind::Operation(_))
        )
    });
    if !has_ops {
        return apply_batch(shared, events).await;
    }
    for group in events.chunk_by(|a, b| a.revision() == b.revision()) {
        apply_batch(shared, group).await;
    }
}

async fn apply_batch(shared: &Shared, events: &[api::store::WatchEvent]) {
    let started = std::time::Instant::now();
    let (out, revision) = {
        let mut hub = shared.hub();
        let have = hub.revision();
        // A reconnected watch may repeat what was already applied.
        let fresh: Vec<_> = events
            .iter()
            .filter(|e| e.revision() > have)
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        let out = hub.apply(&fresh);
        (out, hub.revision())
    };
    // Operations created in this batch (one revision when there are any):
    // the nodes it changed are the ones they wait on.
    let created: Vec<String> = events
        .iter()
        .filter(|e| e.kind == api::store::EventKind::Put && e.kv.create_revision == e.revision())
        .filter_map(|e| match crate::compile::classify(&e.kv.key) {
            Some(crate::compile::KeyKind::Operation(id)) => Some(id.to_string()),
            _ => None,
        })
        .collect();
    let m = &shared.metrics;
    Metrics::inc(&m.compile_batches);
    m.compile_seconds_micros
        .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    debug!(
        revision,
        nodes = out.changes.len(),
        touched = out.touched.len(),
        "compiled"
    );
    shared.publish(&out, revision);
    let nodes: BTreeSet<String> = out.changes.keys().cloned().collect();
    let affected = created.into_iter().map(|id| (id, nodes.clone())).collect();
    check_operations(shared, out.operations.clone(), affected).await;
    check_statuses(shared, out).await;
}

async fn check_operations(
    shared: &Shared,
    ids: BTreeSet<String>,
    affected: BTreeMap<String, BTreeSet<String>>,
) {
    if !ids.is_empty() {
        shared.status(StatusCmd::Ops { ids, affected }).await;
    }
}

async fn relist(store: &dyn Store, shared: &Shared) {
    loop {
        match store.range(keys::ROOT).await {
            Ok((kvs, revision)) => {
                let out = shared.hub().relist(&kvs, revision);
                Metrics::inc(&shared.metrics.relists_total);
                info!(
                    revision,
                    nodes = out.changes.len(),
                    "relisted after compaction"
                );
                shared.publish(&out, revision);
                check_operations(shared, out.operations.clone(), BTreeMap::new()).await;
                check_statuses(shared, out).await;
                return;
            }
            Err(e) => {
                warn!(error = %e, "relist failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn check_statuses(shared: &Shared, out: Applied) {
    let mut nics = out.nics;
    nics.extend(out.statuses);
    if !nics.is_empty() {
        shared.status(StatusCmd::Check(nics)).await;
    }
}

/// Plans each command against the cached model and commits it; a command
/// whose transaction lost a race is planned again once the cache has had
/// time to see the newer records.
async fn write_statuses(
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(StatusCmd, u32)>,
) {
    let mut book = AckBook::default();
    // Nodes changed at a pending operation's revision, until it runs.
    let mut affected: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut retention = Retention::default();
    while let Some((cmd, attempt)) = rx.recv().await {
        // The operations this command may advance.
        let op_ids: BTreeSet<String> = {
            let hub = shared.hub();
            let model = hub.compiler().model();
            match &cmd {
                StatusCmd::Ack { node, revision, .. } | StatusCmd::Holds { node, revision } => {
                    book.ack(node, *revision);
                    ops::concerning(model, node, &affected)
                }
                StatusCmd::Nack {
                    node,
                    revision,
                    error,
                } => {
                    book.nack(node, *revision, error);
                    ops::concerning(model, node, &affected)
                }
                StatusCmd::Ops { ids, affected: a } => {
                    affected.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
                    ids.clone()
                }
                StatusCmd::Check(_) => BTreeSet::new(),
            }
        };
        let writes: Vec<StatusWrite> = {
            let hub = shared.hub();
            let model = hub.compiler().model();
            match &cmd {
                StatusCmd::Ack {
                    node,
                    revision,
                    ready,
                } => status::plan_ack(model, node, *revision, ready),
                StatusCmd::Nack { node, revision, .. } => status::plan_nack(model, node, *revision),
                StatusCmd::Check(nics) => status::plan_check(model, nics),
                StatusCmd::Holds { .. } | StatusCmd::Ops { .. } => vec![],
            }
        };
        let mut lost = false;
        for chunk in writes.chunks(STATUS_BATCH) {
            match store.txn(status::to_txn(chunk)).await {
                Ok(r) if r.succeeded => {
                    shared
                        .metrics
                        .status_writes
                        .fetch_add(chunk.len() as u64, Relaxed);
                    for w in chunk {
                        debug!(nic = %w.nic, record = ?w.record, revision = r.revision, "NIC status written");
                    }
                }
                Ok(_) => {
                    Metrics::inc(&shared.metrics.status_conflicts);
                    lost = true;
                }
                Err(e) => {
                    warn!(error = %e, "status write failed");
                    lost = true;
                }
            }
        }
        let op_lost =
            advance_operations(&*store, &shared, &op_ids, &affected, &book, &mut retention).await;
        // A pending operation that was planned no longer needs its set.
        {
            let hub = shared.hub();
            let model = hub.compiler().model();
            affected.retain(|id, _| {
                model
                    .operation(id)
                    .is_some_and(|e| e.op.state == api::operation::OperationState::Pending)
            });
        }
        let retry = match (lost, op_lost.is_empty()) {
            (false, true) => None,
            // Operations are re-planned from scratch (the command's own
            // ack is in the book already).
            (false, false) => Some(StatusCmd::Ops {
                ids: op_lost,
                affected: BTreeMap::new(),
            }),
            (true, _) => Some(cmd),
        };
        if let Some(cmd) = retry {
            if attempt + 1 >= STATUS_ATTEMPTS {
                warn!(?cmd, "status update given up after repeated conflicts");
                continue;
            }
            // Retried from a separate task: this one must keep draining.
            let tx = shared.status.clone();
            let delay = Duration::from_millis(50 << attempt);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send((cmd, attempt + 1)).await;
            });
        }
    }
}

/// The lease ended operations are put on: granted for twice
/// [`api::operation::RETENTION`], anew once one `RETENTION` has passed, so
/// each is kept between one and two.
#[derive(Default)]
pub(crate) struct Retention {
    lease: Option<(api::store::LeaseId, tokio::time::Instant)>,
}

impl Retention {
    pub(crate) async fn lease(&mut self, store: &dyn Store) -> Result<api::store::LeaseId> {
        if let Some((id, at)) = self.lease {
            if at.elapsed() < api::operation::RETENTION {
                return Ok(id);
            }
        }
        let id = store.grant_lease(api::operation::RETENTION * 2).await?;
        self.lease = Some((id, tokio::time::Instant::now()));
        Ok(id)
    }
}

/// Plans and commits the transitions of `ids`, one fenced transaction
/// each; returns those that lost a race (or failed) and need planning again.
async fn advance_operations(
    store: &dyn Store,
    shared: &Shared,
    ids: &BTreeSet<String>,
    affected: &HashMap<String, BTreeSet<String>>,
    book: &AckBook,
    retention: &mut Retention,
) -> BTreeSet<String> {
    if ids.is_empty() {
        return BTreeSet::new();
    }
    let now = api::http::operations::now_rfc3339();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let writes = {
        let hub = shared.hub();
        let compiler = hub.compiler();
        ops::plan(
            compiler.model(),
            ids,
            affected,
            |t| holders(compiler, t),
            book,
            &now,
            now_ms,
        )
    };
    let mut lost = BTreeSet::new();
    for w in writes {
        let lease = if w.op.state.is_terminal() {
            match retention.lease(store).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, op_id = %w.op.id, "cannot get the retention lease");
                    lost.insert(w.op.id.clone());
                    continue;
                }
            }
        } else {
            0
        };
        match store.txn(ops::to_txn(&w, lease)).await {
            Ok(r) if r.succeeded => {
                Metrics::inc(&shared.metrics.operation_transitions);
                info!(op_id = %w.op.id, state = w.op.state.as_str(), waiting_on = ?w.op.waiting_on, revision = r.revision, "operation advanced");
            }
            Ok(_) => {
                Metrics::inc(&shared.metrics.status_conflicts);
                lost.insert(w.op.id.clone());
            }
            Err(e) => {
                warn!(error = %e, op_id = %w.op.id, "operation write failed");
                lost.insert(w.op.id.clone());
            }
        }
    }
    lost
}

/// The nodes whose compiled state holds `target` now (what a pending
/// operation found by a listing waits on).
fn holders(compiler: &Compiler, target: &api::operation::Target) -> BTreeSet<String> {
    use proto::ObjectKey;
    let key = match target.kind.as_str() {
        "nic" => ObjectKey::Nic(target.id.clone()),
        "security_group" => ObjectKey::SecurityGroup(target.id.clone()),
        "eip" => ObjectKey::Eip(target.id.clone()),
        "subnet" => ObjectKey::Subnet(target.id.clone()),
        "nat_gateway" => ObjectKey::NatGateway(target.id.clone()),
        // `/v1/security-groups/<group>/rules/<rule>`: the group's holders.
        "security_group_rule" => match target.href.split('/').nth(3) {
            Some(g) => ObjectKey::SecurityGroup(g.to_string()),
            None => return BTreeSet::new(),
        },
        _ => return BTreeSet::new(),
    };
    compiler
        .states()
        .iter()
        .filter(|(_, st)| st.contains(&key))
        .map(|(n, _)| n.clone())
        .collect()
}
