//! A store that fails: problems without internals, never a panic.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use serde_json::json;

use super::{Api, Reply};
use crate::model::keys;
use crate::store::{
    KeyValue, LeaseId, Result, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};

/// Every call fails with the error its function builds, except reads of
/// identities (served by a working store), so that requests authenticate
/// and reach the handlers.
struct Broken(fn() -> StoreError, Option<Arc<dyn Store>>);

#[async_trait]
impl Store for Broken {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match &self.1 {
            Some(iam) if key.starts_with(keys::IAM) => iam.get(key).await,
            _ => Err((self.0)()),
        }
    }
    async fn range(&self, _: &str) -> Result<(Vec<KeyValue>, Revision)> {
        Err((self.0)())
    }
    async fn txn(&self, _: Txn) -> Result<TxnResult> {
        Err((self.0)())
    }
    async fn watch(&self, _: &str, _: Revision) -> Result<WatchStream> {
        Err((self.0)())
    }
    async fn revision(&self) -> Result<Revision> {
        Err((self.0)())
    }
    async fn grant_lease(&self, _: Duration) -> Result<LeaseId> {
        Err((self.0)())
    }
    async fn keep_alive(&self, _: LeaseId) -> Result<()> {
        Err((self.0)())
    }
    async fn revoke_lease(&self, _: LeaseId) -> Result<()> {
        Err((self.0)())
    }
    async fn compact(&self, _: Revision) -> Result<()> {
        Err((self.0)())
    }
}

async fn against(mut store: Broken) -> Vec<Reply> {
    let api = Api::new().await;
    store.1 = Some(api.store.clone());
    let api = Api {
        app: super::super::router(Arc::new(store), api.auth.clone()),
        ..api
    };
    let mut out = vec![];
    out.push(api.get("/healthz").await);
    out.push(api.get("/v1/vpcs").await);
    out.push(api.get("/v1/nics").await);
    out.push(api.get("/v1/nodes/n1").await);
    out.push(
        api.post("/v1/vpcs", json!({"name": "a", "cidrs": ["10.0.0.0/16"]}))
            .await,
    );
    out.push(
        api.post(
            "/v1/nodes",
            json!({"name": "n1", "underlay_ip": "192.0.2.1"}),
        )
        .await,
    );
    out.push(
        api.call(Method::DELETE, "/v1/nics/nic-0123456789abcdef", None)
            .await,
    );
    out
}

#[tokio::test]
async fn an_unavailable_store_is_a_503_problem() {
    let replies = against(Broken(
        || StoreError::Unavailable("etcd at 10.1.2.3:2379 refused".into()),
        None,
    ))
    .await;
    for r in replies {
        r.problem(503, &["unavailable"]);
        assert!(!r.body.to_string().contains("10.1.2.3"), "{}", r.body);
    }
}

#[tokio::test]
async fn a_broken_store_is_a_500_problem_that_leaks_nothing() {
    let replies = against(Broken(
        || StoreError::Corrupt("/var/lib/stacknet/store.redb: bad page".into()),
        None,
    ))
    .await;
    for r in replies {
        r.problem(500, &["changed nothing"]);
        assert!(!r.body.to_string().contains("redb"), "{}", r.body);
    }
}

#[tokio::test]
async fn with_the_store_down_nobody_authenticates() {
    let api = Api::new().await;
    let api = Api {
        app: super::super::router(
            Arc::new(Broken(|| StoreError::Unavailable("x".into()), None)),
            api.auth.clone(),
        ),
        ..api
    };
    api.get("/v1/vpcs").await.problem(503, &["unavailable"]);
}

#[tokio::test]
async fn bad_input_is_still_a_4xx_when_the_store_is_down() {
    // Validation runs before the model in the store is touched.
    let api = Api::new().await;
    let broken = Broken(
        || StoreError::Unavailable("x".into()),
        Some(api.store.clone()),
    );
    let api = Api {
        app: super::super::router(Arc::new(broken), api.auth.clone()),
        ..api
    };
    api.post("/v1/vpcs", json!({"name": "a", "cidrs": ["10.0.0.0/33"]}))
        .await
        .problem(422, &["10.0.0.0/33"]);
    api.post("/v1/vpcs", json!({"name": "a", "cidr": []}))
        .await
        .problem(400, &["cidr"]);
}
