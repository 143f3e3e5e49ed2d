"""A pytest plugin for the mutant runs (``-p tests.mutants.plugin``): the single-server
backend only (tests parametrized over ``backend`` keep their "single" case; both drivers
stay), and hypothesis without its shrink phase (a kill needs a failing example, not the
smallest one: shrinking a model-check failure takes longer than finding it)."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

settings.register_profile("mutants", phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile("mutants")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        (dropped if params.get("backend") == "cluster" else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
