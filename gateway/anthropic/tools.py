"""Tool names and tool input, both ways.

Request side: which tools are the client's own (``is_custom_tool``), the upstream spelling of
their names (``tool_name_map``; the rule itself is ``tool_schema.upstream_tool_name``) and a
``tool_use`` input as arguments text. Answer side: the client's name back, and upstream
``arguments`` text as the JSON object Anthropic's ``tool_use.input`` must be."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import orjson

from ..errors import InvalidRequestError
from ..schemas.anthropic import MessagesRequest, Tool, ToolUseBlock
from .tool_schema import upstream_tool_name


def is_custom_tool(kind: str | None, schema: dict[str, Any] | None) -> bool:
    """Server tools have a versioned type and no input_schema (protocol.md §1.4)."""
    return (kind is None or kind == "custom") and schema is not None


def check_tools(tools: Sequence[Tool] | None) -> None:
    """A custom tool (no ``type``) needs a ``name`` and an ``input_schema``, as Anthropic's API
    requires; server tools are checked by the dialect that serves them."""
    for i, tool in enumerate(tools or ()):
        if tool.type is None or tool.type == "custom":
            for field in ("name", "input_schema"):
                if getattr(tool, field) is None:
                    raise InvalidRequestError(
                        f"$.tools[{i}]: Object missing required field `{field}`"
                    )


def custom_tools(req: MessagesRequest) -> list[tuple[Tool, str]]:
    """The request's custom tools with their names (a custom tool without one is a 400)."""
    out: list[tuple[Tool, str]] = []
    for i, tool in enumerate(req.tools or ()):
        if is_custom_tool(tool.type, tool.input_schema):
            if not tool.name:
                raise InvalidRequestError(f"tools.{i}.name: Field required")
            out.append((tool, tool.name))
    return out


def tool_name_map(req: MessagesRequest) -> dict[str, str]:
    """Upstream tool name → client tool name, for the offered tools whose name was changed.

    Empty for nearly every request (names already match ``^[a-zA-Z0-9_-]{1,64}$``); the
    response side uses it to give ``tool_use.name`` back in the client's spelling.
    """
    out: dict[str, str] = {}
    for _, name in custom_tools(req):
        upstream = upstream_tool_name(name)
        if upstream != name:
            out[upstream] = name
    return out


def tool_arguments(block: ToolUseBlock) -> str:
    """``tool_use.input`` as compact JSON text (``"{}"`` when absent)."""
    if block.input is None:
        return "{}"
    try:
        return orjson.dumps(block.input).decode()
    except TypeError:  # orjson refuses integers wider than 64 bits; msgspec does not
        return msgspec.json.encode(block.input).decode()


def client_tool_name(name: str | None, tool_names: Mapping[str, str] | None) -> str:
    """The client's tool name for an upstream function name (unchanged when not mapped)."""
    name = name or ""
    if tool_names:
        return tool_names.get(name, name)
    return name


def tool_input(arguments: str | None) -> Any:
    """Upstream ``arguments`` string → Anthropic ``tool_use.input`` (always a JSON object).

    ``input`` must be an object (protocol.md §10 item 5); a model that emits broken JSON
    must not fail the whole answer, so invalid JSON becomes ``{}`` and any other JSON value
    is wrapped as ``{"value": v}``.
    """
    if not arguments or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def tool_input_json(arguments: str | None) -> str:
    """The one ``input_json_delta`` for arguments that arrived whole (no usable deltas).

    The upstream text itself when it parses to an object (nothing re-serialised), else the
    JSON of :func:`tool_input`: the client's accumulator re-parses the concatenated partials
    and raises on anything that does not start a JSON value (protocol.md §3.4 item 4).
    """
    text = (arguments or "").strip()
    if text.startswith("{"):
        try:
            if isinstance(orjson.loads(text), dict):
                return text
        except orjson.JSONDecodeError:
            pass
    return orjson.dumps(tool_input(arguments)).decode()
