"""The aiohttp server (``MockUpstream``), the helpers that serve it, and the command line."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections import deque
from typing import Any, Final

import orjson
from aiohttp import web

from .answer import plain_answer
from .batches import MockBatch
from .classifier import is_classifier_request, verdict_script
from .defaults import default_script, offers_search
from .errors import BAD_JSON_MESSAGE, invalid_request
from .files_api import FilesApi, MockFile, Outcome
from .render_chat import encode_chat_sse
from .render_common import Turn
from .render_responses import encode_responses_sse, responses_events
from .scripts import JSON, JSON_CONTENT_TYPE, SSE_CONTENT_TYPE, Api, RecordedRequest, Script
from .shaping import shape_writes, wait_for_disconnect

# OpenAI answers unknown snapshots with a dated model name; model_echo=False imitates that.
SNAPSHOT_SUFFIX: Final = "-2025-04-14"

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

    OpenAI's Files and Batch APIs (``files_api``): uploads live in ``files``, batches in
    ``batches``; a batch answers its lines from the same queue (``answer_json``) as it is
    created, or, with ``batch_auto_complete`` off, stays ``in_progress`` until
    ``finish_batch``.
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
        #: seconds ``/v1/responses/input_tokens`` waits before answering (coalescing tests)
        self.input_tokens_delay = 0.0
        #: safety-classifier requests (issue 13): scripted answers first, else verdicts by rule,
        #: with these per-tool-name overrides (True = flagged)
        self.classifier_queue: deque[Script] = deque()
        self.verdicts: dict[str, bool] = {}
        #: None: requests offering a hosted ``web_search`` share the main queue. A deque: they
        #: take from it instead (the default search when it is empty), so a client's own search
        #: sub-requests (Claude Code's WebSearch tool) leave its scripted turns in order
        self.search_queue: deque[Script] | None = None
        #: the Files and Batch APIs' state (see ``files_api``)
        self.files: dict[str, MockFile] = {}
        self.batches: dict[str, MockBatch] = {}
        self.batch_auto_complete = True
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
        #: requests per path, for tests that drive the mock as a process (the fleet test)
        self.counts: dict[str, int] = {}
        self.app.router.add_get("/__mock/counts", self._counts)
        # an OTLP/HTTP traces sink, for measuring the gateway with tracing on (the benchmark)
        self.app.router.add_post("/v1/traces", self._traces)
        self._files_api = FilesApi(self)
        self.app.router.add_routes(self._files_api.routes())

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

    def finish_batch(
        self, batch_id: str, *, outcome: Outcome = "completed", done: int | None = None
    ) -> MockBatch:
        """End an ``in_progress`` batch: ``completed`` answers every line; ``expired`` answers
        the first ``done`` (default 0) and fails the rest with ``batch_expired``."""
        return self._files_api.finish(batch_id, outcome=outcome, done=done)

    def answer_json(self, api: Api, body: JSON) -> tuple[int, bytes]:
        """Status and body the mock answers ``body`` with as a non-streaming ``api`` request:
        the next script, exactly as for a live request (shaping and delays aside)."""
        body = {key: value for key, value in body.items() if key != "stream"}
        script = self._pick_script(api, body)
        return plain_answer(self._turn(api, body, len(orjson.dumps(body))), script)

    # -- plumbing --------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> tuple[bytes, Any]:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self._record(request, body)
        return raw, body

    def _record(self, request: web.Request, body: Any) -> None:
        self.counts[request.path] = self.counts.get(request.path, 0) + 1
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), body)
        )
        if self.max_recorded is not None and len(self.requests) > self.max_recorded:
            del self.requests[: len(self.requests) - self.max_recorded]

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

    async def _traces(self, request: web.Request) -> web.Response:
        await request.read()
        self.counts["/v1/traces"] = self.counts.get("/v1/traces", 0) + 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def _counts(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.counts), content_type=JSON_CONTENT_TYPE)

    async def _models(self, request: web.Request) -> web.Response:
        await self._receive(request)
        return self._refuse_auth(request) or self._json(200, _MODELS_BODY)

    async def _input_tokens(self, request: web.Request) -> web.Response:
        raw, body = await self._receive(request)
        if (refused := self._refuse_auth(request)) is not None:
            return refused
        if not isinstance(body, dict):
            return self._bad_json()
        if self.input_tokens_delay:
            await asyncio.sleep(self.input_tokens_delay)
        return self._json(
            200, b'{"object":"response.input_tokens","input_tokens":%d}' % (len(raw) // 4)
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "responses")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat")

    def _bad_json(self) -> web.Response:
        err = invalid_request(BAD_JSON_MESSAGE)
        return self._json(400, orjson.dumps(err, option=orjson.OPT_INDENT_2))

    def _pick_script(self, api: Api, body: JSON) -> Script:
        if is_classifier_request(api, body):
            if self.classifier_queue:
                return self.classifier_queue.popleft()
            return verdict_script(api, body, self.verdicts)
        if self.search_queue is not None and offers_search(api, body):
            queue = self.search_queue
            return queue.popleft() if queue else default_script(api, body)
        return self._queue.popleft() if self._queue else default_script(api, body)

    def _turn(self, api: Api, body: JSON, raw_len: int, stream: bool = False) -> Turn:
        model = body.get("model") if isinstance(body.get("model"), str) else "mock-model"
        assert isinstance(model, str)
        if not self.model_echo:
            model += SNAPSHOT_SUFFIX
        key = f"mock{next(self._counter):08d}"
        return Turn(api, body, raw_len, model, key, int(time.time()), stream)

    async def _answer(self, request: web.Request, api: Api) -> web.StreamResponse:
        raw, body = await self._receive(request)
        if (refused := self._refuse_auth(request)) is not None:
            return refused
        if not isinstance(body, dict):
            return self._bad_json()
        script = self._pick_script(api, body)
        turn = self._turn(api, body, len(raw), stream=body.get("stream") is True)
        headers = {"x-request-id": "req_" + turn.key, **script.headers}
        if turn.stream and script.status == 200:
            if script.raw_body is not None:
                frames = [script.raw_body]
            elif api == "responses":
                frames = encode_responses_sse(responses_events(turn, script))
            else:
                frames = encode_chat_sse(turn, script)
            _default_content_type(headers, script.content_type or SSE_CONTENT_TYPE)
            return await self._send(request, script, 200, headers, frames, stream=True)
        status, payload = plain_answer(turn, script)
        _default_content_type(headers, script.content_type or JSON_CONTENT_TYPE)
        return await self._send(request, script, status, headers, [payload], stream=False)

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
                await wait_for_disconnect(request)
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
    parser.add_argument(
        "--input-tokens-delay",
        type=float,
        default=0.0,
        help="seconds /v1/responses/input_tokens waits before answering",
    )
    args = parser.parse_args(argv)
    mock = MockUpstream(api_key=args.api_key, max_recorded=100)
    mock.input_tokens_delay = args.input_tokens_delay

    def announce(_: object) -> None:
        print(f"mock upstream listening on http://{args.host}:{args.port}/v1", file=sys.stderr)

    web.run_app(mock.app, host=args.host, port=args.port, access_log=None, print=announce)
