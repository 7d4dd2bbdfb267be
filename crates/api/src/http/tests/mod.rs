//! In-process tests of the API over a real embedded store in a temp dir.

mod audit;
mod concurrency;
mod etag;
mod failures;
mod iam;
mod idempotency;
mod lists;
mod matrix;
mod nat;
mod nics;
mod nodes;
mod operations;
mod protocol;
mod quotas;
mod ratelimit;
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

use crate::http::auth::{self, AuthConfig, Bootstrap};
use crate::model::keys;
use crate::store::embedded::EmbeddedStore;
use crate::store::Store;
use proto::sign::Credentials;

pub const MASTER: &[u8] = b"test-master-secret-0123456789";

/// The API over a fresh store, calling as the bootstrap system admin
/// unless [`Api::with_creds`] says otherwise.
#[derive(Clone)]
pub struct Api {
    pub app: Router,
    pub store: Arc<EmbeddedStore>,
    pub auth: Arc<AuthConfig>,
    pub admin: Bootstrap,
    /// Who the requests are signed as; none: unsigned.
    pub creds: Option<Credentials>,
    _dir: Arc<TempDir>,
}

/// An answer: status, content type and the JSON body (Null if empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub headers: axum::http::HeaderMap,
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

    /// Asserts a `202 Accepted` with a new operation (pending, its
    /// `Location`, a `Retry-After`) and returns it.
    #[track_caller]
    pub fn accepted(&self) -> &Value {
        assert_eq!(self.status.as_u16(), 202, "{:#}", self.body);
        let op = &self.body;
        let id = op["id"].as_str().unwrap();
        assert!(id.starts_with("op-"), "{op:#}");
        assert_eq!(op["state"], "pending", "{op:#}");
        assert!(op["revision"].as_u64().unwrap() > 0, "{op:#}");
        assert!(op["target"]["id"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(
            self.headers[header::LOCATION].to_str().unwrap(),
            format!("/v1/operations/{id}")
        );
        assert!(self.headers.contains_key(header::RETRY_AFTER));
        op
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
        let auth = AuthConfig::new(MASTER.to_vec());
        let admin = auth::bootstrap(store.as_ref(), &auth)
            .await
            .unwrap()
            .unwrap();
        let app = super::router(store.clone(), auth.clone());
        Api {
            app,
            creds: Some(admin.credentials()),
            store,
            auth,
            admin,
            _dir: Arc::new(dir),
        }
    }

    /// The same API, calling as `creds` (unsigned for `None`).
    pub fn with_creds(&self, creds: Option<Credentials>) -> Api {
        Api {
            creds,
            ..self.clone()
        }
    }

    /// A new user with `role` in `tenant_id` (made by the admin), and a
    /// key pair of theirs.
    pub async fn principal(
        &self,
        name: &str,
        role: &str,
        tenant_id: &str,
    ) -> (String, Credentials) {
        let admin = self.with_creds(Some(self.admin.credentials()));
        let user = admin
            .post(
                "/v1/users",
                json!({"name": name, "password": "correct horse battery",
                       "tenant_id": tenant_id, "role": role}),
            )
            .await;
        let id = user.ok(201)["id"].as_str().unwrap().to_string();
        let key = admin.post(format!("/v1/users/{id}/keys"), json!({})).await;
        let key = key.ok(201);
        (
            id,
            Credentials {
                key_id: key["key_id"].as_str().unwrap().to_string(),
                secret: key["secret"].as_str().unwrap().to_string(),
            },
        )
    }

    /// A new tenant's id.
    pub async fn tenant(&self, name: &str) -> String {
        let admin = self.with_creds(Some(self.admin.credentials()));
        let t = admin.post("/v1/tenants", json!({"name": name})).await;
        t.ok(201)["id"].as_str().unwrap().to_string()
    }

    /// A request signed as [`Api::creds`] now, with a fresh nonce.
    pub fn request(
        &self,
        method: Method,
        uri: &str,
        ct: Option<&str>,
        body: &[u8],
    ) -> Request<Body> {
        let mut req = Request::builder().method(method.clone()).uri(uri);
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        if let Some(c) = &self.creds {
            let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
            let h = proto::sign::authorization(
                c,
                method.as_str(),
                path,
                query,
                body,
                proto::sign::unix_now(),
                &proto::sign::new_nonce(),
            );
            req = req.header(header::AUTHORIZATION, h);
        }
        req.body(Body::from(body.to_vec())).unwrap()
    }

    /// Sends a prepared request.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
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
            headers,
        }
    }

    /// A change answered `202 Accepted` with an operation: checks the
    /// answer, then reads the operation's target as it is now (the GET's
    /// reply: 200 with the resource, 404 after a delete).
    pub async fn applied(&self, r: Reply) -> Reply {
        let href = r.accepted()["target"]["href"].as_str().unwrap().to_string();
        self.get(href).await
    }

    pub async fn raw(&self, method: Method, uri: &str, ct: Option<&str>, body: &[u8]) -> Reply {
        self.send(self.request(method, uri, ct, body)).await
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

    /// Every key and value of the model and identities, with their
    /// revisions. Audit records are left out: a refused request is
    /// recorded too.
    pub async fn snapshot(&self) -> Vec<(String, Vec<u8>, u64)> {
        let (mut kvs, _) = self.store.range(keys::ROOT).await.unwrap();
        let (iam, _) = self.store.range(keys::IAM).await.unwrap();
        kvs.extend(
            iam.into_iter()
                .filter(|kv| !kv.key.starts_with(keys::AUDIT)),
        );
        kvs.into_iter()
            .map(|kv| (kv.key, kv.value, kv.mod_revision))
            .collect()
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
        let admin = self.with_creds(Some(self.admin.credentials()));
        let mut out = vec![];
        for uri in ["/v1/nodes", "/v1/vpcs", "/v1/subnets", "/v1/nics"] {
            out.push(admin.get(uri).await.ok(200).clone());
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

    /// Creates a subnet (202 and an operation) and returns its id.
    pub async fn subnet(&self, vpc_id: &str, cidr: &str) -> String {
        let r = self
            .post("/v1/subnets", json!({"vpc_id": vpc_id, "cidr": cidr}))
            .await;
        self.applied(r).await.ok(200)["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a NIC (202 and an operation) and returns it as read back.
    pub async fn nic(&self, body: Value) -> Value {
        let r = self.post("/v1/nics", body).await;
        self.applied(r).await.ok(200).clone()
    }
}
