# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn a bucket into a hardened pgdr repository (docs/lifecycle.md).

Each setting is read, compared with what is wanted and written only when it differs, so
a second run changes nothing; a dry run reads and compares only. In order: the bucket
(created when absent, with Object Lock when asked), versioning, default encryption, the
public access block, a TLS-only bucket policy statement, the Object Lock default
retention and the lifecycle rules (computed from the retention policy by
``lifecycle.compile_rules``, extra and existing rules checked by ``lifecycle.validate``).

A setting the server does not implement fails with ``setting_unsupported`` naming it;
the optional hardening set to ``when_supported`` gives a warning instead.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from .. import lifecycle
from ..errors import ConfigError, RepositoryError
from ..storage.s3 import S3Storage

TLS_SID = "pgdr-tls-only"
_UNSUPPORTED = ("NotImplemented", "MethodNotAllowed", "UnsupportedOperation", "XNotImplemented")
_ABSENT = ("NoSuchLifecycleConfiguration", "ServerSideEncryptionConfigurationNotFoundError",
           "NoSuchPublicAccessBlockConfiguration", "NoSuchBucketPolicy",
           "ObjectLockConfigurationNotFoundError")
_PAB = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True}


class _Unsupported(Exception):
    pass


class Bucket(object):
    """One bucket, its settings read and written through boto3."""

    def __init__(self, settings, progress, dry_run):
        self.settings = settings
        self.progress = progress
        self.dry_run = dry_run
        self.storage = S3Storage(settings)
        self.client = self.storage.client
        self.name = settings.s3_bucket
        self.exists = True
        self.changes = []
        self.warnings = []
        self.state = {}
        self._plan = None

    # -- requests ------------------------------------------------------------------
    def _call(self, action, setting, **kwargs):
        """boto3 call; a missing configuration is None, an unimplemented one _Unsupported."""
        try:
            return getattr(self.client, action)(Bucket=self.name, **kwargs)
        except Exception as exc:
            response = getattr(exc, "response", None) or {}
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _ABSENT:
                return None
            if code in _UNSUPPORTED or status == 501:
                raise _Unsupported("%s %s" % (code, response.get("Error", {}).get("Message", "")))
            raise self.storage._translate(exc, action, None)

    def _read(self, action, setting, **kwargs):
        """A read. On a bucket that this dry run would create nothing is there yet, but
        the request is still made: a server that lacks the feature says so even for a
        missing bucket, and check mode then predicts the warning the real run gives."""
        try:
            return self._call(action, setting, **kwargs)
        except RepositoryError as exc:
            if not self.exists and exc.code == "bucket_not_found":
                return None
            raise

    def _write(self, what, action, setting, **kwargs):
        if not self.dry_run:
            self._call(action, setting, **kwargs)
            self.progress.event(what)
        self.changes.append(what)

    def _optional(self, setting, mode, step):
        """Run step(); when the server lacks the feature, fail (on) or warn (when_supported)."""
        try:
            step()
        except _Unsupported as exc:
            text = ("%s: the server at %s does not support it (%s)"
                    % (setting, self.settings.s3_endpoint or "AWS", str(exc).strip()))
            if mode != "when_supported":
                raise RepositoryError(text, code="setting_unsupported", stage="bucket",
                                      setting=setting)
            self.warnings.append(text + "; left as it is (%s=when_supported)" % setting)
            self.state[setting] = "unsupported"

    # -- settings ------------------------------------------------------------------
    def ensure_bucket(self):
        s = self.settings
        try:
            self.client.head_bucket(Bucket=self.name)
            return
        except Exception as exc:
            status = (getattr(exc, "response", None) or {}).get(
                "ResponseMetadata", {}).get("HTTPStatusCode")
            if status != 404:
                raise self.storage._translate(exc, "check", None)
        if not s.bucket_create:
            raise RepositoryError("bucket %r does not exist and bucket_create is false"
                                  % self.name, code="bucket_not_found", stage="bucket")
        kwargs = {}
        if s.s3_region and s.s3_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s.s3_region}
        if s.bucket_object_lock != "none":
            kwargs["ObjectLockEnabledForBucket"] = True
        self.exists = False
        self.state["created"] = True
        what = "create bucket %s%s" % (self.name, " with Object Lock" if kwargs.get(
            "ObjectLockEnabledForBucket") else "")
        self.changes.append(what)
        if self.dry_run:
            return
        try:
            self.client.create_bucket(Bucket=self.name, **kwargs)
        except Exception as exc:
            raise self.storage._translate(exc, "create_bucket", None)
        self.exists = True
        self.progress.event(what)

    def versioning(self):
        if not self.settings.bucket_versioning:
            return
        current = (self._read("get_bucket_versioning", "bucket_versioning") or {}).get("Status")
        self.state["bucket_versioning"] = "Enabled"
        if current != "Enabled":
            self._write("versioning: %s -> Enabled" % (current or "never enabled"),
                        "put_bucket_versioning", "bucket_versioning",
                        VersioningConfiguration={"Status": "Enabled"})

    def encryption(self):
        s = self.settings
        if s.bucket_encryption == "unmanaged":
            return
        wanted = {"SSEAlgorithm": "AES256"}
        if s.bucket_encryption == "sse-kms":
            wanted = {"SSEAlgorithm": "aws:kms"}
            if s.bucket_kms_key_id:
                wanted["KMSMasterKeyID"] = s.bucket_kms_key_id
        answer = self._read("get_bucket_encryption", "bucket_encryption") or {}
        rules = answer.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        current = rules[0].get("ApplyServerSideEncryptionByDefault") if rules else None
        self.state["bucket_encryption"] = wanted
        if current != wanted:
            self._write("encryption: %s -> %s" % (_describe_sse(current), _describe_sse(wanted)),
                        "put_bucket_encryption", "bucket_encryption",
                        ServerSideEncryptionConfiguration={"Rules": [
                            {"ApplyServerSideEncryptionByDefault": wanted}]})

    def public_access_block(self):
        mode = self.settings.bucket_public_access_block
        if mode == "unmanaged":
            return

        def step():
            answer = self._read("get_public_access_block", "bucket_public_access_block") or {}
            current = answer.get("PublicAccessBlockConfiguration")
            self.state["bucket_public_access_block"] = "on"
            if current != _PAB:
                self._write("public access block: %s -> all blocked"
                            % ("none" if current is None else "partial"),
                            "put_public_access_block", "bucket_public_access_block",
                            PublicAccessBlockConfiguration=dict(_PAB))
        self._optional("bucket_public_access_block", mode, step)

    def tls_only(self):
        mode = self.settings.bucket_tls_only
        if mode == "unmanaged":
            return
        if self.state.get("bucket_tls_only") == "skipped":
            return

        def step():
            answer = self._read("get_bucket_policy", "bucket_tls_only") or {}
            policy = json.loads(answer["Policy"]) if answer.get("Policy") else {
                "Version": "2012-10-17", "Statement": []}
            statements = policy.get("Statement") or []
            if isinstance(statements, dict):
                statements = [statements]
            wanted = _tls_statement(self.name)
            current = [st for st in statements if st.get("Sid") == TLS_SID]
            self.state["bucket_tls_only"] = "on"
            if current == [wanted]:
                return
            policy["Statement"] = [st for st in statements if st.get("Sid") != TLS_SID] + [wanted]
            self._write("bucket policy: %s statement %s" % ("replace" if current else "add",
                                                            TLS_SID),
                        "put_bucket_policy", "bucket_tls_only", Policy=json.dumps(policy))
        self._optional("bucket_tls_only", mode, step)

    def check_tls(self):
        """Before any request: a TLS-only policy over plain HTTP would lock pgdr out."""
        mode = self.settings.bucket_tls_only
        endpoint = self.settings.s3_endpoint or ""
        if mode == "unmanaged" or not endpoint.lower().startswith("http://"):
            return
        text = ("bucket_tls_only: s3_endpoint %s is not https, and a TLS-only policy "
                "would deny pgdr's own requests over it" % endpoint)
        if mode != "when_supported":
            raise ConfigError(text, code="tls_required", stage="config",
                              option="bucket_tls_only")
        self.warnings.append(text + "; no policy written (bucket_tls_only=when_supported)")
        self.state["bucket_tls_only"] = "skipped"

    def object_lock(self):
        s = self.settings
        if s.bucket_object_lock == "none":
            return
        if not s.bucket_object_lock_days:
            raise ConfigError("bucket_object_lock=%s needs bucket_object_lock_days"
                              % s.bucket_object_lock, code="config_missing", stage="config",
                              option="bucket_object_lock_days")
        wanted = {"Mode": s.bucket_object_lock.upper(), "Days": s.bucket_object_lock_days}
        self.state["bucket_object_lock"] = wanted
        if not self.exists:  # created by this dry run, with Object Lock
            self.changes.append("object lock default retention: none -> %(Mode)s %(Days)d days"
                                % wanted)
            return
        try:
            answer = self._call("get_object_lock_configuration", "bucket_object_lock") or {}
        except _Unsupported as exc:
            raise RepositoryError("bucket_object_lock: the server does not support Object "
                                  "Lock (%s)" % exc, code="setting_unsupported",
                                  stage="bucket", setting="bucket_object_lock")
        config = answer.get("ObjectLockConfiguration") or {}
        if config.get("ObjectLockEnabled") != "Enabled":
            raise RepositoryError(
                "bucket_object_lock: bucket %r exists without Object Lock, and pgdr turns "
                "it on only when it creates a bucket (S3-compatible servers allow it only "
                "then): create a new bucket for the repository, or set bucket_object_lock=none"
                % self.name, code="object_lock_unavailable", stage="bucket",
                setting="bucket_object_lock")
        current = (config.get("Rule") or {}).get("DefaultRetention")
        if current:  # some servers answer Years: 0 beside Days
            current = dict((k, v) for k, v in current.items() if v)
        if current != wanted:
            self._write("object lock default retention: %s -> %s %d days"
                        % ("none" if not current else "%s %s days" % (
                            current.get("Mode"), current.get("Days", current.get("Years"))),
                           wanted["Mode"], wanted["Days"]),
                        "put_object_lock_configuration", "bucket_object_lock",
                        ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                                 "Rule": {"DefaultRetention": wanted}})

    def plan_lifecycle(self):
        """Compile pgdr's rules and check the extra ones before anything is written."""
        s = self.settings
        if not s.lifecycle_manage:
            return
        policy = lifecycle.Policy(s.retention_days, s.retention_full, s.full_max_age,
                                  s.lifecycle_margin_days)
        clusters = lifecycle.split_clusters(s.lifecycle_clusters) or (
            [s.cluster] if s.cluster else [])
        plan = lifecycle.compile_rules(
            policy, s.repo_prefix, clusters,
            backup_transition=(s.lifecycle_backup_transition_days, s.lifecycle_backup_storage_class),
            wal_transition=(s.lifecycle_wal_transition_days, s.lifecycle_wal_storage_class),
            abort_multipart_days=s.lifecycle_abort_multipart_days,
            noncurrent_days=s.lifecycle_noncurrent_days,
            expired_delete_markers=s.lifecycle_expired_delete_markers)
        extra = lifecycle.parse_rules(s.lifecycle_rules)
        lifecycle.validate(extra, policy, s.repo_prefix, clusters)
        self._plan = (policy, clusters, plan, extra)

    def lifecycle(self):
        s = self.settings
        if not s.lifecycle_manage:
            return None
        policy, clusters, plan, extra = self._plan
        try:
            answer = self._read("get_bucket_lifecycle_configuration", "lifecycle_manage") or {}
        except _Unsupported as exc:
            raise RepositoryError("lifecycle_manage: the server does not support lifecycle "
                                  "rules (%s)" % exc, code="setting_unsupported",
                                  stage="bucket", setting="lifecycle_manage")
        current = answer.get("Rules") or []
        desired, kept = lifecycle.desired_rules(plan["rules"], extra, current, policy,
                                                s.repo_prefix, clusters,
                                                purge=s.lifecycle_purge)
        difference = lifecycle.diff(current, desired)
        out = {"rules": desired, "current": [lifecycle.normalize(r) for r in current],
               "diff": difference, "kept": kept, "horizon_days": plan["horizon_days"],
               "clusters": clusters, "notes": plan["notes"]}
        if not lifecycle.has_changes(difference):
            return out
        what = "lifecycle rules: %s" % ", ".join(
            "%s %s" % (verb, ", ".join(difference[key]))
            for verb, key in (("add", "added"), ("change", "changed"), ("remove", "removed"))
            if difference[key])
        try:
            if desired:
                self._write(what, "put_bucket_lifecycle_configuration", "lifecycle_manage",
                            LifecycleConfiguration={"Rules": desired})
            else:
                self._write(what, "delete_bucket_lifecycle", "lifecycle_manage")
        except _Unsupported as exc:
            moves = [r["ID"] for r in desired if r.get("Transitions")
                     or r.get("NoncurrentVersionTransitions")]
            if moves:
                raise RepositoryError(
                    "lifecycle transitions: the server does not support rules that change "
                    "storage class (%s) - rule(s) %s; unset lifecycle_backup_transition_days "
                    "and lifecycle_wal_transition_days, or drop Transitions from "
                    "lifecycle_rules" % (str(exc).strip(), ", ".join(moves)),
                    code="setting_unsupported", stage="bucket",
                    setting="lifecycle_transitions", rules=moves)
            raise RepositoryError("lifecycle_manage: the server does not support these "
                                  "lifecycle rules (%s)" % exc, code="setting_unsupported",
                                  stage="bucket", setting="lifecycle_manage")
        return out


def _describe_sse(config):
    if not config:
        return "none"
    if config.get("KMSMasterKeyID"):
        return "%s (%s)" % (config["SSEAlgorithm"], config["KMSMasterKeyID"])
    return config.get("SSEAlgorithm", "?")


def _tls_statement(bucket):
    return {"Sid": TLS_SID, "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": ["arn:aws:s3:::%s" % bucket, "arn:aws:s3:::%s/*" % bucket],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def run(settings, progress, dry_run=False):
    settings.require("s3_bucket")
    if settings.repo_type != "s3":
        raise ConfigError("the bucket settings apply to S3 repositories (repo_type=s3)",
                          code="config_invalid", stage="config", option="repo_type")
    if settings.bucket_object_lock != "none" and not settings.bucket_versioning:
        raise ConfigError("bucket_object_lock needs bucket_versioning (Object Lock works on "
                          "versions)", code="config_invalid", stage="config",
                          option="bucket_versioning")
    bucket = Bucket(settings, progress, dry_run)
    bucket.plan_lifecycle()
    bucket.check_tls()
    bucket.ensure_bucket()
    bucket.versioning()
    bucket.encryption()
    bucket.public_access_block()
    bucket.tls_only()
    bucket.object_lock()
    rules = bucket.lifecycle()
    return {"changed": bool(bucket.changes), "bucket": bucket.name,
            "repository": bucket.storage.describe(), "created": bool(bucket.state.pop("created", False)),
            "changes": bucket.changes, "settings": bucket.state, "lifecycle": rules,
            "warnings": bucket.warnings}
