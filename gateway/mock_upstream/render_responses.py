"""The Responses API dialect: the non-stream Response object and the SSE event sequence."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Final, TypeAlias

import orjson

from .errors import failure
from .render_common import Turn, Usage, arg_chunks, call_run, served_tier
from .render_hosted import hosted_events, hosted_item, url_citations
from .scripts import (
    HOSTED,
    JSON,
    FunctionCall,
    Reasoning,
    Refusal,
    Script,
    Text,
    words,
)

#: (type, payload without ``type``/``sequence_number``)
Event: TypeAlias = tuple[str, JSON]

_OUTPUT_TEXT_EMPTY: Final[JSON] = {
    "type": "output_text",
    "annotations": [],
    "logprobs": [],
    "text": "",
}


def _responses_final_items(turn: Turn, script: Script) -> list[JSON]:
    """The finished output items, as ``output_item.done`` and the terminal response carry."""
    finals: list[JSON] = []
    for index, item in enumerate(script.items):
        if isinstance(item, Text):
            part: JSON = {
                "type": "output_text",
                "annotations": url_citations(item),
                "logprobs": [],
                "text": item.text,
            }
            finals.append(_message(turn.item_id("msg", index), "completed", [part]))
        elif isinstance(item, HOSTED):
            finals.append(hosted_item(turn, item, index, final=True))
        elif isinstance(item, Refusal):
            part = {"type": "refusal", "refusal": item.text}
            finals.append(_message(turn.item_id("msg", index), "completed", [part]))
        elif isinstance(item, FunctionCall):
            finals.append(_function_call(turn, item, index, "completed", item.arguments))
        else:
            finals.append(_reasoning(turn.item_id("rs", index), item, final=True))
    if script.end == "incomplete" and finals and "status" in finals[-1]:
        finals[-1]["status"] = "incomplete"
    return finals


def _message(item_id: str, status: str, content: list[JSON]) -> JSON:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _function_call(turn: Turn, call: FunctionCall, index: int, status: str, args: str) -> JSON:
    return {
        "id": turn.item_id("fc", index),
        "type": "function_call",
        "status": status,
        "arguments": args,
        "call_id": turn.call_id(call, index),
        "name": call.name,
    }


def _reasoning(item_id: str, item: Reasoning, *, final: bool) -> JSON:
    out: JSON = {"id": item_id, "type": "reasoning"}
    if item.reasoning_text is not None:
        out["content"] = (
            [{"type": "reasoning_text", "text": t} for t in item.reasoning_text] if final else []
        )
    # The encrypted blob is only trustworthy in the final copy (corpus fact 13).
    if final and item.encrypted_content is not None:
        out["encrypted_content"] = item.encrypted_content
    out["summary"] = [{"type": "summary_text", "text": s} for s in item.summary] if final else []
    return out


def _response_object(
    turn: Turn,
    *,
    status: str,
    output: list[JSON],
    usage: JSON | None,
    tools: Any,
    instructions: Any,
    incomplete_reason: str | None = None,
    error: JSON | None = None,
) -> JSON:
    body = turn.body
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        reasoning = {}
    return {
        "id": "resp_" + turn.key,
        "object": "response",
        "created_at": turn.created,
        "status": status,
        "background": False,
        "completed_at": turn.created if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": turn.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": served_tier(body),
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _terminal_fields(script: Script) -> tuple[str, str | None, JSON | None]:
    """(status, incomplete reason, error) of the final Response object."""
    if script.end == "incomplete":
        return "incomplete", script.incomplete_reason, None
    if script.end == "failed":
        code, _, message = failure(script)
        return "failed", None, {"code": code, "message": message}
    return "completed", None, None


def render_responses_json(turn: Turn, script: Script) -> bytes:
    """Non-stream Response object, pretty-printed like api.openai.com (no trailing newline)."""
    status, reason, error = _terminal_fields(script)
    usage = None if status == "failed" else Usage.compute(script, turn.raw_len).responses()
    obj = _response_object(
        turn,
        status=status,
        output=_responses_final_items(turn, script),
        usage=usage,
        tools=turn.body.get("tools", []),
        instructions=turn.body.get("instructions"),
        incomplete_reason=reason,
        error=error,
    )
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)


def _text_events(
    item_id: str,
    oi: int,
    kind: str,
    text: str,
    chunks: list[str],
    annotations: list[JSON] | None = None,
) -> list[Event]:
    """content_part.added … deltas … (annotations) … done … content_part.done for one part."""
    ids: JSON = {"item_id": item_id, "output_index": oi, "content_index": 0}
    if kind == "output_text":
        empty = _OUTPUT_TEXT_EMPTY
        full = {**_OUTPUT_TEXT_EMPTY, "text": text, "annotations": annotations or []}
        events: list[Event] = [("response.content_part.added", {**ids, "part": empty})]
        events += [
            ("response.output_text.delta", {**ids, "delta": d, "logprobs": []}) for d in chunks
        ]
        # OpenAI sends each annotation after the text it covers (corpus web-search stream).
        events += [
            (
                "response.output_text.annotation.added",
                {**ids, "annotation_index": n, "annotation": a},
            )
            for n, a in enumerate(annotations or ())
        ]
        events.append(("response.output_text.done", {**ids, "text": text, "logprobs": []}))
    else:
        empty, full = {"type": "refusal", "refusal": ""}, {"type": "refusal", "refusal": text}
        events = [("response.content_part.added", {**ids, "part": empty})]
        events += [("response.refusal.delta", {**ids, "delta": d}) for d in chunks]
        events.append(("response.refusal.done", {**ids, "refusal": text}))
    events.append(("response.content_part.done", {**ids, "part": full}))
    return events


def _reasoning_events(item_id: str, oi: int, item: Reasoning) -> list[Event]:
    ids: JSON = {"item_id": item_id, "output_index": oi}
    events: list[Event] = []
    for ci, text in enumerate(item.reasoning_text or ()):
        cids = {**ids, "content_index": ci}
        events += [("response.reasoning_text.delta", {**cids, "delta": d}) for d in words(text)]
        events.append(("response.reasoning_text.done", {**cids, "text": text}))
    for si, text in enumerate(item.summary):
        sids = {**ids, "summary_index": si}
        events.append(
            (
                "response.reasoning_summary_part.added",
                {**sids, "part": {"type": "summary_text", "text": ""}},
            )
        )
        events += [
            ("response.reasoning_summary_text.delta", {**sids, "delta": d}) for d in words(text)
        ]
        events.append(("response.reasoning_summary_text.done", {**sids, "text": text}))
        events.append(
            (
                "response.reasoning_summary_part.done",
                {**sids, "part": {"type": "summary_text", "text": text}},
            )
        )
    return events


def _call_delta_events(turn: Turn, call: FunctionCall, oi: int) -> list[Event]:
    ids: JSON = {"item_id": turn.item_id("fc", oi), "output_index": oi}
    return [
        ("response.function_call_arguments.delta", {**ids, "delta": d}) for d in arg_chunks(call)
    ]


def _call_done_events(turn: Turn, call: FunctionCall, oi: int, final: JSON) -> list[Event]:
    ids: JSON = {"item_id": turn.item_id("fc", oi), "output_index": oi}
    return [
        ("response.function_call_arguments.done", {**ids, "arguments": call.arguments}),
        ("response.output_item.done", {"output_index": oi, "item": final}),
    ]


def responses_events(turn: Turn, script: Script) -> list[Event]:
    """The full Responses event sequence (type, payload without ``type``/``sequence_number``).

    Order follows the corpus (protocol.md §7): created, in_progress, then per item
    output_item.added … output_item.done, then the terminal event chosen by ``script.end``.
    """
    tools = orjson.Fragment(orjson.dumps(turn.body.get("tools", [])))
    # Claude Code's instructions and tools run to tens of KB: serialise them once, not 3 times.
    instructions = orjson.Fragment(orjson.dumps(turn.body.get("instructions")))
    head = _response_object(
        turn, status="in_progress", output=[], usage=None, tools=tools, instructions=instructions
    )
    events: list[Event] = [
        ("response.created", {"response": head}),
        ("response.in_progress", {"response": head}),
    ]
    finals = _responses_final_items(turn, script)
    items = script.items
    oi = 0
    while oi < len(items):
        item = items[oi]
        if isinstance(item, FunctionCall):
            # Calls are sequential, as in every recording; responses_interleave alternates the
            # argument deltas of a run of adjacent calls (all added first, all done last).
            run = call_run(items, oi, script.responses_interleave)
            for i, call in run:
                added = _function_call(turn, call, i, "in_progress", "")
                events.append(("response.output_item.added", {"output_index": i, "item": added}))
            for group in itertools.zip_longest(*(_call_delta_events(turn, c, i) for i, c in run)):
                events += [e for e in group if e is not None]
            for i, call in run:
                events += _call_done_events(turn, call, i, finals[i])
            oi = run[-1][0] + 1
            continue
        if isinstance(item, Reasoning):
            item_id = turn.item_id("rs", oi)
            added = _reasoning(item_id, item, final=False)
            events.append(("response.output_item.added", {"output_index": oi, "item": added}))
            events += _reasoning_events(item_id, oi, item)
        elif isinstance(item, HOSTED):
            added = hosted_item(turn, item, oi, final=False)
            events.append(("response.output_item.added", {"output_index": oi, "item": added}))
            events += hosted_events(turn, item, oi, finals[oi])
        else:
            item_id = turn.item_id("msg", oi)
            events.append(
                (
                    "response.output_item.added",
                    {"output_index": oi, "item": _message(item_id, "in_progress", [])},
                )
            )
            if isinstance(item, Text):
                chunks = item.chunks if item.chunks is not None else words(item.text)
                events += _text_events(
                    item_id, oi, "output_text", item.text, chunks, url_citations(item)
                )
            else:
                events += _text_events(item_id, oi, "refusal", item.text, words(item.text))
        events.append(("response.output_item.done", {"output_index": oi, "item": finals[oi]}))
        oi += 1

    if script.end == "none":
        return events
    if script.end == "error_event":
        code, _, message = failure(script)
        events.append(("error", {"code": code, "message": message, "param": None}))
        return events
    status, reason, error = _terminal_fields(script)
    usage = None if status == "failed" else Usage.compute(script, turn.raw_len).responses()
    final = _response_object(
        turn,
        status=status,
        output=finals,
        usage=usage,
        tools=tools,
        instructions=instructions,
        incomplete_reason=reason,
        error=error,
    )
    events.append((f"response.{status}", {"response": final}))
    return events


def encode_responses_sse(events: Iterable[Event]) -> list[bytes]:
    """``event: <type>\\ndata: <json>\\n\\n`` frames, ``sequence_number`` 0..n-1 on every one."""
    return [
        b"event: %s\ndata: %s\n\n"
        % (etype.encode(), orjson.dumps({"type": etype, "sequence_number": seq, **payload}))
        for seq, (etype, payload) in enumerate(events)
    ]
