use serde_json::json;

use super::Api;
use crate::model::{keys, NicStatus, NicStatusRecord};
use crate::store::Store;

async fn setup() -> (Api, String, String) {
    let api = Api::new().await;
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/24").await;
    (api, vpc, sn)
}

#[tokio::test]
async fn addresses_are_allocated_lowest_first_and_reused() {
    let (api, vpc, sn) = setup().await;
    let a = api.nic(json!({"subnet_id": sn, "name": "eth0"})).await;
    assert_eq!(a["ip"], "10.0.1.2");
    assert_eq!(a["name"], "eth0");
    assert_eq!(a["vpc_id"], vpc.as_str());
    assert_eq!(a["interface_id"], a["id"]);
    assert_eq!(a["node"], json!(null));
    assert_eq!(a["status"], "down");
    assert!(a["mac"].as_str().unwrap().starts_with("02:"));
    let b = api.nic(json!({"subnet_id": sn})).await;
    assert_eq!(b["ip"], "10.0.1.3");
    assert_eq!(b["name"], b["id"]);
    assert_ne!(a["mac"], b["mac"]);
    let c = api.nic(json!({"subnet_id": sn, "ip": "10.0.1.4"})).await;
    assert_eq!(c["ip"], "10.0.1.4");
    // Deleting frees the address (and the MAC) for the next NIC.
    let aid = a["id"].as_str().unwrap();
    api.delete(&format!("/v1/nics/{aid}")).await.accepted();
    let d = api.nic(json!({"subnet_id": sn})).await;
    assert_eq!(d["ip"], "10.0.1.2");
    let mac = a["mac"].as_str().unwrap();
    let e = api.nic(json!({"subnet_id": sn, "mac": mac})).await;
    assert_eq!(e["mac"], mac);
    api.get(&format!("/v1/nics/{aid}"))
        .await
        .problem(404, &[aid]);
}

#[tokio::test]
async fn a_full_subnet_is_a_conflict() {
    let api = Api::new().await;
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/29").await;
    let mut ips = vec![];
    for _ in 0..5 {
        ips.push(api.nic(json!({"subnet_id": sn})).await["ip"].clone());
    }
    assert_eq!(
        ips,
        ["10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5", "10.0.1.6"]
    );
    api.unchanged(|| api.post("/v1/nics", json!({"subnet_id": sn})))
        .await
        .problem(409, &["no free address", &sn]);
}

#[tokio::test]
async fn nic_validation() {
    let (api, vpc, sn) = setup().await;
    api.node("n1", "default", "192.0.2.1").await;
    api.node("far", "elsewhere", "192.0.2.2").await;
    let used = api
        .nic(json!({"subnet_id": sn, "ip": "10.0.1.10", "mac": "02:aa:00:00:00:01"}))
        .await;
    let used_id = used["id"].as_str().unwrap();
    let gw_mac = api.get(&format!("/v1/subnets/{sn}")).await.ok(200)["gateway_mac"].clone();
    let cases = [
        (
            json!({"subnet_id": sn, "ip": "10.0.1.10"}),
            409,
            "ip",
            vec!["10.0.1.10", "already used", used_id],
        ),
        (
            json!({"subnet_id": sn, "ip": "10.0.2.10"}),
            422,
            "ip",
            vec!["outside the subnet", "10.0.1.0/24"],
        ),
        (
            json!({"subnet_id": sn, "ip": "10.0.1.0"}),
            422,
            "ip",
            vec!["network address"],
        ),
        (
            json!({"subnet_id": sn, "ip": "10.0.1.255"}),
            422,
            "ip",
            vec!["broadcast"],
        ),
        (
            json!({"subnet_id": sn, "ip": "10.0.1.1"}),
            422,
            "ip",
            vec!["gateway"],
        ),
        (
            json!({"subnet_id": sn, "ip": "10.0.1"}),
            422,
            "ip",
            vec!["not an IPv4 address"],
        ),
        (
            json!({"subnet_id": sn, "mac": "02:aa:00:00:00:01"}),
            409,
            "mac",
            vec!["already used", used_id, &vpc],
        ),
        (
            json!({"subnet_id": sn, "mac": gw_mac}),
            409,
            "mac",
            vec!["already used", &sn],
        ),
        (
            json!({"subnet_id": sn, "mac": "03:00:00:00:00:01"}),
            422,
            "mac",
            vec!["multicast"],
        ),
        (
            json!({"subnet_id": sn, "mac": "zz"}),
            422,
            "mac",
            vec!["invalid MAC"],
        ),
        (
            json!({"subnet_id": sn, "node": "ghost"}),
            422,
            "node",
            vec!["ghost", "does not exist"],
        ),
        (
            json!({"subnet_id": sn, "node": "far"}),
            422,
            "node",
            vec!["\"elsewhere\"", "\"default\""],
        ),
        (
            json!({"subnet_id": "subnet-0000000000000000"}),
            422,
            "subnet_id",
            vec!["does not exist"],
        ),
        (
            json!({"subnet_id": sn, "ipv4": "10.0.1.20"}),
            400,
            "ipv4",
            vec!["unknown field"],
        ),
        (
            json!({"subnet_id": sn, "ip": 5}),
            400,
            "ip",
            vec!["invalid type"],
        ),
    ];
    for (body, status, field, words) in cases {
        api.unchanged(|| api.post("/v1/nics", body.clone()))
            .await
            .problem(status, &words)
            .field(field);
    }
}

#[tokio::test]
async fn binding_filters_and_status() {
    let (api, vpc, sn) = setup().await;
    api.node("n1", "default", "192.0.2.1").await;
    api.node("n2", "default", "192.0.2.2").await;
    let nic = api.nic(json!({"subnet_id": sn, "node": "n1"})).await;
    let id = nic["id"].as_str().unwrap().to_string();
    let other = api.nic(json!({"subnet_id": sn})).await;
    assert_eq!(nic["node"], "n1");
    assert_eq!(nic["status"], "down");

    let status = |node: &str, st: NicStatus| NicStatusRecord {
        status: st,
        node: node.to_string(),
        revision: 7,
    };
    let put_status = |r: NicStatusRecord| {
        let store = api.store.clone();
        let id = id.clone();
        async move {
            store
                .put(&keys::nic_status(&id), serde_json::to_vec(&r).unwrap())
                .await
                .unwrap();
        }
    };
    put_status(status("n1", NicStatus::Up)).await;
    assert_eq!(
        api.get(&format!("/v1/nics/{id}")).await.ok(200)["status"],
        "up"
    );
    let listed = api.get("/v1/nics?node=n1").await.ok(200).clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["status"], "up");
    put_status(status("n1", NicStatus::Down)).await;
    assert_eq!(
        api.get(&format!("/v1/nics/{id}")).await.ok(200)["status"],
        "down"
    );
    // A report from another node does not count.
    put_status(status("n2", NicStatus::Up)).await;
    assert_eq!(
        api.get(&format!("/v1/nics/{id}")).await.ok(200)["status"],
        "down"
    );
    put_status(status("n1", NicStatus::Up)).await;

    // Rebinding: down until the new node reports; the old report is dropped.
    let r = api
        .applied(
            api.patch(&format!("/v1/nics/{id}"), json!({"node": "n2"}))
                .await,
        )
        .await;
    assert_eq!(r.ok(200)["node"], "n2");
    assert_eq!(r.ok(200)["status"], "down");
    assert!(api
        .store
        .get(&keys::nic_status(&id))
        .await
        .unwrap()
        .is_none());
    put_status(status("n2", NicStatus::Up)).await;
    assert_eq!(
        api.get(&format!("/v1/nics/{id}")).await.ok(200)["status"],
        "up"
    );
    // Renaming alone keeps the binding and its status.
    let r = api
        .applied(
            api.patch(&format!("/v1/nics/{id}"), json!({"name": "x"}))
                .await,
        )
        .await;
    assert_eq!(
        (&r.ok(200)["node"], &r.ok(200)["status"]),
        (&json!("n2"), &json!("up"))
    );

    api.unchanged(|| api.patch(format!("/v1/nics/{id}"), json!({"node": "ghost"})))
        .await
        .problem(422, &["ghost"])
        .field("node");
    let r = api
        .applied(
            api.patch(&format!("/v1/nics/{id}"), json!({"node": null}))
                .await,
        )
        .await;
    assert_eq!(r.ok(200)["node"], json!(null));
    assert_eq!(r.ok(200)["status"], "down");

    // Filters.
    api.patch(&format!("/v1/nics/{id}"), json!({"node": "n1"}))
        .await
        .accepted();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    };
    let by_node = api.get("/v1/nics?node=n1").await;
    assert_eq!(ids(by_node.ok(200)), [id.as_str()]);
    let by_subnet = api.get(&format!("/v1/nics?subnet_id={sn}")).await;
    assert_eq!(ids(by_subnet.ok(200)).len(), 2);
    let by_vpc = api.get(&format!("/v1/nics?vpc_id={vpc}&node=n1")).await;
    assert_eq!(ids(by_vpc.ok(200)), [id.as_str()]);
    let none = api.get("/v1/nics?vpc_id=vpc-0000000000000000").await;
    assert!(ids(none.ok(200)).is_empty());
    api.get("/v1/nics?host=n1")
        .await
        .problem(400, &["host"])
        .field("host");

    // Deleting the NIC removes its index keys and its status.
    put_status(status("n1", NicStatus::Up)).await;
    api.delete(&format!("/v1/nics/{id}")).await.accepted();
    assert!(api
        .store
        .get(&keys::nic_status(&id))
        .await
        .unwrap()
        .is_none());
    let (idx, _) = api.store.range(keys::INDEX).await.unwrap();
    assert!(idx.iter().all(|kv| kv.value != id.as_bytes()));
    let oid = other["id"].as_str().unwrap();
    assert!(idx.iter().any(|kv| kv.value == oid.as_bytes()));
}
