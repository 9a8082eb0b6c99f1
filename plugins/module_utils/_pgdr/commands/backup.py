# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Full physical backup of a running cluster into the repository.

Order matters for safety: start the backup on one session (a temporary slot
holds the WAL), copy the files in parallel, copy pg_control last, stop the
backup, copy the WAL from start to stop, write the file list, and only then
the manifest. A backup killed at any point before the manifest has no
manifest, so it is never offered for restore.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import time

from .. import catalog
from ..compress import Codec
from ..errors import ConfigError, IntegrityError, PgdrError, PostgresError
from ..parallel import run_all
from ..postgres import datadir
from ..postgres.session import BackupSession
from ..postgres.wal import format_lsn, history_name, segments_between
from ..storage import open_storage

KIB = 1024
MIB = 1024 * 1024
_LABEL_TIMELINE = re.compile(r"^START TIMELINE: (\d+)$", re.M)


class Piece(object):
    """Part of one large file, stored as one object."""

    def __init__(self, entry, index, offset, length, key):
        self.entry, self.index, self.offset, self.length, self.key = (
            entry, index, offset, length, key)


class Bundle(object):
    """Small files stored together as one object."""

    def __init__(self, number, key):
        self.number, self.key, self.members, self.size = number, key, [], 0


def plan_pieces(entries, prefix, codec, chunk_size, bundle_limit):
    """Split the entries into transfer tasks: pieces of large files, bundles of small."""
    tasks, bundle = [], None
    for entry in entries:
        if entry.kind != "file":
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


class BackupRun(object):
    def __init__(self, settings, progress):
        settings.require("cluster")
        self.settings = settings
        self.progress = progress
        self.codec = Codec(settings.compression, settings.compression_level)
        self.storage = open_storage(settings)
        self.catalog = catalog.Catalog(self.storage, settings.cluster)

    def store(self, key, raw):
        packed = self.codec.compress(raw)
        packed_sha = hashlib.sha256(packed).hexdigest()
        self.storage.put(key, packed, sha256=packed_sha)
        self.progress.advance(len(raw))
        return {"key": key, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                "stored_size": len(packed), "stored_sha256": packed_sha}

    def copy_piece(self, piece):
        try:
            with open(piece.entry.source, "rb") as handle:
                handle.seek(piece.offset)
                raw = handle.read(piece.length)
        except (IOError, OSError):
            raw = b""  # the file was dropped during the backup; WAL replay agrees
        record = self.store(piece.key, raw)
        record["offset"] = piece.offset
        return record

    def copy_bundle(self, bundle):
        parts, members, offset = [], [], 0
        for entry in bundle.members:
            try:
                with open(entry.source, "rb") as handle:
                    data = handle.read()
            except (IOError, OSError):
                continue  # removed during the backup
            parts.append(data)
            members.append({"path": entry.path, "offset": offset, "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
            offset += len(data)
        record = self.store(bundle.key, b"".join(parts))
        record["members"] = members
        return record

    def run(self, dry_run=False):
        s = self.settings
        self.storage.check()
        session = BackupSession(s)
        try:
            server = session.describe_server()
            pgdata = self._check_pgdata(server, session)
            if dry_run:
                return {"changed": True, "backup": {"type": "full", "cluster": s.cluster},
                        "pg_data": pgdata}
            return self._backup(session, server, pgdata)
        finally:
            session.close()

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

    def _new_id(self):
        existing = set(self.catalog.backup_ids())
        while True:
            backup_id = catalog.new_backup_id("full")
            if backup_id not in existing:
                return backup_id
            time.sleep(1.0)

    def _backup(self, session, server, pgdata):
        s = self.settings
        backup_id = self._new_id()
        prefix = catalog.backup_prefix(s.cluster, backup_id)
        started = time.time()
        self.progress.event("backup %s of %s starting" % (backup_id, pgdata))
        slot = session.reserve_wal("pgdr_%d" % os.getpid())
        if not slot:
            self.progress.event("warning: no replication slot free to hold WAL; the "
                                "backup fails if the server recycles WAL it needs")
        start_lsn = session.start("pgdr %s" % backup_id, s.fast_checkpoint)
        try:
            entries = datadir.walk(pgdata, server["version_num"], server["tablespaces"])
            control = entries.pop()
            tasks = plan_pieces(entries, prefix, self.codec, s.chunk_size * MIB,
                                s.bundle_limit * KIB)
            self.progress.begin("backup", sum(e.size for e in entries if e.kind == "file"))
            records = run_all(self._copy, tasks, s.workers)
            last = Bundle(0, "%sbundle/%06d%s" % (prefix, 0, self.codec.suffix))
            last.members.append(control)
            control_record = self.copy_bundle(last)
            self.progress.end()
            stop_lsn, label, spcmap = session.stop()
            server["stop_xmax"] = session.snapshot_xmax()
            timeline = int(_LABEL_TIMELINE.search(label).group(1))
            wal = self._copy_wal(pgdata, prefix, timeline, start_lsn, stop_lsn,
                                 server["wal_segment_size"])
        except BaseException:
            self._discard(prefix)
            raise
        files, bundles = _file_records(entries + [control], tasks, records + [control_record],
                                       last)
        manifest = self._manifest(backup_id, server, pgdata, start_lsn, stop_lsn, timeline,
                                  label, spcmap, started, files, bundles, wal)
        self.progress.event("backup %s complete: %d files, %.1f MiB read, %.1f MiB stored, "
                            "%.1f s" % (backup_id, len(files), manifest["size"] / MIB,
                                        manifest["stored_size"] / MIB, manifest["duration"]))
        return {"changed": True, "backup": summarize(manifest)}

    def _copy(self, task):
        if isinstance(task, Piece):
            return self.copy_piece(task)
        return self.copy_bundle(task)

    def _copy_wal(self, pgdata, prefix, timeline, start_lsn, stop_lsn, segment_size):
        """The WAL that makes the backup consistent, read from pg_wal."""
        names = segments_between(timeline, start_lsn, stop_lsn, segment_size)
        history = history_name(timeline)
        wal_dir = os.path.join(pgdata, "pg_wal")
        if timeline > 1 and os.path.exists(os.path.join(wal_dir, history)):
            names = [history] + names

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

        return run_all(copy, names, self.settings.workers)

    def _discard(self, prefix):
        """Best effort: a failed backup's objects are removed (they are never
        offered for restore either way, having no manifest)."""
        try:
            self.storage.delete(info.key for info in self.storage.list(prefix))
        except PgdrError:
            pass

    def _manifest(self, backup_id, server, pgdata, start_lsn, stop_lsn, timeline, label,
                  spcmap, started, files, bundles, wal):
        s = self.settings
        prefix = catalog.backup_prefix(s.cluster, backup_id)
        file_list = catalog.encode_file_list({"files": files, "bundles": bundles,
                                              "wal": wal})
        self.storage.put(prefix + catalog.FILE_LIST, file_list, if_absent=True)
        stopped = time.time()
        segments = [w["name"] for w in wal if not w["name"].endswith(".history")]
        stored = (sum(b["stored_size"] for b in bundles) + sum(w["stored_size"] for w in wal)
                  + sum(p["stored_size"] for f in files for p in f.get("pieces", ())))
        manifest = {
            "format": catalog.FORMAT, "id": backup_id, "cluster": s.cluster, "type": "full",
            "reference": None, "pg_version": server["version_num"],
            "system_identifier": server["system_identifier"],
            "from_standby": server["in_recovery"], "pg_data": pgdata,
            "timeline": timeline, "start_lsn": format_lsn(start_lsn),
            "stop_lsn": format_lsn(stop_lsn), "stop_xmax": server.get("stop_xmax"),
            "start_wal": segments[0] if segments else None,
            "stop_wal": segments[-1] if segments else None,
            "start_time": _iso(started), "stop_time": _iso(stopped),
            "duration": round(stopped - started, 3),
            "compression": self.codec.name, "backup_label": label, "tablespace_map": spcmap,
            "tablespaces": server["tablespaces"], "settings": server["settings"],
            "file_count": sum(1 for f in files if f["kind"] == "file"),
            "size": sum(f.get("size", 0) for f in files),
            "wal_size": sum(w["size"] for w in wal),
            "stored_size": stored + len(file_list),
            "file_list_sha256": hashlib.sha256(file_list).hexdigest(),
        }
        self.storage.put(prefix + catalog.MANIFEST, catalog.encode_manifest(manifest),
                         if_absent=True)
        return manifest


def _file_records(entries, tasks, records, control_bundle):
    """Manifest records of every entry, from the tasks that copied them."""
    pieces, bundled, bundles = {}, {}, []
    for task, record in zip(list(tasks) + [control_bundle], records):
        if isinstance(task, Piece):
            piece = dict((k, record[k]) for k in ("key", "offset", "size", "sha256",
                                                  "stored_size", "stored_sha256"))
            pieces.setdefault(task.entry.path, []).append(piece)
        else:
            bundles.append(dict((k, record[k]) for k in ("key", "size", "stored_size",
                                                         "stored_sha256", "sha256")))
            for member in record["members"]:
                bundled[member["path"]] = dict(member, bundle=record["key"])
    files = []
    for entry in entries:
        item = {"path": entry.path, "kind": entry.kind, "mode": entry.mode,
                "mtime": entry.mtime}
        if entry.kind == "tablespace":
            item["link"] = entry.link
        elif entry.kind == "file":
            if entry.path in pieces:
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


def _iso(timestamp):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def summarize(manifest):
    keys = ("id", "cluster", "type", "reference", "pg_version", "timeline", "start_lsn",
            "stop_lsn", "start_wal", "stop_wal", "start_time", "stop_time", "duration",
            "compression", "file_count", "size", "wal_size", "stored_size",
            "from_standby", "system_identifier")
    return dict((k, manifest.get(k)) for k in keys)


def run(settings, progress, dry_run=False):
    return BackupRun(settings, progress).run(dry_run)
