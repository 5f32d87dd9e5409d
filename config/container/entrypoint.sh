#!/bin/sh
# The container's entrypoint (config/container/Dockerfile); POSIX sh, no bashisms.
#
#   1. Refuses to start without GATEWAY_SIGNING_KEY: every replica of a fleet must share one
#      key ring, or a thinking block signed by one pod fails to verify on the next. A single
#      instance may opt out with GATEWAY_ALLOW_EPHEMERAL_KEY=1 (its key is then made once
#      into $XDG_STATE_HOME/messages-gateway/, and lost with that directory).
#   2. Points XDG_STATE_HOME (signing key file, SQLite usage ledger) at a writable directory:
#      /var/lib/messages-gateway unless set (an emptyDir in config/kubernetes/deployment.yaml).
#   3. Runs `python -m gateway --check-config` with the same arguments: a bad setting, a
#      missing upstream key or a port in use stops here with the gateway's one-line message
#      and its exit status (2).
#   4. exec's `python -m gateway "$@"`, so the gateway replaces this shell and receives
#      SIGTERM itself (drain_delay, then shutdown_grace; exit 0).
#
# GATEWAY_PYTHON names the interpreter (default: `python` on PATH, the image's /opt/venv);
# tests/deploy/test_container.py runs this script outside a container with the venv's python.
# `keys …`, `usage …`, --help and --version go straight to the gateway, with no checks.
set -eu

py="${GATEWAY_PYTHON:-python}"
XDG_STATE_HOME="${XDG_STATE_HOME:-/var/lib/messages-gateway}"
export XDG_STATE_HOME

case "${1:-}" in
    keys | usage) exec "$py" -m gateway "$@" ;;
esac
if [ "${1:-}" = "--config" ]; then
    case "${3:-}" in
        keys | usage) exec "$py" -m gateway "$@" ;;
    esac
fi
precheck=1
for arg in "$@"; do
    case "$arg" in
        -h | --help | --version) exec "$py" -m gateway "$@" ;;
        --check-config) precheck=0 ;;
    esac
done

if [ -z "${GATEWAY_SIGNING_KEY:-}" ] && [ "${GATEWAY_ALLOW_EPHEMERAL_KEY:-0}" != "1" ]; then
    echo "messages-gateway: GATEWAY_SIGNING_KEY is not set: every replica must share one key" \
        "ring (make one with: python -c 'import secrets; print(secrets.token_hex(32))');" \
        "GATEWAY_ALLOW_EPHEMERAL_KEY=1 lets a single instance keep its own" >&2
    exit 2
fi

# The report of what would be served goes to stderr, with the gateway's own log lines.
if [ "$precheck" = 1 ]; then
    status=0
    "$py" -m gateway --check-config "$@" >&2 || status=$?
    if [ "$status" -ne 0 ]; then
        exit "$status"
    fi
fi

exec "$py" -m gateway "$@"
