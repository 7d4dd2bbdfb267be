use serde_json::json;

use super::Api;
use crate::model::keys;
use crate::store::Store;

#[tokio::test]
async fn vpc_crud() {
    let api = Api::new().await;
    let r = api
        .post(
            "/v1/vpcs",
            json!({"name": "web", "cidrs": ["10.0.0.0/16", "172.16.0.0/20"]}),
        )
        .await;
    let v = r.ok(201).clone();
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("vpc-") && id.len() == 20, "{id}");
    assert_eq!(v["set"], "default");
    let vni = v["vni"].as_u64().unwrap();
    assert!((1..1 << 24).contains(&vni));
    assert_eq!(v["cidrs"], json!(["10.0.0.0/16", "172.16.0.0/20"]));
    assert_eq!(api.get(&format!("/v1/vpcs/{id}")).await.ok(200), &v);

    // VNIs are unique.
    let other = api.vpc("db", &["10.0.0.0/16"]).await;
    let o = api.get(&format!("/v1/vpcs/{other}")).await.ok(200).clone();
    assert_ne!(o["vni"], v["vni"]);

    // Rename; the old name becomes free.
    let r = api
        .patch(&format!("/v1/vpcs/{id}"), json!({"name": "web2"}))
        .await;
    assert_eq!(r.ok(200)["name"], "web2");
    api.unchanged(|| api.patch(format!("/v1/vpcs/{other}"), json!({"name": "web2"})))
        .await
        .problem(409, &["web2"])
        .field("name");
    api.vpc("web", &["10.1.0.0/16"]).await;

    assert_eq!(api.delete(&format!("/v1/vpcs/{id}")).await.status, 204);
    api.get(&format!("/v1/vpcs/{id}")).await.problem(404, &[id]);
    // Its index keys are gone with it.
    let (idx, _) = api.store.range(keys::INDEX).await.unwrap();
    assert!(
        idx.iter().all(|kv| kv.value != id.as_bytes()),
        "{:?}",
        idx.iter().map(|kv| &kv.key).collect::<Vec<_>>()
    );
    api.vpc("web2", &["10.2.0.0/16"]).await;
    api.get("/v1/vpcs/nope").await.problem(404, &["nope"]);
}

#[tokio::test]
async fn vpc_validation() {
    let api = Api::new().await;
    api.vpc("taken", &["10.0.0.0/16"]).await;
    let cases = [
        (
            json!({"name": "a", "cidrs": ["10.0.0.0/33"]}),
            422,
            "cidrs[0]",
            "10.0.0.0/33",
        ),
        (
            json!({"name": "a", "cidrs": ["not-a-cidr"]}),
            422,
            "cidrs[0]",
            "not an IPv4 CIDR",
        ),
        (
            json!({"name": "a", "cidrs": ["10.0.0.1/16"]}),
            422,
            "cidrs[0]",
            "host bits",
        ),
        (
            json!({"name": "a", "cidrs": ["10.0.0.0/16", "10.0.8.0/24"]}),
            422,
            "cidrs[1]",
            "overlaps",
        ),
        (
            json!({"name": "a", "cidrs": ["127.0.0.0/16"]}),
            422,
            "cidrs[0]",
            "reserved",
        ),
        (
            json!({"name": "a", "cidrs": []}),
            422,
            "cidrs",
            "at least one",
        ),
        (
            json!({"name": "a", "cidrs": "10.0.0.0/16"}),
            400,
            "cidrs",
            "sequence",
        ),
        (
            json!({"name": "a b", "cidrs": ["10.0.0.0/16"]}),
            422,
            "name",
            "name",
        ),
        (
            json!({"name": "taken", "cidrs": ["10.9.0.0/16"]}),
            409,
            "name",
            "taken",
        ),
        (
            json!({"name": "a", "cidrs": ["10.0.0.0/16"], "vni": 5}),
            400,
            "vni",
            "unknown field",
        ),
    ];
    for (body, status, field, word) in cases {
        api.unchanged(|| api.post("/v1/vpcs", body.clone()))
            .await
            .problem(status, &[word])
            .field(field);
    }
}

#[tokio::test]
async fn a_vpc_with_subnets_cannot_be_deleted() {
    let api = Api::new().await;
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/24").await;
    api.unchanged(|| api.delete(format!("/v1/vpcs/{vpc}")))
        .await
        .problem(409, &[&vpc, "1 subnets", &sn]);
    assert_eq!(api.delete(&format!("/v1/subnets/{sn}")).await.status, 202);
    assert_eq!(api.delete(&format!("/v1/vpcs/{vpc}")).await.status, 204);
    // Nothing is left behind: no objects, no index or guard keys (the
    // subnet's operations are kept for their retention period).
    let (left, _) = api.store.range(keys::ROOT).await.unwrap();
    let left: Vec<_> = left
        .into_iter()
        .filter(|kv| !kv.key.starts_with(crate::operation::keys::OPERATIONS))
        .collect();
    assert!(
        left.is_empty(),
        "{:?}",
        left.iter().map(|kv| &kv.key).collect::<Vec<_>>()
    );
}
