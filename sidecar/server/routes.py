"""Request routing: the route, adapter and upstream group of a path, and bodiless pass-through.

Without a configuration file one route with prefix `/` sends every built-in
endpoint (`DEFAULT_ENDPOINTS`) to the `--upstream` URL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from sidecar.protocols.base import Adapter
from sidecar.protocols.registry import ADAPTERS, DEFAULT_ENDPOINTS
from sidecar.server.route_config import DEFAULT_PASSTHROUGH, RouteSettings, RoutingConfig
from sidecar.upstream.settings import UpstreamGroup

_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Endpoint:
    """A forwarded path pattern (`fnmatch`) and the adapter that scans its requests."""

    pattern: str
    adapter: Adapter


@dataclass(frozen=True)
class Route:
    """Requests whose path starts with `prefix` at a segment boundary, and their upstreams.

    `group` None sends them to the sidecar's `--upstream` URL.
    """

    prefix: str
    endpoints: tuple[Endpoint, ...]
    passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH
    strip_prefix: bool = False
    group: UpstreamGroup | None = None
    policy: str | None = None

    def contains(self, path: str) -> bool:
        if self.prefix == "/":
            return True
        return path == self.prefix or path.startswith(self.prefix + "/")

    def forward_path(self, path: str) -> str:
        """Return the path sent upstream: `path` without the prefix if it is stripped."""
        if not self.strip_prefix or self.prefix == "/":
            return path
        return path[len(self.prefix) :] or "/"


@dataclass(frozen=True)
class RouteMatch:
    """The route of one request, the path to forward, and the endpoint it matched, if any."""

    route: Route
    path: str
    endpoint: Endpoint | None

    @property
    def adapter(self) -> Adapter | None:
        return self.endpoint.adapter if self.endpoint else None

    @property
    def name(self) -> str:
        """Return the endpoint as the client calls it, for audit records; "unmatched" if none."""
        if self.endpoint is None:
            return "unmatched"
        if self.route.strip_prefix and self.route.prefix != "/":
            return self.route.prefix + self.endpoint.pattern
        return self.endpoint.pattern

    def passes_through(self, method: str) -> bool:
        """Return whether a bodiless request may reach the upstream unscanned."""
        if method not in _BODILESS_METHODS:
            return False
        return any(fnmatchcase(self.path, pattern) for pattern in self.route.passthrough)


class Router:
    """Maps request paths to routes; the longest matching prefix wins."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(routes, key=lambda route: len(route.prefix), reverse=True)

    def match(self, path: str) -> RouteMatch | None:
        route = next((route for route in self.routes if route.contains(path)), None)
        if route is None:
            return None
        forwarded = route.forward_path(path)
        endpoint = next((e for e in route.endpoints if fnmatchcase(forwarded, e.pattern)), None)
        return RouteMatch(route, forwarded, endpoint)

    @property
    def route_policies(self) -> dict[str, str]:
        """Route prefix → policy name, for the routes that name a policy."""
        return {route.prefix: route.policy for route in self.routes if route.policy}

    def covered(self) -> list[str]:
        """Return every scanned endpoint as clients call it, sorted."""
        names = set()
        for route in self.routes:
            for endpoint in route.endpoints:
                names.add(RouteMatch(route, endpoint.pattern, endpoint).name)
        return sorted(names)


def build_endpoints(table: Mapping[str, str]) -> tuple[Endpoint, ...]:
    """Create one adapter per endpoint; exact paths are tried before patterns."""
    ordered = sorted(table.items(), key=lambda item: any(c in item[0] for c in "*?["))
    return tuple(Endpoint(pattern, ADAPTERS[name]()) for pattern, name in ordered)


def default_router(group: UpstreamGroup | None = None) -> Router:
    """Return the router of a sidecar without a configuration file."""
    return Router([Route(prefix="/", endpoints=build_endpoints(DEFAULT_ENDPOINTS), group=group)])


def build_router(config: RoutingConfig) -> Router:
    return Router(_route(settings) for settings in config.routes)


def _route(settings: RouteSettings) -> Route:
    group = UpstreamGroup(
        upstreams=settings.upstreams,
        retry=settings.retry,
        timeouts=settings.timeouts,
        breaker=settings.breaker,
    )
    return Route(
        prefix=settings.prefix,
        endpoints=build_endpoints(settings.endpoints),
        passthrough=settings.passthrough,
        strip_prefix=settings.strip_prefix,
        group=group,
        policy=settings.policy,
    )
