"""Workers and producers that keep a ledger (see ``accounting``), for the fault tests.

``python -m tests.reliability.worker_proc worker URL QUEUE LEDGER_DIR WRITER [options]`` runs a
worker until SIGTERM; ``... producer URL QUEUE LEDGER_DIR WRITER --jobs N`` adds N jobs with
ids ``<WRITER>-<i>`` (custom ids make a retried add idempotent) and exits. A job whose payload
is ``"poison"`` kills its worker process (``os._exit``) every time it is delivered.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from pyqcore import BaseQueue, Job, RedisUnavailableError, Worker
from pyqcore.core.calls import Call
from pyqcore.core.effects import Command
from pyqcore.sync.driver import Client, SyncDriver
from tests.reliability.accounting import Ledger

TRANSIENT = (RedisConnectionError, RedisTimeoutError)
POISON = "poison"
T = TypeVar("T")


class LedgerDriver(SyncDriver):
    """The blocking driver, writing every ack call to the ledger: ``acking`` before it is
    sent, then ``acked`` / ``ack-refused`` as the script answered, or ``ack?`` when the reply
    was lost. It sees the calls the worker really sends, at the I/O boundary."""

    def __init__(self, client: Client, ledger: Ledger) -> None:
        super().__init__(client)
        self.ledger = ledger

    def call(self, call: Call[T]) -> T:
        reply: T = self._logged([call], lambda: [super(LedgerDriver, self).call(call)])[0]
        return reply

    def call_all(self, calls: Sequence[Call[Any] | Command]) -> list[Any]:
        if len(calls) == 1 and isinstance(calls[0], Call):
            return [self.call(calls[0])]
        return self._logged(calls, lambda: super(LedgerDriver, self).call_all(calls))

    def _logged(self, calls: Sequence[Call[Any] | Command],
                send: Callable[[], list[Any]]) -> list[Any]:
        acks = [(i, _pairs(c)) for i, c in enumerate(calls)
                if isinstance(c, Call) and c.script.name == "ack"]
        for _, pairs in acks:
            for job_id, token in pairs:
                self.ledger.log("acking", [job_id], token)
        try:
            replies = send()
        except TRANSIENT:
            for _, pairs in acks:
                for job_id, token in pairs:
                    self.ledger.log("ack?", [job_id], token)
            raise
        for i, pairs in acks:
            refused = set(replies[i].refused)
            for job_id, token in pairs:
                self.ledger.log("ack-refused" if job_id in refused else "acked", [job_id], token)
        return replies


def _pairs(call: Call[Any]) -> list[tuple[str, str]]:
    args = [str(a) for a in call.args]
    return list(zip(args[::2], args[1::2], strict=True))


class LedgerQueue(BaseQueue):
    """A queue whose handler and acks write the ledger; the handler sleeps ``work`` seconds."""

    def __init__(self, client: Client, ledger: Ledger, *, work: float = 0.0,
                 die_on_poison: bool = True, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.driver = LedgerDriver(client, ledger)
        self.ledger = ledger
        self.work = work
        self.die_on_poison = die_on_poison

    def process_job(self, job: Job) -> None:
        """Log the delivery, die on poison, do the work, log the execution."""
        self.ledger.log("delivered", [job.id], job.token)
        if job.payload == POISON:
            if self.die_on_poison:
                os._exit(17)
            raise RuntimeError("poison")
        if self.work:
            time.sleep(self.work)
        self.ledger.log("executed", [job.id])


def client_for(url: str) -> redis.Redis:
    """A client with short socket timeouts and no retries of its own: an outage reaches
    pyqcore (whose reconnect logic is under test) and the ledger sees every failed call."""
    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0,
                                retry=Retry(NoBackoff(), 0))


def run_worker(url: str, queue_name: str, ledger_dir: Path, writer: str, *,
               visibility_timeout: float, concurrency: int, work: float,
               max_retries: int) -> None:
    """Process until SIGTERM (caught from the very start, so an early one is graceful too)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    (ledger_dir / f"{writer}.ready").touch()  # from here on, SIGTERM is a graceful stop
    with Ledger(ledger_dir, writer) as ledger:
        queue = LedgerQueue(client_for(url), ledger, name=queue_name, work=work,
                            visibility_timeout=visibility_timeout, max_retries=max_retries)
        Worker(queue, concurrency=concurrency, idle_wait=0.2, stop=stop).run()


def run_producer(url: str, queue_name: str, ledger_dir: Path, writer: str, *, jobs: int,
                 seed: int, max_batch: int, pause: float) -> None:
    """Add ``jobs`` jobs in random batches; retry a failed add (same ids) until it is acked."""
    rng = random.Random(seed)
    with Ledger(ledger_dir, writer) as ledger:
        queue = BaseQueue(client_for(url), name=queue_name)
        i = 0
        while i < jobs:
            n = min(jobs - i, rng.randint(1, max_batch))
            ids = [f"{writer}-{k}" for k in range(i, i + n)]
            ledger.log("attempt", ids)
            failures = 0
            while True:
                try:
                    queue.add_batch([{"n": k} for k in range(i, i + n)], job_ids=ids)
                    break
                except RedisUnavailableError:  # refused, reset or timed out (it may have run)
                    ledger.log("attempt", ids)  # the retry is a new attempt, same ids
                    failures += 1
                    time.sleep(min(0.02 * 2 ** min(failures, 10), 1.0))
            ledger.log("enqueued", ids)
            i += n
            if pause:
                time.sleep(rng.uniform(0, pause))


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["worker", "producer"])
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("ledger_dir", type=Path)
    parser.add_argument("writer")
    parser.add_argument("--visibility-timeout", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--work", type=float, default=0.005)
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.2)
    a = parser.parse_args()
    if a.role == "worker":
        run_worker(a.url, a.queue, a.ledger_dir, a.writer, visibility_timeout=a.visibility_timeout,
                   concurrency=a.concurrency, work=a.work, max_retries=a.max_retries)
    else:
        run_producer(a.url, a.queue, a.ledger_dir, a.writer, jobs=a.jobs, seed=a.seed,
                     max_batch=a.max_batch, pause=a.pause)


if __name__ == "__main__":
    main()
