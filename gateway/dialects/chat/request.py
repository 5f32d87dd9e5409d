"""Anthropic Messages request → OpenAI Chat Completions request payload (protocol.md §8,
§9.1-§9.5, §9.10, §10 item 11).

Pure: imports neither aiohttp nor asyncio. Built like ``to_responses`` (plain dicts sharing
the request's strings, the helpers of ``content``), for the servers that speak only Chat
Completions: vLLM, Ollama, llama.cpp, LM Studio, OpenRouter … The route carries what differs
between them (``max_tokens_field``, ``stream_usage``, ``images``, ``thinking_field``,
``reasoning_effort``, ``top_k``, ``sampling``, ``max_output_tokens``).

The conversation itself is built by :mod:`.history`.
"""

from __future__ import annotations

from typing import Any, Final

from ...anthropic.compaction import compaction_threshold
from ...anthropic.functions import function_tools
from ...anthropic.request import (
    sha_hex,
    thinking_effort,
    tool_choice_plan,
)
from ...anthropic.signatures import Signer
from ...anthropic.strict import StrictPlan, strict_plan
from ...schemas.anthropic import (
    MessagesRequest,
)
from ...settings import Route
from .history import IMAGE_OMITTED, Messages

__all__ = ["IMAGE_OMITTED", "MAX_STOP", "to_chat"]

#: OpenAI accepts at most four ``stop`` strings (protocol.md §8); the response side scans for
#: the rest (§9.8).
MAX_STOP: Final = 4

# protocol.md §9.1: Anthropic service tiers → OpenAI service tiers (as for Responses).
_SERVICE_TIERS: Final = {"auto": "auto", "standard_only": "default"}


def to_chat(
    req: MessagesRequest,
    route: Route,
    signer: Signer,
    *,
    stream: bool,
    session_id: str | None = None,
    strict: StrictPlan | None = None,
    long_cache: bool = False,
) -> dict[str, Any]:
    """The JSON payload for ``POST {route.base_url}/chat/completions``.

    ``signer`` and ``session_id`` are accepted for the dialect interface and unused: Chat
    thinking needs no signature (any, ``""`` included, is accepted on earlier thinking
    blocks) and no ``prompt_cache_key`` is sent (compatible servers cache prefixes on their
    own, and strict ones reject unknown fields).

    Raises ``InvalidRequestError`` (message starting with the JSON path) for what cannot be
    honoured: ``file`` sources, non-PDF base64 documents, PDFs by URL (Chat has no
    ``file_url``), a ``tool_choice`` naming a tool that is not forwarded, a json_schema format
    without schema. The payload shares strings and memoised tool schemas with the request:
    serialise it, do not mutate it.
    """
    compaction_threshold(req, route)  # a 400: Chat upstreams do not compact
    payload: dict[str, Any] = {
        "model": route.upstream_model,
        "messages": Messages(route).build(req),
    }
    schemas = strict if strict is not None else strict_plan(req)
    tools = _tools(req, schemas)
    if tools:
        payload["tools"] = tools
    if req.tools:
        # Validated even when no tool is left (protocol.md §10.16).
        plan = tool_choice_plan(req, forwarded=bool(tools))
        if plan is not None:
            if plan.mode == "function":
                payload["tool_choice"] = {"type": "function", "function": {"name": plan.name}}
            else:
                payload["tool_choice"] = plan.mode
            if plan.no_parallel:
                payload["parallel_tool_calls"] = False

    if route.reasoning_effort:
        # Most compatible servers reject reasoning_effort (settings: off by default); thinking
        # then happens as the model's template decides.
        reason, effort = thinking_effort(req, route)
        if reason and effort is not None:
            payload["reasoning_effort"] = effort

    if schemas.output is not None:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": schemas.output_name,
                "schema": schemas.output.schema,
                "strict": True,
            },
        }

    limit = route.max_output_tokens
    max_tokens = req.max_tokens if limit is None else min(req.max_tokens, limit)
    # Clamped, never a 400 for Claude Code's 32k-128k asks (claude-code.md §3); 0 (a cache
    # pre-warm) and below is not a valid Chat limit.
    payload[route.max_tokens_field] = max(1, max_tokens)
    if route.sampling:
        if req.temperature is not None:
            payload["temperature"] = req.temperature
        if req.top_p is not None:
            payload["top_p"] = req.top_p
    if route.top_k and req.top_k is not None:
        payload["top_k"] = req.top_k  # vLLM, llama.cpp, Ollama extension (protocol.md §1.2)
    stops = [s for s in req.stop_sequences or () if s]
    if stops:
        payload["stop"] = stops[:MAX_STOP]
    payload["stream"] = stream
    if stream and route.stream_usage:
        payload["stream_options"] = {"include_usage": True}

    user_id = req.metadata.user_id if req.metadata is not None else None
    if user_id:
        # ``user`` rather than ``safety_identifier``: every compatible server accepts (or
        # ignores) it; hashed as for Responses so the client's id does not leak.
        payload["user"] = sha_hex(user_id)[:32]
    tier = _SERVICE_TIERS.get(req.service_tier) if req.service_tier is not None else None
    if req.speed == "fast":
        tier = "priority"  # fast mode: the explicit, premium ask wins (issue 15)
    if tier is not None:
        payload["service_tier"] = tier
    return payload


def _tools(req: MessagesRequest, plan: StrictPlan) -> list[dict[str, Any]]:
    """The function tools (:func:`function_tools`); server tools never reach a Chat route
    (the handler answers them unavailable). ``strict`` only for a tool the client marked
    strict: Chat defaults to false, and some compatible servers reject the key."""
    out: list[dict[str, Any]] = []
    for f in function_tools(req, plan):
        fn: dict[str, Any] = {"name": f.upstream}
        if f.description is not None:
            fn["description"] = f.description
        fn["parameters"] = f.parameters
        if f.strict:
            fn["strict"] = True
        out.append({"type": "function", "function": fn})
    return out
