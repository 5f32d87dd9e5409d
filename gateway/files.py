"""The Files API (``/v1/files``, issue 15 item 8), kept on an OpenAI upstream's Files API.

Uploads stream through (a 500 MB file never sits in memory); the ids the gateway gives are
signed and carry the upstream, its file id and the media type (:mod:`.anthropic.resource_ids`);
metadata, lists and deletion are translated; ``file`` sources in messages become the
upstream's own files (``input_image`` / ``input_file`` by ``file_id``). As on Anthropic, a
file a client uploaded cannot be downloaded again (only files tools create can).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web

from .anthropic.resource_ids import (
    FileRef,
    file_id,
    file_not_found,
    guess_mime,
    iso,
    parse_file_id,
)
from .context import CTX_KEY, RequestContext
from .errors import (
    InvalidRequestError,
    NotFoundError,
    RequestTimeoutError,
    RequestTooLargeError,
    invalid_response,
)
from .keys import IN_FLIGHT, ROUTER, SETTINGS, SIGNER, UPSTREAM
from .settings import Route

#: what the upstream keeps the gateway's uploads as
PURPOSE: Final = "user_data"
MAX_LIMIT: Final = 1000
#: OpenAI keeps a file at most 30 days when asked to expire it
MAX_EXPIRY: Final = 30 * 24 * 3600
_BAD_NAME: Final = frozenset('<>:"|?*\\/') | {chr(c) for c in range(32)}


def files_route(request: web.Request) -> Route:
    app = request.app
    return app[ROUTER].upstreams[app[SETTINGS].files.upstream]


async def upstream_json(
    request: web.Request,
    method: str,
    path: str,
    *,
    route: Route | None = None,
    data: Any = None,
    params: dict[str, str] | None = None,
) -> Any:
    """One JSON call to the files upstream (or ``route``)."""
    app = request.app
    ctx: RequestContext = request[CTX_KEY]
    route = route or files_route(request)
    upstream = app[UPSTREAM]
    body = orjson.dumps(data) if data is not None else None
    resp = await upstream.request(route, method, path, ctx, data=body, params=params)
    raw = await upstream.read_body(resp)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_response("not JSON") from None


def metadata(obj: dict[str, Any], ref: FileRef, signer: Any) -> dict[str, Any]:
    """An OpenAI FileObject → Anthropic's FileMetadata."""
    return {
        "id": file_id(signer, ref),
        "type": "file",
        "filename": obj.get("filename") or "",
        "mime_type": ref.mime_type,
        "size_bytes": obj.get("bytes") or 0,
        "created_at": iso(obj.get("created_at")),
        "expires_at": iso(obj.get("expires_at")),
        "downloadable": False,
    }


def _json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _ref(request: web.Request) -> FileRef:
    value = request.match_info["file_id"]
    ref = parse_file_id(request.app[SIGNER], value)
    if ref is None:
        raise file_not_found(value)
    return ref


async def _lookup(request: web.Request, ref: FileRef, value: str) -> dict[str, Any]:
    route = request.app[ROUTER].upstreams.get(ref.upstream)
    if route is None:
        raise file_not_found(value)
    try:
        found = await upstream_json(request, "GET", f"/files/{ref.file_id}", route=route)
    except NotFoundError:
        raise file_not_found(value) from None
    return found if isinstance(found, dict) else {}


# ---------------------------------------------------------------------------------------------
# Upload


def _filename(raw: str | None, mime: str | None) -> str:
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c not in _BAD_NAME)[:255]
    if name:
        return name
    ext = {"application/pdf": ".pdf", "text/plain": ".txt", "image/png": ".png",
           "image/jpeg": ".jpg"}.get(mime or "", "")  # fmt: skip
    return "unnamed" + ext


async def upload(request: web.Request) -> web.Response:
    """``POST /v1/files``: multipart ``file`` (and ``expires_in_seconds`` before it)."""
    app = request.app
    ctx: RequestContext = request[CTX_KEY]
    settings = app[SETTINGS]
    limit = settings.files.max_file_bytes
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise RequestTooLargeError(f"file exceeds {limit} bytes")
    if not request.content_type.startswith("multipart/form-data"):
        raise InvalidRequestError("file: expected a multipart/form-data body with a file part")
    wait = settings.timeouts.client_body
    reader = await request.multipart()
    expires: int | None = None
    while True:
        async with asyncio.timeout(wait):
            part = await reader.next()
        if part is None:
            raise InvalidRequestError("file: Field required")
        if not isinstance(part, aiohttp.BodyPartReader):
            continue
        if part.name == "expires_in_seconds":
            text = (await part.text()).strip()
            if not text.isdigit() or not 3600 <= int(text) <= 7_776_000:
                raise InvalidRequestError(
                    "expires_in_seconds: must be an integer from 3600 to 7776000"
                )
            expires = int(text)
            continue
        if part.name == "file":
            break
        await part.release()
    mime = guess_mime(part.filename or "", part.headers.get("Content-Type"))
    name = _filename(part.filename, mime)
    app[IN_FLIGHT].admit(ctx)
    state = {"size": 0, "too_large": False, "slow": False}

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(wait):
                    chunk = await part.read_chunk(256 * 1024)
            except TimeoutError:
                state["slow"] = True
                raise
            if not chunk:
                return
            state["size"] += len(chunk)
            if state["size"] > limit:
                state["too_large"] = True
                raise RequestTooLargeError(f"file exceeds {limit} bytes")
            yield chunk

    writer = aiohttp.MultipartWriter("form-data")
    purpose = writer.append(PURPOSE)
    purpose.set_content_disposition("form-data", name="purpose")
    if expires is not None:
        for key, value in (("anchor", "created_at"), ("seconds", str(min(expires, MAX_EXPIRY)))):
            extra = writer.append(value)
            extra.set_content_disposition("form-data", name=f"expires_after[{key}]")
    payload = aiohttp.payload.AsyncIterablePayload(chunks(), content_type=mime)
    payload.set_content_disposition("form-data", name="file", filename=name)
    writer.append_payload(payload)
    route = files_route(request)
    try:
        resp = await app[UPSTREAM].request(route, "POST", "/files", ctx, data=writer, retry=False)
    except Exception:
        if state["too_large"]:
            raise RequestTooLargeError(f"file exceeds {limit} bytes") from None
        if state["slow"]:
            raise RequestTimeoutError(f"file not received within {wait:g}s a read") from None
        raise
    raw = await app[UPSTREAM].read_body(resp)
    obj = orjson.loads(raw)
    ref = FileRef(route.upstream, str(obj.get("id")), mime)
    return _json_response(metadata(obj, ref, app[SIGNER]))


# ---------------------------------------------------------------------------------------------
# Read, list, delete


async def get_metadata(request: web.Request) -> web.Response:
    ref = _ref(request)
    obj = await _lookup(request, ref, request.match_info["file_id"])
    return _json_response(metadata(obj, ref, request.app[SIGNER]))


async def content(request: web.Request) -> web.Response:
    ref = _ref(request)
    value = request.match_info["file_id"]
    await _lookup(request, ref, value)  # 404 first, as the API
    raise InvalidRequestError(
        f"File {value[:200]} is not downloadable: only files created by skills or the code "
        "execution tool can be downloaded",
        details={"error_code": "file_not_downloadable"},
    )


async def delete(request: web.Request) -> web.Response:
    ref = _ref(request)
    value = request.match_info["file_id"]
    route = request.app[ROUTER].upstreams.get(ref.upstream)
    if route is None:
        raise file_not_found(value)
    try:
        await upstream_json(request, "DELETE", f"/files/{ref.file_id}", route=route)
    except NotFoundError:
        raise file_not_found(value) from None
    return _json_response({"id": value, "type": "file_deleted"})


def _int_param(request: web.Request, name: str, default: int, top: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= top:
        raise InvalidRequestError(f"{name}: must be an integer from 1 to {top}")
    return int(raw)


async def list_files(request: web.Request) -> web.Response:
    """``GET /v1/files``: ``limit``, ``after_id`` / ``before_id`` (and the newer ``page``
    cursor, ``ids``); both response shapes at once (``first_id``/``last_id``/``has_more``
    and ``next_page``)."""
    app = request.app
    signer = app[SIGNER]
    route = files_route(request)
    limit = _int_param(request, "limit", 20, MAX_LIMIT)
    q = request.query
    if "ids" in q:
        values = [v for v in q.getall("ids") for v in v.split(",") if v][:100]
        data = []
        for value in values:
            ref = parse_file_id(signer, value)
            if ref is None:
                continue  # unknown ids are left out, as the API does
            try:
                data.append(metadata(await _lookup(request, ref, value), ref, signer))
            except NotFoundError:
                continue
        return _json_response(_page(data, False))
    params = {"purpose": PURPOSE, "limit": str(limit), "order": "desc"}
    cursor = q.get("after_id") or q.get("page")
    backwards = "before_id" in q and not cursor
    if backwards:
        cursor = q["before_id"]
        params["order"] = "asc"
    if cursor:
        ref = parse_file_id(signer, cursor.removeprefix("page_"))
        if ref is None:
            raise InvalidRequestError(f"cursor {cursor[:200]!r} is not a file id of this gateway")
        params["after"] = ref.file_id
    found = await upstream_json(request, "GET", "/files", route=route, params=params)
    objs = [o for o in found.get("data") or () if isinstance(o, dict)]
    if backwards:
        objs.reverse()
    data = [
        metadata(
            o,
            FileRef(route.upstream, str(o.get("id")), guess_mime(o.get("filename") or "", None)),
            signer,
        )
        for o in objs
    ]
    return _json_response(_page(data, bool(found.get("has_more"))))


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
        "next_page": "page_" + data[-1]["id"] if has_more and data else None,
    }


def add_file_routes(app: web.Application) -> None:
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get("/v1/files/{file_id}", get_metadata)
    app.router.add_get("/v1/files/{file_id}/content", content)
    app.router.add_delete("/v1/files/{file_id}", delete)


__all__ = ["add_file_routes", "files_route", "iso", "metadata", "upstream_json"]
