//! Real `flowctl serve` processes as replicas on a TLS etcd cluster: an
//! API-only replica and an API + agent-distribution replica share the
//! state, and keep working when the etcd leader dies.
//!
//! Needs the flowctl binary of the same target dir and profile:
//! `cargo build -p flowctl && cargo test -p api --test etcd_flowctl_serve -- --ignored`.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::bins::{binary, free_port};
use tests::etcd::EtcdCluster;
use tests::Proc;

fn serve(cluster: &EtcdCluster, name: &str, api: u16, agents: Option<u16>) -> Proc {
    let tls = cluster.tls().unwrap();
    let secret = cluster.dir().join("cluster-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut cmd = Command::new(binary("flowctl").unwrap());
    cmd.arg("serve")
        .args(["--store", &cluster.store_url()])
        .arg("--etcd-ca")
        .arg(&tls.ca)
        .arg("--etcd-cert")
        .arg(&tls.client_cert)
        .arg("--etcd-key")
        .arg(&tls.client_key)
        .args(["--api-listen", &format!("127.0.0.1:{api}")])
        .arg("--cluster-secret-file")
        .arg(&secret)
        .arg("--admin-credentials")
        .arg(creds_file(cluster));
    if let Some(a) = agents {
        cmd.args(["--agent-listen", &format!("127.0.0.1:{a}")]);
    }
    let log = cluster.dir().join(format!("{name}.log"));
    Proc::spawn(name, cmd, Some(&log)).unwrap()
}

/// Where the replica that bootstraps writes the admin's key pair.
fn creds_file(cluster: &EtcdCluster) -> std::path::PathBuf {
    cluster.dir().join("admin-credentials.json")
}

/// A request signed with the admin's key pair (read from its file).
fn signed(
    client: &reqwest::Client,
    cluster: &EtcdCluster,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let raw = std::fs::read(creds_file(cluster)).unwrap();
    let v: Value = serde_json::from_slice(&raw).unwrap();
    let creds = proto::sign::Credentials {
        key_id: v["key_id"].as_str().unwrap().into(),
        secret: v["secret"].as_str().unwrap().into(),
    };
    let u = reqwest::Url::parse(url).unwrap();
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let h = proto::sign::authorization(
        &creds,
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

async fn wait_get(client: &reqwest::Client, url: &str, p: &Proc, cluster: &EtcdCluster) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = if url.contains("/v1/") {
            signed(client, cluster, reqwest::Method::GET, url, None)
        } else {
            client.get(url)
        };
        if let Ok(r) = req.send().await {
            if r.status().is_success() {
                let text = r.text().await.unwrap();
                return serde_json::from_str(&text).unwrap_or(Value::String(text));
            }
        }
        assert!(Instant::now() < deadline, "{url}: {}", p.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(client: &reqwest::Client, base: &str, name: &str, cluster: &EtcdCluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut retried = false;
    loop {
        let body = json!({"name": name, "cidrs": ["10.1.0.0/16"]});
        let url = format!("{base}/v1/vpcs");
        let r = signed(client, cluster, reqwest::Method::POST, &url, Some(&body))
            .send()
            .await;
        match r.map(|r| r.status().as_u16()) {
            Ok(201) => return,
            // An earlier attempt committed without its answer.
            Ok(409) if retried => return,
            Ok(503) | Err(_) => retried = true,
            Ok(s) => panic!("create {name}: {s}"),
        }
        assert!(Instant::now() < deadline, "create {name} never succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names(vpcs: &Value) -> Vec<String> {
    let mut v: Vec<String> = vpcs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the flowctl binary: cargo build -p flowctl"]
async fn two_flowctl_replicas_on_tls_etcd() {
    let mut cluster = EtcdCluster::start_tls(3).unwrap();
    let (api_a, agents_a, api_b) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let a = serve(&cluster, "flowctl-a", api_a, Some(agents_a));
    let b = serve(&cluster, "flowctl-b", api_b, None);
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{api_a}"),
        format!("http://127.0.0.1:{api_b}"),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    wait_get(&client, &format!("{base_a}/healthz"), &a, &cluster).await;
    wait_get(&client, &format!("{base_b}/healthz"), &b, &cluster).await;

    // Written through the API-only replica, seen by the other one and
    // compiled by its distribution service.
    create(&client, &base_b, "one", &cluster).await;
    let rev = wait_get(&client, &format!("{base_b}/healthz"), &b, &cluster).await["revision"]
        .as_u64()
        .unwrap();
    assert_eq!(
        names(&wait_get(&client, &format!("{base_a}/v1/vpcs"), &a, &cluster).await),
        ["one"]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = wait_get(
            &client,
            &format!("http://127.0.0.1:{agents_a}/metrics"),
            &a,
            &cluster,
        )
        .await;
        let compiled = m
            .as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("flowctl_store_revision "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if compiled >= rev {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica a compiled {compiled}, not {rev}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The API-only replica serves no agents.
    let agents_at = format!("agents=127.0.0.1:{agents_a}");
    assert!(a.log_tail(50).contains(&agents_at), "{}", a.log_tail(50));
    assert!(b.log_tail(50).contains("agents=-"), "{}", b.log_tail(50));

    // The etcd leader dies: both replicas carry on.
    let leader = cluster.leader().unwrap();
    cluster.kill_member(leader).unwrap();
    create(&client, &base_a, "two", &cluster).await;
    create(&client, &base_b, "three", &cluster).await;
    for base in [&base_a, &base_b] {
        let p = if base == &base_a { &a } else { &b };
        assert_eq!(
            names(&wait_get(&client, &format!("{base}/v1/vpcs"), p, &cluster).await),
            ["one", "three", "two"]
        );
    }
}
