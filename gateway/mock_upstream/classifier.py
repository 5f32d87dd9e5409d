"""The mock upstream as a safety classifier (issue 13): it recognises the gateway's classifier
requests by the name of their structured answer and judges the listed tool calls by rule.

Default rule: a ``Bash`` call whose command holds ``rm -rf``, ``curl … | sh`` or ``git push
--force`` is flagged; everything else is not. ``MockUpstream.verdicts`` overrides by tool name
(``{"Write": True}`` flags every Write), and ``MockUpstream.classifier_queue`` holds scripts
that answer the next classifier requests instead (a delay, a 500, garbage) without touching the
main queue, so a test's scripted model turns stay in order.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from .scripts import JSON, Api, Script, Text

SCHEMA_NAME: Final = "safeguard_verdicts"
_HEADER: Final = "Tool calls to classify:"
_DANGEROUS: Final = re.compile(r"rm\s+-[a-zA-Z]*r[a-zA-Z]*f|curl[^|]*\|\s*(ba)?sh|push\s+--force")


def is_classifier_request(api: Api, body: JSON) -> bool:
    if api == "responses":
        fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
        return isinstance(fmt, dict) and fmt.get("name") == SCHEMA_NAME
    rf = body.get("response_format")
    schema = rf.get("json_schema") if isinstance(rf, dict) else None
    return isinstance(schema, dict) and schema.get("name") == SCHEMA_NAME


def _user_text(api: Api, body: JSON) -> str:
    if api == "responses":
        out = []
        for item in body.get("input") or ():
            for part in (item.get("content") or ()) if isinstance(item, dict) else ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out.append(part["text"])
        return "\n".join(out)
    texts = [m.get("content") for m in body.get("messages") or () if m.get("role") == "user"]
    return "\n".join(t for t in texts if isinstance(t, str))


def listed_calls(api: Api, body: JSON) -> list[dict[str, Any]]:
    """The tool calls a classifier request lists (one JSON object a line after the header)."""
    text = _user_text(api, body)
    _, found, tail = text.partition(_HEADER)
    calls = []
    for line in tail.splitlines() if found else ():
        line = line.strip()
        if line.startswith("{"):
            try:
                calls.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return calls


def judge(call: dict[str, Any], overrides: dict[str, bool]) -> tuple[bool, str]:
    name = str(call.get("name"))
    if name in overrides:
        return overrides[name], f"{name} is flagged by the mock's rules"
    command = (
        (call.get("input") or {}).get("command") if isinstance(call.get("input"), dict) else ""
    )
    if name == "Bash" and isinstance(command, str) and _DANGEROUS.search(command):
        return True, "Irreversible destructive command the user did not ask for."
    return False, "Routine action."


def verdict_script(api: Api, body: JSON, overrides: dict[str, bool]) -> Script:
    verdicts = []
    for call in listed_calls(api, body):
        flagged, why = judge(call, overrides)
        verdicts.append({"id": call.get("id"), "flagged": flagged, "explanation": why})
    return Script(items=[Text(orjson.dumps({"verdicts": verdicts}).decode())])
