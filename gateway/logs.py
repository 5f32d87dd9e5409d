"""Structured logging: one JSON object per line, allow-listed fields only.

Bodies, headers, prompt or completion text and keys never reach a logger (design.md item 11):
``log_event`` drops every field that is not in ``ALLOWED_FIELDS``, and exceptions are logged by
class and code location only, never by message (a message can quote client data).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from contextvars import ContextVar
from typing import Any, Final

import orjson

ALLOWED_FIELDS: Final = frozenset(
    {
        "id",
        "request_id",
        "method",
        "path",
        "model",
        "route",
        "upstream_model",
        "dialect",
        "stream",
        "status",
        "duration_ms",
        "ttfb_ms",
        "upstream_ms",
        "upstream_status",
        "attempts",
        "bytes_in",
        "bytes_out",
        "events",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "stop_reason",
        "error_type",
        "outcome",
        "error_class",
        "where",
        "host",
        "port",
        "upstream",
        "mock",
        "workers",
        "pid",
        "ignored",
        "count",
        "reason",
        "target",
        "key_name",
        "skipped",
        "fallbacks",
        "key_source",
        "keys_left",
        "state",
        "failures",
        "seconds",
    }
)

#: Longest string a log field holds; longer ones (a client's model name or path can be
#: megabytes) are cut and end with "…" (issue 10 item 7).
MAX_FIELD_CHARS: Final = 200

#: correlation id of the request being handled, for log lines written below the middleware
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

access_logger: Final = logging.getLogger("gateway.access")
logger: Final = logging.getLogger("gateway")


class JSONFormatter(logging.Formatter):
    """Renders ``record.fields`` (set by ``log_event``) as one compact JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.msg if isinstance(record.msg, str) else "log",
        }
        if isinstance(fields, dict):
            doc.update(fields)
        return orjson.dumps(doc).decode()


def configure_logging(level: str = "info") -> None:
    """Send gateway logs to stderr as JSON lines; quiet aiohttp's own loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # aiohttp's loggers can print request lines and exception messages; keep them quiet.
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web", "aiohttp.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def log_event(event: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log ``event`` with the allow-listed subset of ``fields`` (others are dropped)."""
    target = access_logger if event.startswith("request") else logger
    if not target.isEnabledFor(level):
        return
    safe: dict[str, Any] = {}
    for k, v in fields.items():
        if k in ALLOWED_FIELDS and v is not None:
            if type(v) is str and len(v) > MAX_FIELD_CHARS:
                v = v[:MAX_FIELD_CHARS] + "…"
            safe[k] = v
    if "id" not in safe:
        cid = correlation_id.get()
        if cid is not None:
            safe["id"] = cid
    target.log(level, event, extra={"fields": safe})


def log_exception(event: str, exc: BaseException, **fields: Any) -> None:
    """Log an unexpected exception by class and innermost code locations, never its message."""
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}" for f in frames]
    log_event(event, logging.ERROR, error_class=type(exc).__name__, where=where, **fields)


def now_ms() -> float:
    return time.perf_counter() * 1000.0
