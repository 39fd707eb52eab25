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
