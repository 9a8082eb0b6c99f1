# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named points where the fault-injection tests kill the process (kill -9).

``reached(name)`` does nothing unless the environment variable PGDR_FAULT_POINT
names that point: then the process sends itself SIGKILL there, exactly as an
OOM kill or a power cut would stop it. Every point is declared once in POINTS,
so a test cannot ask for one that the code never reaches.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal

ENV = "PGDR_FAULT_POINT"

# one line each, sorted: <verb>.<step>
POINTS = (
    "backup.after_bundles",
    "backup.after_manifest",
    "backup.after_snapshots",
    "backup.before_manifest",
    "expire.mid_delete",
    "restore.fetch",
    "restore.finish",
    "wal_fetch.mid_write",
    "wal_push.after_put",
    "wal_push.before_put",
)


def reached(name):
    """Kill this process when PGDR_FAULT_POINT names this point."""
    if name not in POINTS:
        raise ValueError("undeclared fault point %r" % name)
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
