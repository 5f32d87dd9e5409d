"""The Message Batches API (``/v1/messages/batches``, issue 15 item 8) on an OpenAI upstream's
Batch API.

Each request is checked and translated as ``POST /v1/messages`` would translate it; the
translated requests go up as JSONL batch input (one upstream batch per model, split at
OpenAI's limits), and their answer plans as a file beside them. The batch id is signed and
names all of it (:mod:`.anthropic.resource_ids`), so nothing is stored here: status, cancel,
delete, list and results are read back from the upstream, and result lines are translated
with the same code as live answers (:mod:`.batch_results`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web

from .anthropic.plan import AnswerPlan, prepare
from .anthropic.resource_ids import BatchRef, batch_id, parse_batch_id
from .anthropic.server_tools import hosted_tools
from .anthropic.stop_sequences import check_stop_sequences
from .anthropic.tools import check_tools
from .batch_results import (
    BATCH_DECODER,
    ENDED,
    check_items,
    chunks,
    message_batch,
    never_ran,
    result_line,
    unrun_line,
)
from .context import CTX_KEY, RequestContext
from .dialects import DIALECTS
from .errors import GatewayError, InvalidRequestError, NotFoundError
from .files import files_route, upstream_json
from .handlers import translate_request
from .intake import decode_request, receive
from .keys import ACCOUNTS, ROUTER, SETTINGS, SIGNER, UPSTREAM
from .schemas.anthropic import MessagesRequest
from .settings import Route

#: metadata the gateway puts on its upstream batches (the list shows only primaries)
MARK: Final = "gw_batch"
MAX_MEMBERS: Final = 10


def _not_found(value: str) -> NotFoundError:
    return NotFoundError(f"Message batch not found: {value[:200]}")


def _results_url(request: web.Request, value: str) -> str:
    base = request.app[SETTINGS].files.public_url.rstrip("/") or str(request.url.origin())
    return f"{base}/v1/messages/batches/{value}/results"


async def _upload(request: web.Request, route: Route, name: str, purpose: str, data: bytes) -> str:
    writer = aiohttp.MultipartWriter("form-data")
    writer.append(purpose).set_content_disposition("form-data", name="purpose")
    part = writer.append(data, {"Content-Type": "application/jsonl"})
    part.set_content_disposition("form-data", name="file", filename=name)
    ctx: RequestContext = request[CTX_KEY]
    upstream = request.app[UPSTREAM]
    resp = await upstream.request(route, "POST", "/files", ctx, data=writer, retry=False)
    obj = orjson.loads(await upstream.read_body(resp))
    return str(obj["id"])


def _translate(
    request: web.Request, index: int, params: bytes
) -> tuple[Route, str, bytes, AnswerPlan]:
    """One batch request: checked and translated as ``/v1/messages`` would be."""
    app = request.app
    try:
        req: MessagesRequest = decode_request(params)
    except InvalidRequestError as err:
        raise InvalidRequestError(f"requests.{index}.params: {err.message}") from None
    if req.stream:
        raise InvalidRequestError(f"requests.{index}.params.stream: not supported in a batch")
    check_tools(req.tools)
    try:
        check_stop_sequences(req.stop_sequences)
    except InvalidRequestError as err:
        raise InvalidRequestError(f"requests.{index}.params.{err.message}") from None
    app[ACCOUNTS].check_model(request[CTX_KEY], req.model)
    route = app[ROUTER].resolve(req.model)
    if not route.hosted_tools and hosted_tools(req):
        raise InvalidRequestError(
            f"requests.{index}.params.tools: server tools need a route that hosts them; "
            f"route {route.name!r} does not"
        )
    signer = app[SIGNER]
    try:
        req, plan = prepare(params, req, route, signer)
        dialect = DIALECTS[route.dialect]
        payload = translate_request(
            dialect, req, route, signer, stream=False, strict=plan.strict,
            long_cache=plan.long_cache,
        )  # fmt: skip
    except InvalidRequestError as err:
        raise InvalidRequestError(f"requests.{index}.params.{err.message}") from None
    return route, dialect.name, orjson.dumps(payload), plan


async def create(request: web.Request) -> web.Response:
    """``POST /v1/messages/batches``."""
    app = request.app
    ctx: RequestContext = request[CTX_KEY]
    settings = app[SETTINGS]
    limit = settings.files.max_batch_bytes
    scale = max(1, limit // settings.server.max_body_bytes)
    raw = await receive(
        request, ctx, limit=limit, max_values=settings.server.max_json_values * scale
    )
    body = decode_request(raw, BATCH_DECODER)
    del raw
    check_items(body.requests)
    groups: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    plans: dict[str, tuple[str, AnswerPlan]] = {}
    upstream_name = ""
    route_of: dict[str, Route] = {}
    for i, item in enumerate(body.requests):
        route, dialect, payload, plan = _translate(request, i, bytes(item.params))
        if upstream_name and route.upstream != upstream_name:
            raise InvalidRequestError(
                f"requests.{i}.params.model: a batch's requests must all go to one upstream "
                f"(this one goes to {route.upstream!r}, earlier ones to {upstream_name!r})"
            )
        upstream_name = route.upstream
        route_of[upstream_name] = route
        endpoint = "/v1" + DIALECTS[dialect].path
        line = (
            b'{"custom_id":' + orjson.dumps(item.custom_id) + b',"method":"POST","url":'
            + orjson.dumps(endpoint) + b',"body":' + payload + b"}\n"
        )  # fmt: skip
        groups.setdefault((route.upstream_model, endpoint), []).append((item.custom_id, line))
        plans[item.custom_id] = (dialect, plan)
    members_input: list[tuple[str, list[tuple[str, bytes]]]] = []
    for (_, endpoint), lines in groups.items():
        rest = lines
        for piece in chunks([line for _, line in lines]):
            members_input.append((endpoint, rest[: len(piece)]))
            rest = rest[len(piece) :]
    if len(members_input) > MAX_MEMBERS:
        raise InvalidRequestError(
            f"requests: this batch would need {len(members_input)} upstream batches (one per "
            f"model, at most 50000 requests each); the gateway sends at most {MAX_MEMBERS}"
        )
    route = app[ROUTER].upstreams[upstream_name]
    sidecar_lines = []
    for m, (_, ids) in enumerate(members_input):
        for custom_id, _ in ids:
            dialect, plan = plans[custom_id]
            sidecar_lines.append(
                orjson.dumps({"c": custom_id, "m": m, "d": dialect, "p": plan.to_doc()}) + b"\n"
            )
    sidecar = await _upload(request, route, "gateway-batch-plans.jsonl", "user_data",
                            b"".join(sidecar_lines))  # fmt: skip
    del sidecar_lines, plans
    created: list[dict[str, Any]] = []
    for m in range(len(members_input) - 1, -1, -1):  # the primary (0) last: it lists the rest
        endpoint, ids = members_input[m]
        input_id = await _upload(request, route, f"gateway-batch-{m}.jsonl", "batch",
                                 b"".join(line for _, line in ids))  # fmt: skip
        metadata = {MARK: "member"}
        if m == 0:
            others = [b["id"] for b in reversed(created)]
            metadata = {MARK: "primary", "gw_members": ",".join(others),
                        "gw_sidecar": sidecar, "gw_count": str(len(body.requests))}  # fmt: skip
        batch = await upstream_json(request, "POST", "/batches", route=route, data={
            "input_file_id": input_id, "endpoint": endpoint, "completion_window": "24h",
            "metadata": metadata})  # fmt: skip
        created.append(batch)
    created.reverse()
    ref = BatchRef(upstream_name, tuple(str(b["id"]) for b in created), sidecar, len(body.requests))
    value = batch_id(app[SIGNER], ref)
    doc = message_batch(value, created, ref.count, _results_url(request, value))
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


# ---------------------------------------------------------------------------------------------
# Reading them back


async def _members(request: web.Request) -> tuple[str, BatchRef, Route, list[dict[str, Any]]]:
    value = request.match_info["batch_id"]
    ref = parse_batch_id(request.app[SIGNER], value)
    route = request.app[ROUTER].upstreams.get(ref.upstream) if ref is not None else None
    if ref is None or route is None:
        raise _not_found(value)
    try:
        # its plans are gone once the batch is deleted (the upstream keeps batches forever)
        await upstream_json(request, "GET", f"/files/{ref.sidecar}", route=route)
        members = [
            await upstream_json(request, "GET", f"/batches/{b}", route=route) for b in ref.batches
        ]
    except NotFoundError:
        raise _not_found(value) from None
    return value, ref, route, members


async def _unrun(request: web.Request, route: Route, members: list[dict[str, Any]]) -> list[int]:
    """Per upstream batch that expired or was cancelled: the requests that never ran (its
    error file says so line by line; the upstream counts them as failed)."""
    out = []
    ctx: RequestContext = request[CTX_KEY]
    limit = request.app[SETTINGS].server.max_upstream_body_bytes
    for m in members:
        n = 0
        fid = m.get("error_file_id")
        if fid and m.get("status") in ("expired", "cancelled"):
            resp = await request.app[UPSTREAM].request(route, "GET", f"/files/{fid}/content", ctx)
            async for line in _lines(resp, limit):
                n += never_ran(orjson.loads(line))
        out.append(n)
    return out


async def _batch_doc(
    request: web.Request, value: str, ref: BatchRef, route: Route, members: list[dict[str, Any]]
) -> dict[str, Any]:
    unrun = await _unrun(request, route, members)
    return message_batch(value, members, ref.count, _results_url(request, value), unrun)


async def retrieve(request: web.Request) -> web.Response:
    value, ref, route, members = await _members(request)
    doc = await _batch_doc(request, value, ref, route, members)
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def cancel(request: web.Request) -> web.Response:
    value, ref, route, members = await _members(request)
    out = []
    for m in members:
        if m.get("status") in ENDED or m.get("status") == "cancelling":
            out.append(m)
            continue
        out.append(await upstream_json(request, "POST", f"/batches/{m['id']}/cancel", route=route))
    doc = await _batch_doc(request, value, ref, route, out)
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def delete(request: web.Request) -> web.Response:
    value, ref, route, members = await _members(request)
    if any(m.get("status") not in ENDED for m in members):
        raise InvalidRequestError(
            f"Message batch {value[:200]} can only be deleted once it has finished processing; "
            "cancel it first"
        )
    files = [ref.sidecar] + [
        f for m in members for f in (m.get("input_file_id"), m.get("output_file_id"),
                                     m.get("error_file_id")) if f
    ]  # fmt: skip
    for f in files:
        try:
            await upstream_json(request, "DELETE", f"/files/{f}", route=route)
        except NotFoundError:
            continue
    body = orjson.dumps({"id": value, "type": "message_batch_deleted"})
    return web.Response(body=body, content_type="application/json")


async def list_batches(request: web.Request) -> web.Response:
    """``GET /v1/messages/batches``: the gateway's batches, newest first (``limit``,
    ``after_id``; the upstream cannot page backwards, so ``before_id`` is a 400)."""
    app = request.app
    signer = app[SIGNER]
    route = files_route(request)
    q = request.query
    raw_limit = q.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise InvalidRequestError("limit: must be an integer from 1 to 1000")
    limit = int(raw_limit)
    if "before_id" in q:
        raise InvalidRequestError("before_id: not supported by the gateway; page with after_id")
    after = None
    if q.get("after_id"):
        ref = parse_batch_id(signer, q["after_id"])
        if ref is None:
            raise InvalidRequestError("after_id: not a message batch id of this gateway")
        after = ref.batches[0]
    data: list[dict[str, Any]] = []
    has_more = True
    while len(data) < limit and has_more:
        params = {"limit": "100"} | ({"after": after} if after else {})
        page = await upstream_json(request, "GET", "/batches", route=route, params=params)
        batches = [b for b in page.get("data") or () if isinstance(b, dict)]
        has_more = bool(page.get("has_more")) and bool(batches)
        for b in batches:
            after = str(b.get("id"))
            meta = b.get("metadata") or {}
            if meta.get(MARK) != "primary" or len(data) >= limit:
                continue
            others = [x for x in str(meta.get("gw_members") or "").split(",") if x]
            ref = BatchRef(route.upstream, (after, *others), str(meta.get("gw_sidecar")),
                           int(meta.get("gw_count") or 0))  # fmt: skip
            members = [b] + [
                await upstream_json(request, "GET", f"/batches/{o}", route=route) for o in others
            ]
            data.append(await _batch_doc(request, batch_id(signer, ref), ref, route, members))
        if len(data) >= limit:
            break
    doc = {
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def _lines(resp: aiohttp.ClientResponse, limit: int) -> AsyncIterator[bytes]:
    """A JSONL body line by line, each at most ``limit`` bytes. Only each new chunk is split,
    and a line's earlier pieces are joined once, when it ends: linear however the upstream
    cuts its body (a buffer grown and split again on every chunk was quadratic)."""
    head: list[bytes] = []  # the pieces of the line not ended yet
    size = 0
    try:
        async for chunk in resp.content.iter_chunked(256 * 1024):
            *ended, rest = chunk.split(b"\n")
            if ended:
                head.append(ended[0])
                ended[0] = b"".join(head)
                head, size = [], 0
                for line in ended:
                    if line.strip():
                        yield line
            if rest:
                head.append(rest)
                size += len(rest)
                if size > limit:
                    raise GatewayError("upstream batch line exceeds the gateway's limit")
        last = b"".join(head)
        if last.strip():
            yield last
    finally:
        resp.release()


async def results(request: web.Request) -> web.StreamResponse:
    """``GET …/{id}/results``: JSONL, one translated result per request."""
    app = request.app
    ctx: RequestContext = request[CTX_KEY]
    value, ref, route, members = await _members(request)
    if any(m.get("status") not in ENDED for m in members):
        raise InvalidRequestError(
            f"Message batch {value[:200]} has not finished processing: no results yet"
        )
    upstream = app[UPSTREAM]
    limit = app[SETTINGS].server.max_upstream_body_bytes
    resp = await upstream.request(route, "GET", f"/files/{ref.sidecar}/content", ctx)
    plans: dict[str, tuple[int, str, dict[str, Any]]] = {}
    async for line in _lines(resp, limit):
        doc = orjson.loads(line)
        plans[doc["c"]] = (int(doc["m"]), str(doc["d"]), doc["p"])
    out = web.StreamResponse(headers={"Content-Type": "application/x-jsonl"})
    await out.prepare(request)
    signer = app[SIGNER]
    for member in members:
        for key in ("output_file_id", "error_file_id"):
            fid = member.get(key)
            if not fid:
                continue
            resp = await upstream.request(route, "GET", f"/files/{fid}/content", ctx)
            async for line in _lines(resp, limit):
                got = orjson.loads(line)
                entry = plans.pop(str(got.get("custom_id")), None)
                plan = AnswerPlan.from_doc(entry[2]) if entry else None
                dialect = entry[1] if entry else "responses"
                await out.write(result_line(got, plan, dialect, signer))
    for custom_id, (m, _, _) in plans.items():  # no upstream line: never ran
        await out.write(unrun_line(custom_id, members[m].get("status")))
    await out.write_eof()
    return out


def add_batch_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages/batches", create)
    app.router.add_get("/v1/messages/batches", list_batches)
    app.router.add_get("/v1/messages/batches/{batch_id}", retrieve)
    app.router.add_post("/v1/messages/batches/{batch_id}/cancel", cancel)
    app.router.add_delete("/v1/messages/batches/{batch_id}", delete)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", results)
