//! The etcd v3 backend of the [`Store`]: the same semantics as the embedded
//! store (etcd's are the model), kept HA by an etcd cluster.
//!
//! - Every operation maps to one etcd RPC (a listing to one RPC per page,
//!   all at the revision of the first page), so revisions, versions,
//!   lease ids and compare results are etcd's own.
//! - Endpoints: one gRPC channel per member; requests go to a preferred
//!   member and move to the next one when it fails (connection refused,
//!   timeout, "no leader": every request carries etcd's `hasleader`
//!   requirement, so a member cut off from the quorum refuses instead of
//!   answering stale). HTTP/2 keepalives notice a silent peer.
//! - Retries: reads, lease calls and compaction retry on another member
//!   within [`EtcdOptions::retry_window`]. A write transaction is retried
//!   only when etcd said it did nothing; when the outcome is unknown
//!   (timeout, connection lost after sending) it fails with
//!   [`StoreError::Unavailable`] and the caller decides, since running a
//!   transaction twice is not the same as running it once.
//! - Watches survive member loss: the watch task reconnects to another
//!   member and resumes after the last revision it delivered, so the
//!   stream has no gap and no duplicate; only compaction ends it, with
//!   [`StoreError::Compacted`].
//! - TLS: a CA to trust, optionally a client certificate (etcd's
//!   `--client-cert-auth`).
//! - A namespace (key prefix) lets several installations share a cluster.

mod convert;
mod watch;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as ec;
use tracing::{debug, warn};

use self::convert::{rev_in, rev_out, Failure, Namespace};
use super::{KeyValue, LeaseId, Result, Revision, Store, StoreError, Txn, TxnResult, WatchStream};

/// Keys per page of a listing; pages keep each response far below gRPC's
/// message size limit.
const RANGE_PAGE: i64 = 1000;
/// Largest response accepted (a page of big values, a big txn result).
const MAX_MESSAGE: usize = 64 << 20;

/// TLS to the etcd members.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// PEM of the CA that signed the members' server certificates.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate and key, for clusters that check clients.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server certificate against, if not the
    /// endpoint's host.
    pub domain: Option<String>,
}

impl EtcdTls {
    /// Reads the CA and, if given, the client certificate and key files.
    pub fn from_files(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<EtcdTls> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| {
                StoreError::Unavailable(format!("cannot read etcd TLS file {}: {e}", p.display()))
            })
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(StoreError::Unavailable(
                    "an etcd client certificate needs its key and the other way round".into(),
                ))
            }
        };
        Ok(EtcdTls {
            ca_pem: read(ca)?,
            identity,
            domain: None,
        })
    }
}

/// How to reach the cluster.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs of the members: `host:port`, `http://host:port` or
    /// `https://host:port` (no scheme: https with TLS, else http).
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    /// Prepended to every key in etcd and removed from every key read.
    pub namespace: String,
    /// One attempt of one request.
    pub request_timeout: Duration,
    /// How long a retryable request keeps trying members.
    pub retry_window: Duration,
    pub connect_timeout: Duration,
    /// HTTP/2 pings while a stream (a watch, a request) is open, so a peer
    /// that went silent (no reset) is noticed. etcd sends GOAWAY to
    /// clients that ping more often than its `--grpc-keepalive-min-time`
    /// (5 s by default) or while idle, so neither is done.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["127.0.0.1:2379".into()],
            tls: None,
            namespace: String::new(),
            request_timeout: Duration::from_secs(5),
            retry_window: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdOptions {
    /// Options for `etcd://host:port[,host:port...]` (the `--store` form).
    pub fn from_url(url: &str) -> Result<EtcdOptions> {
        let Some(list) = url.strip_prefix("etcd://") else {
            return Err(StoreError::Unavailable(format!(
                "{url:?} is not an etcd://host:port[,host:port...] URL"
            )));
        };
        let endpoints: Vec<String> = list
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "{url:?} names no etcd endpoint"
            )));
        }
        Ok(EtcdOptions {
            endpoints,
            ..EtcdOptions::default()
        })
    }
}

/// One member's channel and the clients on it.
struct Member {
    url: String,
    kv: ec::KvClient,
    watch: ec::WatchClient,
    lease: ec::LeaseClient,
}

struct Inner {
    members: Vec<Member>,
    /// Index of the member requests go to first.
    preferred: AtomicUsize,
    ns: Namespace,
    opts: EtcdOptions,
}

/// Whether a request may be sent again when its outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Reads, keep-alives, compaction: repeating them changes nothing.
    Always,
    /// Writes: only when etcd said the request did nothing.
    IfNotApplied,
}

/// How a call to etcd failed: the definite answers callers tell apart,
/// or the store error to return.
#[derive(Debug)]
enum CallError {
    LeaseNotFound,
    Compacted,
    FutureRevision,
    Store(StoreError),
}

impl From<CallError> for StoreError {
    /// Without context: callers that know the lease or revision fill it in.
    fn from(e: CallError) -> Self {
        match e {
            CallError::LeaseNotFound => StoreError::LeaseNotFound(0),
            CallError::Compacted => StoreError::Compacted {
                requested: 0,
                compact_revision: 0,
            },
            CallError::FutureRevision => {
                StoreError::Unavailable("etcd: the revision is in the future".into())
            }
            CallError::Store(e) => e,
        }
    }
}

/// A [`Store`] on an etcd v3 cluster. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.members.iter().map(|m| m.url.as_str()).collect();
        f.debug_struct("EtcdStore")
            .field("endpoints", &urls)
            .field("namespace", &self.inner.opts.namespace)
            .finish()
    }
}

/// `scheme://host:port` for an endpoint as configured.
fn endpoint_url(endpoint: &str, tls: bool) -> Result<String> {
    let url = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    };
    if tls && url.starts_with("http://") {
        return Err(StoreError::Unavailable(format!(
            "etcd endpoint {endpoint} is plain http but TLS is configured"
        )));
    }
    if !tls && url.starts_with("https://") {
        return Err(StoreError::Unavailable(format!(
            "etcd endpoint {endpoint} is https but no TLS CA is configured"
        )));
    }
    Ok(url)
}

impl EtcdStore {
    /// Sets up a channel per endpoint. Connections are made on first use,
    /// so this succeeds while the cluster is down; see [`EtcdStore::ping`].
    pub async fn connect(opts: EtcdOptions) -> Result<EtcdStore> {
        if opts.endpoints.is_empty() {
            return Err(StoreError::Unavailable("no etcd endpoint given".into()));
        }
        let mut members = Vec::new();
        for ep in &opts.endpoints {
            let url = endpoint_url(ep, opts.tls.is_some())?;
            let bad = |e: &dyn std::fmt::Display| {
                StoreError::Unavailable(format!("etcd endpoint {url}: {e}"))
            };
            let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| bad(&e))?
                .connect_timeout(opts.connect_timeout)
                .http2_keep_alive_interval(opts.keepalive_interval)
                .keep_alive_timeout(opts.keepalive_timeout)
                .keep_alive_while_idle(false)
                .tcp_nodelay(true);
            if let Some(tls) = &opts.tls {
                let mut cfg =
                    ec::TlsOptions::new().ca_certificate(ec::Certificate::from_pem(&tls.ca_pem));
                if let Some((cert, key)) = &tls.identity {
                    cfg = cfg.identity(ec::Identity::from_pem(cert, key));
                }
                if let Some(domain) = &tls.domain {
                    cfg = cfg.domain_name(domain.clone());
                }
                endpoint = endpoint.tls_config(cfg).map_err(|e| bad(&e))?;
            }
            let channel = endpoint.connect_lazy();
            let client = ec::Client::from_channel(
                ec::Channel::Tonic(channel),
                Some(ec::ConnectOptions::new().with_require_leader(true)),
            )
            .await
            .map_err(|e| bad(&e))?;
            members.push(Member {
                url,
                kv: client
                    .kv_client()
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
                watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
                lease: client.lease_client(),
            });
        }
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                members,
                preferred: AtomicUsize::new(0),
                ns: Namespace::new(&opts.namespace),
                opts,
            }),
        })
    }

    /// Connects and checks that the cluster answers (a linearizable read).
    pub async fn connect_and_check(opts: EtcdOptions) -> Result<EtcdStore> {
        let store = EtcdStore::connect(opts).await?;
        store.ping().await?;
        Ok(store)
    }

    /// The current revision, as a health check.
    pub async fn ping(&self) -> Result<Revision> {
        self.revision().await
    }

    /// The endpoint requests go to first right now.
    pub fn preferred_endpoint(&self) -> &str {
        let i = self.inner.preferred.load(Ordering::Relaxed) % self.inner.members.len();
        &self.inner.members[i].url
    }

    fn ns(&self) -> &Namespace {
        &self.inner.ns
    }

    /// Prefers the member after `i` (if `i` is still the preferred one).
    fn skip_member(&self, i: usize) {
        let inner = &*self.inner;
        let n = inner.members.len();
        if n > 1
            && inner
                .preferred
                .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            debug!(from = %inner.members[i].url, to = %inner.members[(i + 1) % n].url, "preferring another etcd member");
        }
    }

    /// Runs `f` against the preferred member, moving to the next member
    /// and trying again as `retry` allows, until the retry window closes.
    async fn call<T, F, Fut>(&self, what: &'static str, retry: Retry, f: F) -> Result<T, CallError>
    where
        F: FnMut(&Member) -> Fut,
        Fut: Future<Output = std::result::Result<T, ec::Error>>,
    {
        self.call_on(what, retry, f).await.map(|(_, v)| v)
    }

    /// [`EtcdStore::call`], also saying which member answered.
    async fn call_on<T, F, Fut>(
        &self,
        what: &'static str,
        retry: Retry,
        mut f: F,
    ) -> Result<(usize, T), CallError>
    where
        F: FnMut(&Member) -> Fut,
        Fut: Future<Output = std::result::Result<T, ec::Error>>,
    {
        let inner = &*self.inner;
        let deadline = tokio::time::Instant::now() + inner.opts.retry_window;
        let n = inner.members.len();
        let mut attempt: u32 = 0;
        loop {
            let i = inner.preferred.load(Ordering::Relaxed) % n;
            let member = &inner.members[i];
            let failure = match tokio::time::timeout(inner.opts.request_timeout, f(member)).await {
                Ok(Ok(v)) => return Ok((i, v)),
                Ok(Err(e)) => convert::classify(&e),
                Err(_) => {
                    Failure::Unknown(format!("no answer within {:?}", inner.opts.request_timeout))
                }
            };
            let (retryable, detail) = match failure {
                Failure::NotApplied(d) => (true, d),
                Failure::Unknown(d) => (retry == Retry::Always, d),
                Failure::LeaseNotFound => return Err(CallError::LeaseNotFound),
                Failure::Compacted => return Err(CallError::Compacted),
                Failure::FutureRevision => return Err(CallError::FutureRevision),
                Failure::Rejected(d) => {
                    return Err(CallError::Store(StoreError::Unavailable(format!(
                        "etcd refused {what}: {d}"
                    ))))
                }
            };
            // Whatever went wrong, this member is suspect: prefer the next.
            if n > 1
                && inner
                    .preferred
                    .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                warn!(endpoint = %member.url, next = %inner.members[(i + 1) % n].url, error = %detail, what, "etcd member failed; switching");
            }
            if !retryable {
                return Err(CallError::Store(StoreError::Unavailable(format!(
                    "etcd {what} at {}: outcome unknown: {detail}",
                    member.url
                ))));
            }
            attempt += 1;
            // A full round over the members without luck: wait a little
            // (an election takes about a second).
            let rounds = attempt / n as u32;
            let pause = if attempt.is_multiple_of(n as u32) {
                Duration::from_millis((50u64 << rounds.min(4)).min(500))
            } else {
                Duration::ZERO
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(CallError::Store(StoreError::Unavailable(format!(
                    "etcd {what}: no member answered within {:?}; last error at {}: {detail}",
                    inner.opts.retry_window, member.url
                ))));
            }
            debug!(endpoint = %member.url, attempt, what, error = %detail, "etcd request failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// The current revision (a linearizable read).
    async fn current_revision(&self) -> Result<Revision> {
        // Any key will do: the header carries the store's revision.
        let k = self.ns().key("");
        let k = if k.is_empty() { vec![0] } else { k };
        let resp = self
            .call("revision", Retry::Always, |m| {
                let mut kv = m.kv.clone();
                let k = k.clone();
                async move {
                    kv.get(k, Some(ec::GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(rev_in(resp.header().map_or(0, |h| h.revision())))
    }

    /// One page of a range read.
    async fn range_page(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        revision: i64,
    ) -> Result<ec::GetResponse, CallError> {
        self.call("range", Retry::Always, |m| {
            let mut kv = m.kv.clone();
            let opts = ec::GetOptions::new()
                .with_range(end.clone())
                .with_limit(RANGE_PAGE)
                .with_revision(revision);
            let start = start.clone();
            async move { kv.get(start, Some(opts)).await }
        })
        .await
    }

    async fn range_once(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), CallError> {
        let (mut start, end) = self.ns().prefix_range(prefix);
        let mut pinned = 0i64;
        let mut out = Vec::new();
        loop {
            let resp = self.range_page(start.clone(), end.clone(), pinned).await?;
            if pinned == 0 {
                pinned = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                out.push(convert::kv_in(self.ns(), kv).map_err(CallError::Store)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // Next page: right after the last key, same revision.
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((out, rev_in(pinned))),
            }
        }
    }

    async fn compact_to(&self, revision: Revision) -> Result<(), CallError> {
        self.call("compact", Retry::Always, |m| {
            let mut kv = m.kv.clone();
            async move { kv.compact(rev_out(revision), None).await }
        })
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let k = self.ns().key(key);
        let resp = self
            .call("get", Retry::Always, |m| {
                let mut kv = m.kv.clone();
                let k = k.clone();
                async move { kv.get(k, None).await }
            })
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(convert::kv_in(self.ns(), kv)?)),
            None => Ok(None),
        }
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        // A page at the pinned revision can meet a compaction; start over
        // at the new present then.
        for _ in 0..5 {
            match self.range_once(prefix).await {
                Err(CallError::Compacted) => {
                    debug!(prefix, "listing overtaken by a compaction; listing again");
                }
                other => return other.map_err(StoreError::from),
            }
        }
        Err(StoreError::Unavailable(format!(
            "listing {prefix} kept being overtaken by compactions"
        )))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let req = convert::txn_out(self.ns(), &txn);
        let retry = if convert::is_read_only(&txn) {
            Retry::Always
        } else {
            Retry::IfNotApplied
        };
        let resp = self
            .call("txn", retry, |m| {
                let mut kv = m.kv.clone();
                let req = req.clone();
                async move { kv.txn(req).await }
            })
            .await
            .map_err(|e| match e {
                CallError::LeaseNotFound => StoreError::LeaseNotFound(convert::txn_lease(&txn)),
                e => e.into(),
            })?;
        let results = resp
            .op_responses()
            .iter()
            .map(|r| convert::op_result_in(self.ns(), r))
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: rev_in(resp.header().map_or(0, |h| h.revision())),
            results,
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        watch::start(self.clone(), prefix, from).await
    }

    async fn revision(&self) -> Result<Revision> {
        self.current_revision().await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        // etcd counts whole seconds (and raises tiny TTLs to its minimum).
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        // A retried grant can leave an unused lease behind; it expires.
        let resp = self
            .call("lease grant", Retry::Always, |m| {
                let mut lease = m.lease.clone();
                async move { lease.grant(secs, None).await }
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Unavailable(format!(
                "etcd lease grant: {}",
                resp.error()
            )));
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.call("lease keep-alive", Retry::Always, |m| {
            let mut client = m.lease.clone();
            // One request and its answer; the stream closes on drop.
            async move { client.keep_alive(lease).await.map(|_| ()) }
        })
        .await
        .map_err(|e| match e {
            CallError::LeaseNotFound => StoreError::LeaseNotFound(lease),
            e => e.into(),
        })
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.call("lease revoke", Retry::IfNotApplied, |m| {
            let mut client = m.lease.clone();
            async move { client.revoke(lease).await.map(|_| ()) }
        })
        .await
        .map_err(|e| match e {
            CallError::LeaseNotFound => StoreError::LeaseNotFound(lease),
            e => e.into(),
        })
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.compact_to(revision).await {
            Ok(()) => Ok(()),
            // Already compacted further: nothing to do, as in the embedded store.
            Err(CallError::Compacted) => Ok(()),
            // Like the embedded store, history can not start after the present.
            Err(CallError::FutureRevision) => {
                let now = self.current_revision().await?;
                match self.compact_to(revision.min(now)).await {
                    Ok(()) | Err(CallError::Compacted) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}
