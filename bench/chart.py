"""The bar chart of a bench run: jobs/s per library for each throughput workload (log scale).
Runs in the bench's ``report`` venv (matplotlib is not a dependency of pyqcore):

    bench/.venvs/report/bin/python bench/chart.py bench/results/latest.json out.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PEER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#aec7e8"]  # tab10 without its red, which is pyqcore's
WORKLOADS = [("enqueue-single:c1", "enqueue-single"), ("enqueue-bulk:c1", "enqueue-bulk"),
             ("enqueue-concurrent:c1", "enqueue-concurrent"),
             ("drain:c1", "drain, concurrency 1"), ("drain:best", "drain, best setting"),
             ("drain:p2", "drain, 2 processes")]


def rate(result: dict[str, Any] | None) -> float:
    if not result or not result.get("ok") or not result.get("seconds"):
        return 0.0
    return float(result["jobs"]) / float(result["seconds"])


def main(raw: Path, png: Path) -> None:
    data = json.loads(raw.read_text())
    names = list(data["figures"])
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(14, 5.5))
    peer_colors = iter(PEER_COLORS * 2)
    for i, name in enumerate(names):
        values = [rate(data["figures"][name].get(key)) for key, _ in WORKLOADS]
        xs = [w + (i - (len(names) - 1) / 2) * width for w in range(len(WORKLOADS))]
        bars = ax.bar(xs, values, width, label=name,
                      color="#d62728" if name == "pyqcore" else next(peer_colors))
        for bar, value in zip(bars, values, strict=True):
            if value == 0:
                ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 1), ha="center",
                            va="bottom", fontsize=6, rotation=90)
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    ax.set_xticks(range(len(WORKLOADS)), [title for _, title in WORKLOADS])
    ax.set_ylabel("jobs/s (log scale)")
    c = data["config"]
    ax.set_title(f"pyqcore and peers, same Redis {c['redis']}, {c['machine']}, "
                 f"median of {c['runs']} ({c['date']})")
    ax.legend(ncol=5, fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
