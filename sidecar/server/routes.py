"""Which adapter handles which route, and which bodiless routes pass through unscanned."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from sidecar.protocols.base import Adapter
from sidecar.protocols.openai_chat import OpenAIChatAdapter

DEFAULT_PASSTHROUGH = ("/v1/models", "/v1/models/*")


@dataclass(frozen=True)
class Route:
    """A route the proxy scans: `path` is matched exactly."""

    path: str
    adapter: Adapter


@dataclass
class Router:
    """Maps request paths to adapters; `passthrough` lists glob patterns for bodiless requests."""

    routes: dict[str, Route] = field(default_factory=dict)
    passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH

    def add(self, path: str, adapter: Adapter) -> None:
        self.routes[path] = Route(path, adapter)

    def match(self, path: str) -> Route | None:
        return self.routes.get(path)

    def passes_through(self, method: str, path: str) -> bool:
        if method not in ("GET", "HEAD", "OPTIONS"):
            return False
        return any(fnmatchcase(path, pattern) for pattern in self.passthrough)


def default_router() -> Router:
    router = Router()
    router.add("/v1/chat/completions", OpenAIChatAdapter())
    return router
