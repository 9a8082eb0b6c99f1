# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Put local files into the repository, beside the backups.

For what a DBA keeps with the backups: configuration, scripts, logical dumps,
runbooks. The whole upload is planned before anything is written, so a refused
object (a reserved key, a different object with overwrite=never) leaves the
repository untouched. Every object is sent with its SHA-256 and checked after
the upload from the repository's own answer: its size, and its SHA-256 (from
the object's metadata, or by reading it back where the backend keeps none).
An object that already holds the same bytes is not uploaded again.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..catalog import FOLDERS
from ..errors import ConfigError, Conflict, IntegrityError, NotFound
from ..parallel import run_all
from ..storage import open_storage
from ..storage.base import file_sha256
from ..storage.sealed import KEYS_DIR

# Second-level names that hold pgdr's own objects (<cluster>/backup/..., <cluster>/wal/...,
# <cluster>/snapshot/..., <cluster>/keys/...: an encrypted cluster's keys).
RESERVED = FOLDERS + ("wal", KEYS_DIR)
MAX_LISTED = 10


class Item(object):
    """One local file and the object it becomes."""

    __slots__ = ("path", "key", "size", "sha256", "stamp", "action")

    def __init__(self, path, key, size, sha256, stamp):
        self.path, self.key, self.size, self.sha256, self.stamp = path, key, size, sha256, stamp
        self.action = None  # create, replace or unchanged

    def as_dict(self):
        return {"key": self.key, "src": self.path, "size": self.size,
                "sha256": self.sha256, "action": self.action}


def _invalid(msg, code="dest_invalid"):
    return ConfigError(msg, code=code, stage="plan", option="dest")


def check_key(key):
    """Refuse a key that escapes the repository root or lands in pgdr's own objects."""
    if not key or key.startswith("/"):
        raise _invalid("dest=%r: keys are relative to the repository root; give a "
                       "relative key such as 'configs/pg_hba.conf'" % key)
    if any(ord(c) < 32 or c == "\x7f" for c in key):
        raise _invalid("key %r holds a control character" % key)
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _invalid("key %r has an empty, '.' or '..' segment: keys must stay "
                       "below the repository root" % key)
    if len(parts) >= 2 and parts[1] in RESERVED:
        raise _invalid("key %r is under %s/%s/, which belongs to pgdr's backups and WAL; "
                       "choose another dest (for example %s/files/...)"
                       % (key, parts[0], parts[1], parts[0]), code="dest_reserved")
    return key


def plan(src, dest):
    """[Item] for every regular file of ``src`` (sorted keys); nothing is read remotely."""
    if not os.path.exists(src):
        raise NotFound("src %s does not exist" % src, code="src_not_found", stage="plan")
    if dest.startswith("/"):
        check_key(dest)  # raises with the message about relative keys
    if os.path.isdir(src):
        prefix = dest.rstrip("/")
        check_key(prefix)
        found = []
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if not os.path.isfile(path):
                    continue  # sockets, fifos, broken links: not data
                rel = os.path.relpath(path, src).replace(os.sep, "/")
                found.append((path, prefix + "/" + rel))
    elif os.path.isfile(src):
        key = dest + os.path.basename(src) if dest.endswith("/") else dest
        found = [(src, key)]
    else:
        raise ConfigError("src %s is neither a file nor a directory" % src,
                          code="src_invalid", stage="plan", option="src")
    items = []
    for path, key in found:
        check_key(key)
        try:
            items.append(Item(path, key, os.path.getsize(path), file_sha256(path),
                              _stamp(path)))
        except (IOError, OSError) as exc:
            raise ConfigError("cannot read %s: %s" % (path, exc), code="src_unreadable",
                              stage="plan", option="src")
    return sorted(items, key=lambda item: item.key)


def _stamp(path):
    info = os.stat(path)
    return (info.st_size, info.st_mtime_ns)


def compare(storage, item):
    """create, unchanged or differs: what the repository holds under item.key."""
    info = storage.plain_head(item.key)
    if info is None:
        return "create"
    if info.size != item.size:
        return "differs"
    stored = info.sha256 or storage.stored_sha256(item.key)
    return "unchanged" if stored == item.sha256 else "differs"


def verify(storage, item):
    """After the upload: the repository's size and SHA-256 match the local file's."""
    info = storage.plain_head(item.key)
    if info is None or info.size != item.size:
        raise IntegrityError("upload of %s to %s could not be verified: the repository "
                             "reports %s bytes, %d expected"
                             % (item.path, item.key, info.size if info else "no object",
                                item.size),
                             code="upload_verify_failed", stage="verify", key=item.key)
    stored = info.sha256 or storage.stored_sha256(item.key)
    if stored != item.sha256:
        raise IntegrityError("upload of %s to %s could not be verified: the stored "
                             "SHA-256 %s differs from the local %s"
                             % (item.path, item.key, stored, item.sha256),
                             code="upload_verify_failed", stage="verify", key=item.key)
    if _stamp(item.path) != item.stamp:
        raise IntegrityError("%s changed while it was uploaded; upload it again once it "
                             "is complete" % item.path, code="src_changed",
                             stage="verify", key=item.key)


def run(settings, progress, dry_run=False):
    settings.require("src", "dest")
    items = plan(settings.src, settings.dest)
    storage = open_storage(settings)
    storage.check()
    differs = []
    for item in items:
        state = compare(storage, item)
        if state == "differs":
            differs.append(item.key)
            state = "replace"
        item.action = state
    if differs and settings.overwrite == "never":
        shown = ", ".join(differs[:MAX_LISTED])
        if len(differs) > MAX_LISTED:
            shown += " and %d more" % (len(differs) - MAX_LISTED)
        raise Conflict("%d object(s) already exist in %s with different content: %s; "
                       "nothing was uploaded (set overwrite=different to replace them)"
                       % (len(differs), storage.describe(), shown),
                       code="object_differs", stage="plan", keys=differs)
    todo = [item for item in items if item.action != "unchanged"]
    result = {
        "changed": bool(todo),
        "repository": storage.describe(),
        "uploaded": [item.key for item in todo],
        "unchanged": [item.key for item in items if item.action == "unchanged"],
        "objects": [item.as_dict() for item in items],
        "bytes": sum(item.size for item in todo),
    }
    if dry_run or not todo:
        return result

    def upload(item):
        storage.put_file(item.key, item.path, sha256=item.sha256,
                         if_absent=item.action == "create")
        verify(storage, item)
        progress.advance(item.size)

    progress.begin("upload", result["bytes"])
    run_all(upload, todo, settings.workers or 1)
    progress.end()
    progress.event("uploaded %d object(s), %d byte(s) to %s; %d unchanged"
                   % (len(todo), result["bytes"], storage.describe(),
                      len(result["unchanged"])))
    return result
