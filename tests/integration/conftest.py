"""Fixtures that start real servers on 127.0.0.1: SeaweedFS (S3) and PostgreSQL clusters.

Work directories live under <repo>/tests/output/ and not in pytest's tmp_path: pytest
creates its base temp dir 0700, which user postgres (initdb, postgres) cannot traverse.
Set PGDR_KEEP_OUTPUT=1 to keep them (logs, data dirs) after the session.
"""
import os
import shutil
import subprocess
import time
import tempfile
import uuid
from pathlib import Path

import pytest

import boto3

from lab.lab import REPO, PgCluster, Seaweed, free_port

PG18_DIR = REPO / ".cache" / "postgresql" / "18"
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_configure(config):
    config.addinivalue_line("markers", "pg18: needs PostgreSQL 18 binaries in .cache/postgresql/18")


def pytest_collection_modifyitems(config, items):
    # Skip PG 18 tests on a developer machine without the binaries; in CI a missing
    # .cache/postgresql/18 is a set-up bug, so those tests run and fail loudly instead.
    if (PG18_DIR / "bin" / "postgres").exists() or IN_CI:
        return
    skip = pytest.mark.skip(reason=f"PostgreSQL 18 binaries missing in {PG18_DIR}: run `make setup`")
    for item in items:
        if "pg18" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lab_root():
    """Session work dir that user postgres can reach (every parent o+x)."""
    out = REPO / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o755)
    root = Path(tempfile.mkdtemp(prefix="r-", dir=out))
    os.chmod(root, 0o755)
    yield root
    if os.environ.get("PGDR_KEEP_OUTPUT") != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(lab_root, request):
    """A fresh per-test directory under lab_root (reachable by postgres)."""
    d = Path(tempfile.mkdtemp(prefix="t-", dir=lab_root))
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="session")
def seaweed(lab_root):
    sw = Seaweed(lab_root / "seaweed", tls=True)
    try:
        sw.start()
        yield sw
    finally:
        sw.stop()


@pytest.fixture
def bucket(seaweed):
    name = f"t-{uuid.uuid4().hex[:16]}"
    seaweed.create_bucket(name)
    return name


@pytest.fixture
def pg_cluster(workdir):
    """Factory: pg_cluster(15) -> a started PgCluster; all are stopped at teardown.
    Extra keyword arguments: settings={...} for postgresql.conf, name="primary"."""
    clusters = []

    def make(version: int, settings: dict | None = None, name: str | None = None) -> PgCluster:
        c = PgCluster(version, workdir / (name or f"pg{version}-{len(clusters)}") / "data")
        clusters.append(c)
        c.init(settings)
        c.start()
        return c

    yield make
    for c in clusters:
        try:
            c.stop()
        except Exception as exc:  # keep stopping the others
            print(f"warning: could not stop cluster {c.datadir}: {exc}")


@pytest.fixture
def small_fs(workdir):
    """Factory: small_fs(mib, name="small") -> a tmpfs of that size mounted at
    workdir/name, owned by postgres (mode 0700): a filesystem that fills up. Unmounted
    after the test."""
    mounts = []

    def make(mib: int, name: str = "small") -> Path:
        path = workdir / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(mib)}m,mode=0700", "tmpfs",
                        str(path)], check=True)
        mounts.append(path)
        shutil.chown(path, "postgres", "postgres")
        return path

    yield make
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], check=False)


MOTO_SERVER = REPO / ".venv" / "bin" / "moto_server"


@pytest.fixture
def moto_endpoint(workdir):
    """moto's S3 server on a free loopback port: for what SeaweedFS lacks (lifecycle
    transitions, storage classes and thaws). Stopped after the test."""
    if not MOTO_SERVER.exists():
        if IN_CI:  # CI installs test-requirements.txt: a missing server is a set-up bug
            pytest.fail("moto_server missing in .venv: install test-requirements.txt")
        pytest.skip("moto[server] is not installed in .venv (test-requirements.txt)")
    port = free_port()
    log = open(workdir / "moto.log", "wb")
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    endpoint = "http://127.0.0.1:%d" % port
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def s3_faults(seaweed):
    """An S3 fault proxy (tests/integration/s3faults.py) in front of SeaweedFS: point
    pgdr at s3_faults.endpoint, then set_rule()/set_rate(); counts holds the faults
    injected per kind. Stopped after the test."""
    from tests.integration.s3faults import S3Faults
    proxy = S3Faults(seaweed.endpoint).start()
    try:
        yield proxy
    finally:
        proxy.stop()
