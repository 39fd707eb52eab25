"""The benchmark scenarios: the same requests direct to the fake provider and through a sidecar.

Every figure of the sidecar is paired with the direct figure measured in the
same run, and "added" is the difference. Request counts are fixed, every
load phase has a time limit, and every URL is on 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from presidio_analyzer import AnalyzerEngine

from bench import inprocess
from bench.processes import LoadGenerator, Sidecar, Upstream, cpu_seconds
from bench.stats import MS, compare, merge, percentile, summary_ms, throughput
from bench.texts import (
    PLAIN_PROMPT,
    chat_body,
    conversation,
    cut,
    mixed_prompt,
    pii_prompt,
    user_body,
)
from bench.upstream import CHUNK_DELAY_HEADER
from sidecar.detect.engine import DEFAULT_MODEL, Detector
from sidecar.policy.load import load_policy
from sidecar.policy.model import Policy

CHAT_PATH = "/v1/chat/completions"
PASS_THROUGH_POLICY = """\
# Scans only tool-call arguments, which the benchmark's requests do not have, so
# the sidecar parses, forwards and restores without detection. (A policy that
# switches every part off does not validate.)
version: 1
name: bench-pass-through
scope: {system: false, user: false, assistant: false, tool_results: false, tool_arguments: true}
"""
SIZES = {"1 KB": 1024, "32 KB": 32 * 1024, "256 KB": 256 * 1024, "1 MB": 1024 * 1024}
CONVERSATION_TURNS = (1, 5, 10, 20)
# Seconds between streamed events: 500 events per second, faster than models stream tokens.
STREAM_PACE = 0.002
STREAM_PROMPT_CHARS = 200


@dataclass
class Bench:
    """The processes and settings every scenario shares."""

    upstream: Upstream
    load: LoadGenerator
    work_dir: Path
    default_policy: Path
    scale: float = 1.0
    memory: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pass_through_policy(self) -> Path:
        path = self.work_dir / "pass-through.yaml"
        if not path.exists():
            path.write_text(PASS_THROUGH_POLICY, encoding="utf-8")
        return path

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.default_policy)

    @cached_property
    def presidio(self) -> AnalyzerEngine:
        return inprocess.presidio_default(DEFAULT_MODEL)

    @cached_property
    def detector(self) -> Detector:
        return Detector(DEFAULT_MODEL)

    def count(self, requests: int, minimum: int = 1) -> int:
        return max(minimum, round(requests * self.scale))

    def sidecar(self, name: str, policy: Path, *options: str) -> Sidecar:
        return Sidecar.start(name, self.upstream.url, policy, self.work_dir, *options)

    def record_memory(self, scenario: str, sidecar: Sidecar) -> None:
        self.memory.append(
            {
                "scenario": scenario,
                "sidecar": sidecar.name,
                "resident_mb": [round(v, 1) for v in sidecar.resident_mb()],
            }
        )

    def both(
        self, sidecar: Sidecar, bodies: list[str], requests: int, rounds: int = 2, **options: Any
    ) -> dict[str, Any]:
        """Send `requests` direct and through `sidecar`, alternating in `rounds`; compare them."""
        direct, proxied = [], []
        for _ in range(rounds):
            part = max(1, requests // rounds)
            direct.append(self.load.run(self.upstream.url + CHAT_PATH, bodies, part, **options))
            proxied.append(self.load.run(sidecar.url + CHAT_PATH, bodies, part, **options))
        return compare(merge(*direct), merge(*proxied))

    def warm_up(self, sidecar: Sidecar, bodies: list[str], requests: int = 20) -> None:
        self.load.run(self.upstream.url + CHAT_PATH, bodies, requests)
        self.load.run(sidecar.url + CHAT_PATH, bodies, requests)


def pass_through(bench: Bench, sidecar: Sidecar) -> dict[str, Any]:
    """Scenario 1: a ~500-character prompt, nothing scanned, at 1 and 50 clients."""
    bodies = [user_body(PLAIN_PROMPT)]
    bench.warm_up(sidecar, bodies, 50)
    one = bench.both(sidecar, bodies, bench.count(600, 20), rounds=2, concurrency=1)
    fifty = bench.both(
        sidecar, bodies, bench.count(6000, 200), rounds=2, concurrency=50, max_seconds=60
    )
    # Paced: 50 clients, each sending one request every 250 ms (200 requests/s in total).
    paced = bench.both(
        sidecar,
        bodies,
        bench.count(3000, 200),
        rounds=2,
        concurrency=50,
        interval=0.25,
        max_seconds=30,
    )
    return {
        "prompt_chars": len(PLAIN_PROMPT),
        "clients_1": one,
        "clients_50": fifty,
        "clients_50_paced": paced,
    }


def one_kilobyte(bench: Bench, sidecar: Sidecar) -> dict[str, Any]:
    """Scenario 2: 1 KB prompts with PII, NER on, beside Presidio's default analyzer on them.

    Each prompt goes direct, then through the sidecar, then through Presidio's
    default analyzer, the sidecar's detector and the NER model alone in this
    process, so every figure is measured under the same load on the machine.
    """
    requests = bench.count(40, 6)
    prompts = [pii_prompt(1000 + i, SIZES["1 KB"]) for i in range(requests)]
    bench.warm_up(sidecar, [user_body(pii_prompt(900 + i, SIZES["1 KB"])) for i in range(5)], 5)
    inprocess.presidio_times(bench.presidio, prompts[:2])
    inprocess.detector_times(bench.detector, bench.policy, prompts[:2])

    direct, cold, presidio, detector, ner = [], [], [], [], []
    for prompt in prompts:
        body = [user_body(prompt)]
        direct.append(bench.load.run(bench.upstream.url + CHAT_PATH, body, 1))
        cold.append(bench.load.run(sidecar.url + CHAT_PATH, body, 1))
        presidio += inprocess.presidio_times(bench.presidio, [prompt], warmup=0)
        detector += inprocess.detector_times(bench.detector, bench.policy, [prompt], warmup=0)
        ner += inprocess.ner_times(bench.presidio, [prompt], warmup=0)
    bodies = [user_body(prompt) for prompt in prompts]
    warm = bench.both(sidecar, bodies, requests, rounds=1)

    cold_figures = compare(merge(*direct), merge(*cold))
    presidio_p50 = percentile(presidio, 0.5) * MS
    return {
        "prompt_chars": len(prompts[0]),
        "cold": cold_figures,
        "warm": warm,
        "presidio_default_analyze": summary_ms(presidio),
        "detector_in_process": summary_ms(detector),
        "ner_alone_in_process": summary_ms(ner),
        "cold_added_vs_presidio": round(cold_figures["added_p50_ms"] / presidio_p50, 3),
        "warm_added_vs_presidio": round(warm["added_p50_ms"] / presidio_p50, 3),
        "ner_alone_vs_presidio": round(percentile(ner, 0.5) * MS / presidio_p50, 3),
    }


def conversation_turns(
    bench: Bench, sidecar: Sidecar, conversations: int, first: int
) -> dict[str, Any]:
    """Scenario 3: 20-turn conversations with the history resent; added latency per turn."""
    added: dict[int, list[float]] = {turn: [] for turn in range(1, 21)}
    texts: dict[int, int] = {}
    for number in range(first, first + conversations):
        replies: list[str] = []
        for turn in range(1, 21):
            messages = conversation(number, turn, replies, size=400)
            body = chat_body(messages)
            texts[turn] = len(messages)
            direct = bench.load.run(bench.upstream.url + CHAT_PATH, [body], 1)
            proxied = bench.load.run(sidecar.url + CHAT_PATH, [body], 1, return_content=True)
            replies.append(proxied["contents"][0] if proxied["contents"] else "")
            added[turn].append((proxied["latencies"][0] - direct["latencies"][0]) * MS)
    turns = {
        str(turn): {"texts": texts[turn], "added_p50_ms": round(percentile(added[turn], 0.5), 3)}
        for turn in CONVERSATION_TURNS
    }
    first_turn = turns["1"]["added_p50_ms"]
    return {
        "conversations": conversations,
        "user_prompt_chars": 400,
        "turns": turns,
        "turn_20_vs_1": round(turns["20"]["added_p50_ms"] / first_turn, 2)
        if first_turn > 0
        else None,
    }


def prompt_sizes(bench: Bench, sidecar: Sidecar, sizes: dict[str, int]) -> dict[str, Any]:
    """Scenario 4: prompts of growing size, prose and technical text, each new to the cache."""
    counts = {
        "1 KB": bench.count(10, 3),
        "32 KB": bench.count(3, 1),
        "256 KB": bench.count(2, 1),
        "1 MB": 1,
    }
    results: dict[str, Any] = {}
    for label, size in sizes.items():
        prompts = [mixed_prompt(3000 + 10 * len(results) + i, size) for i in range(counts[label])]
        bodies = [user_body(prompt) for prompt in prompts]
        results[label] = {
            "chars": len(prompts[0]),
            **bench.both(
                sidecar, bodies, len(bodies), rounds=1, concurrency=1, timeout=600, max_seconds=900
            ),
        }
    presidio = {
        label: summary_ms(
            inprocess.presidio_times(
                bench.presidio, [mixed_prompt(3900 + i, sizes[label]) for i in range(n)], 1
            )
        )
        for label, n in (("1 KB", bench.count(5, 2)), ("32 KB", 1))
        if label in sizes
    }
    ratio = None
    if "256 KB" in results and "32 KB" in results:
        ratio = round(results["256 KB"]["added_p50_ms"] / results["32 KB"]["added_p50_ms"], 2)
    return {"sizes": results, "presidio_default_analyze": presidio, "time_256kb_vs_32kb": ratio}


def streaming(bench: Bench, pass_sidecar: Sidecar, sidecar: Sidecar) -> dict[str, Any]:
    """Scenario 5: added time to first token and per-chunk restore cost of streamed replies.

    The fake provider sends one event every `STREAM_PACE` seconds, as a model
    streams tokens; one phase also has it send the whole reply at once.
    """
    paced: dict[str, Any] = {"headers": {CHUNK_DELAY_HEADER: str(STREAM_PACE)}, "concurrency": 4}
    plain = [user_body(cut(PLAIN_PROMPT, STREAM_PROMPT_CHARS), stream=True)]
    bench.warm_up(pass_sidecar, plain, 10)
    requests = bench.count(100, 12)
    repeated = [user_body(pii_prompt(4000, STREAM_PROMPT_CHARS), stream=True)]
    new = [
        user_body(pii_prompt(4100 + i, STREAM_PROMPT_CHARS), stream=True) for i in range(requests)
    ]
    bench.load.run(sidecar.url + CHAT_PATH, repeated, 1)
    prompt = pii_prompt(4200, SIZES["1 KB"])
    return {
        "pace_seconds": STREAM_PACE,
        "prompt_chars": STREAM_PROMPT_CHARS,
        "pass_through": _stream_compare(bench, pass_sidecar, plain, requests, **paced),
        "pass_through_burst": _stream_compare(bench, pass_sidecar, plain, requests),
        "pii_cached": _stream_compare(bench, sidecar, repeated, requests, **paced),
        "pii_new": _stream_compare(bench, sidecar, new, requests, rounds=1, **paced),
        "restore_in_process": inprocess.stream_restore_cost(bench.detector, bench.policy, prompt),
    }


def _stream_compare(
    bench: Bench,
    sidecar: Sidecar,
    bodies: list[str],
    requests: int,
    rounds: int = 2,
    **options: Any,
) -> dict[str, Any]:
    direct, proxied = [], []
    for _ in range(rounds):
        part = max(1, requests // rounds)
        direct.append(
            bench.load.run(bench.upstream.url + CHAT_PATH, bodies, part, stream=True, **options)
        )
        proxied.append(
            bench.load.run(sidecar.url + CHAT_PATH, bodies, part, stream=True, **options)
        )
    base, via = merge(*direct), merge(*proxied)
    first_token = compare(base, via, key="first_tokens")
    whole = compare(base, via)
    events = percentile(via["events"], 0.5)
    return {
        "first_token": first_token,
        "whole_stream": whole,
        "events_per_stream": events,
        "added_per_event_us": round(whole["added_p50_ms"] / events * MS, 2) if events else None,
    }


def workers_throughput(bench: Bench, sidecar: Sidecar, label: str, first: int) -> dict[str, Any]:
    """Scenario 6: requests per second with NER on, 16 clients, 1 KB prompts new to the cache.

    The CPU seconds of each worker show how many cores the run got: on a
    machine where other processes run, 2 workers cannot use 2 cores.
    """
    requests = bench.count(240, 24)
    bodies = [user_body(pii_prompt(first + i, SIZES["1 KB"])) for i in range(requests)]
    # Each worker's first analyses are slower; these prompts are not measured.
    warm_up = [user_body(pii_prompt(first + requests + i, SIZES["1 KB"])) for i in range(32)]
    bench.load.run(sidecar.url + CHAT_PATH, warm_up, len(warm_up), concurrency=16, max_seconds=60)
    pids = sidecar.worker_pids()
    cpu_before = [cpu_seconds(pid) for pid in pids]
    outcome = bench.load.run(
        sidecar.url + CHAT_PATH, bodies, requests, concurrency=16, max_seconds=30
    )
    cpu = [
        round(cpu_seconds(pid) - before, 2) for pid, before in zip(pids, cpu_before, strict=True)
    ]
    return {
        "workers": label,
        "requests": len(outcome["latencies"]),
        "seconds": round(outcome["elapsed"], 2),
        "rps": throughput(outcome),
        "worker_cpu_seconds": cpu,
        "cores_used": round(sum(cpu) / outcome["elapsed"], 2) if outcome["elapsed"] else None,
        "latency": summary_ms(outcome["latencies"]),
        "statuses": outcome["statuses"],
        "errors": len(outcome["errors"]),
    }
