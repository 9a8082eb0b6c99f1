# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify a backup's whole chain and the WAL archive it needs.

Every object the backup needs (its own and those of the backups it refers to)
is downloaded and checked against the SHA-256 of its stored bytes, then
decompressed and checked against the SHA-256 of its original bytes: what a
restore would read, without writing anything. Every manifest of the cluster
is checked (a damaged one is a problem even when another backup is verified).

The WAL archive (``verify_wal``): ``full`` reads every archived segment and
history file and checks it against the SHA-256 recorded at upload, that it
decompresses to one segment of this cluster (page address, system identifier,
segment size in its first page header), that history files parse and agree with
each other, and that the archive is continuous from the stop of each backup of
the chain to its end on the timeline path a restore follows; ``list`` checks the
same from the listing (every segment has a recorded SHA-256; history files are
read, they are tiny) without reading segments; ``none`` skips the archive.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

from .. import archive, snapshots
from ..catalog import (FILE_LIST, Catalog, backup_prefix, chain_objects, is_snapshot,
                       snapshot_state)
from ..compress import CodecsByKey
from ..errors import IntegrityError, NotFound, PgdrError
from ..parallel import run_all
from ..postgres.wal import (format_lsn, history_name, long_page_header, parse_lsn,
                            segment_name, segment_number)
from ..storage import open_storage

WAL_MODES = ("full", "list", "none")
# problem classes, in the order the error message lists them
CLASSES = (("manifests", "damaged manifests"), ("objects", "backup objects"),
           ("history", "history files"), ("wal", "archived WAL segments"),
           ("gaps", "gaps in the WAL archive"),
           ("snapshots", "snapshots gone from their provider"))


def run(settings, progress, dry_run=False):
    settings.require("cluster")
    storage = open_storage(settings)
    storage.check()
    catalog = Catalog(storage, settings.cluster)
    catalog.scan()  # every manifest once: damaged ones are reported below
    # pending snapshot backups whose provider has completed (or failed) them, recorded
    settled = snapshots.settle(settings, catalog, progress, write=not dry_run)
    manifest = catalog.resolve(settings.backup_id)
    catalog.check_chain(manifest)
    problems = dict((name, []) for name, dummy in CLASSES)
    problems["manifests"] = [d["msg"] for d in catalog.damaged]
    unchecked = None
    if is_snapshot(manifest["id"]):  # its data is the provider's: are they all there?
        if snapshot_state(manifest) == "pending":
            snapshots.refuse_unsettled(manifest)  # not verified: snapshot_pending
        unchecked = snapshots.elsewhere(manifest)
        if snapshot_state(manifest) == "failed":
            problems["snapshots"] = ["snapshot backup %s failed: %s" % (
                manifest["id"], (manifest["snapshot"].get("settled") or {}).get("why"))]
        elif not unchecked:
            problems["snapshots"] = ["snapshot %s of backup %s is gone"
                                     % (name, manifest["id"])
                                     for name in snapshots.missing(settings, manifest)]
    try:
        objects = chain_objects(catalog.file_list(manifest))
    except IntegrityError as exc:  # the file list itself: nothing else of it can be read
        objects = []
        problems["objects"].append(exc.msg)
    codec = CodecsByKey()
    total = sum(o["stored_size"] for o in objects)
    mode = getattr(settings, "verify_wal", None) or "full"
    if dry_run:
        return {"changed": False, "backup_id": manifest["id"], "objects": len(objects),
                "stored_bytes": total, "verify_wal": mode}
    progress.begin("verify", sum(o["size"] for o in objects))

    def check(stored):
        try:
            packed = storage.get(stored["key"], sha256=stored["stored_sha256"])
            if hashlib.sha256(packed).hexdigest() != stored["stored_sha256"]:
                return "%s: stored bytes do not match their SHA-256" % stored["key"]
            raw = codec.decompress(packed, stored["size"], stored["key"])
            if hashlib.sha256(raw).hexdigest() != stored["sha256"]:
                return "%s: original bytes do not match their SHA-256" % stored["key"]
        except NotFound:
            return "%s: missing" % stored["key"]
        except IntegrityError as exc:  # damage; an unreachable repository is not (exit 3)
            return "%s: %s" % (stored["key"], exc.msg)
        finally:
            progress.advance(stored["size"])
        return None

    problems["objects"] += [p for p in run_all(check, objects, settings.workers) if p]
    progress.end()
    chain = [catalog.manifest(b) for b in manifest.get("chain") or [manifest["id"]]]
    wal = None
    if mode != "none":
        wal = WalCheck(storage, settings.cluster, manifest, mode, settings.workers,
                       progress).run(chain, problems)
    counts = dict((name, len(found)) for name, found in problems.items())
    result = {"changed": False, "backup_id": manifest["id"], "chain": manifest.get("chain"),
              "objects": len(objects), "stored_bytes": total, "wal": wal,
              "damaged_backups": [d["id"] for d in catalog.damaged],
              "snapshots_unchecked": unchecked,
              "snapshots_settled": settled,
              "snapshots_pending": [m["id"] for m in catalog.pending_snapshots],
              "problem_counts": counts,
              "first_problems": dict((n, p[0]) for n, p in problems.items() if p),
              "problems": [p for name, dummy in CLASSES for p in problems[name]][:100],
              "file_list": backup_prefix(settings.cluster, manifest["id"]) + FILE_LIST}
    if any(counts.values()):
        lines = ["%s: %d, first: %s" % (label, counts[name], problems[name][0])
                 for name, label in CLASSES if counts[name]]
        raise IntegrityError("verification of backup %s and the WAL it needs failed:\n  %s"
                             % (manifest["id"], "\n  ".join(lines)), code="verify_failed",
                             stage="verify", problems=result["problems"],
                             problem_counts=counts, first_problems=result["first_problems"],
                             wal=wal)
    progress.event("backup %s verified: %d objects, %.1f MiB, all checksums right%s"
                   % (manifest["id"], len(objects), total / 1048576.0,
                      "; WAL archive: %d segment(s), %d history file(s), continuous (%s)"
                      % (wal["segments"], wal["history_files"], mode) if wal else ""))
    return result


class WalCheck(object):
    """The WAL archive as a restore of a chain would read it."""

    def __init__(self, storage, cluster, manifest, mode, workers, progress):
        self.storage = storage
        self.cluster = cluster
        self.mode = mode
        self.workers = workers
        self.progress = progress
        self.size = int(manifest["settings"].get("wal_segment_size", 16 * 1024 * 1024))
        self.system_identifier = int(manifest["system_identifier"])
        self.codec = CodecsByKey()

    def run(self, chain, problems):
        # read-only use of the archive's listing: segments by timeline
        segments = archive.ArchiveIndex(self.storage, self.cluster).segments()
        histories = self.histories(problems["history"])
        for tli in sorted(segments):
            if tli > 1 and tli not in histories:
                problems["history"].append(
                    "segments of timeline %d are archived (%s...) but its history file %s "
                    "is missing or unusable: a restore cannot follow that timeline"
                    % (tli, sorted(segments[tli])[0], history_name(tli)))
            elif tli > 1:
                begin = histories[tli][-1][1] // self.size  # where the timeline starts
                early = sorted(n for n in segments[tli] if self._segno(n) < begin)
                if early:
                    problems["history"].append(
                        "%s says timeline %d starts at %s, but its segment %s is archived "
                        "before that" % (history_name(tli), tli,
                                         format_lsn(histories[tli][-1][1]), early[0]))
        items = sorted((name, info) for names in segments.values() for name, info in names.items())
        self.progress.begin("verify-wal", sum(info.size for dummy, info in items))
        problems["wal"] = [p for p in run_all(self.segment, items, self.workers) if p]
        self.progress.end()
        continuity = []
        for manifest in chain:
            continuity.append(self.continuity(manifest, segments, histories, problems["gaps"]))
        return {"mode": self.mode, "segments": len(items), "history_files": self.history_count,
                "timelines": sorted(segments), "continuity": continuity,
                "stored_bytes": sum(info.size for dummy, info in items)}

    # -- objects -----------------------------------------------------------------------
    def read(self, key):
        """The stored bytes of an archived object checked against the SHA-256 recorded at
        upload; a problem text instead when that fails."""
        info = self.storage.head(key)
        if info is None:
            return None, "%s: missing" % key
        if not info.sha256:
            return None, ("%s: no SHA-256 was recorded at upload (checksum_missing): its "
                          "content cannot be verified" % key)
        try:
            data = self.storage.get(key)
        except NotFound:
            return None, "%s: missing" % key
        except IntegrityError as exc:  # damage; an unreachable repository is not (exit 3)
            return None, "%s: %s" % (key, exc.msg)
        # Checked again for backends whose get() does not (an encrypted object's recorded
        # SHA-256 is its ciphertext's: get() checked that one before decrypting).
        if (not self.storage.encrypted(self.cluster, create=False)
                and hashlib.sha256(data).hexdigest() != info.sha256):
            return None, ("%s: stored bytes do not match the SHA-256 recorded at upload "
                          "(checksum_mismatch)" % key)
        return data, None

    def segment(self, item):
        name, info = item
        try:
            if self.mode == "list":
                head = self.storage.head(info.key)
                if head is None:
                    return "%s: missing" % info.key
                if not head.sha256:
                    return ("%s: no SHA-256 was recorded at upload (checksum_missing)"
                            % info.key)
                return None
            packed, problem = self.read(info.key)
            if problem:
                return problem
            try:
                raw = self.codec.decompress(packed, None, info.key)
            except PgdrError as exc:
                return "%s: %s" % (info.key, exc.msg)
            return self.not_a_segment(name, info.key, raw)
        finally:
            self.progress.advance(info.size)

    def not_a_segment(self, name, key, raw):
        """Why ``raw`` is not segment ``name`` of this cluster (None when it is)."""
        if len(raw) != self.size:
            return "%s: %d bytes once decompressed, a WAL segment has %d" % (
                key, len(raw), self.size)
        header = long_page_header(raw)
        if (header is None or header[3] != segment_number(name, self.size) * self.size
                or header[5] != self.size):
            return "%s: its first page is not the start of WAL segment %s" % (key, name)
        sysid = header[4]
        if sysid != self.system_identifier:
            return ("%s: WAL of database system %d, not of this cluster's %d"
                    % (key, sysid, self.system_identifier))
        return None

    def histories(self, problems):
        """{timeline: [(parent, switch LSN)]} of history files that read, parse and agree
        with their parent's; a problem for each that does not."""
        parsed = {1: []}
        keys = [i.key for i in self.storage.list("%s/wal/history/" % self.cluster)
                if archive.HISTORY.match(i.key.rsplit("/", 1)[-1])]
        self.history_count = len(keys)
        for key in keys:
            tli = int(key.rsplit("/", 1)[-1][:8], 16)
            data, problem = self.read(key)
            if problem:
                problems.append(problem)
                continue
            try:
                entries = archive.parse_history(data.decode("ascii"))
            except (ValueError, IndexError, UnicodeDecodeError, PgdrError) as exc:
                problems.append("%s: cannot be parsed as a timeline history (%s)"
                                % (key, getattr(exc, "msg", exc)))
                continue
            why = _history_inconsistent(tli, entries)
            if why:
                problems.append("%s: %s" % (key, why))
                continue
            parsed[tli] = entries
        for tli in sorted(parsed):
            entries = parsed[tli]
            if not entries or tli not in parsed:
                continue
            parent = entries[-1][0]
            if parent > 1 and parent not in parsed:
                problems.append("%s names parent timeline %d, whose history file %s is "
                                "missing or unusable" % (history_name(tli), parent,
                                                         history_name(parent)))
                del parsed[tli]
            elif parsed.get(parent, []) != entries[:-1]:
                problems.append("%s does not agree with %s, the history of its parent "
                                "timeline" % (history_name(tli), history_name(parent)))
                del parsed[tli]
        return parsed

    # -- continuity --------------------------------------------------------------------
    def continuity(self, manifest, segments, histories, gaps):
        """Every segment from the backup's stop to the end of the archive on the timeline
        path a restore of it follows (recovery_target_timeline=latest)."""
        path = _timeline_path(manifest, histories, self.size)
        first = (parse_lsn(manifest["stop_lsn"]) - 1) // self.size + 1
        ends = [begin for dummy, begin in path[1:]] + [None]
        last = None
        for (tli, begin), end in zip(path, ends):
            for name in segments.get(tli, {}):
                segno = self._segno(name)
                if segno >= max(begin, first) and (end is None or segno < end):
                    last = segno if last is None else max(last, segno)
        missing = []
        for segno in range(first, (last if last is not None else first - 1) + 1):
            tli = [t for t, begin in path if begin <= segno][-1]
            name = segment_name(tli, segno, self.size)
            if name not in segments.get(tli, {}):
                missing.append(name)
        if missing:
            gaps.append("%d segment(s) missing after backup %s (stop LSN %s), first %s, "
                        "while the archive continues to %s: a restore cannot pass it"
                        % (len(missing), manifest["id"], manifest["stop_lsn"], missing[0],
                           segment_name(path[-1][0], last, self.size)))
        return {"backup": manifest["id"], "timeline": path[-1][0],
                "first": segment_name(path[0][0], first, self.size),
                "last": segment_name([t for t, b in path if b <= last][-1], last, self.size)
                if last is not None else None,
                "missing": len(missing)}

    def _segno(self, name):
        return int(name[8:16], 16) * (0x100000000 // self.size) + int(name[16:24], 16)


def _history_inconsistent(tli, entries):
    """Why a parsed history of timeline ``tli`` cannot be right (None when it can)."""
    if not entries:
        return "it lists no parent timeline"
    parents = [p for p, dummy in entries]
    lsns = [lsn for dummy, lsn in entries]
    if parents != sorted(set(parents)) or parents[-1] >= tli:
        return ("its parent timelines %s are not increasing and below %d"
                % (", ".join(str(p) for p in parents), tli))
    if lsns != sorted(lsns):
        return "its switch points go backwards"
    return None


def _timeline_path(manifest, histories, size):
    """[(timeline, first segment number read from it)] from the backup's timeline to the
    newest archived timeline that descends from it after the backup's stop."""
    start, stop = manifest["timeline"], parse_lsn(manifest["stop_lsn"])

    def descends(entries):
        return any(p == start and lsn >= stop for p, lsn in entries)
    target = max([start] + [t for t, e in histories.items() if descends(e)])
    entries = histories.get(target, []) if target != start else []
    timelines = [p for p, dummy in entries] + [target]
    begins = [0] + [lsn // size for dummy, lsn in entries]
    index = timelines.index(start) if start in timelines else 0
    path = list(zip(timelines, begins))[index:]
    path[0] = (start, 0)
    return path
