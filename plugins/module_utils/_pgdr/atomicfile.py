# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replace a small file whole or not at all: the one way the engine writes its state,
records, caches and reports.

The data go to a temporary file in the same directory, which is renamed over the file: a
reader sees the old content or the new one, never a part. The temporary file is removed
when anything fails. By default its name cannot be foreseen and it is created exclusively
(a link planted at a guessed name is never followed), and the write is durable: the file
is synced before the rename and the directory after it, so that a crash leaves the old
file or the new one, not an empty one. Caches that only cost work when lost pass
durable=False.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os


def replace(path, data, mode=0o600, durable=True, owner=None, tmp=None):
    """Replace path with data (bytes, or text written as UTF-8), with permissions mode
    (whatever the umask; None: 0600 for an unforeseeable temporary name, else what the
    umask leaves of 0666) and, when given, owner (uid, gid). tmp: the temporary file's
    name, for writers whose readers recognise it (a cleanup that knows the pattern); it is
    created without following a link there."""
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    if tmp is None:
        import tempfile  # here: wal-fetch's fast path (walready.py) must start in a few ms
        descriptor, tmp = tempfile.mkstemp(dir=directory,
                                           prefix="." + os.path.basename(path) + ".")
    else:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                             0o666 if mode is None else mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            if owner:
                os.fchown(handle.fileno(), owner[0], owner[1])
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.rename(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            _remove(tmp)
    if durable:
        sync(directory)


def sync(path):
    """Write a file's data, or a directory's renames and creations, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
