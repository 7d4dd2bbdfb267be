#!/usr/bin/env python3
"""An independent implementation (Python stdlib only) of the stacknet API
request signature (SN1-HMAC-SHA256, see docs/api-auth.md), printing the
known-answer vectors published there and checked by proto's tests."""
import hashlib
import hmac
import urllib.parse

SCHEME = "SN1-HMAC-SHA256"
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def canonical_query(raw):
    pairs = []
    for piece in raw.split("&"):
        if not piece:
            continue
        k, _, v = piece.partition("=")
        dec = lambda s: urllib.parse.unquote_to_bytes(s.replace("+", " "))
        enc = lambda b: urllib.parse.quote_from_bytes(b, safe="-._~")
        pairs.append((enc(dec(k)), enc(dec(v))))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical(key_id, ts, nonce, method, path, query, body):
    return "\n".join([SCHEME, str(ts), nonce, key_id, method.upper(), path,
                      canonical_query(query), hashlib.sha256(body).hexdigest()])


def sign(secret, c):
    return hmac.new(secret.encode(), c.encode(), hashlib.sha256).hexdigest()


VECTORS = [
    ("ak-0123456789abcdef", "s3cr3t-0000000000000000000000000000", 1700000000,
     "00112233445566778899aabbccddeeff", "GET", "/v1/vpcs", "", b""),
    ("ak-0123456789abcdef", "s3cr3t-0000000000000000000000000000", 1700000000,
     "00112233445566778899aabbccddeeff", "GET", "/v1/subnets",
     "vpc_id=vpc-1&b=2&a=x+y&a=1&sp%61ce=%7e%2F", b""),
    ("ak-fedcba9876543210", "another-secret", 1712345678,
     "nonce-with_dashes-and_underscores", "POST", "/v1/vpcs", "",
     b'{"name":"web","cidrs":["10.0.0.0/16"]}'),
]

if __name__ == "__main__":
    for key_id, secret, ts, nonce, method, path, query, body in VECTORS:
        c = canonical(key_id, ts, nonce, method, path, query, body)
        print("key_id    ", key_id)
        print("secret    ", secret)
        print("request   ", method, path + ("?" + query if query else ""), body.decode())
        print("canonical query", canonical_query(query))
        print("body sha256", hashlib.sha256(body).hexdigest())
        print("signature ", sign(secret, c))
        print(f"header     {SCHEME} Credential={key_id}, Timestamp={ts}, Nonce={nonce}, Signature={sign(secret, c)}")
        print()
