# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storage interface every backend implements.

Keys are '/'-separated and relative to the repository root; backends add
their own prefix. Objects are written whole and atomically: a reader never
sees half an object. ``if_absent`` makes a write fail with Conflict instead of
replacing an existing object: it is how immutable objects stay immutable.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import sys

from ..errors import IntegrityError


class ObjectInfo(object):
    __slots__ = ("key", "size", "sha256", "mtime")

    def __init__(self, key, size, sha256=None, mtime=None):
        self.key = key
        self.size = size
        self.sha256 = sha256  # hex, when the backend knows it without reading
        self.mtime = mtime    # seconds since the epoch when the object was stored


class Storage(object):
    """Abstract repository storage.

    Every object is written with its SHA-256 recorded beside it (S3 metadata, a posix
    sidecar), and every read is verified: against the digest the caller expects, else
    against the recorded one. An object with neither is refused (checksum_missing); a
    read that does not match is done again once, and two complete reads that fail are
    reported as damage (checksum_mismatch).
    """

    #: one line per retry or re-read; open_storage(settings, events=progress.event)
    events = None

    def describe(self):
        """Where the repository is, for messages (no secrets)."""
        raise NotImplementedError

    def check(self):
        """Fail fast with a clear RepositoryError when the repository is unusable."""
        raise NotImplementedError

    def put(self, key, data, sha256=None, if_absent=False):
        """Store ``data`` (bytes) under ``key`` with its SHA-256 recorded. With if_absent
        an existing object is never replaced: the same bytes already there return False
        (nothing written; also how a retry after a lost answer ends), other bytes are a
        Conflict. True when written."""
        raise NotImplementedError

    def put_file(self, key, path, sha256=None, if_absent=False):
        """Store a local file (large files in parallel parts where supported); returns
        and refuses as put() does."""
        raise NotImplementedError

    def get(self, key, sha256=None):
        """The bytes of ``key``, verified against ``sha256`` (hex) when given, else
        against the SHA-256 recorded when it was written; NotFound when absent,
        IntegrityError checksum_missing / checksum_mismatch when it cannot be trusted."""
        expected = sha256.lower() if sha256 else None
        first = None
        for attempt in (1, 2):
            data, recorded = self._fetch(key)
            want = expected or (recorded.lower() if recorded else None)
            if not want:
                raise IntegrityError(
                    "object %s in %s has no recorded SHA-256 and none was expected: pgdr "
                    "writes every object with one, so this one was not written by pgdr "
                    "(replaced by hand?) and is not trusted" % (key, self.describe()),
                    code="checksum_missing", key=key)
            actual = hashlib.sha256(data).hexdigest()
            if actual == want:
                return data
            if attempt == 1:
                first = (actual, len(data))
                self._event("read of %s did not match its SHA-256 (%s... instead of %s..., "
                            "%d bytes): reading it again" % (key, actual[:12], want[:12],
                                                             len(data)))
        raise IntegrityError(
            "object %s in %s is damaged: two complete reads gave SHA-256 %s... (%d bytes) "
            "and %s... (%d bytes), %s... expected" % (key, self.describe(), first[0][:12],
                                                      first[1], actual[:12], len(data),
                                                      want[:12]),
            code="checksum_mismatch", key=key, expected_sha256=want, actual_sha256=actual,
            size=len(data))

    def _fetch(self, key):
        """(bytes, recorded SHA-256 hex or None) of ``key``, unverified; NotFound when
        absent. Backends implement this; callers use get()."""
        raise NotImplementedError

    def _event(self, message):
        if self.events is not None:
            self.events(message)
        else:
            sys.stderr.write("pgdr: %s\n" % message)
            sys.stderr.flush()

    def head(self, key):
        """ObjectInfo of ``key`` (with the recorded SHA-256), or None when absent."""
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

    def encrypted(self, cluster, create=True):
        """Whether ``cluster``'s objects are encrypted (storage/sealed.py wraps every
        backend open_storage returns); a bare backend never encrypts."""
        return False

    def plain_head(self, key):
        """head() as the caller's bytes: an encrypted object's size and SHA-256 are those
        of its plaintext (read to know them)."""
        return self.head(key)

    def stored_sha256(self, key):
        """SHA-256 (hex) of a stored object: the recorded one, else (an object without
        one) the digest of its bytes as read, to compare with a local copy."""
        info = self.head(key)
        if info is None:
            return None
        if info.sha256:
            return info.sha256
        return hashlib.sha256(self._fetch(key)[0]).hexdigest()


def file_sha256(path, block=4 * 1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(block)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()
