"""Errors and logs that tell the truth (issue 11 items 9-12): upstream failures name the
upstream and the cause, one retry rule stops retry storms with Claude Code, 402 and 401 say
what they are, every error shows at ``--log-level warning``, and the request_id a user reports
can be found in the log."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from gateway import errors
from gateway.anthropic.signatures import Signer
from gateway.mock_upstream import Script, Text
from tests.conftest import UPSTREAM_KEY, UPSTREAM_KEY_ENV, GatewayFactory, Upstream
from tests.faults.support import unanswered_port
from tests.test_faults import assert_clean, body, error_of, send


def lines_of(log_lines: list[str], event: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log_lines if x.startswith("{") and f'"{event}"' in x]


# ---------------------------------------------------------------------------------------------
# Item 9: upstream failures name the upstream and the cause


async def test_refused_connection_names_host_and_cause(
    make_gateway: GatewayFactory, unused_tcp_port: int, log_lines: list[str]
) -> None:
    gw = await make_gateway(
        upstreams={"default": {"base_url": f"http://127.0.0.1:{unused_tcp_port}/v1"}},
        retries={"max_attempts": 2, "backoff_base": 0.01, "backoff_max": 0.02},
    )
    status, headers, raw, _ = await send(gw, body())
    assert headers["x-should-retry"] == "false"
    where = f"127.0.0.1:{unused_tcp_port}"
    assert status == 500
    assert error_of(raw) == {
        "type": "api_error",
        "message": f"cannot reach upstream {where} (connection refused)",
    }
    failures = lines_of(log_lines, "upstream_failed")
    assert [(f["upstream"], f["reason"], f["attempts"]) for f in failures] == [
        (where, "connection refused", 1),
        (where, "connection refused", 2),
    ]
    assert all(f["level"] == "warning" for f in failures)
    assert_clean(log_lines)


async def test_dns_failure_is_said_as_such(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": "http://no-such-host.invalid/v1"}})
    status, _, raw, _ = await send(gw, body())
    assert status == 500
    assert (
        error_of(raw)["message"]
        == "cannot reach upstream no-such-host.invalid:80 (DNS lookup failed)"
    )


# ---------------------------------------------------------------------------------------------
# Item 10: one retry rule


async def test_after_the_gateways_own_retries_the_client_is_told_not_to_retry(
    make_gateway: GatewayFactory, unused_tcp_port: int, upstream: Upstream
) -> None:
    retries = {"max_attempts": 3, "backoff_base": 0.01, "backoff_max": 0.02}
    gw = await make_gateway(
        upstreams={"default": {"base_url": f"http://127.0.0.1:{unused_tcp_port}/v1"}},
        retries=retries,
    )
    status, headers, _, _ = await send(gw, body())
    assert (status, headers["x-should-retry"]) == (500, "false")
    with unanswered_port() as port:
        gw = await make_gateway(
            upstreams={"default": {"base_url": f"http://127.0.0.1:{port}/v1"}},
            timeouts={"connect": 0.1},
            retries=retries,
        )
        status, headers, _, _ = await send(gw, body())
    assert (status, headers["x-should-retry"]) == (504, "false")
    # upstream 5xx, retried by the gateway until it gave up
    gw = await make_gateway(retries=retries)
    upstream.mock.enqueue(*[Script(status=500) for _ in range(3)])
    status, headers, _, _ = await send(gw, body())
    assert (status, headers["x-should-retry"]) == (500, "false")


async def test_rate_limits_and_overload_stay_retryable_with_retry_after(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(retries={"max_attempts": 2, "backoff_base": 0.01})
    upstream.mock.enqueue(
        *[Script(status=429, error_code="rate_limit_exceeded", headers={"retry-after": "0"})] * 2
    )
    status, headers, raw, _ = await send(gw, body())
    assert (status, error_of(raw)["type"]) == (429, "rate_limit_error")
    assert headers["retry-after"] == "0"
    assert "x-should-retry" not in headers
    upstream.mock.enqueue(*[Script(status=503, headers={"retry-after": "0"})] * 2)
    status, headers, raw, _ = await send(gw, body())
    assert (status, error_of(raw)["type"]) == (529, "overloaded_error")
    assert headers["retry-after"] == "0"
    assert "x-should-retry" not in headers


async def test_without_gateway_retries_the_client_decides(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(retries={"max_attempts": 1})
    upstream.mock.enqueue(Script(status=500))
    status, headers, _, _ = await send(gw, body())
    assert status == 500
    assert "x-should-retry" not in headers


# ---------------------------------------------------------------------------------------------
# Item 11: status mapping


async def test_upstream_402_is_billing_error(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(retries={"max_attempts": 3, "backoff_base": 0.01})
    upstream.mock.enqueue(
        Script(status=402, error_message="Insufficient credits. Add more using /credits")
    )
    status, headers, raw, _ = await send(gw, body())
    assert (status, headers["x-should-retry"]) == (402, "false")
    assert error_of(raw) == {
        "type": "billing_error",
        "message": "Insufficient credits. Add more using /credits",
    }
    assert len(upstream.mock.requests) == 1


async def test_upstream_401_says_the_gateways_key_was_refused(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway()
    upstream.mock.enqueue(
        Script(status=401, error_code="invalid_api_key", error_message=f"Bad key {UPSTREAM_KEY}")
    )
    status, headers, raw, _ = await send(gw, body())
    where = f"127.0.0.1:{upstream.server.port}"
    assert (status, headers["x-should-retry"]) == (401, "false")
    assert error_of(raw) == {
        "type": "authentication_error",
        "message": f"upstream {where} rejected the gateway's own API key ({UPSTREAM_KEY_ENV}), "
        "not yours: Bad key ***",
    }
    assert_clean(log_lines)


def test_from_upstream_402_and_401_unit() -> None:
    assert isinstance(errors.from_upstream(402, b"{}"), errors.BillingError)
    err = errors.from_upstream(401, b'{"error":{"message":"nope"}}')
    assert err.message == "the upstream rejected the gateway's own API key, not yours: nope"


# ---------------------------------------------------------------------------------------------
# Item 12: log levels and the request_id


@pytest.mark.parametrize(
    ("script", "level"),
    [
        (Script(items=[Text("fine")]), "info"),
        (Script(status=400, error_message="bad"), "warning"),
        (Script(status=429, error_code="rate_limit_exceeded"), "warning"),
        (Script(status=500), "error"),
        (Script(raw_body=b"{}"), "error"),
    ],
    ids=["200", "400", "429", "500", "502"],
)
async def test_summary_level_follows_the_outcome(
    gateway: Any, upstream: Upstream, log_lines: list[str], script: Script, level: str
) -> None:
    upstream.mock.enqueue(script)
    await send(gateway, body())
    (end,) = lines_of(log_lines, "request_end")
    assert end["level"] == level


async def test_failed_stream_is_logged_as_an_error(
    gateway: Any, upstream: Upstream, log_lines: list[str]
) -> None:
    upstream.mock.enqueue(Script(items=[Text("x")], end="failed"))
    status, _, _, _ = await send(gateway, body(stream=True))
    assert status == 200
    (end,) = lines_of(log_lines, "request_end")
    assert (end["level"], end["outcome"]) == ("error", "upstream_error")


async def test_errors_show_at_log_level_warning(
    gateway: Any, upstream: Upstream, log_lines: list[str]
) -> None:
    logging.getLogger("gateway").setLevel(logging.WARNING)
    upstream.mock.enqueue(Script(items=[Text("fine")]), Script(status=500))
    await send(gateway, body())
    await send(gateway, body())
    ends = lines_of(log_lines, "request_end")
    assert [e["status"] for e in ends] == [500]


async def test_request_id_of_an_error_body_is_in_the_log_line(
    gateway: Any, upstream: Upstream, log_lines: list[str]
) -> None:
    upstream.mock.enqueue(Script(status=500))
    status, headers, raw, _ = await send(
        gateway, body(), headers={"X-Correlation-ID": "my-trace-1"}
    )
    assert status == 500
    request_id = json.loads(raw)["request_id"]
    assert headers["request-id"] == request_id
    (end,) = lines_of(log_lines, "request_end")
    assert (end["id"], end["request_id"]) == ("my-trace-1", request_id)


# ---------------------------------------------------------------------------------------------
# Item 4: the thinking-signature key ring


def test_signer_key_ring_signs_with_the_first_and_verifies_with_all() -> None:
    old, new = b"o" * 32, b"n" * 32
    before = Signer(old).encode("rs_1", "enc")
    ring = Signer([new, old])
    after = ring.encode("rs_2", None)
    assert ring.decode(before) == ("rs_1", "enc")
    assert ring.decode(after) == ("rs_2", None)
    assert Signer(new).decode(after) == ("rs_2", None)  # signed with the first key
    assert Signer(new).decode(before) is None  # the old key dropped: its tokens stop working
    with pytest.raises(ValueError):
        Signer([])
