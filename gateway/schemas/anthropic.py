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


class UpstreamFileSource(Struct, kw_only=True):
    """A ``file`` source the gateway resolved to the upstream's own file (issue 15 item 8).
    Not part of any decoded union: only the gateway puts it in a request, after checking the
    signed file id, so a client cannot name an upstream file directly."""

    file_id: str
    mime_type: str


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
    #: ``{"enabled": true}``: the answer cites it (issue 15 item 7)
    citations: dict[str, Any] | None = None


class SearchResultBlock(_Tagged, tag="search_result"):
    source: str = ""
    title: str = ""
    content: list[TextBlock] = []
    citations: dict[str, Any] | None = None


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


# Server-tool blocks clients echo back from earlier answers (§1.3, issue 14): kept with the
# fields the translators render as text on the next turn (the upstream runs stateless, so the
# hosted-tool items cannot be replayed).


class ServerToolUseBlock(_Tagged, tag="server_tool_use"):
    id: str = ""
    name: str = ""
    input: Any = None


class WebSearchToolResultBlock(_Tagged, tag="web_search_tool_result"):
    tool_use_id: str = ""
    #: a list of web_search_result objects, or an error object
    content: Any = None


class WebFetchToolResultBlock(_Tagged, tag="web_fetch_tool_result"):
    tool_use_id: str = ""
    content: Any = None


class CodeExecutionToolResultBlock(_Tagged, tag="code_execution_tool_result"):
    tool_use_id: str = ""
    content: Any = None


class BashCodeExecutionToolResultBlock(_Tagged, tag="bash_code_execution_tool_result"):
    tool_use_id: str = ""
    content: Any = None


class TextEditorCodeExecutionToolResultBlock(_Tagged, tag="text_editor_code_execution_tool_result"):
    tool_use_id: str = ""
    content: Any = None


class ToolSearchToolResultBlock(_Tagged, tag="tool_search_tool_result"):
    tool_use_id: str = ""
    content: Any = None


class McpToolUseBlock(_Tagged, tag="mcp_tool_use"):
    id: str = ""
    name: str = ""
    server_name: str = ""
    input: Any = None


class McpToolResultBlock(_Tagged, tag="mcp_tool_result"):
    tool_use_id: str = ""
    is_error: bool = False
    content: Any = None


class ContainerUploadBlock(_Tagged, tag="container_upload"):
    file_id: str = ""


class CompactionBlock(_Tagged, tag="compaction"):
    """A compaction of everything before it (issue 15 item 4): ``content`` is the summary
    (None: the compaction failed, a no-op), ``encrypted_content`` opaque."""

    content: str | None = None
    encrypted_content: str | None = None


SERVER_RESULT_BLOCKS: Final = (
    WebSearchToolResultBlock,
    WebFetchToolResultBlock,
    CodeExecutionToolResultBlock,
    BashCodeExecutionToolResultBlock,
    TextEditorCodeExecutionToolResultBlock,
    ToolSearchToolResultBlock,
    McpToolResultBlock,
)
ServerBlock = (
    ServerToolUseBlock
    | McpToolUseBlock
    | WebSearchToolResultBlock
    | WebFetchToolResultBlock
    | CodeExecutionToolResultBlock
    | BashCodeExecutionToolResultBlock
    | TextEditorCodeExecutionToolResultBlock
    | ToolSearchToolResultBlock
    | McpToolResultBlock
    | ContainerUploadBlock
)
_ARTEFACTS: Final = (
    ServerToolUseBlock,
    McpToolUseBlock,
    *SERVER_RESULT_BLOCKS,
    ContainerUploadBlock,
)
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
_AnyBlock: Any = ContentBlock | CompactionBlock
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
    """A custom tool, or a server tool (versioned ``type``, no ``input_schema``). The server
    tools' own settings are kept as sent (protocol.md §1.4, issue 14)."""

    name: Annotated[str, Meta(min_length=1)] | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    #: the tool's input must match ``input_schema`` (structured outputs, issue 15)
    strict: bool | None = None
    # web_search / web_fetch
    max_uses: int | None = None
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None
    user_location: dict[str, Any] | None = None
    # Anthropic-schema client tools (text_editor, computer; issue 15)
    max_characters: int | None = None
    display_width_px: int | None = None
    display_height_px: int | None = None
    display_number: int | None = None
    enable_zoom: bool | None = None
    # mcp_toolset (MCP connector, 2025-11-20)
    mcp_server_name: str | None = None
    default_config: dict[str, Any] | None = None
    configs: dict[str, Any] | None = None


class McpServer(Struct, kw_only=True):
    """An MCP server of the MCP connector (``mcp_servers``)."""

    type: str = "url"
    url: str
    name: str
    authorization_token: str | None = None
    tool_configuration: dict[str, Any] | None = None


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


class ContextEdit(Struct, kw_only=True):
    """One ``context_management.edits`` entry (issue 15 item 4): ``clear_tool_uses_20250919``,
    ``clear_thinking_20251015`` or ``compact_20260112``; the fields are per type."""

    type: str
    trigger: dict[str, Any] | None = None
    keep: dict[str, Any] | str | None = None
    clear_at_least: dict[str, Any] | None = None
    exclude_tools: list[str] | None = None
    clear_tool_inputs: bool | list[str] | None = None
    pause_after_compaction: bool | None = None
    instructions: str | None = None


class ContextManagement(Struct, kw_only=True):
    edits: list[ContextEdit] | None = None


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
    #: the deprecated spelling of ``output_config.format`` (issue 15)
    output_format: OutputFormat | None = None
    #: history edits the gateway applies before translating (issue 15 item 4)
    context_management: ContextManagement | None = None
    #: the MCP connector's servers (issue 14: Responses ``mcp`` tools)
    mcp_servers: list[McpServer] | None = None


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
    #: ``fast``: fast mode (the upstream's priority tier)
    speed: str | None = None
    #: Claude Code's auto-mode safety check: answered by the gateway, never forwarded upstream
    safeguards: list[Safeguard] | None = None


class CountTokensRequest(_Body, kw_only=True):
    """``POST /v1/messages/count_tokens`` body (no ``max_tokens``)."""


REQUEST_DECODER: Final = msgspec.json.Decoder(MessagesRequest)
COUNT_TOKENS_DECODER: Final = msgspec.json.Decoder(CountTokensRequest)
