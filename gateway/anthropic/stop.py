"""stop_reason (protocol.md §9.6): one precedence for every dialect."""

from __future__ import annotations

from typing import Any, Final

from ..schemas.anthropic_out import StopReason

#: ``response.failed`` codes that are the model declining on policy grounds: the answer ends
#: with ``stop_reason: "refusal"`` rather than an error a client would retry (protocol.md §9.11).
POLICY_REFUSAL_CODES: Final = frozenset({"bio_policy", "misalignment_policy_violation"})
#: the ``stop_details.category`` of an upstream policy refusal
_CATEGORIES: Final = {"bio_policy": "bio"}


def refusal_details(code: Any = None, message: str | None = None) -> dict[str, Any]:
    """``stop_details`` for ``stop_reason: refusal`` (issue 15): a policy refusal's category
    and the upstream's explanation; a refusal the model wrote itself has neither."""
    policy = code in POLICY_REFUSAL_CODES
    return {
        "type": "refusal",
        "category": _CATEGORIES.get(code) if isinstance(code, str) else None,
        "explanation": message if policy and message else None,
    }


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
