//! Identities and signatures at the HTTP level: each tampered field, a
//! stale timestamp and a replay are refused; keys, passwords, revocation.

use axum::body::Body;
use axum::http::{header, Method, Request};
use serde_json::json;

use super::Api;
use crate::http::auth::AuthConfig;
use proto::sign::Credentials;

/// A request with an explicit Authorization header built from `parts`.
#[allow(clippy::too_many_arguments)]
fn forged(
    creds: &Credentials,
    signed_method: &str,
    signed_uri: &str,
    signed_body: &[u8],
    timestamp: i64,
    nonce: &str,
    sent_method: Method,
    sent_uri: &str,
    sent_body: &[u8],
) -> Request<Body> {
    let (path, query) = signed_uri.split_once('?').unwrap_or((signed_uri, ""));
    let h = proto::sign::authorization(
        creds,
        signed_method,
        path,
        query,
        signed_body,
        timestamp,
        nonce,
    );
    Request::builder()
        .method(sent_method)
        .uri(sent_uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, h)
        .body(Body::from(sent_body.to_vec()))
        .unwrap()
}

/// (what, signed method, signed uri, signed body, timestamp, sent method,
/// sent uri, sent body).
type Case<'a> = (
    &'a str,
    &'a str,
    String,
    &'a [u8],
    i64,
    Method,
    String,
    &'a [u8],
);

#[tokio::test]
async fn tampered_stale_and_replayed_requests_are_401() {
    let api = Api::new().await;
    let c = api.admin.credentials();
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let now = proto::sign::unix_now();
    let body = br#"{"name":"w","cidrs":["10.1.0.0/16"]}"#;
    let get = |uri: &str| (Method::GET, uri.to_string());
    let list = "/v1/subnets?vpc_id=".to_string() + &vpc;
    // (what, signed method, signed uri, signed body, timestamp, sent method, sent uri, sent body)
    let cases: Vec<Case> = vec![
        (
            "method",
            "GET",
            "/v1/vpcs".into(),
            b"",
            now,
            Method::DELETE,
            format!("/v1/vpcs/{vpc}"),
            b"",
        ),
        (
            "path",
            "GET",
            format!("/v1/vpcs/{vpc}"),
            b"",
            now,
            get("/v1/vpcs").0,
            get("/v1/vpcs").1,
            b"",
        ),
        (
            "query",
            "GET",
            list.clone(),
            b"",
            now,
            Method::GET,
            "/v1/subnets?vpc_id=vpc-0000000000000000".into(),
            b"",
        ),
        (
            "body",
            "POST",
            "/v1/vpcs".into(),
            body,
            now,
            Method::POST,
            "/v1/vpcs".into(),
            br#"{"name":"x","cidrs":["10.1.0.0/16"]}"#,
        ),
        (
            "stale",
            "GET",
            "/v1/vpcs".into(),
            b"",
            now - 301,
            Method::GET,
            "/v1/vpcs".into(),
            b"",
        ),
        (
            "future",
            "GET",
            "/v1/vpcs".into(),
            b"",
            now + 301,
            Method::GET,
            "/v1/vpcs".into(),
            b"",
        ),
    ];
    for (what, sm, su, sb, ts, m, u, b) in cases {
        let before = api.snapshot().await;
        let req = forged(&c, sm, &su, sb, ts, &proto::sign::new_nonce(), m, &u, b);
        let r = api.send(req).await;
        r.problem(401, &[]);
        assert_eq!(api.snapshot().await, before, "{what} changed the store");
        if what == "stale" || what == "future" {
            r.problem(401, &["timestamp"]);
        }
    }
    // A wrong secret, an unknown key, a malformed and a missing header.
    let wrong = Credentials {
        key_id: c.key_id.clone(),
        secret: "not-the-secret".into(),
    };
    api.with_creds(Some(wrong))
        .get("/v1/vpcs")
        .await
        .problem(401, &[]);
    let unknown = Credentials {
        key_id: "ak-0000000000000000".into(),
        secret: c.secret.clone(),
    };
    api.with_creds(Some(unknown))
        .get("/v1/vpcs")
        .await
        .problem(401, &[]);
    api.with_creds(None)
        .get("/v1/vpcs")
        .await
        .problem(401, &["Authorization"]);
    let bad = Request::builder()
        .uri("/v1/vpcs")
        .header(header::AUTHORIZATION, "SN1-HMAC-SHA256 Credential=x")
        .body(Body::empty())
        .unwrap();
    api.send(bad).await.problem(401, &["Timestamp"]);

    // The control: the same request, untampered, passes.
    let req = forged(
        &c,
        "GET",
        &list,
        b"",
        now,
        &proto::sign::new_nonce(),
        Method::GET,
        &list,
        b"",
    );
    api.send(req).await.ok(200);

    // A replay of a read, then of a write: both refused, one VPC made.
    let nonce = proto::sign::new_nonce();
    let read = || {
        forged(
            &c,
            "GET",
            "/v1/vpcs",
            b"",
            now,
            &nonce,
            Method::GET,
            "/v1/vpcs",
            b"",
        )
    };
    api.send(read()).await.ok(200);
    api.send(read()).await.problem(401, &["replay"]);
    let nonce = proto::sign::new_nonce();
    let write = || {
        forged(
            &c,
            "POST",
            "/v1/vpcs",
            body,
            now,
            &nonce,
            Method::POST,
            "/v1/vpcs",
            body,
        )
    };
    api.send(write()).await.ok(201);
    api.send(write()).await.problem(401, &["replay"]);
    let vpcs = api.get("/v1/vpcs").await;
    assert_eq!(vpcs.ok(200).as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_mutation_replayed_on_another_replica_does_not_commit_twice() {
    let api = Api::new().await;
    // A second replica: same store, same master secret, its own replay
    // cache.
    let other = Api {
        app: super::super::router(api.store.clone(), AuthConfig::new(super::MASTER.to_vec())),
        ..api.clone()
    };
    let c = api.admin.credentials();
    // A NIC create that names no address: done twice it would make two
    // NICs, so only the replay key can stop the second.
    let vpc = api.vpc("v", &["10.1.0.0/16"]).await;
    let subnet = api.subnet(&vpc, "10.1.0.0/24").await;
    let body = serde_json::to_vec(&json!({"subnet_id": subnet})).unwrap();
    let (now, nonce) = (proto::sign::unix_now(), proto::sign::new_nonce());
    let write = || {
        forged(
            &c,
            "POST",
            "/v1/nics",
            &body,
            now,
            &nonce,
            Method::POST,
            "/v1/nics",
            &body,
        )
    };
    api.send(write()).await.accepted();
    other.send(write()).await.problem(401, &["replay"]);
    assert_eq!(
        api.get("/v1/nics").await.ok(200).as_array().unwrap().len(),
        1
    );
    // A read replayed on the other replica is answered (documented).
    let nonce = proto::sign::new_nonce();
    let read = || {
        forged(
            &c,
            "GET",
            "/v1/vpcs",
            b"",
            now,
            &nonce,
            Method::GET,
            "/v1/vpcs",
            b"",
        )
    };
    api.send(read()).await.ok(200);
    other.send(read()).await.ok(200);
}

#[tokio::test]
async fn keys_passwords_and_revocation() {
    let api = Api::new().await;
    let tenant = api.tenant("acme").await;
    let (user, creds) = api.principal("alice", "member", &tenant).await;
    let alice = api.with_creds(Some(creds.clone()));
    alice.get("/v1/vpcs").await.ok(200);

    // The secret is shown once; listings never carry it.
    let keys = alice.get(format!("/v1/users/{user}/keys")).await;
    let keys = keys.ok(200).as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("secret").is_none() && keys[0].get("sealed_secret").is_none());
    // Stored sealed: the secret is nowhere in the store in clear.
    let (kvs, _) = crate::store::Store::range(api.store.as_ref(), "/")
        .await
        .unwrap();
    for kv in &kvs {
        let v = String::from_utf8_lossy(&kv.value);
        assert!(!v.contains(&creds.secret), "{} holds the secret", kv.key);
        assert!(
            !v.contains("correct horse"),
            "{} holds the password",
            kv.key
        );
    }
    // A password gets a key, on that endpoint only.
    let basic = |user: &str, pw: &str| format!("Basic {}", b64(format!("{user}:{pw}").as_bytes()));
    let req = |m: Method, uri: String, auth: String| {
        Request::builder()
            .method(m)
            .uri(uri)
            .header(header::AUTHORIZATION, auth)
            .body(Body::empty())
            .unwrap()
    };
    let r = api
        .send(req(
            Method::POST,
            format!("/v1/users/{user}/keys"),
            basic("alice", "correct horse battery"),
        ))
        .await;
    let second = Credentials {
        key_id: r.ok(201)["key_id"].as_str().unwrap().into(),
        secret: r.body["secret"].as_str().unwrap().into(),
    };
    api.with_creds(Some(second.clone()))
        .get("/v1/vpcs")
        .await
        .ok(200);
    api.send(req(
        Method::POST,
        format!("/v1/users/{user}/keys"),
        basic("alice", "wrong password!"),
    ))
    .await
    .problem(401, &["password"]);
    api.send(req(
        Method::GET,
        "/v1/vpcs".into(),
        basic("alice", "correct horse battery"),
    ))
    .await
    .problem(401, &["only to create an API key"]);

    // Revoking a key ends it; the other key still works.
    alice
        .delete(format!("/v1/users/{user}/keys/{}", second.key_id))
        .await
        .ok(204);
    api.with_creds(Some(second))
        .get("/v1/vpcs")
        .await
        .problem(401, &[]);
    alice.get("/v1/vpcs").await.ok(200);
    // Deleting the user ends all of its keys.
    api.delete(format!("/v1/users/{user}")).await.ok(204);
    alice.get("/v1/vpcs").await.problem(401, &[]);

    // Names: users unique everywhere, VPCs per tenant.
    api.post(
        "/v1/users",
        json!({"name": "admin", "password": "twelve chars!", "role": "reader"}),
    )
    .await
    .problem(409, &["admin"]);
    let (_, b) = api.principal("bob", "member", &tenant).await;
    let bob = api.with_creds(Some(b));
    bob.post(
        "/v1/vpcs",
        json!({"name": "same", "cidrs": ["10.0.0.0/16"]}),
    )
    .await
    .ok(201);
    api.post(
        "/v1/vpcs",
        json!({"name": "same", "cidrs": ["10.0.0.0/16"]}),
    )
    .await
    .ok(201);
    bob.post(
        "/v1/vpcs",
        json!({"name": "same", "cidrs": ["10.0.0.0/16"]}),
    )
    .await
    .problem(409, &["same"]);
    // A tenant with users or VPCs is not deleted.
    api.delete(format!("/v1/tenants/{tenant}"))
        .await
        .problem(409, &["users", "VPCs"]);
    let empty = api.tenant("empty").await;
    api.delete(format!("/v1/tenants/{empty}")).await.ok(204);
    api.get(format!("/v1/tenants/{empty}"))
        .await
        .problem(404, &[]);
}

pub(super) fn b64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn a_key_revoked_on_another_replica_stops_working_within_the_cache_ttl() {
    let api = Api::new().await;
    let other = Api {
        app: super::super::router(api.store.clone(), AuthConfig::new(super::MASTER.to_vec())),
        ..api.clone()
    };
    let tenant = api.tenant("acme").await;
    let (user, creds) = api.principal("alice", "member", &tenant).await;
    other
        .with_creds(Some(creds.clone()))
        .get("/v1/vpcs")
        .await
        .ok(200);
    api.delete(format!("/v1/users/{user}/keys/{}", creds.key_id))
        .await
        .ok(204);
    // At once on the replica that revoked it ...
    api.with_creds(Some(creds.clone()))
        .get("/v1/vpcs")
        .await
        .problem(401, &[]);
    // ... and on the other once its cached copy expires (2 s).
    let start = std::time::Instant::now();
    loop {
        let r = other.with_creds(Some(creds.clone())).get("/v1/vpcs").await;
        if r.status == 401 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(4),
            "the revoked key still works on the other replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
