"""Fixtures for the fallback chain tests (issue 16): three mock upstreams and a gateway whose
one route tries them in order: ``u0`` (Responses) → ``u1`` (Chat) → ``u2`` (Responses)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.mock_upstream import MockUpstream
from gateway.settings import Settings
from tests.conftest import SIGNING_KEY, UPSTREAM_KEY, UPSTREAM_KEY_ENV, Upstream

CLIENT_MODEL = "claude-sonnet-5-5"
TARGETS = ("u0:model-a", "u1:model-b", "u2:model-c")
DIALECTS = ("responses", "chat", "responses")
PATHS = ("/v1/responses", "/v1/chat/completions", "/v1/responses")


def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def mocks(aiohttp_server: Any) -> list[Upstream]:
    out = []
    for _ in range(3):
        mock = MockUpstream()
        server = await aiohttp_server(mock.app)
        out.append(Upstream(mock=mock, url=str(server.make_url("/v1")), server=server))
    return out


ChainFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def chain_gateway(aiohttp_server: Any, mocks: list[Upstream]) -> ChainFactory:
    async def factory(
        *,
        route: dict[str, Any] | None = None,
        upstreams: dict[str, dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        **sections: Any,
    ) -> TestServer:
        ups: dict[str, Any] = {
            f"u{i}": {"base_url": m.url, "api_key_env": UPSTREAM_KEY_ENV, "dialect": DIALECTS[i]}
            for i, m in enumerate(mocks)
        }
        for name, extra in (upstreams or {}).items():
            ups[name] = {**ups[name], **extra}
        doc: dict[str, Any] = {
            "upstreams": ups,
            "retries": {"max_attempts": 1, "backoff_base": 0.01, "backoff_max": 0.05},
            "ledger": {"path": ":memory:"},  # nothing written outside the test
            "routes": [
                {
                    "match": ["*"],
                    "model": "model-a",
                    "upstream": "u0",
                    "fallbacks": [
                        {"upstream": "u1", "model": "model-b", "reasoning": False},
                        {"upstream": "u2", "model": "model-c"},
                    ],
                    **(route or {}),
                }
            ],
            **sections,
        }
        settings = msgspec.convert(doc, Settings)
        app = create_app(settings, env={UPSTREAM_KEY_ENV: UPSTREAM_KEY, **(env or {})},
                         signing_key=SIGNING_KEY)  # fmt: skip
        server: TestServer = await aiohttp_server(app)
        return server

    return factory
