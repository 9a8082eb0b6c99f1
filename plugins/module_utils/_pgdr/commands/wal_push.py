# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgdr wal-push %p``: PostgreSQL's archive_command.

Exit 0 only once the file is durably stored in the repository (the store
returned; posix: fsynced). Pushing a name that is archived with the same
bytes succeeds; with other bytes it fails loudly and the stored object stays.

With a spool_dir (the default set-up of the archiving role) the call is
asynchronous: a background worker pushes every segment PostgreSQL has marked
ready, in parallel and ahead of PostgreSQL's calls, and each call only waits
for its own segment's result file. This fast path imports neither boto3 nor
the compression library: they load in the worker. A result stays in the spool
until PostgreSQL has marked its segment done (no .ready left): the worker
removes it then, so the spool holds results of pending segments only.

Only WAL is pushed: the file's name must be a WAL file name, and a segment must
look like one (a power-of-two size between 1 MiB and 1 GiB, a first page with
an XLOG long page header for its own position).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import struct
import time

from .. import faultpoint, pushhealth, spool
from ..errors import ConfigError, PgdrError

READY_SUFFIX = ".ready"
RESULT_FILE = re.compile(r"^(.+)\.(ok|error)(\.tmp\.[0-9]+)?$")
MIN_SEGMENT, MAX_SEGMENT = 1 << 20, 1 << 30
LONG_PAGE_HEADER = 40
CLEAN_EVERY = 1.0          # seconds between the worker's passes over finished results
LOG_TAIL = 8192            # bytes of worker.log read for its last error line


def run(settings, progress, dry_run=False):
    settings.require("cluster", "wal_path")
    path = settings.wal_path
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ConfigError("wal-push: %s does not exist or is not a file (archive_command "
                          "must pass %%p)" % path, code="wal_path_invalid", stage="wal-push")
    with open(path, "rb") as handle:
        check_wal_file(path, os.fstat(handle.fileno()).st_size, handle.read(LONG_PAGE_HEADER))
    if dry_run:
        return {"changed": True, "wal": name}
    ready = os.path.join(os.path.dirname(os.path.abspath(path)), "archive_status",
                         name + READY_SUFFIX)
    if settings.spool_dir and settings.archive_async and os.path.exists(ready):
        return _push_async(settings, path, name)
    # not marked ready by PostgreSQL (a manual call): the worker would never see it
    written = push_files(settings, [(name, path)])[0]
    return {"changed": written, "wal": name}


def check_wal_file(path, size, head):
    """ConfigError unless path is a WAL file: a segment, partial segment, backup history
    or timeline history file name; a segment's size a power of two from 1 MiB to 1 GiB
    and its first page an XLOG long page header (magic, flag, sizes, its own address)."""
    from .. import archive
    name = os.path.basename(path)
    if not (archive.SEGMENT_OR_PARTIAL.match(name) or archive.HISTORY.match(name)):
        raise ConfigError("wal-push: %s is not a WAL file: expected a segment, .partial, "
                          ".backup or .history file name (like 000000010000000000000001); "
                          "nothing was uploaded" % path, code="wal_path_invalid",
                          stage="wal-push")
    if len(name) != 24:
        return
    problem = _segment_problem(name, size, head)
    if problem:
        raise ConfigError("wal-push: %s is not a WAL segment: %s; nothing was uploaded"
                          % (path, problem), code="wal_file_invalid", stage="wal-push")


def _segment_problem(name, size, head):
    """Why a file of this size starting with head is not WAL segment name (None if it is)."""
    from ..postgres.wal import long_page_header, segment_number
    if size < MIN_SEGMENT or size > MAX_SEGMENT or size & (size - 1):
        return "its size %d is not a power of two between 1 MiB and 1 GiB" % size
    header = long_page_header(head)
    if header is None:
        if len(head) < LONG_PAGE_HEADER:
            return "it is shorter than a WAL page header"
        return ("its first page has no XLOG long page header (magic 0x%04X, info 0x%04X)"
                % struct.unpack_from("<HH", head, 0))
    page_address, segment_size, page_size = header[3], header[5], header[6]
    if segment_size != size or page_size < 1024 or page_size & (page_size - 1):
        return ("its page header says segment size %d, page size %d (file size %d)"
                % (segment_size, page_size, size))
    start = segment_number(name, size) * size
    if page_address != start:
        return ("its first page is for WAL position %X/%X, not this segment's %X/%X"
                % (page_address >> 32, page_address & 0xFFFFFFFF, start >> 32,
                   start & 0xFFFFFFFF))
    return None


def _push_async(settings, path, name):
    pg_wal = os.path.dirname(os.path.abspath(path))
    out = spool.archive_dir(settings, os.path.dirname(pg_wal))
    ok, error = os.path.join(out, name + ".ok"), os.path.join(out, name + ".error")
    if os.path.exists(error):
        os.unlink(error)  # an earlier attempt's result: this call pushes afresh
    found = spool.wait_for([ok], 0)
    if found == ok and not _pushed(pg_wal, out, name):
        found = None  # an older file's result (a recycled name): never taken for this one
    lock = os.path.join(out, "push.lock")
    files = pushhealth.fingerprint(settings)
    deadline = time.time() + settings.archive_wait
    while found is None:
        if pushhealth.fingerprint(settings) != files:
            raise PgdrError("wal-push of %s: the config or credentials file changed during "
                            "this call; PostgreSQL calls again with the new settings" % name,
                            code="wal_push_settings_changed", stage="wal-push")
        # a worker exits when its settings files change or after archive_idle seconds
        # without a success: start one whenever none holds the lock
        if not spool.Lock(lock).held_elsewhere():
            spool.spawn(lambda: _worker(settings, pg_wal, lock, out, files),
                        os.path.join(out, "worker.log"))
        found = spool.wait_for([ok, error], max(0.0, min(1.0, deadline - time.time())))
        if time.time() >= deadline:
            break
    if found == ok:  # stays until PostgreSQL marked the segment done: the worker removes it
        return {"changed": True, "wal": name, "async": True}
    if found == error:
        with open(error) as handle:
            message = handle.read().strip()
        os.unlink(error)  # the next call retries
        raise PgdrError("wal-push of %s failed in the background worker: %s"
                        % (name, message), code="wal_push_failed", stage="wal-push")
    raise PgdrError("wal-push of %s: no result within archive_wait=%ss (the background "
                    "worker %s; its last error: %s); PostgreSQL will call again"
                    % (name, settings.archive_wait,
                       "is still running" if spool.Lock(lock).held_elsewhere()
                       else "is not running",
                       last_error(os.path.join(out, "worker.log")) or "none logged"),
                    code="wal_push_timeout", stage="wal-push")


def last_error(log_path):
    """The last line of a worker log that reports a failure, else None."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - LOG_TAIL))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except (IOError, OSError):
        return None
    for line in reversed(lines):
        if "fail" in line.lower() or "error" in line.lower():
            return line.strip()
    return None


def _clean_results(pg_wal, out):
    """Remove the results (and killed writers' temporary files) of segments PostgreSQL
    no longer has ready: it marked them done, so no call will ever read them."""
    status = os.path.join(pg_wal, "archive_status")
    for entry in os.listdir(out):
        result = RESULT_FILE.match(entry)
        if result and not os.path.exists(os.path.join(status, result.group(1) + READY_SUFFIX)):
            try:
                os.unlink(os.path.join(out, entry))
            except OSError:
                pass


def _keep_running(settings, idle, pg_wal, out):
    """True while the worker has work: less than archive_idle seconds without a success, or
    (for at most archive_wait more) results whose segments PostgreSQL has not yet marked
    done. Leaving those behind would leave them in the spool for good: only a worker
    removes them, and none would run again until the next push."""
    if idle < settings.archive_idle:
        return True
    if idle >= settings.archive_idle + settings.archive_wait:
        return False
    _clean_results(pg_wal, out)
    return any(RESULT_FILE.match(entry) for entry in os.listdir(out))


def _ready_names(pg_wal, out):
    """Files PostgreSQL has marked ready and the worker has not yet pushed.
    History files first: a restore needs them to follow a new timeline."""
    status = os.path.join(pg_wal, "archive_status")
    try:
        names = [n[:-len(READY_SUFFIX)] for n in os.listdir(status) if n.endswith(READY_SUFFIX)]
    except OSError:
        return []
    names = [n for n in names if not _pushed(pg_wal, out, n)]
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


def _pushed(pg_wal, out, name):
    """True when name has an .ok result written after the file was last changed: a
    result older than the file (a name PostgreSQL used again, a re-initialised or
    restored cluster with the same system identifier) is not this file's, and is removed."""
    ok = os.path.join(out, name + ".ok")
    try:
        if os.stat(ok).st_mtime_ns >= os.stat(os.path.join(pg_wal, name)).st_mtime_ns:
            return True
    except OSError:
        return False
    try:
        os.unlink(ok)
    except OSError:
        pass
    return False


def _worker(settings, pg_wal, lock_path, out, files=None):
    lock = spool.Lock(lock_path)
    if not lock.acquire():
        return  # another worker is already pushing
    failures = []

    def report(name, result):
        """Each segment's result as soon as it is stored: PostgreSQL's call for it
        returns without waiting for the rest of the batch."""
        if isinstance(result, Exception):
            message = str(getattr(result, "msg", result))
            failures.append((name, message))
            spool.write_atomic(os.path.join(out, name + ".error"), message.encode("utf-8"))
        else:
            spool.write_atomic(os.path.join(out, name + ".ok"), b"")

    try:
        from ..storage import open_storage
        health = pushhealth.FailureLog(out)
        try:
            storage = open_storage(settings)  # one client for the worker's whole life
        except PgdrError as exc:  # unusable settings: every waiting call learns why now
            for name in _ready_names(pg_wal, out)[:max(1, settings.workers) * 4]:
                report(name, exc)
            health.failed(failures or [("-", exc.msg)])
            _batch_metrics(settings, [], True)
            return
        files = files or pushhealth.fingerprint(settings)
        # idle: no success for archive_idle seconds (failures do not keep a worker alive)
        idle_since, cleaned = time.time(), 0
        while _keep_running(settings, time.time() - idle_since, pg_wal, out):
            if pushhealth.fingerprint(settings) != files:
                pushhealth.log("config or credentials file changed: exiting; the next "
                               "wal-push starts a worker with the new settings")
                return
            if time.time() - cleaned >= CLEAN_EVERY:
                _clean_results(pg_wal, out)
                cleaned = time.time()
            # a failed segment waits for PostgreSQL's next call for it (which removes
            # its .error): no retry loop here, and never with stale settings
            names = [n for n in _ready_names(pg_wal, out)
                     if not os.path.exists(os.path.join(out, n + ".error"))]
            if not names:
                time.sleep(0.05)
                continue
            batch = names[:max(1, settings.workers) * 4]
            del failures[:]
            push_files(settings, [(n, os.path.join(pg_wal, n)) for n in batch],
                       keep_going=True, on_done=report, storage=storage)
            if failures:
                health.failed(list(failures))
            else:
                health.succeeded()
                idle_since = time.time()
            failed = set(n for n, dummy in failures)
            _batch_metrics(settings, [n for n in batch if n not in failed], bool(failures))
    finally:
        lock.release()


def _batch_metrics(settings, pushed, failed):
    """The node's textfile at the end of a batch (imported here: the per-segment fast
    path stays lean)."""
    from .. import metrics
    metrics.archive_batch(settings, pushed, failed)


def push_files(settings, files, keep_going=False, on_done=None, storage=None):
    """Push (name, path) pairs in parallel; True/False per file (written or
    already there). With keep_going, failures are returned instead of raised;
    on_done(name, result) is called as each file finishes."""
    from .. import archive
    from ..compress import Codec
    from ..parallel import run_all
    from ..storage import open_storage

    data_codec = Codec(settings.compression, settings.compression_level)
    plain = Codec("none")  # history files stay readable text in the repository
    storage = storage or open_storage(settings)

    def one(item):
        result = push_one(item)
        if on_done is not None:
            on_done(item[0], result)
        return result

    def push_one(item):
        name, path = item
        codec = plain if archive.HISTORY.match(name) else data_codec
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            check_wal_file(path, len(raw), raw[:LONG_PAGE_HEADER])
            key = archive.wal_key(settings.cluster, name, codec.suffix)
            packed = codec.compress(raw)
            faultpoint.reached("wal_push.before_put")
            written = archive.push(storage, key, packed, raw, name, codec)
            faultpoint.reached("wal_push.after_put")
            return written
        except PgdrError as exc:
            if keep_going:
                return exc
            raise
        except (IOError, OSError) as exc:
            error = PgdrError("cannot read %s: %s" % (path, exc), code="wal_unreadable",
                              stage="wal-push")
            if keep_going:
                return error
            raise error

    return run_all(one, files, settings.workers)
