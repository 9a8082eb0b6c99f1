# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgdr wal-fetch %f %p``: PostgreSQL's restore_command.

Exit 0 when the file is in place, 1 when the archive certainly does not have it
(WalNotFound, raised here only: the normal end of the archive, PostgreSQL then
ends recovery or tries pg_wal). Any other failure (repository unreachable,
damaged object, a full or missing destination, a bug) must not look like 'not
found', or PostgreSQL would end recovery early and promote at the wrong point:
the CLI exits with 128 + the error's code, which PostgreSQL treats as fatal and
stops recovery instead. Every file handed to PostgreSQL was read through
storage.get, which verifies it against the SHA-256 recorded when it was stored;
a failed call leaves no temporary file behind.

With a spool_dir, each call also starts (once) a background worker that
fetches the next ``prefetch`` segments in parallel, so recovery reads from
local disk instead of waiting on one request per segment. The worker moves the
segments it checked, in order, to its ready directory, where the launchers' fast
path (walready.py) hands them over without loading the engine.

In a copy pgdr restored (its restore marker is in the data directory), every
segment is scanned for CREATE TABLESPACE before PostgreSQL gets it: at a record
whose location holds another cluster's tablespace the copy's WAL ends, so a
target before it is reached and recovery past it stops (postgres/walscan.py).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import errno
import json
import os
import re
import time

from .. import archive, atomicfile, faultpoint, spool, walready
from ..errors import (ConfigError, IntegrityError, NotFound, PgdrError, RepositoryError,
                      TargetRefused, WalNotFound)
from ..postgres import walscan
from ..postgres.ownfiles import RESTORE_MARKER, SCAN_STOP, SCAN_TAIL

MISSING = ".missing"         # the prefetcher found this segment absent from the archive
FAILED = ".failed"           # the prefetcher could not read it: the call fetches it itself
PAUSED = "paused"            # the spool was full or unwritable: calls fetch directly a while
PAUSE_SECONDS = 60
TMP = ".pgdr-tmp"            # dest + TMP: written, then renamed to dest
STAGING = re.compile(r"^[0-9A-F]{24}(\.scan)?\.tmp\.[0-9]+$")   # a download being staged
SCANNED = ".scan"            # the prefetcher's tablespace scan of a staged segment
PREFETCH_WAIT = 30.0         # seconds a call waits for a segment the prefetcher is fetching
RECOVERY_TARGETS = ("recovery_target", "recovery_target_time", "recovery_target_lsn",
                    "recovery_target_xid", "recovery_target_name")


def run(settings, progress, dry_run=False, call=None):
    """call: the command line's options before %f %p (walready.call_key), when the CLI
    runs it: the fast path then finds this recovery's ready segments."""
    settings.require("cluster", "wal_name", "wal_dest")
    name, dest = settings.wal_name, settings.wal_dest
    if not (archive.SEGMENT_OR_PARTIAL.match(name) or archive.HISTORY.match(name)):
        raise ConfigError("wal-fetch: %r is not a WAL file name (expected a segment like "
                          "000000010000000000000001 or a history file like 00000002.history)"
                          % name, code="wal_name_invalid", stage="wal-fetch")
    pgdata = os.getcwd()  # restore_command runs in the data directory
    _refuse_past_a_stop(pgdata, name)
    placed = False
    try:
        staged_dir = None
        if settings.spool_dir and settings.prefetch > 0 and len(name) == 24:
            staged_dir = _prefetcher(settings, progress, pgdata, name, call)
        if staged_dir is not None:
            staged = os.path.join(staged_dir, name)
            ready = os.path.join(staged_dir, walready.READY, name)
            if _wait_staged(staged, spool.Lock(os.path.join(staged_dir, "fetch.lock")),
                            ready) and (_move(ready, dest) or _move(staged, dest)
                                        or _move(ready, dest)):  # made ready meanwhile
                placed = True
                _remove(ready + walready.TAIL)
                _refuse_other_system(pgdata, name, dest)
                _end_before_foreign_tablespaces(pgdata, name, dest, progress,
                                                _take_scan(staged + SCANNED))
                return {"changed": True, "wal": name, "prefetched": True}
        # history files, no spool, or the prefetcher did not deliver: fetch it here
        placed = _write(dest, fetch(_storage(settings), settings, name))
        _refuse_other_system(pgdata, name, dest)
        _end_before_foreign_tablespaces(pgdata, name, dest, progress)
        return {"changed": True, "wal": name, "prefetched": False}
    except BaseException as exc:
        # whatever failed, PostgreSQL gets no file: neither a half-written temporary
        # file nor a segment that was not completely checked
        _remove(dest + TMP)
        if placed:
            _remove(dest)
        if isinstance(exc, WalNotFound):
            _refuse_planned_absence(pgdata, name, exc)
            _confirm_repository(settings, pgdata, exc)
        raise


def _confirm_repository(settings, pgdata, exc):
    """'Not in the archive' only from a repository that is there: a missing repository
    directory (an unmounted NFS share), a missing bucket or refused credentials would
    otherwise read as the end of the archive, and recovery would promote early. In a copy
    pgdr restored with archived WAL to replay, an archive holding no WAL at all for the
    cluster (a wrong prefix or cluster) is not its end either. A standby set up before
    anything was archived still gets 'not in the archive'."""
    storage = _storage(settings)
    storage.check()
    marker = _read_json(os.path.join(pgdata, RESTORE_MARKER)) or {}
    if marker.get("wal_planned") and not storage.list_dirs("%s/wal/" % settings.cluster):
        raise RepositoryError(
            "%s; and the repository %s holds no WAL at all for cluster %s although this "
            "restore was planned with archived WAL: a wrong cluster, prefix or bucket is not "
            "taken for the end of the archive" % (exc.msg, storage.describe(),
                                                  settings.cluster),
            code="wal_archive_missing", stage="wal-fetch")


def _refuse_other_system(pgdata, name, dest):
    """A segment placed for a copy pgdr restored must come from that copy's system: its
    first page's long header carries the system identifier (bytes 24-31). Another
    system's WAL (a repository mix-up) would be rejected by PostgreSQL as the end of
    WAL, and recovery would promote early: stop instead."""
    if len(name) != 24:
        return
    wanted = (_read_json(os.path.join(pgdata, RESTORE_MARKER)) or {}).get("system_identifier")
    if not wanted:
        return
    with open(dest, "rb") as handle:
        found = _system_of(handle.read(8192))  # its first page
    if found is None:
        return  # not a long header: PostgreSQL will say so itself, fatally
    if str(found) != str(wanted):
        raise IntegrityError(
            "WAL %s in the repository belongs to database system %s, not to %s that this "
            "copy was restored from: the restore and its restore_command read different "
            "repositories (prefix, bucket or cluster); recovery stops here"
            % (name, found, wanted), code="wal_other_system", stage="wal-fetch")


def _refuse_planned_absence(pgdata, name, exc):
    """'Not in the archive' for a segment the restore's plan saw archived is not the end
    of WAL: the segment vanished (deleted, expired, a listing that lied). Answering 1 would
    let PostgreSQL end recovery there and promote with the rest missing: stop instead."""
    marker = _read_json(os.path.join(pgdata, RESTORE_MARKER)) or {}
    if len(name) != 24 or not marker.get("wal_planned"):
        return
    timeline = int(name[:8], 16)
    from ..postgres.wal import segment_number
    segno = segment_number(name, marker.get("wal_segment_size") or 16 * 1024 * 1024)
    for run_timeline, first, last in marker["wal_planned"]:
        if run_timeline == timeline and first <= segno <= last:
            raise IntegrityError(
                "WAL %s was in the archive when this restore was planned and is gone now "
                "(%s): recovery stops here instead of ending early and promoting without "
                "the WAL after it. Put the segment back, or restore again to a point "
                "before it" % (name, exc.msg), code="wal_vanished", stage="wal-fetch")


def _prefetcher(settings, progress, pgdata, name, call=None):
    """The spool directory of this restore, with its prefetcher asked for name (started
    when none runs); None when the spool is unusable (full, unwritable): the call then
    fetches directly, and recovery goes on at the speed of one request per segment. With
    call, the data directory's pointer names it for the fast path."""
    try:
        staged_dir = spool.fetch_dir(settings, pgdata)
        if _paused(staged_dir):
            return None
        walready.request(staged_dir, name)
        lock = spool.Lock(os.path.join(staged_dir, "fetch.lock"))
        if not lock.held_elsewhere():
            scan = _is_restored_copy(pgdata)
            spool.spawn(lambda: _prefetch_worker(settings, staged_dir, lock.path, scan,
                                                 pgdata),
                        os.path.join(staged_dir, "worker.log"))
        if call is not None:
            _point(pgdata, staged_dir, call, progress)
        return staged_dir
    except (IOError, OSError, ConfigError) as exc:
        progress.event("wal-fetch: spool %s is unusable (%s): fetching %s directly"
                       % (settings.spool_dir, getattr(exc, "msg", exc), name))
        return None


def _point(pgdata, staged_dir, call, progress):
    """The pointer for the fast path; without it (an unwritable file) every call simply
    comes this way."""
    try:
        walready.point(pgdata, staged_dir, call)
    except (IOError, OSError) as exc:
        progress.event("wal-fetch: cannot record the prefetch directory in %s (%s): every "
                       "call loads the engine" % (pgdata, _reason(exc)))


def _paused(staged_dir):
    """True while the prefetcher stopped recently because the spool was full."""
    try:
        return time.time() - os.path.getmtime(os.path.join(staged_dir, PAUSED)) < PAUSE_SECONDS
    except OSError:
        return False


def _is_restored_copy(pgdata):
    return os.path.exists(os.path.join(pgdata, RESTORE_MARKER))


def _end_before_foreign_tablespaces(pgdata, name, dest, progress, scanned=None):
    """In a restored copy, never replay a CREATE TABLESPACE whose location holds another
    cluster's files (the copy would write into them): the segment handed to PostgreSQL
    ends just before that record (zeros: PostgreSQL reads the end of WAL there), and the
    stop is recorded for the calls that follow (_refuse_past_a_stop). A recovery target
    before the record is reached as usual. scanned: the prefetcher's scan of this
    segment, else it is scanned here (tens of ms on recovery's path)."""
    if len(name) != 24 or not _is_restored_copy(pgdata):
        return
    if scanned is None:
        with open(dest, "rb") as handle:
            scanned = walscan.scan(handle.read())
    creations, head, tail = scanned
    size = os.path.getsize(dest)
    straddling = walscan.join(_read_tail(pgdata, name, size), head)
    _write_tail(pgdata, name, tail)
    for oid, location, position in straddling + sorted(creations, key=lambda c: c[2]):
        holds = _foreign_tablespace(pgdata, oid, location)
        if holds:
            lsn = _end_segment(dest, name, position)
            msg = ("WAL %s creates tablespace oid %d at %s (LSN %s), which already holds %s: "
                   "another cluster's tablespace. Replaying it would make this restored copy "
                   "write into that directory, so its WAL ends there: a recovery target "
                   "before %s is reached as usual, recovery that must go past it stops. "
                   "Restore a backup taken after the tablespace was created, or restore on "
                   "another host" % (name, oid, location, lsn, ", ".join(holds), lsn))
            progress.event(msg)
            _write_json(os.path.join(pgdata, SCAN_STOP), {"segment": name, "lsn": lsn,
                                                          "msg": msg})
            return


def _end_segment(dest, name, position):
    """Zero the segment from the record at position (of its record stream) on; its LSN."""
    from ..postgres.wal import format_lsn
    size = os.path.getsize(dest)
    with open(dest, "r+b") as handle:
        page_size = walscan.page_size_of(handle.read(walscan.LONG_PAGE_HEADER))
        offset = walscan.segment_offset(page_size, position)
        handle.seek(offset)
        remaining = size - offset
        while remaining > 0:
            chunk = min(remaining, 1 << 20)
            handle.write(b"\0" * chunk)
            remaining -= chunk
    segno = int(name[8:16], 16) * (0x100000000 // size) + int(name[16:24], 16)
    return format_lsn(segno * size + offset)


def _refuse_past_a_stop(pgdata, name):
    """After a segment was ended before a foreign CREATE TABLESPACE: a later segment means
    recovery must go past that record; a history file without a recovery target means
    recovery ended there and is choosing the timeline to promote on (latest, at an
    earlier point than asked). Both stop recovery. With a target, recovery asks for
    history files only once it reached the target (else it fails by itself)."""
    stop = _read_json(os.path.join(pgdata, SCAN_STOP))
    if not stop or not _is_restored_copy(pgdata):
        return
    if archive.HISTORY.match(name):
        recovery = (_read_json(os.path.join(pgdata, RESTORE_MARKER)) or {}).get("recovery") or {}
        if any(key in recovery for key in RECOVERY_TARGETS):
            return
    elif name[8:24] <= stop["segment"][8:24]:
        return
    raise TargetRefused("%s (recovery asked for %s)" % (stop["msg"], name),
                        code="tablespace_in_use", stage="wal-fetch")


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def _write_json(path, value):
    _replace(path, json.dumps(value).encode("utf-8"))


def _replace(path, data, tmp=None):
    """A file replaced whole through tmp (no fsync: hints, scan state and the spool are
    caches); the temporary file never stays behind."""
    atomicfile.replace(path, data, mode=None, durable=False, tmp=tmp or path + ".tmp")


def _foreign_tablespace(pgdata, oid, location):
    """The version directories of this major in location, unless it is the copy's own
    tablespace (a segment fetched again after its record was replayed)."""
    if not location or not os.path.isabs(location) or not os.path.isdir(location):
        return []  # in place, or PostgreSQL itself refuses a missing directory
    link = os.path.join(pgdata, "pg_tblspc", str(oid))
    if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(location):
        return []
    try:
        with open(os.path.join(pgdata, "PG_VERSION")) as handle:
            prefix = "PG_%s_" % handle.read().strip()
    except (IOError, OSError):
        prefix = "PG_"
    return sorted(n for n in os.listdir(location) if n.startswith(prefix))


def _read_tail(pgdata, name, segment_size):
    """The tail of the segment before this one (any timeline: a new timeline's segment
    continues its parent's), when that is the one scanned last."""
    try:
        with open(os.path.join(pgdata, SCAN_TAIL), "rb") as handle:
            previous, tail = handle.read(24).decode("ascii"), handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return b""
    if len(previous) == 24 and _next_names(previous, 2, segment_size)[1][8:] == name[8:]:
        return tail
    return b""


def _write_tail(pgdata, name, tail):
    _replace(os.path.join(pgdata, SCAN_TAIL), name.encode("ascii") + tail)


def _save_scan(path, scanned):
    creations, head, tail = scanned
    _stage(path, json.dumps({"creations": creations, "head": base64.b64encode(head).decode(),
                             "tail": base64.b64encode(tail).decode()}).encode())


def _take_scan(path):
    """The prefetcher's scan of a staged segment (removed), else None."""
    try:
        with open(path) as handle:
            saved = json.load(handle)
        os.unlink(path)
    except (IOError, OSError, ValueError):
        return None
    return ([tuple(c) for c in saved["creations"]], base64.b64decode(saved["head"]),
            base64.b64decode(saved["tail"]))


def _wait_staged(staged, lock, ready):
    """True once the prefetcher staged the segment (or made it ready); False as soon as
    it marked it missing or failed (absent, or unreadable: the call then fetches it itself
    and its own answer says which), or stopped."""
    deadline = time.time() + PREFETCH_WAIT
    started = time.time()
    while time.time() < deadline:
        if os.path.exists(staged) or os.path.exists(ready):
            return True
        if os.path.exists(staged + MISSING) or os.path.exists(staged + FAILED):
            return False
        if time.time() - started > 0.5 and not lock.held_elsewhere():
            return os.path.exists(staged) or os.path.exists(ready)  # the worker is gone
        time.sleep(0.005)
    return False


def _storage(settings):
    from ..storage import open_storage
    return open_storage(settings)


def fetch(storage, settings, name):
    """The original bytes of an archived WAL file, verified (storage.get checks the
    stored SHA-256; zstd and gzip carry their own checksums too); WalNotFound only
    when the archive certainly lacks it."""
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
    """(key, stored bytes) of an archived WAL file; WalNotFound when the archive lacks it
    (every other failure, e.g. a RepositoryError or IntegrityError, propagates)."""
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
    raise WalNotFound("WAL %s is not in the archive of cluster %s"
                      % (name, settings.cluster), stage="wal-fetch")


def _write(dest, data):
    """Write dest through dest + TMP (removed on any failure); True once in place. A
    local failure (full or missing directory) is a PgdrError naming dest: never 'not
    found', PostgreSQL must stop, not promote."""
    tmp = dest + TMP
    try:
        with open(tmp, "wb") as handle:
            view = memoryview(data)
            handle.write(view[:len(data) // 2])
            handle.flush()
            faultpoint.reached("wal_fetch.mid_write")
            handle.write(view[len(data) // 2:])
        os.rename(tmp, dest)
    except (IOError, OSError) as exc:
        _remove(tmp)
        raise PgdrError("wal-fetch: cannot write %s: %s (recovery stops here; it resumes "
                        "once %s is writable again)" % (dest, _reason(exc), os.path.dirname(dest)
                                                        or "."),
                        code="wal_dest_unwritable", stage="wal-fetch")
    return True


def _reason(exc):
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


def _move(src, dest):
    """A staged segment into place; True once there, False when src is not there (the
    prefetcher made it ready a moment ago: the caller tries the other place)."""
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not os.path.exists(src):
            return False
        if exc.errno != errno.EXDEV:
            raise PgdrError("wal-fetch: cannot move %s to %s: %s" % (src, dest, _reason(exc)),
                            code="wal_dest_unwritable", stage="wal-fetch")
        # spool on another filesystem: the staged copy stays until dest is complete
        try:
            with open(src, "rb") as handle:
                data = handle.read()
        except (IOError, OSError) as missing:
            if missing.errno == errno.ENOENT:
                return False
            raise
        _write(dest, data)
        _remove(src)
    return True


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _next_names(name, count, segment_size):
    """``name`` and the ``count - 1`` segments after it on the same timeline."""
    from ..postgres.wal import segment_name
    timeline = int(name[:8], 16)
    per_log = 0x100000000 // segment_size
    segno = int(name[8:16], 16) * per_log + int(name[16:24], 16)
    return [segment_name(timeline, segno + i, segment_size) for i in range(count)]


def _requested(staged_dir):
    """(the segment recovery asked for last, which request it was), or (None, None)."""
    path = os.path.join(staged_dir, walready.REQUESTED)
    try:
        with open(path) as handle:
            found = os.fstat(handle.fileno())  # each request is a new file
            return handle.read().strip(), (found.st_ino, found.st_mtime_ns)
    except (IOError, OSError):
        return None, None


def _prefetch_worker(settings, staged_dir, lock_path, scan=False, pgdata=None):
    """One long-lived prefetcher per recovery: keeps the ``prefetch`` segments from the
    one recovery asked for last staged, ``workers`` downloads at a time, and exits when
    recovery stops asking (archive_idle seconds without a new request). A segment the
    archive lacks is marked missing, one it cannot read (repository, checksum) failed:
    either way the caller stops waiting and fetches it itself, and its own answer tells
    absent (exit 1) from unreadable (exit > 125). A full or unwritable spool stops the
    worker and pauses prefetching (the calls fetch directly). With scan (a restored
    copy), each segment's tablespace scan is saved beside it. Staged segments that pass
    the checks, in order after the one asked for, move to ready/ (_make_ready)."""
    from concurrent.futures import ThreadPoolExecutor
    lock = spool.Lock(lock_path)
    if not lock.acquire():
        return
    segment_size = [None]
    in_flight = {}
    spool_failed = []
    # name -> (system identifier, scan) of what this worker staged: not fetched again once
    # a call took it, and what _make_ready checks
    staged = {}

    def download(name):
        path = os.path.join(staged_dir, name)
        try:
            data = fetch(storage, settings, name)
        except WalNotFound:
            _mark(path + MISSING)
            return
        except Exception:  # unreadable: the caller fetches it itself and reports why
            _mark(path + FAILED)
            return
        segment_size[0] = segment_size[0] or len(data)
        try:
            scanned = walscan.scan(data) if scan else None
            if scan:  # before the segment appears, so the caller finds both
                _save_scan(path + SCANNED, scanned)
            _stage(path, data)
            staged[name] = (_system_of(data), scanned)
        except (IOError, OSError) as exc:  # the spool is full: stop, calls fetch directly
            _remove(path + SCANNED)
            spool_failed.append("cannot stage %s in %s: %s" % (name, staged_dir, _reason(exc)))
            _mark(path + FAILED)

    try:
        _remove_staging(staged_dir)  # downloads of a worker that was killed
        storage = _storage(settings)
        system = _ready_system(staged_dir, pgdata)
        pool = ThreadPoolExecutor(max_workers=max(1, settings.workers))
        last, idle_since = (None, None), time.time()
        while time.time() - idle_since < max(settings.archive_idle, 2) and not spool_failed:
            for name in [n for n, f in in_flight.items() if f.done()]:
                in_flight.pop(name).result()
            request = _requested(staged_dir)
            current = request[0]
            if request != last:
                if current is not None and last[0] is not None and current < last[0]:
                    staged.clear()  # recovery started over: what it took is to fetch again
                elif current is not None and current == last[0]:
                    staged.pop(current, None)  # asked again (a retry): fetch it again
                last, idle_since = request, time.time()
                _forget_older(staged_dir, current)
                for name in [n for n in list(staged) if n < current]:
                    del staged[name]  # list(): the downloads add to it meanwhile
            if current is None:
                time.sleep(0.02)
                continue
            size = segment_size[0] or 16 * 1024 * 1024
            names = _next_names(current, settings.prefetch, size)
            try:
                _make_ready(staged_dir, names, staged, system)
            except (IOError, OSError):  # a full spool: nothing more is made ready
                system = None
            for name in names:
                if len(in_flight) >= 2 * max(1, settings.workers):
                    break
                path = os.path.join(staged_dir, name)
                if name in in_flight or name in staged or any(
                        os.path.exists(path + mark) for mark in ("", MISSING, FAILED)) \
                        or os.path.exists(os.path.join(staged_dir, walready.READY, name)):
                    continue
                in_flight[name] = pool.submit(download, name)
            time.sleep(0.02)
        pool.shutdown(wait=True)
        if spool_failed:
            _mark(os.path.join(staged_dir, PAUSED))
            raise PgdrError("prefetching paused for %ds: %s" % (PAUSE_SECONDS, spool_failed[0]),
                            code="spool_full", stage="wal-fetch")
    finally:
        lock.release()


def _make_ready(staged_dir, names, staged, system):
    """Move the staged segments after names[0] (the one recovery asked for last, which a
    call is taking) to ready/, in order, for the fast path (walready.py), and stop at the
    first that is not staged yet or not plainly fine: another system's (or an unknown
    one's), or in a restored copy one with a CREATE TABLESPACE in it or across its start,
    or one whose predecessor this worker did not stage (its end is unknown). Those come
    the full way, which checks and refuses them as always. In a restored copy each
    segment's record-stream end goes first (<segment>.tail, the SCAN_TAIL the call moves
    into the data directory)."""
    ready_dir = os.path.join(staged_dir, walready.READY)
    previous = staged.get(names[0])
    for name in names[1:]:
        ready, info = os.path.join(ready_dir, name), staged.get(name)
        if previous is None or info is None or system is None or info[0] != system:
            return
        if not os.path.exists(ready):
            if not os.path.isdir(ready_dir):
                os.mkdir(ready_dir, 0o700)
            if info[1] is not None and previous[1] is not None:
                creations, head, tail = info[1]
                if creations or walscan.join(previous[1][2], head):
                    return
                _replace(ready + walready.TAIL, name.encode("ascii") + tail)
            elif info[1] is not None or previous[1] is not None:
                return
            try:
                # synced here, off recovery's path: PostgreSQL syncs each segment it is
                # handed (a durable rename into pg_wal) and then finds nothing to write
                atomicfile.sync(os.path.join(staged_dir, name))
                os.rename(os.path.join(staged_dir, name), ready)
            except OSError:  # taken by a call a moment ago
                _remove(ready + walready.TAIL)
                return
        previous = info


def _system_of(data):
    """The system identifier in a segment's first page (data: the segment, or its start),
    or None when it carries no long page header."""
    from ..postgres.wal import LONG_HEADER, long_page_header
    header = long_page_header(data[:LONG_HEADER.size])
    return header[4] if header else None


def _ready_system(staged_dir, pgdata):
    """The recovering directory's system identifier (pg_control), or None: then nothing
    is made ready and every call comes the full way. None too when the spool is on
    another filesystem than the data directory or its pg_wal: the fast path only
    renames."""
    try:
        device = os.stat(staged_dir).st_dev
        if not pgdata or any(os.stat(os.path.join(pgdata, d)).st_dev != device
                             for d in ("", "pg_wal")):
            return None
        return walready.control_system(pgdata)
    except (IOError, OSError, ValueError):
        return None


def _forget_older(staged_dir, current):
    """Staged segments and their scans before the one asked for now (skipped, or of a
    timeline recovery left) and old 'missing' and 'failed' marks (the archive may have
    them by now); never a download's temporary file."""
    for entry in os.listdir(staged_dir):
        base = entry.split(".", 1)[0]
        if entry not in (base, base + MISSING, base + FAILED, base + SCANNED):
            continue
        if len(base) == 24 and (base < current or entry.endswith((MISSING, FAILED))) \
                and base != current:
            _remove(os.path.join(staged_dir, entry))
    ready_dir = os.path.join(staged_dir, walready.READY)
    for entry in os.listdir(ready_dir) if os.path.isdir(ready_dir) else ():
        if entry[:24] < current or entry.endswith(".tmp"):  # a killed worker's tail
            _remove(os.path.join(ready_dir, entry))


def _stage(path, data):
    """Write a prefetched segment: renamed into place when complete, removed when not
    (a full spool); no fsync, the spool is a cache (a lost file is fetched again)."""
    _replace(path, data, "%s.tmp.%d" % (path, os.getpid()))


def _remove_staging(staged_dir):
    """Temporary files of downloads whose worker was killed (only the lock holder
    stages, so none is in progress)."""
    for entry in os.listdir(staged_dir):
        if STAGING.match(entry):
            _remove(os.path.join(staged_dir, entry))


def _mark(path):
    """An empty mark file (best effort: no data blocks, so it fits even a full spool)."""
    try:
        with open(path, "w"):
            pass
        os.utime(path, None)
    except (IOError, OSError):
        pass
