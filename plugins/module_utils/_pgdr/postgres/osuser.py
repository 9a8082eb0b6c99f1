# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Work done as the cluster's OS user by a process that runs as root.

A staged restore's stages write a root-owned state file (cutover, which runs as root,
acts on it, so the cluster's user must not be able to change it), yet pg_ctl must run as
the cluster's user and peer authentication lets only that user in as ``postgres``. The
stage runs as root and hands those two pieces to the user: pg_ctl through
``subprocess(user=...)`` (``switch_args``), the questions to the server through a forked
child that drops to the user and sends back its answer as JSON (``call_as``).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import pwd

from .. import errors
from ..errors import ConfigError, PgdrError


def _account(user):
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise ConfigError("the OS user %r does not exist on this node (expected the user "
                          "that runs PostgreSQL, e.g. postgres)" % user,
                          code="os_user_unknown", stage="os_user")


def must_switch(user):
    """Whether work for ``user`` needs another process: only root switches, and only to
    another user."""
    return bool(user) and os.geteuid() == 0 and _account(user).pw_uid != 0


# What a command run as the user inherits from root's environment: enough to find its
# binaries and speak the locale, nothing else (the postmaster keeps its environment)
KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ",
                    "PGDR_LAUNCHER")


def switch_args(user):
    """Keyword arguments that make ``subprocess.run`` run its command as ``user``, from
    "/", with a small environment."""
    if not must_switch(user):
        return {}
    account = _account(user)
    env = dict((k, v) for k, v in os.environ.items() if k in KEPT_ENVIRONMENT)
    env.update(HOME=account.pw_dir, USER=user, LOGNAME=user)
    return {"user": account.pw_uid, "group": account.pw_gid,
            "extra_groups": os.getgrouplist(user, account.pw_gid), "cwd": "/", "env": env}


def call_as(user, function, *args):
    """``function(*args)`` as ``user``: directly when no switch is needed, else in a forked
    child that drops to the user. The result must be JSON; an engine error raised in the
    child is raised again here with its class, code, stage and message."""
    if not must_switch(user):
        return function(*args)
    account = _account(user)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's coverage is not collected
        code = 70
        try:
            os.close(reader)
            code = _child(account, writer, function, args)
        finally:
            os._exit(code)  # never back into the caller's code, whatever happened
    os.close(writer)
    with os.fdopen(reader) as handle:
        answer = handle.read()
    status = os.waitpid(child, 0)[1]
    try:
        outcome = json.loads(answer)
    except ValueError:
        how = ("was killed by signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status)
               else "exited with %d" % os.WEXITSTATUS(status))
        raise PgdrError("the process working as %s %s without an answer" % (user, how),
                        stage="os_user")
    if "error" in outcome:
        failure = outcome["error"]
        kind = getattr(errors, failure.pop("class"), PgdrError)
        if not (isinstance(kind, type) and issubclass(kind, PgdrError)):
            kind = PgdrError
        raise kind(failure.pop("msg"), code=failure.pop("code"), stage=failure.pop("stage"),
                   **failure)
    return outcome["result"]


def _child(account, writer, function, args):  # pragma: no cover - runs in the child
    try:
        os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
        os.environ.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
        os.chdir("/")
        outcome = {"result": function(*args)}
    except PgdrError as exc:
        outcome = {"error": dict(exc.as_dict(), **{"class": type(exc).__name__})}
    except BaseException as exc:  # a bug, or an exit: the parent reports it as internal
        outcome = {"error": {"class": "PgdrError", "msg": "internal error as %s: %s: %s" % (
            account.pw_name, type(exc).__name__, exc), "code": "internal", "stage": "os_user"}}
    try:
        with os.fdopen(writer, "w") as handle:
            json.dump(outcome, handle, default=str)
        return 0
    except Exception:
        return 70
