# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The staged restore's state file: which stage ran, on what, with what outcome.

One JSON object, one record per stage (``plan``, ``staged``, ``recovered``,
``verified``, ``cutover``, ``rollback``), written by whoever runs the stage (root,
through the pg_restore_stage module) as a whole new file: 0600, synced, renamed into
place, so that a crash leaves the old state or the new one, never half of each.

Cutover acts on what the state vouches for, so the rules that keep it honest live here,
once: a stage recorded anew makes the records that depended on the old one stale
(``STALE_AFTER``), and they are dropped with it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from .errors import ConfigError

VERSION = 1

# The records a new record of a stage makes stale: a copy written again is neither
# recovered nor verified; a copy started again was not verified as it runs now.
STALE_AFTER = {
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
        """The state in ``path``; empty when the file does not exist. A file that is not
        a JSON object is an error that names it (nothing is guessed)."""
        try:
            with open(path) as handle:
                records = json.load(handle)
        except (IOError, OSError) as exc:
            if not os.path.exists(path):
                return cls(path)
            raise ConfigError("cannot read the restore state file %s: %s" % (path, exc),
                              code="restore_state_invalid", stage="state")
        except ValueError as exc:
            raise ConfigError("the restore state file %s is not JSON (%s): move it away and "
                              "plan again" % (path, exc), code="restore_state_invalid",
                              stage="state")
        if not isinstance(records, dict):
            raise ConfigError("the restore state file %s holds %s, expected a JSON object"
                              % (path, type(records).__name__), code="restore_state_invalid",
                              stage="state")
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

    def drop(self, *stages):
        for stage in stages:
            self.records.pop(stage, None)

    def as_dict(self):
        return dict(self.records, version=self.records.get("version", VERSION))

    def save(self):
        """Write the whole state: a new 0600 file, synced, then renamed over the old one."""
        directory = os.path.dirname(self.path) or "."
        temporary = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(self.path),
                                                            os.getpid()))
        body = json.dumps(self.as_dict(), indent=4, sort_keys=True) + "\n"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.rename(temporary, self.path)
        except (IOError, OSError) as exc:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise ConfigError("cannot write the restore state file %s: %s" % (self.path, exc),
                              code="restore_state_invalid", stage="state")
