"""The bench's own environments: one virtualenv per peer under ``bench/.venvs/<name>`` (their
redis-py pins conflict), built from ``bench/requirements/<name>.txt``, and BullMQ's
``bench/node/node_modules`` from its lockfile. Each is (re)built only when its pins changed.

Run it alone to prepare everything: ``python bench/venvs.py [name ...]``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENVS = BENCH / ".venvs"
REQUIREMENTS = BENCH / "requirements"
NODE = BENCH / "node"
STAMP = ".bench-installed"  # holds the hash of the requirements the venv was built from


@dataclass(frozen=True)
class Env:
    """A ready environment (``python`` is the interpreter, or ``node`` for BullMQ), or why not."""

    name: str
    python: Path | None
    error: str | None = None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-300:]


def python_env(name: str) -> Env:
    """The venv for ``name``, created and installed if its requirements changed."""
    req = REQUIREMENTS / f"{name}.txt"
    if not req.exists():
        return Env(name, None, f"no {req.relative_to(BENCH.parent)}")
    home = VENVS / name
    python = home / "bin" / "python"
    stamp = home / STAMP
    digest = _digest(req)
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return Env(name, python)
    shutil.rmtree(home, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(req)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        return Env(name, None, f"install failed: {_tail(done.stderr or done.stdout)}")
    stamp.write_text(digest)
    return Env(name, python)


def node_env() -> Env:
    """BullMQ's node_modules under ``bench/node``, installed with ``npm ci`` from the lockfile."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        return Env("bullmq", None, "install failed: node/npm not found on PATH")
    lock = NODE / "package-lock.json"
    stamp = NODE / "node_modules" / STAMP
    digest = _digest(lock) if lock.exists() else ""
    if stamp.exists() and stamp.read_text() == digest:
        return Env("bullmq", Path(node))
    command = [npm, "ci" if lock.exists() else "install", "--no-audit", "--no-fund", "--silent"]
    done = subprocess.run(command, cwd=NODE, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return Env("bullmq", None, f"install failed: {_tail(done.stderr or done.stdout)}")
    stamp.write_text(_digest(lock) if lock.exists() else "")
    return Env("bullmq", Path(node))


def prepare(name: str) -> Env:
    """The environment a peer's adapter runs in."""
    return node_env() if name == "bullmq" else python_env(name)


def main(argv: list[str]) -> int:
    names = argv or [p.stem for p in sorted(REQUIREMENTS.glob("*.txt"))] + ["bullmq"]
    failed = 0
    for name in names:
        env = prepare(name)
        print(f"{name}: {env.python if env.error is None else env.error}", flush=True)
        failed += env.error is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
