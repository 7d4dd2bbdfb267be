//! Requests that are wrong before any business rule applies.

use axum::http::Method;
use serde_json::json;

use super::Api;

#[tokio::test]
async fn malformed_bodies_are_400_problems() {
    let api = Api::new().await;
    let post = |ct: Option<&'static str>, body: &'static [u8]| {
        let api = &api;
        async move { api.raw(Method::POST, "/v1/vpcs", ct, body).await }
    };
    let json = Some("application/json");
    api.unchanged(|| post(json, b"{\"name\": \"a\", "))
        .await
        .problem(400, &["not valid JSON"]);
    api.unchanged(|| post(json, b"[]"))
        .await
        .problem(400, &["expected struct CreateVpc"]);
    api.unchanged(|| post(json, b"")).await.problem(400, &[]);
    api.unchanged(|| post(json, b"{\"name\":\"a\",\"cidrs\":[\"10.0.0.0/16\"]} x"))
        .await
        .problem(400, &["trailing"]);
    api.unchanged(|| {
        post(
            json,
            b"{\"name\":\"a\",\"cidrs\":[\"10.0.0.0/16\"],\"color\":1}",
        )
    })
    .await
    .problem(400, &["unknown field", "color"])
    .field("color");
    api.unchanged(|| post(json, b"{\"name\":\"a\",\"cidrs\":[\"10.0.0.0/16\", 7]}"))
        .await
        .problem(400, &["invalid type"])
        .field("cidrs[1]");
    api.unchanged(|| post(None, b"{\"name\":\"a\",\"cidrs\":[\"10.0.0.0/16\"]}"))
        .await
        .problem(415, &["application/json"]);
    api.unchanged(|| post(Some("text/plain"), b"{}"))
        .await
        .problem(415, &[]);
    // Parameters in the content type are fine.
    let r = post(
        Some("application/json; charset=utf-8"),
        b"{\"name\":\"a\",\"cidrs\":[\"10.0.0.0/16\"]}",
    )
    .await;
    r.ok(201);
}

#[tokio::test]
async fn routing_errors_are_problems() {
    let api = Api::new().await;
    api.get("/v1/routers").await.problem(404, &["/v1/routers"]);
    api.get("/nope").await.problem(404, &[]);
    api.call(Method::PUT, "/v1/vpcs", Some(json!({})))
        .await
        .problem(405, &[]);
    api.delete("/v1/nodes").await.problem(405, &[]);
    api.get("/v1/nics/nic-zzzz")
        .await
        .problem(404, &["nic-zzzz"]);
    api.get("/v1/subnets/vpc-0123456789abcdef")
        .await
        .problem(404, &[]);
}

#[tokio::test]
async fn health_and_openapi() {
    let api = Api::new().await;
    let h = api.get("/healthz").await;
    assert_eq!(h.ok(200)["status"], "ok");
    assert!(h.ok(200)["revision"].as_u64().is_some());

    let doc = api.get("/v1/openapi.json").await.ok(200).clone();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (p, methods) in [
        ("/v1/nodes", &["get", "post"][..]),
        ("/v1/nodes/{name}", &["get", "patch", "delete"]),
        ("/v1/vpcs", &["get", "post"]),
        ("/v1/vpcs/{id}", &["get", "patch", "delete"]),
        ("/v1/subnets", &["get", "post"]),
        ("/v1/subnets/{id}", &["get", "patch", "delete"]),
        ("/v1/nics", &["get", "post"]),
        ("/v1/nics/{id}", &["get", "patch", "delete"]),
    ] {
        for m in methods {
            assert!(paths[p][m].is_object(), "{p} {m}");
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "Node",
        "Vpc",
        "Subnet",
        "NicView",
        "Problem",
        "CreateNic",
        "PatchNic",
    ] {
        assert!(schemas.contains_key(s), "{s}");
    }
    // The NIC list filters (and the list parameters) are documented.
    let params: Vec<&str> = paths["/v1/nics"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            "subnet_id",
            "vpc_id",
            "node",
            "name",
            "tag",
            "page_size",
            "page_token"
        ]
    );
}

#[test]
fn request_types_round_trip_for_clients() {
    use crate::http::nics::PatchNic;
    // Absent `node` leaves the binding alone, null unbinds.
    let keep = PatchNic {
        name: Some("x".into()),
        ..PatchNic::default()
    };
    assert_eq!(serde_json::to_value(&keep).unwrap(), json!({"name": "x"}));
    let unbind = PatchNic {
        node: Some(None),
        ..PatchNic::default()
    };
    let v = serde_json::to_value(&unbind).unwrap();
    assert_eq!(v, json!({"node": null}));
    let back: PatchNic = serde_json::from_value(v).unwrap();
    assert_eq!(back.node, Some(None));
    let back: PatchNic = serde_json::from_value(json!({})).unwrap();
    assert_eq!(back.node, None);
}
