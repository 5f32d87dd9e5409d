"""Loading settings: a TOML file, then environment overrides, then CLI flags (applied by __main__).

Every key is documented in ``config/gateway.toml``. Unknown keys and bad values are errors that
name the key and the value, and bad environment values name the variable (``SettingsError``);
``python -m gateway`` prints that one line and exits with status 2."""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from .errors import split_validation_error
from .settings import Settings, SettingsError, UpstreamSettings

ENV_OVERRIDES: Final[dict[str, tuple[str, ...]]] = {
    "GATEWAY_HOST": ("server", "host"),
    "GATEWAY_PORT": ("server", "port"),
    "GATEWAY_LOG_LEVEL": ("server", "log_level"),
    "GATEWAY_MAX_BODY_BYTES": ("server", "max_body_bytes"),
    "GATEWAY_MAX_IN_FLIGHT": ("server", "max_in_flight"),
    "GATEWAY_SHUTDOWN_GRACE": ("server", "shutdown_grace"),
    "GATEWAY_DRAIN_DELAY": ("server", "drain_delay"),
    "GATEWAY_MAX_RECEIVING": ("server", "max_receiving"),
    "GATEWAY_BIG_MODEL": ("models", "big"),
    "GATEWAY_SMALL_MODEL": ("models", "small"),
    "GATEWAY_CONNECT_TIMEOUT": ("timeouts", "connect"),
    "GATEWAY_HEADERS_TIMEOUT": ("timeouts", "headers"),
    "GATEWAY_IDLE_TIMEOUT": ("timeouts", "idle"),
    "GATEWAY_TOTAL_TIMEOUT": ("timeouts", "total"),
    "GATEWAY_CLIENT_BODY_TIMEOUT": ("timeouts", "client_body"),
    "GATEWAY_CLIENT_SEND_TIMEOUT": ("timeouts", "client_send"),
    "GATEWAY_MAX_ATTEMPTS": ("retries", "max_attempts"),
    "OPENAI_BASE_URL": ("upstreams", "default", "base_url"),
    "GATEWAY_MOCK": ("mock",),
    "GATEWAY_KEYS_FILE": ("accounts", "keys_file"),
    "GATEWAY_LEDGER_PATH": ("ledger", "path"),
    "GATEWAY_REDIS_URL": ("redis", "url"),
    "GATEWAY_TRACING": ("tracing", "enabled"),
}


def _set_path(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _field_type(path: tuple[str, ...]) -> Any:
    """The annotated type of the setting at ``path`` (dict tables step through their values)."""
    typ: Any = Settings
    for part in path:
        if typing.get_origin(typ) is dict:
            typ = typing.get_args(typ)[1]
            continue
        typ = typing.get_type_hints(typ, include_extras=True)[part]
    return typ


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _env_value(var: str, raw: str, path: tuple[str, ...]) -> Any:
    """An environment value converted to its setting's type (``GATEWAY_BIG_MODEL=1234`` is a
    model name, ``GATEWAY_PORT=abc`` an error naming the variable)."""
    typ = _field_type(path)
    if typ is bool:
        low = raw.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise SettingsError(f"bad environment variable {var}={raw!r}: expected 1/0, true/false")
    try:
        return msgspec.convert(raw.strip(), typ, strict=False)
    except msgspec.ValidationError as exc:
        msg, _ = split_validation_error(str(exc))
        raise SettingsError(f"bad environment variable {var}={raw!r}: {msg}") from None


def _convert(value: Any, typ: type[Any], prefix: str, doc: Any) -> Any:
    """``msgspec.convert`` whose errors name the setting (``prefix`` + msgspec's path)."""
    try:
        return msgspec.convert(value, typ, strict=True)
    except msgspec.ValidationError as exc:
        msg, jsonpath = split_validation_error(str(exc))
        where = ".".join(x for x in (prefix, (jsonpath or "$")[2:].lstrip(".")) if x)
        unknown = re.match(r"Object contains unknown field `(.+)`$", msg)
        if unknown:
            # Name the misspelt key itself, not the table holding it.
            name = ".".join(x for x in (where, unknown.group(1)) if x)
            raise SettingsError(f"bad setting {name}: unknown key") from None
        shown = _get_path(doc, jsonpath) if jsonpath else None
        shown_text = "" if shown is None else f" = {shown!r}"
        raise SettingsError(f"bad setting {where or '(top level)'}{shown_text}: {msg}") from None


def _get_path(doc: Any, jsonpath: str) -> Any:
    """Follow a msgspec error path (``$.routes[0].model``) into the raw document."""
    node = doc
    for token in jsonpath.replace("[", ".[").split(".")[1:]:
        if token.startswith("["):
            try:
                idx = int(token[1:-1])
            except ValueError:  # "[...]": a dict key msgspec does not name
                return None
            node = node[idx] if isinstance(node, list) and idx < len(node) else None
        else:
            node = node.get(token) if isinstance(node, dict) else None
    return node


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> Settings:
    """Read the TOML file (if any), apply environment then explicit overrides, validate."""
    env = os.environ if env is None else env
    doc: dict[str, Any] = {}
    if path is None and env.get("GATEWAY_CONFIG"):
        path = env["GATEWAY_CONFIG"]
    if path is not None:
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file {str(p)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"config file {str(p)!r} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    for var, key in ENV_OVERRIDES.items():
        raw = env.get(var)
        if raw is not None and raw.strip():
            _set_path(doc, key, _env_value(var, raw, key))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(doc, key, value)
    # Each upstream table on its own first: msgspec names a dict entry "[...]", not its key.
    tables = doc.get("upstreams")
    if isinstance(tables, dict):
        for name, table in tables.items():
            headers = table.get("headers") if isinstance(table, dict) else None
            if isinstance(headers, dict):
                for header, value in headers.items():
                    if not isinstance(value, str):
                        raise SettingsError(
                            f"bad setting upstreams.{name}.headers.{header} = {value!r}: "
                            "expected a string"
                        )
            _convert(table, UpstreamSettings, f"upstreams.{name}", table)
    settings: Settings = _convert(doc, Settings, "", doc)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    for name, up in settings.upstreams.items():
        if not up.base_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"bad setting upstreams.{name}.base_url = {up.base_url!r}: "
                "expected an http:// or https:// URL"
            )
    defined = ", ".join(sorted(settings.upstreams)) or "none"
    for i, route in enumerate(settings.routes):
        targets = [(f"routes[{i}]", route.upstream, route.model)] + [
            (f"routes[{i}].fallbacks[{j}]", t.upstream, t.model)
            for j, t in enumerate(route.fallbacks)
        ]
        for where, upstream, _ in targets:
            if upstream not in settings.upstreams:
                raise SettingsError(
                    f"bad setting {where}.upstream = {upstream!r}: no such upstream "
                    f"(defined: {defined})"
                )
        seen = set()
        for where, upstream, model in targets:
            if (upstream, model) in seen:
                raise SettingsError(
                    f"bad setting {where}: {upstream}:{model} is already in this route's chain"
                )
            seen.add((upstream, model))
    for name, up in settings.upstreams.items():
        for var in up.api_key_envs:
            if not var.strip():
                raise SettingsError(f"bad setting upstreams.{name}.api_key_envs: an empty name")
    if settings.files.upstream == "default" and "default" not in settings.upstreams:
        # left at its default: the first upstream defined holds files and batches
        settings.files.upstream = next(iter(settings.upstreams), "default")
    if settings.files.upstream not in settings.upstreams and settings.upstreams:
        raise SettingsError(
            f"bad setting files.upstream = {settings.files.upstream!r}: no such upstream "
            f"(defined: {', '.join(sorted(settings.upstreams)) or 'none'})"
        )
    if not settings.routes and "default" not in settings.upstreams:
        raise SettingsError("bad setting upstreams: the default routes need upstreams.default")
