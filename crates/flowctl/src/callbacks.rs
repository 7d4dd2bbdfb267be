//! The callback duty: delivers the outbox of ended operations
//! ([`api::operation::keys::CALLBACKS_PENDING`]) to their `callback_url`s.
//!
//! One replica at a time holds the duty (a store lease, see
//! [`api::store::election`]); every write it makes is fenced by its term,
//! so a paused former holder cannot overwrite what the new one recorded.
//! The outbox lives in the store: a restarted or new holder continues where
//! the last one stopped, with the attempts counted so far.
//!
//! Each delivery is a POST of the operation's JSON (as `GET
//! /v1/operations/{id}` shows it, without `callback`), signed with the
//! tenant's callback secret ([`api::operation::sign_callback`]), with
//! `Stacknet-Delivery: <operation id>`. A 2xx ends it (`delivered`);
//! anything else, or no answer within the timeout, schedules the next
//! attempt after [`api::operation::Backoff::delay`]. After
//! [`api::operation::GIVE_UP_AFTER`] it is `abandoned`. A holder that loses
//! the lease between a 2xx and recording it leaves the record pending, so
//! the next holder delivers again: at least once, with the delivery header
//! to deduplicate on.

use std::sync::Arc;
use std::time::Duration;

use api::http::auth::AuthConfig;
use api::operation::{keys, Backoff, CallbackState, Delivery, Operation};
use api::store::election::{Election, ElectionError, Leadership, DUTIES_PREFIX};
use api::store::{Compare, KeyValue, Op, Store, Txn};
use futures::StreamExt;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::metrics::Metrics;
use crate::service::Retention;

mod poster;
pub use poster::Poster;

/// Settings of the callback duty.
#[derive(Clone, Debug)]
pub struct CallbackConfig {
    /// How often the holder looks for due callbacks.
    pub poll: Duration,
    pub backoff: Backoff,
    /// How long one POST may take.
    pub timeout: Duration,
    /// The lease TTL: how long a silent holder keeps the duty.
    pub ttl: Duration,
    /// POSTs in flight at once.
    pub concurrency: usize,
    /// CA certificates (PEM) trusted for `https://` receivers besides the
    /// system's.
    pub extra_ca: Option<std::path::PathBuf>,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            poll: Duration::from_millis(500),
            backoff: Backoff::default(),
            timeout: Duration::from_secs(10),
            ttl: Duration::from_secs(10),
            concurrency: 16,
            extra_ca: None,
        }
    }
}

/// The election key of the callback duty.
pub fn callbacks_key() -> String {
    format!("{DUTIES_PREFIX}callbacks")
}

/// Wall-clock milliseconds: the schedule is stored and read by whichever
/// replica holds the duty next, so it cannot be a monotonic instant.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Campaigns for the callback duty forever as `candidate`, delivering
/// while elected. Never returns; abort the task to stop.
pub async fn run_callbacks(
    store: Arc<dyn Store>,
    auth: Arc<AuthConfig>,
    candidate: String,
    cfg: CallbackConfig,
    metrics: Arc<Metrics>,
) {
    let election = Election::new(store.clone(), callbacks_key(), candidate.clone(), cfg.ttl);
    let span = info_span!("duty", name = "callbacks", %candidate);
    async move {
        // Redirects are not followed: a receiver answers, it does not
        // send the delivery elsewhere.
        let http = match Poster::new(cfg.extra_ca.as_deref(), cfg.timeout) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot set up the callback client; no callbacks");
                return std::future::pending().await;
            }
        };
        let (store, auth, http, cfg, metrics) = (&store, &auth, &http, &cfg, &metrics);
        crate::duties::hold_forever(election, cfg.ttl, |lead| {
            deliver_while_leading(store, auth, http, lead, cfg, metrics)
        })
        .await
    }
    .instrument(span)
    .await
}

async fn deliver_while_leading(
    store: &Arc<dyn Store>,
    auth: &AuthConfig,
    http: &Poster,
    mut lead: Leadership,
    cfg: &CallbackConfig,
    metrics: &Metrics,
) -> String {
    info!(term = lead.term(), "holding the callback duty");
    let mut tick = tokio::time::interval(cfg.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = Retention::default();
    loop {
        tokio::select! {
            _ = lead.lost() => return "lease lost".into(),
            _ = tick.tick() => {}
        }
        let due = match store.range(keys::CALLBACKS_PENDING).await {
            Ok((kvs, _)) => {
                let now = now_ms();
                kvs.into_iter()
                    .filter_map(|kv| decode(&kv).map(|d| (kv, d)))
                    .filter(|(_, d)| d.status.next_attempt_at_ms.is_none_or(|t| t <= now))
                    .collect::<Vec<_>>()
            }
            Err(e) => {
                warn!(error = %e, "cannot list the callback outbox");
                continue;
            }
        };
        if due.is_empty() {
            continue;
        }
        let lease = match retention.lease(store.as_ref()).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot get the retention lease");
                continue;
            }
        };
        let lost = futures::stream::iter(due)
            .map(|(kv, d)| {
                deliver(
                    store.as_ref(),
                    auth,
                    http,
                    &lead,
                    cfg,
                    metrics,
                    kv,
                    d,
                    lease,
                )
            })
            .buffer_unordered(cfg.concurrency.max(1))
            .any(|r| async move { matches!(r, Err(ElectionError::Lost { .. })) })
            .await;
        if lost {
            return "fenced write refused".into();
        }
    }
}

fn decode(kv: &KeyValue) -> Option<Delivery> {
    match serde_json::from_slice(&kv.value) {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(key = %kv.key, error = %e, "undecodable callback record ignored");
            None
        }
    }
}

/// The body POSTed: the operation as the API shows it.
async fn body_of(store: &dyn Store, op_id: &str) -> Result<Option<Vec<u8>>, String> {
    let kv = store
        .get(&keys::operation(op_id))
        .await
        .map_err(|e| e.to_string())?;
    let Some(kv) = kv else {
        return Ok(None);
    };
    let mut op: Operation = serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
    op.revision = kv.create_revision;
    op.callback = None;
    serde_json::to_vec(&op).map(Some).map_err(|e| e.to_string())
}

/// One attempt at one callback, and its fenced record.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    store: &dyn Store,
    auth: &AuthConfig,
    http: &Poster,
    lead: &Leadership,
    cfg: &CallbackConfig,
    metrics: &Metrics,
    kv: KeyValue,
    mut d: Delivery,
    lease: api::store::LeaseId,
) -> Result<(), ElectionError> {
    let span = info_span!("callback", op_id = %d.op_id, url = %d.status.url);
    async {
        let outcome = match body_of(store, &d.op_id).await {
            Ok(Some(body)) => attempt(store, auth, http, metrics, &d, body).await,
            // The operation expired before its callback went out.
            Ok(None) => Err("the operation record is gone".to_string()),
            Err(e) => Err(format!("cannot read the operation: {e}")),
        };
        let now = now_ms();
        d.status.attempts += 1;
        match outcome {
            Ok(()) => {
                d.status.state = CallbackState::Delivered;
                d.status.next_attempt_at_ms = None;
                d.status.ended_at_ms = Some(now);
                Metrics::inc(&metrics.callbacks_delivered);
                info!(attempts = d.status.attempts, "callback delivered");
            }
            Err(why) => {
                d.status.last_error = Some(why.clone());
                let give_up = now.saturating_sub(d.status.first_attempt_at_ms)
                    >= api::operation::GIVE_UP_AFTER.as_millis() as u64;
                if give_up {
                    d.status.state = CallbackState::Abandoned;
                    d.status.next_attempt_at_ms = None;
                    d.status.ended_at_ms = Some(now);
                    warn!(attempts = d.status.attempts, error = %why, "callback abandoned");
                } else {
                    let wait = cfg.backoff.delay(d.status.attempts);
                    d.status.next_attempt_at_ms = Some(now + wait.as_millis() as u64);
                    debug!(attempts = d.status.attempts, error = %why, wait_ms = wait.as_millis() as u64, "callback failed; retrying later");
                }
            }
        }
        record(lead, &kv, &d, lease).await
    }
    .instrument(span)
    .await
}

/// POSTs the signed body; `Err` says what went wrong.
async fn attempt(
    store: &dyn Store,
    auth: &AuthConfig,
    http: &Poster,
    metrics: &Metrics,
    d: &Delivery,
    body: Vec<u8>,
) -> Result<(), String> {
    let secret = api::http::operations::callback_secret(store, auth, &d.tenant_id)
        .await
        .map_err(|p| format!("cannot read the tenant's callback secret: {}", p.detail))?;
    let signature = api::operation::sign_callback(&secret.secret, proto::sign::unix_now(), &body);
    Metrics::inc(&metrics.callback_attempts);
    let status = http
        .post(
            &d.status.url,
            &[
                ("content-type", "application/json"),
                (api::operation::SIGNATURE_HEADER, &signature),
                (api::operation::DELIVERY_HEADER, &d.op_id),
            ],
            body,
        )
        .await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the receiver answered HTTP {status}"))
    }
}

/// Records an attempt: still pending (updated in place), or ended (moved
/// to the done records, on the retention lease). Fenced by the record as
/// read and by the term.
async fn record(
    lead: &Leadership,
    kv: &KeyValue,
    d: &Delivery,
    lease: api::store::LeaseId,
) -> Result<(), ElectionError> {
    // Serializing these plain fields cannot fail.
    let value = serde_json::to_vec(d).unwrap_or_default();
    let mut txn = Txn {
        compare: vec![Compare::mod_revision_is(kv.key.clone(), kv.mod_revision)],
        ..Txn::default()
    };
    if d.status.state == CallbackState::Pending {
        txn.success.push(Op::put(kv.key.clone(), value));
    } else {
        txn.success.push(Op::delete(kv.key.clone()));
        txn.success.push(Op::Put {
            key: keys::callback_done(&d.op_id),
            value,
            lease,
        });
    }
    let r = lead.txn(txn).await?;
    if !r.succeeded {
        // Changed under us (only another holder writes it): it re-plans.
        warn!(op_id = %d.op_id, "callback record changed meanwhile; attempt not recorded");
    }
    Ok(())
}
