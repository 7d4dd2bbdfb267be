//! Request signing for the northbound API (sans-IO: strings and bytes in,
//! strings out; no clock, no socket). The server, the `flowctl` CLI and the
//! lab's API client all sign and check with these functions.
//!
//! A request carries
//!
//! ```text
//! Authorization: SN1-HMAC-SHA256 Credential=<key id>, Timestamp=<unix seconds>,
//!     Nonce=<16..64 chars [A-Za-z0-9_-]>, Signature=<64 lowercase hex>
//! ```
//!
//! and the signature is `hex(HMAC-SHA256(secret, canonical))` where the key
//! is the UTF-8 bytes of the secret and `canonical` is, joined by `\n`:
//!
//! ```text
//! SN1-HMAC-SHA256
//! <timestamp>
//! <nonce>
//! <key id>
//! <METHOD, upper case>
//! <path, exactly as sent on the request line, without the query>
//! <canonical query>
//! <hex SHA-256 of the body bytes (of the empty string when there is none)>
//! ```
//!
//! The canonical query: split the raw query on `&`, drop empty pieces, split
//! each at the first `=` (no `=`: empty value), decode `+` as a space and
//! `%XX` escapes, re-encode with every byte but `A-Z a-z 0-9 - . _ ~` as
//! `%XX` (upper-case hex), sort by name then value, join as `name=value`
//! with `&`. So `b=2&a=x+y&a=1` becomes `a=1&a=x%20y&b=2`.
//!
//! The nonce makes two identical requests in the same second distinct, so
//! the server can refuse a replayed signature without refusing a client
//! that legitimately repeats itself.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The scheme name in the `Authorization` header and the first line of
/// the canonical string.
pub const SCHEME: &str = "SN1-HMAC-SHA256";

/// How far a request's timestamp may be from the server's clock.
pub const WINDOW_SECS: i64 = 300;

/// A key pair as a client holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The fields of a parsed `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub key_id: String,
    pub timestamp: i64,
    pub nonce: String,
    /// 32 bytes.
    pub signature: Vec<u8>,
}

/// Why a header or a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the Authorization header does not use the {SCHEME} scheme")]
    Scheme,
    #[error("the Authorization header lacks `{0}`")]
    Missing(&'static str),
    #[error("the Authorization header has a malformed `{0}`")]
    Malformed(&'static str),
    #[error("the signature does not match the request")]
    Mismatch,
    #[error("the timestamp is {0} s away from the server's clock (at most {WINDOW_SECS} s)")]
    Stale(i64),
}

/// The request fields a signature covers.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string, without the `?` ("" for none).
    pub query: &'a str,
    pub body: &'a [u8],
}

/// The canonical string of a request (see the module docs).
pub fn canonical_string(key_id: &str, timestamp: i64, nonce: &str, req: &Request<'_>) -> String {
    let body_hash = hex::encode(Sha256::digest(req.body));
    format!(
        "{SCHEME}\n{timestamp}\n{nonce}\n{key_id}\n{}\n{}\n{}\n{body_hash}",
        req.method.to_ascii_uppercase(),
        req.path,
        canonical_query(req.query),
    )
}

/// The sorted, re-encoded query (see the module docs).
pub fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `+` as a space and `%XX` escapes decoded; a `%` not followed by two hex
/// digits is kept as is (both sides decode alike, so it still signs).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &c in bytes {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn mac(secret: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length")
}

/// The signature of `canonical` under `secret`, as lowercase hex.
pub fn sign(secret: &str, canonical: &str) -> String {
    let mut m = mac(secret);
    m.update(canonical.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The `Authorization` header value for a request.
pub fn authorization(
    creds: &Credentials,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> String {
    let req = Request {
        method,
        path,
        query,
        body,
    };
    let canonical = canonical_string(&creds.key_id, timestamp, nonce, &req);
    format!(
        "{SCHEME} Credential={}, Timestamp={timestamp}, Nonce={nonce}, Signature={}",
        creds.key_id,
        sign(&creds.secret, &canonical)
    )
}

/// Parses an `Authorization` header value of the [`SCHEME`].
pub fn parse_authorization(value: &str) -> Result<Authorization, SignError> {
    let rest = value
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(SignError::Scheme)?;
    let (mut key_id, mut timestamp, mut nonce, mut signature) = (None, None, None, None);
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "Credential" => key_id = Some(v),
            "Timestamp" => timestamp = Some(v),
            "Nonce" => nonce = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let key_id = key_id.ok_or(SignError::Missing("Credential"))?;
    if key_id.is_empty() || key_id.len() > 64 || !key_id.bytes().all(is_token_byte) {
        return Err(SignError::Malformed("Credential"));
    }
    let timestamp: i64 = timestamp
        .ok_or(SignError::Missing("Timestamp"))?
        .parse()
        .map_err(|_| SignError::Malformed("Timestamp"))?;
    let nonce = nonce.ok_or(SignError::Missing("Nonce"))?;
    if !(16..=64).contains(&nonce.len()) || !nonce.bytes().all(is_token_byte) {
        return Err(SignError::Malformed("Nonce"));
    }
    let signature = signature.ok_or(SignError::Missing("Signature"))?;
    let signature = hex::decode(signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or(SignError::Malformed("Signature"))?;
    Ok(Authorization {
        key_id: key_id.to_string(),
        timestamp,
        nonce: nonce.to_string(),
        signature,
    })
}

fn is_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Checks a parsed header against the request and the secret of its key,
/// at server time `now` (unix seconds): the timestamp within
/// [`WINDOW_SECS`], then the signature (in constant time). Replays are the
/// caller's to refuse (it keeps the state).
pub fn verify(
    auth: &Authorization,
    secret: &str,
    req: &Request<'_>,
    now: i64,
) -> Result<(), SignError> {
    let skew = auth.timestamp.saturating_sub(now);
    if skew.abs() > WINDOW_SECS {
        return Err(SignError::Stale(skew));
    }
    let canonical = canonical_string(&auth.key_id, auth.timestamp, &auth.nonce, req);
    let mut m = mac(secret);
    m.update(canonical.as_bytes());
    m.verify_slice(&auth.signature)
        .map_err(|_| SignError::Mismatch)
}

/// The current unix time in seconds (the edge that owns the clock).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A fresh random nonce: 32 hex characters.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests;
