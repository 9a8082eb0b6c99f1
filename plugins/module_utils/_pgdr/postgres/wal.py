# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LSNs and WAL segment names.

A segment name is three 8-digit hex numbers: timeline, then the segment
number split into a 'log' part (4 GiB units) and the segment within it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import struct

from ..errors import ConfigError

# The long header on the first page of every WAL segment (XLogLongPageHeaderData):
# magic, info, timeline, page address, remaining length, (padding), system identifier,
# segment size, page size.
LONG_HEADER = struct.Struct("<HHIQI4xQII")
XLP_LONG_HEADER = 0x0002  # xlp_info flag: the page starts with a long header

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
HISTORY_NAME = re.compile(r"^[0-9A-F]{8}\.history$")


def parse_lsn(text):
    match = _LSN.match(text.strip())
    if not match:
        raise ConfigError("%r is not an LSN: expected two hex numbers like 0/16B3740"
                          % text, code="lsn_invalid")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value):
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def segment_name(timeline, segno, segment_size):
    per_log = 0x100000000 // segment_size
    return "%08X%08X%08X" % (timeline, segno // per_log, segno % per_log)


def segments_between(timeline, start_lsn, stop_lsn, segment_size):
    """Names of the segments holding WAL from start_lsn up to (not including) stop_lsn."""
    first = start_lsn // segment_size
    last = max(first, (stop_lsn - 1) // segment_size)
    return [segment_name(timeline, n, segment_size) for n in range(first, last + 1)]


def history_name(timeline):
    return "%08X.history" % timeline


def segment_number(name, segment_size):
    """The segment number of a segment file name (timeline ignored)."""
    return int(name[8:16], 16) * (0x100000000 // segment_size) + int(name[16:24], 16)


def long_page_header(data):
    """(magic, info, timeline, page address, system identifier, segment size, page size)
    of a segment's first page, or None when it carries no XLOG long page header."""
    if len(data) < LONG_HEADER.size:
        return None
    magic, info, timeline, address, dummy, sysid, seg_size, page_size = \
        LONG_HEADER.unpack_from(data, 0)
    if magic >> 8 not in (0xD0, 0xD1) or not info & XLP_LONG_HEADER:
        return None
    return magic, info, timeline, address, sysid, seg_size, page_size
