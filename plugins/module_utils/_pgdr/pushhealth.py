# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What keeps the asynchronous wal-push worker honest.

- ``fingerprint(settings)``: the content of the config and credentials files a run read.
  The worker compares it before every batch and exits when it changed (re-running setup,
  rotated credentials): the next wal-push starts a worker with the new settings, so a
  failed batch is never retried with stale ones.
- ``FailureLog``: a persistent failure is logged once a minute, with how many pushes failed
  since it began, not once a segment; the first success after it is logged once. Its
  state lives in the spool directory, so it spans workers (a failing worker exits after
  archive_idle seconds and the next call starts another).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import time

from . import atomicfile

LOG_INTERVAL = 60.0
STATE_FILE = "failing.json"


def fingerprint(settings):
    """sha256 of each settings file's content (None when absent or unreadable)."""
    out = []
    for path in (settings.config_file, settings.credentials_file):
        digest = None
        if path:
            try:
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            except (IOError, OSError):
                digest = None
        out.append((path, digest))
    return tuple(out)


def log(line):
    """One timestamped line to the worker's log (its stderr: spool.spawn points it there)."""
    os.write(2, ("%s pgdr wal-push worker: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                    line)).encode("utf-8", "replace"))


class FailureLog(object):
    """Rate-limited failure reporting of the push worker, shared through the spool."""

    def __init__(self, directory, clock=time.time, write=log):
        self.path = os.path.join(directory, STATE_FILE)
        self.clock = clock
        self.write = write

    def _load(self):
        try:
            with open(self.path) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError):
            return None

    def _save(self, state):
        atomicfile.replace(self.path, json.dumps(state), mode=None, durable=False,
                           tmp="%s.tmp.%d" % (self.path, os.getpid()))

    def failed(self, failures):
        """failures: [(name, message)] of one batch. Logs at most once a LOG_INTERVAL."""
        now = self.clock()
        state = self._load() or {"since": now, "count": 0, "logged": None}
        state["count"] += len(failures)
        name, message = failures[-1]
        if state["logged"] is None or now - state["logged"] >= LOG_INTERVAL:
            self.write("archiving FAILING since %s: %d push(es) failed (%d in this batch); "
                       "last: %s: %s; logged again in %d s while it lasts"
                       % (time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(state["since"])),
                          state["count"], len(failures), name, message, LOG_INTERVAL))
            state["logged"] = now
        self._save(state)

    def succeeded(self):
        """The first success after a failure says so, once."""
        state = self._load()
        if state is None:
            return
        self.write("archiving recovered: %d push(es) had failed over %.0f s"
                   % (state["count"], self.clock() - state["since"]))
        try:
            os.unlink(self.path)
        except OSError:
            pass
