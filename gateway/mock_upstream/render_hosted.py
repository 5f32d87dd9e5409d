"""Responses hosted-tool items (web search, code interpreter, MCP) and url_citation annotations,
shaped as the recordings show them (corpus responses-stream-web-search-annotations)."""

from __future__ import annotations

from typing import TypeAlias

from .render_common import Turn
from .scripts import JSON, CodeRun, Compaction, HostedCall, Text, WebSearch, words

#: (type, payload without ``type``/``sequence_number``)
Event: TypeAlias = tuple[str, JSON]


def url_citations(item: Text) -> list[JSON]:
    return [
        {
            "type": "url_citation",
            "end_index": c.end,
            "start_index": c.start,
            "title": c.title,
            "url": c.url,
        }
        for c in item.citations or ()
    ]


def hosted_item(turn: Turn, item: HostedCall, index: int, *, final: bool) -> JSON:
    """A hosted-tool item: as announced (``final=False``) or finished."""
    if isinstance(item, Compaction):
        compacted: JSON = {"id": turn.item_id("cmp", index), "type": "compaction"}
        if final:
            compacted["encrypted_content"] = item.encrypted_content
        return compacted
    if isinstance(item, WebSearch):
        out: JSON = {
            "id": turn.item_id("ws", index),
            "type": "web_search_call",
            "status": item.status if final else "in_progress",
        }
        if final and item.action == "search":
            sources = [
                {"type": "url", "url": u, **({"title": t} if item.titles else {})}
                for u, t in item.sources
            ]
            out["action"] = {
                "type": "search",
                "query": item.query,
                "queries": [item.query],
                "sources": sources,
            }
        elif final:
            out["action"] = {"type": "open_page", "url": item.sources[0][0] if item.sources else ""}
        return out
    if isinstance(item, CodeRun):
        return {
            "id": turn.item_id("ci", index),
            "type": "code_interpreter_call",
            "status": item.status if final else "in_progress",
            "code": item.code if final else "",
            "container_id": "cntr_" + turn.key,
            "outputs": [{"type": "logs", "logs": item.logs}] if final and item.logs else [],
        }
    out = {
        "id": turn.item_id("mcp", index),
        "type": "mcp_call",
        "status": ("failed" if item.error else "completed") if final else "in_progress",
        "name": item.name,
        "server_label": item.server,
        "arguments": item.arguments if final else "",
        "output": item.output if final else None,
        "error": {"type": "mcp_tool_execution_error", "message": item.error}
        if final and item.error
        else None,
    }
    return out


def hosted_events(turn: Turn, item: HostedCall, oi: int, final: JSON) -> list[Event]:
    """Between ``output_item.added`` and ``.done``, as the recordings show them."""
    ids: JSON = {"item_id": final["id"], "output_index": oi}
    if isinstance(item, Compaction):
        return [("response.compaction.compacting", dict(ids))]
    if isinstance(item, WebSearch):
        return [
            (f"response.web_search_call.{phase}", dict(ids))
            for phase in ("in_progress", "searching", "completed")
        ]
    if isinstance(item, CodeRun):
        events: list[Event] = [("response.code_interpreter_call.in_progress", dict(ids))]
        events += [
            ("response.code_interpreter_call_code.delta", {**ids, "delta": d})
            for d in words(item.code)
        ]
        events.append(("response.code_interpreter_call_code.done", {**ids, "code": item.code}))
        events.append(("response.code_interpreter_call.interpreting", dict(ids)))
        events.append(("response.code_interpreter_call.completed", dict(ids)))
        return events
    return [
        ("response.mcp_call.in_progress", dict(ids)),
        ("response.mcp_call_arguments.delta", {**ids, "delta": item.arguments}),
        ("response.mcp_call_arguments.done", {**ids, "arguments": item.arguments}),
        ("response.mcp_call.failed" if item.error else "response.mcp_call.completed", dict(ids)),
    ]
