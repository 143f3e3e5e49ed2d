"""A model check of the queue's state machine: hypothesis drives random sequences of add,
add_batch, reserve, ack, fail, extend, release, clock advances, redrive and purge through the
public API against a real Redis and, beside it, a small pure-Python model of the queue
(``Model``: the README's state table, written down plainly). After every step:

- every job is in exactly one state, nothing is left of a finished job, counts equal the
  keys' sizes (``tests.support.invariants.assert_consistent``);
- the keys hold exactly the model's jobs: ready in the model's order, delayed with their due
  times, leased with their deadlines, dead with the time they died; the history (meta) and
  the stored errors are the model's; the stats counters are the model's; ``counts()`` too;
- a token that holds no lease (acked, failed, released, reclaimed, or another job's) settles
  nothing: each ack / extend / release answers with the model's count, a stale fail raises
  LeaseLostError, and the keys stay the model's;
- no job is delivered or counted past max_retries + 1 attempts (its own max_retries, when
  it was added with one, else the queue's).

The queue's settings (retries, lease length, backoff) are drawn per example. On both drivers
(the asyncio one through ``tests.support.drivers``' blocking view, fewer examples).
``PYQCORE_MODEL_EXAMPLES`` / ``PYQCORE_MODEL_STEPS`` set the size (``make model`` runs long).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pyqcore import Backoff, BaseQueue, Job, LeaseLostError, NonRetryableError, Outcome
from pyqcore.core import calls
from pyqcore.core.calls import text
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS, FakeClock
from tests.support.drivers import Api
from tests.support.invariants import assert_consistent

pytestmark = BOTH_DRIVERS

EXAMPLES = int(os.environ.get("PYQCORE_MODEL_EXAMPLES", "120"))
STEPS = int(os.environ.get("PYQCORE_MODEL_STEPS", "80"))
CUSTOM_IDS = ["c1", "c2", "c3"]  # never a number, so never an automatic id
OWN_MAX_RETRIES = st.one_of(st.none(), st.none(), st.integers(0, 2))  # mostly the queue's
COUNTERS = ("added", "completed", "retried", "dead", "reclaimed", "redriven", "purged")


@dataclass
class Entry:
    """One job of the model."""

    payload: Any
    state: str  # ready, delayed, leased, dead
    score: int = 0  # delayed: due; leased: deadline; dead: died (ms)
    token: str = ""  # leased: its lease token
    attempts: int = 0  # deliveries that ended without an ack since it was added or redriven
    redrives: int = 0
    history: bool = False  # whether meta holds "attempts:redrives[:limit]" for it
    error: bool = False  # whether an error is stored for it
    limit: int | None = None  # its own deliveries allowed (its max_retries + 1), if given

    def meta(self) -> str:
        own = "" if self.limit is None else f":{self.limit}"
        return f"{self.attempts}:{self.redrives}{own}"


class Model:
    """The queue as the README's state table says it behaves, in plain Python."""

    def __init__(self, now_ms: int, max_attempts: int, visibility_ms: int,
                 backoff: Backoff) -> None:
        self.now = now_ms
        self.max_attempts = max_attempts
        self.visibility_ms = visibility_ms
        self.backoff = backoff
        self.jobs: dict[str, Entry] = {}
        self.ready: list[str] = []
        self.stats: Counter[str] = Counter()

    def of(self, state: str) -> dict[str, int]:
        return {i: e.score for i, e in self.jobs.items() if e.state == state}

    def add(self, payloads: list[Any], ids: list[str | None], delay_ms: int,
            max_retries: int | None = None) -> list[str]:
        """enqueue: automatic ids numbered from "added"; a custom id that exists is skipped;
        a job's own max_retries is its history from the start."""
        number = self.stats["added"]
        self.stats["added"] += sum(1 for i in ids if i is None)
        given: list[str] = []
        fresh: list[str] = []
        for payload, custom in zip(payloads, ids, strict=True):
            if custom is None:
                number += 1
                job_id = str(number)
            elif custom in self.jobs or custom in fresh:
                given.append(custom)
                continue
            else:
                job_id = custom
                self.stats["added"] += 1
            given.append(job_id)
            fresh.append(job_id)
            state = "delayed" if delay_ms else "ready"
            limit = None if max_retries is None else max_retries + 1
            self.jobs[job_id] = Entry(payload, state, self.now + delay_ms if delay_ms else 0,
                                      history=limit is not None, limit=limit)
            if not delay_ms:
                self.ready.append(job_id)
        return given

    def allowed(self, entry: Entry) -> int:
        """The deliveries a job allows: its own limit, else the queue's."""
        return self.max_attempts if entry.limit is None else entry.limit

    def holds(self, job: Job) -> bool:
        entry = self.jobs.get(job.id)
        return entry is not None and entry.state == "leased" and entry.token == job.token

    def taken(self, jobs: list[Job]) -> list[str]:
        """The ids whose (id, token) pair holds its lease, in the order given, a pair given
        twice taken once."""
        seen: set[tuple[str, str]] = set()
        taken = []
        for job in jobs:
            if (job.id, job.token) not in seen and self.holds(job):
                taken.append(job.id)
            seen.add((job.id, job.token))
        return taken

    def bury(self, job_id: str) -> None:
        entry = self.jobs[job_id]
        entry.state, entry.score, entry.error = "dead", self.now, True
        self.stats["dead"] += 1

    def reserve(self, count: int, visibility_ms: int) -> tuple[list[str], list[int]]:
        """Promote the due, reclaim the expired (counted), lease the first ``count`` ready:
        their ids and delivery numbers."""
        due = sorted((e.score, i.encode(), i) for i, e in self.jobs.items()
                     if e.state == "delayed" and e.score <= self.now)
        for _, _, job_id in due:
            self.jobs[job_id].state = "ready"
            self.ready.append(job_id)
        expired = sorted((e.score, f"{e.token}:{i}".encode(), i) for i, e in self.jobs.items()
                         if e.state == "leased" and e.score <= self.now)
        back = []
        for _, _, job_id in expired:
            entry = self.jobs[job_id]
            entry.attempts += 1
            entry.history = True
            if entry.attempts >= self.allowed(entry):
                self.bury(job_id)
            else:
                entry.state = "ready"
                back.append(job_id)
        self.ready = back + self.ready
        self.stats["reclaimed"] += len(expired)
        leased, self.ready = self.ready[:count], self.ready[count:]
        for job_id in leased:
            entry = self.jobs[job_id]
            entry.state, entry.score = "leased", self.now + visibility_ms
        return leased, [self.jobs[i].attempts + 1 for i in leased]

    def ack(self, jobs: list[Job]) -> int:
        done = self.taken(jobs)
        for job_id in done:
            del self.jobs[job_id]
        self.stats["completed"] += len(done)
        return len(done)

    def fail(self, job: Job, retry: bool) -> Outcome | None:
        """None: the lease was lost (nothing changes)."""
        if not self.holds(job):
            return None
        entry = self.jobs[job.id]
        entry.attempts += 1
        entry.history = True
        if retry and entry.attempts < self.allowed(entry):
            entry.error = True
            self.stats["retried"] += 1
            backoff_ms = round(self.backoff.delay(job.attempt) * 1000)
            if backoff_ms:
                entry.state, entry.score = "delayed", self.now + backoff_ms
            else:
                entry.state = "ready"
                self.ready.append(job.id)
            return Outcome.RETRY
        self.bury(job.id)
        return Outcome.DEAD

    def extend(self, jobs: list[Job], visibility_ms: int) -> int:
        held = self.taken(jobs)
        for job_id in held:
            self.jobs[job_id].score = self.now + visibility_ms
        return len(held)

    def release(self, jobs: list[Job]) -> int:
        back = self.taken(jobs)
        for job_id in back:
            self.jobs[job_id].state = "ready"
        self.ready = back + self.ready
        return len(back)

    def dead_ids(self, ids: list[str]) -> list[str]:
        """The dead among ``ids``, each once, in the order given."""
        return [i for i in dict.fromkeys(ids) if i in self.jobs and self.jobs[i].state == "dead"]

    def redrive(self, ids: list[str]) -> int:
        """Dead → back of ready, attempts reset, one more redrive, the error dropped."""
        for job_id in ids:
            entry = self.jobs[job_id]
            entry.state, entry.attempts, entry.error, entry.history = "ready", 0, False, True
            entry.redrives += 1
            self.ready.append(job_id)
        self.stats["redriven"] += len(ids)
        return len(ids)

    def purge(self, ids: list[str]) -> int:
        for job_id in ids:
            del self.jobs[job_id]
        self.stats["purged"] += len(ids)
        return len(ids)

    def dead_by_age(self, age_ms: int) -> tuple[list[str], list[str]]:
        """The dead for longer than ``age_ms`` (0: every dead job), and the others, oldest
        first."""
        dead = sorted((e.score, i.encode(), i) for i, e in self.jobs.items() if e.state == "dead")
        old = {i for s, _, i in dead if age_ms == 0 or s < self.now - age_ms}
        return [i for *_, i in dead if i in old], [i for *_, i in dead if i not in old]


class Tokens:
    """Lease tokens counted from 1 in each example, in place of random ones: leases that
    expire in the same millisecond are reclaimed in their members' order, so with random
    tokens the same steps could end in another order, and hypothesis could neither replay nor
    shrink an example."""

    def __init__(self) -> None:
        self.issued = 0

    def __call__(self) -> str:
        self.issued += 1
        return f"{self.issued:016x}"


class QueueMachine(RuleBasedStateMachine):
    """Random operations on one queue and its model (the class attributes ``api``, ``client``,
    ``clock`` and ``tokens`` are set by the test)."""

    api: Api
    client: Client
    clock: FakeClock
    tokens: Tokens

    def __init__(self) -> None:
        super().__init__()
        self.client.flushall()
        self.tokens.issued = 0
        self.handles: list[Job] = []  # every lease handed out, current or stale (the last 12)

    @initialize(max_retries=st.integers(0, 2), visibility=st.sampled_from([3.0, 10.0]),
                backoff=st.sampled_from([Backoff.fixed(0), Backoff.fixed(2.0),
                                         Backoff.exponential(base=1.0, cap=4.0, jitter=0)]))
    def make_queue(self, max_retries: int, visibility: float, backoff: Backoff) -> None:
        self.queue: BaseQueue = self.api.BaseQueue(
            self.client, name="model", clock=self.clock, max_retries=max_retries,
            visibility_timeout=visibility, backoff=backoff)
        self.dlq = self.api.QueueManager(self.client, clock=self.clock).dead_letter_queue
        self.model = Model(self.now_ms(), max_retries + 1, round(visibility * 1000), backoff)

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def pick(self, data: st.DataObject, most: int = 3) -> list[Job]:
        """Some of the leases handed out (current and stale), maybe one twice."""
        return data.draw(st.lists(st.sampled_from(self.handles), min_size=1, max_size=most))

    # -- producing -------------------------------------------------------------------------

    @rule(payload=st.integers(0, 99), job_id=st.none() | st.sampled_from(CUSTOM_IDS),
          delay=st.sampled_from([0.0, 0.0, 1.0, 5.0]), max_retries=OWN_MAX_RETRIES)
    def add(self, payload: int, job_id: str | None, delay: float,
            max_retries: int | None) -> None:
        [expected] = self.model.add([payload], [job_id], round(delay * 1000), max_retries)
        assert self.queue.add(payload, delay=delay, job_id=job_id,
                              max_retries=max_retries) == expected

    @rule(payloads=st.lists(st.integers(0, 99), min_size=1, max_size=4), data=st.data(),
          delay=st.sampled_from([0.0, 2.0]), max_retries=OWN_MAX_RETRIES)
    def add_batch(self, payloads: list[int], data: st.DataObject, delay: float,
                  max_retries: int | None) -> None:
        ids = None
        if data.draw(st.booleans()):
            ids = data.draw(st.lists(st.none() | st.sampled_from(CUSTOM_IDS),
                                     min_size=len(payloads), max_size=len(payloads)))
        expected = self.model.add(payloads, ids or [None] * len(payloads), round(delay * 1000),
                                  max_retries)
        assert self.queue.add_batch(payloads, delay=delay, job_ids=ids,
                                    max_retries=max_retries) == expected

    # -- consuming -------------------------------------------------------------------------

    @rule(count=st.integers(1, 3), visibility=st.none() | st.sampled_from([1.0, 20.0]))
    def reserve(self, count: int, visibility: float | None) -> None:
        length = self.model.visibility_ms if visibility is None else round(visibility * 1000)
        ids, attempts = self.model.reserve(count, length)
        jobs = self.queue.reserve(count, visibility_timeout=visibility)
        assert [(j.id, j.attempt) for j in jobs] == list(zip(ids, attempts, strict=True))
        for job in jobs:
            assert job.attempt <= self.model.allowed(self.model.jobs[job.id])
            assert job.payload == self.model.jobs[job.id].payload
            assert job.lease_deadline == (self.now_ms() + length) / 1000
            self.model.jobs[job.id].token = job.token
        self.handles = (self.handles + jobs)[-12:]

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        jobs = self.pick(data)
        expected = self.model.ack(jobs)
        assert self.queue.ack(jobs) == expected

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), how=st.sampled_from(["retry", "no retry", "non-retryable"]))
    def fail(self, data: st.DataObject, how: str) -> None:
        [job] = self.pick(data, most=1)
        expected = self.model.fail(job, retry=how == "retry")
        error = NonRetryableError("no") if how == "non-retryable" else RuntimeError("boom")
        if expected is None:
            with pytest.raises(LeaseLostError):
                self.queue.fail(job, error, retry=how != "no retry")
        else:
            assert self.queue.fail(job, error, retry=how != "no retry") is expected

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), seconds=st.none() | st.sampled_from([1.0, 30.0]))
    def extend(self, data: st.DataObject, seconds: float | None) -> None:
        jobs = self.pick(data)
        before = [j.lease_deadline for j in jobs]
        length = self.model.visibility_ms if seconds is None else round(seconds * 1000)
        held = set(self.model.taken(jobs))
        expected = self.model.extend(jobs, length)
        assert self.queue.extend(jobs, seconds) == expected
        for job, deadline in zip(jobs, before, strict=True):
            if job.id not in held:
                assert job.lease_deadline == deadline, "a refused extend moved a deadline"
            elif [j.id for j in jobs].count(job.id) == 1:
                assert job.lease_deadline == (self.now_ms() + length) / 1000

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        jobs = self.pick(data)
        expected = self.model.release(jobs)
        assert self.queue.release(jobs) == expected

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0, 10.0]))
    def advance_the_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now = self.now_ms()

    # -- the dead-letter queue -------------------------------------------------------------

    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        known = [*sorted(self.model.jobs), "nope"]
        ids = data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=3))
        expected = self.model.redrive(self.model.dead_ids(ids))
        assert self.dlq.requeue("model", ids) == expected

    @rule(max_age=st.sampled_from([0.0, 1.0, 5.0]))
    def process_dead_letter_queue(self, max_age: float) -> None:
        """Purge the dead older than max_age, redrive the younger (below max_redrives)."""
        older, younger = self.model.dead_by_age(round(max_age * 1000))
        limit = self.dlq.max_redrives
        again = [i for i in younger if self.model.jobs[i].redrives < limit]
        report = self.dlq.process_dead_letter_queue(max_age=max_age)
        expected = (self.model.purge(older), self.model.redrive(again),
                    len(younger) - len(again))
        assert (report.purged, report.redriven, report.kept_back) == expected

    @rule(data=st.data())
    def purge(self, data: st.DataObject) -> None:
        known = [*sorted(self.model.jobs), "nope"]
        if data.draw(st.booleans()):
            ids = data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=3))
            expected = self.model.purge(self.model.dead_ids(ids))
            assert self.dlq.purge("model", ids=ids) == expected
        else:
            max_age = data.draw(st.sampled_from([0.0, 2.0]))
            expected = self.model.purge(self.model.dead_by_age(round(max_age * 1000))[0])
            assert self.dlq.purge("model", max_age=max_age) == expected

    # -- after every step ------------------------------------------------------------------

    @invariant()
    def the_keys_are_the_models(self) -> None:
        model = self.model
        states = assert_consistent(self.client, self.queue)  # also: counts() == the keys
        assert list(states["ready"]) == model.ready, "ready, in order"
        for state in ("delayed", "leased", "dead"):
            assert states[state] == model.of(state), state
        key = self.queue.keys.key
        meta = {text(k): text(v) for k, v in
                cast(dict[bytes, bytes], self.client.hgetall(key("meta"))).items()}
        assert meta == {i: e.meta() for i, e in model.jobs.items() if e.history}
        assert all(e.attempts <= model.allowed(e) for e in model.jobs.values())
        errors = {text(k) for k in cast(list[bytes], self.client.hkeys(key("errors")))}
        assert errors == {i for i, e in model.jobs.items() if e.error}
        stats = self.queue.stats()
        assert {c: stats.get(c, 0) for c in COUNTERS} == {c: model.stats[c] for c in COUNTERS}


@pytest.fixture
def examples(driver: str) -> int:
    """The asyncio view costs a thread hop per call: fewer examples there."""
    return EXAMPLES if driver == "sync" else max(1, EXAMPLES // 3)


def test_the_queue_behaves_as_its_model(api: Api, client: Client, clock: FakeClock,
                                        examples: int, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    tokens = Tokens()
    monkeypatch.setattr(calls, "lease_token", tokens)
    machine = type("Machine", (QueueMachine,), {"api": api, "client": client,
                                                "clock": clock, "tokens": tokens})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
