#!/usr/bin/env python3
"""Snapshot backups: a snapshot backup and a restore from it to an LSN, against a full
backup to S3 and a restore of the same LSN from it, on the same data, in one run.

    bash bench/setup.sh                                  # once, as root (idempotent)
    /work/main/.venv/bin/python bench/run_snapshot.py [--rounds 2] [--scale 50]

PostgreSQL 15 with its data directory on a btrfs subvolume (a sparse loop file), WAL
archived by pgdr into SeaweedFS (HTTPS). pgbench -i -s SCALE, then every round: a
snapshot backup and a full backup (timed), 20 s of pgbench at a fixed rate, the LSN of its
end as the target, and for each backup a restore to that LSN (timed), the copy started and
timed to promoted, its rows compared with the source's at that LSN. Both restores write
to the same btrfs filesystem. Caches are dropped before every timed command when
/proc/sys/vm/drop_caches is writable. Medians over the rounds.

Prints a table and writes bench/results/snapshot-<date>-<time>.json. See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BENCH, PGDR, PgCluster, can_drop_caches, compile_engine,  # noqa: E402
                    drop_caches, free_port, load_average, log, machine_info, make_pg_dir,
                    make_workdir, median, parse_json_out, run, start_seaweed, timed,
                    versions, wait_archiver_idle, write_result, tear_down)
from run_full import BUCKETS, Ctx, Pgdr  # noqa: E402

PG_VERSION = 15
CHECK_SQL = "select count(*) || ':' || sum(abalance) || ':' || sum(delta) from " \
            "pgbench_accounts, (select coalesce(sum(delta), 0) delta from pgbench_history) h"


def mount_btrfs(ctx, size_gib: int) -> Path:
    image, mount = ctx.work / "btrfs.img", ctx.work / "bt"
    run(["truncate", "-s", f"{size_gib}G", str(image)], postgres=False)
    run(["mkfs.btrfs", "-q", str(image)], postgres=False)
    mount.mkdir()
    run(["mount", "-o", "loop,user_subvol_rm_allowed", str(image), str(mount)],
        postgres=False)
    os.chmod(mount, 0o755)
    return mount


def subvolume(path: Path) -> Path:
    run(["btrfs", "subvolume", "create", str(path)], postgres=False)
    return make_pg_dir(path)


def drop_tree(path: Path) -> None:
    """A restored copy removed, subvolume or not."""
    if not path.exists():
        return
    if os.stat(path).st_ino == 256:
        run(["btrfs", "subvolume", "delete", str(path)], postgres=False)
    else:
        run(["rm", "-rf", str(path)], postgres=False)


def started_to_promoted(ctx, target: Path) -> tuple[float, str]:
    """Seconds from pg_ctl start to the end of recovery, and the check query's answer."""
    port = free_port()
    sock = make_pg_dir(ctx.work / f"sock-{port}", 0o755)
    opts = (f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock} "
            "-c archive_mode=off")
    logf = sock / "start.log"
    t0 = time.monotonic()
    run([ctx.pg.bindir / "pg_ctl", "-D", target, "-o", opts, "-l", logf, "-w", "-t",
               "3600", "start"])
    psql = ([ctx.pg.bindir / "psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                  "-Atqc"])
    while run(psql + ["select pg_is_in_recovery()"]).stdout.strip() == "t":
        time.sleep(0.05)
    seconds = time.monotonic() - t0
    answer = run(psql + [CHECK_SQL]).stdout.strip()
    run([ctx.pg.bindir / "pg_ctl", "-D", target, "-m", "fast", "stop"])
    return seconds, answer


def one_round(ctx, tool, rnd: int) -> dict:
    log(f"round {rnd}")
    res = {}
    backups = {}
    for kind in ("snapshot", "full"):
        wait_archiver_idle(ctx.pg.datadir)
        drop_caches(ctx.drop)
        r = timed(tool.cmd("backup") + ["--type", kind], env=tool.env())
        out = parse_json_out(r["stdout"]) or {}
        backups[kind] = out["backup"]["id"]
        res[kind] = {"backup_seconds": round(r["seconds"], 3),
                     "stored_bytes": out["backup"].get("stored_size")}
    # the same WAL after both backups, then the point both restores reach
    run([ctx.pg.bindir / "pgbench", "-h", "127.0.0.1", "-p", ctx.pg.port, "-U",
               "postgres", "-c", "2", "-R", "200", "-T", "20", "postgres"])
    target_lsn = ctx.pg.psql("select pg_current_wal_lsn()")
    expected = ctx.pg.psql(CHECK_SQL)
    ctx.pg.psql("select pg_switch_wal()")
    wait_archiver_idle(ctx.pg.datadir)
    time.sleep(1.0)  # the spool uploads what the archiver handed over
    for kind in ("snapshot", "full"):
        target = ctx.bt / f"restore-{kind}-{rnd}" / "data"
        make_pg_dir(target.parent)
        drop_caches(ctx.drop)
        r = timed(tool.cmd("restore") + ["--target", target, "--backup-id", backups[kind],
                                         "--point", f"lsn:{target_lsn}"],
                  env=tool.env(), sync_after=True)
        if '"changed": true' not in r["stdout"]:
            raise RuntimeError(f"restore of {backups[kind]} failed: {r['stderr'][-2000:]}")
        promoted, answer = started_to_promoted(ctx, target)
        if answer != expected:
            raise RuntimeError(f"{kind}: restored rows {answer}, source {expected}")
        res[kind].update(restore_seconds=round(r["seconds"], 3),
                         start_to_promoted_seconds=round(promoted, 3),
                         total_seconds=round(r["seconds"] + promoted, 3), rows_equal=True)
        drop_tree(target)
    log(f"round {rnd}: {res}")
    return res


def summarize(rounds: list[dict]) -> dict:
    keys = ("backup_seconds", "restore_seconds", "start_to_promoted_seconds", "total_seconds")
    summ = {kind: {k: median([r[kind][k] for r in rounds]) for k in keys}
            for kind in ("snapshot", "full")}
    summ["ratios_full_over_snapshot"] = {
        k: round(summ["full"][k] / summ["snapshot"][k], 2) for k in keys
        if summ["snapshot"][k]}
    return summ


def print_table(ctx, summ: dict) -> str:
    lines = [f"scale {ctx.args.scale}, {ctx.data_bytes / 2**30:.2f} GiB, medians of "
             f"{ctx.args.rounds} rounds",
             "| backup | backup s | restore to LSN s | start to promoted s | total s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for kind in ("snapshot", "full"):
        s = summ[kind]
        lines.append(f"| {kind} | {s['backup_seconds']:.2f} | {s['restore_seconds']:.2f} | "
                     f"{s['start_to_promoted_seconds']:.2f} | {s['total_seconds']:.2f} |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds (default 2)")
    ap.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50)")
    ap.add_argument("--workers", type=int, default=2, help="parallelism (2)")
    ap.add_argument("--level", type=int, default=3, help="zstd level (3)")
    ap.add_argument("--warm", action="store_true", help="do not drop caches")
    ap.add_argument("--skip-setup", action="store_true", help="do not run bench/setup.sh")
    ap.add_argument("--workdir", type=Path, help="default bench/.cache/run-<time>, removed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/snapshot-*.json)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run_snapshot.py: run as root (mount, runuser, drop_caches)", file=sys.stderr)
        return 1
    compile_engine()
    if not args.skip_setup:
        subprocess.run(["bash", str(BENCH / "setup.sh")], check=True)
    stamp = dt.datetime.now()
    ctx = Ctx()
    ctx.args = args
    ctx.work = make_workdir(args.workdir, stamp, kind="snapshot")
    os.chmod(ctx.work, 0o755)
    ctx.load_start = load_average()
    ctx.drop = (not args.warm) and can_drop_caches()
    sw = pg = None
    ctx.bt = mount_btrfs(ctx, max(8, args.scale // 10 * 2))
    try:
        sw = start_seaweed(ctx, [BUCKETS["pgdr"]])
        ctx.pgdr_endpoint = sw.https_endpoint
        data = subvolume(ctx.bt / "pgdata")
        pg = ctx.pg = PgCluster(PG_VERSION, data, free_port(avoid=set(sw.ports.values())))
        tool = Pgdr(ctx)
        with open(tool.conf, "a") as handle:
            handle.write(f"snapshot_dir = {make_pg_dir(ctx.bt / 'snaps')}\n"
                         f"spool_dir = {make_pg_dir(ctx.work / 'spool')}\n")
        push = f"{PGDR} wal-push --config {tool.conf} --credentials {tool.creds} %p"
        pg.init({"archive_mode": True, "archive_command": push, "max_wal_size": "1GB",
                 "checkpoint_timeout": "30min"})
        pg.start()
        tool.setup()
        log(f"pgbench -i -s {args.scale}")
        pg.pgbench("-i", "-q", "-s", str(args.scale), "postgres")
        pg.psql("CHECKPOINT")
        wait_archiver_idle(pg.datadir, timeout=3600)
        ctx.data_bytes = int(pg.psql("select sum(pg_database_size(oid)) from pg_database"))
        rounds = [one_round(ctx, tool, i) for i in range(1, args.rounds + 1)]
        summ = summarize(rounds)
        print()
        table = print_table(ctx, summ)
        write_result({
            "date": stamp.isoformat(timespec="seconds"), "machine": machine_info(),
            "load": {"start": ctx.load_start, "end": load_average()},
            "versions": versions(pg.psql("show server_version"),
                                 btrfs=run(["btrfs", "--version"], postgres=False).stdout.strip()),
            "settings": {"scale": args.scale, "rounds": args.rounds, "workers": args.workers,
                         "zstd_level": args.level, "writes_between": "pgbench -R 200 -T 20",
                         "caches": "dropped before each timed command" if ctx.drop else "warm"},
            "data_bytes": ctx.data_bytes, "summary": summ, "rounds": rounds,
            "table": table}, args.out, "snapshot", stamp)
        return 0
    finally:
        tear_down(ctx, sw, [pg])
        subprocess.run(["umount", "-l", str(ctx.bt)], check=False)


if __name__ == "__main__":
    sys.exit(main())
