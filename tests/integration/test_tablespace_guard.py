"""A restored copy never writes into a live cluster's tablespace (real PostgreSQL 15 and
SeaweedFS). A tablespace created after the backup is not in it, so restore cannot map it:
replaying its CREATE TABLESPACE would point the copy at the live cluster's directory.
wal-fetch finds the record in the segment and stops recovery before it is replayed; a
tablespace created and dropped again (its directory empty) replays as before."""
import hashlib
import os
import time

import pytest

from tests.integration.pgdr_run import (archive_everything, archiving_cluster, postgres_dir,
                                        restore_args, wait_until_promoted, write_rows)


def tree_digest(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for folder, dummy, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def wait_stopped(pg, timeout=60):
    deadline = time.time() + timeout
    while pg.is_running() and time.time() < deadline:
        time.sleep(0.2)
    return not pg.is_running()


@pytest.fixture
def late_tablespace(pg_cluster, workdir, seaweed, bucket):
    """Backup; then a tablespace created and dropped (empty directory), restore point
    'before_late' (in the same segment as what follows); tablespace 'late' with a table of
    5000 rows; restore point 'after_late'; all archived."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    code, dummy, err = repo.run("backup")
    assert code == 0, err
    gone, late = postgres_dir(workdir / "ts-gone"), postgres_dir(workdir / "ts-late")
    pg.psql(f"CREATE TABLESPACE gone LOCATION '{gone}'")
    pg.psql("CREATE TABLE in_gone TABLESPACE gone AS SELECT 1 AS one")
    pg.psql("DROP TABLE in_gone")
    pg.psql("DROP TABLESPACE gone")
    write_rows(pg, 1, 3, {})
    pg.psql("SELECT pg_create_restore_point('before_late')")
    pg.psql(f"CREATE TABLESPACE late LOCATION '{late}'")
    pg.psql("CREATE TABLE in_late TABLESPACE late AS SELECT g FROM generate_series(1, 5000) g")
    write_rows(pg, 4, 6, {})
    pg.psql("SELECT pg_create_restore_point('after_late')")
    archive_everything(pg)
    pg.psql("CHECKPOINT")
    return pg, repo, late


@pytest.mark.parametrize("point", ["latest", "name:after_late"])
def test_a_tablespace_created_after_the_backup_stops_recovery(late_tablespace, workdir, point):
    pg, repo, late = late_tablespace
    before = tree_digest(late)
    assert any(path.startswith("PG_15_") for path in before), before  # the live table
    restored, args = restore_args(15, workdir / "past" / "data")
    code, out, err = repo.run("restore", "--target", restored.datadir, "--point", point,
                              *args)
    assert code == 0, err
    try:
        restored.start()
    except RuntimeError:  # pg_ctl -w reports the server that stopped during recovery
        pass
    assert wait_stopped(restored), "the restored copy kept running"
    log = restored.log.read_text()
    assert "creates tablespace oid" in log and str(late) in log, log[-3000:]
    assert "tablespace_in_use" in log or "already holds PG_15_" in log, log[-3000:]
    # nothing of the live tablespace changed, and the copy never linked to it
    assert tree_digest(late) == before
    links = os.listdir(restored.datadir / "pg_tblspc")
    assert all(os.path.realpath(restored.datadir / "pg_tblspc" / n) != str(late) for n in links)
    assert pg.psql("SELECT count(*) FROM in_late") == "5000"


def test_a_dropped_tablespace_still_replays(late_tablespace, workdir):
    pg, repo, late = late_tablespace
    restored, args = restore_args(15, workdir / "before" / "data")
    code, out, err = repo.run("restore", "--target", restored.datadir,
                              "--point", "name:before_late", *args)
    assert code == 0, err
    try:
        restored.start()
    except RuntimeError:
        raise AssertionError(restored.log.read_text()[-3000:])
    try:
        wait_until_promoted(restored)
        assert restored.psql("SELECT count(*) FROM ticks") == "3"
        assert restored.psql("SELECT count(*) FROM pg_tablespace WHERE spcname = 'gone'") == "0"
    finally:
        restored.stop()
