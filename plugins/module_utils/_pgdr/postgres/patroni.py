# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Patroni from pgdr: its REST API (who leads, which replicas are healthy, their tags; the
dynamic configuration pgdr's archiving settings go into) and patronictl (a cluster's removal
from the DCS before a staged restore's cutover).

When a node runs Patroni, the cluster's topology is Patroni's, not what one PostgreSQL
sees: after a failover, pg_stat_replication on the old primary's replacement is empty for
a while, and a replica cannot see its siblings at all. Every member reads the same member
list from the DCS through its local Patroni, so every member computes the same choice of
the node that backs up (``choose``), and exactly one of them acts on it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import socket
import subprocess
import time

try:
    from http.client import HTTPConnection, HTTPException, HTTPSConnection
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported at run time
    HTTPConnection = HTTPException = HTTPSConnection = urlsplit = None

from ..errors import ConfigError, PostgresError

DEFAULT_URL = "http://127.0.0.1:8008"
LEADER_ROLES = ("leader", "standby_leader", "primary", "master")
REPLICA_ROLES = ("replica", "sync_standby", "quorum_standby")
# Patroni's member states for a replica that applies WAL from its upstream
HEALTHY_REPLICA_STATES = ("streaming", "running")
# a member tag of ours (Patroni keeps any tag): never back up from this member
NOBACKUP_TAG = "nobackup"
# Patroni keeps a copy of its dynamic configuration in the data directory it manages
MANAGED_MARKER = "patroni.dynamic.json"


class _NotPatroni(Exception):
    """The address answered, but not as Patroni's REST API does."""


def _get(url, path, timeout):
    """GET url + path as JSON (http.client: the engine has no ansible imports)."""
    return _request(url, "GET", path, None, timeout)


class _Unauthorized(_NotPatroni):
    """Patroni asked for the credentials of restapi.authentication (HTTP 401)."""


class _Conflict(_NotPatroni):
    """HTTP 409 on PATCH /config: the dynamic configuration changed in the DCS between
    Patroni's read and its write (another member's PATCH, often the same settings)."""


def _request(url, method, path, body, timeout, accept=(200,), auth=None):
    """One request to Patroni's REST API; its JSON answer (None when it is not JSON).
    ``auth``: (user, password) for restapi.authentication, sent as HTTP Basic."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _NotPatroni("not an http(s) URL")
    connection_class = HTTPSConnection if parts.scheme == "https" else HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    headers = {"Accept": "application/json"}
    if auth:
        token = base64.b64encode(("%s:%s" % auth).encode("utf-8")).decode("ascii")
        headers["Authorization"] = "Basic " + token
    payload = None
    if body is not None:
        payload = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, parts.path.rstrip("/") + path, body=payload,
                           headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status == 401:
            raise _Unauthorized("HTTP 401 on %s %s: Patroni's restapi.authentication %s"
                                % (method, path, "refused patroni_username and "
                                   "patroni_password" if auth else "needs patroni_username "
                                   "and patroni_password"))
        if response.status == 409 and method == "PATCH":
            raise _Conflict("HTTP 409 on %s %s: the configuration changed meanwhile"
                            % (method, path))
        if response.status not in accept:
            raise _NotPatroni("HTTP %d on %s %s: %s" % (
                response.status, method, path, answer.decode("utf-8", "replace")[:200]))
        try:
            return json.loads(answer.decode("utf-8"))
        except ValueError:
            return None
    finally:
        connection.close()


def _unreachable(url, why):
    return PostgresError(
        "Patroni's REST API at %s did not answer as Patroni does (%s): pgdr asks it which "
        "member leads; set patroni_url to this node's Patroni API, or to 'off' when the "
        "node does not run Patroni" % (url, why),
        code="patroni_unreachable", stage="designation", url=url)


def view(setting, timeout=5.0):
    """{"name": this member, "scope": ..., "members": [...]} from the local Patroni, or
    None when the node does not run Patroni. ``setting`` is the patroni_url option:
    "off" (never ask), "auto" (ask DEFAULT_URL; nothing listening means no Patroni) or
    the URL of this node's Patroni REST API, which must then answer."""
    if setting == "off":
        return None
    url = DEFAULT_URL if setting == "auto" else setting.rstrip("/")
    try:
        me = _get(url, "/patroni", timeout)
        cluster = _get(url, "/cluster", timeout)
    except ConnectionRefusedError:
        if setting == "auto":
            return None  # nothing listens there: this node does not run Patroni
        raise _unreachable(url, "connection refused")
    except (_NotPatroni, HTTPException, socket.timeout, OSError, ValueError) as exc:
        raise _unreachable(url, exc)
    name = (me.get("patroni") or {}).get("name")
    if not name or not isinstance(cluster.get("members"), list):
        raise _unreachable(url, "no member name or member list in its answer")
    return {"name": name, "scope": (me.get("patroni") or {}).get("scope"),
            "members": cluster["members"]}


def _lag(member):
    """Replay lag in bytes as Patroni reports it (None when it says 'unknown')."""
    for key in ("replay_lag", "lag"):
        value = member.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _truthy(value):
    return value is True or str(value).lower() in ("true", "yes", "on", "1")


def eligible_replicas(members, max_lag_bytes):
    """Replicas healthy enough to back up from, best first. The order depends only on
    the member list, so that every member picks the same one: members tagged
    nofailover first (they are not failover candidates: back up from them rather than
    load one that may have to lead), then by name."""
    found = []
    for member in members:
        tags = member.get("tags") or {}
        lag = _lag(member)
        if (member.get("role") in REPLICA_ROLES
                and member.get("state") in HEALTHY_REPLICA_STATES
                and not _truthy(tags.get(NOBACKUP_TAG))
                and lag is not None and lag <= max_lag_bytes):
            found.append(member)
    return sorted(found, key=lambda m: (not _truthy((m.get("tags") or {}).get("nofailover")),
                                        m.get("name")))


def leader(members):
    for member in members:
        if member.get("role") in LEADER_ROLES and member.get("state") == "running":
            return member
    return None


def choose(mode, members, max_lag_bytes):
    """(member name or None, why): the one member that backs up under backup_from=mode."""
    lead = leader(members)
    replicas = eligible_replicas(members, max_lag_bytes)
    if mode == "primary":
        if lead is None:
            return None, "Patroni reports no running leader"
        return lead["name"], "the leader backs up (backup_from=primary)"
    if replicas:
        first = replicas[0]
        return first["name"], ("replica %s is streaming with a replay lag of %s bytes: it "
                               "is the designated member" % (first["name"], _lag(first)))
    if mode == "standby":
        return None, ("no replica is streaming within %d bytes of lag without the %s tag; "
                      "with backup_from=standby no member backs up"
                      % (max_lag_bytes, NOBACKUP_TAG))
    if lead is None:
        return None, "Patroni reports no running leader and no healthy replica"
    return lead["name"], "no healthy replica: the leader backs up (backup_from=prefer-standby)"


def designation(mode, patroni_view, max_lag_bytes):
    """Why this member must not back up now (None when it should)."""
    chosen, why = choose(mode, patroni_view["members"], max_lag_bytes)
    if chosen == patroni_view["name"]:
        return None
    if chosen is None:
        return "Patroni cluster %s: %s" % (patroni_view["scope"], why)
    return "Patroni cluster %s: %s, not this member (%s)" % (
        patroni_view["scope"], why, patroni_view["name"])


def api_url(setting, timeout=5.0):
    """The URL of this node's Patroni REST API, or None when the node does not run
    Patroni (patroni_url off, or auto with nothing listening on DEFAULT_URL)."""
    if view(setting, timeout) is None:
        return None
    return DEFAULT_URL if setting == "auto" else setting.rstrip("/")


def configuration_changes(current, parameters, recovery_conf):
    """The PATCH body that puts these PostgreSQL parameters (and recovery settings) into
    Patroni's dynamic configuration, with only what differs from it ({} when nothing)."""
    postgresql = current.get("postgresql") or {}
    have = postgresql.get("parameters") or {}
    want = dict((k, v) for k, v in parameters.items() if str(have.get(k)) != str(v))
    have_recovery = postgresql.get("recovery_conf") or {}
    want_recovery = dict((k, v) for k, v in (recovery_conf or {}).items()
                         if str(have_recovery.get(k)) != str(v))
    body = {}
    if want:
        body["parameters"] = want
    if want_recovery:
        body["recovery_conf"] = want_recovery
    return {"postgresql": body} if body else {}


def apply_configuration(url, parameters, recovery_conf=None, dry_run=False, timeout=10.0,
                        auth=None):
    """Put the settings into Patroni's dynamic configuration (the DCS: every member gets
    them, and a new leader after a failover has them), never into the files Patroni owns.
    The names of the settings that were (or, with dry_run, would be) changed."""
    try:
        body = _patch_until_applied(url, parameters, recovery_conf, dry_run, timeout, auth)
    except (_NotPatroni, HTTPException, socket.timeout, OSError, ValueError) as exc:
        raise PostgresError("Patroni's REST API at %s refused the dynamic configuration: "
                            "%s" % (url, exc), code="patroni_config_refused",
                            stage="patroni", url=url)
    postgresql = body.get("postgresql", {})
    return sorted(postgresql.get("parameters", {})) + sorted(
        postgresql.get("recovery_conf", {}))


CONFIG_ATTEMPTS = 5


def _patch_until_applied(url, parameters, recovery_conf, dry_run, timeout, auth):
    """The PATCH body sent (or, with dry_run, that would be). Members configured at once
    (the archiving role on every node) PATCH the same DCS key together, and Patroni answers
    409 to all but one: read again and send what still differs, usually nothing."""
    attempt = 1
    while True:
        body = configuration_changes(_get(url, "/config", timeout) or {}, parameters,
                                     recovery_conf)
        if not body or dry_run:
            return body
        try:
            _request(url, "PATCH", "/config", body, timeout, auth=auth)
            return body
        except _Conflict:
            if attempt == CONFIG_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)
            attempt += 1


def restart_member(url, timeout=60.0, auth=None):
    """Restart this member's PostgreSQL through Patroni, as Patroni wants it done: never
    behind its back with pg_ctl or the service manager. (The caller saw the server ask
    for it; Patroni's own pending_restart flag may lag a loop behind.)"""
    try:
        _request(url, "POST", "/restart", {}, timeout, accept=(200, 202), auth=auth)
    except (_NotPatroni, HTTPException, socket.timeout, OSError) as exc:
        raise PostgresError("Patroni at %s did not restart PostgreSQL: %s" % (url, exc),
                            code="patroni_config_refused", stage="patroni", url=url)


def credentials(settings):
    """(user, password) for restapi.authentication from patroni_username and
    patroni_password, or None when no user is set."""
    if not settings.patroni_username:
        return None
    return (settings.patroni_username, settings.patroni_password or "")


# patronictl remove asks for the scope, then for this sentence, then (only when the DCS
# still holds a leader key) for the leader's name, with this question
REMOVE_CONFIRMATION = "Yes I am aware"
LEADER_QUESTION = "Please specify the leader name"
# how long a leader key left by a Patroni that did not release it may take to expire
# (Patroni's ttl, 30 s by default); a live leader renews it and is never removed
LEADER_KEY_WAIT = 90.0


def remove_cluster(patronictl, config, scope, stage="cutover", wait=LEADER_KEY_WAIT, timeout=60):
    """Remove the cluster ``scope`` from the DCS with ``patronictl -c config remove``, so that
    the first Patroni to start takes over the cluster found in its data directory as the
    leader of a new one. Only two questions are answered: while the DCS holds a leader key,
    patronictl asks for its name, reads no answer and aborts, so a cluster with a live
    leader is never removed. A key that a stopped Patroni left expires within its ttl: it
    is asked again every 2 s for ``wait`` seconds. Removing a cluster the DCS does not hold
    succeeds."""
    deadline = time.time() + wait
    while True:
        code, output = _patronictl_remove(patronictl, config, scope, stage, timeout)
        if code == 0:
            return
        if LEADER_QUESTION not in output or time.time() >= deadline:
            break
        _pause(2)
    tail = " ".join(output.split())[-400:]
    why = ("the DCS still holds a leader key after %d s, so a member's Patroni runs (stop "
           "Patroni on every member, then run the %s again)" % (wait, stage)
           if LEADER_QUESTION in output else "see patronictl's output")
    raise ConfigError("no %s: %s remove %s failed (exit %d: %s); %s: nothing was changed"
                      % (stage, patronictl, scope, code, tail, why),
                      code="restore_patroni_dcs", stage=stage)


def check_cluster(patronictl, config, scope, stage="cutover", timeout=60):
    """Before anything stops: patronictl runs and reaches the DCS, which holds ``scope``
    (``patronictl -c config list scope``, read only), so that the removal after the
    stops cannot fail for want of either."""
    argv = [patronictl, "-c", config, "list", scope, "-f", "json"]
    try:  # stderr apart: a warning there (urllib3's, say) must not spoil the JSON
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError("no %s: %s cannot run (%s): nothing was changed"
                          % (stage, patronictl, exc), code="restore_patroni_dcs", stage=stage)
    try:
        members = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        members = None
    if not members:
        raise ConfigError(
            "no %s: %s -c %s list %s does not show the cluster's members (exit %d: %s): the "
            "cutover could not remove it from the DCS, so nothing was changed"
            % (stage, patronictl, config, scope, done.returncode,
               " ".join((done.stdout + " " + done.stderr).split())[-300:]),
            code="restore_patroni_dcs", stage=stage)
    return members


def _pause(seconds):
    time.sleep(seconds)  # the tests stand in for it (subprocess sleeps through time.sleep)


def _patronictl_remove(patronictl, config, scope, stage, timeout):
    argv = [patronictl, "-c", config, "remove", scope]
    try:
        done = subprocess.run(argv, input="%s\n%s\n" % (scope, REMOVE_CONFIRMATION),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError("no %s: %s could not remove Patroni cluster %s from the DCS (%s); "
                          "nothing was changed" % (stage, patronictl, scope, exc),
                          code="restore_patroni_dcs", stage=stage)
    return done.returncode, done.stdout


def manages(data_dir):
    """Whether Patroni manages the cluster in ``data_dir`` (running or not)."""
    return os.path.isfile(os.path.join(data_dir, MANAGED_MARKER))


def daemons(proc_root="/proc"):
    """The pids of the Patroni daemons running on this node: ``patroni CONFIG``, its
    script run by a Python (``python3 -s /usr/bin/patroni``, ``python patroni.py``) or
    ``python -m patroni``; patronictl and programs that only name a Patroni file are not.
    OSError when ``proc_root`` cannot be listed (the caller cannot tell)."""
    found = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "cmdline"), "rb") as handle:
                argv = handle.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if is_patroni(argv):
            found.append(int(entry))
    return sorted(found)


PATRONI_SCRIPTS = ("patroni", "patroni.py")


def is_patroni(argv):
    """Whether a command line runs Patroni's daemon: the script itself, or a Python
    interpreter (CPython, platform-python, PyPy) given ``-m patroni`` or Patroni's script
    after its own options."""
    program = os.path.basename(argv[0]) if argv else ""
    if program in PATRONI_SCRIPTS:
        return True
    if "python" not in program and "pypy" not in program:
        return False
    args = iter(argv[1:])
    for arg in args:
        if arg == "-":
            return False  # a program on standard input
        if arg == "--check-hash-based-pycs":
            next(args, "")  # the one long option with a value
        elif arg.startswith("-") and not arg.startswith("--"):
            found = _short_options(arg[1:], args)
            if found is not None:
                return found
        elif not arg.startswith("-"):
            return os.path.basename(arg) in PATRONI_SCRIPTS
    return False


def _short_options(cluster, args):
    """One cluster of Python's short options (``-sEu``, ``-mpatroni``, ``-W ignore``):
    True or False when it decides (``-m``, ``-c``), None to read on."""
    for index, option in enumerate(cluster):
        rest = cluster[index + 1:]
        if option == "m":
            return (rest or next(args, "")) == "patroni"
        if option == "c":
            return False  # a command string: not Patroni's script
        if option in "WX":
            if not rest:
                next(args, "")
            return None
    return None
