"""Shared fixtures: the mock upstream, a gateway in front of it, the official SDK, log capture.

Everything runs over real loopback sockets (pytest-aiohttp's ``aiohttp_server``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import msgspec
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import settings as hypothesis_settings

from gateway.app import create_app
from gateway.logs import JSONFormatter
from gateway.mock_upstream import MockUpstream
from gateway.settings import Settings

# CI runs the property tests on a fixed sequence of examples, so a red run is reproducible
# and never a coin toss; developers' runs stay random and keep finding new cases.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

SIGNING_KEY = b"test-signing-key-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-CANARY-0123456789"
UPSTREAM_KEY_ENV = "TEST_UPSTREAM_KEY"


@dataclass
class Upstream:
    mock: MockUpstream
    url: str  # base URL, ".../v1"
    server: TestServer


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    mock = MockUpstream()
    server = await aiohttp_server(mock.app)
    return Upstream(mock=mock, url=str(server.make_url("/v1")), server=server)


def make_settings(upstream_url: str, **sections: Any) -> Settings:
    """Gateway settings pointing at ``upstream_url``; ``sections`` override TOML sections."""
    doc: dict[str, Any] = {
        "upstreams": {
            "default": {"base_url": upstream_url, "api_key_env": UPSTREAM_KEY_ENV},
        },
        "retries": {"max_attempts": 1, "backoff_base": 0.01, "backoff_max": 0.05},
        "ledger": {"path": ":memory:"},  # nothing written outside the test
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return msgspec.convert(doc, Settings)


GatewayFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def make_gateway(aiohttp_server: Any, upstream: Upstream) -> GatewayFactory:
    async def factory(env: dict[str, str] | None = None, **sections: Any) -> TestServer:
        settings = make_settings(upstream.url, **sections)
        full_env = {UPSTREAM_KEY_ENV: UPSTREAM_KEY, **(env or {})}
        app = create_app(settings, env=full_env, signing_key=SIGNING_KEY)
        server: TestServer = await aiohttp_server(app)
        return server

    return factory


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> TestServer:
    return await make_gateway()


@pytest.fixture
async def sdk(gateway: TestServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=str(gateway.make_url("")), api_key="sk-ant-client-CANARY", max_retries=0
    )
    yield client
    await client.close()


class _Collect(logging.Handler):
    def __init__(self, sink: list[str], json_lines: bool) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        if json_lines:
            self.setFormatter(JSONFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log line any logger writes during the test (gateway ones as JSON)."""
    lines: list[str] = []
    gw = logging.getLogger("gateway")
    root = logging.getLogger()
    gw_handler, root_handler = _Collect(lines, True), _Collect(lines, False)
    old_gw, old_root = gw.level, root.level
    gw.addHandler(gw_handler)
    gw.setLevel(logging.DEBUG)
    gw.propagate = False
    root.addHandler(root_handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        gw.removeHandler(gw_handler)
        root.removeHandler(root_handler)
        gw.setLevel(old_gw)
        root.setLevel(old_root)
        gw.propagate = True
