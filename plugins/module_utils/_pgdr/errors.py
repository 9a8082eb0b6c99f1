# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One error tree for the whole engine.

Every failure carries a stable ``code`` (machines match on it), the ``stage``
that failed and a message for people. Each class maps to one CLI exit code;
docs/cli.md lists them.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class PgdrError(Exception):
    """Base class: exit code 1, an unexpected failure."""

    exit_code = 1
    default_code = "internal"

    def __init__(self, msg, code=None, stage=None, **details):
        super(PgdrError, self).__init__(msg)
        self.msg = msg
        self.code = code or self.default_code
        self.stage = stage
        self.details = details

    def as_dict(self):
        out = {"msg": self.msg, "code": self.code, "stage": self.stage}
        out.update(self.details)
        return out


class ConfigError(PgdrError):
    """A setting is missing or has a value the engine cannot use (exit 2)."""

    exit_code = 2
    default_code = "config_invalid"


class RepositoryError(PgdrError):
    """The repository cannot be reached or refuses a request (exit 3)."""

    exit_code = 3
    default_code = "repository_unavailable"


class PostgresError(PgdrError):
    """PostgreSQL cannot be reached or refuses the backup protocol (exit 4)."""

    exit_code = 4
    default_code = "postgres_unavailable"


class IntegrityError(PgdrError):
    """Stored data does not match its checksum, or a backup is incomplete (exit 5)."""

    exit_code = 5
    default_code = "integrity_failed"


class TargetRefused(PgdrError):
    """A restore target is unsafe to write into (exit 6): nothing was written."""

    exit_code = 6
    default_code = "target_refused"


class NotFound(PgdrError):
    """The requested backup, object or point does not exist (exit 7)."""

    exit_code = 7
    default_code = "not_found"


class WalNotFound(NotFound):
    """wal-fetch only: this WAL file is certainly not in the repository (the archive was
    listed or read and answered 'absent'). The one failure that restore_command reports
    as exit 1; any other wal-fetch failure exits 128 + its class's code."""

    default_code = "wal_not_found"


class Conflict(PgdrError):
    """An object that must never be overwritten already exists (exit 8)."""

    exit_code = 8
    default_code = "conflict"


class ObjectiveMissed(PgdrError):
    """A drill failed its checks, or a declared RTO/RPO objective is missed (exit 9)."""

    exit_code = 9
    default_code = "objective_missed"


class ArchiveCheckFailed(PgdrError):
    """WAL archiving is off, archives elsewhere, or does not reach the repository (exit 10)."""

    exit_code = 10
    default_code = "check_archive_failed"


EXIT_CODES = (
    (0, "success", "the command did what was asked (or had nothing to do)"),
    (PgdrError.exit_code, PgdrError.default_code, PgdrError.__doc__),
    (ConfigError.exit_code, ConfigError.default_code, ConfigError.__doc__),
    (RepositoryError.exit_code, RepositoryError.default_code, RepositoryError.__doc__),
    (PostgresError.exit_code, PostgresError.default_code, PostgresError.__doc__),
    (IntegrityError.exit_code, IntegrityError.default_code, IntegrityError.__doc__),
    (TargetRefused.exit_code, TargetRefused.default_code, TargetRefused.__doc__),
    (NotFound.exit_code, NotFound.default_code, NotFound.__doc__),
    (Conflict.exit_code, Conflict.default_code, Conflict.__doc__),
    (ObjectiveMissed.exit_code, ObjectiveMissed.default_code, ObjectiveMissed.__doc__),
    (ArchiveCheckFailed.exit_code, ArchiveCheckFailed.default_code, ArchiveCheckFailed.__doc__),
)

# Every stable error code the engine raises, declared once with its meaning. Machines match
# on these; tests/unit/test_errors.py checks that the engine raises no undeclared code, that
# none declared here is unused, and that docs/cli.md's table lists exactly these.
CODES = {
    # the class defaults (a failure without a more precise code)
    "internal": "an unexpected failure (a bug): the message says where",
    "config_invalid": "a setting has a value the engine cannot use; the message names it",
    "repository_unavailable": "the repository refused or failed a request",
    "postgres_unavailable": "PostgreSQL cannot be reached at the configured address",
    "integrity_failed": "stored data does not match its checksum",
    "target_refused": "the restore target is unsafe to write into",
    "not_found": "the requested backup, object or point does not exist",
    "wal_not_found": "wal-fetch: the WAL file is certainly not in the archive (exit 1)",
    "conflict": "an object that must never be overwritten already exists",
    "objective_missed": "a declared RTO or RPO objective is missed",
    "check_archive_failed": "WAL archiving does not reach the repository",
    # settings and input
    "config_missing": "a required setting is missing",
    "usage_invalid": "the command line is wrong (unknown option, missing argument)",
    "dependency_missing": "a Python package the engine needs is not installed",
    "lsn_invalid": "a WAL position is not of the form 0/16B3740",
    "point_invalid": "a restore point does not parse (docs/restore-points.md)",
    "pg_bindir_invalid": "the PostgreSQL binaries of the drill cannot run (pg_bindir)",
    "pgdata_mismatch": "pg_data is not the directory the server runs from",
    "drill_as_root": "the drill must run as the cluster's OS user, not root",
    "lifecycle_rule_unsafe": "a lifecycle rule would delete what the retention keeps",
    "tls_required": "a TLS-only bucket policy with a plain http endpoint",
    "metrics_dir_missing": "metrics_textfile_dir is not a directory",
    "metrics_write_failed": "the metrics textfile cannot be written",
    "spool_unwritable": "the spool directory cannot be created or written",
    "src_invalid": "upload: src is neither a file nor a directory",
    "src_unreadable": "upload: a file of src cannot be read",
    "src_not_found": "upload: src does not exist",
    "dest_invalid": "upload: dest is not a valid repository key",
    "dest_reserved": "upload: dest is under a prefix pgdr manages",
    "wal_file_invalid": "wal-push: the file is not a WAL segment (wrong size or header)",
    "wal_path_invalid": "wal-push: the path does not exist or is not a file",
    "wal_name_invalid": "wal-fetch: the name is not a WAL file name",
    # encryption (docs/encryption.md)
    "encryption_key_missing": "the repository is encrypted and no key is configured",
    "encryption_key_wrong": "the configured key opens none (or not all) of the recipients",
    "repository_not_encrypted": "a key is configured but the repository holds plaintext",
    "object_not_encrypted": "a plaintext object in an encrypted repository",
    "decrypt_failed": "an encrypted object fails authentication (changed, cut or moved)",
    "data_key_missing": "the data key an encrypted object needs cannot be found or opened",
    "kms_failed": "the KMS service refused or failed a request",
    # the repository
    "access_denied": "the credentials are refused (wrong key, secret or permissions)",
    "bucket_not_found": "the bucket does not exist",
    "repository_not_found": "the posix repository directory does not exist",
    "credentials_missing": "no S3 credentials were found",
    "endpoint_unreachable": "the S3 endpoint does not answer",
    "endpoint_wrong_scheme": "the endpoint speaks https where http was given, or the reverse",
    "tls_failed": "the TLS handshake with the endpoint failed (certificate, CA bundle)",
    "setting_unsupported": "the S3 service does not support a bucket setting asked for",
    "object_lock_unavailable": "the bucket exists without Object Lock, which cannot be added",
    "invalid_key": "a repository key that would leave the repository",
    "read_failed": "an object could not be read",
    "write_failed": "an object could not be written",
    "delete_failed": "an object could not be deleted",
    "upload_corrupted": "the service stored other bytes than were sent",
    "lease_unreadable": "the backup lease cannot be read or parsed",
    "lease_contended": "another node is taking over an expired lease",
    "lease_lost": "the running backup lost its lease and stopped",
    "wal_archive_missing": "wal-fetch: the repository holds no WAL of this cluster at all",
    "object_not_found": "a repository object does not exist",
    "object_exists": "an object that is never overwritten exists with other bytes",
    "object_differs": "upload: an object exists with other bytes (overwrite=never)",
    "wal_conflict": "a WAL file is archived with other content: never overwritten",
    # PostgreSQL
    "postgres_refused": "PostgreSQL refused a statement the engine needs",
    "version_unsupported": "the PostgreSQL version is not supported",
    "full_page_writes_off": "full_page_writes is off: an online backup would be torn",
    "pgdata_invalid": "the data directory is not a PostgreSQL data directory",
    "pgdata_unreadable": "the data directory cannot be read by this user",
    "patroni_unreachable": "Patroni's REST API set in patroni_url does not answer as Patroni",
    "drill_start_failed": "the drill's scratch cluster did not start",
    "recovery_failed": "the restored cluster stopped during recovery",
    "recovery_timeout": "recovery did not reach the point in time",
    "os_user_unknown": "the OS user named to run PostgreSQL does not exist on the node",
    "pg_ctl_timeout": "pg_ctl did not finish within its time",
    # integrity
    "checksum_mismatch": "an object's bytes do not match their recorded SHA-256",
    "checksum_missing": "an object has no recorded SHA-256: placed by hand, not trusted",
    "size_mismatch": "an object or WAL file has another size than recorded",
    "decompress_failed": "stored data does not decompress",
    "manifest_damaged": "a backup's manifest fails its checks",
    "manifest_format": "a backup of another repository format (older, or newer: upgrade)",
    "control_missing": "a backup has no pg_control: it cannot be restored",
    "check_probe_mismatch": "check: the probe object read back differs",
    "check_archive_mode_off": "check: archive_mode is off",
    "check_archive_command_mismatch": "check: archive_command does not push into this "
                                      "repository and cluster",
    "check_archive_timeout": "check: the switched segment did not reach the repository in time",
    "upload_verify_failed": "upload: the stored object could not be verified",
    "src_changed": "upload: the file changed while it was read",
    "verify_failed": "verify found problems (listed by class)",
    "history_invalid": "a timeline history file does not parse or contradicts another",
    "wal_missing": "WAL the backup needs cannot be read",
    "wal_other_system": "archived WAL belongs to another database system",
    "wal_vanished": "WAL present at planning time is gone",
    # restore targets
    "target_not_empty": "the target holds files and force is not set",
    "snapshot_config": ("type snapshot: snapshot_provider, snapshot_dir or "
                        "snapshot_ebs_volumes cannot be used (missing, on another "
                        "filesystem, inside a volume, a volume EC2 does not know)"),
    "snapshot_unsupported": ("type snapshot: a volume cannot be snapshotted consistently "
                             "(not btrfs, not a subvolume root, a nested subvolume)"),
    "snapshot_failed": ("the snapshot provider's command or API call failed; the message "
                        "gives its output"),
    "snapshot_missing": ("a snapshot of a snapshot backup is gone from its provider or "
                         "failed there: that backup cannot be restored"),
    "snapshot_pending": ("a snapshot backup's provider has not completed its snapshots yet: "
                         "it is not offered until a later run records it complete"),
    "snapshot_target_invalid": ("a snapshot backup cannot be cloned into this target (delta, "
                                "another filesystem, a link or mount point, a non-empty "
                                "tablespace location, a clone left by an earlier run, an "
                                "EBS snapshot)"),
    "target_not_a_cluster": "delta was asked for a target that holds no data directory",
    "target_inside_cluster": "the target lies inside a PostgreSQL data directory",
    "target_running": "a PostgreSQL server runs in or on the target: never written",
    "target_owner_root": "the target is owned by root while restoring as root",
    "target_unwritable": "the target cannot be written",
    "target_full": "no space left on the target's filesystem",
    "tablespace_unknown": "tablespace_map names a tablespace the backup does not have",
    "tablespace_in_use": "a tablespace location belongs to a live cluster",
    "setting_too_low": "a setting is below the source's value: recovery would abort",
    # the staged restore
    "restore_state_invalid": "the staged restore's state file cannot be read, parsed or written",
    "restore_stage_missing": "a restore stage ran before the stages it needs recorded theirs",
    "restore_wrong_server": "the server on the staged copy's port is not the staged copy",
    "restore_copy_restarted": "the staged copy was started again after recover recorded it",
    "restore_verify_failed": "a check of the staged copy failed: cutover refuses it",
    "restore_plan_stale": "stage: a newer backup completed after the plan chose one",
    "restore_action_shutdown": "recover: a copy restored to shut down at the point cannot be waited for",
    "restore_not_verified": "cutover: no staged copy of the plan's backup passed verify",
    "restore_cutover_blocked": "cutover, rollback: the directories cannot be renamed into place",
    "restore_cutover_unfinished": "cutover: an earlier cutover stopped half-way",
    "restore_rollback_missing": "rollback: no kept data directory to move back",
    "restore_standby_unknown": "standbys: the new primary's address is not set",
    "restore_standby_clone_failed": "standbys: pg_basebackup from the new primary failed",
    "restore_standby_not_streaming": "standbys: the rebuilt standby started but does not "
                                     "stream from the new primary on its timeline",
    "restore_patroni_running": "cutover, rollback, standbys: Patroni runs on the node and "
                               "manages the directory, so nothing stops or moves",
    "restore_patroni_dcs": "cutover: patronictl could not remove the Patroni cluster from "
                           "the DCS (a leader key left there, or patronictl failed)",
    "restore_stop_failed": "cutover, rollback: a cluster did not stop, so nothing was moved",
    "restore_service_failed": "cutover, rollback: the service manager failed to stop or start",
    "restore_start_failed": "cutover, rollback, standby: pg_ctl could not start the cluster "
                            "(the server log's tail says why)",
    "objects_archived": "objects the restore needs are in archive storage (thaw them)",
    "thaw_timeout": "archived objects were not thawed within thaw_timeout",
    # plans and points
    "no_backup": "no complete backup of the cluster",
    "backup_not_found": "the backup is incomplete or does not exist",
    "chain_broken": "a diff or incr needs a backup that is missing",
    "point_unreachable": "the point is before the oldest backup or after the archive",
    "timeline_unreachable": "target_timeline is not reachable from the backup",
    "history_missing": "a timeline history file the plan needs is missing",
    "wal_gap": "the archive misses a segment before the point",
    # WAL push and fetch
    "wal_unreadable": "wal-push: the segment cannot be read",
    "wal_push_failed": "wal-push: the background worker failed to store the segment",
    "wal_push_timeout": "wal-push: the segment was not stored within archive_wait",
    "wal_push_settings_changed": "wal-push: the config changed during the push: retried",
    "wal_dest_unwritable": "wal-fetch: the destination cannot be written (recovery stops)",
    "spool_full": "wal-fetch: prefetching paused, the spool is full",
    "patroni_config_refused": "Patroni's REST API refused a dynamic configuration change",
    "patroni_config_timeout": "PostgreSQL did not take a setting given through Patroni in time",
    "drill_failed": "a drill check failed",
}
