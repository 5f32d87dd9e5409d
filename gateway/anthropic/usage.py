"""Usage (protocol.md §9.7): Anthropic usage from either dialect's, or an honest estimate.

Input tokens exclude cache reads and writes, as Anthropic counts them."""

from __future__ import annotations

from typing import Any, Final

from ..schemas.anthropic_out import Usage


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
    out = Usage(
        input_tokens=max(0, total_in - cached - written),
        output_tokens=_int(get("output_tokens")),
        cache_creation_input_tokens=written,
        cache_read_input_tokens=cached,
    )
    odetails = get("output_tokens_details")
    reasoning = (
        odetails.get("reasoning_tokens")
        if isinstance(odetails, dict)
        else getattr(odetails, "reasoning_tokens", None)
    )
    _thinking(out, reasoning)
    return out


def _thinking(usage: Usage, reasoning: Any) -> None:
    """``output_tokens_details.thinking_tokens`` when the upstream counted them (issue 15)."""
    if isinstance(reasoning, int) and reasoning >= 0:
        usage.output_tokens_details = {"thinking_tokens": min(reasoning, usage.output_tokens)}


#: the tier an upstream says it served → Anthropic's ``usage.service_tier``
_TIERS: Final = {
    "default": "standard",
    "flex": "standard",
    "priority": "priority",
    "scale": "priority",
    "fast": "priority",
    "ultrafast": "priority",
}


def set_service_tier(usage: Usage, upstream_tier: Any) -> None:
    """Echo the tier the upstream served (``default`` → ``standard``, ``priority`` …);
    nothing for an upstream that did not say (or said ``auto``)."""
    tier = _TIERS.get(upstream_tier) if isinstance(upstream_tier, str) else None
    if tier is not None:
        usage.service_tier = tier


def echo_speed(usage: Usage) -> None:
    """For a client that asked for ``speed: fast``: ``fast`` when it was served priority,
    ``standard`` when the upstream said it was not."""
    if usage.service_tier == "priority":
        usage.speed = "fast"
    elif isinstance(usage.service_tier, str):
        usage.speed = "standard"


def usage_from_chat(u: Any) -> Usage:
    """Chat Completions ``usage`` dict → Anthropic Usage (cached reads split out)."""
    if not isinstance(u, dict):
        return Usage(input_tokens=0, output_tokens=0)
    details = u.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    written = _int(details.get("cache_write_tokens")) if isinstance(details, dict) else 0
    out = Usage(
        input_tokens=max(0, _int(u.get("prompt_tokens")) - cached - written),
        output_tokens=_int(u.get("completion_tokens")),
        cache_creation_input_tokens=written,
        cache_read_input_tokens=cached,
    )
    completion = u.get("completion_tokens_details")
    if isinstance(completion, dict):
        _thinking(out, completion.get("reasoning_tokens"))
    return out


def estimate_tokens(text_len: int) -> int:
    """A rough token estimate from a character count (≈4 characters a token)."""
    return (text_len + 3) // 4
