"""The soak: ``python -m tests.reliability.soak --seconds 300`` (``make soak``).

Workers and producers run against a redis-server with ``appendonly yes``; at random gaps a
worker is SIGKILLed (and replaced) or redis-server is SIGKILLed and restarted. At the end
the workers stop, a reclaim pass finishes what is left, and the ledger checker accounts for
every job. Prints a report and exits 1 if a job was lost or unexpected, or duplicates exceed
what the crashes explain. ``--fsync everysec`` measures (does not judge) what that setting
loses. ``--million`` also measures the longest script call with 1,000,000 jobs waiting.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from pyqcore import BaseQueue
from pyqcore.core.calls import text
from pyqcore.scripts import load_scripts
from pyqcore.testing import ManualClock
from tests.reliability.scenario import Scenario
from tests.support import LocalRedis


def soak(seconds: float, *, workers: int, producers: int, fsync: str, seed: int) -> bool:
    """Run the kill-workers + restart-redis soak; prints the report; True if it passed."""
    rng = random.Random(seed)
    started = time.monotonic()
    with LocalRedis("--appendonly", "yes", "--appendfsync", fsync) as server, \
            tempfile.TemporaryDirectory(prefix="pyqcore-soak-") as tmp:
        scenario = Scenario(server, Path(tmp), rng)
        try:
            for _ in range(workers):
                scenario.start_worker()
            for _ in range(producers):
                scenario.start_producer(10**9, pause=0.05)
            deadline = started + seconds
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.5, 2.0))  # the fault schedule
                if rng.random() < 0.7:
                    scenario.kill_random_worker()
                else:
                    scenario.restart_redis(down=rng.uniform(0.0, 1.0))
            for writer, proc in scenario.producers.items():  # producers stop by crashing
                proc.kill()
                proc.wait(10)
                scenario.crashed.add(writer)
            scenario.stop_workers(timeout=60)
            counts = scenario.drain()
        finally:
            scenario.kill_all()
        account = scenario.account()
    judged = fsync == "always"
    passed = account.ok or not judged  # duplicates judged per job against kills and restarts
    print(f"soak: seed={seed} seconds={time.monotonic() - started:.0f} appendfsync={fsync} "
          f"workers={workers} producers={producers}")
    print(f"  jobs={account.enqueued} kills={scenario.kills} restarts={scenario.restarts} "
          f"lost={len(account.lost)} duplicated={len(account.duplicated)} dead={account.dead}")
    print(f"  unexplained duplicates={len(account.unexplained)} (leases open at kills "
          f"{account.in_flight_at_crashes}, at restarts {account.in_flight_at_outages}) "
          f"recovered={len(account.recovered)} "
          f"unexpected={len(account.unexpected)} indeterminate_acks="
          f"{account.indeterminate_acks} delivered={account.delivered} final counts={counts}")
    if account.lost:
        print(f"  lost (first 10): {sorted(account.lost)[:10]}")
    print("  PASS" if passed else "  FAIL", "" if judged else "(everysec: measured, not judged)")
    return passed


def longest_script_call(jobs: int = 1_000_000) -> None:
    """Fill a queue with ``jobs`` jobs, then run the script calls a busy queue makes (adds of
    a full batch, reserves that reclaim a full sweep of expired leases, acks) and print the
    slowest ones Redis recorded (SLOWLOG, calls over 1 ms) and its latency monitor's worst event."""
    with LocalRedis("--slowlog-log-slower-than", "1000", "--slowlog-max-len", "100000",
                    "--latency-monitor-threshold", "1") as server:
        client = server.client()
        queue = BaseQueue(client, name="million", batch_size=10_000, visibility_timeout=1.0)
        started = time.monotonic()
        for start in range(0, jobs, 100_000):
            queue.add_batch({"n": i, "to": f"user{i}@example.com"}
                            for i in range(start, min(jobs, start + 100_000)))
        filled = time.monotonic() - started
        for _ in range(5):
            queue.reserve(count=1000)  # leased, never acked: their leases expire
        later = time.time() + 5
        reclaimer = BaseQueue(client, name="million", clock=ManualClock(later))
        for _ in range(5):
            jobs_now = reclaimer.reserve(count=1000)  # each call reclaims up to 1000 first
            reclaimer.ack(jobs_now)
        sha_names = {script.sha: name for name, script in load_scripts().items()}
        entries = client.slowlog_get(100_000)
        scripts = [e for e in entries  # the command line holds binary records: split bytes
                   if bytes(e["command"]).split(b" ", 1)[0].upper() == b"EVALSHA"]
        print(f"longest call of each script with {queue.counts()['ready']:,} jobs waiting "
              f"(filled in {filled:.1f} s; {len(scripts)} EVALSHA calls logged):")
        longest: dict[str, int] = {}  # script name -> its longest call (microseconds)
        for e in scripts:
            sha = text(bytes(e["command"]).split(b" ", 2)[1])
            name = sha_names.get(sha, sha[:12])
            longest[name] = max(longest.get(name, 0), int(e["duration"]))
        for name, micros in sorted(longest.items(), key=lambda item: -item[1]):
            print(f"  {micros / 1000:8.2f} ms  {name}")
        latest = client.execute_command("LATENCY", "LATEST")  # type: ignore[no-untyped-call]
        print(f"  LATENCY LATEST: {latest}")
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always")
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    parser.add_argument("--million", action="store_true",
                        help="also measure the longest script call with 1,000,000 jobs waiting")
    args = parser.parse_args(argv)
    ok = soak(args.seconds, workers=args.workers, producers=args.producers, fsync=args.fsync,
              seed=args.seed)
    if args.million:
        longest_script_call()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
