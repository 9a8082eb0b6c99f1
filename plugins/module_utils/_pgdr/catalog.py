# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The repository layout, backup manifests, and the list of backups.

Layout (docs/repository-format.md is the reference)::

    <cluster>/backup/<id>/data/<path>[.partNNNN]<suffix>   pieces of large files
    <cluster>/backup/<id>/bundle/<NNNNNN><suffix>           small files, bundled
    <cluster>/backup/<id>/wal/<segment><suffix>             WAL from start to stop
    <cluster>/backup/<id>/files.json.gz                     the file list
    <cluster>/backup/<id>/manifest.json                     written last

There is no index object: the backups are the prefixes under
``<cluster>/backup/``, and a backup exists for restore only once its
``manifest.json`` does. Every object is written once and never replaced.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import hashlib
import json
import time

from .errors import IntegrityError, NotFound

FORMAT = 1
MANIFEST = "manifest.json"
FILE_LIST = "files.json.gz"


def backup_prefix(cluster, backup_id):
    return "%s/backup/%s/" % (cluster, backup_id)


def new_backup_id(kind, now=None):
    """Sortable by time, readable in a bucket listing: 20261124T060012Z-full."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + kind


def encode_manifest(manifest):
    return json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")


def encode_file_list(files):
    raw = json.dumps(files, separators=(",", ":")).encode("utf-8")
    return gzip.compress(raw, 6, mtime=0)


class Catalog(object):
    """Read-side view of one cluster's backups in a repository."""

    def __init__(self, storage, cluster):
        self.storage = storage
        self.cluster = cluster

    def backup_ids(self):
        return self.storage.list_dirs("%s/backup/" % self.cluster)

    def manifest(self, backup_id):
        """The manifest of a backup; NotFound when the backup is incomplete or absent."""
        key = backup_prefix(self.cluster, backup_id) + MANIFEST
        try:
            data = self.storage.get(key)
        except NotFound:
            raise NotFound("backup %s of cluster %s is not complete (no %s) or does "
                           "not exist in %s" % (backup_id, self.cluster, MANIFEST,
                                                self.storage.describe()),
                           code="backup_not_found", backup_id=backup_id)
        try:
            manifest = json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise IntegrityError("manifest of backup %s is not valid JSON: %s"
                                 % (backup_id, exc), code="manifest_invalid")
        if manifest.get("format") != FORMAT:
            raise IntegrityError("backup %s has manifest format %r; this pgdr reads %d"
                                 % (backup_id, manifest.get("format"), FORMAT),
                                 code="manifest_format")
        return manifest

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
        has a missing or incomplete backup is incomplete too: it cannot be restored."""
        complete, incomplete = [], []
        for backup_id in self.backup_ids():
            try:
                complete.append(self.manifest(backup_id))
            except NotFound:
                incomplete.append(backup_id)
        present = set(m["id"] for m in complete)
        broken = [m["id"] for m in complete if not set(_chain(m)) <= present]
        complete = [m for m in complete if m["id"] not in broken]
        # stop_time has whole seconds: a full and its diff can end in the same one, so the
        # exact stop_epoch orders them (ids would put "-diff" before "-full")
        complete.sort(key=lambda m: (m["stop_time"], m.get("stop_epoch") or 0, m["id"]))
        return complete, sorted(incomplete + broken)

    def check_chain(self, manifest):
        """NotFound naming the first backup of the chain that is missing."""
        for backup_id in _chain(manifest)[:-1]:
            try:
                self.manifest(backup_id)
            except NotFound:
                raise NotFound("backup %s needs backup %s, which is missing or incomplete: "
                               "the chain cannot be restored" % (manifest["id"], backup_id),
                               code="chain_broken", backup_id=manifest["id"])

    def resolve(self, wanted):
        """The manifest of ``wanted``: a backup id, or 'latest'."""
        if wanted in (None, "", "latest"):
            complete = self.scan()[0]
            if not complete:
                raise NotFound("no complete backup of cluster %s in %s"
                               % (self.cluster, self.storage.describe()),
                               code="no_backup", stage="plan")
            return complete[-1]
        return self.manifest(wanted)


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
