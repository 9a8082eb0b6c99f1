# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which blocks of which relations changed since an LSN, from the server's WAL summaries
(PostgreSQL 17+ with summarize_wal = on), so that a diff or incr reads only those blocks
instead of every page (pages.py's page-LSN scan stays the fallback).

A summary lists, per relation fork, the blocks that WAL records touched in an LSN range,
and a limit block where the relation was truncated: every block at or after the lowest
limit is taken (a truncated, then re-extended relation may hold zeroed pages that no WAL
record touched and an older layer would fill with stale rows). Blocks changed after the
new backup's start need no summary: a backup forces full page writes, so replay from its
start rewrites them. The summaries must cover the range from the reference backup's
start to this backup's start without a hole, on one timeline; anything else falls back.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import re
import time

from .wal import format_lsn, parse_lsn

DEFAULT_TABLESPACE, GLOBAL_TABLESPACE = 1663, 1664
# main fork (no suffix) and init fork: those whose pages pages.py would compare
_FORKS = {None: 0, "_init": 3}
_RELATION = re.compile(r"^(?:base/(?P<db>\d+)|global|pg_tblspc/(?P<spc>\d+)/[^/]+/(?P<sdb>\d+))"
                       r"/(?P<rel>\d+)(?P<fork>_init)?(?:\.(?P<seg>\d+))?$")


def relation_key(path):
    """(tablespace, database, relfilenode, fork, segment) of a relation file's path
    (relative to the data directory), or None for any other file."""
    match = _RELATION.match(path)
    if not match:
        return None
    if match.group("spc"):
        spc, db = int(match.group("spc")), int(match.group("sdb"))
    elif match.group("db"):
        spc, db = DEFAULT_TABLESPACE, int(match.group("db"))
    else:
        spc, db = GLOBAL_TABLESPACE, 0
    return (spc, db, int(match.group("rel")), _FORKS[match.group("fork")],
            int(match.group("seg") or 0))


class ChangedBlocks(object):
    """The blocks changed since the reference, by relation fork."""

    def __init__(self, rows, blocks_per_segment):
        self.blocks_per_segment = blocks_per_segment
        self.changed = {}
        self.limits = {}
        for spc, db, rel, fork, block, is_limit in rows:
            key = (int(spc), int(db), int(rel), int(fork))
            if is_limit:
                self.limits[key] = min(int(block), self.limits.get(key, int(block)))
            else:
                self.changed.setdefault(key, set()).add(int(block))
        # sorted once: a part's blocks are a slice of them (bisect), not a scan of all
        self.changed = dict((key, sorted(blocks)) for key, blocks in self.changed.items())

    def blocks(self, path, first, count):
        """Indexes (from 0) of the changed blocks among the ``count`` blocks of the file at
        ``path`` that start at its block ``first``; None when the path is no relation file
        (the caller compares it another way)."""
        key = relation_key(path)
        if key is None:
            return None
        relation, segment = key[:4], key[4]
        low = segment * self.blocks_per_segment + first
        high = low + count
        changed = self.changed.get(relation, [])
        wanted = set(b - low for b in changed[bisect.bisect_left(changed, low):
                                              bisect.bisect_left(changed, high)])
        limit = self.limits.get(relation)
        if limit is not None and limit < high:
            wanted.update(range(max(limit, low) - low, count))
        return sorted(wanted)


def changed_since(session, since_lsn, start_lsn, timeline, wait=30.0, progress=None):
    """ChangedBlocks from since_lsn to start_lsn, or (None, why) when the summaries cannot
    tell (too old a server, summarize_wal off, another timeline, a hole)."""
    if session.version < 170000:
        return None, "PostgreSQL %d has no WAL summaries" % (session.version // 10000)
    if session.scalar("SELECT current_setting('summarize_wal')") != "on":
        return None, "summarize_wal is off"
    deadline = time.time() + wait
    while True:  # the summarizer trails the WAL: wait until it reaches the backup's start
        tli, lsn = session.rows("SELECT summarized_tli, summarized_lsn::text "
                                "FROM pg_get_wal_summarizer_state()")[0]
        if int(tli) == timeline and parse_lsn(lsn) >= start_lsn:
            break
        if time.time() > deadline:
            return None, ("the WAL summarizer reached %s on timeline %s, not %s within %d s"
                          % (lsn, tli, format_lsn(start_lsn), wait))
        time.sleep(0.2)
    summaries = session.rows(
        "SELECT start_lsn::text, end_lsn::text FROM pg_available_wal_summaries() "
        "WHERE tli = %s AND end_lsn > %s::pg_lsn AND start_lsn < %s::pg_lsn "
        "ORDER BY start_lsn", (timeline, format_lsn(since_lsn), format_lsn(start_lsn)))
    hole = _hole([(parse_lsn(a), parse_lsn(b)) for a, b in summaries], since_lsn, start_lsn)
    if hole:
        return None, "the WAL summaries of timeline %d %s" % (timeline, hole)
    rows = []
    for first, last in summaries:
        rows.extend(session.rows(
            "SELECT reltablespace, reldatabase, relfilenode, relforknumber, relblocknumber, "
            "is_limit_block FROM pg_wal_summary_contents(%s, %s::pg_lsn, %s::pg_lsn) "
            "WHERE relforknumber IN (0, 3)", (timeline, first, last)))
    per_segment = int(session.scalar("SELECT setting FROM pg_settings "
                                     "WHERE name = 'segment_size'"))
    if progress is not None:
        progress.event("WAL summaries %s..%s: %d changed blocks to read"
                       % (format_lsn(since_lsn), format_lsn(start_lsn), len(rows)))
    return ChangedBlocks(rows, per_segment), None


def _hole(ranges, since_lsn, start_lsn):
    """Why [since_lsn, start_lsn) is not covered by the (start, end) ranges, or None."""
    reached = since_lsn
    for first, last in ranges:
        if first > reached:
            return "miss %s..%s" % (format_lsn(reached), format_lsn(first))
        reached = max(reached, last)
    if reached < start_lsn:
        return "end at %s, before %s" % (format_lsn(reached), format_lsn(start_lsn))
    return None
