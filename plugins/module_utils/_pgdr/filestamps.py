# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a restore wrote, file by file, so that a later delta need not read what nothing
changed since.

At the end of its fetch, a restore records, for every file of the backup, the file's stamp
(device, inode, size, mtime and ctime in nanoseconds) and the SHA-256 of the byte ranges
whose content it knows (pieces no page layer wrote over, whole small files, WAL segments).
A delta restore into that directory trusts the recorded digests of a file only while its
stamp is the recorded one, and reads (hashes) every other file as before. The kernel sets
a file's ctime on every change to its data or metadata (a write, a truncate, chmod, chown,
utime; a file replaced has a new inode) and no system call sets it back, so a file with
the recorded stamp holds the recorded bytes.

One limit: the clock that stamps ctime moves in steps (a few ms; a whole second on some
filesystems), so a change within the same step as the recorded state could keep the stamp.
The recording waits one step (50 ms) after the restore's last write, and records a file
only when its ctime is older than the start of the recording by more than one step (2 s
when the ctime has no sub-second part): every later change carries a later ctime. A
record that does not parse, or names a file that differs, costs a read, never a wrong byte.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat
import time

from . import atomicfile

VERSION = 1
FINE_STEP_NS = 50 * 1000 * 1000
COARSE_STEP_NS = 2 * 1000 * 1000 * 1000


def range_key(offset, size):
    return "%d+%d" % (offset, size)


def _stamp(info):
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _settled(info, now_ns):
    """True when any change after now_ns gives the file another ctime."""
    step = COARSE_STEP_NS if info.st_ctime_ns % 1000000000 == 0 else FINE_STEP_NS
    return info.st_ctime_ns < now_ns - step


def _regular(root, rel):
    """os.lstat of root/rel when it is a regular file, else None."""
    try:
        info = os.lstat(os.path.join(root, rel))
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def record(root, name, ranges, owner=None):
    """Write root/name: {rel: {range_key: sha256}} for the files of ranges whose ctime is
    settled, with their stamps (0600, given to owner). Returns how many were recorded."""
    time.sleep(FINE_STEP_NS / 1e9)  # the last writes' step ends: they are settled
    now_ns = time.time_ns()  # before the stats: a change after them is after this
    files = {}
    for rel, known in ranges.items():
        info = _regular(root, rel)
        if known and info is not None and _settled(info, now_ns):
            files[rel] = {"stamp": _stamp(info), "ranges": known}
    body = json.dumps({"version": VERSION, "files": files}, separators=(",", ":"))
    path = os.path.join(root, name)
    # the name backups skip (datadir.SKIPPED_FILES) if a killed run leaves it behind
    atomicfile.replace(path, body, mode=0o600, owner=owner, tmp=path + ".tmp")
    return len(files)


def _entries(root, name):
    """The record's (rel, entry) pairs; None without a record that parses."""
    try:
        with open(os.path.join(root, name)) as handle:
            data = json.load(handle)
        files = data["files"] if data.get("version") == VERSION else {}
        return list(files.items())
    except (IOError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def trusted(root, name):
    """{rel: ((device, inode), {range_key: sha256})} of the recorded files whose stamp is
    still the recorded one: their digests stand for their bytes. Empty without a (readable)
    record. Read it before the caller changes anything in root."""
    known = {}
    for rel, entry in _entries(root, name) or ():
        try:
            stamp, ranges = entry["stamp"], entry["ranges"]
        except (KeyError, TypeError):
            continue
        info = _regular(root, rel)
        if info is not None and isinstance(ranges, dict) and _stamp(info) == stamp:
            known[rel] = ((info.st_dev, info.st_ino), ranges)
    return known


def vouched(known, root, rel, offset, size):
    """The SHA-256 that trusted() vouches for at offset..offset+size of root/rel, while
    rel still names the very file it checked (a tablespace link the caller changed since
    leads to another file: None). None when it does not know: read the bytes."""
    identity, ranges = known.get(rel, (None, {}))
    digest = ranges.get(range_key(offset, size))
    if digest is None:
        return None
    info = _regular(root, rel)
    return digest if info is not None and (info.st_dev, info.st_ino) == identity else None


def changed_since(root, name):
    """How many files the record names that are no longer as recorded (0 without a
    record): a delta runs again rather than trusting an earlier restore's marker."""
    entries = _entries(root, name)
    return len(entries) - len(trusted(root, name)) if entries else 0
