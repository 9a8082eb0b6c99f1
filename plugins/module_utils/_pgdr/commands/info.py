# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backups of a cluster, its recoverable window and its archive lag, as data."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import time

from ..catalog import Catalog
from ..errors import ObjectiveMissed, PgdrError
from ..postgres.session import archive_lag
from ..recovery import Planner, last_drill, predict_rto
from ..storage import open_storage
from .backup import summarize
from .cleanup import stored


def run(settings, progress=None, dry_run=False):
    settings.require("cluster")
    storage = open_storage(settings)
    storage.check()
    catalog = Catalog(storage, settings.cluster)
    complete, incomplete = catalog.scan()
    incomplete = sorted(stored(storage, settings.cluster, incomplete))  # not empty prefixes
    backups = [summarize(m) for m in complete]
    checked = None
    if settings.verify and backups:
        from . import verify
        checked = verify.run(settings, progress or _quiet(), dry_run)
    archive = _archive_state(settings)
    drill = last_drill(storage, settings.cluster)
    state = {
        "verified": checked,
        "changed": False,
        "cluster": settings.cluster,
        "repository": storage.describe(),
        "backups": backups,
        "latest": backups[-1] if backups else None,
        "incomplete": incomplete,
        "damaged": catalog.damaged,  # manifests that fail their checks: never restored
        # never a diff's reference or retention's count for the other backups: listed
        # apart, with what they are not when their provider keeps them on this host
        "snapshots": [dict(summarize(m), note=snapshot_note(m)) for m in catalog.snapshots],
        "damaged_snapshots": catalog.damaged_snapshots,
        # never offered: not complete at the provider yet (EBS), or failed there
        "pending_snapshots": [dict(summarize(m), note=snapshot_note(m))
                              for m in catalog.pending_snapshots],
        "failed_snapshots": [dict(summarize(m),
                                  why=(m["snapshot"].get("settled") or {}).get("why"))
                             for m in catalog.failed_snapshots],
        "window": Planner(storage, catalog, settings.cluster).window(),
        "archive": archive,
        "last_drill": drill,
    }
    state["objectives"] = assess(settings, backups, archive, drill)
    missed = [n for n, v in state["objectives"].items() if v.get("met") is False]
    if missed and settings.fail_on_objective:
        reasons = "; ".join("%s: %s" % (name.upper(), state["objectives"][name]["why"])
                            for name in missed)
        raise ObjectiveMissed("objective(s) missed for cluster %s: %s"
                              % (settings.cluster, reasons), code="objective_missed",
                              stage="objectives", objectives=state["objectives"])
    return state


def snapshot_note(manifest):
    """What a snapshot backup is worth in a disaster, in one sentence."""
    record = manifest["snapshot"]
    if record.get("off_host"):
        return "snapshots held by %s, off this host" % record["provider"]
    return ("snapshots held by %s on the cluster's own disks: not disaster recovery by "
            "itself (a lost disk or host loses them); a fast way back on this host"
            % record["provider"])


def assess(settings, backups, archive, drill):
    """Current RPO and predicted RTO against the declared objectives.

    RPO now: the archive lag when WAL is archived, else the age of the newest backup.
    RTO predicted: the newest backup's size at the last drill's restore throughput, plus
    that drill's time to start and verify."""
    out = {}
    now = time.time()
    if archive.get("available") and archive.get("archive_mode") in ("on", "always"):
        rpo, basis = archive["lag_seconds"], "archive lag"
    elif backups:
        rpo = round(now - calendar.timegm(time.strptime(backups[-1]["stop_time"],
                                                        "%Y-%m-%dT%H:%M:%SZ")), 1)
        basis = "age of the newest backup (no WAL archiving seen)"
    else:
        rpo, basis = None, "no backup"
    out["rpo"] = _objective(settings.rpo_objective, rpo, basis)
    rto, basis = predict_rto(drill, backups[-1]["size"] if backups else None)
    if backups and rto is not None:
        basis = "newest backup at " + basis
    out["rto"] = _objective(settings.rto_objective, rto, basis)
    return out


def _objective(objective, value, basis):
    met = None if objective is None or value is None else value <= objective
    why = "%s s (%s) against %s s" % (value, basis, objective)
    if objective is not None and value is None:
        met, why = False, "cannot tell: %s" % basis
    return {"objective": objective, "value": value, "basis": basis, "met": met, "why": why}


def _quiet():
    from ..progress import Progress
    return Progress()


def _archive_state(settings):
    """The server's archiver state when the server answers; why not, otherwise (info
    also runs where no server is, for example on a controller)."""
    try:
        state = archive_lag(settings)
    except PgdrError as exc:
        return {"available": False, "reason": exc.msg}
    state["available"] = True
    state["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return state
