//! Revisions and ETags: GET answers the revision, If-Match makes PATCH and
//! DELETE conditional (412 when stale).

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::Api;

async fn call(
    api: &Api,
    method: Method,
    uri: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let ct = bytes.as_ref().map(|_| "application/json");
    let mut req: Request<Body> = api.request(method, uri, ct, bytes.as_deref().unwrap_or_default());
    if let Some(m) = if_match {
        req.headers_mut().insert("if-match", m.parse().unwrap());
    }
    let resp = api.app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, body)
}

/// The ETag of a GET, checked against the body's revision.
async fn etag(api: &Api, uri: &str) -> (String, u64) {
    let (status, headers, body) = call(api, Method::GET, uri, None, None).await;
    assert_eq!(status, 200, "{body:#}");
    let rev = body["revision"].as_u64().expect("a revision");
    let tag = headers["etag"].to_str().unwrap().to_string();
    assert_eq!(tag, format!("\"{rev}\""));
    (tag, rev)
}

/// One of each revisioned kind: (item URI, a PATCH body).
async fn resources(api: &Api) -> Vec<(String, Value)> {
    let vpc = api.vpc("web", &["10.0.0.0/16"]).await;
    let subnet = api.subnet(&vpc, "10.0.1.0/24").await;
    let nic = api.nic(json!({"subnet_id": subnet})).await;
    let sg = api
        .post("/v1/security-groups", json!({"vpc_id": vpc, "name": "g"}))
        .await;
    let sg = api.applied(sg).await.ok(200).clone();
    vec![
        (format!("/v1/vpcs/{vpc}"), json!({"name": "web2"})),
        (format!("/v1/subnets/{subnet}"), json!({"name": "s2"})),
        (
            format!("/v1/nics/{}", nic["id"].as_str().unwrap()),
            json!({"name": "n2"}),
        ),
        (
            format!("/v1/security-groups/{}", sg["id"].as_str().unwrap()),
            json!({"name": "g2"}),
        ),
    ]
}

#[tokio::test]
async fn a_create_answers_the_revision_a_get_shows() {
    let api = Api::new().await;
    let body = json!({"name": "web", "cidrs": ["10.0.0.0/16"]});
    let (status, headers, vpc) = call(&api, Method::POST, "/v1/vpcs", Some(body), None).await;
    assert_eq!(status, 201);
    let rev = vpc["revision"].as_u64().unwrap();
    assert_eq!(headers["etag"], format!("\"{rev}\"").as_str());
    let (_, got) = etag(&api, &format!("/v1/vpcs/{}", vpc["id"].as_str().unwrap())).await;
    assert_eq!(got, rev);
    // The stored object does not carry it (flowctl reads the same bytes).
    let kv = crate::store::Store::get(
        api.store.as_ref(),
        &crate::model::keys::vpc(vpc["id"].as_str().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let stored: Value = serde_json::from_slice(&kv.value).unwrap();
    assert!(stored.get("revision").is_none(), "{stored:#}");
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_a_current_one_goes_through() {
    let api = Api::new().await;
    for (uri, patch) in resources(&api).await {
        let (tag, rev) = etag(&api, &uri).await;
        let stale = format!("\"{}\"", rev - 1);
        let before = api.snapshot().await;
        let (s, h, p) = call(&api, Method::PATCH, &uri, Some(patch.clone()), Some(&stale)).await;
        assert_eq!(s, 412, "{uri}: {p:#}");
        assert_eq!(h["content-type"], "application/problem+json");
        assert_eq!(p["field"], "If-Match");
        let (s, _, _) = call(&api, Method::DELETE, &uri, None, Some(&stale)).await;
        assert_eq!(s, 412, "{uri}");
        assert_eq!(
            api.snapshot().await,
            before,
            "{uri}: a 412 changed something"
        );

        // NICs, groups and subnets answer 202 with an operation whose revision is
        // the change's (the resource's new revision); the others 200 with
        // the resource and its ETag.
        let accepted = uri.starts_with("/v1/nics/")
            || uri.starts_with("/v1/security-groups/")
            || uri.starts_with("/v1/subnets/");
        let ok = if accepted { 202 } else { 200 };
        let (s, h, body) = call(&api, Method::PATCH, &uri, Some(patch), Some(&tag)).await;
        assert_eq!(s, ok, "{uri}: {body:#}");
        let new_rev = body["revision"].as_u64().unwrap();
        assert!(new_rev > rev, "{uri}: {new_rev} after {rev}");
        if !accepted {
            assert_eq!(h["etag"], format!("\"{new_rev}\"").as_str());
        }
        assert_eq!(etag(&api, &uri).await.1, new_rev);
        // The old tag is stale now.
        let (s, _, _) = call(&api, Method::PATCH, &uri, Some(json!({})), Some(&tag)).await;
        assert_eq!(s, 412, "{uri}");
        // `*` matches any revision of an existing resource.
        let (s, _, _) = call(&api, Method::PATCH, &uri, Some(json!({})), Some("*")).await;
        assert_eq!(s, ok, "{uri}");
    }
}

#[tokio::test]
async fn delete_with_the_current_etag_and_an_unseen_resource_is_404_not_412() {
    let api = Api::new().await;
    let vpc = api.vpc("web", &["10.0.0.0/16"]).await;
    let uri = format!("/v1/vpcs/{vpc}");
    // Another tenant's member sees no resource: 404, whatever the tag.
    let t = api.tenant("other").await;
    let (_, c) = api.principal("o", "member", &t).await;
    let other = api.with_creds(Some(c));
    let (s, _, _) = call(&other, Method::DELETE, &uri, None, Some("\"1\"")).await;
    assert_eq!(s, 404);
    let (tag, _) = etag(&api, &uri).await;
    let (s, _, _) = call(&api, Method::DELETE, &uri, None, Some(&tag)).await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn two_patches_from_the_same_revision_one_wins() {
    let api = Api::new().await;
    let vpc = api.vpc("web", &["10.0.0.0/16"]).await;
    let uri = format!("/v1/vpcs/{vpc}");
    let (tag, _) = etag(&api, &uri).await;
    let answers = futures::future::join_all((0..16).map(|i| {
        let (api, uri, tag) = (api.clone(), uri.clone(), tag.clone());
        async move {
            call(
                &api,
                Method::PATCH,
                &uri,
                Some(json!({"name": format!("n{i}")})),
                Some(&tag),
            )
            .await
            .0
        }
    }))
    .await;
    let won = answers.iter().filter(|s| **s == 200).count();
    let lost = answers.iter().filter(|s| **s == 412).count();
    assert_eq!((won, lost), (1, 15), "{answers:?}");
}

#[tokio::test]
async fn an_idempotent_replay_carries_the_original_revision() {
    let api = Api::new().await;
    let body = serde_json::to_vec(&json!({"name": "web", "cidrs": ["10.0.0.0/16"]})).unwrap();
    let mut answers = vec![];
    for _ in 0..2 {
        let mut req = api.request(Method::POST, "/v1/vpcs", Some("application/json"), &body);
        req.headers_mut()
            .insert("idempotency-key", "e-1".parse().unwrap());
        let resp = api.app.clone().oneshot(req).await.unwrap();
        let etag = resp.headers()["etag"].clone();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        answers.push((etag, serde_json::from_slice::<Value>(&b).unwrap()));
    }
    assert_eq!(answers[0], answers[1]);
    assert!(answers[0].1["revision"].as_u64().unwrap() > 0);
}

/// Nodes, tenants and users carry revisions and ETags too; PATCH and
/// DELETE take If-Match (412 when stale, nothing changed).
#[tokio::test]
async fn nodes_tenants_and_users_are_tagged_and_conditional() {
    let api = Api::new().await;
    let node = api.node("n1", "default", "192.0.2.1").await;
    let t = api.tenant("acme").await;
    let (user, _) = api.principal("alice", "member", &t).await;
    assert!(node["revision"].as_u64().unwrap() > 0, "{node:#}");
    let cases = [
        (
            "/v1/nodes/n1".to_string(),
            json!({"roles": ["compute", "gateway"]}),
        ),
        (format!("/v1/tenants/{t}"), json!({"description": "ours"})),
        (format!("/v1/users/{user}"), json!({"name": "alice2"})),
    ];
    for (uri, patch) in cases {
        let (tag, rev) = etag(&api, &uri).await;
        let stale = format!("\"{}\"", rev - 1);
        let before = api.snapshot().await;
        let (s, _, p) = call(&api, Method::PATCH, &uri, Some(patch.clone()), Some(&stale)).await;
        assert_eq!(
            (s.as_u16(), &p["field"]),
            (412, &json!("If-Match")),
            "{uri}: {p:#}"
        );
        let (s, _, _) = call(&api, Method::DELETE, &uri, None, Some(&stale)).await;
        assert_eq!(s, 412, "{uri}");
        assert_eq!(
            api.snapshot().await,
            before,
            "{uri}: a 412 changed something"
        );
        // A node's change reaches nodes: 202 and an operation whose
        // revision is the change's; tenants and users answer 200.
        let accepted = uri.starts_with("/v1/nodes/");
        let (s, h, body) = call(&api, Method::PATCH, &uri, Some(patch), Some(&tag)).await;
        assert_eq!(s, if accepted { 202 } else { 200 }, "{uri}: {body:#}");
        let new_rev = body["revision"].as_u64().unwrap();
        assert!(new_rev > rev, "{uri}");
        if !accepted {
            assert_eq!(h["etag"], format!("\"{new_rev}\"").as_str());
        }
        assert_eq!(etag(&api, &uri).await.1, new_rev);
    }
    // Lists carry each item's revision.
    for uri in ["/v1/nodes", "/v1/tenants", "/v1/users"] {
        let list = api.get(uri).await.ok(200).clone();
        for item in list.as_array().unwrap() {
            assert!(item["revision"].as_u64().unwrap() > 0, "{uri}: {item:#}");
        }
    }
    let (tag, _) = etag(&api, &format!("/v1/users/{user}")).await;
    let (s, _, _) = call(
        &api,
        Method::DELETE,
        &format!("/v1/users/{user}"),
        None,
        Some(&tag),
    )
    .await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn who_may_patch_users_and_tenants() {
    let api = Api::new().await;
    let t = api.tenant("acme").await;
    let other = api.tenant("other").await;
    let (boss_id, boss) = api.principal("boss", "tenant_admin", &t).await;
    let (dev_id, dev) = api.principal("dev", "member", &t).await;
    let (far_id, _) = api.principal("far", "member", &other).await;
    let (boss, dev) = (api.with_creds(Some(boss)), api.with_creds(Some(dev)));

    // A user changes their own password (and logs in with it), not their role.
    dev.patch(
        format!("/v1/users/{dev_id}"),
        json!({"password": "a new long passphrase"}),
    )
    .await
    .ok(200);
    let basic = format!("Basic {}", super::iam::b64(b"dev:a new long passphrase"));
    let mut req = api.with_creds(None).request(
        Method::POST,
        &format!("/v1/users/{dev_id}/keys"),
        Some("application/json"),
        b"{}",
    );
    req.headers_mut()
        .insert("authorization", basic.parse().unwrap());
    assert_eq!(api.send(req).await.status, 201, "the new password works");
    dev.patch(
        format!("/v1/users/{dev_id}"),
        json!({"role": "tenant_admin"}),
    )
    .await
    .problem(403, &["own role"]);
    dev.patch(format!("/v1/users/{dev_id}"), json!({"password": "short"}))
        .await
        .problem(422, &["12"])
        .field("password");
    // A tenant admin manages its tenant's users within the tenant roles.
    let r = boss
        .patch(format!("/v1/users/{dev_id}"), json!({"role": "reader"}))
        .await;
    assert_eq!(r.ok(200)["role"], "reader");
    boss.patch(
        format!("/v1/users/{dev_id}"),
        json!({"role": "system_admin"}),
    )
    .await
    .problem(403, &["system admin"]);
    boss.patch(format!("/v1/users/{far_id}"), json!({"role": "reader"}))
        .await
        .problem(404, &[]);
    boss.unchanged(|| boss.patch(format!("/v1/users/{dev_id}"), json!({"name": "boss"})))
        .await
        .problem(409, &["boss"])
        .field("name");
    boss.patch(format!("/v1/users/{boss_id}"), json!({"role": "member"}))
        .await
        .problem(403, &["own role"]);

    // Tenants: its admin changes the description, only a system admin the name.
    let r = boss
        .patch(format!("/v1/tenants/{t}"), json!({"description": "d"}))
        .await;
    assert_eq!(r.ok(200)["description"], "d");
    boss.patch(format!("/v1/tenants/{t}"), json!({"name": "acme2"}))
        .await
        .problem(403, &["system_admin"]);
    boss.patch(format!("/v1/tenants/{other}"), json!({"description": "x"}))
        .await
        .problem(404, &[]);
    api.unchanged(|| api.patch(format!("/v1/tenants/{t}"), json!({"name": "other"})))
        .await
        .problem(409, &["other"])
        .field("name");
    let r = api
        .patch(format!("/v1/tenants/{t}"), json!({"name": "acme2"}))
        .await;
    assert_eq!(r.ok(200)["name"], "acme2");
    // The old name is free again.
    api.post("/v1/tenants", json!({"name": "acme"}))
        .await
        .ok(201);
    assert_eq!(api.get("/v1/audit").await.status, 200);
}
