"""``--workers N``: N gateway processes on one port, managed by gunicorn.

gunicorn is the process manager (it forks the workers, restarts one that dies, forwards
SIGTERM/SIGINT and waits ``graceful_timeout``); aiohttp's own gunicorn worker runs our app in
each. The gateway is stateless, so workers share nothing but the listening socket and the
thinking-signature key, which the master fixes before forking.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from aiohttp import web
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from .app import SHUTDOWN_FLUSH, create_app, load_signing_key
from .logs import configure_logging, log_event
from .settings import Settings


async def app_factory() -> web.AppRunner:
    """Called by aiohttp's gunicorn worker in each process: the app with our runner options."""
    from .__main__ import resolve_settings

    settings = resolve_settings(None, os.environ)
    configure_logging(settings.server.log_level)
    app = create_app(settings, env=os.environ)
    log_event("worker_started", pid=os.getpid(), mock=settings.mock)
    return web.AppRunner(
        app,
        access_log=None,
        # the client leaving cancels its handler, which closes the upstream request at once
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_FLUSH,
    )


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return app_factory


def run_workers(settings: Settings, args: argparse.Namespace, workers: int) -> None:
    """Run ``workers`` processes on the configured host and port until SIGTERM/SIGINT."""
    env = os.environ
    # Every worker re-reads settings from the environment: hand it the flags and decisions.
    if args.config:
        env["GATEWAY_CONFIG"] = args.config
    env["GATEWAY_HOST"] = settings.server.host
    env["GATEWAY_PORT"] = str(settings.server.port)
    env["GATEWAY_LOG_LEVEL"] = settings.server.log_level
    if settings.mock:
        env["GATEWAY_MOCK"] = "1"
    # One key for all workers, or a thinking block signed by one fails to verify in another.
    env["GATEWAY_SIGNING_KEY"] = load_signing_key(env).decode()
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401

        worker_class = "aiohttp.GunicornUVLoopWebWorker"
    except ImportError:
        worker_class = "aiohttp.GunicornWebWorker"
    _Gunicorn(
        {
            "bind": f"{settings.server.host}:{settings.server.port}",
            "workers": workers,
            "worker_class": worker_class,
            "graceful_timeout": int(settings.server.shutdown_grace) + 10,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning"
            if settings.server.log_level == "info"
            else settings.server.log_level,
            "proc_name": "messages-gateway",
        }
    ).run()
