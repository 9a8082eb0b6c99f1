"""CREATE TABLESPACE records found in WAL segments built page by page as PostgreSQL lays
them out (page headers interrupting records, records straddling pages and segments), and
wal-fetch's decision on their locations."""
import json
import os
import struct

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import wal_fetch
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import TargetRefused
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import walscan

PAGE = 8192
PAGES = 8


def record(rmid, info, data, prefix=b""):
    """One WAL record: header with CRC-32C, optional block ids, main data header, data."""
    body = prefix + (bytes([255, len(data)]) if len(data) < 256
                     else b"\xfe" + struct.pack("<I", len(data))) + data
    total = 24 + len(body)
    head = struct.pack("<IIQBBxx", total, 0, 0, info, rmid)
    return head + struct.pack("<I", walscan.crc32c(body + head)) + body


def create_record(oid, path, prefix=b""):
    return record(walscan.RM_TBLSPC_ID, 0x00, struct.pack("<I", oid) + path.encode() + b"\0",
                  prefix)


def aligned(records):
    out = b""
    for rec in records:
        out += rec + b"\0" * (-len(rec) % 8)
    return out


def segments(stream, count=1):
    """Cut a record stream into count segments of PAGES pages each (page headers in)."""
    out, pos = [], 0
    for seg in range(count):
        pages = []
        for page in range(PAGES):
            long_header = page == 0
            size = PAGE - (40 if long_header else 24)
            header = struct.pack("<HHIQI", 0xD110, 2 if long_header else 0, 1, 0, 0)
            header += b"\0" * 4 + (struct.pack("<QII", 7, PAGES * PAGE, PAGE)
                                   if long_header else b"")
            body = stream[pos:pos + size]
            pos += size
            pages.append(header + body + b"\0" * (size - len(body)))
        out.append(b"".join(pages))
    return out


def filler(length):
    """A record of another resource manager, with bytes that look like candidates."""
    return record(10, 0x00, (b"\x00\x05" * length)[:length])


def test_crc32c_matches_the_standard_check_value():
    assert walscan.crc32c(b"123456789") == 0xE3069283


def located(found):
    return [(oid, path) for oid, path, dummy in found]


@pytest.mark.parametrize("before_end", [24, 16, 8])
def test_a_record_in_a_page_and_one_across_a_page_boundary(before_end):
    first = create_record(16390, "/srv/ts/one")
    # the second record starts before_end bytes before the end of the first page's body:
    # its header whole, or cut by the next page's header after 16 or 8 bytes
    gap = (PAGE - 40) - len(aligned([first])) - before_end
    stream = aligned([first, filler(gap - 24 - 5), create_record(16391, "/srv/ts/two")])
    segment = segments(stream)[0]
    found, tail = walscan.tablespace_creations(segment)
    assert located(found) == [(16390, "/srv/ts/one"), (16391, "/srv/ts/two")]
    assert len(tail) == walscan.CARRY_BYTES
    # each record's position maps back to its header in the file
    offsets = [walscan.segment_offset(PAGE, position) for dummy, dummy, position in found]
    assert offsets == [40, PAGE - before_end]
    assert segment[offsets[0] + 17] == walscan.RM_TBLSPC_ID
    second = create_record(16391, "/srv/ts/two")
    assert segment[offsets[1]:offsets[1] + before_end] == second[:before_end]


def test_a_record_across_segments_is_found_with_the_tail():
    size = PAGES * PAGE - 40 - (PAGES - 1) * 24
    lead = filler(size - 24 - 5 - 16)
    stream = aligned([lead, create_record(16400, "/data/late")])
    first, second = segments(stream, 2)
    found, tail = walscan.tablespace_creations(first)
    assert found == []
    assert walscan.tablespace_creations(second, tail)[0] == [(16400, "/data/late", -1)]
    assert walscan.tablespace_creations(second)[0] == []  # without it: not seen
    assert walscan.segment_offset(PAGE, -1) == 0


@pytest.mark.parametrize("damage", ["crc", "rmgr", "block reference"])
def test_look_alikes_are_not_creations(damage):
    good = create_record(16500, "/srv/x")
    if damage == "crc":
        rec = good[:-3] + b"y" + good[-2:]
    elif damage == "rmgr":
        rec = record(6, 0x00, good[26:])
    else:
        rec = create_record(16500, "/srv/x", prefix=b"\x00" + b"\0" * 20)
    assert walscan.tablespace_creations(segments(aligned([rec]))[0])[0] == []


def test_origin_and_toplevel_xid_headers_are_skipped():
    rec = create_record(16600, "/srv/o", prefix=b"\xfd\x01\x00" + b"\xfc" + b"\0" * 4)
    found = walscan.tablespace_creations(segments(aligned([rec]))[0])[0]
    assert located(found) == [(16600, "/srv/o")]


def test_a_long_location_uses_the_long_data_header():
    path = "/srv/" + "d" * 400
    rec = create_record(16700, path)
    assert rec[24:25] == b"\xfe"
    assert located(walscan.tablespace_creations(segments(aligned([rec]))[0])[0]) == [(16700, path)]


@pytest.fixture
def copy(tmp_path):
    """A restored copy's data directory (with the restore marker) and a live tablespace."""
    data = tmp_path / "copy"
    (data / "pg_tblspc").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "pgdr_restore.json").write_text("{}")
    live = tmp_path / "live-ts"
    (live / "PG_15_202209061").mkdir(parents=True)
    return data, live


class Events:
    def __init__(self):
        self.events = []

    def event(self, message):
        self.events.append(message)


def fetched(data, name, stream):
    dest = data / "RECOVERYXLOG"
    dest.write_bytes(segments(stream)[0])
    return dest


def marker(data, recovery):
    (data / "pgdr_restore.json").write_text(json.dumps({"recovery": recovery}))


def test_a_live_tablespace_location_ends_the_copys_wal_before_the_record(copy):
    data, live = copy
    name = "000000010000000000000003"
    head = filler(100)
    dest = fetched(data, name, aligned([head, create_record(16384, str(live))]))
    before = dest.read_bytes()
    events = Events()
    wal_fetch._end_before_foreign_tablespaces(str(data), name, str(dest), events)
    after = dest.read_bytes()
    offset = 40 + len(aligned([head]))
    assert after[:offset] == before[:offset] and after[offset:] == b"\0" * (len(after) - offset)
    stop = json.loads((data / wal_fetch.SCAN_STOP).read_text())
    assert stop["segment"] == name and stop["lsn"] == "0/%X" % (3 * len(after) + offset)
    assert str(live) in stop["msg"] and "PG_15_202209061" in stop["msg"]
    assert events.events == [stop["msg"]]
    # the same segment again is served (ended the same way); a later one stops recovery
    wal_fetch._refuse_past_a_stop(str(data), name)
    with pytest.raises(TargetRefused) as caught:
        wal_fetch._refuse_past_a_stop(str(data), "000000020000000000000004")
    assert caught.value.code == "tablespace_in_use" and str(live) in caught.value.msg


@pytest.mark.parametrize("recovery,stops", [
    ({"recovery_target_timeline": "1", "recovery_target_action": "pause"}, True),
    ({"recovery_target_name": "before", "recovery_target_timeline": "1"}, False),
    ({"recovery_target": "immediate"}, False),
])
def test_history_after_a_stop_is_refused_only_without_a_target(copy, recovery, stops):
    data, live = copy
    marker(data, recovery)
    (data / wal_fetch.SCAN_STOP).write_text(json.dumps(
        {"segment": "000000010000000000000003", "lsn": "0/3000100", "msg": "ended"}))
    if stops:  # latest: recovery ended at the stop and would promote there
        with pytest.raises(TargetRefused):
            wal_fetch._refuse_past_a_stop(str(data), "00000002.history")
    else:  # a target: recovery reached it before asking
        wal_fetch._refuse_past_a_stop(str(data), "00000002.history")


def test_empty_own_and_other_major_locations_replay(copy, tmp_path):
    data, live = copy
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "pg14"
    (other / "PG_14_202107181").mkdir(parents=True)
    os.symlink(str(live), str(data / "pg_tblspc" / "16384"))  # the copy's own, replayed
    stream = aligned([create_record(16384, str(live)), create_record(16385, str(empty)),
                      create_record(16386, str(other)), create_record(16387, "")])
    dest = fetched(data, "000000010000000000000004", stream)
    before = dest.read_bytes()
    wal_fetch._end_before_foreign_tablespaces(str(data), "000000010000000000000004",
                                              str(dest), Events())
    assert dest.read_bytes() == before and not (data / wal_fetch.SCAN_STOP).exists()


def test_a_copy_without_the_marker_is_not_scanned(copy):
    data, live = copy
    os.unlink(str(data / "pgdr_restore.json"))
    dest = fetched(data, "000000010000000000000005", aligned([create_record(1, str(live))]))
    before = dest.read_bytes()
    wal_fetch._end_before_foreign_tablespaces(str(data), "000000010000000000000005",
                                              str(dest), Events())
    assert dest.read_bytes() == before


def test_the_prefetchers_saved_scan_is_what_the_call_decides_on(copy, tmp_path):
    data, live = copy
    name = "000000010000000000000006"
    segment = segments(aligned([create_record(16384, str(live))]))[0]
    saved = str(tmp_path / (name + wal_fetch.SCANNED))
    wal_fetch._save_scan(saved, walscan.scan(segment))
    scanned = wal_fetch._take_scan(saved)
    assert scanned == walscan.scan(segment) and not os.path.exists(saved)
    assert wal_fetch._take_scan(saved) is None  # taken once
    dest = data / "RECOVERYXLOG"
    # a segment without the record: what is decided on is the saved scan
    dest.write_bytes(segments(aligned([filler(100)]))[0])
    wal_fetch._end_before_foreign_tablespaces(str(data), name, str(dest), Events(), scanned)
    assert dest.read_bytes()[40:] == b"\0" * (len(segment) - 40)
