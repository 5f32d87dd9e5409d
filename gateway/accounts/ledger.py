"""The usage ledger (issue 17 item 3): one row per request, written in batches off the hot
path to SQLite (by default) or PostgreSQL (``ledger.dsn_env`` names a variable holding a DSN).

``record`` appends a tuple to a list: that is all a request pays. A flusher writes the list
every ``flush_interval`` seconds or ``batch_size`` rows, in one transaction, on the ledger's
own thread (DB-API drivers block), and on shutdown. A process killed at any moment loses at
most the rows of the batch not yet committed. Rows waiting beyond ``max_pending`` (a database
that is down) are counted and logged as dropped, never silently. The same code drives both
databases; only the placeholders and two SQL expressions differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from ..logs import log_event

T = TypeVar("T")

COLUMNS: Final = (
    "ts", "request_id", "key", "path", "route", "target", "model", "status", "error_type",
    "stream", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost", "duration_ms",
)  # fmt: skip
#: what a row of ``usage`` groups by (``--by``)
GROUPS: Final = ("key", "model", "route", "target", "day", "hour")
#: tokens as limits and budgets count them: uncached input, cache writes and output
TOKENS_SQL: Final = "(input_tokens + cache_write_tokens + output_tokens)"


class Backend:
    """A DB-API database the ledger thread owns: connect, migrate, write, query."""

    name = "sqlite"
    param = "?"

    def __init__(self, target: str) -> None:
        self.target = target
        self.conn: Any = None

    def connect(self) -> None:
        if self.target != ":memory:":
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.target, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # a killed process loses nothing committed
        self.conn.execute("PRAGMA busy_timeout=5000")  # --workers share the file

    def bucket(self, seconds: int) -> str:
        return f"(CAST(ts / {seconds} AS INTEGER) * {seconds})"

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def migrate(self) -> None:
        real = "DOUBLE PRECISION" if self.name == "postgresql" else "REAL"
        cols = ", ".join(f"{c} {_column_type(c, real)}" for c in COLUMNS)
        cur = self.conn.cursor()
        self.begin()
        cur.execute(f"CREATE TABLE IF NOT EXISTS usage ({cols})")
        cur.execute("CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)")
        cur.execute("CREATE INDEX IF NOT EXISTS usage_key_ts ON usage (key, ts)")
        self.conn.commit()

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join([self.param] * len(COLUMNS))
        cur = self.conn.cursor()
        self.begin()
        try:
            cur.executemany(f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({marks})", rows)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def select(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        cur.execute(sql.replace("?", self.param), args)
        rows = list(cur.fetchall())
        self.conn.commit()  # end the read transaction (PostgreSQL opens one)
        return rows

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class PostgresBackend(Backend):
    name = "postgresql"
    param = "%s"

    def connect(self) -> None:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - the start-up check says so first
            raise RuntimeError("the ledger's PostgreSQL DSN needs psycopg") from None
        self.conn = psycopg.connect(self.target, connect_timeout=10)

    def bucket(self, seconds: int) -> str:
        return f"(FLOOR(ts / {seconds}) * {seconds})"

    def begin(self) -> None:
        pass  # psycopg opens a transaction with the first statement


def _column_type(column: str, real: str) -> str:
    if column in ("ts", "cost", "duration_ms"):
        return real
    return "BIGINT" if column.endswith(("_tokens", "status")) else "TEXT"


def backend_for(path: str, dsn: str) -> Backend:
    return PostgresBackend(dsn) if dsn else Backend(path)


class Ledger:
    def __init__(
        self,
        backend: Backend,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_pending: int = 100_000,
    ) -> None:
        self.backend = backend
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.pending: list[tuple[Any, ...]] = []
        self.written = 0
        self.dropped = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: called with the rows of each batch once committed (budgets, metrics)
        self.on_dropped: Callable[[int], None] | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def start(self) -> None:
        await self.run(self.backend.connect)
        await self.run(self.backend.migrate)
        self._task = asyncio.create_task(self._flusher(), name="ledger-flusher")

    def record(self, row: tuple[Any, ...]) -> None:
        pending = self.pending
        if len(pending) >= self.max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log_event("ledger_dropped", logging.ERROR, count=self.dropped,
                          reason="the database is not keeping up (ledger.max_pending)")  # fmt: skip
            if self.on_dropped is not None:
                self.on_dropped(1)
            return
        pending.append(row)
        if len(pending) >= self.batch_size:
            self._wake.set()

    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is pending in one transaction; on failure it stays pending (retried)."""
        async with self._lock:
            if not self.pending:
                return
            rows, self.pending = self.pending, []
            try:
                await self.run(self.backend.write, rows)
            except Exception as exc:
                self.pending[:0] = rows[: self.max_pending - len(self.pending)]
                log_event("ledger_write_failed", logging.ERROR, count=len(rows),
                          error_class=type(exc).__name__)  # fmt: skip
                return
            self.written += len(rows)

    async def select(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """A query on the ledger's thread, after what is pending has been written (so a
        reader sees every request that has ended)."""
        await self.flush()
        async with self._lock:
            return await self.run(self.backend.select, sql, args)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        await self.run(self.backend.close)
        self._thread.shutdown(wait=True)

    # -- the questions asked of it ---------------------------------------------------------

    async def totals(
        self, day_start: float, month_start: float
    ) -> dict[str, tuple[int, float, int, float]]:
        """Per key: (tokens today, cost today, tokens this month, cost this month)."""
        rows = await self.select(
            f"SELECT key, SUM(CASE WHEN ts >= ? THEN {TOKENS_SQL} ELSE 0 END), "
            "SUM(CASE WHEN ts >= ? THEN cost ELSE 0 END), "
            f"SUM({TOKENS_SQL}), SUM(cost) FROM usage WHERE ts >= ? AND key <> '' GROUP BY key",
            day_start, day_start, month_start,
        )  # fmt: skip
        return {r[0]: (int(r[1] or 0), float(r[2] or 0), int(r[3] or 0), float(r[4] or 0))
                for r in rows}  # fmt: skip

    async def usage(self, by: str, since: float) -> list[dict[str, Any]]:
        """Requests, errors, tokens and cost since ``since``, grouped ``by`` one of GROUPS."""
        if by not in GROUPS:
            raise ValueError(f"by must be one of {', '.join(GROUPS)}")
        col = {"day": self.backend.bucket(86400), "hour": self.backend.bucket(3600)}.get(by, by)
        rows = await self.select(
            f"SELECT {col} AS g, COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
            "SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), "
            "SUM(cache_write_tokens), SUM(reasoning_tokens), SUM(cost), "
            f"SUM(duration_ms) FROM usage WHERE ts >= ? GROUP BY g ORDER BY g",
            since,
        )
        out = []
        for r in rows:
            g = r[0]
            if by in ("day", "hour"):
                g = int(g)
            out.append({
                by: g, "requests": int(r[1]), "errors": int(r[2] or 0),
                "input_tokens": int(r[3] or 0), "output_tokens": int(r[4] or 0),
                "cache_read_tokens": int(r[5] or 0), "cache_write_tokens": int(r[6] or 0),
                "reasoning_tokens": int(r[7] or 0), "cost": round(float(r[8] or 0), 6),
                "mean_ms": round(float(r[9] or 0) / int(r[1]), 1) if r[1] else 0.0,
            })  # fmt: skip
        return out

    async def series(
        self, by: str, since: float, seconds: int
    ) -> list[tuple[int, str, int, float]]:
        """(bucket start, key or model, tokens, cost) per ``seconds`` since ``since``."""
        if by not in ("key", "model"):
            raise ValueError("by must be key or model")
        bucket = self.backend.bucket(seconds)
        rows = await self.select(
            f"SELECT {bucket} AS b, {by}, SUM({TOKENS_SQL}), SUM(cost) FROM usage "
            f"WHERE ts >= ? GROUP BY b, {by} ORDER BY b",
            since,
        )
        return [(int(r[0]), r[1] or "", int(r[2] or 0), float(r[3] or 0)) for r in rows]
