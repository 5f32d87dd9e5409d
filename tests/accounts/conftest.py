"""Fixtures for the shared-box tests (issue 17): a gateway with a keys file of named keys."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.accounts.keyfile import KeyEntry, KeyFile, Limits, hash_key, save
from tests.conftest import GatewayFactory

MODEL = "claude-sonnet-5-5"
ASK = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}


def key_of(name: str) -> str:
    """Each test key is derived from its name (the file holds only its hash)."""
    return f"sk-gw-test-{name}-0123456789abcdef"


def entry(name: str, *, admin: bool = False, models: list[str] | None = None,
          **limits: Any) -> KeyEntry:  # fmt: skip
    return KeyEntry(name=name, hash=hash_key(key_of(name)), admin=admin,
                    models=models or [], limits=Limits(**limits))  # fmt: skip


KeysGateway = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def keys_gateway(make_gateway: GatewayFactory, keys_file: Path) -> KeysGateway:
    """A gateway whose keys file holds ``entries``; ``sections`` as for make_gateway."""

    async def factory(*entries: KeyEntry, **sections: Any) -> TestServer:
        save(keys_file, KeyFile(keys=list(entries)))
        accounts = {"keys_file": str(keys_file), "reload_interval": 0.05,
                    **sections.pop("accounts", {})}  # fmt: skip
        return await make_gateway(accounts=accounts, **sections)

    return factory


async def post(
    gw: TestServer, key: str | None, doc: dict[str, Any] | None = None, path: str = "/v1/messages"
) -> tuple[int, dict[str, str], Any]:
    headers = {"x-api-key": key} if key else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.make_url(path), json=doc or ASK, headers=headers) as r,
    ):
        raw = await r.read()
        body: Any = raw
        if r.content_type == "application/json":
            body = await r.json()
        return r.status, {k.lower(): v for k, v in r.headers.items()}, body


async def get(gw: TestServer, path: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"x-api-key": key} if key else {}
    async with aiohttp.ClientSession() as s, s.get(gw.make_url(path), headers=headers) as r:
        return r.status, await r.json() if r.content_type == "application/json" else await r.text()


# ---------------------------------------------------------------------------------------------
# A real PostgreSQL server (Debian's postgresql), started for the session and stopped after.


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (Debian: apt-get install postgresql); .ci/run installs it"
        )
    return found[-1].parent


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN of a fresh PostgreSQL cluster on a free loopback port (trust auth)."""
    bindir = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    base.chmod(0o755)
    data, log = base / "data", base / "log"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its own user runs it
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "gateway", "--no-sync")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    try:
        yield f"postgresql://gateway@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60, check=False)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)
