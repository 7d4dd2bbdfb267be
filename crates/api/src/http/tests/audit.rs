//! The audit trail: every mutation recorded, in the tenant it acted in,
//! with the change when it succeeded; readable by that tenant only.

use serde_json::{json, Value};

use super::Api;
use crate::store::Store;

fn records(v: &Value) -> Vec<(String, String, u64, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_mutation_is_recorded_in_its_tenant() {
    let api = Api::new().await;
    let tenant = api.tenant("acme").await;
    let (alice_id, alice) = api.principal("alice", "member", &tenant).await;
    let alice = api.with_creds(Some(alice));
    let vpc = alice
        .post("/v1/vpcs", json!({"name": "v", "cidrs": ["10.0.0.0/16"]}))
        .await
        .ok(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    alice
        .post("/v1/subnets", json!({"vpc_id": vpc, "cidr": "10.9.0.0/24"}))
        .await
        .problem(422, &[]);
    alice
        .patch(format!("/v1/vpcs/{vpc}"), json!({"name": "v"}))
        .await
        .ok(200);
    // The system admin acts on alice's VPC: recorded in alice's tenant.
    api.patch(format!("/v1/vpcs/{vpc}"), json!({"name": "w"}))
        .await
        .ok(200);
    // Reads are not recorded.
    alice.get("/v1/vpcs").await.ok(200);

    let log = alice.get("/v1/audit").await;
    let got = records(log.ok(200));
    let vpc_path = format!("/v1/vpcs/{vpc}");
    assert_eq!(
        got,
        vec![
            ("POST".into(), "/v1/vpcs".into(), 201, "succeeded".into()),
            ("POST".into(), "/v1/subnets".into(), 422, "failed".into()),
            ("PATCH".into(), vpc_path.clone(), 200, "unchanged".into()),
            ("PATCH".into(), vpc_path, 200, "succeeded".into()),
        ]
    );
    let first = &log.body[0];
    assert_eq!(first["user_id"], alice_id);
    assert_eq!(first["tenant_id"], tenant);
    assert!(first["key_id"].as_str().unwrap().starts_with("ak-"));
    assert_eq!(log.body[3]["user_id"], api.admin.user_id);

    // Another tenant's member does not see them; the system admin does.
    let other = api.tenant("other").await;
    let (_, bob) = api.principal("bob", "member", &other).await;
    let bob = api.with_creds(Some(bob));
    assert_eq!(bob.get("/v1/audit").await.ok(200), &json!([]));
    bob.get(format!("/v1/audit?tenant_id={tenant}"))
        .await
        .problem(404, &[]);
    let seen = api.get(format!("/v1/audit?tenant_id={tenant}")).await;
    assert_eq!(records(seen.ok(200)).len(), 4);
}

#[tokio::test]
async fn the_record_of_a_change_commits_with_it() {
    let api = Api::new().await;
    let before = api.store.revision().await.unwrap();
    let r = api
        .post("/v1/vpcs", json!({"name": "v", "cidrs": ["10.0.0.0/16"]}))
        .await;
    let id = r.ok(201)["id"].as_str().unwrap().to_string();
    // One transaction: the VPC and its audit record share a revision.
    let vpc = api
        .store
        .get(&crate::model::keys::vpc(&id))
        .await
        .unwrap()
        .unwrap();
    let (audit, _) = api
        .store
        .range(&crate::model::keys::audit_prefix(&api.admin.tenant_id))
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].mod_revision, vpc.mod_revision);
    assert_eq!(vpc.mod_revision, before + 1, "one transaction");
}
