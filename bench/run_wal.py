#!/usr/bin/env python3
"""WAL archiving and WAL fetch: pgdr vs pgBackRest vs Barman cloud, in one run.

    bash bench/setup.sh                                  # once, as root (idempotent)
    /work/main/.venv/bin/python bench/run_wal.py [--rounds 2] [--duration 60]

Part 1, archiving under load. One PostgreSQL 15 cluster (pgbench -s SCALE), one SeaweedFS
(HTTPS for every tool). For each tool in turn, archive_command is switched to that tool
(ALTER SYSTEM + reload, after the previous tool has drained), a CHECKPOINT is taken (every run
starts in the same full-page-write state) and `pgbench -c 4 -j 2 -T DURATION` runs at full
speed (synchronous_commit=off). Every second the script samples pg_wal/archive_status: the
number of .ready files (segments pending) and the age of the oldest one (seconds of lag),
plus pg_stat_archiver.archived_count and the WAL position. After pgbench stops it waits until
no .ready remains (drain time). Tools alternate; the order is reversed on every other round.

  pgdr:       pgdr wal-push, spool_dir set (async), workers=2, zstd level 3
  pgBackRest: archive-push, archive-async=y, process-max=2, spool-path, zst level 3
  Barman:     barman-cloud-wal-archive (synchronous by design), --zstd level 3

Part 2, WAL fetch during a real recovery. A pg_basebackup (-X fetch) is taken before part 1
and wal_keep_size keeps every segment written afterwards in pg_wal (topped up with more of
the same pgbench, not archived, when part 1 wrote fewer than N). The first N segments
from the backup's start are uploaded, untimed and in parallel, to a separate archive of each
tool (pgdr cluster "corpus", Barman server "corpus"). Then, alternating the tools, the base
backup is copied to a fresh directory, restore_command is set to the tool's fetch command,
and the server is started with recovery.signal; the time from start until it has replayed
the whole archive and promoted (pg_is_in_recovery() = false) is measured. PostgreSQL calls
restore_command sequentially, one segment at a time, as in production.

  pgdr:           pgdr wal-fetch %f %p, spool_dir set, prefetch=16, workers=2
  Barman:         barman-cloud-wal-restore %f %p (its default: no prefetch)
  Barman -p 2:    barman-cloud-wal-restore -p 2 --spool-dir (its own prefetch; optional,
                  --fetch-tools pgdr,barman,barman-p2,local)
  local:          cp from a local directory: restore_command's cheapest form
  pg_wal:         the same segments already sitting in the copy's pg_wal, restore_command
                  `false` (the physical limit: PostgreSQL's own single-threaded redo, no
                  fetch at all); the ratio "recovery_time pgdr/pg_wal" is issue 15's
                  replay-bound target (<= 1.15x)

Prints a table and writes bench/results/wal-<date>-<time>.json. See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BARMAN_VENV, BENCH, MB, PGBACKREST, PGDR, REGION, STANZA,  # noqa: E402
                    PgCluster, can_drop_caches, chown_pg, compile_engine, drop_caches,
                    free_port,
                    load_average, log, machine_info, make_pg_dir, make_workdir,
                    pgbackrest_config, pgbackrest_label, run, start_seaweed, versions, write_private,
                    write_result, tear_down)

PG_VERSION = 15
SEG = 16 * 1024 * 1024
BUCKETS = {"pgdr": "wal-pgdr", "pgbackrest": "wal-pgbackrest", "barman": "wal-barman"}
LABELS = {"pgdr": "pgdr (async, 2 workers)", "pgbackrest": pgbackrest_label() + " (async, 2)",
          "barman": "Barman cloud (sync)", "barman-p2": "Barman cloud -p 2"}
FETCH_LABELS = {"pgdr": "pgdr wal-fetch (prefetch 16, 2 workers)",
                "local": "cp from a local directory",
                "pg_wal": "already in pg_wal (replay only, floor)",
                "barman": "barman-cloud-wal-restore", "barman-p2": "barman-cloud-wal-restore -p 2"}


class Ctx:
    pass


def quote(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


# --------------------------------------------------------------------------- tools
class Pgdr:
    name = "pgdr"

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = make_pg_dir(ctx.work / "pgdr")
        self.spool = make_pg_dir(self.dir / "spool")
        self.creds = self.dir / "credentials.ini"
        write_private(self.creds, f"[pgdr]\ns3_access_key = {ctx.sw.access_key}\n"
                                  f"s3_secret_key = {ctx.sw.secret_key}\n")
        self.conf = self.config("archive.ini", "bench", spool=True)
        self.corpus_push_conf = self.config("corpus-push.ini", "corpus", spool=False)
        self.corpus_fetch_conf = self.config("corpus-fetch.ini", "corpus", spool=True)

    def config(self, fname: str, cluster: str, spool: bool) -> Path:
        a = self.ctx.args
        text = (f"[pgdr]\ncluster = {cluster}\nrepo_type = s3\ns3_bucket = {BUCKETS['pgdr']}\n"
                f"s3_endpoint = {self.ctx.sw.https_endpoint}\ns3_region = {REGION}\n"
                f"s3_addressing = path\ns3_ca_bundle = {self.ctx.ca_bundle}\n"
                f"compression = zstd\ncompression_level = {a.level}\nworkers = {a.workers}\n"
                f"prefetch = {a.prefetch}\n")
        if spool:
            text += f"spool_dir = {self.spool}\n"
        path = self.dir / fname
        write_private(path, text)
        return path

    def base(self, conf: Path) -> str:
        return f"{PGDR} {{cmd}} --config {conf} --credentials {self.creds}"

    def archive_command(self) -> str:
        return self.base(self.conf).format(cmd="wal-push") + " %p"

    def push_corpus_cmd(self, path: Path) -> list:
        return [PGDR, "wal-push", "--config", self.corpus_push_conf, "--credentials",
                self.creds, path]

    def restore_command(self) -> str:
        return self.base(self.corpus_fetch_conf).format(cmd="wal-fetch") + " %f %p"

    def prepare_fetch(self) -> None:
        shutil.rmtree(self.spool / "fetch", ignore_errors=True)


class PgBackRest:
    name = "pgbackrest"

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = make_pg_dir(ctx.work / "pgbackrest")
        self.conf = pgbackrest_config(ctx, self.dir, BUCKETS["pgbackrest"], ctx.pg,
                                      after="archive-async=y\n")

    def setup(self) -> None:
        run([PGBACKREST, f"--config={self.conf}", f"--stanza={STANZA}", "stanza-create"])

    def archive_command(self) -> str:
        return f"{PGBACKREST} --config={self.conf} --stanza={STANZA} archive-push %p"


class Barman:
    name = "barman"

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = make_pg_dir(ctx.work / "barman")
        env = self.dir / "s3.env"
        write_private(env, f"export AWS_ACCESS_KEY_ID={ctx.sw.access_key}\n"
                           f"export AWS_SECRET_ACCESS_KEY={ctx.sw.secret_key}\n"
                           f"export AWS_DEFAULT_REGION={REGION}\n"
                           f"export AWS_CA_BUNDLE={ctx.ca_bundle}\n")
        common = (f"--cloud-provider aws-s3 --endpoint-url {ctx.sw.https_endpoint} "
                  "--addressing-style path")
        url = f"s3://{BUCKETS['barman']}/barman"
        # wrappers: the keys come from a 0600 file, never from postgresql.conf
        self.archive = self.wrapper("archive.sh", f"{BARMAN_VENV}/bin/barman-cloud-wal-archive "
                                    f"{common} --zstd --compression-level {ctx.args.level} "
                                    f"{url} \"$@\"", env)
        self.restore = self.wrapper("restore.sh", f"{BARMAN_VENV}/bin/barman-cloud-wal-restore "
                                    f"{common} {url} \"$@\"", env)
        self.spool = make_pg_dir(self.dir / "spool")
        self.restore_p = self.wrapper(
            "restore-p.sh", f"{BARMAN_VENV}/bin/barman-cloud-wal-restore {common} "
            f"-p {ctx.args.workers} --spool-dir {self.spool} {url} \"$@\"", env)

    def wrapper(self, name: str, cmd: str, env: Path) -> Path:
        path = self.dir / name
        write_private(path, f"#!/bin/sh\n. {env}\nexec {cmd}\n")
        chown_pg(path, 0o700)
        return path

    def setup(self) -> None:
        pass  # -t insists on a valid WAL path; a failing push shows in failed_count

    def archive_command(self) -> str:
        return f"{self.archive} {STANZA} %p"

    def push_corpus_cmd(self, path: Path) -> list:
        return [self.archive, "corpus", path]

    def restore_command(self, parallel: bool = False) -> str:
        return f"{self.restore_p if parallel else self.restore} corpus %f %p"

    def prepare_fetch(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)
        make_pg_dir(self.spool)


# --------------------------------------------------------------------------- sampling
class Sampler(threading.Thread):
    """Every second: .ready count, age of the oldest .ready, archived/failed counts and the
    insert LSN (one persistent psql session, so sampling costs almost nothing)."""

    def __init__(self, pg: PgCluster, interval: float = 1.0):
        super().__init__(daemon=True)
        self.pg, self.interval = pg, interval
        self.status = pg.datadir / "pg_wal" / "archive_status"
        self.samples: list[dict] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()
        self.psql = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(pg.bindir / "psql"), "-XAtq", "-h",
             "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", "postgres"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/", bufsize=1)

    def query(self) -> tuple[int, int, int]:
        self.psql.stdin.write("select archived_count || ' ' || failed_count || ' ' || "
                              "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn) "
                              "from pg_stat_archiver;\n")
        self.psql.stdin.flush()
        a, f, lsn = self.psql.stdout.readline().split()
        return int(a), int(f), int(float(lsn))

    def sample(self) -> dict:
        now_wall = time.time()
        ready = []
        for e in os.scandir(self.status):
            if e.name.endswith(".ready") and not e.name.endswith(".history.ready"):
                try:
                    ready.append(e.stat().st_mtime)
                except FileNotFoundError:
                    pass
        archived, failed, lsn = self.query()
        return {"t": round(time.monotonic() - self.t0, 2), "pending": len(ready),
                "oldest_age": round(now_wall - min(ready), 2) if ready else 0.0,
                "archived": archived, "failed": failed, "lsn": lsn}

    def run(self) -> None:
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            self.samples.append(self.sample())
            nxt += self.interval
            self.stop_event.wait(max(0.0, nxt - time.monotonic()))

    def finish(self) -> list[dict]:
        self.stop_event.set()
        self.join()
        self.samples.append(self.sample())
        self.psql.stdin.close()
        self.psql.wait(timeout=10)
        return self.samples


def set_archive_command(pg: PgCluster, cmd: str) -> None:
    pg.psql(f"ALTER SYSTEM SET archive_command = {quote(cmd)}")
    pg.psql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while pg.psql("show archive_command") != cmd:
        if time.monotonic() > deadline:
            raise RuntimeError("archive_command did not change")
        time.sleep(0.1)


def wait_drained(pg: PgCluster, timeout: float) -> float:
    status = pg.datadir / "pg_wal" / "archive_status"
    t0 = time.monotonic()
    while any(n.endswith(".ready") for n in os.listdir(status)):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"archiving not drained after {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def background_archivers(ctx: Ctx) -> list[str]:
    """Background push workers still alive: pgdr's (holds spool/archive/*/push.lock) and
    pgBackRest's async archive-push process. Both push every .ready file they see, not only
    their own tool's, so the next tool's run must not start while one lives on."""
    import fcntl
    alive = []
    for lock in (ctx.work / "pgdr" / "spool" / "archive").glob("*/push.lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            alive.append("pgdr push worker")
        finally:
            os.close(fd)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"archive-push:async" in cmd and str(ctx.work).encode() in cmd:
            alive.append(f"pgbackrest async {pid}")
    return alive


def wait_background_archivers(ctx: Ctx, timeout: float = 60) -> float:
    t0 = time.monotonic()
    while background_archivers(ctx):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"background archivers still alive: {background_archivers(ctx)}")
        time.sleep(0.2)
    return time.monotonic() - t0


def archive_run(ctx: Ctx, tool, rnd: int) -> dict:
    pg, a = ctx.pg, ctx.args
    wait_drained(pg, 900)
    # the previous tool's background worker must be gone (pgdr's idles archive_idle=5 s)
    waited = wait_background_archivers(ctx)
    if waited > 0.5:
        log(f"  waited {waited:.1f} s for the previous tool's background worker to exit")
    set_archive_command(pg, tool.archive_command())
    pg.psql("CHECKPOINT")
    # switch to a fresh segment so the previous tool's partial segment is not ours
    pg.psql("SELECT pg_switch_wal()")
    wait_drained(pg, 300)
    log(f"  archive {tool.name:10s} pgbench -T {a.duration}")
    s = Sampler(pg)
    a0 = s.query()
    s.start()
    t_start = time.monotonic()
    out = pg.pgbench("-n", "-c", str(a.clients), "-j", str(a.threads), "-T", str(a.duration),
                     "postgres")
    t_load = time.monotonic() - t_start
    load_samples = len(s.samples)
    drain = wait_drained(pg, 1800)
    t_total = time.monotonic() - t_start
    samples = s.finish()
    a1 = samples[-1]
    tps = next((float(line.split("=")[1].split()[0]) for line in out.splitlines()
                if line.startswith("tps")), None)
    load = samples[:load_samples]
    end_load = load[-1]
    wal_bytes = end_load["lsn"] - a0[2]
    archived_total = a1["archived"] - a0[0]
    archived_load = end_load["archived"] - a0[0]
    pend = [x["pending"] for x in load]
    age = [x["oldest_age"] for x in load]
    res = {
        "round": rnd, "tps": tps, "load_seconds": round(t_load, 2),
        "wal_bytes": wal_bytes, "wal_mb_s": round(wal_bytes / MB / t_load, 2),
        "wal_segments_s": round(wal_bytes / SEG / t_load, 3),
        "archived_during_load": archived_load,
        "archived_total": archived_total,
        "failed": a1["failed"] - a0[1],
        "push_segments_s_load": round(archived_load / t_load, 3),
        "push_segments_s_overall": round(archived_total / t_total, 3),
        "drain_seconds": round(drain, 2),
        "pending_median": statistics.median(pend), "pending_max": max(pend),
        "pending_p95": sorted(pend)[int(0.95 * (len(pend) - 1))],
        "lag_seconds_median": statistics.median(age), "lag_seconds_max": max(age),
        "pending_at_load_end": end_load["pending"],
        "samples": samples,
    }
    log(f"  archive {tool.name:10s} wal {res['wal_mb_s']:.1f} MB/s ({res['wal_segments_s']:.2f} "
        f"seg/s), tps {tps}, pushed {res['push_segments_s_load']:.2f} seg/s under load, "
        f"pending med {res['pending_median']} max {res['pending_max']}, lag med "
        f"{res['lag_seconds_median']} s max {res['lag_seconds_max']} s, drain {drain:.1f} s")
    return res


# --------------------------------------------------------------------------- fetch
def seg_name(tli: int, segno: int) -> str:
    per = 0x100000000 // SEG
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def seg_no(name: str) -> int:
    return int(name[8:16], 16) * (0x100000000 // SEG) + int(name[16:24], 16)


def upload_corpus(ctx: Ctx, tools: dict, names: list[str]) -> dict:
    """Untimed: the same N segments into each tool's 'corpus' archive, 4 in parallel."""
    out = {}
    for t in (tools[n] for n in ("pgdr", "barman") if n in ctx.fetch_uploads):
        t0 = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}

        def one(n, t=t, env=env):
            run(t.push_corpus_cmd(ctx.pg.datadir / "pg_wal" / n), env=env)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, names))
        out[t.name] = {"seconds": round(time.monotonic() - t0, 1),
                       "stored_bytes": ctx.sw.usage(BUCKETS[t.name], "barman/corpus"
                                                    if t.name == "barman" else "")[0]}
        log(f"  corpus uploaded to {t.name}: {len(names)} segments, {out[t.name]['seconds']} s")
    return out


def recovery_run(ctx: Ctx, variant: str, tools: dict, rnd: int) -> dict:
    target = ctx.work / f"recover-{variant}"
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-a", str(ctx.base), str(target)], check=True)
    chown_pg(target)  # 0700, or postgres refuses to start
    if variant == "pgdr":
        tools["pgdr"].prepare_fetch()
        rc = tools["pgdr"].restore_command()
    elif variant == "local":
        rc = f"cp {ctx.local_corpus}/%f %p"
    elif variant == "pg_wal":
        # untimed: the WAL is where crash recovery would find it; restore_command finds
        # nothing, so recovery reads pg_wal (the physical limit of replay)
        for n in ctx.corpus:
            shutil.copy(ctx.local_corpus / n, target / "pg_wal" / n)
        run(["chown", "-R", "postgres:postgres", target / "pg_wal"], postgres=False)
        rc = "false"
    else:
        tools["barman"].prepare_fetch()
        rc = tools["barman"].restore_command(parallel=variant == "barman-p2")
    port = free_port(avoid=set(ctx.sw.ports.values()) | {ctx.pg.port})
    sock = make_pg_dir(ctx.work / f"rsock-{variant}", 0o755)
    with open(target / "postgresql.auto.conf", "a") as f:
        f.write(f"\n# bench recovery\nrestore_command = {quote(rc)}\n"
                f"port = {port}\nunix_socket_directories = {quote(sock)}\n"
                "archive_mode = off\nrecovery_target_action = promote\n"
                "wal_keep_size = 0\n")
    (target / "recovery.signal").touch()
    chown_pg(target / "recovery.signal", 0o600)
    logf = ctx.work / f"recover-{variant}.log"
    logf.write_text("")
    chown_pg(logf, 0o644)
    bindir = ctx.pg.bindir
    psql = [bindir / "psql", "-XAt", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
            "-d", "postgres", "-c"]
    drop_caches(ctx.drop)
    log(f"  recover {variant:10s} {len(ctx.corpus)} segments")
    t0 = time.monotonic()
    run([bindir / "pg_ctl", "-D", target, "-l", logf, "start"])  # no -w: we poll ourselves
    try:
        deadline = t0 + ctx.args.fetch_timeout
        while True:
            r = run(psql + ["select pg_is_in_recovery()"], check=False)
            if r.returncode == 0 and r.stdout.strip() == "f":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant}: not promoted within {ctx.args.fetch_timeout} "
                                   f"s:\n{logf.read_text()[-3000:]}")
            time.sleep(0.1)
        secs = time.monotonic() - t0
        # replayed everything? the new timeline starts after the last corpus segment
        end_lsn = int(float(run(psql + ["select pg_current_wal_lsn() - '0/0'::pg_lsn"])
                            .stdout.strip()))
        last = seg_no(ctx.corpus[-1])
        ok = end_lsn // SEG >= last
    finally:
        run([bindir / "pg_ctl", "-D", target, "-m", "immediate", "-w", "stop"], check=False)
    # archive recovery asks restore_command for every segment, those in pg_wal included
    fetched = len(ctx.corpus)
    res = {"round": rnd, "seconds": round(secs, 2), "segments": len(ctx.corpus),
           "segments_fetched": fetched, "segments_s": round(fetched / secs, 2),
           "mb_s": round(fetched * SEG / MB / secs, 1), "replayed_to_end": ok,
           "end_segment": seg_name(1, end_lsn // SEG)}
    log(f"  recover {variant:10s} {secs:7.2f} s  {res['segments_s']:.2f} seg/s  "
        f"{res['mb_s']:.1f} MB/s  to end: {ok}")
    if not ok:
        raise RuntimeError(f"{variant}: recovery stopped early at {res['end_segment']}:\n"
                           f"{logf.read_text()[-3000:]}")
    shutil.rmtree(target, ignore_errors=True)
    return res


# --------------------------------------------------------------------------- summary
def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(arch: dict, fetch: dict) -> dict:
    a = {}
    for n, rs in arch.items():
        a[n] = {k: med(rs, k) for k in ("wal_mb_s", "wal_segments_s", "tps",
                                        "push_segments_s_load", "push_segments_s_overall",
                                        "pending_median", "lag_seconds_median",
                                        "drain_seconds", "pending_p95")}
        a[n]["pending_max"] = max(r["pending_max"] for r in rs)
        a[n]["lag_seconds_max"] = max(r["lag_seconds_max"] for r in rs)
        a[n]["failed"] = sum(r["failed"] for r in rs)
    f = {}
    for n, rs in fetch.items():
        f[n] = {k: med(rs, k) for k in ("seconds", "segments_s", "mb_s")}
        f[n]["segments_fetched"] = rs[0]["segments_fetched"]
        f[n]["seconds_all"] = [r["seconds"] for r in rs]
    ratios = {}
    if "pgdr" in a:
        for o in a:
            if o != "pgdr":
                ratios[f"archive pgdr/{o}"] = {
                    "push_segments_s_overall": a["pgdr"]["push_segments_s_overall"]
                    / a[o]["push_segments_s_overall"],
                    "lag_seconds_max": a["pgdr"]["lag_seconds_max"] / a[o]["lag_seconds_max"]
                    if a[o]["lag_seconds_max"] else None,
                    "pending_max": a["pgdr"]["pending_max"] / a[o]["pending_max"]
                    if a[o]["pending_max"] else None}
    if "pgdr" in f:
        for o in f:
            if o != "pgdr":
                ratios[f"fetch pgdr/{o}"] = {"throughput": f["pgdr"]["segments_s"]
                                             / f[o]["segments_s"],
                                             "recovery_time": f["pgdr"]["seconds"]
                                             / f[o]["seconds"]}
    return {"archive": a, "fetch": f, "ratios": ratios}


def print_table(ctx: Ctx, summ: dict) -> str:
    lines = []
    w = lines.append
    a = ctx.args
    w(f"archiving: pgbench -s {a.scale}, -c {a.clients} -j {a.threads} -T {a.duration}, "
      f"synchronous_commit={a.synchronous_commit}; {a.rounds} round(s), medians (max: over all "
      "rounds)")
    hdr = (f"{'tool':28s} {'WAL MB/s':>8s} {'tps':>7s} {'push seg/s':>10s} {'overall':>8s} "
           f"{'pend med':>8s} {'pend max':>8s} {'lag med s':>9s} {'lag max s':>9s} "
           f"{'drain s':>7s}")
    w(hdr)
    w("-" * len(hdr))
    for n, s in summ["archive"].items():
        w(f"{LABELS.get(n, n):28s} {s['wal_mb_s']:8.1f} {s['tps']:7.0f} "
          f"{s['push_segments_s_load']:10.2f} {s['push_segments_s_overall']:8.2f} "
          f"{s['pending_median']:8.1f} {s['pending_max']:8d} {s['lag_seconds_median']:9.2f} "
          f"{s['lag_seconds_max']:9.2f} {s['drain_seconds']:7.1f}")
    if summ["fetch"]:
        w("")
        w(f"fetch: real recovery of a base backup through {len(ctx.corpus)} archived segments "
          f"({ctx.corpus[0]}..{ctx.corpus[-1]}), time from pg_ctl start to promoted")
        hdr = f"{'restore_command':42s} {'seconds':>8s} {'seg/s':>7s} {'MB/s':>7s}  all rounds"
        w(hdr)
        w("-" * len(hdr))
        for n, s in summ["fetch"].items():
            w(f"{FETCH_LABELS.get(n, n):42s} {s['seconds']:8.2f} {s['segments_s']:7.2f} "
              f"{s['mb_s']:7.1f}  {s['seconds_all']}")
    w("")
    for k, r in summ["ratios"].items():
        w(f"{k}: " + ", ".join(f"{kk} x{v:.2f}" for kk, v in r.items() if v is not None))
    text = "\n".join(lines)
    print(text)
    return text


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="archiving rounds (default 2)")
    ap.add_argument("--fetch-rounds", type=int, default=2, help="recoveries per tool (2)")
    ap.add_argument("--scale", type=int, default=20, help="pgbench scale (default 20)")
    ap.add_argument("--duration", type=int, default=60, help="pgbench -T per run (60)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--synchronous-commit", default="off", choices=("on", "off"))
    ap.add_argument("--workers", type=int, default=2, help="parallelism of every tool (2)")
    ap.add_argument("--level", type=int, default=3, help="zstd level, every tool (3)")
    ap.add_argument("--prefetch", type=int, default=16, help="pgdr prefetch (16)")
    ap.add_argument("--segments", type=int, default=200, help="segments to recover (200)")
    ap.add_argument("--tools", default="pgdr,pgbackrest,barman",
                    help="archiving tools, in the order they alternate")
    ap.add_argument("--fetch-tools", default="pgdr,barman,local",
                    help="recovery variants, in the order they alternate ('' = skip)")
    ap.add_argument("--fetch-timeout", type=float, default=1200)
    ap.add_argument("--warm", action="store_true", help="do not drop caches before recoveries")
    ap.add_argument("--skip-setup", action="store_true", help="do not run bench/setup.sh")
    ap.add_argument("--workdir", type=Path, help="default bench/.cache/wal-<time>, removed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/wal-*.json)")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("run_wal.py: run as root (runuser, drop_caches, apt)", file=sys.stderr)
        return 1
    if not args.skip_setup:
        subprocess.run(["bash", str(BENCH / "setup.sh")], check=True)
    compile_engine()
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    fetch_names = [n.strip() for n in args.fetch_tools.split(",") if n.strip()]

    stamp = dt.datetime.now()
    ctx = Ctx()
    ctx.args = args
    ctx.work = make_workdir(args.workdir, stamp, "wal")
    ctx.load_start = load_average()
    ctx.drop = (not args.warm) and can_drop_caches()
    ctx.corpus = []
    ctx.fetch_uploads = [n for n in fetch_names if n in ("pgdr", "barman", "barman-p2")]
    if "barman-p2" in ctx.fetch_uploads:
        ctx.fetch_uploads.append("barman")

    sw = None
    pg = None
    try:
        sw = start_seaweed(ctx, BUCKETS.values())
        pg = PgCluster(PG_VERSION, ctx.work / "pg" / "data",
                       free_port(avoid=set(sw.ports.values())))
        ctx.pg = pg
        (ctx.work / "pg").mkdir(exist_ok=True)
        os.chmod(ctx.work / "pg", 0o755)
        # wal_keep_size: every segment since the base backup stays in pg_wal (fetch corpus)
        pg.init({"archive_mode": True, "archive_command": "/bin/true",
                 "synchronous_commit": args.synchronous_commit, "max_wal_size": "1GB",
                 "checkpoint_timeout": "30min", "wal_keep_size": "100GB",
                 "shared_buffers": "256MB"})
        pg.start()
        ctx.server_version = pg.psql("show server_version")
        log(f"pgbench -i -s {args.scale}")
        pg.pgbench("-i", "-q", "-s", str(args.scale), "postgres")
        pg.psql("VACUUM ANALYZE")
        tools = {"pgdr": Pgdr(ctx), "pgbackrest": PgBackRest(ctx), "barman": Barman(ctx)}
        for n in set(names) & {"pgbackrest", "barman"}:
            tools[n].setup()

        # base backup for part 2, before any archiving run
        ctx.base = ctx.work / "base"
        if fetch_names:
            make_pg_dir(ctx.base)
            run([pg.bindir / "pg_basebackup", "-h", "127.0.0.1", "-p", pg.port, "-U", "postgres",
                 "-D", ctx.base, "-X", "fetch", "-c", "fast", "--no-sync"])
            label = (ctx.base / "backup_label").read_text()
            start_seg = label.split("(file ", 1)[1].split(")", 1)[0]
            ctx.base_segments_local = len([n for n in os.listdir(ctx.base / "pg_wal")
                                           if len(n) == 24])
            log(f"base backup: starts in {start_seg}, {ctx.base_segments_local} segment(s) "
                "in its pg_wal")

        # part 1: archiving under load
        arch = {n: [] for n in names}
        for rnd in range(1, args.rounds + 1):
            log(f"archiving round {rnd}")
            order = names if rnd % 2 else list(reversed(names))
            for n in order:
                arch[n].append(archive_run(ctx, tools[n], rnd))
        wait_drained(pg, 900)
        set_archive_command(pg, "/bin/true")

        # part 2: fetch during recovery
        fetch = {n: [] for n in fetch_names}
        corpus_upload = None
        if fetch_names:
            first = seg_no(start_seg)
            # top up: more of the same pgbench WAL (not archived) until N segments exist
            while True:
                pg.psql("SELECT pg_switch_wal()")
                cur = pg.psql("select pg_walfile_name(pg_current_wal_lsn())")
                if seg_no(cur) - first >= args.segments:
                    break
                log(f"  {seg_no(cur) - first} segments since the base backup: pgbench -T 20")
                pg.pgbench("-n", "-c", str(args.clients), "-j", str(args.threads), "-T", "20",
                           "postgres")
            last = min(first + args.segments, seg_no(cur)) - 1
            ctx.corpus = [seg_name(1, s) for s in range(first, last + 1)]
            if len(ctx.corpus) < args.segments:
                log(f"only {len(ctx.corpus)} complete segments since the base backup")
            corpus_upload = upload_corpus(ctx, tools, ctx.corpus)
            if {"local", "pg_wal"} & set(fetch_names):  # WAL on local disk
                ctx.local_corpus = make_pg_dir(ctx.work / "corpus-local")
                for n in ctx.corpus:
                    shutil.copy(ctx.pg.datadir / "pg_wal" / n, ctx.local_corpus / n)
                run(["chown", "-R", "postgres:postgres", ctx.local_corpus], postgres=False)
            pg.stop("fast")  # the recoveries own the machine (not restarted afterwards)
            for rnd in range(1, args.fetch_rounds + 1):
                order = fetch_names if rnd % 2 else list(reversed(fetch_names))
                for n in order:
                    fetch[n].append(recovery_run(ctx, n, tools, rnd))

        summ = summarize(arch, fetch)
        print()
        table = print_table(ctx, summ)
        result = {
            "date": stamp.isoformat(timespec="seconds"),
            "machine": machine_info(),
            "load": {"start": ctx.load_start, "end": load_average()},
            "versions": versions(ctx.server_version, "barman-cloud-wal-archive"),
            "settings": {k: v for k, v in vars(args).items()
                         if k not in ("workdir", "out")} | {
                "caches_before_recovery": "dropped" if ctx.drop else "warm",
                "transport": "https for every tool",
                "fetch_method": "real recovery: base backup + restore_command to the end of "
                                "the archive, pg_ctl start until promoted (pg_wal: the "
                                "segments in pg_wal, restore_command false)",
                "engine": "byte-compiled before the run"},
            "corpus": {"segments": len(ctx.corpus),
                       "first": ctx.corpus[0] if ctx.corpus else None,
                       "last": ctx.corpus[-1] if ctx.corpus else None,
                       "upload": corpus_upload},
            "stored_bytes": {n: sw.usage(b)[0] for n, b in BUCKETS.items()},
            "summary": summ, "archive_runs": arch, "fetch_runs": fetch, "table": table,
        }
        write_result(result, args.out, "wal", stamp, indent=1)
        return 0
    finally:
        tear_down(ctx, sw, [pg])


if __name__ == "__main__":
    sys.exit(main())
