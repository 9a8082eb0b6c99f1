# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A repository in a directory: a local disk or an NFS mount.

Writes go to a temporary file in the target directory, are fsynced, then
linked (if_absent: link fails when the name exists) or renamed into place, so
a crash never leaves a partial object under its final name. The object's
SHA-256 is recorded first in a sidecar ``.<name>.sha256`` beside it, which
listings never show; reads are verified against it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import os
import shutil
import uuid

from .. import atomicfile
from ..errors import Conflict, IntegrityError, NotFound, RepositoryError
from .base import ObjectInfo, Storage

_TMP_PREFIX = ".pgdr-tmp-"
_SIDECAR_SUFFIX = ".sha256"


class PosixStorage(Storage):
    def __init__(self, settings):
        settings.require("repo_path")
        self.root = settings.repo_path

    def describe(self):
        return "posix:%s" % self.root

    def check(self):
        if not os.path.isdir(self.root):
            raise RepositoryError("repository directory %s does not exist (repo_path)"
                                  % self.root, code="repository_not_found", stage="connect")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise RepositoryError("repository directory %s is not writable by this user"
                                  % self.root, code="access_denied", stage="connect")

    def _path(self, key):
        if key.startswith("/") or ".." in key.split("/"):
            raise RepositoryError("invalid object key %r" % key, code="invalid_key")
        return os.path.join(self.root, *key.split("/"))

    def put(self, key, data, sha256=None, if_absent=False):
        return self._install(key, lambda handle: handle.write(data), sha256, if_absent)

    def put_file(self, key, path, sha256=None, if_absent=False):
        def copy(handle):
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, 4 * 1024 * 1024)
        return self._install(key, copy, sha256, if_absent)

    def _install(self, key, write, sha256, if_absent):
        """Write a temporary file, record its SHA-256 in the sidecar, then link (if_absent)
        or rename it into place. An if_absent write that finds the object already there
        (a retry after an unknown outcome, or a race) succeeds when the stored bytes are
        ours, and is a Conflict when they differ."""
        final = self._path(key)
        directory = os.path.dirname(final)
        tmp = None
        try:
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, _TMP_PREFIX + uuid.uuid4().hex)
            with open(tmp, "wb") as handle:
                hashing = _HashingWriter(handle)
                write(hashing)
                handle.flush()
                os.fsync(handle.fileno())
            digest = hashing.digest.hexdigest()
            if sha256 and sha256.lower() != digest:
                raise IntegrityError("the data written to %s has SHA-256 %s..., not the %s... "
                                     "expected: the source changed while it was written"
                                     % (key, digest[:12], sha256[:12]),
                                     code="src_changed", key=key)
            if if_absent and os.path.lexists(final):
                self._settle_existing(key, final, digest, wrote_sidecar=False)
                return False
            _write_small(_sidecar(final), (digest + "\n").encode("ascii"))
            if if_absent:
                try:
                    os.link(tmp, final)
                except OSError as exc:
                    if exc.errno != errno.EEXIST:
                        raise
                    self._settle_existing(key, final, digest, wrote_sidecar=True)
                    return False
                if _read_sidecar(final) != digest:  # a racing writer replaced it: ours won
                    _write_small(_sidecar(final), (digest + "\n").encode("ascii"))
            else:
                os.replace(tmp, final)
                tmp = None
            atomicfile.sync(directory)
            return True
        except OSError as exc:
            raise RepositoryError("cannot write %s: %s" % (final, exc),
                                  code="write_failed")
        finally:
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _settle_existing(self, key, final, digest, wrote_sidecar):
        """The object exists: success when its bytes are the ones we meant to store
        (their SHA-256 is then recorded), else Conflict."""
        with open(final, "rb") as handle:
            stored = _sha256_of(handle)
        if stored == digest:
            if _read_sidecar(final) != digest:
                _write_small(_sidecar(final), (digest + "\n").encode("ascii"))
            return
        if wrote_sidecar:  # a racing writer won: give its object back its own digest
            _write_small(_sidecar(final), (stored + "\n").encode("ascii"))
        raise Conflict("object %s already exists in %s and is never overwritten"
                       % (key, self.describe()), code="object_exists", key=key)

    def _fetch(self, key):
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
            return data, _read_sidecar(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise NotFound("object %s not found in %s" % (key, self.describe()),
                               code="object_not_found", key=key)
            raise RepositoryError("cannot read %s: %s" % (key, exc), code="read_failed")

    def head(self, key):
        path = self._path(key)
        try:
            info = os.stat(path)
        except OSError:
            return None
        return ObjectInfo(key, info.st_size, _read_sidecar(path), mtime=info.st_mtime)

    def list(self, prefix):
        base = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(_TMP_PREFIX) or _is_sidecar(name):
                    continue
                full = os.path.join(dirpath, name)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    info = os.stat(full)
                    found.append(ObjectInfo(key, info.st_size, mtime=info.st_mtime))
        return sorted(found, key=lambda info: info.key)

    def list_dirs(self, prefix):
        try:
            names = os.listdir(self._path(prefix.rstrip("/")))
        except OSError:
            return []
        return sorted(n for n in names
                      if os.path.isdir(self._path(prefix + n)) and not n.startswith("."))

    def delete(self, keys):
        for key in keys:
            path = self._path(key)
            for victim in (path, _sidecar(path)):
                try:
                    os.unlink(victim)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise RepositoryError("cannot delete %s: %s" % (key, exc),
                                              code="delete_failed")


class _HashingWriter(object):
    """A file handle that hashes what is written through it."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data):
        self.digest.update(data)
        return self.handle.write(data)


def _sidecar(path):
    """Where the SHA-256 of the object at ``path`` is recorded: .<name>.sha256 beside it."""
    directory, name = os.path.split(path)
    return os.path.join(directory, "." + name + _SIDECAR_SUFFIX)


def _is_sidecar(name):
    return name.startswith(".") and name.endswith(_SIDECAR_SUFFIX)


def _read_sidecar(path):
    """The recorded SHA-256 (hex) of the object at path, or None."""
    try:
        with open(_sidecar(path), "rb") as handle:
            text = handle.read(200).decode("ascii", "replace").strip().lower()
    except OSError:
        return None
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    return None


def _write_small(path, data):
    """Replace the small file at path atomically and durably (a listing skips the
    temporary file by its prefix)."""
    tmp = os.path.join(os.path.dirname(path), _TMP_PREFIX + uuid.uuid4().hex)
    atomicfile.replace(path, data, mode=None, tmp=tmp)


def _sha256_of(handle, block=4 * 1024 * 1024):
    digest = hashlib.sha256()
    while True:
        chunk = handle.read(block)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
