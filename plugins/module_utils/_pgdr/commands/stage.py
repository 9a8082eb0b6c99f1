# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The staged restore's node-side stages, each reading and writing the state file.

``read`` returns the state; ``plan`` checks the restore (the engine's dry run) and records
what it will do; ``stage`` restores the plan's point into the staging directory (commands/restore.py,
as the cluster's OS user) and records it; ``recover`` starts the staged copy (pg_ctl, as the cluster's OS user) unless it runs,
waits until recovery paused at the point or ended, and records it; ``verify`` runs the
checks of a restored copy (postgres/instance.py, the drill's checks) and records them,
failing when one failed, so that cutover never gets a copy nobody vouched for. All
run as root (the state file is root's) and do their PostgreSQL work as the OS user
(postgres/osuser.py). Each is idempotent: a copy already running is not started again,
and a record that says what the file says already is not written.

The cutover, rollback and standbys steps are still sequenced by the restore role
(roles/restore); they move here one by one.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from . import restore
from ..errors import ConfigError, ObjectiveMissed, PgdrError, PostgresError
from ..postgres import instance, osuser
from ..progress import Progress
from ..restorestate import RestoreState

DEFAULT_VERSION_NUM = 150000  # a plan made before plans recorded pg_version


class Request(object):
    """One stage asked through the pg_restore_stage module; run() has the signature of an
    engine verb. The registry of stages is STAGES."""

    def __init__(self, stage, **params):
        self.stage = stage
        self.params = params

    def run(self, settings, progress, dry_run=False):
        state = RestoreState.load(self.params["state_file"])
        step = Step(self.stage, settings, self.params, state, dry_run)
        result = STAGES[self.stage](step)
        for line in result.pop("events", ()):  # the restore's, from the OS user's process
            progress.event(line)
        progress.event("%s of %s: %s" % (self.stage, step.datadir, "would change"
                                         if dry_run and result["changed"] else "done"))
        return dict(result, restore_state=state.as_dict())


class Step(object):
    """What every stage needs: the settings for the copy's port, its directory, pg_ctl."""

    def __init__(self, stage, settings, params, state, dry_run):
        self.params = params
        self.state = state
        self.dry_run = dry_run
        self.datadir = settings.target.rstrip("/") or "/"
        self.os_user = params.get("os_user") or ""
        plan = state.get("plan", {})
        # the port the copy was started on, once it was; before that the plan's
        started = state.get("recovered", {}).get("port") if stage == "verify" else None
        self.port = int(started or plan.get("port") or params.get("port") or settings.pg_port)
        self.settings = settings.replace(pg_port=self.port)
        self.log = params.get("log") or os.path.join(self.datadir, "restored-server.log")
        self.bin_dir = instance.bindir(settings.pg_bindir,
                                       plan.get("pg_version") or DEFAULT_VERSION_NUM)

    @property
    def ctl(self):
        """pg_ctl as the OS user: built when a stage starts the copy, so that the stages
        that never do (read, plan) need no such account on the node."""
        return instance.PgCtl(self.bin_dir, self.datadir, self.log,
                              **osuser.switch_args(self.os_user))

    def as_user(self, function, *args):
        return osuser.call_as(self.os_user, function, *args)

    def save(self, stage, record, fresh):
        """Record a stage; changed when the file's content changes."""
        before = self.state.as_dict()
        self.state.record(stage, record, fresh=fresh)
        changed = self.state.as_dict() != before
        if changed and not self.dry_run:
            self.state.save()
        return changed


TABLESPACE_HINT = (". A tablespace of the live cluster is not in that backup: it was created "
                   "after the backup, and replaying its CREATE TABLESPACE beside the live "
                   "cluster would empty the live tablespace directory. Restore a backup taken "
                   "after it, or restore on another host")


def _plan(step):
    """The restore checked without writing (the engine's dry run, as the OS user): the
    point, the backup, the WAL, the staging directory and every tablespace location in
    the staging area, by OID; then recorded. The same point of the same backup keeps its
    record (and the later ones); another drops the copy's records."""
    step.settings.require("cluster")
    params = step.params
    area = params.get("tablespace_dir") or step.datadir + ".tablespaces"
    mapping = dict((oid, os.path.join(area, oid)) for oid in params.get("live_tablespaces") or ())
    mapping.update(step.settings.tablespace_map or {})
    result = _dry_restore(step, mapping)
    # the backup may hold tablespaces the live cluster dropped since: their recorded
    # location is outside the staging area; move them there too
    outside = [oid for oid in result.get("tablespaces") or {} if oid not in mapping]
    if outside:
        mapping.update((oid, os.path.join(area, oid)) for oid in outside)
        result = _dry_restore(step, mapping)
    point = step.settings.point
    old = step.state.get("plan", {})
    same = old.get("backup_id") == result["backup"]["id"] and old.get("point") == point
    # a staging directory already holding this point reports no fetch: keep the figures of
    # the run that restored it (the dry run says dry_run only when it would restore)
    record = old if same and not result.get("dry_run") else _plan_record(step, point, result)
    changed = step.save("plan", record, fresh=not same)
    return dict(result, changed=changed, plan_record=record,
                same_filesystem=_same_filesystem(params.get("live_data"), step.datadir))


def _dry_restore(step, mapping):
    settings = step.settings.replace(target=step.datadir, tablespace_map=mapping or None)
    try:
        return step.as_user(_restore, settings, True)
    except PgdrError as exc:
        if exc.code == "tablespace_unknown":
            exc.msg += TABLESPACE_HINT
        raise


def _plan_record(step, point, result):
    plan, backup = result["plan"], result["backup"]
    fetch = int(result.get("fetch_bytes") or 0)
    estimate = (fetch / float(step.params.get("throughput") or 104857600)
                + int(plan["wal_segments"]) * float(step.params.get("wal_segment_seconds", 0.5)))
    return {"point": point, "kind": plan["kind"], "backup_id": backup["id"],
            "backup_stop_time": backup["stop_time"], "pg_version": backup["pg_version"],
            "timeline": plan["timeline"], "recovery": plan["recovery"],
            "wal_segments": plan["wal_segments"], "fetch_bytes": fetch,
            "estimated_seconds": round(estimate, 1), "staging": step.datadir,
            "data": step.params.get("live_data") or "", "port": int(step.params.get("port") or 0),
            "action": step.settings.target_action,
            "tablespaces": result.get("tablespaces") or {}}


def _same_filesystem(live_data, staging):
    """Whether the live data directory's parent and the staging directory's are on one
    filesystem (cutover renames one into the other's place); None when unknown."""
    if not live_data:
        return None
    try:
        return (os.stat(os.path.dirname(live_data.rstrip("/"))).st_dev
                == os.stat(os.path.dirname(staging)).st_dev)
    except OSError:
        return None


def _stage(step):
    if not step.dry_run:
        _require(step.state, "plan")
    step.settings.require("cluster")
    plan = step.state.get("plan", {})
    settings = step.settings.replace(
        target=step.datadir, point=plan.get("point") or step.settings.point,
        target_action=plan.get("action") or step.settings.target_action,
        tablespace_map=plan.get("tablespaces") or step.settings.tablespace_map)
    try:
        result = step.as_user(_restore, settings, step.dry_run)
    except PgdrError:
        # what the failed restore wrote into is neither the recovered nor the verified copy
        if not step.dry_run:
            step.state.forget("recovered", "verified")
        raise
    if step.dry_run:
        return result
    at = None if result["changed"] else step.state.get("staged", {}).get("at")
    recorded = step.save("staged", {
        "backup_id": result["backup"]["id"], "directory": step.datadir,
        "at": at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        fresh=result["changed"])
    return dict(result, changed=result["changed"] or recorded)


def _restore(settings, dry_run):
    progress = Progress()
    result = restore.run(settings, progress, dry_run=dry_run)
    return dict(result, events=progress.events)


def _recover(step):
    if not step.dry_run:
        _require(step.state, "plan", "staged")
    timeout = int(step.params.get("timeout") or 600)
    before = step.state.get("recovered")
    out = {"port": step.port, "log": step.log, "bin_dir": step.bin_dir, "state": {}}
    if step.dry_run and not step.state.get("plan"):
        # nothing staged yet (check mode wrote no plan): it would start what stage writes
        return dict(out, changed=True, started=True)
    running = step.ctl.running()
    if step.dry_run:
        return dict(out, changed=not running or not before, started=not running)
    if not running:
        # the copy about to start is not the one recorded: the records go first, so that a
        # start or a wait that fails leaves no verify vouching for it
        step.state.forget("recovered", "verified")
        # a start that fails is reported by the wait, with the server's log
        step.ctl.run("-l", step.log, "-w", "-t", str(timeout), "start", timeout=timeout + 30)
    now = step.as_user(_wait_recovery, step.settings, timeout, step.datadir, step.log)
    # whatever answers on the port is recorded only when it is the staged copy: with the
    # live cluster there (the copy could not bind it) this would vouch for the live one
    require_copy(now, step.datadir, step.port, "recover", log=step.log)
    record = dict((key, now[key]) for key in RECOVERED_KEYS)
    record.update(port=step.port, log=step.log)
    # a copy restarted or promoted behind pgdr's back is not the one verified
    changed = step.save("recovered", record, fresh=record != before)
    return dict(out, changed=changed, started=not running, state=now)


RECOVERED_KEYS = ("in_recovery", "pause_state", "timeline", "replay_lsn", "last_replay_time",
                  "postmaster_pid")


def _wait_recovery(settings, timeout, datadir, log):
    return instance.Instance(settings, stage="recover").wait_recovery(timeout, datadir, log)


def require_copy(now, datadir, port, stage, postmaster_pid=None, log=None):
    """Refuse to act on a server that is not the staged copy: the one answering on port
    (its state ``now``) must run from datadir (both resolved) with a readable postmaster
    pid, and, when one is given, the pid recorded (the copy recover recorded, not one
    started again since). A server that does not answer is left to the caller's checks."""
    if not now.get("up"):
        return
    running = os.path.realpath(now.get("data_directory") or "")
    if running != os.path.realpath(datadir):
        raise ConfigError(
            "the server answering on port %d runs from %s, not from the staged copy %s: "
            "nothing was recorded or checked there. Stop it or choose another port for the "
            "copy (plan again); the copy's log: %s"
            % (port, now.get("data_directory"), datadir,
               instance.log_tail(log) if log else "not given"),
            code="restore_wrong_server", stage=stage)
    pid = now.get("postmaster_pid")
    if pid is None:
        raise PostgresError("the staged copy on port %d has no readable postmaster.pid in "
                            "%s: cannot tell which server this is" % (port, datadir),
                            code="restore_wrong_server", stage=stage)
    if postmaster_pid is not None and pid != postmaster_pid:
        raise PostgresError(
            "the staged copy on port %d was started again (postmaster pid %d, recover "
            "recorded %d): it is not the copy recover saw. Run recover again, then verify"
            % (port, pid, postmaster_pid), code="restore_copy_restarted", stage=stage)


def _verify(step):
    if not step.dry_run:
        _require(step.state, "plan", "staged", "recovered")
    plan = step.state.get("plan", {})
    recovered = step.state.get("recovered", {})
    params = dict(step.params, recovery=plan.get("recovery") or {},
                  target_action=plan.get("action") or step.settings.target_action,
                  copy={"datadir": step.datadir, "log": step.log,
                        "postmaster_pid": recovered.get("postmaster_pid")})
    outcome = step.as_user(_checks, step.settings, params, step.dry_run)
    record = {"ok": outcome["ok"], "backup_id": plan.get("backup_id", ""),
              "checks": outcome["checks"],
              "postmaster_pid": outcome["state"].get("postmaster_pid"),
              "staged_at": step.state.get("staged", {}).get("at")}
    changed = step.save("verified", record, fresh=False) or bool(outcome["amcheck_installed"])
    if not outcome["ok"] and not step.dry_run:
        raise ObjectiveMissed(
            "verify failed on the staged copy %s (port %d): %s. The live cluster was not "
            "touched; the staged copy keeps running for inspection" % (
                step.datadir, step.port, describe(outcome["checks"])),
            code="restore_verify_failed", stage="verify", checks=outcome["checks"],
            restore_state=step.state.as_dict())
    return dict(outcome, changed=changed)


def _checks(settings, params, dry_run):
    """The checks, in the OS user's process, on the staged copy only: its identity is
    proved first, before any check (amcheck may CREATE EXTENSION) runs."""
    server = instance.Instance(settings, stage="verify", dry_run=dry_run)
    copy = params["copy"]
    require_copy(server.state(), copy["datadir"], settings.pg_port, "verify",
                 copy["postmaster_pid"], copy["log"])
    return instance.ACTIONS["verify"](server, params)


def describe(checks):
    """The checks as one line: each name, ok or FAILED, and its detail."""
    return "; ".join("%s: %s (%s)" % (c["name"], "ok" if c["ok"] else "FAILED", c["detail"])
                     for c in checks)


def _require(state, *stages):
    missing = [stage for stage in stages if not state.get(stage)]
    if missing:
        raise ConfigError("no %s record in %s: run the earlier stages first (%s)"
                          % (" or ".join(missing), state.path, EARLIER[missing[0]]),
                          code="restore_stage_missing", stage="state")


def _read(_step):
    """The state as it is (the restore role reads it through here: one reader that refuses
    a link or another user's file)."""
    return {"changed": False}


EARLIER = {"plan": "--tags plan", "staged": "--tags plan,stage",
           "recovered": "--tags plan,stage,recover"}
STAGES = {"read": _read, "plan": _plan, "stage": _stage, "recover": _recover, "verify": _verify}
