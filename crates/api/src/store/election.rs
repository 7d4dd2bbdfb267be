//! Leader election for singleton duties, on any [`Store`]: one key held
//! with a lease, kept alive while the holder lives, and writes fenced by the
//! key's create revision.
//!
//! A lease-based lock alone is not safe: a holder that pauses (GC, swap, a
//! stopped VM) longer than the TTL loses the lease, a new holder is elected,
//! and the old one wakes up still believing it leads. So a holder's writes
//! go through [`Leadership::txn`], which adds a compare on the election key's
//! `create_revision`: once the key was deleted (lease expired, resigned) and
//! created again by someone else, its create revision differs and the old
//! holder's write fails with [`ElectionError::Lost`] instead of landing.
//! The create revision (rather than the holder's name or the value) makes
//! even the same candidate re-elected after a pause a different term.
//!
//! ```ignore
//! let election = Election::new(store, "/stacknet-duties/compaction", "replica-a", ttl);
//! let mut lead = election.campaign().await?;        // waits until elected
//! loop {
//!     tokio::select! {
//!         _ = lead.lost() => break,                  // lease gone: stop at once
//!         _ = tick.tick() => { lead.txn(work_txn).await?; }
//!     }
//! }
//! lead.resign().await?;                               // or drop: the lease expires
//! ```
//!
//! Time comes from tokio, so tests run with paused time.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, LeaseId, Op, OpResult, Revision, Store,
    StoreError, Txn, TxnResult,
};

/// Where singleton duties keep their election keys: outside `/stacknet/`,
/// so flowctl's model watch never sees them.
pub const DUTIES_PREFIX: &str = "/stacknet-duties/";

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("store")]
    Store(#[from] StoreError),
    /// The election key is no longer ours: the lease expired or was revoked,
    /// or another candidate holds it. Nothing was written.
    #[error("leadership of {key} lost")]
    Lost { key: String },
}

/// One candidate in the election held at one key.
#[derive(Clone)]
pub struct Election {
    store: Arc<dyn Store>,
    key: String,
    candidate: String,
    ttl: Duration,
}

/// Who holds an election key now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub candidate: String,
    /// The term: the key's create revision.
    pub term: Revision,
    pub lease: LeaseId,
}

impl Election {
    /// `candidate` names this contender (shown to observers); `ttl` is how
    /// long a silent holder keeps the duty before another takes over.
    pub fn new(
        store: Arc<dyn Store>,
        key: impl Into<String>,
        candidate: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Election {
            store,
            key: key.into(),
            candidate: candidate.into(),
            ttl,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current holder, if any.
    pub async fn leader(&self) -> Result<Option<Leader>, ElectionError> {
        Ok(self.store.get(&self.key).await?.map(|kv| leader_of(&kv)))
    }

    /// Waits until this candidate holds the key, then keeps its lease alive
    /// until the returned [`Leadership`] is resigned, dropped or lost.
    pub async fn campaign(&self) -> Result<Leadership, ElectionError> {
        let lease = self.store.grant_lease(self.ttl).await?;
        // The lease must live while we wait for the key, or we would win
        // with a dead lease.
        let (lost_tx, lost_rx) = watch::channel(false);
        let keeper = tokio::spawn(keep_lease(
            self.store.clone(),
            lease,
            self.ttl,
            None,
            self.key.clone(),
            lost_tx,
        ));
        match self.try_win(lease, lost_rx.clone()).await {
            Ok(term) => {
                keeper.abort();
                info!(key = %self.key, candidate = %self.candidate, term, lease, "elected");
                // From now on the keeper also checks the key is still ours.
                let (lost_tx, lost_rx) = watch::channel(false);
                let keeper = tokio::spawn(keep_lease(
                    self.store.clone(),
                    lease,
                    self.ttl,
                    Some(term),
                    self.key.clone(),
                    lost_tx,
                ));
                Ok(Leadership {
                    store: self.store.clone(),
                    key: self.key.clone(),
                    lease,
                    term,
                    lost: lost_rx,
                    keeper,
                })
            }
            Err(e) => {
                keeper.abort();
                let _ = self.store.revoke_lease(lease).await;
                Err(e)
            }
        }
    }

    /// Creates the key with `lease` when it is absent; otherwise waits for
    /// it to be deleted and tries again. Returns the term.
    async fn try_win(
        &self,
        lease: LeaseId,
        mut lease_lost: watch::Receiver<bool>,
    ) -> Result<Revision, ElectionError> {
        loop {
            let r = self
                .store
                .txn(Txn {
                    compare: vec![Compare::absent(&self.key)],
                    success: vec![Op::Put {
                        key: self.key.clone(),
                        value: self.candidate.clone().into_bytes(),
                        lease,
                    }],
                    failure: vec![Op::Get {
                        key: self.key.clone(),
                    }],
                })
                .await?;
            if r.succeeded {
                return Ok(r.revision);
            }
            let holder = match r.results.first() {
                Some(OpResult::Get(Some(kv))) => kv.clone(),
                // Deleted between the compare and the get: try again.
                _ => continue,
            };
            debug!(key = %self.key, holder = %String::from_utf8_lossy(&holder.value), "waiting for the holder to go");
            let mut events = self.store.watch(&self.key, holder.mod_revision + 1).await?;
            loop {
                tokio::select! {
                    ev = events.next() => match ev {
                        Some(Ok(batch)) => {
                            if batch.iter().any(|e| e.kv.key == self.key && e.kind == EventKind::Delete) {
                                break;
                            }
                        }
                        // A broken or compacted watch: look at the key again.
                        Some(Err(_)) | None => break,
                    },
                    _ = lease_lost.wait_for(|l| *l) => {
                        return Err(ElectionError::Lost { key: self.key.clone() });
                    }
                }
            }
        }
    }
}

fn leader_of(kv: &KeyValue) -> Leader {
    Leader {
        candidate: String::from_utf8_lossy(&kv.value).into_owned(),
        term: kv.create_revision,
        lease: kv.lease,
    }
}

/// Keeps `lease` alive every `ttl / 3`. Reports loss when the lease is
/// gone, when no keep-alive succeeded for a whole `ttl` (it may have
/// expired without us hearing), or, with `term`, when the key is no longer
/// the one created in that term.
async fn keep_lease(
    store: Arc<dyn Store>,
    lease: LeaseId,
    ttl: Duration,
    term: Option<Revision>,
    key: String,
    lost: watch::Sender<bool>,
) {
    let every = ttl / 3;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let kept = store.keep_alive(lease).await;
        let why = match kept {
            Ok(()) => {
                last_ok = tokio::time::Instant::now();
                match term {
                    None => None,
                    Some(term) => match store.get(&key).await {
                        Ok(Some(kv)) if kv.create_revision == term => None,
                        Ok(_) => Some("the election key is gone or taken".to_string()),
                        // Unknown: the fence protects writes meanwhile.
                        Err(_) => None,
                    },
                }
            }
            Err(StoreError::LeaseNotFound(_)) => Some("the lease expired".to_string()),
            Err(e) if last_ok.elapsed() >= ttl => Some(format!("no keep-alive for a TTL: {e}")),
            Err(e) => {
                warn!(%key, lease, error = %e, "keep-alive failed; retrying");
                None
            }
        };
        if let Some(why) = why {
            warn!(%key, lease, %why, "leadership lost");
            lost.send_replace(true);
            return;
        }
    }
}

/// This candidate holds the key. Dropping it stops the keep-alives (the
/// lease then expires after its TTL); [`Leadership::resign`] frees the key
/// at once.
pub struct Leadership {
    store: Arc<dyn Store>,
    key: String,
    lease: LeaseId,
    term: Revision,
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key)
            .field("lease", &self.lease)
            .field("term", &self.term)
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// The key's create revision: identifies this term.
    pub fn term(&self) -> Revision {
        self.term
    }

    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The compare that holds only while this term lasts.
    pub fn fence(&self) -> Compare {
        Compare {
            key: self.key.clone(),
            op: CompareOp::Equal,
            target: CompareTarget::CreateRevision(self.term),
        }
    }

    /// Whether loss was observed (the lease or key is known gone). `false`
    /// does not prove leadership: only a fenced write does.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once loss is observed.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|l| *l).await;
    }

    /// Runs `txn` only if this term still holds the key. The caller's own
    /// compares failing gives `Ok` with `succeeded: false`, as
    /// [`Store::txn`]; the fence failing gives [`ElectionError::Lost`].
    pub async fn txn(&self, mut txn: Txn) -> Result<TxnResult, ElectionError> {
        txn.compare.push(self.fence());
        // Tells which compare failed: ours, or the caller's.
        txn.failure.push(Op::Get {
            key: self.key.clone(),
        });
        let mut r = self.store.txn(txn).await?;
        if r.succeeded {
            return Ok(r);
        }
        match r.results.pop() {
            Some(OpResult::Get(Some(kv))) if kv.create_revision == self.term => Ok(r),
            _ => Err(ElectionError::Lost {
                key: self.key.clone(),
            }),
        }
    }

    /// Gives the duty up now: revokes the lease, which deletes the key.
    pub async fn resign(self) -> Result<(), ElectionError> {
        self.keeper.abort();
        match self.store.revoke_lease(self.lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => {
                info!(key = %self.key, term = self.term, "resigned");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Properties every backend must show, shaped like [`super::conformance`]:
/// run against the embedded store (paused time) and real etcd.
pub mod checks {
    use super::*;

    type R = std::result::Result<(), String>;

    fn check(cond: bool, what: impl Into<String>) -> R {
        if cond {
            Ok(())
        } else {
            Err(what.into())
        }
    }

    fn put(key: &str) -> Txn {
        Txn {
            success: vec![Op::put(key, "x")],
            ..Txn::default()
        }
    }

    /// One holder at a time; the second candidate is elected once the
    /// first resigns, and the first's writes are then refused.
    pub async fn one_holder_then_handover(store: Arc<dyn Store>, p: &str, ttl: Duration) -> R {
        let key = format!("{p}/leader");
        let a = Election::new(store.clone(), &key, "a", ttl);
        let b = Election::new(store.clone(), &key, "b", ttl);
        let lead_a = a.campaign().await.map_err(|e| e.to_string())?;
        let who = a.leader().await.map_err(|e| e.to_string())?;
        check(
            who.as_ref().map(|l| l.candidate.as_str()) == Some("a"),
            format!("leader is {who:?}"),
        )?;
        let mut b_campaign = tokio::spawn(async move { b.campaign().await });
        // b must still be waiting well after a TTL: a keeps its lease.
        let waited = tokio::time::timeout(ttl * 3, &mut b_campaign).await;
        check(waited.is_err(), "b was elected while a held the key")?;
        let wrote = lead_a
            .txn(put(&format!("{p}/work")))
            .await
            .map_err(|e| e.to_string())?;
        check(wrote.succeeded, "a's fenced write failed while leading")?;
        let old = Leadership {
            store: store.clone(),
            key: lead_a.key.clone(),
            lease: lead_a.lease,
            term: lead_a.term,
            lost: lead_a.lost.clone(),
            keeper: tokio::spawn(async {}),
        };
        lead_a.resign().await.map_err(|e| e.to_string())?;
        let lead_b = tokio::time::timeout(ttl * 3, b_campaign)
            .await
            .map_err(|_| "b was not elected after a resigned".to_string())?
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        check(lead_b.term() > old.term(), "b's term is not newer")?;
        // a's term is over: its writes are fenced off.
        let r = old.txn(put(&format!("{p}/stale"))).await;
        check(
            matches!(r, Err(ElectionError::Lost { .. })),
            format!("a's write after resigning: {r:?}"),
        )?;
        check(
            store
                .get(&format!("{p}/stale"))
                .await
                .map_err(|e| e.to_string())?
                .is_none(),
            "a's fenced-off write landed",
        )?;
        // The caller's own failed compare is not a loss.
        let mut own = put(&format!("{p}/work"));
        own.compare.push(Compare::absent(format!("{p}/work")));
        let r = lead_b.txn(own).await.map_err(|e| e.to_string())?;
        check(!r.succeeded, "a compare that does not hold succeeded")?;
        lead_b.resign().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// A holder that stops keeping its lease alive (a pause) loses the key
    /// after the TTL; another candidate takes over; the paused holder's
    /// writes fail and its loss is observed once it looks.
    pub async fn paused_holder_is_fenced(store: Arc<dyn Store>, p: &str, ttl: Duration) -> R {
        let key = format!("{p}/leader");
        let a = Election::new(store.clone(), &key, "a", ttl);
        let b = Election::new(store.clone(), &key, "b", ttl);
        let lead_a = a.campaign().await.map_err(|e| e.to_string())?;
        // The pause: a's keep-alives stop, its handle stays.
        lead_a.keeper.abort();
        let lead_b = tokio::time::timeout(ttl * 4, b.campaign())
            .await
            .map_err(|_| "b was not elected after a's lease ran out".to_string())?
            .map_err(|e| e.to_string())?;
        let r = lead_a.txn(put(&format!("{p}/from-a"))).await;
        check(
            matches!(r, Err(ElectionError::Lost { .. })),
            format!("paused holder's write: {r:?}"),
        )?;
        check(
            store
                .get(&format!("{p}/from-a"))
                .await
                .map_err(|e| e.to_string())?
                .is_none(),
            "the paused holder's write landed",
        )?;
        let r = lead_b
            .txn(put(&format!("{p}/from-b")))
            .await
            .map_err(|e| e.to_string())?;
        check(r.succeeded, "the new holder's write failed")?;
        lead_b.resign().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Loss is observed without writing: the key deleted under the holder
    /// (an operator, or an expiry the holder missed) ends its leadership.
    pub async fn loss_is_observed(store: Arc<dyn Store>, p: &str, ttl: Duration) -> R {
        let key = format!("{p}/leader");
        let a = Election::new(store.clone(), &key, "a", ttl);
        let mut lead = a.campaign().await.map_err(|e| e.to_string())?;
        check(!lead.is_lost(), "lost right after election")?;
        store.delete(&key).await.map_err(|e| e.to_string())?;
        tokio::time::timeout(ttl * 2, lead.lost())
            .await
            .map_err(|_| "deleting the key was not noticed".to_string())?;
        check(lead.is_lost(), "is_lost after lost()")?;
        // Revoking the lease too: also noticed.
        let mut lead = a.campaign().await.map_err(|e| e.to_string())?;
        store
            .revoke_lease(lead.lease())
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(ttl * 2, lead.lost())
            .await
            .map_err(|_| "revoking the lease was not noticed".to_string())?;
        Ok(())
    }

    /// Every check, each under its own prefix.
    pub async fn run_all(store: Arc<dyn Store>, prefix: &str, ttl: Duration) -> R {
        one_holder_then_handover(store.clone(), &format!("{prefix}/handover"), ttl)
            .await
            .map_err(|e| format!("one_holder_then_handover: {e}"))?;
        paused_holder_is_fenced(store.clone(), &format!("{prefix}/paused"), ttl)
            .await
            .map_err(|e| format!("paused_holder_is_fenced: {e}"))?;
        loss_is_observed(store, &format!("{prefix}/observed"), ttl)
            .await
            .map_err(|e| format!("loss_is_observed: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test(start_paused = true)]
    async fn embedded_with_paused_time() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open_in_memory().unwrap());
        checks::run_all(store, "/t", Duration::from_secs(10))
            .await
            .unwrap();
    }

    /// Two candidates racing for one key many times: never two terms at
    /// once, and every term's fenced writes land only in that term.
    #[tokio::test(start_paused = true)]
    async fn terms_never_overlap() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open_in_memory().unwrap());
        let ttl = Duration::from_secs(3);
        let mut tasks = Vec::new();
        for c in ["a", "b", "c"] {
            let e = Election::new(store.clone(), "/t/leader", c, ttl);
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..5u32 {
                    let lead = e.campaign().await.unwrap();
                    // Holder-only counter: read, then fenced compare-and-swap.
                    let cur = store.get("/t/counter").await.unwrap();
                    let (n, rev) = cur.map_or((0, 0), |kv| {
                        (
                            String::from_utf8(kv.value).unwrap().parse::<u32>().unwrap(),
                            kv.mod_revision,
                        )
                    });
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(round))).await;
                    let r = lead
                        .txn(Txn {
                            compare: vec![Compare::mod_revision_is("/t/counter", rev)],
                            success: vec![Op::put("/t/counter", (n + 1).to_string())],
                            failure: vec![],
                        })
                        .await
                        .unwrap();
                    assert!(r.succeeded, "{c}: a holder's CAS lost a race");
                    lead.resign().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = store.get("/t/counter").await.unwrap().unwrap().value;
        assert_eq!(n, b"15");
    }
}
