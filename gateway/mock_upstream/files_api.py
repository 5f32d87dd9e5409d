"""OpenAI's Files API and Batch API on the mock upstream (state on ``MockUpstream``).

Files: ``POST /v1/files`` (multipart: ``file``, ``purpose``, ``expires_after[anchor|seconds]``),
``GET /v1/files``, ``GET``/``DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``.
Batches: ``POST /v1/batches``, ``GET /v1/batches``, ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``. A batch validates its input file as OpenAI does (a failed
batch lists the line errors) and answers each line as the mock answers a non-streaming request
with that body (``Host.answer_json``): status 200 → an output-file line, else an error-file line.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import orjson
from aiohttp import BodyPartReader, web

from .batches import BATCH_API, MockBatch, answer_lines, metadata_ok, parse_input
from .errors import BAD_JSON_MESSAGE, invalid_request
from .scripts import JSON, Api

MAX_UPLOAD_BYTES: Final = 64 * 1024 * 1024
PURPOSES: Final = ("batch", "user_data", "assistants", "vision", "fine-tune", "evals")
BATCH_FILE_TTL: Final = 30 * 86400
MIN_TTL: Final = 3600
MAX_TTL: Final = 2592000
_READ_CHUNK: Final = 64 * 1024
_UNFINISHED: Final = ("validating", "in_progress")


@dataclass
class MockFile:
    """One stored file (uploads, and batch results of purpose ``batch_output``)."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None = None

    def object(self) -> JSON:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.expires_at,
            "status_details": None,
        }


class Host(Protocol):
    """What these endpoints use of ``MockUpstream``."""

    files: dict[str, MockFile]
    batches: dict[str, MockBatch]
    batch_auto_complete: bool

    def answer_json(self, api: Api, body: JSON) -> tuple[int, bytes]: ...

    async def _receive(self, request: web.Request) -> tuple[bytes, Any]: ...

    def _record(self, request: web.Request, body: Any) -> None: ...

    def _refuse_auth(self, request: web.Request) -> web.Response | None: ...

    def _json(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> web.Response: ...


class _Refused(Exception):
    """Answer the request with ``response`` (an error)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


Handler = Callable[[web.Request], Awaitable[web.Response]]
Outcome = Literal["completed", "expired"]


def _dump(obj: JSON) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)


class FilesApi:
    """The route handlers; ids count up from 1 per kind, so they are deterministic."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._file_serial = itertools.count(1)
        self._batch_serial = itertools.count(1)
        self._line_serial = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        def guarded(handler: Handler) -> Handler:
            async def run(request: web.Request) -> web.Response:
                try:
                    return await handler(request)
                except _Refused as refused:
                    return refused.response

            return run

        return [
            web.post("/v1/files", guarded(self.upload)),
            web.get("/v1/files", guarded(self.list_files)),
            web.get("/v1/files/{id}", guarded(self.get_file)),
            web.get("/v1/files/{id}/content", guarded(self.content)),
            web.delete("/v1/files/{id}", guarded(self.delete_file)),
            web.post("/v1/batches", guarded(self.create_batch)),
            web.get("/v1/batches", guarded(self.list_batches)),
            web.get("/v1/batches/{id}", guarded(self.get_batch)),
            web.post("/v1/batches/{id}/cancel", guarded(self.cancel_batch)),
        ]

    # -- helpers ---------------------------------------------------------------------------

    def _fail(self, status: int, message: str, param: str | None = None) -> _Refused:
        return _Refused(self.host._json(status, _dump(invalid_request(message, param))))

    async def _begin(self, request: web.Request) -> Any:
        """Read and record the request, refuse a wrong key; the parsed JSON body."""
        _, body = await self.host._receive(request)
        if (refused := self.host._refuse_auth(request)) is not None:
            raise _Refused(refused)
        return body

    def _ok(self, obj: JSON) -> web.Response:
        return self.host._json(200, _dump(obj))

    def _file(self, request: web.Request) -> MockFile:
        file_id = request.match_info["id"]
        if (file := self.host.files.get(file_id)) is None:
            raise self._fail(404, f"No such File object: {file_id}", "id")
        return file

    def _batch(self, request: web.Request) -> MockBatch:
        batch_id = request.match_info["id"]
        if (batch := self.host.batches.get(batch_id)) is None:
            raise self._fail(404, f"No such Batch object: {batch_id}", "id")
        return batch

    def _limit(self, request: web.Request, default: int, most: int) -> int:
        raw = request.query.get("limit")
        try:
            limit = default if raw is None else int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= most:
            raise self._fail(400, f"Invalid 'limit': expected an integer in 1..{most}.", "limit")
        return limit

    def _page(self, items: list[Any], request: web.Request, limit: int) -> web.Response:
        """OpenAI's list envelope over ``items`` (in listing order) after the ``after`` id."""
        if (after := request.query.get("after")) is not None:
            ids = [item.id for item in items]
            if after not in ids:
                raise self._fail(400, f"Invalid 'after': no such object {after!r}.", "after")
            items = items[ids.index(after) + 1 :]
        data = [item.object() for item in items[:limit]]
        return self._ok(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(items) > limit,
            }
        )

    def store_file(
        self, filename: str, purpose: str, data: bytes, expires_at: int | None = None
    ) -> MockFile:
        """Store a new file under the next ``file-…`` id."""
        file_id = f"file-mock{next(self._file_serial):018d}"
        file = MockFile(file_id, filename, purpose, data, int(time.time()), expires_at)
        self.host.files[file_id] = file
        return file

    # -- files -----------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        if (refused := self.host._refuse_auth(request)) is not None:
            self.host._record(request, None)
            return refused
        summary: JSON | None = None
        try:
            fields, filename, data = await self._read_form(request)
            summary = {"purpose": fields.get("purpose"), "filename": filename, "bytes": len(data)}
        finally:
            self.host._record(request, summary)
        if filename is None:
            raise self._fail(400, "Missing required parameter: 'file'.", "file")
        purpose = fields.get("purpose")
        if purpose is None:
            raise self._fail(400, "Missing required parameter: 'purpose'.", "purpose")
        if purpose not in PURPOSES:
            expected = ", ".join(repr(p) for p in PURPOSES)
            message = f"Invalid value for 'purpose': {purpose!r}. Expected one of {expected}."
            raise self._fail(400, message, "purpose")
        ttl = self._ttl(fields)
        if ttl is None and purpose == "batch":
            ttl = BATCH_FILE_TTL
        file = self.store_file(filename, purpose, data)
        if ttl is not None:
            file.expires_at = file.created_at + ttl
        return self._ok(file.object())

    def _ttl(self, fields: dict[str, str]) -> int | None:
        anchor = fields.get("expires_after[anchor]")
        seconds = fields.get("expires_after[seconds]")
        if anchor is None and seconds is None:
            return None
        if anchor not in (None, "created_at"):
            message = "Invalid value for 'expires_after.anchor': expected 'created_at'."
            raise self._fail(400, message, "expires_after.anchor")
        try:
            ttl = int(seconds or "")
        except ValueError:
            ttl = 0
        if not MIN_TTL <= ttl <= MAX_TTL:
            message = f"Invalid 'expires_after.seconds': expected {MIN_TTL}..{MAX_TTL}."
            raise self._fail(400, message, "expires_after.seconds")
        return ttl

    async def _read_form(self, request: web.Request) -> tuple[dict[str, str], str | None, bytes]:
        """The text fields, the file's name and bytes, read part by part (at most
        ``MAX_UPLOAD_BYTES`` in all: more is a 413)."""
        fields: dict[str, str] = {}
        filename: str | None = None
        data = b""
        total = 0
        try:
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader):
                    raise ValueError("nested multipart")
                chunks: list[bytes] = []
                while chunk := await part.read_chunk(_READ_CHUNK):
                    total += len(chunk)
                    if total > MAX_UPLOAD_BYTES:
                        message = f"Request too large: the limit is {MAX_UPLOAD_BYTES} bytes."
                        raise self._fail(413, message, "file")
                    chunks.append(chunk)
                if part.name == "file":
                    filename, data = part.filename or "upload", b"".join(chunks)
                elif part.name:
                    fields[part.name] = b"".join(chunks).decode("utf-8", "replace")
        except (AssertionError, KeyError, ValueError) as exc:
            raise self._fail(400, "The request body is not valid multipart/form-data.") from exc
        return fields, filename, data

    async def list_files(self, request: web.Request) -> web.Response:
        await self._begin(request)
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise self._fail(400, "Invalid 'order': expected 'asc' or 'desc'.", "order")
        limit = self._limit(request, 10000, 10000)
        files = list(self.host.files.values())
        if (purpose := request.query.get("purpose")) is not None:
            files = [f for f in files if f.purpose == purpose]
        return self._page(files if order == "asc" else files[::-1], request, limit)

    async def get_file(self, request: web.Request) -> web.Response:
        await self._begin(request)
        return self._ok(self._file(request).object())

    async def content(self, request: web.Request) -> web.Response:
        await self._begin(request)
        data = self._file(request).data
        return self.host._json(200, data, {"Content-Type": "application/octet-stream"})

    async def delete_file(self, request: web.Request) -> web.Response:
        await self._begin(request)
        file = self._file(request)
        del self.host.files[file.id]
        return self._ok({"id": file.id, "object": "file", "deleted": True})

    # -- batches ---------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.Response:
        body = await self._begin(request)
        if not isinstance(body, dict):
            raise _Refused(self.host._json(400, _dump(invalid_request(BAD_JSON_MESSAGE))))
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                raise self._fail(400, f"Missing required parameter: '{name}'.", name)
        file_id, endpoint = body["input_file_id"], body["endpoint"]
        if (file := self.host.files.get(file_id)) is None:
            raise self._fail(400, f"No such File object: {file_id}", "input_file_id")
        if endpoint not in BATCH_API:
            supported = " and ".join(repr(e) for e in BATCH_API)
            message = f"Invalid value for 'endpoint': {endpoint!r}. Supported: {supported}."
            raise self._fail(400, message, "endpoint")
        if body["completion_window"] != "24h":
            message = "Invalid value for 'completion_window': only '24h' is supported."
            raise self._fail(400, message, "completion_window")
        metadata = self._metadata(body.get("metadata"))
        batch_id = f"batch_6d6f636b{next(self._batch_serial):024x}"  # "mock" in hex
        now = int(time.time())
        batch = MockBatch(batch_id, endpoint, file_id, now, metadata)
        self.host.batches[batch_id] = batch
        lines, errors = parse_input(file.data, endpoint)
        if errors:
            batch.status, batch.failed_at = "failed", now
            batch.errors = {"object": "list", "data": errors}
        else:
            batch.status, batch.in_progress_at = "in_progress", now
            batch.pending, batch.total = lines, len(lines)
            if self.host.batch_auto_complete:
                self.finish(batch_id)
        return self._ok(batch.object())

    def _metadata(self, metadata: Any) -> dict[str, str] | None:
        if metadata is None:
            return None
        if not metadata_ok(metadata):
            message = (
                "Invalid 'metadata': at most 16 pairs, keys of at most 64 characters and "
                "string values of at most 512 characters."
            )
            raise self._fail(400, message, "metadata")
        return metadata

    def _settle(self, batch: MockBatch) -> MockBatch:
        """A cancelling batch has finished cancelling by the time anyone looks again."""
        if batch.status == "cancelling":
            batch.status, batch.cancelled_at = "cancelled", int(time.time())
            batch.pending = []
        return batch

    async def get_batch(self, request: web.Request) -> web.Response:
        await self._begin(request)
        return self._ok(self._settle(self._batch(request)).object())

    async def list_batches(self, request: web.Request) -> web.Response:
        await self._begin(request)
        limit = self._limit(request, 20, 100)
        batches = [self._settle(b) for b in reversed(self.host.batches.values())]
        return self._page(batches, request, limit)

    async def cancel_batch(self, request: web.Request) -> web.Response:
        await self._begin(request)
        batch = self._batch(request)
        if batch.status in _UNFINISHED:
            batch.status, batch.cancelling_at = "cancelling", int(time.time())
        elif batch.status != "cancelling":
            message = f"Cannot cancel a batch with status '{batch.status}'."
            raise self._fail(400, message)
        return self._ok(batch.object())

    def finish(
        self, batch_id: str, *, outcome: Outcome = "completed", done: int | None = None
    ) -> MockBatch:
        """``MockUpstream.finish_batch``: answer the pending lines (all for ``completed``, the
        first ``done`` for ``expired``, the rest failing with ``batch_expired``)."""
        batch = self.host.batches[batch_id]
        if batch.status != "in_progress" or outcome not in ("completed", "expired"):
            raise ValueError(f"cannot finish batch {batch_id} ({batch.status}) as {outcome!r}")
        count = len(batch.pending) if outcome == "completed" else (done or 0)
        outputs, errors = answer_lines(batch, count, self.host.answer_json, self._line_serial)
        now = int(time.time())
        batch.pending, batch.completed, batch.failed = [], len(outputs), len(errors)
        batch.output_file_id = self._result_file(batch, "output", outputs)
        batch.error_file_id = self._result_file(batch, "error", errors)
        if outcome == "completed":
            batch.status, batch.finalizing_at, batch.completed_at = "completed", now, now
        else:
            batch.status, batch.expired_at = "expired", now
        return batch

    def _result_file(self, batch: MockBatch, kind: str, lines: Iterable[bytes]) -> str | None:
        data = b"".join(lines)
        if not data:
            return None
        return self.store_file(f"{batch.id}_{kind}.jsonl", "batch_output", data).id
