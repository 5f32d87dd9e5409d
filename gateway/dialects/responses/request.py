"""Anthropic Messages request → OpenAI Responses request payload (protocol.md §5, §9.1-§9.5,
§9.9, §9.10).

Pure: imports neither aiohttp nor asyncio. The payload is built as plain dicts and lists that
reference the request's strings (no copies, no JSON round trips of messages), because a Claude
Code request is 50-150 KB and is translated on every turn (claude-code.md §3).

The upstream is always used statelessly (``store: false``, the full history every turn), so the
input must satisfy the Responses validation rules on its own (protocol.md §5 "Validation facts",
§10.10): every ``function_call`` has a ``function_call_output`` after it and vice versa, a
``reasoning`` item is followed by the item it produced, item ids are only sent on reasoning
items, and ``call_id`` is at most 64 characters.
"""

from __future__ import annotations

from typing import Any, Final

from ...anthropic.compaction import compaction_threshold
from ...anthropic.functions import function_tools
from ...anthropic.request import (
    session_id_from,
    sha_hex,
    system_text,
    thinking_effort,
    tool_choice_plan,
)
from ...anthropic.signatures import Signer
from ...anthropic.strict import StrictPlan, strict_plan
from ...schemas.anthropic import MessagesRequest
from ...settings import Route
from .history import InputBuilder
from .hosted import HostedRequest, hosted_request

# session_id_from and tool_name_map are dialect-neutral (content.py); re-exported for callers.
__all__ = ["to_responses"]

#: Responses rejects ``max_output_tokens`` below 16 (protocol.md §5).
MIN_OUTPUT_TOKENS: Final = 16

# protocol.md §9.1: Anthropic service tiers → Responses service tiers.
_SERVICE_TIERS: Final = {"auto": "auto", "standard_only": "default"}


# ---------------------------------------------------------------------------------------------
# Public API


def to_responses(
    req: MessagesRequest,
    route: Route,
    signer: Signer,
    *,
    stream: bool,
    session_id: str | None = None,
    strict: StrictPlan | None = None,
    long_cache: bool = False,
) -> dict[str, Any]:
    """The JSON payload for ``POST {route.base_url}/responses``.

    ``session_id`` defaults to ``session_id_from(req, None)``. Raises ``InvalidRequestError``,
    whose message starts with the JSON path of the offending value (``messages.2.content.0:
    …``), for requests that cannot be honoured: ``file`` sources, non-PDF base64 documents,
    a ``tool_choice`` naming a tool that is not forwarded, a json_schema format without schema.
    The returned structure shares strings (and memoised tool schemas) with the request and the
    schema cache: serialise it, do not mutate it.
    """
    reasoning = _reasoning(req, route)
    payload: dict[str, Any] = {"model": route.upstream_model}
    instructions = system_text(req.system)
    if instructions:
        payload["instructions"] = instructions
    payload["input"] = InputBuilder(signer, with_reasoning=reasoning is not None).build(
        req.messages
    )

    schemas = strict if strict is not None else strict_plan(req)
    tools = _tools(req, schemas)
    hosted = hosted_request(req) if route.hosted_tools else HostedRequest()
    tools += hosted.tools
    if tools:
        payload["tools"] = tools
    if hosted.max_tool_calls is not None:
        payload["max_tool_calls"] = hosted.max_tool_calls
    if req.tools:
        # Validated even when no tool is left: a choice that forces a dropped server tool
        # cannot be honoured (protocol.md §10.16).
        names = [t["type"] for t in hosted.tools if t["type"] in _HOSTED_NAMES]
        _tool_choice(req, payload, forwarded=bool(tools), hosted=[_HOSTED_NAMES[n] for n in names])

    include = list(hosted.include)
    if reasoning is not None:
        payload["reasoning"] = reasoning
        include.insert(0, "reasoning.encrypted_content")
    if include:
        payload["include"] = include

    if schemas.output is not None:
        payload["text"] = {
            "format": {
                "type": "json_schema",
                "name": schemas.output_name,
                "schema": schemas.output.schema,
                "strict": True,
            }
        }

    limit = route.max_output_tokens
    max_tokens = req.max_tokens if limit is None else min(req.max_tokens, limit)
    payload["max_output_tokens"] = max(MIN_OUTPUT_TOKENS, max_tokens)
    if route.sampling:
        # OpenAI reasoning models reject temperature/top_p (protocol.md §1.2); top_k has no
        # Responses field. stop_sequences are emulated on the response side (§9.8).
        if req.temperature is not None:
            payload["temperature"] = req.temperature
        if req.top_p is not None:
            payload["top_p"] = req.top_p
    threshold = compaction_threshold(req, route)
    if threshold is not None:
        payload["context_management"] = [{"type": "compaction", "compact_threshold": threshold}]
    payload["store"] = False
    payload["stream"] = stream

    user_id = req.metadata.user_id if req.metadata is not None else None
    if user_id:
        # ≤128 characters upstream; a hash keeps it short and does not leak the client's id.
        payload["safety_identifier"] = sha_hex(user_id)[:32]
    session = session_id if session_id is not None else session_id_from(req, None)
    if session:
        payload["prompt_cache_key"] = "cc-" + sha_hex(session)[:32]
    tier = _SERVICE_TIERS.get(req.service_tier) if req.service_tier is not None else None
    if req.speed == "fast":
        tier = "priority"  # fast mode: the explicit, premium ask wins (issue 15)
    if tier is not None:
        payload["service_tier"] = tier
    if long_cache:
        # a cache_control ttl of 1h: OpenAI's extended prompt cache retention (issue 15)
        payload["prompt_cache_retention"] = "24h"
    return payload


# ---------------------------------------------------------------------------------------------
# Top-level fields


def _reasoning(req: MessagesRequest, route: Route) -> dict[str, Any] | None:
    """The ``reasoning`` object, or None when the request does not reason upstream
    (content.thinking_effort, protocol.md §9.10); ``summary: "auto"`` unless the client
    asked for thinking ``display: "omitted"``."""
    reason, effort = thinking_effort(req, route)
    if not reason:
        return None
    out: dict[str, Any] = {}
    if effort is not None:
        out["effort"] = effort
    thinking = req.thinking
    if thinking is None or thinking.display != "omitted":
        out["summary"] = "auto"
    return out


def _tools(req: MessagesRequest, plan: StrictPlan) -> list[dict[str, Any]]:
    """The function tools (:func:`function_tools`; server tools are hosted or dropped).

    ``strict`` is always sent: ``true`` for a tool the client marked ``strict`` (its schema
    made strict), else ``false`` (Responses defaults to strict, which demands
    ``additionalProperties: false`` and every property required, protocol.md §5). Tools with
    ``defer_loading`` (Claude Code's tool search, claude-code.md §3) are offered like any
    other: the upstream has no deferred loading, and offering them costs only prompt tokens.
    """
    out: list[dict[str, Any]] = []
    for f in function_tools(req, plan):
        fn: dict[str, Any] = {"type": "function", "name": f.upstream}
        if f.description is not None:
            fn["description"] = f.description
        fn["parameters"] = f.parameters
        fn["strict"] = f.strict
        out.append(fn)
    return out


#: hosted tool type → the Anthropic server tool's name (what a tool_choice names)
_HOSTED_NAMES: Final = {"web_search": "web_search", "code_interpreter": "code_execution"}


def _tool_choice(
    req: MessagesRequest, payload: dict[str, Any], *, forwarded: bool, hosted: list[str]
) -> None:
    """Set ``tool_choice`` / ``parallel_tool_calls`` (protocol.md §9.1; tool_choice_plan
    raises for a choice forcing a tool that is not forwarded)."""
    plan = tool_choice_plan(req, forwarded=forwarded, hosted=hosted)
    if plan is None:
        return
    if plan.mode == "function":
        payload["tool_choice"] = {"type": "function", "name": plan.name}
    else:
        payload["tool_choice"] = plan.mode
    if plan.no_parallel:
        payload["parallel_tool_calls"] = False
