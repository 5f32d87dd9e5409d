"""The usage ledger (issue 17 item 3): one row per request on SQLite and on a real PostgreSQL,
by the same code; budgets from it after a restart; a crash loses at most the last batch; the
``usage`` command and the admin endpoint read it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.accounts.keyfile import KeyFile, save
from gateway.accounts.ledger import COLUMNS
from gateway.mock_upstream import Script, Text
from tests.accounts.conftest import ASK, entry, get, key_of, post
from tests.conftest import GatewayFactory, Upstream

CANARY = "CANARY-ledger-prompt-5150"
PRICES = {"gpt-5": {"input": 2.0, "output": 8.0, "cache_read": 0.5}}


def read_rows(backend: str, where: str) -> list[dict[str, Any]]:
    if backend == "sqlite":
        with sqlite3.connect(where) as conn:
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM usage ORDER BY ts").fetchall()
    else:
        import psycopg

        with psycopg.connect(where) as conn:
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM usage ORDER BY ts").fetchall()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "usage.db")
    dsn: str = request.getfixturevalue("postgres_dsn")
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS usage")  # each test starts from an empty ledger
    return "postgresql", dsn


async def test_one_row_per_request_and_budgets_after_a_restart(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path,
    ledger_where: tuple[str, str],
) -> None:  # fmt: skip
    backend, where = ledger_where
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice", daily_tokens=400), entry("admin", admin=True)]))
    ledger = {"path": where} if backend == "sqlite" else {"dsn_env": "TEST_LEDGER_DSN"}
    sections: dict[str, Any] = {
        "accounts": {"keys_file": str(keys)}, "ledger": {**ledger, "flush_interval": 0.05},
        "prices": PRICES, "env": {"TEST_LEDGER_DSN": where},
    }  # fmt: skip
    gw = await make_gateway(**sections)
    ask = {**ASK, "messages": [{"role": "user", "content": CANARY}]}
    upstream.mock.enqueue(
        Script(items=[Text("one")], usage={"input_tokens": 100, "cached_tokens": 40,
                                           "output_tokens": 30, "reasoning_tokens": 10}),
        Script(items=[Text("two")], usage={"input_tokens": 50, "output_tokens": 20}),
        Script(status=500, error_message="upstream broke"),
        Script(items=[Text("three")], usage={"input_tokens": 200, "output_tokens": 100}),
    )  # fmt: skip
    status, _, first = await post(gw, key_of("alice"), ask)
    assert status == 200
    assert (await post(gw, key_of("alice"), {**ask, "stream": True}))[0] == 200
    assert (await post(gw, key_of("alice"), ask))[0] == 500
    assert (await post(gw, key_of("admin"), ask))[0] == 200
    await gw.close()  # shutdown writes what is pending

    rows = read_rows(backend, where)
    assert [(r["key"], r["status"], r["stream"], r["error_type"]) for r in rows] == [
        ("alice", 200, "false", None), ("alice", 200, "true", None),
        ("alice", 500, "false", "api_error"), ("admin", 200, "false", None)]  # fmt: skip
    one = rows[0]
    u = first["usage"]
    got = (one["input_tokens"], one["cache_read_tokens"], one["output_tokens"])
    assert got == (u["input_tokens"], u["cache_read_input_tokens"], u["output_tokens"])
    assert got == (60, 40, 30)
    assert one["reasoning_tokens"] == u["output_tokens_details"]["thinking_tokens"] == 10
    assert one["cost"] == pytest.approx((60 * 2.0 + 40 * 0.5 + 30 * 8.0) / 1e6)
    assert (one["path"], one["route"], one["target"], one["model"]) == (
        "/v1/messages", "default:gpt-5", "default:gpt-5", "claude-sonnet-5-5")  # fmt: skip
    assert one["request_id"].startswith("req_") and one["duration_ms"] > 0
    assert CANARY not in json.dumps(rows)  # never the prompt

    # A restart: alice's spend today (60 + 30 + 50 + 20 = 160 of 400) comes back from the
    # ledger, and the next answer (300) takes her over.
    again = await make_gateway(**sections)
    upstream.mock.enqueue(Script(items=[Text("x")], usage={"input_tokens": 200,
                                                           "output_tokens": 100}))  # fmt: skip
    assert (await post(again, key_of("alice"), ask))[0] == 200
    status, headers, body = await post(again, key_of("alice"), ask)
    assert status == 429 and headers["x-should-retry"] == "false"
    assert "daily token budget (400)" in body["error"]["message"]
    _, usage = await get(again, "/v1/admin/usage?by=key&since=1d", key_of("admin"))
    alice = next(r for r in usage["data"] if r["key"] == "alice")
    assert (alice["requests"], alice["errors"], alice["input_tokens"],
            alice["output_tokens"]) == (5, 2, 310, 150)  # fmt: skip


async def test_admin_usage_needs_an_admin_and_good_arguments(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice"), entry("admin", admin=True)]))
    gw = await make_gateway(accounts={"keys_file": str(keys)})
    status, body = await get(gw, "/v1/admin/usage", key_of("alice"))
    assert (status, body["error"]["type"]) == (403, "permission_error")
    status, body = await get(gw, "/v1/admin/usage?since=yesterday", key_of("admin"))
    assert status == 400
    assert body["error"]["message"] == (
        "since: 'yesterday' is not a duration (7d, 24h, 30m) or a date (2026-11-01)"
    )
    status, body = await get(gw, "/v1/admin/usage?by=colour", key_of("admin"))
    assert status == 400 and body["error"]["message"].startswith("by: one of key, model")
    assert (await get(gw, "/v1/admin/usage?by=model&since=2026-01-01", key_of("admin")))[0] == 200


# ---------------------------------------------------------------------------------------------
# The real process: a crash, a clean stop, the commands


def gateway_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_STATE_HOME": str(tmp_path),
            **extra}  # fmt: skip


async def start(tmp_path: Path, port: int, flush: float) -> asyncio.subprocess.Process:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[ledger]\npath = \"{tmp_path / 'usage.db'}\"\nflush_interval = {flush}\n"
                      "batch_size = 100000\n")  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--mock", "--port", str(port), "--config", str(config),
        env=gateway_env(tmp_path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(20), aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)


async def send(port: int, n: int) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(f"http://127.0.0.1:{port}/v1/messages", json=ASK) as r:
                assert r.status == 200


def count(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "usage.db") as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM usage").fetchone()
    return int(n)


async def test_a_crash_loses_at_most_the_last_batch(tmp_path: Path, unused_tcp_port: int) -> None:
    proc = await start(tmp_path, unused_tcp_port, flush=0.2)
    await send(unused_tcp_port, 30)
    await asyncio.sleep(0.8)  # several flush intervals: those 30 are committed
    await send(unused_tcp_port, 5)  # the last batch, in memory
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert 30 <= count(tmp_path) <= 35


async def test_a_clean_stop_writes_every_row(tmp_path: Path, unused_tcp_port: int) -> None:
    proc = await start(tmp_path, unused_tcp_port, flush=3600)  # nothing written until the stop
    await send(unused_tcp_port, 20)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert count(tmp_path) == 20


def cli(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *argv], capture_output=True,
                          text=True, timeout=60, env=gateway_env(tmp_path, **env))  # fmt: skip


def test_the_keys_and_usage_commands(tmp_path: Path) -> None:
    keys = str(tmp_path / "keys.json")
    added = cli(tmp_path, "keys", "--file", keys, "add", "alice", "--rpm", "60",
                "--daily-cost", "2.5", "--models", "*sonnet*")  # fmt: skip
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("sk-gw-") and len(key) > 40
    assert key not in Path(keys).read_text()  # only its hash is kept
    listed = cli(tmp_path, "keys", "--file", keys, "list")
    assert listed.stdout.split() == ["alice", "models=*sonnet*", "rpm=60", "daily_cost=2.5"]
    assert cli(tmp_path, "keys", "--file", keys, "add", "alice").returncode != 0
    assert cli(tmp_path, "keys", "--file", keys, "revoke", "alice").returncode == 0
    assert "REVOKED" in cli(tmp_path, "keys", "--file", keys, "list").stdout

    db = tmp_path / "usage.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE usage ({', '.join(COLUMNS)})")
        row = (0.0, "req_1", "alice", "/v1/messages", "r", "t", "m", 200, None, "false",
               10, 5, 0, 0, 0, 0.25, 12.0)  # fmt: skip
        import time

        conn.execute(f"INSERT INTO usage VALUES ({', '.join('?' * len(COLUMNS))})",
                     (time.time(), *row[1:]))  # fmt: skip
    table = cli(tmp_path, "usage", "--by", "key", "--since", "1d", GATEWAY_LEDGER_PATH=str(db))
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()
    assert header.split()[:3] == ["key", "requests", "errors"]
    assert line.split() == ["alice", "1", "0", "10", "5", "0", "0", "0", "0.2500"]
    as_json = cli(tmp_path, "usage", "--json", "--since", "1d", GATEWAY_LEDGER_PATH=str(db))
    assert json.loads(as_json.stdout)[0]["cost"] == 0.25
    missing = cli(tmp_path, "usage", GATEWAY_LEDGER_PATH=str(tmp_path / "none.db"))
    assert missing.returncode != 0 and "no ledger at" in missing.stderr
