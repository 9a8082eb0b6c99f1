# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify a backup's whole chain: every object present, every checksum right.

Every object the backup needs (its own and those of the backups it refers to)
is downloaded and checked against the SHA-256 of its stored bytes, then
decompressed and checked against the SHA-256 of its original bytes: what a
restore would read, without writing anything.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

from ..catalog import FILE_LIST, Catalog, backup_prefix, chain_objects
from ..compress import CodecsByKey
from ..errors import IntegrityError, NotFound, PgdrError
from ..parallel import run_all
from ..storage import open_storage


def run(settings, progress, dry_run=False):
    settings.require("cluster")
    storage = open_storage(settings)
    storage.check()
    catalog = Catalog(storage, settings.cluster)
    manifest = catalog.resolve(settings.backup_id)
    catalog.check_chain(manifest)
    listing = catalog.file_list(manifest)
    objects = chain_objects(listing)
    codec = CodecsByKey()
    total = sum(o["stored_size"] for o in objects)
    if dry_run:
        return {"changed": False, "backup_id": manifest["id"], "objects": len(objects),
                "stored_bytes": total}
    progress.begin("verify", sum(o["size"] for o in objects))

    def check(stored):
        try:
            packed = storage.get(stored["key"], sha256=stored["stored_sha256"])
            if hashlib.sha256(packed).hexdigest() != stored["stored_sha256"]:
                return "%s: stored bytes do not match their SHA-256" % stored["key"]
            raw = codec.decompress(packed, stored["size"], stored["key"])
            if hashlib.sha256(raw).hexdigest() != stored["sha256"]:
                return "%s: original bytes do not match their SHA-256" % stored["key"]
        except NotFound:
            return "%s: missing" % stored["key"]
        except PgdrError as exc:
            return "%s: %s" % (stored["key"], exc.msg)
        finally:
            progress.advance(stored["size"])
        return None

    problems = [p for p in run_all(check, objects, settings.workers) if p]
    progress.end()
    result = {"changed": False, "backup_id": manifest["id"], "chain": manifest.get("chain"),
              "objects": len(objects), "stored_bytes": total, "problems": problems,
              "file_list": backup_prefix(settings.cluster, manifest["id"]) + FILE_LIST}
    if problems:
        raise IntegrityError("backup %s failed verification: %d of %d objects are damaged "
                             "or missing; first: %s" % (manifest["id"], len(problems),
                                                        len(objects), problems[0]),
                             code="verify_failed", stage="verify", problems=problems[:100])
    progress.event("backup %s verified: %d objects, %.1f MiB, all checksums right"
                   % (manifest["id"], len(objects), total / 1048576.0))
    return result
