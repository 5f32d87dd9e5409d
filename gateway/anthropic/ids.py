"""Ids (protocol.md §9.9): message and request ids, tool ids to and from upstream call ids."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Final

_B62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOOL_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_TOOL_ID_BAD: Final = re.compile(r"[^A-Za-z0-9_-]")
_MAX_CALL_ID: Final = 64


#: byte → base62 character; 256 = 4·62 + 8, so the first 8 characters are drawn 5/256 of the
#: time instead of 4/256: a bias that costs well under one bit of entropy in a 24-char id.
_B62_TABLE: Final = bytes((_B62 * 5)[:256], "ascii")


#: random bytes drawn from the OS 4 KiB at a time: two ids per request, and a getrandom()
#: call costs more than the rest of making one (issue 19); each byte is used once
_POOL_SIZE: Final = 4096
_pool = b""
_used = 0


def random_b62(n: int = 24) -> str:
    """``n`` random base62 characters (one table lookup per byte: this runs per request)."""
    global _pool, _used
    end = _used + n
    if end > len(_pool):
        _pool = os.urandom(max(_POOL_SIZE, n))
        _used, end = 0, n
    chunk = _pool[_used:end]
    _used = end
    return chunk.translate(_B62_TABLE).decode("ascii")


def _forget_pool() -> None:
    """A forked worker draws its own bytes: two processes must never hand out the same ids."""
    global _pool, _used
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


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
