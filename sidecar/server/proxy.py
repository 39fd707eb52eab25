"""The proxy handler: scan and rewrite a request, forward it, restore the response."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from sidecar.audit.record import AuditRecord
from sidecar.errors import Blocked, RequestError, UnknownRoute
from sidecar.logs import describe_exception, get_logger
from sidecar.policy.model import Mode, Policy
from sidecar.policy.store import POLICY_HEADER
from sidecar.protocols.base import Adapter, RequestTexts
from sidecar.protocols.openai_chat import openai_error_body
from sidecar.redact.plan import Plan, build_plan
from sidecar.redact.restore import Restorer
from sidecar.server.bodies import decode_content, parse_json_body
from sidecar.server.state import SidecarState
from sidecar.sse import SSEDecoder, encode
from sidecar.upstream.client import display_url, forwardable_headers

log = get_logger("sidecar.proxy")

REQUEST_ID_HEADER = "X-Request-Id"
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
# aiohttp sets its own Date, Server and framing headers on the response to the client.
_RESPONSE_DROPPED = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


async def handle(request: web.Request, state: SidecarState) -> web.StreamResponse:
    """Proxy one request and write its audit record."""
    route = state.router.match(request.path)
    record = AuditRecord(
        request_id=new_request_id(),
        route=route.path if route else "unmatched",
        upstream=display_url(state.upstream.base_url),
    )
    record.client = state.trail.identify_client(request.headers)
    # Every log line of this request, in any module, carries its id.
    structlog.contextvars.bind_contextvars(request_id=record.request_id)
    adapter = route.adapter if route else None
    try:
        if adapter is not None:
            return await _proxy(request, state, adapter, record)
        return await _pass_through(request, state, record)
    except RequestError as exc:
        record.status, record.error = exc.status, exc.code
        log.info("request_rejected", request_id=record.request_id, status=exc.status, code=exc.code)
        return _error_response(adapter, exc, record.request_id)
    except Exception as exc:
        record.status, record.error = 500, "internal_error"
        log.error("request_failed", request_id=record.request_id, **describe_exception(exc))
        return _error_response(adapter, _Internal(), record.request_id)
    finally:
        state.finish_request(record)
        structlog.contextvars.unbind_contextvars("request_id")


async def _proxy(
    request: web.Request, state: SidecarState, adapter: Adapter, record: AuditRecord
) -> web.StreamResponse:
    record.dialect = adapter.dialect
    # The request keeps this policy object to the end, even if a reload swaps in a new one.
    policy = state.policies.select(request.headers.get(POLICY_HEADER))
    raw = await _read_body(request)
    body = parse_json_body(decode_content(raw, request.headers.get("Content-Encoding")), request.content_type)
    record.model = adapter.model(body)
    record.stream = adapter.is_stream(body)
    texts = adapter.collect(body)

    record.policy_name, record.policy_hash, record.mode = policy.name, policy.content_hash, policy.mode
    plan = await _plan(state, policy, texts, record)
    if plan.blocked_counts and policy.mode is Mode.ENFORCE:
        record.blocked = True
        record.block_reason = _block_reason(plan.blocked_counts)
        raise Blocked(f"request blocked by policy {policy.name!r}: it contains {record.block_reason}")

    if policy.mode is Mode.ENFORCE and plan.changed:
        texts.write_back(plan.texts)
        outgoing = json.dumps(body, ensure_ascii=False).encode()
        headers = forwardable_headers(request.headers)
        headers.popall(POLICY_HEADER, None)
        headers["Content-Type"] = "application/json"
    else:
        # Nothing to change, or audit mode: the upstream gets the client's exact bytes.
        outgoing = raw
        headers = forwardable_headers(request.headers)
        headers.popall(POLICY_HEADER, None)
        if "Content-Encoding" in request.headers:
            headers["Content-Encoding"] = request.headers["Content-Encoding"]
    restorer = Restorer(plan.vault)
    return await _forward(request, state, adapter, restorer, record, outgoing, headers)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _TooLarge(
            f"request body is larger than {request.app[MAX_BODY_KEY]} bytes; "
            "raise PII_SIDECAR_MAX_BODY_BYTES or send a smaller request"
        ) from exc


class _Internal(RequestError):
    status = 500
    code = "internal_error"

    def __init__(self) -> None:
        super().__init__("the sidecar failed to process the request; nothing was forwarded")


class _TooLarge(RequestError):
    status = 413
    code = "body_too_large"


async def _plan(state: SidecarState, policy: Policy, texts: RequestTexts, record: AuditRecord) -> Plan:
    scope = policy.scope
    in_scope = [slot for slot in texts.slots if getattr(scope, slot.part.value)]
    out_of_scope = [slot.text for slot in texts.slots if not getattr(scope, slot.part.value)]
    started = time.perf_counter()
    findings = await state.detect([slot.text for slot in in_scope], policy)
    record.time("detection", started)

    plan = build_plan(policy, [slot.text for slot in in_scope], findings, out_of_scope)
    record.set_entities(plan.entity_counts)
    record.value_fingerprints = state.trail.value_fingerprints(
        [slot.text for slot in in_scope], plan.decisions
    )
    # Map the rewritten in-scope texts back onto every slot, in order.
    rewritten = iter(plan.texts)
    plan.texts = [next(rewritten) if getattr(scope, slot.part.value) else slot.text for slot in texts.slots]
    return plan


def _block_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{entity_type} x{count}" for entity_type, count in sorted(counts.items()))


async def _forward(
    request: web.Request,
    state: SidecarState,
    adapter: Adapter,
    restorer: Restorer,
    record: AuditRecord,
    body: bytes,
    headers: Any,
) -> web.StreamResponse:
    started = time.perf_counter()
    async with state.upstream.send(request.method, request.path_qs, headers, body) as upstream:
        record.status = upstream.status
        record.time("first_byte", started)
        if upstream.content_type == "text/event-stream":
            response = await _relay_stream(request, upstream, adapter, restorer, record)
        else:
            response = await _relay_body(upstream, adapter, restorer, record)
        record.time("upstream", started)
    return response


def _response_headers(upstream: aiohttp.ClientResponse, request_id: str) -> dict[str, str]:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROPPED}
    headers[REQUEST_ID_HEADER] = request_id
    return headers


async def _relay_body(
    upstream: aiohttp.ClientResponse, adapter: Adapter, restorer: Restorer, record: AuditRecord
) -> web.Response:
    raw = await upstream.read()
    headers = _response_headers(upstream, record.request_id)
    if restorer.pattern is None and upstream.content_type != "application/json":
        return web.Response(status=upstream.status, body=raw, headers=headers)
    try:
        document = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", errors="surrogateescape")
        restored = restorer.restore(text).encode("utf-8", errors="surrogateescape")
        return web.Response(status=upstream.status, body=restored, headers=headers)
    adapter.restore_body(document, restorer)
    record.usage = adapter.usage(document)
    return web.Response(
        status=upstream.status, body=json.dumps(document, ensure_ascii=False).encode(), headers=headers
    )


async def _relay_stream(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    adapter: Adapter,
    restorer: Restorer,
    record: AuditRecord,
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, headers=_response_headers(upstream, record.request_id))
    await response.prepare(request)
    decoder = SSEDecoder()
    transformer = adapter.stream_transformer(restorer)
    try:
        async for chunk in upstream.content.iter_any():
            out = [encode(e) for event in decoder.feed(chunk) for e in transformer.feed(event)]
            if out:
                await response.write(b"".join(out))
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
        record.error = "upstream_stream_failed"
        log.warning("upstream_stream_failed", request_id=record.request_id, **describe_exception(exc))
    tail = [encode(e) for event in decoder.flush() for e in transformer.feed(event)]
    tail += [encode(e) for e in transformer.end()]
    if tail:
        await response.write(b"".join(tail))
    record.usage = transformer.usage
    await response.write_eof()
    return response


async def _pass_through(request: web.Request, state: SidecarState, record: AuditRecord) -> web.StreamResponse:
    has_body = request.can_read_body or request.content_length not in (None, 0)
    if has_body or not state.router.passes_through(request.method, request.path):
        covered = ", ".join(sorted(state.router.routes))
        raise UnknownRoute(
            f"route {request.method} {request.path} is not covered by the PII policy, so it is not "
            f"forwarded; routes that are scanned: {covered}"
        )
    record.dialect = "passthrough"
    headers = forwardable_headers(request.headers)
    async with state.upstream.send(request.method, request.path_qs, headers, None) as upstream:
        record.status = upstream.status
        body = await upstream.read()
        return web.Response(
            status=upstream.status, body=body, headers=_response_headers(upstream, record.request_id)
        )


def _error_response(adapter: Adapter | None, exc: RequestError, request_id: str) -> web.Response:
    message = str(exc)
    if adapter is not None:
        body = adapter.error_body(exc.status, exc.code, message)
    else:
        body = openai_error_body(exc.status, exc.code, message)
    return web.json_response(body, status=exc.status, headers={REQUEST_ID_HEADER: request_id})
