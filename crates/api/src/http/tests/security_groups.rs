use serde_json::{json, Value};

use super::Api;

async fn setup() -> (Api, String, String) {
    let api = Api::new().await;
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/24").await;
    (api, vpc, sn)
}

async fn group(api: &Api, vpc: &str, name: &str, rules: Value) -> Value {
    let r = api
        .post(
            "/v1/security-groups",
            json!({"vpc_id": vpc, "name": name, "rules": rules}),
        )
        .await;
    api.applied(r).await.ok(200).clone()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_vpc_comes_with_its_default_group_and_nics_join_it() {
    let (api, vpc, sn) = setup().await;
    let v = api.get(format!("/v1/vpcs/{vpc}")).await.ok(200).clone();
    let sg = v["default_security_group_id"].as_str().unwrap().to_string();
    let groups = api
        .get(format!("/v1/security-groups?vpc_id={vpc}"))
        .await
        .ok(200)
        .clone();
    assert_eq!(groups.as_array().unwrap().len(), 1);
    let g = &groups[0];
    assert_eq!(g["id"], sg.as_str());
    assert_eq!(g["name"], "default");
    assert_eq!(g["is_default"], true);
    let rules = g["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    let egress = rules.iter().find(|r| r["direction"] == "egress").unwrap();
    assert_eq!(egress["protocol"], "any");
    assert_eq!(egress.get("remote_cidr"), None, "anyone");
    let ingress = rules.iter().find(|r| r["direction"] == "ingress").unwrap();
    assert_eq!(
        ingress["remote_group_id"],
        sg.as_str(),
        "from its own members"
    );

    let nic = api.nic(json!({"subnet_id": sn})).await;
    assert_eq!(nic["port_security"], true);
    assert_eq!(nic["security_groups"], json!([sg]));
    assert_eq!(nic["allowed_address_pairs"], json!([]));
    let bare = api
        .nic(json!({"subnet_id": sn, "security_groups": []}))
        .await;
    assert_eq!(bare["security_groups"], json!([]));
    let open = api
        .nic(json!({"subnet_id": sn, "port_security": false}))
        .await;
    assert_eq!(open["port_security"], false);
    assert_eq!(
        open["security_groups"],
        json!([]),
        "no default group without port security"
    );

    // The default group goes only with its VPC.
    api.unchanged(|| api.delete(format!("/v1/security-groups/{sg}")))
        .await
        .problem(409, &["default", &vpc]);
    for n in [&nic, &bare, &open] {
        api.delete(format!("/v1/nics/{}", id(n))).await.ok(202);
    }
    api.delete(format!("/v1/subnets/{sn}")).await.ok(202);
    api.delete(format!("/v1/vpcs/{vpc}")).await.ok(204);
    api.get(format!("/v1/security-groups/{sg}"))
        .await
        .problem(404, &[&sg]);
    assert_eq!(
        api.get("/v1/security-groups").await.ok(200),
        &json!([]),
        "nothing left behind"
    );
    let kvs = api.snapshot().await;
    assert!(
        kvs.iter().all(|(k, _, _)| !k.contains(&sg)),
        "no index or guard key of the group left: {:?}",
        kvs.iter().map(|(k, _, _)| k).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_rules_get_a_clear_4xx_and_change_nothing() {
    let (api, vpc, _) = setup().await;
    let other_vpc = api.vpc("other", &["10.0.0.0/16"]).await;
    let foreign = group(&api, &other_vpc, "theirs", json!([])).await;
    let web = group(&api, &vpc, "web", json!([])).await;
    let rules = format!("/v1/security-groups/{}/rules", id(&web));
    let cases = [
        (
            json!({"direction": "ingress", "protocol": "icmp", "port_range_min": 1}),
            422,
            "port_range_min",
            vec!["tcp or udp", "icmp"],
        ),
        (
            json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80}),
            422,
            "port_range_min",
            vec!["90", "greater than", "80"],
        ),
        (
            json!({"direction": "ingress", "remote_cidr": "2001:db8::/64"}),
            422,
            "remote_cidr",
            vec!["IPv6"],
        ),
        (
            json!({"direction": "ingress", "remote_cidr": "banana"}),
            422,
            "remote_cidr",
            vec!["banana"],
        ),
        (
            json!({"direction": "ingress", "remote_group_id": "sg-0123456789abcdef"}),
            422,
            "remote_group_id",
            vec!["sg-0123456789abcdef", "does not exist"],
        ),
        (
            json!({"direction": "ingress", "remote_group_id": id(&foreign)}),
            422,
            "remote_group_id",
            vec!["not in VPC", vpc.as_str()],
        ),
        (
            json!({"direction": "sideways"}),
            400,
            "direction",
            vec!["sideways"],
        ),
        (
            json!({"protocol": "tcp"}),
            422,
            "direction",
            vec!["required"],
        ),
        (
            json!({"direction": "egress", "protocol": "udp", "port_range_min": 70000}),
            400,
            "port_range_min",
            vec![],
        ),
    ];
    for (body, status, field, words) in cases {
        api.unchanged(|| api.post(&rules, body.clone()))
            .await
            .problem(status, &words)
            .field(field);
    }
    // The same rule twice is a conflict; a rule of a group in the request
    // body names its index.
    let ok = json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 22});
    let r = api.post(&rules, ok.clone()).await;
    let r = api.applied(r).await.ok(200).clone();
    assert_eq!(r["port_range_max"], 22);
    api.unchanged(|| api.post(&rules, ok.clone()))
        .await
        .problem(409, &["already has this rule", r["id"].as_str().unwrap()]);
    api.unchanged(|| {
        api.post(
            "/v1/security-groups",
            json!({"vpc_id": vpc, "name": "x", "rules": [ok, {"direction": "egress", "protocol": "icmp", "icmp_code": 3}]}),
        )
    })
    .await
    .problem(422, &["icmp_type"])
    .field("rules[1].icmp_code");
    api.unchanged(|| {
        api.post(
            "/v1/security-groups",
            json!({"vpc_id": vpc, "name": "web", "rules": []}),
        )
    })
    .await
    .problem(409, &["web", "already"])
    .field("name");

    // Rules are removed by id.
    let rid = r["id"].as_str().unwrap();
    api.delete(format!("{rules}/{rid}")).await.ok(202);
    api.delete(format!("{rules}/{rid}"))
        .await
        .problem(404, &[rid]);
    let g = api.get(format!("/v1/security-groups/{}", id(&web))).await;
    assert_eq!(g.ok(200)["rules"], json!([]));
}

#[tokio::test]
async fn nic_groups_port_security_and_address_pairs() {
    let (api, vpc, sn) = setup().await;
    let other_vpc = api.vpc("other", &["10.0.0.0/16"]).await;
    let foreign = id(&group(&api, &other_vpc, "theirs", json!([])).await);
    let web = id(&group(&api, &vpc, "web", json!([])).await);

    let cases = [
        (
            json!({"subnet_id": sn, "security_groups": [foreign]}),
            "security_groups[0]",
            vec!["not in VPC"],
        ),
        (
            json!({"subnet_id": sn, "security_groups": [web, web]}),
            "security_groups[1]",
            vec!["twice"],
        ),
        (
            json!({"subnet_id": sn, "port_security": false, "security_groups": [web]}),
            "security_groups",
            vec!["port_security off"],
        ),
        (
            json!({"subnet_id": sn, "port_security": false,
                   "allowed_address_pairs": [{"ip_address": "10.0.1.100"}]}),
            "allowed_address_pairs",
            vec!["port_security off"],
        ),
        (
            json!({"subnet_id": sn, "allowed_address_pairs": [{"ip_address": "fe80::1"}]}),
            "allowed_address_pairs[0].ip_address",
            vec!["IPv6"],
        ),
        (
            json!({"subnet_id": sn,
                   "allowed_address_pairs": [{"ip_address": "10.0.1.100", "mac_address": "01:00:5e:00:00:01"}]}),
            "allowed_address_pairs[0].mac_address",
            vec!["multicast"],
        ),
    ];
    for (body, field, words) in cases {
        api.unchanged(|| api.post("/v1/nics", body.clone()))
            .await
            .problem(422, &words)
            .field(field);
    }

    let nic = api
        .nic(json!({"subnet_id": sn, "security_groups": [web],
            "allowed_address_pairs": [{"ip_address": "10.0.1.96/28", "mac_address": "02:00:00:00:00:99"}]}))
        .await;
    assert_eq!(nic["security_groups"], json!([web]));
    assert_eq!(
        nic["allowed_address_pairs"],
        json!([{"ip_address": "10.0.1.96/28", "mac_address": "02:00:00:00:00:99"}])
    );
    let uri = format!("/v1/nics/{}", id(&nic));
    // Turning port security off needs the groups and pairs gone too.
    api.unchanged(|| api.patch(&uri, json!({"port_security": false})))
        .await
        .problem(422, &["port_security off"])
        .field("security_groups");
    let off = api
        .patch(
            &uri,
            json!({"port_security": false, "security_groups": [], "allowed_address_pairs": []}),
        )
        .await;
    let off = api.applied(off).await.ok(200).clone();
    assert_eq!(off["port_security"], false);
    assert_eq!(off["security_groups"], json!([]));
    let on = api
        .patch(
            &uri,
            json!({"port_security": true, "security_groups": [web]}),
        )
        .await;
    let on = api.applied(on).await.ok(200).clone();
    assert_eq!(on["security_groups"], json!([web]));
    api.unchanged(|| api.patch(&uri, json!({"security_groups": [foreign]})))
        .await
        .problem(422, &["not in VPC"]);
}

#[tokio::test]
async fn a_group_in_use_is_not_deleted() {
    let (api, vpc, sn) = setup().await;
    let db = id(&group(&api, &vpc, "db", json!([])).await);
    let app = group(
        &api,
        &vpc,
        "app",
        json!([{"direction": "egress", "protocol": "tcp", "port_range_min": 5432, "remote_group_id": db}]),
    )
    .await;
    let nic = api
        .nic(json!({"subnet_id": sn, "security_groups": [db]}))
        .await;
    api.unchanged(|| api.delete(format!("/v1/security-groups/{db}")))
        .await
        .problem(409, &["still used", &id(&nic), &id(&app)]);
    api.patch(
        format!("/v1/nics/{}", id(&nic)),
        json!({"security_groups": []}),
    )
    .await
    .ok(202);
    api.unchanged(|| api.delete(format!("/v1/security-groups/{db}")))
        .await
        .problem(409, &[&id(&app)]);
    api.delete(format!("/v1/security-groups/{}", id(&app)))
        .await
        .ok(202);
    api.delete(format!("/v1/security-groups/{db}"))
        .await
        .ok(202);

    // A VPC with a group of its own left is not deleted.
    let extra = id(&group(&api, &vpc, "extra", json!([])).await);
    api.delete(format!("/v1/nics/{}", id(&nic))).await.ok(202);
    api.delete(format!("/v1/subnets/{sn}")).await.ok(202);
    api.unchanged(|| api.delete(format!("/v1/vpcs/{vpc}")))
        .await
        .problem(409, &["security groups", &extra]);
    api.delete(format!("/v1/security-groups/{extra}"))
        .await
        .ok(202);
    api.delete(format!("/v1/vpcs/{vpc}")).await.ok(204);
}

#[tokio::test]
async fn a_group_of_a_thousand_rules_is_created_in_one_request() {
    let (api, vpc, _) = setup().await;
    let rules: Vec<Value> = (0..1000)
        .map(|i| json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 10000 + i}))
        .collect();
    let g = group(&api, &vpc, "big", json!(rules)).await;
    assert_eq!(g["rules"].as_array().unwrap().len(), 1000);
    let r = api
        .post(
            format!("/v1/security-groups/{}/rules", id(&g)),
            json!({"direction": "egress"}),
        )
        .await;
    r.problem(409, &["1000 rules"]);
}
