"""The script types: what one answer of the mock upstream should be, item by item and byte by
byte (``MockUpstream.enqueue(Script(...))``), plus the request record and shared aliases."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

Api: TypeAlias = Literal["responses", "chat"]
JSON: TypeAlias = dict[str, Any]

SSE_CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE: Final = "application/json"
DEFAULT_ENCRYPTED: Final = "gAAAAB-mock"
# A word with its leading whitespace: default delta chunks, and the unit of max_*_tokens.
WORD_RE: Final = re.compile(r"\s*\S+|\s+")


@dataclass
class RecordedRequest:
    """One request as the mock received it; ``body`` is parsed JSON or None."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Citation:
    """A ``url_citation`` annotation of a Text: characters ``start``..``end`` of its text."""

    start: int
    end: int
    url: str
    title: str


@dataclass
class Text:
    """An assistant text output. ``chunks`` (should join to ``text``) are the deltas.

    Default chunks: words with their leading whitespace (``"Hi"``, ``" there"``), like tokens.
    ``citations`` become ``url_citation`` annotations (streamed after the text, as OpenAI
    does: ``response.output_text.annotation.added``).
    """

    text: str
    chunks: list[str] | None = None
    citations: list[Citation] | None = None


@dataclass
class WebSearch:
    """A hosted ``web_search_call`` (Responses only): ``sources`` are (url, title) pairs,
    sent as the action's sources (the title only when ``titles``, which OpenAI's type lacks);
    ``action`` ``open_page`` visits ``sources[0]``; ``status`` ``failed`` is a failed search."""

    query: str
    sources: list[tuple[str, str]] = field(default_factory=list)
    status: Literal["completed", "failed"] = "completed"
    action: Literal["search", "open_page"] = "search"
    titles: bool = False


@dataclass
class CodeRun:
    """A hosted ``code_interpreter_call`` (Responses only): its code and the logs it printed."""

    code: str
    logs: str = ""
    status: Literal["completed", "failed"] = "completed"


@dataclass
class McpCall:
    """A hosted ``mcp_call`` (Responses only)."""

    server: str
    name: str
    arguments: str
    output: str | None = None
    error: str | None = None


@dataclass
class Compaction:
    """A ``compaction`` item (Responses only, issue 15): the upstream compacted the context;
    ``encrypted_content`` is opaque."""

    encrypted_content: str = "cmp-opaque-0"


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


HostedCall: TypeAlias = WebSearch | CodeRun | McpCall | Compaction
OutputItem: TypeAlias = Text | Refusal | FunctionCall | Reasoning | HostedCall
HOSTED: Final = (WebSearch, CodeRun, McpCall, Compaction)
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
    #: every chunk carries the usage so far (vLLM ``continuous_usage_stats``)
    chat_usage_every_chunk: bool = False
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


def words(text: str) -> list[str]:
    """``text`` cut into words with their leading whitespace (``"Hi"``, ``" there"``)."""
    return WORD_RE.findall(text)
