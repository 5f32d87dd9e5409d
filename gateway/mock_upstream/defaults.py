"""The default (unscripted) behaviour: an answer derived from the request alone.

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
* a ``web_search`` tool offered (Responses)  → a hosted search with two results, then an
  answer citing both (``search_script``)
* ``mock:big=BYTES``                     → that many bytes of text in 32 KiB deltas (at most 64 MB;
  more than every socket buffer between a gateway and a client that stopped reading)
* ``mock:burst``                        → the answer as below, written in one write (a burst the
  gateway finds buffered all at once; without it a stream is written event by event)
* otherwise                             → text ``"echo: " + user text``

Answers longer (in words) than the request's ``max_output_tokens`` / ``max_completion_tokens`` /
``max_tokens`` are truncated and end ``incomplete`` / ``finish_reason: "length"``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

from .errors import CONTEXT_MESSAGE
from .scripts import (
    JSON,
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    WORD_RE,
    Api,
    Citation,
    FunctionCall,
    OutputItem,
    Reasoning,
    Refusal,
    Script,
    Text,
    WebSearch,
)

NO_USER_TEXT_ANSWER: Final = "Hello from the mock upstream."
TOOL_RESULT_PREVIEW: Final = 200
MAX_DEFAULT_DELAY: Final = 600.0

_CALL_RE: Final = re.compile(r"call tool ([A-Za-z0-9_.:-]+)")
_STATUS_RE: Final = re.compile(r"mock:status=(\d{3})")
_DELAY_RE: Final = re.compile(r"mock:delay=(\d+(?:\.\d+)?)")
_BIG_RE: Final = re.compile(r"mock:big=(\d+)")
MAX_BIG: Final = 64_000_000
BIG_CHUNK: Final = 32 * 1024
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
    words = WORD_RE.findall(text)
    if sum(1 for w in words if not w.isspace()) <= limit:
        return text, False
    return "".join(words[: max(limit, 0)]), True


def _error_script(status: int, text: str) -> Script:
    script = Script(status=status)
    if status == 429:
        script.headers["retry-after"] = "1"
    if status == 400 and "mock:context" in text:
        script.error_code = "context_length_exceeded"
        script.error_message = CONTEXT_MESSAGE
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
    if offers_search(api, body):
        return search_script(text)
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
    elif (big := _BIG_RE.search(text)) is not None:
        size = min(int(big.group(1)), MAX_BIG)
        chunks = ["x" * BIG_CHUNK] * (size // BIG_CHUNK) + ["x" * (size % BIG_CHUNK)]
        script = Script(items=[Text("".join(chunks), chunks=[c for c in chunks if c])])
    else:
        script = _text_script("echo: " + text, limit)
    if (delay := _DELAY_RE.search(text)) is not None:
        script.delay_before_headers = min(float(delay.group(1)), MAX_DEFAULT_DELAY)
    if "mock:burst" in text:
        script.split = MAX_BIG + (1 << 20)  # longer than any default answer: one piece
    return script


#: The query prefix of Claude Code's WebSearch sub-request.
_SEARCH_PREFIX: Final = "Perform a web search for the query: "


def offers_search(api: Api, body: JSON) -> bool:
    """A Responses request offering the hosted ``web_search`` tool."""
    return api == "responses" and _hosts(body, "web_search")


def _hosts(body: JSON, kind: str) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") == kind for t in tools
    )


def search_script(text: str) -> Script:
    """A hosted web search for ``text`` with two results, then an answer citing both (the
    default whenever the request offers the ``web_search`` tool). Deterministic: the urls are
    derived from the query."""
    query = text.strip().removeprefix(_SEARCH_PREFIX).strip() or "nothing"
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")[:40] or "q"
    sources = [
        (f"https://docs.example.com/{slug}", f"Docs: {query}"),
        (f"https://news.example.org/{slug}", f"News: {query}"),
    ]
    head = f"Here is what I found about {query}: "
    first = f"[the docs]({sources[0][0]})"
    second = f"[the news]({sources[1][0]})"
    answer = f"{head}{first} and {second}."
    citations = [
        Citation(len(head), len(head) + len(first), *sources[0]),
        Citation(len(answer) - 1 - len(second), len(answer) - 1, *sources[1]),
    ]
    return Script(items=[WebSearch(query, sources), Text(answer, citations=citations)])


def _text_script(text: str, limit: int | None) -> Script:
    text, truncated = _truncate_words(text, limit)
    return Script(items=[Text(text)], end="incomplete" if truncated else "completed")
