//! One real HTTP server on an ephemeral port.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::http::auth::{self, AuthConfig};
use crate::store::embedded::EmbeddedStore;

/// A reqwest request signed with `creds` over what reqwest will send.
fn signed(
    http: &reqwest::Client,
    creds: &proto::sign::Credentials,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let url = reqwest::Url::parse(url).unwrap();
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let h = proto::sign::authorization(
        creds,
        method.as_str(),
        url.path(),
        url.query().unwrap_or(""),
        &bytes,
        proto::sign::unix_now(),
        &proto::sign::new_nonce(),
    );
    let req = http.request(method, url).header("authorization", h);
    match body {
        Some(_) => req.header("content-type", "application/json").body(bytes),
        None => req,
    }
}

#[tokio::test]
async fn a_real_server_on_port_0() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
    let config = AuthConfig::new(super::MASTER.to_vec());
    let admin = auth::bootstrap(store.as_ref(), &config)
        .await
        .unwrap()
        .unwrap();
    let creds = admin.credentials();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, super::super::router(store, config))
            .await
            .unwrap();
    });
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    use reqwest::Method as M;

    // Unsigned: refused, with the scheme named.
    let r = http.get(format!("{base}/v1/vpcs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], proto::sign::SCHEME);

    let body = json!({"name": "v", "cidrs": ["10.0.0.0/16"]});
    let r = signed(
        &http,
        &creds,
        M::POST,
        &format!("{base}/v1/vpcs"),
        Some(&body),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let vpc: Value = r.json().await.unwrap();
    assert_eq!(loc, format!("/v1/vpcs/{}", vpc["id"].as_str().unwrap()));
    let got: Value = signed(&http, &creds, M::GET, &format!("{base}{loc}"), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, vpc);

    let body = json!({"vpc_id": vpc["id"], "cidr": "10.1.0.0/24"});
    let r = signed(
        &http,
        &creds,
        M::POST,
        &format!("{base}/v1/subnets"),
        Some(&body),
    )
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

    // A query string signs too (sorted and re-encoded on both sides).
    let url = format!("{base}/v1/subnets?vpc_id={}", vpc["id"].as_str().unwrap());
    let r = signed(&http, &creds, M::GET, &url, None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    server.abort();
}
