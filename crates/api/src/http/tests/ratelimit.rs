//! Per-tenant rate limits over HTTP: a noisy tenant is refused with 429,
//! a quiet one is served meanwhile.

use super::Api;

#[tokio::test]
async fn a_noisy_tenant_gets_429_and_does_not_starve_another() {
    let api = Api::new().await;
    let noisy_t = api.tenant("noisy").await;
    let quiet_t = api.tenant("quiet").await;
    let (_, cn) = api.principal("n", "member", &noisy_t).await;
    let (_, cq) = api.principal("q", "member", &quiet_t).await;
    let (noisy, quiet) = (api.with_creds(Some(cn)), api.with_creds(Some(cq)));
    // Low enough that the flood below is over it on any machine.
    api.auth.rate_limit.set(5.0, 20.0);
    let flood = futures::future::join_all((0..200).map(|_| noisy.get("/v1/vpcs")));
    let calm = async {
        let mut answers = vec![];
        for _ in 0..10 {
            answers.push(quiet.get("/v1/vpcs").await);
        }
        answers
    };
    let (flood, calm) = tokio::join!(flood, calm);
    let refused: Vec<_> = flood.iter().filter(|r| r.status == 429).collect();
    let served = flood.iter().filter(|r| r.status == 200).count();
    assert_eq!(refused.len() + served, 200);
    assert!(served >= 20, "the burst is served: {served}");
    assert!(refused.len() >= 150, "{} refused", refused.len());
    refused[0].problem(429, &["rate limit", noisy_t.as_str()]);
    for r in &calm {
        r.ok(200);
    }
    // The system admin is not limited.
    for _ in 0..30 {
        api.get("/v1/vpcs").await.ok(200);
    }
}

#[tokio::test]
async fn a_429_says_when_to_retry() {
    let api = Api::new().await;
    let t = api.tenant("t").await;
    let (_, c) = api.principal("u", "reader", &t).await;
    let user = api.with_creds(Some(c));
    api.auth.rate_limit.set(0.5, 1.0);
    user.get("/v1/vpcs").await.ok(200);
    let req = user.request(axum::http::Method::GET, "/v1/vpcs", None, b"");
    let resp = tower::ServiceExt::oneshot(user.app.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&after), "{after}");
}
