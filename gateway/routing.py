"""Model name → Route. First matching route wins; results are cached per model name.

A route is a chain (issue 16): the target its ``model`` and ``upstream`` name, then its
``fallbacks`` in order, each a Route of its own (upstream, model, capabilities).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import NotFoundError
from .settings import (
    Route,
    RouteSettings,
    Secret,
    Settings,
    TargetSettings,
    default_routes,
    glob_match,
)

_CACHE_LIMIT = 4096
#: Longer model names are resolved every time rather than cached (issue 10 item 6): 4096
#: names of at most this length bound the cache at ~1 MB.
_MAX_CACHED_NAME = 256


class Router:
    """Resolves the client's model name (e.g. ``claude-opus-5-5``) to a configured Route."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.routes: list[Route] = resolve_routes(settings, env)
        #: one per upstream, for the Files and Batch APIs (not routed by model)
        self.upstreams: dict[str, Route] = upstream_routes(settings, env)
        self._cache: dict[str, Route] = {}

    def resolve(self, model: str) -> Route:
        """The route for ``model``; NotFoundError when no pattern matches."""
        route = self._cache.get(model)
        if route is not None:
            return route
        name = model.lower()
        for route in self.routes:
            if any(glob_match(name, p) for p in route.patterns):
                if len(self._cache) < _CACHE_LIMIT and len(model) <= _MAX_CACHED_NAME:
                    self._cache[model] = route
                return route
        raise NotFoundError(f"model: no route is configured for {model[:200]!r}")

    def targets(self) -> list[Route]:
        """Every distinct target of every route (by name), in configuration order."""
        seen: dict[str, Route] = {}
        for route in self.routes:
            for target in route.chain:
                seen.setdefault(target.name, target)
        return list(seen.values())


def _target(
    settings: Settings, env: Mapping[str, str], t: RouteSettings | TargetSettings, **kw: Any
) -> Route:
    up = settings.upstreams[t.upstream]
    key = env.get(up.api_key_env) if up.api_key_env else None
    model = {"big": settings.models.big, "small": settings.models.small}.get(t.model, t.model)
    return Route(
        name=f"{t.upstream}:{model}",
        upstream=t.upstream,
        dialect=up.dialect,
        base_url=up.base_url.rstrip("/"),
        api_key=Secret(key) if key else None,
        key_env=up.api_key_env,
        headers=dict(up.headers),
        upstream_model=model,
        max_output_tokens=t.max_output_tokens,
        reasoning=t.reasoning,
        sampling=t.sampling,
        default_effort=t.default_effort,
        max_tokens_field=up.max_tokens_field,
        stream_usage=up.stream_usage,
        images=up.images,
        thinking_field=up.thinking_field,
        reasoning_effort=up.reasoning_effort,
        top_k=up.top_k,
        mid_system=up.mid_system,
        hosted_tools=t.hosted_tools and up.dialect == "responses",
        compaction=t.compaction and up.dialect == "responses",
        **kw,
    )


def resolve_routes(settings: Settings, env: Mapping[str, str] | None = None) -> list[Route]:
    """Turn route settings into ``Route`` chains with the upstream keys read from ``env``."""
    env = os.environ if env is None else env
    out: list[Route] = []
    for rs in settings.routes or default_routes():
        fallbacks = tuple(_target(settings, env, t, safeguards=rs.safeguards) for t in rs.fallbacks)
        out.append(
            _target(
                settings,
                env,
                rs,
                patterns=tuple(p.lower() for p in rs.match),
                safeguards=rs.safeguards,
                fallbacks=fallbacks,
                fallback_on_overflow=rs.fallback_on_overflow,
            )
        )
    return out


def upstream_routes(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Route]:
    """A Route per ``[upstreams]`` entry, for what is not routed by model (files, batches)."""
    env = os.environ if env is None else env
    out: dict[str, Route] = {}
    for name, up in settings.upstreams.items():
        key = env.get(up.api_key_env) if up.api_key_env else None
        out[name] = Route(
            name=name,
            upstream=name,
            dialect=up.dialect,
            base_url=up.base_url.rstrip("/"),
            api_key=Secret(key) if key else None,
            key_env=up.api_key_env,
            headers=dict(up.headers),
            upstream_model="",
        )
    return out
