# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the valid WAL of one segment ends, and what its last records say.

Why: a recovery target is only reached when recovery reads a record at or after it. A
target LSN after the last complete record of the archive, or a target time not before
the last commit archived, passes a plan based on segment names or upload times and then
fails when the restored copy starts ("recovery ended before configured recovery target
was reached"). The planner reads the last archived segment with this module to know the
real end: the start of its last complete record, and the time of its last commit, abort
or restore point (the records recovery compares a target time with).

The walk follows the records by their lengths through the record stream (walscan's
page reassembly), checks each record's ``xl_prev`` link to the one before it and every
page header's address, and stops at the first record that is absent, incomplete (it
continues in the next segment) or does not link. CRC-32C is checked on the records it
reports (a pure-Python CRC of a whole segment would take seconds).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import struct

from .walscan import (LONG_PAGE_HEADER, RECORD_HEADER, _main_data,
                      crc32c, page_size_of, record_stream, segment_offset)

XLP_FIRST_IS_CONTRECORD = 0x0001
RM_XLOG_ID = 0
RM_XACT_ID = 1
RM_STANDBY_ID = 8
XLOG_SWITCH = 0x40
XLOG_RESTORE_POINT = 0x70
XLOG_RUNNING_XACTS = 0x10
XACT_OPMASK = 0x70
# commit, abort, commit prepared, abort prepared: what recovery_target_time compares
XACT_TIMED = (0x00, 0x20, 0x30, 0x40)
_EPOCH_2000 = datetime.datetime(2000, 1, 1)
_KEEP = 64  # records remembered at the end of the walk (CRC-checked from the newest)


def _align(position):
    return (position + 7) & ~7


def _valid_pages(segment, page_size, seg_start):
    """How many pages from the first carry this segment's own addresses: a recycled
    segment file may hold an older segment's pages after the last one written."""
    if len(segment) < LONG_PAGE_HEADER:
        return 0
    magic = segment[:2]
    count = 0
    for offset in range(0, len(segment) - page_size + 1, page_size):
        address, = struct.unpack_from("<Q", segment, offset + 8)
        if segment[offset:offset + 2] != magic or address != seg_start + offset:
            break
        count += 1
    return count


def timestamp(micros):
    """A PostgreSQL TimestampTz (microseconds since 2000-01-01 UTC) as a naive UTC datetime."""
    return _EPOCH_2000 + datetime.timedelta(microseconds=micros)


def scan_end(segment, seg_start):
    """What the valid WAL of one segment holds, as a dict:

    - ``last_start`` / ``last_end``: LSNs of the start and end of the last complete record
      (None when no record starts and ends in the segment);
    - ``continues``: a record starts in it and ends in the next segment;
    - ``switch``: the segment ends with a WAL switch (nothing follows in it);
    - ``last_stamp``: (LSN, TimestampTz microseconds, kind) of the last commit, abort or
      restore point record, kind in commit/abort/restore_point; None when there is none;
    - ``running``: [(LSN, oldest running xid, next xid)] of its running-transactions
      records (what a snapshot's xmin was at that point);
    - ``records``: how many records were walked.

    ``seg_start`` is the LSN of the segment's first byte."""
    out = {"last_start": None, "last_end": None, "continues": False, "switch": False,
           "last_stamp": None, "running": [], "records": 0}
    page_size = page_size_of(segment)
    if page_size is None:
        return out
    pages = _valid_pages(segment, page_size, seg_start)
    stream = record_stream(segment[:pages * page_size], page_size)
    info, = struct.unpack_from("<H", segment, 2)
    position = 0
    if info & XLP_FIRST_IS_CONTRECORD:
        rem_len, = struct.unpack_from("<I", segment, 16)
        position = _align(rem_len)
    recent = []
    prev = None
    stamps = []
    while position + RECORD_HEADER <= len(stream):
        total, xid, link, rinfo, rmid = struct.unpack_from("<IIQBB", stream, position)
        if total < RECORD_HEADER:
            break  # zeros: the end of the WAL written into this segment
        start = seg_start + segment_offset(page_size, position)
        if prev is not None and link != prev:
            break  # not the record that follows: stale bytes
        if position + total > len(stream):
            out["continues"] = pages * page_size == len(segment)
            break
        recent.append((position, total, start))
        if len(recent) > 2 * _KEEP:
            del recent[:_KEEP]
        out["records"] += 1
        prev = start
        op = rinfo & 0xF0
        if rmid == RM_XACT_ID and rinfo & XACT_OPMASK in XACT_TIMED:
            stamps.append((position, total, start,
                           "abort" if rinfo & XACT_OPMASK in (0x20, 0x40) else "commit"))
        elif rmid == RM_XLOG_ID and op == XLOG_RESTORE_POINT:
            stamps.append((position, total, start, "restore_point"))
        elif rmid == RM_STANDBY_ID and op == XLOG_RUNNING_XACTS:
            data = _main_data(stream[position:position + total])
            if data is not None and len(data) >= 24:
                next_xid, oldest = struct.unpack_from("<II", data, 12)
                out["running"].append((start, oldest, next_xid))
        if len(stamps) > 2 * _KEEP:
            del stamps[:_KEEP]
        position = _align(position + total)
        if rmid == RM_XLOG_ID and op == XLOG_SWITCH:
            out["switch"] = True
            break
    while recent and not _crc_ok(stream, recent[-1][0], recent[-1][1]):
        recent.pop()  # a record whose CRC fails is where recovery would stop
    if recent:
        position, total, start = recent[-1]
        out["last_start"] = start
        out["last_end"] = seg_start + segment_offset(page_size, position + total - 1) + 1
        limit = start
        for position, total, start, kind in reversed(stamps):
            if start > limit or not _crc_ok(stream, position, total):
                continue
            data = _main_data(stream[position:position + total])
            if data is not None and len(data) >= 8:
                micros, = struct.unpack_from("<q", data, 0)
                out["last_stamp"] = (start, micros, kind)
                break
    return out


def _crc_ok(stream, position, total):
    record = stream[position:position + total]
    expected, = struct.unpack_from("<I", record, 20)
    return crc32c(record[RECORD_HEADER:] + record[:20]) == expected
