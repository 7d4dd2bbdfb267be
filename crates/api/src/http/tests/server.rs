//! One real HTTP server on an ephemeral port.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::store::embedded::EmbeddedStore;

#[tokio::test]
async fn a_real_server_on_port_0() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, super::super::router(store))
            .await
            .unwrap();
    });
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{base}/v1/vpcs"))
        .json(&json!({"name": "v", "cidrs": ["10.0.0.0/16"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let vpc: Value = r.json().await.unwrap();
    assert_eq!(loc, format!("/v1/vpcs/{}", vpc["id"].as_str().unwrap()));
    let got: Value = http
        .get(format!("{base}{loc}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, vpc);

    let r = http
        .post(format!("{base}/v1/subnets"))
        .json(&json!({"vpc_id": vpc["id"], "cidr": "10.1.0.0/24"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "cidr");

    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    server.abort();
}
