# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storage interface every backend implements.

Keys are '/'-separated and relative to the repository root; backends add
their own prefix. Objects are written whole and atomically: a reader never
sees half an object. ``if_absent`` makes a write fail with Conflict instead of
replacing an existing object: it is how immutable objects stay immutable.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib


class ObjectInfo(object):
    __slots__ = ("key", "size", "sha256", "mtime")

    def __init__(self, key, size, sha256=None, mtime=None):
        self.key = key
        self.size = size
        self.sha256 = sha256  # hex, when the backend knows it without reading
        self.mtime = mtime    # seconds since the epoch when the object was stored


class Storage(object):
    """Abstract repository storage."""

    def describe(self):
        """Where the repository is, for messages (no secrets)."""
        raise NotImplementedError

    def check(self):
        """Fail fast with a clear RepositoryError when the repository is unusable."""
        raise NotImplementedError

    def put(self, key, data, sha256=None, if_absent=False):
        """Store ``data`` (bytes) under ``key``; Conflict when if_absent and it exists."""
        raise NotImplementedError

    def put_file(self, key, path, sha256=None, if_absent=False):
        """Store a local file (large files in parallel parts where supported)."""
        raise NotImplementedError

    def get(self, key):
        """The bytes of ``key``; NotFound when absent."""
        raise NotImplementedError

    def head(self, key):
        """ObjectInfo of ``key``, or None when absent."""
        raise NotImplementedError

    def list(self, prefix):
        """ObjectInfo of every object whose key starts with ``prefix``, sorted."""
        raise NotImplementedError

    def list_dirs(self, prefix):
        """Names of the immediate 'directories' below ``prefix`` (ending in '/')."""
        raise NotImplementedError

    def delete(self, keys):
        """Delete the given keys; absent keys are not an error."""
        raise NotImplementedError

    def archived_objects(self, prefix):
        """{key: storage class} of objects under prefix that must be thawed before they
        can be read (S3 GLACIER / DEEP_ARCHIVE); none on storage without such classes."""
        return {}

    def request_thaw(self, key, days, tier):
        """Ask for a readable copy of an archived object; True when it is readable now."""
        return True

    def stored_sha256(self, key):
        """SHA-256 (hex) of a stored object: from metadata when known, else by reading it."""
        info = self.head(key)
        if info is None:
            return None
        if info.sha256:
            return info.sha256
        return hashlib.sha256(self.get(key)).hexdigest()


def file_sha256(path, block=4 * 1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(block)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()
