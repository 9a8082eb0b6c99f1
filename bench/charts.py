#!/usr/bin/env python3
"""PNG charts of the bench results, for docs/benchmarks.md.

    .venv/bin/python bench/charts.py [RESULTS.json ...]     # default: the newest of each kind

Writes into docs/images/:
  bench-full.png   backup and restore throughput per tool (one full-*.json: of the chosen
                   files, the one with the most rounds, then the largest scale, then newest)
  bench-scale.png  backup and restore seconds, and peak memory, against data size (every
                   full-*.json given, or those of the newest day, one point per scale)
  bench-wal.png    recovery time of N segments: pgdr's restore_command, cp, and replay from
                   pg_wal (the physical limit) (one wal-*.json with fetch runs)
Each chart's caption line carries the date, pgdr commit, machine and load of its run(s).
The run scripts call render() at their end when matplotlib is installed
(bench/setup.sh installs it into .venv).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
IMAGES = BENCH.parent / "docs" / "images"
MB = 1_000_000


def _pyplot():
    """matplotlib's pyplot without a display, or None when it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _caption(result: dict) -> str:
    machine = result.get("machine", {})
    load = result.get("load", {})
    return (f"{result.get('date', '?')}  pgdr {result.get('versions', {}).get('pgdr_git', '?')}"
            f"  {machine.get('cpus', '?')} cpu {machine.get('cpu_model', '')}"
            f"  load {load.get('start', ['?'])[0]}-{load.get('end', ['?'])[0]}")


def _label(result: dict, tool: str) -> str:
    versions = result.get("versions", {})
    if tool == "pgbackrest":
        return versions.get("pgbackrest", "pgBackRest")
    if tool == "barman":
        return "Barman cloud"
    return {"pgdr-posix": "pgdr (posix)"}.get(tool, tool)


def full_chart(plt, result: dict, out: Path) -> Path:
    tools = result["summary"]["tools"]
    names = list(tools)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.38
    xs = range(len(names))
    ax.bar([x - width / 2 for x in xs], [tools[n]["backup_mb_s"] for n in names], width,
           label="backup")
    ax.bar([x + width / 2 for x in xs], [tools[n]["restore_mb_s"] for n in names], width,
           label="restore")
    ax.set_xticks(list(xs), [_label(result, n) for n in names])
    ax.set_ylabel("MB/s (data size / wall seconds)")
    scale = result["settings"]["scale"]
    ax.set_title(f"Full backup and restore, pgbench -s {scale} "
                 f"({result['data_bytes'] / MB:.0f} MB), medians of "
                 f"{result['settings']['rounds']} rounds", fontsize=10)
    ax.legend()
    fig.text(0.01, 0.01, _caption(result), fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def scale_chart(plt, results: list[dict], out: Path) -> Path:
    by_scale = {}
    for result in results:  # the newest run of each scale
        by_scale[result["settings"]["scale"]] = result
    runs = [by_scale[s] for s in sorted(by_scale)]
    tools = [t for t in runs[-1]["summary"]["tools"] if all(t in r["summary"]["tools"]
                                                          for r in runs)]
    fig, (seconds, memory) = plt.subplots(1, 2, figsize=(9, 3.6))
    sizes = [r["data_bytes"] / 1e9 for r in runs]
    for number, tool in enumerate(tools):
        label = _label(runs[-1], tool)
        color = "C%d" % number  # one colour per tool; solid backup, dashed restore
        summary = [r["summary"]["tools"][tool] for r in runs]
        seconds.plot(sizes, [s["backup_seconds"] for s in summary], marker="o",
                     color=color, label=label + " backup")
        seconds.plot(sizes, [s["restore_seconds"] for s in summary], marker="s",
                     color=color, linestyle="--", label=label + " restore")
        if all(s.get("backup_peak_rss_bytes") for s in summary):
            memory.plot(sizes, [s["backup_peak_rss_bytes"] / MB for s in summary],
                        marker="o", color=color, label=label + " backup")
            memory.plot(sizes, [s["restore_peak_rss_bytes"] / MB for s in summary],
                        marker="s", color=color, linestyle="--", label=label + " restore")
    seconds.set_xlabel("data size, GB")
    seconds.set_ylabel("wall seconds")
    seconds.set_title("Time against size", fontsize=10)
    seconds.legend(fontsize=7)
    memory.set_xlabel("data size, GB")
    memory.set_ylabel("peak RSS, MB")
    memory.set_ylim(bottom=0)
    memory.set_title("Peak memory against size", fontsize=10)
    memory.legend(fontsize=7)
    fig.text(0.01, 0.01, " | ".join(_caption(r) for r in runs)[:220], fontsize=6,
             color="grey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def wal_chart(plt, result: dict, out: Path) -> Path:
    fetch = result["summary"]["fetch"]
    order = [n for n in ("pgdr", "local", "pg_wal") if n in fetch]
    labels = {"pgdr": "pgdr wal-fetch", "local": "cp from local disk",
              "pg_wal": "replay from pg_wal (limit)"}
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.barh([labels[n] for n in order], [fetch[n]["seconds"] for n in order],
            color=["tab:blue", "tab:grey", "tab:green"][:len(order)])
    segments = fetch[order[0]].get("segments_fetched", "?")
    ax.set_xlabel("seconds from pg_ctl start to promoted")
    ax.set_title(f"Recovery of {segments} WAL segments after the backup", fontsize=10)
    fig.text(0.01, 0.01, _caption(result), fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _newest(kind: str) -> list[Path]:
    return sorted(RESULTS.glob(f"{kind}-*.json"))


def render(paths: list[Path] | None = None) -> list[Path]:
    """Draw the charts from these results files (default: the newest of each kind); the
    PNGs written, [] when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        print("charts: matplotlib is not installed (bash bench/setup.sh): no PNG written",
              file=sys.stderr)
        return []
    IMAGES.mkdir(parents=True, exist_ok=True)
    chosen = [Path(p) for p in paths] if paths else []
    fulls = [p for p in chosen if p.name.startswith("full-")] or _newest("full")
    wals = [p for p in chosen if p.name.startswith("wal-")] or _newest("wal")
    written = []
    full_results = [json.loads(p.read_text()) for p in fulls]
    if full_results:
        if not paths:  # the newest day's runs only: one run's machine and load
            day = full_results[-1]["date"][:10]
            full_results = [r for r in full_results if r["date"].startswith(day)]
        largest = max(full_results, key=lambda r: (r["settings"]["rounds"],
                                                   r["settings"]["scale"], r["date"]))
        written.append(full_chart(plt, largest, IMAGES / "bench-full.png"))
        if len({r["settings"]["scale"] for r in full_results}) > 1:
            written.append(scale_chart(plt, full_results, IMAGES / "bench-scale.png"))
    for path in reversed(wals):
        result = json.loads(path.read_text())
        if result.get("summary", {}).get("fetch"):
            written.append(wal_chart(plt, result, IMAGES / "bench-wal.png"))
            break
    for path in written:
        print(f"charts: wrote {path}")
    return written


if __name__ == "__main__":
    render([Path(a) for a in sys.argv[1:]] or None)
