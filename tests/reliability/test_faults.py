"""Fault tests: real worker and producer processes, real signals, a real redis-server that is
killed and restarted; every job accounted for by the ledger checker (``accounting``)."""

from __future__ import annotations

import dataclasses
import random
import time

import redis

from pyqcore import BaseQueue
from pyqcore.testing import ManualClock
from tests.reliability.accounting import Ledger, read_history
from tests.reliability.scenario import Scenario, wait_until
from tests.reliability.worker_proc import POISON

JOBS_PER_PRODUCER = 150
PRODUCERS = 4


def fault_loop(scenario: Scenario, fault: object, min_faults: int, gap: tuple[float, float],
               timeout: float = 30.0) -> int:
    """Inject ``fault()`` at random gaps while producers run (and at least ``min_faults``
    times); returns how many were injected."""
    done = 0
    deadline = time.monotonic() + timeout
    while scenario.producing() or done < min_faults:
        assert time.monotonic() < deadline, "the run did not finish in time"
        time.sleep(scenario.rng.uniform(*gap))  # the fault schedule, not a synchronisation
        fault()  # type: ignore[operator]
        done += 1
    return done


def finish(scenario: Scenario) -> None:
    """Stop the workers gracefully, reclaim what is left, and check the account (and that no
    process logged a traceback: outages are warnings, never crashes). A job may have run twice
    only if its own lease was open at a kill or an outage, or its add was retried."""
    scenario.wait_producers(30)
    scenario.stop_workers()
    counts = scenario.drain()
    assert counts["ready"] == counts["delayed"] == counts["leased"] == 0, counts
    account = scenario.account()
    print(f"kills={scenario.kills} restarts={scenario.restarts} outages="
          f"{len(scenario.outages)} {account.summary()}")
    assert account.enqueued == PRODUCERS * JOBS_PER_PRODUCER
    assert not account.lost, sorted(account.lost)[:20]
    assert not account.unexpected, sorted(account.unexpected)[:20]
    if account.unexplained:  # show why: every ledger line of a few of them
        events = read_history(scenario.ledger_dir)
        for job_id in sorted(account.unexplained)[:3]:
            print(job_id, [f"{e.writer}:{e.event}:{e.detail}" for e in events
                           if e.job_id == job_id])
    for writer, log in scenario.errors().items():
        print(f"--- {writer} stderr (last lines):", *log.splitlines()[-6:], sep="\n")
    assert not scenario.errors(), sorted(scenario.errors())
    assert not account.unexplained, sorted(account.unexplained)[:20]


def start_load(scenario: Scenario, workers: int = 3) -> None:
    for _ in range(workers):
        scenario.start_worker()
    for _ in range(PRODUCERS):
        scenario.start_producer(JOBS_PER_PRODUCER)


def test_sigkilled_workers_lose_nothing(scenario: Scenario) -> None:
    start_load(scenario)
    fault_loop(scenario, scenario.kill_random_worker, min_faults=3, gap=(0.2, 0.5))
    finish(scenario)
    assert scenario.kills >= 3


def test_a_killed_workers_late_ack_is_refused(scenario: Scenario, ledger_dir: object) -> None:
    scenario.work = 60.0  # the handler never finishes on its own
    victim = scenario.start_worker()
    client = scenario.server.client()
    with Ledger(scenario.ledger_dir, "t") as ledger:
        ledger.log("attempt", ["late"])
        BaseQueue(client, name=scenario.queue).add("x", job_id="late")
        ledger.log("enqueued", ["late"])

    def old_token() -> str | None:
        tokens = [e.detail for e in read_history(scenario.ledger_dir)
                  if e.event == "delivered" and e.writer == victim]
        return tokens[0] if tokens else None

    wait_until(lambda: old_token() is not None, 20, "the worker to take the job")
    scenario.kill_random_worker(respawn=False)
    later = time.time() + scenario.visibility_timeout + 1
    survivor = BaseQueue(client, name=scenario.queue, clock=ManualClock(later))
    (job,) = survivor.reserve()
    assert (job.id, job.attempt) == ("late", 2)
    stale = dataclasses.replace(job, token=str(old_token()))  # the dead worker's lease
    assert stale.token != job.token
    assert survivor.ack(stale) == 0  # its late ack is refused
    assert survivor.extend(stale) == 0
    assert survivor.ack(job) == 1
    client.close()


def test_a_poison_job_that_kills_its_worker_ends_in_the_dlq(scenario: Scenario) -> None:
    scenario.visibility_timeout, scenario.max_retries, scenario.concurrency = 0.3, 2, 1
    client = scenario.server.client()
    queue = BaseQueue(client, name=scenario.queue)
    ids = [f"ok-{i}" for i in range(20)]
    with Ledger(scenario.ledger_dir, "t") as ledger:
        ledger.log("attempt", ["bad", *ids])
        queue.add(POISON, job_id="bad")
        queue.add_batch(range(20), job_ids=ids)
        ledger.log("enqueued", ["bad", *ids])
    scenario.start_worker()
    deadline = time.monotonic() + 20
    while queue.counts()["dead"] == 0:
        assert time.monotonic() < deadline, "the poison job never reached the DLQ"
        for writer, proc in list(scenario.workers.items()):
            if writer not in scenario.crashed and proc.poll() is not None:
                assert proc.returncode == 17  # died of the poison, not of something else
                scenario.crashed.add(writer)
                scenario.start_worker()
        time.sleep(0.02)
    deliveries = [e for e in read_history(scenario.ledger_dir)
                  if e.event == "delivered" and e.job_id == "bad"]
    assert len(deliveries) == scenario.max_retries + 1
    assert len(scenario.crashed) == scenario.max_retries + 1
    assert client.hget(queue.keys.key("errors"), "bad") is not None
    scenario.stop_workers()
    counts = scenario.drain()
    account = scenario.account()
    print(f"crashes={len(scenario.crashed)} {account.summary()}")
    assert counts == {"ready": 0, "delayed": 0, "leased": 0, "dead": 1}
    assert account.ok and account.dead == 1 and account.acked == 20
    client.close()


def test_redis_killed_and_restarted_under_load_loses_no_acknowledged_enqueue(
    aof_scenario: Scenario,
) -> None:
    scenario = aof_scenario
    start_load(scenario)
    workers = set(scenario.workers)

    def restart() -> None:
        scenario.restart_redis(down=scenario.rng.uniform(0.05, 0.4))

    fault_loop(scenario, restart, min_faults=2, gap=(0.3, 0.8))
    scenario.wait_producers(30)
    # the same worker processes carry on: they drain the queue without being restarted
    queue = BaseQueue(scenario.server.client(), name=scenario.queue)
    wait_until(lambda: queue.counts()["ready"] == 0, 20, "the workers to drain the queue")
    assert all(scenario.workers[w].poll() is None for w in workers)
    # a job whose lease was open at a restart may run again: the account knows which
    finish(scenario)


def kill_clients(client: redis.Redis) -> None:
    """``CLIENT KILL`` every connection but ours: workers and producers lose theirs mid-call."""
    client.client_kill_filter(_type="normal", skipme=True)


def test_connections_killed_mid_run_leave_no_job_leased(scenario: Scenario) -> None:
    scenario.visibility_timeout = 1.0
    start_load(scenario, workers=2)
    client = scenario.server.client()

    def kill() -> None:
        with scenario.outage():
            kill_clients(client)

    fault_loop(scenario, kill, min_faults=5, gap=(0.05, 0.3))
    scenario.wait_producers(30)
    queue = BaseQueue(client, name=scenario.queue)
    # with the real clock: the live workers reclaim every lease a lost reply left behind
    wait_until(lambda: queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0},
               15, "every job to be acked")
    assert all(p.poll() is None for p in scenario.workers.values()), "a worker died"
    finish(scenario)
    client.close()


def test_script_flush_mid_run(scenario: Scenario) -> None:
    start_load(scenario, workers=2)
    client = scenario.server.client()
    flushes = fault_loop(scenario, client.script_flush, min_faults=5, gap=(0.05, 0.3))
    assert flushes >= 5
    assert all(p.poll() is None for p in scenario.workers.values()), "a worker died"
    finish(scenario)  # a flush costs one EVAL, never a failed call: no duplicate, no traceback
    client.close()


def test_redis_restarted_empty_workers_carry_on(scenario: Scenario, rng: random.Random) -> None:
    workers = [scenario.start_worker() for _ in range(2)]
    client = scenario.server.client()
    queue = BaseQueue(client, name=scenario.queue)
    before = [f"before-{i}" for i in range(50)]
    queue.add_batch(range(50), job_ids=before)
    scenario.restart_redis(down=rng.uniform(0.0, 0.3))  # no persistence: everything is gone
    after = [f"after-{i}" for i in range(50)]
    queue.add_batch(range(50), job_ids=after)  # redis-py reconnects this client by itself

    def acked_after() -> int:
        return len({e.job_id for e in read_history(scenario.ledger_dir)
                    if e.event == "acked" and e.job_id.startswith("after-")})

    wait_until(lambda: acked_after() == 50, 20, "the workers to process the new jobs")
    assert all(scenario.workers[w].poll() is None for w in workers), "a worker died"
    scenario.stop_workers()
    client.close()
