#!/usr/bin/env python3
"""Full backup and restore: pgdr vs pgBackRest vs Barman cloud, in one run.

    bash bench/setup.sh                                  # once, as root (idempotent)
    /work/main/.venv/bin/python bench/run_full.py [--rounds 3] [--scale 50]

Same data (pgbench -i -s SCALE on PostgreSQL 15), same SeaweedFS instance (one bucket per
tool, all over HTTPS), same compression level (zstd 3 for pgdr and pgBackRest; Barman cloud
has no zstd for base backups: lz4), same parallelism (2). The tools alternate within every
round (pgdr, pgBackRest, Barman, then pgdr on a posix repository), after one untimed warm-up
round; medians over the rounds are reported. Caches are dropped before every timed command
when /proc/sys/vm/drop_caches is writable (all cold), else everything runs warm.

--encrypt compares client-side encryption instead (no Barman): pgdr and pgBackRest, each
plain and encrypted (pgdr: encryption_passphrase, AES-256-GCM; pgBackRest: repo1-cipher-type
aes-256-cbc), one bucket each, secrets in 0600 files; the docs' charts are left alone.

Prints a table and writes bench/results/full-<date>-<time>.json (encrypt-... with
--encrypt). See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BARMAN_VENV, BENCH, MB, PGBACKREST, PGDR, REGION, STANZA,  # noqa: E402
                    Metrics, PgCluster, can_drop_caches, chown_pg, compile_engine, drop_caches,
                    du_bytes,
                    free_port, load_average, log, machine_info, make_pg_dir, make_workdir,
                    parse_json_out, pgbackrest_config, pgbackrest_label, run, start_seaweed,
                    timed, versions, wait_archiver_idle, write_private, write_result, tear_down)

PG_VERSION = 15
S3_TOOLS = ("pgdr", "pgbackrest", "barman")
BUCKETS = {"pgdr": "bench-pgdr", "pgbackrest": "bench-pgbackrest", "barman": "bench-barman",
           "pgdr-enc": "bench-pgdr-enc", "pgbackrest-enc": "bench-pgbackrest-enc"}
LABELS = {"pgdr": "pgdr (S3)", "pgbackrest": pgbackrest_label(), "barman": "Barman cloud",
          "pgdr-posix": "pgdr (posix)", "pgdr-enc": "pgdr (S3, aes)",
          "pgbackrest-enc": f"{pgbackrest_label()} aes"}
TOOLS = "pgdr,pgbackrest,barman,pgdr-posix"
ENCRYPT_TOOLS = "pgdr,pgdr-enc,pgbackrest,pgbackrest-enc"
# ratios A/B reported when both ran
PAIRS = (("pgdr", "pgbackrest"), ("pgdr", "barman"), ("pgdr-enc", "pgdr"),
         ("pgdr-enc", "pgbackrest-enc"), ("pgbackrest-enc", "pgbackrest"))

# --------------------------------------------------------------------------- tools
class Tool:
    name = ""
    needs_recovery_conf = False  # restored data carries no recovery settings of its own

    def __init__(self, ctx: "Ctx"):
        self.ctx = ctx

    def setup(self) -> None: ...
    def backup(self, name: str) -> dict: ...
    def restore(self, backup_id: str, target: Path) -> dict: ...

    def stored(self) -> tuple[int, int]:
        return self.ctx.sw.usage(BUCKETS[self.name])

    def requests(self) -> int | None:
        return self.ctx.metrics.requests(BUCKETS[self.name])


class PgBackRest(Tool):
    name = "pgbackrest"

    def __init__(self, ctx, encrypt: bool = False):
        super().__init__(ctx)
        self.name = "pgbackrest-enc" if encrypt else "pgbackrest"
        self.dir = make_pg_dir(ctx.work / self.name)
        cipher = (f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={ctx.passphrase}\n"
                  if encrypt else "")
        self.conf = pgbackrest_config(ctx, self.dir, BUCKETS[self.name], ctx.pg,
                                      before=f"repo1-retention-full=9999\n{cipher}",
                                      after="start-fast=y\narchive-check=y\n")

    def base(self) -> list:
        return [PGBACKREST, f"--config={self.conf}", f"--stanza={STANZA}"]

    def setup(self) -> None:
        run(self.base() + ["stanza-create"])
        run(self.base() + ["check"])

    def backup(self, name: str) -> dict:
        r = timed(self.base() + ["--type=full", "backup"])
        info = json.loads(run(self.base() + ["--output=json", "info"]).stdout)
        r["id"] = info[0]["backup"][-1]["label"]
        return r

    def restore(self, backup_id: str, target: Path) -> dict:
        # --type=immediate: recovery stops as soon as the backup is consistent (WAL from this
        # stanza's archive via archive-get); only the download+write is timed
        return timed(self.base() + [f"--pg1-path={target}", f"--set={backup_id}",
                                    "--type=immediate", "--target-action=promote", "restore"],
                     sync_after=True)


class Barman(Tool):
    name = "barman"
    needs_recovery_conf = True

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}
        env.update({"AWS_ACCESS_KEY_ID": self.ctx.sw.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.ctx.sw.secret_key,
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_CA_BUNDLE": str(self.ctx.ca_bundle)})
        return env

    def common(self) -> list:
        return ["--cloud-provider", "aws-s3", "--endpoint-url", self.ctx.sw.https_endpoint,
                "--addressing-style", "path"]

    @property
    def url(self) -> str:
        return f"s3://{BUCKETS['barman']}/barman"

    def bin(self, name: str) -> str:
        return str(BARMAN_VENV / "bin" / name)

    def setup(self) -> None:
        run([self.bin("barman-cloud-backup"), "-t", *self.common(), self.url, STANZA],
            env=self.env())

    def backup(self, name: str) -> dict:
        r = timed([self.bin("barman-cloud-backup"), *self.common(), "--lz4",
                   "-J", self.ctx.args.workers, "--immediate-checkpoint",
                   "-h", self.ctx.pg.socket_dir, "-p", self.ctx.pg.port, "-U", "postgres",
                   "-n", name, self.url, STANZA], env=self.env())
        listing = json.loads(run([self.bin("barman-cloud-backup-list"), *self.common(),
                                  "--format", "json", self.url, STANZA],
                                 env=self.env()).stdout)
        ids = [b["backup_id"] for b in listing.get("backups_list", [])
               if b.get("backup_name") == name]
        if not ids:
            raise RuntimeError(f"barman backup {name} not listed: {listing}")
        r["id"] = ids[-1]
        return r

    def restore(self, backup_id: str, target: Path) -> dict:
        return timed([self.bin("barman-cloud-restore"), *self.common(), self.url, STANZA,
                      backup_id, target], env=self.env(), sync_after=True)


class Pgdr(Tool):
    name = "pgdr"

    def __init__(self, ctx, posix: bool = False, encrypt: bool = False):
        super().__init__(ctx)
        self.posix = posix
        self.name = "pgdr-posix" if posix else "pgdr-enc" if encrypt else "pgdr"
        self.dir = make_pg_dir(ctx.work / self.name)
        self.conf = self.dir / "pgdr.ini"
        self.creds = self.dir / "credentials.ini"
        a = ctx.args
        repo = (f"repo_type = posix\nrepo_path = {make_pg_dir(self.dir / 'repo')}\n" if posix
                else f"repo_type = s3\ns3_bucket = {BUCKETS[self.name]}\n"
                     f"s3_endpoint = {ctx.pgdr_endpoint}\ns3_region = {REGION}\n")
        if not posix and ctx.pgdr_endpoint.startswith("https"):
            repo += f"s3_ca_bundle = {ctx.ca_bundle}\n"
        cfg = (f"[pgdr]\ncluster = bench\n{repo}pg_host = 127.0.0.1\npg_port = {ctx.pg.port}\n"
               f"pg_user = postgres\npg_data = {ctx.pg.datadir}\ncompression = zstd\n"
               f"compression_level = {a.level}\nworkers = {a.workers}\n"
               "fast_checkpoint = true\n")
        write_private(self.conf, cfg)
        write_private(self.creds, f"[pgdr]\ns3_access_key = {ctx.sw.access_key}\n"
                                  f"s3_secret_key = {ctx.sw.secret_key}\n"
                      + (f"encryption_passphrase = {ctx.passphrase}\n" if encrypt else ""))

    def env(self) -> dict:
        return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}

    def cmd(self, command: str) -> list:
        return [PGDR, command, "--config", self.conf, "--credentials", self.creds, "--json"]

    def setup(self) -> None:
        run(self.cmd("info"), env=self.env())

    def backup(self, name: str) -> dict:
        r = timed(self.cmd("backup"), env=self.env())
        out = parse_json_out(r["stdout"]) or {}
        b = out.get("backup", out) if isinstance(out, dict) else {}
        r["id"] = str(b.get("id") or b.get("backup_id") or "")
        r["tool_report"] = {k: b.get(k) for k in ("id", "size", "stored_size", "duration")
                            if k in b}
        if not r["id"]:
            raise RuntimeError(f"pgdr backup printed no id: {r['stdout'][-2000:]}")
        return r

    def restore(self, backup_id: str, target: Path) -> dict:
        # the restored directory holds the backup's WAL in pg_wal and its backup_label:
        # it starts to consistency by itself (no archive needed)
        return timed(self.cmd("restore") + ["--target", target, "--backup-id", backup_id],
                     env=self.env(), sync_after=True)

    def stored(self) -> tuple[int, int]:
        if self.posix:
            repo = self.dir / "repo"
            n = sum(len(f) for _, _, f in os.walk(repo))
            return du_bytes(repo), n
        return super().stored()

    def requests(self) -> int | None:
        return None if self.posix else super().requests()


# --------------------------------------------------------------------------- the run
class Ctx:
    pass


def verify_restore(ctx: Ctx, tool: Tool, target: Path) -> dict:
    """Start the restored cluster on a free port and check it reaches a consistent,
    promoted state with the source's rows. Not timed in the results (recovery_seconds is
    reported for information)."""
    auto = target / "postgresql.auto.conf"
    if tool.needs_recovery_conf:
        # the same WAL for every tool: the local copy archive_command keeps
        with open(auto, "a") as f:
            f.write(f"\n# bench verification\nrestore_command = 'cp {ctx.walcopy}/%f \"%p\"'\n"
                    "recovery_target = 'immediate'\nrecovery_target_action = 'promote'\n")
        (target / "recovery.signal").touch()
        chown_pg(auto, 0o600)
        chown_pg(target / "recovery.signal", 0o600)
    port = free_port()
    sock = make_pg_dir(ctx.work / f"verify-{tool.name}.sock", 0o755)
    logf = ctx.work / f"verify-{tool.name}.log"
    logf.write_text("")
    chown_pg(logf, 0o644)
    opts = (f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock} "
            "-c archive_mode=off")
    bindir = ctx.pg.bindir
    t0 = time.monotonic()
    def log_tail() -> str:
        return logf.read_text(errors="replace")[-3000:] if logf.exists() else "(no log)"

    st = run([bindir / "pg_ctl", "-D", target, "-l", logf, "-o", opts, "-w", "-t", "300",
              "start"], check=False)
    if st.returncode != 0:
        raise RuntimeError(f"{tool.name}: restored cluster did not start:\n{log_tail()}")
    out = {"ok": False}
    try:
        psql = [bindir / "psql", "-XAt", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                "-d", "postgres", "-c"]
        deadline = time.monotonic() + 300
        while True:
            r = run(psql + ["select pg_is_in_recovery()"], check=False)
            if r.returncode == 0 and r.stdout.strip() == "f":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tool.name}: restored cluster not promoted:\n{log_tail()}")
            time.sleep(0.5)
        out["recovery_seconds"] = round(time.monotonic() - t0, 2)
        got = run(psql + [ctx.check_sql]).stdout.strip()
        out["check"] = got
        out["ok"] = got == ctx.check_expected
        if not out["ok"]:
            raise RuntimeError(f"{tool.name}: restored data differs: {got} != "
                               f"{ctx.check_expected}")
    finally:
        run([bindir / "pg_ctl", "-D", target, "-m", "immediate", "-w", "stop"], check=False)
    return out


def one_round(ctx: Ctx, tools: list[Tool], rnd: int, timed_round: bool) -> dict:
    tag = f"r{rnd}" if timed_round else "warmup"
    log(f"round {tag}")
    res = {t.name: {} for t in tools}
    for t in tools:  # backups, alternating tools
        before_bytes, before_n = t.stored()
        before_req = t.requests()
        wait_archiver_idle(ctx.pg.datadir)
        drop_caches(ctx.drop)
        b = t.backup(f"bench-{tag}")
        after_bytes, after_n = t.stored()
        after_req = t.requests()
        res[t.name]["backup"] = {
            "id": b["id"], "seconds": round(b["seconds"], 3), "cpu_seconds": round(b["cpu_seconds"], 2),
            "peak_rss_bytes": b["peak_rss_bytes"],
            "stored_bytes": after_bytes - before_bytes, "objects": after_n - before_n,
            "requests": (after_req - before_req) if after_req is not None else None,
            **({"tool_report": b["tool_report"]} if "tool_report" in b else {})}
        log(f"  backup  {t.name:14s} {b['seconds']:7.2f} s  cpu {b['cpu_seconds']:6.2f} s  "
            f"stored {(after_bytes - before_bytes) / MB:8.1f} MB  id {b['id']}")
    for t in tools:  # restores, same order
        target = ctx.work / f"restore-{t.name}"
        shutil.rmtree(target, ignore_errors=True)
        make_pg_dir(target)
        before_req = t.requests()
        wait_archiver_idle(ctx.pg.datadir)
        drop_caches(ctx.drop)
        r = t.restore(res[t.name]["backup"]["id"], target)
        after_req = t.requests()
        res[t.name]["restore"] = {
            "seconds": round(r["seconds"], 3), "command_seconds": round(r["command_seconds"], 3),
            "cpu_seconds": round(r["cpu_seconds"], 2), "restored_bytes": du_bytes(target),
            "peak_rss_bytes": r["peak_rss_bytes"],
            "requests": (after_req - before_req) if after_req is not None else None}
        log(f"  restore {t.name:14s} {r['seconds']:7.2f} s  (command {r['command_seconds']:.2f} s)"
            f"  cpu {r['cpu_seconds']:6.2f} s")
    for t in tools:  # verification, untimed
        target = ctx.work / f"restore-{t.name}"
        v = verify_restore(ctx, t, target)
        res[t.name]["verify"] = v
        log(f"  verify  {t.name:14s} ok={v['ok']}  recovery {v.get('recovery_seconds')} s")
        shutil.rmtree(target, ignore_errors=True)
    return res


def summarize(ctx: Ctx, rounds: list[dict], names: list[str]) -> dict:
    data_mb = ctx.data_bytes / MB
    summary = {}
    for n in names:
        rs = [r[n] for r in rounds if n in r]
        if not rs:
            continue

        def med(kind, key):
            vals = [x[kind][key] for x in rs if x[kind].get(key) is not None]
            return statistics.median(vals) if vals else None

        b_s, r_s = med("backup", "seconds"), med("restore", "seconds")
        summary[n] = {
            "backup_seconds": b_s, "backup_mb_s": data_mb / b_s,
            "backup_cpu_seconds": med("backup", "cpu_seconds"),
            "stored_bytes": med("backup", "stored_bytes"),
            "backup_requests": med("backup", "requests"),
            "restore_seconds": r_s, "restore_mb_s": data_mb / r_s,
            "restore_command_seconds": med("restore", "command_seconds"),
            "restore_cpu_seconds": med("restore", "cpu_seconds"),
            "restore_requests": med("restore", "requests"),
            # the largest over the rounds: the memory to provision, not a typical value
            "backup_peak_rss_bytes": max(x["backup"]["peak_rss_bytes"] for x in rs),
            "restore_peak_rss_bytes": max(x["restore"]["peak_rss_bytes"] for x in rs),
            "backup_seconds_all": [x["backup"]["seconds"] for x in rs],
            "restore_seconds_all": [x["restore"]["seconds"] for x in rs],
            "verified": all(x["verify"]["ok"] for x in rs),
        }
    ratios = {}
    for a, b in PAIRS:
        if a in summary and b in summary:
            p, o = summary[a], summary[b]
            ratios[f"{a}/{b}"] = {
                "backup_throughput": p["backup_mb_s"] / o["backup_mb_s"],
                "stored_size": p["stored_bytes"] / o["stored_bytes"],
                "restore_time": p["restore_seconds"] / o["restore_seconds"]}
    return {"tools": summary, "ratios": ratios}


def print_table(ctx: Ctx, summ: dict) -> str:
    lines = []
    w = lines.append
    w(f"data: pgbench -s {ctx.args.scale}, {ctx.data_bytes / MB:.0f} MB (sum of "
      f"pg_database_size); {ctx.args.rounds} rounds, medians; caches "
      f"{'dropped before each timed command' if ctx.drop else 'warm'}")
    lw = max(16, *(len(LABELS.get(n, n)) for n in summ["tools"]))
    hdr = (f"{'tool':{lw}s} {'backup s':>9s} {'MB/s':>7s} {'cpu s':>6s} {'stored MB':>10s} "
           f"{'req':>6s} {'restore s':>10s} {'MB/s':>7s} {'cpu s':>6s} {'req':>6s} "
           f"{'RSS MB b/r':>11s} ok")
    w(hdr)
    w("-" * len(hdr))

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    for n, s in summ["tools"].items():
        w(f"{LABELS.get(n, n):{lw}s} {s['backup_seconds']:9.2f} {s['backup_mb_s']:7.1f} "
          f"{f(s['backup_cpu_seconds'], '6.1f'):>6s} {s['stored_bytes'] / MB:10.1f} "
          f"{f(s['backup_requests'], '6.0f'):>6s} {s['restore_seconds']:10.2f} "
          f"{s['restore_mb_s']:7.1f} {f(s['restore_cpu_seconds'], '6.1f'):>6s} "
          f"{f(s['restore_requests'], '6.0f'):>6s} "
          f"{s['backup_peak_rss_bytes'] / MB:5.0f}/{s['restore_peak_rss_bytes'] / MB:<5.0f} "
          f"{'yes' if s['verified'] else 'NO'}")
    for k, r in summ["ratios"].items():
        w(f"{k}: backup throughput x{r['backup_throughput']:.2f}, stored size "
          f"x{r['stored_size']:.2f}, restore time x{r['restore_time']:.2f}")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50, ~750 MB)")
    ap.add_argument("--workers", type=int, default=2, help="parallelism of every tool (2)")
    ap.add_argument("--level", type=int, default=3, help="zstd level, pgdr and pgBackRest (3)")
    ap.add_argument("--tools", help=f"comma list, in the order they alternate (default "
                                     f"{TOOLS}; with --encrypt {ENCRYPT_TOOLS})")
    ap.add_argument("--encrypt", action="store_true",
                    help="client-side encryption: each tool plain and encrypted, no Barman")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed first round")
    ap.add_argument("--warm", action="store_true", help="do not drop caches")
    ap.add_argument("--pgdr-http", action="store_true",
                    help="pgdr over plain HTTP instead of HTTPS (the others need HTTPS)")
    ap.add_argument("--skip-setup", action="store_true", help="do not run bench/setup.sh")
    ap.add_argument("--workdir", type=Path, help="default bench/.cache/run-<time>, removed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/full-*.json)")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("run_full.py: run as root (runuser, drop_caches, apt)", file=sys.stderr)
        return 1
    tools_arg = args.tools or (ENCRYPT_TOOLS if args.encrypt else TOOLS)
    names = [n.strip() for n in tools_arg.split(",") if n.strip()]
    compile_engine()  # as the agent role does on nodes
    if not args.skip_setup:
        subprocess.run(["bash", str(BENCH / "setup.sh")], check=True)
    if any(n.startswith("pgdr") for n in names) and not PGDR.exists():
        print(f"run_full.py: {PGDR} missing; running without pgdr", file=sys.stderr)
        names = [n for n in names if not n.startswith("pgdr")]

    stamp = dt.datetime.now()
    ctx = Ctx()
    ctx.args = args
    ctx.work = make_workdir(args.workdir, stamp)
    ctx.load_start = load_average()
    ctx.drop = (not args.warm) and can_drop_caches()
    ctx.passphrase = secrets.token_urlsafe(32)  # the encrypted tools' secret, in 0600 files

    sw = None
    pg = None
    try:
        sw = start_seaweed(ctx, [BUCKETS[n] for n in names if n in BUCKETS])
        ctx.metrics = Metrics(sw)
        ctx.pgdr_endpoint = sw.endpoint if args.pgdr_http else sw.https_endpoint

        ctx.walcopy = make_pg_dir(ctx.work / "walcopy")
        pg = PgCluster(PG_VERSION, ctx.work / "pg" / "data",
                       free_port(avoid=set(sw.ports.values())))
        ctx.pg = pg
        (ctx.work / "pg").mkdir(exist_ok=True)
        os.chmod(ctx.work / "pg", 0o755)
        tools: list[Tool] = []
        for n in names:
            tools.append({"pgdr": lambda: Pgdr(ctx), "pgbackrest": lambda: PgBackRest(ctx),
                          "barman": lambda: Barman(ctx),
                          "pgdr-posix": lambda: Pgdr(ctx, posix=True),
                          "pgdr-enc": lambda: Pgdr(ctx, encrypt=True),
                          "pgbackrest-enc": lambda: PgBackRest(ctx, encrypt=True)}[n]())
        # archive_command: every pgBackRest stanza's archive-push (its backups need it, and
        # its `check` wants to see "pgbackrest" in the command) plus a local copy of every
        # segment, from which every other tool's restore verification replays
        copy = (f"cp %p {ctx.walcopy}/%f.tmp && mv {ctx.walcopy}/%f.tmp {ctx.walcopy}/%f")
        archive_command = "".join(f"{PGBACKREST} --config={t.conf} --stanza={STANZA} "
                                  "archive-push %p && " for t in tools
                                  if isinstance(t, PgBackRest)) + copy
        pg.init({"archive_mode": True, "archive_command": archive_command,
                 "max_wal_size": "1GB", "checkpoint_timeout": "30min"})
        pg.start()
        # the tools first (pgBackRest's stanza): the load's WAL is then archived as it is
        # written; created after a large load, pgBackRest's check timed out behind a backlog
        # of segments whose archive-push had failed for want of a stanza
        for t in tools:
            t.setup()
        log(f"pgbench -i -s {args.scale}")
        pg.pgbench("-i", "-q", "-s", str(args.scale), "postgres")
        pg.psql("CHECKPOINT")
        wait_archiver_idle(pg.datadir, timeout=3600)
        ctx.data_bytes = int(pg.psql("select sum(pg_database_size(oid)) from pg_database"))
        ctx.pgdata_bytes = du_bytes(pg.datadir)
        ctx.check_sql = "select count(*) || ':' || sum(abalance) from pgbench_accounts"
        ctx.check_expected = pg.psql(ctx.check_sql)
        log(f"data {ctx.data_bytes / MB:.0f} MB (PGDATA {ctx.pgdata_bytes / MB:.0f} MB)")

        if not args.no_warmup:
            one_round(ctx, tools, 0, timed_round=False)
        rounds = [one_round(ctx, tools, i, timed_round=True) for i in range(1, args.rounds + 1)]
        summ = summarize(ctx, rounds, names)
        print()
        table = print_table(ctx, summ)

        result = {
            "date": stamp.isoformat(timespec="seconds"),
            "machine": machine_info(),
            "load": {"start": ctx.load_start, "end": load_average()},
            "versions": versions(pg.psql("show server_version"), "barman-cloud-backup"),
            "settings": {"scale": args.scale, "rounds": args.rounds, "workers": args.workers,
                         "zstd_level": args.level, "barman_compression": "lz4",
                         "caches": "dropped before each timed command" if ctx.drop else "warm",
                         "warmup_round": not args.no_warmup,
                         "transport": {"pgbackrest": "https", "barman": "https",
                                       "pgdr": "http" if args.pgdr_http else "https"},
                         "order": names,
                         **({"encryption": {"pgdr-enc": "aes-256-gcm (encryption_passphrase)",
                                            "pgbackrest-enc": "aes-256-cbc"}}
                            if args.encrypt else {})},
            "data_bytes": ctx.data_bytes, "pgdata_bytes": ctx.pgdata_bytes,
            "summary": summ, "rounds": rounds, "table": table,
        }
        write_result(result, args.out, "encrypt" if args.encrypt else "full", stamp)
        return 0
    finally:
        tear_down(ctx, sw, [pg])


if __name__ == "__main__":
    sys.exit(main())
