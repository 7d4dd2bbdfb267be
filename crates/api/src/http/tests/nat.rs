//! External networks, EIPs, NAT gateways and node drain (issue 6), and the
//! bad input of its scenario 6: each refusal is a clear 4xx that changes
//! nothing.

use serde_json::{json, Value};

use super::Api;

/// Nodes c1 (compute, attached), c2 (compute, not attached), g1 and g2
/// (gateway, attached); an external network over them with a pool of
/// `pool` addresses; a VPC attached to it with a subnet and a NIC on c1.
struct World {
    api: Api,
    net: String,
    vpc: String,
    subnet: String,
    nic: String,
}

async fn gateway_node(api: &Api, name: &str, ip: &str) {
    api.node(name, "default", ip).await;
    api.patch(format!("/v1/nodes/{name}"), json!({"roles": ["gateway"]}))
        .await
        .ok(202);
}

async fn world(pool_last: &str) -> World {
    let api = Api::new().await;
    api.node("c1", "default", "192.0.2.11").await;
    api.node("c2", "default", "192.0.2.12").await;
    gateway_node(&api, "g1", "192.0.2.21").await;
    gateway_node(&api, "g2", "192.0.2.22").await;
    let net = api
        .post(
            "/v1/external-networks",
            json!({"name": "internet", "physnet": "public", "cidr": "203.0.113.0/24",
                   "gateway_ip": "203.0.113.1",
                   "pool": [{"first": "203.0.113.10", "last": pool_last}],
                   "nodes": ["c1", "g1", "g2"]}),
        )
        .await;
    let net = api.applied(net).await.ok(200)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let vpc = api.vpc("web", &["10.0.0.0/16"]).await;
    api.patch(
        format!("/v1/vpcs/{vpc}"),
        json!({"external_network_ids": [net]}),
    )
    .await
    .ok(200);
    let subnet = api.subnet(&vpc, "10.0.1.0/24").await;
    let nic = api.nic(json!({"subnet_id": subnet, "node": "c1"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    World {
        api,
        net,
        vpc,
        subnet,
        nic,
    }
}

async fn eip(api: &Api, net: &str, ip: Option<&str>) -> Value {
    let mut body = json!({"external_network_id": net});
    if let Some(ip) = ip {
        body["ip"] = json!(ip);
    }
    api.post("/v1/eips", body).await.ok(201).clone()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn external_networks_are_checked_and_read_by_everyone() {
    let api = Api::new().await;
    api.node("c1", "default", "192.0.2.11").await;
    let base = json!({"name": "internet", "physnet": "public", "cidr": "203.0.113.0/24",
                      "gateway_ip": "203.0.113.1",
                      "pool": [{"first": "203.0.113.10", "last": "203.0.113.20"}],
                      "nodes": ["c1"]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, field, words) in [
        (
            with("gateway_ip", json!("198.51.100.1")),
            "gateway_ip",
            vec!["outside"],
        ),
        (
            with(
                "pool",
                json!([{"first": "203.0.113.1", "last": "203.0.113.5"}]),
            ),
            "pool[0]",
            vec!["gateway"],
        ),
        (
            with(
                "pool",
                json!([{"first": "203.0.113.20", "last": "203.0.113.10"}]),
            ),
            "pool[0]",
            vec!["after"],
        ),
        (
            with("pool", json!([{"first": "198.51.100.5"}])),
            "pool[0]",
            vec!["outside"],
        ),
        (
            with(
                "pool",
                json!([{"first": "203.0.113.10", "last": "203.0.113.20"},
                       {"first": "203.0.113.15"}]),
            ),
            "pool[1]",
            vec!["overlaps"],
        ),
        (with("pool", json!([])), "pool", vec!["at least one"]),
        (
            with("cidr", json!("203.0.113.7/24")),
            "cidr",
            vec!["host bits"],
        ),
        (with("nodes", json!(["nope"])), "nodes[0]", vec!["nope"]),
        (with("physnet", json!("Not A Label")), "physnet", vec![]),
    ] {
        api.unchanged(|| api.post("/v1/external-networks", body.clone()))
            .await
            .problem(422, &words)
            .field(field);
    }
    // It reaches its attached nodes: 202 and an operation.
    let net = api.post("/v1/external-networks", base.clone()).await;
    let net = api.applied(net).await.ok(200).clone();
    assert_eq!(
        net["pool"],
        json!([{"first": "203.0.113.10", "last": "203.0.113.20"}])
    );
    api.unchanged(|| api.post("/v1/external-networks", base.clone()))
        .await
        .problem(409, &["internet"])
        .field("name");

    // A tenant member reads them but may not define one.
    let t = api.tenant("acme").await;
    let (_, creds) = api.principal("alice", "member", &t).await;
    let alice = api.with_creds(Some(creds));
    assert_eq!(
        alice.get("/v1/external-networks").await.ok(200)[0]["id"],
        net["id"]
    );
    alice
        .get(format!("/v1/external-networks/{}", id(&net)))
        .await
        .ok(200);
    alice
        .unchanged(|| alice.post("/v1/external-networks", with("name", json!("other"))))
        .await
        .problem(403, &["system admin"]);
    alice
        .delete(format!("/v1/external-networks/{}", id(&net)))
        .await
        .problem(403, &[]);
    api.delete(format!("/v1/external-networks/{}", id(&net)))
        .await
        .ok(202);
}

#[tokio::test]
async fn eips_allocate_bind_unbind_and_release() {
    let w = world("203.0.113.11").await;
    let api = &w.api;
    // A specific address, then the lowest free one; then the pool is empty.
    let a = eip(api, &w.net, Some("203.0.113.11")).await;
    assert_eq!(a["ip"], "203.0.113.11");
    assert!(a["mac"].as_str().unwrap().starts_with("02:"));
    assert!(a.get("nic_id").is_none());
    let b = eip(api, &w.net, None).await;
    assert_eq!(b["ip"], "203.0.113.10");
    api.unchanged(|| api.post("/v1/eips", json!({"external_network_id": w.net})))
        .await
        .problem(409, &["exhausted", &w.net])
        .field("external_network_id");
    api.unchanged(|| {
        api.post(
            "/v1/eips",
            json!({"external_network_id": w.net, "ip": "203.0.113.50"}),
        )
    })
    .await
    .problem(422, &["not in the EIP pool"])
    .field("ip");
    api.unchanged(|| {
        api.post(
            "/v1/eips",
            json!({"external_network_id": "extnet-0000000000000000"}),
        )
    })
    .await
    .problem(422, &["does not exist"])
    .field("external_network_id");
    api.unchanged(|| {
        api.post(
            "/v1/eips",
            json!({"external_network_id": w.net, "rate_limit_kbps": 0}),
        )
    })
    .await
    .problem(422, &[])
    .field("rate_limit_kbps");

    // Bind (an operation: it reaches the NIC's node), and the same bind
    // again: the same outcome.
    let ua = format!("/v1/eips/{}", id(&a));
    let bound = api
        .post(format!("{ua}/bind"), json!({"nic_id": w.nic}))
        .await;
    let op = bound.ok(202).clone();
    assert_eq!(op["target"]["href"], ua.as_str());
    assert_eq!(op["action"], "update");
    let bound = api.get(&ua).await.ok(200).clone();
    assert_eq!(bound["nic_id"], w.nic.as_str());
    assert_eq!(bound["node"], "c1");
    let again = api
        .post(format!("{ua}/bind"), json!({"nic_id": w.nic}))
        .await;
    assert_ne!(again.ok(202)["id"], op["id"], "a new operation");
    assert_eq!(api.get(&ua).await.ok(200)["node"], "c1");
    let listed = api.get(format!("/v1/eips?nic_id={}", w.nic)).await;
    assert_eq!(listed.ok(200).as_array().unwrap().len(), 1);

    // Scenario 6: already bound; a NIC holds one EIP.
    let other = api.nic(json!({"subnet_id": w.subnet, "node": "c1"})).await;
    api.unchanged(|| api.post(format!("{ua}/bind"), json!({"nic_id": id(&other)})))
        .await
        .problem(409, &["already bound", &w.nic]);
    let ub = format!("/v1/eips/{}", id(&b));
    api.unchanged(|| api.post(format!("{ub}/bind"), json!({"nic_id": w.nic})))
        .await
        .problem(409, &["at most one EIP"])
        .field("nic_id");
    // The NIC's node must be attached to the network; the NIC must be on a
    // node and exist.
    let off = api.nic(json!({"subnet_id": w.subnet, "node": "c2"})).await;
    api.unchanged(|| api.post(format!("{ub}/bind"), json!({"nic_id": id(&off)})))
        .await
        .problem(422, &["c2", "not attached"])
        .field("nic_id");
    let loose = api.nic(json!({"subnet_id": w.subnet})).await;
    api.unchanged(|| api.post(format!("{ub}/bind"), json!({"nic_id": id(&loose)})))
        .await
        .problem(422, &["not bound to a node"]);
    api.unchanged(|| {
        api.post(
            format!("{ub}/bind"),
            json!({"nic_id": "nic-0000000000000000"}),
        )
    })
    .await
    .problem(422, &["does not exist"]);
    // Release while bound: refused.
    api.unchanged(|| api.delete(&ua))
        .await
        .problem(409, &["bound"]);

    // Unbind twice: the same outcome; rebind elsewhere; release.
    for _ in 0..2 {
        api.post(format!("{ua}/unbind"), json!({})).await.ok(202);
        let un = api.get(&ua).await;
        assert!(un.ok(200).get("nic_id").is_none());
        assert!(un.body.get("node").is_none());
    }
    api.post(format!("{ua}/bind"), json!({"nic_id": id(&other)}))
        .await
        .ok(202);
    api.post(format!("{ub}/bind"), json!({"nic_id": w.nic}))
        .await
        .ok(202);
    api.post(format!("{ua}/unbind"), json!({})).await.ok(202);
    api.delete(&ua).await.ok(204);
    api.get(&ua).await.problem(404, &[]);
    // The address is free again.
    assert_eq!(eip(api, &w.net, None).await["ip"], "203.0.113.11");

    // A network with EIPs is not deleted; a VPC using it is not detached.
    api.unchanged(|| api.delete(format!("/v1/external-networks/{}", w.net)))
        .await
        .problem(409, &["EIPs"]);
    api.unchanged(|| {
        api.patch(
            format!("/v1/vpcs/{}", w.vpc),
            json!({"external_network_ids": []}),
        )
    })
    .await
    .problem(409, &[&id(&b)]);
}

#[tokio::test]
async fn an_eip_binds_only_in_an_attached_vpc() {
    let w = world("203.0.113.20").await;
    let api = &w.api;
    let e = eip(api, &w.net, None).await;
    let other = api.vpc("other", &["10.1.0.0/16"]).await;
    let sn = api.subnet(&other, "10.1.1.0/24").await;
    let nic = api.nic(json!({"subnet_id": sn, "node": "c1"})).await;
    api.unchanged(|| {
        api.post(
            format!("/v1/eips/{}/bind", id(&e)),
            json!({"nic_id": id(&nic)}),
        )
    })
    .await
    .problem(422, &["not attached", &other])
    .field("nic_id");
    api.unchanged(|| {
        api.patch(
            format!("/v1/vpcs/{other}"),
            json!({"external_network_ids": ["extnet-0000000000000000"]}),
        )
    })
    .await
    .problem(422, &["does not exist"])
    .field("external_network_ids[0]");
    // Another tenant's NIC is as good as absent.
    let t = api.tenant("acme").await;
    let (_, creds) = api.principal("bob", "member", &t).await;
    let bob = api.with_creds(Some(creds));
    let mine = eip(&bob, &w.net, None).await;
    bob.unchanged(|| {
        bob.post(
            format!("/v1/eips/{}/bind", id(&mine)),
            json!({"nic_id": w.nic}),
        )
    })
    .await
    .problem(422, &["does not exist"]);
    bob.get(format!("/v1/eips/{}", id(&e)))
        .await
        .problem(404, &[]);
}

#[tokio::test]
async fn fifty_concurrent_allocations_of_one_address_give_one_eip() {
    let w = world("203.0.113.90").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let api = w.api.clone();
        let net = w.net.clone();
        tasks.push(tokio::spawn(async move {
            api.post(
                "/v1/eips",
                json!({"external_network_id": net, "ip": "203.0.113.42"}),
            )
            .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            201 => created += 1,
            409 => {
                r.problem(409, &["already allocated"]);
            }
            s => panic!("unexpected {s}: {:#}", r.body),
        }
    }
    assert_eq!(created, 1);
    let all = w.api.get("/v1/eips").await;
    let all = all.ok(200).as_array().unwrap().clone();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["ip"], "203.0.113.42");
}

#[tokio::test]
async fn nat_gateways_need_an_attachment_and_two_gateway_nodes() {
    let w = world("203.0.113.30").await;
    let api = &w.api;
    let e1 = id(&eip(api, &w.net, None).await);
    let e2 = id(&eip(api, &w.net, None).await);
    let body = |vpc: &str, eips: &[&str]| {
        json!({"name": "natgw", "vpc_id": vpc, "external_network_id": w.net,
               "eip_ids": eips})
    };
    // Scenario 6: a VPC without external attachment.
    let bare = api.vpc("bare", &["10.2.0.0/16"]).await;
    api.unchanged(|| api.post("/v1/nat-gateways", body(&bare, &[&e1])))
        .await
        .problem(422, &["no external attachment", &bare])
        .field("vpc_id");
    api.unchanged(|| api.post("/v1/nat-gateways", body(&w.vpc, &[])))
        .await
        .problem(422, &["at least one"])
        .field("eip_ids");
    // Too few gateway nodes: drain one of the two.
    let drained = api.patch("/v1/nodes/g2", json!({"drained": true})).await;
    assert_eq!(api.applied(drained).await.ok(200)["safe_to_stop"], true);
    api.unchanged(|| api.post("/v1/nat-gateways", body(&w.vpc, &[&e1])))
        .await
        .problem(422, &["at least 2 gateway nodes", &w.net])
        .field("external_network_id");
    api.patch("/v1/nodes/g2", json!({"drained": false}))
        .await
        .ok(202);
    // A bound EIP cannot be given to a gateway.
    api.post(format!("/v1/eips/{e2}/bind"), json!({"nic_id": w.nic}))
        .await
        .ok(202);
    api.unchanged(|| api.post("/v1/nat-gateways", body(&w.vpc, &[&e1, &e2])))
        .await
        .problem(409, &["already bound"])
        .field("eip_ids[1]");

    // Created: it owns its EIP and shows its ranking (priority first).
    api.patch("/v1/nodes/g2", json!({"gateway_priority": 100}))
        .await
        .ok(202);
    // It reaches its gateway nodes: an operation, whose target is read back.
    let op = api.post("/v1/nat-gateways", body(&w.vpc, &[&e1])).await;
    let op = op.ok(202).clone();
    assert_eq!(op["action"], "create");
    let gw = api.get(op["target"]["href"].as_str().unwrap()).await;
    let gw = gw.ok(200).clone();
    assert_eq!(gw["gateway_nodes"], json!(["g2", "g1"]));
    assert!(gw["mac"].as_str().unwrap().starts_with("02:"));
    let ug = format!("/v1/nat-gateways/{}", id(&gw));
    assert_eq!(
        api.get(&ug).await.ok(200)["gateway_nodes"],
        json!(["g2", "g1"])
    );
    assert_eq!(
        api.get(format!("/v1/eips/{e1}")).await.ok(200)["nat_gateway_id"],
        gw["id"]
    );
    api.unchanged(|| api.post(format!("/v1/eips/{e1}/bind"), json!({"nic_id": w.nic})))
        .await
        .problem(409, &["owned by NAT gateway"]);
    api.unchanged(|| api.delete(format!("/v1/eips/{e1}")))
        .await
        .problem(409, &["NAT gateway"]);
    // The node view says what it serves; drained, it goes last (still the
    // last resort) and is safe to stop once no gateway has it first.
    let g2 = api.get("/v1/nodes/g2").await;
    assert_eq!(g2.ok(200)["nat_gateways"], json!([gw["id"]]));
    assert!(g2.body.get("safe_to_stop").is_none());
    let g2 = api.patch("/v1/nodes/g2", json!({"drained": true})).await;
    let g2 = api.applied(g2).await;
    assert_eq!(g2.ok(200)["nat_gateways"], json!([gw["id"]]));
    assert_eq!(g2.body["safe_to_stop"], true);
    assert_eq!(
        api.get(&ug).await.ok(200)["gateway_nodes"],
        json!(["g1", "g2"])
    );
    // Both drained: g2 is first again (priority), so not safe to stop.
    let g1 = api.patch("/v1/nodes/g1", json!({"drained": true})).await;
    assert_eq!(api.applied(g1).await.ok(200)["safe_to_stop"], true);
    let g2 = api.get("/v1/nodes/g2").await;
    assert_eq!(g2.ok(200)["safe_to_stop"], false);
    api.patch("/v1/nodes/g1", json!({"drained": false}))
        .await
        .ok(202);
    api.patch("/v1/nodes/g2", json!({"drained": false}))
        .await
        .ok(202);

    // Rules. SNAT from the subnet (resolved to its CIDR), a NIC, a CIDR.
    let snat = api
        .post(
            format!("{ug}/snat-rules"),
            json!({"subnet_id": w.subnet, "eip_id": e1}),
        )
        .await;
    assert_eq!(snat.ok(202)["target"]["href"], ug.as_str());
    let last_rule = |kind: &'static str| {
        let ug = ug.clone();
        async move {
            let v = api.get(&ug).await.ok(200).clone();
            v[kind].as_array().unwrap().last().unwrap().clone()
        }
    };
    assert_eq!(last_rule("snat_rules").await["source_cidr"], "10.0.1.0/24");
    api.unchanged(|| {
        api.post(
            format!("{ug}/snat-rules"),
            json!({"cidr": "10.0.1.0/24", "eip_id": e1}),
        )
    })
    .await
    .problem(409, &["10.0.1.0/24"]);
    api.unchanged(|| {
        api.post(
            format!("{ug}/snat-rules"),
            json!({"cidr": "192.168.0.0/24", "eip_id": e1}),
        )
    })
    .await
    .problem(422, &["not inside"])
    .field("cidr");
    api.unchanged(|| {
        api.post(
            format!("{ug}/snat-rules"),
            json!({"cidr": "10.0.2.0/24", "subnet_id": w.subnet, "eip_id": e1}),
        )
    })
    .await
    .problem(422, &["exactly one"]);
    api.unchanged(|| {
        api.post(
            format!("{ug}/snat-rules"),
            json!({"cidr": "10.0.2.0/24", "eip_id": e2}),
        )
    })
    .await
    .problem(422, &["not an EIP of NAT gateway"])
    .field("eip_id");
    let by_nic = api
        .post(
            format!("{ug}/snat-rules"),
            json!({"nic_id": w.nic, "eip_id": e1}),
        )
        .await;
    by_nic.ok(202);
    let by_nic = last_rule("snat_rules").await;
    assert!(by_nic["source_cidr"].as_str().unwrap().ends_with("/32"));

    // DNAT, and scenario 6: a port clash.
    let dnat = json!({"protocol": "tcp", "eip_id": e1, "external_port": 80,
                      "nic_id": w.nic, "internal_port": 8080});
    let d = api.post(format!("{ug}/dnat-rules"), dnat.clone()).await;
    d.ok(202);
    let d = last_rule("dnat_rules").await;
    assert_eq!(
        d["internal_ip"].as_str().unwrap(),
        by_nic["source_cidr"]
            .as_str()
            .unwrap()
            .trim_end_matches("/32")
    );
    let mut clash = dnat.clone();
    clash["internal_port"] = json!(9090);
    api.unchanged(|| api.post(format!("{ug}/dnat-rules"), clash.clone()))
        .await
        .problem(409, &["already forwarded", "80"])
        .field("external_port");
    let mut udp = clash.clone();
    udp["protocol"] = json!("udp");
    api.post(format!("{ug}/dnat-rules"), udp).await.ok(202);
    let mut zero = dnat.clone();
    zero["external_port"] = json!(0);
    api.unchanged(|| api.post(format!("{ug}/dnat-rules"), zero.clone()))
        .await
        .problem(422, &[])
        .field("external_port");
    let mut outside = dnat.clone();
    outside.as_object_mut().unwrap().remove("nic_id");
    outside["internal_ip"] = json!("172.16.0.5");
    api.unchanged(|| api.post(format!("{ug}/dnat-rules"), outside.clone()))
        .await
        .problem(422, &["not inside"])
        .field("internal_ip");
    // Deleting the rule frees the port.
    api.delete(format!("{ug}/dnat-rules/{}", id(&d)))
        .await
        .ok(202);
    api.post(format!("{ug}/dnat-rules"), clash).await.ok(202);
    api.delete(format!("{ug}/snat-rules/{}", id(&by_nic)))
        .await
        .ok(202);
    api.delete(format!("{ug}/snat-rules/{}", id(&by_nic)))
        .await
        .problem(404, &[]);

    // The VPC is not deleted or detached while it has the gateway.
    api.unchanged(|| {
        api.patch(
            format!("/v1/vpcs/{}", w.vpc),
            json!({"external_network_ids": []}),
        )
    })
    .await
    .problem(409, &["NAT gateway"]);
    // Deleting the gateway gives its EIP back, unbound.
    api.delete(&ug).await.ok(202);
    let e = api.get(format!("/v1/eips/{e1}")).await;
    assert!(e.ok(200).get("nat_gateway_id").is_none());
    api.delete(format!("/v1/eips/{e1}")).await.ok(204);
}

#[tokio::test]
async fn eips_and_nat_gateways_count_against_quotas() {
    let w = world("203.0.113.30").await;
    let api = &w.api;
    let t = api.tenant("acme").await;
    let (_, creds) = api.principal("carol", "tenant_admin", &t).await;
    let carol = api.with_creds(Some(creds));
    let q = carol.get(format!("/v1/tenants/{t}/quotas")).await;
    assert_eq!(q.ok(200)["limits"]["eips"], 50);
    assert_eq!(q.body["limits"]["nat_gateways"], 10);
    api.patch(format!("/v1/tenants/{t}/quotas"), json!({"eips": 1}))
        .await
        .ok(200);
    let e = eip(&carol, &w.net, None).await;
    carol
        .unchanged(|| carol.post("/v1/eips", json!({"external_network_id": w.net})))
        .await
        .problem(409, &["quota `eips`"]);
    carol.delete(format!("/v1/eips/{}", id(&e))).await.ok(204);
    eip(&carol, &w.net, None).await;
    let q = carol.get(format!("/v1/tenants/{t}/quotas")).await;
    assert_eq!(q.ok(200)["usage"]["eips"], 1);
}
