//! Known-answer vectors (published in docs/api-auth.md, computed by the
//! independent Python implementation in scripts/sign_vectors.py) and the
//! refusals: every tampered field, a stale timestamp, malformed headers.

use super::*;

struct Vector {
    key_id: &'static str,
    secret: &'static str,
    timestamp: i64,
    nonce: &'static str,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    body: &'static [u8],
    canonical_query: &'static str,
    header: &'static str,
}

const VECTORS: &[Vector] = &[
    Vector {
        key_id: "ak-0123456789abcdef",
        secret: "s3cr3t-0000000000000000000000000000",
        timestamp: 1700000000,
        nonce: "00112233445566778899aabbccddeeff",
        method: "GET",
        path: "/v1/vpcs",
        query: "",
        body: b"",
        canonical_query: "",
        header: "SN1-HMAC-SHA256 Credential=ak-0123456789abcdef, Timestamp=1700000000, \
                 Nonce=00112233445566778899aabbccddeeff, \
                 Signature=96352f0d3a4520d9e03b05a7da53fedaf9666242e9df1993209db8ea8b26b27b",
    },
    Vector {
        key_id: "ak-0123456789abcdef",
        secret: "s3cr3t-0000000000000000000000000000",
        timestamp: 1700000000,
        nonce: "00112233445566778899aabbccddeeff",
        method: "GET",
        path: "/v1/subnets",
        query: "vpc_id=vpc-1&b=2&a=x+y&a=1&sp%61ce=%7e%2F",
        body: b"",
        canonical_query: "a=1&a=x%20y&b=2&space=~%2F&vpc_id=vpc-1",
        header: "SN1-HMAC-SHA256 Credential=ak-0123456789abcdef, Timestamp=1700000000, \
                 Nonce=00112233445566778899aabbccddeeff, \
                 Signature=0c696cff3b4ec741ada2aff09c26e6be866e60174340725b93cf75f5c4d0e143",
    },
    Vector {
        key_id: "ak-fedcba9876543210",
        secret: "another-secret",
        timestamp: 1712345678,
        nonce: "nonce-with_dashes-and_underscores",
        method: "POST",
        path: "/v1/vpcs",
        query: "",
        body: br#"{"name":"web","cidrs":["10.0.0.0/16"]}"#,
        canonical_query: "",
        header: "SN1-HMAC-SHA256 Credential=ak-fedcba9876543210, Timestamp=1712345678, \
                 Nonce=nonce-with_dashes-and_underscores, \
                 Signature=7d105cc1825313317ed49e5d5e48ab20365c23398c93b532bec9c1884526ec4e",
    },
];

fn creds(v: &Vector) -> Credentials {
    Credentials {
        key_id: v.key_id.into(),
        secret: v.secret.into(),
    }
}

fn req(v: &Vector) -> Request<'static> {
    Request {
        method: v.method,
        path: v.path,
        query: v.query,
        body: v.body,
    }
}

#[test]
fn known_answer_vectors() {
    for v in VECTORS {
        assert_eq!(canonical_query(v.query), v.canonical_query);
        let h = authorization(
            &creds(v),
            v.method,
            v.path,
            v.query,
            v.body,
            v.timestamp,
            v.nonce,
        );
        assert_eq!(h, v.header, "{}", v.path);
        let parsed = parse_authorization(v.header).unwrap();
        assert_eq!(parsed.key_id, v.key_id);
        assert_eq!(parsed.timestamp, v.timestamp);
        assert_eq!(parsed.nonce, v.nonce);
        verify(&parsed, v.secret, &req(v), v.timestamp).unwrap();
    }
}

#[test]
fn query_order_and_encoding_do_not_matter_but_values_do() {
    let a = canonical_query("b=2&a=1");
    assert_eq!(a, canonical_query("a=1&b=2"));
    assert_eq!(canonical_query("a=x%20y"), canonical_query("a=x+y"));
    assert_eq!(canonical_query("a=%7E"), canonical_query("a=~"));
    assert_ne!(canonical_query("a=1&b=2"), canonical_query("a=1&b=3"));
    assert_ne!(canonical_query("a=1"), canonical_query("a=1&a=1"));
    // A lone `%` is kept, on both sides alike.
    assert_eq!(canonical_query("a=%"), "a=%25");
    assert_eq!(canonical_query("a=%4"), "a=%254");
}

#[test]
fn every_tampered_field_is_refused() {
    let v = &VECTORS[2];
    let good = parse_authorization(v.header).unwrap();
    let now = v.timestamp;
    let base = req(v);
    let cases: Vec<(&str, Authorization, Request<'_>, &str)> = vec![
        (
            "method",
            good.clone(),
            Request {
                method: "PUT",
                ..base
            },
            v.secret,
        ),
        (
            "path",
            good.clone(),
            Request {
                path: "/v1/vpcs/x",
                ..base
            },
            v.secret,
        ),
        (
            "query",
            good.clone(),
            Request {
                query: "a=1",
                ..base
            },
            v.secret,
        ),
        (
            "body",
            good.clone(),
            Request {
                body: br#"{"name":"wab","cidrs":["10.0.0.0/16"]}"#,
                ..base
            },
            v.secret,
        ),
        (
            "timestamp",
            Authorization {
                timestamp: v.timestamp + 1,
                ..good.clone()
            },
            base,
            v.secret,
        ),
        (
            "nonce",
            Authorization {
                nonce: "ffffffffffffffffffffffff".into(),
                ..good.clone()
            },
            base,
            v.secret,
        ),
        (
            "key id",
            Authorization {
                key_id: "ak-0000000000000000".into(),
                ..good.clone()
            },
            base,
            v.secret,
        ),
        (
            "signature",
            Authorization {
                signature: vec![0; 32],
                ..good.clone()
            },
            base,
            v.secret,
        ),
        ("secret", good.clone(), base, "another-secreT"),
    ];
    for (what, auth, r, secret) in cases {
        assert_eq!(
            verify(&auth, secret, &r, now),
            Err(SignError::Mismatch),
            "tampered {what} passed"
        );
    }
    // The untampered request passes (the cases above can fail).
    verify(&good, v.secret, &base, now).unwrap();
}

#[test]
fn a_stale_or_future_timestamp_is_refused_at_the_window_edge() {
    let v = &VECTORS[0];
    let a = parse_authorization(v.header).unwrap();
    let r = req(v);
    verify(&a, v.secret, &r, v.timestamp + WINDOW_SECS).unwrap();
    verify(&a, v.secret, &r, v.timestamp - WINDOW_SECS).unwrap();
    assert_eq!(
        verify(&a, v.secret, &r, v.timestamp + WINDOW_SECS + 1),
        Err(SignError::Stale(-WINDOW_SECS - 1))
    );
    assert_eq!(
        verify(&a, v.secret, &r, v.timestamp - WINDOW_SECS - 1),
        Err(SignError::Stale(WINDOW_SECS + 1))
    );
}

#[test]
fn malformed_headers_are_refused() {
    let sig = "0".repeat(64);
    let ok =
        format!("{SCHEME} Credential=ak-1, Timestamp=1, Nonce=0123456789abcdef, Signature={sig}");
    parse_authorization(&ok).unwrap();
    let cases = [
        ("Bearer x".to_string(), SignError::Scheme),
        (format!("{SCHEME}x Credential=ak-1"), SignError::Scheme),
        (
            format!("{SCHEME} Timestamp=1, Nonce=0123456789abcdef, Signature={sig}"),
            SignError::Missing("Credential"),
        ),
        (
            format!(
                "{SCHEME} Credential=ak/1, Timestamp=1, Nonce=0123456789abcdef, Signature={sig}"
            ),
            SignError::Malformed("Credential"),
        ),
        (
            format!(
                "{SCHEME} Credential=ak-1, Timestamp=x, Nonce=0123456789abcdef, Signature={sig}"
            ),
            SignError::Malformed("Timestamp"),
        ),
        (
            format!("{SCHEME} Credential=ak-1, Timestamp=1, Nonce=short, Signature={sig}"),
            SignError::Malformed("Nonce"),
        ),
        (
            format!("{SCHEME} Credential=ak-1, Timestamp=1, Nonce=0123456789abcdef"),
            SignError::Missing("Signature"),
        ),
        (
            format!(
                "{SCHEME} Credential=ak-1, Timestamp=1, Nonce=0123456789abcdef, Signature=abcd"
            ),
            SignError::Malformed("Signature"),
        ),
    ];
    for (h, want) in cases {
        assert_eq!(parse_authorization(&h), Err(want), "{h}");
    }
}

#[test]
fn nonces_differ() {
    let a = new_nonce();
    assert_eq!(a.len(), 32);
    assert_ne!(a, new_nonce());
}

#[test]
fn the_docs_publish_these_vectors() {
    let docs = include_str!("../../../../docs/api-auth.md");
    for v in VECTORS {
        let sig = v.header.rsplit("Signature=").next().unwrap_or_default();
        assert!(docs.contains(sig), "docs/api-auth.md lacks {sig}");
        if !v.canonical_query.is_empty() {
            assert!(docs.contains(v.canonical_query));
        }
    }
}
