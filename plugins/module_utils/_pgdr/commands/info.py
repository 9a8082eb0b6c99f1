# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backups of a cluster, its recoverable window and its archive lag, as data."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ..catalog import Catalog
from ..errors import PgdrError
from ..postgres.session import archive_lag
from ..recovery import Planner
from ..storage import open_storage
from .backup import summarize


def run(settings, progress=None, dry_run=False):
    settings.require("cluster")
    storage = open_storage(settings)
    storage.check()
    catalog = Catalog(storage, settings.cluster)
    complete, incomplete = catalog.scan()
    backups = [summarize(m) for m in complete]
    checked = None
    if settings.verify and backups:
        from . import verify
        checked = verify.run(settings, progress or _quiet(), dry_run)
    return {
        "verified": checked,
        "changed": False,
        "cluster": settings.cluster,
        "repository": storage.describe(),
        "backups": backups,
        "latest": backups[-1] if backups else None,
        "incomplete": incomplete,
        "window": Planner(storage, catalog, settings.cluster).window(),
        "archive": _archive_state(settings),
    }


def _quiet():
    from ..progress import Progress
    return Progress()


def _archive_state(settings):
    """The server's archiver state when the server answers; why not, otherwise (info
    also runs where no server is, for example on a controller)."""
    try:
        state = archive_lag(settings)
    except PgdrError as exc:
        return {"available": False, "reason": exc.msg}
    state["available"] = True
    state["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return state
