# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Full physical backup of a running cluster into the repository.

Order matters for safety: start the backup on one session (a temporary slot
holds the WAL), copy the files in parallel, copy pg_control last, stop the
backup, copy the WAL from start to stop, write the file list, the manifest's
digest (manifest.sha256), and only then the manifest. A backup killed at any point before the manifest has no
manifest, so it is never offered for restore.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import hashlib
import json
import os
import re
import socket
import threading
import time

from .. import catalog, faultpoint, snapshots
from ..compress import Codec
from ..errors import ConfigError, IntegrityError, PgdrError, PostgresError, RepositoryError
from ..lease import Lease
from ..parallel import run_all
from ..postgres import datadir, patroni, walsummary
from ..postgres.pages import as_ranges, changed_blocks, is_delta_candidate, read_spans
from ..postgres.session import BackupSession
from ..postgres.wal import format_lsn, history_name, parse_lsn, segments_between
from ..storage import open_storage

KIB = 1024
MIB = 1024 * 1024
# unchanged pages a WAL-summary diff reads along rather than start another read: 256 KiB
READ_GAP_BLOCKS = 32
_LABEL_TIMELINE = re.compile(r"^START TIMELINE: (\d+)$", re.M)


class Piece(object):
    """Part of one large file, stored as one object."""

    def __init__(self, entry, index, offset, length, key):
        self.entry, self.index, self.offset, self.length, self.key = (
            entry, index, offset, length, key)


class DeltaPart(Piece):
    """Part of a relation file compared page by page with the reference backup."""


class Bundle(object):
    """Small files stored together as one object."""

    def __init__(self, number, key):
        self.number, self.key, self.members, self.size = number, key, [], 0


def plan_pieces(entries, prefix, codec, chunk_size, bundle_limit, parent_files=None):
    """Split the entries into transfer tasks: pieces of large files, bundles of small,
    and, against a reference backup, page deltas of relation files it stored in pieces."""
    tasks, bundle = [], None
    parent_files = parent_files or {}
    for entry in entries:
        if entry.kind != "file":
            continue
        parent = parent_files.get(entry.path)
        if parent and parent.get("pieces") and is_delta_candidate(entry.path):
            count = -(-entry.size // chunk_size)
            for index in range(count):
                key = "%sdelta/%s.part%04d%s" % (prefix, entry.path, index, codec.suffix)
                tasks.append(DeltaPart(entry, index, index * chunk_size,
                                       min(chunk_size, entry.size - index * chunk_size), key))
            continue
        if entry.size >= bundle_limit:
            count = max(1, -(-entry.size // chunk_size))
            for index in range(count):
                suffix = ".part%04d" % index if count > 1 else ""
                key = "%sdata/%s%s%s" % (prefix, entry.path, suffix, codec.suffix)
                tasks.append(Piece(entry, index, index * chunk_size,
                                   min(chunk_size, entry.size - index * chunk_size), key))
            continue
        if bundle is None or bundle.size + entry.size > chunk_size:
            number = sum(1 for t in tasks if isinstance(t, Bundle)) + 1
            bundle = Bundle(number, "%sbundle/%06d%s" % (prefix, number, codec.suffix))
            tasks.append(bundle)
        bundle.members.append(entry)
        bundle.size += entry.size
    # Big pieces first, so the pool ends evenly instead of on one long tail.
    tasks.sort(key=lambda t: -(t.length if isinstance(t, Piece) else t.size))
    return tasks


class Meter(object):
    """What the backup reports to progress: bytes read, never past the total announced
    for the phase. The total is the size of the files when they were listed; a file
    that grows while it is read (a table still written to, pg_control) stops at 100%
    instead of showing "105.9% 289/273 MiB", and a phase ends before the next begins."""

    def __init__(self, progress):
        self.progress = progress
        self.total = self.done = 0
        self._lock = threading.Lock()

    def begin(self, task, total):
        with self._lock:
            self.total, self.done = total, 0
        self.progress.begin(task, total)

    def advance(self, nbytes):
        with self._lock:
            step = max(0, min(nbytes, self.total - self.done))
            self.done += step
        if step:
            self.progress.advance(step)

    def end(self):
        self.progress.end()


class BackupRun(object):
    def __init__(self, settings, progress):
        settings.require("cluster")
        self.settings = settings
        self.progress = progress
        self.meter = Meter(progress)
        self.codec = Codec(settings.compression, settings.compression_level)
        self.storage = open_storage(settings)
        self.catalog = catalog.Catalog(self.storage, settings.cluster)
        self.reference = None      # manifest of the backup this one is relative to
        self.parent_files = {}     # its file records, by path
        self.parent_bundles = {}   # its bundles (and those it points to), by key
        self.threshold = 0         # pages with an LSN at or after this changed
        self.block_size = 8192
        self.summary = None        # ChangedBlocks from WAL summaries: read only those
        self.block_source = None   # wal_summary or page_scan (diff and incr)
        self.delta_disk_read = 0   # bytes of relation files read to find changed pages
        self.lease = None          # held while the backup runs: lost -> the backup stops
        self.strict = False        # a file that cannot be read fails the backup (snapshots)

    def store(self, key, raw):
        self._lease_check()
        packed = self.codec.compress(raw)
        packed_sha = hashlib.sha256(packed).hexdigest()
        self.storage.put(key, packed, sha256=packed_sha)
        self.meter.advance(len(raw))
        return {"key": key, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                "stored_size": len(packed), "stored_sha256": packed_sha}

    def copy_piece(self, piece):
        try:
            with open(piece.entry.source, "rb") as handle:
                handle.seek(piece.offset)
                raw = handle.read(piece.length)
        except (IOError, OSError) as exc:
            self._unreadable(piece.entry, exc)
            raw = b""  # the file was dropped during the backup; WAL replay agrees
        record = self.store(piece.key, raw)
        record["offset"] = piece.offset
        return record

    def copy_delta(self, part):
        """The pages of one part that changed since the reference: one object holding
        them, or none at all when nothing changed. With WAL summaries only those pages
        are read; otherwise every page's LSN is."""
        first = part.offset // self.block_size
        if self.summary is not None:
            length, runs, data, disk_read = self._read_summarized(part, first)
        else:
            length, runs, data = self._read_scanned(part)
            disk_read = length
        # read: the part's extent in the file; disk_read: the bytes read to find the changes
        record = {"offset": part.offset, "read": length, "blocks": [],
                  "disk_read": disk_read}
        if runs:
            record.update(self.store(part.key, data))
            record["blocks"] = [[first + start, count] for start, count in runs]
            record["block_size"] = self.block_size
        self.meter.advance(length - len(data))  # pages unchanged (or not read) count too
        return record

    def _read_scanned(self, part):
        """(length of the part now, runs of changed pages, their bytes): every page read,
        its LSN compared with the reference's start."""
        try:
            with open(part.entry.source, "rb") as handle:
                handle.seek(part.offset)
                raw = handle.read(part.length)
        except (IOError, OSError):
            raw = b""
        size = self.block_size  # one slice per run of consecutive changed pages
        runs = as_ranges(changed_blocks(raw, self.threshold, size))
        return len(raw), runs, b"".join(raw[s * size:(s + n) * size] for s, n in runs)

    def _read_summarized(self, part, first):
        """The same from the WAL summaries, and the bytes read: only the changed pages
        (and a trailing partial page, as the scan takes it), in spans that take the
        unchanged pages between two runs less than READ_GAP_BLOCKS apart along."""
        size = self.block_size
        try:
            fd = os.open(part.entry.source, os.O_RDONLY)
        except OSError:
            return 0, [], b"", 0  # dropped during the backup; WAL replay agrees
        chunks, disk_read = [], 0
        try:
            length = max(0, min(part.length, os.fstat(fd).st_size - part.offset))
            count = -(-length // size)
            wanted = self.summary.blocks(part.entry.path, first, count)
            if length % size and (not wanted or wanted[-1] != count - 1):
                wanted.append(count - 1)
            runs = as_ranges(wanted)
            for start, blocks, inside in read_spans(runs, READ_GAP_BLOCKS):
                span = os.pread(fd, min(blocks * size, length - start * size),
                                part.offset + start * size)
                disk_read += len(span)
                chunks.extend(span[(s - start) * size:(s - start + n) * size]
                              for s, n in inside)
        finally:
            os.close(fd)
        return length, runs, b"".join(chunks), disk_read

    def copy_bundle(self, bundle):
        """Small files: those identical to the reference's copy are not stored again."""
        parts, members, reused, offset = [], [], [], 0
        for entry in bundle.members:
            try:
                with open(entry.source, "rb") as handle:
                    data = handle.read()
            except (IOError, OSError) as exc:
                self._unreadable(entry, exc)
                continue  # removed during the backup
            digest = hashlib.sha256(data).hexdigest()
            parent = self.parent_files.get(entry.path)
            if parent and parent.get("bundle") and parent.get("sha256") == digest \
                    and not parent.get("deltas"):
                reused.append(entry.path)
                self.meter.advance(len(data))
                continue
            parts.append(data)
            members.append({"path": entry.path, "offset": offset, "size": len(data),
                            "sha256": digest})
            offset += len(data)
        record = self.store(bundle.key, b"".join(parts)) if members else {"key": None}
        record["members"] = members
        record["reused"] = reused
        return record

    def run(self, dry_run=False):
        s = self.settings
        self.storage.check()
        # An encrypted repository's keys open now, before backup mode, or the run fails.
        self.storage.encrypted(s.cluster, create=not dry_run)
        if s.from_snapshot:
            return self._materialise(dry_run)
        try:
            session = BackupSession(s)
        except PostgresError as exc:
            if s.backup_from == "primary":
                raise
            return self._skip("PostgreSQL is not reachable on this node (%s); with "
                              "backup_from=%s another node backs up" % (exc.msg, s.backup_from))
        try:
            server = session.describe_server()
            pgdata = self._check_pgdata(server, session)
            reason = node_designation(s, session)
            if reason:
                return self._skip(reason)
            if dry_run:
                kind = self._choose_reference(server)
                recent = self._recent(kind, server)  # the run would skip: so does check mode
                if recent:
                    return self._skip(recent)
                if kind == catalog.SNAPSHOT:  # refused in check mode as in the run
                    self._snapshot_volumes(server, pgdata)
                return {"changed": True, "pg_data": pgdata,
                        "backup": {"type": kind, "cluster": s.cluster,
                                   "reference": self.reference["id"] if self.reference
                                   else None}}
            return self._leased(lambda: self._take(session, server, pgdata))
        finally:
            session.close()

    def _take(self, session, server, pgdata):
        kind = self._choose_reference(server)
        if kind == catalog.SNAPSHOT:
            # the earlier snapshot backups still pending: complete (or failed) by now?
            # (before min_interval: a failed one is no reason to skip)
            snapshots.settle(self.settings, self.catalog, self.progress)
        recent = self._recent(kind, server)
        if recent:
            return self._skip(recent)
        if kind == catalog.SNAPSHOT:
            return self._snapshot_backup(session, server, pgdata)
        return self._backup(session, server, pgdata, kind)

    def _leased(self, work):
        """work() while this node holds the cluster's backup lease; a skip when another
        live node holds it."""
        s = self.settings
        lease = Lease(self.storage, s.cluster, "backup", s.backup_lease,
                      log=self.progress.event)
        held, holder = lease.acquire()  # an unreadable lease raises: never a skip
        if not held:  # a valid lease of another holder, read back: a live node backs up
            return self._skip("node %s holds the backup lease of cluster %s until %s"
                              % (holder.get("holder"), s.cluster,
                                 _iso(holder.get("expires_at", 0))))
        self.lease = lease
        try:
            return work()
        finally:
            lease.release()

    def _skip(self, reason):
        """Not this node's turn: a clear line, exit 0 (nothing for an operator to do)."""
        self.progress.event("not backing up: " + reason)
        return {"changed": False, "skipped": True, "reason": reason}

    def _recent(self, kind, server):
        """With min_interval, the reason to skip when a backup of this type (or a full)
        of this cluster started less than min_interval minutes ago."""
        if not self.settings.min_interval:
            return None
        horizon = time.time() - self.settings.min_interval * 60
        complete = self.catalog.scan()[0]
        # a snapshot counts against snapshots only: it is not a backup off this host
        # (a pending one too: its snapshots are taken, the provider only completes them)
        for manifest in reversed(self.catalog.snapshots + self.catalog.pending_snapshots
                                 if kind == catalog.SNAPSHOT else complete):
            if manifest["system_identifier"] != server["system_identifier"]:
                continue
            if _epoch(manifest["start_time"]) >= horizon and manifest["type"] in (kind, "full"):
                return ("backup %s (%s) started at %s on %s, less than min_interval=%d "
                        "minutes ago" % (manifest["id"], manifest["type"],
                                         manifest["start_time"], manifest.get("host", "?"),
                                         self.settings.min_interval))
        return None

    def _check_pgdata(self, server, session):
        reported = server["data_directory"]
        pgdata = self.settings.pg_data or reported
        if os.path.realpath(pgdata) != os.path.realpath(reported):
            raise ConfigError("pg_data=%s but the server at %s:%s runs from %s"
                              % (pgdata, self.settings.pg_host, self.settings.pg_port,
                                 reported), code="pgdata_mismatch", stage="connect")
        if session.scalar("SHOW full_page_writes") != "on":
            raise PostgresError("full_page_writes is off: an online backup would hold "
                                "torn pages that replay cannot repair; turn it on",
                                code="full_page_writes_off", stage="connect")
        if not os.access(os.path.join(pgdata, "global", "pg_control"), os.R_OK):
            raise ConfigError("cannot read %s as this user (run pgdr as the cluster's "
                              "owner)" % pgdata, code="pgdata_unreadable", stage="connect")
        return pgdata

    def _choose_reference(self, server):
        """The backup type to take and, for diff/incr, the backup it refers to: a diff
        to the newest full, an incr to the newest backup; auto is a full when there is
        none or the newest is older than full_max_age days, a diff otherwise."""
        wanted = self.settings.type
        complete = self.catalog.scan()[0]
        self.catalog.refuse_newer_format()  # never a backup beside a newer format's
        if wanted == catalog.SNAPSHOT:
            return wanted
        same = [m for m in complete if m["system_identifier"] == server["system_identifier"]]
        fulls = [m for m in same if m["type"] == "full"]
        if wanted == "auto":
            age = (time.time() - _epoch(fulls[-1]["stop_time"])) / 86400.0 if fulls else None
            wanted = "diff" if age is not None and age < self.settings.full_max_age else "full"
        if wanted == "full":
            return "full"
        if not fulls:
            self.progress.event("no full backup of this cluster (system identifier %s) to "
                                "refer to: taking a full backup instead of %s"
                                % (server["system_identifier"], wanted))
            return "full"
        self.reference = fulls[-1] if wanted == "diff" else same[-1]
        listing = self.catalog.file_list(self.reference)
        self.parent_files = dict((f["path"], f) for f in listing["files"])
        self.parent_bundles = dict((b["key"], b) for b in listing["bundles"])
        self.threshold = parse_lsn(self.reference["start_lsn"])
        self.block_size = int(server["settings"].get("block_size", 8192))
        return wanted

    def _new_id(self, kind):
        existing = set(self.catalog.backup_ids())
        while True:
            backup_id = catalog.new_backup_id(kind)
            if backup_id not in existing:
                return backup_id
            time.sleep(1.0)

    def _backup(self, session, server, pgdata, kind):
        s = self.settings
        backup_id = self._new_id(kind)
        if self.lease is not None:
            self.lease.set_backup(backup_id)  # cleanup never removes what it protects
        prefix = catalog.backup_prefix(s.cluster, backup_id)
        started = time.time()
        self.progress.event("backup %s of %s starting" % (backup_id, pgdata))
        self._reserve_wal(session)
        start_lsn = session.start("pgdr %s" % backup_id, s.fast_checkpoint)
        try:
            if self.reference:
                self._changed_blocks(session, start_lsn)
            entries = datadir.walk(pgdata, server["version_num"], server["tablespaces"])
            files, bundles = self._copy_data(entries, prefix, backup_id)
            faultpoint.reached("backup.after_bundles")
            stop_lsn, label, spcmap = session.stop()
            server["stop_xmax"] = session.snapshot_xmax()
            timeline = int(_LABEL_TIMELINE.search(label).group(1))
            wal = self._copy_wal(pgdata, prefix, timeline, start_lsn, stop_lsn,
                                 server["wal_segment_size"])
            self._lease_check()
            manifest = self._manifest(backup_id, server, pgdata, start_lsn, stop_lsn,
                                      timeline, label, spcmap, started, files, bundles, wal,
                                      kind)
        except BaseException as exc:
            self._discard(backup_id, prefix, exc)
            raise
        faultpoint.reached("backup.after_manifest")
        self.progress.event("backup %s complete: %s" % (backup_id, describe(manifest)))
        return {"changed": True, "backup": summarize(manifest)}

    def _unreadable(self, entry, exc):
        """A live cluster drops files while it is copied (WAL replay agrees); a snapshot
        does not, so there a read error fails the backup instead of storing less."""
        if self.strict:
            raise IntegrityError("cannot read %s from the snapshot (%s): the backup stops "
                                 "rather than store it incomplete" % (entry.source, exc),
                                 code="snapshot_failed", stage="backup")

    def _reserve_wal(self, session):
        """A temporary slot holds the WAL from the start of the backup to its copy."""
        if not session.reserve_wal("pgdr_%d" % os.getpid()):
            self.progress.event("warning: no replication slot free to hold WAL; the "
                                "backup fails if the server recycles WAL it needs")

    def _copy_data(self, entries, prefix, backup_id):
        """Copy the files of a walk, pg_control last in a bundle of its own: (file
        records, bundles) for the manifest."""
        s = self.settings
        control = entries.pop()
        tasks = plan_pieces(entries, prefix, self.codec, s.chunk_size * MIB,
                            s.bundle_limit * KIB, self.parent_files)
        self.meter.begin("backup", sum(e.size for e in entries + [control]
                                       if e.kind == "file"))
        records = run_all(self._copy, tasks, s.workers)
        self.delta_disk_read = sum(r.get("disk_read", 0) for r in records)
        last = Bundle(0, "%sbundle/%06d%s" % (prefix, 0, self.codec.suffix))
        last.members.append(control)
        control_record = self.copy_bundle(last)
        self.meter.end()
        files, bundles = _file_records(entries + [control], tasks, records + [control_record],
                                       last, self.parent_files, backup_id)
        return files, self._referenced_bundles(files, bundles)

    # -- a snapshot carried into the repository -----------------------------------------
    def _materialise(self, dry_run):
        """A full backup in the repository made from a snapshot backup's snapshots, read
        where the provider keeps them: neither the live cluster's disks nor PostgreSQL
        are read. Its consistency point, label and WAL are the snapshot backup's; it
        restores on its own and diffs can refer to it. Once per snapshot backup."""
        s = self.settings
        if s.type not in ("full", "auto"):
            raise ConfigError("from_snapshot=%s makes a full backup; type=%s cannot be "
                              "combined with it (expected full)" % (s.from_snapshot, s.type),
                              code="config_invalid", stage="check", option="from_snapshot")
        if s.from_snapshot != "latest" and not catalog.is_snapshot(s.from_snapshot):
            raise ConfigError("from_snapshot=%s is not the id of a snapshot backup (expected "
                              "latest or an id of info's snapshots, such as "
                              "20261206T120000Z-snapshot)" % s.from_snapshot,
                              code="config_invalid", stage="check", option="from_snapshot")
        complete = self.catalog.scan()[0]
        self.catalog.refuse_newer_format()
        if s.from_snapshot == "latest":  # a schedule on every node: the one that has them
            usable = [m for m in self.catalog.snapshots if not snapshots.elsewhere(m)
                      and m["snapshot"]["provider"] == "btrfs"
                      and not snapshots.missing(s, m)]
            if not usable:
                return self._skip("no snapshot backup of cluster %s whose snapshots this "
                                  "host holds" % s.cluster)
            source = usable[-1]
        else:
            source = self.catalog.manifest(s.from_snapshot)
        done = self._materialised(complete, source)
        if done:
            return done
        if source["snapshot"]["provider"] != "btrfs":
            raise ConfigError("from_snapshot=%s: snapshot backups of provider %s cannot be "
                              "carried into the repository yet (only btrfs snapshots are "
                              "read in place)" % (source["id"],
                                                  source["snapshot"]["provider"]),
                              code="snapshot_unsupported", stage="check",
                              option="from_snapshot")
        snapshots.require(s, source)
        if dry_run:
            return {"changed": True, "pg_data": source["pg_data"],
                    "backup": {"type": "full", "cluster": s.cluster, "reference": None,
                               "from_snapshot": source["id"]}}
        return self._leased(lambda: self._copy_snapshot(source))

    def _materialised(self, complete, source):
        """The result of a run that finds the snapshot backup already in the repository."""
        done = [m for m in complete if m.get("from_snapshot") == source["id"]]
        if not done:
            return None
        return {"changed": False, "backup": summarize(done[-1]),
                "msg": "snapshot backup %s is already in the repository as full backup %s"
                       % (source["id"], done[-1]["id"])}

    def _copy_snapshot(self, source):
        s = self.settings
        # read again under the lease: another run may have made it meanwhile
        done = self._materialised(catalog.Catalog(self.storage, s.cluster).scan()[0], source)
        if done:
            return done
        self.strict = True  # a read-only snapshot never loses a file: any error is damage
        volumes = source["snapshot"]["volumes"]
        root = next(v for v in volumes if v["role"] == "pgdata")["snapshot"]["path"]
        relocated = dict((str(v["oid"]), v["snapshot"]["path"]) for v in volumes
                         if v["role"] == "tablespace")
        backup_id = self._new_id("full")
        self.lease.set_backup(backup_id)
        prefix = catalog.backup_prefix(s.cluster, backup_id)
        started = time.time()
        self.progress.event("backup %s from snapshot backup %s (%s) starting"
                            % (backup_id, source["id"], root))
        server = {"version_num": source["pg_version"],
                  "system_identifier": source["system_identifier"],
                  "in_recovery": source["from_standby"], "tablespaces": source["tablespaces"],
                  "settings": source["settings"], "stop_xmax": source.get("stop_xmax")}
        try:
            entries = datadir.walk(root, source["pg_version"], source["tablespaces"],
                                   relocated)
            files, bundles = self._copy_data(entries, prefix, backup_id)
            wal = self._copy_stored_wal(source, prefix)
            self._lease_check()
            manifest = self._manifest(
                backup_id, server, source["pg_data"], parse_lsn(source["start_lsn"]),
                parse_lsn(source["stop_lsn"]), source["timeline"], source["backup_label"],
                source["tablespace_map"], started, files, bundles, wal, "full",
                extra={"from_snapshot": source["id"], "start_time": source["start_time"],
                       "stop_time": source["stop_time"], "stop_epoch": source["stop_epoch"]})
        except BaseException as exc:
            self._discard(backup_id, prefix, exc)
            raise
        self.progress.event("backup %s complete from snapshot backup %s: %s"
                            % (backup_id, source["id"], describe(manifest)))
        return {"changed": True, "backup": summarize(manifest)}

    def _copy_stored_wal(self, source, prefix):
        """The snapshot backup's WAL objects, read back from the repository, checked
        against their digests and stored again as they are under this backup (each
        backup owns its objects; the key keeps its codec's suffix)."""
        listing = self.catalog.file_list(source)
        old = catalog.backup_prefix(source["cluster"], source["id"])
        self.meter.begin("backup WAL", sum(w["size"] for w in listing["wal"]))

        def copy(stored):
            self._lease_check()
            packed = self.storage.get(stored["key"])
            if hashlib.sha256(packed).hexdigest() != stored["stored_sha256"]:
                raise IntegrityError("WAL object %s of snapshot backup %s does not match its "
                                     "SHA-256" % (stored["key"], source["id"]),
                                     code="checksum_mismatch", stage="backup",
                                     key=stored["key"])
            record = dict(stored, key=prefix + stored["key"][len(old):])
            self.storage.put(record["key"], packed, sha256=stored["stored_sha256"])
            self.meter.advance(stored["size"])
            return record

        records = run_all(copy, listing["wal"], self.settings.workers)
        self.meter.end()
        return records

    def _snapshot_volumes(self, server, pgdata):
        """(provider, volumes) of a snapshot backup, checked: refused before backup mode."""
        source = snapshots.provider(self.settings)
        volumes = snapshots.volumes(pgdata, server["tablespaces"])
        source.check(volumes)
        return source, volumes

    def _snapshot_backup(self, session, server, pgdata):
        """Snapshot every volume inside one backup session and stop it as soon as the
        last snapshot was taken; then the WAL and the manifest, as any backup's. The
        data stays with the provider: the repository holds no file of it."""
        s = self.settings
        source, volumes = self._snapshot_volumes(server, pgdata)
        # the size and file count the manifest reports, walked before backup mode
        entries = datadir.walk(pgdata, server["version_num"], server["tablespaces"])
        files = [e for e in entries if e.kind == "file"]
        backup_id = self._new_id(catalog.SNAPSHOT)
        if self.lease is not None:
            self.lease.set_backup(backup_id)
        prefix = catalog.backup_prefix(s.cluster, backup_id)
        started = time.time()
        self.progress.event("snapshot backup %s of %s starting (%s, %d volume(s))"
                            % (backup_id, pgdata, source.name, len(volumes)))
        # first, the intent: what it snapshots is this repository's to remove if it dies
        self.storage.put(prefix + catalog.SNAPSHOT_INTENT, json.dumps(
            {"id": backup_id, "host": socket.gethostname(), "provider": source.name,
             "volumes": [snapshots.volume_name(v) for v in volumes]}).encode("utf-8"),
            if_absent=True)
        self._reserve_wal(session)
        start_lsn = session.start("pgdr %s" % backup_id, s.fast_checkpoint)
        taken = []
        try:
            source.create(s.cluster, backup_id, volumes, taken)
            stop_lsn, label, spcmap = session.stop()
            faultpoint.reached("backup.after_snapshots")
            server["stop_xmax"] = session.snapshot_xmax()
            timeline = int(_LABEL_TIMELINE.search(label).group(1))
            wal = self._copy_wal(pgdata, prefix, timeline, start_lsn, stop_lsn,
                                 server["wal_segment_size"])
            state = self._snapshot_state(session, source, taken)
            self._lease_check()
            record = {"provider": source.name, "off_host": source.off_host,
                      "state": state, "volumes": taken}
            manifest = self._manifest(
                backup_id, server, pgdata, start_lsn, stop_lsn, timeline, label, spcmap,
                started, [], [], wal, catalog.SNAPSHOT,
                extra={"snapshot": record, "size": sum(e.size for e in files),
                       "file_count": len(files), "changed_files": len(files)})
        except BaseException as exc:
            self._abandon(source, taken, backup_id, prefix, exc)
            raise
        self.progress.event("snapshot backup %s %s: %s" % (
            backup_id, "complete" if state == "complete" else "recorded, its snapshots "
            "pending at the provider (not offered until they complete)", describe(manifest)))
        return {"changed": True, "backup": summarize(manifest)}

    def _snapshot_state(self, session, source, taken):
        """complete; or pending when the provider completes snapshots later (EBS) and
        snapshot_wait seconds pass first. Backup mode has ended and the slot that held
        the WAL is dropped first: the wait holds only the backup lease. A snapshot AWS
        failed fails the backup; one not found yet (EC2 answers eventually) or a provider
        that does not answer leaves it pending, for a later run to settle."""
        if not source.completes_later:
            return "complete"  # made whole, checked by create
        if not session.release_wal():
            self.progress.event("warning: the slot that held the backup's WAL could not be "
                                "dropped before the wait; it goes when the backup ends")
        deadline = time.time() + self.settings.snapshot_wait
        while True:
            try:
                found = snapshots.volume_states(source, taken)
            except PgdrError as exc:
                found, why = {}, exc.msg
            else:
                why = None
            bad = sorted(i for i, state in found.items() if state == "failed")
            if bad:
                raise RepositoryError(
                    "snapshot(s) %s of provider %s failed at the provider right after being "
                    "requested" % (", ".join(bad), source.name), code="snapshot_failed",
                    stage="snapshot")
            if found and all(state == "complete" for state in found.values()):
                return "complete"
            left = deadline - time.time()
            if left <= 0:
                self.progress.event("snapshot(s) of backup still pending after snapshot_wait="
                                    "%d s (%s): the backup is recorded pending, offered once a "
                                    "later snapshot backup, verify or expire finds them "
                                    "complete" % (self.settings.snapshot_wait, why or ", ".join(
                                        "%s %s" % kv for kv in sorted(found.items()))))
                return "pending"
            time.sleep(min(5.0, left))

    def _abandon(self, source, taken, backup_id, prefix, error):
        """A failed snapshot backup without a manifest removes its snapshots, then what it
        stored. A snapshot it cannot remove keeps the objects too (the intent among
        them), so that cleanup removes both later; with a manifest, or when that cannot
        be read, everything stays."""
        try:
            complete = self.storage.head(prefix + catalog.MANIFEST) is not None
        except PgdrError:
            complete = None
        if complete is None:  # unknown: everything stays, for pgdr cleanup to sort out
            self.progress.event("backup %s failed and whether its manifest was stored "
                                "cannot be read: its objects and snapshots (%s) stay"
                                % (backup_id, ", ".join(v["snapshot"]["id"] for v in taken)
                                   or "none"))
            return
        if complete:
            self._discard(backup_id, prefix, error)  # says it is complete and kept
            return
        left = []
        for volume in taken:
            try:
                source.delete(volume)
            except PgdrError as exc:
                left.append(volume["snapshot"]["id"])
                self.progress.event("warning: snapshot %s of failed backup %s could not be "
                                    "removed: %s" % (volume["snapshot"]["id"], backup_id,
                                                     exc.msg))
        if left:
            self.progress.event("backup %s failed: its objects stay with snapshot(s) %s, "
                                "for pgdr cleanup to remove" % (backup_id, ", ".join(left)))
            return
        self._discard(backup_id, prefix, error)

    def _changed_blocks(self, session, start_lsn):
        """Read only the pages the WAL summaries name, when they cover the whole range
        since the reference's start on its timeline; else scan every page."""
        why = "changed_blocks=scan"
        if self.settings.changed_blocks == "auto":
            timeline = session.timeline()
            if timeline != self.reference["timeline"]:
                why = "the reference is on timeline %s, this backup on %s" % (
                    self.reference["timeline"], timeline)
            else:
                self.summary, why = walsummary.changed_since(
                    session, self.threshold, start_lsn, timeline, progress=self.progress)
        self.block_source = "wal_summary" if self.summary is not None else "page_scan"
        if self.summary is None:
            self.progress.event("changed pages: reading every page's LSN (%s)" % why)

    def _copy(self, task):
        if isinstance(task, DeltaPart):
            return self.copy_delta(task)
        if isinstance(task, Piece):
            return self.copy_piece(task)
        return self.copy_bundle(task)

    def _referenced_bundles(self, files, bundles):
        """Bundles of this backup plus those of older backups that records point to."""
        by_key = dict((b["key"], b) for b in bundles)
        for item in files:
            key = item.get("bundle")
            if key and key not in by_key:
                by_key[key] = self.parent_bundles[key]
        return sorted(by_key.values(), key=lambda b: b["key"])

    def _copy_wal(self, pgdata, prefix, timeline, start_lsn, stop_lsn, segment_size):
        """The WAL that makes the backup consistent, read from pg_wal."""
        names = segments_between(timeline, start_lsn, stop_lsn, segment_size)
        history = history_name(timeline)
        wal_dir = os.path.join(pgdata, "pg_wal")
        if timeline > 1 and os.path.exists(os.path.join(wal_dir, history)):
            names = [history] + names

        self.meter.begin("backup WAL", sum(_size(os.path.join(wal_dir, n)) for n in names))

        def copy(name):
            path = os.path.join(wal_dir, name)
            try:
                with open(path, "rb") as handle:
                    raw = handle.read()
            except (IOError, OSError) as exc:
                raise IntegrityError("WAL %s needed by the backup cannot be read from %s "
                                     "(%s): the server recycled it before it was copied"
                                     % (name, wal_dir, exc), code="wal_missing",
                                     stage="backup")
            record = self.store("%swal/%s%s" % (prefix, name, self.codec.suffix), raw)
            record["name"] = name
            return record

        records = run_all(copy, names, self.settings.workers)
        self.meter.end()
        return records

    def _lease_check(self):
        if self.lease is not None:
            self.lease.check()

    def _discard(self, backup_id, prefix, error):
        """A failed backup removes what it stored (never offered for restore either way,
        having no manifest), best effort: what cannot be removed now is left to `pgdr
        cleanup`. A backup whose manifest is stored is complete and never removed; one
        whose manifest cannot be checked is left alone too. True when the repository
        holds nothing of it (no manifest)."""
        why = getattr(error, "msg", None) or type(error).__name__
        try:
            if self.storage.head(prefix + catalog.MANIFEST) is not None:
                self.progress.event("backup %s failed (%s) after its manifest was stored: "
                                    "it is complete and kept" % (backup_id, why))
                return False
            keys = [info.key for info in self.storage.list(prefix)]
            self.storage.delete(keys)
        except PgdrError as exc:
            self.progress.event("warning: backup %s failed (%s) and what it stored under %s "
                                "could not be removed (%s): `pgdr cleanup` removes it later"
                                % (backup_id, why, prefix, exc.msg))
            return False
        if keys:
            self.progress.event("backup %s failed (%s): removed the %d object(s) it had "
                                "stored" % (backup_id, why, len(keys)))
        return True  # nothing of it is left in the repository

    def _manifest(self, backup_id, server, pgdata, start_lsn, stop_lsn, timeline, label,
                  spcmap, started, files, bundles, wal, kind, extra=None):
        s = self.settings
        prefix = catalog.backup_prefix(s.cluster, backup_id)
        file_list = catalog.encode_file_list({"files": files, "bundles": bundles,
                                              "wal": wal})
        self.storage.put(prefix + catalog.FILE_LIST, file_list, if_absent=True)
        faultpoint.reached("backup.before_manifest")
        stopped = time.time()
        segments = [w["name"] for w in wal if not w["name"].endswith(".history")]
        own = catalog.backup_prefix(s.cluster, backup_id)
        stored = sum(o["stored_size"] for o in catalog.chain_objects(
            {"files": files, "bundles": bundles, "wal": wal}) if o["key"].startswith(own))
        manifest = {
            "format": catalog.FORMAT, "id": backup_id, "cluster": s.cluster, "type": kind,
            "reference": self.reference["id"] if self.reference else None,
            "chain": (self.reference.get("chain") or [self.reference["id"]]) + [backup_id]
            if self.reference else [backup_id],
            "reference_start_lsn": self.reference["start_lsn"] if self.reference else None,
            # the manifests this one builds on, as read: checked again at every restore
            "chain_manifest_sha256": self.catalog.manifest_digests(
                self.reference.get("chain") or [self.reference["id"]])
            if self.reference else {},
            "pg_version": server["version_num"],
            "system_identifier": server["system_identifier"],
            "from_standby": server["in_recovery"], "pg_data": pgdata,
            "host": socket.gethostname(),
            "timeline": timeline, "start_lsn": format_lsn(start_lsn),
            "stop_lsn": format_lsn(stop_lsn), "stop_xmax": server.get("stop_xmax"),
            "start_wal": segments[0] if segments else None,
            "stop_wal": segments[-1] if segments else None,
            "start_time": _iso(started), "stop_time": _iso(stopped),
            "stop_epoch": round(stopped, 6),  # exact: time targets compare with it
            "duration": round(stopped - started, 3),
            "compression": self.codec.name, "backup_label": label, "tablespace_map": spcmap,
            "tablespaces": server["tablespaces"], "settings": server["settings"],
            # how a diff/incr found its changed pages, and the bytes of relation files it
            # read to find them (all of them with page_scan)
            "block_source": self.block_source,
            "delta_read_size": self.delta_disk_read if self.reference else None,
            "file_count": sum(1 for f in files if f["kind"] == "file"),
            "changed_files": sum(1 for f in files if _stored_here(f, own)),
            "removed_files": sorted(set(self.parent_files) - set(f["path"] for f in files)),
            "size": sum(f.get("size", 0) for f in files),
            "wal_size": sum(w["size"] for w in wal),
            "stored_size": stored + len(file_list),
            "file_list_sha256": hashlib.sha256(file_list).hexdigest(),
        }
        manifest.update(extra or {})
        # its digest, then the manifest itself: the backup's completion mark
        catalog.write_manifest(self.storage, s.cluster, manifest)
        return manifest


def _file_records(entries, tasks, records, control_bundle, parent_files, backup_id):
    """Manifest records of every entry, from the tasks that copied (or compared) them.
    A file unchanged since the reference keeps the reference's record: it points to
    objects that older backups stored. A relation file compared page by page gets
    the reference's layers plus one delta layer."""
    pieces, bundled, deltas, bundles = {}, {}, {}, []
    for task, record in zip(list(tasks) + [control_bundle], records):
        if isinstance(task, DeltaPart):
            deltas.setdefault(task.entry.path, []).append(record)
        elif isinstance(task, Piece):
            piece = dict((k, record[k]) for k in ("key", "offset", "size", "sha256",
                                                  "stored_size", "stored_sha256"))
            pieces.setdefault(task.entry.path, []).append(piece)
        else:
            if record["key"]:
                bundles.append(dict((k, record[k]) for k in ("key", "size", "stored_size",
                                                             "stored_sha256", "sha256")))
            for member in record["members"]:
                bundled[member["path"]] = dict(member, bundle=record["key"])
            for path in record["reused"]:
                bundled[path] = parent_files[path]
    files = []
    for entry in entries:
        item = {"path": entry.path, "kind": entry.kind, "mode": entry.mode,
                "mtime": entry.mtime}
        if entry.kind == "tablespace":
            item["link"] = entry.link
        elif entry.kind == "file":
            if entry.path in deltas:
                item.update(_delta_record(parent_files[entry.path], deltas[entry.path],
                                          backup_id))
            elif entry.path in pieces:
                parts = sorted(pieces[entry.path], key=lambda p: p["offset"])
                item["pieces"] = parts
                item["size"] = sum(p["size"] for p in parts)
            elif entry.path in bundled:
                member = bundled[entry.path]
                item.update(bundle=member["bundle"], offset=member["offset"],
                            size=member["size"], sha256=member["sha256"])
            else:
                continue  # vanished during the backup
        files.append(item)
    return files, bundles


def _delta_record(parent, parts, backup_id):
    """The reference's base and layers, plus this backup's changed pages."""
    parts = sorted(parts, key=lambda p: p["offset"])
    size = sum(p["read"] for p in parts)
    fields = ("key", "blocks", "block_size", "size", "sha256", "stored_size", "stored_sha256")
    stored = [dict((k, p[k]) for k in fields) for p in parts if p["blocks"]]
    layer = {"backup": backup_id, "file_size": size, "parts": stored}
    return {"pieces": parent["pieces"], "size": size,
            "deltas": list(parent.get("deltas", ())) + [layer]}


def _stored_here(item, prefix):
    """True when a file record points to data this backup stored (a changed file)."""
    if (item.get("bundle") or "").startswith(prefix):
        return True
    return any(o["key"].startswith(prefix) for o in catalog.chain_objects(
        {"files": [item], "bundles": [], "wal": []}))


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # reported when it is copied


def describe(manifest):
    """The one text of a backup's counts, for the log line and the CLI: file_count is
    the manifest's (regular files, pg_control included; directories and tablespace
    links are not files), the same number --json and info give."""
    return "%d files, %.1f MiB %s, %.1f MiB stored, %.1f s" % (
        manifest["file_count"], manifest["size"] / MIB,
        "snapshotted" if manifest.get("type") == catalog.SNAPSHOT else "read",
        manifest["stored_size"] / MIB, manifest["duration"])


def _epoch(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def designation(settings, state):
    """Why this node must not back up now (None when it should), from backup_from and
    the replication state seen here. A primary counts a standby healthy only below half
    the lag bound that a standby applies to itself: in between both back up (the lease
    serialises them) rather than neither."""
    mode, bound = settings.backup_from, settings.standby_max_lag
    if state["role"] == "standby":
        if mode == "primary":
            return "this node is a standby; with backup_from=primary the primary backs up"
        lag = state["lag"]
        if state["receiver"] != "streaming" or lag is None or lag > bound:
            return ("this standby is not healthy enough to back up from (WAL receiver %s, "
                    "replay lag %s s, standby_max_lag %d s); %s" % (
                        state["receiver"] or "not running",
                        "unknown" if lag is None else "%.0f" % lag, bound,
                        "the primary backs up" if mode == "prefer-standby"
                        else "no backup from here"))
        return None
    if mode == "standby":
        return "this node is the primary; with backup_from=standby a standby backs up"
    if mode == "prefer-standby":
        healthy = [s for s in state["standbys"]
                   if s["state"] == "streaming" and s["lag"] <= bound / 2.0]
        if healthy:
            first = healthy[0]
            return ("standby %s (%s) is streaming with a replay lag of %.0f s: it is the "
                    "designated node" % (first["name"], first["address"], first["lag"]))
    return None


def node_designation(settings, session):
    """Why this node must not back up now: Patroni's view of the cluster when the node
    runs Patroni (every member sees the same member list), else PostgreSQL's own."""
    members = patroni.view(settings.patroni_url)
    if members is not None:
        return patroni.designation(settings.backup_from, members,
                                   settings.standby_max_lag_bytes)
    return designation(settings, session.replication_state())


def _iso(timestamp):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def summarize(manifest):
    keys = ("id", "cluster", "type", "reference", "chain", "host", "pg_version", "timeline",
            "start_lsn", "stop_lsn", "start_wal", "stop_wal", "start_time", "stop_time", "duration",
            "compression", "file_count", "changed_files", "size", "wal_size", "stored_size",
            "from_standby", "system_identifier", "block_source", "delta_read_size",
            "snapshot", "from_snapshot")
    return dict((k, manifest.get(k)) for k in keys)


def run(settings, progress, dry_run=False):
    if dry_run:
        return BackupRun(settings, progress).run(dry_run)
    from .. import metrics  # the node's textfile: success and failure (never fails this)
    try:
        result = BackupRun(settings, progress).run(dry_run)
    except Exception as exc:
        metrics.backup_failed(settings, settings.type, exc)
        raise
    done = result.get("backup") or {}
    # a snapshot is not a backup off this host; a full made from one ends at the
    # snapshot's time (pgdr metrics, from the catalog, counts it in order)
    if result.get("changed") and "size" in done and done.get("type") != catalog.SNAPSHOT \
            and not done.get("from_snapshot"):
        metrics.backup_done(settings, done)
    return result
