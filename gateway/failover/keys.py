"""Key pools (issue 16 item 2): an upstream's keys, which of them may be used now, and why
the others may not. No I/O but reading the keys at start-up; no key ever reaches a log line
(a key is named by where it came from: its variable, or its file and line)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..logs import log_event
from ..settings import Secret, UpstreamSettings

#: how long a key that ran out of quota sits out (it may be topped up)
QUOTA_COOLDOWN: Final = 300.0


class KeyPoolError(ValueError):
    """A key source that cannot be used; ``str(err)`` is the one start-up line."""


@dataclass(slots=True)
class PoolKey:
    #: where the key came from (``OPENAI_KEY_B``, ``keys.txt line 3``): what logs name
    label: str
    secret: Secret
    cool_until: float = 0.0
    #: when it was last rate-limited (``least_limited`` prefers the longest ago)
    limited_at: float = 0.0
    #: why it was taken out (``HTTP 401``), for good
    disabled: str | None = None


class KeyPool:
    """One upstream's keys. ``pick`` gives a usable key's index, or None when every key is
    cooling down or taken out; an upstream without keys has an empty pool (no header)."""

    def __init__(
        self,
        upstream: str,
        keys: list[PoolKey],
        strategy: str = "round_robin",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.keys = keys
        self.strategy = strategy
        self.clock = clock
        self._next = 0
        #: called with (upstream, event) on a 429 cool-down or a key taken out (metrics)
        self.on_event: Callable[[str, str], None] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def pick(self, exclude: frozenset[int] | set[int] = frozenset()) -> int | None:
        n = len(self.keys)
        if n == 1 and not exclude:  # the usual upstream: one key, never taken out of turn
            return 0
        now = self.clock()
        usable = [
            (i + self._next) % n
            for i in range(n)
            if (j := (i + self._next) % n) not in exclude
            and self.keys[j].disabled is None
            and self.keys[j].cool_until <= now
        ]
        if not usable:
            return None
        chosen = usable[0]
        if self.strategy == "least_limited":
            chosen = min(usable, key=lambda j: self.keys[j].limited_at)
        self._next = (chosen + 1) % n
        return chosen

    def usable(self) -> bool:
        now = self.clock()
        return any(k.disabled is None and k.cool_until <= now for k in self.keys)

    def wait(self) -> float | None:
        """Seconds until a cooling key is usable again; None when every key is taken out."""
        now = self.clock()
        waits = [max(0.0, k.cool_until - now) for k in self.keys if k.disabled is None]
        return min(waits) if waits else None

    def cool(self, index: int, seconds: float, why: str = "rate_limited") -> None:
        key = self.keys[index]
        now = self.clock()
        key.cool_until = max(key.cool_until, now + seconds)
        key.limited_at = now
        log_event(
            "upstream_key_cooling",
            logging.WARNING,
            upstream=self.upstream,
            key_source=key.label,
            reason=why,
            seconds=round(seconds, 3),
        )
        if self.on_event is not None:
            self.on_event(self.upstream, why)

    def disable(self, index: int, why: str) -> None:
        key = self.keys[index]
        if key.disabled is not None:
            return
        key.disabled = why
        left = sum(1 for k in self.keys if k.disabled is None)
        log_event(
            "upstream_key_disabled",
            logging.ERROR,
            upstream=self.upstream,
            key_source=key.label,
            reason=f"{why}: the upstream refused this key; it is out of the pool until restart",
            keys_left=left,
        )
        if self.on_event is not None:
            self.on_event(self.upstream, "disabled")

    def status(self) -> dict[str, Any]:
        now = self.clock()
        cooling = sum(1 for k in self.keys if k.disabled is None and k.cool_until > now)
        disabled = sum(1 for k in self.keys if k.disabled is not None)
        return {
            "keys": len(self.keys),
            "available": len(self.keys) - cooling - disabled,
            "cooling": cooling,
            "disabled": disabled,
        }


def pool_keys(name: str, up: UpstreamSettings, env: Mapping[str, str]) -> list[PoolKey]:
    """The keys of upstream ``name``: ``api_key_env``, then ``api_key_envs``, then the lines of
    ``api_keys_file`` (a key given twice counts once). KeyPoolError names a variable that is
    unset (only ``api_key_env`` may be, when other sources give keys) or a file that cannot
    be read or holds no key."""
    out: list[PoolKey] = []
    seen: set[str] = set()

    def add(label: str, value: str) -> None:
        if value not in seen:
            seen.add(value)
            out.append(PoolKey(label, Secret(value)))

    if up.api_key_env and (v := env.get(up.api_key_env, "").strip()):
        add(up.api_key_env, v)
    for var in up.api_key_envs:
        v = env.get(var, "").strip()
        if not v:
            raise KeyPoolError(f"upstreams.{name}.api_key_envs: {var} is not set")
        add(var, v)
    if up.api_keys_file:
        path = Path(up.api_keys_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise KeyPoolError(
                f"upstreams.{name}.api_keys_file: {str(path)!r} cannot be read: {reason}"
            ) from None
        before = len(out)
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                add(f"{path.name} line {n}", line)
        if len(out) == before and not any(
            x.strip() and not x.strip().startswith("#") for x in text.splitlines()
        ):
            raise KeyPoolError(f"upstreams.{name}.api_keys_file: {str(path)!r} holds no key")
    return out


def make_pools(
    upstreams: Mapping[str, UpstreamSettings], env: Mapping[str, str]
) -> dict[str, KeyPool]:
    """A pool per upstream (``upstreams`` may be the mock's stand-ins, which need none)."""
    return {
        name: KeyPool(name, pool_keys(name, up, env), up.key_strategy)
        for name, up in upstreams.items()
    }
