//! Idempotency keys: one resource per key, the original answer replayed,
//! clashes refused, across replicas.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{Api, MASTER};
use crate::http::auth::AuthConfig;
use crate::model::keys;
use crate::store::Store;

/// A signed POST with an `Idempotency-Key` (none if `key` is None).
fn post(api: &Api, uri: &str, key: Option<&str>, body: &Value) -> Request<Body> {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut req = api.request(Method::POST, uri, Some("application/json"), &bytes);
    if let Some(k) = key {
        req.headers_mut()
            .insert("idempotency-key", k.parse().unwrap());
    }
    req
}

/// Sends on `app` (a replica), keeping the headers.
async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, body)
}

async fn vpc_count(api: &Api) -> usize {
    api.get("/v1/vpcs").await.ok(200).as_array().unwrap().len()
}

/// A second replica over the same store: its own replay and key caches.
fn replica(api: &Api) -> axum::Router {
    crate::http::router(api.store.clone(), AuthConfig::new(MASTER.to_vec()))
}

#[tokio::test]
async fn same_key_a_hundred_times_makes_one_resource() {
    let api = Api::new().await;
    let body = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    let (status, headers, first) = send(&api.app, post(&api, "/v1/vpcs", Some("k-1"), &body)).await;
    assert_eq!(status, 201, "{first:#}");
    assert!(headers.get("idempotent-replayed").is_none());
    let location = headers["location"].clone();
    for _ in 0..99 {
        let (status, headers, again) =
            send(&api.app, post(&api, "/v1/vpcs", Some("k-1"), &body)).await;
        assert_eq!(status, 201, "{again:#}");
        assert_eq!(again, first, "the original answer, same id");
        assert_eq!(headers["location"], location);
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    assert_eq!(vpc_count(&api).await, 1);
    // Key order and spacing do not make a different request.
    let reordered = br#"{ "cidrs": ["10.0.0.0/16"], "name": "web" }"#;
    let mut req = api.request(
        Method::POST,
        "/v1/vpcs",
        Some("application/json"),
        reordered,
    );
    req.headers_mut()
        .insert("idempotency-key", "k-1".parse().unwrap());
    let (status, _, again) = send(&api.app, req).await;
    assert_eq!((status.as_u16(), &again), (201, &first));
}

#[tokio::test]
async fn same_key_different_body_is_422_and_changes_nothing() {
    let api = Api::new().await;
    let body = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    let (status, _, _) = send(&api.app, post(&api, "/v1/vpcs", Some("k-2"), &body)).await;
    assert_eq!(status, 201);
    let other = json!({"name": "web2", "cidrs": ["10.1.0.0/16"]});
    let before = api.snapshot().await;
    let (status, headers, p) = send(&api.app, post(&api, "/v1/vpcs", Some("k-2"), &other)).await;
    assert_eq!(status, 422, "{p:#}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(p["field"], "Idempotency-Key");
    assert!(p["detail"].as_str().unwrap().contains("different request"));
    assert_eq!(api.snapshot().await, before);
    // The same body on another path is a different request too.
    let sg = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    let (status, _, _) = send(&api.app, post(&api, "/v1/tenants", Some("k-2"), &sg)).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_request_while_the_first_is_in_flight_gets_409() {
    let api = Api::new().await;
    let body = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    // Concurrent duplicates: one resource; every answer is the original or
    // a 409 to retry.
    let reqs: Vec<_> = (0..32)
        .map(|_| post(&api, "/v1/vpcs", Some("k-3"), &body))
        .collect();
    let answers = futures::future::join_all(reqs.into_iter().map(|r| send(&api.app, r))).await;
    let ids: std::collections::BTreeSet<_> = answers
        .iter()
        .filter(|a| a.0 == 201)
        .map(|a| a.2["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    for (status, headers, body) in &answers {
        match status.as_u16() {
            201 => {}
            409 => {
                assert_eq!(body["field"], "Idempotency-Key", "{body:#}");
                assert_eq!(headers["retry-after"], "1");
            }
            s => panic!("unexpected {s}: {body:#}"),
        }
    }
    assert_eq!(vpc_count(&api).await, 1);

    // Deterministically: the marker of a request in flight on another
    // replica (as that replica writes it: the tenant, the key's hash).
    let tenant = api.admin.tenant_id.clone();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"k-4"));
    let lock = format!("{}{tenant}/{hash}", keys::IDEMPOTENCY_LOCK);
    api.store.put(&lock, b"req-other".to_vec()).await.unwrap();
    let b2 = json!({"name": "db", "cidrs": ["10.2.0.0/16"]});
    let (status, headers, p) = send(&api.app, post(&api, "/v1/vpcs", Some("k-4"), &b2)).await;
    assert_eq!(status, 409, "{p:#}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(vpc_count(&api).await, 1);
    // It ends (its lease expires, or it finishes without creating).
    api.store.delete(&lock).await.unwrap();
    let (status, _, _) = send(&api.app, post(&api, "/v1/vpcs", Some("k-4"), &b2)).await;
    assert_eq!(status, 201);
    assert!(api.store.get(&lock).await.unwrap().is_none(), "marker left");
}

#[tokio::test]
async fn a_response_lost_after_commit_and_retried_on_another_replica_gives_one_resource() {
    let api = Api::new().await;
    let b = replica(&api);
    let body = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    // The very same signed request (a client retrying what it sent): the
    // answer from replica A is lost on the way back.
    let bytes = serde_json::to_vec(&body).unwrap();
    let req = post(&api, "/v1/vpcs", Some("k-5"), &body);
    let (parts, _) = req.into_parts();
    let clone = |p: &axum::http::request::Parts| {
        let mut r = Request::builder()
            .method(p.method.clone())
            .uri(p.uri.clone());
        for (k, v) in &p.headers {
            r = r.header(k, v);
        }
        r.body(Body::from(bytes.clone())).unwrap()
    };
    let resp = api.app.clone().oneshot(clone(&parts)).await.unwrap();
    assert_eq!(resp.status(), 201);
    drop(resp); // the connection is cut: the client never reads it
    let (status, headers, again) = send(&b, clone(&parts)).await;
    assert_eq!(status, 201, "{again:#}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let vpcs = api.get("/v1/vpcs").await.ok(200).clone();
    assert_eq!(vpcs.as_array().unwrap().len(), 1);
    assert_eq!(vpcs[0]["id"], again["id"]);
    // A new signature of the same request on B: the same answer.
    let (status, _, third) = send(&b, post(&api, "/v1/vpcs", Some("k-5"), &body)).await;
    assert_eq!((status.as_u16(), &third), (201, &again));
    assert_eq!(vpc_count(&api).await, 1);
}

#[tokio::test]
async fn keys_belong_to_the_tenant() {
    let api = Api::new().await;
    let t1 = api.tenant("one").await;
    let t2 = api.tenant("two").await;
    let (_, c1) = api.principal("u1", "member", &t1).await;
    let (_, c2) = api.principal("u2", "member", &t2).await;
    let (a1, a2) = (api.with_creds(Some(c1)), api.with_creds(Some(c2)));
    let body = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    let (s1, _, v1) = send(&a1.app, post(&a1, "/v1/vpcs", Some("shared"), &body)).await;
    let (s2, h2, v2) = send(&a2.app, post(&a2, "/v1/vpcs", Some("shared"), &body)).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 201));
    assert!(h2.get("idempotent-replayed").is_none());
    assert_ne!(v1["id"], v2["id"]);
    assert_eq!(v1["tenant_id"], t1.as_str());
    assert_eq!(v2["tenant_id"], t2.as_str());
}

#[tokio::test]
async fn client_token_in_the_body_is_the_same_key() {
    let api = Api::new().await;
    let body = json!({"name": "web", "cidrs": ["10.0.0.0/16"], "client_token": "t-1"});
    let (status, _, first) = send(&api.app, post(&api, "/v1/vpcs", None, &body)).await;
    assert_eq!(status, 201, "{first:#}");
    assert!(first.get("client_token").is_none());
    // The header with the same key and the body without the token: the
    // same request.
    let plain = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    let (status, _, again) = send(&api.app, post(&api, "/v1/vpcs", Some("t-1"), &plain)).await;
    assert_eq!((status.as_u16(), &again), (201, &first));
    // Both, differing: malformed.
    let (status, _, p) = send(&api.app, post(&api, "/v1/vpcs", Some("t-2"), &body)).await;
    assert_eq!(status, 400, "{p:#}");
    let bad = json!({"name": "x", "cidrs": ["10.9.0.0/16"], "client_token": 7});
    let (status, _, p) = send(&api.app, post(&api, "/v1/vpcs", None, &bad)).await;
    assert_eq!(
        (status.as_u16(), &p["field"]),
        (400, &json!("client_token"))
    );
    let (status, _, _) = send(&api.app, post(&api, "/v1/vpcs", Some(""), &plain)).await;
    assert_eq!(status, 400);
    assert_eq!(vpc_count(&api).await, 1);
}

#[tokio::test]
async fn a_failed_create_stores_nothing_and_frees_the_key() {
    let api = Api::new().await;
    let bad = json!({"name": "web", "cidrs": ["10.0.0.0/33"]});
    let (status, _, _) = send(&api.app, post(&api, "/v1/vpcs", Some("k-6"), &bad)).await;
    assert_eq!(status, 422);
    let (idem, _) = api.store.range(keys::IDEMPOTENCY).await.unwrap();
    assert!(idem.is_empty());
    let (locks, _) = api.store.range(keys::IDEMPOTENCY_LOCK).await.unwrap();
    assert!(locks.is_empty(), "marker left after a failure");
    // The same failing request fails the same way.
    let (status, _, _) = send(&api.app, post(&api, "/v1/vpcs", Some("k-6"), &bad)).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn the_record_commits_with_the_resource_and_on_a_lease() {
    let api = Api::new().await;
    let body = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    let (_, _, v) = send(&api.app, post(&api, "/v1/vpcs", Some("k-7"), &body)).await;
    let vpc = api
        .store
        .get(&keys::vpc(v["id"].as_str().unwrap()))
        .await
        .unwrap()
        .unwrap();
    let (idem, _) = api.store.range(keys::IDEMPOTENCY).await.unwrap();
    assert_eq!(idem.len(), 1);
    assert_eq!(idem[0].mod_revision, vpc.mod_revision, "one transaction");
    assert_ne!(idem[0].lease, 0, "records expire");
    // Sealed: the stored answer is not readable from the store (its
    // Location is).
    let text = String::from_utf8_lossy(&idem[0].value);
    assert!(!text.contains("10.0.0.0/16"), "{text}");
    assert!(!text.contains("\"vni\""), "{text}");
}

#[tokio::test]
async fn an_api_key_creation_replays_its_secret() {
    let api = Api::new().await;
    let uid = api.admin.user_id.clone();
    let uri = format!("/v1/users/{uid}/keys");
    let (s1, _, k1) = send(&api.app, post(&api, &uri, Some("k-8"), &json!({}))).await;
    let (s2, _, k2) = send(&api.app, post(&api, &uri, Some("k-8"), &json!({}))).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 201));
    assert_eq!(k1, k2);
    let keys = api.get(&uri).await.ok(200).clone();
    assert_eq!(keys.as_array().unwrap().len(), 2, "bootstrap key + one");
}

#[tokio::test]
async fn a_repeated_delete_is_404() {
    let api = Api::new().await;
    let id = api.vpc("web", &["10.0.0.0/16"]).await;
    api.delete(format!("/v1/vpcs/{id}")).await.ok(204);
    api.delete(format!("/v1/vpcs/{id}"))
        .await
        .problem(404, &["not found"]);
}
