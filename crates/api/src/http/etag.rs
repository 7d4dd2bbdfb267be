//! Revisions as entity tags: a resource's `ETag` is its store
//! `mod_revision` in quotes; `If-Match` on PATCH and DELETE makes the
//! change conditional on it (412 otherwise).
//!
//! The check runs inside the handler's optimistic attempt against the
//! revision it read, and the commit compares that same revision, so a
//! change that lands between the check and the commit fails the compare
//! and the retry sees the new revision: a stale `If-Match` cannot win.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::nics::NicView;
use super::problem::Problem;
use crate::model::Owned;

/// The entity tag of `revision`.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// A resource that answers with its revision.
pub trait Revisioned {
    fn set_revision(&mut self, revision: u64);
}

impl<T> Revisioned for Owned<T> {
    fn set_revision(&mut self, revision: u64) {
        self.revision = revision;
    }
}

impl Revisioned for NicView {
    fn set_revision(&mut self, revision: u64) {
        self.nic.revision = revision;
    }
}

/// A resource whose stored type has no `revision` (nodes, tenants,
/// users), answered with one beside its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WithRevision<T> {
    #[serde(flatten)]
    pub inner: T,
    /// The store revision of its last change; its `ETag` in quotes.
    #[serde(default)]
    pub revision: u64,
}

impl<T> WithRevision<T> {
    pub fn new(inner: T) -> Self {
        WithRevision { inner, revision: 0 }
    }
}

impl<T> Revisioned for WithRevision<T> {
    fn set_revision(&mut self, revision: u64) {
        self.revision = revision;
    }
}

/// A JSON answer with the resource's `revision` and `ETag`.
pub struct Tagged<T>(pub T, pub u64);

impl<T: Revisioned + Serialize> IntoResponse for Tagged<T> {
    fn into_response(self) -> Response {
        let Tagged(mut value, revision) = self;
        value.set_revision(revision);
        let mut resp = Json(value).into_response();
        if let Ok(v) = HeaderValue::from_str(&etag(revision)) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        resp
    }
}

/// The `If-Match` of a request, if any.
#[derive(Clone, Debug, Default)]
pub struct IfMatch(Option<String>);

impl IfMatch {
    /// Ok if there is no `If-Match`, it is `*` (the resource exists: the
    /// caller checked that already), or it lists `revision`'s tag. Weak
    /// tags never match (RFC 9110 13.1.1: strong comparison).
    pub fn check(&self, revision: u64) -> Result<(), Problem> {
        let Some(v) = &self.0 else {
            return Ok(());
        };
        let want = etag(revision);
        if v.trim() == "*" || v.split(',').any(|t| t.trim() == want) {
            return Ok(());
        }
        Err(Problem::precondition_failed(format!(
            "If-Match {v} does not match the current revision {want}; read it again"
        ))
        .with_field("If-Match"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        match parts.headers.get(header::IF_MATCH) {
            None => Ok(IfMatch(None)),
            Some(v) => v
                .to_str()
                .map(|s| IfMatch(Some(s.to_string())))
                .map_err(|_| {
                    Problem::bad_request("the If-Match header is not text").with_field("If-Match")
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_compares_strong_tags() {
        assert!(IfMatch(None).check(7).is_ok());
        assert!(IfMatch(Some("*".into())).check(7).is_ok());
        assert!(IfMatch(Some("\"7\"".into())).check(7).is_ok());
        assert!(IfMatch(Some("\"3\", \"7\"".into())).check(7).is_ok());
        assert_eq!(
            IfMatch(Some("\"6\"".into())).check(7).unwrap_err().status,
            412
        );
        assert!(IfMatch(Some("W/\"7\"".into())).check(7).is_err());
        assert!(IfMatch(Some("7".into())).check(7).is_err());
    }
}
