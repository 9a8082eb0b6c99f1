# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovery points: the ``point`` grammar and the plan that reaches one.

Grammar (docs/restore-points.md)::

    latest                     the end of the archive (or the newest backup's end
                               when nothing was archived after it)
    immediate                  the newest backup's consistency point
    <backup id> | backup:<id>  that backup's consistency point
    <ISO 8601 time> | time:..  recovery_target_time; a time without a zone is UTC
    <X/Y> | lsn:X/Y            recovery_target_lsn
    <digits> | xid:<n>         recovery_target_xid (the 32-bit transaction id)
    name:<restore point>       recovery_target_name

The plan picks the newest backup that ends before the target, then checks
that the archive holds every segment from that backup to the target (or to
the end of the archive when the target's position is not known in advance),
following timeline switches through history files. An unreachable point is
refused before anything is written, and the error names the reachable window.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

from .archive import ArchiveIndex
from .errors import ConfigError, NotFound
from .postgres.wal import format_lsn, parse_lsn, segment_name

_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
                   r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$", re.I)
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-(full|diff|incr)$")
GRAMMAR = ("latest, immediate, a backup id (20261124T060012Z-full), an ISO 8601 time "
           "(2026-11-24T06:15:00Z; no zone means UTC), an LSN (0/16B3740), a transaction "
           "id (xid:1234 or 1234) or a restore point (name:before_upgrade)")


class Point(object):
    def __init__(self, kind, value=None, text=None):
        self.kind = kind      # latest, immediate, backup, time, lsn, xid, name
        self.value = value    # datetime (UTC), int LSN, int xid, str
        self.text = text

    def describe(self):
        return self.text or self.kind


def parse_point(text):
    """A Point from the user's text, or ConfigError naming the value and the grammar."""
    raw = (text or "latest").strip()
    prefix, sep, rest = raw.partition(":")
    if sep and prefix.lower() in ("backup", "time", "lsn", "xid", "name"):
        kind, body = prefix.lower(), rest.strip()
    else:
        kind, body = None, raw
    try:
        if kind is None:
            if body.lower() in ("latest", "immediate"):
                return Point(body.lower(), text=raw)
            if _BACKUP_ID.match(body):
                return Point("backup", body, raw)
            if _LSN.match(body):
                return Point("lsn", parse_lsn(body), raw)
            if body.isdigit():
                return _xid(body, raw)
            if _TIME.match(body):
                return Point("time", parse_time(body), raw)
        elif kind == "backup" and body:
            return Point("backup", body, raw)
        elif kind == "time":
            return Point("time", parse_time(body), raw)
        elif kind == "lsn":
            return Point("lsn", parse_lsn(body), raw)
        elif kind == "xid":
            return _xid(body, raw)
        elif kind == "name" and body:
            if len(body) >= 64:
                raise ValueError("restore point names are shorter than 64 bytes")
            return Point("name", body, raw)
    except (ValueError, ConfigError) as exc:
        raise ConfigError("point=%r is not valid (%s); expected %s"
                          % (raw, getattr(exc, "msg", exc), GRAMMAR),
                          code="point_invalid", stage="plan")
    raise ConfigError("point=%r is not valid; expected %s" % (raw, GRAMMAR),
                      code="point_invalid", stage="plan")


def _xid(body, raw):
    value = int(body)
    if not 3 <= value < 2 ** 32:
        raise ValueError("a transaction id is a 32-bit number from 3")
    return Point("xid", value, raw)


def parse_time(text):
    """An aware UTC datetime; a time without a zone is read as UTC."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError("not an ISO 8601 time like 2026-11-24T06:15:00Z")
    date, clock, zone = match.groups()
    if clock.count(":") == 1:
        clock += ":00"
    seconds, dummy, fraction = clock.partition(".")
    moment = datetime.datetime.strptime(date + " " + seconds, "%Y-%m-%d %H:%M:%S")
    moment = moment.replace(microsecond=int((fraction or "0").ljust(6, "0")))
    offset = datetime.timedelta(0)
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    return (moment - offset).replace(tzinfo=_UTC)


class _Utc(datetime.tzinfo):
    def utcoffset(self, dt):
        return datetime.timedelta(0)

    def dst(self, dt):
        return datetime.timedelta(0)

    def tzname(self, dt):
        return "UTC"


_UTC = _Utc()


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def _stop_time(manifest):
    """When the backup ended: exact when recorded, else the end of its whole second."""
    if manifest.get("stop_epoch") is not None:
        return datetime.datetime.fromtimestamp(manifest["stop_epoch"], _UTC)
    return parse_time(manifest["stop_time"]) + datetime.timedelta(seconds=1)


class Plan(object):
    """What a restore will do to reach a point. ``recovery`` empty means no archive
    recovery: the backup's own WAL in pg_wal brings it to its consistency point
    (immediate, a backup id, or latest when nothing was archived after it)."""

    def __init__(self, point, backup, recovery, timeline=None, wal_needed=(), window=None):
        self.point = point
        self.backup = backup          # the manifest to restore
        self.recovery = recovery      # settings for postgresql.auto.conf, {} = none
        self.timeline = timeline
        self.wal_needed = list(wal_needed)
        self.window = window or {}

    def as_dict(self):
        return {"point": self.point.describe(), "kind": self.point.kind,
                "backup_id": self.backup["id"], "recovery": self.recovery,
                "timeline": self.timeline, "wal_segments": len(self.wal_needed),
                "window": self.window}


class Planner(object):
    def __init__(self, storage, catalog, cluster, inclusive=True, action="promote",
                 timeline="latest"):
        self.storage = storage
        self.catalog = catalog
        self.archive = ArchiveIndex(storage, cluster)
        self.inclusive = inclusive
        self.action = action
        self.timeline = str(timeline or "latest").lower()

    def plan(self, point):
        if point.kind == "backup":
            backup = self.catalog.manifest(point.value)
            self.catalog.check_chain(backup)
            return Plan(point, backup, {})
        complete = self.catalog.scan()[0]
        if not complete:
            raise NotFound("no complete backup of cluster %s in %s"
                           % (self.catalog.cluster, self.storage.describe()),
                           code="no_backup", stage="plan")
        if point.kind == "immediate":
            return Plan(point, complete[-1], {})
        backup = self._choose_backup(point, complete)
        timeline, path = self._timeline_path(backup)
        wal, end_segment = self._walk_archive(backup, path)
        window = self._window(complete, backup, wal, end_segment)
        if point.kind == "latest":
            if not wal:  # nothing archived after the backup: its own end is the latest
                return Plan(point, backup, {}, timeline, [], window)
            return Plan(point, backup, self._settings({}, timeline), timeline, wal, window)
        self._check_reachable(point, backup, wal, end_segment, window)
        targets = {"time": ("recovery_target_time",
                            lambda v: v.strftime("%Y-%m-%d %H:%M:%S.%f+00")),
                   "lsn": ("recovery_target_lsn", format_lsn),
                   "xid": ("recovery_target_xid", str),
                   "name": ("recovery_target_name", str)}
        setting, render = targets[point.kind]
        if point.kind == "lsn":
            wal = [w for w in wal if w[1] <= point.value // self._segment_size(backup)]
        return Plan(point, backup, self._settings({setting: render(point.value)}, timeline),
                    timeline, wal, window)

    def reachable_lsns(self, backup):
        """(low, high): LSNs reachable from this backup through the archive - from its
        end to the start of the last segment archived contiguously after it."""
        timeline, path = self._timeline_path(backup)
        wal = self._walk_archive(backup, path)[0]
        low = parse_lsn(backup["stop_lsn"])
        if not wal:
            return low, low
        return low, wal[-1][1] * self._segment_size(backup)

    def window(self):
        """The recoverable window: earliest and latest restorable points, and where
        the archive stops (with the first missing segment when later WAL exists)."""
        complete = self.catalog.scan()[0]
        if not complete:
            return None
        newest = complete[-1]
        timeline, path = self._timeline_path(newest)
        wal, end_segment = self._walk_archive(newest, path)
        window = self._window(complete, newest, wal, end_segment)
        window["timeline"] = timeline
        later = self._archived_after(end_segment, newest)
        window["gap_before"] = later
        if later:
            window["missing_segment"] = segment_name(
                [tli for tli, first in path if first <= end_segment][-1], end_segment,
                self._segment_size(newest))
        return window

    # -- pieces -------------------------------------------------------------------------
    def _settings(self, target, timeline):
        out = dict(target)
        out["recovery_target_timeline"] = str(timeline)
        out["recovery_target_action"] = self.action
        if target:
            out["recovery_target_inclusive"] = "true" if self.inclusive else "false"
        return out

    @staticmethod
    def _segment_size(backup):
        return int(backup["settings"].get("wal_segment_size", 16 * 1024 * 1024))

    def _choose_backup(self, point, complete):
        if point.kind == "time":
            fits = [m for m in complete if _stop_time(m) <= point.value]
            what = "time %s" % iso(point.value)
        elif point.kind == "lsn":
            fits = [m for m in complete if parse_lsn(m["stop_lsn"]) <= point.value]
            what = "LSN %s" % format_lsn(point.value)
        elif point.kind == "xid":
            # xid assigned after the backup's stop (>= its snapshot xmax) commit after
            # the backup is consistent; unknown xmax -> the oldest backup is safe
            fits = [m for m in complete
                    if m.get("stop_xmax") is not None and (m["stop_xmax"] & 0xFFFFFFFF) <= point.value]
            fits = fits or complete[:1]
            what = "xid %d" % point.value
        else:  # latest, name: the position is only known by replaying
            fits = complete if point.kind == "latest" else complete[:1]
            what = point.describe()
        if not fits:
            oldest = complete[0]
            raise NotFound("point %s is before the end of the oldest backup %s (%s, LSN %s): "
                           "the repository cannot restore it" % (
                               what, oldest["id"], oldest["stop_time"], oldest["stop_lsn"]),
                           code="point_unreachable", stage="plan")
        return fits[-1]

    def _timeline_path(self, backup):
        """(target timeline, [(timeline, first segment number it serves)]).

        The target is the newest archived timeline that descends from the backup's
        (recovery_target_timeline = latest). Its history file lists every ancestor
        and the LSN where each one ended; the segment holding a switch is read
        from the new timeline, which carries a copy of the old one's part."""
        histories = self.archive.timelines()
        size = self._segment_size(backup)
        start_tli = backup["timeline"]
        descendants = [t for t, entries in histories.items()
                       if t == start_tli or any(e[0] == start_tli for e in entries)]
        target = max(descendants + [start_tli])
        if self.timeline == "current":
            target = start_tli
        elif self.timeline != "latest":
            if not self.timeline.isdigit() or int(self.timeline) not in descendants + [start_tli]:
                raise NotFound("target_timeline=%s is not the timeline of backup %s (%d) nor one "
                               "that descends from it in the archive (%s)" % (
                                   self.timeline, backup["id"], start_tli,
                                   ", ".join(str(t) for t in sorted(set(descendants)))),
                               code="timeline_unreachable", stage="plan")
            target = int(self.timeline)
        entries = histories.get(target, []) if target != start_tli else []
        timelines = [e[0] for e in entries] + [target]
        begins = [0] + [e[1] for e in entries]
        ends = [e[1] for e in entries] + [None]
        index = timelines.index(start_tli) if start_tli in timelines else 0
        end = ends[index]
        if end is not None and end < parse_lsn(backup["stop_lsn"]):
            raise NotFound("timeline %d left timeline %d at %s, before backup %s ended (%s): "
                           "the backup is not on the way to timeline %d" % (
                               timelines[index + 1], start_tli, format_lsn(end), backup["id"],
                               backup["stop_lsn"], target), code="point_unreachable",
                           stage="plan")
        path = [(tli, begin // size) for tli, begin in zip(timelines, begins)][index:]
        path[0] = (start_tli, 0)
        return target, path

    def _walk_archive(self, backup, path):
        """[(name, segment number)] archived after the backup's stop segment, contiguous,
        and the first missing segment number (where the archive ends or has a gap)."""
        size = self._segment_size(backup)
        segments = self.archive.segments()
        segno = (parse_lsn(backup["stop_lsn"]) - 1) // size + 1
        found = []
        while True:
            timeline = [tli for tli, first in path if first <= segno][-1]
            name = segment_name(timeline, segno, size)
            if name not in segments.get(timeline, {}):
                return found, segno
            found.append((name, segno))
            segno += 1

    def _window(self, complete, backup, wal, end_segment):
        latest = _stop_time(backup)
        if wal:
            name = wal[-1][0]
            mtime = self.archive.segments()[int(name[:8], 16)][name].mtime
            if mtime:
                # S3 listings give whole seconds: the upload ended before the next one
                latest = datetime.datetime.fromtimestamp(
                    mtime if mtime % 1 else mtime + 1, _UTC)
        latest_time = iso(latest)
        return {"earliest": complete[0]["stop_time"], "backup_end": backup["stop_time"],
                "latest_segment": wal[-1][0] if wal else backup["stop_wal"],
                "latest_time": latest_time}

    def _check_reachable(self, point, backup, wal, end_segment, window):
        size = self._segment_size(backup)
        later = self._archived_after(end_segment, backup)
        gap = ""
        if later:
            gap = ("; the archive has a gap: segment %s is missing while later WAL (%s) "
                   "exists" % (segment_name(backup["timeline"], end_segment, size), later))
        reach = "reachable window: %s to %s" % (window["earliest"], window["latest_time"])
        if point.kind == "lsn" and point.value // size >= end_segment:
            raise NotFound("point LSN %s is beyond the WAL the archive holds from backup %s "
                           "(it ends before segment %s)%s; %s" % (
                               format_lsn(point.value), backup["id"],
                               segment_name(backup["timeline"], end_segment, size), gap, reach),
                           code="point_unreachable", stage="plan")
        # compared as times, not text ("...:35.4Z" sorts before "...:35Z")
        if point.kind == "time" and point.value > parse_time(window["latest_time"]):
            raise NotFound("point %s is after the last archived WAL (%s)%s; %s" % (
                iso(point.value), window["latest_time"], gap, reach),
                code="point_unreachable", stage="plan")

    def _archived_after(self, end_segment, backup):
        size = self._segment_size(backup)
        for tli, names in self.archive.segments().items():
            for name in sorted(names):
                per_log = 0x100000000 // size
                segno = int(name[8:16], 16) * per_log + int(name[16:24], 16)
                if segno > end_segment and tli >= backup["timeline"]:
                    return name
        return None
