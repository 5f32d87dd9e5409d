"""``python -m gateway``: check everything, then serve.

Any problem found before listening (a bad setting, a missing key, a port in use) prints one
line and exits with status 2 (issue 11): the gateway never starts half-configured, and never
serves fake answers unless asked to with ``--mock``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping

from . import __version__
from .logs import configure_logging, log_event
from .startup import Startup, StartupError, bind_socket, check_port_free, describe, resolve_startup

BANNER = """
************************************************************************
*  messages-gateway is serving FAKE answers from its built-in mock      *
*  upstream, because it was started with --mock (or GATEWAY_MOCK=1 or   *
*  mock = true): every route is answered by the mock and no request     *
*  leaves this machine. Start without it to reach your upstreams.       *
************************************************************************
"""

DESCRIPTION = """\
The Anthropic Messages API (POST /v1/messages, streaming or not, tools, thinking, images) in
front of OpenAI's Responses API or any Chat Completions server. Point a client at it with
ANTHROPIC_BASE_URL=http://HOST:PORT.
"""

EPILOG = """\
environment:
  OPENAI_API_KEY          the upstream key of the default upstream (each upstream names its
                          own variable with api_key_env; "" for servers that need none)
  OPENAI_BASE_URL         base URL of the default upstream (https://api.openai.com/v1)
  GATEWAY_CONFIG          TOML settings file (config/gateway.toml documents every key)
  GATEWAY_API_KEYS        comma-separated keys clients must present (x-api-key or Bearer)
  GATEWAY_API_KEYS_FILE   a file of such keys, one a line
  GATEWAY_SIGNING_KEY     key(s) signing thinking blocks, comma-separated, newest first;
                          share them across every process and machine serving one client
  GATEWAY_MOCK=1          the same as --mock
  GATEWAY_*               most settings: GATEWAY_PORT, GATEWAY_BIG_MODEL, ... (README)

the mock:
  --mock serves fake "echo:" answers from a built-in OpenAI-compatible mock upstream, for
  trying the gateway without a key. Without --mock, a route whose upstream key is missing
  stops start-up with a message naming the variable.

keys and usage (python -m gateway keys --help, python -m gateway usage --help):
  keys add NAME [--admin] [--rpm N] …   a named client key, printed once (keys file: hash)
  keys list | keys revoke NAME          the keys file's names and limits; disable one
  usage --by key --since 7d             totals from the usage ledger

exit status: 0 after a clean shutdown (SIGTERM / SIGINT), 2 for a problem found at start-up.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m gateway",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="TOML settings file (default: $GATEWAY_CONFIG)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8082)")
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="JSON log lines on stderr from this level up (default info)",
    )
    p.add_argument(
        "--mock",
        action="store_true",
        help="serve fake answers from the built-in mock upstream (no key needed)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N processes sharing the port, managed by gunicorn (default 1)",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="check settings, keys and the port, print what would be served, and exit",
    )
    p.add_argument("--version", action="version", version=f"messages-gateway {__version__}")
    return p.parse_args(argv)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def overrides_from(args: argparse.Namespace) -> dict[tuple[str, ...], object]:
    return {
        ("server", "host"): args.host,
        ("server", "port"): args.port,
        ("server", "log_level"): args.log_level,
        ("mock",): True if args.mock else None,
    }


def fail(message: str) -> None:
    print(f"messages-gateway: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def install_uvloop() -> bool:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional, faster loop
    except ImportError:
        return False
    uvloop.install()
    return True


def _warn(startup: Startup, env: Mapping[str, str]) -> None:
    host = startup.settings.server.host
    if not _is_loopback(host) and not startup.api_keys:
        print(
            f"messages-gateway: WARNING: listening on {host} without "
            "GATEWAY_API_KEYS: anyone who can reach this port can spend your upstream key",
            file=sys.stderr,
            flush=True,
        )
    for note in startup.notes:
        print(f"messages-gateway: WARNING: {note}", file=sys.stderr, flush=True)
    if startup.signing.ephemeral:
        print(
            f"messages-gateway: WARNING: GATEWAY_SIGNING_KEY is unset and "
            f"{startup.signing.source} cannot be written: thinking signatures use a key that "
            "dies with this process (clients' earlier thinking is dropped after a restart). "
            "Set GATEWAY_SIGNING_KEY.",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    rest = sys.argv[1:] if argv is None else argv
    if (rest and rest[0] in ("keys", "usage")) or (
        rest[:1] == ["--config"] and rest[2:3] in (["keys"], ["usage"])
    ):
        from .accounts.cli import main as accounts_main  # named keys and the usage ledger

        accounts_main(rest)
        return
    args = parse_args(argv)
    env = os.environ
    try:
        startup = resolve_startup(
            env,
            config=args.config,
            overrides=overrides_from(args),
            create_signing_key=not args.check_config,
        )
        settings = startup.settings
        host, port = settings.server.host, settings.server.port
        if args.workers < 1:
            raise StartupError(f"--workers {args.workers}: expected 1 or more")
        if args.check_config:
            check_port_free(host, port)
            print("\n".join(describe(startup)))
            print("messages-gateway: configuration OK")
            return
        sock = bind_socket(host, port) if args.workers == 1 else None
        if sock is None:
            check_port_free(host, port)
    except StartupError as exc:
        fail(str(exc))
        return
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        return
    configure_logging(settings.server.log_level)
    if settings.mock:
        print(BANNER, file=sys.stderr, flush=True)
    _warn(startup, env)
    print(
        f"messages-gateway {__version__} listening on http://{host}:{port}"
        f"  (ANTHROPIC_BASE_URL=http://{host}:{port})"
        + (f" with {args.workers} workers" if args.workers > 1 else ""),
        file=sys.stderr,
        flush=True,
    )
    if sock is None:
        # Every worker writes its metrics here, so that /metrics sums them (prometheus-client
        # reads the variable when first imported: before the workers are forked).
        metrics_dir = tempfile.mkdtemp(prefix="messages-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            from .workers import run_workers

            run_workers(startup, args)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return
    from .app import create_app, serve

    install_uvloop()
    app = create_app(settings, env=env, signing_key=startup.signing.keys)
    log_event("gateway_started", host=host, port=port, mock=settings.mock, pid=os.getpid())
    serve(app, sock)
    log_event("gateway_stopped", pid=os.getpid())


if __name__ == "__main__":
    main()
