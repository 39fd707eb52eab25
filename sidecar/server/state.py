"""The long-lived objects one sidecar process shares across requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sidecar.audit.record import AuditRecord
from sidecar.audit.sink import StdoutSink
from sidecar.audit.trail import AuditTrail
from sidecar.config import Settings
from sidecar.detect.cache import FindingsCache
from sidecar.detect.engine import Detector
from sidecar.detect.findings import Finding
from sidecar.errors import DetectorFailed
from sidecar.logs import describe_exception, get_logger
from sidecar.metrics import Metrics
from sidecar.policy.model import Policy
from sidecar.policy.store import PolicyStore
from sidecar.server.routes import Router, default_router
from sidecar.upstream.forward import UpstreamRegistry

log = get_logger("sidecar.state")
# Longer replies are not analysed ahead: the work and memory of a long analysis
# outweigh the latency it saves on the next turn.
MAX_PREFETCH_CHARS = 32 * 1024

AuditWriter = Callable[[dict[str, Any]], None]


@dataclass
class SidecarState:
    """Settings, policy, detector, upstream forwarders and audit writer of one process."""

    settings: Settings
    policies: PolicyStore
    upstreams: UpstreamRegistry
    router: Router = field(default_factory=default_router)
    trail: AuditTrail = field(default_factory=lambda: AuditTrail(StdoutSink().write))
    metrics: Metrics = field(default_factory=Metrics)
    detector: Detector | None = None
    draining: bool = False
    # One detection thread per process: spaCy holds the GIL for most of its
    # work, so more threads add contention, not throughput.
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")
    )
    # Findings of texts analyzed before, so resent chat history is not analyzed again.
    findings_cache: FindingsCache = field(init=False)

    # Analyses of requests waiting for or holding the detection thread.
    detections_in_flight: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.findings_cache = FindingsCache(
            self.settings.detect_cache_entries, self.settings.detect_cache_bytes
        )

    def prefetch(self, texts: list[str], policy: Policy) -> None:
        """Analyse texts a client will probably send next, in the background, into the cache.

        Nothing is queued while a request waits for detection, so prefetching
        never delays a request; the reply is then analysed when it comes back.
        """
        detector = self.detector
        texts = [text for text in texts if len(text) <= MAX_PREFETCH_CHARS]
        if detector is None or not texts or not self.findings_cache.enabled:
            return
        if self.detections_in_flight or self.findings_cache.lookup(detector, texts, policy):
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self.executor, self.findings_cache.analyze, detector, texts, policy
        )
        future.add_done_callback(_log_prefetch_failure)

    def finish_request(self, record: AuditRecord) -> None:
        """Complete and write the audit record of a finished request, and count it."""
        self.metrics.observe(self.trail.finish(record))

    def _detection_done(self, future: asyncio.Future[Any]) -> None:
        self.detections_in_flight -= 1

    @property
    def ready(self) -> bool:
        return self.detector is not None and self.policies.loaded and not self.draining

    async def detect(self, texts: list[str], policy: Policy) -> list[list[Finding]]:
        """Run the detector off the event loop; raise `DetectorFailed` on error or timeout.

        A request with no text, or whose texts are all in the findings cache,
        gets its findings on the event loop, without a hand-off to the detection thread.
        """
        detector = self.detector
        if detector is None:
            raise DetectorFailed(
                "the PII detector is still loading; retry when GET /readyz returns 200"
            )
        if not texts:
            return []
        cached = self.findings_cache.lookup(detector, texts, policy)
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        # The thread stops at this deadline too, so the next request does not
        # wait behind an analysis whose request has already failed.
        deadline = time.monotonic() + self.settings.detect_timeout
        future = loop.run_in_executor(
            self.executor, self.findings_cache.analyze, detector, texts, policy, deadline
        )
        self.detections_in_flight += 1
        future.add_done_callback(self._detection_done)
        try:
            return await asyncio.wait_for(future, self.settings.detect_timeout)
        except TimeoutError as exc:
            raise DetectorFailed(
                f"PII detection timed out after {self.settings.detect_timeout:g} s; the request "
                "was not forwarded. Send a shorter request or raise --detect-timeout"
            ) from exc
        except Exception as exc:
            raise DetectorFailed(
                f"PII detection failed ({type(exc).__name__}); the request was not forwarded"
            ) from exc


def _log_prefetch_failure(future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("prefetch_failed", **describe_exception(exc))
