# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The staged restore's state file: which stage ran, on what, with what outcome.

One JSON object, one record per stage (``plan``, ``staged``, ``recovered``,
``verified``, ``cutover``, ``rollback``), written by whoever runs the stage (root,
through the pg_restore_stage module) as a whole new file: 0600, synced, renamed into
place, so that a crash leaves the old state or the new one, never half of each. It is
read only when it is a regular file of that same user, in a directory that user alone
(or root) can change, up to /: the PostgreSQL user cannot put a state of its own there,
nor swap in an older one (``require_private``).

Cutover acts on what the state vouches for, so the rules that keep it honest live here,
once: a stage recorded anew makes the records that depended on the old one stale
(``STALE_AFTER``), and they are dropped with it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import stat

from . import atomicfile
from .errors import ConfigError

VERSION = 1

# The records a new record of a stage makes stale: another plan (point or backup) has no
# copy yet; a copy written again is neither recovered nor verified; a copy started again
# was not verified as it runs now. cutover and rollback stay: rollback needs them.
STALE_AFTER = {
    "plan": ("staged", "recovered", "verified"),
    "staged": ("recovered", "verified"),
    "recovered": ("verified",),
}


class RestoreState(object):
    """The records of one staged restore, read from and written to ``path``."""

    def __init__(self, path, records=None):
        self.path = path
        self.records = dict(records or {})

    @classmethod
    def load(cls, path):
        """The state in ``path``; empty when the file does not exist. Only a regular file
        owned by this process's user is read (not a link, a FIFO, or a file another user
        put there: cutover acts on what it says); one that is not a JSON object is an error
        that names it (nothing is guessed)."""
        require_private(os.path.dirname(os.path.abspath(path)))
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOENT:
                return cls(path)
            raise _invalid(path, "cannot be opened (%s); a link is never followed" % exc)
        with os.fdopen(descriptor) as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                found = (os.geteuid(), info.st_uid, info.st_mode)
                raise _invalid(path, "is not a regular file owned by uid %d (uid %d, mode "
                               "%o): pgdr did not write it" % found)
            try:
                records = json.load(handle)
            except ValueError as exc:
                raise _invalid(path, "is not JSON (%s)" % exc)
        if not isinstance(records, dict):
            raise _invalid(path, "holds %s, expected a JSON object" % type(records).__name__)
        return cls(path, records)

    def get(self, stage, default=None):
        value = self.records.get(stage)
        return default if value is None else value

    def record(self, stage, value, fresh=True):
        """Put a stage's record in. ``fresh`` says the stage did its work again (wrote the
        copy, started the server): then the records that depended on the old one go."""
        self.records[stage] = value
        if fresh:
            for stale in STALE_AFTER.get(stage, ()):
                self.records.pop(stale, None)

    def forget(self, *stages):
        """Drop these records and write the state at once, when there was any of them."""
        if any(stage in self.records for stage in stages):
            for stage in stages:
                self.records.pop(stage, None)
            self.save()

    def as_dict(self):
        """The records with the format's version ({} while nothing was recorded)."""
        if not self.records:
            return {}
        return dict(self.records, version=self.records.get("version", VERSION))

    def save(self):
        """Write the whole state: a new 0600 file of a name nobody can foresee, synced,
        renamed over the old one (a link there is replaced, never followed), then the
        directory synced."""
        directory = os.path.dirname(os.path.abspath(self.path))
        body = json.dumps(self.as_dict(), indent=4, sort_keys=True) + "\n"
        require_private(directory)
        try:
            _make_private_dirs(directory)  # created with the first record, not before
            atomicfile.replace(self.path, body, mode=0o600)
        except (IOError, OSError) as exc:
            raise ConfigError("cannot write the restore state file %s: %s" % (self.path, exc),
                              code="restore_state_invalid", stage="state")


def require_private(directory):
    """ConfigError unless directory and every directory above it (as named, and as links
    resolve) can be changed by root or this process's user alone: owned by one of them and
    not writable by group or others, unless sticky (/tmp: others cannot replace what is
    not theirs). Parts that do not exist yet are skipped: save creates them 0700."""
    path = os.path.abspath(directory)
    for chain in (path, os.path.realpath(path)):
        current = chain
        while True:
            problem = _unsafe(current)
            if problem:
                raise ConfigError(
                    "the restore state directory %s is not private: %s is %s. Whoever can "
                    "change it could make cutover act on a state of their own; use a "
                    "directory only root can write (the default /var/lib/pgdr-restore)"
                    % (directory, current, problem), code="restore_state_invalid",
                    stage="state")
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent


def _unsafe(path):
    """Why path (not followed) lets another user change what is below it, else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None  # not there (yet), or not for us to see: the writes then fail loudly
    if stat.S_ISLNK(info.st_mode):
        return None  # its directory is checked on this chain, its target on the resolved one
    if info.st_uid not in (0, os.geteuid()):
        return "owned by uid %d" % info.st_uid
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        return "writable by group or others (mode %o)" % stat.S_IMODE(info.st_mode)
    return None


def _make_private_dirs(directory):
    """Create directory and any missing parent, each 0700 whatever the umask."""
    if os.path.isdir(directory):
        return
    _make_private_dirs(os.path.dirname(directory))
    os.mkdir(directory, 0o700)
    os.chmod(directory, 0o700)


def _invalid(path, why):
    return ConfigError("the restore state file %s %s: move it away and plan again"
                       % (path, why), code="restore_state_invalid", stage="state")
