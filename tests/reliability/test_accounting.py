"""The accounting checker on hand-made histories: it must be able to fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.accounting import (
    Event,
    Ledger,
    Outage,
    check,
    check_dir,
    offsets,
    read_history,
)


def ev(line: str, writer: str = "w1") -> Event:
    event, job_id, *detail = line.split()
    return Event(writer, event, job_id, detail[0] if detail else "")


def history(*lines: str, writer: str = "w1") -> list[Event]:
    return [ev(line, writer) for line in lines]


def test_a_clean_history_passes() -> None:
    account = check(history("attempt a", "enqueued a", "delivered a 1", "executed a",
                            "acked a 1", "attempt b", "enqueued b", "dead b"))
    assert account.ok
    assert (account.enqueued, account.acked, account.dead, account.delivered) == (2, 1, 1, 1)
    assert not (account.lost or account.unexpected or account.duplicated or account.recovered)


def test_an_acknowledged_enqueue_never_finished_is_lost() -> None:
    account = check(history("attempt a", "enqueued a", "delivered a 1", "executed a"))
    assert account.lost == {"a"}
    assert not account.ok


def test_a_delivery_of_a_job_never_added_is_unexpected() -> None:
    account = check(history("delivered x 1", "executed x", "acked x 1"))
    assert account.unexpected == {"x"}
    assert not account.ok


def test_duplicates_beyond_the_crashed_in_flight_fail() -> None:
    events = [*history("attempt a", "enqueued a", "delivered a 1", "executed a", writer="w1"),
              *history("delivered a 2", "executed a", "acked a 2", writer="w2")]
    assert check(events).duplicated == {"a"}
    assert not check(events).ok  # nobody crashed: the second run is unexplained
    crashed = check(events, crashed=["w1"])  # w1 died holding the lease: the rerun is allowed
    assert crashed.in_flight_at_crashes == 1
    assert crashed.ok


def test_a_lease_acked_before_the_crash_is_not_in_flight() -> None:
    events = history("attempt a", "enqueued a", "delivered a 1", "executed a", "acked a 1")
    assert check(events, crashed=["w1"]).in_flight_at_crashes == 0


def test_an_unacknowledged_enqueue_that_arrived_is_recovered() -> None:
    account = check(history("attempt a", "delivered a 1", "executed a", "acked a 1",
                            "attempt b"))
    assert account.recovered == {"a"}
    assert account.ok  # b was never acknowledged, so it may be missing


def test_an_indeterminate_ack_counts_as_finished() -> None:
    account = check(history("attempt a", "enqueued a", "delivered a 1", "executed a",
                            "ack? a 1"))
    assert account.ok
    assert account.indeterminate_acks == 1


def test_ledger_files_round_trip_and_skip_a_torn_line(tmp_path: Path) -> None:
    with Ledger(tmp_path, "p1") as ledger:
        ledger.log("attempt", ["a", "b"])
        ledger.log("enqueued", ["a", "b"])
    with Ledger(tmp_path, "w1") as ledger:
        ledger.log("delivered", ["a"], "7")
        ledger.log("executed", ["a"])
        ledger.log("acked", ["a"], "7")
    with (tmp_path / "w1.log").open("a") as f:
        f.write("delivered b")  # killed mid-line
    events = read_history(tmp_path)
    assert Event("w1", "acked", "a", "7") in events  # (its place in the ledger aside)
    assert [e.at for e in events if e.writer == "w1"] == [0, 14, 25]
    assert all(e.job_id != "b" or e.writer == "p1" for e in events)
    assert check_dir(tmp_path).lost == {"b"}


def test_unknown_events_and_writers_are_refused(tmp_path: Path) -> None:
    with Ledger(tmp_path, "w1") as ledger, pytest.raises(ValueError):
        ledger.log("vanished", ["a"])
    with pytest.raises(ValueError):
        Ledger(tmp_path, "a b")
    (tmp_path / "bad.log").write_text("nonsense\n")
    with pytest.raises(ValueError):
        read_history(tmp_path)


def test_an_ack_sent_by_a_writer_that_then_crashed_is_indeterminate() -> None:
    events = history("attempt a", "enqueued a", "delivered a 1", "executed a", "acking a 1")
    assert check(events, crashed=["w1"]).lost == set()  # it may have died awaiting the reply
    assert check(events).lost == {"a"}  # a live writer logs the outcome: no excuse
    refused = [*events, ev("ack-refused a 1")]
    assert check(refused, crashed=["w1"]).lost == {"a"}


# -- duplicates are judged per job ----------------------------------------------------------------

def run(writer: str, job_id: str, token: str, *, acked: bool = True) -> list[Event]:
    lines = [f"delivered {job_id} {token}", f"executed {job_id}"]
    if acked:
        lines += [f"acking {job_id} {token}", f"acked {job_id} {token}"]
    return history(*lines, writer=writer)


def test_a_crash_excuses_reruns_of_the_jobs_it_held_only() -> None:
    """The issue's history: the crashed worker held job b; job a ran twice, on two live
    workers. Counting duplicates (1) against leases open at crashes (1) passed it; judged per
    job, a's second run has no excuse."""
    events = [*history("attempt a", "enqueued a", "attempt b", "enqueued b", writer="p1"),
              *history("delivered b 1", writer="w1"),  # then w1 is killed
              *run("w2", "a", "2"), *run("w3", "a", "3"), *run("w2", "b", "4")]
    account = check(events, crashed=["w1"])
    assert account.duplicated == {"a"} and account.in_flight_at_crashes == 1
    assert account.unexplained == {"a"}
    assert not account.ok
    # had the crashed worker held a, its rerun would be explained
    held_a = [*history("attempt a", "enqueued a", writer="p1"),
              *history("delivered a 1", "executed a", "acking a 1", writer="w1"),
              *run("w2", "a", "2")]
    assert check(held_a, crashed=["w1"]).ok


def test_a_crashed_writers_lease_that_was_already_taken_over_excuses_nothing() -> None:
    events = [*history("attempt a", "enqueued a", writer="p1"),
              *history("delivered a 1", "executed a", "acking a 1", "ack-refused a 1",
                       writer="w1"),
              *run("w2", "a", "2")]
    account = check(events, crashed=["w1"])  # w1 died after its lease was reclaimed
    assert account.in_flight_at_crashes == 0 and account.unexplained == {"a"}


def test_each_excuse_covers_one_extra_run() -> None:
    events = [*history("attempt a", "enqueued a", writer="p1"),
              *history("delivered a 1", "executed a", writer="w1"),
              *run("w2", "a", "2"), *run("w3", "a", "3")]
    assert check(events, crashed=["w1"]).unexplained == {"a"}  # three runs, one excuse


def test_a_retried_add_excuses_a_second_run() -> None:
    """A producer's add whose reply was lost is retried; if the job had already run and been
    acked, the retry adds it again (an idempotent id dedups only while the job exists)."""
    once = [*history("attempt a", "enqueued a", writer="p1"),
            *run("w1", "a", "1"), *run("w2", "a", "2")]
    assert check(once).unexplained == {"a"}
    retried = [*history("attempt a", "attempt a", "enqueued a", writer="p1"),
               *run("w1", "a", "1"), *run("w2", "a", "2")]
    assert check(retried).ok


def write(ledger: Ledger, *lines: str) -> None:
    for line in lines:
        event, job_id, *detail = line.split()
        ledger.log(event, [job_id], detail[0] if detail else "")


def test_an_outage_excuses_reruns_of_the_leases_open_during_it(tmp_path: Path) -> None:
    """w1 leases a and b (one batch, token 1) before Redis restarts; after it, w1's ack of a
    is refused (its lease lapsed during the outage) and w2 runs a again. Job c, leased by w1
    only after the outage, and job d, acked before it, have no such excuse."""
    with Ledger(tmp_path, "p1") as p1, Ledger(tmp_path, "w1") as w1, \
            Ledger(tmp_path, "w2") as w2:
        write(p1, *(f"attempt {j}" for j in "abcde"), *(f"enqueued {j}" for j in "abcde"))
        write(w1, "delivered d 0", "executed d", "acking d 0", "acked d 0", "delivered b 1")
        start = offsets(tmp_path)
        write(w2, "delivered e 9", "executed e", "acking e 9", "acked e 9")  # meanwhile
        end = offsets(tmp_path)
        write(w1, "delivered a 1", "executed a", "executed b", "acking a 1", "ack? a 1",
              "acking a 1", "ack-refused a 1", "acking b 1", "acked b 1")
        write(w2, "delivered a 2", "executed a", "acking a 2", "acked a 2")
        write(w1, "delivered c 3", "executed c", "acking c 3", "ack-refused c 3")
        write(w2, "delivered c 4", "executed c", "acking c 4", "acked c 4")
        write(w2, "delivered d 5", "executed d", "acking d 5", "acked d 5")
    outage = Outage(start, end)
    account = check_dir(tmp_path, outages=[outage])
    assert account.duplicated == {"a", "c", "d"}
    assert account.unexplained == {"c", "d"}
    assert account.in_flight_at_outages == 1  # w1's lease of a (b's was acked after all)
    assert check_dir(tmp_path).unexplained == {"a", "c", "d"}  # no outage, no excuse


def test_an_outage_before_a_lease_or_after_its_ack_excuses_nothing(tmp_path: Path) -> None:
    with Ledger(tmp_path, "p1") as p1, Ledger(tmp_path, "w1") as w1, \
            Ledger(tmp_path, "w2") as w2:
        write(p1, "attempt a", "enqueued a", "attempt b", "enqueued b")
        before = offsets(tmp_path)
        after = offsets(tmp_path)  # an outage while nothing was leased
        write(w1, "delivered a 1", "executed a", "acking a 1", "acked a 1")
        write(w2, "delivered a 2", "executed a", "acking a 2", "acked a 2")
        write(w1, "delivered b 3", "executed b", "acking b 3", "acked b 3")
        settled = offsets(tmp_path)  # an outage after b's first lease was acked
        write(w2, "delivered b 4", "executed b", "acking b 4", "acked b 4")
        done = offsets(tmp_path)
    account = check_dir(tmp_path, outages=[Outage(before, after), Outage(settled, done)])
    assert account.unexplained == {"a", "b"}
    assert account.in_flight_at_outages == 0  # w2's lease of b was open, but it was acked
