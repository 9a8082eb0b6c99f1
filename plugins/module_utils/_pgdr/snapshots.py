# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot providers: the volumes of a cluster, snapshotted and cloned.

A snapshot backup (docs/snapshots.md) snapshots the data directory and every
tablespace inside one backup session; the repository holds its manifest and WAL,
the provider the data. Every provider has the same interface:

* ``check(volumes)``: refuse, before backup mode, what it cannot snapshot;
* ``create(cluster, backup_id, volumes)``: the snapshot records, one per volume;
* ``state(volume)``: complete or missing;
* ``check_clone(volume, destination)`` and ``clone(volume, destination)``;
* ``delete(volume)``.

``btrfs`` is the one provider so far: read-only snapshots of subvolumes into
``snapshot_dir`` on the same filesystem, writable snapshots of those as clones.
Its snapshots live on the cluster's own disks: they are not off-host.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import socket
import subprocess

from .errors import ConfigError, NotFound, RepositoryError, TargetRefused
from .postgres.datadir import EMPTY_DIRS, SKIPPED_FILES, TEMP_PREFIX

# A btrfs subvolume's root directory always has this inode number.
BTRFS_SUBVOLUME_ROOT_INODE = 256
MOUNTINFO = "/proc/self/mountinfo"
_SNAPSHOT_ID = re.compile(r"^\d{8}T\d{6}Z-snapshot$")
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes space, tab, newline, \ this way


def volumes(pgdata, tablespaces):
    """What a snapshot backup snapshots: the data directory, then every tablespace
    outside it, with the role a restore gives each."""
    found = [{"role": "pgdata", "oid": None, "path": os.path.realpath(pgdata)}]
    for space in sorted(tablespaces, key=lambda t: t["oid"]):
        # an in-place tablespace reports a location relative to the data directory;
        # one inside it is refused by the provider's check
        location = os.path.realpath(os.path.join(pgdata, space["location"]))
        found.append({"role": "tablespace", "oid": space["oid"], "path": location})
    return found


def volume_name(volume):
    return "pgdata" if volume["role"] == "pgdata" else "tablespace-%s" % volume["oid"]


def mounts(mountinfo=MOUNTINFO):
    """[(mount point, filesystem type, source)] of this process's mount table."""
    found = []
    with open(mountinfo) as handle:
        for line in handle:
            fields = line.split()
            dash = fields.index("-")
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            found.append((point, fields[dash + 1], fields[dash + 2]))
    return found


def filesystem(path, mountinfo=MOUNTINFO):
    """(mount point, type, source) of the mount that holds path."""
    real = os.path.realpath(path)
    best = ("/", "", "")
    for entry in mounts(mountinfo):
        if _inside(real, entry[0]) and len(entry[0]) >= len(best[0]):
            best = entry
    return best


def is_mount_point(path, mountinfo=MOUNTINFO):
    """True when something is mounted exactly at path (os.path.ismount takes every
    btrfs subvolume for one: each has its own device number)."""
    real = os.path.realpath(path)
    return any(point == real for point, dummy, dummy2 in mounts(mountinfo))


def _inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


class Btrfs(object):
    name = "btrfs"
    off_host = False

    def __init__(self, settings):
        self.snapshot_dir = settings.snapshot_dir

    # -- backup ------------------------------------------------------------------------
    def check(self, volumes_):
        """Refuse what cannot be snapshotted consistently, before backup mode."""
        if not self.snapshot_dir:
            raise ConfigError("type=snapshot with snapshot_provider=btrfs needs "
                              "snapshot_dir: a directory on the same btrfs filesystem as "
                              "the data directory, outside it", code="snapshot_config",
                              stage="check", option="snapshot_dir")
        where = os.path.realpath(self.snapshot_dir)
        if not os.path.isdir(where):
            raise ConfigError("snapshot_dir=%s is not a directory" % self.snapshot_dir,
                              code="snapshot_config", stage="check", option="snapshot_dir")
        for volume in volumes_[1:]:
            if _inside(volume["path"], volumes_[0]["path"]):
                raise ConfigError("%s %s lies inside the data directory %s (PostgreSQL warns "
                                  "against it): its snapshot could not be restored apart; "
                                  "move the tablespace outside the data directory"
                                  % (volume_name(volume), volume["path"], volumes_[0]["path"]),
                                  code="snapshot_unsupported", stage="check")
        home = filesystem(where)
        for volume in volumes_:
            path = volume["path"]
            what = "%s %s" % (volume_name(volume), path)
            mount = filesystem(path)
            if mount[1] != "btrfs":
                raise ConfigError("%s is on %s (%s), not btrfs: snapshot_provider=btrfs "
                                  "snapshots btrfs subvolumes only"
                                  % (what, mount[1] or "?", mount[0]),
                                  code="snapshot_unsupported", stage="check")
            if os.lstat(path).st_ino != BTRFS_SUBVOLUME_ROOT_INODE:
                raise ConfigError("%s is not the root of a btrfs subvolume: a snapshot would "
                                  "take the whole subvolume that holds it; make it one "
                                  "(btrfs subvolume create)" % what,
                                  code="snapshot_unsupported", stage="check")
            if _inside(where, path):
                raise ConfigError("snapshot_dir=%s is inside %s: every snapshot would hold "
                                  "the earlier ones" % (self.snapshot_dir, what),
                                  code="snapshot_config", stage="check", option="snapshot_dir")
            if mount[2] != home[2] or mount[1] != home[1]:
                raise ConfigError("snapshot_dir=%s is on %s (%s), %s on %s (%s): btrfs "
                                  "snapshots stay on their filesystem" % (
                                      self.snapshot_dir, home[2], home[0], what, mount[2],
                                      mount[0]), code="snapshot_config", stage="check",
                                  option="snapshot_dir")
            nested = _nested_subvolume(path)
            if nested:
                raise ConfigError("%s holds another subvolume, %s, which a snapshot of it "
                                  "leaves out (an empty directory in the snapshot)"
                                  % (what, nested), code="snapshot_unsupported",
                                  stage="check")

    def create(self, cluster, backup_id, volumes_, made):
        """A read-only snapshot of each volume, its record (what the manifest keeps)
        appended to ``made`` as soon as it exists: a failure halfway leaves the list of
        what to remove."""
        for volume in volumes_:
            name = "%s.%s.%s" % (cluster, backup_id, volume_name(volume))
            path = os.path.join(os.path.realpath(self.snapshot_dir), name)
            _run(["btrfs", "subvolume", "snapshot", "-r", volume["path"], path],
                 "snapshot %s" % volume["path"])
            made.append(dict(volume, snapshot={"id": name, "path": path}))

    # -- restore and retention ---------------------------------------------------------
    @staticmethod
    def state(volume):
        path = volume["snapshot"]["path"]
        try:
            if os.lstat(path).st_ino == BTRFS_SUBVOLUME_ROOT_INODE:
                return "complete"
        except OSError:
            pass
        return "missing"

    @staticmethod
    def check_clone(volume, destination):
        """Refuse a clone destination that btrfs cannot take, before anything is written:
        its parent (or the nearest directory that exists: the restore creates the rest)
        on another filesystem than the snapshot, or not writable."""
        parent = os.path.dirname(os.path.abspath(destination))
        while not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise TargetRefused("cannot create %s: this user cannot write into %s"
                                % (destination, parent), code="snapshot_target_invalid",
                                stage="check")
        here, there = filesystem(parent), filesystem(volume["snapshot"]["path"])
        if (here[1], here[2]) != (there[1], there[2]):
            raise TargetRefused("%s is on %s (%s), snapshot %s on %s (%s): a btrfs clone "
                                "is made on the snapshot's filesystem; choose a target "
                                "there" % (destination, here[2] or here[1], here[0],
                                           volume["snapshot"]["id"], there[2], there[0]),
                                code="snapshot_target_invalid", stage="check")

    @staticmethod
    def clone(volume, destination):
        _run(["btrfs", "subvolume", "snapshot", volume["snapshot"]["path"], destination],
             "clone snapshot %s" % volume["snapshot"]["id"])

    def leftovers(self, cluster):
        """{backup id: [volume records]} of this cluster's snapshots in snapshot_dir, by
        their names (<cluster>.<id>.<volume>): what a killed backup may have left."""
        found = {}
        if not self.snapshot_dir or not os.path.isdir(self.snapshot_dir):
            return found
        for name in sorted(os.listdir(self.snapshot_dir)):
            parts = name.split(".")
            if len(parts) != 3 or parts[0] != cluster or not _SNAPSHOT_ID.match(parts[1]):
                continue
            path = os.path.join(os.path.realpath(self.snapshot_dir), name)
            found.setdefault(parts[1], []).append({"snapshot": {"id": name, "path": path}})
        return found

    @staticmethod
    def delete(volume):
        """As the cluster's owner (mount option user_subvol_rm_allowed), a read-only
        snapshot is made writable first: btrfs refuses to delete it otherwise."""
        path, what = volume["snapshot"]["path"], "delete snapshot %s" % volume["snapshot"]["id"]
        _run(["btrfs", "property", "set", "-ts", path, "ro", "false"], what)
        _run(["btrfs", "subvolume", "delete", path], what)


PROVIDERS = {"btrfs": Btrfs}


def provider(settings, name=None):
    """The provider named by the settings (or by a manifest)."""
    name = name or settings.snapshot_provider
    if name not in PROVIDERS:
        raise ConfigError("snapshot_provider=%s is not known (expected one of: %s)"
                          % (name, ", ".join(sorted(PROVIDERS))), code="snapshot_config",
                          stage="check", option="snapshot_provider")
    return PROVIDERS[name](settings)


def elsewhere(manifest):
    """Why this host cannot look at a snapshot backup's snapshots (None when it can): a
    provider that is not off-host keeps them on the host that took them."""
    record = manifest["snapshot"]
    if record.get("off_host") or manifest.get("host") == socket.gethostname():
        return None
    return "its %s snapshots are on host %s" % (record["provider"], manifest.get("host"))


def missing(settings, manifest):
    """The snapshots of a snapshot backup that its provider no longer has."""
    record = manifest["snapshot"]
    source = provider(settings, record["provider"])
    return [v["snapshot"]["id"] for v in record["volumes"] if source.state(v) != "complete"]


def require(settings, manifest):
    """NotFound snapshot_missing when a snapshot of this backup is gone, or held on
    another host."""
    away = elsewhere(manifest)
    if away:
        raise NotFound("snapshot backup %s cannot be used on this host: %s; run there, or "
                       "restore a repository backup" % (manifest["id"], away),
                       code="snapshot_missing", stage="check", backup_id=manifest["id"])
    gone = missing(settings, manifest)
    if gone:
        raise NotFound("snapshot backup %s cannot be restored: its snapshot(s) %s are gone "
                       "from provider %s" % (manifest["id"], ", ".join(gone),
                                             manifest["snapshot"]["provider"]),
                       code="snapshot_missing", stage="check", backup_id=manifest["id"])


def scrub_clone(root, pgdata):
    """Make a writable clone of a live volume what a restore writes: every link removed
    without being followed (pg_tblspc, a linked pg_wal or configuration file point into
    the source), temporary files removed, and, in a data directory, the runtime state
    that a backup leaves out (datadir.py's lists) emptied."""
    for folder, dirs, files in os.walk(root):
        for name in list(dirs):
            path = os.path.join(folder, name)
            if os.path.islink(path) or name.startswith(TEMP_PREFIX):
                _remove(path)
                dirs.remove(name)
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path) or name.startswith(TEMP_PREFIX) or (
                    pgdata and folder == root and name in SKIPPED_FILES):
                _remove(path)
    if not pgdata:
        return
    for name in EMPTY_DIRS:
        path = os.path.join(root, name)
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)  # a linked pg_wal was removed above
            continue
        for entry in os.listdir(path):
            _remove(os.path.join(path, entry))
    os.mkdir(os.path.join(root, "pg_wal", "archive_status"), 0o700)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _nested_subvolume(root):
    """The first subvolume below root (its root directory's inode is 256), or None."""
    for folder, dirs, dummy in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            try:
                if os.lstat(path).st_ino == BTRFS_SUBVOLUME_ROOT_INODE:
                    return path
            except OSError:
                continue  # removed while we looked
    return None


def _run(argv, what):
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              check=False)
    except OSError as exc:
        raise RepositoryError("cannot %s: %s could not run (%s); install btrfs-progs"
                              % (what, argv[0], exc), code="snapshot_failed",
                              stage="snapshot")
    if done.returncode != 0:
        raise RepositoryError("cannot %s: %s exited %d: %s" % (
            what, " ".join(argv[:3]), done.returncode,
            done.stderr.decode("utf-8", "replace").strip() or "no message"),
            code="snapshot_failed", stage="snapshot")
