# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL archive of a cluster: layout, immutable pushes, timelines, coverage.

Layout::

    <cluster>/wal/<TTTTTTTTLLLLLLLL>/<segment><suffix>     one object per segment
    <cluster>/wal/<TTTTTTTTLLLLLLLL>/<segment>.<off>.backup<suffix>
    <cluster>/wal/<segment>.partial<suffix> lives beside the segments too
    <cluster>/wal/history/<TTTTTTTT>.history               timeline history files

Segments are grouped by their first 16 characters (timeline + 4 GiB 'log'),
so a listing covers a bounded range. An archived object is never replaced:
pushing the same name with the same bytes is a success, with other bytes a
Conflict.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import re

from .errors import Conflict, IntegrityError

SEGMENT_OR_PARTIAL = re.compile(r"^([0-9A-F]{24})(\.partial|\.[0-9A-F]{8}\.backup)?$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
SUFFIXES = (".zst", ".gz", "")


def wal_key(cluster, name, suffix):
    """Repository key of a WAL file name (segment, partial, backup or history file)."""
    if HISTORY.match(name):
        return "%s/wal/history/%s" % (cluster, name)
    return "%s/wal/%s/%s%s" % (cluster, name[:16], name, suffix)


def strip_suffix(key_name):
    for suffix in SUFFIXES:
        if suffix and key_name.endswith(suffix):
            return key_name[:-len(suffix)], suffix
    return key_name, ""


def push(storage, key, packed, raw, name, codec):
    """Store ``packed`` under ``key`` once. True when written, False when the same WAL
    was already there; Conflict when different bytes are archived under that name.
    The comparison is on the original bytes, so a different compression library
    version producing other compressed bytes is not mistaken for a conflict."""
    try:
        # False: these very bytes were already stored (a repeated push, or a write whose
        # answer was lost and that the storage settled by its digest)
        return storage.put(key, packed, if_absent=True) is not False
    except Conflict:
        stored = codec.decompress(storage.get(key))
        if hashlib.sha256(stored).digest() == hashlib.sha256(raw).digest():
            return False
        raise Conflict("WAL %s is already archived at %s with different content: refusing "
                       "to overwrite it. Two clusters may be archiving into the same "
                       "repository prefix, or a restored copy was promoted with archiving "
                       "on." % (name, key), code="wal_conflict", stage="wal-push", key=key)


def parse_history(text):
    """[(parent timeline, switch LSN as int)] from a .history file, oldest first.
    ValueError naming the line when one is not ``<timeline> <LSN> [reason]``."""
    from .postgres.wal import parse_lsn
    from .errors import ConfigError
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        try:
            if len(parts) < 2 or not parts[0].isdigit():
                raise ValueError
            entries.append((int(parts[0]), parse_lsn(parts[1])))
        except (ValueError, ConfigError):
            raise ValueError("line %d is not '<timeline> <LSN> <reason>': %r"
                             % (number, line[:80]))
    return entries


class ArchiveIndex(object):
    """What the archive holds for one cluster, read by listing (there is no index object)."""

    def __init__(self, storage, cluster):
        self.storage = storage
        self.cluster = cluster
        self._segments = None

    def segments(self):
        """{timeline: {segment name: ObjectInfo}} of archived full segments."""
        if self._segments is None:
            found = {}
            for info in self.storage.list("%s/wal/" % self.cluster):
                name = strip_suffix(info.key.rsplit("/", 1)[-1])[0]
                if len(name) == 24 and SEGMENT_OR_PARTIAL.match(name):
                    found.setdefault(int(name[:8], 16), {})[name] = info
            self._segments = found
        return self._segments

    def timelines(self):
        """{timeline: history entries} for every history file in the archive."""
        out = {1: []}
        for info in self.storage.list("%s/wal/history/" % self.cluster):
            match = HISTORY.match(info.key.rsplit("/", 1)[-1])
            if match:
                try:
                    text = self.storage.get(info.key).decode("utf-8")
                    out[int(match.group(1), 16)] = parse_history(text)
                except ValueError as exc:  # UnicodeDecodeError is one
                    raise IntegrityError("history file %s is not a valid timeline history "
                                         "(%s)" % (info.key, exc), code="history_invalid",
                                         stage="plan", key=info.key)
        return out
