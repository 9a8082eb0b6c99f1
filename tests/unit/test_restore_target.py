"""Restore targets (issue 11): never a running cluster's files, whatever the path
(defect 1); as root, files for the target's owner, never root (defect 6); progress
never past 100% (defect 13)."""
import io
import os
import pwd

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import restore
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands.restore import (
    RestoreRun)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import TargetRefused
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import datadir
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def live(tmp_path):
    """A data directory whose postmaster.pid names a live process (this one), with a
    tablespace link; a fake /proc that shows it (a tablespace location alone has no
    postmaster.pid to find: only /proc leads to its server)."""
    pgdata = tmp_path / "srv" / "15" / "main"
    touch(pgdata / "postmaster.pid", b"%d\n%s\n" % (os.getpid(), str(pgdata).encode()))
    touch(pgdata / "base" / "1" / "1259")
    space = tmp_path / "spaces" / "fast"
    touch(space / "PG_15_202209061" / "1" / "16600")
    (pgdata / "pg_tblspc").mkdir()
    os.symlink(str(space), str(pgdata / "pg_tblspc" / "16599"))
    proc = tmp_path / "proc"
    touch(proc / str(os.getpid()) / "comm", b"postgres\n")
    os.symlink(str(pgdata), str(proc / str(os.getpid()) / "cwd"))
    return pgdata, space, proc


def test_d11_1_postmaster_pid_found_upwards_and_downwards(live, tmp_path):
    """Without /proc (a server in another PID namespace): the postmaster.pid files on the
    way up from the target and below it still protect the data directory."""
    pgdata, space, dummy = live
    empty = tmp_path / "noproc"
    empty.mkdir()
    for target in (pgdata, pgdata / "base" / "1", pgdata.parent.parent, tmp_path):
        assert str(pgdata) in refused(target, empty).msg


def refused(path, proc):
    with pytest.raises(TargetRefused) as caught:
        datadir.refuse_live(str(path), proc=str(proc))
    assert caught.value.code == "target_running" and caught.value.exit_code == 6
    return caught.value


def test_d11_1_every_path_that_shares_files_with_a_live_cluster_is_refused(live, tmp_path):
    pgdata, space, proc = live
    link = tmp_path / "alias"
    os.symlink(str(pgdata), str(link))
    for target in (pgdata, pgdata / "base", pgdata / "base" / "1", pgdata.parent,
                   pgdata.parent.parent, link, link / "global", space,
                   space / "PG_15_202209061", space.parent, tmp_path):
        error = refused(target, proc)
        assert str(pgdata) in error.msg and "PID %d" % os.getpid() in error.msg, error.msg
        assert error.details["live_data_directory"] == str(pgdata)
    assert "tablespace 16599 location" in refused(space / "new", proc).msg
    # outside every live file: accepted
    for target in (tmp_path / "other", tmp_path / "srv" / "16" / "main", tmp_path / "spaces" / "slow"):
        datadir.refuse_live(str(target), proc=str(proc))


def test_d11_1_a_server_found_from_proc_is_protected(tmp_path):
    """No postmaster.pid on the way up or down from the target: the running server is
    found from /proc (its working directory), with its tablespace and its pg_wal."""
    pgdata = tmp_path / "hidden" / "data"
    touch(pgdata / "postmaster.pid", b"4242\n")  # a pid that is not alive here
    space, wal = tmp_path / "ts", tmp_path / "wal"
    space.mkdir(), wal.mkdir()
    (pgdata / "pg_tblspc").mkdir()
    os.symlink(str(space), str(pgdata / "pg_tblspc" / "16400"))
    os.symlink(str(wal), str(pgdata / "pg_wal"))
    proc = tmp_path / "proc"
    touch(proc / "4242" / "comm", b"postgres\n")
    os.symlink(str(pgdata), str(proc / "4242" / "cwd"))
    touch(proc / "77" / "comm", b"bash\n")  # a shell in a stopped cluster: not a server
    stopped = tmp_path / "stopped"
    touch(stopped / "postmaster.pid", b"999999999\n")
    os.symlink(str(stopped), str(proc / "77" / "cwd"))
    assert datadir.live_clusters(str(proc)) == {str(pgdata): 4242}
    for target in (space / "x", wal, pgdata / "global"):
        assert "PID 4242" in refused(target, proc).msg
    datadir.refuse_live(str(stopped), proc=str(proc))
    datadir.refuse_live(str(tmp_path / "elsewhere"), proc=str(proc))


def test_d11_1_the_real_proc_finds_no_server_in_a_fresh_directory(tmp_path):
    datadir.refuse_live(str(tmp_path / "new"))
    assert all(os.path.isabs(d) for d in datadir.live_clusters())


def test_d11_6_owner_as_root(tmp_path):
    root_owned = tmp_path / "rootdir"
    root_owned.mkdir()
    os.chown(str(root_owned), 0, 0)
    with pytest.raises(TargetRefused) as caught:
        RestoreRun._owner_of(str(root_owned / "data"), euid=0)
    assert caught.value.code == "target_owner_root" and str(root_owned) in caught.value.msg
    postgres = pwd.getpwnam("postgres")
    mine = tmp_path / "pg"
    mine.mkdir()
    os.chown(str(mine), postgres.pw_uid, postgres.pw_gid)
    owner = (postgres.pw_uid, postgres.pw_gid)
    assert RestoreRun._owner_of(str(mine), euid=0) == owner  # the target itself
    assert RestoreRun._owner_of(str(mine / "a" / "b"), euid=0) == owner  # nearest parent
    assert RestoreRun._owner_of(str(root_owned), euid=1000) is None  # not root: as is


def test_d11_13_progress_never_past_100_percent():
    out = io.StringIO()
    progress = Progress(out, interval=0.0)
    progress.begin("restore", 273 * 1048576)
    progress.advance(289 * 1048576)
    progress.end()
    lines = out.getvalue().splitlines()
    assert lines and all("100.0% 273/273 MiB" in line for line in lines), lines


def test_d11_3_clearing_a_target_removes_pg_control_first(tmp_path, monkeypatch):
    """A forced restore over an old cluster, stopped while it empties the target: what is
    left has neither a marker nor pg_control, so nothing starts it or offers it."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import restore
    for rel in ("pgdr_restore.json", "global/pg_control", "global/1262", "base/1/1259",
                "PG_VERSION", "pg_xact/0000"):
        touch(tmp_path / rel)

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt("stopped while clearing %s" % path)
    monkeypatch.setattr(restore.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        RestoreRun._clear(str(tmp_path))
    assert not (tmp_path / "global" / "pg_control").exists()
    assert not (tmp_path / "pgdr_restore.json").exists()
    assert (tmp_path / "base" / "1" / "1259").exists()  # the kill came before the rest


@pytest.mark.parametrize("codec_name", ["zstd", "gzip", "none"])
def test_d11_4_a_full_disk_while_writing_a_piece_is_target_full(tmp_path, monkeypatch, codec_name):
    """The codec wraps whatever its write callback raises as decompress_failed (damage):
    the restore keeps the write's OSError and reports a full target, exit 6."""
    import errno
    import hashlib
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import restore
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.compress import (
        Codec, CodecsByKey)
    codec = Codec(codec_name)
    raw = b"page" * 5000
    packed = codec.compress(raw)
    stored = {"key": "b/data/base/1/16400" + codec.suffix, "offset": 0, "size": len(raw),
              "sha256": hashlib.sha256(raw).hexdigest(),
              "stored_sha256": hashlib.sha256(packed).hexdigest(), "stored_size": len(packed)}

    class Storage(object):
        def get(self, key, sha256=None):
            return packed

    run = object.__new__(RestoreRun)
    run.storage, run.target = Storage(), str(tmp_path)
    path = tmp_path / "16400"
    path.write_bytes(b"")

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(restore.os, "pwrite", full)
    with pytest.raises(OSError) as caught:
        run._restore_piece(CodecsByKey(), stored, str(path))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    error = run._write_error(caught.value, {"id": "X-full", "size": 64 << 20, "wal_size": 0})
    assert isinstance(error, TargetRefused) and error.code == "target_full"
    assert "ENOSPC" in error.msg and str(path) in error.msg and str(tmp_path) in error.msg


def test_d11_1_undo_removes_only_its_own_major_in_a_tablespace_location(tmp_path):
    """A location shared with a (stopped) cluster of another major version: a failed
    restore's undo removes its PG_15_* directory, never the other one's."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import restore
    touch(tmp_path / "PG_15_202209061" / "1" / "16600")
    touch(tmp_path / "PG_16_202307071" / "5" / "16400")
    restore.remove_version_dirs(str(tmp_path), "PG_15_")
    assert sorted(os.listdir(tmp_path)) == ["PG_16_202307071"]


def test_auto_conf_values_are_escaped_as_alter_system_does():
    """A restore point name or setting with a quote or a backslash reaches PostgreSQL
    unchanged: both are doubled, as ALTER SYSTEM writes postgresql.auto.conf."""
    assert restore.conf_quote("it's a\\b") == "it''s a\\\\b"
    assert restore.conf_quote(42) == "42"


def test_d11_1_a_server_in_another_pid_namespace_is_live(tmp_path):
    """Its pid means nothing here (a container sharing the volume), but its socket
    answers: the data directory is live and refused; with nothing answering, the pid
    file is a crashed server's and the directory may be replaced."""
    import socket
    import tempfile
    sockets = tempfile.mkdtemp(dir="/tmp")  # a unix socket path must stay short
    pgdata = tmp_path / "data"
    pgdata.mkdir()
    # a shared memory id no segment of this machine has (the servers of other tests do)
    with open("/proc/sysvipc/shm") as table:
        used = set(int(line.split()[1]) for line in table.readlines()[1:])
    shmid = max(used | {0}) + 1000
    (pgdata / "postmaster.pid").write_text(
        "4000000\n%s\n1764662400\n5499\n%s\n*\n  5499001 %10d\nready   \n"
        % (pgdata, sockets, shmid))
    assert not datadir.is_running(str(pgdata))  # stale: no such process, nothing answers
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.path.join(sockets, ".s.PGSQL.5499"))
    server.listen(1)
    try:
        assert datadir.is_running(str(pgdata))
        with pytest.raises(TargetRefused) as info:
            datadir.refuse_live(str(tmp_path))
        assert info.value.code == "target_running" and str(pgdata) in info.value.msg
    finally:
        server.close()
        os.unlink(os.path.join(sockets, ".s.PGSQL.5499"))
        os.rmdir(sockets)
