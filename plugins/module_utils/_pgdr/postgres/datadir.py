# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Walk a data directory and its tablespaces the way pg_basebackup does.

What is skipped, and why, follows PostgreSQL's basebackup.c: runtime state
that the server rebuilds at start (shared memory, notifications, stats temp,
replication slots, subtransactions), WAL (kept separately, from start to stop
of the backup), temporary files and the non-init forks of unlogged relations.
``global/pg_control`` is returned last: it is copied after everything else.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import stat

from ..errors import PostgresError, TargetRefused
# pgdr's own files in a data directory (one registry: ownfiles.py); never backed up
from .ownfiles import PREFETCH_POINTER, PREFETCH_POINTER_TMP, RESTORE_MARKER, RESTORE_STAMPS

# Directories kept empty in the backup (their contents are runtime state).
EMPTY_DIRS = frozenset(("pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial",
                        "pg_snapshots", "pg_stat_tmp", "pg_subtrans"))
# Files never copied, wherever they are.
SKIPPED_FILES = frozenset(("postmaster.pid", "postmaster.opts", "pg_internal.init",
                           "postgresql.auto.conf.tmp", "current_logfiles.tmp",
                           "backup_label", "backup_label.old", "tablespace_map",
                           "tablespace_map.old", "backup_manifest", "recovery.signal",
                           "standby.signal", RESTORE_MARKER, RESTORE_STAMPS,
                           RESTORE_STAMPS + ".tmp", PREFETCH_POINTER,
                           PREFETCH_POINTER_TMP))
TEMP_PREFIX = "pgsql_tmp"
CONTROL_FILE = "global/pg_control"
_RELATION = re.compile(r"^(\d+)(?:_(fsm|vm|init))?(?:\.(\d+))?$")
_TEMP_RELATION = re.compile(r"^t\d+_\d+")


class Entry(object):
    """A file or directory of the backup, by its path relative to PGDATA."""

    __slots__ = ("path", "kind", "size", "mode", "mtime", "source", "link")

    def __init__(self, path, kind, size=0, mode=0o700, mtime=0, source=None, link=None):
        self.path = path        # relative, '/'-separated; tablespaces under pg_tblspc/<oid>/
        self.kind = kind        # "file", "dir" or "tablespace"
        self.size = size
        self.mode = mode
        self.mtime = mtime
        self.source = source    # absolute path to read from
        self.link = link        # for tablespaces: the original location


def walk(pgdata, version_num, tablespaces, relocated=None):
    """Entries of the data directory: directories first, pg_control last. ``relocated``
    ({oid: directory}) reads a tablespace from elsewhere than its link says (a snapshot
    of it), its recorded location unchanged."""
    if not os.path.isfile(os.path.join(pgdata, "PG_VERSION")):
        raise PostgresError("%s is not a PostgreSQL data directory (no PG_VERSION); "
                            "set pg_data to the cluster's directory" % pgdata,
                            code="pgdata_invalid", stage="backup")
    entries = []
    control = None
    for entry in _walk_tree(pgdata, "", is_database_dir=False):
        if entry.path == CONTROL_FILE:
            control = entry
        else:
            entries.append(entry)
    by_oid = dict((t["oid"], t) for t in tablespaces)
    tblspc = os.path.join(pgdata, "pg_tblspc")
    for name in sorted(os.listdir(tblspc)) if os.path.isdir(tblspc) else ():
        entries.extend(_tablespace_entries(tblspc, name, version_num, by_oid,
                                           (relocated or {}).get(name)))
    if control is None:
        raise PostgresError("%s has no global/pg_control" % pgdata, code="pgdata_invalid",
                            stage="backup")
    entries.append(control)
    return entries


def _tablespace_entries(tblspc, name, version_num, by_oid, relocated=None):
    link = os.path.join(tblspc, name)
    rel = "pg_tblspc/" + name
    if not os.path.islink(link):  # in-place tablespace (a plain directory)
        return list(_walk_tree(link, rel, False, include_root=True))
    location = relocated or os.readlink(link)
    known = by_oid.get(int(name)) if name.isdigit() else None
    entries = [Entry(rel, "tablespace", mode=0o700, link=known["location"] if known else location)]
    prefix = "PG_%d_" % (version_num // 10000)
    for sub in sorted(os.listdir(location)):
        if sub.startswith(prefix) and os.path.isdir(os.path.join(location, sub)):
            entries.extend(_walk_tree(os.path.join(location, sub), rel + "/" + sub, False,
                                      include_root=True))
    return entries


def _walk_tree(root, rel_root, is_database_dir, include_root=False):
    """Entries below ``root`` (depth first, names sorted, directories before files)."""
    if include_root:
        yield _dir_entry(root, rel_root)
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        raise PostgresError("cannot list %s: %s" % (root, exc), code="pgdata_unreadable",
                            stage="backup")
    unlogged = _unlogged_relations(names) if is_database_dir else frozenset()
    for name in names:
        path = os.path.join(root, name)
        rel = rel_root + "/" + name if rel_root else name
        if _skip(name, rel, unlogged, is_database_dir):
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue  # removed while we walked (a dropped table): nothing to copy
        if stat.S_ISDIR(info.st_mode):
            yield _dir_entry(path, rel, info)
            if rel in EMPTY_DIRS:
                if rel == "pg_wal":
                    yield Entry("pg_wal/archive_status", "dir", mode=0o700)
                continue
            if rel == "pg_tblspc":
                continue  # tablespaces are walked from their links
            database_dir = rel_root in ("base",) or _is_tablespace_db_dir(rel)
            yield from _walk_tree(path, rel, database_dir)
        elif stat.S_ISREG(info.st_mode):
            yield Entry(rel, "file", info.st_size, stat.S_IMODE(info.st_mode),
                        int(info.st_mtime), path)
        # symlinks other than pg_tblspc/pg_wal, sockets and fifos are not data


def _dir_entry(path, rel, info=None):
    info = info or os.stat(path)
    return Entry(rel, "dir", mode=stat.S_IMODE(info.st_mode), mtime=int(info.st_mtime),
                 source=path)


def _is_tablespace_db_dir(rel):
    parts = rel.split("/")
    return len(parts) == 4 and parts[0] == "pg_tblspc"


def _unlogged_relations(names):
    """Relfilenodes that have an init fork: only that fork is backed up."""
    found = set()
    for name in names:
        match = _RELATION.match(name)
        if match and match.group(2) == "init":
            found.add(match.group(1))
    return frozenset(found)


def _skip(name, rel, unlogged, is_database_dir):
    if name in SKIPPED_FILES or name.startswith(TEMP_PREFIX):
        return True
    if is_database_dir:
        if _TEMP_RELATION.match(name):
            return True
        match = _RELATION.match(name)
        if match and match.group(1) in unlogged and match.group(2) != "init":
            return True
    return False


def is_running(pgdata):
    """True when postmaster.pid names a live server: its process is alive here, or (a
    server in another PID namespace, e.g. a container sharing the volume) its socket
    accepts connections or its shared memory segment still has processes attached.
    Only a pid file none of these confirm is stale (a crashed server's)."""
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as handle:
            lines = handle.read().splitlines()
        pid = int(lines[0].strip())
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError as exc:
        if exc.errno == 1:
            return True  # EPERM: alive, owned by someone else
    return _socket_answers(lines) or _shared_memory_attached(lines)


def _socket_answers(lines):
    """postmaster.pid line 4 is the port, line 5 the socket directory."""
    import socket
    try:
        port, directory = int(lines[3].strip()), lines[4].strip()
    except (IndexError, ValueError):
        return False
    path = os.path.join(directory, ".s.PGSQL.%d" % port)
    if not directory or not os.path.exists(path):
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    try:
        sock.connect(path)
        return True
    except (OSError, socket.error):
        return False
    finally:
        sock.close()


def _shared_memory_attached(lines, table="/proc/sysvipc/shm"):
    """postmaster.pid line 7 is 'key shmid' of the server's System V segment: attached
    processes (nattch > 0) mean the server or its backends still run."""
    try:
        shmid = lines[6].split()[1]
        with open(table) as handle:
            rows = [row.split() for row in handle.read().splitlines()[1:]]
    except (IndexError, IOError, OSError):
        return False
    # columns: key shmid perms size cpid lpid nattch ...
    return any(len(row) > 6 and row[1] == shmid and row[6] != "0" for row in rows)


# How far refuse_live looks below a target for the postmaster.pid of a running server
# (a data directory nested in a target is found through /proc too; this walk also covers
# servers whose processes this user cannot see, e.g. in another PID namespace: is_running
# then asks their socket and shared memory).
LIVE_WALK_DEPTH = 4
LIVE_WALK_ENTRIES = 20000
_POSTGRES_NAMES = ("postgres", "postmaster")


def _read_pid(pgdata):
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as handle:
            return int(handle.readline().strip())
    except (OSError, ValueError):
        return None


def live_clusters(proc="/proc"):
    """{real data directory: pid} of the PostgreSQL servers running on this host, found
    from /proc: a postgres process's working directory is its data directory, and the
    postmaster.pid there names the postmaster. Processes whose working directory this
    user cannot read are skipped (their files are not writable by it either)."""
    found = {}
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open(os.path.join(proc, pid, "comm")) as handle:
                comm = handle.read().strip()
            cwd = os.readlink(os.path.join(proc, pid, "cwd"))
        except (IOError, OSError):
            continue  # gone, or not ours to see
        if cwd.endswith(" (deleted)") or cwd in found:
            continue
        named = _read_pid(cwd)
        if named is None:
            continue
        if named == int(pid) or comm in _POSTGRES_NAMES:
            found[os.path.realpath(cwd)] = named
    return found


def _protected(pgdata):
    """(path, what) pairs of a running server's data: its directory, the tablespace
    locations its pg_tblspc links point to, and a pg_wal kept elsewhere (initdb -X)."""
    out = [(os.path.realpath(pgdata), "data directory")]
    tblspc = os.path.join(pgdata, "pg_tblspc")
    try:
        names = sorted(os.listdir(tblspc))
    except OSError:
        names = []
    for name in names:
        out.append((os.path.realpath(os.path.join(tblspc, name)),
                    "tablespace %s location" % name))
    wal = os.path.join(pgdata, "pg_wal")
    if os.path.islink(wal):
        out.append((os.path.realpath(wal), "pg_wal directory"))
    return out


def _overlap(a, b):
    """'is' / 'is inside' / 'contains' when path a and path b share files, else None."""
    if a == b:
        return "is"
    if a.startswith(b.rstrip("/") + "/"):
        return "is inside"
    if b.startswith(a.rstrip("/") + "/"):
        return "contains"
    return None


def _running_below(root):
    """Data directories with a live postmaster.pid at most LIVE_WALK_DEPTH levels below
    root (symlinks not followed; at most LIVE_WALK_ENTRIES directories looked at)."""
    found = {}
    seen = 0
    base = root.rstrip("/").count("/")
    for folder, dirs, files in os.walk(root):
        seen += 1
        if "postmaster.pid" in files and is_running(folder):
            found[os.path.realpath(folder)] = _read_pid(folder)
        if folder.count("/") - base >= LIVE_WALK_DEPTH or seen >= LIVE_WALK_ENTRIES:
            dirs[:] = []
    return found


def refuse_live(path, what="target", stage="check", proc="/proc"):
    """Raise TargetRefused (code target_running) when ``path`` is, contains or lies
    inside the data directory, a tablespace location or the WAL directory of a running
    PostgreSQL server on this host. Symlinks are resolved first. Checked: every
    postmaster.pid from path up to /, those a bounded walk finds below path, and the
    servers that /proc shows running (with their pg_tblspc links). Every command that
    clears or writes a directory it is given calls this first, with or without force."""
    real = os.path.realpath(path)
    servers = live_clusters(proc)
    folder = real
    while True:
        if is_running(folder):
            servers.setdefault(folder, _read_pid(folder))
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if os.path.isdir(real):
        servers.update(_running_below(real))
    for pgdata in sorted(servers):
        for location, kind in _protected(pgdata):
            relation = _overlap(real, location)
            if relation is None:
                continue
            shown = path if real == path else "%s (%s)" % (path, real)
            where = kind if kind == "data directory" else "%s %s" % (kind, location)
            raise TargetRefused(
                "%s %s %s the %s of the PostgreSQL server running in %s (PID %s); pgdr "
                "never writes into a running cluster's files, with or without force: "
                "choose a directory outside it" % (what, shown, relation, where, pgdata,
                                                   servers[pgdata]),
                code="target_running", stage=stage, live_data_directory=pgdata,
                live_pid=servers[pgdata])
