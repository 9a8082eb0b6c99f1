"""What bench/run_full.py, bench/run_wal.py and bench/run_diff.py share: running commands
as postgres and timing them, the work directory, SeaweedFS (HTTPS) with one bucket per tool,
pgBackRest's configuration, caches, bucket usage, medians and ratios, and the results JSON
(machine, load, versions). Not a library: the bench scripts only.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import platform
import pwd
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from lab.lab import PgCluster, Seaweed, free_port  # noqa: E402,F401 - re-exported


# BENCH_PGDR: another launcher with the same arguments, e.g. a py-spy wrapper to profile
PGDR = Path(os.environ.get("BENCH_PGDR") or REPO / "bin" / "pgdr")
BARMAN_VENV = BENCH / ".venv-barman"
PGBACKREST = "pgbackrest"
STANZA = "bench"
REGION = "us-east-1"
MB = 1_000_000  # MB = 10^6 bytes throughout


# --------------------------------------------------------------------------- commands
def compile_engine() -> None:
    """Byte-compile the engine, as the agent role does on nodes: the tools run as postgres,
    who cannot write __pycache__ here, and PYTHONDONTWRITEBYTECODE may be set; without
    byte code every wal-push or wal-fetch call would compile the engine's sources."""
    subprocess.run([sys.executable, "-I", "-m", "compileall", "-q",
                    str(REPO / "plugins" / "module_utils" / "_pgdr")], check=True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def as_pg(cmd: list) -> list:
    return ["runuser", "-u", "postgres", "--", *map(str, cmd)]


def run(cmd: list, env: dict | None = None, check: bool = True, timeout: float = 3600,
        postgres: bool = True) -> subprocess.CompletedProcess:
    full = as_pg(cmd) if postgres else [str(c) for c in cmd]
    res = subprocess.run(full, env=env, capture_output=True, text=True, cwd="/",
                         timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({res.returncode}):\n"
                           f"{res.stderr.strip()[-3000:] or res.stdout.strip()[-3000:]}")
    return res


def self_io() -> dict:
    """This process' /proc/self/io. The kernel adds a reaped child's counters to its parent's,
    so a delta around subprocess.run() covers the whole (reaped) process tree of a command."""
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k.strip()] = int(v)
    return out


def timed(cmd: list, env: dict | None = None, sync_after: bool = False,
          postgres: bool = True) -> dict:
    """Run cmd (as postgres by default); wall seconds, CPU seconds of the tool (all its reaped
    children), bytes its process tree read from storage (read_bytes: with dropped caches,
    what it read from disk) and through read() (rchar: files, pipes and sockets), optionally
    followed by a `sync` inside the timing (restores: data on disk for every tool)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    io0 = self_io()
    t0 = time.monotonic()
    res, peak_rss = run_with_peak_rss(cmd, env=env, postgres=postgres)
    t_cmd = time.monotonic() - t0
    if sync_after:
        os.sync()
    t = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    io1 = self_io()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"seconds": t, "command_seconds": t_cmd, "cpu_seconds": cpu,
            "read_bytes": io1["read_bytes"] - io0["read_bytes"],
            "rchar": io1["rchar"] - io0["rchar"], "peak_rss_bytes": peak_rss,
            "stdout": res.stdout, "stderr": res.stderr}


def run_with_peak_rss(cmd: list, env: dict | None = None, postgres: bool = True,
                      timeout: float = 3600) -> tuple[subprocess.CompletedProcess, int]:
    """run(), plus the command's peak resident set as GNU time reports it: the largest
    process of its tree (a tool with several processes uses more in all). Measured by a
    small launcher because a child forked from this Python process starts with this
    process' own peak (wait4's ru_maxrss would report at least the harness' memory)."""
    full = as_pg(cmd) if postgres else [str(c) for c in cmd]
    with tempfile.NamedTemporaryFile(mode="r") as report:
        res = run(["/usr/bin/time", "-f", "%M", "-o", report.name, *full], env=env,
                  timeout=timeout, postgres=False)
        peak_kib = int(report.read().split()[-1])
    return res, peak_kib * 1024


def pgbackrest_version() -> tuple[int, ...]:
    """The pgBackRest on the PATH as a tuple (2, 59, 1); () when it does not answer."""
    text = version_of([PGBACKREST, "version"])
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


def pgbackrest_label() -> str:
    version = pgbackrest_version()
    return "pgBackRest " + (".".join(map(str, version)) if version else "?")


def pgbackrest_best() -> str:
    """pgBackRest's configuration lines as its users run it when the version has them:
    file bundling (2.39) and block incremental (2.46, needs bundling). 2.45 gets neither
    line of block incremental, only bundling."""
    version = pgbackrest_version()
    lines = ""
    if version >= (2, 39):
        lines += "repo1-bundle=y\n"
    if version >= (2, 46):
        lines += "repo1-block=y\n"
    return lines


def parse_json_out(text: str):
    """The last JSON object printed on stdout, or None (parse defensively)."""
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def version_of(cmd: list) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout.strip() or r.stderr.strip()).splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - informational only
        return f"unknown ({exc})"


# --------------------------------------------------------------------------- files
def chown_pg(path: Path, mode: int = 0o700) -> None:
    pw = pwd.getpwnam("postgres")
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)


def write_private(path: Path, text: str, owner_pg: bool = True) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    if owner_pg:
        chown_pg(path, 0o600)


def make_pg_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    chown_pg(path, mode)
    return path


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def make_workdir(workdir: Path | None, stamp: dt.datetime, kind: str = "run") -> Path:
    """The run's work directory (default bench/.cache/<kind>-<time>), traversable by
    postgres."""
    work = workdir or BENCH / ".cache" / f"{kind}-{stamp:%Y%m%d-%H%M%S}"
    work.mkdir(parents=True, exist_ok=True)
    for p in [work, *work.parents]:  # postgres must traverse to its files
        if p == Path("/"):
            break
        os.chmod(p, os.stat(p).st_mode | 0o011)
    return work


# --------------------------------------------------------------------------- caches, WAL
def can_drop_caches() -> bool:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def drop_caches(enabled: bool) -> None:
    os.sync()
    if enabled:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")


def wait_archiver_idle(datadir: Path, timeout: float = 120) -> None:
    """Wait until PostgreSQL has archived every finished WAL segment, so that archiving
    triggered by one tool's backup does not run during the next tool's timed command."""
    status = datadir / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while any(p.suffix == ".ready" for p in status.iterdir()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"WAL archiving stuck: .ready files in {status}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- S3
def start_seaweed(ctx, buckets) -> Seaweed:
    """SeaweedFS with HTTPS (pgBackRest 2.45 speaks HTTPS only) and one bucket per tool; sets
    ctx.sw and ctx.ca_bundle (readable by postgres). The caller stops it."""
    sw = Seaweed(ctx.work / "seaweed", tls=True)
    ctx.sw = sw
    sw.start()
    ctx.ca_bundle = sw.cert_file
    os.chmod(sw.cert_file.parent, 0o755)
    os.chmod(sw.cert_file, 0o644)
    for b in buckets:
        sw.create_bucket(b)
    return sw


class Metrics:
    """S3 request counts per bucket from SeaweedFS' Prometheus endpoint, when the lab exposes
    one (Seaweed.ports['metrics']); otherwise counts are reported as null."""

    def __init__(self, sw: Seaweed):
        port = getattr(sw, "ports", {}).get("metrics")
        self.url = f"http://127.0.0.1:{port}/metrics" if port else None

    def requests(self, bucket: str) -> int | None:
        if not self.url:
            return None
        try:
            text = urllib.request.urlopen(self.url, timeout=10).read().decode()
        except OSError:
            return None
        total = 0
        for line in text.splitlines():
            if line.startswith("SeaweedFS_s3_request_seconds_count{") and \
                    f'bucket="{bucket}"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
        return total


def pgbackrest_config(ctx, dir: Path, bucket: str, pg: PgCluster, before: str = "",
                      after: str = "") -> Path:
    """Write DIR/pgbackrest.conf for the SeaweedFS of ctx (HTTPS, path style), zst at
    ctx.args.level, process-max ctx.args.workers, with BEFORE / AFTER (lines ending in a
    newline) around the compression settings in [global], and bundling and block
    incremental on when the version has them (pgbackrest_best); makes its log, lock and
    spool directories."""
    conf = dir / "pgbackrest.conf"
    https_port = int(ctx.sw.https_endpoint.rsplit(":", 1)[1])
    # compress-level 3 is pgBackRest's default for zst; set explicitly to match pgdr
    write_private(conf, f"""[global]
repo1-type=s3
repo1-s3-endpoint=127.0.0.1
repo1-storage-port={https_port}
repo1-s3-uri-style=path
repo1-storage-verify-tls=n
repo1-s3-bucket={bucket}
repo1-s3-region={REGION}
repo1-s3-key={ctx.sw.access_key}
repo1-s3-key-secret={ctx.sw.secret_key}
repo1-path=/pgbackrest
{pgbackrest_best()}{before}compress-type=zst
compress-level={ctx.args.level}
process-max={ctx.args.workers}
{after}log-level-console=warn
log-level-file=info
log-path={dir / 'log'}
lock-path={dir / 'lock'}
spool-path={dir / 'spool'}

[{STANZA}]
pg1-path={pg.datadir}
pg1-port={pg.port}
pg1-socket-path={pg.socket_dir}
pg1-user=postgres
""")
    for d in ("log", "lock", "spool"):
        make_pg_dir(dir / d)
    return conf


def tear_down(ctx, sw, clusters) -> None:
    """The end of every bench, however it ends: servers stopped, the work directory removed
    unless it was given (--workdir) or kept (--keep)."""
    for pg in clusters:
        if pg is not None:
            pg.stop("immediate")
    if sw is not None:
        sw.stop()
    if not ctx.args.keep and not ctx.args.workdir:
        shutil.rmtree(ctx.work, ignore_errors=True)


# --------------------------------------------------------------------------- results
def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict:
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "cpu_model": next((l.split(":", 1)[1].strip() for l in
                               open("/proc/cpuinfo") if l.startswith("model name")), ""),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                             / 2**30, 1)}


def versions(postgresql: str, barman_bin: str | None = None, **more) -> dict:
    v = {"postgresql": postgresql, "pgbackrest": version_of([PGBACKREST, "version"])}
    if barman_bin:
        v["barman"] = version_of([str(BARMAN_VENV / "bin" / barman_bin), "-V"])
    v["seaweedfs"] = version_of([str(REPO / ".venv" / "bin" / "weed"), "version"])
    v["pgdr_git"] = version_of(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    v.update(more)
    return v


def write_result(result: dict, out: Path | None, kind: str, stamp: dt.datetime,
                 indent: int = 2) -> Path:
    """bench/results/<kind>-<date>-<time>.json unless OUT is given."""
    out = out or BENCH / "results" / f"{kind}-{stamp:%Y-%m-%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=indent) + "\n")
    log(f"results: {out}")
    if kind in ("full", "wal") and out.parent == BENCH / "results":
        import charts  # the docs' PNGs from the newest results (a run elsewhere: none)
        charts.render()
    return out
