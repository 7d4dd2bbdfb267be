//! The drivers around the pure parts: a task that follows the store (watch
//! → [`Hub`]) and wakes the sessions of the nodes that changed, and a task
//! that turns acks, nacks and model changes into fenced status writes.

use std::collections::{BTreeSet, HashMap};
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
    },
    /// Re-check the records of these NICs against the model.
    Check(BTreeSet<String>),
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

async fn apply(shared: &Shared, events: &[api::store::WatchEvent]) {
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
    check_statuses(shared, out).await;
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
    while let Some((cmd, attempt)) = rx.recv().await {
        let writes: Vec<StatusWrite> = {
            let hub = shared.hub();
            let model = hub.compiler().model();
            match &cmd {
                StatusCmd::Ack {
                    node,
                    revision,
                    ready,
                } => status::plan_ack(model, node, *revision, ready),
                StatusCmd::Nack { node, revision } => status::plan_nack(model, node, *revision),
                StatusCmd::Check(nics) => status::plan_check(model, nics),
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
        if lost {
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
