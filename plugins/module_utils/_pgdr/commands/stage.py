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

``cutover`` puts the verified copy in the live cluster's place: every check first (the
plan's copy, verified, still the server verify checked, both directories renameable on one
filesystem), then the copy and the live cluster stop, the live directory is kept as
``<data>.pre-restore-<UTC time>``, the copy is renamed into place with the live
configuration, starts on the production port, recovers to the point, promotes, and its new
timeline is archived. The state says ``phase: moving`` from the first stop until the new
cluster runs, so an interrupted cutover is never taken for a finished one.

``rollback`` moves the kept directory back: the cut-over cluster stops and is kept as
``<data>.rolled-back-<UTC time>``, the kept one is renamed into place and starts.

``standby`` runs on a standby's node after a cutover: its data directory is brought to
the newest backup on the way to the new timeline by delta restore (only what differs is
written; the new primary is not read), or, with ``standby_source`` primary, kept as
``<data>.pre-rebuild-<UTC time>`` and cloned from the new primary with pg_basebackup; the
standby is recorded once it streams from the new primary. With ``standby_source`` patroni
(a Patroni replica, Patroni stopped) the directory is only kept aside: the Patroni started
next builds the replica by its ``create_replica_methods`` (pgdr's, from the repository).

A cutover given ``patroni_scope`` replaces a Patroni leader: after every check it removes
the cluster from the DCS (patronictl), so that the Patroni started next takes over the
promoted cluster as the leader of a new one (the restore role stops and starts Patroni).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess
import time

from . import restore
from .. import atomicfile
from ..errors import ConfigError, ObjectiveMissed, PgdrError, PostgresError
from ..options import OPTIONS
from ..postgres import instance, osuser, ownfiles, patroni
from ..progress import Progress
from ..restorestate import RestoreState

DEFAULT_VERSION_NUM = 150000  # a plan made before plans recorded pg_version


class Request(object):
    """One stage: ``stage``, else the one ``settings.stage`` names; run() has the signature
    of an engine verb. The stage's parameters are the settings of the option group "stage"
    (beside target, point and the rest of the restore's); ``params`` add the module's own
    (the plan's estimate, the user's SQL assertions) and win. The registry is STAGES."""

    def __init__(self, stage=None, **params):
        self.stage = stage
        self.params = params

    def run(self, settings, progress, dry_run=False):
        name = self.stage or settings.stage
        params = dict((option.name, getattr(settings, option.name))
                      for option in OPTIONS if "stage" in option.groups)
        params.update(self.params)
        if name not in STAGES or not params.get("state_file") or not settings.target:
            settings.require("stage", "state_file", "target")
        state = RestoreState.load(params["state_file"])
        step = Step(name, settings, params, state, dry_run)
        result = STAGES[name](step)
        for line in result.pop("events", ()):  # the restore's, from the OS user's process
            progress.event(line)
        acted = step.datadir  # cutover and rollback act on the live directory
        if name in ("cutover", "rollback"):
            acted = params.get("live_data") or state.get("plan", {}).get("data") or acted
        summary = "%s of %s: %s" % (name, acted, ("would change" if dry_run else "done")
                                    if result["changed"] else "nothing to change")
        progress.event(summary)
        return dict(result, summary=summary, restore_state=state.as_dict())


def run(settings, progress, dry_run=False):
    """The verb ``pgdr restore-stage STAGE``."""
    return Request().run(settings, progress, dry_run)


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
        started = (state.get("recovered", {}).get("port")
                   if stage in ("verify", "cutover") else None)
        self.port = int(started or plan.get("port") or params.get("port") or settings.pg_port)
        self.live_settings = settings  # the live cluster's port, for cutover
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
    if result["backup"]["id"] != plan.get("backup_id"):
        # a backup completed between plan and stage: the copy is not the plan's, and
        # cutover refuses it (the staged record names the backup it holds)
        found = (plan.get("backup_id"), settings.point, result["backup"]["id"], step.datadir)
        raise ConfigError(
            "the plan chose backup %s for %s, but backup %s completed since and the staging "
            "directory %s now holds it: run plan again, then stage with pgdr_restore_delta=true "
            "(rewrites only what differs)" % found, code="restore_plan_stale", stage="stage")
    return dict(result, changed=result["changed"] or recorded)


def _standby_plan(settings):
    return restore.plan(settings, Progress())


def _restore(settings, dry_run):
    progress = Progress()
    result = restore.run(settings, progress, dry_run=dry_run)
    return dict(result, events=progress.events)


def _recover(step):
    if not step.dry_run:
        _require(step.state, "plan", "staged")
    action = step.state.get("plan", {}).get("action") or step.settings.target_action
    if action == "shutdown":
        # the copy would stop at the point: nothing left running to verify or cut over
        raise ConfigError(
            "the staged copy in %s was restored with target_action shutdown: it stops at the "
            "point, so recover cannot wait for it and verify has nothing to check. Plan and "
            "stage again with pause (or promote), or skip recover (restore_start=false) to "
            "leave the copy stopped" % step.datadir,
            code="restore_action_shutdown", stage="recover")
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
    require_copy(now, step.datadir, step.port, "recover", log=step.log, reader=step.as_user)
    record = dict((key, now[key]) for key in RECOVERED_KEYS)
    record.update(port=step.port, log=step.log)
    # a copy restarted or promoted behind pgdr's back is not the one verified
    changed = step.save("recovered", record, fresh=record != before)
    return dict(out, changed=changed, started=not running, state=now)


RECOVERED_KEYS = ("in_recovery", "pause_state", "timeline", "replay_lsn", "last_replay_time",
                  "postmaster_pid")


def _wait_recovery(settings, timeout, datadir, log):
    return instance.Instance(settings, stage="recover").wait_recovery(timeout, datadir, log)


def require_copy(now, datadir, port, stage, postmaster_pid=None, log=None, reader=None):
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
               (reader or _call)(instance.log_tail, log) if log else "not given"),
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


def _cutover(step):
    state, plan = step.state, step.state.get("plan", {})
    done = state.get("cutover", {})
    back = state.get("rollback", {})
    if back.get("phase") == "moving":
        raise ConfigError(
            "the rollback that started at %s did not finish: %s may hold the cluster from "
            "before the cutover and %s the restored one; nothing was changed now (run the "
            "rollback again to finish it)" % (back.get("at"), back.get("from"), back.get("kept")),
            code="restore_cutover_blocked", stage="cutover")
    if done.get("active"):
        if done.get("phase", "done") != "done":
            raise ConfigError(
                "the cutover that started at %s did not finish (phase %s): nothing was "
                "changed now; if %s exists it is the live cluster's data directory (roll back "
                "to move it back)" % (done.get("at"), done.get("phase"), done.get("kept")),
                code="restore_cutover_unfinished", stage="cutover")
        if done.get("backup_id") == plan.get("backup_id"):
            return {"changed": False, "cutover": done}
    live = _cutover_checks(step)
    scope = step.params.get("patroni_scope") or ""
    # with a scope, the caller (the restore role) stops Patroni on every member between
    # this check in check mode and the cutover itself, which checks again
    managed = refuse_under_patroni(live, "cutover", daemons_stop_later=step.dry_run and bool(scope))
    _require_patroni_member(live, scope, managed)
    now = step.as_user(_server_state, step.settings)
    _require_verified_copy(step, now)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = "%s.pre-restore-%s" % (live, stamp)
    if step.dry_run:
        if scope:  # the removal after the stops must not fail for want of patronictl
            patroni.check_cluster(step.params["patronictl"], step.params["patroni_config"], scope)
        return {"changed": True, "cutover": {"data": live, "kept": kept, "port": _live_port(step),
                                             "point": plan.get("point"),
                                             "patroni_scope": scope or None}}
    if scope:  # after every check, before anything stops: the one step that leaves the node
        patroni.remove_cluster(step.params["patronictl"], step.params["patroni_config"], scope)
    _stop(step.ctl, step.datadir, step.params, None, "the staged copy")
    if now.get("up") and not now.get("in_recovery"):
        # promoted while archiving was off: its new timeline must still reach the repository
        step.as_user(instance.mark_ready, step.datadir, now["timeline"], now["wal_file"])
    record = {"active": True, "phase": "moving", "at": stamp, "kept": kept,
              "point": plan.get("point"), "backup_id": plan.get("backup_id")}
    step.save("cutover", record, fresh=False)
    live_ctl = _live_ctl(step, live)
    _stop(live_ctl, live, step.params, step.params.get("service_name"), "the live cluster")
    _move(live, kept)
    _move(step.datadir, live)
    # a copy that was down (not verified) may still be recovering: keep its recovery settings
    restore_line = step.as_user(take_live_configuration, kept, live,
                                bool(now.get("in_recovery", True)))
    # on record before the copy starts: a rollback of a cutover that stops after its
    # promotion needs it as much as one of a finished cutover
    record = dict(record, restore_command=restore_line)
    step.save("cutover", record, fresh=False)
    promoted = _start_promoted(step, live_ctl, live)
    step.as_user(set_recovery_block, live, None)
    archived = _probe_archive(step, promoted)
    done = dict(record, phase="done", timeline=promoted["timeline"],
                archive_mode=promoted["archive_mode"], archived=archived, patroni=managed,
                patroni_scope=scope or None)
    step.save("cutover", done, fresh=False)
    return {"changed": True, "cutover": done, "state": promoted}


def _cutover_checks(step):
    """What must hold before anything stops: the plan's copy, verified when that is asked,
    and two directories that rename into each other's place (one filesystem, neither a
    mount point). The live data directory."""
    _require(step.state, "plan", "staged")
    plan, verified = step.state.get("plan"), step.state.get("verified", {})
    if step.state.get("staged").get("backup_id") != plan.get("backup_id") or (
            step.params.get("require_verify", True)
            and not (verified.get("ok") and verified.get("backup_id") == plan.get("backup_id"))):
        raise ConfigError(
            "no cutover: no verified staged copy of backup %s in %s (run plan, stage, recover "
            "and verify first; verify must pass)" % (plan.get("backup_id"), step.state.path),
            code="restore_not_verified", stage="cutover")
    live = (step.params.get("live_data") or plan.get("data") or "").rstrip("/")
    if not live:
        raise ConfigError("no cutover: the live data directory is unknown (set pgdr_restore_pg_data)",
                          code="restore_cutover_blocked", stage="cutover")
    _require_one_filesystem((os.path.dirname(live), live, step.datadir), "cutover")
    return live


def _require_one_filesystem(paths, stage):
    """Directories renamed into each other's place: one filesystem, none a mount point
    (checked before anything stops)."""
    devices = dict((path, _device(path, stage)) for path in paths)
    if len(set(devices.values())) != 1:
        raise ConfigError(
            "no %s: the data directories are renamed into each other's place, which needs "
            "%s on one filesystem and no mount point among them (devices: %s)"
            % (stage, ", ".join(paths), ", ".join("%s %s" % item for item in sorted(devices.items()))),
            code="restore_cutover_blocked", stage=stage)


def _device(path, stage):
    try:
        return os.lstat(path).st_dev
    except OSError as exc:
        raise ConfigError("no %s: %s cannot be read (%s)" % (stage, path, exc.strerror),
                          code="restore_cutover_blocked", stage=stage)


def _require_patroni_member(live, scope, managed):
    """A cutover asked to remove a Patroni cluster from the DCS must replace a member of it:
    removing the DCS state of a cluster this node is not part of would take it from its
    members."""
    if scope and not managed:
        raise ConfigError(
            "no cutover: patroni_scope is %s, but %s is not a Patroni member's data directory "
            "(it holds no %s): nothing was changed (leave patroni_scope empty for a cluster "
            "without Patroni)" % (scope, live, patroni.MANAGED_MARKER),
            code="restore_cutover_blocked", stage="cutover")


def refuse_under_patroni(data, stage, missing_counts=False, daemons_stop_later=False):
    """A Patroni member's data directory is never stopped, moved or rebuilt while Patroni
    runs on the node: Patroni would start the server again, fail over to another member,
    or build a replica into the directory being moved. With Patroni stopped on every
    member and the cluster removed from the DCS, the stages run, and Patroni takes over
    the promoted cluster when it starts (docs/patroni.md). ``missing_counts``: a missing
    directory counts as Patroni's too (a replica Patroni may be building there). The check
    sees this node only. ``daemons_stop_later``: the check (dry run) before the caller
    stops Patroni, which does not ask whether it runs. Whether Patroni manages the
    directory."""
    managed = patroni.manages(data)
    if daemons_stop_later or (not managed and not (missing_counts and not os.path.lexists(data))):
        return managed
    why = ("Patroni manages %s (it holds %s)" % (data, patroni.MANAGED_MARKER) if managed
           else "%s is missing, and Patroni may be building a replica there" % data)
    try:
        running = ", ".join(str(pid) for pid in patroni.daemons())
    except OSError as exc:
        raise ConfigError("no %s: %s, and whether Patroni runs on this node cannot be told "
                          "(/proc: %s): nothing was changed" % (stage, why, exc.strerror),
                          code="restore_patroni_running", stage=stage, data=data)
    if running:
        raise ConfigError(
            "no %s: %s and Patroni runs on this node (pid %s); pgdr never stops or moves a "
            "Patroni member behind Patroni's back. Stop Patroni on every member (replicas "
            "first), remove the cluster from the DCS (patronictl remove), then run the %s "
            "again (docs/patroni.md, PITR of a whole Patroni cluster): nothing was changed"
            % (stage, why, running, stage), code="restore_patroni_running", stage=stage,
            data=data)
    return managed


def _server_state(settings):
    return instance.Instance(settings, stage="cutover").state()


def _require_verified_copy(step, now):
    """What answers on the copy's port is stopped, marked and moved: it must be the staged
    copy, and the very server verify checked (not one started again since)."""
    require_copy(now, step.datadir, step.port, "cutover", log=step.log, reader=step.as_user)
    if not step.params.get("require_verify", True):
        return
    expected = step.state.get("verified", {}).get("postmaster_pid")
    if not now.get("up") or expected is None or now.get("postmaster_pid") != expected:
        raise PostgresError(
            "no cutover: the staged copy running (postmaster pid %s) is not the one verify "
            "checked (pid %s): run recover and verify again"
            % (now.get("postmaster_pid") if now.get("up") else "none", expected),
            code="restore_copy_restarted", stage="cutover")


def _live_port(step):
    return step.live_settings.pg_port


def _live_log(step, live):
    return step.params.get("live_log") or os.path.join(live, "pg_ctl.log")


def _stop(ctl, datadir, params, service, what, stage="cutover"):
    """Stop a cluster (its service when one is named, else pg_ctl) and make sure no server
    runs in its directory any more: nothing is moved under a running server."""
    timeout = int(params.get("stop_timeout") or 600)
    if service:
        _systemctl("stop", service, timeout, stage)
    else:
        ctl.stop(timeout=timeout)
    if ctl.running():
        raise PostgresError("%s in %s did not stop within %d s: nothing was moved"
                            % (what, datadir, timeout), code="restore_stop_failed",
                            stage=stage)


def _move(source, destination, stage="cutover"):
    try:
        os.rename(source, destination)
    except OSError as exc:
        raise PostgresError("the %s could not rename %s to %s (%s): see the state file, "
                            "and roll back to put the live data directory back"
                            % (stage, source, destination, exc.strerror),
                            code="restore_cutover_blocked", stage=stage)


def _systemctl(verb, service, timeout, stage):
    try:
        done = subprocess.run(["systemctl", verb, service], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout + 30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresError("systemctl %s %s failed: %s" % (verb, service, exc),
                            code="restore_service_failed", stage=stage)
    if done.returncode != 0:
        raise PostgresError("systemctl %s %s failed (exit %d): %s" % (
            verb, service, done.returncode, done.stdout.decode("utf-8", "replace").strip()),
            code="restore_service_failed", stage=stage)


RECOVERY_LINE = re.compile(r"^\s*(recovery_target\w*|restore_command)\s*=")
RESTORE_COMMAND_LINE = re.compile(r"^\s*restore_command\s*=")
# a rollback's recovery onto a new timeline stops at no target, whatever the kept
# directory's own settings say
NO_RECOVERY_TARGET = tuple("%s = ''" % name for name in (
    "recovery_target", "recovery_target_lsn", "recovery_target_name", "recovery_target_time",
    "recovery_target_xid"))
CUTOVER_MARK = "# %s pgdr restore cutover: recovery to the point, then promote"


def take_live_configuration(kept, data, in_recovery):
    """As the OS user, in the directory that is the cluster now: the live cluster's
    configuration files (from the kept directory), the staged copy's recovery settings
    with promote when it was still recovering, and no restore marker or wal-fetch scan
    state left. The copy's restore_command line (the last: PostgreSQL reads that one), which
    a rollback recovers the kept directory with, or None."""
    auto = os.path.join(data, "postgresql.auto.conf")
    with open(auto) as handle:
        recovery = [line.rstrip("\n") for line in handle if RECOVERY_LINE.match(line)
                    and not line.strip().startswith("recovery_target_action")]
    restore_lines = [line for line in recovery if RESTORE_COMMAND_LINE.match(line)]
    for name in sorted(os.listdir(kept)):
        source = os.path.join(kept, name)
        if name.endswith(".conf") and os.path.isfile(source) and not os.path.islink(source):
            with open(source, "rb") as handle:
                _write_private(os.path.join(data, name), handle.read())
    if in_recovery:
        set_recovery_block(data, recovery + ["recovery_target_action = 'promote'"])
    _remove_leftovers(data, ownfiles.RESTORE_LEFTOVERS)
    return restore_lines[-1].strip() if restore_lines else None


def _remove_leftovers(data, names):
    for name in names:
        try:
            os.unlink(os.path.join(data, name))
        except OSError:
            pass


def set_recovery_block(data, lines):
    """Put the cutover's recovery settings at the end of postgresql.auto.conf, between
    marks, or take them out (``lines`` None): read only at server start, left in place
    they would pin a standby cloned from this cluster to the old point and timeline."""
    auto = os.path.join(data, "postgresql.auto.conf")
    with open(auto) as handle:
        text = handle.read()
    begin, end = CUTOVER_MARK % "BEGIN", CUTOVER_MARK % "END"
    kept, inside = [], False
    for line in text.splitlines():
        if line == begin or line == end:
            inside = line == begin
            continue
        if not inside:
            kept.append(line)
    if lines:
        kept += [begin] + list(lines) + [end]
    body = "\n".join(kept) + "\n"
    if body != text:
        _write_private(auto, body.encode("utf-8"))


def _write_private(path, body):
    atomicfile.replace(path, body, mode=0o600)


def _start(step, live_ctl, live, stage="cutover"):
    """Start the cluster in the live directory on the production port (its service, else
    pg_ctl) and wait until it runs: recovery ended, or paused at a target."""
    timeout = _launch(step, live_ctl, stage)
    return step.as_user(_wait_recovery, step.live_settings, timeout, live, live_ctl.log)


def _launch(step, ctl, stage):
    """Start a cluster with its service when one is named, else pg_ctl; returns the wait's
    timeout. A server that pg_ctl could not start fails now, with its log's tail; one
    still starting (a long recovery) is left to the caller's wait."""
    timeout = int(step.params.get("timeout") or 600)
    if step.params.get("service_name"):
        _systemctl("start", step.params["service_name"], timeout, stage)
    elif (ctl.run("-l", ctl.log, "-w", "-t", str(timeout), "start",
                  timeout=timeout + 30).returncode != 0 and not ctl.running()):
        # the log lies in a directory the OS user owns: read it as that user, never as root
        raise PostgresError("the cluster in %s did not start: %s"
                            % (ctl.datadir, step.as_user(instance.log_tail, ctl.log, 12)),
                            code="restore_start_failed", stage=stage)
    return timeout


def _start_promoted(step, live_ctl, live):
    """Start the new cluster on the production port and wait until it promoted."""
    now = _start(step, live_ctl, live)
    if now.get("in_recovery", True):
        raise PostgresError("the new cluster in %s did not promote: %s"
                            % (live, step.as_user(instance.log_tail, live_ctl.log)),
                            code="recovery_failed", stage="cutover")
    return now


def _probe_archive(step, promoted):
    timeout = int(step.params.get("archive_timeout") or 0)
    if timeout <= 0 or promoted.get("archive_mode") == "off":
        return None
    return step.as_user(_archive_probe, step.live_settings, timeout)["archived"]


def _archive_probe(settings, timeout):
    return instance.Instance(settings, stage="cutover").archive_probe(timeout)


def _rollback(step):
    """Back to the data directory a cutover kept (or ``rollback_from``): the cut-over
    cluster stops and is kept as ``<data>.rolled-back-<UTC time>``, the kept directory
    moves back and starts. Allowed after a cutover that stopped half-way. The record says
    ``phase: moving`` before anything stops, so that a rollback that stopped half-way (a
    server that did not start) resumes where it was."""
    state, chosen = step.state, step.params.get("rollback_from")
    cut, done = state.get("cutover", {}), state.get("rollback") or {}
    if done.get("phase", "done") == "done" and done and not chosen and not cut.get("active"):
        return {"changed": False, "rollback": done}
    live = (step.params.get("live_data") or state.get("plan", {}).get("data") or "").rstrip("/")
    for path in (live, chosen, cut.get("kept"), done.get("from")):
        if path and os.path.lexists(path):  # the resumed rollback's directories too
            refuse_under_patroni(path.rstrip("/"), "rollback")
    # a rollback of this cutover that stopped half-way, from the same directory
    unfinished = (done.get("from") if done.get("phase") == "moving" and live
                  and done.get("cutover_at") == cut.get("at")
                  and (chosen or "").rstrip("/") in ("", done.get("from")) else None)
    if unfinished:
        resumed = _resume_rollback(step, live, done)
        if resumed:
            return resumed
    back_from = (chosen or unfinished or cut.get("kept") or "").rstrip("/")
    if not live or not back_from or not os.path.isfile(os.path.join(back_from, "PG_VERSION")):
        unmoved = cut.get("phase") == "moving" and os.path.isfile(os.path.join(live, "PG_VERSION"))
        raise ConfigError("nothing to roll back to: %s%s" % (
            "no data directory at %s" % back_from if back_from else
            "no cutover in %s (set pgdr_restore_rollback_from)" % state.path,
            ("; the cutover stopped before it moved %s, which is still the live cluster's: "
             "start it if it is stopped, and move %s away before planning again"
             % (live, state.path)) if unmoved else ""),
            code="restore_rollback_missing", stage="rollback")
    here = [path for path in (os.path.dirname(live), live, back_from) if os.path.lexists(path)]
    _require_one_filesystem(here, "rollback")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record = {"phase": "moving", "at": stamp, "from": back_from, "cutover_at": cut.get("at"),
              "kept": "%s.rolled-back-%s" % (live, stamp)}
    if step.dry_run:
        return {"changed": True, "rollback": record}
    step.save("rollback", record, fresh=False)
    live_ctl = _live_ctl(step, live)
    if os.path.lexists(live):  # a cutover that stopped half-way may have moved it already
        _stop(live_ctl, live, step.params, step.params.get("service_name"),
              "the cut-over cluster", "rollback")
        _move(live, record["kept"], "rollback")
    _move(back_from, live, "rollback")
    return _finish_rollback(step, live, record)


def _resume_rollback(step, live, record):
    """A rollback that stopped half-way: the kept directory moved back (start it), or the
    cut-over cluster moved aside only (move the kept one back, then start it). None when
    nothing moved yet: the rollback runs again from its start."""
    back_from, back_there = record["from"], os.path.isfile(os.path.join(live, "PG_VERSION"))
    if os.path.lexists(back_from) and os.path.lexists(live):
        return None
    if not (back_there and not os.path.lexists(back_from)) and not (
            os.path.isfile(os.path.join(back_from, "PG_VERSION")) and not os.path.lexists(live)):
        raise ConfigError("the rollback that started at %s stopped half-way and neither %s "
                          "nor %s holds a data directory now: nothing was changed"
                          % (record.get("at"), live, back_from),
                          code="restore_rollback_missing", stage="rollback")
    if step.dry_run:
        return {"changed": True, "rollback": record}
    if not back_there:
        _move(back_from, live, "rollback")
    return _finish_rollback(step, live, record)


def _finish_rollback(step, live, record):
    """Start the directory moved back. The cutover's kept directory starts through a short
    archive recovery that ends at its own end of WAL, so PostgreSQL promotes it onto a
    timeline above every one in the repository, the abandoned restored one included: its
    history file would otherwise make restores of latest, and replicas, follow the
    abandoned timeline, and the next promotion take its number. Where that cannot be done
    safely it starts as it is, on its old timeline, and the record says why (``warning``).
    A new timeline counts once a segment of it reached the repository (its history file
    goes first)."""
    cut = step.state.get("cutover", {})
    ctl = _live_ctl(step, live)
    line, warning = _new_timeline_recovery(step, live, record, cut, ctl)
    if line:
        now, warning = _start_on_a_new_timeline(step, ctl, live, line)
    else:
        now = _start(step, ctl, live, "rollback")
    if not now.get("in_recovery"):  # an interrupted earlier attempt's settings too
        step.as_user(end_recovery_settings, live)
    fresh, archived, warning = _judge_new_timeline(step, now, cut, bool(line), warning)
    step.state.record("cutover", dict(cut, active=False), fresh=False)
    done = dict(record, phase="done", timeline=now.get("timeline"), new_timeline=fresh,
                archived=archived, warning=warning)
    step.save("rollback", done, fresh=False)
    return {"changed": True, "rollback": done, "state": now}


def _judge_new_timeline(step, now, cut, attempted, warning):
    """(new_timeline, the segment archived, warning): above the restored cluster's timeline
    when that is known, and archived, else said why not."""
    abandoned, timeline = cut.get("timeline"), int(now.get("timeline") or 0)
    fresh = (timeline > int(abandoned)) if abandoned else (attempted and not warning)
    if attempted and not warning and not fresh:
        warning = ("it started on timeline %s, not above the restored cluster's %s (the "
                   "repository lacks a history file): restores of latest may follow the "
                   "abandoned timeline" % (timeline, abandoned))
    if not fresh:
        return False, None, warning
    try:
        archived = _probe_archive(step, now)
    except PgdrError as exc:
        return True, None, ("its new timeline %d did not reach the repository (%s): until it "
                            "does, restores of latest follow the restored cluster's timeline"
                            % (timeline, getattr(exc, "msg", exc)))
    return True, archived, warning


def _new_timeline_recovery(step, live, record, cut, ctl):
    """The restore_command line to recover the moved-back directory with, or None and
    why not (None when there is nothing to say). Only the directory the cutover kept,
    never a running server."""
    if ctl.running():
        return None, None
    if record.get("from") != (cut.get("kept") or "").rstrip("/"):
        return None, ("%s is not the directory the cutover kept: it started as it is, and the "
                      "restored cluster's timeline stays the newest in the repository"
                      % record.get("from"))
    if not cut.get("restore_command"):
        return None, ("the cutover recorded no restore_command (an earlier pgdr, or it stopped "
                      "before the copy took the live directory's place): it started on its old "
                      "timeline, and a restored timeline, if any, stays the newest in the "
                      "repository")
    ready = step.as_user(instance.unarchived_segments, live)
    if ready:
        return None, ("%d WAL segments of it were not archived yet (%s...): an archive recovery "
                      "would let PostgreSQL delete them, so it started on its old timeline, and "
                      "the restored cluster's timeline stays the newest in the repository"
                      % (len(ready), ready[0]))
    return cut["restore_command"], None


def _start_on_a_new_timeline(step, ctl, live, line):
    """Start through archive recovery with the cutover's restore_command, no target and
    the directory's own timeline; (state, None), or, when that start fails (the repository
    out of reach: wal-fetch stops the recovery), (state of a plain start, why). The
    recovery settings never outlive the attempt."""
    step.as_user(begin_new_timeline, live, line)
    try:
        now = _start(step, ctl, live, "rollback")
        if now.get("in_recovery"):
            raise PostgresError("recovery did not end", code="recovery_failed", stage="rollback")
    except PgdrError as exc:
        try:
            if ctl.running():
                _stop(ctl, live, step.params, step.params.get("service_name"),
                      "the rolled-back cluster", "rollback")
        finally:
            step.as_user(end_recovery_settings, live)
        now = _start(step, ctl, live, "rollback")
        return now, ("it could not start on a new timeline (%s): it started on its old timeline "
                     "%s, and the restored cluster's timeline stays the newest in the repository"
                     % (getattr(exc, "msg", exc), now.get("timeline")))
    return now, None


def begin_new_timeline(data, line):
    """As the OS user: archive recovery on the directory's own timeline, to no target."""
    set_recovery_block(data, [line, "recovery_target_timeline = 'current'"]
                       + list(NO_RECOVERY_TARGET))
    _write_private(os.path.join(data, "recovery.signal"), b"")


def end_recovery_settings(data):
    """As the OS user: the rollback's recovery settings gone (read at every start), with
    what wal-fetch left in the directory."""
    set_recovery_block(data, None)
    _remove_leftovers(data, ("recovery.signal",) + ownfiles.RESTORE_LEFTOVERS)


def _call(function, *args):
    """A reader for code that runs as the OS user already."""
    return function(*args)


def _live_ctl(step, live):
    return instance.PgCtl(step.bin_dir, live, _live_log(step, live),
                          **osuser.switch_args(step.os_user))


def _standby(step):
    """On a standby's node, after a cutover: the standby's data directory (``target``) is
    rebuilt for the new primary and started, then checked streaming. From the repository
    (``standby_source``, the default) by delta restore in place; from the primary with
    pg_basebackup, the previous directory kept as ``<data>.pre-rebuild-<UTC time>``. The
    same rebuild again (``rebuild_for``, the cutover's time) changes nothing."""
    data, params = step.datadir, step.params
    primary, rebuilt_for = params.get("primary_host") or "", params.get("rebuild_for") or ""
    if not primary:
        raise ConfigError("no standby rebuild: the new primary's address is not set "
                          "(pgdr_restore_primary_host)", code="restore_standby_unknown",
                          stage="standbys")
    done = step.state.get("standby", {})
    source = params.get("standby_source") or "repository"
    if (rebuilt_for and done.get("for") == rebuilt_for and done.get("primary") == primary
            and (os.path.isfile(os.path.join(data, "PG_VERSION"))
                 or source == done.get("source") == "patroni")):  # Patroni builds it
        return {"changed": False, "standby": done}
    # checked before the cutover (the role's check mode with the scope): Patroni stops later
    refuse_under_patroni(data, "standbys", missing_counts=source != "patroni",
                         daemons_stop_later=step.dry_run and bool(params.get("patroni_scope")))
    if source == "patroni":
        _require_patroni_replica(data)
    aside = source in ("primary", "patroni") and os.path.lexists(data)
    if aside:  # renamed aside: one filesystem
        _require_one_filesystem((os.path.dirname(data), data), "standbys")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record = {"at": stamp, "primary": primary, "for": rebuilt_for, "source": source,
              "kept": "%s.pre-rebuild-%s" % (data, stamp) if aside else None}
    if step.dry_run:
        if source == "repository":  # the backup it would restore, or why there is none
            planned = step.as_user(_standby_plan, _standby_settings(step, data, primary))
            record["backup_id"] = planned["backup"]["id"]
        return {"changed": True, "standby": record}
    ctl = _live_ctl(step, data)
    if os.path.lexists(data):
        _stop(ctl, data, params, params.get("service_name"), "the standby", "standbys")
    if source == "patroni":  # Patroni, started next, builds the replica (create_replica_methods)
        if aside:
            _move(data, record["kept"], "standbys")
        step.save("standby", record, fresh=False)
        return {"changed": True, "standby": record}
    events = []
    if source == "repository":
        restored = step.as_user(_restore, _standby_settings(step, data, primary), False)
        events = restored.pop("events", [])
        record.update(backup_id=restored["backup"]["id"], delta=restored.get("delta"))
    else:
        if os.path.lexists(data):
            _move(data, record["kept"], "standbys")
        _clone(step, data, primary)
    timeout = _launch(step, ctl, "standbys")
    now = step.as_user(_wait_ready, step.settings, timeout, ctl.log)
    # recorded only once it streams: a rebuilt standby the primary refuses is not done
    step.as_user(_wait_streaming, step.settings, params.get("follow_timeline"), timeout,
                 ctl.log)
    step.save("standby", record, fresh=False)
    return {"changed": True, "standby": record, "state": now, "events": events}


def _require_patroni_replica(data):
    """Only a Patroni member's directory is set aside for Patroni to build (a missing one is
    already aside): anything else would be left for nobody to build."""
    if os.path.lexists(data) and not patroni.manages(data):
        raise ConfigError(
            "no standby rebuild: standby_source is patroni, but %s is not a Patroni member's "
            "data directory (it holds no %s): nothing was changed" % (data, patroni.MANAGED_MARKER),
            code="restore_standby_unknown", stage="standbys")


def _standby_settings(step, data, primary):
    """The restore that rebuilds a standby from the repository: the newest backup on the
    way to the followed timeline, by delta into its own directory, as a standby of the
    new primary (primary_conninfo as pg_basebackup -R writes it, the password included
    when there is one: postgresql.auto.conf is then 0600). recovery_target_timeline stays
    PostgreSQL's default, latest: a number written there would keep the standby off the
    timeline of the next failover for good."""
    follow = step.params.get("follow_timeline")
    conninfo = libpq_conninfo(host=primary, port=step.settings.pg_port,
                              user=step.params.get("replication_user") or "postgres",
                              password=step.settings.pg_password or None)
    values = {"primary_conninfo": conninfo}
    return step.settings.replace(
        target=data, point="latest", backup_id="latest", standby=True, bootstrap=False,
        delta=True, force=False, settings=values,
        target_timeline=str(follow) if follow else "latest")


def libpq_conninfo(**values):
    """A libpq connection string: each value quoted, its quotes and backslashes escaped
    as libpq reads them; None values left out."""
    return " ".join("%s='%s'" % (name, str(value).replace("\\", "\\\\").replace("'", "\\'"))
                    for name, value in values.items() if value is not None)


def _clone(step, data, primary):
    """pg_basebackup from the new primary, as the OS user; the password (when there is
    one) through the environment, never the command line."""
    switch = osuser.switch_args(step.os_user)
    env = dict(switch.pop("env", None) or os.environ)
    if step.settings.pg_password:
        env["PGPASSWORD"] = step.settings.pg_password
    argv = [os.path.join(step.bin_dir, "pg_basebackup"), "--host=%s" % primary,
            "--port=%d" % step.settings.pg_port,
            "--username=%s" % (step.params.get("replication_user") or "postgres"),
            "--pgdata=%s" % data, "--wal-method=stream", "--checkpoint=fast",
            "--write-recovery-conf"]
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env, check=False, **dict({"cwd": "/"}, **switch))
    except OSError as exc:
        raise ConfigError("cannot run %s: %s (set pg_bindir)" % (argv[0], exc),
                          code="pg_bindir_invalid", stage="standbys")
    if done.returncode != 0:
        raise PostgresError("pg_basebackup from %s:%d into %s failed (exit %d): %s" % (
            primary, step.settings.pg_port, data, done.returncode,
            done.stdout.decode("utf-8", "replace").strip()[-2000:]),
            code="restore_standby_clone_failed", stage="standbys")


def _wait_ready(settings, timeout, log):
    return instance.Instance(settings, stage="standbys").wait_ready(timeout, log)


def _wait_streaming(settings, timeline, timeout, log):
    return instance.Instance(settings, stage="standbys").wait_streaming(timeline, timeout, log)


EARLIER = {"plan": "--tags plan", "staged": "--tags plan,stage",
           "recovered": "--tags plan,stage,recover"}
STAGES = {"read": _read, "plan": _plan, "stage": _stage, "recover": _recover, "verify": _verify,
          "cutover": _cutover, "rollback": _rollback, "standby": _standby}
