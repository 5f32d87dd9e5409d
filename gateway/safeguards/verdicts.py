"""``safeguard_results``: the shape Claude Code reads, and the classifier's answer mapped into it.

Pure: no aiohttp, no asyncio. The grammar (Claude Code 2.1.330's parser, shared/
claude-code-auto-mode.md §2)::

    [{"type": "dangerous_tool_use", "status": STATUS}]
    STATUS  = {"type": "available", "tool_uses": {"<tool_use id>": VERDICT, ...}}
            | {"type": "unavailable", "reason": "disabled" | "error" | ...}
    VERDICT = {"type": "evaluated", "outcome": "not_flagged" | "flagged", "explanation": str}
            | {"type": "unavailable", "reason": "timeout" | "error" | "input_too_long" | ...}

Verdicts are keyed by the ``tool_use`` ids the client received. Fail safe: a call the classifier
did not judge gets ``unavailable`` (Claude Code then asks the user, or refuses in print mode),
never ``not_flagged``: an approval nobody made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

SAFEGUARD_TYPE: Final = "dangerous_tool_use"
#: the name of the classifier's structured answer (the mock upstream recognises it too)
SCHEMA_NAME: Final = "safeguard_verdicts"
#: longest explanation passed on (Claude Code shows it to the model and the user)
MAX_EXPLANATION: Final = 1000

#: The classifier's answer: one verdict per call, by id.
VERDICT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "verdicts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "flagged": {"type": "boolean"},
                    "explanation": {"type": "string"},
                },
                "required": ["id", "flagged", "explanation"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["verdicts"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call of the answer, as the client received it."""

    id: str
    name: str
    input: Any


def available(verdicts: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": SAFEGUARD_TYPE, "status": {"type": "available", "tool_uses": dict(verdicts)}}]


def unavailable_status(reason: str) -> list[dict[str, Any]]:
    """The whole check is off (``disabled``) or failed before any call could be judged."""
    return [{"type": SAFEGUARD_TYPE, "status": {"type": "unavailable", "reason": reason}}]


def not_judged(reason: str) -> dict[str, Any]:
    """The fail-safe verdict of one call: no verdict, said why."""
    return {"type": "unavailable", "reason": reason}


def evaluated(flagged: bool, explanation: str) -> dict[str, Any]:
    verdict: dict[str, Any] = {
        "type": "evaluated",
        "outcome": "flagged" if flagged else "not_flagged",
    }
    if explanation:
        verdict["explanation"] = explanation[:MAX_EXPLANATION]
    return verdict


def all_not_judged(calls: Iterable[ToolCall], reason: str) -> dict[str, dict[str, Any]]:
    return {c.id: not_judged(reason) for c in calls}


def parse_answer(text: str, calls: Iterable[ToolCall]) -> dict[str, dict[str, Any]] | None:
    """The classifier's JSON answer → a verdict for every call; None when it is not an answer.

    Tolerates prose or a code fence around the JSON object. A call the answer does not cover
    gets ``unavailable: error``; verdicts for ids that were not asked about are ignored.
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        doc = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError:
        return None
    items = doc.get("verdicts") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return None
    given: dict[str, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        call_id, flagged = item.get("id"), item.get("flagged")
        if isinstance(call_id, str) and isinstance(flagged, bool):
            explanation = item.get("explanation")
            given[call_id] = evaluated(flagged, explanation if isinstance(explanation, str) else "")
    return {c.id: given.get(c.id) or not_judged("error") for c in calls}


def count(verdicts: Mapping[str, dict[str, Any]]) -> dict[str, int]:
    """Verdicts by outcome (``flagged``, ``not_flagged``, ``unavailable_<reason>``)."""
    out: dict[str, int] = {}
    for v in verdicts.values():
        key = v.get("outcome") if v.get("type") == "evaluated" else f"unavailable_{v.get('reason')}"
        out[str(key)] = out.get(str(key), 0) + 1
    return out
