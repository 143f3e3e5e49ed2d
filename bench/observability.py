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

import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from rounds import ROOT, measured_rounds, write

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
    run = measured_rounds(__file__, __doc__, VARIANTS, measure, argv, rounds=7,
                          jobs_help="jobs timed per measurement",
                          before_help="a checkout to measure 'both off' on too")
    if run is None:
        return 0
    a, results = run
    text = "\n".join([
        "# pyqcore: what worker metrics and tracing cost per job", "",
        f"{time.strftime('%Y-%m-%d %H:%M')} · an empty handler, `process(concurrency=1, "
        f"burst=True)`, {a.jobs:,} jobs per run, {a.rounds} alternating runs per variant; "
        "`python bench/observability.py` to rerun.", "", *table(results), ""])
    return write(RESULTS, text)


if __name__ == "__main__":
    sys.exit(main())
