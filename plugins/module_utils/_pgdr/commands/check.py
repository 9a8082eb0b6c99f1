# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgdr check``: prove that the protection works, end to end, now.

In order, each check timed and reported (``checks``), the first failure ending the run
with one stable error code:

1. ``config``: the settings are complete (cluster, repository).
2. ``repository``: reachable with these credentials - a probe object is written under
   ``<cluster>/check/``, read back, compared and deleted.
3. ``postgres``: the server answers.
4. ``archive_mode``: on (or always).
5. ``archive_command``: runs ``pgdr wal-push`` whose settings (its config file and flags)
   name the same repository (type, bucket, endpoint, prefix, path) and cluster as this run.
6. ``archive_round_trip``: a tiny write and pg_switch_wal(), then wait (check_archive_wait
   seconds at most) until that segment is in the repository. Skipped on a standby (the
   primary archives; pg_switch_wal() cannot run there).

With check_archiving false (a node set up without archiving), 4-6 are left out.

Nothing is left behind but one WAL segment switch, so check mode (--dry-run) runs the same
checks and ``changed`` is always false.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shlex
import socket
import time
import uuid

from ..errors import (ArchiveCheckFailed, ConfigError, IntegrityError, PgdrError,
                      PostgresError)

# what must be equal between this run and archive_command's wal-push
SAME_REPOSITORY = ("cluster", "repo_type", "repo_path", "repo_prefix", "s3_bucket",
                   "s3_endpoint")


class _Checks(object):
    """The list of checks of one run, each with ok and seconds."""

    def __init__(self, progress):
        self.done = []
        self.progress = progress

    def run(self, name, step):
        started = time.time()
        try:
            detail = step()
        except PgdrError as exc:
            self.done.append({"name": name, "ok": False, "code": exc.code, "detail": exc.msg,
                              "seconds": round(time.time() - started, 3)})
            exc.details["checks"] = self.done
            raise
        self.done.append({"name": name, "ok": True, "detail": detail,
                          "seconds": round(time.time() - started, 3)})
        if self.progress is not None:
            self.progress.event("check %s: ok (%s)" % (name, detail))
        return detail


def run(settings, progress=None, dry_run=False):
    checks = _Checks(progress)
    state = {}
    checks.run("config", lambda: _config(settings, state))
    checks.run("repository", lambda: _repository(settings, state["storage"]))
    checks.run("postgres", lambda: _postgres(settings, state))
    try:
        if settings.check_archiving:
            checks.run("archive_mode", lambda: _archive_mode(state))
            checks.run("archive_command", lambda: _archive_command(settings, state))
            checks.run("archive_round_trip", lambda: _round_trip(settings, state))
    finally:
        state["conn"].close()
    return {"changed": False, "ok": True, "cluster": settings.cluster,
            "repository": state["storage"].describe(), "checks": checks.done}


def _config(settings, state):
    settings.require("cluster")
    from ..storage import open_storage
    state["storage"] = open_storage(settings)
    return "cluster %s, repository %s" % (settings.cluster, state["storage"].describe())


def _repository(settings, storage):
    storage.check()
    key = "%s/check/probe-%s-%d-%s" % (settings.cluster, socket.gethostname(), os.getpid(),
                                       uuid.uuid4().hex[:8])
    data = ("pgdr check probe %s\n" % uuid.uuid4().hex).encode("ascii")
    storage.put(key, data, if_absent=True)
    try:
        back = storage.get(key)
    finally:
        storage.delete([key])
    if back != data:
        raise IntegrityError("the probe object %s read back from %s differs from what was "
                             "written" % (key, storage.describe()),
                             code="check_probe_mismatch", stage="check")
    if storage.head(key) is not None:
        raise IntegrityError("the probe object %s is still in %s after its delete"
                             % (key, storage.describe()), code="check_probe_mismatch",
                             stage="check")
    ring = storage.keyring(settings.cluster, writing=False)
    return "wrote, read back and deleted %s%s" % (
        key, "" if ring is None else ", encrypted (%s)" % ring.describe())


def _postgres(settings, state):
    from ..postgres.session import connect
    conn = state["conn"] = connect(settings, stage="check")
    row = _query(conn, "SELECT current_setting('server_version'), pg_is_in_recovery(), "
                       "current_setting('archive_mode'), current_setting('archive_command')")
    state.update(version=row[0], standby=bool(row[1]), archive_mode=row[2],
                 archive_command=row[3])
    return "PostgreSQL %s at %s:%s, %s" % (row[0], settings.pg_host, settings.pg_port,
                                           "standby" if row[1] else "primary")


def _query(conn, sql):
    from ..postgres.session import _psycopg2
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()
    except _psycopg2().Error as exc:
        raise PostgresError("PostgreSQL refused %s: %s" % (sql.split(",")[0],
                                                           str(exc).strip()),
                            code="postgres_refused", stage="check")


def _archive_mode(state):
    if state["archive_mode"] not in ("on", "always"):
        raise ArchiveCheckFailed(
            "archive_mode is %s: no WAL is archived, so no point after the last backup can "
            "be restored (turn it on and restart PostgreSQL)" % state["archive_mode"],
            code="check_archive_mode_off", stage="check")
    return "archive_mode %s" % state["archive_mode"]


def archive_command_settings(command, default_config, environ=None):
    """The settings wal-push runs with under this archive_command: its --config (or the
    default config, as the launcher passes it), --credentials and flags."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise _mismatch("archive_command %r cannot be parsed: %s" % (command, exc))
    if "wal-push" not in words or not any("pgdr" in os.path.basename(w) or "pgdr" in w
                                          for w in words[:words.index("wal-push")]):
        raise _mismatch("archive_command %r does not run pgdr wal-push" % command)
    argv = [w if w != "%p" else "pg_wal/X" for w in words[words.index("wal-push"):]]
    from ..options import resolve
    from ..verbs import UsageError, build_parser, explicit
    try:
        args = build_parser("wal-push").parse_args(argv)
    except UsageError as exc:
        raise _mismatch("archive_command %r: pgdr would refuse its arguments: %s"
                        % (command, exc))
    config = args.config or default_config
    try:
        return resolve(explicit(args), config_file=config, credentials_file=None,
                       environ=environ or {}, config_required=bool(args.config)), config
    except ConfigError as exc:
        raise _mismatch("archive_command %r: its settings are not usable: %s"
                        % (command, exc.msg))


def _archive_command(settings, state):
    command = state["archive_command"]
    pushed, config = archive_command_settings(
        command, settings.config_file or _default_config())
    different = ["%s %r (archive_command) != %r (this check)"
                 % (name, getattr(pushed, name), getattr(settings, name))
                 for name in SAME_REPOSITORY
                 if (getattr(pushed, name) or "") != (getattr(settings, name) or "")
                 and not (name.startswith("s3_") and settings.repo_type == "posix")]
    if different:
        raise _mismatch("archive_command %r archives elsewhere (config %s): %s"
                        % (command, config or "none", "; ".join(different)))
    state["pushed"] = pushed
    return "%r archives into the same repository and cluster (config %s)" % (command, config)


def _default_config():
    from ..options import DEFAULT_CONFIG_FILE
    return DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE) else None


def _mismatch(msg):
    return ArchiveCheckFailed(msg, code="check_archive_command_mismatch", stage="check")


def _round_trip(settings, state):
    if state["standby"]:
        return "skipped on a standby: the primary archives (pg_switch_wal needs a primary)"
    from .. import archive
    conn = state["conn"]
    # a tiny write (a transaction id and its commit record), so that the switch always
    # closes a segment that holds something, even on an idle server
    _query(conn, "SELECT txid_current()")
    segment = _query(conn, "SELECT pg_walfile_name(pg_switch_wal())")[0]
    keys = [archive.wal_key(settings.cluster, segment, suffix) for suffix in archive.SUFFIXES]
    storage = state["storage"]
    wait = settings.check_archive_wait
    started = time.time()
    while True:
        if any(storage.head(key) is not None for key in keys):
            return "segment %s archived in %.1f s" % (segment, time.time() - started)
        if time.time() - started >= wait:
            break
        time.sleep(0.2)
    failed = _query(conn, "SELECT failed_count, last_failed_wal, last_failed_time::text, "
                          "last_archived_wal FROM pg_stat_archiver")
    raise ArchiveCheckFailed(
        "segment %s was not in the repository within check_archive_wait=%ss (archiver: "
        "%s failure(s), last failed %s at %s, last archived %s): see PostgreSQL's log and "
        "the spool's worker.log" % (segment, wait, failed[0], failed[1] or "none",
                                    failed[2] or "-", failed[3] or "none"),
        code="check_archive_timeout", stage="check", segment=segment)
