//! Per-tenant quotas: defaults, admin-set limits, a clear 409 naming the
//! quota, and the limit held under concurrent creates.

use serde_json::{json, Value};

use super::Api;

/// A tenant, a member's API in it, and the tenant id.
async fn member(api: &Api, name: &str) -> (Api, String) {
    let t = api.tenant(name).await;
    let (_, c) = api.principal(&format!("{name}-m"), "member", &t).await;
    (api.with_creds(Some(c)), t)
}

async fn quotas(api: &Api, t: &str) -> Value {
    api.get(format!("/v1/tenants/{t}/quotas"))
        .await
        .ok(200)
        .clone()
}

#[tokio::test]
async fn defaults_are_shown_and_only_a_system_admin_changes_them() {
    let api = Api::new().await;
    let (m, t) = member(&api, "t1").await;
    let q = quotas(&m, &t).await;
    assert_eq!(q["limits"]["vpcs"], 100);
    assert_eq!(q["limits"]["security_group_rules"], 5000);
    assert_eq!(q["usage"]["vpcs"], 0);
    m.patch(format!("/v1/tenants/{t}/quotas"), json!({"vpcs": 1000}))
        .await
        .problem(403, &["system admin"]);
    let (other, _) = member(&api, "t2").await;
    other
        .get(format!("/v1/tenants/{t}/quotas"))
        .await
        .problem(404, &["not found"]);
    let q = api
        .patch(
            format!("/v1/tenants/{t}/quotas"),
            json!({"vpcs": 3, "nics": 7}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(
        (q["limits"]["vpcs"].as_u64(), q["limits"]["nics"].as_u64()),
        (Some(3), Some(7))
    );
    assert_eq!(q["limits"]["subnets"], 500, "the others kept");
    api.unchanged(|| {
        api.patch(
            format!("/v1/tenants/{t}/quotas"),
            json!({"vpcs": 2_000_000_000u64}),
        )
    })
    .await
    .problem(422, &["at most"]);
    api.patch(format!("/v1/tenants/{t}/quotas"), json!({"bogus": 1}))
        .await
        .problem(400, &["bogus"]);
    // The bootstrap tenant (the cloud's own) is not capped.
    let q = quotas(&api, &api.admin.tenant_id).await;
    assert_eq!(q["limits"]["vpcs"], 1_000_000_000u64);
}

#[tokio::test]
async fn exceeding_a_quota_is_409_naming_it_and_a_delete_frees_room() {
    let api = Api::new().await;
    let (m, t) = member(&api, "t").await;
    api.patch(
        format!("/v1/tenants/{t}/quotas"),
        json!({"vpcs": 2, "subnets": 1}),
    )
    .await
    .ok(200);
    let a = m.vpc("a", &["10.0.0.0/16"]).await;
    m.vpc("b", &["10.1.0.0/16"]).await;
    let r = m
        .unchanged(|| m.post("/v1/vpcs", json!({"name": "c", "cidrs": ["10.2.0.0/16"]})))
        .await;
    r.problem(409, &["quota `vpcs`", "2 of 2"]);
    assert_eq!(r.body["type"], "urn:stacknet:problem:quota-exceeded");
    m.subnet(&a, "10.0.1.0/24").await;
    m.unchanged(|| m.post("/v1/subnets", json!({"vpc_id": a, "cidr": "10.0.2.0/24"})))
        .await
        .problem(409, &["quota `subnets`"]);
    let q = quotas(&m, &t).await;
    assert_eq!(
        (q["usage"]["vpcs"].as_u64(), q["usage"]["subnets"].as_u64()),
        (Some(2), Some(1))
    );
    // A VPC's default group is part of it: not counted.
    assert_eq!(q["usage"]["security_groups"], 0);
    assert_eq!(q["usage"]["security_group_rules"], 0);
    let b = m.get("/v1/vpcs?name=b").await.ok(200)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    m.delete(format!("/v1/vpcs/{b}")).await.ok(204);
    assert_eq!(quotas(&m, &t).await["usage"]["vpcs"], 1);
    m.vpc("c", &["10.2.0.0/16"]).await;
}

#[tokio::test]
async fn rules_and_nics_count_and_give_back() {
    let api = Api::new().await;
    let (m, t) = member(&api, "t").await;
    let vpc = m.vpc("a", &["10.0.0.0/16"]).await;
    let sn = m.subnet(&vpc, "10.0.1.0/24").await;
    let used = quotas(&m, &t).await["usage"]["security_group_rules"]
        .as_u64()
        .unwrap();
    api.patch(
        format!("/v1/tenants/{t}/quotas"),
        json!({"security_group_rules": used + 1, "nics": 1}),
    )
    .await
    .ok(200);
    let sg = m
        .post("/v1/security-groups", json!({"vpc_id": vpc, "name": "g"}))
        .await
        .accepted()["target"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rule = |port: u16| {
        json!({"direction": "ingress", "protocol": "tcp",
        "port_range_min": port, "port_range_max": port})
    };
    let r1 = m
        .post(format!("/v1/security-groups/{sg}/rules"), rule(22))
        .await;
    let r1 = m.applied(r1).await.ok(200).clone();
    m.unchanged(|| m.post(format!("/v1/security-groups/{sg}/rules"), rule(80)))
        .await
        .problem(409, &["quota `security_group_rules`"]);
    m.delete(format!(
        "/v1/security-groups/{sg}/rules/{}",
        r1["id"].as_str().unwrap()
    ))
    .await
    .accepted();
    m.post(format!("/v1/security-groups/{sg}/rules"), rule(80))
        .await
        .accepted();
    let nic = m.nic(json!({"subnet_id": sn})).await;
    m.unchanged(|| m.post("/v1/nics", json!({"subnet_id": sn})))
        .await
        .problem(409, &["quota `nics`"]);
    m.delete(format!("/v1/nics/{}", nic["id"].as_str().unwrap()))
        .await
        .accepted();
    m.nic(json!({"subnet_id": sn})).await;
}

#[tokio::test]
async fn concurrent_creates_stop_exactly_at_the_limit() {
    let api = Api::new().await;
    let (m, t) = member(&api, "t").await;
    api.patch(format!("/v1/tenants/{t}/quotas"), json!({"vpcs": 7}))
        .await
        .ok(200);
    let answers = futures::future::join_all((0..40).map(|i| {
        let m = m.clone();
        async move {
            m.post(
                "/v1/vpcs",
                json!({"name": format!("v{i}"), "cidrs": ["10.0.0.0/16"]}),
            )
            .await
        }
    }))
    .await;
    let ok = answers.iter().filter(|r| r.status == 201).count();
    for r in answers.iter().filter(|r| r.status != 201) {
        r.problem(409, &["quota `vpcs`"]);
    }
    assert_eq!(ok, 7);
    assert_eq!(m.get("/v1/vpcs").await.ok(200).as_array().unwrap().len(), 7);
    assert_eq!(quotas(&m, &t).await["usage"]["vpcs"], 7);
}

#[tokio::test]
async fn a_lowered_limit_holds_until_usage_is_under_it() {
    let api = Api::new().await;
    let (m, t) = member(&api, "t").await;
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(m.vpc(&format!("v{i}"), &[&format!("10.{i}.0.0/16")]).await);
    }
    // Usage 5, spread over shards with the default budgets; lower to 3.
    api.patch(format!("/v1/tenants/{t}/quotas"), json!({"vpcs": 3}))
        .await
        .ok(200);
    let create = |name: &'static str| {
        let m = m.clone();
        async move {
            m.post("/v1/vpcs", json!({"name": name, "cidrs": ["10.9.0.0/16"]}))
                .await
        }
    };
    create("x").await.problem(409, &["quota `vpcs`"]);
    for id in &ids[..2] {
        m.delete(format!("/v1/vpcs/{id}")).await.ok(204);
        // 4, then 3: still at or over the limit.
        create("x").await.problem(409, &["quota `vpcs`"]);
    }
    m.delete(format!("/v1/vpcs/{}", ids[2])).await.ok(204);
    create("x").await.ok(201);
    create("y").await.problem(409, &["quota `vpcs`"]);
    assert_eq!(quotas(&m, &t).await["usage"]["vpcs"], 3);
}
