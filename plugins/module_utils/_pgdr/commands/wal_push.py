# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgdr wal-push %p``: PostgreSQL's archive_command.

Exit 0 only once the file is durably stored in the repository (the store
returned; posix: fsynced). Pushing a name that is archived with the same
bytes succeeds; with other bytes it fails loudly and the stored object stays.

With a spool_dir (the default set-up of the archiving role) the call is
asynchronous: a background worker pushes every segment PostgreSQL has marked
ready, in parallel and ahead of PostgreSQL's calls, and each call only waits
for its own segment's result file. This fast path imports neither boto3 nor
the compression library: they load in the worker.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from .. import pushhealth, spool
from ..errors import ConfigError, PgdrError

READY_SUFFIX = ".ready"


def run(settings, progress, dry_run=False):
    settings.require("cluster", "wal_path")
    path = settings.wal_path
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ConfigError("wal-push: %s does not exist or is not a file (archive_command "
                          "must pass %%p)" % path, code="wal_path_invalid", stage="wal-push")
    if dry_run:
        return {"changed": True, "wal": name}
    ready = os.path.join(os.path.dirname(os.path.abspath(path)), "archive_status",
                         name + READY_SUFFIX)
    if settings.spool_dir and settings.archive_async and os.path.exists(ready):
        return _push_async(settings, path, name)
    # not marked ready by PostgreSQL (a manual call): the worker would never see it
    written = push_files(settings, [(name, path)])[0]
    return {"changed": written, "wal": name}


def _push_async(settings, path, name):
    pg_wal = os.path.dirname(os.path.abspath(path))
    out = spool.archive_dir(settings, os.path.dirname(pg_wal))
    ok, error = os.path.join(out, name + ".ok"), os.path.join(out, name + ".error")
    if os.path.exists(error):
        os.unlink(error)  # an earlier attempt's result: this call pushes afresh
    found = spool.wait_for([ok], 0)
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
    if found == ok:
        os.unlink(ok)
        return {"changed": True, "wal": name, "async": True}
    if found == error:
        with open(error) as handle:
            message = handle.read().strip()
        os.unlink(error)  # the next call retries
        raise PgdrError("wal-push of %s failed in the background worker: %s"
                        % (name, message), code="wal_push_failed", stage="wal-push")
    raise PgdrError("wal-push of %s: no result within archive_wait=%ss; PostgreSQL "
                    "will call again" % (name, settings.archive_wait),
                    code="wal_push_timeout", stage="wal-push")


def _ready_names(pg_wal, out):
    """Files PostgreSQL has marked ready and the worker has not yet pushed.
    History files first: a restore needs them to follow a new timeline."""
    status = os.path.join(pg_wal, "archive_status")
    try:
        names = [n[:-len(READY_SUFFIX)] for n in os.listdir(status) if n.endswith(READY_SUFFIX)]
    except OSError:
        return []
    names = [n for n in names if not os.path.exists(os.path.join(out, n + ".ok"))]
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


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
            return
        files = files or pushhealth.fingerprint(settings)
        # idle: no success for archive_idle seconds (failures do not keep a worker alive)
        idle_since = time.time()
        while time.time() - idle_since < settings.archive_idle:
            if pushhealth.fingerprint(settings) != files:
                pushhealth.log("config or credentials file changed: exiting; the next "
                               "wal-push starts a worker with the new settings")
                return
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
    finally:
        lock.release()


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
            key = archive.wal_key(settings.cluster, name, codec.suffix)
            return archive.push(storage, key, codec.compress(raw), raw, name, codec)
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
