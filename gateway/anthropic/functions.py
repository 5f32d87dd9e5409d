"""The function tools a request offers upstream, whatever the dialect (protocol.md §9.1).

Pure: no aiohttp, no asyncio. A custom tool is a function with its cleaned ``input_schema``
(the strict form when the client marked it ``strict``); an Anthropic-schema client tool
(``bash``, ``text_editor``, ``memory``, ``computer``) is a function with its published schema
(:mod:`.client_tools`). Server tools are the dialects' business (hosted, or unavailable), and
a tool the gateway cannot offer at all is a 400 that says what is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from ..schemas.anthropic import MessagesRequest
from .client_tools import client_tool_function
from .server_tools import CLIENT_SCHEMA, HOSTED, server_kind
from .strict import StrictPlan
from .tool_schema import clean_schema, upstream_tool_name
from .tools import is_custom_tool


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """One function tool, dialect-neutral."""

    #: the name the client gave (what its ``tool_use`` blocks carry)
    name: str
    #: the name sent upstream (``upstream_tool_name``)
    upstream: str
    description: str | None
    parameters: dict[str, Any]
    strict: bool


def function_tools(req: MessagesRequest, strict: StrictPlan) -> list[FunctionTool]:
    """The request's custom and client-schema tools, in order."""
    out: list[FunctionTool] = []
    for i, tool in enumerate(req.tools or ()):
        if is_custom_tool(tool.type, tool.input_schema):
            if not tool.name:
                raise InvalidRequestError(f"tools.{i}.name: Field required")
            upstream = upstream_tool_name(tool.name)
            schema = strict.tools.get(upstream)
            out.append(
                FunctionTool(
                    name=tool.name,
                    upstream=upstream,
                    description=tool.description,
                    parameters=schema.schema
                    if schema is not None
                    else clean_schema(tool.input_schema),
                    strict=schema is not None,
                )
            )
            continue
        kind = server_kind(tool)
        if kind is None:  # a custom tool needs its schema (check_tools says so first)
            raise InvalidRequestError(f"tools.{i}.input_schema: Field required")
        if kind in HOSTED:
            continue
        spec = client_tool_function(tool) if kind == CLIENT_SCHEMA else None
        if spec is None:
            raise InvalidRequestError(_unsupported(i, tool.type or ""))
        default_name, text, parameters = spec
        name = tool.name or default_name
        out.append(
            FunctionTool(
                name=name,
                upstream=upstream_tool_name(name),
                description=text,
                parameters=parameters,
                strict=False,
            )
        )
    return out


def client_tool_names(req: MessagesRequest) -> set[str]:
    """The names of the tools the client runs itself (custom and client-schema tools)."""
    names: set[str] = set()
    for tool in req.tools or ():
        if is_custom_tool(tool.type, tool.input_schema) and tool.name:
            names.add(tool.name)
        elif server_kind(tool) == CLIENT_SCHEMA:
            spec = client_tool_function(tool)
            if spec is not None:
                names.add(tool.name or spec[0])
    return names


def _unsupported(i: int, kind: str) -> str:
    if kind.startswith("web_fetch_"):
        return (
            f"tools.{i}: {kind} is not supported: there is no hosted fetch upstream (the "
            "OpenAI Responses API has none), and the gateway does not fetch URLs itself"
        )
    if "_toolset_" in kind:
        instead = "; offer computer_20251124 instead" if kind.startswith("computer_") else ""
        return (
            f"tools.{i}: {kind} is not supported by the gateway: a toolset's calls are one "
            "tool_use per action with a toolset_name, which has no OpenAI function-call "
            f"equivalent{instead}"
        )
    return (
        f"tools.{i}: tool type {kind!r} is not supported by the gateway (it serves custom "
        "tools; bash, text_editor, memory and computer as functions; and web_search, "
        "code_execution and the MCP connector on Responses routes)"
    )
