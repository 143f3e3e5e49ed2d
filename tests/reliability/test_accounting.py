"""The accounting checker on hand-made histories: it must be able to fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.accounting import Event, Ledger, check, check_dir, read_history


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
    assert Event("w1", "acked", "a", "7") in events
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
