"""wal-fetch and wal-push under local faults, through cli.run and a posix repository
(issue 11, defects 2, 4, 5, 11 and 13): exit codes, no temporary files left, spool
keying and clean-up, and only WAL pushed."""
import errno
import hashlib
import io
import json
import os
import struct
import threading
import time

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import (cli, errors,
                                                                            faultpoint, spool)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import (
    wal_fetch, wal_push)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.options import resolve
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres.datadir import (
    RESTORE_MARKER)

SEG = 1 << 20  # a 1 MiB segment size keeps the tests fast
FIRST = "000000010000000000000003"


def segment(name, size=SEG, magic=0xD110, seed=b""):
    """A segment whose first page carries a valid XLOG long page header."""
    segno = int(name[8:16], 16) * (0x100000000 // size) + int(name[16:24], 16)
    header = struct.pack("<HHIQIIQII", magic, 0x0002, int(name[:8], 16), segno * size, 0, 0,
                         7000000000000000001, size, 8192)
    body = hashlib.sha256(name.encode() + seed).digest() * ((size - len(header)) // 32 + 1)
    return header + body[:size - len(header)]


def next_name(name, n=1):
    return wal_fetch._next_names(name, n + 1, SEG)[n]


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A posix repository, a data directory with pg_wal (the cwd, as for
    restore_command) and a runner of the real CLI."""
    repo, pgdata = tmp_path / "repo", tmp_path / "data"
    (pgdata / "pg_wal").mkdir(parents=True)
    repo.mkdir()
    monkeypatch.chdir(pgdata)

    def run(verb, *args, **options):
        argv = [verb, "--json", "--repo-type", "posix", "--repo-path", str(repo),
                "--cluster", options.pop("cluster", "main")]
        for key, value in sorted(options.items()):
            argv += ["--" + key.replace("_", "-"), str(value)]
        out, err = io.StringIO(), io.StringIO()
        code = cli.run(argv + [str(a) for a in args], out, err, environ={})
        lines = [l for l in out.getvalue().splitlines() if l.strip()]
        return code, (json.loads(lines[-1]) if lines else None), err.getvalue()

    def push(name, data=None, **options):
        path = pgdata / "pg_wal" / name
        path.write_bytes(data if data is not None else segment(name))
        return run("wal-push", path, **options)

    return {"repo": repo, "pgdata": pgdata, "run": run, "push": push}


def leftovers(directory):
    return sorted(n for n in os.listdir(str(directory)) if "tmp" in n)


# -- defect 2: local failures are never 'not in the archive' -------------------------------

def test_d11_2_end_of_archive_and_history_probe_exit_1(node):
    assert node["push"](FIRST)[0] == 0
    code, out, err = node["run"]("wal-fetch", "000000010000000000000004", "pg_wal/RECOVERYXLOG")
    assert code == 1 and out["error"]["code"] == "wal_not_found"
    assert "error" not in err and "end of archive" in err
    assert node["run"]("wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY")[0] == 1


def test_d11_2_a_missing_repository_is_not_the_end_of_the_archive(node, tmp_path):
    """An unmounted repository directory: exit above 125, never 'not in the archive'. A
    restored copy that was planned with archived WAL and finds none at all for its cluster
    (a wrong prefix or cluster) stops too; a standby set up before anything was archived
    (no restore marker) still gets 'not in the archive'."""
    code, out, err = node["run"]("wal-fetch", FIRST, "pg_wal/RECOVERYXLOG",
                                 repo_path=tmp_path / "unmounted")
    assert code == 131 and out["error"]["code"] == "repository_not_found", err
    assert node["run"]("wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY")[0] == 1
    (node["pgdata"] / RESTORE_MARKER).write_text(json.dumps(
        {"wal_planned": [[1, 5, 6]], "wal_segment_size": SEG}))
    code, out, err = node["run"]("wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY")
    assert code == 131 and out["error"]["code"] == "wal_archive_missing", err


def test_d11_2_missing_destination_directory_stops_recovery(node):
    assert node["push"](FIRST)[0] == 0
    code, out, err = node["run"]("wal-fetch", FIRST, "no/such/dir/RECOVERYXLOG")
    assert code == 129 and out["error"]["code"] == "wal_dest_unwritable"
    assert "no/such/dir/RECOVERYXLOG" in err


@pytest.mark.parametrize("compression", ["none", "zstd", "gzip"])
def test_d11_2_full_destination_leaves_nothing(node, monkeypatch, compression):
    assert node["push"](FIRST, compression=compression)[0] == 0

    def disk_full(name):
        if name == "wal_fetch.mid_write":
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(faultpoint, "reached", disk_full)
    code, out, err = node["run"]("wal-fetch", FIRST, "pg_wal/RECOVERYXLOG")
    assert code > 125 and out["error"]["code"] == "wal_dest_unwritable"
    assert "no space left on device" in err
    assert os.listdir(str(node["pgdata"] / "pg_wal")) == [FIRST]  # no RECOVERYXLOG, no tmp
    monkeypatch.undo()
    monkeypatch.chdir(node["pgdata"])
    assert node["run"]("wal-fetch", FIRST, "pg_wal/RECOVERYXLOG")[0] == 0  # space is back
    assert (node["pgdata"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == segment(FIRST)


def test_d11_2_invalid_name_stops_recovery(node):
    code, out, dummy = node["run"]("wal-fetch", "../../etc/passwd", "pg_wal/RECOVERYXLOG")
    assert code > 125 and out["error"]["code"] == "wal_name_invalid"


class Damaged(object):
    """A storage whose get of one key fails as the verified get does on a damaged or
    unreadable object (the storage engineer's contract); the rest pass through."""

    def __init__(self, inner, bad, error):
        self.inner, self.bad, self.error = inner, bad, error

    def get(self, key, sha256=None):
        if self.bad in key:
            raise self.error
        return self.inner.get(key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _damage(monkeypatch, name, error):
    real = wal_fetch._storage
    monkeypatch.setattr(wal_fetch, "_storage", lambda s: Damaged(real(s), name, error))


def _threaded_spawn(monkeypatch):
    """The prefetcher in a thread of this process instead of a detached process."""
    threads = []

    def spawn(work, log_path):
        def logged():
            try:
                work()
            except Exception as exc:  # as spool.spawn: into the worker's log
                with open(log_path, "a") as log:
                    log.write("pgdr worker failed: %s\n" % exc)
        thread = threading.Thread(target=logged)
        thread.start()
        threads.append(thread)
    monkeypatch.setattr(spool, "spawn", spawn)
    return threads


@pytest.mark.parametrize("spooled", [False, True])
@pytest.mark.parametrize("error", [
    errors.IntegrityError("sha256 differs", code="checksum_mismatch"),
    errors.RepositoryError("503 Slow Down", code="repository_unavailable"),
    RuntimeError("a bug")], ids=lambda e: type(e).__name__)
def test_d11_2_unreadable_is_not_absent(node, monkeypatch, tmp_path, spooled, error):
    """The prefetcher marks a segment it cannot read as failed; the call then fetches it
    itself, and only a truly absent segment exits 1."""
    second = next_name(FIRST)
    for name in (FIRST, second):
        assert node["push"](name, compression="none")[0] == 0
    _damage(monkeypatch, second, error)
    threads = _threaded_spawn(monkeypatch)
    options = {"archive_idle": 1}
    if spooled:
        options.update(spool_dir=tmp_path / "spool", prefetch=4)
    assert node["run"]("wal-fetch", FIRST, "pg_wal/RECOVERYXLOG", **options)[0] == 0
    code, out, err = node["run"]("wal-fetch", second, "pg_wal/RECOVERYXLOG", **options)
    assert code == 128 + getattr(error, "exit_code", 1), err
    assert not (node["pgdata"] / "pg_wal" / "RECOVERYXLOG").exists() or \
        (node["pgdata"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == segment(FIRST)
    assert leftovers(node["pgdata"] / "pg_wal") == []
    # the segment after the damaged one is absent: that, and only that, exits 1
    assert node["run"]("wal-fetch", next_name(FIRST, 2), "pg_wal/RECOVERYXLOG",
                       **options)[0] == 1
    for thread in threads:
        thread.join()
    if spooled:
        staged = os.listdir(str(tmp_path / "spool" / "fetch"))[0]
        marks = os.listdir(str(tmp_path / "spool" / "fetch" / staged))
        assert second not in marks  # never staged for PostgreSQL


def test_d11_2_full_spool_falls_back_to_direct_fetch(node, monkeypatch, tmp_path):
    names = [next_name(FIRST, i) for i in range(3)]
    for name in names:
        assert node["push"](name)[0] == 0
    threads = _threaded_spawn(monkeypatch)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(wal_fetch, "_stage", full)
    options = {"spool_dir": tmp_path / "spool", "prefetch": 4, "archive_idle": 1}
    for name in names:
        code, out, err = node["run"]("wal-fetch", name, "pg_wal/RECOVERYXLOG", **options)
        assert code == 0 and out["prefetched"] is False, err
        assert (node["pgdata"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == segment(name)
    for thread in threads:
        thread.join()
    staged_dir = spool.fetch_dir(resolve({"cluster": "main", "repo_type": "posix",
                                          "repo_path": str(node["repo"]),
                                          "spool_dir": str(tmp_path / "spool")}, environ={}),
                                 str(node["pgdata"]))
    assert wal_fetch.PAUSED in os.listdir(staged_dir)  # paused, calls fetch directly
    with open(os.path.join(staged_dir, "worker.log")) as log:
        assert "prefetching paused" in log.read()
    assert leftovers(staged_dir) == [] and leftovers(node["pgdata"] / "pg_wal") == []


def _counted_fetches(monkeypatch):
    counts = {}
    real = wal_fetch.fetch

    def fetch(storage, settings, name):
        counts[name] = counts.get(name, 0) + 1
        return real(storage, settings, name)
    monkeypatch.setattr(wal_fetch, "fetch", fetch)
    return counts


def test_prefetched_segments_are_downloaded_once_and_again_when_recovery_starts_over(
        node, monkeypatch, tmp_path):
    """Each segment is read from the repository once, even after a call took it (the
    worker used to fetch the taken segment again); a recovery that starts over from an
    earlier segment, or asks for the same one again, gets it at once, not after the
    call's 30 s wait."""
    names = [next_name(FIRST, i) for i in range(6)]
    for name in names:
        assert node["push"](name)[0] == 0
    (node["pgdata"] / "global").mkdir()
    (node["pgdata"] / "global" / "pg_control").write_bytes(
        struct.pack("<Q", 7000000000000000001) + b"\0" * 8184)
    counts = _counted_fetches(monkeypatch)
    threads = _threaded_spawn(monkeypatch)
    options = {"spool_dir": tmp_path / "spool", "prefetch": 3, "archive_idle": 2}
    # a second pass (recovery started over), then the same segment asked again (a retry)
    for name in names[:4] + names[1:3] + names[2:3]:
        started = time.time()
        code, out, err = node["run"]("wal-fetch", name, "pg_wal/RECOVERYXLOG", **options)
        assert code == 0 and out["prefetched"] is True, err
        assert (node["pgdata"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == segment(name)
        assert time.time() - started < 10
        time.sleep(0.2)  # the worker reads the request and stages ahead
    for thread in threads:
        thread.join()
    # the first after the restart's window (prefetch 3: the 2nd to 4th) only once
    assert [counts.get(n) for n in names] == [1, 2, 3, 2, 1, 1], counts


def test_d11_2_unwritable_spool_falls_back_to_direct_fetch(node, tmp_path):
    assert node["push"](FIRST)[0] == 0
    blocker = tmp_path / "spool-is-a-file"
    blocker.write_text("")
    code, out, err = node["run"]("wal-fetch", FIRST, "pg_wal/RECOVERYXLOG",
                                 spool_dir=blocker, prefetch=4)
    assert code == 0 and "fetching %s directly" % FIRST in err


def test_d11_2_killed_download_files_are_removed_by_the_next_worker(tmp_path):
    staged = tmp_path / "fetch"
    staged.mkdir()
    for entry in (FIRST + ".tmp.4242", FIRST + ".scan.tmp.4242", FIRST, "requested.tmp"):
        (staged / entry).write_bytes(b"x")
    wal_fetch._remove_staging(str(staged))
    assert sorted(os.listdir(str(staged))) == [FIRST, "requested.tmp"]


# -- defect 4: the prefetch cache belongs to one repository, system and restore ---------------

def _settings(tmp_path, **extra):
    values = {"cluster": "main", "repo_type": "s3", "s3_endpoint": "https://s3.example",
              "s3_bucket": "bk", "spool_dir": str(tmp_path / "spool")}
    values.update(extra)
    return resolve(values, environ={})


def _restore_marker(pgdata, system, restored_at):
    (pgdata / RESTORE_MARKER).write_text(json.dumps({"system_identifier": system,
                                                     "restored_at": restored_at}))


def test_d11_4_fetch_dir_is_per_repository_system_and_restore(tmp_path):
    pgdata = tmp_path / "target"
    pgdata.mkdir()
    _restore_marker(pgdata, "111", "2026-12-02T09:00:00Z")
    first = spool.fetch_dir(_settings(tmp_path, repo_prefix="a"), str(pgdata))
    (tmp_path / "spool" / "fetch" / os.path.basename(first) / FIRST).write_bytes(b"A")
    assert spool.fetch_dir(_settings(tmp_path, repo_prefix="a"), str(pgdata)) == first
    # another prefix, system, endpoint or bucket: another directory
    others = [spool.fetch_dir(_settings(tmp_path, repo_prefix="other"), str(pgdata)),
              spool.fetch_dir(_settings(tmp_path, s3_bucket="ck"), str(pgdata)),
              spool.fetch_dir(_settings(tmp_path, s3_endpoint="https://other"), str(pgdata))]
    _restore_marker(pgdata, "222", "2026-12-02T09:00:00Z")
    others.append(spool.fetch_dir(_settings(tmp_path, repo_prefix="a"), str(pgdata)))
    # the same system restored again (same second, a new marker file): another restore
    _restore_marker(pgdata, "111", "2026-12-02T09:00:00Z")
    os.utime(str(pgdata / RESTORE_MARKER), ns=(1, 1))
    others.append(spool.fetch_dir(_settings(tmp_path, repo_prefix="a"), str(pgdata)))
    assert len(set(others + [first])) == len(others) + 1
    # each new restore removed the earlier restores' directories for this path
    assert os.listdir(str(tmp_path / "spool" / "fetch")) == [os.path.basename(others[-1])]


def test_d11_4_other_targets_and_running_prefetchers_are_kept(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _restore_marker(one, "1", "t1")
    kept = spool.fetch_dir(_settings(tmp_path), str(one))
    running = spool.Lock(os.path.join(kept, "fetch.lock"))
    assert running.acquire()
    other = spool.fetch_dir(_settings(tmp_path), str(two))
    _restore_marker(one, "1", "t2")
    new = spool.fetch_dir(_settings(tmp_path), str(one))
    assert os.path.isdir(kept) and os.path.isdir(other) and os.path.isdir(new)
    running.release()
    _restore_marker(one, "1", "t3")
    spool.fetch_dir(_settings(tmp_path), str(one))
    assert not os.path.isdir(kept) and not os.path.isdir(new) and os.path.isdir(other)


# -- defect 11: only WAL is pushed ----------------------------------------------------------

def test_d11_11_wal_push_refuses_what_is_not_wal(node):
    code, out, err = node["run"]("wal-push", "/etc/passwd")
    assert code == 2 and out["error"]["code"] == "wal_path_invalid"
    assert "/etc/passwd is not a WAL file" in err and "nothing was uploaded" in err
    bad = {
        "size": segment(FIRST)[:SEG // 2 + 1],
        "magic": segment(FIRST, magic=0x1234),
        "position": segment(next_name(FIRST)),   # another segment's first page
        "small": segment(FIRST, size=SEG // 2),
    }
    for what, data in sorted(bad.items()):
        code, out, err = node["push"](FIRST, data)
        assert code == 2 and out["error"]["code"] == "wal_file_invalid", (what, err)
        assert FIRST in err and "nothing was uploaded" in err
    assert not any(files for dummy, dummy2, files in os.walk(str(node["repo"])))
    for name, data in ((FIRST, segment(FIRST)), (FIRST + ".partial", b"\0" * SEG),
                       ("00000002.history", b"1\t0/3000000\tno recovery target specified\n"),
                       (FIRST + ".00000028.backup", b"START WAL LOCATION: 0/3000028\n")):
        assert node["push"](name, data)[0] == 0, name


# -- defect 13: results do not pile up, and a stalled archive says why ------------------------

def test_d11_13_results_of_done_segments_are_removed(tmp_path):
    pg_wal, out = tmp_path / "pg_wal", tmp_path / "out"
    (pg_wal / "archive_status").mkdir(parents=True)
    out.mkdir()
    pending = [next_name(FIRST, i) for i in range(3)]
    done = [next_name(FIRST, i) for i in range(3, 100)]
    for name in pending:
        (pg_wal / name).write_bytes(b"")
        (pg_wal / "archive_status" / (name + ".ready")).write_text("")
    for name in pending + done:
        (out / (name + ".ok")).write_text("")
    (out / (done[0] + ".error")).write_text("x")
    (out / (done[1] + ".ok.tmp.4242")).write_text("")
    (out / "push.lock").write_text("")
    (out / "worker.log").write_text("")
    wal_push._clean_results(str(pg_wal), str(out))
    assert sorted(os.listdir(str(out))) == sorted([n + ".ok" for n in pending]
                                                  + ["push.lock", "worker.log"])
    assert wal_push._ready_names(str(pg_wal), str(out)) == []  # the pending ones have a result


def test_d11_13_stale_ok_race_is_closed(tmp_path):
    """A call consumed its .ok while PostgreSQL had not yet renamed .ready to .done: the
    worker pushed the segment again and left an .ok no call would ever read. Results
    now stay until .ready is gone, and the worker removes them then."""
    pg_wal, out = tmp_path / "pg_wal", tmp_path / "out"
    (pg_wal / "archive_status").mkdir(parents=True)
    out.mkdir()
    (pg_wal / FIRST).write_bytes(b"")
    (pg_wal / "archive_status" / (FIRST + ".ready")).write_text("")
    (out / (FIRST + ".ok")).write_text("")
    assert wal_push._ready_names(str(pg_wal), str(out)) == []  # not pushed again
    os.rename(str(pg_wal / "archive_status" / (FIRST + ".ready")),
              str(pg_wal / "archive_status" / (FIRST + ".done")))
    wal_push._clean_results(str(pg_wal), str(out))
    assert os.listdir(str(out)) == []


def test_d11_13_an_idle_worker_stays_until_its_results_are_done(tmp_path):
    """CI found three .ok files left in the spool for good: the worker went idle before
    PostgreSQL marked their segments done, and only a worker removes results. An idle
    worker now stays (at most archive_wait more) until none is left, then exits."""
    pg_wal, out = tmp_path / "pg_wal", tmp_path / "out"
    (pg_wal / "archive_status").mkdir(parents=True)
    out.mkdir()
    (pg_wal / FIRST).write_bytes(b"")
    (pg_wal / "archive_status" / (FIRST + ".ready")).write_text("")
    (out / (FIRST + ".ok")).write_text("")
    settings = resolve({"cluster": "main", "archive_idle": 2, "archive_wait": 5}, environ={})
    assert wal_push._keep_running(settings, 1, str(pg_wal), str(out))  # not idle yet
    assert wal_push._keep_running(settings, 3, str(pg_wal), str(out))  # its .ok is pending
    assert not wal_push._keep_running(settings, 7, str(pg_wal), str(out))  # bounded
    os.rename(str(pg_wal / "archive_status" / (FIRST + ".ready")),
              str(pg_wal / "archive_status" / (FIRST + ".done")))
    assert not wal_push._keep_running(settings, 3, str(pg_wal), str(out))
    assert os.listdir(str(out)) == []  # removed on the way out


def test_d11_13_timeout_names_the_workers_last_error(tmp_path, monkeypatch):
    pgdata = tmp_path / "data"
    (pgdata / "pg_wal" / "archive_status").mkdir(parents=True)
    (pgdata / "global").mkdir()
    (pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", 42) + b"\0" * 100)
    path = pgdata / "pg_wal" / FIRST
    path.write_bytes(segment(FIRST))
    (pgdata / "pg_wal" / "archive_status" / (FIRST + ".ready")).write_text("")
    monkeypatch.setattr(spool, "spawn", lambda work, log: None)  # a worker that hangs
    settings = resolve({"cluster": "main", "spool_dir": str(tmp_path / "spool"),
                        "archive_wait": 1}, environ={})
    out = spool.archive_dir(settings, str(pgdata))
    with open(os.path.join(out, "worker.log"), "w") as log:
        log.write("2026-12-02T09:00:00 pgdr worker failed: endpoint unreachable: "
                  "Connection refused\n")
    with pytest.raises(errors.PgdrError) as failed:
        wal_push._push_async(settings, str(path), FIRST)
    assert failed.value.code == "wal_push_timeout"
    assert "endpoint unreachable: Connection refused" in failed.value.msg
    assert "is not running" in failed.value.msg


def test_d11_13_an_older_result_is_never_taken_for_a_newer_file(tmp_path):
    """wal-push exits 0 only once this file is stored: an .ok left from an earlier file of
    the same name (same system identifier: a restored or re-initialised cluster) is not
    this file's result."""
    pg_wal, out = tmp_path / "pg_wal", tmp_path / "out"
    (pg_wal / "archive_status").mkdir(parents=True)
    out.mkdir()
    (pg_wal / FIRST).write_bytes(segment(FIRST))
    (pg_wal / "archive_status" / (FIRST + ".ready")).write_text("")
    (out / (FIRST + ".ok")).write_text("")
    os.utime(str(out / (FIRST + ".ok")), ns=(10 ** 18, 10 ** 18))
    os.utime(str(pg_wal / FIRST), ns=(2 * 10 ** 18, 2 * 10 ** 18))
    assert wal_push._ready_names(str(pg_wal), str(out)) == [FIRST]
    assert not (out / (FIRST + ".ok")).exists()
    (out / (FIRST + ".ok")).write_text("")
    os.utime(str(out / (FIRST + ".ok")), ns=(3 * 10 ** 18, 3 * 10 ** 18))
    assert wal_push._ready_names(str(pg_wal), str(out)) == []


# -- defect 3: a segment the plan counted on never reads as the end of the archive ----------

def test_d11_3_planned_segment_absent_now_is_fatal_not_the_end(tmp_path):
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands.restore import (
        planned_runs)
    runs = planned_runs([("000000010000000000000003", 3), ("000000010000000000000004", 4),
                         ("000000020000000000000005", 5)])
    assert runs == [[1, 3, 4], [2, 5, 5]]
    (tmp_path / RESTORE_MARKER).write_text(json.dumps({"wal_planned": runs,
                                                       "wal_segment_size": 16 << 20}))
    absent = errors.WalNotFound("WAL X is not in the archive", code="wal_not_found")
    with pytest.raises(errors.IntegrityError) as info:
        wal_fetch._refuse_planned_absence(str(tmp_path), "000000010000000000000004", absent)
    assert info.value.code == "wal_vanished"
    # the same position on another timeline (PostgreSQL tries the newest first), the next
    # segment after the plan (the end of the archive) and history files stay 'not found'
    for name in ("000000020000000000000004", "000000020000000000000006", "00000003.history"):
        wal_fetch._refuse_planned_absence(str(tmp_path), name, absent)


def test_d11_4_restore_command_names_the_repository_the_restore_read(tmp_path):
    """restore --repo-prefix siteB with a config file pointing at siteA: recovery must read
    siteB too, never another system's WAL."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import (
        restore)
    run = restore.RestoreRun.__new__(restore.RestoreRun)
    run.settings = resolve({"cluster": "main", "repo_type": "posix",
                            "repo_path": "/srv/repo b", "repo_prefix": "siteB",
                            "config_file": "/etc/pgdr/pgdr.conf"}, environ={})
    command = run._restore_command()
    assert "--repo-path '/srv/repo b'" in command and "--repo-prefix siteB" in command
    assert "--repo-type posix" in command and command.endswith("%f %p")


def test_d11_4_another_systems_segment_stops_recovery(tmp_path):
    (tmp_path / RESTORE_MARKER).write_text(json.dumps({"system_identifier": 7000000000000000002}))
    dest = tmp_path / "RECOVERYXLOG"
    dest.write_bytes(segment(FIRST))  # system 7000000000000000001
    with pytest.raises(errors.IntegrityError) as info:
        wal_fetch._refuse_other_system(str(tmp_path), FIRST, str(dest))
    assert info.value.code == "wal_other_system"
    (tmp_path / RESTORE_MARKER).write_text(json.dumps({"system_identifier": 7000000000000000001}))
    wal_fetch._refuse_other_system(str(tmp_path), FIRST, str(dest))
