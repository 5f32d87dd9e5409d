"""Mapping rules shared by every translator: ids, thinking signatures, stop_reason, usage.

Pure: no aiohttp, no asyncio. protocol.md §9.6 (stop_reason), §9.7 (usage), §9.9 (ids),
§9.10 (thinking signatures).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import orjson

from ..errors import InvalidRequestError
from ..schemas.anthropic import StopReason, Usage

# ---------------------------------------------------------------------------------------------
# Ids (§9.9)

_B62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOOL_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_TOOL_ID_BAD: Final = re.compile(r"[^A-Za-z0-9_-]")
_MAX_CALL_ID: Final = 64


#: byte → base62 character; 256 = 4·62 + 8, so the first 8 characters are drawn 5/256 of the
#: time instead of 4/256: a bias that costs well under one bit of entropy in a 24-char id.
_B62_TABLE: Final = bytes((_B62 * 5)[:256], "ascii")


def random_b62(n: int = 24) -> str:
    """``n`` random base62 characters (one table lookup per byte: this runs per request)."""
    return os.urandom(n).translate(_B62_TABLE).decode("ascii")


def message_id() -> str:
    """A fresh Anthropic-style message id, never derived from the upstream's ``resp_…``."""
    return "msg_" + random_b62(24)


def request_id() -> str:
    return "req_" + random_b62(24)


def tool_use_id_from_upstream(call_id: str | None) -> str:
    """Upstream ``call_id`` → Anthropic ``tool_use.id`` (must match ``^[a-zA-Z0-9_-]+$``).

    Deterministic, so the same call gets the same id in a stream and a non-stream answer; a
    missing id (some Chat servers) gets a random ``toolu_`` id.
    """
    if not call_id:
        return "toolu_" + random_b62(24)
    if _TOOL_ID_RE.match(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:8]
    return _TOOL_ID_BAD.sub("_", call_id)[:48] + "_" + digest


def call_id_to_upstream(tool_use_id: str) -> str:
    """Anthropic ``tool_use.id`` / ``tool_result.tool_use_id`` → upstream ``call_id``.

    The same pure function on both sides keeps pairs matched without state; ids within the
    upstream's 64-character limit pass unchanged.
    """
    if len(tool_use_id) <= _MAX_CALL_ID:
        return tool_use_id
    return tool_use_id[:40] + "_" + hashlib.sha256(tool_use_id.encode()).hexdigest()[:23]


# ---------------------------------------------------------------------------------------------
# Thinking signatures (§9.10, issue 4): a versioned, HMAC-signed envelope


SIGNATURE_PREFIX: Final = "gw1."


class Signer:
    """Mints and verifies the ``signature`` of thinking blocks we produce.

    Token: ``gw1.<b64url(json {"id": rs_id, "enc": encrypted_content})>.<b64url(hmac16)>``.
    Only tokens minted with this key decode; anything else (real Claude signatures, empty
    strings, edits) decodes to None and the block is dropped before the upstream.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: bytes | Sequence[bytes]) -> None:
        """``keys``: one key, or a ring (newest first) for rotation across a fleet: tokens
        are signed with the first and verified with any, so a new key can be added first
        everywhere and the old one dropped once no client still holds its tokens."""
        ring = (keys,) if isinstance(keys, bytes) else tuple(keys)
        if not ring or any(len(k) < 16 for k in ring):
            raise ValueError("signing keys must be at least 16 bytes")
        self._keys = ring

    @staticmethod
    def _mac(key: bytes, payload: bytes) -> str:
        digest = hmac.new(key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def encode(self, item_id: str, encrypted_content: str | None) -> str:
        payload = base64.urlsafe_b64encode(
            orjson.dumps({"id": item_id, "enc": encrypted_content})
        ).rstrip(b"=")
        return f"{SIGNATURE_PREFIX}{payload.decode()}.{self._mac(self._keys[0], payload)}"

    def decode(self, token: str) -> tuple[str, str | None] | None:
        """``(reasoning item id, encrypted_content)`` for a genuine token, else None."""
        if not token.startswith(SIGNATURE_PREFIX):
            return None
        body, _, mac = token[len(SIGNATURE_PREFIX) :].partition(".")
        if not mac:
            return None
        raw = body.encode()
        if not any(hmac.compare_digest(mac, self._mac(key, raw)) for key in self._keys):
            return None
        try:
            doc: Any = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            return None
        enc = doc.get("enc")
        return doc["id"], enc if isinstance(enc, str) else None


# ---------------------------------------------------------------------------------------------
# stop_reason (§9.6) and usage (§9.7)


#: ``response.failed`` codes that are the model declining on policy grounds: the answer ends
#: with ``stop_reason: "refusal"`` rather than an error a client would retry (protocol.md §9.11).
POLICY_REFUSAL_CODES: Final = frozenset({"bio_policy", "misalignment_policy_violation"})


def stop_reason(
    *,
    incomplete_reason: str | None = None,
    refusal: bool = False,
    tool_use: bool = False,
    stop_sequence: str | None = None,
) -> StopReason:
    """Precedence: stop_sequence > max_tokens > refusal > tool_use > end_turn.

    A truncated tool call is ``max_tokens``; a content filter is ``refusal``.
    """
    if stop_sequence is not None:
        return "stop_sequence"
    if incomplete_reason in ("max_output_tokens", "length", "max_tokens"):
        return "max_tokens"
    if refusal or incomplete_reason == "content_filter":
        return "refusal"
    if tool_use:
        return "tool_use"
    return "end_turn"


def _int(v: Any) -> int:
    return v if isinstance(v, int) and v >= 0 else 0


def usage_from_responses(u: Any) -> Usage:
    """Responses ``usage`` (a dict or an object with the same attributes) → Anthropic Usage.

    ``input_tokens`` upstream includes cached reads and cache writes; Anthropic's excludes
    both (they are reported separately).
    """
    if u is None:
        return Usage(input_tokens=0, output_tokens=0)
    get = u.get if isinstance(u, dict) else lambda k, d=None: getattr(u, k, d)
    details = get("input_tokens_details")
    if details is None:
        cached = written = 0
    elif isinstance(details, dict):
        cached = _int(details.get("cached_tokens"))
        written = _int(details.get("cache_write_tokens"))
    else:
        cached = _int(getattr(details, "cached_tokens", 0))
        written = _int(getattr(details, "cache_write_tokens", 0))
    total_in = _int(get("input_tokens"))
    return Usage(
        input_tokens=max(0, total_in - cached - written),
        output_tokens=_int(get("output_tokens")),
        cache_creation_input_tokens=written,
        cache_read_input_tokens=cached,
    )


def usage_from_chat(u: Any) -> Usage:
    """Chat Completions ``usage`` dict → Anthropic Usage (cached reads split out)."""
    if not isinstance(u, dict):
        return Usage(input_tokens=0, output_tokens=0)
    details = u.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    written = _int(details.get("cache_write_tokens")) if isinstance(details, dict) else 0
    return Usage(
        input_tokens=max(0, _int(u.get("prompt_tokens")) - cached - written),
        output_tokens=_int(u.get("completion_tokens")),
        cache_creation_input_tokens=written,
        cache_read_input_tokens=cached,
    )


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


def estimate_tokens(text_len: int) -> int:
    """A rough token estimate from a character count (≈4 characters a token)."""
    return (text_len + 3) // 4
