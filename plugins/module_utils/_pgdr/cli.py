# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``pgdr`` command line: the same engine as the modules, for nodes and cron.

``run(argv, stdout, stderr)`` returns the exit code instead of exiting, so it
is testable and so the engine never calls sys.exit. Exit codes: errors.py and
docs/cli.md. Secrets are never accepted as flags (they would show in ps):
they come from the credentials file or the environment.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from . import ENGINE_VERSION
from . import walready
from .errors import ConfigError, PgdrError, WalNotFound
from .options import DEFAULT_CONFIG_FILE, DEFAULT_CREDENTIALS_FILE, resolve
from .progress import Progress
from .verbs import COMMANDS, UsageError, build_parser, explicit

# restore_command: 1 means 'not in the archive' (WalNotFound, and nothing else) and lets
# recovery go on; any other failure, a usage error or a bug included, exits above 125,
# which PostgreSQL treats as fatal, so that recovery stops instead of ending early and
# promoting at the wrong point.
WAL_FETCH_NOT_FOUND = 1
WAL_FETCH_FATAL_BASE = 128
INTERNAL_EXIT = PgdrError.exit_code


def _settled_text(result):
    """verify's and expire's word on pending snapshot backups (docs/snapshots.md)."""
    settled = result.get("snapshots_settled") or {}
    pending = result.get("snapshots_pending") or []
    return "".join(("; snapshot backups recorded %s" % ", ".join(
        "%s %s" % item for item in sorted(settled.items())) if settled else "",
        "; still pending: %s" % ", ".join(pending) if pending else ""))


def _render(command, result):
    """A short text for people; --json gives everything."""
    if command == "info":
        lines = ["cluster %s in %s" % (result["cluster"], result["repository"])]
        for b in result["backups"]:
            lines.append("  %-24s %-4s %s  lsn %s-%s  %8.1f MiB -> %8.1f MiB  %6.1f s" % (
                b["id"], b["type"], b["stop_time"], b["start_lsn"], b["stop_lsn"],
                b["size"] / 1048576.0, b["stored_size"] / 1048576.0, b["duration"]))
        if not result["backups"]:
            lines.append("  no complete backup")
        for backup_id in result["incomplete"]:
            lines.append("  %-24s incomplete (no manifest; never restored)" % backup_id)
        for damaged in (result.get("damaged") or []) + (result.get("damaged_snapshots") or []):
            lines.append("  %-24s DAMAGED [%s]: %s" % (damaged["id"], damaged["code"],
                                                       damaged["msg"]))
        for snap in result.get("snapshots") or ():
            lines.append("  %-24s snapshot %s  lsn %s-%s  %8.1f MiB  %s" % (
                snap["id"], snap["stop_time"], snap["start_lsn"], snap["stop_lsn"],
                snap["size"] / 1048576.0, snap["note"]))
        for snap in result.get("pending_snapshots") or ():
            lines.append("  %-24s snapshot PENDING at the provider: never restored until "
                         "it completes" % snap["id"])
        for snap in result.get("failed_snapshots") or ():
            lines.append("  %-24s snapshot FAILED: %s (never restored; expire removes it)"
                         % (snap["id"], snap.get("why")))
        window, archive = result.get("window"), result.get("archive") or {}
        if window:
            lines.append("recoverable from %s to %s (timeline %s, last segment %s)%s" % (
                window["earliest"], window["latest_time"], window["timeline"],
                window["latest_segment"],
                "; GAP: segment %s missing" % window["missing_segment"]
                if window.get("gap_before") else ""))
            if window.get("problem"):
                lines.append("timeline problem: %s" % window["problem"])
        if archive.get("available"):
            lines.append("archive lag now: %d segment(s), %.1f s (archive_mode %s, "
                         "failures %d)" % (archive["pending_segments"], archive["lag_seconds"],
                                           archive["archive_mode"], archive["failed_count"]))
        return "\n".join(lines)
    if command == "check":
        return "\n".join("%-18s ok  %6.1f s  %s" % (c["name"], c["seconds"], c["detail"])
                         for c in result["checks"])
    if command in ("wal-push", "wal-fetch", "metrics"):
        return None  # archive_command and restore_command stay quiet when all is well
    if command == "verify":
        wal = result.get("wal")
        return "backup %s: %d objects verified%s%s" % (
            result["backup_id"], result["objects"],
            "; WAL archive (%s): %d segment(s), %d history file(s), no gap" % (
                wal["mode"], wal["segments"], wal["history_files"]) if wal else "",
            "; snapshots not checked: %s" % result["snapshots_unchecked"]
            if result.get("snapshots_unchecked") else "") + _settled_text(result)
    if command == "drill":
        verdicts = "".join("; %s objective %s s %s" % (
            name.upper(), value["objective"], "met" if value["met"] else "MISSED")
            for name, value in sorted(result["objectives"].items()))
        return "drill of %s (backup %s): %s; RTO %.1f s, RPO %s s%s" % (
            result["point"], result.get("backup_id"),
            "success" if result["success"] else "FAILED", result["rto_seconds"],
            result["rpo_seconds"], verdicts)
    if command == "expire":
        return ("expired %s; snapshot backups expired %s; incomplete removed %s; %d WAL "
                "file(s) removed; kept %s" % (
                    ", ".join(result["expired"]) or "nothing",
                    ", ".join(e["id"] for e in result.get("snapshots_expired") or ())
                    or "none", ", ".join(result["incomplete_removed"]) or "none",
                    result["wal_removed"], ", ".join(result["kept"] + list(
                        result.get("snapshots_kept") or ())))) + _settled_text(result)
    if command == "cleanup":
        return "incomplete backups removed: %s (%d objects, %.1f MiB); kept: %s" % (
            ", ".join(result["incomplete_removed"]) or "none", result["objects_removed"],
            result["bytes_removed"] / 1048576.0,
            "; ".join("%s (%s)" % (k["id"], k["why"]) for k in result["incomplete_kept"])
            or "none")
    backup = result.get("backup") or {}
    if command == "backup":
        if result.get("skipped"):
            return "no backup from this node: %s" % result["reason"]
        if "size" not in backup:
            return "would take a %s backup of %s" % (backup.get("type"), result.get("pg_data"))
        from .commands.backup import describe  # the log line's text, the same counts
        return "backup %s: %s" % (backup["id"], describe(backup))
    if command == "restore-stage":
        return result["summary"]
    if command == "restore" and result.get("msg"):
        return result["msg"]  # says what was (or, with --dry-run, would be) done
    return "backup %s restored into %s" % (backup.get("id"), result.get("target"))


def run(argv, stdout, stderr=None, environ=None):
    """Run one pgdr command; returns its exit code."""
    stderr = stderr or stdout
    environ = os.environ if environ is None else environ
    wanted = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(wanted if wanted in COMMANDS else None).parse_args(argv)
    except UsageError as exc:
        return _usage_error(argv, str(exc), stdout, stderr)
    if args.version:
        stdout.write("pgdr %s\n" % ENGINE_VERSION)
        return 0
    if not args.command:
        build_parser().print_help(stdout)
        return 2
    as_json = args.json
    try:
        config = args.config or (DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE)
                                 else None)
        credentials = args.credentials or (
            DEFAULT_CREDENTIALS_FILE if os.access(DEFAULT_CREDENTIALS_FILE, os.R_OK) else None)
        values = explicit(args)
        values.update(config_file=config, credentials_file=credentials)
        settings = resolve(values, config_file=config,
                           credentials_file=credentials, environ=environ,
                           config_required=bool(args.config))
        progress = Progress(stderr, interval=10.0)
        module = _command_module(args.command)
        if args.command == "wal-fetch":
            result = module.run(settings, progress, dry_run=args.dry_run,
                                call=_fast_path_call(argv))
        else:
            result = module.run(settings, progress, dry_run=args.dry_run)
    except WalNotFound as exc:  # the normal end of the archive: not an error
        if as_json:
            stdout.write(json.dumps({"failed": True, "error": exc.as_dict()}) + "\n")
        stderr.write("pgdr %s: %s (end of archive)\n" % (args.command, exc.msg))
        return _exit_code(args.command, exc)
    except PgdrError as exc:
        if as_json:
            stdout.write(json.dumps({"failed": True, "error": exc.as_dict()}) + "\n")
        stderr.write("pgdr %s: error [%s]: %s\n" % (args.command, exc.code, exc.msg))
        return _exit_code(args.command, exc)
    except Exception as exc:  # a bug or a local fault (OSError): one clear line
        if environ.get("PGDR_DEBUG"):
            import traceback
            traceback.print_exc(file=stderr)
        error = {"msg": "internal error: %s: %s (set PGDR_DEBUG=1 for a traceback)"
                        % (type(exc).__name__, exc), "code": "internal", "stage": None}
        if as_json:
            stdout.write(json.dumps({"failed": True, "error": error}) + "\n")
        stderr.write("pgdr %s: error [internal]: %s\n" % (args.command, error["msg"]))
        return _fatal_exit(args.command, INTERNAL_EXIT)
    if as_json:
        stdout.write(json.dumps(result, sort_keys=True) + "\n")
    else:
        text = _render(args.command, result)
        if text:
            stdout.write(text + "\n")
    return 0


def _fast_path_call(argv):
    """The options of a wal-fetch call the launchers' fast path can answer next time
    (walready.py: the same command line, verb first), else None."""
    if argv[:1] != ["wal-fetch"] or walready.segment_call(argv[1:])[0] is None:
        return None
    return walready.call_key(argv[1:])


def _usage_error(argv, message, stdout, stderr):
    """A command line argparse refuses (unknown option, missing value or argument, bad
    choice): one line in the same form as every other error, exit as a ConfigError."""
    command = next((a for a in argv if a in COMMANDS), None)
    exc = ConfigError("%s (see pgdr %s--help)" % (message, command + " " if command else ""),
                      code="usage_invalid", stage="config")
    if "--json" in argv:
        stdout.write(json.dumps({"failed": True, "error": exc.as_dict()}) + "\n")
    stderr.write("pgdr%s: error [%s]: %s\n" % (" " + command if command else "", exc.code,
                                               exc.msg))
    return _exit_code(command, exc)


def _exit_code(command, exc):
    """The exit code of a PgdrError: its class's; for wal-fetch 1 only for WalNotFound
    (raised by wal-fetch alone), else 128 + the class's code."""
    if command == "wal-fetch" and isinstance(exc, WalNotFound):
        return WAL_FETCH_NOT_FOUND
    return _fatal_exit(command, exc.exit_code)


def _fatal_exit(command, code):
    """A failure's exit code: for wal-fetch above 125, so PostgreSQL stops recovery."""
    if command == "wal-fetch":
        return WAL_FETCH_FATAL_BASE + code
    return code


def _command_module(name):
    """Import only the verb that runs (keeps start-up lean)."""
    if name == "backup":
        from .commands import backup as module
    elif name == "restore":
        from .commands import restore as module
    elif name == "verify":
        from .commands import verify as module
    elif name == "expire":
        from .commands import expire as module
    elif name == "cleanup":
        from .commands import cleanup as module
    elif name == "drill":
        from .commands import drill as module
    elif name == "wal-push":
        from .commands import wal_push as module
    elif name == "wal-fetch":
        from .commands import wal_fetch as module
    elif name == "check":
        from .commands import check as module
    elif name == "metrics":
        from .commands import metrics as module
    elif name == "restore-stage":
        from .commands import stage as module
    elif name == "key-rotate":
        from .commands import key_rotate as module
    else:
        from .commands import info as module
    return module
