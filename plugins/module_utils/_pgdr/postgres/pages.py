# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which pages of a relation file changed since an LSN.

Every page starts with its LSN (pd_lsn: two little-endian uint32, high then
low). A page whose LSN is at or after the reference backup's start LSN changed
since then; replaying WAL from the new backup's start repairs torn reads, as
for a full backup. A new, all-zero page (pd_upper == 0) has no LSN: it is
always taken, because after a truncation and re-extension between two backups
an older layer may hold stale rows for that block, which must not come back.

The scan reads pd_lsn and pd_upper of every page through strided memoryviews:
no Python work per byte, one comparison per 8 KiB page.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# Forks whose changes are not (reliably) stamped with an LSN on the page: the free
# space map is not WAL-logged, and clearing a visibility-map bit does not set the VM
# page's LSN. They are compared by checksum and stored whole when they differ.
_DELTA_FILE = re.compile(r"(^|/)(base/\d+|global|pg_tblspc/\d+/[^/]+/\d+)/\d+(_init)?(\.\d+)?$")


def is_delta_candidate(path):
    """True for main and init forks of relations (where page LSNs tell changes)."""
    return bool(_DELTA_FILE.search(path))


def changed_blocks(data, threshold_lsn, block_size=8192):
    """Indexes of the pages of ``data`` changed at or after ``threshold_lsn`` (plus new
    pages, and a trailing partial page if any)."""
    count = len(data) // block_size
    whole = memoryview(data)[:count * block_size]
    words = whole.cast("I")
    step32 = block_size // 4
    highs = words[0::step32].tolist()
    lows = words[1::step32].tolist()
    uppers = whole.cast("H")[7::block_size // 2].tolist()  # pd_upper: bytes 14-15
    changed = [i for i in range(count)
               if (highs[i] << 32 | lows[i]) >= threshold_lsn or uppers[i] == 0]
    if len(data) % block_size:
        changed.append(count)
    return changed


def read_spans(runs, gap):
    """Runs of blocks ([[first, count], ...], ascending) grouped into the spans to read:
    [[first, count, runs inside], ...]. Runs at most gap blocks apart share one span: one
    sequential read, which the kernel reads ahead, instead of many small scattered ones
    (half the pages of a file changed means a read per page or two)."""
    spans = []
    for start, count in runs:
        if spans and start - (spans[-1][0] + spans[-1][1]) <= gap:
            spans[-1][1] = start + count - spans[-1][0]
            spans[-1][2].append([start, count])
        else:
            spans.append([start, count, [[start, count]]])
    return spans


def as_ranges(blocks):
    """[[first, count], ...] of consecutive block numbers (compact in the manifest)."""
    ranges = []
    for block in blocks:
        if ranges and ranges[-1][0] + ranges[-1][1] == block:
            ranges[-1][1] += 1
        else:
            ranges.append([block, 1])
    return ranges
