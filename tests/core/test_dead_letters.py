"""The dead-letter queue's flows without Redis (pyqcore.core.dead_letters): bounded pages,
merged partitions, purges and redrives in batches, queues known only by name."""

from __future__ import annotations

import pytest

from pyqcore.core.dead_letters import CHUNK
from pyqcore.errors import ConfigurationError
from tests.core.dialog import Dialog, dead_letters, dead_rows, names


def test_one_partition_pages_on_the_server_from_the_offset() -> None:
    flow = Dialog(dead_letters().items("q", limit=3, offset=11_900))
    call = flow.script()
    assert call.script.name == "peek_dead" and call.args[:2] == [11_900, 3]
    flow.answer(dead_rows(("a", 1), ("b", 2), ("c", 3)))
    assert [i.job_id for i in flow.result] == ["a", "b", "c"]


def test_a_long_page_is_read_in_chunks_and_stops_at_a_short_one() -> None:
    flow = Dialog(dead_letters().items("q", limit=CHUNK + 10))
    assert flow.script().args[:2] == [0, CHUNK]
    flow.answer(dead_rows(*((f"j{i}", i) for i in range(CHUNK))))
    assert flow.script().args[:2] == [CHUNK, 10]
    flow.answer(dead_rows(("last", CHUNK)))
    assert len(flow.result) == CHUNK + 1


def test_partitions_are_merged_by_the_time_each_job_died() -> None:
    flow = Dialog(dead_letters(2).items("q", limit=3, offset=1))
    first = flow.script()
    assert first.args[:2] == [0, 4]  # offset + limit rows of each partition at most
    flow.answer(dead_rows(("0-a", 10), ("0-b", 40)))
    flow.script()
    flow.answer(dead_rows(("1-a", 20), ("1-b", 30), ("1-c", 50)))
    assert [(i.job_id, i.partition) for i in flow.result] == [
        ("1-a", 1), ("1-b", 1), ("0-b", 0)]


def test_purge_by_age_repeats_while_batches_come_back_full() -> None:
    flow = Dialog(dead_letters().purge("q", max_age=60))
    call = flow.script()
    assert call.script.name == "purge" and call.args[:2] == [60_000, CHUNK]
    flow.answer([0, CHUNK])
    flow.answer([0, 7])
    assert flow.result == CHUNK + 7


def test_processing_purges_old_and_redrives_young_with_the_redrive_bound() -> None:
    flow = Dialog(dead_letters().process_dead_letter_queue(max_age=3600))
    assert names([flow.effect]) == ["SMEMBERS"]
    flow.answer([b"q"])
    assert flow.script().script.name == "purge"
    flow.answer([0, 3])
    redrive = flow.script()
    assert redrive.script.name == "redrive" and redrive.args[:2] == [2, 3_600_000]
    flow.answer([0, 5, 1, 0, 6])  # 5 redriven, 1 kept back, of 6 examined: done
    result = flow.result
    assert (result.purged, result.redriven, result.kept_back) == (3, 5, 1)


def test_a_queue_known_only_by_name_uses_its_recorded_partition_count() -> None:
    flow = Dialog(dead_letters().count("other"))
    assert [c.args for c in flow.effect] == [("HGET", "pyqcore:partitions", "other"),
                                             ("HGET", "pyqcore:event_queues", "other")]
    flow.answer([b"3", None])
    calls = flow.round()
    assert names(calls) == ["counts"] * 3
    flow.answer([[0, 0, 0, 0, 1], [0, 0, 0, 0, 2], [0, 0, 0, 0, 0]])
    assert flow.result == 3


def test_a_queue_recorded_with_events_gets_its_redrives_written_as_events() -> None:
    flow = Dialog(dead_letters().requeue("other"))
    flow.answer([None, b"500"])  # one partition; events=True with events_maxlen=500
    redrive = flow.script()
    assert redrive.script.name == "redrive"
    assert (redrive.keys[-1], list(redrive.args[-2:])) == ("pyqcore:{other}:events", [2, 500])


def test_bad_arguments_raise_before_any_call() -> None:
    for bad in ({"limit": -1}, {"offset": 1.5}):
        with pytest.raises(ConfigurationError):
            Dialog(dead_letters().items("q", **bad))
    with pytest.raises(ConfigurationError):
        Dialog(dead_letters().purge("q", max_age=-1))
    with pytest.raises(ConfigurationError):
        Dialog(dead_letters().purge(ids=["1"]))
