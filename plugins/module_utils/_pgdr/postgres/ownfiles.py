# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files pgdr itself keeps in a data directory, by name (one registry; no imports, so
that wal-fetch's fast path, walready.py, can read them without loading the engine)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

# written by restore into the copy it made (commands/restore.py); wal-fetch scans the WAL
# it hands to such a copy (commands/wal_fetch.py)
RESTORE_MARKER = "pgdr_restore.json"
# written by restore beside it: the stamps and digests of the files it wrote, which a
# later delta trusts while a file's stamp is unchanged (filestamps.py)
RESTORE_STAMPS = "pgdr_restore.files"
# written by wal-fetch into such a copy: the end of the segment it scanned last, and where
# it ended the copy's WAL and why (commands/wal_fetch.py)
SCAN_TAIL = "pgdr_walscan.tail"
SCAN_STOP = "pgdr_walscan.stop"
# written by wal-fetch into any directory it recovers with a spool: where its prefetcher
# puts the segments it made ready, for whom (walready.py)
PREFETCH_POINTER = "pgdr_prefetch"
PREFETCH_POINTER_TMP = PREFETCH_POINTER + ".tmp"  # while it is written
# what a recovered copy holds of pgdr's own: gone once the copy becomes the cluster
RESTORE_LEFTOVERS = (RESTORE_MARKER, RESTORE_STAMPS, SCAN_TAIL, SCAN_STOP, PREFETCH_POINTER,
                     PREFETCH_POINTER_TMP)
