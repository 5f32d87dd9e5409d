"""JSON encoding for payloads built from client data; UTF-8 repair for upstream event data."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from .errors import InvalidRequestError


def encode_json(obj: Any) -> bytes:
    """Compact JSON bytes. orjson stops at 255 levels of nesting (a client's tool schema or
    input can be deeper); msgspec takes over there, and deeper still is the client's error."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        try:
            return msgspec.json.encode(obj)
        except RecursionError:
            raise InvalidRequestError("request JSON is nested too deeply") from None


def utf8_replaced(data: bytes) -> bytes | None:
    """``data`` with U+FFFD for each byte sequence that is not UTF-8; None when all of it is.

    Upstream event data stays bytes up to the JSON decoder, which refuses bad UTF-8; the SSE
    standard decodes a stream with replacement, so a translator retries with this."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").encode()
    return None
