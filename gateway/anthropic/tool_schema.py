"""Anthropic tool definitions → what OpenAI function tools accept (shared by both translators).

Pure: no aiohttp, no asyncio. Two jobs:

* ``clean_schema``: an Anthropic ``input_schema`` → a function ``parameters`` schema. Claude
  Code's schemas are JSON Schema 2020-12 with ``$schema``, ``format: "uri"`` (WebFetch) and
  ``allOf`` patterns (claude-code.md §3); OpenAI rejects some of that even with
  ``strict: false`` (protocol.md §10.10), so the few offending keywords are removed and
  everything else is kept as sent.
* ``upstream_tool_name``: Anthropic and OpenAI share the name pattern ``^[a-zA-Z0-9_-]{1,64}$``
  (protocol.md §1.4), but clients do not always respect it (MCP tools with dots or long
  prefixes); such names are shortened deterministically so the response side can map them back.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any, Final

import orjson

from ..cache import BoundedCache

__all__ = ["ALLOWED_FORMATS", "clean_schema", "upstream_tool_name"]

#: ``format`` values OpenAI accepts in function schemas; any other is removed (WebFetch's "uri").
ALLOWED_FORMATS: Final = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)

# Keywords that only annotate the document; OpenAI's schema validator rejects some of them.
_DROP_KEYS: Final = frozenset({"$schema", "$id", "$comment"})
# Keywords whose values are data, not subschemas: never walked, so a default object that
# happens to contain a "format" key is forwarded untouched.
_DATA_KEYS: Final = frozenset({"enum", "const", "default", "examples", "example", "required"})
# Keywords whose values map *names* to subschemas: the names are never taken for keywords (a
# property may well be called "default", "format" or "$id").
_SCHEMA_MAPS: Final = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
# Unicode property escapes are not supported by OpenAI's regex dialect.
_UNICODE_PROPERTY: Final = re.compile(r"\\[pP]\{")

# Bounded by bytes as well as entries (issue 10 item 6): the key is the schema's JSON and the
# cleaned copy costs about as much again. Claude Code's whole tool list is ~60 KB.
_cache: Final[BoundedCache[bytes, dict[str, Any]]] = BoundedCache(
    max_entries=1024, max_bytes=16 * 1024 * 1024, max_entry_bytes=1024 * 1024
)


def clean_schema(schema: dict[str, Any] | None) -> dict[str, Any]:
    """Return a cleaned copy of a tool ``input_schema``; the argument is never modified.

    Contract:
    * ``None`` / ``{}`` → ``{"type": "object", "properties": {}}``;
    * the root gets ``"type": "object"`` when it has no ``type``, and ``"properties": {}``
      when it is an object schema without properties;
    * ``$schema``, ``$id``, ``$comment`` are removed everywhere;
    * ``format`` values outside ``ALLOWED_FORMATS`` and ``pattern``s using ``\\p{``/``\\P{``
      are removed everywhere;
    * everything else (``allOf``, ``enum``, ``default``, bounds such as 9007199254740991,
      ``items``, ``additionalProperties`` …) is kept as sent.

    Results are memoised by the schema's JSON bytes (bounded), so the ~60 KB tool list Claude
    Code sends with every request is walked once per process. The returned dict may be shared
    between calls: treat it as read-only.
    """
    if not schema:
        return {"type": "object", "properties": {}}
    try:
        key = orjson.dumps(schema)
    except TypeError:  # orjson refuses integers wider than 64 bits
        return _clean_root(schema)
    hit = _cache.get(key)
    if hit is not None:
        return hit[0]
    cleaned = _clean_root(schema)
    _cache.put(key, cleaned, 2 * len(key))
    return cleaned


def _clean_root(schema: dict[str, Any]) -> dict[str, Any]:
    out = _clean(schema)
    if "type" not in out:
        out = {"type": "object", **out}
    if out.get("type") == "object" and "properties" not in out:
        out["properties"] = {}
    return out


def _clean(node: dict[str, Any]) -> dict[str, Any]:
    """Clean one schema object (not a name → schema map)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS and isinstance(value, str):
            continue
        if key == "format" and isinstance(value, str) and value not in ALLOWED_FORMATS:
            continue
        if key == "pattern" and isinstance(value, str) and _UNICODE_PROPERTY.search(value):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {
                name: _clean(sub) if isinstance(sub, dict) else sub for name, sub in value.items()
            }
        elif key in _DATA_KEYS:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = _clean(value)
        elif isinstance(value, list):
            out[key] = [_clean(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


_NAME_OK: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NAME_BAD: Final = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_NAME: Final = 64
_HASH_LEN: Final = 8


#: Names longer than this are mapped on every call instead of memoised (issue 10 item 6).
_MAX_CACHED_NAME: Final = 256


def upstream_tool_name(name: str) -> str:
    """The function name sent upstream for the client tool ``name`` (see ``_upstream_name``)."""
    if len(name) <= _MAX_CACHED_NAME:
        return _cached_upstream_name(name)
    return _upstream_name(name)


def _upstream_name(name: str) -> str:
    """The function name sent upstream for the client tool ``name``.

    Valid names pass unchanged. Others get every character outside ``[a-zA-Z0-9_-]`` replaced
    by ``_``, are cut to 55 characters and suffixed with ``_`` + the first 8 hex digits of
    sha256(name): deterministic (the same name maps the same way in every request, which the
    upstream prompt cache and the response side rely on) and at most 64 characters.
    """
    if _NAME_OK.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LEN]
    prefix = _NAME_BAD.sub("_", name)[: _MAX_NAME - _HASH_LEN - 1]
    return f"{prefix}_{digest}"


_cached_upstream_name: Final = functools.lru_cache(maxsize=4096)(_upstream_name)
