# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention that knows chains.

Kept: the newest ``retention_full`` full backups and/or every backup needed to
restore any point of the last ``retention_days`` days (so the newest full
older than the window too), each with its whole chain (a diff's full, an
incr's every ancestor), and all WAL from the oldest kept backup's start on.
Everything else of the cluster is deleted: expired backups (newest first, so
that a diff never outlives its full, and each manifest first, so a half-deleted
backup is never offered), the objects of incomplete backups that no backup can
still be writing (cleanup.py says which), and WAL that no kept backup needs.
Snapshot backups are kept by the same policy, counted on their own (the newest
``retention_full`` of them, those needed in the window); an expired one loses its
snapshots through its provider, on the host that holds them, then its objects.
--dry-run lists exactly that. Killed half-way, a rerun finishes the work: a
half-deleted backup is an incomplete one older than a complete backup.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import socket
import time

from .. import snapshots
from ..archive import ArchiveIndex
from ..catalog import SNAPSHOT, Catalog, backup_prefix
from ..errors import ConfigError, PgdrError, RepositoryError
from ..storage import open_storage
from . import cleanup


def _epoch(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def retained(complete, retention_full, retention_days, now, kind="full"):
    """Ids to keep: the retention policy, closed over chains. Snapshot backups (kind
    snapshot) are counted on their own, each its own chain."""
    fulls = [m for m in complete if m["type"] == kind]
    keep_fulls = set()
    if retention_full:
        keep_fulls.update(m["id"] for m in fulls[-retention_full:])
    if retention_days:
        horizon = now - retention_days * 86400
        inside = [m for m in fulls if _epoch(m["stop_time"]) >= horizon]
        before = [m for m in fulls if _epoch(m["stop_time"]) < horizon]
        keep_fulls.update(m["id"] for m in inside + before[-1:])
    keep = set()
    for manifest in complete:
        chain = manifest.get("chain") or [manifest["id"]]
        if chain[0] in keep_fulls:
            keep.update(chain)
    return keep


def run(settings, progress, dry_run=False):
    if dry_run:
        return _run(settings, progress, dry_run)
    from .. import metrics  # the node's textfile: success and failure (never fails this)
    try:
        result = _run(settings, progress, dry_run)
    except Exception as exc:
        metrics.expire_failed(settings, exc)
        raise
    metrics.expire_done(settings)
    return result


def _run(settings, progress, dry_run):
    settings.require("cluster")
    if not (settings.retention_full or settings.retention_days):
        raise ConfigError("expire needs a retention policy: set retention_full (full "
                          "backups to keep) and/or retention_days", code="config_missing",
                          stage="config")
    storage = open_storage(settings)
    storage.check()
    catalog = Catalog(storage, settings.cluster)
    complete, incomplete = catalog.scan()
    # pending snapshot backups whose provider has completed (or failed) them, recorded
    settled = snapshots.settle(settings, catalog, progress, write=not dry_run)
    now = time.time()
    keep = retained(complete, settings.retention_full, settings.retention_days, now)
    expired = [m["id"] for m in complete if m["id"] not in keep]
    stale, held = cleanup.plan(storage, settings, complete, incomplete, now)
    orphaned, waiting = cleanup.orphans(storage, settings, catalog, now, incomplete)
    held += cleanup.held_for_snapshots(stale, waiting)
    stale = dict((k, v) for k, v in stale.items() if k not in waiting)
    for entry in held:
        progress.event("kept incomplete backup %s: %s" % (entry["id"], entry["why"]))
    kept = [m for m in complete if m["id"] in keep]
    snapshots_expired, elsewhere = _expired_snapshots(catalog.snapshots, settings, now)
    # a failed one is never offered: its snapshots and objects go (where they can); so
    # does a pending one older than every snapshot backup kept (a provider that never
    # answers must not hold the WAL archive for good)
    for found, why in ((catalog.failed_snapshots, "failed"),
                       (_stale_pending(catalog, snapshots_expired), "still pending, and "
                        "older than every snapshot backup kept")):
        here_, away_ = _reachable(found, why)
        snapshots_expired += here_
        elsewhere += away_
    for entry in elsewhere:
        progress.event("kept snapshot backup %s: %s" % (entry["id"], entry["why"]))
    gone = set(m["id"] for m in snapshots_expired)
    # the WAL of the snapshot backups kept stays; an expired one held on another host
    # (often a host that is gone) does not hold WAL back
    away = set(e["id"] for e in elsewhere)
    kept += [m for m in catalog.snapshots if m["id"] not in gone | away]
    # a pending one's WAL stays: it is offered once complete
    kept += [m for m in catalog.pending_snapshots if m["id"] not in gone | away]
    wal = _expired_wal(storage, settings.cluster, kept)
    unreadable = catalog.damaged + catalog.damaged_snapshots
    if wal and unreadable:
        # a damaged backup (or one of an older format) may still be restorable by hand or
        # by the pgdr that wrote it, with this WAL: the operator decides, expire does not
        progress.event("kept %d WAL file(s) older than the oldest kept backup: backup(s) %s "
                       "cannot be read (see pgdr info) and may still need them"
                       % (len(wal), ", ".join(d["id"] for d in unreadable)))
        wal = []
    plan = {"expired": expired, "incomplete_removed": sorted(stale), "incomplete_kept": held,
            "kept": sorted(keep), "wal_removed": len(wal),
            "wal_keys": wal[:1000] if dry_run else [],
            "snapshots_expired": [{"id": m["id"], "snapshots": [
                v["snapshot"]["id"] for v in m["snapshot"]["volumes"]]}
                for m in snapshots_expired],
            "snapshots_kept": sorted(m["id"] for m in catalog.snapshots
                                     if m["id"] not in gone),
            "snapshots_elsewhere": elsewhere,
            "snapshots_pending": [m["id"] for m in catalog.pending_snapshots],
            "snapshots_settled": settled,
            "snapshots_orphaned": dict((k, [v["snapshot"]["id"] for v in vols])
                                       for k, vols in orphaned.items())}
    work = expired or stale or wal or snapshots_expired or orphaned
    if dry_run or not work:
        return dict(plan, changed=bool(work))
    failed = []
    for manifest in snapshots_expired:
        try:
            _remove_snapshot_backup(storage, settings, manifest, progress)
        except PgdrError as exc:  # the other backups and the WAL are expired all the same
            progress.event("could not remove snapshot backup %s: %s"
                           % (manifest["id"], exc.msg))
            failed.append((manifest["id"], exc))
    orphans_failed = cleanup.remove_orphans(storage, settings, orphaned, progress)
    failed += [(backup_id, None) for backup_id in orphans_failed]
    left = [m for m in snapshots_expired if m["id"] in set(f[0] for f in failed)]
    if left:  # still offered: so is the WAL it needs
        still = set(_expired_wal(storage, settings.cluster, kept + left))
        wal = [key for key in wal if key in still]
    # newest first: a diff or incr goes before the backups it needs
    for backup_id in reversed(expired):
        objects = storage.list(backup_prefix(settings.cluster, backup_id))
        cleanup.remove(storage, settings.cluster, backup_id, objects, progress)
    for backup_id in sorted(set(stale) - set(orphans_failed)):
        cleanup.remove(storage, settings.cluster, backup_id, stale[backup_id], progress)
    storage.delete(wal)
    if wal:
        progress.event("removed %d WAL file(s) older than the oldest kept backup" % len(wal))
    if failed:
        backup_id, exc = failed[0]
        exc = exc or RepositoryError("the snapshots of killed backup %s could not be "
                                     "removed (see the lines above)" % backup_id,
                                     code="snapshot_failed")
        names = ", ".join(f[0] for f in failed)
        raise type(exc)("expire removed what it listed except snapshot backup(s) %s: %s; "
                        "the next expire tries again" % (names, exc.msg),
                        code=exc.code, stage="expire", backup_id=backup_id)
    return dict(plan, changed=True)


def _expired_snapshots(found, settings, now):
    """(snapshot backups to remove, [{id, why}] of those the policy expires that this
    host cannot remove): the policy applied to snapshot backups on their own. A local
    snapshot is removed only on the host that holds it."""
    keep = retained(found, settings.retention_full, settings.retention_days, now,
                    kind=SNAPSHOT)
    return _reachable([m for m in found if m["id"] not in keep], "expired")


def _stale_pending(catalog, expired):
    """The pending snapshot backups older than every complete one the policy keeps (none
    when it keeps none): retention would not keep them even complete."""
    gone = set(m["id"] for m in expired)
    kept = [m["stop_time"] for m in catalog.snapshots if m["id"] not in gone]
    if not kept:
        return []
    return [m for m in catalog.pending_snapshots if m["stop_time"] < min(kept)]


def _reachable(found, why):
    """(those this host can remove, [{id, why}] of the others): a local snapshot is
    removed only on the host that holds it."""
    here, reachable, elsewhere = socket.gethostname(), [], []
    for manifest in found:
        if manifest["snapshot"].get("off_host") or manifest.get("host") == here:
            reachable.append(manifest)
        else:
            elsewhere.append({"id": manifest["id"], "why": (
                "%s, but its %s snapshots are on host %s: expire removes them there"
                % (why, manifest["snapshot"]["provider"], manifest.get("host")))})
    return reachable, elsewhere


def _remove_snapshot_backup(storage, settings, manifest, progress):
    """The provider's snapshots first, then the objects (manifest first): killed in
    between, the backup is refused as snapshot_missing and the next expire finishes."""
    source = snapshots.provider(settings, manifest["snapshot"]["provider"])
    for volume in manifest["snapshot"]["volumes"]:
        if source.state(volume) != "missing":  # pending or failed ones cost as much
            source.delete(volume)
    objects = storage.list(backup_prefix(settings.cluster, manifest["id"]))
    cleanup.remove(storage, settings.cluster, manifest["id"], objects, progress)
    progress.event("removed the %d snapshot(s) of backup %s"
                   % (len(manifest["snapshot"]["volumes"]), manifest["id"]))


def _expired_wal(storage, cluster, kept):
    """Keys of archived WAL older than the start of the oldest kept backup (history
    files stay: they are tiny and recovery needs them to follow timelines)."""
    if not kept:
        return []
    oldest = min(kept, key=lambda m: m["start_wal"])
    first_segment = oldest["start_wal"][8:]
    keys = []
    for timeline, names in ArchiveIndex(storage, cluster).segments().items():
        if timeline > oldest["timeline"]:
            continue
        keys.extend(info.key for name, info in names.items() if name[8:24] < first_segment)
    return sorted(keys)
