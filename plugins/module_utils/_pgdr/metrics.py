# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics of the protection itself, as a Prometheus textfile on each node.

One file per cluster, ``<metrics_textfile_dir>/pgdr_<cluster>.prom``, read by the node
exporter's textfile collector. Every writer (backup, expire, the wal-push worker at the
end of each batch, ``pgdr metrics`` from the one-minute cron job) reads the file back,
changes the series it knows about and renames a new file into place (temporary file +
rename: the collector never reads half a file), under a lock file so two writers do not
lose each other's changes. So a backup's failure stays in the file after the next cron
run, and the cron run refreshes what the repository and PostgreSQL say.

The drill writes its own file (``pgdr drill --textfile``) with the same renderer.

Writing metrics never fails the operation that records them (``record``): a node
without the textfile directory, or one the user cannot write, only loses the metrics.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time

from . import atomicfile

# name: (type, help). Every series written has a HELP and a TYPE line from here.
FAMILIES = {
    "pgdr_backup_last_success_timestamp_seconds": (
        "gauge", "End of the newest complete backup of the cluster, per type."),
    "pgdr_backup_last_size_bytes": (
        "gauge", "Bytes of the cluster read by the newest complete backup, per type."),
    "pgdr_backup_last_stored_bytes": (
        "gauge", "Bytes stored in the repository by the newest complete backup, per type."),
    "pgdr_backup_last_duration_seconds": (
        "gauge", "Duration of the newest complete backup, per type."),
    "pgdr_backup_last_failure_timestamp_seconds": (
        "gauge", "When a backup of this type last failed on this node."),
    "pgdr_backup_last_failure_info": (
        "gauge", "1, labelled with the error code and exit code of the last failed backup "
        "of this type on this node."),
    "pgdr_backup_max_age_seconds": (
        "gauge", "Age of the newest backup above which it is too old (the schedule's "
        "interval plus a margin; BackupTooOld)."),
    "pgdr_expire_last_success_timestamp_seconds": (
        "gauge", "When pgdr expire last succeeded on this node."),
    "pgdr_expire_last_failure_timestamp_seconds": (
        "gauge", "When pgdr expire last failed on this node."),
    "pgdr_expire_last_failure_info": (
        "gauge", "1, labelled with the error code of the last failed pgdr expire."),
    "pgdr_archive_last_segment_info": (
        "gauge", "1, labelled with the name of the last WAL file archived."),
    "pgdr_archive_last_success_timestamp_seconds": (
        "gauge", "When a WAL file was last archived."),
    "pgdr_archive_last_failure_timestamp_seconds": (
        "gauge", "When archiving a WAL file last failed."),
    "pgdr_archive_failures_total": (
        "counter", "Failed archive_command calls since the statistics were reset "
        "(pg_stat_archiver.failed_count)."),
    "pgdr_archive_pending_segments": (
        "gauge", "WAL files waiting to be archived (.ready files in "
        "pg_wal/archive_status)."),
    "pgdr_archive_oldest_pending_age_seconds": (
        "gauge", "Age of the oldest WAL file waiting to be archived (0 when none)."),
    "pgdr_rpo_seconds": (
        "gauge", "Recovery point now: seconds of changes not yet in the repository (the "
        "archive lag, else the age of the newest backup)."),
    "pgdr_rpo_objective_seconds": ("gauge", "Declared recovery point objective."),
    "pgdr_rpo_objective_met": (
        "gauge", "1 when the recovery point now is within the objective, else 0."),
    "pgdr_repository_up": (
        "gauge", "1 when the repository answered the last metrics run, else 0."),
    "pgdr_metrics_last_run_timestamp_seconds": (
        "gauge", "When pgdr metrics last refreshed this file."),
    "pgdr_drill_last_timestamp_seconds": ("gauge", "End of the last restore drill."),
    "pgdr_drill_success": ("gauge", "1 when the last drill's checks all passed."),
    "pgdr_drill_rto_seconds": ("gauge", "Measured RTO of the last drill."),
    "pgdr_drill_rpo_seconds": (
        "gauge", "Gap between the point asked for and the point recovered."),
    "pgdr_drill_objective_met": (
        "gauge", "1 when the last drill met the declared objective, per objective."),
}
LOCK_WAIT = 5.0  # seconds a writer waits for another one to finish
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)\s*$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Samples(object):
    """The series of one textfile: {name: {labels tuple: value}}."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.series = {}

    def set(self, name, value, replace=(), **labels):
        """Set a series (labels plus cluster). ``replace``: label names; the family's other
        series that agree on those labels go (an info series keeps one value per type)."""
        if name not in FAMILIES:
            raise KeyError("undeclared metric %s" % name)
        labels = dict(labels, cluster=self.cluster)
        family = self.series.setdefault(name, {})
        if replace:
            for key in list(family):
                old = dict(key)
                if all(old.get(r) == labels.get(r) for r in replace):
                    del family[key]
        family[tuple(sorted((k, str(v)) for k, v in labels.items()))] = float(value)

    def drop(self, name):
        self.series.pop(name, None)

    def get(self, name, **labels):
        labels = dict(labels, cluster=self.cluster)
        return self.series.get(name, {}).get(tuple(sorted(labels.items())))

    def parse(self, text):
        """Read back a file this module wrote (unknown or malformed lines are dropped)."""
        for line in text.splitlines():
            match = SAMPLE.match(line)
            if not match or line.startswith("#") or match.group(1) not in FAMILIES:
                continue
            try:
                value = float(match.group(3))
            except ValueError:
                continue
            labels = tuple(sorted((k, _unescape(v))
                                  for k, v in LABEL.findall(match.group(2) or "")))
            self.series.setdefault(match.group(1), {})[labels] = value
        return self

    def render(self):
        lines = []
        for name in sorted(self.series):
            if not self.series[name]:
                continue
            kind, text = FAMILIES[name]
            lines += ["# HELP %s %s" % (name, text), "# TYPE %s %s" % (name, kind)]
            for labels, value in sorted(self.series[name].items()):
                lines.append("%s{%s} %s" % (name, ",".join(
                    '%s="%s"' % (k, _escape(v)) for k, v in labels), _number(value)))
        return ("\n".join(lines) + "\n").encode("utf-8")


def _escape(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value):
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _number(value):
    if value == int(value) and abs(value) < 1e15:
        return "%d" % value
    return "%.3f" % value


def write_atomic(path, data, mode=0o644):
    """Write a file whole or not at all, mode whatever the umask (the exporter's user
    reads it); not synced: the next run writes it again."""
    atomicfile.replace(path, data, mode=mode, durable=False)


def textfile_path(settings):
    return os.path.join(settings.metrics_textfile_dir, "pgdr_%s.prom" % settings.cluster)


def update(settings, change):
    """Read the cluster's textfile, apply change(samples), write it back atomically, under
    a lock file. Raises OSError (no directory, no permission)."""
    path = textfile_path(settings)
    lock = _lock(os.path.join(settings.metrics_textfile_dir, ".pgdr_%s.lock" % settings.cluster))
    try:
        samples = Samples(settings.cluster)
        try:
            with open(path, "rb") as handle:
                samples.parse(handle.read().decode("utf-8", "replace"))
        except (IOError, OSError):
            pass  # none yet (or unreadable: written afresh)
        change(samples)
        write_atomic(path, samples.render())
    finally:
        if lock is not None:
            lock.close()
    return path


def _lock(path, wait=None):
    """The lock file, held; None when it cannot be had within ``wait`` seconds (then the
    write goes ahead unlocked: a lost update of a metric, never a stalled archive_command
    or backup behind a lock someone else holds)."""
    try:
        import fcntl
        handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o664), "a")
    except (ImportError, IOError, OSError):
        return None
    deadline = time.time() + (LOCK_WAIT if wait is None else wait)
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except (IOError, OSError):
            if time.time() >= deadline:
                handle.close()
                return None
            time.sleep(0.05)


def record(settings, change):
    """update() for the operations' hooks: never raises; False when nothing was written
    (no directory configured or present, no permission, or a bug here)."""
    if not (settings.metrics_textfile_dir and settings.cluster
            and os.path.isdir(settings.metrics_textfile_dir)):
        return False
    try:
        update(settings, change)
    except Exception:  # metrics must never fail a backup or an archive_command
        return False
    return True


def _epoch(text):
    import calendar
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def backup_series(samples, manifest):
    """The series of a complete backup (from its manifest or summary)."""
    kind = manifest["type"]
    samples.set("pgdr_backup_last_success_timestamp_seconds", _epoch(manifest["stop_time"]),
                type=kind)
    samples.set("pgdr_backup_last_size_bytes", manifest.get("size") or 0, type=kind)
    samples.set("pgdr_backup_last_stored_bytes", manifest.get("stored_size") or 0, type=kind)
    samples.set("pgdr_backup_last_duration_seconds", manifest.get("duration") or 0, type=kind)


def failure_series(samples, prefix, exc, **labels):
    code = getattr(exc, "code", None) or "internal"
    exit_code = getattr(exc, "exit_code", 1)
    samples.set(prefix + "_last_failure_timestamp_seconds", time.time(), **labels)
    samples.set(prefix + "_last_failure_info", 1, replace=tuple(labels) or ("cluster",),
                code=code, exit_code=exit_code, **labels)


def backup_done(settings, manifest):
    return record(settings, lambda s: backup_series(s, manifest))


def backup_failed(settings, kind, exc):
    return record(settings, lambda s: failure_series(s, "pgdr_backup", exc, type=kind))


def expire_done(settings):
    return record(settings, lambda s: s.set("pgdr_expire_last_success_timestamp_seconds",
                                            time.time()))


def expire_failed(settings, exc):
    return record(settings, lambda s: failure_series(s, "pgdr_expire", exc))


def archive_batch(settings, pushed, failed):
    """End of a wal-push worker batch: names stored, and whether any failed."""
    segments = sorted(n for n in pushed if len(n) == 24)

    def change(samples):
        now = time.time()
        if segments:
            samples.set("pgdr_archive_last_segment_info", 1, replace=("cluster",),
                        segment=segments[-1])
        if pushed:
            samples.set("pgdr_archive_last_success_timestamp_seconds", now)
        if failed:
            samples.set("pgdr_archive_last_failure_timestamp_seconds", now)
    return record(settings, change)


def archive_series(samples, archive):
    """The server's archiver state (postgres.session.archive_lag)."""
    if archive.get("last_archived_wal"):
        samples.set("pgdr_archive_last_segment_info", 1, replace=("cluster",),
                    segment=archive["last_archived_wal"])
    for key, name in (("last_archived_time", "pgdr_archive_last_success_timestamp_seconds"),
                      ("last_failed_time", "pgdr_archive_last_failure_timestamp_seconds")):
        if archive.get(key) is not None:
            # never older than what a wal-push worker recorded since
            samples.set(name, max(archive[key], samples.get(name) or 0))
    samples.set("pgdr_archive_failures_total", archive.get("failed_count") or 0)
    samples.set("pgdr_archive_pending_segments", archive.get("pending_segments") or 0)
    samples.set("pgdr_archive_oldest_pending_age_seconds",
                archive.get("lag_seconds") or 0 if archive.get("pending_segments") else 0)


def drill_series(samples, report, finished):
    """A drill report's series (commands/drill.py)."""
    samples.set("pgdr_drill_last_timestamp_seconds", round(finished))
    samples.set("pgdr_drill_success", 1 if report["success"] else 0)
    samples.set("pgdr_drill_rto_seconds", report["rto_seconds"])
    if report.get("rpo_seconds") is not None:
        samples.set("pgdr_drill_rpo_seconds", report["rpo_seconds"])
    for name, value in sorted((report.get("objectives") or {}).items()):
        samples.set("pgdr_drill_objective_met", 1 if value["met"] else 0, objective=name)
