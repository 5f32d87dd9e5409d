"""Built-in OpenAI-compatible fake upstream: Responses and Chat Completions, stream and not.

A real aiohttp server with three users:

* ``make run`` without an OpenAI key (``python -m gateway.mock_upstream``): answers are fake but
  shaped exactly like api.openai.com's (see ``/work/shared/corpus``).
* The test suite: ``MockUpstream.enqueue(Script(...))`` scripts the next answer, including
  byte-level faults (odd chunk splits, CRLF, delays, stalls, mid-stream disconnects, garbage).
* The benchmark: the default answer path does no I/O besides the socket and serialises each
  event once with orjson.

Without a queued script the answer is derived from the request (see ``default_script``):

* last input item is a tool result     → text ``"tool result: " + output[:200]``
* ``call tool NAME {json}``             → a function call (several → parallel calls)
* ``mock:status=NNN``                   → that HTTP status with OpenAI's error envelope
  (429 adds ``retry-after: 1``; 400 + ``mock:context`` → ``context_length_exceeded``)
* ``mock:delay=SECONDS``                → wait before the headers, then answer as below
* ``mock:malformed``                    → truncated JSON body / garbage SSE
* ``mock:reason``                       → reasoning item (summary + encrypted_content), then text
* ``mock:refuse``                       → a refusal
* ``mock:fail``                         → stream ends with ``response.failed`` / a Chat error chunk
* otherwise                             → text ``"echo: " + user text``

Answers longer (in words) than the request's ``max_output_tokens`` / ``max_completion_tokens`` /
``max_tokens`` are truncated and end ``incomplete`` / ``finish_reason: "length"``.

This module stands alone (aiohttp, orjson, stdlib): it must not import other gateway modules.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import re
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import orjson
from aiohttp import web

__all__ = [
    "MOCK_KEY",
    "FunctionCall",
    "MockUpstream",
    "Reasoning",
    "RecordedRequest",
    "Refusal",
    "Script",
    "Text",
    "create_mock_app",
    "default_script",
    "main",
    "start_mock",
]

Api: TypeAlias = Literal["responses", "chat"]
JSON: TypeAlias = dict[str, Any]

SSE_CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE: Final = "application/json"
# OpenAI answers unknown snapshots with a dated model name; model_echo=False imitates that.
SNAPSHOT_SUFFIX: Final = "-2025-04-14"
DEFAULT_ENCRYPTED: Final = "gAAAAB-mock"
NO_USER_TEXT_ANSWER: Final = "Hello from the mock upstream."
TOOL_RESULT_PREVIEW: Final = 200
MAX_DEFAULT_DELAY: Final = 600.0
# Poll interval while stalled: aiohttp does not cancel handlers on disconnect by default
# (handler_cancellation=False), so a stalled handler has to notice the lost transport itself.
DISCONNECT_POLL: Final = 0.01


# --------------------------------------------------------------------------------------------
# Public script types
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the mock received it; ``body`` is parsed JSON or None."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Text:
    """An assistant text output. ``chunks`` (should join to ``text``) are the deltas.

    Default chunks: words with their leading whitespace (``"Hi"``, ``" there"``), like tokens.
    """

    text: str
    chunks: list[str] | None = None


@dataclass
class Refusal:
    """A refusal content part (Responses) / ``message.refusal`` (Chat)."""

    text: str


@dataclass
class FunctionCall:
    """A function call. ``chunks`` are argument fragments (default: 8-character pieces);
    ``[]`` sends no deltas (Responses: arguments only in the ``.done`` events; Chat: all
    arguments in the opening fragment). ``call_id`` defaults to a per-response id."""

    name: str
    arguments: str
    call_id: str | None = None
    chunks: list[str] | None = None


@dataclass
class Reasoning:
    """A reasoning item: summary parts, opaque ``encrypted_content`` (sent only in the final
    item, never in ``output_item.added``) and optional raw reasoning text parts (vLLM /
    gpt-oss style; Chat sends it as ``reasoning_content``, or the joined summary if absent)."""

    summary: list[str]
    encrypted_content: str | None = DEFAULT_ENCRYPTED
    reasoning_text: list[str] | None = None


OutputItem: TypeAlias = Text | Refusal | FunctionCall | Reasoning
End: TypeAlias = Literal["completed", "incomplete", "failed", "error_event", "none"]


@dataclass
class Script:
    """One scripted answer.

    Status: non-200 answers that status with ``raw_body``, else ``error_body``, else OpenAI's
    envelope ``{"error": {message, type, param, code}}`` built from ``error_*`` (defaults per
    status). Streaming requests get JSON errors too, as OpenAI sends them.

    ``end`` (streams): ``completed``; ``incomplete`` (``incomplete_details.reason`` =
    ``incomplete_reason``; Chat ``finish_reason`` ``length``, or ``content_filter`` for that
    reason); ``failed`` (``response.failed`` with ``error`` {code, message}; Chat: an error
    chunk); ``error_event`` (a bare ``error`` event; Chat: an error chunk); ``none`` (close with
    no terminal event / no finish chunk / no ``[DONE]``). Non-stream: ``failed`` is a 200 body
    with ``status: "failed"`` (Chat: 500), ``error_event`` a 500 envelope, ``none`` = completed.

    ``usage`` overrides any of ``input_tokens``, ``cached_tokens``, ``output_tokens``,
    ``reasoning_tokens``; defaults: input = request bytes // 4, output = output chars // 4.

    Shaping (stream and non-stream alike): ``split`` re-cuts the body bytes (int: fixed-size
    pieces; list: cut offsets), default one write per event; ``crlf`` uses CRLF line ends;
    ``delay_before_headers`` sleeps before the status line; ``delay_between_events`` sleeps
    between writes; ``stall_after_events`` writes that many events (a non-stream body is one
    event) then hangs until the client leaves; ``drop_after_bytes`` writes that many body bytes
    then aborts the TCP connection; ``raw_body`` replaces the whole body.
    """

    items: list[OutputItem] = field(default_factory=list)
    status: int = 200
    error_code: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    end: End = "completed"
    incomplete_reason: str = "max_output_tokens"
    usage: dict[str, int] | None = None
    split: list[int] | int | None = None
    crlf: bool = False
    delay_before_headers: float = 0.0
    delay_between_events: float = 0.0
    stall_after_events: int | None = None
    drop_after_bytes: int | None = None
    raw_body: bytes | None = None
    content_type: str | None = None
    # Server quirks seen in the wild (protocol.md §8): Ollama omitted `index` (ollama#7881),
    # later sent index 0 for every parallel call (ollama#15457); gpt-oss first deltas may lack
    # `id` (continue#13225); vLLM renamed reasoning_content → reasoning (vllm#27752).
    chat_no_index: bool = False
    chat_zero_index: bool = False
    chat_missing_first_id: bool = False
    chat_reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"
    chat_error_chunk: bool = False
    chat_interleave: bool = False
    responses_interleave: bool = False

    @property
    def shaped(self) -> bool:
        """True when the body must go through the byte-level writer."""
        return (
            self.split is not None
            or self.crlf
            or self.delay_between_events > 0
            or self.stall_after_events is not None
            or self.drop_after_bytes is not None
        )


# --------------------------------------------------------------------------------------------
# Request analysis and the default (unscripted) behaviour
# --------------------------------------------------------------------------------------------

_CALL_RE: Final = re.compile(r"call tool ([A-Za-z0-9_.:-]+)")
_STATUS_RE: Final = re.compile(r"mock:status=(\d{3})")
_DELAY_RE: Final = re.compile(r"mock:delay=(\d+(?:\.\d+)?)")
_WORD_RE: Final = re.compile(r"\s*\S+|\s+")
_JSON_DECODER: Final = json.JSONDecoder()


def _parts_text(content: Any, kinds: tuple[str, ...]) -> str | None:
    """Text of a string content or of the text parts (of the given types) of a part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") in kinds and isinstance(p.get("text"), str)
        ]
        return "\n".join(texts) if texts else None
    return None


def _last_user_text(api: Api, body: JSON) -> str | None:
    if api == "responses":
        items = body.get("input")
        if isinstance(items, str):
            return items
        kinds: tuple[str, ...] = ("input_text", "text")
    else:
        items = body.get("messages")
        kinds = ("text",)
    if not isinstance(items, list):
        return None
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return _parts_text(item.get("content"), kinds)
    return None


def _tool_output(api: Api, body: JSON) -> str | None:
    """The tool result when the conversation's last item is one, else None."""
    items = body.get("input" if api == "responses" else "messages")
    if not isinstance(items, list) or not items or not isinstance(items[-1], dict):
        return None
    last = items[-1]
    if api == "responses" and last.get("type") == "function_call_output":
        return _parts_text(last.get("output"), ("input_text", "text", "output_text")) or ""
    if api == "chat" and last.get("role") == "tool":
        return _parts_text(last.get("content"), ("text",)) or ""
    return None


def _tool_names(api: Api, body: JSON) -> set[str]:
    names: set[str] = set()
    tools = body.get("tools")
    if not isinstance(tools, list):
        return names
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        spec = tool.get("function") if api == "chat" else tool
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            names.add(spec["name"])
    return names


def _max_words(api: Api, body: JSON) -> int | None:
    keys = ("max_output_tokens",) if api == "responses" else ("max_completion_tokens", "max_tokens")
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _call_id(*parts: str) -> str:
    return "call_" + hashlib.blake2b("\x00".join(parts).encode(), digest_size=12).hexdigest()


def _parse_calls(text: str, names: set[str]) -> list[OutputItem]:
    """Every ``call tool NAME [json]`` whose NAME is a declared tool, in order."""
    calls: list[OutputItem] = []
    for match in _CALL_RE.finditer(text):
        name = match.group(1)
        if name not in names:
            continue
        start = match.end()
        while start < len(text) and text[start] in " \t\r\n":
            start += 1
        arguments = "{}"
        if text.startswith("{", start):
            try:
                _, end = _JSON_DECODER.raw_decode(text, start)
            except ValueError:
                pass
            else:
                arguments = text[start:end]
        calls.append(FunctionCall(name, arguments, _call_id(str(len(calls)), name, text)))
    return calls


def _truncate_words(text: str, limit: int | None) -> tuple[str, bool]:
    if limit is None:
        return text, False
    words = _WORD_RE.findall(text)
    if sum(1 for w in words if not w.isspace()) <= limit:
        return text, False
    return "".join(words[: max(limit, 0)]), True


_STATUS_MESSAGES: Final[dict[int, tuple[str, str, str | None]]] = {
    # status: (message, type, code), shaped like api.openai.com's (corpus + openai-python tests)
    400: ("Invalid request (mock upstream).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided: sk-mock****. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: (
        "Project does not have access to this model (mock upstream).",
        "invalid_request_error",
        "model_not_found",
    ),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
_CONTEXT_MESSAGE: Final = (
    "Your input exceeds the context window of this model. Please adjust your input and try again."
)
_FAILED_MESSAGE: Final = (
    "The server had an error processing your request. Sorry about that! You can retry your "
    "request, or contact us through our help center at help.openai.com if you keep seeing this "
    "error."
)
_BAD_JSON_MESSAGE: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


def _error_script(status: int, text: str) -> Script:
    script = Script(status=status)
    if status == 429:
        script.headers["retry-after"] = "1"
    if status == 400 and "mock:context" in text:
        script.error_code = "context_length_exceeded"
        script.error_message = _CONTEXT_MESSAGE
    return script


def _malformed_script(api: Api, stream: bool) -> Script:
    if not stream:
        body = b'{\n  "id": "resp_mock",\n  "object": "response",\n  "output": [\n    {"ty'
        if api == "chat":
            body = b'{\n  "id": "chatcmpl-mock",\n  "object": "chat.completion",\n  "choi'
        return Script(raw_body=body, content_type=JSON_CONTENT_TYPE)
    if api == "responses":
        body = (
            b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
            b'"response":{"id":"resp_mock","obj\n\nthis is not SSE\n\n'
        )
    else:
        body = b'data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","cho\n\nnot SSE\n\n'
    return Script(raw_body=body, content_type=SSE_CONTENT_TYPE)


def default_script(api: Api, body: JSON) -> Script:
    """The deterministic answer used when no script is queued (module docstring lists the
    directives). Pure: same request, same script."""
    limit = _max_words(api, body)
    tool_output = _tool_output(api, body)
    if tool_output is not None:
        return _text_script("tool result: " + tool_output[:TOOL_RESULT_PREVIEW], limit)
    text = _last_user_text(api, body)
    if text is None:
        return _text_script(NO_USER_TEXT_ANSWER, limit)
    calls = _parse_calls(text, _tool_names(api, body))
    if calls:
        return Script(items=calls)
    if (status := _STATUS_RE.search(text)) is not None and int(status.group(1)) >= 400:
        return _error_script(int(status.group(1)), text)
    script: Script
    if "mock:malformed" in text:
        script = _malformed_script(api, body.get("stream") is True)
    elif "mock:reason" in text:
        script = _text_script("echo: " + text, limit)
        script.items.insert(0, Reasoning(summary=[f"Thinking about: {text[:80]}"]))
    elif "mock:refuse" in text:
        script = Script(items=[Refusal("I'm sorry, but I can't help with that request.")])
    elif "mock:fail" in text:
        script = _text_script("echo: " + text, limit)
        script.end = "failed"
    else:
        script = _text_script("echo: " + text, limit)
    if (delay := _DELAY_RE.search(text)) is not None:
        script.delay_before_headers = min(float(delay.group(1)), MAX_DEFAULT_DELAY)
    return script


def _text_script(text: str, limit: int | None) -> Script:
    text, truncated = _truncate_words(text, limit)
    return Script(items=[Text(text)], end="incomplete" if truncated else "completed")


# --------------------------------------------------------------------------------------------
# Rendering helpers shared by both dialects
# --------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text)


def _arg_chunks(call: FunctionCall) -> list[str]:
    if call.chunks is not None:
        return call.chunks
    args = call.arguments
    return [args[i : i + 8] for i in range(0, len(args), 8)]


def _chat_reasoning(item: Reasoning) -> str:
    if item.reasoning_text is not None:
        return "".join(item.reasoning_text)
    return "\n\n".join(item.summary)


@dataclass(slots=True)
class _Usage:
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int

    @classmethod
    def compute(cls, script: Script, raw_len: int) -> _Usage:
        """Deterministic defaults (bytes // 4, chars // 4), overridden by ``script.usage``."""
        reasoning_chars = output_chars = 0
        for item in script.items:
            if isinstance(item, Reasoning):
                reasoning_chars += sum(map(len, item.summary))
                reasoning_chars += sum(map(len, item.reasoning_text or ()))
            elif isinstance(item, FunctionCall):
                output_chars += len(item.name) + len(item.arguments)
            else:
                output_chars += len(item.text)
        reasoning = reasoning_chars // 4
        over = script.usage or {}
        return cls(
            input_tokens=over.get("input_tokens", max(1, raw_len // 4)),
            cached_tokens=over.get("cached_tokens", 0),
            output_tokens=over.get("output_tokens", max(1, output_chars // 4) + reasoning),
            reasoning_tokens=over.get("reasoning_tokens", reasoning),
        )

    def responses(self) -> JSON:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def chat(self) -> JSON:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


@dataclass(slots=True)
class _Turn:
    """Per-request values every renderer needs."""

    api: Api
    body: JSON
    raw_len: int
    model: str
    key: str  # unique per answer; item ids are derived from it
    created: int
    stream: bool

    def item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self.key}{index:02d}"

    def call_id(self, call: FunctionCall, index: int) -> str:
        return call.call_id or f"call_{self.key}{index:02d}"


def _failure(script: Script) -> tuple[str, str, str]:
    """(code, type, message) of a ``failed`` / ``error_event`` / Chat error chunk."""
    return (
        script.error_code or "server_error",
        script.error_type or "server_error",
        script.error_message or _FAILED_MESSAGE,
    )


def error_envelope(status: int, script: Script | None = None, model: str = "") -> JSON:
    """OpenAI's error body ``{"error": {message, type, param, code}}`` for ``status``."""
    default = _STATUS_MESSAGES.get(
        status,
        (
            "Mock upstream error.",
            "server_error" if status >= 500 else "invalid_request_error",
            None,
        ),
    )
    message, etype, code = default
    if status == 404 and model:
        message = f"The model `{model}` does not exist or you do not have access to it."
    if script is not None:
        message = script.error_message or message
        etype = script.error_type or etype
        code = script.error_code or code
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


# --------------------------------------------------------------------------------------------
# Responses API
# --------------------------------------------------------------------------------------------

_OUTPUT_TEXT_EMPTY: Final[JSON] = {
    "type": "output_text",
    "annotations": [],
    "logprobs": [],
    "text": "",
}


def _responses_final_items(turn: _Turn, script: Script) -> list[JSON]:
    """The finished output items, as ``output_item.done`` and the terminal response carry."""
    finals: list[JSON] = []
    for index, item in enumerate(script.items):
        if isinstance(item, Text):
            part: JSON = {
                "type": "output_text",
                "annotations": [],
                "logprobs": [],
                "text": item.text,
            }
            finals.append(_message(turn.item_id("msg", index), "completed", [part]))
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


def _function_call(turn: _Turn, call: FunctionCall, index: int, status: str, args: str) -> JSON:
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
    turn: _Turn,
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
        "service_tier": "default",
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
        code, _, message = _failure(script)
        return "failed", None, {"code": code, "message": message}
    return "completed", None, None


def render_responses_json(turn: _Turn, script: Script) -> bytes:
    """Non-stream Response object, pretty-printed like api.openai.com (no trailing newline)."""
    status, reason, error = _terminal_fields(script)
    usage = None if status == "failed" else _Usage.compute(script, turn.raw_len).responses()
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


Event: TypeAlias = tuple[str, JSON]


def _text_events(item_id: str, oi: int, kind: str, text: str, chunks: list[str]) -> list[Event]:
    """content_part.added … deltas … done … content_part.done for one message part."""
    ids: JSON = {"item_id": item_id, "output_index": oi, "content_index": 0}
    if kind == "output_text":
        empty, full = _OUTPUT_TEXT_EMPTY, {**_OUTPUT_TEXT_EMPTY, "text": text}
        events: list[Event] = [("response.content_part.added", {**ids, "part": empty})]
        events += [
            ("response.output_text.delta", {**ids, "delta": d, "logprobs": []}) for d in chunks
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
        events += [("response.reasoning_text.delta", {**cids, "delta": d}) for d in _words(text)]
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
            ("response.reasoning_summary_text.delta", {**sids, "delta": d}) for d in _words(text)
        ]
        events.append(("response.reasoning_summary_text.done", {**sids, "text": text}))
        events.append(
            (
                "response.reasoning_summary_part.done",
                {**sids, "part": {"type": "summary_text", "text": text}},
            )
        )
    return events


def _call_run(
    items: Sequence[OutputItem], start: int, group: bool
) -> list[tuple[int, FunctionCall]]:
    """The function call at ``start`` and, when ``group``, the calls directly after it."""
    run: list[tuple[int, FunctionCall]] = []
    for index in range(start, len(items) if group else start + 1):
        item = items[index]
        if not isinstance(item, FunctionCall):
            break
        run.append((index, item))
    return run


def _call_delta_events(turn: _Turn, call: FunctionCall, oi: int) -> list[Event]:
    ids: JSON = {"item_id": turn.item_id("fc", oi), "output_index": oi}
    return [
        ("response.function_call_arguments.delta", {**ids, "delta": d}) for d in _arg_chunks(call)
    ]


def _call_done_events(turn: _Turn, call: FunctionCall, oi: int, final: JSON) -> list[Event]:
    ids: JSON = {"item_id": turn.item_id("fc", oi), "output_index": oi}
    return [
        ("response.function_call_arguments.done", {**ids, "arguments": call.arguments}),
        ("response.output_item.done", {"output_index": oi, "item": final}),
    ]


def responses_events(turn: _Turn, script: Script) -> list[Event]:
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
            run = _call_run(items, oi, script.responses_interleave)
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
        else:
            item_id = turn.item_id("msg", oi)
            events.append(
                (
                    "response.output_item.added",
                    {"output_index": oi, "item": _message(item_id, "in_progress", [])},
                )
            )
            if isinstance(item, Text):
                chunks = item.chunks if item.chunks is not None else _words(item.text)
                events += _text_events(item_id, oi, "output_text", item.text, chunks)
            else:
                events += _text_events(item_id, oi, "refusal", item.text, _words(item.text))
        events.append(("response.output_item.done", {"output_index": oi, "item": finals[oi]}))
        oi += 1

    if script.end == "none":
        return events
    if script.end == "error_event":
        code, _, message = _failure(script)
        events.append(("error", {"code": code, "message": message, "param": None}))
        return events
    status, reason, error = _terminal_fields(script)
    usage = None if status == "failed" else _Usage.compute(script, turn.raw_len).responses()
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


# --------------------------------------------------------------------------------------------
# Chat Completions
# --------------------------------------------------------------------------------------------


def _finish_reason(script: Script) -> str:
    if script.end == "incomplete":
        return "content_filter" if script.incomplete_reason == "content_filter" else "length"
    if any(isinstance(i, FunctionCall) for i in script.items):
        return "tool_calls"
    return "stop"


def render_chat_json(turn: _Turn, script: Script) -> bytes:
    """Non-stream ``chat.completion``, pretty-printed with the trailing newline OpenAI sends."""
    texts = [i.text for i in script.items if isinstance(i, Text)]
    refusals = [i.text for i in script.items if isinstance(i, Refusal)]
    calls = [(n, i) for n, i in enumerate(script.items) if isinstance(i, FunctionCall)]
    reasoning = [i for i in script.items if isinstance(i, Reasoning)]
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message[script.chat_reasoning_field] = "\n\n".join(map(_chat_reasoning, reasoning))
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
        "usage": _Usage.compute(script, turn.raw_len).chat(),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _tool_fragments(
    turn: _Turn, script: Script, call: FunctionCall, item_index: int, tc_index: int
) -> list[JSON]:
    """One call's ``delta.tool_calls`` entries: the opener (id, type, name), then arguments."""
    chunks = _arg_chunks(call)
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


def chat_deltas(turn: _Turn, script: Script) -> list[JSON]:
    """Every ``choices[0].delta`` between the role chunk and the finish chunk."""
    deltas: list[JSON] = []
    items = script.items
    tc_index = 0
    i = 0
    while i < len(items):
        item = items[i]
        if isinstance(item, FunctionCall):
            run = _call_run(items, i, script.chat_interleave)
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
            chunks = item.chunks if item.chunks is not None else _words(item.text)
            deltas += [{"content": c} for c in chunks]
        elif isinstance(item, Refusal):
            deltas += [{"refusal": c} for c in _words(item.text)]
        else:
            deltas += [{script.chat_reasoning_field: c} for c in _words(_chat_reasoning(item))]
        i += 1
    return deltas


def encode_chat_sse(turn: _Turn, script: Script) -> list[bytes]:
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
                "service_tier": "default",
                "system_fingerprint": "fp_mock",
            }
        )[:-1]
        + b',"choices":['
    )
    suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

    def chunk(delta: JSON, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return prefix + orjson.dumps(choice) + suffix

    code, etype, message = _failure(script)
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
        usage = orjson.dumps(_Usage.compute(script, turn.raw_len).chat())
        frames.append(prefix + b'],"usage":' + usage + b"}\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


# --------------------------------------------------------------------------------------------
# Byte shaping
# --------------------------------------------------------------------------------------------


def shape_writes(frames: Sequence[bytes], script: Script) -> list[bytes]:
    """Apply ``stall_after_events``, ``crlf``, ``drop_after_bytes`` and ``split`` to frames.

    The result is the list of ``write()`` calls; joined, it is a prefix of the full body.
    """
    if script.stall_after_events is not None:
        frames = frames[: script.stall_after_events]
    if script.crlf:
        # Safe: compact JSON never holds a raw newline, so every \n is a line end.
        frames = [f.replace(b"\n", b"\r\n") for f in frames]
    if script.split is None and script.drop_after_bytes is None:
        return list(frames)
    body = b"".join(frames)
    if script.drop_after_bytes is not None:
        body = body[: script.drop_after_bytes]
    if script.split is None:
        return [body] if body else []
    if isinstance(script.split, int):
        size = max(1, script.split)
        cuts = list(range(size, len(body), size))
    else:
        cuts = sorted(c for c in script.split if 0 < c < len(body))
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


async def _wait_for_disconnect(request: web.BaseRequest) -> None:
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(DISCONNECT_POLL)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

_MODELS_BODY: Final = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 1686935002, "owned_by": "system"}
            for name in ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-5", "gpt-5-mini", "o4-mini")
        ],
    },
    option=orjson.OPT_INDENT_2,
)
_HEALTH_BODY: Final = b'{"status":"ok"}'


def _mask_key(key: str) -> str:
    """OpenAI's mask: first 8 and last 4 characters (``<not-a-r****key>`` in the corpus)."""
    return key[:8] + "****" + key[-4:] if len(key) > 12 else key[:3] + "****"


def _default_content_type(headers: dict[str, str], value: str) -> None:
    """Set Content-Type unless the script's extra headers already did (any spelling)."""
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = value


class MockUpstream:
    """The scripted fake upstream; ``app`` is a ready ``web.Application``.

    ``requests`` records every request in arrival order (``max_recorded`` keeps only the newest
    N, for long benchmark runs). ``enqueue`` queues scripts FIFO; each answered
    ``/v1/responses`` or ``/v1/chat/completions`` request takes the next one (requests refused
    for auth or bad JSON take none), and with the queue empty ``default_script`` answers.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model_echo: bool = True,
        max_recorded: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.model_echo = model_echo
        self.max_recorded = max_recorded
        self.requests: list[RecordedRequest] = []
        self.closed_streams = 0
        self._open_streams = 0
        self._queue: deque[Script] = deque()
        self._counter = itertools.count(1)
        self._expected_auth = f"Bearer {api_key}" if api_key is not None else None
        self.app = web.Application(
            client_max_size=64 * 1024 * 1024
        )  # gateway bodies can reach 32 MiB
        self.app[MOCK_KEY] = self
        self.app.router.add_post("/v1/responses", self._responses)
        self.app.router.add_post("/v1/responses/input_tokens", self._input_tokens)
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_get("/healthz", self._health)

    def enqueue(self, *scripts: Script) -> None:
        """Queue answers for the next requests, first in first out."""
        self._queue.extend(scripts)

    def open_streams(self) -> int:
        """Bodies being written right now by the shaped/stream writer."""
        return self._open_streams

    @property
    def pending(self) -> int:
        """Scripts still queued."""
        return len(self._queue)

    # -- plumbing --------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> tuple[bytes, Any]:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), body)
        )
        if self.max_recorded is not None and len(self.requests) > self.max_recorded:
            del self.requests[: len(self.requests) - self.max_recorded]
        return raw, body

    def _json(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> web.Response:
        hdrs = {
            "Content-Type": JSON_CONTENT_TYPE,
            "x-request-id": f"req_mock{next(self._counter):08d}",
        }
        if headers:
            hdrs.update(headers)
        return web.Response(status=status, body=body, headers=hdrs)

    def _refuse_auth(self, request: web.Request) -> web.Response | None:
        if self._expected_auth is None:
            return None
        got = request.headers.get("Authorization")
        if got == self._expected_auth:
            return None
        if not got:
            # What api.openai.com says when the header is missing entirely.
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username and password. You can obtain "
                "an API key from https://platform.openai.com/account/api-keys."
            )
            code: str | None = None
        else:
            presented = got.removeprefix("Bearer ").strip()
            message = (
                f"Incorrect API key provided: {_mask_key(presented)}. You can find your API key "
                "at https://platform.openai.com/account/api-keys."
            )
            code = "invalid_api_key"
        err = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
        return self._json(401, orjson.dumps(err, option=orjson.OPT_INDENT_2))

    # -- endpoints -------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        await self._receive(request)
        return web.Response(body=_HEALTH_BODY, content_type=JSON_CONTENT_TYPE)

    async def _models(self, request: web.Request) -> web.Response:
        await self._receive(request)
        return self._refuse_auth(request) or self._json(200, _MODELS_BODY)

    async def _input_tokens(self, request: web.Request) -> web.Response:
        raw, body = await self._receive(request)
        if (refused := self._refuse_auth(request)) is not None:
            return refused
        if not isinstance(body, dict):
            return self._bad_json()
        return self._json(
            200, b'{"object":"response.input_tokens","input_tokens":%d}' % (len(raw) // 4)
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "responses")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat")

    def _bad_json(self) -> web.Response:
        err = {
            "error": {
                "message": _BAD_JSON_MESSAGE,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        return self._json(400, orjson.dumps(err, option=orjson.OPT_INDENT_2))

    async def _answer(self, request: web.Request, api: Api) -> web.StreamResponse:
        raw, body = await self._receive(request)
        if (refused := self._refuse_auth(request)) is not None:
            return refused
        if not isinstance(body, dict):
            return self._bad_json()
        script = self._queue.popleft() if self._queue else default_script(api, body)
        model = body.get("model") if isinstance(body.get("model"), str) else "mock-model"
        assert isinstance(model, str)
        if not self.model_echo:
            model += SNAPSHOT_SUFFIX
        n = next(self._counter)
        turn = _Turn(
            api=api,
            body=body,
            raw_len=len(raw),
            model=model,
            key=f"mock{n:08d}",
            created=int(time.time()),
            stream=body.get("stream") is True,
        )
        headers = {"x-request-id": f"req_mock{n:08d}", **script.headers}

        if (
            script.status != 200
            or (not turn.stream and script.end == "error_event")
            or (api == "chat" and not turn.stream and script.end == "failed")
        ):
            status = script.status if script.status != 200 else 500
            if script.raw_body is not None:
                payload = script.raw_body
            else:
                err = script.error_body or error_envelope(status, script, model)
                payload = orjson.dumps(err, option=orjson.OPT_INDENT_2)
            _default_content_type(headers, script.content_type or JSON_CONTENT_TYPE)
            return await self._send(request, script, status, headers, [payload], stream=False)

        if script.raw_body is not None:
            frames = [script.raw_body]
        elif turn.stream:
            if api == "responses":
                frames = encode_responses_sse(responses_events(turn, script))
            else:
                frames = encode_chat_sse(turn, script)
        else:
            renderer = render_responses_json if api == "responses" else render_chat_json
            frames = [renderer(turn, script)]
        default_type = SSE_CONTENT_TYPE if turn.stream else JSON_CONTENT_TYPE
        _default_content_type(headers, script.content_type or default_type)
        return await self._send(request, script, 200, headers, frames, stream=turn.stream)

    async def _send(
        self,
        request: web.Request,
        script: Script,
        status: int,
        headers: dict[str, str],
        frames: list[bytes],
        *,
        stream: bool,
    ) -> web.StreamResponse:
        """Write ``frames``. Plain bodies take the cheap path; streams and shaped bodies go
        through the StreamResponse writer, which owns the open/closed stream counters."""
        if not stream and not script.shaped:
            if script.delay_before_headers > 0:
                await asyncio.sleep(script.delay_before_headers)
            return web.Response(status=status, body=b"".join(frames), headers=headers)

        self._open_streams += 1
        resp = web.StreamResponse(status=status, headers=headers)
        if not stream:
            # Declared length = the whole body, so a dropped or stalled body is detectably short.
            resp.content_length = sum(map(len, frames)) + (
                sum(f.count(b"\n") for f in frames) if script.crlf else 0
            )
        try:
            if script.delay_before_headers > 0:
                await asyncio.sleep(script.delay_before_headers)
            for index, chunk in enumerate(shape_writes(frames, script)):
                if index == 0:
                    # The status line goes out with the first bytes, never earlier.
                    await resp.prepare(request)
                elif script.delay_between_events > 0:
                    await asyncio.sleep(script.delay_between_events)
                await resp.write(chunk)
            if script.drop_after_bytes is not None:
                if not resp.prepared:
                    await resp.prepare(request)
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return resp
            if script.stall_after_events is not None:
                await _wait_for_disconnect(request)
                self.closed_streams += 1
                return resp
            await resp.write_eof()
        except ConnectionResetError:
            # The client left mid-body; aiohttp (handler_cancellation off) only tells us here.
            self.closed_streams += 1
        except asyncio.CancelledError:
            self.closed_streams += 1
            raise
        finally:
            self._open_streams -= 1
        return resp


MOCK_KEY: Final = web.AppKey("mock_upstream", MockUpstream)


def create_mock_app(mock: MockUpstream | None = None) -> web.Application:
    """The application of ``mock`` (a fresh default MockUpstream when None)."""
    return (mock or MockUpstream()).app


async def start_mock(
    host: str = "127.0.0.1", port: int = 0, *, mock: MockUpstream | None = None
) -> tuple[web.AppRunner, str]:
    """Serve ``mock`` (default: a fresh one keeping the last 100 requests) on host:port
    (0 = any free port). Returns the runner (call ``cleanup()``) and the base URL
    ``http://host:port/v1``."""
    app = create_mock_app(mock or MockUpstream(max_recorded=100))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, f"http://{host}:{bound}/v1"


def main(argv: list[str] | None = None) -> None:
    """``python -m gateway.mock_upstream [--host H] [--port P] [--api-key K]``."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.mock_upstream", description="OpenAI-compatible fake upstream."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    args = parser.parse_args(argv)
    mock = MockUpstream(api_key=args.api_key, max_recorded=100)

    def announce(_: object) -> None:
        print(f"mock upstream listening on http://{args.host}:{args.port}/v1", file=sys.stderr)

    web.run_app(mock.app, host=args.host, port=args.port, access_log=None, print=announce)


if __name__ == "__main__":
    main()
