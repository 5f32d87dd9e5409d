"""Anthropic server tools ⇄ the Responses API's hosted tools (issue 14).

Pure: no aiohttp, no asyncio.

Request: ``web_search_*`` → ``{"type": "web_search"}`` (``allowed_domains`` →
``filters.allowed_domains``, ``user_location`` as is, sources asked for with ``include``);
``code_execution_*`` → ``code_interpreter`` in an automatic container; the MCP connector
(``mcp_servers``, ``mcp_toolset``) → ``mcp`` tools that never ask for approval (Anthropic has no
approval step). The ``max_uses`` of the server tools become ``max_tool_calls`` (OpenAI counts
every hosted call together). ``blocked_domains`` has no Responses equivalent: results from those
domains are removed from what the client gets (search results and citations), and a line is
logged. ``web_fetch`` has no hosted equivalent: a 400 naming it, like any server tool the
gateway cannot serve.

Answer: a ``web_search_call`` is a ``server_tool_use`` (``web_search``, ``{query}``) followed by
its ``web_search_tool_result`` (url, title, and an ``encrypted_content`` the gateway signs and
reads back on the next turn); a ``code_interpreter_call`` is a ``server_tool_use``
(``code_execution``, ``{code}``) and a ``code_execution_tool_result``; an ``mcp_call`` is an
``mcp_tool_use`` and its ``mcp_tool_result``. ``url_citation`` annotations become
``web_search_result_location`` citations on the text they cover.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from ...anthropic.compaction import compaction_block
from ...anthropic.server_tools import (
    CODE_EXECUTION,
    MCP_TOOLSET,
    SEARCH_TOKEN,
    UNKNOWN,
    WEB_FETCH,
    WEB_SEARCH,
    server_kind,
)
from ...anthropic.signatures import Signer
from ...anthropic.tools import tool_input
from ...errors import InvalidRequestError
from ...schemas.anthropic import McpServer, MessagesRequest, Tool
from ...schemas.anthropic_out import (
    OutBlock,
    OutCodeExecutionToolResult,
    OutMcpToolResult,
    OutMcpToolUse,
    OutServerToolUse,
    OutWebSearchToolResult,
)
from ...schemas.openai_responses import (
    CodeInterpreterCallItem,
    CompactionItem,
    HostedItem,
    McpCallItem,
    McpError,
    MessageItem,
    WebSearchCallItem,
)

_USER_LOCATION_KEYS: Final = ("type", "city", "region", "country", "timezone")
#: the hosted-tool item classes (for isinstance)
HOSTED_ITEMS: Final = (WebSearchCallItem, CodeInterpreterCallItem, McpCallItem, CompactionItem)
_ID_BAD: Final = re.compile(r"[^A-Za-z0-9]")


@dataclass
class HostedRequest:
    """What the server tools add to a Responses payload."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    max_tool_calls: int | None = None
    #: ``blocked_domains`` of the web search: filtered out of the answer
    blocked_domains: tuple[str, ...] = ()


def hosted_request(req: MessagesRequest) -> HostedRequest:
    """The hosted tools for the request's server tools; a 400 for one that cannot be served."""
    out = HostedRequest()
    caps: list[int | None] = []
    toolsets = False
    for i, tool in enumerate(req.tools or ()):
        kind = server_kind(tool)
        if kind is None or kind == "client_schema":
            continue
        if kind == WEB_SEARCH:
            out.tools.append(_web_search(tool))
            _include(out, "web_search_call.action.sources")
            out.blocked_domains += tuple(tool.blocked_domains or ())
            caps.append(tool.max_uses)
        elif kind == CODE_EXECUTION:
            out.tools.append({"type": "code_interpreter", "container": {"type": "auto"}})
            _include(out, "code_interpreter_call.outputs")
            caps.append(None)
        elif kind == MCP_TOOLSET:
            toolsets = True
            out.tools.append(_mcp_tool(_server_for(req, tool, i), tool))
            caps.append(None)
        elif kind == WEB_FETCH:
            raise InvalidRequestError(
                f"tools.{i}: {tool.type} is not supported: the OpenAI Responses API has no "
                "hosted fetch, and the gateway does not fetch URLs itself"
            )
        else:
            assert kind == UNKNOWN
            raise InvalidRequestError(
                f"tools.{i}: server tool {tool.type!r} is not supported by the gateway "
                "(hosted on OpenAI: web_search, code_execution, the MCP connector)"
            )
    if req.mcp_servers and not toolsets:
        for server in req.mcp_servers:
            configuration = server.tool_configuration or {}
            if configuration.get("enabled", True) is not False:
                out.tools.append(_mcp_tool(server, None))
                caps.append(None)
    if caps and all(c is not None for c in caps):
        out.max_tool_calls = sum(c for c in caps if c is not None)
    return out


def _include(out: HostedRequest, value: str) -> None:
    if value not in out.include:
        out.include.append(value)


def _web_search(tool: Tool) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "web_search"}
    if tool.allowed_domains:
        spec["filters"] = {"allowed_domains": list(tool.allowed_domains)}
    if tool.user_location:
        loc = {k: v for k, v in tool.user_location.items() if k in _USER_LOCATION_KEYS and v}
        spec["user_location"] = {"type": "approximate", **loc}
    return spec


def _server_for(req: MessagesRequest, tool: Tool, i: int) -> McpServer:
    for server in req.mcp_servers or ():
        if server.name == tool.mcp_server_name:
            return server
    raise InvalidRequestError(
        f"tools.{i}.mcp_server_name: {tool.mcp_server_name!r} is not one of mcp_servers"
    )


def _mcp_tool(server: McpServer, toolset: Tool | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "mcp",
        "server_label": server.name,
        "server_url": server.url,
        # Anthropic's connector runs tools without asking; OpenAI would pause for approval.
        "require_approval": "never",
    }
    if server.authorization_token:
        spec["authorization"] = server.authorization_token
    allowed = (server.tool_configuration or {}).get("allowed_tools")
    if toolset is not None:
        default = (toolset.default_config or {}).get("enabled", True) is not False
        configs = toolset.configs or {}
        enabled = [n for n, c in configs.items() if isinstance(c, dict) and c.get("enabled")]
        disabled = [
            n for n, c in configs.items() if isinstance(c, dict) and c.get("enabled") is False
        ]
        if default and disabled:
            raise InvalidRequestError(
                f"mcp_toolset {server.name!r}: turning single tools off is not supported "
                "(OpenAI takes a list of allowed tools: set default_config.enabled = false "
                "and enable the tools to offer)"
            )
        if not default:
            allowed = enabled
    if isinstance(allowed, list):
        spec["allowed_tools"] = [str(a) for a in allowed]
    return spec


# ---------------------------------------------------------------------------------------------
# Answer


def _tool_id(prefix: str, item_id: str | None) -> str:
    tail = _ID_BAD.sub("", item_id or "")[-40:] or "0"
    return prefix + tail


def blocked(url: str, domains: Sequence[str]) -> bool:
    """Is ``url`` on one of ``domains`` (or a subdomain of one)?"""
    if not domains:
        return False
    host = (urlsplit(url).hostname or "").lower()
    for d in domains:
        d = d.lower().lstrip(".").split("/", 1)[0]
        if host == d or host.endswith("." + d):
            return True
    return False


def search_result(url: str, title: str | None, signer: Signer) -> dict[str, Any]:
    """A ``web_search_result``; its ``encrypted_content`` is the gateway's own signed token of
    the url and title (Anthropic's holds page content the gateway never sees)."""
    return {
        "type": "web_search_result",
        "url": url,
        "title": title or url,
        "encrypted_content": signer.seal(SEARCH_TOKEN, {"u": url, "t": title or url}),
        "page_age": None,
    }


def is_search(item: HostedItem) -> bool:
    """A search (counted in ``web_search_requests``), not an ``open_page`` / ``find_in_page``."""
    return isinstance(item, WebSearchCallItem) and (
        item.action is None or item.action.type in ("search", "")
    )


def hosted_blocks(
    item: HostedItem, signer: Signer, blocked_domains: Sequence[str] = ()
) -> list[OutBlock]:
    """The Anthropic blocks of one finished hosted-tool item (none for a page visit), or of
    the upstream's compaction (issue 15)."""
    if isinstance(item, CompactionItem):
        return [compaction_block(item.id, item.encrypted_content, signer)]
    if isinstance(item, WebSearchCallItem):
        if not is_search(item):
            return []  # open_page / find_in_page: part of the search already reported
        action = item.action
        query = (action.query or (action.queries or [""])[0]) if action else ""
        tool_id = _tool_id("srvtoolu_", item.id)
        use = OutServerToolUse(id=tool_id, name=WEB_SEARCH, input={"query": query or ""})
        content: Any
        if item.status == "failed":
            content = {"type": "web_search_tool_result_error", "error_code": "unavailable"}
        else:
            content = [
                search_result(s.url, s.title, signer)
                for s in (action.sources if action and action.sources else ())
                if s.url and not blocked(s.url, blocked_domains)
            ]
        return [use, OutWebSearchToolResult(tool_use_id=tool_id, content=content)]
    if isinstance(item, CodeInterpreterCallItem):
        tool_id = _tool_id("srvtoolu_", item.id)
        use = OutServerToolUse(id=tool_id, name=CODE_EXECUTION, input={"code": item.code or ""})
        if item.status == "failed" and not item.outputs:
            result: Any = {"type": "code_execution_tool_result_error", "error_code": "unavailable"}
        else:
            logs = "".join(o.logs or "" for o in item.outputs or () if o.type == "logs")
            images = sum(1 for o in item.outputs or () if o.type == "image")
            if images:
                logs += f"\n[{images} image output(s) not shown: no Anthropic equivalent]"
            result = {
                "type": "code_execution_result",
                "stdout": logs,
                "stderr": "",
                "return_code": 1 if item.status == "failed" else 0,
                "content": [],
            }
        return [use, OutCodeExecutionToolResult(tool_use_id=tool_id, content=result)]
    assert isinstance(item, McpCallItem)
    tool_id = _tool_id("mcptoolu_", item.id)
    error = item.error
    message = error.message if isinstance(error, McpError) else error
    text = item.output if item.output is not None else str(message or "")
    return [
        OutMcpToolUse(
            id=tool_id,
            name=item.name or "",
            server_name=item.server_label or "",
            input=tool_input(item.arguments),
        ),
        OutMcpToolResult(
            tool_use_id=tool_id,
            is_error=error is not None or item.status == "failed",
            content=[{"type": "text", "text": text}],
        ),
    ]


def citations(
    item: MessageItem, signer: Signer, blocked_domains: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """``web_search_result_location`` citations for a message item's ``url_citation``
    annotations; ``cited_text`` is the annotated span of the text (indices per part)."""
    out: list[dict[str, Any]] = []
    for part in item.content or ():
        text = part.text or ""
        for a in part.annotations or ():
            if a.type != "url_citation" or not a.url or blocked(a.url, blocked_domains):
                continue
            start, end = max(0, a.start_index), min(len(text), a.end_index)
            out.append(
                {
                    "type": "web_search_result_location",
                    "cited_text": text[start:end] if end > start else "",
                    "url": a.url,
                    "title": a.title,
                    "encrypted_index": signer.seal(SEARCH_TOKEN, {"u": a.url, "t": a.title}),
                }
            )
    return out
