# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgdr wal-fetch %f %p``: PostgreSQL's restore_command.

Exit 0 when the file is in place, 1 when the archive does not have it (the
normal end of the archive: PostgreSQL then ends recovery or tries pg_wal).
Any other failure (repository unreachable, damaged object) must not look like
'not found', or PostgreSQL would end recovery early and promote at the wrong
point: the CLI exits with 128 + the error's code, which PostgreSQL treats as
fatal and stops recovery instead.

With a spool_dir, each call also starts (once) a background worker that
fetches the next ``prefetch`` segments in parallel, so recovery reads from
local disk instead of waiting on one request per segment.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import time

from .. import archive, spool
from ..errors import NotFound, PgdrError

NOT_IN_ARCHIVE = 1
REQUESTED = "requested"      # the segment recovery asked for last (a hint for the prefetcher)
MISSING = ".missing"         # the prefetcher found this segment absent from the archive
PREFETCH_WAIT = 30.0         # seconds a call waits for a segment the prefetcher is fetching


def run(settings, progress, dry_run=False):
    settings.require("cluster", "wal_name", "wal_dest")
    name, dest = settings.wal_name, settings.wal_dest
    if not (archive.SEGMENT_OR_PARTIAL.match(name) or archive.HISTORY.match(name)):
        raise NotFound("wal-fetch: %r is not a WAL file name" % name, code="wal_name_invalid")
    pgdata = os.getcwd()  # restore_command runs in the data directory
    if settings.spool_dir and settings.prefetch > 0 and len(name) == 24:
        staged_dir = spool.fetch_dir(settings, pgdata)
        _request(staged_dir, name)
        lock = spool.Lock(os.path.join(staged_dir, "fetch.lock"))
        if not lock.held_elsewhere():
            spool.spawn(lambda: _prefetch_worker(settings, staged_dir, lock.path),
                        os.path.join(staged_dir, "worker.log"))
        staged = os.path.join(staged_dir, name)
        if _wait_staged(staged, lock):
            _move(staged, dest)
            return {"changed": True, "wal": name, "prefetched": True}
    # history files, no spool, or the prefetcher did not deliver: fetch it here
    _write(dest, fetch(_storage(settings), settings, name))
    return {"changed": True, "wal": name, "prefetched": False}


def _wait_staged(staged, lock):
    """True once the prefetcher staged the segment; False as soon as it marked it
    missing (or could not fetch it), or stopped: the call then fetches it itself."""
    deadline = time.time() + PREFETCH_WAIT
    started = time.time()
    while time.time() < deadline:
        if os.path.exists(staged):
            return True
        if os.path.exists(staged + MISSING):
            return False
        if time.time() - started > 0.5 and not lock.held_elsewhere():
            return os.path.exists(staged)  # the worker is gone (or never started)
        time.sleep(0.005)
    return False


def _storage(settings):
    from ..storage import open_storage
    return open_storage(settings)


def fetch(storage, settings, name):
    """The original bytes of an archived WAL file, verified (zstd and gzip carry their
    own checksums); NotFound when absent."""
    from ..compress import CodecsByKey
    key, packed = _fetch_raw(storage, settings, name)
    return CodecsByKey().decompress(packed, key=key)


def _find_key(storage, settings, name):
    """The configured compression's key (tried by GET, without a HEAD first), else
    whatever suffix is archived for that name."""
    from ..compress import SUFFIX
    if archive.HISTORY.match(name):
        return [archive.wal_key(settings.cluster, name, "")]
    preferred = archive.wal_key(settings.cluster, name, SUFFIX[settings.compression])
    return [preferred, None]


def _fetch_raw(storage, settings, name):
    """(key, stored bytes) of an archived WAL file; NotFound when the archive lacks it."""
    for key in _find_key(storage, settings, name):
        if key is None:  # another compression than the configured one
            for info in storage.list(archive.wal_key(settings.cluster, name, "")):
                base = archive.strip_suffix(info.key.rsplit("/", 1)[-1])[0]
                if base == name:
                    return info.key, storage.get(info.key)
            break
        try:
            return key, storage.get(key)
        except NotFound:
            continue
    raise NotFound("WAL %s is not in the archive of cluster %s" % (name, settings.cluster),
                   code="wal_not_found", stage="wal-fetch")


def _write(dest, data):
    tmp = dest + ".pgdr-tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.rename(tmp, dest)


def _move(src, dest):
    try:
        os.rename(src, dest)
    except OSError:  # spool on another filesystem
        shutil.copyfile(src, dest + ".pgdr-tmp")
        os.rename(dest + ".pgdr-tmp", dest)
        os.unlink(src)


def _next_names(name, count, segment_size):
    """``name`` and the ``count - 1`` segments after it on the same timeline."""
    from ..postgres.wal import segment_name
    timeline = int(name[:8], 16)
    per_log = 0x100000000 // segment_size
    segno = int(name[8:16], 16) * per_log + int(name[16:24], 16)
    return [segment_name(timeline, segno + i, segment_size) for i in range(count)]


def _request(staged_dir, name):
    """Tell the prefetcher which segment recovery asks for now (no fsync: a hint)."""
    path = os.path.join(staged_dir, REQUESTED)
    with open(path + ".tmp", "w") as handle:
        handle.write(name)
    os.rename(path + ".tmp", path)


def _requested(staged_dir):
    try:
        with open(os.path.join(staged_dir, REQUESTED)) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def _prefetch_worker(settings, staged_dir, lock_path):
    """One long-lived prefetcher per recovery: keeps the ``prefetch`` segments from the
    one recovery asked for last staged, ``workers`` downloads at a time, and exits when
    recovery stops asking (archive_idle seconds without a new request). A segment the
    archive lacks is marked missing, so the caller stops waiting and checks itself."""
    from concurrent.futures import ThreadPoolExecutor
    lock = spool.Lock(lock_path)
    if not lock.acquire():
        return
    storage = _storage(settings)
    segment_size = [None]
    in_flight = {}

    def download(name):
        try:
            data = fetch(storage, settings, name)
        except PgdrError:  # absent, or unreadable: the call will find out and say which
            _touch(os.path.join(staged_dir, name + MISSING))
            return
        segment_size[0] = segment_size[0] or len(data)
        _stage(os.path.join(staged_dir, name), data)

    try:
        pool = ThreadPoolExecutor(max_workers=max(1, settings.workers))
        last, idle_since = None, time.time()
        while time.time() - idle_since < max(settings.archive_idle, 2):
            for name in [n for n, f in in_flight.items() if f.done()]:
                in_flight.pop(name).result()
            current = _requested(staged_dir)
            if current != last:
                last, idle_since = current, time.time()
                _forget_older(staged_dir, current)
            if current is None:
                time.sleep(0.02)
                continue
            size = segment_size[0] or 16 * 1024 * 1024
            for name in _next_names(current, settings.prefetch, size):
                if len(in_flight) >= 2 * max(1, settings.workers):
                    break
                path = os.path.join(staged_dir, name)
                if name in in_flight or os.path.exists(path) or os.path.exists(path + MISSING):
                    continue
                in_flight[name] = pool.submit(download, name)
            time.sleep(0.02)
        pool.shutdown(wait=True)
    finally:
        lock.release()


def _forget_older(staged_dir, current):
    """Staged segments before the one asked for now (skipped, or of a timeline recovery
    left) and old 'missing' marks (the archive may have them by now)."""
    for entry in os.listdir(staged_dir):
        base = entry[:-len(MISSING)] if entry.endswith(MISSING) else entry
        if len(base) == 24 and (base < current or entry.endswith(MISSING)) and base != current:
            try:
                os.unlink(os.path.join(staged_dir, entry))
            except OSError:
                pass


def _stage(path, data):
    """Write a prefetched segment: renamed into place when complete; no fsync, the
    spool is a cache (a lost file is fetched again)."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.rename(tmp, path)


def _touch(path):
    with open(path, "w"):
        pass
