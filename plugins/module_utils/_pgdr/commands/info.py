# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backups of a cluster, as data."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..catalog import Catalog
from ..storage import open_storage
from .backup import summarize


def run(settings, progress=None, dry_run=False):
    settings.require("cluster")
    storage = open_storage(settings)
    storage.check()
    complete, incomplete = Catalog(storage, settings.cluster).scan()
    backups = [summarize(m) for m in complete]
    return {
        "changed": False,
        "cluster": settings.cluster,
        "repository": storage.describe(),
        "backups": backups,
        "latest": backups[-1] if backups else None,
        "incomplete": incomplete,
    }
