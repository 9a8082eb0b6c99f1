# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgdr key-rotate: replace a recipient of an encrypted repository (docs/encryption.md).

The data keys are wrapped again; no data object is read or rewritten. In two passes, so
that a run killed at any point leaves every data key readable with the old secret or the
new one: first the record lists old and new recipients and every data key gets the new
wrapping, then the record lists only the new and the old wrappings are removed. A run
also removes wrappings for recipients the record no longer lists (left by a killed run).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ..errors import ConfigError, NotFound
from ..storage import open_storage
from ..storage.sealed import (DATA_KEYS, KEYS_DIR, Recipients, data_key_record,
                              encode_record, record_key)


def run(settings, progress, dry_run=False):
    settings.require("cluster")
    cluster = settings.cluster
    new_passphrase = settings.new_encryption_passphrase
    new_kms_key = settings.new_encryption_kms_key
    if not (new_passphrase or new_kms_key):
        raise ConfigError("key-rotate needs new_encryption_passphrase or "
                          "new_encryption_kms_key (the recipient that replaces the "
                          "current one of its kind)", code="config_missing", stage="config")
    storage = open_storage(settings, events=progress.event)
    if not storage.encrypted(cluster, create=False):  # a mistyped cluster gets no record
        raise ConfigError("cluster %s in %s is not encrypted: there is no key to rotate"
                          % (cluster, storage.describe()), code="repository_not_encrypted",
                          stage="config")
    ring = storage.keyring(cluster, writing=True)
    replaced = set(kind for kind, value in (("passphrase", new_passphrase), ("kms", new_kms_key))
                   if value)
    current = ring.record["recipients"]
    kept = [r for r in current if r["type"] not in replaced]
    removed = [r for r in current if r["type"] in replaced]
    ids = sorted(_data_key_ids(storage, cluster))
    result = {"changed": not dry_run, "cluster": cluster, "data_keys": len(ids),
              "removed": [r["id"] for r in removed], "kept": [r["id"] for r in kept]}
    if dry_run:
        result["added"] = sorted("new %s" % kind for kind in replaced)
        return result
    new = Recipients(settings, cluster, passphrase=new_passphrase or "",
                     kms_key=new_kms_key or "")
    added = new.new_recipients()
    openers = dict(ring.opened)
    openers.update(new.open(added, storage.describe()))
    unopened = [r["id"] for r in kept if r["id"] not in openers]
    if unopened:
        raise ConfigError("key-rotate wraps every data key for the recipients it keeps, and "
                          "this client cannot use %s: configure it too"
                          % ", ".join(unopened), code="encryption_key_wrong", stage="config")
    result["added"] = [r["id"] for r in added]
    progress.event("key-rotate: %d data key(s) of cluster %s, adding %s"
                   % (len(ids), cluster, ", ".join(result["added"])))
    _write_record(storage, ring, kept + removed + added)
    _rewrap(storage, ring, ids, openers, [r["id"] for r in kept + removed + added])
    _write_record(storage, ring, kept + added)
    _rewrap(storage, ring, sorted(_data_key_ids(storage, cluster)), openers,
            [r["id"] for r in kept + added])
    progress.event("key-rotate: done; removed %s" % (", ".join(result["removed"]) or "none"))
    return result


def _data_key_ids(storage, cluster):
    prefix = "%s/%s/%s/" % (cluster, KEYS_DIR, DATA_KEYS)
    return [i.key[len(prefix):-len(".json")] for i in storage.list(prefix)
            if i.key.endswith(".json")]


def _write_record(storage, ring, recipients):
    record = dict(ring.record, recipients=recipients)
    storage.inner.put(record_key(ring.cluster), encode_record(record))
    ring.record = record


def _rewrap(storage, ring, ids, openers, wanted):
    """Every data key wrapped for exactly the recipients ``wanted``."""
    for key_id in ids:
        where = data_key_record(ring.cluster, key_id)
        try:
            record = json.loads(storage.inner.get(where).decode("utf-8"))
        except NotFound:
            continue  # an expire removed its backup, and the key with it, meanwhile
        secret = ring.unwrap(key_id, record)
        wrapped = dict((rid, value) for rid, value in record["wrapped"].items()
                       if rid in wanted)
        for rid in wanted:
            if rid not in wrapped:
                wrapped[rid] = openers[rid].wrap(secret, ring.context(key_id))
        if wrapped != record["wrapped"]:
            storage.inner.put(where, encode_record(dict(record, wrapped=wrapped)))
