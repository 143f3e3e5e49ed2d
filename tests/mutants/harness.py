"""The mutation run (``python -m tests.mutants``; see the package docstring): scratch copies of
the repository, each with its own venv; the baseline; one mutant at a time per copy; the
report."""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pyqcore.scripts import sync_includes
from tests.mutants.catalogue import ALL, CatalogueError, Mutant
from tests.mutants.equivalent import EQUIVALENT

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "build" / "mutants"

# The fast behavioural subset, cheapest and most telling first (pytest -x stops at the first
# failure). Directories are expanded to their test files.
SUBSET = (
    "tests/core",
    "tests/test_scripts.py",
    "tests/test_lua_contracts.py",
    "tests/test_scripts_fuzz.py",
    "tests/test_state_after_each_transition.py",
    "tests/test_queue.py",
    "tests/test_core.py",
    "tests/test_liveness.py",
    "tests/test_dead_letter.py",
    "tests/test_partitions.py",
    "tests/test_manager.py",
    "tests/test_worker.py",
    "tests/test_workers.py",
    "tests/test_metrics.py",
    "tests/test_queue_model.py",
)
# What decides whether a venv must be rebuilt.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "ext/_cmsgpack.pyx")
# Kept in a scratch copy when syncing: build products, not sources.
BUILT = re.compile(r"(^|/)(__pycache__|build|dist|[^/]*\.egg-info)(/|$)|\.(so|c|pyc)$")
FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)", re.M)


@dataclass
class Outcome:
    """What one mutant's run did."""

    name: str
    kind: str
    path: str
    breaks: str
    status: str  # killed, timeout, survived, error
    seconds: float
    killed_by: str = ""
    equivalent: str = ""  # the listed reason, if the mutant is listed as equivalent

    @property
    def detected(self) -> bool:
        return self.status in ("killed", "timeout")


class HarnessError(Exception):
    """The run cannot go on (a broken catalogue, a failing baseline, a venv that will not
    build)."""


def source_files(root: Path) -> list[str]:
    """The working tree's files as git lists them: tracked (and present) and untracked, not
    ignored."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=root, check=True,
                            capture_output=True).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (root / name).is_file()})


class Slot:
    """One scratch copy (``src``) with its venv, running one mutant at a time."""

    def __init__(self, index: int, work: Path) -> None:
        self.index = index
        self.home = work / f"slot-{index}"
        self.src = self.home / "src"
        self.venv = self.home / "venv"
        self.python = self.venv / "bin" / "python"

    def sync(self, files: Sequence[str]) -> None:
        """Make ``src`` hold exactly the working tree's sources (build products kept)."""
        self.src.mkdir(parents=True, exist_ok=True)
        wanted = set(files)
        for name in files:
            origin, copy = ROOT / name, self.src / name
            data = origin.read_bytes()
            if not copy.is_file() or copy.read_bytes() != data:
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(data)
                shutil.copymode(origin, copy)
        for path in sorted(self.src.rglob("*"), reverse=True):
            name = path.relative_to(self.src).as_posix()
            if path.is_dir():
                if path.name == "__pycache__":
                    shutil.rmtree(path)
                elif not any(path.iterdir()):
                    path.rmdir()
            elif name not in wanted and not BUILT.search(name):
                path.unlink()

    def build_venv(self, log: Path) -> None:
        """Create the venv with the scratch copy installed in editable mode, once (again when
        the build inputs change)."""
        digest = hashlib.sha256()
        for name in BUILD_INPUTS:
            digest.update((self.src / name).read_bytes())
        stamp = self.venv / ".mutants-stamp"
        if stamp.is_file() and stamp.read_text() == digest.hexdigest() and self.python.exists():
            return
        print(f"slot {self.index}: building {self.venv} (python -m venv; pip install -e)",
              flush=True)
        with log.open("w") as out:
            steps = [[sys.executable, "-m", "venv", "--clear", str(self.venv)],
                     [str(self.python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                     [str(self.python), "-m", "pip", "install", "-q", "-e", f"{self.src}[test]"]]
            for step in steps:
                if subprocess.run(step, check=False, stdout=out,
                                  stderr=subprocess.STDOUT).returncode:
                    raise HarnessError(f"building the venv failed: {' '.join(step)} (see {log})")
        stamp.write_text(digest.hexdigest())

    def apply(self, mutant: Mutant) -> dict[Path, str]:
        """Apply ``mutant`` to ``src``; returns the original text of every file it changed."""
        touched = [self.src / mutant.path]
        if mutant.is_include:
            touched += sorted((self.src / "lua").glob("*.lua"))
        originals = {path: path.read_text() for path in touched}
        try:
            mutant.apply(self.src)
            if mutant.is_include:
                changed = sync_includes(self.src / "lua")
                if not changed:
                    raise CatalogueError(f"mutant {mutant.name}: no script carries "
                                         f"{mutant.path}")
        except BaseException:
            restore(originals)
            raise
        return originals

    def run_tests(self, paths: Sequence[str], timeout: float) -> tuple[str, float, str]:
        """pytest -x over ``paths`` in ``src``: ("passed" | "failed" | "timeout" | "error",
        seconds, the output)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0",
                   PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
        command = [str(self.python), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "-p", "tests.mutants.plugin", *paths]
        started = time.monotonic()
        with subprocess.Popen(command, cwd=self.src, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True) as proc:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # pytest and the redis-servers it started
                out, _ = proc.communicate()
                return "timeout", time.monotonic() - started, out.decode(errors="replace")
        elapsed = time.monotonic() - started
        text = out.decode(errors="replace")
        status = {0: "passed", 1: "failed"}.get(proc.returncode, "error")
        return status, elapsed, text


def restore(originals: dict[Path, str]) -> None:
    for path, text in originals.items():
        path.write_text(text)


def expand(paths: Iterable[str], root: Path) -> list[str]:
    """Test files in order, directories expanded, each once; a missing one is an error. (A
    test's node id, ``file::name``, is kept as given.)"""
    files: list[str] = []
    for entry in paths:
        path = root / entry
        if "::" in entry and (root / entry.split("::")[0]).is_file():
            found = [entry]
        elif path.is_dir():
            found = [p.relative_to(root).as_posix() for p in sorted(path.glob("test_*.py"))]
        elif path.is_file():
            found = [entry]
        else:
            raise HarnessError(f"test path {entry} does not exist")
        files += [f for f in found if f not in files]
    return files


def subset_for(mutant: Mutant, root: Path, subset: Sequence[str] = SUBSET) -> list[str]:
    """The mutant's own tests first, then the rest of the subset (with a subset of one's own,
    ``--tests``: that subset alone)."""
    return expand([*mutant.tests, *subset] if subset is SUBSET else subset, root)


def check_catalogue(mutants: Sequence[Mutant], root: Path) -> None:
    """Every mutant applies to the sources under ``root`` and names tests that exist;
    HarnessError listing every one that does not."""
    problems = []
    for mutant in mutants:
        try:
            mutant.mutated((root / mutant.path).read_text())
            expand(mutant.tests, root)
        except (CatalogueError, HarnessError, OSError) as exc:
            problems.append(str(exc))
    unknown = sorted(set(EQUIVALENT) - {m.name for m in ALL})
    if unknown:
        problems.append(f"tests/mutants/equivalent.py lists unknown mutants: {unknown}")
    if problems:
        raise HarnessError("the catalogue does not apply to the sources:\n" +
                           "\n".join(problems))


def first_failure(output: str) -> str:
    match = FAILED_LINE.search(output)
    return match.group(2) if match else ""


def run_mutant(slot: Slot, mutant: Mutant, timeout: float, subset: Sequence[str]) -> Outcome:
    originals = slot.apply(mutant)
    flaky = ""
    try:
        status, seconds, output = slot.run_tests(subset_for(mutant, slot.src, subset), timeout)
        if status == "failed" and mutant.name in EQUIVALENT and first_failure(output):
            # A listed equivalent's kill must repeat: a test that fails once under load
            # (a timing flake) would otherwise say the listed reason is wrong.
            again, _, _ = slot.run_tests([first_failure(output)], timeout)
            if again == "passed":
                (slot.home / f"flaky-{mutant.name}.log").write_text(output)
                flaky = f"(flaky: {first_failure(output)} failed once, then passed alone)"
                status = "passed"
    finally:
        restore(originals)
    outcome = Outcome(mutant.name, mutant.kind, mutant.path, mutant.breaks,
                      {"passed": "survived", "failed": "killed"}.get(status, status),
                      round(seconds, 1), killed_by=flaky,
                      equivalent=EQUIVALENT.get(mutant.name, ""))
    if status == "failed":
        outcome.killed_by = first_failure(output)
    elif status == "error":
        log = slot.home / f"error-{mutant.name}.log"
        log.write_text(output)
        outcome.killed_by = f"(pytest could not run: see {log})"
    return outcome


def rates(outcomes: Sequence[Outcome], kind: str) -> dict[str, object]:
    """Kill rate of one kind: killed (or hung) over all but the surviving equivalents."""
    mine = [o for o in outcomes if o.kind == kind]
    equivalent = [o for o in mine if o.equivalent and not o.detected]
    counted = [o for o in mine if o not in equivalent]
    detected = [o for o in counted if o.detected]
    rate = 100.0 * len(detected) / len(counted) if counted else 100.0
    return {"mutants": len(mine), "equivalent": len(equivalent), "killed": len(detected),
            "survived": len(counted) - len(detected), "rate": round(rate, 1)}


def report(outcomes: Sequence[Outcome], seconds: float, results: Path) -> list[str]:
    """The summary lines (also written to ``results``/results.txt, with results.json)."""
    lines = [f"{len(outcomes)} mutants in {seconds / 60:.1f} min"]
    for kind, label in (("lua", "Lua"), ("core", "core flows")):
        r = rates(outcomes, kind)
        if r["mutants"]:
            lines.append(f"{label}: {r['rate']}% killed: {r['killed']} of {r['mutants']} "
                         f"mutants, {r['equivalent']} equivalent left out, {r['survived']} "
                         f"survived")
    survivors = [o for o in outcomes if not o.detected and not o.equivalent]
    if survivors:
        lines.append("survived:")
        lines += [f"  {o.kind:4} {o.name}: {o.breaks}" for o in survivors]
    equivalents = [o for o in outcomes if o.equivalent and not o.detected]
    if equivalents:
        lines.append("equivalent (survived, as listed):")
        lines += [f"  {o.kind:4} {o.name}: {o.equivalent}" for o in equivalents]
    wrong = [o for o in outcomes if o.equivalent and o.detected]
    if wrong:
        lines.append("listed as equivalent, but killed (remove them from equivalent.py):")
        lines += [f"  {o.name} by {o.killed_by or o.status}" for o in wrong]
    errors = [o for o in outcomes if o.status == "error"]
    if errors:
        lines.append("could not run:")
        lines += [f"  {o.name} {o.killed_by}" for o in errors]
    results.mkdir(parents=True, exist_ok=True)
    table = [f"{o.status:8} {o.seconds:6.1f}s {o.kind:4} {o.name}"
             f"{'  <- ' + o.killed_by if o.killed_by else ''}" for o in outcomes]
    (results / "results.txt").write_text("\n".join([*table, "", *lines]) + "\n")
    (results / "results.json").write_text(json.dumps(
        {"seconds": round(seconds, 1), "lua": rates(outcomes, "lua"),
         "core": rates(outcomes, "core"), "mutants": [asdict(o) for o in outcomes]},
        indent=1) + "\n")
    return lines


def select(names: Sequence[str], kind: str | None) -> list[Mutant]:
    chosen = [m for m in ALL if (not names or any(n in m.name for n in names))
              and (kind is None or m.kind == kind)]
    if not chosen:
        raise HarnessError(f"no mutant matches {list(names)} (kind {kind})")
    return chosen


def show(mutant: Mutant) -> str:
    text = (ROOT / mutant.path).read_text()
    diff = difflib.unified_diff(text.splitlines(True), mutant.mutated(text).splitlines(True),
                                f"a/{mutant.path}", f"b/{mutant.path}")
    return f"{mutant.name}: {mutant.breaks}\n{''.join(diff)}"


def run(mutants: Sequence[Mutant], jobs: int, timeout: float | None,
        subset: Sequence[str] = SUBSET) -> tuple[list[Outcome], float]:
    """Sync the scratch copies, build their venvs, check the baseline, run every mutant;
    returns the outcomes in catalogue order and the seconds the run took."""
    files = source_files(ROOT)
    slots = [Slot(i, WORK) for i in range(jobs)]
    for slot in slots:
        slot.sync(files)
    check_catalogue(mutants, slots[0].src)
    for slot in slots:
        slot.build_venv(slot.home / "venv.log")
    started = time.monotonic()
    status, seconds, output = slots[0].run_tests(expand(subset, slots[0].src), timeout=1800)
    if status != "passed":
        (WORK / "baseline.log").write_text(output)
        raise HarnessError(f"the unmutated copy fails the subset ({status}; "
                           f"{first_failure(output)}): see {WORK / 'baseline.log'}")
    limit = timeout or max(120.0, 4 * seconds)
    print(f"baseline: passed in {seconds:.0f} s; {len(mutants)} mutants on {jobs} slot(s), "
          f"{limit:.0f} s timeout each", flush=True)
    todo: queue.SimpleQueue[tuple[int, Mutant]] = queue.SimpleQueue()
    for item in enumerate(mutants, 1):
        todo.put(item)
    outcomes: dict[int, Outcome] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(slot: Slot) -> None:
        while not failures:
            try:
                n, mutant = todo.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = run_mutant(slot, mutant, limit, subset)
            except BaseException as exc:
                failures.append(exc)
                return
            with lock:
                outcomes[n] = outcome
                flag = " (listed as equivalent)" if outcome.equivalent else ""
                print(f"[{n:3}/{len(mutants)}] {outcome.status:8} {outcome.seconds:5.1f}s "
                      f"{mutant.kind:4} {mutant.name}{flag}"
                      f"{'  <- ' + outcome.killed_by if outcome.killed_by else ''}", flush=True)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [outcomes[n] for n in sorted(outcomes)], time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants",
                                     description="Mutation testing of lua/ and pyqcore/core/.")
    parser.add_argument("-k", dest="names", action="append", default=[],
                        help="only mutants whose name contains this (repeatable)")
    parser.add_argument("--kind", choices=["lua", "core"], help="only this kind of mutant")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="scratch copies run in parallel (default: up to 2)")
    parser.add_argument("--timeout", type=float,
                        help="seconds per mutant (default: 4x the baseline, at least 120)")
    parser.add_argument("--tests", action="append", default=[], metavar="PATH",
                        help="run these tests (files or node ids) instead of the subset; "
                             "repeatable, for looking into one mutant")
    parser.add_argument("--results", type=Path, default=WORK, help="where results.* go")
    parser.add_argument("--fail-under-lua", type=float, default=95.0)
    parser.add_argument("--fail-under-core", type=float, default=85.0)
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--show", metavar="NAME", help="print one mutant's diff and exit")
    args = parser.parse_args(argv)
    try:
        if args.show:
            named = [m for m in ALL if m.name == args.show]
            if not named:
                raise HarnessError(f"no mutant named {args.show}")
            print(show(named[0]))
            return 0
        mutants = select(args.names, args.kind)
        if args.list:
            for m in mutants:
                note = "  [equivalent]" if m.name in EQUIVALENT else ""
                print(f"{m.kind:4} {m.name:48} {m.path}{note}\n     {m.breaks}")
            return 0
        outcomes, seconds = run(mutants, max(1, args.jobs), args.timeout,
                                tuple(args.tests) or SUBSET)
    except (HarnessError, CatalogueError) as exc:
        print(f"mutants: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report(outcomes, seconds, args.results)))
    print(f"results: {args.results / 'results.txt'}")
    floors = {"lua": args.fail_under_lua, "core": args.fail_under_core}
    low = [f"{kind} {rates(outcomes, kind)['rate']}% < {floor}%"
           for kind, floor in floors.items()
           if any(o.kind == kind for o in outcomes)
           and float(rates(outcomes, kind)["rate"]) < floor]  # type: ignore[arg-type]
    if low and not (args.names or args.kind or args.tests):
        print(f"below target: {', '.join(low)}", file=sys.stderr)
        return 1
    return 0
