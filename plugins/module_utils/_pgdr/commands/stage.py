# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The staged restore's node-side stages, each reading and writing the state file.

``recover`` starts the staged copy (pg_ctl, as the cluster's OS user) unless it runs,
waits until recovery paused at the point or ended, and records it; ``verify`` runs the
checks of a restored copy (postgres/instance.py, the drill's checks) and records them,
failing when one failed, so that cutover never gets a copy nobody vouched for. Both
run as root (the state file is root's) and do their PostgreSQL work as the OS user
(postgres/osuser.py). Each is idempotent: a copy already running is not started again,
and a record that says what the file says already is not written.

The plan, stage, cutover, rollback and standbys steps are still sequenced by the restore
role (roles/restore); they move here one by one.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..errors import ConfigError, ObjectiveMissed
from ..postgres import instance, osuser
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
        progress.event("%s of %s: %s" % (self.stage, step.datadir, "would change"
                                         if dry_run and result["changed"] else "done"))
        return dict(result, restore_state=state.as_dict())


class Step(object):
    """What every stage needs: the settings for the copy's port, its directory, pg_ctl."""

    def __init__(self, stage, settings, params, state, dry_run):
        self.params = params
        self.state = state
        self.dry_run = dry_run
        self.datadir = params["data_directory"].rstrip("/") or "/"
        self.os_user = params.get("os_user") or ""
        plan = state.get("plan", {})
        # the port the copy was started on, once it was; before that the plan's
        started = state.get("recovered", {}).get("port") if stage == "verify" else None
        self.port = int(started or plan.get("port") or params.get("port") or settings.pg_port)
        self.settings = settings.replace(pg_port=self.port)
        self.log = params.get("log") or os.path.join(self.datadir, "restored-server.log")
        self.bin_dir = instance.bindir(settings.pg_bindir,
                                       plan.get("pg_version") or DEFAULT_VERSION_NUM)
        self.ctl = instance.PgCtl(self.bin_dir, self.datadir, self.log,
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


def _recover(step):
    if not step.dry_run:
        _require(step.state, "plan", "staged")
    timeout = int(step.params.get("timeout") or 600)
    running = step.ctl.running()
    if step.dry_run:
        return {"changed": not running, "started": not running, "port": step.port,
                "log": step.log, "bin_dir": step.bin_dir, "state": {}}
    if not running:
        # a start that fails is reported by the wait, with the server's log
        step.ctl.run("-l", step.log, "-w", "-t", str(timeout), "start", timeout=timeout + 30)
    now = step.as_user(_wait_recovery, step.settings, timeout, step.datadir, step.log)
    record = {"port": step.port, "log": step.log, "in_recovery": now["in_recovery"],
              "pause_state": now["pause_state"], "timeline": now["timeline"],
              "replay_lsn": now["replay_lsn"], "last_replay_time": now["last_replay_time"],
              "postmaster_pid": now["postmaster_pid"]}
    changed = step.save("recovered", record, fresh=not running)
    return {"changed": changed or not running, "started": not running, "port": step.port,
            "log": step.log, "bin_dir": step.bin_dir, "state": now}


def _wait_recovery(settings, timeout, datadir, log):
    return instance.Instance(settings, stage="recover").wait_recovery(timeout, datadir, log)


def _verify(step):
    if not step.dry_run:
        _require(step.state, "plan", "staged")
    plan = step.state.get("plan", {})
    params = dict(step.params, recovery=plan.get("recovery") or {},
                  target_action=plan.get("action") or step.params.get("target_action"))
    outcome = step.as_user(_checks, step.settings, params, step.dry_run)
    record = {"ok": outcome["ok"], "backup_id": plan.get("backup_id", ""),
              "checks": outcome["checks"]}
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
    server = instance.Instance(settings, stage="verify", dry_run=dry_run)
    return instance.ACTIONS["verify"](server, params)


def describe(checks):
    """The checks as one line: each name, ok or FAILED, and its detail."""
    return "; ".join("%s: %s (%s)" % (c["name"], "ok" if c["ok"] else "FAILED", c["detail"])
                     for c in checks)


def _require(state, *stages):
    missing = [stage for stage in stages if not state.get(stage)]
    if missing:
        raise ConfigError("no %s record in %s: run the plan and stage steps first "
                          "(--tags plan,stage)" % (" or ".join(missing), state.path),
                          code="restore_not_staged", stage="state")


STAGES = {"recover": _recover, "verify": _verify}
