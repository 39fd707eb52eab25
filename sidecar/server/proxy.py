"""The proxy handler: scan and rewrite a request, forward it, restore the response."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD

from sidecar.audit.record import AuditRecord
from sidecar.errors import Blocked, RequestError, UnknownRoute
from sidecar.logs import describe_exception, get_logger
from sidecar.policy.model import Mode, Policy
from sidecar.policy.store import POLICY_HEADER
from sidecar.protocols.base import Adapter, RequestTexts, StreamTransformer
from sidecar.protocols.openai_chat import openai_error_body
from sidecar.redact.plan import Plan, build_plan
from sidecar.redact.restore import Restorer
from sidecar.server.bodies import decode_content, parse_json_body
from sidecar.server.routes import RouteMatch
from sidecar.server.state import SidecarState
from sidecar.sse import SSEDecoder, SSEError, encode
from sidecar.upstream.client import display_url, forwardable_headers
from sidecar.upstream.events import UpstreamTrace
from sidecar.upstream.forward import (
    Exchange,
    Forwarder,
    ModelRewriter,
    OutgoingRequest,
    RequestBuilder,
)
from sidecar.upstream.retry import ErrorKind
from sidecar.upstream.settings import UpstreamGroup

log = get_logger("sidecar.proxy")

REQUEST_ID_HEADER = "X-Request-Id"
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
# Response codings aiohttp decodes itself (its session has auto_decompress on).
_DECODED_CODINGS = frozenset(
    {"gzip", "deflate", *(["br"] if HAS_BROTLI else []), *(["zstd"] if HAS_ZSTD else [])}
)
# aiohttp sets its own Date, Server and framing headers on the response to the client.
_RESPONSE_DROPPED = frozenset(
    {
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "date",
        "server",
    }
)


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


async def handle(request: web.Request, state: SidecarState) -> web.StreamResponse:
    """Proxy one request and write its audit record."""
    match = state.router.match(request.path)
    destination = _destination(request, state, match)
    record = AuditRecord(
        request_id=new_request_id(),
        route=match.name if match else "unmatched",
        upstream=display_url(destination.url),
    )
    record.client = state.trail.identify_client(request.headers)
    # Every log line of this request, in any module, carries its id.
    structlog.contextvars.bind_contextvars(request_id=record.request_id)
    adapter = match.adapter if match else None
    try:
        _check_path(request)
        if adapter is not None:
            return await _proxy(request, state, adapter, record, destination)
        return await _pass_through(request, state, record, match, destination)
    except RequestError as exc:
        record.status, record.error = exc.status, exc.code
        log.info("request_rejected", request_id=record.request_id, status=exc.status, code=exc.code)
        return _error_response(adapter, exc, record.request_id)
    except Exception as exc:
        record.status, record.error = 500, "internal_error"
        log.error("request_failed", request_id=record.request_id, **describe_exception(exc))
        return _error_response(adapter, _Internal(), record.request_id)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client disconnects.
        record.error = "client_disconnected"
        log.info("client_disconnected", request_id=record.request_id)
        raise
    finally:
        state.finish_request(record)
        structlog.contextvars.unbind_contextvars("request_id")


@dataclass(frozen=True)
class _Destination:
    """The destination of a request: its route's upstream group, and the path with its query.

    `group` None is the group of the `--upstream` URL; `url` is the primary's URL.
    """

    group: UpstreamGroup | None
    url: str
    path_qs: str
    route_prefix: str | None = None


def _destination(
    request: web.Request, state: SidecarState, match: RouteMatch | None
) -> _Destination:
    group = match.route.group if match is not None else None
    url = group.primary.url if group is not None else state.settings.upstream
    path = match.path if match is not None else request.path
    query = request.query_string
    prefix = match.route.prefix if match is not None else None
    return _Destination(group, url, path + ("?" + query if query else ""), prefix)


async def _proxy(
    request: web.Request,
    state: SidecarState,
    adapter: Adapter,
    record: AuditRecord,
    destination: _Destination,
) -> web.StreamResponse:
    record.dialect = adapter.dialect
    if request.method != "POST":
        raise _MethodNotAllowed(
            f"{request.method} is not supported on a scanned endpoint; send the request as POST"
        )
    # The request keeps this policy object to the end, even if a reload swaps in a new one.
    route = destination.route_prefix
    policy = state.policies.select(request.headers.get(POLICY_HEADER), route=route)
    raw = await _read_body(request)
    body = parse_json_body(
        decode_content(raw, request.headers.get("Content-Encoding")), request.content_type
    )
    model = adapter.model(body)
    record.model = model
    record.stream = adapter.is_stream(body)
    texts = adapter.collect(body)

    record.policy_name, record.policy_hash, record.mode = (
        policy.name,
        policy.content_hash,
        policy.mode,
    )
    plan = await _plan(state, policy, texts, record)
    if plan.blocked_counts and policy.mode is Mode.ENFORCE:
        record.blocked = True
        record.block_reason = _block_reason(plan.blocked_counts)
        raise Blocked(
            f"request blocked by policy {policy.name!r}: it contains {record.block_reason}"
        )

    if policy.mode is Mode.ENFORCE:
        # The upstream always gets the document the sidecar parsed and scanned,
        # never the client's bytes, which another parser might read differently.
        texts.write_back(plan.texts)
        outgoing = json.dumps(body, ensure_ascii=False).encode()
        headers = forwardable_headers(request.headers)
        headers.popall(POLICY_HEADER, None)
        headers["Content-Type"] = "application/json"
    else:
        # Audit mode: the upstream gets the client's exact bytes.
        outgoing = raw
        headers = forwardable_headers(request.headers)
        headers.popall(POLICY_HEADER, None)
        if "Content-Encoding" in request.headers:
            headers["Content-Encoding"] = request.headers["Content-Encoding"]
    restorer = Restorer(plan.vault)
    sent = OutgoingRequest(request.method, destination.path_qs, tuple(headers.items()), outgoing)
    build = ModelRewriter(sent, body, model, adapter.with_model)
    forwarder = state.upstreams.forwarder(destination.group)
    replies: list[str] = []
    response = await _forward(request, forwarder, adapter, restorer, record, build, replies)
    if policy.scope.assistant:
        # The client sends the reply back as history next turn: analysing it now
        # makes that turn a cache hit instead of new work on its critical path.
        state.prefetch(replies, policy)
    return response


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _TooLarge(
            f"request body is larger than {request.app[MAX_BODY_KEY]} bytes; "
            "raise PII_SIDECAR_MAX_BODY_BYTES or send a smaller request"
        ) from exc


class _MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"


class _InvalidPath(RequestError):
    status = 400
    code = "invalid_path"


_ENCODED_SEPARATORS = ("%2f", "%2e", "%5c")


def _check_path(request: web.Request) -> None:
    """Reject a path whose meaning could change on the way upstream.

    Dot segments, empty segments and encoded slashes, dots or backslashes
    would let a path that matches a pass-through pattern, such as
    `/v1/models/../files`, reach another endpoint after normalisation.
    """
    raw = request.raw_path.split("?", 1)[0]
    segments = request.path.split("/")[1:]
    if (
        any(segment in ("", ".", "..") for segment in segments[:-1])
        or segments[-1] in (".", "..")
        or "\\" in request.path
        or any(encoded in raw.lower() for encoded in _ENCODED_SEPARATORS)
    ):
        raise _InvalidPath(
            "the request path has dot segments, empty segments or encoded separators; "
            "send the path in its plain form, such as /v1/chat/completions"
        )


class _Internal(RequestError):
    status = 500
    code = "internal_error"

    def __init__(self) -> None:
        super().__init__("the sidecar failed to process the request; nothing was forwarded")


class _TooLarge(RequestError):
    status = 413
    code = "body_too_large"


async def _plan(
    state: SidecarState, policy: Policy, texts: RequestTexts, record: AuditRecord
) -> Plan:
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
    plan.texts = [
        next(rewritten) if getattr(scope, slot.part.value) else slot.text for slot in texts.slots
    ]
    return plan


def _block_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{entity_type} x{count}" for entity_type, count in sorted(counts.items()))


async def _forward(
    request: web.Request,
    forwarder: Forwarder,
    adapter: Adapter,
    restorer: Restorer,
    record: AuditRecord,
    build: RequestBuilder,
    replies: list[str],
) -> web.StreamResponse:
    """Forward the request; `replies` receives the restored reply texts of a complete response."""
    started = time.perf_counter()
    trace = UpstreamTrace()
    try:
        async with forwarder.exchange(build, trace, request_id=record.request_id) as upstream:
            record.upstream = display_url(upstream.target.url)
            _check_decoded(upstream.headers)
            record.status = upstream.status
            record.time("first_byte", started)
            if upstream.body is None:
                response = await _relay_stream(
                    request, upstream, adapter, restorer, record, replies
                )
            else:
                response = _relay_body(upstream, upstream.body, adapter, restorer, record, replies)
            record.time("upstream", started)
    finally:
        _record_trace(record, trace)
    return response


def _record_trace(record: AuditRecord, trace: UpstreamTrace) -> None:
    record.upstream_name = trace.served_by
    record.attempts = trace.attempts
    record.retries = trace.retries
    record.failovers = trace.failovers
    record.breaker_changes = trace.breaker_changes
    record.stream_error = trace.stream_error


class _UndecodableResponse(RequestError):
    status = 502
    code = "upstream_response_undecodable"


def _check_decoded(headers: Mapping[str, str]) -> None:
    """Raise `_UndecodableResponse` if aiohttp left the response body compressed."""
    coding = headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity") or coding in _DECODED_CODINGS:
        return
    raise _UndecodableResponse(
        f"upstream response has Content-Encoding {coding!r}, which the sidecar cannot decode, "
        "so it cannot restore the response; configure the upstream to send "
        + ", ".join(sorted(_DECODED_CODINGS))
        + " or an uncompressed body"
    )


def _response_headers(upstream: Exchange, request_id: str) -> dict[str, str]:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROPPED}
    headers[REQUEST_ID_HEADER] = request_id
    return headers


def _relay_body(
    upstream: Exchange,
    raw: bytes,
    adapter: Adapter,
    restorer: Restorer,
    record: AuditRecord,
    replies: list[str],
) -> web.Response:
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
    if upstream.status == 200:
        replies += adapter.reply_texts(document)
    return web.Response(
        status=upstream.status,
        body=json.dumps(document, ensure_ascii=False).encode(),
        headers=headers,
    )


async def _relay_stream(
    request: web.Request,
    upstream: Exchange,
    adapter: Adapter,
    restorer: Restorer,
    record: AuditRecord,
    replies: list[str],
) -> web.StreamResponse:
    """Relay a stream of events, restored, at the pace at which the client reads it.

    Each chunk is written before the next one is read, so a slow client slows
    the upstream read.
    """
    response = web.StreamResponse(
        status=upstream.status, headers=_response_headers(upstream, record.request_id)
    )
    await response.prepare(request)
    decoder = SSEDecoder()
    transformer = adapter.stream_transformer(restorer)
    try:
        while chunk := await upstream.next_chunk():
            try:
                events = decoder.feed(chunk)
            except SSEError:
                await _end_broken_stream(
                    request, response, transformer, ErrorKind.CONNECTION_ERROR, record
                )
                return response
            if any(transformer.is_error(event) for event in events):
                upstream.record_error_event()
            out = [encode(e) for event in events for e in transformer.feed(event)]
            if out:
                await response.write(b"".join(out))
        if upstream.failure is not None:
            await _end_broken_stream(request, response, transformer, upstream.failure, record)
            return response
        tail = [encode(e) for event in decoder.flush() for e in transformer.feed(event)]
        tail += [encode(e) for e in transformer.end()]
        if tail:
            await response.write(b"".join(tail))
        record.usage = transformer.usage
        await response.write_eof()
        replies += transformer.reply_texts()
    except ConnectionError:
        # Leaving the exchange closes the upstream connection, which stops the generation.
        record.error = "client_disconnected"
        log.info("client_disconnected", request_id=record.request_id)
    return response


async def _end_broken_stream(
    request: web.Request,
    response: web.StreamResponse,
    transformer: StreamTransformer,
    failure: ErrorKind,
    record: AuditRecord,
) -> None:
    """End a stream whose upstream broke off: held-back text, then the dialect's error event.

    The partial event at the break is dropped, and no final event such as
    `[DONE]` is sent. Without an error event the connection closes without
    the chunked terminator, which clients report as an incomplete response.
    """
    record.error = "upstream_stream_failed"
    record.usage = transformer.usage
    message = (
        f"the upstream response broke off after it began to stream ({failure.value}); "
        "the response is incomplete"
    )
    errors = transformer.error_events(message)
    out = [encode(event) for event in (*transformer.end(), *errors)]
    if out:
        await response.write(b"".join(out))
    if errors:
        await response.write_eof()
    elif request.transport is not None:
        request.transport.close()


async def _pass_through(
    request: web.Request,
    state: SidecarState,
    record: AuditRecord,
    match: RouteMatch | None,
    destination: _Destination,
) -> web.StreamResponse:
    has_body = request.can_read_body or request.content_length not in (None, 0)
    if has_body or match is None or not match.passes_through(request.method):
        covered = ", ".join(state.router.covered())
        raise UnknownRoute(
            f"route {request.method} {request.path} is not covered by the PII policy, so it is not "
            f"forwarded; routes that are scanned: {covered}"
        )
    record.dialect = "passthrough"
    headers = forwardable_headers(request.headers)
    sent = OutgoingRequest(request.method, destination.path_qs, tuple(headers.items()))
    forwarder = state.upstreams.forwarder(destination.group)
    trace = UpstreamTrace()
    try:
        async with forwarder.exchange(
            lambda target: sent, trace, request_id=record.request_id
        ) as upstream:
            record.upstream = display_url(upstream.target.url)
            _check_decoded(upstream.headers)
            record.status = upstream.status
            return web.Response(
                status=upstream.status,
                body=await _whole_body(upstream),
                headers=_response_headers(upstream, record.request_id),
            )
    finally:
        _record_trace(record, trace)


async def _whole_body(upstream: Exchange) -> bytes:
    if upstream.body is not None:
        return upstream.body
    parts = []
    while chunk := await upstream.next_chunk():
        parts.append(chunk)
    return b"".join(parts)


def _error_response(adapter: Adapter | None, exc: RequestError, request_id: str) -> web.Response:
    message = str(exc)
    if adapter is not None:
        body = adapter.error_body(exc.status, exc.code, message)
    else:
        body = openai_error_body(exc.status, exc.code, message)
    return web.json_response(body, status=exc.status, headers={REQUEST_ID_HEADER: request_id})
