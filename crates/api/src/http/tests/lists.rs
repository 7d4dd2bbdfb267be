//! Lists: tags, filters on name and tags, pages with an opaque token.

use axum::http::{HeaderMap, Method};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::Api;

async fn get(api: &Api, uri: &str) -> (u16, HeaderMap, Value) {
    let req = api.request(Method::GET, uri, None, b"");
    let resp = api.app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn tags_are_set_shown_replaced_and_validated() {
    let api = Api::new().await;
    let vpc = api
        .post(
            "/v1/vpcs",
            json!({"name": "web", "cidrs": ["10.0.0.0/16"],
            "tags": {"env": "prod", "team/owner": "net"}}),
        )
        .await
        .ok(201)
        .clone();
    assert_eq!(vpc["tags"], json!({"env": "prod", "team/owner": "net"}));
    let id = vpc["id"].as_str().unwrap();
    let sn = api
        .post(
            "/v1/subnets",
            json!({"vpc_id": id, "cidr": "10.0.1.0/24", "tags": {"tier": "db"}}),
        )
        .await;
    let sn = api.applied(sn).await.ok(200).clone();
    assert_eq!(sn["tags"], json!({"tier": "db"}));
    let nic = api
        .nic(json!({"subnet_id": sn["id"], "tags": {"vm": "a"}}))
        .await;
    assert_eq!(nic["tags"], json!({"vm": "a"}));
    let p = api
        .patch(format!("/v1/vpcs/{id}"), json!({"tags": {"env": "dev"}}))
        .await
        .ok(200)
        .clone();
    assert_eq!(p["tags"], json!({"env": "dev"}));
    assert_eq!(p["name"], "web");
    api.unchanged(|| api.patch(format!("/v1/vpcs/{id}"), json!({"tags": {"bad key": "x"}})))
        .await
        .problem(422, &["tag key"])
        .field("tags.bad key");
    api.unchanged(|| {
        api.post(
            "/v1/vpcs",
            json!({"name": "x", "cidrs": ["10.1.0.0/16"],
            "tags": {"k": "a,b"}}),
        )
    })
    .await
    .problem(422, &["commas"]);
    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    api.unchanged(|| {
        api.post(
            "/v1/vpcs",
            json!({"name": "x", "cidrs": ["10.1.0.0/16"],
            "tags": many}),
        )
    })
    .await
    .problem(422, &["at most 50"]);
}

#[tokio::test]
async fn pages_cover_the_list_once_in_id_order() {
    let api = Api::new().await;
    let mut made = vec![];
    for i in 0..7 {
        made.push(
            api.vpc(&format!("v{i}"), &[&format!("10.{i}.0.0/16")])
                .await,
        );
    }
    made.sort();
    let mut seen = vec![];
    let mut uri = "/v1/vpcs?page_size=3".to_string();
    let mut pages = 0;
    loop {
        let (s, h, body) = get(&api, &uri).await;
        assert_eq!(s, 200, "{body:#}");
        pages += 1;
        seen.extend(ids(&body));
        let Some(link) = h.get("link") else {
            assert!(h.get("next-page-token").is_none());
            break;
        };
        let link = link.to_str().unwrap();
        let token = h["next-page-token"].to_str().unwrap();
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        assert!(link.contains(token));
        uri = link[1..link.find('>').unwrap()].to_string();
        assert!(uri.starts_with("/v1/vpcs?"), "{uri}");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made, "every VPC once, in id order");
    // Without page_size: all of them, no pages.
    let (_, h, all) = get(&api, "/v1/vpcs").await;
    assert_eq!(ids(&all), made);
    assert!(h.get("link").is_none());
}

#[tokio::test]
async fn filters_on_name_and_tags() {
    let api = Api::new().await;
    let mk = |name: &'static str, cidr: &'static str, tags: Value| {
        let api = api.clone();
        async move {
            api.post(
                "/v1/vpcs",
                json!({"name": name, "cidrs": [cidr], "tags": tags}),
            )
            .await
            .ok(201)["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let a = mk("a", "10.0.0.0/16", json!({"env": "prod", "team": "x"})).await;
    let b = mk("b", "10.1.0.0/16", json!({"env": "dev"})).await;
    let c = mk("c", "10.2.0.0/16", json!({})).await;
    let q = |uri: &'static str| {
        let api = api.clone();
        async move {
            let (s, _, v) = get(&api, uri).await;
            assert_eq!(s, 200, "{v:#}");
            let mut i = ids(&v);
            i.sort();
            i
        }
    };
    assert_eq!(q("/v1/vpcs?name=b").await, vec![b.clone()]);
    assert_eq!(q("/v1/vpcs?name=nope").await, Vec::<String>::new());
    let mut ab = vec![a.clone(), b.clone()];
    ab.sort();
    assert_eq!(q("/v1/vpcs?tag=env").await, ab);
    assert_eq!(q("/v1/vpcs?tag=env%3Dprod").await, vec![a.clone()]);
    assert_eq!(q("/v1/vpcs?tag=env=prod,team=x").await, vec![a.clone()]);
    assert_eq!(
        q("/v1/vpcs?tag=env=prod,team=y").await,
        Vec::<String>::new()
    );
    assert_eq!(q("/v1/vpcs?name=c&tag=env").await, Vec::<String>::new());
    assert!(q("/v1/vpcs").await.contains(&c));
    // Other kinds take the same parameters beside their own filters.
    let sn = api.subnet(&a, "10.0.1.0/24").await;
    let (s, _, v) = get(
        &api,
        &format!("/v1/subnets?vpc_id={a}&name={sn}&page_size=1"),
    )
    .await;
    assert_eq!((s, ids(&v)), (200, vec![sn.clone()]));
    let (s, _, _) = get(&api, "/v1/nics?tag=x&page_size=5").await;
    assert_eq!(s, 200);
    let (s, _, _) = get(&api, "/v1/security-groups?name=default").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_bad_token_or_size_is_400() {
    let api = Api::new().await;
    for i in 0..3 {
        api.vpc(&format!("v{i}"), &[&format!("10.{i}.0.0/16")])
            .await;
    }
    let (_, h, _) = get(&api, "/v1/vpcs?page_size=1").await;
    let token = h["next-page-token"].to_str().unwrap().to_string();
    // Fine on its own list, with another page size.
    let (s, _, _) = get(&api, &format!("/v1/vpcs?page_size=2&page_token={token}")).await;
    assert_eq!(s, 200);
    for uri in [
        "/v1/vpcs?page_token=zz".to_string(),
        "/v1/vpcs?page_token=".to_string(),
        format!("/v1/vpcs?page_token={token}00"),
        format!("/v1/vpcs?name=v1&page_token={token}"),
        format!("/v1/subnets?page_token={token}"),
        "/v1/vpcs?page_size=0".to_string(),
        "/v1/vpcs?page_size=1001".to_string(),
        "/v1/vpcs?page_size=-1".to_string(),
        "/v1/vpcs?tag=bad%20key".to_string(),
    ] {
        let (s, h, p) = get(&api, &uri).await;
        assert_eq!(s, 400, "{uri}: {p:#}");
        assert_eq!(h["content-type"], "application/problem+json", "{uri}");
    }
}

#[tokio::test]
async fn pages_hold_only_the_callers_tenant() {
    let api = Api::new().await;
    let t = api.tenant("t").await;
    let (_, c) = api.principal("u", "member", &t).await;
    let user = api.with_creds(Some(c));
    api.vpc("admins", &["10.0.0.0/16"]).await;
    let mine = user.vpc("mine", &["10.0.0.0/16"]).await;
    let (s, h, v) = get(&user, "/v1/vpcs?page_size=1").await;
    assert_eq!((s, ids(&v)), (200, vec![mine]));
    assert!(h.get("link").is_none(), "no page of another tenant's VPCs");
}
