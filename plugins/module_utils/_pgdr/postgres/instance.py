# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A PostgreSQL server of this node, as the drill and the staged restore see it.

One answer to each question asked of a server after a restore, used by the drill
(commands/drill.py) and by the restore and archiving roles (through the
pg_instance module): its state; when recovery has reached the point; whether the
copy is sound (the checks, with one set of names); whether archiving works; its
configuration as the server sees it; and pg_ctl (the roles use the service manager
instead when one manages the cluster).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import time

from ..errors import ConfigError, PostgresError
from . import patroni
from .session import _psycopg2, connect

# recovery_target_* settings that name a point (recovery_target = 'immediate' does not
# pause at a named point: recovery ends at consistency)
TARGET_SETTINGS = ("recovery_target_time", "recovery_target_lsn", "recovery_target_xid",
                   "recovery_target_name")

STATE_SQL = ("SELECT pg_is_in_recovery(), current_setting('server_version_num')::int, "
             "current_setting('data_directory'), current_setting('archive_mode'), "
             "(SELECT timeline_id FROM pg_control_checkpoint()), "
             "pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text, "
             "extract(epoch FROM pg_last_xact_replay_timestamp())")
STATE_KEYS = ("in_recovery", "version_num", "data_directory", "archive_mode",
              "checkpoint_timeline", "replay_lsn", "last_replay_time", "last_replay_epoch")
BTREE_INDEXES_SQL = ("SELECT c.oid::regclass::text FROM pg_index i "
                     "JOIN pg_class c ON c.oid = i.indexrelid "
                     "JOIN pg_am a ON a.oid = c.relam "
                     "WHERE a.amname = 'btree' AND c.relpersistence <> 't' "
                     "AND i.indisvalid AND i.indisready ORDER BY 1")
CONFIG_ERRORS_SQL = ("SELECT f.sourcefile, f.sourceline, f.error FROM pg_file_settings f "
                     "WHERE f.error IS NOT NULL AND NOT coalesce((SELECT s.pending_restart "
                     "FROM pg_settings s WHERE s.name = f.name), false) "
                     "ORDER BY f.sourcefile, f.sourceline")
ARCHIVER_SQL = ("SELECT archived_count, last_archived_wal, last_archived_time::text, "
                "failed_count, last_failed_wal, last_failed_time::text, "
                "coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), "
                "false) FROM pg_stat_archiver")
ARCHIVER_KEYS = ("archived_count", "last_archived_wal", "last_archived_time", "failed_count",
                 "last_failed_wal", "last_failed_time", "failing")


def check(name, ok, detail):
    """One check of a restored copy, as the drill and the restore role report it."""
    return {"name": name, "ok": bool(ok), "detail": detail}


class Instance(object):
    """The server at settings' pg_host:pg_port, reached as pg_user."""

    def __init__(self, settings, stage="instance", dry_run=False):
        self.settings = settings
        self.stage = stage
        self.dry_run = dry_run
        self.installed = []  # databases where the checks created amcheck (or would)

    def rows(self, sql, params=(), database=None, timeout=5):
        """One statement on a connection of its own."""
        conn = self._connect(database, timeout)
        try:
            return self._execute(conn, sql, params)
        finally:
            conn.close()

    def _connect(self, database=None, timeout=5):
        settings = self.settings
        if database:
            settings = settings.replace(pg_database=database)
        return connect(settings, stage=self.stage, timeout=timeout)

    def _execute(self, conn, sql, params=()):
        with conn.cursor() as cur:
            try:
                cur.execute(sql, params)
            except _psycopg2().Error as exc:
                raise PostgresError("PostgreSQL refused %s: %s" % (
                    sql.split()[0], str(exc).strip()), code="postgres_refused",
                    stage=self.stage)
            return cur.fetchall() if cur.description else []

    def state(self, again=False):
        """Recovery and pause state, timeline, replay position, data directory,
        archive_mode, databases, tablespaces, the postmaster's pid; {"up": False,
        "error": ...} when the server does not answer."""
        try:
            out = dict(zip(STATE_KEYS, self.rows(STATE_SQL)[0]), up=True)
        except PostgresError as exc:
            return {"up": False, "error": exc.msg}
        if out["in_recovery"]:
            try:
                out["pause_state"] = self.rows("SELECT pg_get_wal_replay_pause_state()")[0][0]
            except PostgresError:
                # a recovery without a target ends (promotes) by itself, possibly between
                # the two statements ("recovery is not in progress"): ask once more
                if again:
                    raise
                return self.state(again=True)
            out["timeline"] = out["checkpoint_timeline"]
        else:
            out["pause_state"] = "not in recovery"
            lsn, wal = self.rows("SELECT pg_current_wal_lsn()::text, "
                                 "pg_walfile_name(pg_current_wal_lsn())")[0]
            out.update(current_lsn=lsn, wal_file=wal, timeline=int(wal[:8], 16))
        out["databases"] = [r[0] for r in self.rows(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")]
        out["tablespaces"] = [dict(zip(("oid", "name", "location"), r)) for r in self.rows(
            "SELECT oid::text, spcname, pg_tablespace_location(oid) FROM pg_tablespace "
            "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid")]
        out["postmaster_pid"] = postmaster_pid(out["data_directory"])
        if out["last_replay_epoch"] is not None:
            out["last_replay_epoch"] = float(out["last_replay_epoch"])
        return out

    def wait_recovery(self, timeout, datadir, log):
        """Wait until the server answers and recovery paused at the target or ended;
        the state then. Fails with the server log's tail when the server stopped."""
        deadline = time.time() + timeout
        while True:
            now = self.state()
            if now["up"] and (not now["in_recovery"] or now["pause_state"] == "paused"):
                return now
            if not os.path.exists(os.path.join(datadir, "postmaster.pid")):
                raise PostgresError("the restored server in %s stopped during recovery; its "
                                    "log: %s" % (datadir, log_tail(log)),
                                    code="recovery_failed", stage="recover")
            if time.time() > deadline:
                raise PostgresError(
                    "recovery neither paused at the point nor ended within %d s (%s); log: %s"
                    % (timeout, now.get("error") or "replayed up to %s, last commit %s" % (
                        now.get("replay_lsn"), now.get("last_replay_time")), log_tail(log)),
                    code="recovery_timeout", stage="recover")
            time.sleep(0.3)

    def wait_ready(self, timeout, log=None):
        """Wait until the server accepts connections (after a start or a restart); a
        timeout says the server log's tail when ``log`` is given."""
        deadline = time.time() + timeout
        while True:
            now = self.state()
            if now["up"]:
                return now
            if time.time() > deadline:
                raise PostgresError("PostgreSQL at %s:%s does not accept connections after "
                                    "%d s: %s%s" % (self.settings.pg_host, self.settings.pg_port,
                                                    timeout, now["error"], "; server log: "
                                                    + log_tail(log) if log else ""),
                                    code="postgres_unavailable", stage=self.stage)
            time.sleep(0.3)

    def wait_streaming(self, timeline, timeout, log=None):
        """Wait until the standby's WAL receiver streams from its primary, on ``timeline``
        when one is given (pg_stat_wal_receiver). A standby that only replays the archive
        (a wrong password, no replication line in pg_hba.conf, the wrong primary) falls
        behind at the first segment not yet archived: it is not a working standby."""
        deadline = time.time() + timeout
        seen = "no WAL receiver"
        while True:
            try:
                rows = self.rows("SELECT pid, status, received_tli, receive_start_tli "
                                 "FROM pg_stat_wal_receiver")
            except PostgresError as exc:
                rows, seen = [], exc.msg
            for pid, status, received, started in rows:
                if pid is not None and status is None:
                    raise PostgresError(
                        "%s may not read pg_stat_wal_receiver at %s:%s (its columns are NULL "
                        "but pid): grant it pg_read_all_stats, or connect as a superuser" % (
                            self.settings.pg_user, self.settings.pg_host,
                            self.settings.pg_port),
                        code="postgres_refused", stage=self.stage)
                seen = "WAL receiver %s on timeline %s" % (status, received or started)
                if status == "streaming" and (not timeline or timeline in (received, started)):
                    return {"status": status, "timeline": received or started}
            if time.time() > deadline:
                raise PostgresError(
                    "the standby at %s:%s does not stream%s after %d s (%s): check "
                    "primary_conninfo, the replication user's password and the new primary's "
                    "pg_hba.conf%s" % (self.settings.pg_host, self.settings.pg_port,
                                       " on timeline %d" % timeline if timeline else "",
                                       timeout, seen, "; server log: " + log_tail(log)
                                       if log else ""),
                    code="restore_standby_not_streaming", stage=self.stage)
            time.sleep(0.5)

    def checks(self, assertions=(), expected_databases=(), amcheck=True,
               install_amcheck=True):
        """The checks of a restored copy, in order: connections, databases, database
        connections, amcheck (bt_index_check with heapallindexed on every btree
        index), then each assertion ({name, sql, database}: true when its first
        column is true)."""
        now = self.state()
        out = [check("connections", now["up"], "the server accepts connections"
                     if now["up"] else now.get("error"))]
        if not now["up"]:
            return out, now
        databases = now["databases"]
        missing = [d for d in expected_databases if d not in databases]
        out.append(check("databases", not missing, ("missing: " + ", ".join(missing))
                         if missing else "%d databases: %s" % (len(databases),
                                                               ", ".join(databases))))
        refused = self._refused(databases)
        out.append(check("database connections", not refused, ("refused: " + "; ".join(
            refused)) if refused else "every database accepts a connection"))
        if amcheck:
            out.append(self._amcheck(databases, install_amcheck and not now["in_recovery"]))
        out.extend(self._assertion(item) for item in assertions)
        return out, now

    def _refused(self, databases):
        refused = []
        for database in databases:
            try:
                self.rows("SELECT 1", database=database)
            except PostgresError as exc:
                refused.append("%s (%s)" % (database, exc.msg))
        return refused

    def _amcheck(self, databases, install):
        indexes, failures, skipped = 0, [], []
        for database in databases:
            try:
                if not self._has_amcheck(database, install):
                    skipped.append(database)
                    continue
                checked, failed = self._check_indexes(database)
                indexes += checked
                failures.extend(failed)
            except PostgresError as exc:
                failures.append("%s: %s" % (database, exc.msg))
        return check("amcheck", not failures, "; ".join(failures[:5]) if failures else
                     "%d btree indexes checked (heapallindexed)%s" % (indexes, (
                         "; amcheck not installed in " + ", ".join(skipped))
                         if skipped else ""))

    def _check_indexes(self, database):
        """bt_index_check with heapallindexed on every btree index of one database, on one
        connection (autocommit: a failed check does not end it)."""
        conn = self._connect(database)
        try:
            checked, failed = 0, []
            for (index,) in self._execute(conn, BTREE_INDEXES_SQL):
                try:
                    self._execute(conn, "SELECT bt_index_check(%s::regclass, true)", (index,))
                    checked += 1
                except PostgresError as exc:
                    failed.append("%s.%s: %s" % (database, index, exc.msg))
            return checked, failed
        finally:
            conn.close()

    def _has_amcheck(self, database, install):
        if self.rows("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'",
                     database=database)[0][0]:
            return True
        if not install or not self.rows("SELECT 1 FROM pg_available_extensions "
                                        "WHERE name = 'amcheck'", database=database):
            return False
        self.installed.append(database)
        if self.dry_run:
            return False
        self.rows("CREATE EXTENSION IF NOT EXISTS amcheck", database=database)
        return True

    def _assertion(self, item):
        try:
            value = self.rows(item["sql"], database=item.get("database") or None, timeout=30)
            first = value[0][0] if value and value[0] else None
            return check(item["name"], first is True, "returned %r" % (first,))
        except PostgresError as exc:
            return check(item["name"], False, "error: %s" % exc.msg)

    def archive_probe(self, timeout):
        """pg_switch_wal(), then wait until the archiver stored that segment: archiving
        works end to end."""
        if self.dry_run:
            return {"archived": None}
        segment = self.rows("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        deadline = time.time() + timeout
        while True:
            last, failed = self.rows("SELECT coalesce(last_archived_wal, ''), "
                                     "last_failed_wal FROM pg_stat_archiver")[0]
            if last >= segment:
                return {"archived": segment, "timeline": int(segment[:8], 16)}
            if time.time() > deadline:
                raise PostgresError("segment %s was not archived within %d s (last archived "
                                    "%s, last failed %s): see the server log"
                                    % (segment, timeout, last or "none", failed),
                                    code="check_archive_timeout", stage=self.stage)
            time.sleep(0.3)

    def configuration(self, names):
        """The named settings as the server sees them (value, source file,
        pending_restart, context), every setting pending a restart, the errors of the
        configuration files, pg_stat_archiver, the postmaster's pid."""
        one = self.rows("SELECT current_setting('server_version_num')::int, "
                        "pg_is_in_recovery(), current_setting('config_file'), "
                        "current_setting('data_directory')")[0]
        out = dict(zip(("version_num", "in_recovery", "config_file", "data_directory"), one))
        out["settings"] = dict((r[0], {"setting": r[1], "sourcefile": r[2] or "",
                                       "pending_restart": r[3], "context": r[4]})
                               for r in self.rows(
                                   "SELECT name, setting, sourcefile, pending_restart, "
                                   "context FROM pg_settings WHERE name = ANY(%s)",
                                   (list(names) + ["wal_level"],)))
        out["pending"] = [r[0] for r in self.rows("SELECT name FROM pg_settings "
                                                  "WHERE pending_restart ORDER BY 1")]
        out["errors"] = ["%s:%s: %s" % r for r in self.rows(CONFIG_ERRORS_SQL)]
        out["archiver"] = dict(zip(ARCHIVER_KEYS, self.rows(ARCHIVER_SQL)[0]))
        out["postmaster_pid"] = postmaster_pid(out["data_directory"])
        return out

    def wait_applied(self, parameters, timeout):
        """Wait until the server runs with each parameter or says it needs a restart
        for it; the names pending a restart."""
        deadline = time.time() + timeout
        while True:
            rows = self.rows("SELECT name, setting, pending_restart FROM pg_settings "
                             "WHERE name = ANY(%s)", (list(parameters),))
            seen = dict((name, (setting, pending)) for name, setting, pending in rows)
            # archive_command reads "(disabled)" while archive_mode is off: it is taken
            # with the restart that archive_mode waits for
            waiting = [n for n in parameters if n not in seen or (
                seen[n][0] != str(parameters[n]) and not seen[n][1]
                and seen[n][0] != "(disabled)")]
            if not waiting:
                return sorted(n for n in parameters if seen[n][1])
            if time.time() > deadline:
                raise PostgresError("PostgreSQL at %s:%s does not run with %s %d s after "
                                    "the change" % (self.settings.pg_host,
                                                    self.settings.pg_port,
                                                    ", ".join(waiting), timeout),
                                    code="patroni_config_timeout", stage=self.stage)
            time.sleep(0.5)

    def reload(self, timeout=30):
        """pg_reload_conf(), then wait until new sessions see the reloaded files."""
        if self.dry_run:
            return {"reloaded": False}
        before = self.rows("SELECT pg_conf_load_time()")[0][0]
        self.rows("SELECT pg_reload_conf()")
        deadline = time.time() + timeout
        while self.rows("SELECT pg_conf_load_time()")[0][0] == before:
            if time.time() > deadline:
                raise PostgresError("PostgreSQL did not reload its configuration within "
                                    "%d s" % timeout, code="postgres_refused",
                                    stage=self.stage)
            time.sleep(0.1)
        return {"reloaded": True}


def target_reached(recovery, action, state):
    """Whether recovery reached the point, from the recovery settings the restore wrote
    and the server's state once it paused or ended: paused, for a named target with
    action pause; otherwise recovery ended (promoted)."""
    targets = sorted((k, v) for k, v in (recovery or {}).items() if k in TARGET_SETTINGS)
    if not state.get("up"):
        return check("target reached", False, state.get("error") or "the server is down")
    if targets and action == "pause":
        reached = state.get("pause_state") == "paused"
    else:
        reached = not state.get("in_recovery")
    where = " ".join("%s=%s" % kv for kv in targets) or "the end of the archive"
    if state.get("in_recovery"):
        detail = "recovery %s at %s; last replayed commit %s, WAL %s" % (
            state.get("pause_state"), where, state.get("last_replay_time") or "none",
            state.get("replay_lsn"))
    else:
        detail = "recovery ended (%s), promoted on timeline %s" % (where,
                                                                   state.get("timeline"))
    return check("target reached", reached, detail)


def mark_ready(datadir, timeline, current_wal, dry_run=False):
    """A copy promoted while archiving was off: mark its timeline's history file and the
    finished segments of the new timeline (never recycled future ones) for archiving.
    The names marked (or that would be)."""
    wal_dir = os.path.join(datadir, "pg_wal")
    status = os.path.join(wal_dir, "archive_status")
    prefix = "%08X" % timeline
    marked = []
    for name in sorted(os.listdir(wal_dir)):
        history = name == prefix + ".history"
        segment = len(name) == 24 and name.startswith(prefix) and name < current_wal
        if (history or segment) and not any(os.path.exists(os.path.join(status, name + s))
                                            for s in (".ready", ".done")):
            marked.append(name)
    if not dry_run:
        for name in marked:
            open(os.path.join(status, name + ".ready"), "w").close()
    return marked


def unarchived_segments(datadir):
    """The WAL files of a stopped cluster that wait for archive_command (``.ready``), by
    name: an archive recovery deems every segment archived and may delete them."""
    status = os.path.join(datadir, "pg_wal", "archive_status")
    try:
        names = os.listdir(status)
    except OSError:
        return []
    return sorted(name[:-len(".ready")] for name in names if name.endswith(".ready"))


def postmaster_pid(datadir):
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as handle:
            return int(handle.readline())
    except (IOError, OSError, ValueError, TypeError):
        return None


def log_tail(path, count=15):
    try:
        with open(path, errors="replace") as handle:
            return " | ".join(line.strip() for line in handle.read().splitlines()[-count:])
    except (IOError, OSError):
        return "(no server log at %s)" % path


def bindir(configured, version_num):
    """The PostgreSQL binaries: pg_bindir when set, else Debian's layout for the
    server's major version."""
    return configured or "/usr/lib/postgresql/%d/bin" % (int(version_num) // 10000)


class PgCtl(object):
    """pg_ctl of one data directory; ``switch`` (postgres/osuser.switch_args) runs it as
    the cluster's OS user from a process running as root."""

    def __init__(self, bin_dir, datadir, log, **switch):
        self.command = os.path.join(bin_dir, "pg_ctl")
        self.datadir = datadir
        self.log = log
        self.switch = switch

    def run(self, *args, **kwargs):
        argv = [self.command, "-D", self.datadir] + list(args)
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=kwargs.get("timeout", 600), check=False,
                                  **self.switch)
        except OSError as exc:
            raise ConfigError("cannot run %s: %s (set pg_bindir)" % (self.command, exc),
                              code="pg_bindir_invalid", stage="instance")
        except subprocess.TimeoutExpired:
            raise PostgresError("%s %s did not finish within %d s: see %s" % (
                self.command, " ".join(args), kwargs.get("timeout", 600), self.log),
                code="pg_ctl_timeout", stage="instance")

    def start(self, timeout=600):
        if self.run("-l", self.log, "-w", "-t", str(timeout), "start",
                    timeout=timeout + 30).returncode != 0:
            raise PostgresError("the server in %s did not start: %s" % (
                self.datadir, log_tail(self.log, 12)), code="drill_start_failed",
                stage="recover")

    def running(self):
        return self.run("status").returncode == 0

    def stop(self, mode="fast", timeout=600):
        return self.run("-m", mode, "-w", "-t", str(timeout), "stop",
                        timeout=timeout + 30).returncode == 0


class Request(object):
    """One action asked of the node's server through the pg_instance module; run() has
    the signature of an engine verb. The registry of actions is ACTIONS."""

    def __init__(self, action, **params):
        self.action = action
        self.params = params

    def run(self, settings, progress, dry_run=False):
        server = Instance(settings, stage=self.action, dry_run=dry_run)
        result = ACTIONS[self.action](server, self.params)
        progress.event("%s of %s:%s: done" % (self.action, settings.pg_host, settings.pg_port))
        return result


def _state(server, _params):
    return {"changed": False, "state": server.state()}


def _wait_recovery(server, params):
    return {"changed": False, "state": server.wait_recovery(
        params["timeout"], params["data_directory"], params["log"])}


def _wait_ready(server, params):
    return {"changed": False, "state": server.wait_ready(params["timeout"])}


def _verify(server, params):
    checks, now = server.checks(params.get("assertions") or (),
                                params.get("expected_databases") or (),
                                amcheck=params.get("amcheck", True),
                                install_amcheck=params.get("amcheck_install", True))
    if params.get("recovery") is not None:
        checks.insert(0, target_reached(params["recovery"], params.get("target_action"), now))
    return {"changed": bool(server.installed), "ok": all(c["ok"] for c in checks),
            "checks": checks, "state": now, "amcheck_installed": server.installed}


def _archive_probe(server, params):
    return dict(server.archive_probe(params["timeout"]), changed=True)


def _mark_ready(server, params):
    marked = mark_ready(params["data_directory"], params["timeline"], params["current_wal"],
                        dry_run=server.dry_run)
    return {"changed": bool(marked), "marked": marked}


def _configuration(server, params):
    return {"changed": False,
            "configuration": server.configuration(params.get("settings_names") or ())}


def _patroni_config(server, params):
    """The settings through Patroni's dynamic configuration when the node runs Patroni;
    {"patroni": False} otherwise (the caller writes its files)."""
    url = patroni.api_url(server.settings.patroni_url)
    if url is None:
        return {"changed": False, "patroni": False}
    parameters = params.get("parameters") or {}
    auth = patroni.credentials(server.settings)
    changed = patroni.apply_configuration(url, parameters, params.get("recovery_conf"),
                                          dry_run=server.dry_run, auth=auth)
    result = {"changed": bool(changed), "patroni": True, "url": url,
              "changed_settings": changed, "restarted": False, "pending_restart": []}
    if server.dry_run:
        return result
    pending = server.wait_applied(parameters, params["timeout"])
    if pending and params.get("restart"):
        patroni.restart_member(url, auth=auth)
        server.wait_ready(params["timeout"])
        result["restarted"] = result["changed"] = True
        pending = server.wait_applied(parameters, params["timeout"])
    result["pending_restart"] = pending
    return result


def _reload(server, _params):
    server.reload()
    return {"changed": True}


ACTIONS = {"state": _state, "wait_recovery": _wait_recovery, "wait_ready": _wait_ready,
           "verify": _verify, "archive_probe": _archive_probe, "mark_ready": _mark_ready,
           "configuration": _configuration, "reload": _reload,
           "patroni_config": _patroni_config}
