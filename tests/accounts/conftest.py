"""Fixtures for the shared-box tests (issue 17): a gateway with a keys file of named keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
