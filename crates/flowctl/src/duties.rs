//! Singleton duties: work exactly one replica does at a time, under a store
//! lease (see [`api::store::election`]). Every replica campaigns; the
//! elected one works until it loses the lease, then campaigns again.
//!
//! The duty here is store history compaction: the store keeps every
//! revision until told otherwise (etcd) or up to a bound (embedded), and
//! watchers that fall behind the kept history relist. The holder compacts
//! to `revision - keep` every `every`. Compaction itself is not a
//! transaction, so the holder first records the target with a fenced write
//! and compacts only when that write lands: a paused former holder's write
//! fails and it compacts nothing. (A holder paused between its fenced write
//! and the compaction can still compact late, to a revision that was right
//! a moment ago; compaction only moves forward, so that is harmless.)

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use api::store::election::{Election, ElectionError, Leadership, DUTIES_PREFIX};
use api::store::{Op, Store, StoreError, Txn};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::metrics::Metrics;

/// How much store history to keep.
#[derive(Clone, Debug)]
pub struct CompactionConfig {
    /// Revisions kept behind the current one.
    pub keep_revisions: u64,
    /// How often the holder compacts.
    pub every: Duration,
    /// The lease TTL: how long a silent holder keeps the duty.
    pub ttl: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            keep_revisions: 10_000,
            every: Duration::from_secs(60),
            ttl: Duration::from_secs(10),
        }
    }
}

/// The election key of the compaction duty.
pub fn compaction_key() -> String {
    format!("{DUTIES_PREFIX}compaction")
}

/// Where the holder records the revision it compacts to.
pub fn compacted_key() -> String {
    format!("{DUTIES_PREFIX}compaction-target")
}

/// Campaigns for the compaction duty forever as `candidate`, compacting
/// while elected. Never returns; abort the task to stop.
pub async fn run_compaction(
    store: Arc<dyn Store>,
    candidate: String,
    cfg: CompactionConfig,
    metrics: Arc<Metrics>,
) {
    let election = Election::new(store.clone(), compaction_key(), candidate.clone(), cfg.ttl);
    let span = info_span!("duty", name = "compaction", %candidate);
    hold_forever(election, cfg.ttl, |lead| {
        let (store, cfg, metrics) = (&store, &cfg, &metrics);
        async move {
            metrics.duty_leader.store(1, Relaxed);
            Metrics::inc(&metrics.duty_terms_total);
            let why = compact_while_leading(&**store, lead, cfg, metrics).await;
            metrics.duty_leader.store(0, Relaxed);
            why
        }
    })
    .instrument(span)
    .await
}

/// Campaigns forever: each time elected, runs `work` with the leadership
/// until it returns (why it gave the duty up), then campaigns again.
pub async fn hold_forever<F, Fut>(election: Election, ttl: Duration, mut work: F)
where
    F: FnMut(Leadership) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    loop {
        let lead = match election.campaign().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "campaign failed; trying again");
                tokio::time::sleep(ttl / 2).await;
                continue;
            }
        };
        let why = work(lead).await;
        warn!(%why, "duty given up; campaigning again");
    }
}

/// Compacts every `every` until the leadership is lost; says why it ended.
async fn compact_while_leading(
    store: &dyn Store,
    mut lead: Leadership,
    cfg: &CompactionConfig,
    metrics: &Metrics,
) -> String {
    info!(term = lead.term(), "holding the compaction duty");
    let mut tick = tokio::time::interval(cfg.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done = 0;
    loop {
        tokio::select! {
            _ = lead.lost() => return "lease lost".into(),
            _ = tick.tick() => {}
        }
        let target = match store.revision().await {
            Ok(rev) => rev.saturating_sub(cfg.keep_revisions),
            Err(e) => {
                warn!(error = %e, "cannot read the store revision");
                continue;
            }
        };
        if target <= done.max(1) {
            continue;
        }
        match compact_once(store, &lead, target).await {
            Ok(()) => {
                done = target;
                Metrics::inc(&metrics.compactions_total);
                metrics.compacted_revision.store(target, Relaxed);
            }
            Err(ElectionError::Lost { .. }) => return "fenced write refused".into(),
            Err(e) => warn!(error = %e, target, "compaction failed"),
        }
    }
}

/// Records `target` under the fence, then compacts to it.
async fn compact_once(
    store: &dyn Store,
    lead: &Leadership,
    target: u64,
) -> Result<(), ElectionError> {
    lead.txn(Txn {
        success: vec![Op::put(compacted_key(), target.to_string())],
        ..Txn::default()
    })
    .await?;
    match store.compact(target).await {
        // Someone (a former holder, an operator) already went further.
        Ok(()) | Err(StoreError::Compacted { .. }) => {
            debug!(target, "compacted");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::store::embedded::EmbeddedStore;

    async fn fill(store: &dyn Store, n: usize) {
        for i in 0..n {
            store
                .put("/stacknet/x", i.to_string().into())
                .await
                .unwrap();
        }
    }

    /// Two replicas run the duty; exactly one compacts, to revision - keep,
    /// and when it stops the other takes over.
    #[tokio::test(start_paused = true)]
    async fn one_replica_compacts_and_the_other_takes_over() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open_in_memory().unwrap());
        let cfg = CompactionConfig {
            keep_revisions: 10,
            every: Duration::from_secs(5),
            ttl: Duration::from_secs(3),
        };
        let (ma, mb) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
        let a = tokio::spawn(run_compaction(
            store.clone(),
            "a".into(),
            cfg.clone(),
            ma.clone(),
        ));
        // b joins once a is elected.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = tokio::spawn(run_compaction(
            store.clone(),
            "b".into(),
            cfg.clone(),
            mb.clone(),
        ));
        fill(&*store, 50).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(ma.duty_leader.load(Relaxed), 1);
        assert_eq!(mb.duty_leader.load(Relaxed), 0);
        assert!(ma.compactions_total.load(Relaxed) >= 1);
        assert_eq!(mb.compactions_total.load(Relaxed), 0);
        let rev = store.revision().await.unwrap();
        let compacted = ma.compacted_revision.load(Relaxed);
        assert!(
            compacted + 10 >= rev - 2 && compacted + 10 <= rev,
            "{compacted} vs {rev}"
        );
        // History before the target is gone; after it, kept.
        assert!(matches!(
            store.watch("/stacknet/", compacted - 1).await,
            Err(StoreError::Compacted { .. })
        ));
        assert!(store.watch("/stacknet/", compacted).await.is_ok());

        // a dies (its task ends, its lease runs out); b takes over.
        a.abort();
        fill(&*store, 30).await;
        tokio::time::sleep(cfg.ttl * 2 + cfg.every * 2).await;
        assert_eq!(mb.duty_leader.load(Relaxed), 1);
        assert!(mb.compactions_total.load(Relaxed) >= 1);
        assert!(mb.compacted_revision.load(Relaxed) > compacted);
        b.abort();
    }
}
