"""Each script against its header, called directly: the replies it documents (refused ids,
skipped duplicates, due times, scan counters), the order it puts jobs in, the bounds of one
call (sweep and purge limits, scan offsets), argument checks, and item locks' ttl and holder.
Some of this is invisible through the queue's API today (it reads a count, not the ids), but
it is the scripts' contract: a caller may rely on it.

The scripts run in their test-only variant (``load_scripts(manual_clock=True)``): each script
that reads the clock takes the time as an extra first ARGV entry, which ``Queue`` sends
(``now=``, NOW by default), so times are exact. The production scripts read the server's clock
(tests/test_server_clock.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis

from pyqcore import BaseQueue
from pyqcore.codes import Code
from pyqcore.keys import QueueKeys
from pyqcore.scripts import load_scripts

SCRIPTS = load_scripts(manual_clock=True)
NOW = 1_800_000_000_000
T1, T2, T3 = "1" * 16, "2" * 16, "3" * 16
VIS = 30_000


class Queue:
    """The scripts of one queue, called with their header's KEYS and the given ARGV."""

    def __init__(self, client: redis.Redis, name: str = "c", partition: int | None = None):
        self.client = client
        self.keys = QueueKeys("pyqcore", name, partition)

    def __call__(self, script: str, *args: str | int, now: int = NOW) -> Any:
        """Run ``script`` with these ARGV, at time ``now`` (ms) if it reads the clock."""
        s = SCRIPTS[script]
        keys = self.keys.keys(s.required_parts)
        clock = [now] if s.reads_clock else []
        return self.client.eval(s.source, len(keys), *keys, *clock, *args)

    def key(self, part: str) -> str:
        return self.keys.key(part)

    def add(self, *ids: str, delay: int = 0, now: int = NOW) -> Any:
        return self("enqueue", delay, "", len(ids), 0, *(f"record {i}" for i in ids), *ids,
                    now=now)

    def reserve(self, count: int, token: str = T1, *, now: int = NOW, sweep: int = 1000,
                vis: int = VIS, max_attempts: int = 4, limits: tuple[int, ...] = (0,) * 6) -> Any:
        return self("reserve", count, vis, max_attempts, sweep, token, *limits, now=now)

    def bury(self, job_id: str, token: str, now: int = NOW) -> Any:
        return self("fail", job_id, token, 4, 0, '{"type": "E"}', 0, now=now)

    def ready(self) -> list[bytes]:
        return cast(list[bytes], self.client.lrange(self.key("ready"), 0, -1))

    def snapshot(self) -> dict[bytes, Any]:
        return {k: self.client.dump(k) for k in sorted(cast(list[bytes], self.client.keys("*")))}


@pytest.fixture
def q(client: redis.Redis) -> Queue:
    return Queue(client)


def dead(q: Queue, *died: tuple[str, int]) -> None:
    """Jobs buried at the given times (ms)."""
    for job_id, at in died:
        q.add(job_id)
        q.reserve(1, T1, now=at)
        assert q.bury(job_id, T1, now=at)[1] == b"dead"


# -- settling: ack, release, extend -------------------------------------------------------------

@pytest.mark.parametrize("script", ["ack", "release"])
def test_a_settling_reply_names_the_refused_ids(q: Queue, script: str) -> None:
    q.add("a", "b")
    q.reserve(2, T1)
    reply = q(script, "a", T1, "b", T2, "nope", T1)
    assert reply == [Code.OK, 1, b"b", b"nope"]


@pytest.mark.parametrize("script", ["ack", "release"])
def test_a_pair_without_its_token_is_a_bad_argument(q: Queue, script: str) -> None:
    q.add("a", "b")
    q.reserve(2, T1)
    before = q.snapshot()
    reply = q(script, "a", T1, "b")
    assert reply[0] == Code.BAD_ARGUMENT
    assert q.snapshot() == before


def test_extend_needs_a_pair_and_renews_only_held_leases(q: Queue) -> None:
    q.add("a")
    q.reserve(1, T1)
    before = q.snapshot()
    assert q("extend", 5000)[0] == Code.BAD_ARGUMENT
    assert q.snapshot() == before
    assert q("extend", 5000, "a", T1, "a", T2, now=NOW + 1) == [Code.OK, NOW + 5001, 1, 0, b"a"]
    assert q.client.zscore(q.key("leased"), f"{T1}:a") == NOW + 5001


def test_extend_does_not_renew_a_job_cancelled_while_leased(q: Queue) -> None:
    q.add("a")
    q.add("b")
    q.reserve(2, T1)
    deadline = q.client.zscore(q.key("leased"), f"{T1}:a")
    assert q("cancel", "a", "nobody") == [Code.OK, 2, 0]
    assert q.client.hget(q.key("meta"), "a") == b"0:0:c"
    assert q("extend", 5000, "a", T1, "b", T1, now=NOW + 1) == [Code.OK, NOW + 5001, 1, 1, b"a"]
    assert q.client.zscore(q.key("leased"), f"{T1}:a") == deadline


def test_cancel_and_clear_sent_the_kept_keys_keep_what_they_cancel(q: Queue) -> None:
    """Sent the kept keys and bounds (keep_cancelled.lua), cancel and clear keep each job they
    delete or mark: "c:attempts:redrives:" and its record (a running one's delivery counted),
    at the call's time, no result; then trim oldest first by keep_count."""
    kept_keys = [q.key(part) for part in ("completed", "kept", "results")]

    def kept_call(script: str, *args: str | int, now: int) -> Any:
        keys = [*q.keys.keys(SCRIPTS[script].required_parts), *kept_keys]
        return q.client.eval(SCRIPTS[script].source, len(keys), *keys, now, *args)

    q.add("run", "wait", "gone1", "gone2")
    q.reserve(1, T1)  # "run" is leased
    q.client.hset(q.key("results"), "wait", "an earlier run's result")
    assert kept_call("cancel", "run", "wait", 0, 0, now=NOW + 5) == [Code.OK, 2, 1]
    assert q.client.hgetall(q.key("kept")) == {b"run": b"c:1:0:record run",
                                               b"wait": b"c:0:0:record wait"}
    assert q.client.zrange(q.key("completed"), 0, -1, withscores=True) == [
        (b"run", NOW + 5), (b"wait", NOW + 5)]
    assert not q.client.exists(q.key("results"))
    assert kept_call("clear", 1000, 0, 1, now=NOW + 6) == [Code.OK, 2, 0]
    assert q.client.zrange(q.key("completed"), 0, -1, withscores=True) == [(b"gone2", NOW + 6)]
    assert q.client.hkeys(q.key("kept")) == [b"gone2"]


# -- reserve: order, bounds, housekeeping -------------------------------------------------------

def test_due_jobs_go_to_the_back_of_ready(q: Queue) -> None:
    q.add("early")
    q.add("due", delay=1000, now=NOW - 1000)  # due at NOW
    reply = q.reserve(2)
    assert reply[5::3] == [b"early", b"due"]


def test_one_reserve_promotes_and_reclaims_at_most_sweep_limit_jobs(q: Queue) -> None:
    q.add("d1", "d2", "d3", delay=10, now=NOW - 20)  # due at NOW - 10
    reply = q.reserve(0, sweep=2)
    assert reply == [Code.OK, T1.encode(), NOW + VIS, 0, 0]  # d3 is still due: no wait
    assert q.ready() == [b"d1", b"d2"]
    assert q.client.zcard(q.key("delayed")) == 1
    q.reserve(3, T2)  # d3 promoted, then all three leased
    later = NOW + VIS
    assert q.reserve(0, T3, now=later, sweep=2)[:2] == [Code.OK, T3.encode()]
    assert q.client.zcount(q.key("leased"), "-inf", "(inf") == 1
    assert q.ready() == [b"d1", b"d2"]
    assert q.client.hget(q.key("stats"), "reclaimed") == b"2"


def test_reclaimed_jobs_go_to_the_front_of_ready_in_their_order(q: Queue) -> None:
    q.add("a", "b")
    q.reserve(2, T1)
    q.add("waiting")
    reply = q.reserve(3, T2, now=NOW + VIS)
    assert reply[5::3] == [b"a", b"b", b"waiting"]
    assert reply[7::3] == [2, 2, 1]  # the expired delivery counted
    assert q.client.hget(q.key("stats"), "reclaimed") == b"2"


def test_a_housekeeping_reserve_leases_nothing_and_wakes_nobody(q: Queue) -> None:
    q.add("a", "b")
    q.client.delete(q.key("wake"))
    before = q.snapshot()
    assert q.reserve(0) == [Code.OK, T1.encode(), NOW + VIS, -1, 0]
    assert q.snapshot() == before


def test_an_orphan_is_dropped_and_another_id_taken_in_its_place(q: Queue) -> None:
    q.add("gone1", "a", "gone2", "gone3", "b", "c")
    q.client.hdel(q.key("jobs"), "gone1", "gone2", "gone3")
    reply = q.reserve(2)  # takes gone1, a; then gone2, gone3; then b
    assert reply[5::3] == [b"a", b"b"] and reply[3] == -1
    assert q.ready() == [b"c"]
    assert q.client.hget(q.key("stats"), "orphaned") == b"3"


def test_a_reserve_drops_at_most_sweep_limit_orphans_and_says_more_are_ready(q: Queue) -> None:
    q.add("gone1", "gone2", "gone3", "a")
    q.client.hdel(q.key("jobs"), "gone1", "gone2", "gone3")
    assert q.reserve(1, sweep=2) == [Code.OK, T1.encode(), NOW + VIS, 0, 0]  # 0: call again
    assert q.ready() == [b"gone3", b"a"]
    assert q.reserve(1, T2, sweep=2)[5::3] == [b"a"]
    assert q.client.hget(q.key("stats"), "orphaned") == b"3"
    q.add("gone4")  # an orphan, then nothing ready: the usual wait (until a's deadline)
    q.client.hdel(q.key("jobs"), "gone4")
    assert q.reserve(1, T3) == [Code.OK, T3.encode(), NOW + VIS, VIS, 0]
    assert q.ready() == []


def test_integer_arguments_are_integers(q: Queue) -> None:
    q.add("a")
    before = q.snapshot()
    for bad in ("1.5", "1e3", "0x10", " 7"):
        reply = q("reserve", bad, VIS, 4, 1000, T1, *(0,) * 6)
        assert reply[0] == Code.BAD_ARGUMENT, bad
    assert q.snapshot() == before


# -- enqueue: ids and the reply -----------------------------------------------------------------

def test_enqueue_reports_the_duplicates_it_skipped(q: Queue) -> None:
    assert q.add("x") == [Code.OK, b""]
    assert q.add("x") == [Code.OK, b"", 1]
    assert q("enqueue", 0, "", 3, 0, "r1", "r2", "r3", "x", "y", "y") == [Code.OK, b"", 1, 3]
    assert q.ready() == [b"x", b"y"]


def test_max_ready_refuses_a_call_whole_counting_ready_and_delayed(q: Queue) -> None:
    q.add("r1", "r2")
    q.add("d1", delay=60_000)
    before = q.snapshot()
    reply = q("enqueue", 0, "", 2, 0, "x", "y", "", "", 4)  # max_ready last, after the ids
    assert reply == [Code.QUEUE_FULL, b"3 jobs are waiting (ready + delayed): 2 more would pass "
                                      b"max_ready=4"]
    assert q.snapshot() == before
    assert q("enqueue", 0, "", 1, 0, "x", "", 4) == [Code.OK, b"4"]  # exactly max_ready waiting
    assert q("enqueue", 0, "", 1, 0, "y") == b"5"  # absent: no limit (a plain add: the id alone)
    q.reserve(1)  # a leased job is not waiting
    assert q("enqueue", 0, "", 1, 0, "z", "custom", 5) == [Code.OK, b""]
    assert q("enqueue", 0, "", 1, 0, "w", "", 0)[0] == Code.BAD_ARGUMENT  # 0 is no limit: absent


def test_automatic_ids_step_around_every_taken_suffix(client: redis.Redis) -> None:
    queue = BaseQueue(client, name="c")
    queue.add("three", job_id="3")
    queue.add("three again", job_id="3~1")
    assert queue.add_batch(["a", "b", "c"]) == ["3~2", "4", "5"]
    assert [j.payload for j in queue.reserve(count=5)] == ["three", "three again", "a", "b", "c"]


def test_a_partitions_automatic_ids_carry_its_prefix(client: redis.Redis) -> None:
    part = Queue(client, "c", partition=3)
    assert part("enqueue", 0, "3-", 1, 0, "record") == b"3-1"  # a plain add: the id alone
    assert part("enqueue", 0, "3-", 2, 0, "r", "r") == [Code.OK, b"3-2,3-3"]
    assert part("enqueue", 5000, "3-", 1, 0, "later") == [Code.OK, b"3-4"]  # one, delayed


def test_a_plain_add_does_what_the_general_path_does(client: redis.Redis) -> None:
    """A plain add (one job, an automatic id, ready now) runs a path of its own, replying the
    id alone; the same add through the general path (its id given as "": automatic) leaves
    the same state behind: the first add wakes a worker, the next ones do not, a number a
    custom id took gets a suffix, and the count stays exact."""
    plain, general = Queue(client, "plain"), Queue(client, "general")
    for queue in (plain, general):  # job "2" exists (leased) and nothing is ready
        queue("enqueue", 0, "", 1, 0, "custom", "2")
        queue.reserve(1)
        client.delete(queue.key("wake"))
    for n in range(4):
        record = f"record {n}"
        got = plain("enqueue", 0, "", 1, 0, record)
        assert general("enqueue", 0, "", 1, 0, record, "") == [Code.OK, got]
    assert plain.ready() == general.ready() == [b"2~1", b"3", b"4", b"5"]

    def state(queue: Queue) -> list[Any]:
        return [client.hgetall(queue.key("jobs")), client.hgetall(queue.key("stats")),
                client.lrange(queue.key("wake"), 0, -1), client.exists(queue.key("delayed")),
                client.zcard(queue.key("leased"))]

    assert state(plain) == state(general)
    assert client.hget(plain.key("stats"), "added") == b"5"
    assert client.lrange(plain.key("wake"), 0, -1) == [b"1"]


# -- fail -----------------------------------------------------------------------------------------

def test_a_retry_without_backoff_goes_to_the_back_of_ready(q: Queue) -> None:
    q.add("failing")
    q.reserve(1)
    q.add("waiting")
    assert q("fail", "failing", T1, 4, 0, "{}", 1) == [Code.OK, b"retry", NOW]
    assert q.ready() == [b"waiting", b"failing"]
    assert q.client.zcard(q.key("delayed")) == 0


def test_a_retry_reply_says_when_it_is_due(q: Queue) -> None:
    q.add("failing")
    q.reserve(1)
    assert q("fail", "failing", T1, 4, 5000, "{}", 1) == [Code.OK, b"retry", NOW + 5000]
    assert q.client.zscore(q.key("delayed"), "failing") == NOW + 5000


def test_fail_needs_an_id(q: Queue) -> None:
    q.add("a")
    q.reserve(1)
    before = q.snapshot()
    assert q("fail", "", T1, 4, 0, "{}", 1)[0] == Code.BAD_ARGUMENT
    assert q.snapshot() == before


# -- the dead-letter scripts ----------------------------------------------------------------------

def test_redriven_jobs_go_to_the_back_of_ready(q: Queue) -> None:
    dead(q, ("gone", NOW))
    q.add("waiting")
    assert q("redrive", 3, -1, 0, 1000) == [Code.OK, 1, 0, 0, 1]
    assert q.ready() == [b"waiting", b"gone"]
    assert q.client.hget(q.key("stats"), "redriven") == b"1"


def test_a_redrive_scan_counts_what_it_examined_from_its_offset_and_age(q: Queue) -> None:
    dead(q, ("old", NOW - 5000), ("kept1", NOW), ("kept2", NOW + 1), ("young", NOW + 2))
    for job_id in ("kept1", "kept2"):
        q.client.hset(q.key("meta"), job_id, "1:2")  # redriven twice already
    # max 2 redrives, dead for at most 2 ms at NOW + 2 (died at or after NOW): old is too
    # old, kept1 and kept2 stay back
    assert q("redrive", 2, 2, 0, 1000, now=NOW + 2) == [Code.OK, 1, 2, 0, 3]
    assert q.ready() == [b"young"]
    assert q.reserve(1, T2)[5] == b"young" and q("ack", "young", T2) == [Code.OK, 1]
    dead(q, ("late", NOW + 3))
    assert q("redrive", 2, 3, 2, 1000, now=NOW + 3) == [Code.OK, 1, 0, 0, 1]  # past the kept
    assert q.ready() == [b"late"]
    assert q.client.zscore(q.key("dead"), "old") is not None


def test_redrive_by_ids_counts_those_not_dead_and_moves_none_of_them(q: Queue) -> None:
    dead(q, ("gone", NOW))
    q.add("alive")
    assert q("redrive", -1, -1, 0, 1000, "gone", "alive", "never") == [Code.OK, 1, 0, 2, 1]
    assert q.ready() == [b"alive", b"gone"]


def test_purge_by_age_spares_the_cutoff_and_stops_at_its_limit(q: Queue) -> None:
    dead(q, ("a", NOW), ("b", NOW + 1), ("c", NOW + 2), ("d", NOW + 3))
    assert q("purge", 3, 1000, now=NOW + 3) == [Code.OK, 0]  # a: dead 3 ms, not longer
    assert q("purge", 1, 2, now=NOW + 4) == [Code.OK, 2]  # dead for longer than 1 ms: a, b, c
    assert q("purge", 1, 2, now=NOW + 4) == [Code.OK, 1]
    assert q.client.zrange(q.key("dead"), 0, -1) == [b"d"]
    assert q.client.hget(q.key("stats"), "purged") == b"3"
    assert q("purge", 0, 1000, now=NOW) == [Code.OK, 1]  # age 0: every dead job, whenever
    assert q.client.hget(q.key("stats"), "purged") == b"4"


def test_purge_by_ids_spares_jobs_that_are_not_dead(q: Queue) -> None:
    dead(q, ("gone", NOW))
    q.add("alive")
    assert q("purge", 0, 1000, "alive", "gone") == [Code.OK, 1]
    assert q.client.hget(q.key("jobs"), "alive") == b"record alive"
    assert q.ready() == [b"alive"]


def test_peek_dead_pages_oldest_first_and_lists_only_dead_ids(q: Queue) -> None:
    dead(q, ("a", NOW), ("b", NOW + 1), ("c", NOW + 2))
    q.add("alive")

    def ids(reply: list[Any]) -> list[bytes]:
        assert reply[0] == Code.OK
        return reply[1::5]

    assert ids(q("peek_dead", 0, 2)) == [b"a", b"b"]
    assert ids(q("peek_dead", 1, 1)) == [b"b"]
    assert ids(q("peek_dead", 2, 10)) == [b"c"]
    assert ids(q("peek_dead", 0, 10, "c", "alive", "a")) == [b"c", b"a"]


# -- item locks -----------------------------------------------------------------------------------

def lock(q: Queue, token: str, ttl_ms: int) -> Any:
    s = SCRIPTS["lock"]
    return q.client.eval(s.source, 1, q.keys.lock("item"), token, ttl_ms)


def unlock(q: Queue, token: str) -> Any:
    s = SCRIPTS["unlock"]
    return q.client.eval(s.source, 1, q.keys.lock("item"), token)


def test_a_lock_expires_after_its_ttl_and_its_holder_extends_it(q: Queue) -> None:
    key = q.keys.lock("item")
    assert lock(q, "holder", 1000) == [Code.OK]
    assert 0 < q.client.pttl(key) <= 1000
    assert lock(q, "holder", 60_000) == [Code.OK]  # a refresh by the holder
    assert 1000 < q.client.pttl(key) <= 60_000
    code, remaining = lock(q, "other", 10)
    assert code == Code.LOCKED and 59_000 < remaining <= 60_000


def test_only_the_holder_unlocks(q: Queue) -> None:
    assert lock(q, "holder", 60_000) == [Code.OK]
    assert unlock(q, "other") == [Code.OK, 0]
    assert q.client.get(q.keys.lock("item")) == b"holder"
    assert unlock(q, "holder") == [Code.OK, 1]
    assert q.client.exists(q.keys.lock("item")) == 0
    assert unlock(q, "holder") == [Code.OK, 0]
