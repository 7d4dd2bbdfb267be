#!/usr/bin/env python3
"""A signing proxy for fuzzing the API: takes unsigned requests on
127.0.0.1:LISTEN, signs them (SN1-HMAC-SHA256, the key in CREDENTIALS) and
forwards them to UPSTREAM, answering with what the server answered. It lets
an OpenAPI fuzzer (schemathesis) that knows nothing of the signature reach
every handler. Standard library only; the signature is sign_vectors.py's.

usage: fuzz_api_proxy.py LISTEN_PORT UPSTREAM_URL CREDENTIALS_JSON
"""
import http.server
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sign_vectors import SCHEME, canonical, sign  # noqa: E402

PORT, UPSTREAM, CREDS = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
with open(CREDS) as f:
    C = json.load(f)


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def relay(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path, _, query = self.path.partition("?")
        nonce = os.urandom(16).hex()
        ts = int(time.time())
        sig = sign(C["secret"], canonical(C["key_id"], ts, nonce, self.command, path, query, body))
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "content-length", "authorization", "connection")}
        headers["Authorization"] = (f"{SCHEME} Credential={C['key_id']}, Timestamp={ts}, "
                                    f"Nonce={nonce}, Signature={sig}")
        req = urllib.request.Request(UPSTREAM + self.path, data=body if n else None,
                                     headers=headers, method=self.command)
        try:
            resp = urllib.request.urlopen(req, timeout=30)
            status, rh, rb = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, rh, rb = e.code, e.headers, e.read()
        self.send_response(status)
        for k, v in rh.items():
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(rb)))
        self.end_headers()
        self.wfile.write(rb)

    # Every method, known or not (TRACE, QUERY...), goes to the server:
    # what it answers to them is part of what is tested.
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.relay
        raise AttributeError(name)


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
