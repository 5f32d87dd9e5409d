"""JSON encoding for payloads built from client data."""

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
