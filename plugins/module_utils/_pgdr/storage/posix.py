# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A repository in a directory: a local disk or an NFS mount.

Writes go to a temporary file in the target directory, are fsynced, then
linked (if_absent: link fails when the name exists) or renamed into place, so
a crash never leaves a partial object under its final name.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import shutil
import uuid

from ..errors import Conflict, NotFound, RepositoryError
from .base import ObjectInfo, Storage

_TMP_PREFIX = ".pgdr-tmp-"


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
        self._install(key, lambda handle: handle.write(data), if_absent)

    def put_file(self, key, path, sha256=None, if_absent=False):
        def copy(handle):
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, 4 * 1024 * 1024)
        self._install(key, copy, if_absent)

    def _install(self, key, write, if_absent):
        final = self._path(key)
        directory = os.path.dirname(final)
        try:
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, _TMP_PREFIX + uuid.uuid4().hex)
            with open(tmp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                if if_absent:
                    os.link(tmp, final)
                else:
                    os.replace(tmp, final)
                    tmp = None
            finally:
                if tmp:
                    os.unlink(tmp)
            _fsync_dir(directory)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise Conflict("object %s already exists in %s and is never overwritten"
                               % (key, self.describe()), code="object_exists", key=key)
            raise RepositoryError("cannot write %s: %s" % (final, exc),
                                  code="write_failed")

    def get(self, key):
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read()
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise NotFound("object %s not found in %s" % (key, self.describe()),
                               code="object_not_found", key=key)
            raise RepositoryError("cannot read %s: %s" % (key, exc), code="read_failed")

    def head(self, key):
        try:
            return ObjectInfo(key, os.stat(self._path(key)).st_size)
        except OSError:
            return None

    def list(self, prefix):
        base = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
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
            try:
                os.unlink(self._path(key))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise RepositoryError("cannot delete %s: %s" % (key, exc),
                                          code="delete_failed")


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
