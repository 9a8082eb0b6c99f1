"""The point grammar and the Planner on a posix repository built in a temp dir, with small
synthetic WAL segments (real page and record headers, CRC-32C): backup choice, the
timeline walk, gaps, missing or invalid history files, and the window's end read from
the last archived segment's records (issue 11, defects 3, 11 and 12)."""
import datetime
import hashlib
import struct

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import (
    archive, catalog, options, recovery)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    ConfigError, IntegrityError, NotFound)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import walend
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres.wal import (
    format_lsn, parse_lsn, segment_name)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres.walscan import (
    crc32c, segment_offset)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import restore
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage import open_storage

SEG = 1024 * 1024          # wal_segment_size of the synthetic cluster
PAGE = 8192
EPOCH_2000 = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
T0 = datetime.datetime(2026, 11, 24, 6, 0, 0, tzinfo=datetime.timezone.utc)


# -- synthetic WAL ------------------------------------------------------------------------
def _micros(moment):
    return int((moment - EPOCH_2000).total_seconds() * 1000000)


def commit(moment, xid=1000):
    return (1, 0x00, struct.pack("<qI", _micros(moment), 0), xid)


def running(oldest, next_xid):
    return (8, 0x10, struct.pack("<iiBxxxIII", 0, 0, 0, next_xid, oldest, oldest), 0)


def filler(size=200):
    return (0, 0x00, b"\x11" * size, 0)


def switch():
    return (0, 0x40, b"", 0)


def _record(rmid, info, data, xid, prev):
    body = (bytes([255, len(data)]) + data) if len(data) < 256 else (
        bytes([254]) + struct.pack("<I", len(data)) + data)
    if not data:
        body = b""
    total = 24 + len(body)
    head = struct.pack("<IIQBBxx", total, xid, prev, info, rmid)
    crc = crc32c(body + head)
    return head + struct.pack("<I", crc) + body


def segment(tli, segno, records, size=SEG):
    """A WAL segment whose record stream holds ``records`` from its first byte, then zeros;
    returns (bytes, [start LSN of each record])."""
    start = segno * size
    stream, starts, prev = b"", [], 0
    for rmid, info, data, xid in records:
        position = len(stream)
        lsn = start + segment_offset(PAGE, position)
        raw = _record(rmid, info, data, xid, prev)
        stream += raw + b"\x00" * (-len(raw) % 8)
        starts.append(lsn)
        prev = lsn
    out = bytearray(size)
    pos, page = 0, 0
    while pos < len(stream):
        offset = page * PAGE
        if page == 0:
            header = struct.pack("<HHIQIxxxxQII", 0xD110, 0x0002, tli, start + offset, 0,
                                 7, size, PAGE)
        else:
            header = struct.pack("<HHIQIxxxx", 0xD110, 0x0000, tli, start + offset, 0)
        chunk = stream[pos:pos + PAGE - len(header)]
        out[offset:offset + len(header)] = header
        out[offset + len(header):offset + len(header) + len(chunk)] = chunk
        pos += len(chunk)
        page += 1
    return bytes(out), starts


# -- repository ---------------------------------------------------------------------------
@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("PGDR_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "repo"
    root.mkdir()
    storage = open_storage(options.resolve({"repo_type": "posix", "repo_path": str(root)},
                                           environ={}))
    return storage, catalog.Catalog(storage, "main")


def add_backup(storage, backup_id, stop_lsn, stop_at, timeline=1, stop_xmax=None, wal=(),
               **extra):
    """A complete backup manifest; ``wal``: [(name, bytes)] of its own WAL."""
    prefix = catalog.backup_prefix("main", backup_id)
    records = []
    for name, raw in wal:
        key = "%swal/%s" % (prefix, name)
        storage.put(key, raw)
        digest = hashlib.sha256(raw).hexdigest()
        records.append({"name": name, "key": key, "size": len(raw), "sha256": digest,
                        "stored_size": len(raw), "stored_sha256": digest})
    listing = catalog.encode_file_list({"files": [], "bundles": [], "wal": records})
    storage.put(prefix + catalog.FILE_LIST, listing)
    stop = parse_lsn(stop_lsn)
    manifest = {"format": catalog.FORMAT, "id": backup_id, "cluster": "main", "type": "full",
                "chain": [backup_id], "timeline": timeline, "start_lsn": stop_lsn,
                "stop_lsn": stop_lsn, "stop_xmax": stop_xmax,
                "stop_wal": segment_name(timeline, (stop - 1) // SEG, SEG),
                "stop_time": stop_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "stop_epoch": stop_at.timestamp(), "settings": {"wal_segment_size": SEG},
                "file_list_sha256": hashlib.sha256(listing).hexdigest()}
    manifest.update(extra)
    catalog.write_manifest(storage, "main", manifest)
    return manifest


def put_segment(storage, tli, segno, records):
    raw, starts = segment(tli, segno, records)
    name = segment_name(tli, segno, SEG)
    storage.put(archive.wal_key("main", name, ""), raw)
    return name, starts


def put_commits(storage, commits, tli=1):
    """{segment number: seconds after T0}: one segment with one commit then a filler."""
    for segno, seconds in sorted(commits.items()):
        put_segment(storage, tli, segno, [commit(at(seconds)), filler()])


def put_history(storage, tli, text):
    storage.put("main/wal/history/%08X.history" % tli, text.encode("utf-8"))


def planner(repo, **kwargs):
    storage, cat = repo
    return recovery.Planner(storage, cat, "main", **kwargs)


def plan(repo, text, base=None, **kwargs):
    return planner(repo, **kwargs).plan(recovery.parse_point(text), base)


def at(seconds):
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def linear(repo):
    """Backup B (ends in segment 1 at 06:00:00) then segments 2-4 with commits at
    +10 s (2), +20 s (3), +30 s and +31 s (4), the last one followed by a checkpoint-like
    record: the end of the archive on timeline 1."""
    storage, cat = repo
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0), stop_xmax=900)
    put_segment(storage, 1, 2, [filler(), commit(at(10)), filler()])
    put_segment(storage, 1, 3, [filler(), commit(at(20))])
    name, starts = put_segment(storage, 1, 4, [commit(at(30)), filler(), commit(at(31)),
                                               filler(300)])
    return storage, starts


# -- grammar (defect 11) --------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "name:before\nupgrade", "name:before_upgrade\n", "name:tab\there", "name:bell\x07",
    "name:" + "x" * 64, "name:" + "\u00e9" * 32,          # 64 bytes in UTF-8, 32 characters
    "2026-11-24T06:15:00+99:99", "2026-11-24T06:15:00+16:00", "2026-11-24T06:15:00-15:60",
    "2026-02-30T06:15:00Z", "2026-11-24T24:00:00Z", "2026-11-24T06:15:60Z",
    "9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00", "xid:2", "xid:4294967296",
    "lsn:0/XYZ", "time:tomorrow", "backup:", "name:",
])
def test_d11_11_point_grammar_refuses_what_postgresql_refuses(text):
    with pytest.raises(ConfigError) as info:
        recovery.parse_point(text)
    assert info.value.code == "point_invalid"
    assert repr(text.strip())[1:-1][:20] in info.value.msg or text.strip() in info.value.msg
    assert "expected" in info.value.msg and "ISO 8601" in info.value.msg


def test_d11_11_point_grammar_accepts_the_edges():
    assert recovery.parse_point("name:" + "x" * 63).value == "x" * 63
    assert recovery.parse_point("name:" + "\u00e9" * 31 + "x").kind == "name"  # 63 bytes
    moment = recovery.parse_point("2026-11-24T06:15:00+15:59").value
    assert recovery.iso(moment) == "2026-11-23T14:16:00Z"
    assert recovery.iso(recovery.parse_point("2026-11-24 06:15-0130").value) == \
        "2026-11-24T07:45:00Z"
    assert recovery.parse_point("2028-02-29T00:00:00Z").kind == "time"
    assert recovery.parse_point(" latest ").kind == "latest"


# -- backup choice and the window's end (defect 12) ---------------------------------------
def test_backup_choice_by_time_and_lsn(repo):
    storage, cat = repo
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0))
    add_backup(storage, "20261124T060100Z-full", "0/400000", at(60))
    put_commits(storage, {2: 10, 3: 50, 4: 70, 5: 80})
    assert plan(repo, stamp(at(30))).backup["id"] == "20261124T055900Z-full"
    assert plan(repo, stamp(at(75))).backup["id"] == "20261124T060100Z-full"
    assert plan(repo, "lsn:0/300000").backup["id"] == "20261124T055900Z-full"
    assert plan(repo, "lsn:0/480000").backup["id"] == "20261124T060100Z-full"
    with pytest.raises(NotFound) as info:
        plan(repo, stamp(at(-10)))
    assert info.value.code == "point_unreachable"


def test_d11_5_immediate_never_falls_back_past_a_damaged_newest_backup(repo):
    """The newest backup's manifest is damaged: 'immediate' refuses instead of restoring
    the older intact one as if it were the newest; every backup gone -> no_backup names
    the damaged ones."""
    storage, cat = repo
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0))
    add_backup(storage, "20261124T060100Z-full", "0/400000", at(60))
    key = catalog.backup_prefix("main", "20261124T060100Z-full") + catalog.MANIFEST
    storage.put(key, storage.get(key).replace(b'"timeline": 1', b'"timeline": 2'))
    with pytest.raises(IntegrityError) as info:
        plan(repo, "immediate")
    assert info.value.code == "manifest_damaged" and "20261124T060100Z-full" in info.value.msg
    assert plan(repo, "20261124T055900Z-full").backup["id"] == "20261124T055900Z-full"
    storage.delete([catalog.backup_prefix("main", "20261124T055900Z-full") + catalog.MANIFEST])
    with pytest.raises(NotFound) as info:
        planner((storage, catalog.Catalog(storage, "main"))).plan(
            recovery.parse_point("immediate"))
    assert info.value.code == "no_backup" and "20261124T060100Z-full" in info.value.msg


def test_d11_12_window_ends_at_the_last_record_and_the_last_commit(linear, repo):
    storage, starts = linear
    result = plan(repo, "latest")
    window = result.window
    assert window["latest_lsn"] == format_lsn(starts[-1])
    assert window["latest_time"] == recovery.iso(at(31))
    assert "commit" in window["latest_time_source"]
    assert result.recovery["recovery_target_timeline"] == "1"
    assert [w[0] for w in result.wal_needed] == [segment_name(1, n, SEG) for n in (2, 3, 4)]
    # an LSN up to the start of the last complete record is reachable, after it is not
    assert plan(repo, "lsn:" + format_lsn(starts[-1])).recovery["recovery_target_lsn"]
    with pytest.raises(NotFound) as info:
        plan(repo, "lsn:" + format_lsn(starts[-1] + 8))
    assert info.value.code == "point_unreachable"
    assert "last complete record starts at %s" % format_lsn(starts[-1]) in info.value.msg
    with pytest.raises(NotFound):
        plan(repo, "lsn:0/4F0000")   # inside the last segment, after its last record
    # a time needs a later commit: before 06:00:31 yes, at or after it no
    assert plan(repo, stamp(at(30.5))).backup["id"] == "20261124T055900Z-full"
    for moment in (at(31), at(40)):
        with pytest.raises(NotFound) as info:
            plan(repo, stamp(moment))
        assert info.value.code == "point_unreachable"
        assert recovery.iso(at(31)) in info.value.msg and "reachable window" in info.value.msg
    # not inclusive: stopping before the commit at exactly 06:00:31 is reachable
    assert plan(repo, stamp(at(31)), inclusive=False).recovery


def test_d11_12_window_scan_is_cached(linear, repo, monkeypatch):
    storage, starts = linear
    first = planner(repo).window()
    reads = []
    original = type(storage).get

    def counting(self, key):
        reads.append(key)
        return original(self, key)
    monkeypatch.setattr(type(storage), "get", counting)
    second = planner(repo).window()
    assert first == second
    assert not [k for k in reads if "/wal/0000" in k], reads


def test_d11_12_window_without_commit_in_the_last_segments(repo):
    storage, cat = repo
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0))
    put_segment(storage, 1, 2, [commit(at(5)), filler()])
    put_segment(storage, 1, 3, [filler(), filler()])   # checkpoints only
    window = planner(repo).window()
    assert window["latest_time"] == recovery.iso(at(5))
    assert segment_name(1, 2, SEG) in window["latest_time_source"]


def test_d11_12_xid_before_the_oldest_backup_is_refused(repo):
    storage, cat = repo
    own, dummy = segment(1, 1, [filler(), running(oldest=1000, next_xid=1010), filler()])
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0), stop_xmax=1010,
               wal=[(segment_name(1, 1, SEG), own)])
    add_backup(storage, "20261124T060100Z-full", "0/300000", at(60), stop_xmax=2000)
    put_segment(storage, 1, 2, [commit(at(10)), filler()])
    put_segment(storage, 1, 3, [commit(at(70)), filler()])
    with pytest.raises(NotFound) as info:
        plan(repo, "xid:900")
    assert info.value.code == "point_unreachable"
    assert "xid 900 ended before the oldest backup" in info.value.msg
    # possibly still running at the oldest backup's end: from the oldest one
    assert plan(repo, "xid:1005").backup["id"] == "20261124T055900Z-full"
    # assigned after the newest backup's end: from the newest one
    assert plan(repo, "xid:2500").backup["id"] == "20261124T060100Z-full"


def test_d11_12_xid_without_running_record_says_so(repo):
    storage, cat = repo
    own, dummy = segment(1, 1, [filler()])
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0), stop_xmax=None,
               wal=[(segment_name(1, 1, SEG), own)])
    put_segment(storage, 1, 2, [commit(at(10)), filler()])
    result = plan(repo, "xid:900")
    assert any("record no stop_xmax" in n for n in result.notes)
    assert any("cannot be checked" in n for n in result.notes)


def test_d11_12_backup_id_is_the_base_of_the_point(repo):
    storage, cat = repo
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0))
    add_backup(storage, "20261124T060100Z-full", "0/300000", at(60))
    put_commits(storage, {2: 10, 3: 70, 4: 80})
    # the planner alone would take the newer backup; the base given is used
    result = plan(repo, stamp(at(75)), base="20261124T055900Z-full")
    assert result.backup["id"] == "20261124T055900Z-full"
    assert "recovery_target_time" in result.recovery
    with pytest.raises(NotFound) as info:
        plan(repo, stamp(at(30)), base="20261124T060100Z-full")
    assert info.value.code == "point_unreachable"
    assert "before the end of backup 20261124T060100Z-full" in info.value.msg
    with pytest.raises(NotFound):
        plan(repo, "lsn:0/250000", base="20261124T060100Z-full")
    with pytest.raises(ConfigError) as info:
        plan(repo, "20261124T060100Z-full", base="20261124T055900Z-full")
    assert info.value.code == "point_invalid"


# -- gaps and latest (defect 3) ---------------------------------------------------------------
def test_d11_3_latest_refuses_a_gap_and_names_the_reachable_end(linear, repo):
    storage, starts = linear
    put_segment(storage, 1, 6, [commit(at(50)), filler()])   # segment 5 missing
    with pytest.raises(NotFound) as info:
        plan(repo, "latest")
    assert info.value.code == "wal_gap"
    assert "segment %s is missing" % segment_name(1, 5, SEG) in info.value.msg
    assert segment_name(1, 6, SEG) in info.value.msg
    assert "LSN %s" % format_lsn(starts[-1]) in info.value.msg
    # the reachable end itself is restorable
    assert plan(repo, "lsn:" + format_lsn(starts[-1])).recovery
    with pytest.raises(NotFound) as info:
        plan(repo, stamp(at(45)))
    assert info.value.code == "point_unreachable" and "gap" in info.value.msg
    window = planner(repo).window()
    assert window["missing_segment"] == segment_name(1, 5, SEG)


def test_d11_3_the_segment_being_written_is_not_a_gap(linear, repo):
    result = plan(repo, "latest")       # nothing after segment 4: the archive just ends
    assert result.recovery and result.window["latest_segment"] == segment_name(1, 4, SEG)
    assert planner(repo).window()["gap_before"] is None


@pytest.fixture
def promoted(repo):
    """Timeline 1: backup, segments 2-4; timeline 2 left it at 0/480000 (in segment 4)
    and archived segments 4-5."""
    storage, cat = repo
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0))
    put_segment(storage, 1, 2, [commit(at(10)), filler()])
    put_segment(storage, 1, 3, [commit(at(20)), filler()])
    put_segment(storage, 1, 4, [commit(at(30)), filler()])
    put_segment(storage, 2, 4, [commit(at(40)), filler()])
    name, starts = put_segment(storage, 2, 5, [commit(at(50)), filler()])
    put_history(storage, 2, "1\t0/480000\tno recovery target specified\n")
    return storage, starts


def test_timeline_walk_follows_the_history(promoted, repo):
    storage, starts = promoted
    result = plan(repo, "latest")
    assert result.timeline == 2
    assert [w[0] for w in result.wal_needed] == [
        segment_name(1, 2, SEG), segment_name(1, 3, SEG), segment_name(2, 4, SEG),
        segment_name(2, 5, SEG)]
    assert result.window["latest_time"] == recovery.iso(at(50))
    assert plan(repo, "latest", timeline="current").timeline == 1


def test_a_backup_on_the_abandoned_branch_is_skipped(promoted, repo):
    """After a PITR: timeline 2 left timeline 1 at 0/480000, and a backup was then taken
    on timeline 1 (ending at 0/4F0000, after the switch). latest, a time on timeline 2 and
    a new standby start from the older backup that is on the way to timeline 2, and say
    why; with only the abandoned backup, the refusal names it."""
    storage, starts = promoted
    add_backup(storage, "20261124T055935Z-full", "0/4F0000", at(35))
    result = plan(repo, "latest")
    assert result.backup["id"] == "20261124T055900Z-full" and result.timeline == 2
    assert any("20261124T055935Z-full skipped" in note and "timeline 2" in note
               for note in result.notes), result.notes
    assert plan(repo, stamp(at(45))).backup["id"] == "20261124T055900Z-full"
    assert planner(repo).standby_base() == "20261124T055900Z-full"
    # staying on timeline 1 (the abandoned history, asked for) takes the newer backup
    assert plan(repo, "latest", timeline="current").backup["id"] == "20261124T055935Z-full"
    storage.delete([o.key for o in storage.list("main/backup/20261124T055900Z-full/")])
    with pytest.raises(NotFound) as info:
        recovery.Planner(storage, catalog.Catalog(storage, "main"), "main").plan(
            recovery.parse_point("latest"))
    assert info.value.code == "point_unreachable"
    assert "20261124T055935Z-full" in info.value.msg


def test_a_standby_following_a_timeline_skips_a_backup_of_another_branch(promoted, repo,
                                                                         tmp_path):
    """Timeline 3 also left timeline 1 (at 0/490000), and the newest backup was taken on
    it: a standby told to follow timeline 2 (the cutover's) starts from the older backup
    on the way to 2, not from the newest, and never fails on it; left to the latest, it
    takes the newest."""
    storage, starts = promoted
    put_history(storage, 3, "1\t0/490000\tanother restore\n")
    put_segment(storage, 3, 4, [commit(at(42)), filler()])
    put_segment(storage, 3, 5, [commit(at(52)), filler()])
    add_backup(storage, "20261124T055955Z-full", "0/500000", at(55), timeline=3)
    assert planner(repo, timeline="2").standby_base() == "20261124T055900Z-full"
    assert planner(repo).standby_base() == "20261124T055955Z-full"
    result = plan(repo, "latest", timeline="2")
    assert result.backup["id"] == "20261124T055900Z-full" and result.timeline == 2
    # check mode of the standbys stage plans the same from the repository alone: its
    # target is the running standby, neither checked nor read
    settings = options.resolve({"repo_type": "posix", "repo_path": str(tmp_path / "repo"),
                                "cluster": "main", "target": str(tmp_path / "running"),
                                "standby": True, "delta": True, "target_timeline": "2"},
                               environ={})
    planned = restore.plan(settings, Progress())
    assert planned["backup"]["id"] == "20261124T055900Z-full"
    assert not (tmp_path / "running").exists()


def test_d11_3_missing_history_is_refused(promoted, repo):
    storage, starts = promoted
    storage.delete(["main/wal/history/00000002.history"])
    for text in ("latest", stamp(at(45))):
        with pytest.raises(NotFound) as info:
            plan(repo, text)
        assert info.value.code == "history_missing"
        assert "00000002.history" in info.value.msg and "timeline 2" in info.value.msg
    # an explicit choice to stay on timeline 1 is allowed
    assert plan(repo, "latest", timeline="current").timeline == 1
    with pytest.raises(NotFound) as info:
        plan(repo, "latest", timeline="2")
    assert info.value.code == "history_missing"
    assert "00000002.history" in planner(repo).window()["problem"]


@pytest.mark.parametrize("text, why", [
    ("2\t0/480000\tedited\n", "not with timeline 1"),      # parent digit changed: 1 -> 2
    ("3\t0/480000\tedited\n", "not with timeline 1"),
    ("0\t0/480000\tedited\n", "not with timeline 1"),
    ("1\t0/480000\tx\n2\t0/500000\ty\n", "not below 2"),
    ("1\t0/580000\tedited\n", "before that"),              # WAL of 2 before its switch
    ("1\t0/900000\tedited\n", "beyond timeline 1's archive"),
    ("1\tnot-an-lsn\tedited\n", "not a valid timeline history"),
    ("", "lists no parent"),
])
def test_d11_3_invalid_history_is_refused(promoted, repo, text, why):
    storage, starts = promoted
    storage.delete(["main/wal/history/00000002.history"])
    put_history(storage, 2, text)
    with pytest.raises(IntegrityError) as info:
        plan(repo, "latest")
    assert info.value.code == "history_invalid", info.value.msg
    assert why in info.value.msg and "00000002.history" in info.value.msg


def test_d11_3_info_window_reports_a_history_problem(promoted, repo):
    storage, starts = promoted
    storage.delete(["main/wal/history/00000002.history"])
    put_history(storage, 2, "garbage\n")
    window = planner(repo).window()
    assert "history_invalid" in window["problem"] and window["timeline"] == 1


def test_d11_3_history_must_extend_its_parent(promoted, repo):
    storage, starts = promoted
    put_segment(storage, 3, 5, [commit(at(60)), filler()])
    put_history(storage, 3, "1\t0/400000\tx\n2\t0/580000\ty\n")   # 2 left 1 at 0/480000
    with pytest.raises(IntegrityError) as info:
        plan(repo, "latest")
    assert info.value.code == "history_invalid"
    assert "does not extend the history of its parent timeline 2" in info.value.msg
    storage.delete(["main/wal/history/00000003.history"])
    put_history(storage, 3, "1\t0/480000\tx\n2\t0/580000\ty\n")
    assert plan(repo, "latest").timeline == 3


def test_walend_reads_a_segment_that_ends_in_a_switch():
    raw, starts = segment(1, 7, [commit(at(1)), switch(), filler()])
    end = walend.scan_end(raw, 7 * SEG)
    assert end["switch"] and end["last_start"] == starts[1] and end["records"] == 2
    assert end["last_stamp"][2] == "commit"
    assert walend.timestamp(end["last_stamp"][1]) == at(1).replace(tzinfo=None)
    # a damaged last record (CRC) is where recovery stops: the one before is the end
    raw, starts = segment(1, 7, [commit(at(1)), filler(64)])
    broken = bytearray(raw)
    broken[starts[1] - 7 * SEG + 30] ^= 0xFF
    end = walend.scan_end(bytes(broken), 7 * SEG)
    assert end["last_start"] == 7 * SEG + segment_offset(PAGE, 0)


def test_a_standby_backup_reads_the_archives_copy_of_its_stop_segment(repo):
    """A standby cannot switch segments: its backup's copy of the stop segment ends where
    it had replayed. The archive's copy serves the rest: a point after the stop inside
    that segment is reachable, and the window never ends before the backup (nor at a
    commit the backup already holds)."""
    storage, cat = repo
    name, starts = put_segment(storage, 1, 2, [commit(at(-5)), filler(), commit(at(10)),
                                               filler()])
    stop = format_lsn(starts[1])  # after the first commit, before the second
    add_backup(storage, "20261124T055900Z-full", stop, at(0), from_standby=True)
    result = plan(repo, "lsn:" + format_lsn(starts[2]))
    assert [w[0] for w in result.wal_needed] == [name]
    window = plan(repo, "latest").window
    assert window["latest_lsn"] == format_lsn(starts[3]) and \
        window["latest_time"] == recovery.iso(at(10))
    # the drill's LSN range: from the stop to the start of the last segment, never below
    assert planner(repo).reachable_lsns(cat.manifest("20261124T055900Z-full")) == (
        parse_lsn(stop), parse_lsn(stop))


def test_a_standby_backup_whose_segment_holds_only_older_commits_ends_the_window_at_itself(
        repo):
    storage, cat = repo
    name, starts = put_segment(storage, 1, 2, [commit(at(-5)), filler()])
    add_backup(storage, "20261124T055900Z-full", format_lsn(starts[1]), at(0),
               from_standby=True)
    window = plan(repo, "latest").window
    assert window["latest_lsn"] == format_lsn(starts[1])
    assert window["latest_time"] == recovery.iso(at(0))


def test_a_standby_backup_that_stops_on_a_segment_boundary_needs_nothing_before_it(repo):
    storage, cat = repo
    put_segment(storage, 1, 1, [commit(at(-5)), filler()])
    add_backup(storage, "20261124T055900Z-full", "0/200000", at(0), from_standby=True)
    result = plan(repo, "latest")
    assert result.wal_needed == [] and result.window["latest_lsn"] == "0/200000"
    assert plan(repo, "lsn:0/200000").backup["id"] == "20261124T055900Z-full"
    name, starts = put_segment(storage, 1, 2, [filler(), commit(at(10)), filler()])
    fresh = catalog.Catalog(storage, "main")
    result = recovery.Planner(storage, fresh, "main").plan(recovery.parse_point("latest"), None)
    assert [w[0] for w in result.wal_needed] == [name]
