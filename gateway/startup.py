"""Everything checked before the gateway listens, failing closed (issue 11).

``resolve_startup`` turns flags and the environment into what ``create_app`` needs, or raises
``StartupError``, whose text is the one line ``python -m gateway`` prints before exiting 2:

* settings (``load_settings``: every bad key, value or environment variable named);
* the upstream keys the routes need (never a silent switch to the mock: fake answers only
  with ``--mock`` / ``GATEWAY_MOCK=1`` / ``mock = true``);
* inbound keys (``GATEWAY_API_KEYS``, ``GATEWAY_API_KEYS_FILE``): set means at least one key;
* the thinking-signature key ring (``GATEWAY_SIGNING_KEY``, else a per-install file).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from .accounts.keyfile import KeyFileError
from .accounts.keyfile import load as load_keys
from .config import load_settings
from .failover.keys import KeyPoolError, pool_keys
from .safeguards.prompt import DEFAULT_PROMPT
from .settings import Settings, SettingsError, default_routes

#: Shortest key accepted in GATEWAY_SIGNING_KEY (the generated one is 64 hex characters).
MIN_SIGNING_KEY: Final = 32
MAKE_KEY: Final = "python -c 'import secrets; print(secrets.token_hex(32))'"


class StartupError(Exception):
    """A start-up problem; ``str(err)`` is the one line printed to the user."""


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The key ring for thinking signatures: sign with the first, verify with all."""

    keys: tuple[bytes, ...]
    #: where the key came from, for the start-up line ("GATEWAY_SIGNING_KEY", a file path)
    source: str
    #: the key dies with this process (its state file could not be written)
    ephemeral: bool = False


@dataclass(frozen=True, slots=True)
class Startup:
    settings: Settings
    api_keys: tuple[str, ...]
    signing: SigningKeys
    #: warnings to print before serving (a ledger that had to be turned off)
    notes: tuple[str, ...] = ()


def state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "messages-gateway"


def signing_keys(env: Mapping[str, str], *, create: bool = True) -> SigningKeys:
    """``GATEWAY_SIGNING_KEY`` (comma-separated: a ring, newest first), else the per-install
    key file, created on first use. Every process and machine serving one set of clients must
    share the ring: a thinking block signed by one gateway is verified by the next turn's."""
    given = env.get("GATEWAY_SIGNING_KEY")
    if given is not None:
        ring = [k.strip() for k in given.split(",") if k.strip()]
        if not ring:
            raise StartupError("GATEWAY_SIGNING_KEY is set but holds no key")
        for key in ring:
            if len(key) < MIN_SIGNING_KEY:
                raise StartupError(
                    f"GATEWAY_SIGNING_KEY: a key of {len(key)} characters is too short "
                    f"(at least {MIN_SIGNING_KEY}; make one with {MAKE_KEY})"
                )
        return SigningKeys(tuple(k.encode() for k in ring), "GATEWAY_SIGNING_KEY")
    path = state_dir(env) / "signing.key"
    try:
        stored = path.read_bytes().strip()
    except OSError:  # missing, or the state directory is unusable: made below, or ephemeral
        stored = b""
    if stored:
        if len(stored) < MIN_SIGNING_KEY:
            raise StartupError(
                f"signing key file {path} holds a key of {len(stored)} bytes "
                f"(at least {MIN_SIGNING_KEY}); delete it to have a new one made"
            )
        return SigningKeys((stored,), str(path))
    fresh = secrets.token_hex(32).encode()
    if not create:
        return SigningKeys((fresh,), str(path), ephemeral=not writable(path.parent))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(fresh)
    except FileExistsError:  # another worker won the race, or the file is unreadable
        try:
            stored = path.read_bytes().strip()
        except OSError:
            stored = b""
        if len(stored) >= MIN_SIGNING_KEY:
            return SigningKeys((stored,), str(path))
        return SigningKeys((fresh,), str(path), ephemeral=True)
    except OSError:
        return SigningKeys((fresh,), str(path), ephemeral=True)
    return SigningKeys((fresh,), str(path))


def writable(directory: Path) -> bool:
    for d in (directory, *directory.parents):
        if d.exists():
            return d.is_dir() and os.access(d, os.W_OK)
    return False


def api_keys_from(env: Mapping[str, str]) -> tuple[str, ...]:
    """Inbound gateway keys: ``GATEWAY_API_KEYS`` (comma-separated) and/or a key file (one a
    line, ``#`` comments). A variable that is set must yield at least one key: an empty list
    would otherwise mean no authentication at all."""
    keys: list[str] = []
    raw = env.get("GATEWAY_API_KEYS")
    if raw is not None:
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if not keys:
            raise StartupError(
                "GATEWAY_API_KEYS is set but holds no key (comma-separated keys; unset it to "
                "serve without inbound authentication)"
            )
    key_file = env.get("GATEWAY_API_KEYS_FILE")
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StartupError(f"GATEWAY_API_KEYS_FILE: {key_file!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise StartupError(
                f"GATEWAY_API_KEYS_FILE: {key_file!r} cannot be read: {reason}"
            ) from None
        found = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        if not found:
            raise StartupError(f"GATEWAY_API_KEYS_FILE: {key_file!r} holds no key")
        keys += found
    return tuple(keys)


def missing_upstream_keys(settings: Settings, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(upstream, variable) for every upstream a route's chain uses whose key variable is
    unset while no other source (``api_key_envs``, ``api_keys_file``) gives it keys."""
    out: list[tuple[str, str]] = []
    for rs in settings.routes or default_routes():
        for name in (rs.upstream, *(t.upstream for t in rs.fallbacks)):
            up = settings.upstreams[name]
            var = up.api_key_env
            pooled = up.api_key_envs or up.api_keys_file
            if var and not pooled and not env.get(var, "").strip() and (name, var) not in out:
                out.append((name, var))
    return out


def resolve_startup(
    env: Mapping[str, str],
    *,
    config: str | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
    create_signing_key: bool = True,
) -> Startup:
    """Settings, inbound keys and signing keys, all checked; StartupError names the problem."""
    try:
        settings = load_settings(config, env, overrides)
    except SettingsError as exc:
        raise StartupError(str(exc)) from None
    if not settings.mock:
        missing = missing_upstream_keys(settings, env)
        if missing:
            name, var = missing[0]
            raise StartupError(
                f"upstream {name!r} needs {var}, which is not set: export it, or start with "
                "--mock to serve fake answers from the built-in mock upstream"
            )
        for name, up in settings.upstreams.items():
            try:
                pool_keys(name, up, env)
            except KeyPoolError as exc:
                raise StartupError(str(exc)) from None
    load_prompt(settings)  # StartupError when the operator's prompt file cannot be read
    if settings.accounts.keys_file:
        try:
            load_keys(settings.accounts.keys_file)
        except KeyFileError as exc:
            raise StartupError(str(exc)) from None
    return Startup(
        settings=settings,
        api_keys=api_keys_from(env),
        signing=signing_keys(env, create=create_signing_key),
        notes=check_ledger(settings, env),
    )


def check_ledger(settings: Settings, env: Mapping[str, str]) -> tuple[str, ...]:
    """The ledger can be opened where the settings say (StartupError if not); the default
    place, when it cannot be written, turns the ledger off with a warning instead."""
    ls = settings.ledger
    if not ls.enabled:
        return ()
    if ls.dsn_env:
        if not env.get(ls.dsn_env, "").strip():
            raise StartupError(f"ledger.dsn_env: {ls.dsn_env} is not set")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StartupError(
                "ledger.dsn_env: PostgreSQL needs psycopg: pip install 'messages-gateway[postgres]'"
            ) from None
        return ()
    if ls.path:
        if ls.path != ":memory:" and not writable(Path(ls.path).parent):
            raise StartupError(f"ledger.path: {ls.path!r}: its directory cannot be written")
        return ()
    if writable(state_dir(env)):
        return ()
    settings.ledger.enabled = False
    return (
        f"the usage ledger is OFF: {state_dir(env)} cannot be written (set ledger.path or "
        "GATEWAY_LEDGER_PATH); budgets then start from zero at each restart",
    )


def check_port_free(host: str, port: int) -> None:
    """StartupError when ``host:port`` cannot be bound (in use, or not an address of ours)."""
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (SO_REUSEADDR, as aiohttp sets it)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def describe(startup: Startup) -> list[str]:
    """The ``--check-config`` report: routes, upstreams, keys, limits (no secrets)."""
    from .routing import resolve_routes

    s = startup.settings
    lines = [f"mock: {'on (every route is answered by the built-in mock)' if s.mock else 'off'}"]
    for route in resolve_routes(s, {}):
        lines.append(
            f"route {', '.join(route.patterns)} -> {route.name} ({route.dialect}, {route.base_url})"
        )
        for target in route.fallbacks:
            lines.append(f"  then {target.name} ({target.dialect}, {target.base_url})")
    for name, up in s.upstreams.items():
        sources = [up.api_key_env] if up.api_key_env else []
        sources += up.api_key_envs + ([up.api_keys_file] if up.api_keys_file else [])
        key = f"keys from {', '.join(sources)}" if sources else "no key"
        if len(sources) > 1:
            key += f" ({up.key_strategy})"
        limit = f", at most {up.max_concurrency} at once" if up.max_concurrency else ""
        lines.append(f"upstream {name}: {up.base_url} ({up.dialect}, {key}{limit})")
    auth = f"{len(startup.api_keys)} inbound key(s)" if startup.api_keys else "no inbound keys"
    lines.append(f"auth: {auth}")
    ring = startup.signing
    lines.append(
        f"signing keys: {len(ring.keys)} from {ring.source}"
        + (" (EPHEMERAL: the state directory is not writable)" if ring.ephemeral else "")
    )
    lines.append(f"listen: {s.server.host}:{s.server.port}")
    lines.append("settings: " + msgspec.json.encode(msgspec.structs.asdict(s.timeouts)).decode())
    lines.append("fallback: " + msgspec.json.encode(msgspec.structs.asdict(s.fallback)).decode())
    return lines


def load_prompt(settings: Settings) -> str:
    """The classifier's instructions: the operator's file, or the built-in ones."""
    path = settings.safeguards.prompt_file
    if not path:
        return DEFAULT_PROMPT
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise StartupError(f"safeguards.prompt_file: {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"safeguards.prompt_file: {path!r} cannot be read: {exc}") from None
    if not text:
        raise StartupError(f"safeguards.prompt_file: {path!r} is empty")
    return text
