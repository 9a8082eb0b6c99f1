# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a backup into a new data directory.

Safety first: the target is checked before anything is written (never the
data directory of a running server; a non-empty one only with force), every
stored object is verified against its SHA-256 before it is decompressed, and
every file against its own SHA-256 after. On any failure the target is
emptied again, so a half-restored directory is never mistaken for a cluster;
``global/pg_control`` is written last (after a sync of everything else), so a
restore killed before it leaves a directory that PostgreSQL refuses to start.
With delta, an existing stopped data directory is brought to the backup instead:
pg_control and the marker go first, what the backup does not hold is removed, and
only the files and pieces whose SHA-256 differs from the backup's records are
fetched and written; the result is the tree a restore into an empty directory
gives. A failed delta is not undone (that would throw away what a second run can
keep): the directory is left without pg_control, so it never starts half-written.
The backup's WAL goes into pg_wal and backup_label beside it: ``pg_ctl
start`` then replays to the backup's consistency point, like pg_basebackup's.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import shutil
import stat
import threading
import time

from .. import catalog, faultpoint, filestamps, snapshots
from ..compress import CodecsByKey
from ..errors import ConfigError, IntegrityError, PgdrError, TargetRefused
from ..options import BY_NAME, DEFAULT_CONFIG_FILE
from ..postgres.wal import parse_lsn
from ..recovery import Planner, last_drill, parse_point, predict_rto
from ..parallel import run_all
from ..postgres.datadir import (CONTROL_FILE, RESTORE_MARKER, RESTORE_STAMPS, is_running,
                                refuse_live)
from ..storage import open_storage
from ..storage.base import file_sha256
from .backup import summarize

MIB = 1024.0 * 1024.0

AUTO_CONF = "postgresql.auto.conf"
# Written last into a restored directory: which backup it holds. A second run
# of the same restore finds it and changes nothing (idempotence).
MARKER = RESTORE_MARKER


class RestoreRun(object):
    delta = None  # DeltaCounts when an existing data directory is brought up to date
    clones = None  # snapshot backups: [(provider, volume, destination, hidden clone)]

    def __init__(self, settings, progress):
        settings.require("cluster", "target")
        self.settings = settings
        self.progress = progress
        self.storage = open_storage(settings)
        self.catalog = catalog.Catalog(self.storage, settings.cluster)
        self.target = settings.target
        self.owner = None
        self.created = []  # target first, then tablespace locations: what undo empties
        self.control = None  # (data, mode) of global/pg_control: written last
        self.replaced = []  # tablespace locations of the target's cluster, forced over
        self.version_dir = "PG_"  # PG_<major>_: this backup's directory in a tablespace
        self._fetched = [0, 0, threading.Lock()]  # tasks done, tasks in all (kill point)
        self.touched = set()  # keys of pieces a delta layer writes over: always fetched
        self.trusted = {}  # delta: files unchanged since a restore recorded them (filestamps)
        self._placed = []  # snapshot backups: (clone, hidden or in place; existed) for undo
        self._target_existed = False  # snapshot backups: the target was a directory

    # -- checks ------------------------------------------------------------------------
    def check_target(self):
        target = self.target
        if os.path.realpath(target) == "/":
            raise TargetRefused("target=/ is not a data directory", stage="check")
        refuse_live(target)
        if os.path.exists(target) and not os.path.isdir(target):
            raise TargetRefused("target %s exists and is not a directory" % target,
                                stage="check")
        outer = _enclosing_data_directory(target)
        if outer:
            # base/<oid> of a stopped cluster: a restore there, forced or not, would
            # replace one database's files with a whole data directory
            raise TargetRefused(
                "target %s lies inside the data directory %s: a restore writes a whole "
                "data directory; choose a directory outside it%s" % (
                    target, outer, " or name %s itself" % outer if self.settings.delta
                    else ""), code="target_inside_cluster", stage="check")
        self.owner = self._owner_of(target)
        entries = os.listdir(target) if os.path.isdir(target) else []
        if entries and self.settings.delta:
            if _is_data_directory(target):
                self.delta = DeltaCounts()
                return
            if not self.settings.force:
                raise TargetRefused(
                    "target %s holds %d entries but no PG_VERSION and global/ (or an "
                    "earlier restore's marker): delta brings an existing PostgreSQL data "
                    "directory to a backup; choose such a directory, an empty one, or set "
                    "force to replace what it holds" % (target, len(entries)),
                    code="target_not_a_cluster", stage="check")
        if entries and not self.settings.force:
            raise TargetRefused("target %s is not empty (%d entries); choose an empty "
                                "directory or set force to replace its contents"
                                % (target, len(os.listdir(target))), code="target_not_empty",
                                stage="check")

    def map_tablespaces(self, manifest):
        """{oid: (old location, new location)}; refuses a location that holds data,
        unless (with force) it is a tablespace of the cluster the target holds: an
        earlier, interrupted restore's, replaced with the target."""
        wanted = self.settings.tablespace_map or {}
        known = set()
        mapping = {}
        version_dir = self.version_dir = "PG_%d_" % (manifest["pg_version"] // 10000)
        # the target's own tablespaces: replaced (force) or brought up to date (delta)
        replaced = self._target_tablespaces() if self.settings.force or self.delta else set()
        for space in manifest["tablespaces"]:
            known.update(_map_keys(space))
            new = self._mapped_location(space)
            refuse_live(new, what="tablespace %s location" % space["name"])
            if os.path.realpath(new) in replaced:
                self.replaced.append(new)  # emptied with the target, in prepare
            elif os.path.isdir(new) and any(n.startswith(version_dir)
                                            for n in os.listdir(new)):
                raise TargetRefused(
                    "tablespace %s (oid %s) would be restored into %s, which already holds "
                    "a %s* directory (a live cluster's?); map it elsewhere with "
                    "tablespace_map %s=NEW_DIR" % (space["name"], space["oid"], new,
                                                   version_dir, space["name"]),
                    code="tablespace_in_use", stage="check")
            mapping[str(space["oid"])] = (space["location"], new)
        unknown = sorted(set(wanted) - known)
        if unknown:
            names = ", ".join(s["name"] for s in manifest["tablespaces"]) or "none"
            raise TargetRefused("tablespace_map names %s, which the backup does not have "
                                "(its tablespaces: %s)" % (", ".join(unknown), names),
                                code="tablespace_unknown", stage="check")
        return mapping

    def _target_tablespaces(self):
        """Real locations the target's own pg_tblspc links point to."""
        tblspc = os.path.join(self.target, "pg_tblspc")
        names = os.listdir(tblspc) if os.path.isdir(tblspc) else ()
        return set(os.path.realpath(os.path.join(tblspc, name)) for name in names
                   if os.path.islink(os.path.join(tblspc, name)))

    # -- run ----------------------------------------------------------------------------
    def _marker(self):
        try:
            with open(os.path.join(self.target, MARKER)) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError):
            return {}

    def already_restored(self, manifest):
        """True when the target holds this very backup from an earlier run."""
        marker = self._marker()
        if not marker:
            return False
        same = (marker.get("cluster"), marker.get("backup_id"), marker.get("point"),
                marker.get("mode", "copy")) == (
            manifest["cluster"], manifest["id"], self.point.describe(),
            self._mode()) and not self.settings.force
        if same and self.settings.delta:
            # the marker stays when the copy is started and written to: a delta trusts it
            # only while pg_control is the one it wrote and no file it recorded changed, or
            # while a server runs the copy (which nothing may write into anyway)
            return is_running(self.target) or self._control_as_restored() and not (
                filestamps.changed_since(self.target, RESTORE_STAMPS))
        return same

    def _mode(self):
        """What the restored directory is for: its settings differ (finish)."""
        s = self.settings
        return "standby" if s.standby else "bootstrap" if s.bootstrap else "copy"

    def plan(self):
        """The recovery plan of this restore (the backup, the point, the WAL), from the
        repository: the target is neither checked nor read (only, when a snapshot backup
        could serve, which filesystem would hold it)."""
        self.storage.check()
        s = self.settings
        # backup_id with a point: that backup is the base the point is reached from
        # (docs/restore-points.md); with point latest (the default) or immediate, the
        # backup's own consistency point
        base = s.backup_id if s.backup_id not in (None, "", "latest") else None
        self.point = parse_point(s.point)
        planner = Planner(self.storage, self.catalog, s.cluster, s.target_inclusive,
                          s.target_action, s.target_timeline)
        if s.standby:
            self.point = self._standby_point(base)
            base = planner.standby_base()
        if s.bootstrap:
            self._check_bootstrap()
        if base and self.point.kind in ("latest", "immediate"):
            self.point, base = parse_point("backup:" + base), None
        recovery = planner.plan(self.point, base)
        if base is None and s.restore_from == "auto" and not (s.standby or s.bootstrap
                                                              or s.delta):
            recovery = self._fastest(planner, recovery)
        recovery.predicted_rto = self._predicted_rto(recovery.backup)
        return recovery

    def _fastest(self, planner, recovery):
        """The snapshot backup that ends at or after the backup the planner chose, when
        one serves the point from this host on the same timeline: a clone downloads
        nothing and replays no more WAL, so it is the faster path whatever the size.
        Only for points whose place is known before replay (latest, a time, an LSN): a
        restore point name or an xid may lie before a newer backup's end. Else the plan
        as it is, with a note on each snapshot backup passed over."""
        if self.point.kind not in ("latest", "time", "lsn"):
            return recovery
        chosen = recovery.backup
        for snap in reversed(self.catalog.snapshots):
            if parse_lsn(snap["stop_lsn"]) < parse_lsn(chosen["stop_lsn"]) or \
                    snap["system_identifier"] != chosen["system_identifier"]:
                continue
            unusable = self._snapshot_unusable(snap)
            if unusable:
                recovery.notes.append("snapshot backup %s not used: %s" % (snap["id"],
                                                                           unusable))
                continue
            try:
                faster = planner.plan(self.point, snap["id"])
            except PgdrError as exc:
                if exc.code != "point_unreachable":  # ends after the point: not a path
                    recovery.notes.append("snapshot backup %s not used: %s"
                                          % (snap["id"], exc.msg))
                continue
            if faster.timeline != recovery.timeline:  # another branch of the history
                recovery.notes.append("snapshot backup %s not used: it leads to timeline %s, "
                                      "the plan to %s" % (snap["id"], faster.timeline,
                                                          recovery.timeline))
                continue
            faster.notes = recovery.notes + faster.notes
            faster.why = ("snapshot backup %s ends at LSN %s, at or after backup %s (LSN %s): "
                          "its clone downloads nothing and replays no more WAL (set "
                          "restore_from=repository to restore from the repository)"
                          % (snap["id"], snap["stop_lsn"], chosen["id"], chosen["stop_lsn"]))
            return faster
        return recovery

    def _snapshot_unusable(self, snap):
        """Why this restore cannot clone a snapshot backup (None: it can): the same checks
        the restore makes before it writes, so that plan and run agree."""
        try:
            self._clone_plan(snap, self._clone_destinations(snap))
        except PgdrError as exc:
            return exc.msg
        return None

    def _clone_destinations(self, manifest, mapping=None):
        """{oid or None (the data directory): destination} of a snapshot backup's volumes:
        the target, and each tablespace's mapped location (tablespace_map, as
        map_tablespaces reads it)."""
        spaces = dict((str(t["oid"]), t) for t in manifest["tablespaces"])
        found = {None: os.path.abspath(self.target)}
        for volume in manifest["snapshot"]["volumes"]:
            oid = str(volume["oid"])
            if volume["role"] == "tablespace":
                found[oid] = (mapping[oid][1] if mapping is not None
                              else self._mapped_location(spaces[oid]))
        return found

    def _mapped_location(self, space):
        """Where a tablespace of the backup is restored: tablespace_map's entry for its
        location, name or oid, else where it was."""
        wanted = self.settings.tablespace_map or {}
        return os.path.abspath(next((wanted[k] for k in _map_keys(space) if k in wanted),
                                    space["location"]))

    def _predicted_rto(self, manifest):
        """{seconds, basis}: the plan's restore and recovery, at the last drill's pace."""
        try:
            drill = last_drill(self.storage, self.settings.cluster)
        except (ValueError, AttributeError, PgdrError) as exc:  # never a reason to refuse
            return {"seconds": None, "basis": "the last drill report cannot be read (%s)"
                                              % (getattr(exc, "msg", None) or exc)}
        record = manifest.get("snapshot") or {}
        if record and record.get("provider") != "btrfs":
            return {"seconds": None, "basis": "a clone by the %s provider: its time is not "
                                              "known" % record.get("provider")}
        seconds, basis = predict_rto(drill, manifest.get("size"), cloned=bool(record))
        return {"seconds": seconds, "basis": basis}

    def run(self, dry_run=False):
        recovery = self.plan()
        manifest = recovery.backup
        if self.already_restored(manifest):
            needed = catalog.chain_objects(self.catalog.file_list(manifest))
            return {"changed": False, "backup": summarize(manifest), "target": self.target,
                    "plan": recovery.as_dict(), "archived_objects": 0,
                    "fetch_bytes": sum(o["stored_size"] for o in needed),
                    "tablespaces": self._marker().get("tablespaces", {}),
                    "msg": "target %s already holds backup %s restored to point %s"
                           % (self.target, manifest["id"], self.point.describe())}
        listing = self.catalog.file_list(manifest)
        if catalog.is_snapshot(manifest["id"]) and self.settings.delta:
            raise TargetRefused("backup %s is a snapshot backup: it is restored by cloning "
                                "its snapshots, never by delta (expected delta off)"
                                % manifest["id"], code="snapshot_target_invalid",
                                stage="check", option="delta")
        self.check_target()
        mapping = self.map_tablespaces(manifest)
        self.carried = self._carried_settings(manifest)
        self.recovery = recovery
        needed = catalog.chain_objects(listing)
        frozen = self._archived(manifest, needed, recovery)
        files = sum(1 for item in listing["files"] if item["kind"] == "file")
        if catalog.is_snapshot(manifest["id"]):  # its files are in the snapshots
            files = manifest["file_count"]
            self.clones = self._snapshot_clones(manifest, mapping)
        plan = {"backup": summarize(manifest), "target": self.target,
                "tablespaces": dict((oid, pair[1]) for oid, pair in mapping.items()),
                "fetch_bytes": sum(o["stored_size"] for o in needed), "files": files,
                "archived_objects": len(frozen), "plan": recovery.as_dict()}
        what = "backup %s (%.1f MiB, %d files) into %s, point %s" % (
            manifest["id"], manifest["size"] / MIB, files, self.target, self.point.describe())
        verb = "bring %s up to date with" % self.target if self.delta else "restore"
        if dry_run:
            return dict(plan, changed=True, dry_run=True, delta=None,
                        msg="would %s %s" % (verb, what))
        if frozen:
            self._thaw(frozen)
        self.progress.event("%s %s" % ("delta restore of" if self.delta else "restoring", what))
        try:
            if self.clones is not None:
                self._clone_snapshots(mapping)
            else:
                if self.delta:
                    self.prune(listing, mapping)
                self.prepare(listing["files"], mapping)
            self.fetch(manifest, listing)
            self._record_stamps(listing)
            self.finish(manifest, mapping)
        except BaseException as exc:
            self.progress.event(
                "delta restore failed: %s is left without pg_control (it does not start); "
                "run it again to finish" % self.target if self.delta else
                "restore failed: removing what was written to %s" % self.target)
            if self.delta and self.delta.writing:  # finish may have written pg_control;
                self._drop_control()  # never before prune found the target stopped
            try:
                self.undo()
            except OSError as undo_error:  # report the first failure, and this one
                self.progress.event("could not empty %s again: %s" % (self.target,
                                                                      undo_error))
            if isinstance(exc, OSError):
                raise self._write_error(exc, manifest)
            raise
        if self.delta:
            counts = self.delta.as_dict()
            self.progress.event("delta restore kept %.1f MiB, wrote %.1f MiB, removed %d "
                                "entries" % (counts["kept_bytes"] / MIB,
                                             counts["written_bytes"] / MIB, counts["removed"]))
            return dict(plan, changed=True, delta=counts, fetch_bytes=counts["fetched_bytes"],
                        msg="brought %s up to date: %s" % (self.target, what))
        self.progress.event("restored " + what)
        return dict(plan, changed=True, delta=None, msg="restored " + what)

    # -- snapshot backups ---------------------------------------------------------------
    def _snapshot_clones(self, manifest, mapping):
        """The clones of a snapshot backup, checked before anything is written."""
        return self._clone_plan(manifest, self._clone_destinations(manifest, mapping))

    def _clone_plan(self, manifest, destinations):
        """[(provider, volume, destination, hidden clone)], or TargetRefused /
        NotFound: the snapshots are there on this host, and each destination is a plain
        directory, empty (with force: the target, or one of its own tablespaces holding
        nothing but this major's directory) or absent, with no clone left beside it by an
        earlier run, on the snapshot's filesystem."""
        source = snapshots.provider(self.settings, manifest["snapshot"]["provider"])
        if not source.restores:  # refused before asking the provider
            snapshots.refuse_unsettled(manifest)
            source.check_clone(manifest["snapshot"]["volumes"][0], None)
        snapshots.require(self.settings, manifest)
        owned = self._target_tablespaces() if self.settings.force else set()
        version_dir = "PG_%d_" % (manifest["pg_version"] // 10000)
        clones = []
        for volume in manifest["snapshot"]["volumes"]:
            pgdata = volume["role"] == "pgdata"
            destination = destinations[None if pgdata else str(volume["oid"])]
            hidden = os.path.join(os.path.dirname(destination),
                                  ".%s.pgdr-clone" % os.path.basename(destination))
            refuse = None
            if os.path.lexists(hidden):
                refuse = ("%s is left by an earlier restore that was stopped: pgdr never "
                          "removes it; look at it, then remove it (a btrfs clone: btrfs "
                          "subvolume delete)" % hidden)
            elif os.path.islink(destination):
                refuse = "%s is a symbolic link: a clone replaces a directory" % destination
            elif os.path.isdir(destination) and snapshots.is_mount_point(destination):
                refuse = "%s is a mount point: a clone cannot replace it" % destination
            elif not pgdata and os.path.isdir(destination):
                kept = os.listdir(destination)
                if os.path.realpath(destination) in owned:
                    kept = [n for n in kept if not n.startswith(version_dir)]
                if kept:
                    refuse = ("tablespace location %s holds %s: a snapshot restore replaces "
                              "the whole directory with a clone; map the tablespace to an "
                              "empty or new directory" % (destination, ", ".join(kept[:3])))
            if refuse:
                raise TargetRefused(refuse, code="snapshot_target_invalid", stage="check")
            source.check_clone(volume, destination)
            clones.append((source, volume, destination, hidden))
        return clones

    def _clone_snapshots(self, mapping):
        """Clone each snapshot beside its destination under a hidden name, make the clone
        what a restore writes (pg_control held back for finish first, then no link into
        the source and no runtime state), then rename it into place; tablespaces are
        linked at once."""
        self._still_stopped(mapping)
        self._target_existed = os.path.isdir(self.target)
        if self._target_existed:
            self._clear(self.target)
        for location in self.replaced:
            remove_version_dirs(location, self.version_dir)
        for source, volume, destination, hidden in self.clones:
            self.progress.event("cloning snapshot %s into %s" % (volume["snapshot"]["id"],
                                                                 destination))
            parent = os.path.dirname(destination)
            if not os.path.isdir(parent):
                self._makedirs(parent)
            self._placed.append((hidden, False))  # a clone that fails halfway goes too
            source.clone(volume, hidden)
            if snapshots.is_mount_point(hidden):
                raise TargetRefused("the clone of snapshot %s at %s is a mount point: pgdr "
                                    "renames a clone into place, which a mount cannot be; "
                                    "make the clone command create a directory"
                                    % (volume["snapshot"]["id"], hidden),
                                    code="snapshot_target_invalid", stage="restore")
            if volume["role"] == "pgdata":
                self._hold_control(hidden)
            snapshots.scrub_clone(hidden, pgdata=volume["role"] == "pgdata")
            existed = os.path.isdir(destination)
            if existed:
                os.rmdir(destination)  # empty (checked): the clone takes its place
            os.rename(hidden, destination)
            self._placed[-1] = (destination, existed)
            self._chown(destination)
            if volume["role"] == "tablespace":
                link = os.path.join(self.target, "pg_tblspc", str(volume["oid"]))
                os.symlink(destination, link)
                self._chown(link)

    def _hold_control(self, clone):
        """pg_control out of a fresh clone before anything else: killed from here on,
        the clone never starts (and its pg_tblspc links into the source go next)."""
        control = os.path.join(clone, CONTROL_FILE)
        with open(control, "rb") as handle:
            self.control = (handle.read(), 0o600)
        os.unlink(control)  # finish writes it last
        for name in os.listdir(os.path.join(clone, "pg_tblspc")):
            path = os.path.join(clone, "pg_tblspc", name)
            if os.path.islink(path):
                os.unlink(path)

    def _undo_clones(self):
        """Remove what the clones put in place (last first); a destination that was an
        empty directory before is one again."""
        for path, existed in reversed(self._placed):
            if os.path.isdir(path) and snapshots.is_mount_point(path):
                self.progress.event("%s is a mount point the clone command made: left as it "
                                    "is; unmount and remove it" % path)
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                self._clear(path)
                os.rmdir(path)  # an empty subvolume goes with rmdir (Linux 4.18+)
            elif os.path.lexists(path):  # what a failed clone command left: not a directory
                os.unlink(path)
            if existed and not os.path.exists(path):
                os.mkdir(path, 0o700)
                self._chown(path)
        if self._target_existed and not os.path.exists(self.target):
            self._makedirs(self.target)

    def _standby_point(self, base):
        """A standby starts from the newest backup on the way to the latest timeline and
        follows its primary: the plan only proves the backup reaches consistency from the
        archive (point immediate); the rest comes by streaming and restore_command."""
        if base or self.point.kind != "latest":
            raise ConfigError("standby restores the newest backup and follows the primary: "
                              "point=%s and backup_id=%s cannot be combined with it (expected "
                              "point latest, no backup_id)" % (self.settings.point, base),
                              code="config_invalid", stage="plan", option="standby")
        return parse_point("immediate")

    def _check_bootstrap(self):
        """The first member of a new Patroni cluster: Patroni waits for the server to
        leave recovery, so the point must end in a promotion; a standby is another mode."""
        s = self.settings
        if s.standby:
            raise ConfigError("bootstrap and standby cannot be combined: bootstrap makes "
                              "the first member of a new cluster, standby a member of a "
                              "running one", code="config_invalid", stage="plan",
                              option="bootstrap")
        if s.target_action != "promote":
            raise ConfigError("bootstrap needs target_action=promote, not %s: the cluster "
                              "manager waits for the server to leave recovery"
                              % s.target_action, code="config_invalid", stage="plan",
                              option="target_action")

    def _write_error(self, exc, manifest):
        """A clear TargetRefused for an OSError while writing: a full filesystem is named
        as such (never as damaged data), anything else as an unwritable target."""
        where = getattr(exc, "filename", None) or self.target
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return TargetRefused(
                "no space left on device (ENOSPC) while writing %s: the target %s needs "
                "%.1f MiB (data and WAL of backup %s) and its filesystem is full; %s. Free "
                "space there or choose a larger filesystem"
                % (where, self.target, (manifest["size"] + manifest.get("wal_size", 0)) / MIB,
                   manifest["id"], self._left()), code="target_full", stage="restore",
                errno="ENOSPC")
        return TargetRefused("cannot write the restore into %s: %s (does this user own "
                             "it?); %s" % (self.target, exc, self._left()),
                             code="target_unwritable", stage="restore")

    def _left(self):
        """What a failed restore left in the target."""
        if self.delta:
            return "it was left without pg_control (it does not start): run again to finish"
        return "it was emptied again"

    def _archived(self, manifest, needed, recovery):
        """{key: storage class} of the objects this restore reads that must be thawed
        first: the chain's objects and the archived WAL the recovery will fetch."""
        wanted = set(o["key"] for o in needed)
        wanted.update(info.key for name, info in self._wal_objects(recovery))
        frozen = {}
        for backup_id in manifest.get("chain") or [manifest["id"]]:
            frozen.update(self.storage.archived_objects(
                catalog.backup_prefix(manifest["cluster"], backup_id)))
        if recovery.wal_needed:
            frozen.update(self.storage.archived_objects("%s/wal/" % manifest["cluster"]))
        return dict((k, v) for k, v in frozen.items() if k in wanted)

    def _wal_objects(self, recovery):
        if not recovery.wal_needed:
            return []
        from ..archive import ArchiveIndex
        segments = ArchiveIndex(self.storage, self.settings.cluster).segments()
        return [(name, segments[int(name[:8], 16)][name]) for name, dummy in recovery.wal_needed]

    def _thaw(self, frozen):
        """Refuse before anything is written, or (thaw) request and wait."""
        classes = sorted(set(frozen.values()))
        example = sorted(frozen)[0]
        if not self.settings.thaw:
            raise TargetRefused(
                "%d object(s) this restore needs are in archive storage (%s; for example %s) "
                "and must be thawed before they can be read: set thaw (and thaw_tier) to "
                "request their retrieval and wait, or thaw them yourself" % (
                    len(frozen), ", ".join(classes), example),
                code="objects_archived", stage="plan", objects=len(frozen))
        s = self.settings
        deadline = time.time() + s.thaw_timeout
        waiting = sorted(frozen)
        self.progress.event("requesting the thaw of %d object(s) in %s (tier %s)"
                            % (len(waiting), ", ".join(classes), s.thaw_tier))
        pause = 1.0  # thaws take seconds (moto, expedited) to hours: poll with backoff
        while waiting:
            waiting = [k for k in waiting if not self.storage.request_thaw(
                k, s.thaw_days, s.thaw_tier)]
            if not waiting:
                break
            if time.time() > deadline:
                raise TargetRefused("%d object(s) still not thawed after thaw_timeout=%d s "
                                    "(for example %s); nothing was written" % (
                                        len(waiting), s.thaw_timeout, waiting[0]),
                                    code="thaw_timeout", stage="plan")
            self.progress.event("waiting for %d object(s) to thaw" % len(waiting))
            time.sleep(pause)
            pause = min(300.0, pause * 2)
        self.progress.event("all archived objects are readable")

    def prepare(self, files, mapping):
        """Empty target, directories, tablespace links (recorded for undo). Everything
        created here is given to the owner (as root); files that come from bundles are
        created, and given away, when they are written."""
        target = self.target
        self._still_stopped(mapping)
        if not self.delta:  # a delta was pruned: what stays is compared, not emptied
            if os.path.isdir(target):
                self._clear(target)
                for location in self.replaced:
                    remove_version_dirs(location, self.version_dir)
            else:
                self._makedirs(target)
            self.created.append(target)
        os.chmod(target, 0o700)
        self._chown(target)
        for item in files:
            path = os.path.join(target, item["path"])
            if item["kind"] == "dir":
                if not os.path.isdir(path):
                    os.mkdir(path, item["mode"] or 0o700)
                elif self.delta:
                    os.chmod(path, item["mode"] or 0o700)
            elif item["kind"] == "tablespace":
                location = mapping[item["path"].split("/")[1]][1]
                if not os.path.isdir(location):
                    self._makedirs(location)
                if self.delta and os.path.islink(path):
                    continue  # kept by prune: it points to this location
                self.created.append(location)
                os.symlink(location, path)
            elif item.get("pieces"):
                # the base layer's size; deltas follow. A delta keeps the bytes there, and
                # its ctime when nothing changes (filestamps.py)
                size = sum(p["size"] for p in item["pieces"])
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | (0 if self.delta else os.O_TRUNC),
                             0o600)
                try:
                    if os.fstat(fd).st_size != size:
                        os.ftruncate(fd, size)
                finally:
                    os.close(fd)
                if self.delta:
                    self._keep(item["path"], item["mode"])
                    continue
                os.chmod(path, item["mode"])
            else:
                continue  # a bundled file: created by _write_file
            self._chown(path)

    def _still_stopped(self, mapping):
        """refuse_live again, right before the first write: a server may have started
        since the check."""
        refuse_live(self.target)
        for dummy, location in mapping.values():
            refuse_live(location, what="tablespace location")

    def prune(self, listing, mapping):
        """Delta: pg_control and the marker first (from here the directory does not start
        until finish), then every file, directory or link that a restore into an empty
        directory would not hold: in the target and in the PG_<major>_ directories of
        the tablespace locations it keeps."""
        self._still_stopped(mapping)
        # read before anything here changes: from now on only this run writes the files.
        # Only while pg_control is the one the restore wrote: no server ran the copy since
        # (a server's writes and a crash could leave new pages under an old ctime)
        if self._control_as_restored():
            self.trusted = filestamps.trusted(self.target, RESTORE_STAMPS)
        self.delta.writing = True  # from here a failure leaves it without pg_control
        self._drop_control()
        wanted = dict((item["path"], item["kind"]) for item in listing["files"])
        wanted.update(("pg_wal/" + wal["name"], "file") for wal in listing["wal"])
        links = dict(("pg_tblspc/" + oid, pair[1]) for oid, pair in mapping.items())
        # the new links first: a location is never left unlinked while it holds data (a
        # rerun after a kill finds it the target's own again)
        self._link_tablespaces(links)
        for rel, location in sorted(links.items()):
            for name in os.listdir(location):
                if name.startswith(self.version_dir):  # another major's data stays
                    self._prune_tree(location, rel, wanted, links, only=name)
        self._prune_tree(self.target, "", wanted, links)

    def _control_as_restored(self):
        """True when the target's pg_control is the one a restore wrote (its marker
        records the digest)."""
        recorded = self._marker().get("control_sha256")
        return bool(recorded) and recorded == _control_digest(self.target)

    def _drop_control(self):
        """pg_control and the marker out of a delta's target: it does not start, and is not
        offered as restored, until finish writes them again."""
        for rel in (MARKER, CONTROL_FILE):
            try:
                os.unlink(os.path.join(self.target, rel))
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise

    def _link_tablespaces(self, links):
        """Delta: pg_tblspc/<oid> -> the mapped location for every tablespace of the backup
        (the location created when missing), replacing whatever that path held."""
        tblspc = os.path.join(self.target, "pg_tblspc")
        if not os.path.isdir(tblspc) or os.path.islink(tblspc):
            if os.path.lexists(tblspc):
                os.unlink(tblspc)
            os.mkdir(tblspc, 0o700)
            self._chown(tblspc)
        for rel, location in sorted(links.items()):
            path = os.path.join(self.target, rel)
            if not os.path.isdir(location):
                self._makedirs(location)
            if os.path.islink(path) and _same_place(path, location):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
            os.symlink(location, path)
            self._chown(path)

    def _prune_tree(self, root, rel_root, wanted, links, only=None):
        """Remove what wanted does not list under root (rel_root its path in the
        backup); links are never followed."""
        def fail(exc):
            raise exc
        for folder, dirs, names in os.walk(root, onerror=fail):
            rel_folder = os.path.relpath(folder, root)
            if only and folder == root:  # in a tablespace location: one PG_ directory
                dirs[:] = [name for name in dirs if name == only]
                names = [name for name in names if name == only]
            for name in sorted(dirs + names):
                path = os.path.join(folder, name)
                rel = os.path.normpath(os.path.join(rel_root, rel_folder, name))
                kind = wanted.get(rel)
                if os.path.islink(path):
                    keep = kind == "tablespace" and rel in links and _same_place(path, links[rel])
                elif os.path.isdir(path):
                    keep = kind == "dir"
                else:
                    keep = kind == "file"
                if keep:
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                if name in dirs:
                    dirs.remove(name)
                self.delta.removed += 1

    def _makedirs(self, path):
        """os.makedirs, each directory it creates given to the owner (as root)."""
        missing = []
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for folder in reversed(missing):
            os.mkdir(folder, 0o700)
            self._chown(folder)

    def fetch(self, manifest, listing):
        """Base data first (bundles, pieces, WAL: all in parallel), then the delta layers
        of each changed relation file, in backup order (parallel across files)."""
        codec = CodecsByKey()
        by_bundle = {}
        for item in listing["files"]:
            if "bundle" in item:
                by_bundle.setdefault(item["bundle"], []).append(item)
        tasks = [("bundle", b, by_bundle.get(b["key"], [])) for b in listing["bundles"]]
        tasks += [("piece", p, item) for item in listing["files"] for p in item.get("pieces", ())]
        tasks += [("wal", w, None) for w in listing["wal"]]
        tasks.sort(key=lambda t: -t[1]["size"])
        layered = [item for item in listing["files"] if item.get("deltas")]
        self.touched = set(p["key"] for item in layered for p in touched_pieces(item))
        # the total is the sum of exactly what _fetch_one and _apply_part advance
        self.progress.begin("restore", sum(t[1]["size"] for t in tasks) + sum(
            part["size"] for item in layered for layer in item["deltas"]
            for part in layer["parts"]))
        self._fetched[1] = len(tasks)
        run_all(lambda task: self._fetch_one(codec, *task), tasks, self.settings.workers)
        control = os.path.join(self.target, CONTROL_FILE)
        if self.control is None and os.path.exists(control):
            # stored in pieces (a tiny bundle_limit): held back here all the same
            with open(control, "rb") as handle:
                self.control = (handle.read(), 0o600)
            os.unlink(control)
        for depth in range(max([len(item["deltas"]) for item in layered] or [0])):
            # layer by layer: cut each file to that layer's size, then write the layer's
            # parts of every file in parallel (parts of one layer never overlap)
            parts = []
            for item in layered:
                if depth < len(item["deltas"]):
                    layer = item["deltas"][depth]
                    path = os.path.join(self.target, item["path"])
                    os.truncate(path, layer["file_size"])
                    parts.extend((path, part) for part in layer["parts"])
            run_all(lambda job: self._apply_part(codec, *job), parts, self.settings.workers)
        self.progress.end()

    def _record_stamps(self, listing):
        """The digests of what this restore put in place, by file, with the files' stamps
        (filestamps.py): a later delta trusts them while a file stays unchanged. Left out:
        what finish writes after this (pg_control, the settings it appends)."""
        ranges = {}
        for item in listing["files"]:
            if item["kind"] != "file" or item["path"] in (CONTROL_FILE, AUTO_CONF):
                continue
            if item.get("pieces"):
                ranges[item["path"]] = dict(
                    (filestamps.range_key(p["offset"], p["size"]), p["sha256"])
                    for p in item["pieces"] if p["key"] not in self.touched)
            elif item.get("sha256"):
                ranges[item["path"]] = {filestamps.range_key(0, item["size"]): item["sha256"]}
        for wal in listing["wal"]:
            ranges["pg_wal/" + wal["name"]] = {
                filestamps.range_key(0, wal["size"]): wal["sha256"]}
        os.sync()  # the bytes on disk before a record vouches for them (a crash in between)
        filestamps.record(self.target, RESTORE_STAMPS, ranges, self.owner)

    def _apply_part(self, codec, path, part):
        """Write one delta part's changed pages over the older layers."""
        raw = codec.decompress(self._download(part), part["size"], part["key"])
        _verify(raw, part["sha256"], part["key"])
        # recorded by the backup: the last run may end in a partial page (a file being
        # extended while it was read), so size / pages would not give it
        block_size = part["block_size"]
        fd = os.open(path, os.O_WRONLY)
        try:
            position = 0
            for first, count in part["blocks"]:
                length = count * block_size  # a run of consecutive pages: one write
                os.pwrite(fd, raw[position:position + length], first * block_size)
                position += length
        finally:
            os.close(fd)
        self._written(part["size"], part)
        self.progress.advance(part["size"])

    def _fetch_one(self, codec, kind, stored, extra):
        if kind == "piece":
            self._fetch_piece(codec, stored, extra)
        elif kind == "bundle":
            self._fetch_bundle(codec, stored, extra)
        else:
            self._fetch_wal(codec, stored)
        self.progress.advance(stored["size"])
        with self._fetched[2]:
            self._fetched[0] += 1
            halfway = self._fetched[0] == max(1, self._fetched[1] // 2)
        if halfway:
            faultpoint.reached("restore.fetch")  # half the objects written

    def _fetch_piece(self, codec, stored, item):
        path = os.path.join(self.target, item["path"])
        if self.delta and stored["key"] not in self.touched and self._holds(
                item["path"], stored["offset"], stored["size"], stored["sha256"]):
            self.delta.add(kept=stored["size"])
            return
        self._restore_piece(codec, stored, path)
        self._written(stored["size"], stored)

    def _fetch_bundle(self, codec, stored, members):
        same = self._unchanged(members) if self.delta else set()
        if members and len(same) == len(members):
            return  # every file in it is already there: not even downloaded
        raw = codec.decompress(self._download(stored), stored["size"], stored["key"])
        _verify(raw, stored["sha256"], stored["key"])
        for item in members:
            if item["path"] in same:
                continue
            data = raw[item["offset"]:item["offset"] + item["size"]]
            _verify(data, item["sha256"], item["path"])
            if item["path"] == CONTROL_FILE:
                self.control = (data, item["mode"])  # written last, by finish
            else:
                self._write_file(item["path"], data, item["mode"])
        self._written(sum(i["size"] for i in members if i["path"] not in same), stored)

    def _fetch_wal(self, codec, stored):
        rel = "pg_wal/" + stored["name"]
        if self.delta and self._holds(rel, 0, stored["size"], stored["sha256"], whole=True):
            self._keep(rel, 0o600)
            self.delta.add(kept=stored["size"])
            return
        raw = codec.decompress(self._download(stored), stored["size"], stored["key"])
        _verify(raw, stored["sha256"], stored["key"])
        self._write_file(rel, raw, 0o600)
        self._written(stored["size"], stored)

    def _unchanged(self, members):
        """Delta: the paths of a bundle's files that already hold their recorded bytes
        (pg_control never: it was removed, and is written last)."""
        same = set()
        for item in members:
            if item["path"] != CONTROL_FILE and self._holds(
                    item["path"], 0, item["size"], item["sha256"], whole=True):
                self._keep(item["path"], item["mode"])
                same.add(item["path"])
                self.delta.add(kept=item["size"])
        return same

    def _holds(self, rel, offset, size, sha256, whole=False):
        """Delta: whether the target's file rel holds those bytes (whole: and nothing
        else). A file unchanged since a restore recorded it answers from the record (the
        record knows ranges, so a whole file's size is checked here); any other is read
        and hashed."""
        known = filestamps.vouched(self.trusted, self.target, rel, offset, size)
        path = os.path.join(self.target, rel)
        if known is not None and whole:
            try:  # the record knows the range, not that nothing follows it
                known = known if os.lstat(path).st_size == size else None
            except OSError:
                return False
        if known is not None:
            return known == sha256
        try:
            info = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISREG(info.st_mode) or info.st_size < offset + size or (
                whole and info.st_size != size):
            return False
        self.delta.add(read=size)
        return same_bytes(path, offset, size, sha256)

    def _keep(self, rel, mode):
        """A kept file's mode and owner, changed only when they differ: a change would
        give it a new ctime, and the next delta would have to read it again."""
        path = os.path.join(self.target, rel)
        info = os.lstat(path)
        if info.st_mode & 0o7777 != mode:
            os.chmod(path, mode)
        if self.owner and (info.st_uid, info.st_gid) != tuple(self.owner):
            os.lchown(path, *self.owner)

    def _written(self, size, stored):
        if self.delta:
            self.delta.add(written=size, fetched=stored["stored_size"])

    def _download(self, stored):
        # verified against the manifest's digest; a cut read is retried by the storage
        return self.storage.get(stored["key"], sha256=stored["stored_sha256"])

    def _restore_piece(self, codec, stored, path):
        """Decompress straight into the file at the piece's offset, hashing as it goes."""
        packed = self._download(stored)
        digest = hashlib.sha256()
        position = [stored["offset"]]
        failed = []  # an OSError of the write, kept: the codec would call it damage
        fd = os.open(path, os.O_WRONLY)
        try:
            def write(chunk):
                digest.update(chunk)
                try:
                    os.pwrite(fd, chunk, position[0])
                except OSError as exc:
                    exc.filename = exc.filename or path
                    failed.append(exc)
                    raise
                position[0] += len(chunk)
            try:
                codec.decompress_into(packed, write, stored["key"])
            except IntegrityError:
                if failed:
                    raise failed[0]
                raise
        finally:
            os.close(fd)
        if position[0] - stored["offset"] != stored["size"]:
            raise IntegrityError("piece %s decompressed to %d bytes, expected %d"
                                 % (stored["key"], position[0] - stored["offset"],
                                    stored["size"]), code="size_mismatch", stage="restore")
        if digest.hexdigest() != stored["sha256"]:
            raise IntegrityError("restored data of %s does not match its SHA-256"
                                 % stored["key"], code="checksum_mismatch", stage="restore")

    def _write_file(self, rel, data, mode):
        path = os.path.join(self.target, rel)
        try:
            with open(path, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            exc.filename = exc.filename or path
            raise
        os.chmod(path, mode)
        self._chown(path)

    def finish(self, manifest, mapping):
        """backup_label, tablespace_map and settings: what pg_ctl start needs."""
        self._write_file("backup_label", manifest["backup_label"].encode("utf-8"), 0o600)
        if mapping:
            lines = "".join("%s %s\n" % (oid, pair[1]) for oid, pair in sorted(mapping.items()))
            self._write_file("tablespace_map", lines.encode("utf-8"), 0o600)
        extra = []
        if self.settings.standby:
            # a member of the running cluster: its archiving and settings stay the
            # cluster's (Patroni's configuration); only how to fetch WAL is added
            values = _user_settings(self.settings)
            values["restore_command"] = self._restore_command()
            self._write_file("standby.signal", b"", 0o600)
        elif self.settings.bootstrap:
            # the first member of a new cluster: archiving, the carried settings and the
            # rest belong to the cluster manager's configuration, which writes
            # postgresql.conf; a value here would override it for good
            values = _user_settings(self.settings)
            values.update(self._recovery_settings() or self._promotion_at_consistency())
        else:
            if not self.settings.keep_archiving:
                extra.append("# restored copy: never archive into the source's repository")
                extra.append("archive_mode = 'off'")
            values = self._copy_settings()
        for name, value in sorted(values.items()):
            extra.append("%s = '%s'" % (name, conf_quote(value)))
        self._write_missing_config(manifest)
        if extra:
            path = os.path.join(self.target, AUTO_CONF)
            with open(path, "a") as handle:
                handle.write("# added by pgdr restore of backup %s\n" % manifest["id"])
                handle.write("\n".join(extra) + "\n")
            if self.settings.standby:
                os.chmod(path, 0o600)  # primary_conninfo may hold a password, as -R writes it
            self._chown(path)
        marker = {"cluster": manifest["cluster"], "backup_id": manifest["id"],
                  "point": self.point.describe(), "mode": self._mode(),
                  "recovery": self.recovery.recovery,
                  "tablespaces": dict((oid, pair[1]) for oid, pair in mapping.items()),
                  "system_identifier": manifest["system_identifier"],
                  "wal_planned": planned_runs(self.recovery.wal_needed),
                  "wal_segment_size": int(manifest["settings"].get("wal_segment_size",
                                                                   16 * 1024 * 1024)),
                  "restored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.control is not None:
            marker["control_sha256"] = hashlib.sha256(self.control[0]).hexdigest()
        os.sync()  # everything else is on disk before pg_control makes it startable
        faultpoint.reached("restore.finish")
        if self.control is None:
            raise IntegrityError("backup %s has no %s: it cannot be restored"
                                 % (manifest["id"], CONTROL_FILE), code="control_missing",
                                 stage="restore")
        data, mode = self.control
        self._write_file(CONTROL_FILE, data, mode)
        self._write_file(MARKER, json.dumps(marker).encode("utf-8"), 0o600)
        os.sync()  # pg_control and the marker too, before anyone starts it

    def _copy_settings(self):
        """A restored copy's postgresql.auto.conf values: the carried settings, the
        user's and the recovery target."""
        values = dict(self.carried)
        values.update(_user_settings(self.settings))
        values.update(self._recovery_settings())
        return values

    def _promotion_at_consistency(self):
        """A bootstrap to a backup's own consistency point: recover to it and promote, so
        that the new cluster writes a timeline of its own; started as it is, it would
        write the source's next segments again, which the repository refuses to archive."""
        self._write_file("recovery.signal", b"", 0o600)
        return {"recovery_target": "immediate", "recovery_target_action": "promote",
                "recovery_target_timeline": "current",
                "restore_command": self._restore_command()}

    def _recovery_settings(self):
        """The point's recovery target and restore_command, with recovery.signal; none
        for a backup restored to its own consistency point without the archive."""
        if not self.recovery.recovery:
            return {}
        self._write_file("recovery.signal", b"", 0o600)
        return dict(self.recovery.recovery, restore_command=self._restore_command())

    def _write_missing_config(self, manifest):
        """A cluster that keeps its configuration outside the data directory (Debian's
        /etc/postgresql) has none in its backup: write a minimal one, so the copy starts
        (local connections only; the carried settings go to postgresql.auto.conf)."""
        files = {
            "postgresql.conf": "# written by pgdr restore: backup %s had no postgresql.conf "
                               "(the source keeps its configuration elsewhere)\n"
                               "listen_addresses = 'localhost'\n" % manifest["id"],
            "pg_hba.conf": "# written by pgdr restore: local connections of the same OS user\n"
                           "local all all peer\n",
            "pg_ident.conf": "# written by pgdr restore\n",
        }
        for name, text in sorted(files.items()):
            if not os.path.exists(os.path.join(self.target, name)):
                self._write_file(name, text.encode("utf-8"), 0o600)
                self.progress.event("backup has no %s: wrote a minimal one" % name)

    def _restore_command(self):
        """wal-fetch from this repository, through the same launcher and files."""
        s = self.settings
        if s.restore_command:
            return s.restore_command
        launcher = os.environ.get("PGDR_LAUNCHER") or "pgdr"
        parts = [launcher, "wal-fetch", "--config", s.config_file or DEFAULT_CONFIG_FILE]
        if s.credentials_file:
            parts += ["--credentials", s.credentials_file]
        parts += ["--cluster", s.cluster]
        for name in REPOSITORY_IDENTITY:  # the repository this restore read, whatever the
            value = getattr(s, name)      # config file says: never another system's WAL
            if value is not None:
                parts += [BY_NAME[name].flag, str(value).lower() if isinstance(value, bool)
                          else str(value)]
        parts += ["%f", "%p"]
        return " ".join(_shell_quote(p) for p in parts)

    def _carried_settings(self, manifest):
        """Settings that must be at least the source's or recovery aborts; a user value
        below the source's is refused before anything is written."""
        carried = {}
        wanted = _user_settings(self.settings)
        for name in CARRIED:
            source = manifest["settings"].get(name)
            if source is None:
                continue
            if name in wanted and int(wanted[name]) < int(source):
                raise TargetRefused("settings %s=%s is below the source's %s: recovery "
                                    "would abort" % (name, wanted[name], source),
                                    code="setting_too_low", stage="check")
            carried[name] = source
        return carried

    def undo(self):
        if self.clones is not None:
            self._undo_clones()
            return
        if not self.created or self.delta:
            return  # a delta keeps what it had (without pg_control): a rerun resumes
        self._clear(self.created[0])
        for location in self.created[1:]:
            remove_version_dirs(location, self.version_dir)

    @staticmethod
    def _clear(directory):
        """Empty directory. The marker and pg_control go first: a clear that is killed
        halfway through leaves neither a restore that looks complete nor a cluster
        that starts with files missing."""
        for rel in (MARKER, CONTROL_FILE):
            try:
                os.unlink(os.path.join(directory, rel))
            except OSError:
                pass  # absent (or global is not a directory): the walk below decides
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)

    @staticmethod
    def _owner_of(target, euid=None):
        """When run as root, every restored file, directory and link belongs to the
        owner of the target (when it exists) or else of its nearest existing parent
        directory: the PostgreSQL user, so that the cluster can start. A root-owned one
        is refused: PostgreSQL does not start as root, so the copy would be useless."""
        if (os.geteuid() if euid is None else euid) != 0:
            return None
        folder = os.path.abspath(target)
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        info = os.stat(folder)
        if info.st_uid == 0:
            raise TargetRefused(
                "target %s: %s is owned by root, and restored files are given to the owner "
                "of the target (or of its parent directory when the target does not exist); "
                "PostgreSQL refuses to run as root: create the target owned by the "
                "PostgreSQL OS user (e.g. install -d -o postgres -m 0700 %s) or run as that "
                "user" % (target, folder, target), code="target_owner_root", stage="check")
        return (info.st_uid, info.st_gid)

    def _chown(self, path):
        if self.owner:
            os.lchown(path, *self.owner)


# Non-secret settings that say which repository a restore read: restore_command passes
# them to wal-fetch, so that recovery reads the same one (secrets stay in the files).
REPOSITORY_IDENTITY = ("repo_type", "repo_path", "repo_prefix", "s3_bucket", "s3_endpoint",
                       "s3_region", "s3_addressing", "s3_profile", "s3_verify_tls",
                       "s3_ca_bundle")
CARRIED = ("max_connections", "max_prepared_transactions", "max_locks_per_transaction",
           "max_worker_processes", "max_wal_senders")


class DeltaCounts(object):
    """What a delta restore kept, wrote, fetched and removed (workers add in parallel)."""

    def __init__(self):
        self.kept_bytes = self.written_bytes = self.fetched_bytes = self.removed = 0
        self.read_bytes = 0  # read to compare: files a restore's record does not vouch for
        self.writing = False  # set once the target was found stopped and is being changed
        self._lock = threading.Lock()

    def add(self, kept=0, written=0, fetched=0, read=0):
        with self._lock:
            self.kept_bytes += kept
            self.written_bytes += written
            self.fetched_bytes += fetched
            self.read_bytes += read

    def as_dict(self):
        return {"kept_bytes": self.kept_bytes, "written_bytes": self.written_bytes,
                "fetched_bytes": self.fetched_bytes, "read_bytes": self.read_bytes,
                "removed": self.removed}


def touched_pieces(item):
    """The base pieces of a layered file that a delta layer writes into or cuts: their
    bytes on disk are the newest layer's, not the piece's, so a delta rewrites them
    from the piece before the layers are applied again."""
    touched = []
    for piece in item["pieces"]:
        start, end = piece["offset"], piece["offset"] + piece["size"]
        for layer in item["deltas"]:
            if layer["file_size"] < end or any(
                    first * part["block_size"] < end
                    and (first + count) * part["block_size"] > start
                    for part in layer["parts"] for first, count in part["blocks"]):
                touched.append(piece)
                break
    return touched


def _map_keys(space):
    """What tablespace_map may name a tablespace by: its location, name or oid."""
    return (space["location"], space["name"], str(space["oid"]))


def _is_data_directory(path):
    """PG_VERSION and global/ (a database's base/<oid> has a PG_VERSION too), or the
    marker of an earlier restore (a killed one may not have written global/ yet)."""
    return (os.path.isfile(os.path.join(path, "PG_VERSION"))
            and os.path.isdir(os.path.join(path, "global"))) or os.path.isfile(
                os.path.join(path, MARKER))


def _enclosing_data_directory(path):
    """The data directory that path lies inside, if any."""
    folder = os.path.dirname(os.path.realpath(path))
    while folder != os.path.dirname(folder):
        if _is_data_directory(folder):
            return folder
        folder = os.path.dirname(folder)
    return None


def _same_place(link, location):
    return os.path.realpath(link) == os.path.realpath(location)


def _control_digest(target):
    """SHA-256 of the target's pg_control, None when it has none."""
    try:
        return file_sha256(os.path.join(target, CONTROL_FILE))
    except (IOError, OSError):
        return None


def same_bytes(path, offset, size, sha256):
    """True when path holds exactly size bytes at offset whose SHA-256 is sha256."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        digest, done = hashlib.sha256(), 0
        while done < size:
            chunk = os.pread(fd, min(4 << 20, size - done), offset + done)
            if not chunk:
                return False
            digest.update(chunk)
            done += len(chunk)
        return digest.hexdigest() == sha256
    finally:
        os.close(fd)


def remove_version_dirs(location, prefix="PG_"):
    """A restored cluster's data in a tablespace location (its PG_<major>_<catalog>
    directories; with a prefix PG_<major>_, only that major's: another version's
    cluster may share the location), nothing else there."""
    for name in os.listdir(location) if os.path.isdir(location) else ():
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(location, name), ignore_errors=True)


def planned_runs(wal_needed):
    """[[timeline, first segment number, last]]: the archived segments the plan counted
    on, in runs. wal-fetch refuses to answer 'not in the archive' for one of them (it was
    there when the restore was planned: its absence now is damage, not the end of WAL)."""
    runs = []
    for name, segno in wal_needed:
        timeline = int(name[:8], 16)
        if runs and runs[-1][0] == timeline and runs[-1][2] == segno - 1:
            runs[-1][2] = segno
        else:
            runs.append([timeline, segno, segno])
    return runs


def _user_settings(settings):
    """The user's --settings with lower-case names: PostgreSQL's are case-insensitive, so
    MAX_CONNECTIONS=1 is max_connections, checked against the source's and written once."""
    return dict((name.lower(), value) for name, value in (settings.settings or {}).items())


def conf_quote(value):
    """A value between single quotes in postgresql.auto.conf, escaped as ALTER SYSTEM
    does: PostgreSQL's configuration parser reads a backslash as an escape, so both the
    quote and the backslash are doubled (a restore point name 'a\\b' stays 'a\\b')."""
    return str(value).replace("\\", "\\\\").replace("'", "''")


def _shell_quote(text):
    if text and all(c.isalnum() or c in "/-_.=%:," for c in text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _verify(data, sha256, name):
    if hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError("restored data of %s does not match its SHA-256" % name,
                             code="checksum_mismatch", stage="restore")


def run(settings, progress, dry_run=False):
    return RestoreRun(settings, progress).run(dry_run)


def plan(settings, progress):
    """What a restore with these settings would restore, planned from the repository
    without looking at the target (check mode of a standby rebuild, whose target runs)."""
    recovery = RestoreRun(settings, progress).plan()
    return {"backup": summarize(recovery.backup), "plan": recovery.as_dict()}
