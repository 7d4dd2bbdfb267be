use serde_json::json;

use super::Api;

#[tokio::test]
async fn subnet_defaults_and_updates() {
    let api = Api::new().await;
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let r = api
        .post(
            "/v1/subnets",
            json!({"vpc_id": vpc, "name": "front", "cidr": "10.0.1.0/24"}),
        )
        .await;
    let s = api.applied(r).await.ok(200).clone();
    let id = s["id"].as_str().unwrap();
    assert!(id.starts_with("subnet-"));
    assert_eq!(s["vpc_id"], vpc.as_str());
    assert_eq!(s["gateway_ip"], "10.0.1.1");
    assert_eq!(s["mtu"], 1450);
    assert_eq!(s["dns_servers"], json!([]));
    assert!(s["gateway_mac"].as_str().unwrap().starts_with("02:"));

    let s2 = api
        .post(
            "/v1/subnets",
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/24", "gateway_ip": "10.0.2.254",
                   "mtu": 8950, "dns_servers": ["10.0.0.2"]}),
        )
        .await;
    let s2 = api.applied(s2).await.ok(200).clone();
    assert_eq!(s2["gateway_ip"], "10.0.2.254");
    assert_eq!(s2["name"], s2["id"]);
    assert_ne!(s2["gateway_mac"], s["gateway_mac"]);

    let p = api
        .patch(
            &format!("/v1/subnets/{id}"),
            json!({"name": "front2", "dns_servers": ["1.1.1.1", "8.8.8.8"]}),
        )
        .await;
    let p = api.applied(p).await;
    let p = p.ok(200);
    assert_eq!(p["name"], "front2");
    assert_eq!(p["dns_servers"], json!(["1.1.1.1", "8.8.8.8"]));
    assert_eq!(p["cidr"], "10.0.1.0/24");
    api.unchanged(|| api.patch(format!("/v1/subnets/{id}"), json!({"cidr": "10.0.9.0/24"})))
        .await
        .problem(400, &["cidr"])
        .field("cidr");

    // Filter by VPC.
    let other = api.vpc("w", &["10.0.0.0/16"]).await;
    let s3 = api.subnet(&other, "10.0.1.0/24").await;
    let mine = api.get(&format!("/v1/subnets?vpc_id={vpc}")).await;
    assert_eq!(mine.ok(200).as_array().unwrap().len(), 2);
    let theirs = api.get(&format!("/v1/subnets?vpc_id={other}")).await;
    assert_eq!(theirs.ok(200)[0]["id"], s3.as_str());
    api.get("/v1/subnets?vpc=x").await.problem(400, &["vpc"]);
}

#[tokio::test]
async fn subnet_validation() {
    let api = Api::new().await;
    let vpc = api.vpc("v", &["10.0.0.0/16", "192.168.0.0/24"]).await;
    let existing = api.subnet(&vpc, "10.0.1.0/24").await;
    let cases = [
        (
            json!({"vpc_id": vpc, "cidr": "10.0.1.128/25"}),
            409,
            "cidr",
            vec!["overlaps", existing.as_str(), "10.0.1.0/24"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.0.0/20"}),
            409,
            "cidr",
            vec!["overlaps", existing.as_str()],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.1.0.0/24"}),
            422,
            "cidr",
            vec!["not inside", "10.0.0.0/16"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "192.168.0.0/23"}),
            422,
            "cidr",
            vec!["not inside"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/244"}),
            422,
            "cidr",
            vec!["not an IPv4 CIDR"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.7/24"}),
            422,
            "cidr",
            vec!["host bits"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/24", "gateway_ip": "10.0.2.0"}),
            422,
            "gateway_ip",
            vec!["network address"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/24", "gateway_ip": "10.0.2.255"}),
            422,
            "gateway_ip",
            vec!["broadcast"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/24", "gateway_ip": "10.0.3.1"}),
            422,
            "gateway_ip",
            vec!["outside"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/24", "mtu": 9000}),
            422,
            "mtu",
            vec!["576..=8950"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/24", "mtu": 100}),
            422,
            "mtu",
            vec!["576"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/24", "mtu": -1}),
            400,
            "mtu",
            vec!["mtu"],
        ),
        (
            json!({"vpc_id": vpc, "cidr": "10.0.2.0/24", "dns_servers": ["x"]}),
            422,
            "dns_servers[0]",
            vec!["IPv4"],
        ),
        (
            json!({"vpc_id": "vpc-0000000000000000", "cidr": "10.0.2.0/24"}),
            422,
            "vpc_id",
            vec!["does not exist"],
        ),
        (
            json!({"vpc_id": "../../etc", "cidr": "10.0.2.0/24"}),
            422,
            "vpc_id",
            vec!["does not exist"],
        ),
        (
            json!({"cidr": "10.0.2.0/24"}),
            400,
            "vpc_id",
            vec!["missing field"],
        ),
    ];
    for (body, status, field, words) in cases {
        api.unchanged(|| api.post("/v1/subnets", body.clone()))
            .await
            .problem(status, &words)
            .field(field);
    }
    // Adjacent and in the VPC's other CIDR are fine.
    api.subnet(&vpc, "10.0.0.0/24").await;
    api.subnet(&vpc, "192.168.0.0/24").await;
}

#[tokio::test]
async fn a_subnet_with_nics_cannot_be_deleted() {
    let api = Api::new().await;
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/24").await;
    let a = api.nic(json!({"subnet_id": sn})).await;
    let b = api.nic(json!({"subnet_id": sn})).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    api.unchanged(|| api.delete(format!("/v1/subnets/{sn}")))
        .await
        .problem(409, &[&sn, "still has 2 NICs", a, b, "delete them first"]);
    assert_eq!(api.delete(&format!("/v1/nics/{a}")).await.status, 202);
    api.unchanged(|| api.delete(format!("/v1/subnets/{sn}")))
        .await
        .problem(409, &["1 NICs", b]);
    assert_eq!(api.delete(&format!("/v1/nics/{b}")).await.status, 202);
    assert_eq!(api.delete(&format!("/v1/subnets/{sn}")).await.status, 202);
    api.get(&format!("/v1/subnets/{sn}"))
        .await
        .problem(404, &[&sn]);
}
