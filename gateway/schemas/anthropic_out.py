"""Anthropic Messages API wire types we write: the Message, its blocks, usage (protocol.md §2).

Outbound structs keep the API's field order and omit what is unset. The request types are in
:mod:`.anthropic`.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from msgspec import Struct


class _OutTagged(Struct, tag_field="type", kw_only=True):
    pass


class OutText(_OutTagged, tag="text"):
    text: str
    #: ``web_search_result_location`` citations (a hosted search's url_citation annotations)
    citations: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET


class OutToolUse(_OutTagged, tag="tool_use"):
    id: str
    name: str
    input: Any


class OutThinking(_OutTagged, tag="thinking"):
    thinking: str
    signature: str


class OutRedactedThinking(_OutTagged, tag="redacted_thinking"):
    data: str


class OutServerToolUse(_OutTagged, tag="server_tool_use"):
    id: str
    name: str
    input: Any


class OutWebSearchToolResult(_OutTagged, tag="web_search_tool_result"):
    tool_use_id: str
    #: web_search_result objects, or ``{"type": "web_search_tool_result_error", ...}``
    content: Any


class OutCodeExecutionToolResult(_OutTagged, tag="code_execution_tool_result"):
    tool_use_id: str
    content: Any


class OutMcpToolUse(_OutTagged, tag="mcp_tool_use"):
    id: str
    name: str
    server_name: str
    input: Any


class OutMcpToolResult(_OutTagged, tag="mcp_tool_result"):
    tool_use_id: str
    is_error: bool
    content: Any


class OutCompaction(_OutTagged, tag="compaction"):
    content: str | None
    encrypted_content: str | None


OutBlock = (
    OutText
    | OutToolUse
    | OutThinking
    | OutRedactedThinking
    | OutServerToolUse
    | OutWebSearchToolResult
    | OutCodeExecutionToolResult
    | OutMcpToolUse
    | OutMcpToolResult
    | OutCompaction
)

StopReason = Literal[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
    "compaction",
]


class Usage(Struct, kw_only=True):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    #: ``{"web_search_requests": n, "web_fetch_requests": 0}`` when hosted tools ran
    server_tool_use: dict[str, int] | msgspec.UnsetType = msgspec.UNSET
    #: ``{"thinking_tokens": n}`` when the upstream counted reasoning tokens (part of output)
    output_tokens_details: dict[str, int] | msgspec.UnsetType = msgspec.UNSET
    #: the tier the upstream served (``standard`` / ``priority``) when it said
    service_tier: str | msgspec.UnsetType = msgspec.UNSET
    #: ``fast`` when the client asked for fast mode and the upstream served priority
    speed: str | msgspec.UnsetType = msgspec.UNSET


class MessageResponse(Struct, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[OutBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    #: ``{"type": "refusal", "category", "explanation"}`` with ``stop_reason: refusal``
    stop_details: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    usage: Usage
    #: ``{"applied_edits": [...]}`` when the request carried ``context_management``
    context_management: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    #: verdicts on the answer's tool calls when the request carried ``safeguards`` (issue 13)
    safeguard_results: list[Any] | msgspec.UnsetType = msgspec.UNSET


RESPONSE_ENCODER: Final = msgspec.json.Encoder()
