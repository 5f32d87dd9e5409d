"""Client strings do not pin memory or bloat logs (issue 10 items 6, 7): caches keyed by client
text are bounded by bytes, and every client-supplied field in a log line or metric label is cut
to a fixed length."""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.logs import MAX_FIELD_CHARS
from gateway.mock_upstream import Script, Text
from tests.conftest import Upstream
from tests.test_faults import body, send


def retained_after(run: Any) -> Any:
    async def measure() -> int:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await run()
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    return measure


async def test_long_model_names_are_not_cached(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.max_recorded = 1  # the mock keeps what it was sent; only the gateway counts

    async def run() -> None:
        for i in range(12):
            upstream.mock.enqueue(Script(items=[Text("ok")]))
            payload = body()
            payload["model"] = f"claude-{i}-" + "m" * (1024 * 1024)
            status, _, _, _ = await send(gateway, payload)
            assert status == 200

    kept = await retained_after(run)()
    assert kept < 4 * 1024 * 1024, f"{kept / 2**20:.1f} MiB kept after 12 MiB of model names"


async def test_large_tool_schemas_and_signatures_are_bounded_by_bytes(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.max_recorded = 1

    async def run() -> None:
        for i in range(12):
            upstream.mock.enqueue(Script(items=[Text("ok")]))
            payload = body()
            props = {
                f"p{i}_{j}": {"type": "string", "description": "d" * 1000} for j in range(1000)
            }
            payload["tools"] = [
                {
                    "name": "t" * 200 + str(i),
                    "description": "tool",
                    "input_schema": {"type": "object", "properties": props},
                }
            ]
            payload["messages"] = [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "t", "signature": f"gw1.{i}" + "s" * 2**20}
                    ],
                },
                {"role": "user", "content": "again"},
            ]
            status, _, raw, _ = await send(gateway, payload)
            assert status == 200, raw

    kept = await retained_after(run)()
    assert kept < 8 * 1024 * 1024, f"{kept / 2**20:.1f} MiB kept after ~36 MiB of schemas"


async def test_log_lines_cut_client_fields(
    gateway: TestServer, upstream: Upstream, log_lines: list[str]
) -> None:
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    payload = body()
    payload["model"] = "claude-" + "q" * 100_000
    status, _, _, _ = await send(gateway, payload, path="/v1/messages?" + "z" * 5000)
    assert status == 200
    status, _, _, _ = await send(gateway, {}, path="/v1/" + "p" * 5000)
    assert status == 404
    # the gateway's own lines (the test server's aiohttp access log is off in production)
    ours = [line for line in log_lines if line.startswith("{")]
    assert len(ours) == 4
    for line in ours:
        assert len(line) < 2000, line[:200]
        doc = json.loads(line)
        for value in doc.values():
            if isinstance(value, str):
                assert len(value) <= MAX_FIELD_CHARS + 1
    ends = [json.loads(x) for x in ours if '"request_end"' in x]
    assert ends[0]["model"].startswith("claude-qqq")
    assert ends[0]["model"].endswith("…")


async def test_metric_labels_never_hold_long_client_text(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    payload = body()
    payload["model"] = "claude-" + "L" * 10_000
    await send(gateway, payload)
    async with aiohttp.ClientSession() as s, s.get(gateway.make_url("/metrics")) as r:
        text = await r.text()
    assert "LLLLLLLLLL" not in text
    assert max(len(line) for line in text.splitlines()) < 1000
