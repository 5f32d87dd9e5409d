"""``python -m gateway``: parse flags, load settings, run the app.

A bad setting prints one line naming the key and value and exits with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping

import msgspec
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
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (gunicorn's aiohttp worker manages them)",
    )
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


def resolve_settings(args: argparse.Namespace | None, env: Mapping[str, str]) -> Settings:
    """Settings from file, environment and flags; switches to the mock when no key is set.

    Raises SystemExit(2) with one line on stderr for a bad setting.
    """
    overrides: dict[tuple[str, ...], object] = {}
    if args is not None:
        overrides = {
            ("server", "host"): args.host,
            ("server", "port"): args.port,
            ("server", "log_level"): args.log_level,
            ("mock",): True if args.mock else None,
        }
    try:
        settings = load_settings(args.config if args else None, env, overrides)
    except SettingsError as exc:
        print(f"messages-gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not settings.mock and needs_mock(settings, env):
        settings = msgspec.structs.replace(settings, mock=True)
    return settings


def install_uvloop() -> bool:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional, faster loop
    except ImportError:
        return False
    uvloop.install()
    return True


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = os.environ
    settings = resolve_settings(args, env)
    configure_logging(settings.server.log_level)
    if settings.mock:
        print(BANNER, file=sys.stderr, flush=True)
    from .app import SHUTDOWN_FLUSH, api_keys_from, create_app

    host, port = settings.server.host, settings.server.port
    if not _is_loopback(host) and not api_keys_from(env):
        print(
            f"messages-gateway: WARNING: listening on {host} without "
            "GATEWAY_API_KEYS: anyone who can reach this port can spend your upstream key",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"messages-gateway {__version__} listening on http://{host}:{port}"
        f"  (ANTHROPIC_BASE_URL=http://{host}:{port})"
        + (f" with {args.workers} workers" if args.workers > 1 else ""),
        file=sys.stderr,
        flush=True,
    )
    if args.workers > 1:
        from .workers import run_workers

        run_workers(settings, args, args.workers)
        return
    install_uvloop()
    app = create_app(settings, env=env)
    log_event("gateway_started", host=host, port=port, mock=settings.mock, pid=os.getpid())
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        handler_cancellation=True,
        print=None,
        # on_shutdown gives requests `shutdown_grace` seconds, then ends them all; this is how
        # long aiohttp then waits for their handlers to write their last bytes.
        shutdown_timeout=SHUTDOWN_FLUSH,
    )


if __name__ == "__main__":
    main()
