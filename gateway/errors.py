"""The gateway's error hierarchy: the ONLY place HTTP statuses and Anthropic error types live.

One class per Anthropic error type (protocol.md §4.1). ``from_upstream`` is the one function
that maps an upstream HTTP failure into the hierarchy (§9.11), ``from_upstream_failure`` does the
same for in-stream failures (``response.failed``, ``error`` events, Chat ``{"error": …}``
chunks), and ``error_body`` renders the Anthropic envelope.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol

import orjson

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadGatewayError",
    "BillingError",
    "GatewayError",
    "GatewayTimeoutError",
    "InvalidRequestError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "error_body",
    "from_upstream",
    "from_upstream_failure",
    "scrub",
    "split_validation_error",
]


class GatewayError(Exception):
    """An error with an Anthropic error type and HTTP status.

    ``headers`` are extra response headers (``retry-after``); ``should_retry`` becomes
    ``x-should-retry`` (Claude Code and the SDKs obey it, claude-code.md §6);
    ``upstream_status`` is kept for the access log.
    """

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    #: default for ``x-should-retry``; None leaves the decision to the client's status rules
    default_should_retry: ClassVar[bool | None] = None

    def __init__(
        self,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        should_retry: bool | None = None,
        upstream_status: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        self.should_retry = should_retry if should_retry is not None else self.default_should_retry
        self.upstream_status = upstream_status
        self.details = dict(details) if details else None

    def response_headers(self) -> dict[str, str]:
        """Headers to send with this error as an HTTP response."""
        out = dict(self.headers)
        if self.should_retry is not None:
            out["x-should-retry"] = "true" if self.should_retry else "false"
        return out


class InvalidRequestError(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationError(GatewayError):
    status = 401
    error_type = "authentication_error"
    # A wrong key stays wrong: Claude Code would otherwise retry a 401 ten times.
    default_should_retry = False


class BillingError(GatewayError):
    status = 402
    error_type = "billing_error"
    default_should_retry = False


class PermissionDeniedError(GatewayError):
    status = 403
    error_type = "permission_error"
    default_should_retry = False


class NotFoundError(GatewayError):
    status = 404
    error_type = "not_found_error"


class RequestTimeoutError(GatewayError):
    """The client did not send its whole request in time (the SDKs retry a 408)."""

    status = 408
    error_type = "timeout_error"


class RequestTooLargeError(GatewayError):
    status = 413
    error_type = "request_too_large"


class RateLimitError(GatewayError):
    status = 429
    error_type = "rate_limit_error"


class APIError(GatewayError):
    status = 500
    error_type = "api_error"


class BadGatewayError(APIError):
    """The upstream answered, but not with an answer: a redirect, a body past its size cap,
    a 200 that holds no response (issue 10)."""

    status = 502


class GatewayTimeoutError(GatewayError):
    status = 504
    error_type = "timeout_error"


class OverloadedError(GatewayError):
    status = 529
    error_type = "overloaded_error"


def split_validation_error(text: str) -> tuple[str, str | None]:
    """msgspec's ``"Expected `int`, got `str` - at `$.max_tokens`"`` → (message, JSON path);
    the path is None when msgspec gave none."""
    message, sep, where = text.rpartition(" - at `")
    return (message, where.rstrip("`")) if sep else (text, None)


def error_body(err: GatewayError, request_id: str | None) -> bytes:
    """The Anthropic error envelope (protocol.md §4.1) as compact JSON bytes."""
    inner: dict[str, Any] = {"type": err.error_type, "message": err.message}
    if err.details:
        inner["details"] = err.details
    body: dict[str, Any] = {"type": "error", "error": inner}
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


# ---------------------------------------------------------------------------------------------
# Upstream → GatewayError

_MAX_MESSAGE: Final = 2000
# OpenAI-style secret keys and credentials embedded in URLs must never be echoed to a client.
_SECRET_RE: Final = re.compile(r"(sk-[A-Za-z0-9_\-*]{8,})|(://[^/\s:@]+:[^/\s@]+@)")

_OVERLOAD_CODES: Final = frozenset({"overloaded", "server_is_overloaded", "slow_down"})
_CONTEXT_CODES: Final = frozenset({"context_length_exceeded", "string_above_max_length_context"})


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove key-shaped strings, URL credentials and the given secrets from ``text``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = _SECRET_RE.sub(lambda m: "sk-***" if m.group(1) else "://***@", text)
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "…"
    return text


def _parse_error(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, code, type) from an OpenAI error body; Nones when it is not one."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    err = doc.get("error", doc)
    if isinstance(err, str):
        return err, None, None
    if not isinstance(err, dict):
        return None, None, None
    msg = err.get("message")
    code = err.get("code")
    typ = err.get("type")
    return (
        msg if isinstance(msg, str) else None,
        str(code) if code is not None else None,
        typ if isinstance(typ, str) else None,
    )


def _retry_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("retry-after", "retry-after-ms"):
        value = headers.get(name)
        if value is not None and len(value) < 64 and value.isprintable():
            out[name] = value
    return out


def from_upstream(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    secrets: tuple[str, ...] = (),
    upstream: str | None = None,
    key_env: str = "",
) -> GatewayError:
    """Map an upstream non-2xx HTTP answer to a GatewayError (protocol.md §9.11).

    ``upstream`` (host:port) and ``key_env`` (the variable holding the gateway's key for it)
    make a 401 say whose key was refused: the gateway's, not the client's."""
    headers = headers or {}
    message, code, typ = _parse_error(body)
    text = scrub(message or f"upstream returned HTTP {status}", secrets)
    kw: dict[str, Any] = {"upstream_status": status}
    if code in _CONTEXT_CODES or (message and "context length" in message.lower()):
        # Claude Code keys on this prefix to start compacting (issue 4).
        return InvalidRequestError(f"prompt is too long: {text}", **kw)
    if status == 429:
        if code == "insufficient_quota" or typ == "insufficient_quota":
            return BillingError(text, **kw)
        return RateLimitError(text, headers=_retry_headers(headers), **kw)
    if status == 401:
        who = f"upstream {upstream}" if upstream else "the upstream"
        key = f" ({key_env})" if key_env else ""
        return AuthenticationError(
            f"{who} rejected the gateway's own API key{key}, not yours: {text}", **kw
        )
    if status == 402:  # OpenRouter and others: out of credits
        return BillingError(text, **kw)
    if status == 403:
        return PermissionDeniedError(text, **kw)
    if status == 404 or code == "model_not_found":
        return NotFoundError(text, **kw)
    if status == 413:
        return RequestTooLargeError(text, **kw)
    if status in (400, 409, 422) or 400 <= status < 500:
        return InvalidRequestError(text, **kw)
    if status == 503 or code in _OVERLOAD_CODES:
        return OverloadedError(text, headers=_retry_headers(headers), **kw)
    if status == 504:
        return GatewayTimeoutError(text, **kw)
    return APIError(text, **kw)


def from_upstream_failure(
    code: str | None, message: str | None, *, secrets: tuple[str, ...] = ()
) -> GatewayError:
    """Map an in-stream upstream failure (``response.failed``, ``error`` event) by its code."""
    text = scrub(message or "upstream reported an error", secrets)
    if code in _CONTEXT_CODES:
        return InvalidRequestError(f"prompt is too long: {text}")
    if code == "rate_limit_exceeded":
        return RateLimitError(text)
    if code == "insufficient_quota":
        return BillingError(text)
    if code in _OVERLOAD_CODES:
        return OverloadedError(text)
    if code is not None and (
        code.startswith(("invalid_", "image_", "empty_image")) or code.endswith("_too_large")
    ):
        return InvalidRequestError(text)
    return APIError(text)


# ---------------------------------------------------------------------------------------------
# Upstream answers that are not answers

#: How much of a decoder's complaint about an upstream body or event an error message quotes.
_MAX_REASON: Final = 200


def clip(reason: str) -> str:
    """``reason`` cut to 200 characters (an ellipsis marks the cut), for error messages."""
    return reason if len(reason) <= _MAX_REASON else reason[:_MAX_REASON] + "…"


def invalid_response(reason: str) -> BadGatewayError:
    """A body that does not decode, or is not a finished answer (``reason`` is clipped)."""
    return BadGatewayError(f"upstream returned an invalid response: {clip(reason)}")


#: A 200 whose body holds no answer at all (``{}``, no ``output`` / ``choices``): never an
#: empty message (issue 10 item 10).
NO_RESPONSE: Final = "upstream answered 200 without a response"


def invalid_event(what: str, reason: str) -> APIError:
    """The error for an upstream event (or part of one) that does not decode."""
    return APIError(f"upstream sent an invalid {what}: {clip(reason)}")


class ErrorObject(Protocol):
    """An upstream error object: Responses' ``error`` and Chat's ``{"error": …}`` have the
    same three fields."""

    @property
    def code(self) -> str | int | None: ...

    @property
    def type(self) -> str | None: ...

    @property
    def message(self) -> str | None: ...


def failure_error(error: ErrorObject | None) -> GatewayError:
    """An upstream error object (``response.failed``, a failed body, a Chat error chunk) →
    GatewayError by its code (errors.from_upstream_failure), falling back to its type."""
    if error is None:
        return from_upstream_failure(None, None)
    code = error.code if error.code is not None else error.type
    return from_upstream_failure(None if code is None else str(code), error.message)
