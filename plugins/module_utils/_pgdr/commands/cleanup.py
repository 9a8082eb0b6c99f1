# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups that never completed: which exist, and removing their objects.

A backup without manifest is never offered for restore, but its objects cost
storage. A failed backup removes them itself; a killed one cannot. They are
removed here (``pgdr cleanup``, and by ``expire``) once no backup can still be
writing them: not the backup the live lease names (of any node), nothing at
all while a live lease names no backup or the lease cannot be read, and only
when nothing was written under the prefix for ``incomplete_grace_seconds`` or
a complete backup started after it. A prefix that holds no object (SeaweedFS
keeps empty "directories", posix keeps empty directories) is not a backup.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import json
import socket
import time

from .. import faultpoint, snapshots
from ..catalog import MANIFEST, SNAPSHOT_INTENT, Catalog, backup_prefix, is_snapshot
from ..errors import IntegrityError, NotFound, PgdrError, RepositoryError
from ..lease import Lease
from ..storage import open_storage
from ..storage.sealed import backup_keys_prefix


def id_time(backup_id):
    """Start time of a backup from its id (20261124T060012Z-full), or None."""
    try:
        return calendar.timegm(time.strptime(backup_id.split("-")[0], "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None


def stored(storage, cluster, ids):
    """{backup id: [ObjectInfo]} of the ids whose prefix holds at least one object."""
    found = {}
    for backup_id in ids:
        objects = storage.list(backup_prefix(cluster, backup_id))
        if objects:
            found[backup_id] = objects
    return found


def plan(storage, settings, complete, incomplete, now):
    """(removable {id: [ObjectInfo]}, kept [{"id", "why"}]) of the incomplete backups that
    hold objects."""
    grace = settings.incomplete_grace_seconds
    newest_start = max([id_time(m["id"]) or 0 for m in complete] or [0])
    status, held = Lease(storage, settings.cluster, "backup", settings.backup_lease).state()
    removable, kept = {}, []
    for backup_id, objects in sorted(stored(storage, settings.cluster, incomplete).items()):
        last_write = max([o.mtime or 0 for o in objects] + [id_time(backup_id) or now])
        why = None
        if any(o.key.endswith("/" + MANIFEST) for o in objects):
            why = "it has a manifest, but a backup of its chain is missing"
        elif status == "unknown":
            why = "the backup lease cannot be read, so a backup may be writing it: %s" % held
        elif status == "live" and held.get("backup_id") in (None, backup_id):
            why = "node %s is writing %s (its lease lasts until %s)" % (
                held.get("holder"), "it" if held.get("backup_id") else "a backup",
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(held["expires_at"])))
        elif now - last_write <= grace and (id_time(backup_id) or now) >= newest_start:
            why = ("its last object was written %.0f s ago (incomplete_grace_seconds=%d) "
                   "and no complete backup started after it" % (now - last_write, grace))
        if why:
            kept.append({"id": backup_id, "why": why})
        else:
            removable[backup_id] = objects
    return removable, kept


def orphans(storage, settings, catalog, now, incomplete=()):
    """({backup id: [volume records]} to remove, ids to leave for later) of the snapshots
    in this host's snapshot_dir that no manifest names (a snapshot backup killed between
    its snapshots and its manifest). Only those of a backup that stored its intent in this
    repository are this repository's to remove; they go once no backup can still be
    taking them: not the one the live lease names, none while a live lease names no
    backup or cannot be read, and only incomplete_grace_seconds after the id's time.
    The objects of an ``incomplete`` btrfs snapshot backup that another host took (or
    any, without snapshot_dir here) are left too: that host finds its snapshots only
    through them."""
    elsewhere = _snapshots_elsewhere(storage, settings, incomplete)
    if settings.snapshot_provider == "btrfs" and not settings.snapshot_dir:
        return {}, elsewhere
    source = snapshots.provider(settings)
    try:
        found = source.leftovers(settings.cluster)
    except PgdrError:  # the provider cannot list them now: every killed one waits
        return {}, elsewhere | set(b for b in incomplete if is_snapshot(b))
    named = set(m["id"] for m in catalog.snapshots + catalog.pending_snapshots
                + catalog.failed_snapshots) | set(
        d["id"] for d in catalog.damaged_snapshots)  # a damaged manifest still names them
    ours = dict((k, v) for k, v in found.items()
                if k not in named and _provider_of(storage, settings, k) == source.name)
    if not ours:
        return {}, elsewhere
    status, held = Lease(storage, settings.cluster, "backup", settings.backup_lease).state()
    if status == "unknown" or (status == "live" and not held.get("backup_id")):
        return {}, set(ours) | elsewhere
    removable = dict((k, v) for k, v in ours.items()
                     if not (status == "live" and held.get("backup_id") == k)
                     and now - (id_time(k) or now) > settings.incomplete_grace_seconds)
    return removable, (set(ours) - set(removable)) | elsewhere


def _intent(storage, settings, backup_id):
    """A snapshot backup's intent in this repository: None when it has none (its
    snapshots are not this repository's), {} when it cannot be read."""
    try:
        intent = json.loads(storage.get(backup_prefix(settings.cluster, backup_id)
                                        + SNAPSHOT_INTENT).decode("utf-8"))
    except NotFound:
        return None
    except (ValueError, IntegrityError):
        return {}
    return intent if isinstance(intent, dict) else {}


def _provider_of(storage, settings, backup_id):
    """The provider a snapshot backup's intent names (btrfs when it names none), or None
    without an intent."""
    intent = _intent(storage, settings, backup_id)
    return None if intent is None else intent.get("provider", "btrfs")


def held_for_snapshots(removable, waiting):
    """The entries of incomplete_kept for the backups whose objects wait for their
    snapshots (a killed snapshot backup's objects, its intent, go only with them)."""
    return [{"id": k, "why": "a snapshot backup whose snapshots are not removed yet: its "
                             "objects go with them, where the provider's settings are (btrfs: "
                             "the host that holds them, with snapshot_dir set; ebs: "
                             "snapshot_provider=ebs), after incomplete_grace_seconds"}
            for k in sorted(set(removable) & waiting)]


def _snapshots_elsewhere(storage, settings, incomplete):
    """Ids of incomplete snapshot backups whose snapshots this node cannot look for:
    btrfs ones taken on another host, or without snapshot_dir here (an intent that cannot
    be read counts as one); ebs ones where snapshot_provider is not ebs."""
    here, found = socket.gethostname(), set()
    for backup_id in incomplete:
        if not is_snapshot(backup_id):
            continue
        intent = _intent(storage, settings, backup_id)
        if intent is None:
            continue  # no intent: none of its snapshots can be told apart anyway
        provider = intent.get("provider", "btrfs")
        if provider == "btrfs" and (intent.get("host") != here or not settings.snapshot_dir):
            found.add(backup_id)
        elif provider == "ebs" and settings.snapshot_provider != "ebs":
            found.add(backup_id)  # its snapshots are found only with the ebs settings
    return found


def remove_orphans(storage, settings, found, progress):
    """Delete orphaned snapshots through the provider, each backup's only while it still
    has no manifest (it may have completed since they were listed); the ids it could
    not finish."""
    source = snapshots.provider(settings)
    failed = []
    for backup_id, volumes in sorted(found.items()):
        if storage.head(backup_prefix(settings.cluster, backup_id) + MANIFEST) is not None:
            progress.event("kept the snapshots of backup %s: it completed meanwhile"
                           % backup_id)
            continue
        try:
            for volume in volumes:
                source.delete(volume)
        except RepositoryError as exc:
            progress.event("could not remove the snapshots of killed backup %s: %s"
                           % (backup_id, exc.msg))
            failed.append(backup_id)
            continue
        progress.event("removed %d snapshot(s) of killed backup %s (no manifest names "
                       "them)" % (len(volumes), backup_id))
    return failed


def remove(storage, cluster, backup_id, objects, progress):
    """Delete a backup's objects, its manifest first (never offered half-deleted), then,
    in an encrypted cluster, its data keys: an old version of its objects in a versioned
    bucket can no longer be read once the key records' own old versions are gone."""
    prefix = backup_prefix(cluster, backup_id)
    manifest = prefix + MANIFEST
    rest = [o.key for o in objects if o.key != manifest]
    storage.delete([manifest])
    half = len(rest) // 2
    storage.delete(rest[:half])
    faultpoint.reached("expire.mid_delete")
    storage.delete(rest[half:])
    keys = [o.key for o in storage.list(backup_keys_prefix(cluster, backup_id))]
    if keys:
        storage.delete(keys)
    progress.event("removed backup %s (%d objects%s)" % (
        backup_id, len(rest), ", %d data key(s)" % len(keys) if keys else ""))


def run(settings, progress, dry_run=False):
    settings.require("cluster")
    storage = open_storage(settings)
    storage.check()
    catalog = Catalog(storage, settings.cluster)
    complete, incomplete = catalog.scan()
    now = time.time()
    removable, kept = plan(storage, settings, complete, incomplete, now)
    orphaned, waiting = orphans(storage, settings, catalog, now, incomplete)
    kept += held_for_snapshots(removable, waiting)
    removable = dict((k, v) for k, v in removable.items() if k not in waiting)
    blocked = [k for k in kept if k["why"].startswith("the backup lease cannot be read")]
    if blocked:
        raise RepositoryError("cannot tell whether a backup is running: %s" % blocked[0]["why"],
                              code="lease_unreadable", stage="lease",
                              incomplete_kept=kept)
    result = {"changed": bool(removable or orphaned), "incomplete_removed": sorted(removable),
              "snapshots_orphaned": dict((k, [v["snapshot"]["id"] for v in vols])
                                         for k, vols in orphaned.items()),
              "incomplete_kept": kept,
              "objects_removed": sum(len(o) for o in removable.values()),
              "bytes_removed": sum(i.size for o in removable.values() for i in o)}
    for entry in kept:
        progress.event("kept incomplete backup %s: %s" % (entry["id"], entry["why"]))
    if not dry_run:
        failed = remove_orphans(storage, settings, orphaned, progress)
        for backup_id in sorted(set(removable) - set(failed)):
            remove(storage, settings.cluster, backup_id, removable[backup_id], progress)
        if failed:
            raise RepositoryError("the snapshots of killed backup(s) %s could not be "
                                  "removed: see the lines above; the next cleanup tries "
                                  "again" % ", ".join(failed), code="snapshot_failed",
                                  stage="cleanup", result=result)
    return result
