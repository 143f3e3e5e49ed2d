"""Redis's own time per call of the hot-path scripts, this checkout's against another
revision's: what a change to lua/ costs, without the client in the figure.

    python bench/script_cost.py [--base main] [--blocks 7] [--url URL]

Runs, on one redis-server, in alternating blocks (so drift hits both alike): a single add
(enqueue of one job), an add_batch call (enqueue of 1,000), a reserve of 100 jobs and the ack
of those 100, each with the base revision's script and this checkout's. Each script's ARGV is
built by name from its own header (``pyqcore.scripts``), so two revisions whose ARGV differ
(a new optional argument, sent unset) are compared as a caller of each would call them. The
figure is INFO commandstats' ``usec_per_call`` of EVALSHA (the script and the commands it
runs), the median over the blocks; it is wall time, so other processes on the machine blur it.
``--callgrind`` runs redis-server under valgrind's callgrind instead and counts the server's
instructions per call (reading the request included), which no other load changes: slower,
and the figure to trust on a busy machine. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from pyqcore import local_redis  # noqa: E402
from pyqcore.job import encode_record  # noqa: E402
from pyqcore.keys import QueueKeys  # noqa: E402
from pyqcore.scripts import Script  # noqa: E402
from pyqcore.serializer import MSGPACK  # noqa: E402
from tests.support import LocalRedis  # noqa: E402

NOW = 1_800_000_000_000
TOKEN = "0123456789abcdef"
RECORD = encode_record(MSGPACK, {"user_id": 7, "email": "user7@example.com", "template":
                                 "welcome", "vars": {"name": "User 7", "plan": "pro"}}, None,
                       NOW, 1 << 20)
SINGLE_ADDS = 2_000  # calls per block
BATCH_ADDS = 20  # calls of 1,000 jobs per block
CYCLES = 20  # reserve(100) + ack(100) per block


def scripts_at(revision: str | None) -> dict[str, Script]:
    """enqueue, reserve and ack as they are at ``revision`` (None: this checkout)."""
    def text(path: str) -> str:
        if revision is None:
            return (ROOT / path).read_text()
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"],
                              check=True, capture_output=True, text=True).stdout

    return {name: Script.parse(name, text(f"lua/{name}.lua"))
            for name in ("enqueue", "reserve", "ack")}


def argv(script: Script, values: dict[str, Any], tail: list[Any]) -> list[Any]:
    """The script's fixed ARGV by name (an entry ``values`` lacks is a new one: 0, unset),
    then the variadic ``tail``."""
    fixed = [a for a in script.argv if not a.endswith("...")]
    return [values.get(name, 0) for name in fixed] + tail


class Variant:
    """One revision's scripts, loaded on the server, with the calls the blocks make."""

    def __init__(self, client: redis.Redis, label: str, scripts: dict[str, Script]) -> None:
        self.client, self.label, self.scripts = client, label, scripts
        for script in scripts.values():
            client.script_load(script.source)

    def call(self, name: str, keys: QueueKeys, values: dict[str, Any], tail: list[Any]) -> Any:
        script = self.scripts[name]
        key_names = keys.keys(script.required_parts)  # a plain call: no optional key
        return self.client.evalsha(script.sha, len(key_names), *key_names,
                                   *argv(script, values, tail))


class Callgrind(local_redis.LocalRedis):
    """redis-server under callgrind (the plain server class: valgrind must run redis-server
    itself, not a wrapper that execs it): ``instructions`` counts what it runs for a piece of
    work."""

    def __init__(self) -> None:
        super().__init__(startup_timeout=120.0)

    def command(self) -> list[str]:
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.out",
                *super().command()]

    def instructions(self, run: Callable[[], object]) -> int:
        """The server's instructions while ``run`` runs."""
        assert self.process is not None
        pid = str(self.process.pid)
        subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
        run()
        for old in self.dir.glob("cg.out.*"):
            old.unlink()
        subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
        [dump] = self.dir.glob("cg.out.*")
        totals = [line for line in dump.read_text().splitlines() if line.startswith("totals:")]
        return int(totals[0].split()[1])


def per_call(client: redis.Redis, meter: Callgrind | None, run: Callable[[], object]) -> float:
    """EVALSHA's usec_per_call over ``run`` alone; with a callgrind ``meter``, the server's
    instructions per call."""
    client.config_resetstat()
    if meter is not None:
        spent = meter.instructions(run)
        return spent / int(client.info("commandstats")["cmdstat_evalsha"]["calls"])
    run()
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def block(variant: Variant, queue: str, meter: Callgrind | None) -> dict[str, float]:
    """One block of each measurement with ``variant``'s scripts on a fresh queue."""
    client, keys = variant.client, QueueKeys("bench", queue)
    adds = {"due_ms": 0, "id_prefix": "", "n": 1, "now_ms": NOW}
    batch = {**adds, "n": 1000}
    lease = {"now_ms": NOW, "count": 100, "visibility_ms": 30_000, "max_attempts": 4,
             "sweep_limit": 1000, "token": TOKEN}
    figures = {
        "enqueue, 1 job": per_call(client, meter, lambda: [
            variant.call("enqueue", keys, adds, [RECORD]) for _ in range(SINGLE_ADDS)]),
        "enqueue, 1,000 jobs": per_call(client, meter, lambda: [
            variant.call("enqueue", keys, batch, [RECORD] * 1000) for _ in range(BATCH_ADDS)]),
    }
    leased: list[list[Any]] = []
    figures["reserve, 100 jobs"] = per_call(client, meter, lambda: leased.extend(
        variant.call("reserve", keys, lease, [])[4::3] for _ in range(CYCLES)))
    pairs = [[arg for job_id in ids for arg in (job_id, TOKEN)] for ids in leased]
    figures["ack, 100 jobs"] = per_call(client, meter, lambda: [
        variant.call("ack", keys, {}, flat) for flat in pairs])
    client.flushall()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="the revision to compare against")
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--url", help="a Redis of yours (FLUSHALLed!); default: a fresh one")
    parser.add_argument("--callgrind", action="store_true",
                        help="count the server's instructions per call (valgrind)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        meter = stack.enter_context(Callgrind()) if args.callgrind else None
        client = (redis.Redis.from_url(args.url) if args.url
                  else (meter or stack.enter_context(LocalRedis())).client())
        client.flushall()
        variants = [Variant(client, args.base, scripts_at(args.base)),
                    Variant(client, "this checkout", scripts_at(None))]
        runs: dict[str, dict[str, list[float]]] = {v.label: {} for v in variants}
        for i in range(args.blocks):
            for variant in variants if i % 2 == 0 else variants[::-1]:
                for what, figure in block(variant, f"q{i}", meter).items():
                    runs[variant.label].setdefault(what, []).append(figure)
    unit = "server instructions" if args.callgrind else "EVALSHA µs"
    print(f"| {unit} per call (median of {args.blocks} blocks) | {args.base} | "
          "this checkout |\n|---|---|---|")
    for what in runs[args.base]:
        base, mine_ = (statistics.median(runs[v.label][what]) for v in variants)
        print(f"| {what} | {base:,.2f} | {mine_:,.2f} ({100 * (mine_ / base - 1):+.1f}%) |")


if __name__ == "__main__":
    main()
