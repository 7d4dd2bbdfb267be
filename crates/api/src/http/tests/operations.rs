//! Operations as the API shows them: the 202 answer, reading and listing
//! them (tenant-scoped, filtered, paged), idempotent replays, callback URL
//! checks and the tenant's callback secret.

use axum::http::{header, Method};
use serde_json::{json, Value};

use super::Api;
use crate::operation::keys as op_keys;
use crate::store::Store;

async fn setup() -> (Api, String, String) {
    let api = Api::new().await;
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/24").await;
    (api, vpc, sn)
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_create_answers_202_with_its_operation_stored_with_the_change() {
    let (api, _, sn) = setup().await;
    let r = api.post("/v1/nics", json!({"subnet_id": sn})).await;
    let op = r.accepted().clone();
    assert_eq!(op["action"], "create");
    assert_eq!(op["target"]["kind"], "nic");
    let nic_id = op["target"]["id"].as_str().unwrap();
    assert_eq!(op["target"]["href"], format!("/v1/nics/{nic_id}"));
    assert_eq!(op["nodes"], json!([]));
    assert_eq!(op["tenant_id"], api.admin.tenant_id.as_str());
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    // The operation and the NIC committed in one transaction: the
    // operation's revision is the NIC's.
    let nic = api.get(format!("/v1/nics/{nic_id}")).await;
    assert_eq!(nic.ok(200)["revision"], op["revision"]);
    let got = api.get(r.headers[header::LOCATION].to_str().unwrap()).await;
    assert_eq!(got.ok(200), &op, "GET shows what the 202 said");
    // Stored without the fields filled in when answered.
    let kv = api
        .store
        .get(&op_keys::operation(op["id"].as_str().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kv.create_revision, op["revision"].as_u64().unwrap());
    let stored: Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored["revision"], 0);
    // The audit record says 202.
    let audit = api.get("/v1/audit").await;
    let last = audit.ok(200).as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["path"].as_str(), last["status"].as_u64()),
        (Some("/v1/nics"), Some(202))
    );
}

#[tokio::test]
async fn every_mutation_of_nics_groups_and_rules_is_an_operation() {
    let (api, vpc, sn) = setup().await;
    let nic = api.nic(json!({"subnet_id": sn})).await;
    let nic_uri = format!("/v1/nics/{}", nic["id"].as_str().unwrap());
    let op = api.patch(&nic_uri, json!({"name": "x"})).await;
    assert_eq!(op.accepted()["action"], "update");
    // A PATCH that changes nothing is an operation too (flowctl ends it
    // at once); the NIC keeps its revision.
    let before = api.get(&nic_uri).await.ok(200)["revision"].clone();
    api.patch(&nic_uri, json!({"name": "x"})).await.accepted();
    assert_eq!(api.get(&nic_uri).await.ok(200)["revision"], before);

    let g = api
        .post("/v1/security-groups", json!({"vpc_id": vpc, "name": "g"}))
        .await;
    let g_op = g.accepted().clone();
    assert_eq!(g_op["target"]["kind"], "security_group");
    let gid = g_op["target"]["id"].as_str().unwrap().to_string();
    let r = api
        .post(
            format!("/v1/security-groups/{gid}/rules"),
            json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 22}),
        )
        .await;
    let rule_op = r.accepted().clone();
    assert_eq!(rule_op["target"]["kind"], "security_group_rule");
    let rule = api.applied(r).await;
    assert_eq!(rule.ok(200)["port_range_min"], 22);
    let rid = rule_op["target"]["id"].as_str().unwrap();
    api.patch(
        format!("/v1/security-groups/{gid}"),
        json!({"description": "d"}),
    )
    .await
    .accepted();
    let d = api
        .delete(format!("/v1/security-groups/{gid}/rules/{rid}"))
        .await;
    assert_eq!(d.accepted()["action"], "delete");
    let d = api.delete(format!("/v1/security-groups/{gid}")).await;
    assert_eq!(api.applied(d).await.status, 404, "gone at once");
    api.delete(&nic_uri).await.accepted();
    // A repeated delete is 404, as before (no second operation).
    api.delete(&nic_uri).await.problem(404, &[]);
}

#[tokio::test]
async fn lists_are_tenant_scoped_filtered_and_paged() {
    let (api, _, sn) = setup().await;
    let mut mine = vec![];
    for _ in 0..5 {
        let r = api.post("/v1/nics", json!({"subnet_id": sn})).await;
        mine.push(r.accepted().clone());
    }
    let nic0 = mine[0]["target"]["id"].as_str().unwrap().to_string();
    let patched = api
        .patch(format!("/v1/nics/{nic0}"), json!({"name": "p"}))
        .await
        .accepted()
        .clone();

    // Another tenant sees none of them, and each is 404 to it.
    let t = api.tenant("other").await;
    let (_, c) = api.principal("o", "member", &t).await;
    let other = api.with_creds(Some(c));
    assert_eq!(other.get("/v1/operations").await.ok(200), &json!([]));
    other
        .get(format!(
            "/v1/operations/{}",
            patched["id"].as_str().unwrap()
        ))
        .await
        .problem(404, &[]);
    api.get("/v1/operations/op-zz").await.problem(404, &[]);

    // Five creates and a patch, after the setup's subnet create.
    let all = api.get("/v1/operations").await.ok(200).clone();
    assert_eq!(all.as_array().unwrap().len(), 7);
    let by_target = api
        .get(format!("/v1/operations?target_id={nic0}"))
        .await
        .ok(200)
        .clone();
    let mut want = vec![
        mine[0]["id"].as_str().unwrap().to_string(),
        patched["id"].as_str().unwrap().to_string(),
    ];
    want.sort();
    assert_eq!(ids(&by_target), want);
    // Nothing advances them here (no flowctl): all pending.
    let pending = api
        .get("/v1/operations?state=pending&target_kind=nic")
        .await;
    assert_eq!(pending.ok(200).as_array().unwrap().len(), 6);
    let none = api.get("/v1/operations?state=succeeded").await;
    assert_eq!(none.ok(200), &json!([]));
    api.get("/v1/operations?state=done")
        .await
        .problem(400, &["state", "done"]);

    // Pages of 4: every operation once.
    let mut seen = vec![];
    let mut uri = "/v1/operations?page_size=4".to_string();
    loop {
        let r = api.get(&uri).await;
        seen.extend(ids(r.ok(200)));
        let Some(token) = r.headers.get("next-page-token") else {
            break;
        };
        uri = format!(
            "/v1/operations?page_size=4&page_token={}",
            token.to_str().unwrap()
        );
    }
    let mut every = ids(&all);
    every.sort();
    assert_eq!(seen, every);
}

#[tokio::test]
async fn an_idempotent_replay_is_the_same_202_and_the_same_operation() {
    let (api, _, sn) = setup().await;
    let body = serde_json::to_vec(&json!({"subnet_id": sn})).unwrap();
    let mut answers = vec![];
    for _ in 0..3 {
        let mut req = api.request(Method::POST, "/v1/nics", Some("application/json"), &body);
        req.headers_mut()
            .insert("idempotency-key", "nic-op-1".parse().unwrap());
        answers.push(api.send(req).await);
    }
    let first = answers[0].accepted().clone();
    for again in &answers[1..] {
        assert_eq!(again.accepted(), &first);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(
            again.headers[header::LOCATION],
            answers[0].headers[header::LOCATION]
        );
    }
    assert_eq!(
        api.get("/v1/nics").await.ok(200).as_array().unwrap().len(),
        1
    );
    // The setup's subnet create, and this one NIC create.
    assert_eq!(
        api.get("/v1/operations")
            .await
            .ok(200)
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn callback_urls_are_checked_and_shown() {
    let (api, vpc, sn) = setup().await;
    for bad in [
        "ftp://x/",
        "not a url",
        "http://user:pw@example.com/",
        "http://:80/",
    ] {
        api.unchanged(|| api.post("/v1/nics", json!({"subnet_id": sn, "callback_url": bad})))
            .await
            .problem(422, &["callback_url"])
            .field("callback_url");
    }
    api.unchanged(|| api.post("/v1/nics", json!({"subnet_id": sn, "callback_url": 5})))
        .await
        .problem(400, &[])
        .field("callback_url");
    let r = api
        .post(
            "/v1/nics",
            json!({"subnet_id": sn, "callback_url": "https://hooks.example.com/ops"}),
        )
        .await;
    let op = r.accepted();
    assert_eq!(op["callback_url"], "https://hooks.example.com/ops");
    assert_eq!(op["callback"], Value::Null, "the 202 shows no delivery yet");
    let got = api
        .get(format!("/v1/operations/{}", op["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.ok(200)["callback"]["state"], "pending");
    assert_eq!(got.ok(200)["callback"]["attempts"], 0);
    // On DELETE (no body) it is a query parameter; on a rule, a body field
    // beside the rule's.
    let nic = op["target"]["id"].as_str().unwrap();
    api.unchanged(|| api.delete(format!("/v1/nics/{nic}?callback_url=gopher://x")))
        .await
        .problem(422, &["callback_url"]);
    let g = api
        .post("/v1/security-groups", json!({"vpc_id": vpc, "name": "g"}))
        .await;
    let gid = g.accepted()["target"]["id"].as_str().unwrap().to_string();
    let r = api
        .post(
            format!("/v1/security-groups/{gid}/rules"),
            json!({"direction": "egress", "callback_url": "http://127.0.0.1:9/cb"}),
        )
        .await;
    assert_eq!(r.accepted()["callback_url"], "http://127.0.0.1:9/cb");
    let r = api
        .delete(format!(
            "/v1/nics/{nic}?callback_url=http%3A%2F%2F127.0.0.1%3A9%2Fcb"
        ))
        .await;
    assert_eq!(r.accepted()["callback_url"], "http://127.0.0.1:9/cb");
}

#[tokio::test]
async fn the_callback_secret_is_read_and_rotated_by_tenant_admins_only() {
    let api = Api::new().await;
    let t = api.tenant("acme").await;
    let (_, admin) = api.principal("boss", "tenant_admin", &t).await;
    let (_, member) = api.principal("dev", "member", &t).await;
    let (admin, member) = (api.with_creds(Some(admin)), api.with_creds(Some(member)));
    let uri = format!("/v1/tenants/{t}/callback-secret");
    let s1 = admin.get(&uri).await.ok(200).clone();
    assert!(s1["secret"].as_str().unwrap().starts_with("whsec-"));
    assert_eq!(admin.get(&uri).await.ok(200), &s1, "stable until rotated");
    member.get(&uri).await.problem(403, &["tenant_admin"]);
    let other = api.tenant("other").await;
    admin
        .get(format!("/v1/tenants/{other}/callback-secret"))
        .await
        .problem(404, &[]);
    let s2 = admin.post(&uri, json!({})).await.ok(201).clone();
    assert_ne!(s2["secret"], s1["secret"]);
    assert_eq!(admin.get(&uri).await.ok(200)["secret"], s2["secret"]);
    // The system admin may too; sealed at rest.
    assert_eq!(api.get(&uri).await.ok(200)["secret"], s2["secret"]);
    let kv = api
        .store
        .get(&op_keys::callback_secret(&t))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&kv.value);
    assert!(!raw.contains(s2["secret"].as_str().unwrap()));
}

#[tokio::test]
async fn a_group_shows_whether_its_last_change_is_programmed() {
    let (api, vpc, _) = setup().await;
    let r = api
        .post("/v1/security-groups", json!({"vpc_id": vpc, "name": "g"}))
        .await;
    let op = r.accepted().clone();
    let gid = op["target"]["id"].as_str().unwrap().to_string();
    let uri = format!("/v1/security-groups/{gid}");
    let g = api.get(&uri).await.ok(200).clone();
    assert_eq!(g["status"], "programming", "{g:#}");
    assert_eq!(g["last_operation_id"], op["id"]);
    // flowctl ends the operation (written here as it would be).
    let set_state = |id: &str, state: &str| {
        let (store, id, state) = (api.store.clone(), id.to_string(), state.to_string());
        async move {
            let key = op_keys::operation(&id);
            let kv = store.get(&key).await.unwrap().unwrap();
            let mut v: Value = serde_json::from_slice(&kv.value).unwrap();
            v["state"] = json!(state);
            store
                .put(&key, serde_json::to_vec(&v).unwrap())
                .await
                .unwrap();
        }
    };
    set_state(op["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(api.get(&uri).await.ok(200)["status"], "programmed");
    // A rule change is the group's change.
    let r = api
        .post(format!("{uri}/rules"), json!({"direction": "egress"}))
        .await;
    let rule_op = r.accepted()["id"].as_str().unwrap().to_string();
    let listed = api.get(format!("/v1/security-groups?vpc_id={vpc}")).await;
    let mine = listed
        .ok(200)
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == gid.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["status"], "programming");
    assert_eq!(mine["last_operation_id"], rule_op.as_str());
    set_state(&rule_op, "failed").await;
    assert_eq!(api.get(&uri).await.ok(200)["status"], "failed");
    // The default group, never changed: programmed.
    let groups = api.get(format!("/v1/security-groups?vpc_id={vpc}")).await;
    let default = groups
        .ok(200)
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["is_default"] == true)
        .unwrap()
        .clone();
    assert_eq!(default["status"], "programmed");
    // Deleting the group leaves no status key behind.
    api.delete(&uri).await.accepted();
    assert!(api
        .store
        .get(&op_keys::last_op(&gid))
        .await
        .unwrap()
        .is_none());
}
