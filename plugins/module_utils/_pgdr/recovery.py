# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
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
import hashlib
import json
import os
import re

from . import atomicfile
from .archive import ArchiveIndex
from .catalog import is_snapshot
from .errors import ConfigError, IntegrityError, NotFound, PgdrError
from .postgres import walend
from .postgres.wal import SEGMENT_NAME, format_lsn, history_name, parse_lsn, segment_name

_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
                   r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$", re.I)
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-(full|diff|incr|snapshot)$")
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
            return Point("name", _restore_point_name(text, body), raw)
    except (ValueError, OverflowError, ConfigError) as exc:
        raise ConfigError("point=%r is not valid (%s); expected %s"
                          % (raw, getattr(exc, "msg", exc), GRAMMAR),
                          code="point_invalid", stage="plan")
    raise ConfigError("point=%r is not valid; expected %s" % (raw, GRAMMAR),
                      code="point_invalid", stage="plan")


def _restore_point_name(text, body):
    """The name as PostgreSQL will compare it: fewer than 64 bytes in UTF-8 (MAXFNAMELEN),
    no control character (a newline in postgresql.auto.conf ends the setting)."""
    inner = text.partition(":")[2].strip(" ")
    if any(ord(c) < 32 or ord(c) == 127 for c in inner):
        raise ValueError("a restore point name has no control character (newline, tab...)")
    size = len(body.encode("utf-8"))
    if size >= 64:
        raise ValueError("a restore point name is at most 63 bytes in UTF-8, this one has %d"
                         % size)
    return body


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
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 15 or minutes > 59:
            # PostgreSQL's limit: offsets up to +-15:59
            raise ValueError("zone offset %s is not between -15:59 and +15:59" % zone)
        offset = sign * datetime.timedelta(hours=hours, minutes=minutes)
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

    def __init__(self, point, backup, recovery, timeline=None, wal_needed=(), window=None,
                 notes=()):
        self.point = point
        self.backup = backup          # the manifest to restore
        self.recovery = recovery      # settings for postgresql.auto.conf, {} = none
        self.timeline = timeline
        self.wal_needed = list(wal_needed)
        self.window = window or {}
        self.notes = list(notes)      # what the plan could not check, said plainly
        self.source = "snapshot" if is_snapshot(backup["id"]) else "repository"
        self.why = None               # why this backup, when another could serve
        self.predicted_rto = None     # {"seconds", "basis"}: set by the restore

    def as_dict(self):
        return {"point": self.point.describe(), "kind": self.point.kind,
                "backup_id": self.backup["id"], "recovery": self.recovery,
                "timeline": self.timeline, "wal_segments": len(self.wal_needed),
                "window": self.window, "notes": self.notes, "source": self.source,
                "why": self.why, "predicted_rto": self.predicted_rto}


def last_drill(storage, cluster):
    """The newest drill report of the cluster, or None."""
    keys = [i.key for i in storage.list("%s/drill/" % cluster) if i.key.endswith(".json")]
    if not keys:
        return None
    key = sorted(keys)[-1]
    report = json.loads(storage.get(key).decode("utf-8"))
    return dict([(k, report.get(k)) for k in (
        "finished_at", "success", "point", "backup_id", "rto_seconds", "rpo_seconds",
        "restore_seconds", "restored_bytes", "source")] + [("report_key", key)])


def predict_rto(drill, size, cloned=False):
    """(seconds, basis) of a restore of ``size`` bytes plus recovery, from the last
    successful drill: its restore throughput (a clone of a snapshot downloads nothing:
    about a second) and its time from start to verified. (None, why) without one."""
    if not (drill and drill.get("success") and drill.get("restore_seconds")
            and drill.get("restored_bytes") and drill.get("rto_seconds") is not None):
        return None, "no drill yet"
    if size is None:
        return None, "no backup"
    throughput = drill["restored_bytes"] / max(drill["restore_seconds"], 0.001)
    overhead = drill["rto_seconds"] - drill["restore_seconds"]
    if drill.get("source") == "snapshot" and not cloned:
        return None, "the last drill restored a snapshot: no repository throughput measured"
    if cloned:
        return round(1.0 + overhead, 1), ("a clone of the snapshots (about 1 s) and the "
                                          "last drill's %.0f s from start to verified"
                                          % overhead)
    return round(size / throughput + overhead, 1), (
        "the last drill's %.0f MiB/s and %.0f s from start to verified"
        % (throughput / 1048576.0, overhead))


# Segments read backwards from the end of the archive to find its last commit: an idle
# source archives segments without any (checkpoints only); past this many, the upload time
# of the segment before them bounds the last commit instead.
STAMP_SEARCH_SEGMENTS = 8


class Planner(object):
    def __init__(self, storage, catalog, cluster, inclusive=True, action="promote",
                 timeline="latest"):
        self.storage = storage
        self.catalog = catalog
        self.archive = ArchiveIndex(storage, cluster)
        self.inclusive = inclusive
        self.action = action
        self.timeline = str(timeline or "latest").lower()
        self._histories = None
        self._ends = {}

    def plan(self, point, base=None):
        """The plan to reach ``point``; ``base`` (a backup id) fixes the backup it starts
        from instead of letting the planner choose (refused when the point is before
        that backup's end)."""
        if point.kind == "backup":
            if base is not None and base != point.value:
                raise ConfigError("backup_id=%s and point=%s name two different backups: "
                                  "give one of them" % (base, point.describe()),
                                  code="point_invalid", stage="plan")
            backup = self.catalog.manifest(point.value)
            self.catalog.check_chain(backup)
            return Plan(point, backup, {})
        complete = self.catalog.scan()[0]
        self.catalog.refuse_newer_format()
        damaged = [d["id"] for d in self.catalog.damaged]
        if not complete and base is None:
            raise NotFound("no complete backup of cluster %s in %s%s"
                           % (self.catalog.cluster, self.storage.describe(),
                              "; damaged (refused): %s" % ", ".join(damaged) if damaged else ""),
                           code="no_backup", stage="plan")
        newer_damaged = [d for d in damaged if complete and d[:16] > complete[-1]["id"][:16]]
        if point.kind == "immediate" and base is None and newer_damaged:
            # the newest backup's consistency point is the damaged one's, not an older one's
            raise IntegrityError("point immediate means the newest backup, %s, whose manifest "
                                 "is damaged (see pgdr info); restore an older backup by id "
                                 "(newest intact: %s) if that is what you want"
                                 % (newer_damaged[-1], complete[-1]["id"]),
                                 code="manifest_damaged", stage="plan")
        notes = []
        if base is not None:
            backup = self.catalog.manifest(base)
            self.catalog.check_chain(backup)
            if point.kind == "immediate":
                return Plan(point, backup, {})
            self._check_after_base(point, backup, notes)
        elif point.kind == "immediate":
            return Plan(point, complete[-1], {})
        else:
            backup = self._choose_backup(point, complete, notes)
        timeline, path = self._timeline_path(backup)
        wal, end_segment = self._walk_archive(backup, path)
        gap = self._gap(backup, path, timeline, end_segment)
        window = self._window(complete, backup, wal, end_segment, path)
        if point.kind == "latest":
            if gap:
                raise NotFound(
                    "point latest cannot be reached: the archive has a gap after backup %s: "
                    "segment %s is missing while later WAL (%s) exists; recovery would stop "
                    "at the gap and silently lose everything after it. The reachable end is "
                    "LSN %s (last commit %s, timeline %d): restore --point lsn:%s to accept "
                    "that, or put the missing segment back" % (
                        backup["id"], gap[0], gap[1], window["latest_lsn"],
                        window["latest_time"], timeline, window["latest_lsn"]),
                    code="wal_gap", stage="plan", missing_segment=gap[0],
                    reachable_lsn=window["latest_lsn"])
            if not wal:  # nothing archived after the backup: its own end is the latest
                return Plan(point, backup, {}, timeline, [], window, notes)
            return Plan(point, backup, self._settings({}, timeline), timeline, wal, window,
                        notes)
        self._check_reachable(point, backup, window, gap)
        targets = {"time": ("recovery_target_time",
                            lambda v: v.strftime("%Y-%m-%d %H:%M:%S.%f+00")),
                   "lsn": ("recovery_target_lsn", format_lsn),
                   "xid": ("recovery_target_xid", str),
                   "name": ("recovery_target_name", str)}
        setting, render = targets[point.kind]
        if point.kind == "lsn":
            wal = [w for w in wal if w[1] <= point.value // self._segment_size(backup)]
        return Plan(point, backup, self._settings({setting: render(point.value)}, timeline),
                    timeline, wal, window, notes)

    def reachable_lsns(self, backup):
        """(low, high): LSNs reachable from this backup through the archive - from its
        end to the start of the last segment archived contiguously after it."""
        timeline, path = self._timeline_path(backup)
        wal = self._walk_archive(backup, path)[0]
        low = parse_lsn(backup["stop_lsn"])
        if not wal:
            return low, low
        # a standby backup's walk starts in its own stop segment: never before its end
        return low, max(low, wal[-1][1] * self._segment_size(backup))

    def window(self):
        """The recoverable window: earliest and latest restorable points, and where
        the archive stops (with the first missing segment when later WAL exists). A
        timeline history problem is reported in ``problem`` (the window is then the one
        of the backup's own timeline) instead of failing."""
        complete = self.catalog.scan()[0]
        if not complete:
            return None
        newest = complete[-1]
        problem = None
        try:
            timeline, path = self._timeline_path(newest)
        except PgdrError as exc:
            problem = "%s [%s]" % (exc.msg, exc.code)
            timeline, path = newest["timeline"], [(newest["timeline"], 0)]
        wal, end_segment = self._walk_archive(newest, path)
        window = self._window(complete, newest, wal, end_segment, path)
        window["timeline"] = timeline
        gap = self._gap(newest, path, timeline, end_segment)
        window["gap_before"] = gap[1] if gap else None
        if gap:
            window["missing_segment"] = gap[0]
        window["problem"] = problem
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

    def _choose_backup(self, point, complete, notes):
        if point.kind == "time":
            fits = [m for m in complete if _stop_time(m) <= point.value]
            what = "time %s" % iso(point.value)
        elif point.kind == "lsn":
            fits = [m for m in complete if parse_lsn(m["stop_lsn"]) <= point.value]
            what = "LSN %s" % format_lsn(point.value)
        elif point.kind == "xid":
            # an xid assigned after the backup's stop (>= its snapshot xmax) commits after
            # the backup is consistent; else the oldest backup, if the xid may commit after
            # its end (it provably does not when it precedes the oldest running xid there)
            fits = [m for m in complete if m.get("stop_xmax") is not None
                    and not _xid_precedes(point.value, m["stop_xmax"] & 0xFFFFFFFF)]
            if not fits:
                missing = [m["id"] for m in complete if m.get("stop_xmax") is None]
                if missing:
                    notes.append("backup(s) %s record no stop_xmax (made by an older pgdr): "
                                 "whether xid %d comes after them is not known"
                                 % (", ".join(missing), point.value))
                self._check_xid_after(point, complete[0], notes, oldest=True)
                fits = complete[:1]
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
        return self.newest_on_the_way(fits, notes)

    def newest_on_the_way(self, candidates, notes):
        """The newest of these backups from which the target timeline can be reached. After
        a point-in-time recovery, backups taken on the old timeline after the new one left
        it (the abandoned history) are skipped, with a note: following them would restore
        the rows the recovery removed, and PostgreSQL refuses the new timeline from there.
        When none is on the way, the newest one's error."""
        first_error = None
        for backup in reversed(candidates):
            try:
                self._timeline_path(backup)
            except NotFound as exc:
                # a backup on a branch the target timeline does not descend from (an
                # abandoned timeline's) is not on the way: an older one may be
                if exc.code not in ("point_unreachable", "timeline_unreachable"):
                    raise
                first_error = first_error or exc
                notes.append("backup %s skipped: %s" % (backup["id"], exc.msg))
                continue
            return backup
        raise first_error

    def standby_base(self):
        """The backup a new standby starts from: the newest complete one on the way to the
        latest timeline (None when there is none: plan() then says why)."""
        complete = self.catalog.scan()[0]
        return self.newest_on_the_way(complete, [])["id"] if complete else None

    def _check_after_base(self, point, backup, notes):
        """A point reached from a given backup must come after that backup's end."""
        before = None
        if point.kind == "time" and point.value < _stop_time(backup):
            before = "time %s" % iso(point.value)
        elif point.kind == "lsn" and point.value < parse_lsn(backup["stop_lsn"]):
            before = "LSN %s" % format_lsn(point.value)
        if before:
            raise NotFound("point %s is before the end of backup %s (%s, LSN %s): a point is "
                           "reached from a backup only after its end; choose an older backup "
                           "id or leave backup_id out to let the planner choose" % (
                               before, backup["id"], backup["stop_time"], backup["stop_lsn"]),
                           code="point_unreachable", stage="plan")
        if point.kind == "xid":
            self._check_xid_after(point, backup, notes, oldest=False)

    def _check_xid_after(self, point, backup, notes, oldest):
        """Refuse an xid that provably ended before the backup did: it precedes the oldest
        running xid of a running-transactions record the backup's own WAL holds before its
        stop (PostgreSQL logs one at the backup's start checkpoint). Such a transaction's
        commit is never replayed after the backup is consistent: recovery would replay the
        whole archive and then fail."""
        if backup.get("stop_xmax") is not None and not _xid_precedes(
                point.value, backup["stop_xmax"] & 0xFFFFFFFF):
            return  # assigned after the backup's stop: certainly after it
        running = self._backup_running_xacts(backup)
        if not running:
            notes.append("backup %s's WAL has no running-transactions record before its "
                         "stop: whether xid %d ended before it cannot be checked"
                         % (backup["id"], point.value))
            return
        lsn, oldest_running, dummy = running[-1]
        if _xid_precedes(point.value, oldest_running):
            raise NotFound(
                "point xid %d ended before %sbackup %s did (%s, LSN %s): at LSN %s, before "
                "the backup's end, the oldest running transaction was %d; recovery from it "
                "can never reach that xid%s" % (
                    point.value, "the oldest " if oldest else "", backup["id"],
                    backup["stop_time"], backup["stop_lsn"], format_lsn(lsn),
                    oldest_running, "" if oldest else
                    " (leave backup_id out or choose an older backup)"),
                code="point_unreachable", stage="plan")

    def _backup_running_xacts(self, backup):
        """[(LSN, oldest running xid, next xid)] from the backup's own WAL, before its stop."""
        from .compress import CodecsByKey
        size = self._segment_size(backup)
        stop = parse_lsn(backup["stop_lsn"])
        codec = CodecsByKey()
        found = []
        for stored in self.catalog.file_list(backup).get("wal", []):
            name = stored["name"]
            if not SEGMENT_NAME.match(name):
                continue
            packed = self.storage.get(stored["key"])
            if hashlib.sha256(packed).hexdigest() != stored["stored_sha256"]:
                raise IntegrityError("stored object %s is damaged: its SHA-256 does not "
                                     "match backup %s's file list" % (stored["key"],
                                                                      backup["id"]),
                                     code="checksum_mismatch", stage="plan",
                                     key=stored["key"])
            raw = codec.decompress(packed, stored["size"], stored["key"])
            start = _segno(name, size) * size
            found.extend(r for r in walend.scan_end(raw, start)["running"] if r[0] < stop)
        return sorted(found)

    # -- timelines ----------------------------------------------------------------------
    def histories(self):
        """{timeline: [(parent, switch LSN)]} of the archive's history files (checked where
        a plan follows them: _timeline_path)."""
        if self._histories is None:
            self._histories = self.archive.timelines()
        return self._histories

    def _timeline_path(self, backup):
        """(target timeline, [(timeline, first segment number it serves)]).

        The target is the newest archived timeline that descends from the backup's
        (recovery_target_timeline = latest). Its history file lists every ancestor
        and the LSN where each one ended; the segment holding a switch is read
        from the new timeline, which carries a copy of the old one's part. A timeline
        whose WAL is archived without its history file, or a history that does not
        fit the archive, is refused: following the wrong timeline silently drops
        every transaction of the right one."""
        histories = self.histories()
        segments = self.archive.segments()
        size = self._segment_size(backup)
        start_tli = backup["timeline"]
        orphans = sorted(t for t in segments if t > start_tli and t not in histories)
        if self.timeline != "current":
            # any later timeline may be the one to follow: a wrong parent in its history
            # would make the walk silently stay on the backup's timeline
            for tli in sorted(t for t in histories if t > start_tli):
                _check_history(tli, histories[tli], histories)
        descendants = [t for t, entries in histories.items()
                       if t == start_tli or any(e[0] == start_tli for e in entries)]
        target = max(descendants + [start_tli])
        if self.timeline == "current":
            target = start_tli
        elif self.timeline != "latest":
            if self.timeline.isdigit() and int(self.timeline) in orphans:
                raise _history_missing(int(self.timeline), segments, start_tli)
            if not self.timeline.isdigit() or int(self.timeline) not in descendants + [start_tli]:
                raise NotFound("target_timeline=%s is not the timeline of backup %s (%d) nor one "
                               "that descends from it in the archive (%s)" % (
                                   self.timeline, backup["id"], start_tli,
                                   ", ".join(str(t) for t in sorted(set(descendants)))),
                               code="timeline_unreachable", stage="plan")
            target = int(self.timeline)
        elif orphans:
            raise _history_missing(orphans[0], segments, start_tli)
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
        for k in range(index, len(timelines) - 1):
            _check_switch(timelines[k], timelines[k + 1], ends[k], segments, size)
        path = [(tli, begin // size) for tli, begin in zip(timelines, begins)][index:]
        path[0] = (start_tli, 0)
        return target, path

    def _walk_archive(self, backup, path):
        """[(name, segment number)] archived after the backup's stop segment, contiguous,
        and the first missing segment number (where the archive ends or has a gap). A
        backup taken on a standby holds its stop segment as far as the standby had
        replayed it (no segment switch there): the walk starts at the segment that holds
        the first byte after its stop, the archive's copy of its stop segment unless the
        stop is on a segment boundary."""
        size = self._segment_size(backup)
        segments = self.archive.segments()
        stop = parse_lsn(backup["stop_lsn"])
        # the primary switched segments at the stop: its copy of the stop segment is whole
        segno = stop // size if backup.get("from_standby") else (stop - 1) // size + 1
        found = []
        while True:
            timeline = _serving(path, segno)
            name = segment_name(timeline, segno, size)
            if name not in segments.get(timeline, {}):
                return found, segno
            found.append((name, segno))
            segno += 1

    def _gap(self, backup, path, target, end_segment):
        """(missing segment, a later archived one) when WAL is archived after the first
        missing segment on the timeline that serves it, a later one of the path or one
        descending from the target; None when the archive simply ends there (the segment
        the source is still writing is not a gap)."""
        size = self._segment_size(backup)
        serving = _serving(path, end_segment)
        later_timelines = set(t for t, first in path if t >= serving)
        try:
            histories = self.histories()
        except PgdrError:  # reported by window() as its problem
            histories = {}
        later_timelines.update(t for t, entries in histories.items()
                               if any(e[0] == target for e in entries))
        later = None
        for tli in sorted(later_timelines):
            for name in self.archive.segments().get(tli, {}):
                segno = _segno(name, size)
                if segno > end_segment and (later is None or segno < later[0]):
                    later = (segno, name)
        if later is None:
            return None
        return segment_name(serving, end_segment, size), later[1]

    # -- the end of the archive ----------------------------------------------------------
    def _window(self, complete, backup, wal, end_segment, path):
        """earliest, backup_end, latest_segment, latest_lsn (the start of the last complete
        record archived contiguously after the backup: the newest LSN recovery can stop
        at), latest_time (the last commit, abort or restore point in that WAL: a target
        time must be before it) and latest_time_source."""
        size = self._segment_size(backup)
        # a named base (a snapshot backup) may be older than every repository backup
        earliest = min([m["stop_time"] for m in complete[:1]] + [backup["stop_time"]])
        window = {"earliest": earliest, "backup_end": backup["stop_time"],
                  "latest_segment": wal[-1][0] if wal else backup["stop_wal"],
                  "latest_lsn": backup["stop_lsn"], "latest_time": iso(_stop_time(backup)),
                  "latest_time_source": "end of backup %s (no commit archived after it)"
                                        % backup["id"]}
        if not wal:
            return window
        last = self._segment_end(*wal[-1], size=size)
        stop = parse_lsn(backup["stop_lsn"])
        # a standby backup's walk starts in its own stop segment: the window never ends
        # before the backup does, nor at a commit the backup already holds
        if last["last_start"] is not None:
            window["latest_lsn"] = format_lsn(max(stop, last["last_start"]))
        else:  # one record fills the segment: its start is not known, stay before it
            window["latest_lsn"] = format_lsn(max(stop, wal[-1][1] * size))
        for name, segno in reversed(wal[-STAMP_SEARCH_SEGMENTS:]):
            stamp = self._segment_end(name, segno, size=size)["last_stamp"]
            if stamp and stamp[0] < stop:
                return window  # the newest commit archived is inside the backup
            if stamp:
                window["latest_time"] = iso(walend.timestamp(stamp[1]).replace(tzinfo=_UTC))
                window["latest_time_source"] = "%s at LSN %s in segment %s" % (
                    stamp[2].replace("_", " "), format_lsn(stamp[0]), name)
                return window
        if len(wal) > STAMP_SEARCH_SEGMENTS:
            name = wal[-STAMP_SEARCH_SEGMENTS - 1][0]
            mtime = self.archive.segments()[int(name[:8], 16)][name].mtime
            if mtime:
                # not found in the last segments: it is in an older one, archived by then
                window["latest_time"] = iso(datetime.datetime.fromtimestamp(
                    mtime if mtime % 1 else mtime + 1, _UTC))
                window["latest_time_source"] = (
                    "upload of segment %s (no commit in the %d segments after it)"
                    % (name, STAMP_SEARCH_SEGMENTS))
        return window

    def _segment_end(self, name, segno, size):
        """walend.scan_end of an archived segment, cached in memory and on disk (archived
        segments never change; the cache key includes the object's size and time)."""
        if name in self._ends:
            return self._ends[name]
        info = self.archive.segments()[int(name[:8], 16)][name]
        cache = _scan_cache_path(self.storage.describe(), info)
        result = _read_cache(cache)
        if result is None:
            from .compress import CodecsByKey
            raw = CodecsByKey().decompress(self.storage.get(info.key), None, info.key)
            if len(raw) != size:
                raise IntegrityError("archived WAL %s holds %d bytes, not a %d-byte segment"
                                     % (info.key, len(raw), size), code="size_mismatch",
                                     stage="plan", key=info.key)
            result = walend.scan_end(raw, segno * size)
            result.pop("running", None)
            _write_cache(cache, result)
        self._ends[name] = result
        return result

    def _check_reachable(self, point, backup, window, gap):
        gap_text = ""
        if gap:
            gap_text = ("; the archive has a gap: segment %s is missing while later WAL (%s) "
                        "exists" % gap)
        reach = "reachable window: %s to %s (LSN %s)" % (
            window["earliest"], window["latest_time"], window["latest_lsn"])
        if point.kind == "lsn" and point.value > parse_lsn(window["latest_lsn"]):
            raise NotFound("point LSN %s is beyond the WAL the archive holds from backup %s "
                           "(its last complete record starts at %s, in segment %s)%s; %s" % (
                               format_lsn(point.value), backup["id"], window["latest_lsn"],
                               window["latest_segment"], gap_text, reach),
                           code="point_unreachable", stage="plan")
        if point.kind == "time":
            # recovery stops at the first commit after the target (at or after it when
            # not inclusive): one must be archived. Compared as times, not text.
            latest = parse_time(window["latest_time"])
            if point.value > latest or (self.inclusive and point.value == latest):
                raise NotFound("point %s is after the last archived WAL: recovery needs a "
                               "commit after the target time and the last one archived is "
                               "at %s (%s)%s; %s" % (
                                   iso(point.value), window["latest_time"],
                                   window["latest_time_source"], gap_text, reach),
                               code="point_unreachable", stage="plan")


def _serving(path, segno):
    return [tli for tli, first in path if first <= segno][-1]


def _segno(name, size):
    return int(name[8:16], 16) * (0x100000000 // size) + int(name[16:24], 16)


def _xid_precedes(a, b):
    """PostgreSQL's TransactionIdPrecedes for normal xids: a is older than b (modulo 2^32)."""
    return ((a - b) & 0xFFFFFFFF) >= 0x80000000


def _history_missing(tli, segments, start_tli):
    first = sorted(segments[tli])[0]
    return NotFound("WAL of timeline %d is archived (first segment %s) but its history file "
                    "%s is not in the repository: where timeline %d left its parent is not "
                    "known, and following timeline %d instead would silently drop its "
                    "transactions. Put the history file back (from the promoted server's "
                    "pg_wal), or set target_timeline=current to recover timeline %d only"
                    % (tli, first, history_name(tli), tli, start_tli, start_tli),
                    code="history_missing", stage="plan", timeline=tli)


def _history_invalid(tli, why):
    return IntegrityError("history file %s of the archive is not a valid timeline history: "
                          "%s" % (history_name(tli), why), code="history_invalid",
                          stage="plan", timeline=tli)


def _check_history(tli, entries, histories):
    """A history file lists every ancestor, oldest first, with increasing ids below its
    own, switch points that do not go back, and extends its parent's history."""
    if not entries:
        raise _history_invalid(tli, "it lists no parent timeline")
    if entries[0][0] != 1:
        raise _history_invalid(tli, "it starts with timeline %d, not with timeline 1"
                               % entries[0][0])
    for k, (parent, lsn) in enumerate(entries):
        if not 1 <= parent < tli:
            raise _history_invalid(tli, "parent timeline %d is not below %d" % (parent, tli))
        if k and parent <= entries[k - 1][0]:
            raise _history_invalid(tli, "timeline ids %d then %d do not increase"
                                   % (entries[k - 1][0], parent))
        if k and lsn < entries[k - 1][1]:
            raise _history_invalid(tli, "switch points %s then %s go back" % (
                format_lsn(entries[k - 1][1]), format_lsn(lsn)))
    parent = entries[-1][0]
    expected = [] if parent == 1 else histories.get(parent)
    if expected is not None and list(entries[:-1]) != list(expected):
        raise _history_invalid(tli, "it does not extend the history of its parent timeline "
                               "%d (%s)" % (parent, ", ".join(
                                   "%d at %s" % (t, format_lsn(l)) for t, l in expected)
                                   or "timeline 1 has no parent"))


def _check_switch(parent, child, lsn, segments, size):
    """The switch from parent to child at lsn must fit what the archive holds: no WAL of
    the child before the segment of the switch, and the parent's WAL reaching it."""
    switch_segno = lsn // size
    parent_segnos = [_segno(n, size) for n in segments.get(parent, {})]
    if parent_segnos and switch_segno > max(parent_segnos) + 1:
        raise _history_invalid(child, "it says timeline %d left timeline %d at %s, beyond "
                               "timeline %d's archive, which ends with segment %s: the history "
                               "is wrong, or timeline %d's WAL up to the switch was never "
                               "archived" % (child, parent, format_lsn(lsn), parent,
                                             segment_name(parent, max(parent_segnos), size),
                                             parent))
    child_segnos = [_segno(n, size) for n in segments.get(child, {})]
    if child_segnos and min(child_segnos) < switch_segno:
        raise _history_invalid(child, "it says timeline %d left timeline %d at %s (segment "
                               "%s), but the archive holds segment %s of timeline %d, before "
                               "that" % (child, parent, format_lsn(lsn),
                                         segment_name(child, switch_segno, size),
                                         segment_name(child, min(child_segnos), size), child))


def _scan_cache_path(repository, info):
    root = os.environ.get("PGDR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pgdr")
    digest = hashlib.sha256(("%s\n%s\n%s\n%s" % (repository, info.key, info.size, info.mtime))
                            .encode("utf-8")).hexdigest()
    return os.path.join(root, "walend", digest + ".json")


def _read_cache(path):
    try:
        with open(path) as handle:
            result = json.load(handle)
        if result.get("last_stamp"):
            result["last_stamp"] = tuple(result["last_stamp"])
        return result
    except (IOError, OSError, ValueError, AttributeError):
        return None


def _write_cache(path, result):
    """Best effort: a cache that cannot be written only costs a scan next time."""
    try:
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), 0o700)
        atomicfile.replace(path, json.dumps(result), mode=0o644, durable=False)
    except (IOError, OSError):
        pass
