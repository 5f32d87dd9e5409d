"""Locust load test for a running gateway: Claude-Code-shaped traffic, streaming and not.

    locust -f tests/perf/locustfile.py --host http://127.0.0.1:8082          # web UI
    locust -f tests/perf/locustfile.py --host http://127.0.0.1:8082 \\
        --headless -u 50 -r 10 -t 1m                                          # headless
    make locust                                                               # 5 s smoke run

Against a real upstream every request costs tokens: point the gateway at its mock
(`make run` without OPENAI_API_KEY, or `python -m gateway --mock`) unless you mean it.
Set GATEWAY_API_KEY when the gateway requires a key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import orjson
from locust import FastHttpUser, between, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.fixtures.claude_code import claude_code_request

MODEL = os.environ.get("LOCUST_MODEL", "claude-sonnet-5-5")
HEADERS = {
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
    "x-api-key": os.environ.get("GATEWAY_API_KEY", "locust"),
}


def _body(doc: Mapping[str, object], stream: bool) -> bytes:
    return orjson.dumps({**doc, "model": MODEL, "stream": stream, "max_tokens": 1024})


SMALL = {"messages": [{"role": "user", "content": " ".join(["word"] * 50)}]}
CLAUDE_CODE = claude_code_request(turns=30, tools=22, system_kb=20)
PAYLOADS = {
    ("small", False): _body(SMALL, False),
    ("small", True): _body(SMALL, True),
    ("claude_code", False): _body(CLAUDE_CODE, False),
    ("claude_code", True): _body(CLAUDE_CODE, True),
}


class ClaudeCodeUser(FastHttpUser):
    """One editor session: mostly streamed turns, some large, some non-streaming."""

    wait_time = between(0.1, 0.5)

    def _post(self, shape: str, stream: bool) -> None:
        name = f"/v1/messages [{shape}, {'stream' if stream else 'json'}]"
        with self.client.post(
            "/v1/messages",
            # bytes: locust documents "String/bytes" for data but annotates only str | dict.
            data=PAYLOADS[(shape, stream)],  # type: ignore[arg-type]
            headers=HEADERS,
            name=name,
            catch_response=True,
        ) as resp:
            body = resp.content or b""
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
            elif stream and not body.endswith(
                b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
            ):
                resp.failure("stream did not end with message_stop")
            elif not stream and b'"type":"message"' not in body:
                resp.failure("not an Anthropic Message")

    @task(6)
    def stream_small(self) -> None:
        self._post("small", True)

    @task(2)
    def stream_claude_code(self) -> None:
        self._post("claude_code", True)

    @task(1)
    def json_small(self) -> None:
        self._post("small", False)

    @task(1)
    def json_claude_code(self) -> None:
        self._post("claude_code", False)
