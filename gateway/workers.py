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
from prometheus_client import multiprocess

from .app import create_app, make_runner
from .logs import configure_logging, log_event
from .startup import Startup, StartupError, resolve_startup


async def app_factory() -> web.AppRunner:
    """Called by aiohttp's gunicorn worker in each process: the app with our runner options."""
    try:
        startup = resolve_startup(os.environ)
    except StartupError as exc:  # the master checked the same environment: not expected
        raise SystemExit(f"messages-gateway: {exc}") from None
    settings = startup.settings
    configure_logging(settings.server.log_level)
    app = create_app(settings, env=os.environ, signing_key=startup.signing.keys)
    log_event("worker_started", pid=os.getpid(), mock=settings.mock)
    return make_runner(app)


def _child_exit(server: Any, worker: Any) -> None:
    # A worker's gauges stop counting once it is gone; its counters still add up.
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return app_factory


def run_workers(startup: Startup, args: argparse.Namespace) -> None:
    """Run ``args.workers`` processes on the configured host and port until SIGTERM/SIGINT."""
    settings = startup.settings
    env = os.environ
    # Every worker re-reads settings from the environment: hand it the flags and decisions.
    if args.config:
        env["GATEWAY_CONFIG"] = args.config
    env["GATEWAY_HOST"] = settings.server.host
    env["GATEWAY_PORT"] = str(settings.server.port)
    env["GATEWAY_LOG_LEVEL"] = settings.server.log_level
    env["GATEWAY_MOCK"] = "1" if settings.mock else "0"
    # One key ring for all workers, or a thinking block signed by one fails in another.
    env["GATEWAY_SIGNING_KEY"] = ",".join(k.decode() for k in startup.signing.keys)
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401

        worker_class = "aiohttp.GunicornUVLoopWebWorker"
    except ImportError:
        worker_class = "aiohttp.GunicornWebWorker"
    _Gunicorn(
        {
            "bind": f"{settings.server.host}:{settings.server.port}",
            "workers": args.workers,
            "worker_class": worker_class,
            "graceful_timeout": int(settings.server.drain_delay + settings.server.shutdown_grace)
            + 10,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning"
            if settings.server.log_level == "info"
            else settings.server.log_level,
            "proc_name": "messages-gateway",
            "child_exit": _child_exit,
        }
    ).run()
