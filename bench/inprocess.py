"""Measurements inside the harness process: Presidio's default analyzer, the detector, restoring."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import SpacyNlpEngine

from bench.stats import MS, percentile
from sidecar.detect.engine import Detector
from sidecar.detect.offline import OfflineEmailRecognizer, OfflineSpacyNlpEngine
from sidecar.policy.model import Policy
from sidecar.protocols.openai_chat import OpenAIChatAdapter
from sidecar.redact.plan import build_plan
from sidecar.redact.restore import Restorer
from sidecar.sse import SSEDecoder, encode
from sidecar.testing.fake_upstream import stream_chunks

LANGUAGE = "en"
PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*_[0-9]+>")


def presidio_default(model: str) -> AnalyzerEngine:
    """Return Presidio's default `AnalyzerEngine` on the full spaCy pipeline of `model`.

    The only change is the offline email recognizer, because the stock one
    downloads the public suffix list on first use.
    """
    nlp_engine = OfflineSpacyNlpEngine(model, LANGUAGE)
    nlp_engine.load()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=[LANGUAGE])
    analyzer.registry.remove_recognizer("EmailRecognizer")
    analyzer.registry.add_recognizer(OfflineEmailRecognizer(supported_language=LANGUAGE))
    return analyzer


def time_each(
    function: Callable[[str], object], texts: Sequence[str], warmup: int = 2
) -> list[float]:
    """Return the seconds `function` takes on each text, after `warmup` untimed calls."""
    for text in texts[:warmup]:
        function(text)
    durations = []
    for text in texts:
        started = time.perf_counter()
        function(text)
        durations.append(time.perf_counter() - started)
    return durations


def presidio_times(analyzer: AnalyzerEngine, texts: Sequence[str], warmup: int = 2) -> list[float]:
    return time_each(lambda text: analyzer.analyze(text, language=LANGUAGE), texts, warmup)


def ner_times(analyzer: AnalyzerEngine, texts: Sequence[str], warmup: int = 2) -> list[float]:
    """Time the spaCy tokenizer and NER component alone, the floor of any analysis with NER."""
    nlp_engine = analyzer.nlp_engine
    assert isinstance(nlp_engine, SpacyNlpEngine)
    nlp = nlp_engine.get_nlp(LANGUAGE)
    with nlp.select_pipes(enable=["ner"]):
        return time_each(nlp, texts, warmup)


def detector_times(
    detector: Detector, policy: Policy, texts: Sequence[str], warmup: int = 2
) -> list[float]:
    return time_each(lambda text: detector.analyze([text], policy), texts, warmup)


def stream_restore_cost(detector: Detector, policy: Policy, prompt: str) -> dict[str, Any]:
    """Measure restoring a streamed echo of `prompt`, the way the proxy relays it.

    The prompt goes through the real detector and plan; the fake provider's
    reply repeats the rewritten prompt in 3-character chunks. Each chunk is
    timed through the OpenAI chat stream transformer and the SSE encoder.
    The text held back is tracked with pieces of 1 to 8 characters.
    """
    plan = build_plan(policy, [prompt], detector.analyze([prompt], policy))
    restorer = Restorer(plan.vault)
    rewritten = plan.texts[0]
    body = {"model": "gpt-fake", "messages": [{"role": "user", "content": rewritten}]}
    message = {"role": "assistant", "content": "You said: " + rewritten}
    raw = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in stream_chunks(body, message, 3)]

    per_chunk = _time_chunks(restorer, raw)
    placeholders = PLACEHOLDER.findall(rewritten)
    longest = max((len(placeholder) for placeholder in placeholders), default=0)
    return {
        "chunks": len(raw),
        "placeholders": len(set(placeholders)),
        "per_chunk_p50_us": round(percentile(per_chunk, 0.5) * MS * MS, 1),
        "per_chunk_p99_us": round(percentile(per_chunk, 0.99) * MS * MS, 1),
        "max_held_chars": max(
            _max_held(restorer, message["content"], size) for size in range(1, 9)
        ),
        "longest_placeholder_chars": longest,
        "hold_limit_chars": restorer.window,
    }


def _time_chunks(restorer: Restorer, raw: list[bytes], rounds: int = 5) -> list[float]:
    durations = []
    for _ in range(rounds):
        decoder = SSEDecoder()
        transformer = OpenAIChatAdapter().stream_transformer(restorer)
        for chunk in raw:
            started = time.perf_counter()
            b"".join(encode(e) for event in decoder.feed(chunk) for e in transformer.feed(event))
            durations.append(time.perf_counter() - started)
    return durations


def _max_held(restorer: Restorer, text: str, size: int) -> int:
    stream = restorer.stream()
    held = 0
    for start in range(0, len(text), size):
        stream.feed(text[start : start + size])
        held = max(held, len(stream.held))
    return held
