"""Anthropic server tools (web search, code execution, MCP …), dialect-neutral (issue 14).

Pure: no aiohttp, no asyncio. What kind each server tool is; how the blocks of earlier hosted
tool calls read as text on the next turn (the upstream runs stateless, so its hosted-tool items
cannot be replayed: the model still sees the queries, titles, urls, fetched text and output);
and the answer for a route that cannot host a server tool the request offers: a search that
reports itself ``unavailable``, never an answer made up from memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

from ..errors import InvalidRequestError
from ..schemas.anthropic import (
    BashCodeExecutionToolResultBlock,
    CodeExecutionToolResultBlock,
    ContainerUploadBlock,
    McpToolResultBlock,
    McpToolUseBlock,
    Message,
    MessagesRequest,
    ServerToolUseBlock,
    TextBlock,
    TextEditorCodeExecutionToolResultBlock,
    Tool,
    ToolSearchToolResultBlock,
    WebFetchToolResultBlock,
    WebSearchToolResultBlock,
)
from ..schemas.anthropic_out import (
    MessageResponse,
    OutBlock,
    OutCodeExecutionToolResult,
    OutServerToolUse,
    OutText,
    OutWebSearchToolResult,
    Usage,
)
from .ids import message_id, random_b62
from .signatures import Signer

WEB_SEARCH: Final = "web_search"
WEB_FETCH: Final = "web_fetch"
CODE_EXECUTION: Final = "code_execution"
MCP_TOOLSET: Final = "mcp_toolset"
#: Anthropic-schema tools the *client* executes (bash, text_editor, memory, computer)
CLIENT_SCHEMA: Final = "client_schema"
UNKNOWN: Final = "unknown"
#: Server tools an upstream can host (OpenAI Responses: web_search, code_interpreter, mcp)
HOSTED: Final = frozenset({WEB_SEARCH, CODE_EXECUTION, MCP_TOOLSET})
#: ``encrypted_content`` of the web_search_result blocks the gateway makes
SEARCH_TOKEN: Final = "gwsr1."
#: how much fetched text or tool output one history note keeps
MAX_NOTE: Final = 4000

_CLIENT_SCHEMA_PREFIXES: Final = ("bash_", "text_editor_", "memory_", "computer_2")
UNHOSTED_TEXT: Final = "{tool} is not available through this gateway route, so it did not run."


def server_kind(tool: Tool) -> str | None:
    """None for a custom tool; else the server tool's kind (by its versioned ``type``)."""
    kind = tool.type
    if kind is None or kind == "custom":
        return None  # a custom tool (check_tools requires its name and schema)
    for prefix, name in (
        ("web_search_", WEB_SEARCH),
        ("web_fetch_", WEB_FETCH),
        ("code_execution_", CODE_EXECUTION),
        ("mcp_toolset", MCP_TOOLSET),
    ):
        if kind.startswith(prefix):
            return name
    if kind.startswith(_CLIENT_SCHEMA_PREFIXES):
        return CLIENT_SCHEMA
    return UNKNOWN


def hosted_tools(req: MessagesRequest) -> list[tuple[int, Tool, str]]:
    """``(index, tool, kind)`` of the server tools an upstream must host for this request.
    ``mcp_servers`` without an ``mcp_toolset`` (the 2025-04-04 connector) counts as one, at
    index -1."""
    out = []
    for i, tool in enumerate(req.tools or ()):
        kind = server_kind(tool)
        if kind is not None and kind in HOSTED:
            out.append((i, tool, kind))
    if req.mcp_servers and not any(kind == MCP_TOOLSET for _, _, kind in out):
        out.append((-1, Tool(type="mcp_servers"), MCP_TOOLSET))
    return out


def blocked_domains(req: MessagesRequest) -> tuple[str, ...]:
    """The web search tools' ``blocked_domains``: OpenAI's hosted search has no such filter,
    so results and citations from them are left out of the answer instead (issue 14)."""
    out: list[str] = []
    for tool in req.tools or ():
        if server_kind(tool) == WEB_SEARCH and tool.blocked_domains:
            out += tool.blocked_domains
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# A route that cannot host them


def unhosted_answer(req: MessagesRequest, route_name: str, signer: Signer) -> MessageResponse:
    """The answer for a request whose tools are only hosted server tools, on a route that
    cannot host them (Chat Completions, or ``hosted_tools = false``): each tool reports itself
    unavailable, so a client (Claude Code's WebSearch above all) shows a failed search rather
    than results the model made up. A request that also offers its own tools is a 400 naming the
    tool and the route: answering it without the server tool would change what was asked."""
    hosted = hosted_tools(req)
    custom = [t for t in req.tools or () if server_kind(t) in (None, CLIENT_SCHEMA)]
    if custom:
        i, tool, kind = hosted[0]
        where = f"tools.{i}" if i >= 0 else "mcp_servers"
        raise InvalidRequestError(
            f"{where}: {tool.type} ({kind}) needs an upstream that hosts it (the Responses API "
            f"with hosted_tools on); route {route_name!r} does not"
        )
    query = _last_user_text(req.messages).removeprefix("Perform a web search for the query: ")
    content: list[OutBlock] = []
    names: list[str] = []
    for _, tool, kind in hosted:
        tool_id = "srvtoolu_" + random_b62(24)
        if kind == WEB_SEARCH:
            content.append(OutServerToolUse(id=tool_id, name=WEB_SEARCH, input={"query": query}))
            error = {"type": "web_search_tool_result_error", "error_code": "unavailable"}
            content.append(OutWebSearchToolResult(tool_use_id=tool_id, content=error))
            names.append("Web search")
        elif kind == CODE_EXECUTION:
            content.append(OutServerToolUse(id=tool_id, name=CODE_EXECUTION, input={"code": ""}))
            error = {"type": "code_execution_tool_result_error", "error_code": "unavailable"}
            content.append(OutCodeExecutionToolResult(tool_use_id=tool_id, content=error))
            names.append("Code execution")
        else:
            names.append(f"MCP ({tool.mcp_server_name or 'mcp_servers'})")
    text = " ".join(UNHOSTED_TEXT.format(tool=n) for n in dict.fromkeys(names))
    content.append(OutText(text=text))
    return MessageResponse(
        id=message_id(),
        model=req.model,
        content=content,
        stop_reason="end_turn",
        usage=Usage(input_tokens=0, output_tokens=0),
    )


def _last_user_text(messages: Sequence[Message]) -> str:
    for msg in reversed(messages):
        if msg.role != "user":
            continue
        if isinstance(msg.content, str):
            return msg.content.strip()
        texts = [b.text for b in msg.content if isinstance(b, TextBlock)]
        if texts:
            return texts[-1].strip()
    return ""


# ---------------------------------------------------------------------------------------------
# Earlier hosted-tool calls, as text for the next turn


def _clip(text: str, limit: int = MAX_NOTE) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def _search_results(content: Any, signer: Signer | None) -> str:
    if not isinstance(content, list):
        code = content.get("error_code") if isinstance(content, dict) else None
        return f"(the search failed: {code or 'error'})"
    lines = []
    for result in content:
        if not isinstance(result, dict):
            continue
        token = str(result.get("encrypted_content") or "")
        sealed = signer.unseal(SEARCH_TOKEN, token) if signer is not None else None
        url = sealed.get("u") if isinstance(sealed, dict) else result.get("url")
        title = sealed.get("t") if isinstance(sealed, dict) else result.get("title")
        age = f" ({result['page_age']})" if result.get("page_age") else ""
        lines.append(f"- {title or url}: {url}{age}")
    return "\n".join(lines) if lines else "(no results)"


def _fetch_result(content: Any) -> str:
    if not isinstance(content, dict):
        return "(no result)"
    if content.get("type") != "web_fetch_result":
        return f"(the fetch failed: {content.get('error_code') or 'error'})"
    doc: dict[str, Any] = content["content"] if isinstance(content.get("content"), dict) else {}
    source: dict[str, Any] = doc["source"] if isinstance(doc.get("source"), dict) else {}
    text = source.get("data") if source.get("type") == "text" else "(a PDF document)"
    title = f"{doc.get('title')}\n" if doc.get("title") else ""
    return f"{content.get('url', '')}\n{title}{_clip(str(text or ''))}"


def _execution_result(content: Any) -> str:
    if not isinstance(content, dict):
        return "(no result)"
    if "error_code" in content:
        return f"(failed: {content['error_code']})"
    parts = []
    for key in ("stdout", "stderr", "content"):
        value = content.get(key)
        if isinstance(value, str) and value:
            parts.append(f"{key}:\n{_clip(value)}")
    if content.get("return_code") is not None:
        parts.append(f"return code: {content['return_code']}")
    if not parts:
        parts.append(_clip(_json({k: v for k, v in content.items() if k != "type"})))
    return "\n".join(parts)


def _mcp_result(block: McpToolResultBlock) -> str:
    content = block.content
    if isinstance(content, list):
        text = "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    else:
        text = str(content or "")
    return ("(error) " if block.is_error else "") + _clip(text)


def server_block_text(block: Any, signer: Signer | None = None) -> str | None:
    """One earlier server block as a line of assistant text; None for what carries nothing
    the model can use (a file upload's id). ``signer`` reads the gateway's own search tokens
    (their url and title are then the ones it signed)."""
    if isinstance(block, ServerToolUseBlock):
        return f"[{block.name} {_clip(_json(block.input), 500)}]"
    if isinstance(block, McpToolUseBlock):
        return f"[MCP {block.server_name}.{block.name} {_clip(_json(block.input), 500)}]"
    if isinstance(block, WebSearchToolResultBlock):
        return "Search results:\n" + _search_results(block.content, signer)
    if isinstance(block, WebFetchToolResultBlock):
        return "Fetched:\n" + _fetch_result(block.content)
    if isinstance(
        block,
        CodeExecutionToolResultBlock
        | BashCodeExecutionToolResultBlock
        | TextEditorCodeExecutionToolResultBlock,
    ):
        return "Result:\n" + _execution_result(block.content)
    if isinstance(block, McpToolResultBlock):
        return "MCP result:\n" + _mcp_result(block)
    if isinstance(block, ToolSearchToolResultBlock):
        return "Tool search result: " + _clip(_json(block.content), 500)
    if isinstance(block, ContainerUploadBlock):
        return None
    return None
