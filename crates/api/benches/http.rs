//! REST API throughput over real HTTP on 127.0.0.1 with the embedded store:
//! N concurrent clients (64 by default), each with its own connection,
//! first reading one VPC (`GET /v1/vpcs/{id}`) in a loop, then creating
//! VPCs (`POST /v1/vpcs`, five keys in one transaction), then creating
//! NICs (`POST /v1/nics`, answered 202 with an operation written in the
//! same transaction; each client in a subnet of its own). Prints
//! requests/s and latency percentiles for each phase.
//!
//! `cargo bench -p api --bench http`; knobs: HTTP_BENCH_CLIENTS,
//! HTTP_BENCH_SECS, HTTP_BENCH_DIR (where the database file goes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::http::auth::{self, AuthConfig};
use api::store::embedded::EmbeddedStore;
use api::store::Store;
use serde_json::{json, Value};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One client: its own connection, signing with the bootstrap key.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    creds: proto::sign::Credentials,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), reqwest::Error> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let url = reqwest::Url::parse(&format!("{}{path}", self.base)).expect("valid url");
        let header = proto::sign::authorization(
            &self.creds,
            method.as_str(),
            url.path(),
            url.query().unwrap_or(""),
            &bytes,
            proto::sign::unix_now(),
            &proto::sign::new_nonce(),
        );
        let mut req = self
            .http
            .request(method, url)
            .header("authorization", header);
        if body.is_some() {
            req = req.header("content-type", "application/json").body(bytes);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        Ok((status, body))
    }
}

struct Phase {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn run_phase<F, Fut>(clients: &[Client], secs: u64, f: F) -> Phase
where
    F: Fn(Client, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = vec![];
    for (i, c) in clients.iter().enumerate() {
        let (c, f) = (c.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut lat) = (0u64, 0u64, vec![]);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if f(c.clone(), (i as u64) << 32 | n).await {
                    ok += 1;
                } else {
                    failed += 1;
                }
                lat.push(t.elapsed());
                n += 1;
            }
            (ok, failed, lat)
        }));
    }
    let mut phase = Phase {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: vec![],
    };
    for t in tasks {
        let (ok, failed, lat) = t.await.expect("client task");
        phase.ok += ok;
        phase.failed += failed;
        phase.latencies.extend(lat);
    }
    phase.elapsed = start.elapsed();
    phase.latencies.sort();
    phase
}

fn report(what: &str, clients: usize, p: &Phase) {
    println!(
        "{what:<8} clients={clients} ok={} failed={} {:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms",
        p.ok,
        p.failed,
        p.ok as f64 / p.elapsed.as_secs_f64(),
        percentile(&p.latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&p.latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&p.latencies, 1.0).as_secs_f64() * 1e3,
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n_clients = env_or("HTTP_BENCH_CLIENTS", 64) as usize;
    let secs = env_or("HTTP_BENCH_SECS", 5);
    let dir = match std::env::var_os("HTTP_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let store = EmbeddedStore::open(&dir.path().join("bench.redb"))?;
        let shared: Arc<dyn Store> = Arc::new(store.clone());
        let config = AuthConfig::new(b"bench-master-secret-0123456789".to_vec());
        let admin = auth::bootstrap(shared.as_ref(), &config)
            .await
            .map_err(|p| p.detail)?
            .ok_or("the store already had an admin")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = api::http::router(shared, config);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let clients: Vec<Client> = (0..n_clients)
            .map(|_| {
                Ok(Client {
                    // One connection per client, as 64 separate callers.
                    http: reqwest::Client::builder()
                        .pool_max_idle_per_host(1)
                        .build()?,
                    base: base.clone(),
                    creds: admin.credentials(),
                })
            })
            .collect::<Result<_, reqwest::Error>>()?;
        let c0 = clients[0].clone();
        let (status, _) = c0
            .send(
                reqwest::Method::POST,
                "/v1/vpcs",
                Some(&json!({"name": "bench-read", "cidrs": ["10.0.0.0/16"]})),
            )
            .await?;
        if status != 201 {
            return Err(format!("setup create answered {status}").into());
        }
        let list: Value = {
            let url = format!("{base}/v1/vpcs");
            let u = reqwest::Url::parse(&url)?;
            let h = proto::sign::authorization(
                &c0.creds,
                "GET",
                u.path(),
                "",
                b"",
                proto::sign::unix_now(),
                &proto::sign::new_nonce(),
            );
            c0.http
                .get(u)
                .header("authorization", h)
                .send()
                .await?
                .json()
                .await?
        };
        let id = list[0]["id"].as_str().ok_or("no VPC listed")?.to_string();
        let path = Arc::new(format!("/v1/vpcs/{id}"));

        let reads = run_phase(&clients, secs, move |c, _| {
            let path = path.clone();
            async move {
                c.send(reqwest::Method::GET, &path, None)
                    .await
                    .is_ok_and(|(s, _)| s == 200)
            }
        })
        .await;
        report("reads", n_clients, &reads);

        let creates = run_phase(&clients, secs, move |c, n| async move {
            let body = json!({"name": format!("v{n:x}"), "cidrs": ["10.0.0.0/16"]});
            c.send(reqwest::Method::POST, "/v1/vpcs", Some(&body))
                .await
                .is_ok_and(|(s, _)| s == 201)
        })
        .await;
        report("creates", n_clients, &creates);

        // One /20 per client in a /10 VPC: NIC creates contend only on
        // the VPC's MAC index and the default group's guard, as 64
        // tenants' automation would.
        let (_, vpc) = c0
            .send(
                reqwest::Method::POST,
                "/v1/vpcs",
                Some(&json!({"name": "bench-nics", "cidrs": ["10.64.0.0/10"]})),
            )
            .await?;
        let vpc: Value = serde_json::from_slice(&vpc)?;
        let mut subnets = vec![];
        for i in 0..n_clients {
            let cidr = format!("10.{}.{}.0/20", 64 + i / 16, (i % 16) * 16);
            let (status, sn) = c0
                .send(
                    reqwest::Method::POST,
                    "/v1/subnets",
                    Some(&json!({"vpc_id": vpc["id"], "cidr": cidr})),
                )
                .await?;
            // 202: an operation whose target is the subnet.
            if status != 202 {
                return Err(format!("subnet {cidr}: {status}").into());
            }
            let op: Value = serde_json::from_slice(&sn)?;
            let id = op["target"]["id"].as_str().ok_or("no subnet id")?;
            subnets.push(id.to_string());
        }
        let subnets = Arc::new(subnets);
        let nics = run_phase(&clients, secs, move |c, n| {
            let subnet = subnets[(n >> 32) as usize % subnets.len()].clone();
            async move {
                let body = json!({ "subnet_id": subnet });
                c.send(reqwest::Method::POST, "/v1/nics", Some(&body))
                    .await
                    .is_ok_and(|(s, _)| s == 202)
            }
        })
        .await;
        report("nics", n_clients, &nics);
        server.abort();
        store.close().await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
