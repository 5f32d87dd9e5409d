#!/usr/bin/env bash
# `make locust`: start the gateway on its mock upstream, run locust headless for a few
# seconds against it, fail if any request failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PORT=${LOCUST_PORT:-18182}
BIN=.venv/bin
"$BIN/python" -m pip install -q "locust>=2.20,<3"
XDG_STATE_HOME=$(mktemp -d) "$BIN/python" -m gateway --mock --port "$PORT" --log-level warning 2>/dev/null &
GW=$!
trap 'kill $GW 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN/locust" -f tests/perf/locustfile.py --host "http://127.0.0.1:$PORT" \
  --headless -u "${LOCUST_USERS:-20}" -r 10 -t "${LOCUST_TIME:-5s}" --only-summary --exit-code-on-error 1
