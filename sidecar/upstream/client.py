"""The aiohttp client that forwards a rewritten request to the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from sidecar.errors import UpstreamFailed

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


class UpstreamClient:
    """A pooled HTTP client for one upstream base URL.

    Responses are decompressed by aiohttp, so the proxy restores plain text
    and sends it to the client without a Content-Encoding.
    """

    def __init__(self, base_url: str, total_timeout: float = 600.0, connect_timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=True, trust_env=True
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @asynccontextmanager
    async def send(
        self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; raise `UpstreamFailed` if no response arrives."""
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        url = self.base_url + path_qs
        try:
            response = await self._session.request(
                method, url, headers=headers, data=body, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamFailed(
                f"upstream {display_url(self.base_url)} is unreachable "
                f"({type(exc).__name__}); check the upstream URL and network egress"
            ) from exc
        try:
            yield response
        finally:
            # Closing an unfinished response drops the connection, which is how
            # the upstream learns the client went away and stops generating.
            if response.content.at_eof():
                response.release()
            else:
                response.close()
