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

``btrfs``: read-only snapshots of subvolumes into ``snapshot_dir`` on the same
filesystem, writable snapshots of those as clones; they live on the cluster's own disks,
not off-host. ``command``: the user's commands (LVM, ZFS, a SAN, a cloud), off-host when
``snapshot_off_host`` says so.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import signal
import stat
import socket
import subprocess
import time

from .errors import ConfigError, NotFound, PgdrError, RepositoryError, TargetRefused
from .postgres.datadir import EMPTY_DIRS, SKIPPED_FILES, TEMP_PREFIX

# A btrfs subvolume's root directory always has this inode number.
BTRFS_SUBVOLUME_ROOT_INODE = 256
MOUNTINFO = "/proc/self/mountinfo"
# Seconds any provider command may take: a snapshot, a clone or a check never hangs a
# backup in backup mode or a restore's plan for good.
COMMAND_TIMEOUT = 900
# Seconds after a snapshot backup ended before a snapshot its provider does not find
# counts as gone (EC2 lists a new snapshot eventually, not always at once).
SETTLE_MISSING_AFTER = 3600
_VOLUME_NAME = re.compile(r"^(pgdata|tablespace-\d+)$")
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
    completes_later = False  # a snapshot is whole once made (create checks it)
    restores = True          # cloned by restore

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
        parent = _writable_parent(destination)
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
            rest, dot, volume = name.rpartition(".")
            owner, dot, backup_id = rest.rpartition(".")
            if owner != cluster or not _SNAPSHOT_ID.match(backup_id) or \
                    not _VOLUME_NAME.match(volume):
                continue
            path = os.path.join(os.path.realpath(self.snapshot_dir), name)
            try:  # a subvolume of its own, never a link to one (or a copy an operator made)
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode) or info.st_ino != BTRFS_SUBVOLUME_ROOT_INODE:
                continue
            found.setdefault(backup_id, []).append({"snapshot": {"id": name, "path": path}})
        return found

    @staticmethod
    def delete(volume):
        """As the cluster's owner (mount option user_subvol_rm_allowed), a read-only
        snapshot is made writable first: btrfs refuses to delete it otherwise."""
        path, what = volume["snapshot"]["path"], "delete snapshot %s" % volume["snapshot"]["id"]
        _run(["btrfs", "property", "set", "-ts", path, "ro", "false"], what)
        _run(["btrfs", "subvolume", "delete", path], what)


class Command(object):
    """The user's commands (LVM, ZFS, a SAN, a cloud): run with ``sh -c`` as the
    cluster's OS user, one call per volume, told what to do through environment
    variables (docs/snapshots.md):

    * create: PGDR_CLUSTER, PGDR_BACKUP_ID, PGDR_VOLUME_ROLE (pgdata or tablespace),
      PGDR_VOLUME_OID, PGDR_VOLUME_PATH, PGDR_SNAPSHOT_NAME (a name it may use); the
      last line it prints is the snapshot's id (the name when it prints nothing);
    * check: PGDR_SNAPSHOT_ID; exit 0 when the snapshot is there and complete, 1 when
      it is not; any other exit is a failure;
    * clone: PGDR_SNAPSHOT_ID, PGDR_CLONE_PATH (absent: the command creates it as a
      directory holding the volume as snapshotted, writable by the cluster's user);
    * delete: PGDR_SNAPSHOT_ID.

    ``snapshot_off_host`` says whether the snapshots survive the loss of this host."""

    name = "command"
    completes_later = False
    restores = True
    STEPS = ("create", "check", "clone", "delete")

    def __init__(self, settings):
        self.commands = dict((step, getattr(settings, "snapshot_%s_command" % step))
                             for step in self.STEPS)
        self.off_host = bool(settings.snapshot_off_host)

    def check(self, volumes_):
        missing_ = [s for s in self.STEPS if not self.commands[s]]
        if missing_:
            raise ConfigError("snapshot_provider=command needs %s: the commands that create, "
                              "check, clone and delete a snapshot (docs/snapshots.md)"
                              % ", ".join("snapshot_%s_command" % s for s in missing_),
                              code="snapshot_config", stage="check",
                              option="snapshot_%s_command" % missing_[0])

    def create(self, cluster, backup_id, volumes_, made):
        for volume in volumes_:
            name = "%s.%s.%s" % (cluster, backup_id, volume_name(volume))
            out = self._call("create", "snapshot %s" % volume["path"], {
                "PGDR_CLUSTER": cluster, "PGDR_BACKUP_ID": backup_id,
                "PGDR_VOLUME_ROLE": volume["role"],
                "PGDR_VOLUME_OID": "" if volume["oid"] is None else str(volume["oid"]),
                "PGDR_VOLUME_PATH": volume["path"], "PGDR_SNAPSHOT_NAME": name})
            lines = [line.strip() for line in out.splitlines() if line.strip()]
            record = dict(volume, snapshot={"id": lines[-1] if lines else name})
            made.append(record)  # removed again if the backup fails from here on
            if self.state(record) != "complete":  # the id printed must be the snapshot's
                raise RepositoryError(
                    "snapshot_create_command printed %r as the snapshot of %s, but "
                    "snapshot_check_command does not find it: print the snapshot's id on "
                    "the last line (or nothing, and use PGDR_SNAPSHOT_NAME)"
                    % (record["snapshot"]["id"], volume["path"]), code="snapshot_failed",
                    stage="snapshot")

    def state(self, volume):
        code = self._call("check", "check snapshot %s" % volume["snapshot"]["id"],
                          {"PGDR_SNAPSHOT_ID": volume["snapshot"]["id"]}, answers=(0, 1))
        return "complete" if code == 0 else "missing"

    @staticmethod
    def check_clone(volume, destination):
        _writable_parent(destination)

    def clone(self, volume, destination):
        self._call("clone", "clone snapshot %s" % volume["snapshot"]["id"],
                   {"PGDR_SNAPSHOT_ID": volume["snapshot"]["id"],
                    "PGDR_CLONE_PATH": destination})
        if not os.path.isdir(destination) or os.path.islink(destination):
            raise RepositoryError("snapshot_clone_command exited 0 but created no directory "
                                  "at %s (PGDR_CLONE_PATH)" % destination,
                                  code="snapshot_failed", stage="snapshot")

    def delete(self, volume):
        self._call("delete", "delete snapshot %s" % volume["snapshot"]["id"],
                   {"PGDR_SNAPSHOT_ID": volume["snapshot"]["id"]})

    @staticmethod
    def leftovers(cluster):
        return {}  # the user's snapshots cannot be listed by name

    def _call(self, step, what, env, answers=None):
        """The step's output (or, with ``answers``, its exit code among them)."""
        command = self.commands[step]
        if not command:
            raise ConfigError("snapshot_provider=command needs snapshot_%s_command to %s"
                              % (step, what), code="snapshot_config", stage="snapshot",
                              option="snapshot_%s_command" % step)
        done = _run(["sh", "-c", command], what, dict(_plain_environment(), **env),
                    answers=answers, label="snapshot_%s_command" % step)
        return done.returncode if answers else done.stdout.decode("utf-8", "replace")


class Ebs(object):
    """AWS EBS snapshots of the volumes that hold the data directory and every
    tablespace (``snapshot_ebs_volumes``: mount point = volume id), through the EC2 API
    with the repository's credentials. One snapshot per volume, tagged with the cluster
    and the backup (two volumes of the cluster on one EBS volume share its snapshot); the
    record keeps the region and the account that own it, so that a later run asks there
    and never takes a snapshot it cannot see for one that is gone. Their content is fixed
    when they are requested, so backup mode ends at once; AWS completes them later
    (``state``: pending, then complete). Off-host: they survive the instance. pgdr does
    not create volumes from them: a restore takes a repository backup, or the volumes an
    operator made from the snapshots (docs/snapshots.md)."""

    name = "ebs"
    off_host = True
    completes_later = True  # the backup records pending until AWS completes them
    restores = False        # pgdr makes no volume from a snapshot: never cloned
    # AWS's snapshot states; recoverable (in the Recycle Bin) and recovering are not
    # usable yet, and not gone either
    STATES = {"pending": "pending", "completed": "complete", "error": "failed",
              "recoverable": "pending", "recovering": "pending"}
    NOT_FOUND = "InvalidSnapshot.NotFound"
    SYSFS = "/sys/class/block"

    def __init__(self, settings):
        self.settings = settings
        self.volume_ids = dict((os.path.normpath(k), v) for k, v in
                               (settings.snapshot_ebs_volumes or {}).items())
        self.region = settings.snapshot_ebs_region or settings.s3_region
        self._clients = {}
        self._account = None

    def _ec2(self, region=None, retries=True, service="ec2"):
        """A client of the region (EC2, or STS); without retries for a request that must
        not be made twice (a CreateSnapshot whose answer was lost would leave a second)."""
        key = (service, region or self.region, retries)
        if key not in self._clients:
            from .storage.s3 import aws_session  # boto3 only where EBS is used
            import botocore.config
            s = self.settings
            attempts = {"max_attempts": s.s3_max_attempts} if retries else \
                {"total_max_attempts": 1}
            self._clients[key] = aws_session(s).client(
                service, region_name=key[1], endpoint_url=s.snapshot_ebs_endpoint or None,
                config=botocore.config.Config(retries=dict(attempts, mode="standard"),
                                              connect_timeout=10, read_timeout=60))
        return self._clients[key]

    def _call(self, what, method, region=None, retries=True, service="ec2", **kwargs):
        """The answer; RepositoryError snapshot_failed naming what failed and the error
        code AWS gave (``aws_code``; never a credential)."""
        import botocore.exceptions
        try:
            return getattr(self._ec2(region, retries, service), method)(**kwargs)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise RepositoryError("cannot %s: %s %s answered %s: %s" % (
                what, service.upper(), method, error.get("Code", "?"),
                error.get("Message", "")), code="snapshot_failed", stage="snapshot",
                aws_code=error.get("Code"))
        except botocore.exceptions.BotoCoreError as exc:
            raise RepositoryError("cannot %s: %s %s failed: %s" % (
                what, service.upper(), method, exc), code="snapshot_failed", stage="snapshot")

    def _caller_account(self):
        """The account of these credentials (STS GetCallerIdentity needs no permission)."""
        if self._account is None:
            self._account = self._call("tell which AWS account these credentials belong to",
                                       "get_caller_identity", service="sts")["Account"]
        return self._account

    def _volume_of(self, volume):
        """(mount point, EBS volume id) of the mapped volume that holds this one."""
        found = [(mount, vid) for mount, vid in self.volume_ids.items()
                 if _inside(volume["path"], mount)]
        if not found:
            raise ConfigError("%s %s lies on none of the volumes of snapshot_ebs_volumes "
                              "(%s): name the EBS volume that holds it, as MOUNT_POINT=vol-ID"
                              % (volume_name(volume), volume["path"],
                                 ", ".join(sorted(self.volume_ids)) or "empty"),
                              code="snapshot_config", stage="check",
                              option="snapshot_ebs_volumes")
        return max(found, key=lambda pair: len(pair[0]))

    # -- backup ------------------------------------------------------------------------
    def check(self, volumes_):
        """Every volume mapped to an EBS volume the EC2 API knows and, where the kernel
        tells (an NVMe EBS device names its volume), the one that holds it: before
        backup mode."""
        if not self.volume_ids:
            raise ConfigError("type=snapshot with snapshot_provider=ebs needs "
                              "snapshot_ebs_volumes: the EBS volume of each mount point "
                              "that holds the data directory or a tablespace, as "
                              "MOUNT_POINT=vol-ID", code="snapshot_config", stage="check",
                              option="snapshot_ebs_volumes")
        for volume in volumes_:
            mount, volume_id = self._volume_of(volume)
            found = ebs_volume_of_device(filesystem(volume["path"])[2], self.SYSFS)
            if found and found != volume_id:
                raise ConfigError("snapshot_ebs_volumes maps %s to %s, but %s %s is on EBS "
                                  "volume %s (its NVMe device says so): a snapshot of %s "
                                  "would not hold it" % (mount, volume_id, volume_name(volume),
                                                         volume["path"], found, volume_id),
                                  code="snapshot_config", stage="check",
                                  option="snapshot_ebs_volumes")
        wanted = sorted(set(self._volume_of(v)[1] for v in volumes_))
        try:
            self._call("check volumes %s" % ", ".join(wanted), "describe_volumes",
                       VolumeIds=wanted)
        except RepositoryError as exc:
            if exc.details.get("aws_code") != "InvalidVolume.NotFound":
                raise
            raise ConfigError("snapshot_ebs_volumes names volume(s) %s, not all of which "
                              "exist in region %s for these credentials: %s"
                              % (", ".join(wanted), self.region, exc.msg),
                              code="snapshot_config", stage="check",
                              option="snapshot_ebs_volumes")

    def create(self, cluster, backup_id, volumes_, made):
        taken = {}
        for volume in volumes_:
            mount, volume_id = self._volume_of(volume)
            if volume_id not in taken:
                answer = self._call("snapshot %s (%s)" % (volume_id, mount), "create_snapshot",
                                    retries=False, VolumeId=volume_id,
                                    Description="pgdr %s %s %s" % (cluster, backup_id, mount),
                                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
                                        {"Key": "pgdr:cluster", "Value": cluster},
                                        {"Key": "pgdr:backup", "Value": backup_id},
                                        {"Key": "pgdr:mount", "Value": mount}]}])
                taken[volume_id] = {"id": answer["SnapshotId"], "volume_id": volume_id,
                                    "mount": mount, "region": self.region,
                                    "owner": answer.get("OwnerId")}
            made.append(dict(volume, snapshot=dict(taken[volume_id])))

    # -- restore and retention ---------------------------------------------------------
    def state(self, volume):
        """complete, pending, failed (AWS reports an error) or missing. Not found by
        credentials of another account than the snapshot's: an error, never missing."""
        record = volume["snapshot"]
        try:
            answer = self._call("look up snapshot %s" % record["id"], "describe_snapshots",
                                region=record.get("region"), SnapshotIds=[record["id"]])
        except RepositoryError as exc:
            if exc.details.get("aws_code") != self.NOT_FOUND:
                raise
            answer = {}
        found = answer.get("Snapshots") or []
        if found:
            return self.STATES.get(found[0].get("State"), "pending")
        owner = record.get("owner")
        if owner and owner != self._caller_account():
            raise RepositoryError("snapshot %s belongs to AWS account %s; these credentials "
                                  "are account %s's, which cannot see it: use the account's "
                                  "credentials" % (record["id"], owner, self._caller_account()),
                                  code="snapshot_failed", stage="snapshot")
        return "missing"

    @staticmethod
    def check_clone(volume, destination):
        raise TargetRefused("snapshot %s is an EBS snapshot: pgdr does not create volumes "
                            "from it; create a volume from it (aws ec2 create-volume "
                            "--snapshot-id %s), attach and mount it at %s, or restore a "
                            "repository backup (docs/snapshots.md)"
                            % (volume["snapshot"]["id"], volume["snapshot"]["id"],
                               volume["snapshot"].get("mount")),
                            code="snapshot_target_invalid", stage="check")

    def clone(self, volume, destination):
        self.check_clone(volume, destination)

    def delete(self, volume):
        """Removed, or already gone (two volumes of the cluster may share a snapshot)."""
        record = volume["snapshot"]
        try:
            self._call("delete snapshot %s" % record["id"], "delete_snapshot",
                       region=record.get("region"), SnapshotId=record["id"])
        except RepositoryError as exc:
            if exc.details.get("aws_code") != self.NOT_FOUND:
                raise

    def leftovers(self, cluster):
        """{backup id: [volume records]} of this cluster's snapshots in this region, by
        their tags."""
        import botocore.exceptions
        found, listed = {}, []
        pages = self._ec2().get_paginator("describe_snapshots")
        try:
            for page in pages.paginate(OwnerIds=["self"], Filters=[
                    {"Name": "tag:pgdr:cluster", "Values": [cluster]}]):
                listed += page.get("Snapshots") or []
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise RepositoryError("cannot list the snapshots of cluster %s: EC2 "
                                  "DescribeSnapshots failed: %s" % (cluster, exc),
                                  code="snapshot_failed", stage="snapshot")
        for snap in listed:
            tags = dict((t["Key"], t["Value"]) for t in snap.get("Tags") or [])
            backup_id = tags.get("pgdr:backup", "")
            if tags.get("pgdr:cluster") == cluster and _SNAPSHOT_ID.match(backup_id):
                found.setdefault(backup_id, []).append(
                    {"snapshot": {"id": snap["SnapshotId"], "volume_id": snap.get("VolumeId"),
                                  "mount": tags.get("pgdr:mount"), "region": self.region,
                                  "owner": snap.get("OwnerId")}})
        return found


def ebs_volume_of_device(source, sysfs=Ebs.SYSFS):
    """The EBS volume id an NVMe EBS device reports (its serial, vol0123... for
    vol-0123...) for a mount source such as /dev/nvme1n1 or /dev/nvme1n1p1; None when
    the device is no NVMe EBS device, or the kernel does not say."""
    if not source.startswith("/dev/nvme"):
        return None
    name = os.path.basename(os.path.realpath(source))
    disk = re.sub(r"p\d+$", "", name)
    try:
        with open(os.path.join(sysfs, disk, "device", "model")) as handle:
            model = handle.read().strip()
        with open(os.path.join(sysfs, disk, "device", "serial")) as handle:
            serial = handle.read().strip()
    except (IOError, OSError):
        return None
    if "Elastic Block Store" not in model or not re.match(r"^vol[0-9a-f]{8,17}$", serial):
        return None
    return "vol-" + serial[3:]


PROVIDERS = {"btrfs": Btrfs, "command": Command, "ebs": Ebs}


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


def states(settings, manifest):
    """{snapshot id: complete, pending, failed or missing} of a snapshot backup, as its
    provider reports them now (a snapshot two volumes share is asked once)."""
    record = manifest["snapshot"]
    return volume_states(provider(settings, record["provider"]), record["volumes"])


def volume_states(source, volumes):
    """{snapshot id: state} of these volumes' snapshots, each asked once."""
    found = {}
    for volume in volumes:
        if volume["snapshot"]["id"] not in found:
            found[volume["snapshot"]["id"]] = source.state(volume)
    return found


def missing(settings, manifest):
    """The snapshots of a snapshot backup that its provider no longer has, or failed."""
    return sorted(i for i, state in states(settings, manifest).items()
                  if state in ("missing", "failed"))


def settle(settings, catalog, progress, write=True, now=None):
    """Ask the provider about every pending snapshot backup this host can look at: all
    its snapshots complete, it is recorded complete (offered from now on); one failed, or
    gone SETTLE_MISSING_AFTER seconds after the backup ended (EC2 may not list a new
    snapshot at once), recorded failed (never offered; expire removes it). {id: state}
    of those that changed; one the provider cannot answer for stays pending."""
    changed = {}
    now = time.time() if now is None else now
    for manifest in list(catalog.pending_snapshots):
        if elsewhere(manifest):
            continue
        try:
            found = states(settings, manifest)
        except PgdrError as exc:
            progress.event("snapshot backup %s stays pending: %s" % (manifest["id"], exc.msg))
            continue
        settled_gone = now - manifest.get("stop_epoch", 0) > SETTLE_MISSING_AFTER
        bad = sorted(i for i, state in found.items()
                     if state == "failed" or (state == "missing" and settled_gone))
        if bad:
            state, why = "failed", "snapshot(s) %s %s at provider %s" % (
                ", ".join(bad), "/".join(sorted(set(found[i] for i in bad))),
                manifest["snapshot"]["provider"])
        elif all(state == "complete" for state in found.values()):
            state, why = "complete", None
        else:
            continue
        try:
            catalog.settle_snapshot(manifest, state, why, write=write)
        except PgdrError as exc:  # recorded by a later run; this one goes on
            progress.event("snapshot backup %s is %s, but that cannot be recorded: %s"
                           % (manifest["id"], state, exc.msg))
            continue
        changed[manifest["id"]] = manifest["snapshot"]["state"]
        progress.event("snapshot backup %s is %s%s" % (
            manifest["id"], manifest["snapshot"]["state"],
            ": " + manifest["snapshot"]["settled"]["why"]
            if manifest["snapshot"]["settled"].get("why") else ""))
    return changed


def refuse_unsettled(manifest):
    """NotFound snapshot_pending while a snapshot backup's provider has not completed its
    snapshots; snapshot_missing once it recorded them failed."""
    record = manifest["snapshot"]
    state = record.get("state", "complete")
    if state == "complete":
        return
    if state == "pending":
        raise NotFound("snapshot backup %s is pending: its provider has not reported every "
                       "snapshot complete yet (a later snapshot backup, verify or expire "
                       "records it once it has); restore a repository backup"
                       % manifest["id"], code="snapshot_pending", stage="check",
                       backup_id=manifest["id"])
    raise NotFound("snapshot backup %s is %s: %s; restore a repository backup" % (
        manifest["id"], state, (record.get("settled") or {}).get("why")
        or "its snapshots failed"), code="snapshot_missing", stage="check",
        backup_id=manifest["id"])


def require(settings, manifest):
    """NotFound snapshot_missing when a snapshot of this backup is gone, failed or held
    on another host; snapshot_pending while its provider has not completed them."""
    away = elsewhere(manifest)
    if away:
        raise NotFound("snapshot backup %s cannot be used on this host: %s; run there, or "
                       "restore a repository backup" % (manifest["id"], away),
                       code="snapshot_missing", stage="check", backup_id=manifest["id"])
    refuse_unsettled(manifest)
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


def _plain_environment():
    """This process's environment without pgdr's settings and cloud credentials: the
    user's commands get what they are told, never a secret by accident."""
    return dict((k, v) for k, v in os.environ.items()
                if not k.startswith(("PGDR_", "AWS_", "PGPASSWORD")))


def _writable_parent(destination):
    """The directory a clone is made in (or the nearest that exists: the restore creates
    the rest), refused when this user cannot write into it."""
    parent = os.path.dirname(os.path.abspath(destination))
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TargetRefused("cannot create %s: this user cannot write into %s"
                            % (destination, parent), code="snapshot_target_invalid",
                            stage="check")
    return parent


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


def _run(argv, what, env=None, answers=None, label=None, timeout=COMMAND_TIMEOUT):
    """The finished process; RepositoryError snapshot_failed when it cannot run, runs
    longer than ``timeout`` seconds (its whole process group is killed: a hung command
    must not hold backup mode, and the WAL with it, for good), or exits with another code
    than 0 (or one of ``answers``)."""
    label = label or " ".join(argv[:3])
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=env, start_new_session=True)
    except OSError as exc:
        raise RepositoryError("cannot %s: %s could not run (%s)%s" % (
            what, argv[0], exc, "; install btrfs-progs" if argv[0] == "btrfs" else ""),
            code="snapshot_failed", stage="snapshot")
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise RepositoryError("cannot %s: %s did not finish in %d s and was killed"
                              % (what, label, timeout), code="snapshot_failed",
                              stage="snapshot")
    if child.returncode not in (answers or (0,)):
        raise RepositoryError("cannot %s: %s exited %d (expected %s): %s" % (
            what, label, child.returncode, " or ".join(str(a) for a in answers or (0,)),
            err.decode("utf-8", "replace").strip()[-2000:] or "no message"),
            code="snapshot_failed", stage="snapshot")
    return subprocess.CompletedProcess(argv, child.returncode, out, err)
