"""The ``pyqcore`` command: stats, the dead-letter queue, script contracts, workers, the demo.

Connects to ``--url``, else PYQCORE_REDIS_URL, else REDIS_URL, else redis://localhost:6379/0.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import redis

from pyqcore.core.calls import text
from pyqcore.errors import ConfigurationError, PyqcoreError
from pyqcore.keys import DEFAULT_PREFIX, QueueKeys
from pyqcore.scripts import load_scripts, lua_dir
from pyqcore.sync.driver import Client
from pyqcore.sync.manager import QueueManager


def _url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("PYQCORE_REDIS_URL") or os.environ.get("REDIS_URL")
               or "redis://localhost:6379/0")


def _manager(args: argparse.Namespace) -> QueueManager:
    client: Client = (redis.RedisCluster.from_url(_url(args)) if args.cluster
                      else redis.Redis.from_url(_url(args)))
    return QueueManager(client, prefix=args.prefix)


def cmd_stats(args: argparse.Namespace) -> None:
    """Counts per state and counters of every known queue."""
    manager = _manager(args)
    sizes = manager.monitor_queue_sizes(process_dead_letters=False)
    if not sizes:
        print(f"no queues under prefix {args.prefix!r}")
    for name, counts in sizes.items():
        raw = manager.client.hgetall(QueueKeys(args.prefix, name).key("stats"))
        counters = " ".join(f"{text(k)}={int(v)}" for k, v in sorted(raw.items()))
        print(f"{name}: " + " ".join(f"{k}={v}" for k, v in counts.items()) + f"  [{counters}]")


def cmd_dlq(args: argparse.Namespace) -> None:
    """List, requeue or purge dead jobs."""
    dlq = _manager(args).dead_letter_queue
    if args.dlq_command == "list":
        for item in dlq.items(queue=args.queue, limit=args.limit):
            error = f"{item.error.type}: {item.error.message}" if item.error else "-"
            shown = repr(item.payload) if item.record is None else f"<raw {item.record!r:.60}>"
            print(f"{item.queue}/{item.job_id}  died={item.failed_at:.3f}  "
                  f"attempts={item.attempts}  redrives={item.redrives}  {error}  {shown:.120}")
    elif args.dlq_command == "requeue":
        print(f"requeued {dlq.requeue(args.queue, args.ids or None)} jobs")
    else:
        print(f"purged {dlq.purge(args.queue, max_age=args.older_than, ids=args.ids or None)} "
              "jobs")


def cmd_scripts(args: argparse.Namespace) -> None:
    """Each script's SHA, contract and a ready redis-cli line."""
    keys = QueueKeys(args.prefix, args.queue)
    folder = lua_dir()
    for name, script in sorted(load_scripts().items()):
        parts = [keys.lock("ITEM") if p == "lock" else keys.key(p) for p in script.key_parts]
        print(f"== {name}  sha1 {script.sha}")
        print(script.header)
        print(f"  $ redis-cli --eval {Path(str(folder)) / (name + '.lua')} "
              + " ".join(parts) + " , ARGV...\n")


def cmd_worker(args: argparse.Namespace) -> None:
    """Run the queues of ``module:attribute`` (a QueueManager) until SIGTERM/SIGINT."""
    module_name, _, attribute = args.app.partition(":")
    sys.path.insert(0, os.getcwd())
    manager = getattr(importlib.import_module(module_name), attribute or "manager")
    if not isinstance(manager, QueueManager):
        raise ConfigurationError(f"{args.app} is not a pyqcore.QueueManager")
    if args.queue:
        for name in args.queue:
            report = manager.get_queue(name).process(concurrency=args.concurrency,
                                                     burst=args.burst)
            print(f"{name}: {report}")
        return
    for name, report in manager.process_all_queues(concurrency=args.concurrency,
                                                   burst=args.burst).items():
        print(f"{name}: {report}")


def cmd_bench(args: argparse.Namespace) -> None:
    """The benchmark suite against the peers (a source checkout's bench/run.py)."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        script = root / "bench" / "run.py"
        if script.exists():
            raise SystemExit(subprocess.call([sys.executable, str(script), *args.bench_args]))
    raise ConfigurationError("the benchmark suite ships with the source, not the wheel: run "
                             "`pyqcore bench` (or `make bench`) in a pyqcore checkout")


def cmd_demo(args: argparse.Namespace) -> None:
    """The demo (a throwaway local Redis unless a URL is configured)."""
    from pyqcore import demo  # noqa: PLC0415 - only this command needs it

    demo.run(jobs=args.jobs)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="pyqcore", description=__doc__)
    p.add_argument("--url", help="Redis URL (default: $PYQCORE_REDIS_URL, $REDIS_URL, localhost)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix (default: %(default)s)")
    p.add_argument("--cluster", action="store_true", help="the URL names a Redis Cluster node")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("stats", help=cmd_stats.__doc__).set_defaults(func=cmd_stats)

    dlq = sub.add_parser("dlq", help=cmd_dlq.__doc__)
    dlq.set_defaults(func=cmd_dlq)
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_sub.add_parser("list", help="show dead jobs, oldest first")
    listing.add_argument("--queue")
    listing.add_argument("--limit", type=int, default=50)
    requeue = dlq_sub.add_parser("requeue", help="send dead jobs back to their queue")
    requeue.add_argument("queue")
    requeue.add_argument("ids", nargs="*", help="job ids (default: all dead jobs of the queue)")
    purge = dlq_sub.add_parser("purge", help="delete dead jobs for good")
    purge.add_argument("--queue")
    purge.add_argument("--older-than", type=float, default=0.0, metavar="SECONDS")
    purge.add_argument("ids", nargs="*", help="job ids (needs --queue)")

    scripts = sub.add_parser("scripts", help=cmd_scripts.__doc__)
    scripts.add_argument("--queue", default="myqueue", help="queue for the example keys")
    scripts.set_defaults(func=cmd_scripts)

    worker = sub.add_parser("worker", help=cmd_worker.__doc__)
    worker.add_argument("app", help="module:attribute of a QueueManager, e.g. myapp.jobs:manager")
    worker.add_argument("--queue", action="append", help="only this queue (repeatable)")
    worker.add_argument("--concurrency", type=int, default=8)
    worker.add_argument("--burst", action="store_true", help="stop when nothing is ready")
    worker.set_defaults(func=cmd_worker)

    bench = sub.add_parser("bench", help=cmd_bench.__doc__)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to bench/run.py")
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--jobs", type=int, default=10_000)
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyqcore`` command."""
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (PyqcoreError, redis.RedisError) as exc:
        print(f"pyqcore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
