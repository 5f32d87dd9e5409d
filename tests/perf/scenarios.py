"""Benchmark payloads: each scenario as the Anthropic request the gateway gets and the
Responses request the mock gets when it is called directly.

Every answer comes from the mock upstream's default (unscripted) behaviour, so the mock needs
no per-request scripting (see ``gateway/mock_upstream/defaults.py``, ``default_script``):

* a user text is echoed as ``"echo: " + text``, one text delta per word: a user text of
  ``n - 1`` words streams as ``n`` deltas;
* ``call tool NAME {json}`` with ``NAME`` a declared tool answers with a function call whose
  arguments stream in 8-character fragments: ``8 * n`` characters of JSON give ``n`` fragments;
* a conversation ending in a tool result (the Claude-Code-shaped body) is answered with text.

The direct request is the gateway's own translation of the Anthropic request
(``to_responses`` with the route the gateway resolves), so the mock sees the same bytes from
the benchmark as from the gateway, and "direct" differs from "through the gateway" only by
the gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from gateway.anthropic.signatures import Signer
from gateway.config import load_settings
from gateway.dialects.responses.request import to_responses
from gateway.routing import Router
from gateway.schemas.anthropic import REQUEST_DECODER, MessagesRequest
from tests.fixtures.claude_code import claude_code_request

__all__ = [
    "ANTHROPIC_HEADERS",
    "SCENARIOS",
    "Scenario",
    "build_scenarios",
    "claude_code_body",
    "small_body",
    "text_stream_body",
    "tool_stream_body",
    "translate_for_upstream",
]

MODEL: Final = "claude-sonnet-5-5"
MAX_TOKENS: Final = 4096
#: the mock splits function-call arguments into pieces of this many characters
MOCK_ARG_PIECE: Final = 8
TOOL_NAME: Final = "write_file"
ANTHROPIC_HEADERS: Final[Mapping[str, str]] = {
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
}

_SENTENCE: Final = (
    "the gateway forwards each delta as soon as it arrives so the client sees tokens "
    "without delay while the upstream keeps generating the rest of the answer"
)
_WORDS: Final = tuple(_SENTENCE.split())

DeltaKind = Literal["", "text_delta", "input_json_delta"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row group of the benchmark.

    ``deltas`` is the number of content deltas the mock streams (and the gateway must relay
    one for one) for a stream scenario, 0 for a non-streaming one.
    """

    name: str
    title: str
    stream: bool
    anthropic: bytes
    responses: bytes
    deltas: int = 0
    delta_kind: DeltaKind = ""


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def small_body() -> dict[str, Any]:
    """A short, non-streaming chat turn: the "hello" every peer benchmarks."""
    return {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": [_user("Write one sentence about the sea.")],
    }


def claude_code_body() -> dict[str, Any]:
    """The ~150 KB Claude-Code-shaped request (20 KB system, 22 tools, 30 turns), not streamed."""
    body = claude_code_request(turns=30, tools=22, system_kb=20)
    body["stream"] = False
    return body


def prose(words: int) -> str:
    """``words`` space-separated words (deterministic)."""
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(words))


def text_stream_body(deltas: int, *, burst: bool = False) -> dict[str, Any]:
    """A streaming request the mock answers with exactly ``deltas`` text deltas.

    The echo is ``"echo: " + text`` cut into words: ``"echo:"`` plus one delta per word.
    ``burst``: the mock writes the whole stream at once (``mock:burst``, one of the words), so
    the gateway reads it in a few large chunks rather than event by event.
    """
    if deltas < 3:
        raise ValueError("deltas must be >= 3")
    text = prose(deltas - 2) + " mock:burst" if burst else prose(deltas - 1)
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": True, "messages": [_user(text)]}


def tool_arguments(fragments: int) -> str:
    """A JSON object of exactly ``fragments * MOCK_ARG_PIECE`` characters."""
    head = '{"path":"/home/dev/projects/orbit/NOTES.md","content":"'
    tail = '"}'
    size = fragments * MOCK_ARG_PIECE - len(head) - len(tail)
    if size < 0:
        raise ValueError(f"fragments must be >= {(len(head) + len(tail)) // MOCK_ARG_PIECE + 1}")
    filler = (prose(size // 4 + 1) + " ")[:size]
    text = head + filler + tail
    orjson.loads(text)  # the mock only calls the tool when the arguments are valid JSON
    return text


def tool_stream_body(fragments: int) -> dict[str, Any]:
    """A streaming request the mock answers with one ``write_file`` call whose arguments
    arrive in exactly ``fragments`` deltas."""
    tool = {
        "name": TOOL_NAME,
        "description": "Write a file to the local filesystem, replacing any existing file.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Absolute path of the file."},
                "content": {"type": "string", "description": "The full new content."},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    }
    return {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "tools": [tool],
        "messages": [_user(f"call tool {TOOL_NAME} {tool_arguments(fragments)}")],
    }


def translate_for_upstream(
    body: bytes, upstream_base_url: str, signing_key: bytes, env: Mapping[str, str] | None = None
) -> bytes:
    """The bytes the gateway would POST to ``{base}/responses`` for the Anthropic ``body``."""
    env = {"OPENAI_BASE_URL": upstream_base_url, "OPENAI_API_KEY": "sk-bench", **(env or {})}
    router = Router(load_settings(None, env), env)
    req: MessagesRequest = REQUEST_DECODER.decode(body)
    route = router.resolve(req.model)
    payload = to_responses(req, route, Signer(signing_key), stream=req.stream)
    return orjson.dumps(payload)


#: name → (title, builder, stream deltas, delta kind)
SCENARIOS: Final[dict[str, tuple[str, Callable[[], dict[str, Any]], int, DeltaKind]]] = {
    "small": ("small request, non-streaming", small_body, 0, ""),
    "cc150k": ("Claude-Code-shaped ~150 KB request, non-streaming", claude_code_body, 0, ""),
    "text200": ("stream, 200 text deltas", lambda: text_stream_body(200), 200, "text_delta"),
    "tool100": (
        "stream, tool call with arguments in 100 fragments",
        lambda: tool_stream_body(100),
        100,
        "input_json_delta",
    ),
    "text50": ("stream, 50 text deltas", lambda: text_stream_body(50), 50, "text_delta"),
    "text50burst": (
        "stream, 50 text deltas the mock writes at once",
        lambda: text_stream_body(50, burst=True),
        50,
        "text_delta",
    ),
}


def build_scenarios(names: list[str], upstream_base_url: str, signing_key: bytes) -> list[Scenario]:
    """Build the named scenarios (both request bodies of each)."""
    out: list[Scenario] = []
    for name in names:
        title, builder, deltas, kind = SCENARIOS[name]
        anthropic = orjson.dumps(builder())
        responses = translate_for_upstream(anthropic, upstream_base_url, signing_key)
        stream = deltas > 0
        out.append(Scenario(name, title, stream, anthropic, responses, deltas, kind))
    return out
