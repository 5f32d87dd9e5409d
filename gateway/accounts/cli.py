"""``python -m gateway keys …`` and ``python -m gateway usage …`` (issue 17).

``keys add NAME`` prints a new key once and stores only its hash; ``keys list`` shows names and
limits; ``keys revoke NAME`` disables a key (a running gateway drops it within its
``accounts.reload_interval``, or at once on SIGHUP). ``usage`` reads the ledger and prints a
table (or ``--json``). Settings come as for the gateway: ``--config`` / ``GATEWAY_CONFIG`` and
the environment (``GATEWAY_KEYS_FILE``, ``GATEWAY_LEDGER_PATH``, the DSN variable).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from typing import Any

import orjson

from ..config import load_settings
from ..settings import Settings, SettingsError
from .dashboard import parse_since
from .keyfile import KeyEntry, KeyFileError, Limits, hash_key, load, new_key, save, valid_name
from .ledger import GROUPS, Ledger, backend_for

_LIMITS = ("rpm", "tpm", "concurrent", "daily_tokens", "monthly_tokens", "daily_cost",
           "monthly_cost")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway", description="named keys and usage")
    p.add_argument("--config", help="TOML settings file (default: GATEWAY_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="named client keys")
    keys.add_argument("--file", help="the keys file (default: accounts.keys_file)")
    ksub = keys.add_subparsers(dest="action", required=True)
    add = ksub.add_parser("add", help="make a key: printed once, only its hash is stored")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may open /dashboard")
    add.add_argument("--models", nargs="+", default=[], help="client model names or globs")
    for name in _LIMITS:
        typ = float if name.endswith("cost") else int
        add.add_argument("--" + name.replace("_", "-"), type=typ, dest=name)
    ksub.add_parser("list", help="names, limits (never keys or hashes)")
    revoke = ksub.add_parser("revoke", help="disable a key")
    revoke.add_argument("name")
    usage = sub.add_parser("usage", help="totals from the usage ledger")
    usage.add_argument("--by", choices=GROUPS, default="key")
    usage.add_argument("--since", default="7d", help="7d, 24h, 30m or a date (2026-11-01)")
    usage.add_argument("--json", action="store_true")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config, os.environ)
    except SettingsError as exc:
        raise SystemExit(f"messages-gateway: {exc}") from None


def _keys_path(args: argparse.Namespace, settings: Settings) -> str:
    path: str = args.file or settings.accounts.keys_file
    if not path:
        raise SystemExit(
            "messages-gateway: no keys file: pass --file, or set accounts.keys_file / "
            "GATEWAY_KEYS_FILE"
        )
    return path


def keys_command(args: argparse.Namespace, settings: Settings) -> None:
    path = _keys_path(args, settings)
    try:
        doc = load(path)
    except KeyFileError as exc:
        raise SystemExit(f"messages-gateway: {exc}") from None
    if args.action == "list":
        for e in doc.keys:
            limits = " ".join(f"{k}={v}" for k in _LIMITS if (v := getattr(e.limits, k)))
            flags = ("admin " if e.admin else "") + ("REVOKED " if e.disabled else "")
            models = ",".join(e.models) or "*"
            print(f"{e.name:24} {flags}models={models} {limits}".rstrip())
        return
    if args.action == "revoke":
        found = [e for e in doc.keys if e.name == args.name]
        if not found:
            raise SystemExit(f"messages-gateway: no key named {args.name!r} in {path}")
        found[0].disabled = True
        save(path, doc)
        print(f"revoked {args.name!r} in {path}", file=sys.stderr)
        if settings.redis.url:
            _revoke_in_fleet(settings, found[0].hash)
        return
    if not valid_name(args.name):
        raise SystemExit("messages-gateway: a name is letters, digits, . _ @ - (≤ 64)")
    if any(e.name == args.name for e in doc.keys):
        raise SystemExit(f"messages-gateway: {args.name!r} is already in {path}")
    key = new_key()
    given = Limits(**{k: getattr(args, k) for k in _LIMITS})
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc.keys.append(KeyEntry(name=args.name, hash=hash_key(key), models=args.models,
                             admin=args.admin, limits=given, created=created))  # fmt: skip
    save(path, doc)
    print(key)
    print(f"added {args.name!r} to {path}; the key above is shown once", file=sys.stderr)


def _revoke_in_fleet(settings: Settings, key_hash: str) -> None:
    """Tell every gateway of the fleet at once, through its Redis (each also rereads its
    keys file; this covers the copies of the file a rollout has not reached yet)."""
    import redis

    prefix = settings.redis.prefix
    try:
        client = redis.Redis.from_url(settings.redis.url, socket_timeout=5,
                                      socket_connect_timeout=5)  # fmt: skip
        client.sadd(prefix + "revoked", key_hash)
        client.publish(prefix + "events", orjson.dumps({"type": "revoke", "hash": key_hash}))
        client.close()
    except redis.RedisError as exc:
        raise SystemExit(
            f"messages-gateway: revoked in the keys file, but the fleet's Redis did not take it "
            f"({type(exc).__name__}): gateways drop the key when they reread their file"
        ) from None
    print("revoked across the fleet (Redis)", file=sys.stderr)


def _ledger_target(settings: Settings) -> tuple[str, str]:
    """(SQLite path, PostgreSQL DSN) of the ledger the settings name."""
    ls = settings.ledger
    dsn = os.environ.get(ls.dsn_env, "") if ls.dsn_env else ""
    if ls.dsn_env and not dsn:
        raise SystemExit(f"messages-gateway: ledger.dsn_env: {ls.dsn_env} is not set")
    if dsn:
        return "", dsn
    from ..startup import state_dir

    path = ls.path or str(state_dir(os.environ) / "usage.db")
    if not os.path.exists(path):
        raise SystemExit(f"messages-gateway: no ledger at {path}")
    return path, ""


async def _usage(path: str, dsn: str, by: str, since: float) -> list[dict[str, Any]]:
    ledger = Ledger(backend_for(path, dsn))
    await ledger.run(ledger.backend.connect)
    await ledger.run(ledger.backend.migrate)
    try:
        return await ledger.usage(by, since)
    finally:
        await ledger.close()


def usage_command(args: argparse.Namespace, settings: Settings) -> None:
    now = time.time()
    try:
        since = parse_since(args.since, now)
    except Exception as exc:
        raise SystemExit(f"messages-gateway: --since: {getattr(exc, 'message', exc)}") from None
    rows = asyncio.run(_usage(*_ledger_target(settings), args.by, since))
    if args.json:
        print(orjson.dumps(rows).decode())
        return
    cols = [args.by, "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
            "cache_write_tokens", "reasoning_tokens", "cost"]  # fmt: skip
    table = [[_cell(args.by, r[c]) if c == args.by else _num(r[c]) for c in cols] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(cols)]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in
                    enumerate(zip(cols, widths, strict=True))))  # fmt: skip
    for row in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))))  # fmt: skip
    if not rows:
        print(f"(no requests since {dt.datetime.fromtimestamp(since, dt.UTC):%Y-%m-%d %H:%M} UTC)")


def _cell(by: str, value: Any) -> str:
    if by in ("day", "hour"):
        fmt = "%Y-%m-%d" if by == "day" else "%Y-%m-%d %H:00"
        return dt.datetime.fromtimestamp(int(value), dt.UTC).strftime(fmt)
    return str(value) if value else "anonymous" if by == "key" else "-"


def _num(value: Any) -> str:
    return f"{value:,.4f}" if isinstance(value, float) else f"{value:,}"


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    settings = _settings(args)
    if args.command == "keys":
        keys_command(args, settings)
    else:
        usage_command(args, settings)
