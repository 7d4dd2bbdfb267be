//! The role × action × own/other-tenant matrix over every endpoint.
//!
//! Five callers (system admin, operator, tenant admin, member and reader;
//! the last four at home in tenant A) act on resources of tenant A (own)
//! and of tenant B (other). Every destructive case gets fresh resources,
//! made by a member of the owning tenant. The expected answer comes from
//! the policy table [`POLICY`]; a refusal must change nothing.

use axum::http::Method;
use serde_json::{json, Value};

use super::Api;
use proto::sign::Credentials;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    SystemAdmin,
    Operator,
    TenantAdmin,
    Member,
    Reader,
}

const ROLES: [Role; 5] = [
    Role::SystemAdmin,
    Role::Operator,
    Role::TenantAdmin,
    Role::Member,
    Role::Reader,
];

/// What a role gets on a tenant resource: (read own, read other, write
/// own, write other). `OK` is the action's success status.
const OK: u16 = 0;
const POLICY: [(Role, [u16; 4]); 5] = [
    (Role::SystemAdmin, [OK, OK, OK, OK]),
    (Role::Operator, [403, 403, 403, 403]),
    (Role::TenantAdmin, [OK, 404, OK, 404]),
    (Role::Member, [OK, 404, OK, 404]),
    (Role::Reader, [OK, 404, 403, 404]),
];

fn policy(role: Role, write: bool, own: bool) -> u16 {
    let row = POLICY.iter().find(|(r, _)| *r == role).expect("a row").1;
    row[usize::from(write) * 2 + usize::from(!own)]
}

/// The resources of one tenant.
#[derive(Clone, Debug)]
struct Set {
    vpc: String,
    subnet: String,
    nic: String,
    sg: String,
    rule: String,
}

struct World {
    api: Api,
    tenant_a: String,
    /// A member of each tenant, to make fixtures.
    maker_a: Credentials,
    maker_b: Credentials,
    callers: Vec<(Role, Credentials)>,
}

impl World {
    async fn new() -> World {
        let api = Api::new().await;
        let tenant_a = api.tenant("tenant-a").await;
        let tenant_b = api.tenant("tenant-b").await;
        let (_, maker_a) = api.principal("maker-a", "member", &tenant_a).await;
        let (_, maker_b) = api.principal("maker-b", "member", &tenant_b).await;
        let mut callers = vec![(Role::SystemAdmin, api.admin.credentials())];
        for (role, name, r) in [
            (Role::Operator, "op", "operator"),
            (Role::TenantAdmin, "ta", "tenant_admin"),
            (Role::Member, "mem", "member"),
            (Role::Reader, "rd", "reader"),
        ] {
            callers.push((role, api.principal(name, r, &tenant_a).await.1));
        }
        api.post(
            "/v1/nodes",
            json!({"name": "n1", "underlay_ip": "192.0.2.1"}),
        )
        .await
        .ok(201);
        World {
            api,
            tenant_a,
            maker_a,
            maker_b,
            callers,
        }
    }

    fn as_(&self, c: &Credentials) -> Api {
        self.api.with_creds(Some(c.clone()))
    }

    /// Fresh resources in tenant A (`own`) or B.
    async fn fixtures(&self, own: bool, n: u32) -> Set {
        let maker = self.as_(if own { &self.maker_a } else { &self.maker_b });
        let tag = format!("{}{n}", if own { "a" } else { "b" });
        let vpc = maker
            .post(
                "/v1/vpcs",
                json!({"name": format!("vpc-{tag}"), "cidrs": ["10.0.0.0/16"]}),
            )
            .await
            .ok(201)["id"]
            .as_str()
            .unwrap()
            .to_string();
        let subnet = maker
            .post("/v1/subnets", json!({"vpc_id": vpc, "cidr": "10.0.1.0/24"}))
            .await;
        let subnet = maker.applied(subnet).await.ok(200)["id"]
            .as_str()
            .unwrap()
            .to_string();
        let nic = maker
            .post("/v1/nics", json!({"subnet_id": subnet}))
            .await
            .accepted()["target"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let sg = maker
            .post(
                "/v1/security-groups",
                json!({"vpc_id": vpc, "name": "web", "rules": [
                    {"direction": "ingress", "protocol": "tcp", "port_range_min": 80}]}),
            )
            .await;
        let sg = maker.applied(sg).await;
        let sg_body = sg.ok(200);
        Set {
            vpc,
            subnet,
            nic,
            sg: sg_body["id"].as_str().unwrap().to_string(),
            rule: sg_body["rules"][0]["id"].as_str().unwrap().to_string(),
        }
    }
}

/// One action on a tenant resource.
#[derive(Clone, Copy, Debug)]
enum Act {
    Get(&'static str),
    Patch(&'static str),
    Delete(&'static str),
    CreateSubnet,
    CreateNic,
    CreateSg,
    AddRule,
    DeleteRule,
}

const ACTS: [Act; 17] = [
    Act::Get("vpcs"),
    Act::Get("subnets"),
    Act::Get("nics"),
    Act::Get("security-groups"),
    Act::Patch("vpcs"),
    Act::Patch("subnets"),
    Act::Patch("nics"),
    Act::Patch("security-groups"),
    Act::Delete("nics"),
    Act::Delete("security-groups"),
    Act::Delete("subnets"),
    Act::Delete("vpcs"),
    Act::CreateSubnet,
    Act::CreateNic,
    Act::CreateSg,
    Act::AddRule,
    Act::DeleteRule,
];

impl Act {
    fn write(self) -> bool {
        !matches!(self, Act::Get(_))
    }

    /// Creates name their parent in the body: another tenant's parent
    /// is "does not exist" (422), like a parent that does not exist.
    fn names_parent_in_body(self) -> bool {
        matches!(self, Act::CreateSubnet | Act::CreateNic | Act::CreateSg)
    }

    /// (method, uri, body, success status).
    fn request(self, s: &Set) -> (Method, String, Option<Value>, u16) {
        let id = |kind: &str| match kind {
            "vpcs" => s.vpc.clone(),
            "subnets" => s.subnet.clone(),
            "nics" => s.nic.clone(),
            _ => s.sg.clone(),
        };
        // NICs, groups and subnets are programmed on nodes: 202 and an
        // operation.
        let sync_or_async = |k: &str, sync: u16| match k {
            "nics" | "security-groups" | "subnets" => 202,
            _ => sync,
        };
        match self {
            Act::Get(k) => (Method::GET, format!("/v1/{k}/{}", id(k)), None, 200),
            Act::Patch(k) => (
                Method::PATCH,
                format!("/v1/{k}/{}", id(k)),
                Some(json!({"name": format!("renamed-{}", s.nic)})),
                sync_or_async(k, 200),
            ),
            Act::Delete(k) => (
                Method::DELETE,
                format!("/v1/{k}/{}", id(k)),
                None,
                sync_or_async(k, 204),
            ),
            Act::CreateSubnet => (
                Method::POST,
                "/v1/subnets".into(),
                Some(json!({"vpc_id": s.vpc, "cidr": "10.0.2.0/24"})),
                202,
            ),
            Act::CreateNic => (
                Method::POST,
                "/v1/nics".into(),
                Some(json!({"subnet_id": s.subnet})),
                202,
            ),
            Act::CreateSg => (
                Method::POST,
                "/v1/security-groups".into(),
                Some(json!({"vpc_id": s.vpc, "name": "db"})),
                202,
            ),
            Act::AddRule => (
                Method::POST,
                format!("/v1/security-groups/{}/rules", s.sg),
                Some(json!({"direction": "egress", "protocol": "udp", "port_range_min": 53})),
                202,
            ),
            Act::DeleteRule => (
                Method::DELETE,
                format!("/v1/security-groups/{}/rules/{}", s.sg, s.rule),
                None,
                202,
            ),
        }
    }
}

/// Deletes need their resource free of children.
async fn prepare(world: &World, act: Act, s: &Set, own: bool) {
    let maker = world.as_(if own { &world.maker_a } else { &world.maker_b });
    if let Act::Delete(k) = act {
        if k == "subnets" || k == "vpcs" {
            maker.delete(format!("/v1/nics/{}", s.nic)).await.ok(202);
        }
        if k == "vpcs" {
            maker
                .delete(format!("/v1/security-groups/{}", s.sg))
                .await
                .ok(202);
            maker
                .delete(format!("/v1/subnets/{}", s.subnet))
                .await
                .ok(202);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_resources_by_role_and_owner() {
    let world = World::new().await;
    let mut n = 0;
    let mut checked = 0;
    for act in ACTS {
        for own in [true, false] {
            for (role, creds) in &world.callers {
                n += 1;
                let s = world.fixtures(own, n).await;
                prepare(&world, act, &s, own).await;
                let (method, uri, body, success) = act.request(&s);
                let mut want = policy(*role, act.write(), own);
                if want == OK {
                    want = success;
                } else if want == 404 && act.names_parent_in_body() {
                    want = 422;
                }
                let caller = world.as_(creds);
                let r = if want == success {
                    caller.call(method.clone(), &uri, body).await
                } else {
                    // A refusal changes nothing.
                    caller
                        .unchanged(|| caller.call(method.clone(), &uri, body))
                        .await
                };
                assert_eq!(
                    r.status.as_u16(),
                    want,
                    "{role:?} {act:?} on {} resources: {method} {uri}: {:#}",
                    if own { "own" } else { "another tenant's" },
                    r.body
                );
                if !r.status.is_success() {
                    r.problem(want, &[]);
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, ACTS.len() * 2 * ROLES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_exactly_what_the_role_sees() {
    let world = World::new().await;
    let own = world.fixtures(true, 1).await;
    let other = world.fixtures(false, 2).await;
    for (kind, own_id, other_id) in [
        ("vpcs", &own.vpc, &other.vpc),
        ("subnets", &own.subnet, &other.subnet),
        ("nics", &own.nic, &other.nic),
        ("security-groups", &own.sg, &other.sg),
    ] {
        for (role, creds) in &world.callers {
            let r = world.as_(creds).get(format!("/v1/{kind}")).await;
            let want_own = policy(*role, false, true);
            if want_own == 403 {
                r.problem(403, &["operator"]);
                continue;
            }
            let ids: Vec<&str> = r
                .ok(200)
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap())
                .collect();
            assert!(ids.contains(&own_id.as_str()), "{role:?} {kind}: {ids:?}");
            assert_eq!(
                ids.contains(&other_id.as_str()),
                policy(*role, false, false) == OK,
                "{role:?} {kind}: {ids:?}"
            );
            for v in r.body.as_array().unwrap() {
                assert!(v["tenant_id"].is_string(), "{v}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_for_operators_and_system_admins() {
    let world = World::new().await;
    for (i, (role, creds)) in world.callers.iter().enumerate() {
        let api = world.as_(creds);
        let infra = matches!(role, Role::SystemAdmin | Role::Operator);
        let name = format!("m{i}");
        let cases: Vec<(Method, String, Option<Value>, u16)> = vec![
            (Method::GET, "/v1/nodes".into(), None, 200),
            (Method::GET, "/v1/nodes/n1".into(), None, 200),
            (
                Method::POST,
                "/v1/nodes".into(),
                Some(json!({"name": name, "underlay_ip": format!("192.0.2.{}", 10 + i)})),
                201,
            ),
            (
                Method::PATCH,
                format!("/v1/nodes/{name}"),
                Some(json!({"roles": ["compute", "gateway"]})),
                202,
            ),
            (Method::DELETE, format!("/v1/nodes/{name}"), None, 204),
        ];
        for (method, uri, body, success) in cases {
            let r = api.call(method.clone(), &uri, body.clone()).await;
            if infra {
                r.ok(success);
            } else {
                // The node may not exist (its create was refused): the
                // role check comes first either way.
                r.problem(403, &["operator"]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_endpoints_by_role() {
    let world = World::new().await;
    let other_tenant = world.api.tenant("tenant-c").await;
    for (i, (role, creds)) in world.callers.iter().enumerate() {
        let api = world.as_(creds);
        // Tenants: only a system admin creates them or sees another.
        let r = api
            .post("/v1/tenants", json!({"name": format!("t{i}")}))
            .await;
        match role {
            Role::SystemAdmin => {
                r.ok(201);
            }
            _ => {
                r.problem(403, &["system_admin"]);
            }
        }
        let r = api.get(format!("/v1/tenants/{other_tenant}")).await;
        if *role == Role::SystemAdmin {
            r.ok(200);
        } else {
            r.problem(404, &[]);
        }
        // Users: admins create them in their tenant.
        let body = json!({"name": format!("u{i}"), "password": "twelve chars!",
                          "tenant_id": world.tenant_a, "role": "member"});
        let r = api.post("/v1/users", body).await;
        match role {
            Role::SystemAdmin | Role::TenantAdmin => {
                r.ok(201);
            }
            _ => {
                r.problem(403, &["admin"]);
            }
        }
        // ... and not in a tenant they do not see.
        let body = json!({"name": format!("w{i}"), "password": "twelve chars!",
                          "tenant_id": other_tenant, "role": "member"});
        let r = api.post("/v1/users", body).await;
        match role {
            Role::SystemAdmin => {
                r.ok(201);
            }
            Role::TenantAdmin => {
                r.problem(422, &["does not exist"]).field("tenant_id");
            }
            _ => {
                r.problem(403, &[]);
            }
        }
        // Global roles are a system admin's to give.
        let body = json!({"name": format!("o{i}"), "password": "twelve chars!",
                          "tenant_id": world.tenant_a, "role": "operator"});
        let r = api.post("/v1/users", body).await;
        if *role == Role::SystemAdmin {
            r.ok(201);
        } else {
            r.problem(403, &[]);
        }
        // Audit: one's own tenant, or any for a system admin.
        api.get("/v1/audit").await.ok(200);
        let r = api.get(format!("/v1/audit?tenant_id={other_tenant}")).await;
        if *role == Role::SystemAdmin {
            r.ok(200);
        } else {
            r.problem(404, &[]);
        }
    }
}
