"""``python -m gateway``: parse flags, load settings, run the app.

A bad setting prints one line naming the key and value and exits with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping

from aiohttp import web

from . import __version__
from .logs import configure_logging, log_event
from .settings import DEFAULT_OPENAI_BASE_URL, Settings, SettingsError, load_settings

BANNER = """
************************************************************************
*  messages-gateway is serving FAKE answers from its built-in mock      *
*  upstream: no OPENAI_API_KEY is set. Export OPENAI_API_KEY (and       *
*  optionally OPENAI_BASE_URL) and restart to reach a real model.       *
************************************************************************
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    p.add_argument("--config", help="TOML settings file (default: $GATEWAY_CONFIG)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="bind port (default 8082)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--mock", action="store_true", help="serve from the built-in mock upstream")
    p.add_argument("--version", action="version", version=f"messages-gateway {__version__}")
    return p.parse_args(argv)


def needs_mock(settings: Settings, env: Mapping[str, str]) -> bool:
    """True when a route would reach api.openai.com without a key: serve fake answers instead."""
    for up in settings.upstreams.values():
        if up.base_url.rstrip("/") == DEFAULT_OPENAI_BASE_URL and not (
            up.api_key_env and env.get(up.api_key_env)
        ):
            return True
    return False


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = os.environ
    overrides = {
        ("server", "host"): args.host,
        ("server", "port"): args.port,
        ("server", "log_level"): args.log_level,
        ("mock",): True if args.mock else None,
    }
    try:
        settings = load_settings(args.config, env, overrides)
    except SettingsError as exc:
        print(f"messages-gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not settings.mock and needs_mock(settings, env):
        import msgspec

        settings = msgspec.structs.replace(settings, mock=True)
    configure_logging(settings.server.log_level)
    if settings.mock:
        print(BANNER, file=sys.stderr, flush=True)
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional, faster loop

        uvloop.install()
    except ImportError:
        pass
    from .app import api_keys_from, create_app

    if not _is_loopback(settings.server.host) and not api_keys_from(env):
        print(
            f"messages-gateway: WARNING: listening on {settings.server.host} without "
            "GATEWAY_API_KEYS: anyone who can reach this port can spend your upstream key",
            file=sys.stderr,
            flush=True,
        )
    app = create_app(settings, env=env)
    host, port = settings.server.host, settings.server.port
    log_event("gateway_started", host=host, port=port, mock=settings.mock, pid=os.getpid())
    print(
        f"messages-gateway {__version__} listening on http://{host}:{port}"
        f"  (ANTHROPIC_BASE_URL=http://{host}:{port})",
        file=sys.stderr,
        flush=True,
    )
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        handler_cancellation=True,
        print=None,
        # on_shutdown gives streams `shutdown_grace` seconds, then ends them with an error
        # event; this is how long aiohttp then waits for their handlers to write it.
        shutdown_timeout=settings.server.shutdown_grace + 5.0,
    )


if __name__ == "__main__":
    main()
