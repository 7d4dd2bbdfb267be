#!/usr/bin/env bash
# OpenAPI-driven fuzz run of the API (schemathesis, from PyPI) against a
# real `flowctl serve` on 127.0.0.1 with a fresh embedded store, through a
# local proxy that signs every request as the bootstrap admin. Reports
# schemathesis' counts; fails on any 5xx or answer that breaks the schema.
#
#   scripts/fuzz-api.sh [MAX_EXAMPLES per operation, default 50]
#
# Needs python3 with venv and network access to PyPI for the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES=${1:-50}
RUN=$(mktemp -d /tmp/stacknet-fuzz.XXXXXX)
API_PORT=${API_PORT:-18480}
PROXY_PORT=${PROXY_PORT:-18481}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q -p flowctl
FLOWCTL="$CARGO_TARGET_DIR/debug/flowctl"

VENV=${FUZZ_VENV:-/tmp/stacknet-fuzz-venv}
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis
fi

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/cluster.secret"
"$FLOWCTL" serve --store "$RUN/store.redb" --api-listen "127.0.0.1:$API_PORT" \
  --cluster-secret-file "$RUN/cluster.secret" --admin-credentials "$RUN/admin.json" \
  > "$RUN/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$API_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
python3 scripts/fuzz_api_proxy.py "$PROXY_PORT" "http://127.0.0.1:$API_PORT" "$RUN/admin.json" &
pids+=($!)
sleep 0.5

# From the run directory: schemathesis keeps a cache where it runs.
cd "$RUN"
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PROXY_PORT/v1/openapi.json" \
  --url "http://127.0.0.1:$PROXY_PORT" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" --workers 2
