"""Anthropic Messages API wire types (protocol.md §1-§3).

Inbound structs accept unknown fields (clients add fields every month) and are tagged unions on
the API's own ``type`` field, so a validation error carries the JSON path
(``$.messages[2].content[0].source``). Outbound structs keep the API's field order.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

# ---------------------------------------------------------------------------------------------
# Inbound: request content blocks (§1.3)


class _Tagged(Struct, tag_field="type", kw_only=True):
    """Base for inbound tagged structs; unknown fields are ignored."""


class Base64Source(_Tagged, tag="base64"):
    media_type: str
    data: str


class URLSource(_Tagged, tag="url"):
    url: str


class FileSource(_Tagged, tag="file"):
    file_id: str


class TextSource(_Tagged, tag="text"):
    data: str
    media_type: str = "text/plain"


class TextBlock(_Tagged, tag="text"):
    text: str


class ImageBlock(_Tagged, tag="image"):
    source: Base64Source | URLSource | FileSource


class ContentSource(_Tagged, tag="content"):
    content: str | list[TextBlock | ImageBlock]


class DocumentBlock(_Tagged, tag="document"):
    source: Base64Source | URLSource | TextSource | ContentSource | FileSource
    title: str | None = None
    context: str | None = None


class SearchResultBlock(_Tagged, tag="search_result"):
    source: str = ""
    title: str = ""
    content: list[TextBlock] = []


class ToolReferenceBlock(_Tagged, tag="tool_reference"):
    """Claude Code's tool-search result (claude-code.md §3): names a tool that is now loaded."""

    tool_name: str


class ToolUseBlock(_Tagged, tag="tool_use"):
    id: str
    name: str
    input: Any = None


class ThinkingBlock(_Tagged, tag="thinking"):
    thinking: str = ""
    signature: str = ""


class RedactedThinkingBlock(_Tagged, tag="redacted_thinking"):
    data: str = ""


ToolResultContent = TextBlock | ImageBlock | DocumentBlock | SearchResultBlock | ToolReferenceBlock


class ToolResultBlock(_Tagged, tag="tool_result"):
    tool_use_id: str
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None


def _artefact(tag: str) -> type[Struct]:
    # Server-tool artefacts that clients may echo back from earlier responses (§1.3). They have
    # no upstream equivalent and are dropped by the translators; declaring them keeps the
    # request valid instead of failing on an unknown tag.
    return msgspec.defstruct(f"Artefact_{tag}", [], bases=(_Tagged,), tag=tag, kw_only=True)


SERVER_ARTEFACT_TAGS: Final = (
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "container_upload",
    "mcp_tool_use",
    "mcp_tool_result",
)
_ARTEFACTS = tuple(_artefact(t) for t in SERVER_ARTEFACT_TAGS)
ServerArtefact = _ARTEFACTS  # the classes, for isinstance checks

# msgspec needs the union spelled as a type; build it from the declared classes.
ContentBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolReferenceBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)
_AnyBlock: Any = ContentBlock
for _cls in _ARTEFACTS:
    _AnyBlock = _AnyBlock | _cls
AnyContentBlock: Any = _AnyBlock


# ---------------------------------------------------------------------------------------------
# Inbound: request top level (§1.2)


class OutputFormat(Struct, kw_only=True):
    type: str
    schema: dict[str, Any] | None = None


class OutputConfig(Struct, kw_only=True):
    effort: str | None = None
    format: OutputFormat | None = None


class Message(Struct, kw_only=True):
    role: Literal["user", "assistant", "system"]
    content: str | list[AnyContentBlock]
    # Claude Code puts a per-turn effort on its mid-conversation system messages.
    output_config: OutputConfig | None = None


class Tool(Struct, kw_only=True):
    """A custom tool, or a server tool (versioned ``type``, no ``input_schema``)."""

    name: Annotated[str, Meta(min_length=1)]
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ToolChoiceAuto(_Tagged, tag="auto"):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Tagged, tag="any"):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Tagged, tag="tool"):
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Tagged, tag="none"):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class ThinkingConfig(Struct, kw_only=True):
    """``enabled`` (with budget), ``disabled``, ``adaptive``, or a newer type (treated as off)."""

    type: str
    budget_tokens: int | None = None
    display: str | None = None


class Metadata(Struct, kw_only=True):
    user_id: str | None = None


class Safeguard(Struct, kw_only=True):
    """One entry of ``safeguards`` (Claude Code's auto mode, issue 13): ``dangerous_tool_use``
    asks for a verdict on every tool call of the answer. ``classifier_context`` is the
    permission context (cwd, rules, auto-mode lists, git state), kept as sent."""

    type: str
    classifier_context: dict[str, Any] | None = None


class _Body(Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    #: Anthropic's own limit: "There is a limit of 100,000 messages in a single request."
    messages: Annotated[list[Message], Meta(min_length=1, max_length=100_000)]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(_Body, kw_only=True):
    """``POST /v1/messages`` body."""

    max_tokens: Annotated[int, Meta(ge=0)]
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: Metadata | None = None
    service_tier: str | None = None
    #: Claude Code's auto-mode safety check: answered by the gateway, never forwarded upstream
    safeguards: list[Safeguard] | None = None


class CountTokensRequest(_Body, kw_only=True):
    """``POST /v1/messages/count_tokens`` body (no ``max_tokens``)."""


REQUEST_DECODER: Final = msgspec.json.Decoder(MessagesRequest)
COUNT_TOKENS_DECODER: Final = msgspec.json.Decoder(CountTokensRequest)


# ---------------------------------------------------------------------------------------------
# Outbound: the Message response (§2)


class _OutTagged(Struct, tag_field="type", kw_only=True):
    pass


class OutText(_OutTagged, tag="text"):
    text: str


class OutToolUse(_OutTagged, tag="tool_use"):
    id: str
    name: str
    input: Any


class OutThinking(_OutTagged, tag="thinking"):
    thinking: str
    signature: str


class OutRedactedThinking(_OutTagged, tag="redacted_thinking"):
    data: str


OutBlock = OutText | OutToolUse | OutThinking | OutRedactedThinking

StopReason = Literal[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]


class Usage(Struct, kw_only=True):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class MessageResponse(Struct, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[OutBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage
    #: verdicts on the answer's tool calls when the request carried ``safeguards`` (issue 13)
    safeguard_results: list[Any] | msgspec.UnsetType = msgspec.UNSET


RESPONSE_ENCODER: Final = msgspec.json.Encoder()
