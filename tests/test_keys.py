"""Key names: readable, hash-tagged by queue, and names that would break the tag refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyqcore import ConfigurationError
from pyqcore.core.presence import worker_key, workers_key
from pyqcore.keys import (
    QueueKeys,
    event_queues_key,
    partitions_key,
    registry_key,
    schedules_key,
)
from pyqcore.scripts import load_scripts


def test_keys_are_readable_and_tagged() -> None:
    keys = QueueKeys("pyqcore", "emails")
    assert keys.key("ready") == "pyqcore:{emails}:ready"
    assert keys.lock("user:7") == "pyqcore:{emails}:lock:user:7"
    assert registry_key("pyqcore") == "pyqcore:queues"
    assert QueueKeys("pyqcore", "emails", 3).key("ready") == "pyqcore:{emails#3}:ready"


@pytest.mark.parametrize("name", ["", "a}b", "{a}", "a b", "tab\t", "x" * 201, "q#1"])
def test_names_that_break_keys_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        QueueKeys("pyqcore", name)


def readme_key_table() -> dict[str, str]:
    """The README's key layout: key -> type."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("### Key layout", 1)[1].split("\n\n| key | type | holds |", 1)[1]
    rows = {}
    for line in table.split("\n\n", 1)[0].splitlines()[2:]:
        key, kind = (cell.strip().strip("`") for cell in line.split("|")[1:3])
        rows[key] = kind
    return rows


def test_the_readme_lists_every_key_with_its_type() -> None:
    """Every key a script names (with the type its header gives), every key kept outside the
    scripts, and nothing else."""
    expected = {registry_key("pyqcore"): "SET", partitions_key("pyqcore"): "HASH",
                workers_key("pyqcore"): "ZSET", worker_key("pyqcore", "<id>"): "HASH",
                schedules_key("pyqcore"): "HASH", event_queues_key("pyqcore"): "HASH"}
    queue = QueueKeys("pyqcore", "Q")
    for script in load_scripts().values():
        for line in script.header.split("KEYS\n", 1)[1].split("ARGV\n", 1)[0].splitlines():
            _, part, kind = line.split()[:3]
            key = queue.lock("<k>") if part == "lock" else queue.key(part)
            assert expected.setdefault(key, kind) == kind, (script.name, key)
    assert readme_key_table() == expected
