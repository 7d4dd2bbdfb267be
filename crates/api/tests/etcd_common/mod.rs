//! Shared by the etcd replica tests and the `etcd_leader_loss` example:
//! API replicas (each its own etcd client and HTTP server on 127.0.0.1),
//! and a load of creates with retries across an etcd leader kill.

#![allow(dead_code, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::http::auth::{self, AuthConfig};
use api::store::etcd::{EtcdOptions, EtcdStore};
use proto::sign::Credentials;
use serde_json::{json, Value};
use tests::etcd::EtcdCluster;

/// One API replica: what `flowctl serve --store etcd://.. --api-listen ..`
/// runs, in this process but with its own store client and socket.
pub struct Replica {
    pub base: String,
    pub store: EtcdStore,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replica {
    pub async fn start(cluster: &EtcdCluster, first: usize) -> Replica {
        // Each replica prefers a different member, as replicas on
        // different machines would.
        let mut endpoints = cluster.endpoints();
        let n = endpoints.len();
        endpoints.rotate_left(first % n);
        let store = EtcdStore::connect_and_check(EtcdOptions {
            endpoints,
            ..EtcdOptions::default()
        })
        .await
        .expect("etcd answers");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // The first replica of a cluster makes the admin; every replica's
        // requests are signed with its key.
        let config = AuthConfig::new(MASTER.to_vec());
        let cluster_id = cluster.store_url();
        if let Some(admin) = auth::bootstrap(&store, &config).await.unwrap() {
            creds().insert(cluster_id.clone(), admin.credentials());
        }
        let c = creds()[&cluster_id].clone();
        creds().insert(base.clone(), c);
        let app = api::http::router(Arc::new(store.clone()), config);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Replica { base, store, task }
    }
}

const MASTER: &[u8] = b"etcd-test-master-secret-0123";

/// Key pairs by cluster (store URL) and by replica base URL.
fn creds() -> std::sync::MutexGuard<'static, BTreeMap<String, Credentials>> {
    static CREDS: Mutex<BTreeMap<String, Credentials>> = Mutex::new(BTreeMap::new());
    CREDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// `client.request(method, url)` signed as the admin of the replica at
/// the start of `url`.
pub fn signed(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let u = reqwest::Url::parse(url).unwrap();
    let base = format!("{}://{}", u.scheme(), u.authority());
    let c = creds()
        .get(&base)
        .cloned()
        .unwrap_or_else(|| panic!("no credentials for {base}"));
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let h = proto::sign::authorization(
        &c,
        method.as_str(),
        u.path(),
        u.query().unwrap_or(""),
        &bytes,
        proto::sign::unix_now(),
        &proto::sign::new_nonce(),
    );
    let req = client.request(method, u).header("authorization", h);
    match body {
        Some(_) => req.header("content-type", "application/json").body(bytes),
        None => req,
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs `body` to `url`: the status and JSON body, or the transport error.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let resp = signed(client, reqwest::Method::POST, url, Some(body))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

pub async fn get(client: &reqwest::Client, url: &str) -> Value {
    let resp = signed(client, reqwest::Method::GET, url, None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    resp.json().await.unwrap()
}

/// What the leader-loss load saw.
#[derive(Debug)]
pub struct LeaderLoss {
    /// Names answered 201.
    pub acked: BTreeSet<String>,
    /// Names whose retry met 409: an earlier attempt (outcome unknown to
    /// the client) had committed.
    pub committed_unacked: BTreeSet<String>,
    /// Attempts answered 503 or lost (timeout, connection), then retried.
    pub retries: u64,
    /// Longest time between two consecutive acknowledgements around the
    /// kill: how long no write got through.
    pub window: Duration,
    /// From the kill to the first acknowledgement of a request sent after it.
    pub first_new_ack: Duration,
    /// The slowest acknowledged request (sent before the kill, answered
    /// after the election).
    pub slowest: Duration,
    pub killed: usize,
    pub total: Duration,
}

#[derive(Default)]
struct Log {
    acked: BTreeSet<String>,
    committed_unacked: BTreeSet<String>,
    retries: u64,
    /// (sent, answered) of every 201.
    acks: Vec<(Instant, Instant)>,
    errors: Vec<String>,
}

/// `workers` tasks create VPCs with unique names through `replicas` in
/// turn (a retry goes to the other replica), retrying 503s and lost
/// requests; the etcd leader is SIGKILLed after `kill_after`; creating
/// stops at `run_for`. Then every name must exist exactly once.
pub async fn leader_loss(
    cluster: &mut EtcdCluster,
    replicas: &[Replica],
    workers: usize,
    kill_after: Duration,
    run_for: Duration,
) -> LeaderLoss {
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let log = Arc::new(Mutex::new(Log::default()));
    let start = Instant::now();
    let stop = start + run_for;
    let client = http();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (bases, log, client) = (bases.clone(), log.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                let name = format!("w{w}-{i}");
                i += 1;
                let body = json!({"name": name, "cidrs": ["10.0.0.0/16"]});
                let mut attempt = 0usize;
                loop {
                    let base = &bases[(w + attempt) % bases.len()];
                    let sent = Instant::now();
                    let r = post(&client, &format!("{base}/v1/vpcs"), &body).await;
                    let done = {
                        let mut log = log.lock().unwrap();
                        match r {
                            Ok((201, _)) => {
                                log.acked.insert(name.clone());
                                log.acks.push((sent, Instant::now()));
                                true
                            }
                            Ok((409, _)) if attempt > 0 => {
                                log.committed_unacked.insert(name.clone());
                                true
                            }
                            Ok((503, _)) | Err(_) => {
                                log.retries += 1;
                                false
                            }
                            Ok((status, body)) => {
                                log.errors.push(format!("{name}: {status} {body}"));
                                true
                            }
                        }
                    };
                    if done {
                        break;
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tokio::time::sleep(kill_after).await;
    let killed = cluster.leader().expect("a leader");
    let kill_at = Instant::now();
    cluster.kill_member(killed).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let total = start.elapsed();
    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();
    assert!(
        log.errors.is_empty(),
        "unexpected answers: {:?}",
        log.errors
    );

    // Around the kill: the longest stretch without an acknowledgement.
    let mut answered: Vec<Instant> = log.acks.iter().map(|(_, a)| *a).collect();
    answered.sort();
    let from = kill_at - Duration::from_millis(500);
    let mut window = Duration::ZERO;
    let mut prev = from;
    for a in answered.iter().filter(|a| **a >= from) {
        window = window.max(a.duration_since(prev));
        prev = *a;
    }
    let first_new_ack = log
        .acks
        .iter()
        .filter(|(s, _)| *s >= kill_at)
        .map(|(_, a)| a.duration_since(kill_at))
        .min()
        .unwrap_or(run_for);
    let slowest = log
        .acks
        .iter()
        .map(|(s, a)| a.duration_since(*s))
        .max()
        .unwrap_or_default();
    LeaderLoss {
        acked: log.acked,
        committed_unacked: log.committed_unacked,
        retries: log.retries,
        window,
        first_new_ack,
        slowest,
        killed,
        total,
    }
}

/// Every created name exists exactly once, and nothing else exists.
pub async fn check_no_loss_no_duplicate(replica: &Replica, report: &LeaderLoss) {
    let vpcs = get(&http(), &format!("{}/v1/vpcs", replica.base)).await;
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for v in vpcs.as_array().unwrap() {
        *by_name
            .entry(v["name"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for name in report.acked.iter().chain(&report.committed_unacked) {
        assert_eq!(
            by_name.get(name),
            Some(&1),
            "{name} must exist exactly once"
        );
    }
    let expected: BTreeSet<&String> = report
        .acked
        .iter()
        .chain(&report.committed_unacked)
        .collect();
    let extra: Vec<&String> = by_name.keys().filter(|n| !expected.contains(n)).collect();
    assert!(extra.is_empty(), "VPCs nobody was told about: {extra:?}");
    assert!(by_name.values().all(|c| *c == 1), "duplicated names");
}
