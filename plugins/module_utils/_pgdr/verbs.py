# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verbs of the ``pgdr`` command line, the option groups each takes, and their
argument parser: one registry, used by cli.py and by ``pgdr check`` (which parses the
command line an archive_command runs)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse

from .errors import EXIT_CODES
from .options import BY_NAME, DEFAULT_CONFIG_FILE, DEFAULT_CREDENTIALS_FILE, OPTIONS

COMMANDS = {
    "backup": ("Take a backup (full, diff, incr or auto) when this node is the one to back up.", ("repo", "pg", "backup")),
    "restore": ("Restore a backup into a new data directory.", ("repo", "restore", "wal")),
    "info": ("List the backups, the recoverable window and the archive lag.",
             ("repo", "pg", "info")),
    "verify": ("Download and check every object of a backup's chain and the WAL "
               "archive it needs.",
               ("repo", "verify")),
    "expire": ("Delete backups and WAL outside the retention policy, keeping chains whole.",
               ("repo", "expire", "cleanup")),
    "cleanup": ("Remove the objects of incomplete backups that no backup is still writing.",
                ("repo", "cleanup")),
    "drill": ("Restore a point into a scratch directory, verify it, measure RTO and RPO.",
              ("repo", "restore", "wal", "drill", "pg")),
    "wal-push": ("Archive one WAL file (archive_command = 'pgdr wal-push %p').",
                 ("repo", "wal", "backup")),
    "check": ("Prove the set-up: settings, repository (write, read, delete), PostgreSQL, "
              "archive_mode and archive_command, and a WAL segment's round trip.",
              ("repo", "pg", "check")),
    "metrics": ("Refresh the node's Prometheus textfile (backups, archiving, RPO, "
                "repository): the one-minute cron job.", ("repo", "pg", "metrics")),
    "wal-fetch": ("Fetch one WAL file (restore_command = 'pgdr wal-fetch %f %p').",
                  ("repo", "wal")),
    "key-rotate": ("Replace a recipient (passphrase or KMS key) of an encrypted repository: "
                   "its data keys are wrapped again, no data is rewritten.", ("repo", "key")),
    "restore-stage": ("Run one stage of a staged restore (plan, stage, recover, verify, "
                      "cutover, rollback, standby) on this node, recorded in its state file.",
                      ("repo", "pg", "restore", "stage")),
}
POSITIONAL = {"wal-push": ("wal_path",), "wal-fetch": ("wal_name", "wal_dest"),
              "restore-stage": ("stage",)}
# Options of a verb's groups that it does not take (the stage's plan chooses the backup).
EXCLUDED = {"restore-stage": ("backup_id",)}


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so run() keeps control."""

    def error(self, message):
        raise UsageError(message)


class UsageError(Exception):
    """A command line argparse refuses."""


def build_parser(only=None):
    """The parser; with ``only``, just that subcommand's (archive_command and
    restore_command run once per WAL file: building every subcommand costs ~80 ms)."""
    epilog = "exit codes:\n" + "\n".join("  %d  %s" % (code, name)
                                         for code, name, dummy in EXIT_CODES)
    parser = Parser(prog="pgdr", description="PostgreSQL disaster recovery to "
                    "S3-compatible storage.", epilog=epilog,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command")
    for name, (help_text, groups) in sorted(COMMANDS.items()):
        if only and name != only:
            continue
        command = sub.add_parser(name, help=escape(help_text), description=help_text)
        command.add_argument("--config", default=None,
                             help="config file (default %s when it exists)"
                             % DEFAULT_CONFIG_FILE)
        command.add_argument("--credentials", default=None,
                             help="credentials file holding the secret settings (mode 0600; "
                             "default %s when this user can read it)"
                             % DEFAULT_CREDENTIALS_FILE)
        command.add_argument("--json", action="store_true",
                             help="print the result as one JSON object")
        command.add_argument("--dry-run", action="store_true",
                             help="check and plan, change nothing")
        for positional in POSITIONAL.get(name, ()):
            command.add_argument(positional, help=escape(BY_NAME[positional].help))
        for option in OPTIONS:
            if (option.secret or not set(option.groups) & set(groups)
                    or option.name in EXCLUDED.get(name, ())):
                continue
            kwargs = {"dest": option.name, "default": None, "help": escape(option.help)}
            if option.kind == "bool":
                kwargs.update(nargs="?", const="true", metavar="BOOL")
            elif option.kind == "dict":
                kwargs.update(action="append", metavar="KEY=VALUE")
            elif option.kind == "list":
                kwargs.update(action="append")
            elif option.choices:
                kwargs.update(choices=option.choices)
            command.add_argument(option.flag, **kwargs)
    return parser


def escape(text):
    """argparse formats help with %: a literal %p must be written %%p."""
    return text.replace("%", "%%")


def explicit(args):
    """The option values given on the command line."""
    values = {}
    for option in OPTIONS:
        value = getattr(args, option.name, None)
        if value is None:
            continue
        values[option.name] = ",".join(value) if option.kind == "dict" else value
    return values
