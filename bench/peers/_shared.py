"""What every Python adapter shares: the command line, the payload, the job bodies, and the
drain and latency harnesses. Standard library and redis-py only, because each adapter runs in
its peer's own virtualenv (``bench/.venvs/<peer>``), next to that peer's redis-py.

An adapter is ``python bench/peers/<peer>_bench.py --url URL --workload W [...]``; it prints one
JSON line on stdout:

- ``{"ok": true, "seconds": s, "jobs": n, ...}``: ``n`` jobs took ``s`` seconds;
- ``{"ok": false, "unsupported": "no bulk API"}``: the library has no such API;
- ``{"ok": false, "error": "..."}``: it failed.

How completion is seen, the same way for every library: the drain body is one ``INCR`` on
``bench:counter``; the job that reads 1 stores the time in ``bench:first``, the job that reads
the total pushes the time to ``bench:done`` (one extra command for two jobs of 20,000). The
harness waits on ``bench:done`` with BLPOP, so nothing polls Redis while a library drains.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

COUNTER = "bench:counter"
FIRST = "bench:first"
DONE = "bench:done"
READY = "bench:ready"  # a worker of the latency run sets it once it is up
LATENCIES = "bench:latencies"  # latency run: seconds from enqueue to handler start, one a job

WORKLOADS = ("enqueue-single", "enqueue-bulk", "enqueue-concurrent", "drain", "latency",
             # pyqcore and redis-py only (Adapter.extra):
             "drain-empty", "memory", "redis-cpu", "single-vs-bare", "lpush", "lpush-pipelined",
             "commands-cpu")
BULK_BATCH = 1000
CONCURRENT = 1000  # adds awaited at once (one asyncio.gather, one Promise.all), repeated
PROCESSES = 2  # worker processes of the multi-process setting (p2)
DRAIN_CAP = float(os.environ.get("BENCH_DRAIN_CAP", "30"))  # seconds; a slower drain is cut

Result = dict[str, Any]


def payload(i: int) -> dict[str, Any]:
    """The reference job payload of the issue (~120 bytes as MessagePack or JSON)."""
    return {"user_id": i, "email": f"user{i}@example.com", "template": "welcome",
            "vars": {"name": f"User {i}", "plan": "pro"}}


def timed_payload(i: int) -> dict[str, Any]:
    """The payload of the latency run: the reference one plus the wall time it was enqueued."""
    data = payload(i)
    data["sent_at"] = time.time()
    return data


@dataclass(frozen=True)
class Options:
    """The adapter's command line."""

    url: str
    workload: str
    jobs: int
    concurrency: int
    setting: str  # "c1" (concurrency 1), "best" (the library's high-throughput setting) or
    # "p2" (best, in PROCESSES worker processes)
    rate: float  # latency run: jobs per second
    seconds: float  # latency run: how long
    role: str  # "bench" (the harness) or "worker" (a worker process the harness started)


def parse(argv: Sequence[str] | None = None) -> Options:
    """Parse an adapter's arguments."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--workload", choices=WORKLOADS, required=True)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--setting", choices=("c1", "best", "batch", "p2"), default="c1")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--role", choices=("bench", "worker"), default="bench")
    a = p.parse_args(argv)
    return Options(a.url, a.workload, a.jobs, a.concurrency, a.setting, a.rate, a.seconds, a.role)


def emit(result: Result) -> None:
    """Print the adapter's one result line."""
    print(json.dumps(result), flush=True)


def url_at_import() -> str:
    """The bench's Redis URL for a module that must know it on import (a library whose app or
    broker is a module global): ``BENCH_URL`` in a worker, else the ``--url`` argument."""
    if "BENCH_URL" in os.environ:
        return os.environ["BENCH_URL"]
    if "--url" in sys.argv[:-1]:
        return sys.argv[sys.argv.index("--url") + 1]
    return "redis://127.0.0.1:6379/0"


def client(url: str) -> redis.Redis:
    """A plain bytes client of the bench's Redis."""
    return redis.Redis.from_url(url)


# -- Redis's own figures (pyqcore and redis-py only) ------------------------------------------

def info(r: redis.Redis, section: str) -> dict[str, Any]:
    """One INFO section."""
    fields: dict[str, Any] = r.info(section)
    return fields


def cpu_seconds(r: redis.Redis) -> float:
    """The server process's CPU time so far: ``used_cpu_user + used_cpu_sys``."""
    cpu = info(r, "cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def command_stats(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """INFO commandstats by command, without the INFO and CONFIG calls of the measurement."""
    return {k.removeprefix("cmdstat_"): v for k, v in info(r, "commandstats").items()
            if not k.startswith(("cmdstat_info", "cmdstat_config"))}


# -- the job bodies (the worker side) ------------------------------------------------------------

class Body:
    """The job body, configured through the environment the harness gives the worker:
    ``BENCH_URL``, ``BENCH_TOTAL`` and ``BENCH_MODE`` (``incr`` or ``latency``)."""

    def __init__(self) -> None:
        self.url = os.environ.get("BENCH_URL", "redis://127.0.0.1:6380/0")
        self.total = int(os.environ.get("BENCH_TOTAL", "0"))
        self.mode = os.environ.get("BENCH_MODE", "incr")
        self._client: redis.Redis | None = None
        self._pid = 0

    @property
    def redis(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():  # forking workers reconnect
            self._client = client(self.url)
            self._pid = os.getpid()
        return self._client

    def __call__(self, data: Any) -> None:
        """Run the body on one job's payload (a dict, or its JSON text)."""
        if self.mode == "latency":
            started = time.time()
            sent_at = _sent_at(data)
            self.redis.rpush(LATENCIES, repr(started - sent_at))
            return
        n = self.redis.incr(COUNTER)
        self.after_incr(int(n))

    def after_incr(self, n: int) -> None:
        if n == 1:
            self.redis.set(FIRST, repr(time.time()))
        if n == self.total:
            self.redis.rpush(DONE, repr(time.time()))


class AsyncBody:
    """The same body for asyncio libraries, on redis.asyncio."""

    def __init__(self) -> None:
        self.sync = Body()
        self._client: Any = None

    async def __call__(self, data: Any) -> None:
        import redis.asyncio as aredis  # noqa: PLC0415  (only the asyncio adapters need it)

        if self._client is None:
            self._client = aredis.Redis.from_url(self.sync.url)
        r = self._client
        if self.sync.mode == "latency":
            started = time.time()
            await r.rpush(LATENCIES, repr(started - _sent_at(data)))
            return
        n = int(await r.incr(COUNTER))
        if n == 1:
            await r.set(FIRST, repr(time.time()))
        if n == self.sync.total:
            await r.rpush(DONE, repr(time.time()))


def _sent_at(data: Any) -> float:
    if isinstance(data, str | bytes):
        data = json.loads(data)
    return float(data["sent_at"])


def worker_env(opts: Options, total: int, mode: str) -> dict[str, str]:
    """The environment of a worker process started by the harness."""
    env = dict(os.environ)
    env.update(BENCH_URL=opts.url, BENCH_TOTAL=str(total), BENCH_MODE=mode,
               PYTHONUNBUFFERED="1")
    return env


# -- the harnesses (the bench side) --------------------------------------------------------------

@dataclass(frozen=True)
class Adapter:
    """What one library provides to the harness. ``worker`` is the command that runs one worker
    process at ``opts.setting`` until SIGTERM; its environment carries the body's settings."""

    name: str
    script: str  # the adapter's file: the worker runs as ``script --role worker``
    enqueue_single: Callable[[Options, int], None]
    enqueue_bulk: Callable[[Options, int], None] | None
    settings: Callable[[Options], str]  # a description of the worker setting, for the report
    run_worker: Callable[[Options], None] | None = None  # runs until SIGTERM, in --role worker
    # or a command (a library's own CLI); None from it: the default one for this setting
    worker: Callable[[Options], list[str] | None] | None = None
    produce: Callable[[Options, float, float], int] | None = None  # latency producer
    # ``CONCURRENT`` single adds awaited at once, repeated to n jobs (asyncio libraries)
    enqueue_concurrent: Callable[[Options, int], None] | None = None
    # How the library runs PROCESSES worker processes (setting p2): "flag" (its worker command
    # for p2 runs them itself), "copies" (the harness starts that many worker processes), or
    # None (it has no multi-process worker)
    processes: str | None = None
    prefill: Callable[[Options, int], None] | None = None  # defaults to bulk, else single
    drain_jobs: Callable[[Options], int] | None = None  # fewer jobs for a very slow setting
    extra: dict[str, Callable[[Options], Result]] | None = None  # more workloads by name


class Workers:
    """The worker processes of one run: one, or for a multi-process setting the library
    has no flag for, ``PROCESSES`` copies of it; each in a session of its own."""

    def __init__(self, procs: list[subprocess.Popen[bytes]]) -> None:
        self.procs = procs

    def check(self) -> None:
        """Raise if a worker process has exited."""
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with code {proc.returncode}")

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL those that linger."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            stop_worker(proc)


def start_workers(adapter: Adapter, opts: Options, total: int, mode: str) -> Workers:
    """Start the run's worker process(es), output in log files next to the results."""
    copies = PROCESSES if opts.setting == "p2" and adapter.processes == "copies" else 1
    return Workers([start_worker(adapter, opts, total, mode, i) for i in range(copies)])


def start_worker(adapter: Adapter, opts: Options, total: int, mode: str,
                 index: int = 0) -> subprocess.Popen[bytes]:
    """Start one worker process with its output in a log file next to the results."""
    log_dir = Path(__file__).resolve().parent.parent / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{index + 1}" if index else ""
    log = (log_dir / f"{adapter.name}-{opts.workload}-{opts.setting}{suffix}.log").open("wb")
    command = adapter.worker(opts) if adapter.worker is not None else None
    if command is None:
        command = [sys.executable, adapter.script, "--url", opts.url, "--workload", opts.workload,
                   "--concurrency", str(opts.concurrency), "--setting", opts.setting,
                   "--role", "worker"]
    return subprocess.Popen(command, env=worker_env(opts, total, mode),
                            cwd=Path(__file__).resolve().parent, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:  # the worker left; its own children (a pool) may not have
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_list(r: redis.Redis, key: str, workers: Workers, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = r.blpop([key], 1)
        if got is not None:
            value = got[1]
            return value if isinstance(value, bytes) else str(value).encode()
        workers.check()
    raise TimeoutError(f"no {key} after {timeout:.0f} s")


def drain(adapter: Adapter, opts: Options) -> Result:
    """Pre-enqueue the jobs, start the worker process (``p2``: two), time it until the counter
    reaches the total. Reported: ``seconds`` from the first job's start to the last INCR
    (startup excluded, so slow imports do not count against a library), and ``startup`` from
    process start to the first job. A slow library is stopped after ``DRAIN_CAP`` seconds and
    its rate taken over the jobs it finished by then (``partial`` says so)."""
    if opts.setting == "p2" and adapter.processes is None:
        return {"ok": False, "unsupported": "no multi-process worker"}
    total = adapter.drain_jobs(opts) if adapter.drain_jobs else opts.jobs
    fill = adapter.prefill or adapter.enqueue_bulk or adapter.enqueue_single
    fill(opts, total)
    r = client(opts.url)
    launched = time.time()
    workers = start_workers(adapter, opts, total, "incr")
    partial = False
    try:
        _wait_key(r, FIRST, workers, timeout=60)
        first = float(r.get(FIRST) or 0)
        try:
            done = float(_wait_list(r, DONE, workers, timeout=DRAIN_CAP - (time.time() - first)))
            count = total
        except TimeoutError:
            count, done = int(r.get(COUNTER) or 0), time.time()
            partial = True
    finally:
        workers.stop()
    result: Result = {"ok": True, "seconds": done - first, "jobs": count - 1,
                      "startup": first - launched, "setting": adapter.settings(opts)}
    if partial:
        result["partial"] = f"{count:,} of {total:,} jobs in {DRAIN_CAP:.0f} s"
    return result


def _wait_key(r: redis.Redis, key: str, workers: Workers, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not r.exists(key):
        workers.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no job started within {timeout:.0f} s")
        time.sleep(0.005)


def latency(adapter: Adapter, opts: Options) -> Result:
    """Start a worker, wait until it is up, enqueue at ``rate`` for ``seconds`` (one add at a
    time, on a schedule), and read the enqueue -> handler start latencies it recorded."""
    r = client(opts.url)
    total = round(opts.rate * opts.seconds)
    workers = start_workers(adapter, opts, total, "latency")
    try:
        warmup = 20  # the worker's first jobs warm its connections and code paths
        produce = adapter.produce or _default_produce(adapter)
        produce(opts, opts.rate, warmup / opts.rate)
        deadline = time.monotonic() + 60
        while int(r.llen(LATENCIES)) < warmup:
            workers.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            time.sleep(0.05)
        r.delete(LATENCIES)
        sent = produce(opts, opts.rate, opts.seconds)
        deadline = time.monotonic() + 30
        while int(r.llen(LATENCIES)) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        workers.stop()
    values = sorted(float(v) for v in r.lrange(LATENCIES, 0, -1))
    if not values:
        return {"ok": False, "error": "no job reached its handler"}
    return {"ok": True, "jobs": len(values), "sent": sent, "p50": _pct(values, 50),
            "p99": _pct(values, 99), "max": values[-1], "setting": adapter.settings(opts)}


def _default_produce(adapter: Adapter) -> Callable[[Options, float, float], int]:
    raise RuntimeError(f"{adapter.name} has no latency producer")


def paced(rate: float, seconds: float) -> list[float]:
    """The send times (monotonic) of a steady ``rate`` for ``seconds``, starting now."""
    start = time.monotonic()
    return [start + i / rate for i in range(round(rate * seconds))]


def wait_until(at: float) -> None:
    """Sleep until the monotonic time ``at`` (spinning the last half millisecond)."""
    while (left := at - time.monotonic()) > 0.0005:
        time.sleep(left - 0.0004)
    while time.monotonic() < at:
        pass


async def gathered(send: Callable[[dict[str, Any]], Awaitable[object]], n: int) -> None:
    """``n`` single adds, ``CONCURRENT`` awaited at once (one ``asyncio.gather``) at a time,
    as an asyncio service's concurrent requests add jobs."""
    for start in range(0, n, CONCURRENT):
        await asyncio.gather(*(send(payload(i)) for i in range(start, min(n, start + CONCURRENT))))


def send_paced(send: Callable[[dict[str, Any]], object], rate: float, seconds: float) -> int:
    """Send a timed payload at each moment of a steady ``rate`` for ``seconds`` (the latency
    workload's producer); returns how many were sent."""
    times = paced(rate, seconds)
    for i, at in enumerate(times):
        wait_until(at)
        send(timed_payload(i))
    return len(times)


async def send_paced_async(
    send: Callable[[dict[str, Any]], Awaitable[object]], rate: float, seconds: float
) -> int:
    """``send_paced`` for an asyncio library (asyncio's loop clock is monotonic too)."""
    times = paced(rate, seconds)
    loop = asyncio.get_running_loop()
    for i, at in enumerate(times):
        if (left := at - loop.time()) > 0:
            await asyncio.sleep(left)
        await send(timed_payload(i))
    return len(times)


def _pct(values: list[float], pct: float) -> float:
    index = min(len(values) - 1, max(0, round(pct / 100 * len(values)) - 1))
    return values[index]


def timed(fn: Callable[[Options, int], None], opts: Options) -> Result:
    start = time.perf_counter()
    fn(opts, opts.jobs)
    return {"ok": True, "seconds": time.perf_counter() - start, "jobs": opts.jobs}


def main(adapter: Adapter, argv: Sequence[str] | None = None) -> None:
    """The adapter's entry point: run ``opts.workload`` and print its JSON line."""
    opts = parse(argv)
    if opts.role == "worker":
        if adapter.run_worker is None:
            raise SystemExit(f"{adapter.name} runs its workers with its own command")
        adapter.run_worker(opts)
        return
    try:
        if adapter.extra and opts.workload in adapter.extra:
            result = adapter.extra[opts.workload](opts)
        elif opts.workload == "enqueue-single":
            result = timed(adapter.enqueue_single, opts)
        elif opts.workload == "enqueue-concurrent":
            if adapter.enqueue_concurrent is None:
                result = {"ok": False, "unsupported": "no asyncio API"}
            else:
                result = timed(adapter.enqueue_concurrent, opts)
        elif opts.workload == "enqueue-bulk":
            if adapter.enqueue_bulk is None:
                result = {"ok": False, "unsupported": "no bulk API"}
            else:
                result = timed(adapter.enqueue_bulk, opts)
        elif opts.workload == "drain":
            result = drain(adapter, opts)
        else:
            result = latency(adapter, opts)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    emit(result)
