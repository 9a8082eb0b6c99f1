# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A PostgreSQL session that runs one non-exclusive online backup.

The backup must start and stop on the same session, held open for the whole
copy: closing it aborts the backup. A temporary physical replication slot on
the same session keeps the server from recycling the WAL that the backup
needs until the copy of that WAL is done; it vanishes with the session.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import ConfigError, PostgresError
from .wal import parse_lsn

MIN_VERSION = 140000
COPIED_SETTINGS = ("max_connections", "max_prepared_transactions",
                   "max_locks_per_transaction", "max_worker_processes",
                   "max_wal_senders", "wal_level", "data_checksums", "block_size",
                   "wal_segment_size", "server_version")


def _psycopg2():
    try:
        import psycopg2
    except ImportError:
        raise ConfigError("the Python package psycopg2 is missing (pip install "
                          "psycopg2-binary)", code="dependency_missing", stage="config")
    return psycopg2


def connect(settings, stage="connect", timeout=10):
    psycopg2 = _psycopg2()
    params = dict(host=settings.pg_host, port=settings.pg_port, user=settings.pg_user,
                  dbname=settings.pg_database, connect_timeout=timeout,
                  application_name="pgdr")
    if settings.pg_password:
        params["password"] = settings.pg_password
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        raise PostgresError("cannot connect to PostgreSQL at %s:%s as %s (database %s): %s"
                            % (settings.pg_host, settings.pg_port, settings.pg_user,
                               settings.pg_database, str(exc).strip()),
                            code="postgres_unavailable", stage=stage)
    conn.autocommit = True
    return conn


ARCHIVE_STATUS_SQL = """
SELECT count(*) FILTER (WHERE name ~ '^[0-9A-F]{24}[.]ready$'),
       extract(epoch FROM now() - min(modification) FILTER (WHERE name LIKE '%.ready')),
       (SELECT last_archived_wal FROM pg_stat_archiver),
       (SELECT extract(epoch FROM last_archived_time) FROM pg_stat_archiver),
       (SELECT failed_count FROM pg_stat_archiver),
       (SELECT last_failed_wal FROM pg_stat_archiver),
       current_setting('archive_mode'),
       (SELECT extract(epoch FROM last_failed_time) FROM pg_stat_archiver)
  FROM pg_ls_archive_statusdir()"""


def archive_lag(settings):
    """The current RPO as the server sees it: WAL not yet archived (segments waiting
    and the age of the oldest), from pg_ls_archive_statusdir() and pg_stat_archiver."""
    conn = connect(settings, stage="archive-lag", timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(ARCHIVE_STATUS_SQL)
            (pending, age, last_wal, last_time, failed, last_failed,
             mode, failed_time) = cur.fetchone()
    except _psycopg2().Error as exc:
        raise PostgresError("cannot read the archiver's state: %s" % str(exc).strip(),
                            code="postgres_refused", stage="archive-lag")
    finally:
        conn.close()
    return {"archive_mode": mode, "pending_segments": int(pending),
            "lag_seconds": round(float(age), 1) if age is not None else 0.0,
            "last_archived_wal": last_wal,
            "last_archived_time": float(last_time) if last_time is not None else None,
            "failed_count": int(failed or 0), "last_failed_wal": last_failed,
            "last_failed_time": float(failed_time) if failed_time is not None else None}


class BackupSession(object):
    def __init__(self, settings):
        self.settings = settings
        self.conn = connect(settings)
        self.slot = None
        self.version = int(self.scalar("SHOW server_version_num"))
        if self.version < MIN_VERSION:
            raise PostgresError("PostgreSQL %s is not supported: pgdr needs 14 or newer"
                                % self.version, code="version_unsupported", stage="connect")

    def scalar(self, sql, args=None):
        return self.rows(sql, args)[0][0]

    def rows(self, sql, args=None):
        psycopg2 = _psycopg2()
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        except psycopg2.Error as exc:
            raise PostgresError("PostgreSQL refused %s: %s"
                                % (sql.split("(")[0], str(exc).strip()),
                                code="postgres_refused", stage="backup")

    def describe_server(self):
        """Facts recorded in the manifest and checked before a backup."""
        settings = dict(self.rows(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (list(COPIED_SETTINGS),)))
        return {
            "version_num": self.version,
            "data_directory": self.scalar("SHOW data_directory"),
            "in_recovery": bool(self.scalar("SELECT pg_is_in_recovery()")),
            "system_identifier": str(self.scalar(
                "SELECT system_identifier FROM pg_control_system()")),
            "wal_segment_size": int(settings["wal_segment_size"]),
            "settings": settings,
            "tablespaces": [
                {"oid": int(oid), "name": name, "location": location}
                for oid, name, location in self.rows(
                    "SELECT oid, spcname, pg_tablespace_location(oid) FROM pg_tablespace "
                    "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid")],
        }

    def replication_state(self):
        """What backup_from needs: this node's role, its replay lag when it is a standby,
        and the streaming standbys with their lag when it is a primary."""
        if self.scalar("SELECT pg_is_in_recovery()"):
            status = self.rows(
                "SELECT (SELECT status FROM pg_stat_wal_receiver), "
                "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
                "ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END")[0]
            return {"role": "standby", "receiver": status[0],
                    "lag": float(status[1]) if status[1] is not None else None}
        standbys = self.rows(
            "SELECT application_name, coalesce(client_addr::text, 'local'), state, "
            "coalesce(extract(epoch FROM replay_lag), 0) FROM pg_stat_replication "
            "ORDER BY application_name")
        return {"role": "primary", "standbys": [
            {"name": n, "address": a, "state": s, "lag": float(l)} for n, a, s, l in standbys]}

    def reserve_wal(self, name):
        """A temporary slot; False when the server has no free slot (we then rely
        on the WAL still being there, and fail clearly if it is not)."""
        try:
            self.rows("SELECT pg_create_physical_replication_slot(%s, true, true)", (name,))
        except PostgresError:
            return False
        self.slot = name
        return True

    def release_wal(self):
        """Drop the temporary slot before the session ends (a snapshot backup waiting
        for its provider must not hold the server's WAL)."""
        if self.slot:
            try:
                self.rows("SELECT pg_drop_replication_slot(%s)", (self.slot,))
            except PostgresError:
                return False  # temporary: it goes when the session ends
            self.slot = None
        return True

    def start(self, label, fast):
        if self.version >= 150000:
            sql = "SELECT pg_backup_start(%s, %s)"
        else:
            sql = "SELECT pg_start_backup(%s, %s, false)"
        return parse_lsn(self.scalar(sql, (label, fast)))

    def timeline(self):
        return int(self.scalar("SELECT timeline_id FROM pg_control_checkpoint()"))

    def stop(self):
        """(stop LSN, backup_label text, tablespace_map text). WAL is copied by us,
        so the server is not asked to wait for its archiver."""
        if self.version >= 150000:
            sql = "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
        else:
            sql = "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        lsn, label, spcmap = self.rows(sql)[0]
        return parse_lsn(lsn), label, spcmap or ""

    def snapshot_xmax(self):
        """The next transaction id to be assigned (full 64-bit), or None where the
        server cannot tell (recorded so xid targets can pick a safe backup)."""
        try:
            return int(self.scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))
        except (PostgresError, ValueError, TypeError):
            return None

    def close(self):
        try:
            self.conn.close()
        except Exception:  # closing a broken session is best effort
            pass
