#!/usr/bin/env python3
"""Delta restore: bring an existing data directory to a newer backup, against a restore
into an empty directory, for pgdr (--delta) and pgBackRest (--delta), in one run.

    bash bench/setup.sh                                  # once, as root (idempotent)
    /work/main/.venv/bin/python bench/run_delta.py [--rounds 2] [--scale 50] [--percent 5]

pgbench -i -s SCALE -F 90 on PostgreSQL 15 (fillfactor 90: the updates below stay on their
page), a full backup by each tool (B1), then one row in 20 of the first PERCENT% of
pgbench_accounts updated (the rows of PERCENT% of its pages; pageinspect counts the pages
whose LSN moved) and a second full backup (B2). Every round and tool: the directory is
brought back to B1 (untimed, not started: yesterday's copy), then timed: the delta restore
of B2 into it, and the restore of B2 into an empty directory; both are started and their
rows compared with the source's (untimed). Caches are dropped before every timed command
when /proc/sys/vm/drop_caches is writable. Medians over the rounds; the target (issue 15):
pgdr's delta >= 5x faster than its restore into an empty directory.

Prints a table and writes bench/results/delta-<date>-<time>.json. See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BENCH, MB, PGBACKREST, PgCluster, can_drop_caches,  # noqa: E402
                    compile_engine, drop_caches, du_bytes, free_port, load_average, log,
                    machine_info, make_pg_dir, make_workdir, parse_json_out, run,
                    start_seaweed, timed, versions, wait_archiver_idle, write_result, tear_down)
from run_full import BUCKETS, LABELS, Ctx, PgBackRest, Pgdr, verify_restore  # noqa: E402

PG_VERSION = 15


def restore_into(tool, backup_id: str, target: Path, delta: bool) -> dict:
    """The tool's restore of backup_id into target, timed; with delta, into the data
    directory target already holds."""
    if tool.name == "pgdr":
        cmd = tool.cmd("restore") + ["--target", target, "--backup-id", backup_id]
        result = timed(cmd + (["--delta"] if delta else []), env=tool.env(), sync_after=True)
        out = parse_json_out(result["stdout"]) or {}
        result["delta"] = out.get("delta")
        return result
    return timed(tool.base() + [f"--pg1-path={target}", f"--set={backup_id}",
                                "--type=immediate", "--target-action=promote"]
                 + (["--delta"] if delta else []) + ["restore"], sync_after=True)


def changed_pages(pg: PgCluster, since_lsn: str) -> tuple[int, int]:
    """(pages of pgbench_accounts whose LSN is after since_lsn, all its pages)."""
    pg.psql("CREATE EXTENSION IF NOT EXISTS pageinspect")
    row = pg.psql("SELECT count(*) FILTER (WHERE (page_header(get_raw_page('pgbench_accounts', "
                  f"b::int))).lsn > '{since_lsn}'), count(*) FROM generate_series(0, "
                  "pg_relation_size('pgbench_accounts') / 8192 - 1) b")
    changed, total = row.split("|")
    return int(changed), int(total)


def one_round(ctx: Ctx, tools: list, rnd: int) -> dict:
    log(f"round {rnd}")
    res = {}
    for tool in tools:
        copy = ctx.work / f"copy-{tool.name}"
        empty = ctx.work / f"empty-{tool.name}"
        # yesterday's copy: B1, restored into an emptied directory (untimed)
        shutil.rmtree(copy, ignore_errors=True)
        make_pg_dir(copy)
        restore_into(tool, ctx.first[tool.name], copy, delta=False)
        shutil.rmtree(empty, ignore_errors=True)
        make_pg_dir(empty)
        row = {}
        for kind, target, delta in (("delta", copy, True), ("empty", empty, False)):
            wait_archiver_idle(ctx.pg.datadir)
            drop_caches(ctx.drop)
            r = restore_into(tool, ctx.second[tool.name], target, delta)
            row[kind] = {"seconds": round(r["seconds"], 3),
                         "cpu_seconds": round(r["cpu_seconds"], 2),
                         "peak_rss_bytes": r["peak_rss_bytes"]}
            if r.get("delta"):
                row[kind]["pgdr_counts"] = r["delta"]
            log(f"  {tool.name:11s} {kind:6s} {r['seconds']:7.2f} s  cpu {r['cpu_seconds']:6.2f} s")
        for kind, target in (("delta", copy), ("empty", empty)):
            check = verify_restore(ctx, tool, target)
            row[kind]["verified"] = check["ok"]
        res[tool.name] = row
        shutil.rmtree(empty, ignore_errors=True)
    return res


def summarize(rounds: list[dict], names: list[str]) -> dict:
    tools = {}
    for name in names:
        delta = statistics.median(r[name]["delta"]["seconds"] for r in rounds)
        empty = statistics.median(r[name]["empty"]["seconds"] for r in rounds)
        tools[name] = {"delta_seconds": delta, "empty_seconds": empty,
                       "speedup": empty / delta,
                       "delta_seconds_all": [r[name]["delta"]["seconds"] for r in rounds],
                       "empty_seconds_all": [r[name]["empty"]["seconds"] for r in rounds],
                       "delta_peak_rss_bytes": max(r[name]["delta"]["peak_rss_bytes"]
                                                   for r in rounds),
                       "verified": all(r[name][k]["verified"] for r in rounds
                                       for k in ("delta", "empty"))}
    ratios = {}
    if "pgdr" in tools and "pgbackrest" in tools:
        ratios["pgdr/pgbackrest"] = {
            "delta_time": tools["pgdr"]["delta_seconds"] / tools["pgbackrest"]["delta_seconds"],
            "empty_time": tools["pgdr"]["empty_seconds"] / tools["pgbackrest"]["empty_seconds"]}
    return {"tools": tools, "ratios": ratios}


def print_table(ctx: Ctx, summ: dict) -> str:
    lines = [f"delta restore, pgbench -s {ctx.args.scale} -F 90 ({ctx.data_bytes / MB:.0f} MB), "
             f"{ctx.pages[0]} of {ctx.pages[1]} pages of pgbench_accounts changed "
             f"({100.0 * ctx.pages[0] / ctx.pages[1]:.1f}%)",
             f"{'tool':24s} {'delta s':>9s} {'empty s':>9s} {'speedup':>8s} {'ok':>4s}"]
    for name, t in summ["tools"].items():
        lines.append(f"{LABELS[name]:24s} {t['delta_seconds']:9.2f} {t['empty_seconds']:9.2f} "
                     f"{t['speedup']:7.2f}x {str(t['verified']):>4s}")
    for pair, r in summ["ratios"].items():
        lines.append(f"{pair}: delta time x{r['delta_time']:.2f}, empty time x{r['empty_time']:.2f}")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds (default 2)")
    ap.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50)")
    ap.add_argument("--percent", type=float, default=5.0,
                    help="share of pgbench_accounts' pages changed between B1 and B2 (5)")
    ap.add_argument("--workers", type=int, default=2, help="parallelism of every tool (2)")
    ap.add_argument("--level", type=int, default=3, help="zstd level (3)")
    ap.add_argument("--tools", default="pgdr,pgbackrest", help="comma list")
    ap.add_argument("--warm", action="store_true", help="do not drop caches")
    ap.add_argument("--skip-setup", action="store_true", help="do not run bench/setup.sh")
    ap.add_argument("--workdir", type=Path, help="default bench/.cache/run-<time>, removed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/delta-*.json)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run_delta.py: run as root (runuser, drop_caches)", file=sys.stderr)
        return 1
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    if "pgbackrest" in names and not shutil.which(str(PGBACKREST)):
        print("run_delta.py: pgBackRest not on the PATH; pgdr alone", file=sys.stderr)
        names.remove("pgbackrest")
    compile_engine()
    if not args.skip_setup:
        subprocess.run(["bash", str(BENCH / "setup.sh")], check=True)
    stamp = dt.datetime.now()
    ctx = Ctx()
    ctx.args = args
    ctx.work = make_workdir(args.workdir, stamp, kind="delta")
    ctx.load_start = load_average()
    ctx.drop = (not args.warm) and can_drop_caches()
    sw = pg = None
    try:
        sw = start_seaweed(ctx, [BUCKETS[n] for n in names])
        ctx.pgdr_endpoint = sw.https_endpoint
        ctx.walcopy = make_pg_dir(ctx.work / "walcopy")
        pg = ctx.pg = PgCluster(PG_VERSION, ctx.work / "pg" / "data",
                                free_port(avoid=set(sw.ports.values())))
        (ctx.work / "pg").mkdir(exist_ok=True)
        os.chmod(ctx.work / "pg", 0o755)
        tools = [{"pgdr": Pgdr, "pgbackrest": PgBackRest}[n](ctx) for n in names]
        pgbr = next((t for t in tools if t.name == "pgbackrest"), None)
        copy = f"cp %p {ctx.walcopy}/%f.tmp && mv {ctx.walcopy}/%f.tmp {ctx.walcopy}/%f"
        archive_command = (f"{PGBACKREST} --config={pgbr.conf} --stanza=bench archive-push %p "
                           f"&& {copy}") if pgbr else copy
        pg.init({"archive_mode": True, "archive_command": archive_command,
                 "max_wal_size": "1GB", "checkpoint_timeout": "30min", "autovacuum": "off"})
        pg.start()
        for tool in tools:
            tool.setup()
        log(f"pgbench -i -s {args.scale} -F 90")
        pg.pgbench("-i", "-q", "-s", str(args.scale), "-F", "90", "postgres")
        pg.psql("VACUUM FREEZE")
        pg.psql("CHECKPOINT")
        wait_archiver_idle(pg.datadir, timeout=3600)
        ctx.first = {t.name: t.backup("b1")["id"] for t in tools}
        since = pg.psql("SELECT pg_current_wal_lsn()")
        last = int(args.scale * 100000 * args.percent / 100)
        pg.psql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {last} "
                "AND aid % 20 = 0")
        pg.psql("CHECKPOINT")
        ctx.pages = changed_pages(pg, since)
        log(f"{ctx.pages[0]} of {ctx.pages[1]} pages of pgbench_accounts changed")
        wait_archiver_idle(pg.datadir, timeout=3600)
        ctx.second = {t.name: t.backup("b2")["id"] for t in tools}
        ctx.data_bytes = int(pg.psql("select sum(pg_database_size(oid)) from pg_database"))
        ctx.check_sql = "select count(*) || ':' || sum(abalance) from pgbench_accounts"
        ctx.check_expected = pg.psql(ctx.check_sql)
        rounds = [one_round(ctx, tools, i) for i in range(1, args.rounds + 1)]
        summ = summarize(rounds, names)
        print()
        table = print_table(ctx, summ)
        write_result({
            "date": stamp.isoformat(timespec="seconds"), "machine": machine_info(),
            "load": {"start": ctx.load_start, "end": load_average()},
            "versions": versions(pg.psql("show server_version")),
            "settings": {"scale": args.scale, "fillfactor": 90, "percent": args.percent,
                         "rounds": args.rounds, "workers": args.workers,
                         "zstd_level": args.level, "order": names,
                         "caches": "dropped before each timed command" if ctx.drop else "warm"},
            "data_bytes": ctx.data_bytes, "pgdata_bytes": du_bytes(pg.datadir),
            "changed_pages": {"changed": ctx.pages[0], "total": ctx.pages[1]},
            "summary": summ, "rounds": rounds, "table": table}, args.out, "delta", stamp)
        return 0
    finally:
        tear_down(ctx, sw, [pg])


if __name__ == "__main__":
    sys.exit(main())
