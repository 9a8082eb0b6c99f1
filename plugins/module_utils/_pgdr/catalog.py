# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The repository layout, backup manifests, and the list of backups.

Layout (docs/repository-format.md is the reference)::

    <cluster>/backup/<id>/data/<path>[.partNNNN]<suffix>   pieces of large files
    <cluster>/backup/<id>/bundle/<NNNNNN><suffix>           small files, bundled
    <cluster>/backup/<id>/wal/<segment><suffix>             WAL from start to stop
    <cluster>/backup/<id>/files.json.gz                     the file list
    <cluster>/backup/<id>/manifest.sha256                   the manifest's digest
    <cluster>/backup/<id>/manifest.json                     written last
    <cluster>/snapshot/<id>/...                             snapshot backups: the same
                                                            objects, no data (the provider
                                                            holds it)

There is no index object: the backups are the prefixes under
``<cluster>/backup/``, and a backup exists for restore only once its
``manifest.json`` does. Every object is written once and never replaced.

A manifest is checked twice before use: it carries ``manifest_sha256``, the
SHA-256 of its canonical JSON without that field, and ``manifest.sha256``
(written just before it) holds the SHA-256 of its stored bytes. A manifest
that fails either check is *damaged*: never treated as absent (the backup
would silently vanish from the list) but named, with the key, in every error.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import hashlib
import json
import re
import time

from .errors import Conflict, IntegrityError, NotFound

FORMAT = 2  # 1: manifests without checksums (refused: docs/repository-format.md)
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"
DIGEST_FIELD = "manifest_sha256"
FILE_LIST = "files.json.gz"
# A snapshot backup's first object, stored before any snapshot is taken: its snapshots
# are this repository's, so cleanup may remove them if the backup never completes.
SNAPSHOT_INTENT = "intent.json"
# A pending snapshot backup's settled state (complete or failed), written once when its
# provider reports it: the manifest itself is never rewritten.
SNAPSHOT_STATE = "state.json"
SETTLED_STATES = ("complete", "failed")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
SNAPSHOT = "snapshot"
# The folders under <cluster>/ that hold backups. Snapshot backups have their own: a pgdr
# that predates them never lists them, so it never takes one for a backup it can
# download, diff against or expire.
FOLDERS = ("backup", SNAPSHOT)


def is_snapshot(backup_id):
    return backup_id.endswith("-" + SNAPSHOT)


def _settled_record(data):
    """A state object's record; ValueError saying what is wrong with it."""
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ValueError("is not valid JSON (%s)" % exc)
    if not isinstance(record, dict) or record.get("state") not in SETTLED_STATES:
        raise ValueError("holds %r, not a state of complete or failed"
                         % (record.get("state") if isinstance(record, dict) else record,))
    return record


def snapshot_state(manifest):
    """complete, pending or failed: a snapshot backup is offered only when complete."""
    return (manifest.get("snapshot") or {}).get("state", "complete")


def backup_prefix(cluster, backup_id):
    return "%s/%s/%s/" % (cluster, FOLDERS[1] if is_snapshot(backup_id) else FOLDERS[0],
                          backup_id)


def new_backup_id(kind, now=None):
    """Sortable by time, readable in a bucket listing: 20261124T060012Z-full."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + kind


def canonical_digest(manifest):
    """SHA-256 of the manifest's canonical JSON (sorted keys, no spaces, ASCII), without
    its own ``manifest_sha256``: what the field holds."""
    body = dict((k, v) for k, v in manifest.items() if k != DIGEST_FIELD)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def encode_manifest(manifest):
    """The stored bytes of a manifest, sealed with its ``manifest_sha256``."""
    sealed = dict(manifest)
    sealed[DIGEST_FIELD] = canonical_digest(manifest)
    return json.dumps(sealed, indent=1, sort_keys=True).encode("utf-8")


def digest_line(data):
    """The text of manifest.sha256: sha256sum's format, so `sha256sum -c` checks it."""
    return ("%s  %s\n" % (hashlib.sha256(data).hexdigest(), MANIFEST)).encode("ascii")


def write_manifest(storage, cluster, manifest):
    """Store a backup's digest, then its manifest (the completion mark), both once.
    The digest goes first: a manifest never exists without it, so a missing digest is
    damage, not an interrupted backup, and manifest.json alone decides completeness.
    Returns the manifest's stored bytes."""
    prefix = backup_prefix(cluster, manifest["id"])
    data = encode_manifest(manifest)
    storage.put(prefix + MANIFEST_DIGEST, digest_line(data), if_absent=True)
    storage.put(prefix + MANIFEST, data, if_absent=True)
    return data


def encode_file_list(files):
    raw = json.dumps(files, separators=(",", ":")).encode("utf-8")
    return gzip.compress(raw, 6, mtime=0)


class Catalog(object):
    """Read-side view of one cluster's backups in a repository."""

    def __init__(self, storage, cluster):
        self.storage = storage
        self.cluster = cluster
        self._manifests = {}   # backup id -> manifest or its IntegrityError, read once
        self._digests = {}     # backup id -> SHA-256 of its manifest's stored bytes
        self.damaged = []      # after scan(): [{id, code, key, msg}] of damaged backups
        self._newer = []       # after scan(): errors of backups in a newer format
        self.snapshots = []    # after scan(): complete snapshot backups, oldest first
        self.damaged_snapshots = []  # after scan(): damaged snapshot backups
        self.pending_snapshots = []  # after scan(): snapshots requested, not yet complete
        self.failed_snapshots = []   # after scan(): snapshots the provider failed

    def backup_ids(self):
        return sorted(name for folder in FOLDERS
                      for name in self.storage.list_dirs("%s/%s/" % (self.cluster, folder)))

    def manifest(self, backup_id):
        """The verified manifest of a backup. NotFound (backup_not_found) when the backup
        is incomplete or absent; IntegrityError manifest_damaged when its manifest fails
        a check, manifest_format when another pgdr format wrote it."""
        if backup_id not in self._manifests:
            try:
                self._manifests[backup_id] = self._read_manifest(backup_id)
            except IntegrityError as exc:
                self._manifests[backup_id] = exc
        found = self._manifests[backup_id]
        if isinstance(found, IntegrityError):
            raise found
        return found

    def _read_manifest(self, backup_id):
        prefix = backup_prefix(self.cluster, backup_id)
        key = prefix + MANIFEST

        def damaged(why, at=key):
            return IntegrityError("manifest of backup %s is damaged: %s (object %s); pgdr "
                                  "does not restore or verify that backup, nor any diff "
                                  "or incr built on it" % (backup_id, why, at),
                                  code="manifest_damaged", stage="catalog",
                                  backup_id=backup_id, key=at)
        try:
            data = self.storage.get(key)
        except NotFound:
            raise NotFound("backup %s of cluster %s is not complete (no %s) or does "
                           "not exist in %s" % (backup_id, self.cluster, MANIFEST,
                                                self.storage.describe()),
                           code="backup_not_found", backup_id=backup_id)
        except IntegrityError as exc:  # the storage's own checksum of the object
            raise damaged(exc.msg)
        try:
            manifest = json.loads(data.decode("utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise damaged("not valid JSON (%s)" % exc)
        recorded = manifest.get(DIGEST_FIELD)
        if recorded is None and manifest.get("format", 1) == 1:
            raise IntegrityError(
                "backup %s has repository format 1 (a manifest without checksums, written "
                "by pgdr before 0.2); this pgdr reads format %d only and never uses an "
                "unverifiable manifest: restore it with the pgdr that wrote it, or take a "
                "new full backup (object %s)" % (backup_id, FORMAT, key),
                code="manifest_format", stage="catalog", backup_id=backup_id, key=key)
        if recorded != canonical_digest(manifest):
            raise damaged("its content does not match its own manifest_sha256 (%s)"
                          % (recorded or "missing"))
        digest_key = prefix + MANIFEST_DIGEST
        try:
            line = self.storage.get(digest_key).decode("ascii", "replace").split()
        except NotFound:
            raise damaged("its digest object is missing", digest_key)
        except IntegrityError as exc:
            raise damaged(exc.msg, digest_key)
        if not line or not _HEX64.match(line[0]):
            raise damaged("its digest object does not hold a SHA-256", digest_key)
        if line[0] != hashlib.sha256(data).hexdigest():
            raise damaged("its bytes do not match the SHA-256 in %s" % digest_key)
        found = manifest.get("format")
        if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT:
            raise IntegrityError(
                "backup %s was written in repository format %d by a newer pgdr; this pgdr "
                "reads format %d and neither restores from nor backs up beside a newer "
                "format: upgrade pgdr on this node (docs/repository-format.md, object %s)"
                % (backup_id, found, FORMAT, key),
                code="manifest_format", stage="catalog", backup_id=backup_id, key=key,
                newer_format=found)
        if found != FORMAT:
            raise IntegrityError("backup %s has manifest format %r; this pgdr reads %d"
                                 % (backup_id, found, FORMAT),
                                 code="manifest_format", stage="catalog",
                                 backup_id=backup_id, key=key)
        if manifest.get("id") != backup_id or manifest.get("cluster") != self.cluster:
            raise damaged("it describes backup %s of cluster %s" % (
                manifest.get("id"), manifest.get("cluster")))
        self._digests[backup_id] = line[0]
        if is_snapshot(backup_id):
            state = snapshot_state(manifest)
            if state not in ("complete", "pending"):
                raise damaged("its snapshot state is %r (expected complete or pending)"
                              % (state,))
            if state == "pending":
                self._read_settled(prefix, manifest, damaged)
        return manifest

    def _read_settled(self, prefix, manifest, damaged):
        """A pending snapshot backup's state object, when written, into its manifest."""
        key = prefix + SNAPSHOT_STATE
        try:
            record = _settled_record(self.storage.get(key))
        except NotFound:
            return
        except IntegrityError as exc:
            raise damaged(exc.msg, key)
        except ValueError as exc:
            raise damaged("its state object %s" % exc, key)
        manifest["snapshot"]["state"] = record["state"]
        manifest["snapshot"]["settled"] = record

    def settle_snapshot(self, manifest, state, why=None, write=True):
        """Record that a pending snapshot backup is complete or failed (a state object
        written once: when another run wrote one first, its answer stands), and move it
        to the matching list."""
        record = {"state": state, "why": why,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if write:
            key = backup_prefix(self.cluster, manifest["id"]) + SNAPSHOT_STATE
            try:
                self.storage.put(key, json.dumps(record).encode("utf-8"), if_absent=True)
            except Conflict:  # another run settled it first: its record, checked
                try:
                    record = _settled_record(self.storage.get(key))
                except ValueError as exc:
                    raise IntegrityError("snapshot backup %s: its state object %s (object "
                                         "%s)" % (manifest["id"], exc, key),
                                         code="manifest_damaged", stage="catalog", key=key)
        manifest["snapshot"]["state"] = record["state"]
        manifest["snapshot"]["settled"] = record
        self.pending_snapshots = [m for m in self.pending_snapshots
                                  if m["id"] != manifest["id"]]
        found = self.snapshots if record["state"] == "complete" else self.failed_snapshots
        found.append(manifest)
        found.sort(key=completion_order)

    def manifest_digests(self, backup_ids):
        """{id: SHA-256 of its manifest's stored bytes}: what a diff or incr records of
        the backups it needs, so that their manifests are checked against it too."""
        digests = {}
        for backup_id in backup_ids:
            self.manifest(backup_id)  # read and checked once
            digests[backup_id] = self._digests[backup_id]
        return digests

    def file_list(self, manifest):
        key = backup_prefix(self.cluster, manifest["id"]) + FILE_LIST
        data = self.storage.get(key)
        if hashlib.sha256(data).hexdigest() != manifest["file_list_sha256"]:
            raise IntegrityError("file list of backup %s does not match its checksum "
                                 "in the manifest: the object %s is damaged"
                                 % (manifest["id"], key), code="checksum_mismatch",
                                 key=key)
        return json.loads(gzip.decompress(data).decode("utf-8"))

    def scan(self):
        """(complete manifests, incomplete ids), oldest first. A diff or incr whose chain
        has a missing or incomplete backup is incomplete too: it cannot be restored.
        Damaged backups (a manifest that fails its checks, or a chain through one) are
        in neither list but in ``self.damaged``: they are never silently dropped."""
        complete, incomplete, damaged = [], [], {}
        for backup_id in self.backup_ids():
            try:
                complete.append(self.manifest(backup_id))
            except NotFound:
                incomplete.append(backup_id)
            except IntegrityError as exc:
                damaged[backup_id] = exc
        present = set(m["id"] for m in complete)
        for manifest in complete:
            bad = [b for b in _chain(manifest) if b in damaged]
            if bad:
                damaged[manifest["id"]] = self._chain_damaged(manifest, damaged[bad[0]])
                continue
            problem = self._chain_digest_problem(manifest)
            if problem:
                damaged[manifest["id"]] = problem
        broken = [m["id"] for m in complete
                  if m["id"] not in damaged and not set(_chain(m)) <= present]
        complete = [m for m in complete if m["id"] not in broken and m["id"] not in damaged]
        complete.sort(key=completion_order)
        # snapshot backups apart: never a diff's reference, never in retention's count of
        # the others, never latest's; a damaged one never blocks latest (a restore may
        # still start from one: restore_from)
        self.snapshots = [m for m in complete if is_snapshot(m["id"])
                          and snapshot_state(m) == "complete"]
        self.pending_snapshots = [m for m in complete if is_snapshot(m["id"])
                                  and snapshot_state(m) == "pending"]
        self.failed_snapshots = [m for m in complete if is_snapshot(m["id"])
                                 and snapshot_state(m) == "failed"]
        complete = [m for m in complete if not is_snapshot(m["id"])]
        self.damaged = [dict(exc.as_dict(), id=backup_id)
                        for backup_id, exc in sorted(damaged.items())
                        if not is_snapshot(backup_id)]
        self.damaged_snapshots = [dict(exc.as_dict(), id=backup_id)
                                  for backup_id, exc in sorted(damaged.items())
                                  if is_snapshot(backup_id)]
        self._newer = [exc for dummy, exc in sorted(damaged.items())
                       if exc.details.get("newer_format")]
        return complete, sorted(incomplete + broken)

    def refuse_newer_format(self):
        """After scan(): the error of a backup written in a newer repository format, if
        there is one. This pgdr neither restores from nor backs up beside a newer format
        (a newer pgdr maintains the repository now), whatever backup it would pick."""
        if self._newer:
            raise self._newer[-1]

    def check_chain(self, manifest):
        """NotFound naming the first backup of the chain that is missing; IntegrityError
        naming the first one whose manifest is damaged."""
        for backup_id in _chain(manifest)[:-1]:
            try:
                self.manifest(backup_id)
            except NotFound:
                raise NotFound("backup %s needs backup %s, which is missing or incomplete: "
                               "the chain cannot be restored" % (manifest["id"], backup_id),
                               code="chain_broken", backup_id=manifest["id"])
            except IntegrityError as exc:
                raise self._chain_damaged(manifest, exc)
        problem = self._chain_digest_problem(manifest)
        if problem:
            raise problem

    def _chain_digest_problem(self, manifest):
        """IntegrityError when a backup this one needs has a manifest other than the one
        this one recorded (replaced whole, digest object included); None when all match."""
        recorded = manifest.get("chain_manifest_sha256") or {}
        for backup_id in _chain(manifest)[:-1]:
            if backup_id not in recorded or backup_id not in self._digests:
                continue  # absent or unreadable: reported as such elsewhere
            if recorded[backup_id] != self._digests[backup_id]:
                key = backup_prefix(self.cluster, backup_id) + MANIFEST
                return IntegrityError(
                    "backup %s needs backup %s, whose manifest is not the one it was built "
                    "on (its SHA-256 differs from the one recorded in %s's manifest; object "
                    "%s)" % (manifest["id"], backup_id, manifest["id"], key),
                    code="manifest_damaged", stage="catalog", backup_id=manifest["id"],
                    key=key)
        return None

    @staticmethod
    def _chain_damaged(manifest, exc):
        if exc.details.get("backup_id") == manifest["id"]:
            return exc
        return IntegrityError("backup %s needs backup %s, whose manifest cannot be used: "
                              "%s" % (manifest["id"], exc.details.get("backup_id"), exc.msg),
                              code=exc.code, stage=exc.stage, backup_id=manifest["id"],
                              key=exc.details.get("key"))

    def resolve(self, wanted):
        """The manifest of ``wanted``: a backup id, or 'latest' (refused when a backup
        started after the newest usable one is damaged: 'latest' would silently mean
        an older backup)."""
        if wanted in (None, "", "latest"):
            complete = self.scan()[0]
            newest = complete[-1]["id"] if complete else ""
            later = [d for d in self.damaged if _started(d["id"]) > _started(newest)]
            if later:
                raise IntegrityError("the newest backup %s of cluster %s cannot be used: %s; "
                                     "name an older backup explicitly"
                                     % (later[-1]["id"], self.cluster, later[-1]["msg"]),
                                     code=later[-1]["code"], stage="catalog",
                                     backup_id=later[-1]["id"], key=later[-1].get("key"))
            if not complete:
                raise NotFound("no complete backup of cluster %s in %s"
                               % (self.cluster, self.storage.describe()),
                               code="no_backup", stage="plan")
            return complete[-1]
        return self.manifest(wanted)


def completion_order(manifest):
    """stop_time has whole seconds: a full and its diff can end in the same one, so the
    exact stop_epoch orders them (ids would put "-diff" before "-full")."""
    return (manifest["stop_time"], manifest.get("stop_epoch") or 0, manifest["id"])


def _started(backup_id):
    """The start time part of a backup id (ids sort by it)."""
    return backup_id.split("-", 1)[0]


def _chain(manifest):
    """Ids of the backups a backup needs, from its full to itself."""
    return manifest.get("chain") or [manifest["id"]]


def chain_objects(listing):
    """Every stored object a restore of this file list reads, once each."""
    seen = {}
    for item in listing["files"]:
        for piece in item.get("pieces", ()):
            seen[piece["key"]] = piece
        for layer in item.get("deltas", ()):
            for part in layer["parts"]:
                seen[part["key"]] = part
    for bundle in listing["bundles"]:
        seen[bundle["key"]] = bundle
    for segment in listing["wal"]:
        seen[segment["key"]] = segment
    return list(seen.values())
