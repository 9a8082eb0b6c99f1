# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the CREATE TABLESPACE records in a WAL segment.

Why: a restored copy that replays ``CREATE TABLESPACE ... LOCATION '/x'`` points its
pg_tblspc link at /x itself; the restore cannot map it elsewhere (the backup does not
know it). When a live cluster on the same host uses /x, the copy would then write into
that cluster's tablespace files. wal-fetch scans every segment it hands to a restored
copy and stops recovery before such a record is replayed.

The format is PostgreSQL's (the same from 14 to 18): 8 KiB pages (the size is read from
the segment's first page) whose headers interrupt the record stream; records start on
8-byte boundaries with a 24-byte header (total length, xid, prev, info, rmgr id, CRC-32C);
the tablespace record is rmgr 5, info 0x00, main data = OID + NUL-terminated path.
A record may straddle pages and segments: the caller keeps the ``tail`` of one segment
(the last bytes of its record stream) and joins it with the next one's ``head``. scan()
and join() split the work, so that the prefetcher scans whole segments off recovery's
path and recovery's own call only joins a few KiB. segment_offset() maps a record back to
its place in the file, where wal-fetch ends the segment for PostgreSQL.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

RM_TBLSPC_ID = 5
XLOG_TBLSPC_CREATE = 0x00
XLP_LONG_HEADER = 0x0002
SHORT_PAGE_HEADER = 24
LONG_PAGE_HEADER = 40
RECORD_HEADER = 24
MAX_RECORD = 2 * 1024 + RECORD_HEADER   # an OID, a path of at most MAXPGPATH, headers
CARRY_BYTES = 4096                       # > MAX_RECORD, a multiple of 8 (alignment)
BLOCK_ID_DATA_SHORT = 255
BLOCK_ID_DATA_LONG = 254
BLOCK_ID_ORIGIN = 253
BLOCK_ID_TOPLEVEL_XID = 252


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for dummy in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), PostgreSQL's WAL checksum; for short records only."""
    crc = 0xFFFFFFFF
    for byte in bytearray(data):
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def page_size_of(segment):
    """The WAL page size, from the segment's first (long) page header; None when the bytes
    are not a WAL segment."""
    if len(segment) < LONG_PAGE_HEADER:
        return None
    info = struct.unpack_from("<H", segment, 2)[0]
    size = struct.unpack_from("<I", segment, 36)[0] if info & XLP_LONG_HEADER else 0
    return size if size >= 1024 and not size & (size - 1) else None


def record_stream(pages, page_size):
    """Whole WAL pages without their headers: the records are contiguous in it."""
    bodies = []
    for offset in range(0, len(pages) - SHORT_PAGE_HEADER + 1, page_size):
        flags = struct.unpack_from("<H", pages, offset + 2)[0]
        header = LONG_PAGE_HEADER if flags & XLP_LONG_HEADER else SHORT_PAGE_HEADER
        bodies.append(pages[offset + header:offset + page_size])
    return b"".join(bodies)


def _matches(infos, rmgrs):
    """The indexes k with infos[k] == 0 and rmgrs[k] == 5: a byte search in C over the
    rmgr bytes, and a check of each (rare) hit."""
    found, k = [], rmgrs.find(b"\x05")
    while k >= 0:
        if infos[k:k + 1] == b"\x00":
            found.append(k)
        k = rmgrs.find(b"\x05", k + 1)
    return found


def _aligned_candidates(data):
    """Offsets p (multiples of 8) with info 0x00 at p + 16 and rmgr id 5 at p + 17: a
    CREATE TABLESPACE header could start there (info is exactly 0: without block
    references none of its flag bits is set). Strided slices keep the search in C instead
    of a loop over every position."""
    return [8 * k for k in _matches(data[16::8], data[17::8])]


def _main_data(record):
    """The main data of a record without block references, else None."""
    pos, end = RECORD_HEADER, len(record)
    while pos < end:
        block_id = bytearray(record[pos:pos + 1])[0]
        if block_id == BLOCK_ID_DATA_SHORT:
            length, start = bytearray(record[pos + 1:pos + 2])[0], pos + 2
        elif block_id == BLOCK_ID_DATA_LONG:
            length, start = struct.unpack_from("<I", record, pos + 1)[0], pos + 5
        elif block_id == BLOCK_ID_ORIGIN:
            pos += 3
            continue
        elif block_id == BLOCK_ID_TOPLEVEL_XID:
            pos += 5
            continue
        else:
            return None  # a block reference: not a tablespace record
        return record[start:start + length] if start + length == end else None
    return None


def _creation(stream, pos):
    """(oid, path, pos, length) when a valid CREATE TABLESPACE record starts at pos, else
    None (also when the record does not end within the stream)."""
    if pos + RECORD_HEADER > len(stream):
        return None
    total, = struct.unpack_from("<I", stream, pos)
    info, rmid = bytearray(stream[pos + 16:pos + 18])
    if rmid != RM_TBLSPC_ID or info != XLOG_TBLSPC_CREATE:
        return None
    if not RECORD_HEADER + 7 <= total <= MAX_RECORD or pos + total > len(stream):
        return None
    record = stream[pos:pos + total]
    expected, = struct.unpack_from("<I", record, 20)
    if crc32c(record[RECORD_HEADER:] + record[:20]) != expected:
        return None
    data = _main_data(record)
    if data is None or len(data) < 5 or data[-1:] != b"\x00":
        return None
    oid, = struct.unpack_from("<I", data, 0)
    return oid, data[4:-1].decode("utf-8", "replace"), pos, total


def _creations_in(stream):
    found = []
    for pos in _aligned_candidates(stream):
        creation = _creation(stream, pos)
        if creation:
            found.append(creation)
    return found


def _seam_candidates(segment, page_size):
    """Candidate headers that start 16 or 8 bytes before a page's end: their info and rmgr
    bytes lie after the next page's (short) header, where the strided search does not look:
    at 24 and 32 bytes into that page. One strided slice per offset, as above."""
    found = set()
    for start, into_next in ((8, SHORT_PAGE_HEADER), (16, SHORT_PAGE_HEADER + 8)):
        for k in _matches(segment[page_size + into_next::page_size],
                          segment[page_size + into_next + 1::page_size]):
            end = (k + 1) * page_size
            found.add(stream_position(page_size, end - RECORD_HEADER + start))
    return found


def scan(segment):
    """(creations, head, tail) of one segment on its own: [(oid, location, position)] of
    the records that start and end in it (position in its record stream), and the first
    and last CARRY_BYTES of that stream, which join() needs for a record straddling two
    segments. Candidates are found in the file itself (page headers are multiples of 8 long,
    so record alignment holds there) and only their few pages are reassembled."""
    page_size = page_size_of(segment)
    if page_size is None:
        return [], b"", b""
    head = record_stream(segment[:2 * page_size], page_size)[:CARRY_BYTES]
    tail = record_stream(segment[max(0, len(segment) - 2 * page_size):],
                         page_size)[-CARRY_BYTES:]
    positions = set(stream_position(page_size, offset)
                    for offset in _aligned_candidates(segment)) | _seam_candidates(segment, page_size)
    creations = []
    for position in sorted(p for p in positions if p is not None):
        creation = _creation(_record_at(segment, page_size, position), 0)
        if creation:
            creations.append((creation[0], creation[1], position))
    return creations, head, tail


def _record_at(segment, page_size, position):
    """The record-stream bytes from position on (at most MAX_RECORD), reassembled from the
    few pages they lie in: no copy of the whole segment for a look-alike header."""
    offset = segment_offset(page_size, position)
    page = offset // page_size
    pages = segment[page * page_size:(page + 2 + MAX_RECORD // page_size) * page_size]
    header = LONG_PAGE_HEADER if page == 0 else SHORT_PAGE_HEADER
    start = offset - page * page_size - header
    return record_stream(pages, page_size)[start:start + MAX_RECORD]


def join(tail, head):
    """[(oid, location, -1)] of the records that start in one segment (its tail) and end
    in the next (its head); -1: the record began before the second segment."""
    return [(oid, path, -1) for oid, path, pos, total in _creations_in(tail + head)
            if pos < len(tail) < pos + total]


def tablespace_creations(segment, tail=b""):
    """([(oid, location, position)], tail for the next segment) of one WAL segment;
    tail is what the previous segment of the same stream returned (b"" when unknown)."""
    creations, head, new_tail = scan(segment)
    return join(tail, head) + creations, new_tail


def segment_offset(page_size, position):
    """The offset in the segment file of a position in its record stream (-1: 0)."""
    if position < 0:
        return 0
    first = page_size - LONG_PAGE_HEADER
    if position < first:
        return LONG_PAGE_HEADER + position
    page, within = divmod(position - first, page_size - SHORT_PAGE_HEADER)
    return (page + 1) * page_size + SHORT_PAGE_HEADER + within


def stream_position(page_size, offset):
    """The record-stream position of a file offset; None inside a page header."""
    page, within = divmod(offset, page_size)
    header = LONG_PAGE_HEADER if page == 0 else SHORT_PAGE_HEADER
    if within < header:
        return None
    if page == 0:
        return within - header
    return (page_size - LONG_PAGE_HEADER) + (page - 1) * (page_size - SHORT_PAGE_HEADER) + within - header
