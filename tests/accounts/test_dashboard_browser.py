"""The status page in a real browser (issue 17 item 4): headless Chromium opens /dashboard on
a live gateway (admin key as the Basic-auth password); the page must render without a console
error, and its usage table must show each key's tokens exactly as the admin usage endpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from playwright.async_api import ConsoleMessage, Error, async_playwright

from tests.accounts.conftest import ASK, KeysGateway, entry, key_of, post
from tests.conftest import Upstream

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 15_000
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def chromium() -> str:
    """The browser's path; a missing one fails the test (never a skip): CI installs it."""
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: the status page test drives Debian's chromium "
        "(apt-get install chromium); it is never skipped"
    )
    return str(CHROMIUM)


def screenshot_path() -> Path:
    shot = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts")) / "dashboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    return shot


def ask(text: str) -> dict[str, Any]:
    return {**ASK, "messages": [{"role": "user", "content": text}]}


async def usage_totals(gw: TestServer) -> dict[str, int]:
    """Tokens per key name over the last day, as the admin endpoint counts them."""
    headers = {"x-api-key": key_of("admin")}
    url = gw.make_url("/v1/admin/usage").with_query(by="key", since="1d")
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s,
        s.get(url, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        doc = await r.json()
    return {row["key"]: sum(int(row[f]) for f in TOKEN_FIELDS) for row in doc["data"]}


async def test_dashboard_renders_usage_in_chromium(
    keys_gateway: KeysGateway, upstream: Upstream
) -> None:
    executable = chromium()
    gw = await keys_gateway(entry("admin", admin=True), entry("alice"), entry("bob", rpm=600),
                            env={"GATEWAY_API_KEYS": "sk-anonymous-dashboard"})  # fmt: skip
    for text in ("hi", "hello there"):
        status, _, body = await post(gw, key_of("alice"), ask(text))
        assert status == 200, body
    for text in ("a much longer question " * 40, "and another long one " * 25, "short"):
        status, _, body = await post(gw, key_of("bob"), ask(text))
        assert status == 200, body
    # an anonymous key (GATEWAY_API_KEYS): a usage row with no key name
    assert (await post(gw, "sk-anonymous-dashboard", ask("hi")))[0] == 200
    assert len(upstream.mock.requests) == 6
    # an unknown key: a 401 in the last errors (and no usage row: nobody was known)
    status, _, body = await post(gw, "sk-gw-test-nobody-0123456789abcdef", ask("hi"))
    assert status == 401, body

    totals = await usage_totals(gw)
    assert totals["alice"] > 0 and totals["bob"] > 0, totals
    assert totals["alice"] != totals["bob"], totals

    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            problems.append(f"console {msg.type}: {msg.text} ({msg.location})")

    def on_page_error(exc: Error) -> None:
        problems.append(f"page error: {exc}")

    shot = screenshot_path()
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=WAIT_MS
        )
        try:
            context = await browser.new_context(
                http_credentials={"username": "admin", "password": key_of("admin")},
                viewport={"width": 1280, "height": 900},
            )
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            response = await page.goto(str(gw.make_url("/dashboard")), timeout=WAIT_MS)
            assert response is not None and response.status == 200
            assert await page.title() == "messages-gateway status"
            for name in ("alice", "bob"):
                await page.wait_for_selector(f'tr[data-key="{name}"] td.tokens', timeout=WAIT_MS)
            await page.wait_for_selector("#legend-tokens span", timeout=WAIT_MS)
            # tokens over time per model too (and cost per key: none here, said so)
            model_legend = await page.text_content("#legend-model-tokens", timeout=WAIT_MS)
            assert model_legend == "claude-sonnet-5-5"
            cost_legend = await page.text_content("#legend-cost", timeout=WAIT_MS)
            assert cost_legend == "no cost in the last 24 h"
            shown = {
                name: await page.text_content(f'tr[data-key="{name}"] td.tokens', timeout=WAIT_MS)
                for name in ("alice", "bob")
            }
            anonymous = await page.text_content('tr[data-key=""] td:first-child', timeout=WAIT_MS)
            assert anonymous == "anonymous"
            last_error = await page.text_content("#t-errors tr td:nth-child(2)", timeout=WAIT_MS)
            assert last_error == "401"
            assert await page.locator("#error").is_hidden()
            assert (await page.text_content("#updated", timeout=WAIT_MS) or "").startswith(
                "updated "
            )
            await page.screenshot(path=str(shot), full_page=True, timeout=WAIT_MS)
            await context.close()
        finally:
            await browser.close()

    assert not problems, "\n".join(problems)
    assert shown == {"alice": str(totals["alice"]), "bob": str(totals["bob"])}, (shown, totals)
    assert shot.is_file() and shot.stat().st_size > 0, shot


async def test_dashboard_needs_an_admin_key(keys_gateway: KeysGateway) -> None:
    gw = await keys_gateway(entry("admin", admin=True), entry("alice"))
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.get(gw.make_url("/dashboard")) as r:
            assert r.status == 401
            assert r.headers.get("WWW-Authenticate", "").startswith("Basic")
        headers = {"x-api-key": key_of("alice")}
        for path in ("/dashboard", "/dashboard/data"):
            async with s.get(gw.make_url(path), headers=headers) as r:
                assert r.status == 403, path
                doc = await r.json()
                assert doc["error"]["type"] == "permission_error", doc
