"""What worker metrics and tracing cost the worker per job: an empty handler drained by one
slot, with both off, with the worker metrics (``process(metrics=True)``), with tracing (a
queue made with ``tracing=True``, the OpenTelemetry SDK with a batch span processor whose
exporter drops the spans), and both; and, with ``--before DIR``, with both off on another
checkout (the code before the hooks existed), to show that off costs nothing.

    python bench/observability.py [--url URL] [--rounds N] [--jobs N] [--before DIR]

Each measurement is a fresh process (so registries and tracer providers start empty, and
imports are its own), in alternating rounds so drift hits every variant alike: it adds the
jobs (untimed), drains 2,000 to warm up, then times ``process(burst=True)`` over the rest:
wall time and the process's CPU time (all its threads: the span processor's too) per job.
The hooks send nothing to Redis, so Redis's work per job is the same in every variant.
Writes the table to bench/results/observability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "observability.md"
WARM_UP = 2_000
VARIANTS = {
    "before": "both off, before the hooks (--before checkout)",
    "off": "both off",
    "metrics": "process(metrics=True)",
    "tracing": "tracing=True (OpenTelemetry SDK, spans dropped by the exporter)",
    "both": "metrics and tracing",
}


def measure(variant: str, url: str, jobs: int) -> dict[str, float]:
    """One timed drain in this process (see the module docstring)."""
    import redis  # noqa: PLC0415 - after --before put its checkout first on sys.path

    from pyqcore import BaseQueue  # noqa: PLC0415

    tracing = variant in ("tracing", "both")
    if tracing:
        install_tracer_provider()
    client = redis.Redis.from_url(url)
    client.flushall()
    options: dict[str, Any] = {"tracing": True} if tracing else {}
    queue = BaseQueue(client, name="observed", handler=lambda job: None, **options)
    run: dict[str, Any] = {"metrics": True} if variant in ("metrics", "both") else {}
    for start in range(0, WARM_UP + jobs, 10_000):
        queue.add_batch(range(start, min(start + 10_000, WARM_UP + jobs)))
    queue.process(burst=True, max_jobs=WARM_UP, **run)
    cpu, wall = time.process_time(), time.perf_counter()
    report = queue.process(burst=True, **run)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert report.acked == jobs, report
    return {"wall_us": wall / jobs * 1e6, "cpu_us": cpu / jobs * 1e6}


def install_tracer_provider() -> None:
    """The OpenTelemetry SDK as an application sets it up, exporting to nowhere."""
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)


def child(variant: str, url: str, jobs: int, checkout: Path) -> dict[str, float]:
    """``measure`` in a new process, importing pyqcore from ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--url", url,
                          "--jobs", str(jobs)], env=env, capture_output=True, text=True,
                         check=True, cwd=checkout)
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def table(results: dict[str, list[dict[str, float]]]) -> list[str]:
    """Medians (and the range of wall times) per variant, against "off"."""
    off = statistics.median(r["cpu_us"] for r in results["off"])
    lines = ["| variant | wall µs/job: median (min to max) | CPU µs/job | CPU minus off |",
             "|---|---:|---:|---:|"]
    for variant, runs in results.items():
        walls = [r["wall_us"] for r in runs]
        cpu = statistics.median(r["cpu_us"] for r in runs)
        lines.append(f"| {VARIANTS[variant]} | {statistics.median(walls):.2f} "
                     f"({min(walls):.2f} to {max(walls):.2f}) | {cpu:.2f} | {cpu - off:+.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", help="measure on this Redis (it is FLUSHALLed!) instead of a new one")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds of every variant")
    p.add_argument("--jobs", type=int, default=20_000, help="jobs timed per measurement")
    p.add_argument("--before", type=Path, help="a checkout to measure 'both off' on too")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.child, a.url, a.jobs)))
        return 0
    sys.path.insert(0, str(ROOT))  # run from a checkout
    from tests.support import LocalRedis  # noqa: PLC0415

    variants = [v for v in VARIANTS if v != "before" or a.before]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with contextlib.ExitStack() as stack:
        url = a.url or stack.enter_context(LocalRedis()).url
        for round_ in range(a.rounds):
            for variant in variants[round_ % len(variants):] + variants[:round_ % len(variants)]:
                checkout = a.before if variant == "before" else ROOT
                results[variant].append(child(variant, url, a.jobs, checkout))
    text = "\n".join([
        "# pyqcore: what worker metrics and tracing cost per job", "",
        f"{time.strftime('%Y-%m-%d %H:%M')} · an empty handler, `process(concurrency=1, "
        f"burst=True)`, {a.jobs:,} jobs per run, {a.rounds} alternating runs per variant; "
        "`python bench/observability.py` to rerun.", "", *table(results), ""])
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
