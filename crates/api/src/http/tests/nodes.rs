use serde_json::json;

use super::Api;
use crate::model::MAX_NODES_PER_SET;

#[tokio::test]
async fn node_crud_with_defaults() {
    let api = Api::new().await;
    let n = api
        .post(
            "/v1/nodes",
            json!({"name": "n1", "underlay_ip": "192.0.2.11"}),
        )
        .await;
    let n = n.ok(201);
    assert_eq!(n["set"], "default");
    assert_eq!(n["roles"], json!(["compute"]));
    assert_eq!(n["underlay_ip"], "192.0.2.11");
    assert!(n["created_at"].as_str().unwrap().ends_with('Z'));

    assert_eq!(api.get("/v1/nodes/n1").await.ok(200), n);
    assert_eq!(api.get("/v1/nodes").await.ok(200), &json!([n]));

    let p = api
        .patch(
            "/v1/nodes/n1",
            json!({"roles": ["gateway", "compute", "gateway"], "underlay_ip": "192.0.2.12"}),
        )
        .await;
    assert_eq!(
        api.applied(p).await.ok(200)["roles"],
        json!(["compute", "gateway"])
    );
    // The old underlay address is free again, the new one is taken.
    api.node("n2", "default", "192.0.2.11").await;
    api.unchanged(|| {
        api.post(
            "/v1/nodes",
            json!({"name": "n3", "underlay_ip": "192.0.2.12"}),
        )
    })
    .await
    .problem(409, &["192.0.2.12", "n1"])
    .field("underlay_ip");

    assert_eq!(api.delete("/v1/nodes/n1").await.status, 204);
    api.get("/v1/nodes/n1").await.problem(404, &["n1"]);
    api.delete("/v1/nodes/n1").await.problem(404, &["n1"]);
    api.get("/v1/nodes/Bad_Name")
        .await
        .problem(404, &["Bad_Name"]);
}

#[tokio::test]
async fn node_validation() {
    let api = Api::new().await;
    api.node("n1", "default", "192.0.2.11").await;
    let cases = [
        (
            json!({"name": "n1", "underlay_ip": "192.0.2.99"}),
            409,
            "name",
            "already exists",
        ),
        (
            json!({"name": "N1", "underlay_ip": "192.0.2.1"}),
            422,
            "name",
            "DNS label",
        ),
        (
            json!({"name": "-n", "underlay_ip": "192.0.2.1"}),
            422,
            "name",
            "DNS label",
        ),
        (
            json!({"name": "n2", "underlay_ip": "192.0.2"}),
            422,
            "underlay_ip",
            "IPv4",
        ),
        (
            json!({"name": "n2", "underlay_ip": "224.0.0.1"}),
            422,
            "underlay_ip",
            "unicast",
        ),
        (
            json!({"name": "n2", "underlay_ip": "192.0.2.2", "set": "A B"}),
            422,
            "set",
            "DNS",
        ),
        (
            json!({"name": "n2", "underlay_ip": "192.0.2.2", "roles": []}),
            422,
            "roles",
            "roles",
        ),
        (
            json!({"name": "n2", "underlay_ip": "192.0.2.2", "roles": ["db"]}),
            400,
            "roles[0]",
            "db",
        ),
        (
            json!({"name": "n2", "underlay_ip": "192.0.2.2", "zone": "a"}),
            400,
            "zone",
            "zone",
        ),
        (json!({"underlay_ip": "192.0.2.2"}), 400, "name", "name"),
    ];
    for (body, status, field, word) in cases {
        api.unchanged(|| api.post("/v1/nodes", body.clone()))
            .await
            .problem(status, &[word])
            .field(field);
    }
    api.unchanged(|| api.patch("/v1/nodes/n1", json!({"name": "x"})))
        .await
        .problem(400, &["name"]);
}

#[tokio::test]
async fn the_46th_node_of_a_set_is_refused() {
    let api = Api::new().await;
    for i in 0..MAX_NODES_PER_SET {
        api.node(&format!("a{i}"), "rack-a", &format!("10.9.0.{}", i + 1))
            .await;
    }
    let r = api
        .unchanged(|| {
            api.post(
                "/v1/nodes",
                json!({"name": "a45", "set": "rack-a", "underlay_ip": "10.9.1.1"}),
            )
        })
        .await;
    r.problem(409, &["\"rack-a\"", "45"]).field("set");
    // Other Sets are not affected.
    api.node("b0", "rack-b", "10.9.2.1").await;
    // Moving a node into the full Set is refused too.
    api.unchanged(|| api.patch("/v1/nodes/b0", json!({"set": "rack-a"})))
        .await
        .problem(409, &["\"rack-a\""]);
    // A freed slot can be used again.
    assert_eq!(api.delete("/v1/nodes/a0").await.status, 204);
    api.patch("/v1/nodes/b0", json!({"set": "rack-a"}))
        .await
        .ok(202);
    let listed = api.get("/v1/nodes?set=rack-a").await;
    assert_eq!(listed.ok(200).as_array().unwrap().len(), MAX_NODES_PER_SET);
}

#[tokio::test]
async fn a_node_with_nics_cannot_be_deleted_or_moved() {
    let api = Api::new().await;
    api.node("n1", "default", "192.0.2.11").await;
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/24").await;
    let nic = api.nic(json!({"subnet_id": sn, "node": "n1"})).await;
    let id = nic["id"].as_str().unwrap();

    api.unchanged(|| api.delete("/v1/nodes/n1"))
        .await
        .problem(409, &["n1", "1 NICs bound", id]);
    api.unchanged(|| api.patch("/v1/nodes/n1", json!({"set": "other"})))
        .await
        .problem(409, &["n1", id]);

    api.patch(&format!("/v1/nics/{id}"), json!({"node": null}))
        .await
        .ok(202);
    assert_eq!(api.delete("/v1/nodes/n1").await.status, 204);
}
