# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every setting declared once.

The module argument specs, the CLI flags, the config file keys and the
``PGDR_*`` environment variables are all generated from ``OPTIONS``, so a
setting has one name, one type, one default and one help text everywhere.

Precedence, lowest first: default < config file < credentials file <
environment < explicit value (CLI flag or module parameter).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from .errors import ConfigError

try:  # Python 3
    import configparser
except ImportError:  # pragma: no cover - Python 2 is not supported at run time
    configparser = None

DEFAULT_CONFIG_FILE = "/etc/pgdr/pgdr.conf"
DEFAULT_CREDENTIALS_FILE = "/etc/pgdr/credentials"
CONFIG_SECTION = "pgdr"


# The staged restore's stages, in the order a restore runs them (commands/stage.py STAGES
# maps each to its function; a unit test keeps the two equal).
STAGE_NAMES = ("read", "plan", "stage", "recover", "verify", "cutover", "rollback", "standby")


class Option(object):
    """One setting. ``groups`` says which commands read it.

    Every int has declared bounds (``minimum``, ``maximum``: inclusive); ``form``
    names the shape a str, path or dict value must have (``FORMS``; str and path
    default to "line": one line of text without control characters). ``check()``
    applies both, in one place, to every source of a value."""

    def __init__(self, name, kind, help, default=None, choices=None, secret=False,
                 groups=("repo",), minimum=None, maximum=None, form=None):
        self.name = name
        self.kind = kind  # str, int, bool, path, dict, list
        self.help = help
        self.default = default
        self.choices = choices
        self.secret = secret
        self.groups = groups
        self.minimum = minimum
        self.maximum = maximum
        self.form = form or ("line" if kind in ("str", "path") else None)

    @property
    def env(self):
        return "PGDR_" + self.name.upper()

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")


OPTIONS = (
    # -- what is backed up, and where to -------------------------------------------
    Option("cluster", "str", "Name of the cluster in the repository (its prefix). "
           "Letters, digits, '.', '_' and '-'.", groups=("repo",),
           form="name"),
    Option("repo_type", "str", "Repository backend.", default="s3",
           choices=("s3", "posix")),
    Option("repo_path", "path", "Root directory of a posix repository (a local disk "
           "or an NFS mount). Required when repo_type is posix."),
    Option("repo_prefix", "str", "Key prefix inside the bucket under which every "
           "cluster of this repository lives.", default="",
           form="prefix"),
    Option("s3_bucket", "str", "Bucket of an S3 repository.",
           form="bucket"),
    Option("s3_endpoint", "str", "Endpoint URL of an S3-compatible service, for "
           "example https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:8333.",
           form="url"),
    Option("s3_region", "str", "Region of the bucket.", default="us-east-1"),
    Option("s3_addressing", "str", "Bucket addressing: path (bucket in the URL "
           "path, for most S3-compatible servers), virtual (bucket in the host "
           "name) or auto.", default="auto", choices=("auto", "path", "virtual")),
    Option("s3_access_key", "str", "Access key id. When unset, boto3 looks in "
           "the environment, the profile and the instance role.", secret=True),
    Option("s3_secret_key", "str", "Secret access key.", secret=True),
    Option("s3_session_token", "str", "Session token of temporary credentials.",
           secret=True),
    Option("s3_profile", "str", "Name of an AWS shared-credentials profile."),
    Option("s3_verify_tls", "bool", "Verify the server's TLS certificate.",
           default=True),
    Option("s3_ca_bundle", "path", "CA bundle to verify the server's certificate with."),
    Option("s3_request_checksum", "str", "When boto3 computes request checksums: "
           "when_supported (boto3's default) or when_required (for S3-compatible "
           "servers that reject the default CRC32 checksums).",
           default="when_supported", choices=("when_supported", "when_required")),
    Option("s3_max_attempts", "int", "Attempts per S3 request (retries with "
           "exponential backoff).", default=8,
           minimum=1, maximum=100),
    Option("s3_part_size", "int", "Part size in MiB of multipart transfers.",
           default=16,
           minimum=5, maximum=1024),
    # -- encryption (docs/encryption.md) ---------------------------------------------
    Option("encryption_passphrase", "str", "Passphrase of the repository's encryption "
           "(a recipient of its data keys). Set on a new cluster, it encrypts every object; "
           "an encrypted cluster refuses clients without a key.", secret=True),
    Option("encryption_kms_key", "str", "KMS key id or ARN of the repository's encryption "
           "(a recipient of its data keys, alone or beside encryption_passphrase)."),
    Option("encryption_kms_region", "str", "Region of encryption_kms_key (default: "
           "s3_region)."),
    Option("encryption_kms_endpoint", "str", "Endpoint URL of the KMS service (default: "
           "AWS's for the region).", form="url"),
    Option("new_encryption_passphrase", "str", "key-rotate: the passphrase that replaces "
           "the repository's passphrase recipient.", secret=True, groups=("key",)),
    Option("new_encryption_kms_key", "str", "key-rotate: the KMS key that replaces the "
           "repository's KMS recipient (or is added beside the passphrase).",
           groups=("key",)),
    # -- PostgreSQL -------------------------------------------------------------------
    Option("pg_host", "str", "Host or socket directory of the PostgreSQL server.",
           default="/var/run/postgresql", groups=("pg",)),
    Option("pg_port", "int", "Port of the PostgreSQL server.", default=5432,
           groups=("pg",),
           minimum=1, maximum=65535),
    Option("pg_user", "str", "Role that runs the backup (superuser, or a role "
           "granted pg_backup_start/pg_backup_stop and pg_read_all_settings).",
           default="postgres", groups=("pg",)),
    Option("pg_database", "str", "Database to connect to.", default="postgres",
           groups=("pg",)),
    Option("pg_password", "str", "Password of pg_user (prefer a .pgpass file).",
           secret=True, groups=("pg",)),
    Option("pg_data", "path", "Data directory of the cluster. Defaults to what "
           "the server reports; when set, it must match.", groups=("pg",)),
    # -- how data is stored -----------------------------------------------------------
    Option("type", "str", "Backup type: full; diff (the pages changed since the newest "
           "full); incr (the pages changed since the newest backup of any type); auto (a "
           "full when there is none or the newest is older than full_max_age days, a diff "
           "otherwise); snapshot (the data directory and tablespaces snapshotted by "
           "snapshot_provider, the manifest and WAL stored in the repository: "
           "docs/snapshots.md).", default="full",
           choices=("full", "diff", "incr", "auto", "snapshot"), groups=("backup",)),
    Option("snapshot_provider", "str", "What takes the snapshots of type snapshot: btrfs "
           "(read-only snapshots of the btrfs subvolumes that hold the data directory and "
           "each tablespace; not off-host), ebs (AWS EBS snapshots of the volumes in "
           "snapshot_ebs_volumes; off-host) or command (the snapshot_*_command settings: "
           "LVM, ZFS, a SAN, a cloud).", default="btrfs",
           choices=("btrfs", "ebs", "command"), groups=("backup",)),
    Option("snapshot_ebs_volumes", "dict", "snapshot_provider=ebs: the EBS volume that "
           "holds each path, as MOUNT_POINT=vol-ID; the data directory and every "
           "tablespace must lie on one of them.", groups=("backup",), form="ebs_volumes"),
    Option("snapshot_ebs_region", "str", "snapshot_provider=ebs: the volumes' region "
           "(unset: s3_region).", groups=("backup",)),
    Option("snapshot_ebs_endpoint", "str", "snapshot_provider=ebs: endpoint URL of the "
           "EC2 API (unset: AWS's own for the region).", groups=("backup",), form="url"),
    Option("snapshot_wait", "int", "Seconds a snapshot backup waits, after backup mode "
           "ended, for the provider to report every snapshot complete; one still pending "
           "is recorded pending, never offered, and marked complete by a later backup, "
           "verify or expire.", default=0, groups=("backup",), minimum=0, maximum=86400),
    Option("snapshot_create_command", "str", "snapshot_provider=command: a shell command "
           "that snapshots one volume (PGDR_VOLUME_PATH, PGDR_VOLUME_ROLE, PGDR_VOLUME_OID, "
           "PGDR_SNAPSHOT_NAME, PGDR_CLUSTER, PGDR_BACKUP_ID) and prints the snapshot's id "
           "last (docs/snapshots.md).", groups=("backup",)),
    Option("snapshot_check_command", "str", "snapshot_provider=command: a shell command "
           "that exits 0 when snapshot PGDR_SNAPSHOT_ID is there and complete, 1 when it "
           "is not.", groups=("backup",)),
    Option("snapshot_clone_command", "str", "snapshot_provider=command: a shell command "
           "that creates directory PGDR_CLONE_PATH holding snapshot PGDR_SNAPSHOT_ID, "
           "writable.", groups=("backup",)),
    Option("snapshot_delete_command", "str", "snapshot_provider=command: a shell command "
           "that deletes snapshot PGDR_SNAPSHOT_ID.", groups=("backup",)),
    Option("snapshot_off_host", "bool", "snapshot_provider=command: the snapshots survive "
           "the loss of this host (a SAN, a cloud); info, restore and expire then use them "
           "from any host.", default=False, groups=("backup",)),
    Option("from_snapshot", "str", "Make a full backup in the repository from this "
           "snapshot backup's snapshots (read where the provider keeps them; neither the "
           "live cluster's disks nor PostgreSQL are read): its consistency point and WAL, "
           "once per snapshot backup. latest: the newest snapshot backup whose snapshots "
           "this host holds (none: a skip).", groups=("backup",), form="backup_id"),
    Option("snapshot_dir", "path", "btrfs: the directory that receives the snapshots, on "
           "the same btrfs filesystem as the data directory and outside every volume.",
           groups=("backup",)),
    Option("full_max_age", "int", "With type auto: days after which the next backup is "
           "a full again.", default=7, groups=("backup",),
           minimum=0, maximum=3650),
    Option("changed_blocks", "str", "How a diff or incr finds the pages changed since its "
           "reference: auto (the server's WAL summaries on PostgreSQL 17+ with "
           "summarize_wal on, else reading every page's LSN) or scan (always read every "
           "page).", default="auto", choices=("auto", "scan"), groups=("backup",)),
    Option("compression", "str", "Compression of stored data.", default="zstd",
           choices=("zstd", "gzip", "none"), groups=("backup",)),
    Option("compression_level", "int", "Compression level (zstd 1-19, gzip 1-9). "
           "Unset means the codec's fast default.", groups=("backup",),
           minimum=1, maximum=19),
    Option("workers", "int", "Parallel workers that read, compress and transfer.",
           default=4, groups=("backup", "restore", "verify", "wal"),
           minimum=1, maximum=256),
    Option("chunk_size", "int", "Large files are stored in pieces of this many "
           "MiB, so that one large table is read, compressed and transferred in "
           "parallel.", default=32, groups=("backup",),
           minimum=1, maximum=1024),
    Option("bundle_limit", "int", "Files smaller than this many KiB are bundled "
           "together, so that thousands of small files cost few requests.",
           default=1024, groups=("backup",),
           minimum=0, maximum=1048576),
    Option("backup_from", "str", "Which node backs up, decided on the node at run time: "
           "primary (only the primary), standby (only a standby), prefer-standby (a "
           "healthy standby when there is one, else the primary). The same schedule can "
           "then run on every node and keeps working after a failover.", default="primary",
           choices=("primary", "standby", "prefer-standby"), groups=("backup",)),
    Option("standby_max_lag", "int", "Seconds of replay lag above which a standby is not "
           "healthy enough to back up from.", default=300, groups=("backup",),
           minimum=0, maximum=604800),
    Option("patroni_url", "str", "Patroni's REST API on this node, asked which member "
           "leads and which replicas are healthy (backup_from then follows Patroni's view, "
           "the same on every member, so exactly one member backs up): auto (ask "
           "http://127.0.0.1:8008; nothing listening there means the node does not run "
           "Patroni and PostgreSQL's own views decide), off, or a URL that must answer.",
           default="auto", groups=("backup",)),
    Option("patroni_username", "str", "User of Patroni's REST API (restapi.authentication), "
           "sent with the requests that change something: the dynamic configuration and "
           "restarts. Reading the member list needs none.", groups=("patroni",)),
    Option("patroni_password", "str", "Password of patroni_username.", secret=True,
           groups=("patroni",)),
    Option("standby_max_lag_bytes", "int", "With Patroni: bytes of replay lag (as Patroni "
           "reports it) above which a replica is not healthy enough to back up from.",
           default=67108864, groups=("backup",), minimum=0, maximum=1099511627776),
    Option("backup_lease", "int", "Seconds a node's backup lease lasts in the repository "
           "without renewal (renewed while the backup runs; a crashed holder blocks "
           "others at most this long).", default=600, groups=("backup",),
           minimum=5, maximum=86400),
    Option("min_interval", "int", "Minutes: skip the backup when one of this type (or a "
           "full) started less than this ago, so that the same schedule on several "
           "nodes gives one backup per run. 0 turns it off.", default=0,
           groups=("backup",),
           minimum=0, maximum=525600),
    Option("fast_checkpoint", "bool", "Ask PostgreSQL for an immediate checkpoint "
           "at backup start instead of waiting for a spread one.", default=True,
           groups=("backup",)),
    Option("verify", "bool", "Also download and check every object of the backup's chain "
           "(the latest, or backup_id).", default=False, groups=("info",)),
    Option("verify_wal", "str", "What verify checks of the WAL archive the backup needs: "
           "full (read every segment and history file against its recorded SHA-256, and "
           "continuity), list (continuity and recorded checksums from the listing, no "
           "segment read) or none.", default="full", choices=("full", "list", "none"),
           groups=("verify",)),
    # -- drills and objectives ---------------------------------------------------------
    Option("drill_port", "int", "Private port the drill's scratch cluster listens on "
           "(127.0.0.1 only).", groups=("drill",),
           minimum=1, maximum=65535),
    Option("pg_bindir", "path", "Directory of pg_ctl for the restored cluster's version. "
           "Default: /usr/lib/postgresql/<major>/bin.", groups=("drill", "stage")),
    Option("check_sql", "list", "SQL assertions run on the restored copy, each returning "
           "true when the data is right (in database pg_database).", groups=("drill",)),
    Option("drill_timeout", "int", "Seconds the drill waits for recovery to reach the "
           "point.", default=3600, groups=("drill",),
           minimum=1, maximum=604800),
    Option("amcheck", "bool", "Check every btree index with amcheck when the extension "
           "is available.", default=True, groups=("drill", "stage")),
    Option("report_file", "path", "Where to write the drill's JSON report too.",
           groups=("drill",)),
    Option("textfile", "path", "Prometheus textfile (node exporter textfile collector) "
           "for the drill's metrics.", groups=("drill",)),
    Option("rto_objective", "int", "Declared recovery time objective in seconds.",
           groups=("drill", "info", "metrics"),
           minimum=1, maximum=31536000),
    Option("rpo_objective", "int", "Declared recovery point objective in seconds.",
           groups=("drill", "info", "metrics"),
           minimum=1, maximum=31536000),
    Option("fail_on_objective", "bool", "Fail (exit 9) when a declared objective is "
           "missed, so that a scheduler or AWX alerts.", default=False,
           groups=("drill", "info")),
    # -- retention ----------------------------------------------------------------------
    Option("retention_full", "int", "Full backups to keep (each with the diff and incr "
           "backups that depend on it).", groups=("expire",),
           minimum=0, maximum=10000),
    Option("retention_days", "int", "Keep every backup needed to restore any point of "
           "the last this many days.", groups=("expire",),
           minimum=0, maximum=36500),
    Option("incomplete_grace_seconds", "int", "Seconds after its last object was written "
           "before the objects of an incomplete backup (killed, no manifest) are removed "
           "by expire and cleanup; a backup that a live lease names is never removed, and "
           "one older than a complete backup needs no wait.", default=3600,
           groups=("cleanup",), minimum=0, maximum=31 * 86400),
    # -- restore ------------------------------------------------------------------------
    Option("backup_id", "str", "Backup to restore or verify: an id from info, or latest.",
           default="latest", groups=("restore", "verify", "info"),
           form="backup_id"),
    Option("restore_from", "str", "Where a restore without backup_id starts: auto (the "
           "repository's backup the planner chooses, or a snapshot backup of this host "
           "that ends at or after it: a clone downloads nothing) or repository (never a "
           "snapshot). A drill always restores from the repository.", default="auto",
           choices=("auto", "repository"), groups=("restore",)),
    Option("target", "path", "Directory to restore into. It must be absent or "
           "empty unless force is set.", groups=("restore",)),
    Option("force", "bool", "Restore into a non-empty target, deleting what it "
           "holds (never the data directory of a running server).",
           default=False, groups=("restore",)),
    Option("delta", "bool", "Bring an existing, stopped data directory (a failed "
           "primary, a lagging standby, an earlier restored copy) to the backup by rewriting "
           "only what differs, compared by SHA-256 with the backup's records: files and "
           "parts that match are kept, the rest is fetched, files the backup does not hold "
           "are removed; the result is what a restore into an empty directory gives. Never "
           "a running server's directory; a failed delta restore leaves it unstartable (no "
           "pg_control) and a second run resumes it.", default=False, groups=("restore",)),
    Option("tablespace_map", "dict", "New locations of tablespaces, by old "
           "location, name or OID.", default=None, groups=("restore",),
           form="tablespace_map"),
    Option("settings", "dict", "PostgreSQL settings written to the restored "
           "cluster's postgresql.auto.conf (for example port).", default=None,
           groups=("restore",),
           form="settings"),
    Option("keep_archiving", "bool", "Keep the source's WAL archiving settings in "
           "the restored cluster. Off by default, so that a restored copy never "
           "archives into the production repository.", default=False,
           groups=("restore",)),
    Option("standby", "bool", "Restore the newest backup as a new standby of the running "
           "cluster (for example Patroni's replica creation method): standby.signal and "
           "restore_command, no recovery target, and nothing else in postgresql.auto.conf, "
           "so archiving and the server's settings stay those of the cluster's own "
           "configuration. Only with point latest.", default=False, groups=("restore",)),
    Option("bootstrap", "bool", "Restore as the first member of a new cluster whose "
           "configuration is managed elsewhere (Patroni's bootstrap.method): recovery.signal, "
           "restore_command, the point's recovery target (immediate at a backup's own end) "
           "and the user's settings, nothing else in postgresql.auto.conf, so that once "
           "promoted the server archives and runs with the cluster's own configuration "
           "(keep_archiving has no effect). Needs target_action promote.", default=False,
           groups=("restore",)),
    # -- upload ---------------------------------------------------------------------------
    Option("src", "path", "Local file or directory to put into the repository; a "
           "directory is uploaded recursively.", groups=("upload",)),
    Option("dest", "str", "Key in the repository, relative to its root (and "
           "repo_prefix). For a file, a dest ending in '/' receives the file under its "
           "own name; for a directory, its files go below dest. Keys of the form "
           "NAME/backup/... and NAME/wal/... belong to pgdr and are refused.",
           groups=("upload",)),
    Option("overwrite", "str", "What to do when an object exists with different "
           "content: never (fail and write nothing) or different (replace it). An "
           "object that holds the same bytes is never uploaded again.",
           default="never", choices=("never", "different"), groups=("upload",)),
    # -- WAL archive ------------------------------------------------------------------
    Option("spool_dir", "path", "Local directory where asynchronous WAL pushes leave "
           "their results and prefetched WAL waits for recovery. Unset means every "
           "wal-push and wal-fetch is synchronous.", groups=("wal",)),
    Option("archive_async", "bool", "With a spool_dir, push WAL in a background worker "
           "that sends every ready segment in parallel, ahead of PostgreSQL's calls.",
           default=True, groups=("wal",)),
    Option("archive_wait", "int", "Seconds one wal-push call waits for its segment's "
           "result before failing (PostgreSQL then calls again).", default=60,
           groups=("wal",),
           minimum=1, maximum=3600),
    Option("archive_idle", "int", "Seconds the background push worker stays without work "
           "before it exits.", default=5, groups=("wal",),
           minimum=0, maximum=3600),
    Option("prefetch", "int", "Segments that wal-fetch fetches ahead, in parallel, "
           "during recovery (needs spool_dir; 0 turns it off).", default=16,
           groups=("wal",),
           minimum=0, maximum=1024),
    Option("point", "str", "Point to restore: latest, immediate, a backup id, an ISO 8601 "
           "time (no zone means UTC), an LSN, xid:N or name:RESTORE_POINT "
           "(docs/restore-points.md).", default="latest", groups=("restore",)),
    Option("target_inclusive", "bool", "Stop just after the target (true) or just before "
           "it (false).", default=True, groups=("restore",)),
    Option("target_timeline", "str", "Timeline to recover along: latest (the newest "
           "archived timeline that descends from the backup), current (the backup's own) or "
           "a timeline number - to avoid one abandoned by a rollback.", default="latest",
           groups=("restore",),
           form="timeline"),
    Option("target_action", "str", "What the restored server does at the target: "
           "promote (open for writes on a new timeline), pause (read-only, to inspect "
           "before promoting) or shutdown.", default="promote",
           choices=("promote", "pause", "shutdown"), groups=("restore",)),
    Option("thaw", "bool", "When objects the restore needs sit in an archive storage class "
           "(GLACIER, DEEP_ARCHIVE), request their thaw and wait for it, instead of "
           "refusing the restore before it starts.", default=False, groups=("restore",)),
    Option("thaw_days", "int", "Days a thawed copy stays readable.", default=3,
           groups=("restore",),
           minimum=1, maximum=3650),
    Option("thaw_tier", "str", "Retrieval tier of thaw requests.", default="Standard",
           choices=("Expedited", "Standard", "Bulk"), groups=("restore",)),
    Option("thaw_timeout", "int", "Seconds to wait for thawed objects.", default=48 * 3600,
           groups=("restore",),
           minimum=1, maximum=2592000),
    Option("restore_command", "str", "restore_command written into the restored cluster. "
           "Default: this pgdr, with the same config and credentials files, running "
           "wal-fetch.", groups=("restore",)),
    Option("config_file", "path", "Config file this run read (set by the CLI).",
           groups=("internal",)),
    Option("credentials_file", "path", "Credentials file this run read (set by the CLI).",
           groups=("internal",)),
    Option("wal_path", "path", "WAL file to archive (archive_command's %p).",
           groups=("positional",)),
    Option("wal_name", "str", "WAL file name to fetch (restore_command's %f).",
           groups=("positional",)),
    Option("wal_dest", "path", "Where to write the fetched WAL (restore_command's %p).",
           groups=("positional",)),
    # -- the staged restore (pgdr restore-stage, pg_restore_stage; docs/staged-restore.md) -
    Option("stage", "str", "The stage to run: read, plan, stage, recover, verify, cutover, "
           "rollback or standby.", choices=STAGE_NAMES, groups=("positional",)),
    Option("state_file", "path", "The staged restore's state file, written by the plan "
           "stage. It and every directory above it must be owned by root (or the user "
           "running pgdr) and not writable by group or others (sticky directories such as "
           "/tmp excepted).", groups=("stage",)),
    Option("os_user", "str", "The OS user that runs PostgreSQL; pg_ctl and the connections "
           "run as it.", default="postgres", groups=("stage",)),
    Option("port", "int", "Port of the staged copy when the plan did not record one (the "
           "plan's port wins, and for verify and cutover the port recover started it on).",
           groups=("stage",), minimum=1, maximum=65535),
    Option("live_tablespaces", "list", "plan: OIDs of the live cluster's tablespaces, each "
           "mapped to tablespace_dir/<oid> (tablespace_map wins).", groups=("stage",)),
    Option("tablespace_dir", "path", "plan: where the staged copy's tablespaces go. "
           "Default: the target directory followed by .tablespaces.", groups=("stage",)),
    Option("live_data", "path", "plan: the live cluster's data directory (recorded; cutover "
           "renames the staged copy into its place, which needs one filesystem). cutover "
           "and rollback: that directory (default the plan's).", groups=("stage",)),
    Option("log", "path", "The staged copy's server log. Default: restored-server.log in "
           "the target directory.", groups=("stage",)),
    Option("timeout", "int", "Seconds recover (and cutover, rollback and standby, for the "
           "cluster they start) waits for the start and for recovery to reach the point.",
           default=600, groups=("stage",), minimum=1, maximum=604800),
    Option("expected_databases", "list", "verify: databases that must exist in the copy.",
           groups=("stage",)),
    Option("amcheck_install", "bool", "verify: create the amcheck extension where it is "
           "missing (a copy that was promoted; a paused copy is read-only).", default=True,
           groups=("stage",)),
    Option("service_name", "str", "cutover, rollback and standby: the service that runs the "
           "live cluster (systemctl stops and starts it); empty for pg_ctl.", default="",
           groups=("stage",)),
    Option("live_log", "path", "cutover, rollback and standby: pg_ctl's server log for the "
           "cluster started. Default: pg_ctl.log in live_data.", groups=("stage",)),
    Option("stop_timeout", "int", "cutover, rollback and standby: seconds each cluster gets "
           "to stop.", default=600, groups=("stage",), minimum=1, maximum=86400),
    Option("archive_timeout", "int", "cutover: seconds the new timeline's first switched "
           "segment gets to reach the repository; 0 skips that check.", default=120,
           groups=("stage",), minimum=0, maximum=86400),
    Option("require_verify", "bool", "cutover: refuse a copy that verify did not pass, or "
           "that runs another postmaster than the one verify checked.", default=True,
           groups=("stage",)),
    Option("rollback_from", "path", "rollback: the data directory to move back, instead of "
           "the one the cutover kept.", groups=("stage",)),
    Option("primary_host", "str", "standby: the new primary's address.", groups=("stage",)),
    Option("replication_user", "str", "standby: the role the standby streams as (and "
           "pg_basebackup connects as, with standby_source primary).",
           default="postgres", groups=("stage",)),
    Option("standby_source", "str", "standby: where the standby's data come from. "
           "repository: the newest backup on the way to the new timeline, by delta restore "
           "into the standby's own directory (only what differs is written; the new primary "
           "is not read), then the archive and streaming; primary: pg_basebackup from the "
           "new primary, the previous directory kept as <data>.pre-rebuild-<UTC time>; "
           "patroni: a Patroni replica's directory (Patroni stopped) only kept aside, for "
           "the Patroni started next to build it (its create_replica_methods).",
           default="repository", choices=("repository", "primary", "patroni"), groups=("stage",)),
    Option("patroni_scope", "str", "cutover: the Patroni cluster (scope) the live data "
           "directory is a member of. After every check the cutover removes it from the DCS "
           "(patronictl remove), so that Patroni started next takes over the promoted "
           "cluster as leader; the caller stops Patroni on every member first (in check mode "
           "the cutover does not ask whether it runs, and checks that patronictl lists the "
           "cluster). standby with standby_source patroni, in check mode: the caller stops "
           "Patroni on the replica later, so whether it runs is not asked. Empty: no Patroni.",
           groups=("stage",)),
    Option("patronictl", "str", "cutover with patroni_scope: the patronictl program.",
           default="patronictl", groups=("stage",)),
    Option("patroni_config", "path", "cutover with patroni_scope: Patroni's configuration "
           "file, which tells patronictl where the DCS is.", default="/etc/patroni/patroni.yml",
           groups=("stage",)),
    Option("follow_timeline", "int", "standby: the timeline the standby must stream on "
           "(the restore role passes the cutover's): the backup is one on the way to it. "
           "recovery_target_timeline stays latest. Default: the archive's latest timeline, "
           "any for the streaming check.",
           groups=("stage",), minimum=1, maximum=0xFFFFFFFF),
    Option("rebuild_for", "str", "standby: what the rebuild follows (the restore role "
           "passes the cutover's time); a standby rebuilt for it already is left alone.",
           groups=("stage",)),
    # -- the bucket: hardening and lifecycle (s3_repository, docs/lifecycle.md) ------------
    Option("bucket_create", "bool", "Create the bucket when it does not exist.",
           default=True, groups=("bucket",)),
    Option("bucket_versioning", "bool", "Turn versioning on, so that a deleted or "
           "overwritten object stays as a noncurrent version (false leaves it as it is; "
           "pgdr never suspends it).", default=True, groups=("bucket",)),
    Option("bucket_encryption", "str", "Default encryption of new objects: sse-s3 "
           "(AES256, keys managed by the service), sse-kms (with bucket_kms_key_id) or "
           "unmanaged (left as it is).", default="sse-s3",
           choices=("sse-s3", "sse-kms", "unmanaged"), groups=("bucket",)),
    Option("bucket_kms_key_id", "str", "KMS key id or ARN of sse-kms encryption (unset: "
           "the service's default key).", groups=("bucket",)),
    Option("bucket_public_access_block", "str", "Block every form of public access: "
           "required (fail with setting_unsupported where the server lacks it), "
           "when_supported (warn and go on there) or unmanaged (left as it is).",
           default="when_supported", choices=("required", "when_supported", "unmanaged"),
           groups=("bucket",)),
    Option("bucket_tls_only", "str", "A bucket policy statement (Sid pgdr-tls-only) that "
           "denies every request not made over TLS: required, when_supported or unmanaged, as "
           "for bucket_public_access_block. Needs an https s3_endpoint.",
           default="when_supported", choices=("required", "when_supported", "unmanaged"),
           groups=("bucket",)),
    Option("bucket_object_lock", "str", "Object Lock default retention of new objects: "
           "none (not managed), governance or compliance. It can be turned on only when "
           "this creates the bucket.", default="none",
           choices=("none", "governance", "compliance"), groups=("bucket",)),
    Option("bucket_object_lock_days", "int", "Days of the Object Lock default retention.",
           groups=("bucket",),
           minimum=1, maximum=36500),
    Option("lifecycle_manage", "bool", "Write the bucket's lifecycle rules (false: leave "
           "them as they are).", default=True, groups=("bucket",)),
    Option("lifecycle_clusters", "str", "Clusters whose backups and WAL the expiry and "
           "transition rules cover (comma-separated in the CLI and config file). Unset: "
           "cluster when it is set, else rules scoped by repo_prefix only, without "
           "expiry.", groups=("bucket",)),
    Option("lifecycle_margin_days", "int", "Days added to retention_days + full_max_age "
           "before backups and WAL expire, for late or failed backups.", default=7,
           groups=("bucket",),
           minimum=0, maximum=3650),
    Option("lifecycle_backup_transition_days", "int", "Days after which backup objects "
           "move to lifecycle_backup_storage_class (unset: never).", groups=("bucket",),
           minimum=0, maximum=36500),
    Option("lifecycle_backup_storage_class", "str", "Storage class backups move to; only "
           "classes read without a thaw, so manifests stay readable.",
           default="STANDARD_IA",
           choices=("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"),
           groups=("bucket",)),
    Option("lifecycle_wal_transition_days", "int", "Days after which archived WAL moves to "
           "lifecycle_wal_storage_class (unset: never).", groups=("bucket",),
           minimum=0, maximum=36500),
    Option("lifecycle_wal_storage_class", "str", "Storage class archived WAL moves to; "
           "only classes read without a thaw.", default="STANDARD_IA",
           choices=("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"),
           groups=("bucket",)),
    Option("lifecycle_abort_multipart_days", "int", "Days after which unfinished multipart "
           "uploads are aborted and their parts deleted (0: no rule).", default=7,
           groups=("bucket",),
           minimum=0, maximum=3650),
    Option("lifecycle_noncurrent_days", "int", "Days noncurrent versions (deleted or "
           "replaced objects of a versioned bucket) are kept (0: no rule).", default=30,
           groups=("bucket",),
           minimum=0, maximum=36500),
    Option("lifecycle_expired_delete_markers", "bool", "Remove delete markers that no "
           "longer hide any version.", default=True, groups=("bucket",)),
    Option("lifecycle_rules", "str", "More lifecycle rules, in the shape of boto3's "
           "put_bucket_lifecycle_configuration (JSON text in the CLI and config file). "
           "A rule that would expire, or make unreadable, backups or WAL the retention "
           "policy needs is refused.", groups=("bucket",),
           form="text"),
    Option("lifecycle_purge", "bool", "Remove the bucket's rules that are neither pgdr's "
           "nor in lifecycle_rules (false keeps them, if they pass the same check).",
           default=False, groups=("bucket",)),
    # -- pgdr check -------------------------------------------------------------------
    Option("check_archive_wait", "int", "Seconds pgdr check waits for the segment that its "
           "pg_switch_wal() closed to reach the repository.", default=60,
           groups=("check",), minimum=1, maximum=3600),
    Option("check_archiving", "bool", "Also check WAL archiving: archive_mode, archive_command "
           "(pgdr wal-push into this repository and cluster) and a WAL segment's round trip "
           "(false: the settings, the repository and PostgreSQL only).", default=True,
           groups=("check",)),
    # -- metrics (Prometheus textfile; docs/monitoring.md) -----------------------------
    Option("metrics_textfile_dir", "path", "Directory of the node exporter's textfile "
           "collector: backup, expire, the wal-push worker and pgdr metrics keep "
           "pgdr_<cluster>.prom there (nothing is written when it does not exist; empty: "
           "no metrics).", default="/var/lib/prometheus/node-exporter",
           groups=("metrics",)),
    Option("backup_max_age", "int", "Seconds after which the newest backup counts as too "
           "old (exported as pgdr_backup_max_age_seconds for the BackupTooOld alert; set it "
           "to the schedule's longest interval between backups plus a margin).",
           default=93600, groups=("metrics",), minimum=60, maximum=31536000),
)

BY_NAME = dict((o.name, o) for o in OPTIONS)
SECRET_NAMES = frozenset(o.name for o in OPTIONS if o.secret)
TRUE_WORDS = ("1", "true", "yes", "on", "y")
FALSE_WORDS = ("0", "false", "no", "off", "n")


class Settings(object):
    """Resolved settings: attribute access, and a redacted view for logs."""

    def __init__(self, values):
        self.__dict__["_values"] = dict(values)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        raise AttributeError("settings are read-only")

    def replace(self, **changes):
        values = dict(self._values)
        values.update(changes)
        return Settings(values)

    def redacted(self):
        return dict((k, "********" if k in SECRET_NAMES and v else v)
                    for k, v in self._values.items())

    def require(self, *names):
        missing = [n for n in names if self._values.get(n) in (None, "")]
        if missing:
            raise ConfigError(
                "missing required setting(s): %s (set them as %s or in the config file)"
                % (", ".join(missing), ", ".join(BY_NAME[n].flag for n in missing)),
                code="config_missing", stage="config")


def coerce(option, value):
    """Turn a text or native value into the option's type, or say what is wrong."""
    if value is None:
        return None
    kind = option.kind
    try:
        if kind == "bool":
            value = _to_bool(value)
        elif kind == "int":
            value = _to_int(value)
        elif kind in ("str", "path"):
            value = str(value)
            if kind == "path" and value and not _CONTROL.search(value):
                value = os.path.abspath(os.path.expanduser(value))
        elif kind == "dict":
            value = _to_dict(value)
        elif kind == "list":
            value = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    except (TypeError, ValueError, OverflowError):
        raise invalid(option, value, "is not a valid %s" % kind)
    check(option, value)
    return value


def check(option, value):
    """The one place where a value meets its option's declaration: choices, bounds
    and form. Raises ConfigError naming the option, the value and what is expected."""
    if value is None:
        return
    if option.choices and value not in option.choices:
        raise invalid(option, value, "is not one of: %s" % ", ".join(option.choices))
    if option.kind == "int" and not option.minimum <= value <= option.maximum:
        raise invalid(option, value, "is out of range: expected an integer from %d to %d"
                      % (option.minimum, option.maximum))
    if option.form:
        FORMS[option.form](option, value)


def invalid(option, value, problem):
    """ConfigError (exit 2) of one bad value: one line, the value quoted (repr keeps
    newlines and control characters visible), a secret never shown."""
    shown = "'********'" if option.secret else repr(value)
    return ConfigError("%s=%s %s" % (option.name, shown, problem), code="config_invalid",
                       stage="config", option=option.name)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\Z")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}\Z")
_GUC = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?\Z")
_NON_NEGATIVE = re.compile(r"^[0-9]{1,9}\Z")
NAME_FORM = "letters, digits, '.', '_' and '-', not starting with '.', at most 128 characters"
# Settings a restore carries from the source and compares as integers (restore.py CARRIED):
# PostgreSQL refuses to recover with less than the source had.
INTEGER_SETTINGS = ("max_connections", "max_prepared_transactions",
                    "max_locks_per_transaction", "max_worker_processes", "max_wal_senders")


def _line(option, value):
    """One line of text: a control character (newline, tab, escape...) never reaches
    a key, a path, a command line or a configuration file."""
    if _CONTROL.search(value):
        raise invalid(option, value, "contains a control character: expected one line "
                      "of printable text")


def _text(option, value):
    """Text that may span lines (JSON): no other control characters."""
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", value):
        raise invalid(option, value, "contains a control character: expected text "
                      "whose only control characters are line breaks and tabs")


def _name(option, value):
    if not _NAME.match(value):
        raise invalid(option, value, "is not a valid %s name: expected %s"
                      % (option.name.replace("_", " "), NAME_FORM))


def _backup_id(option, value):
    if value != "latest" and not _NAME.match(value):
        raise invalid(option, value, "is not a backup id: expected latest or an id listed "
                      "by info (for example 20261124T060012Z-full)")


def _prefix(option, value):
    """Relative key prefix: segments of printable text, no '.', '..' or empty segment
    (a trailing '/' is allowed), no backslash. The same on every backend."""
    parts = value[:-1].split("/") if value.endswith("/") else value.split("/")
    if value and (_CONTROL.search(value) or "\\" in value or len(value) > 512
                  or any(p in ("", ".", "..") for p in parts)):
        raise invalid(option, value, "is not a key prefix: expected segments of printable "
                      "text separated by '/', none empty, '.' or '..', no leading '/', no "
                      "backslash (for example dr or dr/site-a)")


def _bucket(option, value):
    if value and not _BUCKET.match(value):  # "" is unset (require() says so)
        raise invalid(option, value, "is not a bucket name: expected 2 to 255 letters, "
                      "digits, '.', '_' and '-', starting with a letter or digit")


def _url(option, value):
    if value and not re.match(r"^https?://[^/\s]+(/\S*)?\Z", value):
        raise invalid(option, value, "is not an endpoint URL: expected http://HOST[:PORT] "
                      "or https://HOST[:PORT]")


def _timeline(option, value):
    if value.lower() not in ("latest", "current") and not re.match(r"^[1-9][0-9]{0,9}\Z",
                                                                   value):
        raise invalid(option, value, "is not a timeline: expected latest, current or a "
                      "timeline number (1, 2, ...)")


def _ebs_volumes(option, value):
    for path, volume_id in value.items():
        item = "%s=%s" % (path, volume_id)
        if not path.startswith("/") or _CONTROL.search(path):
            raise invalid(option, item, "does not start with an absolute mount point: "
                          "expected MOUNT_POINT=vol-ID")
        if not re.match(r"^vol-[0-9a-f]{8,17}\Z", volume_id):
            raise invalid(option, item, "does not name an EBS volume id: expected "
                          "MOUNT_POINT=vol-ID, such as /srv/pg=vol-0123456789abcdef0")


def _settings(option, value):
    """PostgreSQL settings written into postgresql.auto.conf: GUC names, one-line values,
    and the carried integer settings as integers (PostgreSQL would not start otherwise)."""
    for name, setting in value.items():
        item = "%s=%s" % (name, setting)
        if not _GUC.match(name):
            raise invalid(option, item, "has no valid setting name: expected a PostgreSQL "
                          "parameter name (letters, digits, '_', '$', one '.' for a "
                          "custom one) before '='")
        if _CONTROL.search(setting):
            raise invalid(option, item, "has a control character in its value: expected "
                          "one line of printable text")
        if "\\" in setting:
            raise invalid(option, item, "has a backslash in its value: expected none "
                          "(PostgreSQL's configuration parser reads it as an escape)")
        if name.lower() in INTEGER_SETTINGS and not _NON_NEGATIVE.match(setting):
            raise invalid(option, item, "is not valid: expected a non-negative integer "
                          "for %s" % name)


def _tablespace_map(option, value):
    for old, new in value.items():
        if not old or not new or _CONTROL.search(old + new):
            raise invalid(option, "%s=%s" % (old, new), "is not valid: expected "
                          "OLD_LOCATION_NAME_OR_OID=NEW_DIRECTORY, one line each")


FORMS = {"line": _line, "text": _text, "name": _name, "backup_id": _backup_id,
         "prefix": _prefix, "bucket": _bucket, "url": _url, "timeline": _timeline,
         "settings": _settings, "tablespace_map": _tablespace_map,
         "ebs_volumes": _ebs_volumes}


def _to_int(value):
    """An integer, from an int or its decimal text (not a bool, not 1.5)."""
    if isinstance(value, bool) or isinstance(value, float) and value != int(value):
        raise ValueError(value)
    return int(value)


def _to_bool(value):
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(value)


def _to_dict(value):
    """A dict, or text 'a=b,c=d' (CLI and config file form)."""
    if isinstance(value, dict):
        return dict((str(k), str(v)) for k, v in value.items())
    out = {}
    for item in str(value).split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep:
            raise ValueError(value)
        out[key.strip(" ")] = val.strip(" ")  # a control character stays, and is refused
    return out


def read_config_file(path, required):
    """Values of the [pgdr] section of an INI file, or {} when it is absent."""
    if not path:
        return {}
    if not os.path.exists(path):
        if required:
            raise ConfigError("config file %s does not exist" % path,
                              code="config_missing", stage="config")
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as handle:
            parser.read_file(handle)
    except (OSError, UnicodeError, configparser.Error) as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, _parse_problem(exc)),
                          code="config_invalid", stage="config")
    if not parser.has_section(CONFIG_SECTION):
        return {}
    values = dict(parser.items(CONFIG_SECTION))
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise ConfigError("unknown key(s) %s in %s; known keys: %s"
                          % (", ".join(unknown), path, ", ".join(sorted(BY_NAME))),
                          code="config_invalid", stage="config")
    return values


def _parse_problem(exc):
    """One line, by line number, never quoting the file's text (a credentials file holds
    secrets): configparser's own messages span lines and repeat the offending line."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return "line %d: text before the [%s] section header" % (exc.lineno, CONFIG_SECTION)
    if isinstance(exc, configparser.ParsingError):
        return "line(s) %s: expected 'key = value'" % ", ".join(
            str(lineno) for lineno, dummy in exc.errors)
    if isinstance(exc, configparser.DuplicateOptionError):
        return "line %s: key %s given twice" % (exc.lineno, exc.option)
    if isinstance(exc, configparser.DuplicateSectionError):
        return "line %s: section [%s] given twice" % (exc.lineno, exc.section)
    if isinstance(exc, UnicodeError):
        return "not UTF-8 text (byte %s)" % getattr(exc, "start", "?")
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def resolve(explicit=None, config_file=None, credentials_file=None, environ=None,
            config_required=False):
    """Merge every source of settings into one validated ``Settings``."""
    environ = os.environ if environ is None else environ
    layers = [
        read_config_file(config_file, config_required),
        read_config_file(credentials_file, credentials_file is not None),
        dict((o.name, environ[o.env]) for o in OPTIONS if o.env in environ),
        dict((k, v) for k, v in (explicit or {}).items() if v is not None),
    ]
    values = dict((o.name, o.default) for o in OPTIONS)
    for layer in layers:
        for name, value in layer.items():
            if name not in BY_NAME:
                raise ConfigError("unknown setting %r" % name, code="config_invalid",
                                  stage="config")
            values[name] = coerce(BY_NAME[name], value)
    _check_together(values)
    return Settings(values)


# Bounds that depend on another setting: {option: (setting, {its value: (min, max)})}.
LINKED_BOUNDS = {"compression_level": ("compression", {"gzip": (1, 9), "zstd": (1, 19)})}


def _check_together(values):
    for name, (other, ranges) in sorted(LINKED_BOUNDS.items()):
        value, low_high = values.get(name), ranges.get(values.get(other))
        if value is not None and low_high and not low_high[0] <= value <= low_high[1]:
            raise invalid(BY_NAME[name], value, "is out of range for %s=%s: expected an "
                          "integer from %d to %d" % ((other, values[other]) + low_high))
