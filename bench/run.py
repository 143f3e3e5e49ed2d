"""pyqcore's benchmark suite: pyqcore and its peers side by side, on the same Redis, in one run.

    python bench/run.py [--url URL] [--quick] [--only pyqcore,rq,...] [--runs N]

Starts its own redis-server (no persistence) unless ``--url`` is given, prepares each peer's
environment (bench/venvs.py), and runs every workload of every library in a subprocess (the
adapters in bench/peers/ and bench/node/), FLUSHALL before each run. Each figure is the median of
3 runs (``--quick``: 1 run, fewer jobs, a shorter latency run). Prints a Markdown report and saves
it to bench/results/latest.md, the raw figures to latest.json, and a chart to latest.png; a
``--quick`` or ``--only`` run saves partial.{md,json,png} instead (not committed), so the
published full run stays as it was.
A peer that fails to install or to run is reported in the table, never fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))  # run from a checkout: pyqcore, tests.support
sys.path.insert(0, str(BENCH))  # venvs

import venvs  # noqa: E402

from tests.support import LocalRedis  # noqa: E402

Result = dict[str, Any]


@dataclass(frozen=True)
class Peer:
    """A library under test: its adapter, and the concurrency of its ``best`` worker setting."""

    name: str
    adapter: Path
    best: int
    env: str | None = None  # the environment in bench/.venvs (None: pyqcore's own interpreter)


PEERS = [
    # pyqcore's slots share one GIL: on 2 cores, 2 slots drain as fast as 8 and keep the
    # latency tail short (p99 1.3-1.4 ms against 3.4-5.6 ms with 8; bench/README.md).
    Peer("pyqcore", BENCH / "peers" / "pyqcore_bench.py", 2),
    Peer("rq", BENCH / "peers" / "rq_bench.py", 1, "rq"),
    Peer("arq", BENCH / "peers" / "arq_bench.py", 50, "arq"),
    Peer("saq", BENCH / "peers" / "saq_bench.py", 50, "saq"),
    Peer("dramatiq", BENCH / "peers" / "dramatiq_bench.py", 8, "dramatiq"),
    Peer("celery", BENCH / "peers" / "celery_bench.py", 8, "celery"),
    Peer("huey", BENCH / "peers" / "huey_bench.py", 8, "huey"),
    Peer("taskiq", BENCH / "peers" / "taskiq_bench.py", 50, "taskiq"),
    Peer("streaq", BENCH / "peers" / "streaq_bench.py", 50, "streaq"),
    Peer("bullmq", BENCH / "node" / "bullmq_bench.mjs", 50, "bullmq"),
]
FLOOR = Peer("redis-py", BENCH / "peers" / "redispy_bench.py", 1)

# (workload, setting): the rows of the comparison, in order.
THROUGHPUT = [("enqueue-single", "c1"), ("enqueue-bulk", "c1"), ("enqueue-concurrent", "c1"),
              ("drain", "c1"), ("drain", "best"), ("drain", "p2")]
TITLES = {
    ("enqueue-single", "c1"): "enqueue-single (one call per job, one connection)",
    ("enqueue-bulk", "c1"): "enqueue-bulk (the bulk API, batches of 1,000)",
    ("enqueue-concurrent", "c1"): "enqueue-concurrent (1,000 adds awaited at once, repeated)",
    ("drain", "c1"): "drain, concurrency 1 (one worker process, body = one INCR)",
    ("drain", "best"): "drain, high-throughput setting (one worker process, body = one INCR)",
    ("drain", "p2"): "drain, two worker processes (body = one INCR)",
}


@dataclass
class Config:
    url: str
    runs: int
    jobs: int
    latency_seconds: float
    memory_jobs: int
    only: list[str]
    timeout: float = 600.0


@dataclass
class Report:
    """Everything measured: ``figures[peer][key]`` is the median result of a workload."""

    config: dict[str, Any]
    figures: dict[str, dict[str, Result]] = field(default_factory=dict)
    environments: dict[str, str] = field(default_factory=dict)  # peer -> error, when broken
    floors: dict[str, Result] = field(default_factory=dict)


class Progress:
    """One status line on stderr: a bar, the step count, and what runs now."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        width = 24
        filled = round(width * min(self.done, self.total) / max(self.total, 1))
        elapsed = time.monotonic() - self.started
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{elapsed:5.0f}s {label}")
        if self.tty:
            sys.stderr.write("\r\033[K" + line[:150])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def skip(self, count: int) -> None:
        """Steps that will not run (a figure cut short), so the count ends at the total."""
        self.done += count

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


# -- running adapters ---------------------------------------------------------------------------

def flush(url: str) -> None:
    """FLUSHALL: only ever on the server this run started, or on the --url the user gave."""
    r = redis.Redis.from_url(url)
    r.flushall()
    r.close()


def run_adapter(interpreter: Path, peer: Peer, cfg: Config, *, workload: str,
                setting: str = "c1", jobs: int | None = None) -> Result:
    """One run of one workload in a subprocess; the adapter's JSON line, or the failure."""
    flush(cfg.url)
    command = [str(interpreter), str(peer.adapter), "--url", cfg.url, "--workload", workload,
               "--jobs", str(jobs or cfg.jobs), "--setting", setting,
               "--concurrency", str(peer.best), "--seconds", str(cfg.latency_seconds)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=cfg.timeout,
                              cwd=peer.adapter.parent, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {cfg.timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"ok": False, "error": f"exit {done.returncode}: {tail[0][:200]}"}
    result: Result = json.loads(lines[-1])
    return result


# What a run is ranked by for the median: its time, its p50, or its Redis CPU per job.
MEDIAN_KEYS = ("seconds", "p50", "script_usec_per_job", "command_usec_per_job")


def median(results: list[Result]) -> Result:
    """The run with the median time (or p50) among successful runs; else the first failure."""
    good = [r for r in results if r.get("ok")]
    if not good:
        return results[0]
    key = next((k for k in MEDIAN_KEYS if k in good[0]), None)
    if key is None:
        return good[len(good) // 2]
    ordered = sorted(good, key=lambda r: float(r[key]) / max(int(r.get("jobs", 1)), 1))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs"] = len(good)
    if len(good) < len(results):
        chosen["failed_runs"] = len(results) - len(good)
    return chosen


def measure(interpreter: Path, peer: Peer, cfg: Config, *, workload: str, setting: str,
            progress: Progress, jobs: int | None = None, runs: int | None = None) -> Result:
    results = []
    total = runs or cfg.runs
    for i in range(total):
        progress.step(f"{peer.name} {workload} {setting} (run {i + 1})")
        result = run_adapter(interpreter, peer, cfg, workload=workload, setting=setting,
                             jobs=jobs)
        results.append(result)
        if not result.get("ok") and ("unsupported" in result or i == 0):
            progress.skip(total - i - 1)
            break  # no such API, or broken: do not repeat
    return median(results)


def redis_benchmark(cfg: Config, progress: Progress) -> dict[str, Result]:
    """redis-benchmark's LPUSH and EVALSHA of a one-line script, at -P 1 and -P 64."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"redis-benchmark": {"ok": False, "error": "redis-benchmark not found on PATH"}}
    r = redis.Redis.from_url(cfg.url)
    host = r.connection_pool.connection_kwargs.get("host", "127.0.0.1")
    port = r.connection_pool.connection_kwargs.get("port", 6379)
    value = json.dumps({"user_id": 1, "email": "user1@example.com", "template": "welcome",
                        "vars": {"name": "User 1", "plan": "pro"}}, separators=(",", ":"))
    script = "return redis.call('LPUSH', KEYS[1], ARGV[1])"
    floors: dict[str, Result] = {}
    for pipeline in (1, 64):
        for name in ("LPUSH", "EVALSHA"):
            progress.step(f"redis-benchmark {name} -P {pipeline}")
            rates = []
            for _ in range(cfg.runs):
                flush(cfg.url)
                sha = str(r.script_load(script))
                command = (["LPUSH", "bench:floor", value] if name == "LPUSH"
                           else ["EVALSHA", sha, "1", "bench:floor", value])
                requests = 200_000 if pipeline > 1 else 50_000
                if cfg.jobs < 20_000:
                    requests //= 5
                done = subprocess.run(
                    [binary, "-h", str(host), "-p", str(port), "-n", str(requests), "-c", "1",
                     "-P", str(pipeline), "-q", *command],
                    capture_output=True, text=True, check=False, timeout=300)
                found = re.findall(r"([\d.]+) requests per second", done.stdout)
                if done.returncode != 0 or not found:
                    floors[f"{name} -P {pipeline}"] = {"ok": False,
                                                       "error": (done.stderr or done.stdout)[-200:]}
                    break
                rates.append(float(found[-1]))
            if rates:
                rate = statistics.median(rates)
                floors[f"{name} -P {pipeline}"] = {"ok": True, "rate": rate,
                                                   "seconds": 1 / rate, "jobs": 1}
    r.close()
    return floors


# -- the whole run ------------------------------------------------------------------------------

def steps(cfg: Config, peers: list[Peer]) -> int:
    per_peer = (len(THROUGHPUT) + 1) * cfg.runs  # + latency
    # drain:batch, drain-empty and redis-cpu at cfg.runs each, memory and single-vs-bare once
    pyqcore_only = 3 * cfg.runs + 2 if any(p.name == "pyqcore" for p in peers) else 0
    floors = 3 * cfg.runs + 4  # lpush, lpush-pipelined, commands-cpu; redis-benchmark's four
    return len(peers) * per_peer + pyqcore_only + floors + len(peers)


def run(cfg: Config) -> Report:
    peers = [p for p in PEERS if not cfg.only or p.name in cfg.only]
    report = Report(config={"runs": cfg.runs, "jobs": cfg.jobs,
                            "latency_seconds": cfg.latency_seconds,
                            "memory_jobs": cfg.memory_jobs, "python": platform.python_version(),
                            "machine": f"{platform.machine()}, {_cpus()} CPUs",
                            "redis": _redis_version(cfg.url),
                            "date": time.strftime("%Y-%m-%d %H:%M")})
    progress = Progress(steps(cfg, peers))
    main_python = Path(sys.executable)
    try:
        # The floors first: pyqcore, measured next, is compared with them closest in time.
        for workload in ("lpush", "lpush-pipelined", "commands-cpu"):
            report.floors[f"redis-py {workload}"] = measure(
                main_python, FLOOR, cfg, workload=workload, setting="c1", progress=progress)
        report.floors.update(redis_benchmark(cfg, progress))
        for peer in peers:
            progress.step(f"preparing {peer.name}")
            if peer.env is None:
                interpreter = main_python
            else:
                env = venvs.prepare(peer.env)
                if env.python is None:
                    report.environments[peer.name] = env.error or "install failed"
                    continue
                interpreter = env.python
            figures: dict[str, Result] = {}
            for workload, setting in THROUGHPUT:
                figures[f"{workload}:{setting}"] = measure(
                    interpreter, peer, cfg, workload=workload, setting=setting, progress=progress)
            figures["latency:best"] = measure(interpreter, peer, cfg, workload="latency",
                                              setting="best", progress=progress)
            if peer.name == "pyqcore":
                figures["drain:batch"] = measure(interpreter, peer, cfg, workload="drain",
                                                 setting="batch", progress=progress)
                figures["drain-empty:best"] = measure(
                    interpreter, peer, cfg, workload="drain-empty", setting="best",
                    progress=progress)
                figures["memory"] = measure(interpreter, peer, cfg, workload="memory",
                                            setting="c1", progress=progress,
                                            jobs=cfg.memory_jobs, runs=1)
                figures["redis-cpu"] = measure(interpreter, peer, cfg, workload="redis-cpu",
                                               setting="c1", progress=progress)
                # Alternating blocks inside one run already: the medians are its own.
                figures["single-vs-bare"] = measure(interpreter, peer, cfg,
                                                    workload="single-vs-bare", setting="c1",
                                                    progress=progress, runs=1)
            report.figures[peer.name] = figures
    finally:
        progress.close()
    return report


def _cpus() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 0


def _redis_version(url: str) -> str:
    r = redis.Redis.from_url(url)
    try:
        info: dict[str, Any] = r.info("server")
        return str(info.get("redis_version", "?"))
    finally:
        r.close()


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """The Redis to measure on: ``url`` as given, or a fresh local redis-server (no
    persistence, default config otherwise) that is stopped at the end."""
    if url:
        yield url
        return
    with LocalRedis() as local:
        yield local.url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", help="measure on this Redis (FLUSHALL before every run!) "
                                 "instead of starting one")
    p.add_argument("--quick", action="store_true", help="1 run, 5,000 jobs, 3 s latency run")
    p.add_argument("--only", default="", help="comma-separated libraries (default: all)")
    p.add_argument("--runs", type=int, help="runs per figure (default 3, --quick 1)")
    p.add_argument("--no-chart", action="store_true", help="skip the chart")
    a = p.parse_args(argv)
    only = [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = set(only) - {peer.name for peer in PEERS}
    if unknown:
        p.error(f"unknown libraries: {', '.join(sorted(unknown))}")
    import report as render  # noqa: PLC0415  (bench/report.py: the tables)

    with server(a.url) as url:
        cfg = Config(url=url, runs=a.runs or (1 if a.quick else 3),
                     jobs=5_000 if a.quick else 20_000,
                     latency_seconds=3.0 if a.quick else 10.0,
                     memory_jobs=20_000 if a.quick else 100_000, only=only)
        result = run(cfg)
    RESULTS.mkdir(exist_ok=True)
    stem = "partial" if a.quick or only else "latest"
    raw = RESULTS / f"{stem}.json"
    raw.write_text(json.dumps({"config": result.config, "figures": result.figures,
                               "environments": result.environments,
                               "floors": result.floors}, indent=1))
    text = render.markdown(json.loads(raw.read_text()))
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)
    if not a.no_chart:
        print(render.chart(raw, RESULTS / f"{stem}.png"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
