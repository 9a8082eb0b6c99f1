"""datadir.walk on a fake data directory: what pg_basebackup skips, we skip."""
import os

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import PostgresError
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import datadir


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def pgdata(tmp_path):
    d = tmp_path / "data"
    for rel in ["PG_VERSION", "global/pg_control", "global/1262", "global/pg_internal.init",
                "base/1/1259", "base/1/1259_fsm", "base/1/1259_vm", "base/1/1259.1",
                "base/1/16400_init", "base/1/16400", "base/1/16400_fsm", "base/1/16400.1",
                "base/1/t3_16500", "base/1/pg_internal.init", "base/pgsql_tmp/pgsql_tmp1.0",
                "pg_wal/000000010000000000000001", "pg_wal/archive_status/x.done",
                "pg_stat_tmp/global.stat", "pg_replslot/slot/state", "pg_subtrans/0000",
                "pg_notify/0000", "pg_dynshmem/mmap", "pg_serial/0000", "pg_snapshots/snap",
                "pg_xact/0000", "postmaster.pid", "postmaster.opts", "backup_label.old",
                "postgresql.auto.conf", "current_logfiles", "pg_logical/replorigin_checkpoint"]:
        touch(d / rel, b"data of " + rel.encode())
    space = tmp_path / "space"
    touch(space / "PG_15_202209061" / "1" / "16600")
    touch(space / "PG_14_202107181" / "1" / "99")  # another major version's directory
    (d / "pg_tblspc").mkdir()
    os.symlink(str(space), str(d / "pg_tblspc" / "16599"))
    return d


def test_walk_skips_runtime_state(pgdata):
    entries = datadir.walk(str(pgdata), 150004, [{"oid": 16599, "name": "fast",
                                                  "location": "/old/space"}])
    paths = [e.path for e in entries]
    files = set(e.path for e in entries if e.kind == "file")
    assert paths[-1] == "global/pg_control"  # copied last
    assert paths.count("global/pg_control") == 1
    for kept in ["PG_VERSION", "global/1262", "base/1/1259", "base/1/1259_fsm", "base/1/1259.1",
                 "base/1/16400_init", "pg_xact/0000", "postgresql.auto.conf",
                 "pg_logical/replorigin_checkpoint", "current_logfiles",
                 "pg_tblspc/16599/PG_15_202209061/1/16600"]:
        assert kept in files, kept
    for skipped in ["base/1/16400", "base/1/16400_fsm", "base/1/16400.1", "base/1/t3_16500",
                    "base/1/pg_internal.init", "global/pg_internal.init",
                    "base/pgsql_tmp/pgsql_tmp1.0", "pg_wal/000000010000000000000001",
                    "pg_wal/archive_status/x.done", "pg_stat_tmp/global.stat",
                    "pg_replslot/slot/state", "pg_subtrans/0000", "pg_notify/0000",
                    "pg_dynshmem/mmap", "pg_serial/0000", "pg_snapshots/snap", "postmaster.pid",
                    "postmaster.opts", "backup_label.old",
                    "pg_tblspc/16599/PG_14_202107181/1/99"]:
        assert skipped not in files, skipped
    dirs = set(e.path for e in entries if e.kind == "dir")
    # runtime directories exist, empty, in the restored cluster
    assert {"pg_wal", "pg_wal/archive_status", "pg_stat_tmp", "pg_replslot", "pg_subtrans",
            "pg_notify", "pg_dynshmem", "pg_serial", "pg_snapshots"} <= dirs
    assert "base/pgsql_tmp" not in dirs and "pg_replslot/slot" not in dirs
    tablespace = [e for e in entries if e.kind == "tablespace"]
    assert [(t.path, t.link) for t in tablespace] == [("pg_tblspc/16599", "/old/space")]
    control = entries[-1]
    assert control.size == len(b"data of global/pg_control")
    assert control.source == str(pgdata / "global" / "pg_control")


def test_not_a_data_directory(tmp_path):
    with pytest.raises(PostgresError) as info:
        datadir.walk(str(tmp_path), 150000, [])
    assert info.value.code == "pgdata_invalid"
    touch(tmp_path / "PG_VERSION")
    with pytest.raises(PostgresError):
        datadir.walk(str(tmp_path), 150000, [])  # no pg_control


def test_is_running(tmp_path):
    assert not datadir.is_running(str(tmp_path))
    touch(tmp_path / "postmaster.pid", b"%d\n/data\n" % os.getpid())
    assert datadir.is_running(str(tmp_path))
    touch(tmp_path / "postmaster.pid", b"999999999\n")
    assert not datadir.is_running(str(tmp_path))
    touch(tmp_path / "postmaster.pid", b"garbage\n")
    assert not datadir.is_running(str(tmp_path))
