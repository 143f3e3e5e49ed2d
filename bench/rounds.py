"""Variants of pyqcore measured in alternating rounds, each measurement a fresh process (so
imports, registries and caches start empty): the command line, the child process and the
rounds that bench/job_options.py and bench/observability.py share. A variant named "before"
runs on another checkout (``--before DIR``: the code before a feature existed), so a table
can show that the feature costs nothing when off. Nothing here imports pyqcore: the child
imports it from the checkout it runs in."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
Results = dict[str, list[dict[str, float]]]  # variant -> one dict of figures per round


def measured_rounds(script: str, doc: str | None, variants: dict[str, str],
                    measure: Callable[[str, str, int], dict[str, float]],
                    argv: Sequence[str] | None, *, rounds: int, jobs_help: str,
                    before_help: str) -> tuple[argparse.Namespace, Results] | None:
    """Parse ``script``'s command line; as the child (``--child VARIANT``), print
    ``measure(variant, url, jobs)`` as JSON and return None; else run every variant once per
    round, each round starting one variant later, on ``--url`` or a new redis-server, and
    return the arguments and the figures of every run."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    p.add_argument("--url", help="measure on this Redis (it is FLUSHALLed!) instead of a new one")
    p.add_argument("--rounds", type=int, default=rounds, help="alternating rounds of every variant")
    p.add_argument("--jobs", type=int, default=20_000, help=jobs_help)
    p.add_argument("--before", type=Path, help=before_help)
    p.add_argument("--variants", help="comma-separated variants to run (default: all; those "
                   "named *before only with --before)")
    p.add_argument("--results", type=Path, help="where the table goes (default: the script's)")
    p.add_argument("--child", choices=variants, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.child, a.url, a.jobs)))
        return None
    sys.path.insert(0, str(ROOT))  # run from a checkout
    from tests.support import LocalRedis  # noqa: PLC0415

    wanted = a.variants.split(",") if a.variants else list(variants)
    names = [v for v in variants if v in wanted and (not v.endswith("before") or a.before)]
    results: Results = {v: [] for v in names}
    with contextlib.ExitStack() as stack:
        url = a.url or stack.enter_context(LocalRedis()).url
        for round_ in range(a.rounds):
            for variant in names[round_ % len(names):] + names[:round_ % len(names)]:
                checkout = a.before if variant.endswith("before") else ROOT
                results[variant].append(child(script, variant, url, a.jobs, checkout))
    return a, results


def child(script: str, variant: str, url: str, jobs: int, checkout: Path) -> dict[str, float]:
    """``script``'s measurement of ``variant`` in a new process, importing pyqcore from
    ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, script, "--child", variant, "--url", url,
                          "--jobs", str(jobs)], env=env, capture_output=True, text=True,
                         check=True, cwd=checkout)
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def write(path: Path, text: str) -> int:
    """Write the results page and print it; the script's exit status."""
    path.write_text(text)
    print(text)
    return 0
