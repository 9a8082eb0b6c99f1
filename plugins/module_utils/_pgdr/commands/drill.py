# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A restore drill: restore a point into a scratch directory, prove it, measure it.

RTO is the wall time from the plan to a verified, open copy; RPO is the gap
between the point asked for and the point recovered (and, for a disaster now,
the archive lag). The report goes to the repository (immutable, under
<cluster>/drill/), to an optional file, and to a Prometheus textfile; the
scratch cluster is stopped and removed whatever happens.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import json
import os
import random
import shutil
import socket
import time

from .. import metrics
from ..catalog import Catalog
from ..errors import ConfigError, ObjectiveMissed, PgdrError, TargetRefused
from ..options import resolve
from ..postgres.datadir import is_running, refuse_live
from ..postgres.instance import Instance, PgCtl, bindir, check, log_tail, target_reached
from ..postgres.session import archive_lag
from ..postgres.wal import format_lsn
from ..recovery import Planner, parse_point
from ..storage import open_storage
from . import restore

DRILL_PREFIX = "drill"


def run(settings, progress, dry_run=False):
    settings.require("cluster", "target", "drill_port")
    if os.geteuid() == 0:
        raise ConfigError("pgdr drill starts PostgreSQL, which refuses root: run it as the "
                          "PostgreSQL OS user", code="drill_as_root", stage="config")
    started = time.time()
    # the scratch directory is removed at the end whatever happens: never a live
    # cluster's, and never one that held anything before the drill
    refuse_live(settings.target, what="drill target")
    if os.path.isdir(settings.target) and os.listdir(settings.target):
        raise TargetRefused("drill target %s is not empty: the drill removes its scratch "
                            "directory afterwards, so it must be absent or empty"
                            % settings.target, code="target_not_empty", stage="check")
    storage = open_storage(settings)
    storage.check()
    catalog = Catalog(storage, settings.cluster)
    point = _choose_point(settings, storage, catalog)
    if dry_run:  # a real run restores, starts and removes a copy: changed
        return {"changed": True, "point": point}
    # a drill proves the repository: never a local snapshot, however fast
    run_settings = settings.replace(
        point=point, target_action="pause", force=False, keep_archiving=False,
        restore_from="repository",
        settings=dict(settings.settings or {}, port=str(settings.drill_port),
                      listen_addresses="127.0.0.1",
                      unix_socket_directories=os.path.dirname(settings.target)))
    report = {"cluster": settings.cluster, "point": point, "host": socket.gethostname(),
              "started_at": _iso(started), "checks": []}
    server = None
    restored = {}
    verified = None
    try:
        restored = restore.run(run_settings, progress)
        report["backup_id"] = restored["backup"]["id"]
        report["source"] = restored["plan"]["source"]  # a snapshot named by the point
        report["restored_bytes"] = restored["backup"]["size"]
        report["restore_seconds"] = round(time.time() - started, 3)
        server = Scratch(settings, restored["backup"]["pg_version"])
        server.start()
        report["recovered"] = server.recover(settings.drill_timeout)
        report["checks"] = server.checks(settings, restored["plan"]["recovery"])
        verified = time.time()  # RTO ends here: the copy is open and verified
    except PgdrError as exc:
        report["checks"].append({"name": "restore and recovery", "ok": False,
                                 "detail": exc.msg})
    finally:
        if server is not None:
            report["server_log_tail"] = server.stop()
        if is_running(settings.target):
            # the scratch server did not stop: never delete the files of a running server
            report["checks"].append(check("scratch removed", False, "the scratch server in "
                                          "%s is still running: stop it, then remove the "
                                          "directory" % settings.target))
        else:
            shutil.rmtree(settings.target, ignore_errors=True)
            for location in (restored.get("tablespaces") or {}).values():
                restore.remove_version_dirs(location, "PG_%d_" % (
                    restored["backup"]["pg_version"] // 10000))
    finished = time.time()
    report["rto_seconds"] = round((verified or finished) - started, 3)
    report["finished_at"] = _iso(finished)
    report["rpo_seconds"] = _point_gap(point, report.get("recovered"))
    report["archive_lag_seconds"] = _lag(settings)
    report["success"] = all(c["ok"] for c in report["checks"]) and bool(report["checks"])
    report["objectives"] = objectives(settings, report["rto_seconds"],
                                      report["archive_lag_seconds"])
    # what the drill spent after the RTO ended (stop, removal, archive lag): a wall clock
    # around the whole drill is RTO + this
    report["teardown_seconds"] = round(time.time() - (verified or finished), 3)
    report["report_key"] = _publish(storage, settings, report, finished)
    progress.event("drill of %s: %s, RTO %.1f s, RPO %s s" % (
        point, "success" if report["success"] else "FAILED", report["rto_seconds"],
        report["rpo_seconds"]))
    if not report["success"]:
        failed = [c for c in report["checks"] if not c["ok"]]
        raise ObjectiveMissed("drill of %s failed: %s" % (
            point, "; ".join("%s: %s" % (c["name"], c["detail"]) for c in failed)),
            code="drill_failed", stage="drill", report=report)
    _enforce(settings, report["objectives"], report)
    return dict(report, changed=True)


def _choose_point(settings, storage, catalog):
    """The point asked for. 'random' draws from what the repository can really reach:
    an LSN after a backup's end and before the start of the last segment archived
    contiguously after it (so WAL past the point exists), or, with no archive after
    any backup, a random backup's consistency point."""
    if settings.point != "random":
        return settings.point
    planner = Planner(storage, catalog, settings.cluster)
    complete = catalog.scan()[0]
    if not complete:
        raise PgdrError("no complete backup to drill", code="no_backup", stage="plan")
    ranges = []
    for manifest in complete:
        low, high = planner.reachable_lsns(manifest)
        if high > low:
            ranges.append((low, high))
    if not ranges:
        return random.choice(complete)["id"]
    low, high = random.choice(ranges)
    return "lsn:" + format_lsn(random.randint(low, high))


class Scratch(object):
    """The drill's PostgreSQL, on a private port, run by this (non-root) user."""

    def __init__(self, settings, version_num):
        self.settings = settings
        log = os.path.join(os.path.dirname(settings.target),
                           "pgdr-drill-%d.log" % settings.drill_port)
        self.ctl = PgCtl(bindir(settings.pg_bindir, version_num), settings.target, log)
        # through the socket directory the copy was given (run(): unix_socket_directories):
        # local connections work with the backup's pg_hba.conf, and with the minimal one a
        # restore writes for a backup without (Debian's layout: "local all all peer")
        self.server = Instance(resolve({"pg_host": os.path.dirname(settings.target),
                                        "pg_port": settings.drill_port,
                                        "pg_user": settings.pg_user,
                                        "pg_database": settings.pg_database}, environ={}),
                               stage="verify")
        self.at_target = {}

    def start(self):
        self.ctl.start()

    def recover(self, timeout):
        """Wait until recovery pauses at the target or ends by itself (no target); note
        where it stopped; then promote, so that the checks can write (amcheck needs its
        extension)."""
        state = self.server.wait_recovery(timeout, self.settings.target, self.ctl.log)
        self.at_target = state
        if state["in_recovery"]:
            self.server.rows("SELECT pg_promote(true, 120)")
        return {"paused_at_target": state["pause_state"] == "paused",
                "lsn": state["replay_lsn"], "last_commit_time": state["last_replay_epoch"]}

    def checks(self, settings, recovery):
        """The restore role's checks, with its names: the target reached (from the
        state in which recovery paused or ended), then the copy's checks."""
        assertions = [{"name": "assertion %d" % (index + 1), "sql": statement,
                       "database": settings.pg_database}
                      for index, statement in enumerate(settings.check_sql or ())]
        out, _now = self.server.checks(assertions, amcheck=settings.amcheck)
        return [target_reached(recovery, "pause", self.at_target)] + out

    def stop(self):
        self.ctl.stop(mode="immediate")
        tail = log_tail(self.ctl.log, 6)
        try:
            os.unlink(self.ctl.log)
        except OSError:
            pass
        return tail


def _point_gap(point, recovered):
    """Seconds between a time asked for and the last commit recovered before it (the
    data a restore to that time cannot hold); 0 for points reached exactly by position
    (LSN, backup, immediate, latest)."""
    if not recovered:
        return None
    parsed = parse_point(point)
    if parsed.kind != "time" or recovered.get("last_commit_time") is None:
        return 0.0
    asked = calendar.timegm(parsed.value.utctimetuple()) + parsed.value.microsecond / 1e6
    return round(max(0.0, asked - recovered["last_commit_time"]), 3)


def _lag(settings):
    try:
        return archive_lag(settings)["lag_seconds"]
    except PgdrError:
        return None


def objectives(settings, rto, rpo):
    """Each declared objective, its measured value and whether it is met."""
    out = {}
    for name, objective, measured in (("rto", settings.rto_objective, rto),
                                      ("rpo", settings.rpo_objective, rpo)):
        if objective is None:
            continue
        out[name] = {"objective": objective, "measured": measured,
                     "met": measured is not None and measured <= objective}
    return out


def _enforce(settings, met, report):
    missed = [name for name, value in met.items() if not value["met"]]
    if missed and settings.fail_on_objective:
        raise ObjectiveMissed("objective(s) missed: %s" % ", ".join(
            "%s %s s > %s s" % (n.upper(), met[n]["measured"], met[n]["objective"])
            for n in missed), code="objective_missed", stage="objectives", report=report)


def _publish(storage, settings, report, finished):
    key = "%s/%s/%s.json" % (settings.cluster, DRILL_PREFIX,
                             time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(finished)))
    body = json.dumps(report, indent=1, sort_keys=True).encode("utf-8")
    storage.put(key, body, if_absent=True)
    if settings.report_file:
        metrics.write_atomic(settings.report_file, body)
    if settings.textfile:
        metrics.write_atomic(settings.textfile, _metrics(settings.cluster, report, finished))
    return key


def _metrics(cluster, report, finished):
    samples = metrics.Samples(cluster)
    metrics.drill_series(samples, report, finished)
    return samples.render()


def _iso(moment):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
