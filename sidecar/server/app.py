"""The aiohttp application: health endpoints, start-up loading and the proxy route."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from sidecar.audit.trail import AuditTrail, open_audit_trail
from sidecar.config import Settings
from sidecar.detect.engine import Detector
from sidecar.errors import ConfigError
from sidecar.logs import describe_exception, get_logger
from sidecar.metrics import CONTENT_TYPE, Metrics
from sidecar.policy import reload
from sidecar.policy.catalog import default_catalog
from sidecar.policy.store import PolicyStore, parse_names
from sidecar.server import proxy
from sidecar.server.route_config import load_route_config
from sidecar.server.routes import Router, build_router, default_router
from sidecar.server.state import AuditWriter, SidecarState
from sidecar.upstream.client import UpstreamClient, display_url
from sidecar.upstream.forward import UpstreamRegistry
from sidecar.upstream.settings import single_target_group

STATE = web.AppKey("state", SidecarState)

# Options of aiohttp's request handler. Request bodies stay encoded, so the
# proxy decodes them itself and fails closed on a coding it cannot read. A
# client that disconnects cancels its handler, and with it the upstream request.
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "handler_cancellation": True}
log = get_logger("sidecar.server")

DetectorFactory = Callable[[Settings], Detector]


def _load_detector(settings: Settings) -> Detector:
    return Detector(model=settings.model)


def create_app(
    settings: Settings,
    audit: AuditWriter | None = None,
    detector_factory: DetectorFactory = _load_detector,
) -> web.Application:
    """Build the application; the policy loads now, the NER model in the background.

    Raise `PolicyError` if the policy does not validate, and `ConfigError` if
    the configuration file does not, so the process stops before it ever
    reports ready. Audit records go to `audit` when it is given, and else to
    the sinks of the settings, which the app closes at cleanup.
    """
    router = _load_router(settings)
    policies = policy_store(settings, router.route_policies)
    policies.load()
    metrics = Metrics()
    state = SidecarState(
        settings=settings,
        policies=policies,
        upstreams=_upstream_registry(settings, router),
        trail=_audit_trail(settings, audit, metrics),
        metrics=metrics,
        router=router,
    )
    state.upstreams.observers.add(metrics)
    policies.on_reload = metrics.policy_reloaded
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[STATE] = state
    app[proxy.MAX_BODY_KEY] = settings.max_body_bytes
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("*", "/{tail:.*}", _proxy)
    app.on_startup.append(_start(detector_factory))
    app.on_cleanup.append(_stop)
    return app


def policy_store(
    settings: Settings, route_policies: Mapping[str, str] | None = None
) -> PolicyStore:
    """Return the policy store the settings describe: one file, or a directory and a default.

    `route_policies` maps route prefixes to policy names; the store checks
    at load time that each name is loaded.
    """
    selectable = parse_names(settings.client_policies)
    catalog = default_catalog(settings.model)
    routes = dict(route_policies or {})
    if settings.policy_dir is not None:
        directory = Path(settings.policy_dir)
        return PolicyStore(directory, settings.policy or None, selectable, routes, catalog=catalog)
    return PolicyStore(
        Path(settings.policy), client_selectable=selectable, route_policies=routes, catalog=catalog
    )


def _audit_trail(settings: Settings, audit: AuditWriter | None, metrics: Metrics) -> AuditTrail:
    trail = open_audit_trail(settings, writer=audit, on_error=metrics.audit_write_failed)
    metrics.track_audit_backlog(trail.pending_records)
    return trail


def _load_router(settings: Settings) -> Router:
    if settings.config is None:
        return default_router()
    return build_router(load_route_config(settings.config))


def _upstream_registry(settings: Settings, router: Router) -> UpstreamRegistry:
    """Build a forwarder per upstream group now, so that a missing API key stops the start."""
    try:
        default = single_target_group(settings.upstream, settings.upstream_timeout)
    except ValidationError as exc:
        # The message leaves out the URL, which may contain a password.
        reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"--upstream / PII_SIDECAR_UPSTREAM is invalid: {reason}") from None
    registry = UpstreamRegistry(UpstreamClient(ca_bundle=settings.ca_bundle), default)
    for route in router.routes:
        registry.forwarder(route.group)
    return registry


def create_metrics_app(app: web.Application) -> web.Application:
    """Build the listener that serves only /metrics and the health endpoints of `app`.

    A Prometheus scraper or a kubelet probe reaches it without being able to
    send requests through the proxy, which may hold injected API keys.
    """
    metrics_app = web.Application()
    metrics_app[STATE] = app[STATE]
    metrics_app.router.add_get("/healthz", _healthz)
    metrics_app.router.add_get("/readyz", _readyz)
    metrics_app.router.add_get("/metrics", _metrics)
    return metrics_app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.ready:
        # The pid identifies the worker that replied when several share the port.
        body = {"status": "ready", "policy": state.policies.current.name, "pid": os.getpid()}
        return web.json_response(body)
    reason = "draining" if state.draining else "loading"
    return web.json_response({"status": reason}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _proxy(request: web.Request) -> web.StreamResponse:
    return await proxy.handle(request, request.app[STATE])


def _start(detector_factory: DetectorFactory) -> Callable[[web.Application], Awaitable[None]]:
    async def start(app: web.Application) -> None:
        state = app[STATE]
        await state.upstreams.start()
        app[_LOADER] = asyncio.create_task(_load_in_background(state, detector_factory))
        interval = state.settings.policy_reload_interval
        if interval > 0:
            app[_POLICY_WATCH] = asyncio.create_task(reload.watch(state.policies, interval))
        log.info(
            "sidecar_starting",
            upstream=display_url(state.settings.upstream),
            policy=state.policies.current.name,
            model=state.settings.model,
        )

    return start


_LOADER = web.AppKey("detector_loader", asyncio.Task[None])
_POLICY_WATCH = web.AppKey("policy_watch", asyncio.Task[None])


async def _load_in_background(state: SidecarState, detector_factory: DetectorFactory) -> None:
    loop = asyncio.get_running_loop()
    try:
        state.detector = await loop.run_in_executor(
            state.executor, detector_factory, state.settings
        )
    except Exception as exc:
        # The sidecar stays unready and rejects every request: it fails closed.
        log.error("detector_load_failed", model=state.settings.model, **describe_exception(exc))
        return
    log.info("sidecar_ready", model=state.settings.model)


async def _stop(app: web.Application) -> None:
    state = app[STATE]
    for task in (app.get(_LOADER), app.get(_POLICY_WATCH)):
        if task is not None and not task.done():
            task.cancel()
    await state.upstreams.close()
    state.executor.shutdown(wait=False, cancel_futures=True)
    # Cleanup runs after in-flight requests have finished, so every record is queued by now.
    await asyncio.to_thread(state.trail.close)
    log.info("sidecar_stopped")


async def wait_until_loaded(app: web.Application) -> bool:
    """Wait for the background load of the NER model; return whether the app is ready."""
    loader = app.get(_LOADER)
    if loader is not None:
        await asyncio.shield(loader)
    return app[STATE].ready
