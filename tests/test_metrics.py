"""The /metrics endpoint: Prometheus text that parses and never carries request values."""

from __future__ import annotations

import aiohttp
import openai
from prometheus_client.parser import text_string_to_metric_families

from sidecar.metrics import MAX_MODEL_LABELS, Metrics
from tests.conftest import RunningSidecar

CANARY_NAME = "Quillon Vantablack"


async def scrape(sidecar: RunningSidecar) -> str:
    async with aiohttp.ClientSession() as session, session.get(sidecar.url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_requests_and_entities(sidecar: RunningSidecar) -> None:
    client = openai.AsyncOpenAI(base_url=sidecar.base_url, api_key="sk-x", max_retries=0)
    await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"I am {CANARY_NAME}, mail q@example.com"}]
    )
    text = await scrape(sidecar)
    found = samples(text)
    route = "/v1/chat/completions"
    assert found[("pii_sidecar_requests_total", (("dialect", "openai.chat"), ("route", route), ("status", "200")))] == 1
    assert found[("pii_sidecar_entities_total", (("action", "placeholder"), ("entity_type", "EMAIL_ADDRESS")))] == 1
    assert found[("pii_sidecar_tokens_total", (("kind", "output"), ("model", "gpt-4o")))] == 7
    assert ("pii_sidecar_latency_seconds_count", (("phase", "detection"), ("route", route))) in found
    assert CANARY_NAME not in text
    assert "q@example.com" not in text


def test_model_labels_are_bounded_and_sanitised() -> None:
    metrics = Metrics()
    for i in range(MAX_MODEL_LABELS + 10):
        metrics.observe({"route": "r", "status": 200, "model": f"m{i}", "usage": {"input_tokens": 1}})
    metrics.observe({"route": "r", "status": 200, "model": "John Smith <john@x.com>", "usage": {"input_tokens": 1}})
    models = {labels[1][1] for (name, labels) in samples(metrics.render().decode()) if name == "pii_sidecar_tokens_total"}
    assert len(models) == MAX_MODEL_LABELS + 1
    assert "other" in models
    assert not any("John" in model for model in models)


def test_upstream_events_counted() -> None:
    from sidecar.upstream.breaker import BreakerState, BreakerTransition
    from sidecar.upstream.plan import FailedOver, RetryScheduled, StreamFailed, UpstreamSkipped
    from sidecar.upstream.retry import ErrorKind, Outcome

    metrics = Metrics()
    metrics.attempt_finished("primary", Outcome(status=503))
    metrics.attempt_finished("primary", Outcome(error=ErrorKind.CONNECT_TIMEOUT))
    metrics.attempt_finished("backup", Outcome(status=200))
    metrics.plan_event(RetryScheduled("primary", 1, "status_503", 0.1, False))
    metrics.plan_event(FailedOver("primary", "backup"))
    metrics.plan_event(UpstreamSkipped("primary"))
    metrics.plan_event(StreamFailed("backup", "idle_timeout"))
    metrics.breaker_changed(BreakerTransition("primary", BreakerState.CLOSED, BreakerState.OPEN, 5))
    found = samples(metrics.render().decode())

    assert found[("pii_sidecar_upstream_attempts_total", (("result", "status_503"), ("upstream", "primary")))] == 1
    assert found[("pii_sidecar_upstream_errors_total", (("cause", "status_503"), ("upstream", "primary")))] == 1
    assert found[("pii_sidecar_upstream_errors_total", (("cause", "connect_timeout"), ("upstream", "primary")))] == 1
    assert ("pii_sidecar_upstream_errors_total", (("cause", "status_200"), ("upstream", "backup"))) not in found
    assert found[("pii_sidecar_upstream_retries_total", (("cause", "status_503"), ("upstream", "primary")))] == 1
    assert found[("pii_sidecar_upstream_failovers_total", (("from_upstream", "primary"), ("to_upstream", "backup")))] == 1
    assert found[("pii_sidecar_upstream_skipped_total", (("upstream", "primary"),))] == 1
    assert found[("pii_sidecar_upstream_stream_failures_total", (("cause", "idle_timeout"), ("upstream", "backup")))] == 1
    assert found[("pii_sidecar_upstream_breaker_state", (("state", "open"), ("upstream", "primary")))] == 1
    assert found[("pii_sidecar_upstream_breaker_state", (("state", "closed"), ("upstream", "primary")))] == 0


def test_policy_reloads_counted_by_result() -> None:
    metrics = Metrics()
    metrics.policy_reloaded(True)
    metrics.policy_reloaded(False)
    metrics.policy_reloaded(False)
    found = samples(metrics.render().decode())

    assert found[("pii_sidecar_policy_reloads_total", (("result", "ok"),))] == 1
    assert found[("pii_sidecar_policy_reloads_total", (("result", "failed"),))] == 2


def test_policy_reload_series_exist_before_any_reload() -> None:
    found = samples(Metrics().render().decode())

    assert found[("pii_sidecar_policy_reloads_total", (("result", "failed"),))] == 0


def test_cost_and_audit_backlog_exposed() -> None:
    metrics = Metrics()
    metrics.observe({"route": "r", "status": 200, "model": "gpt-4o",
                     "usage": {"input_tokens": 10, "output_tokens": 5, "cached_tokens": 2},
                     "cost_usd": 0.25})
    metrics.track_audit_backlog(lambda: 7)
    metrics.audit_write_failed()
    found = samples(metrics.render().decode())

    assert found[("pii_sidecar_cost_usd_total", (("model", "gpt-4o"),))] == 0.25
    assert found[("pii_sidecar_tokens_total", (("kind", "cached"), ("model", "gpt-4o")))] == 2
    assert found[("pii_sidecar_audit_pending_records", ())] == 7
    assert found[("pii_sidecar_audit_write_failures_total", ())] == 1
