"""Micro-benchmarks of the gateway's pure core, in-process, no sockets on the timed path.

* stream translation: upstream Responses events → Anthropic frames per second, for text
  deltas and for tool-argument deltas (``ResponsesStreamTranslator.feed_many`` alone, events
  decoded beforehand), and SSE decoding + translation of the raw stream cut into 4 KiB
  chunks (what the relay does per upstream read); the same for a Chat Completions stream of
  text deltas (``ChatStreamTranslator``);
* request path: decoding the ~150 KB Claude-Code-shaped body with ``REQUEST_DECODER``,
  translating it with ``to_responses`` and encoding the payload with orjson, in µs; and the
  way back for its non-streaming answer (``from_responses`` + ``RESPONSE_ENCODER``).

The upstream streams are the bytes the built-in mock sends for the benchmark's scenarios
(captured once from an in-process mock), so the micro and the end-to-end figures describe the
same traffic. Run alone: ``python -m tests.perf.micro [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
import orjson

from gateway.anthropic.signatures import Signer
from gateway.anthropic.tools import tool_name_map
from gateway.config import load_settings
from gateway.dialects.base import StreamTranslator
from gateway.dialects.chat.request import to_chat
from gateway.dialects.chat.stream import ChatStreamTranslator
from gateway.dialects.responses.request import to_responses
from gateway.dialects.responses.response import from_responses
from gateway.dialects.responses.stream import ResponsesStreamTranslator
from gateway.mock_upstream import start_mock
from gateway.routing import Route, Router
from gateway.schemas.anthropic import REQUEST_DECODER, MessagesRequest
from gateway.schemas.anthropic_out import RESPONSE_ENCODER
from gateway.sse import SSEDecoder, SSEEvent
from tests.perf.scenarios import Scenario, build_scenarios

__all__ = ["MicroRow", "run_micro"]

SIGNING_KEY: Final = b"bench-micro-signing-key-0123456789"
CHUNK: Final = 4096
PLACEHOLDER_BASE: Final = "http://127.0.0.1:9/v1"


@dataclass(frozen=True, slots=True)
class MicroRow:
    """One measurement: ``value`` in ``unit``; ``per_op_us`` is the µs per counted operation."""

    key: str
    what: str
    value: float
    unit: str
    per_op_us: float
    note: str = ""


def time_per_call(fn: Callable[[], object], budget: float, repeats: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` runs sharing ``budget`` seconds.

    Loops are sized so each run lasts about ``budget / repeats``; the median resists the
    other tenants of a shared machine better than the mean, and the GC stays on, as in the
    gateway.
    """
    fn()  # warm caches (memoised schemas, interned strings)
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(budget / repeats / once))
    runs: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        runs.append((time.perf_counter() - t0) / loops)
    return statistics.median(runs)


async def _capture_async(bodies: list[bytes], path: str = "/responses") -> list[bytes]:
    runner, base = await start_mock("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            out: list[bytes] = []
            for body in bodies:
                async with session.post(
                    base + path,
                    data=body,
                    headers={"content-type": "application/json"},
                ) as resp:
                    resp.raise_for_status()
                    out.append(await resp.read())
            return out
    finally:
        await runner.cleanup()


def capture_upstream(scenarios: list[Scenario]) -> dict[str, bytes]:
    """The mock's answer body (an SSE stream or a JSON response) to each scenario's request."""
    bodies = asyncio.run(_capture_async([s.responses for s in scenarios]))
    return {s.name: body for s, body in zip(scenarios, bodies, strict=True)}


def capture_chat(sc: Scenario) -> bytes:
    """The mock's Chat Completions answer to ``sc``'s request, translated by the chat dialect."""
    req: MessagesRequest = REQUEST_DECODER.decode(sc.anthropic)
    payload = to_chat(req, _route(req), Signer(SIGNING_KEY), stream=req.stream)
    return asyncio.run(_capture_async([orjson.dumps(payload)], "/chat/completions"))[0]


def _route(req: MessagesRequest) -> Route:
    env = {"OPENAI_BASE_URL": PLACEHOLDER_BASE, "OPENAI_API_KEY": "sk-bench"}
    return Router(load_settings(None, env), env).resolve(req.model)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def _decode_all(stream: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return decoder.feed(stream) + decoder.finish()


def _translator(
    req: MessagesRequest, signer: Signer, kind: type[StreamTranslator] = ResponsesStreamTranslator
) -> StreamTranslator:
    return kind(
        model=req.model,
        signer=signer,
        thinking=False,
        request_id="req_bench",
        stop_sequences=req.stop_sequences,
        tool_names=tool_name_map(req),
        message_id="msg_bench",
    )


def _stream_rows(
    sc: Scenario,
    stream: bytes,
    signer: Signer,
    budget: float,
    label: str,
    kind: type[StreamTranslator] = ResponsesStreamTranslator,
    key: str = "",
) -> list[MicroRow]:
    req: MessagesRequest = REQUEST_DECODER.decode(sc.anthropic)
    key = key or sc.name
    events = _decode_all(stream)
    n = len(events)

    def translate() -> None:
        tr = _translator(req, signer, kind)
        tr.feed_many(events)
        if not tr.done:
            raise AssertionError("stream did not complete")

    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]

    def decode_and_translate() -> None:
        tr = _translator(req, signer, kind)
        decoder = SSEDecoder()
        for chunk in chunks:  # as the relay does each upstream read
            tr.feed_many(decoder.feed(chunk))
        tr.feed_many(decoder.finish())

    def decode_only() -> None:
        decoder = SSEDecoder()
        for chunk in chunks:
            decoder.feed(chunk)
        decoder.finish()

    t_tr = time_per_call(translate, budget)
    t_both = time_per_call(decode_and_translate, budget)
    t_dec = time_per_call(decode_only, budget)
    size = f"{n} events, {_size(len(stream))}"
    return [
        MicroRow(
            f"translate_{key}",
            f"translator alone, {label} ({size})",
            n / t_tr,
            "events/s",
            t_tr / n * 1e6,
        ),
        MicroRow(
            f"decode_translate_{key}",
            f"SSEDecoder + translator, {label}, 4 KiB chunks",
            n / t_both,
            "events/s",
            t_both / n * 1e6,
            f"{len(stream) / t_both / 1e6:.0f} MB/s",
        ),
        MicroRow(
            f"decode_{key}",
            f"SSEDecoder alone, {label}, 4 KiB chunks",
            n / t_dec,
            "events/s",
            t_dec / n * 1e6,
            f"{len(stream) / t_dec / 1e6:.0f} MB/s",
        ),
    ]


def _request_rows(
    sc: Scenario, answer: bytes, signer: Signer, budget: float, label: str
) -> list[MicroRow]:
    body = sc.anthropic
    req: MessagesRequest = REQUEST_DECODER.decode(body)
    route = _route(req)
    payload = to_responses(req, route, signer, stream=req.stream)

    def decode() -> None:
        REQUEST_DECODER.decode(body)

    def translate() -> None:
        to_responses(req, route, signer, stream=req.stream)

    def encode() -> None:
        orjson.dumps(payload)

    def whole() -> None:
        r: MessagesRequest = REQUEST_DECODER.decode(body)
        orjson.dumps(to_responses(r, route, signer, stream=r.stream))

    thinking = req.thinking is not None and req.thinking.type in ("enabled", "adaptive")

    def back() -> None:
        message = from_responses(
            answer,
            model=req.model,
            signer=signer,
            thinking=thinking,
            stop_sequences=req.stop_sequences,
            tool_names=tool_name_map(req),
        )
        RESPONSE_ENCODER.encode(message)

    rows = [
        (f"req_decode_{sc.name}", f"{label}: REQUEST_DECODER.decode ({_size(len(body))})", decode),
        (f"req_translate_{sc.name}", f"{label}: to_responses", translate),
        (f"req_encode_{sc.name}", f"{label}: orjson.dumps of the payload", encode),
        (f"req_total_{sc.name}", f"{label}: decode + translate + encode", whole),
        (
            f"resp_{sc.name}",
            f"{label}: its answer, from_responses + encode ({_size(len(answer))})",
            back,
        ),
    ]
    out: list[MicroRow] = []
    for key, what, fn in rows:
        seconds = time_per_call(fn, budget)
        out.append(MicroRow(key, what, seconds * 1e6, "µs", seconds * 1e6))
    return out


def run_micro(quick: bool = False) -> list[MicroRow]:
    """All micro-benchmarks; about 15 s (3 s with ``quick``)."""
    budget = 0.1 if quick else 0.6
    scenarios = build_scenarios(
        ["text200", "tool100", "cc150k", "small"], PLACEHOLDER_BASE, SIGNING_KEY
    )
    by_name = {s.name: s for s in scenarios}
    answers = capture_upstream(scenarios)
    signer = Signer(SIGNING_KEY)
    rows: list[MicroRow] = []
    rows += _stream_rows(by_name["text200"], answers["text200"], signer, budget, "text deltas")
    rows += _stream_rows(by_name["tool100"], answers["tool100"], signer, budget, "tool arguments")
    chat = capture_chat(by_name["text200"])
    rows += _stream_rows(
        by_name["text200"],
        chat,
        signer,
        budget,
        "Chat text deltas",
        ChatStreamTranslator,
        "chat200",
    )
    rows += _request_rows(by_name["cc150k"], answers["cc150k"], signer, budget, "150 KB request")
    rows += _request_rows(by_name["small"], answers["small"], signer, budget, "small request")
    return rows


def render(rows: list[MicroRow]) -> str:
    lines = [
        "| micro-benchmark (one core, in-process) | result | per op | note |",
        "|---|---:|---:|---|",
    ]
    for r in rows:
        value = f"{r.value:,.0f} {r.unit}" if r.unit != "µs" else f"{r.value:,.1f} µs"
        per_op = f"{r.per_op_us:.2f} µs" if r.unit != "µs" else ""
        lines.append(f"| {r.what} | {value} | {per_op} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.micro", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter timing budget")
    args = parser.parse_args(argv)
    print(render(run_micro(args.quick)))


if __name__ == "__main__":
    main()
