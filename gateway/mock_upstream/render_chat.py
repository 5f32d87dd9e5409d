"""The Chat Completions dialect: the non-stream ``chat.completion`` and the chunk stream."""

from __future__ import annotations

import itertools

import orjson

from .errors import failure
from .render_common import Turn, Usage, arg_chunks, call_run, chat_reasoning, served_tier
from .scripts import HOSTED, JSON, FunctionCall, Reasoning, Refusal, Script, Text, words


def _finish_reason(script: Script) -> str:
    if script.end == "incomplete":
        return "content_filter" if script.incomplete_reason == "content_filter" else "length"
    if any(isinstance(i, FunctionCall) for i in script.items):
        return "tool_calls"
    return "stop"


def render_chat_json(turn: Turn, script: Script) -> bytes:
    """Non-stream ``chat.completion``, pretty-printed with the trailing newline OpenAI sends."""
    texts = [i.text for i in script.items if isinstance(i, Text)]
    refusals = [i.text for i in script.items if isinstance(i, Refusal)]
    calls = [(n, i) for n, i in enumerate(script.items) if isinstance(i, FunctionCall)]
    reasoning = [i for i in script.items if isinstance(i, Reasoning)]
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message[script.chat_reasoning_field] = "\n\n".join(map(chat_reasoning, reasoning))
    if calls:
        message["tool_calls"] = [
            {
                "id": turn.call_id(c, n),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for n, c in calls
        ]
    message["refusal"] = "".join(refusals) if refusals else None
    message["annotations"] = []
    obj = {
        "id": "chatcmpl-" + turn.key,
        "object": "chat.completion",
        "created": turn.created,
        "model": turn.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(script),
            }
        ],
        "usage": Usage.compute(script, turn.raw_len).chat(),
        "service_tier": served_tier(turn.body),
        "system_fingerprint": "fp_mock",
    }
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _tool_fragments(
    turn: Turn, script: Script, call: FunctionCall, item_index: int, tc_index: int
) -> list[JSON]:
    """One call's ``delta.tool_calls`` entries: the opener (id, type, name), then arguments."""
    chunks = arg_chunks(call)
    opener: JSON = {
        "index": 0 if script.chat_zero_index else tc_index,
        "id": turn.call_id(call, item_index),
        "type": "function",
        "function": {"name": call.name, "arguments": "" if chunks else call.arguments},
    }
    if script.chat_missing_first_id:
        del opener["id"]
    frags = [opener] + [{"index": opener["index"], "function": {"arguments": c}} for c in chunks]
    if script.chat_no_index:
        for frag in frags:
            del frag["index"]
    return frags


def chat_deltas(turn: Turn, script: Script) -> list[JSON]:
    """Every ``choices[0].delta`` between the role chunk and the finish chunk."""
    deltas: list[JSON] = []
    items = [i for i in script.items if not isinstance(i, HOSTED)]  # Chat hosts no tools
    tc_index = 0
    i = 0
    while i < len(items):
        item = items[i]
        if isinstance(item, FunctionCall):
            run = call_run(items, i, script.chat_interleave)
            streams = [
                _tool_fragments(turn, script, call, j, tc_index + k)
                for k, (j, call) in enumerate(run)
            ]
            tc_index += len(run)
            for group in itertools.zip_longest(*streams):
                deltas += [{"tool_calls": [f]} for f in group if f is not None]
            i = run[-1][0] + 1
            continue
        if isinstance(item, Text):
            chunks = item.chunks if item.chunks is not None else words(item.text)
            deltas += [{"content": c} for c in chunks]
        elif isinstance(item, Refusal):
            deltas += [{"refusal": c} for c in words(item.text)]
        else:
            deltas += [{script.chat_reasoning_field: c} for c in words(chat_reasoning(item))]
        i += 1
    return deltas


def encode_chat_sse(turn: Turn, script: Script) -> list[bytes]:
    """``data: {chunk}\\n\\n`` frames, ending ``data: [DONE]`` (protocol.md §8, corpus 20-22)."""
    include_usage = bool((turn.body.get("stream_options") or {}).get("include_usage"))
    # Every chunk shares id/created/model: render that prefix once and splice each choice in.
    prefix = (
        b"data: "
        + orjson.dumps(
            {
                "id": "chatcmpl-" + turn.key,
                "object": "chat.completion.chunk",
                "created": turn.created,
                "model": turn.model,
                "service_tier": served_tier(turn.body),
                "system_fingerprint": "fp_mock",
            }
        )[:-1]
        + b',"choices":['
    )
    suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
    if script.chat_usage_every_chunk:
        # vLLM's continuous_usage_stats: the prompt's usage on every chunk, from the first
        running = Usage.compute(script, turn.raw_len).chat()
        partial = {**running, "completion_tokens": 0, "total_tokens": running["prompt_tokens"]}
        suffix = b'],"usage":' + orjson.dumps(partial) + b"}\n\n"

    def chunk(delta: JSON, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return prefix + orjson.dumps(choice) + suffix

    code, etype, message = failure(script)
    error_frame = (
        b"data: "
        + orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})
        + b"\n\n"
    )
    first = script.items[0] if script.items else None
    opening = None if isinstance(first, (FunctionCall, Refusal)) else ""
    frames = [chunk({"role": "assistant", "content": opening, "refusal": None})]
    deltas = chat_deltas(turn, script)
    if script.chat_error_chunk:
        # A mid-stream error: one content chunk, the error, then the connection ends.
        return frames + [chunk(d) for d in deltas[:1]] + [error_frame]
    frames += [chunk(d) for d in deltas]
    if script.end == "none":
        return frames
    if script.end in ("failed", "error_event"):
        return [*frames, error_frame]
    frames.append(chunk({}, _finish_reason(script)))
    if include_usage:
        usage = orjson.dumps(Usage.compute(script, turn.raw_len).chat())
        frames.append(prefix + b'],"usage":' + usage + b"}\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames
