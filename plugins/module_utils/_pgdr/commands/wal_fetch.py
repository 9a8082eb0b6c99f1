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

from .. import archive, spool
from ..errors import NotFound

NOT_IN_ARCHIVE = 1


def run(settings, progress, dry_run=False):
    settings.require("cluster", "wal_name", "wal_dest")
    name, dest = settings.wal_name, settings.wal_dest
    if not (archive.SEGMENT_OR_PARTIAL.match(name) or archive.HISTORY.match(name)):
        raise NotFound("wal-fetch: %r is not a WAL file name" % name, code="wal_name_invalid")
    pgdata = os.getcwd()  # restore_command runs in the data directory
    if settings.spool_dir and not archive.HISTORY.match(name):
        staged = os.path.join(spool.fetch_dir(settings, pgdata), name)
        if os.path.exists(staged):
            size = os.path.getsize(staged)
            _move(staged, dest)
            _prefetch(settings, pgdata, name, size)
            return {"changed": True, "wal": name, "prefetched": True}
    data = fetch(_storage(settings), settings, name)
    _write(dest, data)
    if settings.spool_dir and len(name) == 24:
        _prefetch(settings, pgdata, name, len(data))
    return {"changed": True, "wal": name, "prefetched": False}


def _storage(settings):
    from ..storage import open_storage
    return open_storage(settings)


def fetch(storage, settings, name):
    """The original bytes of an archived WAL file, verified; NotFound when absent."""
    from ..compress import Codec
    key = _find_key(storage, settings, name)
    suffix = next(s for s in archive.SUFFIXES if key.endswith(s))
    codec = Codec({".zst": "zstd", ".gz": "gzip", "": "none"}[suffix])
    try:
        packed = storage.get(key)
    except NotFound:
        raise NotFound("WAL %s is not in the archive of cluster %s" % (name, settings.cluster),
                       code="wal_not_found", stage="wal-fetch")
    return codec.decompress(packed)


def _find_key(storage, settings, name):
    """The configured compression first (one GET), then whatever is archived."""
    from ..compress import SUFFIX
    if archive.HISTORY.match(name):
        return archive.wal_key(settings.cluster, name, "")
    preferred = archive.wal_key(settings.cluster, name, SUFFIX[settings.compression])
    if storage.head(preferred) is not None:
        return preferred
    for info in storage.list(archive.wal_key(settings.cluster, name, "")):
        base = archive.strip_suffix(info.key.rsplit("/", 1)[-1])[0]
        if base == name:
            return info.key
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
    from ..postgres.wal import segment_name
    timeline = int(name[:8], 16)
    per_log = 0x100000000 // segment_size
    segno = int(name[8:16], 16) * per_log + int(name[16:24], 16)
    return [segment_name(timeline, segno + i, segment_size) for i in range(1, count + 1)]


def _prefetch(settings, pgdata, name, segment_size):
    """Start (once) a worker that fetches the segments after ``name``; the size of
    a full segment tells the numbering (wal_segment_size is set at initdb)."""
    if settings.prefetch <= 0 or segment_size & (segment_size - 1):
        return
    staged_dir = spool.fetch_dir(settings, pgdata)
    wanted = [n for n in _next_names(name, settings.prefetch, segment_size)
              if not os.path.exists(os.path.join(staged_dir, n))]
    lock = os.path.join(staged_dir, "fetch.lock")
    if not wanted or spool.Lock(lock).held_elsewhere():
        return
    spool.spawn(lambda: _prefetch_worker(settings, staged_dir, wanted, lock),
                os.path.join(staged_dir, "worker.log"))


def _prefetch_worker(settings, staged_dir, names, lock_path):
    from ..parallel import run_all
    lock = spool.Lock(lock_path)
    if not lock.acquire():
        return
    try:
        storage = _storage(settings)

        def one(name):
            try:
                data = fetch(storage, settings, name)
            except NotFound:
                return False  # the end of the archive: nothing more to prefetch
            spool.write_atomic(os.path.join(staged_dir, name), data)
            return True

        run_all(one, names, settings.workers)
    finally:
        lock.release()
