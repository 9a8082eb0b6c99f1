#!/usr/bin/env python3
"""Differential backups: pgdr vs pgBackRest (PostgreSQL 15) and pgdr vs native incremental
backup (PostgreSQL 18), in one run.

    bash bench/setup.sh                                  # once, as root (idempotent)
    /work/main/.venv/bin/python bench/run_diff.py [--rounds 2] [--scale 100] [--duration 60]

Part 1, PostgreSQL 15: pgdr vs pgBackRest 2.45, one SeaweedFS (HTTPS for both, one bucket
each), zstd level 3, 2 workers each. pgbench -i -s SCALE once; then every round:
  1. a full backup of each tool,
  2. one `pgbench -T DURATION` (the same workload for both tools),
  3. a differential backup of each tool (pgdr --type diff, pgBackRest --type=diff),
  4. a restore of each tool's full+diff chain into a new directory (timed up to a `sync`),
     then, untimed, a start of the restored cluster and a check of its rows.
Which tool goes first alternates over the rounds, in every step. Caches are dropped before
every timed command when /proc/sys/vm/drop_caches is writable. Per backup: seconds, CPU
seconds, bytes the tool's process tree read from storage (/proc/self/io read_bytes of the
reaped children, cold cache), bytes stored (bucket usage delta under the backup prefix:
pgBackRest's archived WAL is not counted) and what the tool reports about itself.

Part 2, PostgreSQL 18 (summarize_wal = on): pgdr vs `pg_basebackup --incremental`. Every
round: a pgdr full and a pg_basebackup full (tar format, -Z zstd:3: the same zstd level,
compressed by pg_basebackup itself; the manifest is kept), the same `pgbench -T DURATION`, a
pgdr diff and `pg_basebackup --incremental=<full>/backup_manifest` (tar, -Z zstd:3). Stored
bytes: bucket usage delta (pgdr) and the size of the backup directory (native). Restore of
the chain: pgdr restore of the diff vs extracting both tar.zst backups and pg_combinebackup
(timed together, up to a `sync`).

Prints a table and writes bench/results/diff-<date>-<time>.json. See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BENCH, MB, REPO, PGBACKREST, PGDR, REGION, STANZA, PgCluster,  # noqa: E402
                    can_drop_caches, chown_pg, compile_engine, drop_caches, du_bytes, free_port,
                    load_average,
                    log, machine_info, make_pg_dir, make_workdir, median, parse_json_out,
                    pgbackrest_config, pgbackrest_label, run, start_seaweed, timed, versions,
                    wait_archiver_idle, write_private, write_result, tear_down)

BUCKETS = {"pgdr": "diff-pgdr", "pgbackrest": "diff-pgbackrest", "pgdr18": "diff-pgdr18"}
LABELS = {"pgdr": "pgdr (S3)", "pgbackrest": pgbackrest_label(), "pgdr18": "pgdr (S3)",
          "native": "pg_basebackup --incremental"}
CHECK_SQL = "select count(*) || ':' || sum(abalance) from pgbench_accounts"


class Ctx:
    pass


# --------------------------------------------------------------------------- tools
class Pgdr:
    def __init__(self, ctx, name: str, pg: PgCluster, bucket: str):
        self.ctx, self.name, self.pg, self.bucket = ctx, name, pg, bucket
        self.dir = make_pg_dir(ctx.work / name)
        self.conf = self.dir / "pgdr.ini"
        self.creds = self.dir / "credentials.ini"
        a = ctx.args
        write_private(self.conf, (
            f"[pgdr]\ncluster = bench\nrepo_type = s3\ns3_bucket = {bucket}\n"
            f"s3_endpoint = {ctx.sw.https_endpoint}\ns3_region = {REGION}\n"
            f"s3_ca_bundle = {ctx.ca_bundle}\npg_host = 127.0.0.1\npg_port = {pg.port}\n"
            f"pg_user = postgres\npg_data = {pg.datadir}\ncompression = zstd\n"
            f"compression_level = {a.level}\nworkers = {a.workers}\nfast_checkpoint = true\n"))
        write_private(self.creds, f"[pgdr]\ns3_access_key = {ctx.sw.access_key}\n"
                                  f"s3_secret_key = {ctx.sw.secret_key}\n")

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}
        if self.ctx.args.py_spy:  # profile every pgdr command (bin/pgdr honours PGDR_PYTHON)
            env["PGDR_PYTHON"] = str(self.profiler())
        return env

    def profiler(self) -> Path:
        """A python wrapper that runs pgdr under `py-spy record` (all threads, raw
        collapsed stacks, one file per command in the run's profile directory)."""
        wrapper = self.dir / "py-spy-python"
        if not wrapper.exists():
            out = make_pg_dir(self.ctx.work / "profiles", 0o755)
            write_private(wrapper, f"""#!/bin/sh
exec {self.ctx.args.py_spy} record --threads --rate 250 --format raw \
  --output {out}/{self.name}-$(date +%H%M%S%N).txt -- {REPO / '.venv' / 'bin' / 'python'} "$@"
""")
            chown_pg(wrapper, 0o700)
        return wrapper

    def cmd(self, command: str) -> list:
        return [PGDR, command, "--config", self.conf, "--credentials", self.creds, "--json"]

    def setup(self) -> None:
        run(self.cmd("info"), env=self.env())

    def stored(self) -> int:
        return self.ctx.sw.usage(self.bucket)[0]

    def backup(self, kind: str) -> dict:
        before = self.stored()
        r = timed(self.cmd("backup") + ["--type", kind], env=self.env())
        out = parse_json_out(r["stdout"]) or {}
        b = out.get("backup", out) if isinstance(out, dict) else {}
        r["id"] = str(b.get("id") or b.get("backup_id") or "")
        if not r["id"]:
            raise RuntimeError(f"pgdr backup printed no id: {r['stdout'][-2000:]}")
        r["stored_bytes"] = self.stored() - before
        r["tool_report"] = {k: v for k, v in b.items()
                            if not isinstance(v, (dict, list)) or k == "changed_files"}
        if isinstance(r["tool_report"].get("changed_files"), list):
            r["tool_report"]["changed_files"] = len(r["tool_report"]["changed_files"])
        return r

    def restore(self, backup_id: str, target: Path) -> dict:
        return timed(self.cmd("restore") + ["--target", target, "--backup-id", backup_id],
                     env=self.env(), sync_after=True)


class PgBackRest:
    name = "pgbackrest"

    def __init__(self, ctx, pg: PgCluster):
        self.ctx, self.pg = ctx, pg
        self.dir = make_pg_dir(ctx.work / "pgbackrest")
        self.conf = pgbackrest_config(ctx, self.dir, BUCKETS["pgbackrest"], pg,
                                      before="repo1-retention-full=9999\n",
                                      after="start-fast=y\narchive-check=y\n")

    def base(self) -> list:
        return [PGBACKREST, f"--config={self.conf}", f"--stanza={STANZA}"]

    def setup(self) -> None:
        run(self.base() + ["stanza-create"])
        run(self.base() + ["check"])

    def stored(self) -> int:  # backups only: archive-push also writes to this bucket
        return self.ctx.sw.usage(BUCKETS["pgbackrest"], "pgbackrest/backup/")[0]

    def backup(self, kind: str) -> dict:
        before = self.stored()
        r = timed(self.base() + [f"--type={kind}", "backup"])
        r["stored_bytes"] = self.stored() - before
        info = json.loads(run(self.base() + ["--output=json", "info"]).stdout)
        last = info[0]["backup"][-1]
        r["id"] = last["label"]
        r["tool_report"] = {"size": last["info"]["size"], "delta": last["info"]["delta"],
                            "repo_delta": last["info"]["repository"].get("delta")}
        return r

    def restore(self, backup_id: str, target: Path) -> dict:
        return timed(self.base() + [f"--pg1-path={target}", f"--set={backup_id}",
                                    "--type=immediate", "--target-action=promote", "restore"],
                     sync_after=True)


class Native:
    """pg_basebackup (tar, zstd level 3 by pg_basebackup) full + --incremental; restore =
    extract both + pg_combinebackup."""
    name = "native"

    def __init__(self, ctx, pg: PgCluster):
        self.ctx, self.pg = ctx, pg
        self.dir = make_pg_dir(ctx.work / "native")
        self.full = None

    def backup(self, kind: str) -> dict:
        target = self.dir / f"{kind}-{time.strftime('%H%M%S')}"
        cmd = [self.pg.bindir / "pg_basebackup", "-h", "127.0.0.1", "-p", self.pg.port,
               "-U", "postgres", "-D", target, "-Ft", "-Z", self.ctx.args.native_compress,
               "-X", "fetch", "-c", "fast"]
        if kind != "full":
            cmd.append(f"--incremental={self.full}/backup_manifest")
        r = timed(cmd)
        r["id"] = str(target)
        r["stored_bytes"] = du_bytes(target)
        r["tool_report"] = {"files": sorted(os.listdir(target))}
        if kind == "full":
            self.full = target
        return r

    def restore(self, backup_id: str, target: Path) -> dict:
        work = make_pg_dir(self.dir / "extract")
        script = ["set -e"]
        plain = []
        for i, src in enumerate([self.full, Path(backup_id)]):
            d = work / f"b{i}"
            plain.append(str(d))
            script.append(f"rm -rf {d} && mkdir -m 700 {d}")
            for tf in sorted(os.listdir(src)):
                if tf.endswith(".tar.zst"):
                    script.append(f"tar -I zstd -xf {src / tf} -C {d}")
            script.append(f"cp {src / 'backup_manifest'} {d}/")
        script.append(f"rmdir {target} 2>/dev/null || true")
        script.append(f"{self.pg.bindir / 'pg_combinebackup'} {' '.join(plain)} -o {target}")
        script.append(f"rm -rf {work}")
        return timed(["bash", "-c", "\n".join(script)], sync_after=True)


# --------------------------------------------------------------------------- helpers
def verify(ctx, pg: PgCluster, target: Path, expected: str) -> dict:
    """Start the restored cluster, wait until promoted, compare its rows (untimed)."""
    port = free_port()
    sock = make_pg_dir(target.parent / f"{target.name}.sock", 0o755)
    logf = target.parent / f"{target.name}.log"
    logf.write_text("")
    chown_pg(logf, 0o644)
    opts = (f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock} "
            "-c archive_mode=off")
    t0 = time.monotonic()
    st = run([pg.bindir / "pg_ctl", "-D", target, "-l", logf, "-o", opts, "-w", "-t", "300",
              "start"], check=False)
    out = {"ok": False}
    if st.returncode != 0:
        out["error"] = logf.read_text(errors="replace")[-2000:]
        return out
    try:
        psql = [pg.bindir / "psql", "-XAt", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                "-d", "postgres", "-c"]
        deadline = time.monotonic() + 300
        while True:
            r = run(psql + ["select pg_is_in_recovery()"], check=False)
            if r.returncode == 0 and r.stdout.strip() == "f":
                break
            if time.monotonic() > deadline:
                out["error"] = "not promoted"
                return out
            time.sleep(0.5)
        out["recovery_seconds"] = round(time.monotonic() - t0, 2)
        out["check"] = run(psql + [CHECK_SQL]).stdout.strip()
        out["ok"] = out["check"] == expected
    finally:
        run([pg.bindir / "pg_ctl", "-D", target, "-m", "immediate", "-w", "stop"], check=False)
    return out


def startup_reads(pgdr: Pgdr, pgbr: PgBackRest) -> dict:
    """Bytes each tool reads from disk just to start, after dropping caches (its interpreter,
    modules, libraries): part of every cold 'read' figure, not data."""
    out = {}
    for name, cmd, env in (("pgdr", [PGDR, "--help"], pgdr.env()),
                           ("pgbackrest", [PGBACKREST, "version"], None)):
        drop_caches(pgdr.ctx.drop)
        out[name] = timed(cmd, env=env)["read_bytes"]
    return out


def slim(r: dict) -> dict:
    return {"id": r["id"], "seconds": round(r["seconds"], 3),
            "cpu_seconds": round(r["cpu_seconds"], 2), "read_bytes": r["read_bytes"],
            "rchar": r["rchar"], "stored_bytes": r["stored_bytes"],
            "tool_report": r.get("tool_report")}


def one_round(ctx, pg: PgCluster, tools: list, rnd: int) -> dict:
    order = tools if rnd % 2 else list(reversed(tools))
    res = {t.name: {} for t in tools}
    res["load_start"] = load_average()
    log(f"round {rnd} (PostgreSQL {pg.version}): order {[t.name for t in order]}, "
        f"load {res['load_start']}")
    for kind in ("full", "diff"):
        if kind == "diff":
            t0 = time.monotonic()
            out = pg.pgbench("-n", "-c", str(ctx.args.clients), "-j", str(ctx.args.clients),
                             "-T", str(ctx.args.duration), "postgres")
            tps = next((l for l in out.splitlines() if l.startswith("tps")), "")
            res["workload"] = {"seconds": round(time.monotonic() - t0, 1), "tps": tps}
            log(f"  pgbench -T {ctx.args.duration}: {tps}")
            res["expected"] = pg.psql(CHECK_SQL)
        for t in order:
            if pg.version <= 15:
                wait_archiver_idle(pg.datadir, 600)
            drop_caches(ctx.drop)
            r = t.backup(kind)
            res[t.name][kind] = slim(r)
            log(f"  {kind:4s} {t.name:10s} {r['seconds']:7.2f} s  cpu {r['cpu_seconds']:6.2f} s"
                f"  read {r['read_bytes'] / MB:8.1f} MB  stored {r['stored_bytes'] / MB:8.1f} MB"
                f"  {r.get('tool_report')}")
    for t in order:
        target = ctx.work / f"restore-{t.name}"
        shutil.rmtree(target, ignore_errors=True)
        make_pg_dir(target)
        if pg.version <= 15:
            wait_archiver_idle(pg.datadir, 600)
        drop_caches(ctx.drop)
        r = t.restore(res[t.name]["diff"]["id"], target)
        res[t.name]["restore"] = {"seconds": round(r["seconds"], 3),
                                  "command_seconds": round(r["command_seconds"], 3),
                                  "cpu_seconds": round(r["cpu_seconds"], 2),
                                  "restored_bytes": du_bytes(target)}
        log(f"  restore {t.name:10s} {r['seconds']:7.2f} s (command {r['command_seconds']:.2f}"
            f" s) cpu {r['cpu_seconds']:6.2f} s")
        v = verify(ctx, pg, target, res["expected"])
        res[t.name]["verify"] = v
        log(f"  verify  {t.name:10s} ok={v['ok']} {v.get('error', '')}")
        shutil.rmtree(target, ignore_errors=True)
    res["load_end"] = load_average()
    return res


def summarize(rounds: list[dict], names: list[str], pairs: list[tuple]) -> dict:
    tools = {}
    for n in names:
        rs = [r[n] for r in rounds]
        tools[n] = {f"{k}_{f}": median([x[k][f] for x in rs])
                    for k in ("full", "diff") for f in ("seconds", "cpu_seconds",
                                                        "read_bytes", "stored_bytes")}
        tools[n]["restore_seconds"] = median([x["restore"]["seconds"] for x in rs])
        tools[n]["diff_seconds_all"] = [x["diff"]["seconds"] for x in rs]
        tools[n]["diff_stored_all"] = [x["diff"]["stored_bytes"] for x in rs]
        tools[n]["restore_seconds_all"] = [x["restore"]["seconds"] for x in rs]
        tools[n]["verified"] = all(x["verify"]["ok"] for x in rs)
    ratios = {}
    for a, b in pairs:
        per_round = [{"diff_stored": r[a]["diff"]["stored_bytes"] / r[b]["diff"]["stored_bytes"],
                      "diff_seconds": r[a]["diff"]["seconds"] / r[b]["diff"]["seconds"],
                      "restore_chain_seconds": r[a]["restore"]["seconds"]
                      / r[b]["restore"]["seconds"]} for r in rounds]
        ratios[f"{a}/{b}"] = {k: median([p[k] for p in per_round]) for k in per_round[0]}
        ratios[f"{a}/{b}"]["per_round"] = per_round
    return {"tools": tools, "ratios": ratios}


def table(title: str, summ: dict) -> list[str]:
    lines = [title]
    hdr = (f"{'tool':28s} {'full s':>7s} {'full MB':>8s} {'diff s':>7s} {'cpu s':>6s} "
           f"{'read MB*':>8s} {'stored MB':>9s} {'chain restore s':>15s} ok")
    lines += [hdr, "-" * len(hdr)]
    for n, s in summ["tools"].items():
        lines.append(f"{LABELS.get(n, n):28s} {s['full_seconds']:7.2f} "
                     f"{s['full_stored_bytes'] / MB:8.1f} {s['diff_seconds']:7.2f} "
                     f"{s['diff_cpu_seconds']:6.1f} {s['diff_read_bytes'] / MB:8.1f} "
                     f"{s['diff_stored_bytes'] / MB:9.1f} {s['restore_seconds']:15.2f} "
                     f"{'yes' if s['verified'] else 'NO'}")
    lines.append("* read MB: bytes the tool's processes read from disk, caches dropped "
                 "(native: the client only, the server reads the data)")
    for k, r in summ["ratios"].items():
        lines.append(f"{k} (median of per-round ratios): diff stored x{r['diff_stored']:.2f}, "
                     f"diff seconds x{r['diff_seconds']:.2f}, chain restore seconds "
                     f"x{r['restore_chain_seconds']:.2f}")
    return lines


def new_cluster(ctx, version: int, name: str, settings: dict) -> PgCluster:
    (ctx.work / name).mkdir(exist_ok=True)
    os.chmod(ctx.work / name, 0o755)
    pg = PgCluster(version, ctx.work / name / "data", free_port(avoid=set(ctx.sw.ports.values())))
    pg.init({"max_wal_size": "4GB", "checkpoint_timeout": "30min",
             "shared_buffers": "256MB", **settings})
    pg.start()
    log(f"PostgreSQL {version}: pgbench -i -s {ctx.args.scale}")
    pg.pgbench("-i", "-q", "-s", str(ctx.args.scale), "postgres")
    pg.psql("CHECKPOINT")
    return pg


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="rounds per part (default 2)")
    ap.add_argument("--scale", type=int, default=100, help="pgbench scale (default 100)")
    ap.add_argument("--duration", type=int, default=60, help="pgbench -T between full and diff")
    ap.add_argument("--clients", type=int, default=1, help="pgbench -c/-j (default 1)")
    ap.add_argument("--workers", type=int, default=2, help="parallelism of pgdr/pgBackRest (2)")
    ap.add_argument("--level", type=int, default=3, help="zstd level (3)")
    ap.add_argument("--native-compress", default="zstd:3", help="pg_basebackup -Z (zstd:3)")
    ap.add_argument("--parts", default="15,18", help="15: vs pgBackRest, 18: vs native")
    ap.add_argument("--warm", action="store_true", help="do not drop caches")
    ap.add_argument("--py-spy", metavar="PATH", help="profile every pgdr command with this "
                    "py-spy (raw stacks in <workdir>/profiles; slows pgdr: not for figures)")
    ap.add_argument("--skip-setup", action="store_true", help="do not run bench/setup.sh")
    ap.add_argument("--workdir", type=Path, help="default bench/.cache/run-<time>, removed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/diff-*.json)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run_diff.py: run as root (runuser, drop_caches)", file=sys.stderr)
        return 1
    compile_engine()  # as the agent role does on nodes
    if not args.skip_setup:
        subprocess.run(["bash", str(BENCH / "setup.sh")], check=True)
    parts = [int(p) for p in args.parts.split(",") if p.strip()]

    stamp = dt.datetime.now()
    ctx = Ctx()
    ctx.args = args
    ctx.work = make_workdir(args.workdir, stamp, "diff")
    ctx.drop = (not args.warm) and can_drop_caches()
    result = {"date": stamp.isoformat(timespec="seconds"), "machine": machine_info(),
              "load_start": load_average(),
              "settings": {k: str(v) for k, v in vars(args).items()
                           if k not in ("workdir", "out")}
              | {"caches": "dropped before each timed command" if ctx.drop else "warm"}}
    lines = [f"pgbench -i -s {args.scale}, then per round: full, pgbench -c {args.clients} -T "
             f"{args.duration}, diff, chain restore; {args.rounds} round(s), medians; caches "
             f"{'dropped before each timed command' if ctx.drop else 'warm'}"]
    clusters = []
    sw = None
    try:
        sw = start_seaweed(ctx, BUCKETS.values())
        vers = {}
        if 15 in parts:
            walcopy = make_pg_dir(ctx.work / "walcopy15")
            (ctx.work / "pg15").mkdir(exist_ok=True)
            os.chmod(ctx.work / "pg15", 0o755)
            pg = PgCluster(15, ctx.work / "pg15" / "data",
                           free_port(avoid=set(sw.ports.values())))
            pgbr = PgBackRest(ctx, pg)
            copy = f"cp %p {walcopy}/%f.tmp && mv {walcopy}/%f.tmp {walcopy}/%f"
            pg.init({"archive_mode": True, "max_wal_size": "4GB", "checkpoint_timeout": "30min",
                     "shared_buffers": "256MB",
                     "archive_command": f"{PGBACKREST} --config={pgbr.conf} --stanza={STANZA} "
                                        f"archive-push %p && {copy}"})
            pg.start()
            clusters.append(pg)
            log(f"PostgreSQL 15: pgbench -i -s {args.scale}")
            pg.pgbench("-i", "-q", "-s", str(args.scale), "postgres")
            pg.psql("CHECKPOINT")
            data = int(pg.psql("select sum(pg_database_size(oid)) from pg_database"))
            tools = [Pgdr(ctx, "pgdr", pg, BUCKETS["pgdr"]), pgbr]
            for t in tools:
                t.setup()
            result["startup_read_bytes"] = startup_reads(tools[0], pgbr)
            log(f"cold start reads (in every 'read MB'): {result['startup_read_bytes']}")
            rounds = [one_round(ctx, pg, tools, i) for i in range(1, args.rounds + 1)]
            summ = summarize(rounds, ["pgdr", "pgbackrest"], [("pgdr", "pgbackrest")])
            vers["postgresql15"] = pg.psql("show server_version")
            result["pg15"] = {"data_bytes": data, "summary": summ, "rounds": rounds}
            lines += [""] + table(f"PostgreSQL {vers['postgresql15']}, {data / MB:.0f} MB: "
                                  "pgdr vs pgBackRest", summ)
            pg.stop("fast")
        if 18 in parts:
            walcopy = make_pg_dir(ctx.work / "walcopy18")
            pg = new_cluster(ctx, 18, "pg18", {
                "summarize_wal": True, "archive_mode": True,
                "archive_command": f"cp %p {walcopy}/%f.tmp && mv {walcopy}/%f.tmp {walcopy}/%f"})
            clusters.append(pg)
            data = int(pg.psql("select sum(pg_database_size(oid)) from pg_database"))
            tools = [Pgdr(ctx, "pgdr18", pg, BUCKETS["pgdr18"]), Native(ctx, pg)]
            tools[0].setup()
            rounds = [one_round(ctx, pg, tools, i) for i in range(1, args.rounds + 1)]
            summ = summarize(rounds, ["pgdr18", "native"], [("pgdr18", "native")])
            vers["postgresql18"] = pg.psql("show server_version")
            result["pg18"] = {"data_bytes": data, "summary": summ, "rounds": rounds,
                              "native_compression": f"pg_basebackup -Ft -Z "
                                                    f"{args.native_compress} -X fetch"}
            lines += [""] + table(f"PostgreSQL {vers['postgresql18']}, {data / MB:.0f} MB: "
                                  f"pgdr vs pg_basebackup --incremental (-Ft -Z "
                                  f"{args.native_compress}) + pg_combinebackup", summ)
            pg.stop("fast")
        text = "\n".join(lines)
        print()
        print(text)
        result["load_end"] = load_average()
        result["versions"] = versions(vers.get("postgresql15", ""), **vers)
        result["table"] = text
        write_result(result, args.out, "diff", stamp)
        return 0
    finally:
        tear_down(ctx, sw, clusters)


if __name__ == "__main__":
    sys.exit(main())
