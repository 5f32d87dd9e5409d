"""The Batch API: the batch object, its input file (JSONL requests, validated as OpenAI does)
and its result lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import orjson

from .scripts import JSON, Api

#: the batch endpoints the mock serves, and the API that answers their lines
BATCH_API: Final[dict[str, Api]] = {"/v1/responses": "responses", "/v1/chat/completions": "chat"}
EXPIRED_ERROR: Final[JSON] = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
_MESSAGES: Final = {
    "empty_file": "The input file is empty. Please provide at least one request.",
    "invalid_json_line": "This line is not parseable as valid JSON.",
    "missing_required_parameter": (
        "Each line must be an object with 'custom_id' (a string), 'method' ('POST'), 'url' and "
        "'body' (an object)."
    ),
    "url_mismatch": "The URL provided for this request does not match the batch endpoint.",
    "duplicate_custom_id": (
        "The custom_id for this request is a duplicate of another request. The custom_id "
        "parameter must be unique for each individual request in a batch."
    ),
    "model_mismatch": (
        "The provided model does not match the model of the other requests in the batch. All "
        "requests in a batch must use the same model."
    ),
}
_UNSET: Final = object()
BATCH_WINDOW: Final = 86400


@dataclass(frozen=True)
class BatchLine:
    """One validated request of a batch."""

    custom_id: str
    body: JSON


def _error(code: str, line: int | None) -> JSON:
    return {"code": code, "message": _MESSAGES[code], "param": None, "line": line}


def parse_input(data: bytes, endpoint: str) -> tuple[list[BatchLine], list[JSON]]:
    """The requests of a JSONL input file, or the errors that fail the batch (one per bad
    line; blank lines are skipped, line numbers count from 1)."""
    lines: list[BatchLine] = []
    errors: list[JSON] = []
    seen: set[str] = set()
    model: Any = _UNSET
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.append(_error("invalid_json_line", number))
            continue
        code = _problem(obj, endpoint, seen, model)
        if code is not None:
            errors.append(_error(code, number))
            continue
        seen.add(obj["custom_id"])
        if model is _UNSET:
            model = obj["body"].get("model")
        lines.append(BatchLine(obj["custom_id"], obj["body"]))
    if not lines and not errors:
        errors.append(_error("empty_file", None))
    return lines, errors


def _problem(obj: Any, endpoint: str, seen: set[str], model: Any) -> str | None:
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("custom_id"), str)
        or obj.get("method") != "POST"
        or not isinstance(obj.get("url"), str)
        or not isinstance(obj.get("body"), dict)
    ):
        return "missing_required_parameter"
    if obj["url"] != endpoint:
        return "url_mismatch"
    if obj["custom_id"] in seen:
        return "duplicate_custom_id"
    if model is not _UNSET and obj["body"].get("model") != model:
        return "model_mismatch"
    return None


def result_line(line_id: str, custom_id: str, response: JSON | None, error: JSON | None) -> bytes:
    """One line of an output or error file."""
    line = {"id": line_id, "custom_id": custom_id, "response": response, "error": error}
    return orjson.dumps(line) + b"\n"


@dataclass
class MockBatch:
    """One batch; ``pending`` holds the validated lines not answered yet."""

    id: str
    endpoint: str
    input_file_id: str
    created_at: int
    metadata: dict[str, str] | None = None
    status: str = "validating"
    errors: JSON | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    pending: list[BatchLine] = field(default_factory=list, repr=False)

    def object(self) -> JSON:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": None,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.created_at + BATCH_WINDOW,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
            "usage": None,
        }


def metadata_ok(metadata: Any) -> TypeGuard[dict[str, str]]:
    """OpenAI's metadata limits: 16 pairs, keys of 64 characters, string values of 512."""
    return (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(len(key) <= 64 for key in metadata)
        and all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
    )


def answer_lines(
    batch: MockBatch,
    count: int,
    answer: Callable[[Api, JSON], tuple[int, bytes]],
    serials: Iterator[int],
) -> tuple[list[bytes], list[bytes]]:
    """Answer the first ``count`` pending lines with ``answer`` (status 200: an output line,
    else an error line); the rest are ``batch_expired`` error lines. (outputs, errors)"""
    outputs: list[bytes] = []
    errors: list[bytes] = []
    api = BATCH_API[batch.endpoint]
    for index, line in enumerate(batch.pending):
        serial = f"6d6f636b{next(serials):024x}"  # "mock" in hex
        line_id = "batch_req_" + serial
        if index >= count:
            errors.append(result_line(line_id, line.custom_id, None, EXPIRED_ERROR))
            continue
        status, payload = answer(api, line.body)
        response = {"status_code": status, "request_id": "req_" + serial, "body": _parsed(payload)}
        target = outputs if status == 200 else errors
        target.append(result_line(line_id, line.custom_id, response, None))
    return outputs, errors


def _parsed(payload: bytes) -> Any:
    """A response body as JSON (a body that is not JSON stays text)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "replace")
