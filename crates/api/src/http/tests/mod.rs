//! In-process tests of the API over a real embedded store in a temp dir.

mod concurrency;
mod failures;
mod nics;
mod nodes;
mod protocol;
mod security_groups;
mod server;
mod subnets;
mod vpcs;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::model::keys;
use crate::store::embedded::EmbeddedStore;
use crate::store::Store;

pub struct Api {
    pub app: Router,
    pub store: Arc<EmbeddedStore>,
    _dir: TempDir,
}

/// An answer: status, content type and the JSON body (Null if empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
}

impl Reply {
    /// Asserts a problem+json answer with `status` whose detail mentions
    /// every one of `words`.
    #[track_caller]
    pub fn problem(&self, status: u16, words: &[&str]) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{:#}",
            self.body
        );
        assert_eq!(self.body["status"], status, "{:#}", self.body);
        assert!(self.body["type"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.body["title"].as_str().is_some_and(|t| !t.is_empty()));
        let detail = self.body["detail"].as_str().unwrap_or_default();
        for w in words {
            assert!(detail.contains(w), "detail {detail:?} lacks {w:?}");
        }
        self
    }

    #[track_caller]
    pub fn field(&self, field: &str) -> &Self {
        assert_eq!(self.body["field"], field, "{:#}", self.body);
        self
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        &self.body
    }
}

impl Api {
    pub async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap());
        let app = super::router(store.clone());
        Api {
            app,
            store,
            _dir: dir,
        }
    }

    pub async fn raw(&self, method: Method, uri: &str, ct: Option<&str>, body: &[u8]) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(Body::from(body.to_vec())).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("non-JSON body {bytes:?}: {e}"))
        };
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        match body {
            Some(b) => {
                let bytes = serde_json::to_vec(&b).unwrap();
                self.raw(method, uri, Some("application/json"), &bytes)
                    .await
            }
            None => self.raw(method, uri, None, b"").await,
        }
    }

    pub async fn get(&self, uri: impl Into<String>) -> Reply {
        self.call(Method::GET, &uri.into(), None).await
    }
    pub async fn post(&self, uri: impl Into<String>, body: Value) -> Reply {
        self.call(Method::POST, &uri.into(), Some(body)).await
    }
    pub async fn patch(&self, uri: impl Into<String>, body: Value) -> Reply {
        self.call(Method::PATCH, &uri.into(), Some(body)).await
    }
    pub async fn delete(&self, uri: impl Into<String>) -> Reply {
        self.call(Method::DELETE, &uri.into(), None).await
    }

    /// Every key and value in the store, and the revision.
    pub async fn snapshot(&self) -> (Vec<(String, Vec<u8>)>, u64) {
        let (kvs, _) = self.store.range(keys::ROOT).await.unwrap();
        let rev = self.store.revision().await.unwrap();
        (kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(), rev)
    }

    /// Runs `f` (a failing request) and asserts it changed nothing.
    pub async fn unchanged<F, Fut>(&self, f: F) -> Reply
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Reply>,
    {
        let before = self.snapshot().await;
        let lists = self.lists().await;
        let r = f().await;
        assert!(r.status.is_client_error(), "{:?} {:#}", r.status, r.body);
        assert_eq!(self.lists().await, lists, "the lists changed");
        assert_eq!(self.snapshot().await, before, "the store changed");
        r
    }

    async fn lists(&self) -> Vec<Value> {
        let mut out = vec![];
        for uri in ["/v1/nodes", "/v1/vpcs", "/v1/subnets", "/v1/nics"] {
            out.push(self.get(uri).await.ok(200).clone());
        }
        out
    }

    // Fixtures.

    pub async fn node(&self, name: &str, set: &str, ip: &str) -> Value {
        self.post(
            "/v1/nodes",
            json!({"name": name, "set": set, "underlay_ip": ip}),
        )
        .await
        .ok(201)
        .clone()
    }

    pub async fn vpc(&self, name: &str, cidrs: &[&str]) -> String {
        let r = self
            .post("/v1/vpcs", json!({"name": name, "cidrs": cidrs}))
            .await;
        r.ok(201)["id"].as_str().unwrap().to_string()
    }

    pub async fn subnet(&self, vpc_id: &str, cidr: &str) -> String {
        let r = self
            .post("/v1/subnets", json!({"vpc_id": vpc_id, "cidr": cidr}))
            .await;
        r.ok(201)["id"].as_str().unwrap().to_string()
    }

    pub async fn nic(&self, body: Value) -> Value {
        self.post("/v1/nics", body).await.ok(201).clone()
    }
}
