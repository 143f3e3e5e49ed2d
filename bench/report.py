"""Renders bench/results/latest.json: the Markdown report (standard library only) and, through
the bench's own ``report`` venv (matplotlib), the chart (bench/chart.py).

    python bench/report.py [bench/results/latest.json]   # re-render latest.md and latest.png
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import venvs  # noqa: E402

Data = dict[str, Any]
TIMES = "\N{MULTIPLICATION SIGN}"
Result = dict[str, Any]

ROWS = [
    ("enqueue-single:c1", "enqueue-single: one call per job, one connection"),
    ("enqueue-bulk:c1", "enqueue-bulk: the library's bulk API, batches of 1,000"),
    ("enqueue-concurrent:c1", "enqueue-concurrent: 1,000 single adds awaited at once "
                              "(asyncio.gather, Promise.all), repeated"),
    ("drain:c1", "drain at concurrency 1: one worker process, body = one INCR"),
    ("drain:best", "drain at the high-throughput setting: one worker process, body = one INCR"),
    ("drain:p2", "drain with two worker processes (the library's own multi-process worker, or "
                 "two worker processes), body = one INCR"),
]
SINGLE = ["drain:c1", "drain:best"]  # one worker process
NODE = "bullmq"  # the peer that is not Python
CPU_FLOOR = "redis-py commands-cpu"  # a life cycle's Redis work as plain commands (no Lua)
FLOORS = {"enqueue-single:c1": "redis-py lpush", "enqueue-bulk:c1": "redis-py lpush-pipelined"}
# pyqcore figures shown as an extra row of another table: the batch handler's drain (the same
# body, one INCR per job, pipelined per batch) next to every library's high-throughput drain.
EXTRA_ROWS = {"drain:best": ("drain:batch", "pyqcore, batch handler")}


def rate(result: Result | None) -> float | None:
    """Jobs per second of a successful throughput result."""
    if not result or not result.get("ok") or "seconds" not in result:
        return None
    seconds = float(result["seconds"])
    return int(result["jobs"]) / seconds if seconds > 0 else None


def why(result: Result | None) -> str:
    if result is None:
        return "not run"
    return str(result.get("unsupported") or result.get("error") or "failed")


def fmt_rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def fmt_us(value: float | None) -> str:
    return "—" if value is None else f"{1e6 / value:,.1f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}{TIMES}" if value >= 1 else f"{value:.2f}{TIMES}"


def peers(data: Data) -> list[str]:
    return [name for name in data["figures"] if name != "pyqcore"]


def best_peer(data: Data, keys: list[str], among: list[str] | None = None
              ) -> tuple[str | None, float | None]:
    """The fastest peer (of ``among``, default all) over the given figure keys (its best
    setting among them)."""
    best: tuple[str | None, float | None] = (None, None)
    for name in among if among is not None else peers(data):
        if name not in data["figures"]:
            continue
        for key in keys:
            value = rate(data["figures"][name].get(key))
            if value is not None and (best[1] is None or value > best[1]):
                best = (f"{name} ({key.split(':')[0]} {key.split(':')[1]})"
                        if len(keys) > 1 else name, value)
    return best


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def best_rate(figures: dict[str, Result], keys: list[str]) -> float | None:
    """A library's best rate over the given figure keys."""
    rates = [v for v in (rate(figures.get(k)) for k in keys) if v is not None]
    return max(rates) if rates else None


def python_peers(data: Data) -> list[str]:
    return [name for name in peers(data) if name != NODE]


class Targets:
    """A targets table: one row a figure, its value in this run, the target, met or not."""

    def __init__(self) -> None:
        self.rows = ["| figure | measured | target | met |", "|---|---|---|---|"]

    def row(self, figure: str, value: float | None, shown: str, target: str,
            ok: bool | None) -> None:
        mark = "—" if value is None or ok is None else ("yes" if ok else "**no**")
        self.rows.append(f"| {figure} | {shown if value is not None else '—'} | {target} | "
                         f"{mark} |")

    def ratio(self, figure: str, value: float | None, versus: str | None, low: float) -> None:
        """``value`` (a ratio) against a minimum ``low``, shown as a multiple (vs ``versus``)."""
        shown = f"{fmt_ratio(value)} (vs {versus})" if versus else fmt_ratio(value)
        self.row(figure, value, shown, f"≥ {fmt_ratio(low)}", value is not None and value >= low)

    def share(self, figure: str, value: float | None, low: float, note: str = "") -> None:
        """``value`` (a fraction) against a minimum ``low``, shown as a percentage."""
        shown = f"{value:.0%}{note}" if value is not None else ""
        self.row(figure, value, shown, f"≥ {low:.0%}", value is not None and value >= low)


def issue_targets(data: Data) -> list[str]:
    """The targets of issue #16 (throughput II), each as measured in this run."""
    figures = data["figures"]
    pyq = figures.get("pyqcore", {})
    t = Targets()
    concurrent = pyq.get("enqueue-concurrent:c1") or {}
    gather = rate(concurrent)
    peer, peer_rate = best_peer(data, ["enqueue-concurrent:c1"])
    t.ratio("concurrent adds (gather of 1,000) ÷ best peer's concurrent adds",
            _div(gather, peer_rate), peer, 5)
    if concurrent.get("add_batch_seconds"):
        same = int(concurrent["jobs"]) / float(concurrent["add_batch_seconds"])
        t.share("concurrent adds ÷ add_batch (asyncio, same loop, alternating blocks)",
                _div(gather, same), 0.5, f" ({fmt_rate(gather)} vs {fmt_rate(same)} jobs/s)")
    bulk = rate(pyq.get("enqueue-bulk:c1"))
    t.share("concurrent adds ÷ add_batch (the enqueue-bulk row: sync, its own run)",
            _div(gather, bulk), 0.5)
    one = best_rate(pyq, SINGLE)
    two = rate(pyq.get("drain:p2"))
    t.ratio("drain (INCR), 2 processes ÷ 1 process (pyqcore's best)", _div(two, one), None, 1.6)
    node = best_rate(figures.get(NODE, {}), [*SINGLE, "drain:p2"])
    t.ratio("drain (INCR), pyqcore 2 processes ÷ BullMQ Node at its best", _div(two, node),
            f"{NODE}, {fmt_rate(node)} jobs/s" if node else NODE, 1.6)
    single = pyq.get("single-vs-bare") or {}
    if single.get("ok"):
        value = float(single["bare_us"]) / float(single["pyqcore_us"])
        t.share("single add ÷ the bare HINCRBY + HSETNX + RPUSH script (interleaved)", value,
                0.95, f" ({float(single['pyqcore_us']):.1f} vs {float(single['bare_us']):.1f} "
                      f"µs; Redis {float(single['pyqcore_redis_us']):.1f} vs "
                      f"{float(single['bare_redis_us']):.1f} µs per call)")
    peer, peer_bulk = best_peer(data, ["enqueue-bulk:c1"], python_peers(data))
    t.ratio("no regression: bulk add ÷ best Python peer's bulk add", _div(bulk, peer_bulk),
            peer, 15)
    t.ratio("no regression: bulk add ÷ BullMQ Node's bulk add",
            _div(bulk, rate(figures.get(NODE, {}).get("enqueue-bulk:c1"))), NODE, 10)
    peer, peer_drain = best_peer(data, SINGLE, python_peers(data))
    t.ratio("no regression: per-job drain (INCR, one process) ÷ best Python peer's",
            _div(one, peer_drain), peer, 5)
    lat = pyq.get("latency:best", {})
    if lat.get("ok"):
        p99 = float(lat["p99"]) * 1000
        t.row("no regression: enqueue → handler start at 1,000 jobs/s, p99", p99,
              f"{p99:.2f} ms", "≤ 5 ms", p99 <= 5)
    return t.rows


def targets(data: Data) -> list[str]:
    """The design brief's targets, each as measured in this run."""
    pyq = data["figures"].get("pyqcore", {})
    floors = data["floors"]
    t = Targets()
    row = t.row
    bulk = rate(pyq.get("enqueue-bulk:c1"))
    peer, peer_bulk = best_peer(data, ["enqueue-bulk:c1"])
    t.ratio("bulk add ÷ best peer's bulk add", _div(bulk, peer_bulk), peer, 10)
    t.share("bulk add ÷ redis-py pipelined LPUSH",
            _div(bulk, rate(floors.get("redis-py lpush-pipelined"))), 0.5)
    t.share("single add ÷ redis-py LPUSH round trip",
            _div(rate(pyq.get("enqueue-single:c1")), rate(floors.get("redis-py lpush"))), 0.85)
    peer, peer_drain = best_peer(data, SINGLE)
    t.ratio("drain (INCR), pyqcore's best setting ÷ best peer at its best (one process)",
            _div(best_rate(pyq, SINGLE), peer_drain), peer, 5)
    t.ratio("drain (INCR), pyqcore with a batch handler (INCRs pipelined per batch) ÷ the same",
            _div(rate(pyq.get("drain:batch")), peer_drain), peer, 5)
    empty = rate(pyq.get("drain-empty:best"))
    row("drain, empty body", empty, f"{fmt_rate(empty)} jobs/s", "≥ 40,000 jobs/s",
        empty is not None and empty >= 40_000)
    lat = pyq.get("latency:best", {})
    if lat.get("ok"):
        p50, p99 = float(lat["p50"]) * 1000, float(lat["p99"]) * 1000
        row("enqueue → handler start at 1,000 jobs/s, p50", p50, f"{p50:.2f} ms", "≤ 1 ms",
            p50 <= 1)
        row("enqueue → handler start at 1,000 jobs/s, p99", p99, f"{p99:.2f} ms", "≤ 5 ms",
            p99 <= 5)
    mem = pyq.get("memory", {})
    if mem.get("ok"):
        b = float(mem["bytes_per_job"])
        row("Redis memory per waiting job", b,
            f"{b:.0f} B (record {mem['record_bytes']} B)", "≤ 250 B", b <= 250)
    cpu = pyq.get("redis-cpu", {})
    if cpu.get("ok"):
        us = float(cpu["script_usec_per_job"])
        floor = floors.get(CPU_FLOOR, {})
        plain = (f"; the same work as plain commands: {float(floor['command_usec_per_job']):.1f}"
                 " µs" if floor.get("ok") else "")
        row("Redis CPU per job life cycle (scripts' own time)", us,
            f"{us:.1f} µs (server process: {float(cpu['process_usec_per_job']):.1f} µs{plain})",
            "≤ 6 µs", us <= 6)
    return t.rows


def throughput_table(data: Data, key: str) -> list[str]:
    pyq = rate(data["figures"].get("pyqcore", {}).get(key))
    rows = ["| library | setting | jobs/s | µs/job | pyqcore ÷ this | note |",
            "|---|---|---:|---:|---:|---|"]
    entries: list[tuple[float, str]] = []
    for name, figures in data["figures"].items():
        result = figures.get(key)
        value = rate(result)
        setting = str((result or {}).get("setting", "")) if key.startswith("drain") else ""
        note = str((result or {}).get("partial", "")) if value is not None else why(result)
        ratio = "" if name == "pyqcore" else fmt_ratio(_div(pyq, value))
        shown = f"**{name}**" if name == "pyqcore" else name
        entries.append((value or -1.0, f"| {shown} | {setting} | {fmt_rate(value)} | "
                                       f"{fmt_us(value)} | {ratio} | {note} |"))
    entries += concurrent_rows(data, key)
    extra = EXTRA_ROWS.get(key)
    if extra and extra[0] in data["figures"].get("pyqcore", {}):
        result = data["figures"]["pyqcore"][extra[0]]
        value = rate(result)
        note = str(result.get("partial", "")) if value is not None else why(result)
        entries.append((value or -1.0, f"| **{extra[1]}** | {result.get('setting', '')} | "
                                       f"{fmt_rate(value)} | {fmt_us(value)} | | {note} |"))
    for name, error in data["environments"].items():
        entries.append((-2.0, f"| {name} | | — | — | | {error} |"))
    floor = FLOORS.get(key)
    if floor and floor in data["floors"]:
        value = rate(data["floors"][floor])
        entries.append((value or -1.0, f"| *floor: {floor}* | | {fmt_rate(value)} | "
                                       f"{fmt_us(value)} | {fmt_ratio(_div(pyq, value))} | |"))
    rows += [line for _, line in sorted(entries, key=lambda e: -e[0])]
    return rows


def concurrent_rows(data: Data, key: str) -> list[tuple[float, str]]:
    """pyqcore's other concurrent-add figures, measured in the same adapter run: threads
    sharing one sync queue, and add_batch of the same jobs in alternating blocks."""
    result = data["figures"].get("pyqcore", {}).get(key) or {}
    if key != "enqueue-concurrent:c1" or not result.get("ok"):
        return []
    rows = []
    if result.get("threads_seconds"):
        value = int(result["threads_jobs"]) / float(result["threads_seconds"])
        rows.append((value, f"| **pyqcore, {result['threads']} threads** | sharing one sync "
                            f"queue, adds in a loop | {fmt_rate(value)} | {fmt_us(value)} | | |"))
    if result.get("add_batch_seconds"):
        value = int(result["jobs"]) / float(result["add_batch_seconds"])
        rows.append((value, f"| *pyqcore add_batch* | asyncio, 1,000 a call, in blocks "
                            f"alternating with the gathers | {fmt_rate(value)} | "
                            f"{fmt_us(value)} | | |"))
    return rows


def scaling_table(data: Data) -> list[str]:
    """Each library's drain with two worker processes ÷ its best with one."""
    rows = ["| library | one process, best (jobs/s) | two processes (jobs/s) | scaling |",
            "|---|---:|---:|---:|"]
    for name, figures in data["figures"].items():
        two = rate(figures.get("drain:p2"))
        if two is None:
            continue
        one = best_rate(figures, SINGLE)
        rows.append(f"| {name} | {fmt_rate(one)} | {fmt_rate(two)} | "
                    f"{fmt_ratio(_div(two, one))} |")
    return rows


def latency_table(data: Data) -> list[str]:
    rows = ["| library | setting | p50 ms | p99 ms | max ms | handled / sent |",
            "|---|---|---:|---:|---:|---|"]
    entries = []
    for name, figures in data["figures"].items():
        r = figures.get("latency:best") or {}
        if r.get("ok"):
            p50 = float(r["p50"]) * 1000
            entries.append((p50, f"| {name} | {r.get('setting', '')} | {p50:,.2f} | "
                                 f"{float(r['p99']) * 1000:,.2f} | {float(r['max']) * 1000:,.1f} "
                                 f"| {r['jobs']:,} / {r['sent']:,} |"))
        else:
            entries.append((float("inf"), f"| {name} | | — | — | — | {why(r)} |"))
    rows += [line for _, line in sorted(entries, key=lambda e: e[0])]
    return rows


def floors_table(data: Data) -> list[str]:
    rows = ["| floor | ops/s | µs/op |", "|---|---:|---:|"]
    for name, result in data["floors"].items():
        if name == CPU_FLOOR:
            continue  # shown beside pyqcore's Redis CPU
        value = float(result["rate"]) if "rate" in result else rate(result)
        rows.append(f"| {name} | {fmt_rate(value)} | {fmt_us(value)} |" if value
                    else f"| {name} | — | {why(result)} |")
    return rows


def pyqcore_table(data: Data) -> list[str]:
    pyq = data["figures"].get("pyqcore", {})
    rows = ["| figure | value |", "|---|---|"]
    empty = pyq.get("drain-empty:best", {})
    if empty.get("ok"):
        rows.append(f"| drain, empty body, {empty.get('setting')} | "
                    f"{fmt_rate(rate(empty))} jobs/s ({fmt_us(rate(empty))} µs/job) |")
    mem = pyq.get("memory", {})
    if mem.get("ok"):
        rows.append(f"| Redis memory per waiting job (used_memory delta over "
                    f"{mem['jobs']:,} jobs; record {mem['record_bytes']} B) | "
                    f"{float(mem['bytes_per_job']):.0f} B |")
    cpu = pyq.get("redis-cpu", {})
    if cpu.get("ok"):
        rows.append(f"| Redis CPU per life cycle, scripts (evalsha `usec`) | "
                    f"{float(cpu['script_usec_per_job']):.2f} µs |")
        rows.append(f"| Redis CPU per life cycle, server process (used_cpu_user+sys) | "
                    f"{float(cpu['process_usec_per_job']):.2f} µs |")
        floor = data["floors"].get(CPU_FLOOR, {})
        if floor.get("ok"):
            rows.append(
                "| the same writes and reads as plain commands, no Lua (HSET+RPUSH, LPOP+HMGET+"
                f"ZADD, ZREM+HDEL): commands' `usec`, server process | "
                f"{float(floor['command_usec_per_job']):.2f} µs, "
                f"{float(floor['process_usec_per_job']):.2f} µs |")
        calls = ", ".join(f"{k} {v:,}" for k, v in cpu["calls"].items())
        rows.append(f"| Redis commands per job (evalsha + commands run by scripts) | "
                    f"{float(cpu['commands_per_job']):.2f} ({calls}, for {cpu['jobs']:,} jobs) |")
    return rows


def markdown(data: Data) -> str:
    c = data["config"]
    out = [
        "# pyqcore benchmark",
        "",
        f"{c['date']} · Python {c['python']} · Redis {c['redis']} · {c['machine']} · "
        f"median of {c['runs']} run(s) · {c['jobs']:,} jobs per throughput run · "
        f"latency run {c['latency_seconds']:.0f} s at 1,000 jobs/s.",
        "Absolute numbers depend on the machine (and on whatever else it runs); the ratios are "
        "measured in the same run, on the same Redis.",
        "",
        "## Targets of issue #16 (concurrent adds, processes, the single add)",
        "",
        *issue_targets(data),
        "",
        "## Targets of the project's design brief",
        "",
        *targets(data),
    ]
    for key, title in ROWS:
        out += ["", f"## {title}", "", *throughput_table(data, key)]
        if key == "drain:p2":
            out += ["", "Scaling from one worker process to two:", "", *scaling_table(data)]
    out += ["", "## latency: enqueue → handler start, 1,000 jobs/s, high-throughput setting",
            "", *latency_table(data)]
    out += ["", "## pyqcore only", "", *pyqcore_table(data)]
    out += ["", "## floors (same server)", "", *floors_table(data), ""]
    return "\n".join(out)


def chart(raw: Path, png: Path) -> str:
    """Draw the chart with the report venv's matplotlib; returns what happened."""
    env = venvs.python_env("report")
    if env.python is None:
        return f"chart skipped: {env.error}"
    done = subprocess.run([str(env.python), str(BENCH / "chart.py"), str(raw), str(png)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"chart failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return f"chart saved to {png}"


def main(argv: list[str]) -> int:
    raw = Path(argv[0]) if argv else BENCH / "results" / "latest.json"
    data = json.loads(raw.read_text())
    text = markdown(data)
    (raw.parent / "latest.md").write_text(text)
    print(text)
    print(chart(raw, raw.parent / "latest.png"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
