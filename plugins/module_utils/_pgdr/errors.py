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
