# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal-fetch's fast path: a segment the prefetcher has made ready is handed over without
loading the engine.

PostgreSQL calls restore_command once per segment, on the startup process's path, so
whatever a call costs adds to recovery. Loading the CLI (argparse, configparser, the
storage) costs more than the rename a prefetched segment needs. The launchers therefore
call handover() before they import the CLI. It answers 0 once it placed the segment, and
None for everything else, which then goes the full way (commands/wal_fetch.py). It never
fails, never answers "not found", and decides nothing the full way would not.

Ready means (the prefetcher, commands/wal_fetch.py): read through storage.get (its
SHA-256 verified), the first page's system identifier that of the directory's
pg_control, and in a copy pgdr restored, no CREATE TABLESPACE in it or across its start.
Such a segment waits in <staged dir>/ready/, with, in a restored copy, the end of its
record stream for the scan of the next one.

The full way records in the data directory (PREFETCH_POINTER) where its staged directory
is, for which call and for which directory. The call: the options before %f %p
(verbatim; --config is required), the inode, mtime and size of the --config and
--credentials files, a digest of the PGDR_* and AWS_* environment. The directory: its
device and inode, the restore marker's inode and mtime, pg_control's system identifier.
A pointer copied into another directory with its files, left by an earlier restore into
the same path, or written for other options, an edited configuration or another
environment does not match and is ignored.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

from . import atomicfile
from .postgres.ownfiles import PREFETCH_POINTER, RESTORE_MARKER, SCAN_STOP, SCAN_TAIL

READY = "ready"          # <staged dir>/ready/<segment>: verified, checked, ready to hand over
TAIL = ".tail"           # <ready segment>.tail: its name and record stream's end (SCAN_TAIL)
REQUESTED = "requested"  # <staged dir>/requested: the segment recovery asked for last
FORMAT = "pgdr-prefetch 1"
_HEX = frozenset("0123456789ABCDEF")
_NOT_FAST = frozenset(("--json", "--dry-run", "--help", "-h", "--version"))


def handover(args, pgdata=None):
    """0 when the segment args ask for (a wal-fetch call without its verb: options, %f,
    %p) was ready and is now at %p; None when the full way must answer."""
    try:
        return _handover(args, pgdata or os.getcwd())
    except Exception:
        return None  # whatever went wrong, the full way answers, and says why if it fails


def _handover(args, pgdata):
    name, dest = segment_call(args)
    if name is None or os.path.exists(os.path.join(pgdata, SCAN_STOP)):
        return None
    staged_dir = pointed_dir(pgdata, call_key(args))
    if staged_dir is None:
        return None
    ready = os.path.join(staged_dir, READY, name)
    dest = os.path.join(pgdata, dest)  # %p is relative to the data directory
    device = os.stat(ready).st_dev
    if os.stat(os.path.dirname(dest)).st_dev != device:
        return None  # pg_wal elsewhere: renames cannot hand it over, the full way copies
    if os.path.exists(os.path.join(pgdata, RESTORE_MARKER)):
        # the scan of the next segment needs this one's end, as when it comes the full way
        tail = ready + TAIL
        with open(tail, "rb") as handle:
            if handle.read(len(name)) != name.encode("ascii"):
                return None  # not this segment's (a crash emptied it): the full way scans
        if os.stat(pgdata).st_dev != device:
            return None
        os.rename(tail, os.path.join(pgdata, SCAN_TAIL))
    os.rename(ready, dest)
    request(staged_dir, name)
    return 0


def segment_call(args):
    """(segment name, destination) of a plain wal-fetch call for a segment that names its
    configuration file, else (None, None): history files, --json and the like go the
    full way."""
    if len(args) < 2 or any(a in _NOT_FAST for a in args) or "--config" not in args[:-3]:
        return None, None
    name, dest = args[-2], args[-1]
    if len(name) != 24 or not set(name) <= _HEX or not dest or dest.startswith("-"):
        return None, None
    return name, dest


def call_key(args, environ=None):
    """What identifies the call but its segment: the options before %f %p (verbatim), the
    stamps of the files they name, and a digest of the environment pgdr and boto3 read."""
    options = list(args[:-2])
    key = list(options)
    for flag in ("--config", "--credentials"):
        if flag in options[:-1]:
            key.append("%s %s" % (flag, _stamp(options[options.index(flag) + 1])))
    return key + ["env " + _environment(os.environ if environ is None else environ)]


def _stamp(path):
    try:
        found = os.stat(path)
    except OSError:
        return "-"
    return "%d:%d:%d" % (found.st_ino, found.st_mtime_ns, found.st_size)


def _environment(environ):
    """A digest (values may be secrets) of the PGDR_* and AWS_* variables, or "-"
    (PGDR_LAUNCHER, which every launcher sets, only names the launcher). Passphrases
    are left out: a fast digest of one, kept in the data directory, would let it be
    guessed without scrypt's cost, and the WAL a prefetcher made ready is the same."""
    pairs = sorted("%s=%s" % (k, v) for k, v in environ.items()
                   if k.startswith(("PGDR_", "AWS_")) and k != "PGDR_LAUNCHER"
                   and not k.endswith("PASSPHRASE"))
    if not pairs:
        return "-"
    import hashlib  # only when such variables are set: it costs the fast path a millisecond
    return hashlib.sha256("\n".join(pairs).encode("utf-8")).hexdigest()


def identity(pgdata):
    """The directory the pointer was written for, as one line."""
    here = os.stat(pgdata)
    try:
        marker = os.stat(os.path.join(pgdata, RESTORE_MARKER))
        restore = "%d:%d" % (marker.st_ino, marker.st_mtime_ns)
    except OSError:
        restore = "-"
    return "%d:%d %s %d" % (here.st_dev, here.st_ino, restore, control_system(pgdata))


def control_system(pgdata):
    """The system identifier in pg_control (its first 8 bytes, in the server's byte order)."""
    with open(os.path.join(pgdata, "global", "pg_control"), "rb") as handle:
        return int.from_bytes(handle.read(8), sys.byteorder)


def pointed_dir(pgdata, key):
    """The staged directory the pointer names, if written for this directory and call."""
    try:
        with open(os.path.join(pgdata, PREFETCH_POINTER)) as handle:
            lines = handle.read().split("\n")
    except (IOError, OSError, ValueError):
        return None
    if len(lines) < 3 or lines[0] != FORMAT or lines[3:] != key:
        return None
    if lines[1] != identity(pgdata) or not os.path.isabs(lines[2]):
        return None
    return lines[2]


def point(pgdata, staged_dir, key):
    """Record (when changed) where this directory's prefetcher makes segments ready."""
    if pointed_dir(pgdata, key) == staged_dir:
        return
    text = "\n".join([FORMAT, identity(pgdata), staged_dir] + list(key))
    path = os.path.join(pgdata, PREFETCH_POINTER)
    atomicfile.replace(path, text, durable=False, tmp=path + ".tmp")  # a known leftover


def request(staged_dir, name):
    """Tell the prefetcher which segment recovery asks for now (no fsync: a hint)."""
    path = os.path.join(staged_dir, REQUESTED)
    atomicfile.replace(path, name.encode("ascii"), mode=None, durable=False,
                       tmp=path + ".tmp")
