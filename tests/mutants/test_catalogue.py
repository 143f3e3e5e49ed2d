"""The mutant catalogue against the current sources (part of the ordinary suite, so an edit
that moves mutated code fails ``make test``, not just ``make mutants``): every mutant applies
exactly once, is valid code (a kill must come from behaviour, not from a syntax error), names
tests that exist; every script and every core flow module is covered; the equivalents are
known mutants with a reason."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis

from pyqcore.scripts import expand_includes, read_includes
from tests.mutants.catalogue import ALL, CORE, LUA, Mutant
from tests.mutants.equivalent import EQUIVALENT
from tests.mutants.harness import ROOT, SUBSET, check_catalogue, expand, subset_for

LUA_DIR = ROOT / "lua"


def test_every_mutant_applies_once_and_names_existing_tests() -> None:
    check_catalogue(ALL, ROOT)  # raises, listing every one that does not
    assert len({m.name for m in ALL}) == len(ALL), "mutant names must be unique"
    assert len({(m.path, m.old, m.new) for m in ALL}) == len(ALL), "a mutant is listed twice"
    assert all(m.old != m.new and m.breaks for m in ALL)
    assert expand(SUBSET, ROOT)
    assert subset_for(ALL[0], ROOT)[: len(ALL[0].tests)] == list(ALL[0].tests)


def test_every_script_and_include_and_core_module_has_mutants() -> None:
    scripts = {p.stem for p in LUA_DIR.glob("*.lua")}
    includes = {p.stem for p in (LUA_DIR / "includes").glob("*.lua")} - {"codes"}
    mutated = {Path(m.path).stem for m in LUA}
    assert scripts <= mutated, sorted(scripts - mutated)
    assert includes <= mutated, sorted(includes - mutated)
    flows = {"slot", "queue", "partitions", "calls", "dead_letters", "registry", "manager",
             "coalesce", "presence", "worker"}
    assert flows <= {Path(m.path).stem for m in CORE}


def mutated_scripts(mutant: Mutant) -> dict[str, str]:
    """The scripts a Lua mutant changes, by name, mutated (includes refilled)."""
    if not mutant.is_include:
        path = ROOT / mutant.path
        return {path.stem: mutant.mutated(path.read_text())}
    includes = read_includes(LUA_DIR)
    name = Path(mutant.path).stem
    includes[name] = mutant.mutated(includes[name])
    marker = f"-- @include {name}\n"
    return {p.stem: expand_includes(p.read_text(), includes)
            for p in sorted(LUA_DIR.glob("*.lua")) if marker in p.read_text()}


@pytest.mark.parametrize("mutant", LUA, ids=lambda m: m.name)
def test_a_lua_mutant_compiles(client: redis.Redis, mutant: Mutant) -> None:
    scripts = mutated_scripts(mutant)
    assert scripts, f"{mutant.name} changes no script"
    for source in scripts.values():
        client.script_load(source)  # compiles it; a syntax error raises


@pytest.mark.parametrize("mutant", CORE, ids=lambda m: m.name)
def test_a_core_mutant_compiles(mutant: Mutant) -> None:
    ast.parse(mutant.mutated((ROOT / mutant.path).read_text()))


def test_equivalent_mutants_are_known_and_explained() -> None:
    names = {m.name for m in ALL}
    assert set(EQUIVALENT) <= names
    assert all(len(reason) > 80 for reason in EQUIVALENT.values())
