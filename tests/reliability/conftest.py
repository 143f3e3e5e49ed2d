"""Fixtures of the fault tests: a redis-server per test (so a test may kill and restart it), a
seeded random generator (the seed is printed, so a failure can be replayed with
``PYQCORE_SEED``) and a scenario that cleans its processes up."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.scenario import Scenario
from tests.support import LocalRedis


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("PYQCORE_SEED", random.randrange(2**32)))
    print(f"PYQCORE_SEED={seed}")
    return random.Random(seed)


@pytest.fixture
def aof_server() -> Iterator[LocalRedis]:
    """A server that fsyncs every write to its append-only file before replying."""
    with LocalRedis("--appendonly", "yes", "--appendfsync", "always") as server:
        yield server


@pytest.fixture
def plain_server() -> Iterator[LocalRedis]:
    """A server of its own, without persistence."""
    with LocalRedis() as server:
        yield server


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    path.mkdir()
    return path


def make_scenario(server: LocalRedis, ledger_dir: Path, rng: random.Random) -> Iterator[Scenario]:
    """A scenario whose processes are all killed at the end, whatever happened."""
    scenario = Scenario(server, ledger_dir, rng)
    try:
        yield scenario
    finally:
        scenario.kill_all()


@pytest.fixture
def scenario(plain_server: LocalRedis, ledger_dir: Path, rng: random.Random
             ) -> Iterator[Scenario]:
    yield from make_scenario(plain_server, ledger_dir, rng)


@pytest.fixture
def aof_scenario(aof_server: LocalRedis, ledger_dir: Path, rng: random.Random
                 ) -> Iterator[Scenario]:
    yield from make_scenario(aof_server, ledger_dir, rng)
