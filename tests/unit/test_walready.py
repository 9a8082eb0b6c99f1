"""wal-fetch's fast path (walready.py) and the prefetcher's ready directory: a segment is
handed over without the engine only when it was made ready for this very directory and
call; everything else goes the full way (None), and nothing is moved then."""
import os
import shutil
import struct

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import walready
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import wal_fetch
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres.ownfiles import (
    PREFETCH_POINTER, RESTORE_MARKER, SCAN_STOP, SCAN_TAIL)

SYSTEM = 7000000000000000001
NAME = "000000010000000000000005"
NEXT = "000000010000000000000006"
OPTIONS = ["--config", "/etc/pgdr/pgdr.conf", "--cluster", "main"]


def make_pgdata(path, system=SYSTEM):
    (path / "global").mkdir(parents=True)
    (path / "pg_wal").mkdir()
    (path / "global" / "pg_control").write_bytes(struct.pack("<Q", system) + b"\0" * 8184)
    return path


def segment(name, system=SYSTEM, filler=b"w"):
    header = struct.pack("<HHIQIIQII", 0xD110, 0x0002, int(name[:8], 16), 0, 0, 0, system,
                         16 * 1024 * 1024, 8192)
    return header + filler * 4096


@pytest.fixture
def lab(tmp_path):
    pgdata = make_pgdata(tmp_path / "data")
    staged = tmp_path / "spool" / "fetch" / "main-x-y"
    (staged / walready.READY).mkdir(parents=True)
    walready.point(str(pgdata), str(staged), walready.call_key(OPTIONS + [NAME, "p"]))
    (staged / walready.READY / NAME).write_bytes(segment(NAME))
    return pgdata, staged


def call(pgdata, name=NAME):
    return walready.handover(OPTIONS + [name, "pg_wal/RECOVERYXLOG"], str(pgdata))


def test_a_ready_segment_is_handed_over(lab):
    pgdata, staged = lab
    assert call(pgdata) == 0
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == segment(NAME)
    assert not (staged / walready.READY / NAME).exists()
    assert (staged / walready.REQUESTED).read_text() == NAME  # the prefetcher moves on


@pytest.mark.parametrize("args", [
    OPTIONS + ["00000002.history", "pg_wal/RECOVERYHISTORY"],   # history files: full way
    OPTIONS + ["--json", NAME, "pg_wal/RECOVERYXLOG"],          # output asked for
    OPTIONS + ["000000010000000000000005.partial", "pg_wal/RECOVERYXLOG"],
    OPTIONS + ["00000001000000000000000g", "pg_wal/RECOVERYXLOG"],
    [NAME],
    ["--config", "/other.conf", "--cluster", "main", NAME, "pg_wal/RECOVERYXLOG"],  # other call
    ["--cluster", "main", NAME, "pg_wal/RECOVERYXLOG"],
])
def test_other_calls_go_the_full_way_and_move_nothing(lab, args):
    pgdata, staged = lab
    assert walready.handover(args, str(pgdata)) is None
    assert (staged / walready.READY / NAME).exists()
    assert os.listdir(pgdata / "pg_wal") == []


def test_a_pointer_copied_into_another_directory_is_ignored(lab, tmp_path):
    pgdata, staged = lab
    other = tmp_path / "copy"
    shutil.copytree(pgdata, other)  # same files, pointer included: another directory
    assert (other / PREFETCH_POINTER).exists()
    assert call(other) is None
    assert (staged / walready.READY / NAME).exists()


def test_a_later_restore_into_the_same_directory_is_not_pointed_at(lab):
    pgdata, staged = lab
    (pgdata / RESTORE_MARKER).write_text("{}")  # a restore wrote its marker since
    assert call(pgdata) is None
    assert (staged / walready.READY / NAME).exists()


def test_another_system_in_the_same_directory_is_not_pointed_at(lab):
    pgdata, staged = lab
    (pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", SYSTEM + 1) + b"\0" * 8)
    assert call(pgdata) is None


def test_a_stopped_scan_goes_the_full_way(lab):
    pgdata, staged = lab
    (pgdata / SCAN_STOP).write_text("{}")
    assert call(pgdata) is None
    assert (staged / walready.READY / NAME).exists()


def test_a_restored_copy_needs_the_segment_end_and_gets_it(lab):
    pgdata, staged = lab
    (pgdata / RESTORE_MARKER).write_text("{}")
    walready.point(str(pgdata), str(staged),  # written for the restored copy
                   walready.call_key(OPTIONS + [NAME, "p"]))
    assert call(pgdata) is None  # no record-stream end beside it: the full way scans
    assert (staged / walready.READY / NAME).exists()
    (staged / walready.READY / (NAME + walready.TAIL)).write_bytes(NAME.encode() + b"end")
    assert call(pgdata) == 0
    assert (pgdata / SCAN_TAIL).read_bytes() == NAME.encode() + b"end"


def test_an_edited_configuration_or_another_environment_is_not_pointed_at(lab, monkeypatch):
    pgdata, staged = lab
    config = pgdata.parent / "pgdr.conf"
    config.write_text("[pgdr]\ncluster = main\n")
    options = ["--config", str(config)]
    walready.point(str(pgdata), str(staged), walready.call_key(options + [NAME, "p"]))
    args = options + [NAME, "pg_wal/RECOVERYXLOG"]
    monkeypatch.setenv("PGDR_REPO_PREFIX", "other")  # read by the full way, so by the key
    assert walready.handover(args, str(pgdata)) is None
    monkeypatch.delenv("PGDR_REPO_PREFIX")
    config.write_text("[pgdr]\ncluster = main\nrepo_prefix = other\n")  # edited since
    assert walready.handover(args, str(pgdata)) is None
    assert (staged / walready.READY / NAME).exists()
    walready.point(str(pgdata), str(staged), walready.call_key(options + [NAME, "p"]))
    assert walready.handover(args, str(pgdata)) == 0  # the full way pointed again


def test_a_call_without_its_configuration_file_goes_the_full_way(lab):
    pgdata, staged = lab
    assert walready.segment_call(["--cluster", "main", NAME, "p"]) == (None, None)


def test_a_tail_that_is_not_the_segments_goes_the_full_way(lab):
    pgdata, staged = lab
    (pgdata / RESTORE_MARKER).write_text("{}")
    walready.point(str(pgdata), str(staged), walready.call_key(OPTIONS + [NAME, "p"]))
    (staged / walready.READY / (NAME + walready.TAIL)).write_bytes(b"")  # emptied by a crash
    assert call(pgdata) is None
    assert (staged / walready.READY / NAME).exists() and not (pgdata / SCAN_TAIL).exists()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a second filesystem")
def test_pg_wal_on_another_filesystem_goes_the_full_way(lab):
    pgdata, staged = lab
    elsewhere = __import__("tempfile").mkdtemp(dir="/dev/shm")
    try:
        if os.stat(elsewhere).st_dev == os.stat(str(staged)).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        (pgdata / "pg_wal").rmdir()
        os.symlink(elsewhere, str(pgdata / "pg_wal"))
        assert call(pgdata) is None
        assert (staged / walready.READY / NAME).exists() and os.listdir(elsewhere) == []
        assert wal_fetch._ready_system(str(staged), str(pgdata)) is None  # nothing made ready
    finally:
        shutil.rmtree(elsewhere)


def test_a_missing_ready_segment_goes_the_full_way(lab):
    pgdata, staged = lab
    assert call(pgdata, NEXT) is None


def test_an_unreadable_pointer_goes_the_full_way(lab):
    pgdata, staged = lab
    (pgdata / PREFETCH_POINTER).write_text("garbage")
    assert call(pgdata) is None


# -- the prefetcher's side ----------------------------------------------------------------

def stage(staged, names, system=SYSTEM, scans=None):
    found = {}
    for name in names:
        (staged / name).write_bytes(segment(name, system))
        found[name] = (wal_fetch._system_of(segment(name, system)),
                       (scans or {}).get(name))
    return found


def ready_names(staged):
    ready = staged / walready.READY
    return sorted(os.listdir(ready)) if ready.exists() else []


def test_make_ready_moves_in_order_after_the_requested_one(tmp_path):
    staged = tmp_path / "s"
    staged.mkdir()
    names = wal_fetch._next_names(NAME, 4, 16 * 1024 * 1024)
    found = stage(staged, names[:2] + names[3:])  # the third is still downloading
    wal_fetch._make_ready(str(staged), names, found, SYSTEM)
    assert ready_names(staged) == [names[1]]  # not names[0] (a call takes it), not past a gap
    assert (staged / names[0]).exists()


def test_make_ready_stops_at_another_system(tmp_path):
    staged = tmp_path / "s"
    staged.mkdir()
    names = wal_fetch._next_names(NAME, 4, 16 * 1024 * 1024)
    found = stage(staged, names[:2])
    found.update(stage(staged, names[2:], system=SYSTEM + 1))
    wal_fetch._make_ready(str(staged), names, found, SYSTEM)
    assert ready_names(staged) == [names[1]]
    wal_fetch._make_ready(str(staged), names, found, None)  # pg_control unreadable
    assert ready_names(staged) == [names[1]]


def test_make_ready_in_a_restored_copy_stops_at_a_tablespace_creation(tmp_path):
    staged = tmp_path / "s"
    staged.mkdir()
    names = wal_fetch._next_names(NAME, 4, 16 * 1024 * 1024)
    plain = ([], b"head", b"tail")
    scans = {names[0]: plain, names[1]: plain, names[2]: ([(16400, "/x", 80)], b"h", b"t"),
             names[3]: plain}
    found = stage(staged, names, scans=scans)
    wal_fetch._make_ready(str(staged), names, found, SYSTEM)
    assert ready_names(staged) == [names[1], names[1] + walready.TAIL]
    assert (staged / walready.READY / (names[1] + walready.TAIL)).read_bytes() == \
        names[1].encode() + b"tail"
    assert (staged / names[2]).exists()  # the full way scans it and ends the WAL there


def test_make_ready_without_the_predecessor_makes_nothing_ready(tmp_path):
    staged = tmp_path / "s"
    staged.mkdir()
    names = wal_fetch._next_names(NAME, 3, 16 * 1024 * 1024)
    found = stage(staged, names[1:])  # the requested one came from an earlier worker
    wal_fetch._make_ready(str(staged), names, found, SYSTEM)
    assert ready_names(staged) == []


def test_forget_older_clears_ready_segments_recovery_left_behind(tmp_path):
    staged = tmp_path / "s"
    (staged / walready.READY).mkdir(parents=True)
    for entry in (NAME, NAME + walready.TAIL, NEXT, NEXT + walready.TAIL + ".tmp"):
        (staged / walready.READY / entry).write_bytes(b"x")
    wal_fetch._forget_older(str(staged), NEXT)
    assert ready_names(staged) == [NEXT]
