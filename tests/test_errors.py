"""errors.from_upstream / from_upstream_failure / error_body: protocol.md §4.1, §9.11."""

from __future__ import annotations

import orjson
import pytest

from gateway import errors


def _body(code: str | None, message: str = "m", typ: str = "invalid_request_error") -> bytes:
    return orjson.dumps({"error": {"message": message, "type": typ, "param": None, "code": code}})


@pytest.mark.parametrize(
    ("status", "body", "cls", "anth_status", "anth_type"),
    [
        (400, _body("invalid_value"), errors.InvalidRequestError, 400, "invalid_request_error"),
        (422, _body(None), errors.InvalidRequestError, 400, "invalid_request_error"),
        (401, _body("invalid_api_key"), errors.AuthenticationError, 401, "authentication_error"),
        (
            403,
            _body("unsupported_country_region_territory"),
            errors.PermissionDeniedError,
            403,
            "permission_error",
        ),
        (404, _body("model_not_found"), errors.NotFoundError, 404, "not_found_error"),
        (400, _body("model_not_found"), errors.NotFoundError, 404, "not_found_error"),
        (409, _body(None), errors.InvalidRequestError, 400, "invalid_request_error"),
        (413, b"too big", errors.RequestTooLargeError, 413, "request_too_large"),
        (429, _body("rate_limit_exceeded"), errors.RateLimitError, 429, "rate_limit_error"),
        (
            429,
            _body("insufficient_quota", typ="insufficient_quota"),
            errors.BillingError,
            402,
            "billing_error",
        ),
        (500, _body("server_error"), errors.APIError, 500, "api_error"),
        (502, b"<html>bad gateway</html>", errors.APIError, 500, "api_error"),
        (503, _body("overloaded"), errors.OverloadedError, 529, "overloaded_error"),
        (504, b"", errors.GatewayTimeoutError, 504, "timeout_error"),
    ],
)
def test_status_mapping(
    status: int, body: bytes, cls: type, anth_status: int, anth_type: str
) -> None:
    err = errors.from_upstream(status, body, {})
    assert type(err) is cls
    assert (err.status, err.error_type, err.upstream_status) == (anth_status, anth_type, status)


def test_context_overflow_message_prefix() -> None:
    body = _body("context_length_exceeded", "This model's maximum context length is 128000 tokens.")
    err = errors.from_upstream(400, body, {})
    assert err.status == 400
    assert err.message.startswith("prompt is too long: This model's maximum context length")


def test_retry_after_passed_on_for_429_only_printable() -> None:
    err = errors.from_upstream(429, _body("rate_limit_exceeded"), {"retry-after": "3"})
    assert err.response_headers() == {"retry-after": "3"}
    err = errors.from_upstream(429, _body(None), {"retry-after": "3\r\nx: y"})
    assert err.response_headers() == {}


def test_non_retryable_errors_say_so() -> None:
    assert errors.from_upstream(401, b"", {}).response_headers() == {"x-should-retry": "false"}
    quota = errors.from_upstream(429, _body("insufficient_quota"), {})
    assert quota.response_headers() == {"x-should-retry": "false"}
    assert errors.from_upstream(500, b"", {}).response_headers() == {}


def test_upstream_secrets_scrubbed() -> None:
    body = _body(
        "invalid_api_key",
        "Incorrect API key provided: sk-proj-abcdefghijklmnop. See https://u:pw@example.com/x",
    )
    err = errors.from_upstream(401, body, {}, secrets=("sk-proj-abcdefghijklmnop",))
    assert "abcdefghijklmnop" not in err.message
    assert "u:pw" not in err.message
    err = errors.from_upstream(400, _body(None, "key sk-live-ZZZZZZZZZZZZ bad"), {})
    assert "ZZZZ" not in err.message


def test_error_body_envelope_exact() -> None:
    err = errors.OverloadedError("Overloaded")
    assert orjson.loads(errors.error_body(err, "req_1")) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_1",
    }


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("rate_limit_exceeded", errors.RateLimitError),
        ("server_error", errors.APIError),
        ("invalid_prompt", errors.InvalidRequestError),
        ("invalid_image", errors.InvalidRequestError),
        ("image_too_large", errors.InvalidRequestError),
        ("context_length_exceeded", errors.InvalidRequestError),
        (None, errors.APIError),
    ],
)
def test_in_stream_failure_codes(code: str | None, cls: type) -> None:
    assert type(errors.from_upstream_failure(code, "x")) is cls
