# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgdr metrics``: refresh the node's Prometheus textfile (the one-minute cron job).

From the repository: the newest complete backup per type (time, size, duration) and
whether the repository answers; from the local PostgreSQL: pg_stat_archiver and
pg_wal/archive_status (last archived segment and time, failures, pending files and the
oldest one's age); from both: the recovery point now against rpo_objective. A repository
or a server that does not answer is a value (pgdr_repository_up 0; the archive series
keep their last values), not a failure: the command fails only when it cannot write the
file. Failures recorded by backups and expiry stay in the file.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from .. import metrics
from ..errors import ConfigError, PgdrError


def run(settings, progress=None, dry_run=False):
    settings.require("cluster", "metrics_textfile_dir")
    if not os.path.isdir(settings.metrics_textfile_dir):
        raise ConfigError("metrics_textfile_dir %s is not a directory: install "
                          "prometheus-node-exporter (its textfile directory) or set "
                          "metrics_textfile_dir" % settings.metrics_textfile_dir,
                          code="metrics_dir_missing", stage="config")
    found = collect(settings)
    if dry_run:
        return dict(found, changed=False, textfile=metrics.textfile_path(settings))
    try:
        path = metrics.update(settings, lambda samples: apply(samples, settings, found))
    except (IOError, OSError) as exc:
        raise ConfigError("cannot write the metrics textfile in %s: %s"
                          % (settings.metrics_textfile_dir, exc.strerror or exc),
                          code="metrics_write_failed", stage="metrics")
    return dict(found, changed=True, textfile=path)


def collect(settings):
    """What the repository and the server say now (never raises a PgdrError)."""
    from .backup import summarize
    from .info import _archive_state, assess
    found = {"repository_up": False, "backups": {}, "archive": None}
    backups = []
    try:
        from ..catalog import Catalog
        from ..storage import open_storage
        storage = open_storage(settings)
        storage.check()
        backups = [summarize(m) for m in Catalog(storage, settings.cluster).scan()[0]]
        found["repository_up"] = True
    except PgdrError as exc:
        found["repository_error"] = exc.msg
    for backup in backups:  # oldest first: the newest of each type wins
        found["backups"][backup["type"]] = backup
    found["archive"] = _archive_state(settings)
    found["objectives"] = {"rpo": assess(settings, backups, found["archive"], None)["rpo"]}
    return found


def apply(samples, settings, found):
    samples.set("pgdr_repository_up", 1 if found["repository_up"] else 0)
    samples.set("pgdr_metrics_last_run_timestamp_seconds", time.time())
    if settings.backup_max_age:
        samples.set("pgdr_backup_max_age_seconds", settings.backup_max_age)
    if found["repository_up"]:
        for kind in ("full", "diff", "incr"):
            if kind in found["backups"]:
                metrics.backup_series(samples, found["backups"][kind])
            else:  # expired or never taken: no stale value
                for name in ("pgdr_backup_last_success_timestamp_seconds",
                             "pgdr_backup_last_size_bytes", "pgdr_backup_last_stored_bytes",
                             "pgdr_backup_last_duration_seconds"):
                    samples.series.get(name, {}).pop(
                        tuple(sorted({"cluster": settings.cluster, "type": kind}.items())),
                        None)
    archive = found["archive"]
    if archive.get("available"):
        metrics.archive_series(samples, archive)
    rpo = found["objectives"]["rpo"]
    if rpo["value"] is not None:
        samples.set("pgdr_rpo_seconds", rpo["value"])
    if rpo["objective"] is not None:
        samples.set("pgdr_rpo_objective_seconds", rpo["objective"])
        samples.set("pgdr_rpo_objective_met", 1 if rpo["met"] else 0)
