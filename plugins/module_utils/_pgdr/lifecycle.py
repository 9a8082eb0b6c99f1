# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bucket lifecycle rules computed from the retention policy, and a validator that
refuses rules which would break it (docs/lifecycle.md).

The principle: nothing a retained chain or the point-in-time window needs expires, or
becomes unreadable without a thaw, before the *horizon*:

    horizon = retention_days + full_max_age + margin_days

A restore of any point of the last retention_days needs the newest full before that
window and its chain: a full is at most full_max_age days older than the window's start
(type auto takes a new full once the newest is that old), and the margin covers late or
failed backups. WAL is needed from the oldest kept backup's start on: the same bound.
retention_full alone gives no age bound (the newest N fulls can be of any age), so no
Expiration is written for backups and WAL then: ``pgdr expire`` does that work.

Scopes, in the repository layout (docs/repository-format.md):
    <prefix>/<cluster>/backup/          every backup, manifests included
    (<prefix>/<cluster>/snapshot/ is never in scope: pgdr expire removes a snapshot
    backup's objects with its snapshots)
    <prefix>/<cluster>/wal/0            archived WAL segments (names start with the
                                        timeline, 0000000N...); timeline history files
                                        under <cluster>/wal/history/ are never in scope
Transitions are offered only to classes that stay readable at once (manifests,
files.json.gz and WAL must be readable for info, restore and wal-fetch).

Plain Python >= 3.9, no Ansible; rules are in the shape of boto3's
put_bucket_lifecycle_configuration(LifecycleConfiguration={"Rules": [...]}).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json

from .catalog import FOLDERS
from .errors import ConfigError

RULE_ID_PREFIX = "pgdr-"
# Readable at once, without a restore request.
INSTANT_CLASSES = ("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")
# Readable only after a restore (thaw) request that takes minutes to hours.
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
# AWS refuses transitions to these classes before an object is this many days old.
MIN_TRANSITION_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30}


class Policy(object):
    """The retention policy and the safety margin the rules are computed from."""

    def __init__(self, retention_days=None, retention_full=None, full_max_age=7, margin_days=7):
        self.retention_days = retention_days or None
        self.retention_full = retention_full or None
        self.full_max_age = full_max_age or 0
        self.margin_days = margin_days or 0

    @property
    def horizon(self):
        """Days before which no backup or WAL object may expire; None: no safe bound."""
        if not self.retention_days:
            return None
        return self.retention_days + self.full_max_age + self.margin_days

    def explain(self):
        if self.horizon is None:
            if self.retention_full:
                return ("retention_full=%d alone gives no age bound (the newest %d full "
                        "backups can be of any age)" % (self.retention_full, self.retention_full))
            return "no retention policy (retention_days, retention_full) is set"
        return ("%d days = retention_days %d + full_max_age %d + margin %d"
                % (self.horizon, self.retention_days, self.full_max_age, self.margin_days))


def base_prefix(repo_prefix):
    repo_prefix = (repo_prefix or "").strip("/")
    return repo_prefix + "/" if repo_prefix else ""


def split_clusters(value):
    """Cluster names from a list or a comma-separated text."""
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = []
    for item in items:
        name = str(item).strip()
        if name and name not in names:
            names.append(name)
    return names


def _transition(setting, days, storage_class, horizon):
    if days is None:
        return None
    if storage_class in ARCHIVE_CLASSES:
        raise ConfigError("%s_storage_class=%s would make manifests, file lists and WAL "
                          "unreadable without a thaw (restore request): use one of %s"
                          % (setting, storage_class, ", ".join(INSTANT_CLASSES)),
                          code="config_invalid", stage="config",
                          option="%s_storage_class" % setting)
    if storage_class not in INSTANT_CLASSES:
        raise ConfigError("%s_storage_class=%r is not one of: %s"
                          % (setting, storage_class, ", ".join(INSTANT_CLASSES)),
                          code="config_invalid", stage="config",
                          option="%s_storage_class" % setting)
    minimum = MIN_TRANSITION_DAYS.get(storage_class, 0)
    if days < minimum:
        raise ConfigError("%s_transition_days=%d: S3 moves objects to %s only after at least "
                          "%d days" % (setting, days, storage_class, minimum),
                          code="config_invalid", stage="config",
                          option="%s_transition_days" % setting)
    if horizon is not None and days >= horizon:
        raise ConfigError("%s_transition_days=%d is not before the expiry at %d days: the "
                          "objects expire before they would move" % (setting, days, horizon),
                          code="config_invalid", stage="config",
                          option="%s_transition_days" % setting)
    return [{"Days": days, "StorageClass": storage_class}]


def compile_rules(policy, repo_prefix="", clusters=(), backup_transition=(None, "STANDARD_IA"),
                  wal_transition=(None, "STANDARD_IA"), abort_multipart_days=7,
                  noncurrent_days=30, expired_delete_markers=True):
    """The rules pgdr writes: {"rules": [...], "notes": [...], "horizon_days": N|None}.

    ``clusters`` empty: rules scoped by the repository prefix only, which cannot tell
    backups and WAL from uploads and timeline history files, so no Expiration then."""
    base = base_prefix(repo_prefix)
    clusters = split_clusters(clusters)
    horizon = policy.horizon
    notes = []
    rules = []
    backup_moves = _transition("lifecycle_backup", backup_transition[0], backup_transition[1],
                               horizon)
    wal_moves = _transition("lifecycle_wal", wal_transition[0], wal_transition[1], horizon)
    if horizon is None:
        notes.append("no Expiration rule for backups and WAL: %s; pgdr expire "
                     "(pg_backup_expire) deletes what the policy no longer needs"
                     % policy.explain())
    else:
        notes.append("backups and WAL expire after %s" % policy.explain())
    if clusters:
        for cluster in clusters:
            for kind, prefix, moves in (("backup", "%s%s/backup/" % (base, cluster), backup_moves),
                                        ("wal", "%s%s/wal/0" % (base, cluster), wal_moves)):
                rule = {"ID": "%s%s-%s" % (RULE_ID_PREFIX, cluster, kind),
                        "Status": "Enabled", "Filter": {"Prefix": prefix}}
                if horizon is not None:
                    rule["Expiration"] = {"Days": horizon}
                if moves:
                    rule["Transitions"] = moves
                if len(rule) > 3:
                    rules.append(rule)
    else:
        if horizon is not None:
            notes.append("no Expiration rule: without cluster names (lifecycle_clusters or "
                         "cluster) a rule on the prefix %r would also expire uploads and "
                         "timeline history files; pgdr expire deletes what the policy no "
                         "longer needs" % (base or "(whole bucket)"))
        if wal_moves and wal_moves != backup_moves:
            raise ConfigError("different transitions for backups and WAL need cluster names "
                              "(lifecycle_clusters or cluster): a rule on the prefix alone "
                              "cannot tell them apart", code="config_invalid", stage="config",
                              option="lifecycle_clusters")
        if backup_moves:
            rules.append({"ID": RULE_ID_PREFIX + "data-transition", "Status": "Enabled",
                          "Filter": {"Prefix": base}, "Transitions": backup_moves})
    housekeeping = {"ID": RULE_ID_PREFIX + "housekeeping", "Status": "Enabled",
                    "Filter": {"Prefix": base}}
    if abort_multipart_days:
        housekeeping["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": abort_multipart_days}
    if noncurrent_days:
        housekeeping["NoncurrentVersionExpiration"] = {"NoncurrentDays": noncurrent_days}
    if expired_delete_markers:
        housekeeping["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    if len(housekeeping) > 3:
        rules.append(housekeeping)
    return {"rules": rules, "notes": notes, "horizon_days": horizon}


# -- validation of rules pgdr did not compute ---------------------------------------------
def parse_rules(value):
    """Extra rules: a list of dicts, or JSON text of one (CLI, config file)."""
    if value in (None, ""):
        return []
    if not isinstance(value, (list, tuple)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError("lifecycle_rules is not valid JSON: %s" % exc,
                              code="config_invalid", stage="config", option="lifecycle_rules")
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, dict) for r in value):
        raise ConfigError("lifecycle_rules must be a list of rules (dicts in the shape of "
                          "put_bucket_lifecycle_configuration)", code="config_invalid",
                          stage="config", option="lifecycle_rules")
    return [dict(rule) for rule in value]


def rule_prefix(rule):
    """The key prefix a rule applies to ("" = every key)."""
    flt = rule.get("Filter")
    if flt is None:
        return rule.get("Prefix") or ""
    if "And" in flt:
        return flt["And"].get("Prefix") or ""
    return flt.get("Prefix") or ""


def touches_repository(prefix, repo_prefix, clusters=()):
    """Whether keys under ``prefix`` can be backups or WAL of a cluster of the repository
    (<base><cluster>/backup/..., <base><cluster>/snapshot/..., <base><cluster>/wal/...).
    ``clusters``: the known cluster
    names; empty, any name under <base> may be one. A prefix that reaches into a
    backup/ or wal/ directory counts whatever the cluster's name. A tag or size filter
    does not make a rule safe: pgdr cannot tell which objects it matches."""
    base = base_prefix(repo_prefix)
    if not prefix.startswith(base):
        return base.startswith(prefix)  # a broader prefix: it covers the repository
    rest = prefix[len(base):]
    cluster, slash, below = rest.partition("/")
    if not slash:  # <base><start of a name>: covers <name...>/backup/ of such clusters
        return not clusters or any(name.startswith(cluster) for name in clusters)
    if not below:  # <base><name>/: the whole of one cluster
        return not clusters or cluster in clusters
    return any(below.startswith(d) or d.startswith(below)
               for d in ["%s/" % f for f in FOLDERS] + ["wal/"])


def _days(action):
    days = action.get("Days")
    return int(days) if days is not None else None


def check_rule(rule, policy, repo_prefix, clusters=()):
    """What the rule would break (a list of texts; empty: safe)."""
    if rule.get("Status", "Enabled") != "Enabled":
        return []
    prefix = rule_prefix(rule)
    if not touches_repository(prefix, repo_prefix, clusters):
        return []
    where = ("every key of the bucket" if not prefix else "keys under %r" % prefix)
    horizon = policy.horizon
    if horizon is not None:
        needed = ("backups of retained chains and WAL of the point-in-time window may be "
                  "needed for %s" % policy.explain())
    else:
        needed = "pgdr cannot bound the age of retained backups and WAL: %s" % policy.explain()
    problems = []
    expiration = rule.get("Expiration") or {}
    if expiration.get("Date") is not None:
        problems.append("its Expiration Date deletes %s at once on that date, whatever their "
                        "age; %s" % (where, needed))
    days = _days(expiration)
    if days is not None and (horizon is None or days < horizon):
        problems.append("its Expiration after %d days deletes %s; %s" % (days, where, needed))
    for move in rule.get("Transitions") or []:
        storage_class = move.get("StorageClass")
        if storage_class not in ARCHIVE_CLASSES:
            continue
        when = ("on %s" % _text(move["Date"])) if move.get("Date") is not None else (
            "after %s days" % move.get("Days"))
        move_days = _days(move)
        if move_days is None or horizon is None or move_days < horizon:
            problems.append("its Transition to %s %s makes %s (manifests, file lists, WAL) "
                            "unreadable without a thaw; %s"
                            % (storage_class, when, where, needed))
    return problems


def validate(rules, policy, repo_prefix, clusters=(), source="lifecycle_rules"):
    """Refuse rules that would delete, or make unreadable, what the policy needs."""
    seen = set()
    problems = []
    for index, rule in enumerate(rules):
        rule_id = rule.get("ID")
        if not rule_id or not isinstance(rule_id, str):
            problems.append("%s[%d] has no ID: every rule needs one" % (source, index))
            continue
        if rule_id in seen:
            problems.append("rule %r appears twice" % rule_id)
        seen.add(rule_id)
        if source == "lifecycle_rules" and rule_id.startswith(RULE_ID_PREFIX):
            problems.append("rule %r: IDs starting with %r are pgdr's own rules"
                            % (rule_id, RULE_ID_PREFIX))
        problems.extend("rule %r: %s" % (rule_id, text) for text in check_rule(rule, policy, repo_prefix, clusters))
    if problems:
        raise ConfigError("%s refused: %s" % (source, "; ".join(problems)),
                          code="lifecycle_rule_unsafe", stage="config",
                          problems=problems)


# -- comparing ------------------------------------------------------------------------
def _text(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, datetime.date):
        return value.strftime("%Y-%m-%dT00:00:00Z")
    return value


def normalize(rule):
    """A rule in one canonical form, so that what a server returns compares equal to
    what was sent: no empty values, dates as UTC text, legacy Prefix as a Filter."""
    def clean(value):
        if isinstance(value, dict):
            out = dict((k, clean(v)) for k, v in value.items())
            return dict((k, v) for k, v in out.items() if v not in (None, [], {}))
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return _text(value)
    rule = clean(dict(rule))
    if "Filter" not in rule:
        rule["Filter"] = {"Prefix": rule.pop("Prefix", "")}
    else:
        rule.pop("Prefix", None)
    flt = rule["Filter"]
    if not flt:
        rule["Filter"] = {"Prefix": ""}
    if "Transitions" in rule:
        rule["Transitions"] = sorted(rule["Transitions"],
                                     key=lambda t: (t.get("Days") or 0, str(t.get("Date"))))
    if "NoncurrentVersionTransitions" in rule:
        rule["NoncurrentVersionTransitions"] = sorted(
            rule["NoncurrentVersionTransitions"], key=lambda t: t.get("NoncurrentDays") or 0)
    return rule


def diff(current, desired):
    """{added, removed, changed, unchanged: [rule ids]} from current to desired."""
    before = dict((r.get("ID"), normalize(r)) for r in current)
    after = dict((r.get("ID"), normalize(r)) for r in desired)
    return {
        "added": sorted(k for k in after if k not in before),
        "removed": sorted(k for k in before if k not in after),
        "changed": sorted(k for k in after if k in before and after[k] != before[k]),
        "unchanged": sorted(k for k in after if k in before and after[k] == before[k]),
    }


def has_changes(difference):
    return bool(difference["added"] or difference["removed"] or difference["changed"])


def desired_rules(computed, extra, current, policy, repo_prefix, clusters=(), purge=False):
    """The whole configuration to write: pgdr's rules, the extra rules, and (unless
    purge) the bucket's other rules, which are validated like extra rules. Returns
    (rules, kept_ids)."""
    validate(extra, policy, repo_prefix, clusters)
    mine = set(r["ID"] for r in computed) | set(r["ID"] for r in extra)
    kept = []
    if not purge:
        kept = [r for r in current if r.get("ID") not in mine
                and not str(r.get("ID", "")).startswith(RULE_ID_PREFIX)]
        validate(kept, policy, repo_prefix, clusters, source="existing bucket rule(s) (lifecycle_purge "
                 "removes them)")
    return list(computed) + list(extra) + kept, [r.get("ID") for r in kept]
