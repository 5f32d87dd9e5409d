"""Message Batches on the OpenAI Batch API, the pure half (issue 15 item 8): the request
checks, the upstream batches' state as one MessageBatch, and each result line translated.

Pure: no aiohttp, no asyncio. An Anthropic batch is one or more upstream batches (one per
upstream model, at most 50 000 requests or ~190 MB each); its requests' answer plans
(:class:`~gateway.anthropic.plan.AnswerPlan`) wait in a file beside them, so results are
translated exactly as ``/v1/messages`` would have translated them, with no state kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import orjson
from msgspec import Struct

from .anthropic.plan import AnswerPlan
from .anthropic.resource_ids import iso
from .anthropic.signatures import Signer
from .dialects import DIALECTS
from .errors import GatewayError, InvalidRequestError, from_upstream
from .schemas.anthropic_out import RESPONSE_ENCODER

CUSTOM_ID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS: Final = 100_000
#: OpenAI's per-batch limits (50 000 requests, 200 MB), with room for the JSONL framing
UPSTREAM_MAX_LINES: Final = 50_000
UPSTREAM_MAX_BYTES: Final = 190 * 1024 * 1024
DAY: Final = 24 * 3600
ENDED: Final = frozenset({"completed", "expired", "cancelled", "failed"})


class BatchItem(Struct, kw_only=True):
    custom_id: str
    params: msgspec.Raw


class BatchBody(Struct, kw_only=True):
    requests: list[BatchItem]


BATCH_DECODER: Final = msgspec.json.Decoder(BatchBody)


def check_items(items: Sequence[BatchItem]) -> None:
    """The API's own checks, before anything goes upstream (OpenAI would fail the whole batch
    later for some of them)."""
    if not items:
        raise InvalidRequestError("requests: must hold at least one request")
    if len(items) > MAX_REQUESTS:
        raise InvalidRequestError(f"requests: at most {MAX_REQUESTS} requests in a batch")
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not CUSTOM_ID.match(item.custom_id):
            raise InvalidRequestError(f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if item.custom_id in seen:
            raise InvalidRequestError(
                f"requests.{i}.custom_id: {item.custom_id!r} is used twice; custom_id values "
                "must be unique within a batch"
            )
        seen.add(item.custom_id)


def chunks(lines: list[bytes]) -> Iterable[list[bytes]]:
    """JSONL lines in pieces OpenAI takes in one batch."""
    piece: list[bytes] = []
    size = 0
    for line in lines:
        if piece and (len(piece) >= UPSTREAM_MAX_LINES or size + len(line) > UPSTREAM_MAX_BYTES):
            yield piece
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield piece


# ---------------------------------------------------------------------------------------------
# State


def _status(members: Sequence[dict[str, Any]]) -> str:
    statuses = [m.get("status") for m in members]
    if all(s in ENDED for s in statuses):
        return "ended"
    if any(m.get("cancelling_at") or m.get("status") == "cancelling" for m in members):
        return "canceling"
    return "in_progress"


def message_batch(
    batch_id: str,
    members: Sequence[dict[str, Any]],
    count: int,
    results_url: str,
    unrun: Sequence[int] = (),
) -> dict[str, Any]:
    """The upstream batches as one MessageBatch. Counts stay ``processing`` until every
    upstream batch has ended, as Anthropic reports them; then succeeded / errored from the
    upstream's counts, and what never ran is canceled or expired as its batch was (``unrun``:
    per upstream batch, the lines its error file reports as never run, which OpenAI counts
    as failed)."""
    status = _status(members)
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if status != "ended":
        counts["processing"] = count
    else:
        done = 0
        for i, m in enumerate(members):
            rc = m.get("request_counts") or {}
            ok, failed = int(rc.get("completed") or 0), int(rc.get("failed") or 0)
            total = int(rc.get("total") or 0)
            never = min(failed, unrun[i]) if i < len(unrun) else 0
            counts["succeeded"] += ok
            counts["errored"] += failed - never
            rest = max(0, total - ok - failed) + never
            if m.get("status") == "expired":
                counts["expired"] += rest
            elif m.get("status") == "cancelled":
                counts["canceled"] += rest
            else:
                counts["errored"] += rest
            done += total
        # a batch that failed validation upstream has no counts: all of it errored
        counts["errored"] += max(0, count - done)
    created = min(int(m.get("created_at") or 0) for m in members)
    ends = [
        m.get("completed_at") or m.get("expired_at") or m.get("cancelled_at") or m.get("failed_at")
        for m in members
    ]
    cancelling = [int(m["cancelling_at"]) for m in members if m.get("cancelling_at")]
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "ended_at": iso(max(e for e in ends if e)) if status == "ended" and any(ends) else None,
        "created_at": iso(created),
        "expires_at": iso(created + DAY),
        "cancel_initiated_at": iso(min(cancelling)) if cancelling else None,
        "archived_at": None,
        "results_url": results_url if status == "ended" else None,
    }


# ---------------------------------------------------------------------------------------------
# Results


def _errored(err: GatewayError, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": err.error_type, "message": err.message},
    }
    if request_id:
        body["request_id"] = request_id
    return {"type": "errored", "error": body}


def result_line(
    line: dict[str, Any], plan: AnswerPlan | None, dialect: str, signer: Signer
) -> bytes:
    """One upstream output or error line → one Anthropic result line (JSONL, with ``\\n``)."""
    custom_id = str(line.get("custom_id") or "")
    head = b'{"custom_id":' + orjson.dumps(custom_id) + b',"result":'
    response = line.get("response")
    error = line.get("error")
    result: Any
    if isinstance(error, dict) and response is None:
        code = error.get("code")
        if code == "batch_expired":
            result = {"type": "expired"}
        elif code == "batch_cancelled":
            result = {"type": "canceled"}
        else:
            result = _errored(from_upstream(500, orjson.dumps({"error": error})), None)
    elif isinstance(response, dict) and response.get("status_code") == 200 and plan is not None:
        try:
            message = DIALECTS[dialect].from_upstream(
                orjson.dumps(response.get("body")), signer=signer, **plan.translator_args()
            )
        except GatewayError as failed:
            result = _errored(failed, response.get("request_id"))
        else:
            plan.finish(message)
            return (
                head
                + b'{"type":"succeeded","message":'
                + RESPONSE_ENCODER.encode(message)
                + b"}}\n"
            )
    else:
        response = response if isinstance(response, dict) else {}
        status = int(response.get("status_code") or 500)
        err = from_upstream(status, orjson.dumps(response.get("body") or {}))
        result = _errored(err, response.get("request_id"))
    return head + orjson.dumps(result) + b"}\n"


def never_ran(line: dict[str, Any]) -> bool:
    """An error-file line for a request the upstream never ran (expired or cancelled)."""
    error = line.get("error")
    return isinstance(error, dict) and error.get("code") in ("batch_expired", "batch_cancelled")


def unrun_line(custom_id: str, member_status: str | None) -> bytes:
    """A request no upstream line answered: canceled or expired with its batch."""
    kind = "expired" if member_status == "expired" else "canceled"
    if member_status == "failed":
        err = InvalidRequestError("the upstream refused this batch before running it")
        return orjson.dumps({"custom_id": custom_id, "result": _errored(err, None)}) + b"\n"
    return orjson.dumps({"custom_id": custom_id, "result": {"type": kind}}) + b"\n"
