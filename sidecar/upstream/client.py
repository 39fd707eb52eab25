"""The aiohttp session that sends attempts to upstreams, and the response of one attempt.

This is the only module that uses aiohttp's client. It maps every aiohttp
client error to `ErrorKind.CONNECTION_ERROR`, and every expired deadline of
`AttemptTimer` to that deadline's kind, where they are raised.

The session keeps a pool of keep-alive connections per upstream host. It takes
outbound proxies from HTTP_PROXY, HTTPS_PROXY and NO_PROXY, looked up once per
upstream host and then cached, because aiohttp's `trust_env` repeats the
lookup, including a read of ~/.netrc, on every request. It verifies TLS
against the system's CAs, or against a CA bundle file that replaces them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from sidecar.errors import ConfigError
from sidecar.upstream.retry import ErrorKind
from sidecar.upstream.settings import TimeoutSettings
from sidecar.upstream.timeouts import AttemptTimer

# RFC 9110 section 7.6.1 hop-by-hop headers, plus the ones the proxy recomputes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_RECOMPUTED = frozenset({"host", "content-length", "content-encoding", "accept-encoding"})
KEEPALIVE_SECONDS = 30.0
"""How long an idle pooled connection to an upstream stays open."""


def forwardable_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Return `headers` without hop-by-hop headers and those the proxy sets itself."""
    listed = {
        name.strip().lower()
        for value in _getall(headers, "connection")
        for name in value.split(",")
    }
    dropped = HOP_BY_HOP | _RECOMPUTED | listed
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in dropped)


def _getall(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    value = headers.get(name)
    return [value] if value is not None else []


def display_url(url: str) -> str:
    """Return `url` as scheme://host[:port], safe to log and audit."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def build_ssl_context(ca_bundle: str | None) -> ssl.SSLContext | None:
    """Load a PEM CA bundle into a verifying TLS context, or return None for the system's CAs.

    Raise `ConfigError` when the file is missing or contains no valid certificate.
    """
    if ca_bundle is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except FileNotFoundError:
        raise ConfigError(
            f"CA bundle {ca_bundle} not found; set --ca-bundle to a PEM file"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"CA bundle {ca_bundle} cannot be loaded ({type(exc).__name__}); "
            "it must be a PEM file of CA certificates"
        ) from None


class AttemptFailed(Exception):
    """An attempt failed with `kind`. Raised and caught inside `sidecar.upstream` only."""

    def __init__(self, kind: ErrorKind, error_type: str) -> None:
        super().__init__(f"{kind.value} ({error_type})")
        self.kind = kind
        self.error_type = error_type
        """The class name of the underlying exception, safe to log."""


class UpstreamClient:
    """The HTTP client session that every upstream shares.

    `ca_bundle` is a PEM file whose CAs replace the system's for upstream TLS,
    as corporate egress proxies that re-sign TLS need. aiohttp's own timeouts
    are off, because every attempt runs under the deadlines of `AttemptTimer`.
    """

    def __init__(self, *, ca_bundle: str | None = None) -> None:
        """Load the CA bundle now, so that an invalid one stops the sidecar at startup."""
        self._ssl = build_ssl_context(ca_bundle)
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str | None, int | None], _Proxy] = {}

    async def start(self) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_on_request_headers_sent)
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=KEEPALIVE_SECONDS, ssl=self._ssl or True
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(),
            auto_decompress=True,
            trust_env=False,
            trace_configs=[trace],
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def open(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeouts: TimeoutSettings,
    ) -> AttemptResponse:
        """Send one request and return once the response head has arrived.

        Raise `AttemptFailed` on a connection error or an expired deadline.
        aiohttp closes the connection when this coroutine is cancelled.
        """
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        loop = asyncio.get_running_loop()
        timer = AttemptTimer(timeouts, loop.time())
        phase = _PhaseClock(timer, loop)
        try:
            async with asyncio.timeout_at(timer.current.when) as timeout:
                phase.timeout = timeout
                proxy, proxy_auth = self._proxy_for(url)
                response = await self._session.request(
                    method,
                    url,
                    headers=list(headers),
                    data=body,
                    allow_redirects=False,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                    trace_request_ctx=phase,
                )
        except TimeoutError as exc:
            raise AttemptFailed(timer.current.kind, type(exc).__name__) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise AttemptFailed(ErrorKind.CONNECTION_ERROR, type(exc).__name__) from exc
        finally:
            phase.timeout = None
        return AttemptResponse(response, timer, loop)

    def _proxy_for(self, url: str) -> _Proxy:
        """Return the outbound proxy for `url` from the environment, cached per host."""
        target = URL(url)
        key = (target.scheme, target.host, target.port)
        proxy = self._proxies.get(key)
        if proxy is None:
            try:
                proxy = get_env_proxy_for_url(target)
            except LookupError:
                proxy = (None, None)
            self._proxies[key] = proxy
        return proxy


_Proxy = tuple[URL | None, aiohttp.BasicAuth | None]


class _PhaseClock:
    """Moves an attempt's timeout from the connect to the first byte deadline."""

    def __init__(self, timer: AttemptTimer, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = timer
        self.loop = loop
        self.timeout: asyncio.Timeout | None = None

    def request_sent(self) -> None:
        deadline = self.timer.request_sent(self.loop.time())
        timeout = self.timeout
        if timeout is not None and not timeout.expired():
            timeout.reschedule(deadline.when)


async def _on_request_headers_sent(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    phase = context.trace_request_ctx
    if isinstance(phase, _PhaseClock):
        phase.request_sent()


class AttemptResponse:
    """The response of one attempt, whose body is read chunk by chunk under the idle deadline."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        timer: AttemptTimer,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._response = response
        self._timer = timer
        self._loop = loop
        self.status = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self.content_type = response.content_type
        self.body: bytes | None = None
        """The whole body after `read_body()`."""

    @property
    def streams(self) -> bool:
        """Whether the body is a stream of server-sent events, relayed as it arrives."""
        return self.content_type == "text/event-stream"

    async def read_chunk(self) -> bytes:
        """Return the next chunk of the body, or b"" at its end.

        Raise `AttemptFailed` when the connection fails or a deadline expires.
        The amount returned is bounded by aiohttp's read buffer, which stops
        reading from the upstream's socket while it is full.
        """
        deadline = self._timer.next_chunk(self._loop.time())
        try:
            async with asyncio.timeout_at(deadline.when):
                return await self._response.content.readany()
        except TimeoutError as exc:
            raise AttemptFailed(deadline.kind, type(exc).__name__) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise AttemptFailed(ErrorKind.CONNECTION_ERROR, type(exc).__name__) from exc

    async def read_body(self) -> bytes:
        """Read the whole body into `body` and return it."""
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        self.body = b"".join(parts)
        return self.body

    def close(self) -> None:
        """Return a fully read connection to the pool, or drop an unfinished one.

        Dropping the connection is how the upstream learns that the response is
        no longer wanted, so that it stops generating.
        """
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
