"""Model name → Route. First matching route wins; results are cached per model name."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import NotFoundError
from .settings import Route, Settings, glob_match, resolve_routes, upstream_routes

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
