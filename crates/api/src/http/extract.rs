//! Extractors whose rejections are problem+json answers.
//!
//! axum's own `Json`, `Query` and `Path` reject with plain-text bodies and,
//! for JSON, with 422 on data errors. Here every malformed request (bad JSON,
//! a wrong type, an unknown or missing field) is a 400 naming the field, and
//! 422 is kept for semantic validation done by the handlers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::problem::Problem;

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::unsupported_media_type(
                "expected a request body with content-type application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes `bytes`, naming the field at fault on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let field = field_of(&path, &inner.to_string());
        let detail = match &field {
            Some(f) if inner.is_data() => format!("field `{f}`: {inner}"),
            _ => format!("request body is not valid JSON for this resource: {inner}"),
        };
        let problem = Problem::bad_request(detail);
        match field {
            Some(f) => problem.with_field(f),
            None => problem,
        }
    })?;
    // Trailing garbage after the object is malformed too.
    de.end().map_err(|e| {
        Problem::bad_request(format!("trailing characters after the JSON body: {e}"))
    })?;
    Ok(value)
}

/// The JSON path of the offending field. serde reports unknown and missing
/// fields in the message, not in the path, so both are combined.
fn field_of(path: &str, message: &str) -> Option<String> {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| {
            let rest = &message[message.find(prefix)? + prefix.len()..];
            rest.split('`').next().map(str::to_string)
        });
    let path = (path != ".").then(|| path.to_string());
    match (path, named) {
        // serde_path_to_error already ends the path with an unknown field.
        (Some(p), Some(n)) if p == n || p.ends_with(&format!(".{n}")) => Some(p),
        (Some(p), Some(n)) => Some(format!("{p}.{n}")),
        (Some(p), None) => Some(p),
        (None, Some(n)) => Some(n),
        (None, None) => None,
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(ct) = ct.to_str() else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn bytes_rejection(rej: BytesRejection) -> Problem {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::payload_too_large("the request body is too large")
    } else {
        Problem::bad_request(format!(
            "could not read the request body: {}",
            rej.body_text()
        ))
    }
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|rej| {
                let text = rej.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_string();
                let problem = Problem::bad_request(format!("query string: {text}"));
                match field_of(".", &text) {
                    Some(f) => problem.with_field(f),
                    None => problem,
                }
            })
    }
}

/// One path parameter.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|rej| Problem::bad_request(format!("path: {}", rej.body_text())))
    }
}
