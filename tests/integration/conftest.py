"""Fixtures that start real servers on 127.0.0.1: SeaweedFS (S3) and PostgreSQL clusters.

Work directories live under <repo>/tests/output/ and not in pytest's tmp_path: pytest
creates its base temp dir 0700, which user postgres (initdb, postgres) cannot traverse.
Set PGDR_KEEP_OUTPUT=1 to keep them (logs, data dirs) after the session.
"""
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from lab.lab import REPO, PgCluster, Seaweed

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
