# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The spool directory: where asynchronous WAL transfers meet PostgreSQL's calls.

archive_command and restore_command run once per file and must answer fast.
A background worker (one per cluster and direction, held by a lock file)
pushes every ready segment in parallel, or prefetches the segments recovery
will ask for next, and leaves a result file per segment here:

- ``archive/<cluster>-<system id>/<name>.ok``: the segment is durably stored in
  the repository (written only after the store returned). wal-push consumes it.
- ``archive/<cluster>-<system id>/<name>.error``: the push failed; the message inside.
- ``fetch/<cluster>-<target id>-<restore id>/<name>``: a prefetched, verified segment
  that wal-fetch moves into place. The restore id covers the repository, the cluster,
  the system identifier and the restore (pgdr's restore marker in the data directory):
  a new restore into the same path never uses what an earlier one staged, and the
  first call of a new restore removes the earlier restores' directories.

The spool holds no data that is not also in pg_wal or the repository: losing
it costs time, never WAL.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import struct
import time

from . import atomicfile
from .errors import ConfigError


def directory(settings, *parts):
    if not settings.spool_dir:
        raise ConfigError("spool_dir is not set", code="config_missing")
    path = os.path.join(settings.spool_dir, *parts)
    try:
        os.makedirs(path, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise ConfigError("cannot create spool directory %s: %s" % (path, exc),
                              code="spool_unwritable", stage="spool")
    return path


def archive_dir(settings, pgdata):
    """Per cluster and per system identifier: a re-initialised cluster with the same
    name (same spool) must never take another cluster's .ok markers for its own."""
    return directory(settings, "archive", "%s-%s" % (settings.cluster, system_identifier(pgdata)))


def system_identifier(pgdata):
    """The cluster's system identifier: the first 8 bytes of global/pg_control
    (read directly: archive_command runs in the data directory, and this stays cheap)."""
    try:
        with open(os.path.join(pgdata, "global", "pg_control"), "rb") as handle:
            raw = handle.read(8)
    except (IOError, OSError) as exc:
        raise ConfigError("cannot read %s/global/pg_control (wal-push runs in the data "
                          "directory): %s" % (pgdata, exc), code="pgdata_unreadable",
                          stage="wal-push")
    return str(struct.unpack("<Q", raw)[0])


def fetch_dir(settings, pgdata):
    """Per restore target and per restore: two recoveries on one node never share
    segments, and a restore into a path used before (another system, another repository
    with the same cluster name, or the same one restored again) starts from an empty
    directory: the earlier restores' directories for that path are removed."""
    place = _tag(os.path.realpath(pgdata))
    name = "%s-%s-%s" % (settings.cluster, place, _tag(restore_identity(settings, pgdata)))
    _remove_other_restores(os.path.join(settings.spool_dir or "", "fetch"), place, name)
    return directory(settings, "fetch", name)


def restore_identity(settings, pgdata):
    """What a staged segment belongs to: the repository (endpoint, bucket and prefix, or
    path), the cluster, the system identifier and the restore (pgdr's restore marker:
    its restored_at and the file's identity, so two restores in one second differ)."""
    from .postgres.ownfiles import RESTORE_MARKER
    marker_path = os.path.join(pgdata, RESTORE_MARKER)
    try:
        with open(marker_path) as handle:
            marker = json.load(handle)
        stamp = os.stat(marker_path)
        restore = "%s/%d/%d" % (marker.get("restored_at"), stamp.st_ino, stamp.st_mtime_ns)
    except (IOError, OSError, ValueError, AttributeError):
        marker, restore = {}, ""  # not restored by pgdr (a standby set up by hand)
    system = marker.get("system_identifier")
    if not system:
        try:
            system = system_identifier(pgdata)
        except ConfigError:
            system = ""
    if settings.repo_type == "posix":
        repository = "posix:%s" % os.path.realpath(settings.repo_path or "")
    else:
        repository = "s3:%s/%s" % (settings.s3_endpoint or "", settings.s3_bucket or "")
    return "\n".join((repository, settings.repo_prefix or "", settings.cluster,
                      str(system), restore))


def _tag(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _remove_other_restores(parent, place, keep):
    """Remove the fetch directories of earlier restores into the same path (never one
    whose prefetcher is still running: it holds the lock)."""
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        parts = entry.rsplit("-", 2)
        if entry == keep or len(parts) != 3 or parts[1] != place:
            continue
        path = os.path.join(parent, entry)
        lock = os.path.join(path, "fetch.lock")
        try:
            if os.path.exists(lock) and Lock(lock).held_elsewhere():
                continue
        except (IOError, OSError):
            continue
        shutil.rmtree(path, ignore_errors=True)


def write_atomic(path, data):
    """A result the archiver reads: whole, through a name the spool's cleanup knows
    (.tmp.PID). Not synced: it is written after the segment is durable in the repository,
    and a result lost in a crash only makes the next call push again (the repository
    takes the same bytes twice), so no fsync on the archiver's path pays for it."""
    atomicfile.replace(path, data, mode=None, durable=False,
                       tmp="%s.tmp.%d" % (path, os.getpid()))


class Lock(object):
    """A non-blocking exclusive lock: at most one background worker per job."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError):
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self):
        if self.acquire():
            self.release()
            return False
        return True


def spawn(work, log_path):
    """Run ``work()`` in a detached grandchild (double fork, new session), so
    PostgreSQL's archiver or startup process never waits for it. Returns in the
    parent at once."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    code = 1
    try:
        os.setsid()
        if os.fork():
            code = 0
            return
        _rotate(log_path)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        # a service stop (systemd kills the unit's cgroup, where this worker lives) ends it
        # cleanly: results are written only after each store returned, so an interrupted
        # push simply has no .ok and PostgreSQL calls again
        signal.signal(signal.SIGTERM, _exit_on_term)
        work()
        code = 0
    except BaseException as exc:  # a worker's failure is logged, never raised
        os.write(2, ("%s pgdr worker failed: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                      exc)).encode("utf-8"))
    finally:
        os._exit(code)  # never return into the caller's code from a forked child


def _rotate(log_path, limit=1 << 20):
    """Keep a worker log bounded: past limit bytes it becomes log_path.1 (one kept)."""
    try:
        if os.path.getsize(log_path) > limit:
            os.rename(log_path, log_path + ".1")
    except OSError:
        pass


def _exit_on_term(signum, frame):
    raise SystemExit(0)


def wait_for(paths, timeout, interval=0.02):
    """The first of ``paths`` that exists within ``timeout`` seconds, or None."""
    deadline = time.time() + timeout
    while True:
        for path in paths:
            if os.path.exists(path):
                return path
        if time.time() >= deadline:
            return None
        time.sleep(interval)
