#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: s3_repository
short_description: Turn an S3 bucket into a hardened pgdr repository with lifecycle rules computed from retention
version_added: 0.1.0
description:
  - Creates the bucket when it is absent (with Object Lock when O(bucket_object_lock) asks
    for it), turns versioning on, sets default encryption (SSE-S3 or SSE-KMS), blocks
    public access, adds a bucket policy statement that denies requests not made over TLS,
    sets the Object Lock default retention and writes the lifecycle rules.
  - The lifecycle rules are computed from the retention policy. Backups
    (C(<repo_prefix>/<cluster>/backup/)) and archived WAL segments
    (C(<repo_prefix>/<cluster>/wal/0)) expire after O(retention_days) + O(full_max_age) +
    O(lifecycle_margin_days) days, never sooner, so every chain the policy retains and the
    whole point-in-time window stay. With O(retention_full) alone no expiry is written
    (the age of the newest full backups has no bound); C(pgdr expire) does that work.
    Timeline history files are never in scope. See docs/lifecycle.md.
  - Rules in O(lifecycle_rules) and rules already on the bucket are checked against the
    same policy; one that would expire, or move to GLACIER or DEEP_ARCHIVE, backups or WAL
    before that horizon is refused with the rule's ID and what it would break
    (C(lifecycle_rule_unsafe)), before anything is written.
  - Each setting is read and compared first and written only when it differs, so a second
    run reports C(changed=false). Check mode reads and compares only, and returns the rules
    that would be set and their difference from the bucket's current rules.
  - A setting the server does not implement fails with C(setting_unsupported) naming it;
    O(bucket_public_access_block) and O(bucket_tls_only) set to V(when_supported) give a
    warning instead.
author:
  - pgdr contributors (@pgdr)
options:
  full_max_age:
    description:
      - 'With type auto: days after which the next backup is a full again.'
      - Here it bounds how much older than the retention window the oldest full a retained
        chain needs can be.
    type: int
    default: 7
  retention_full:
    description:
      - Full backups to keep (each with the diff and incr backups that depend on it).
    type: int
  retention_days:
    description:
      - Keep every backup needed to restore any point of the last this many days.
    type: int
  bucket_create:
    description:
      - Create the bucket when it does not exist.
    type: bool
    default: true
  bucket_versioning:
    description:
      - Turn versioning on, so that a deleted or overwritten object stays as a noncurrent
        version (false leaves it as it is; pgdr never suspends it).
    type: bool
    default: true
  bucket_encryption:
    description:
      - 'Default encryption of new objects: sse-s3 (AES256, keys managed by the service),
        sse-kms (with bucket_kms_key_id) or unmanaged (left as it is).'
    type: str
    default: sse-s3
    choices:
      - sse-s3
      - sse-kms
      - unmanaged
  bucket_kms_key_id:
    description:
      - 'KMS key id or ARN of sse-kms encryption (unset: the service''s default key).'
    type: str
  bucket_public_access_block:
    description:
      - 'Block every form of public access: required (fail with setting_unsupported where the
        server lacks it), when_supported (warn and go on there) or unmanaged (left as it is).'
    type: str
    default: when_supported
    choices:
      - required
      - when_supported
      - unmanaged
  bucket_tls_only:
    description:
      - 'A bucket policy statement (Sid pgdr-tls-only) that denies every request not made over
        TLS: required, when_supported or unmanaged, as for bucket_public_access_block. Needs
        an https s3_endpoint.'
    type: str
    default: when_supported
    choices:
      - required
      - when_supported
      - unmanaged
  bucket_object_lock:
    description:
      - 'Object Lock default retention of new objects: none (not managed), governance or
        compliance. It can be turned on only when this creates the bucket.'
      - S3-compatible servers (SeaweedFS among them) refuse to turn Object Lock on for an
        existing bucket; on an existing bucket without it, pgdr fails with
        C(object_lock_unavailable) rather than trying.
    type: str
    default: none
    choices:
      - none
      - governance
      - compliance
  bucket_object_lock_days:
    description:
      - Days of the Object Lock default retention.
    type: int
  lifecycle_manage:
    description:
      - 'Write the bucket''s lifecycle rules (false: leave them as they are).'
    type: bool
    default: true
  lifecycle_clusters:
    description:
      - 'Clusters whose backups and WAL the expiry and transition rules cover (comma-separated
        in the CLI and config file). Unset: cluster when it is set, else rules scoped by
        repo_prefix only, without expiry.'
      - A list in this module.
    type: list
    elements: str
  lifecycle_margin_days:
    description:
      - Days added to retention_days + full_max_age before backups and WAL expire, for late or
        failed backups.
    type: int
    default: 7
  lifecycle_backup_transition_days:
    description:
      - 'Days after which backup objects move to lifecycle_backup_storage_class (unset:
        never).'
    type: int
  lifecycle_backup_storage_class:
    description:
      - Storage class backups move to; only classes read without a thaw, so manifests stay
        readable.
    type: str
    default: STANDARD_IA
    choices:
      - STANDARD_IA
      - ONEZONE_IA
      - INTELLIGENT_TIERING
      - GLACIER_IR
  lifecycle_wal_transition_days:
    description:
      - 'Days after which archived WAL moves to lifecycle_wal_storage_class (unset: never).'
    type: int
  lifecycle_wal_storage_class:
    description:
      - Storage class archived WAL moves to; only classes read without a thaw.
    type: str
    default: STANDARD_IA
    choices:
      - STANDARD_IA
      - ONEZONE_IA
      - INTELLIGENT_TIERING
      - GLACIER_IR
  lifecycle_abort_multipart_days:
    description:
      - 'Days after which unfinished multipart uploads are aborted and their parts deleted (0:
        no rule).'
    type: int
    default: 7
  lifecycle_noncurrent_days:
    description:
      - 'Days noncurrent versions (deleted or replaced objects of a versioned bucket) are kept
        (0: no rule).'
    type: int
    default: 30
  lifecycle_expired_delete_markers:
    description:
      - Remove delete markers that no longer hide any version.
    type: bool
    default: true
  lifecycle_rules:
    description:
      - More lifecycle rules, in the shape of boto3's put_bucket_lifecycle_configuration (JSON
        text in the CLI and config file). A rule that would expire, or make unreadable,
        backups or WAL the retention policy needs is refused.
      - 'A list of rules in this module, for example C([{ID: tmp-expiry, Status: Enabled,
        Filter: {Prefix: tmp/}, Expiration: {Days: 3}}]).'
      - Rule IDs starting with C(pgdr-) are reserved for the computed rules.
    type: list
    elements: dict
  lifecycle_purge:
    description:
      - Remove the bucket's rules that are neither pgdr's nor in lifecycle_rules (false keeps
        them, if they pass the same check).
    type: bool
    default: false
extends_documentation_fragment:
  - pgdr.postgresql.repository
  - pgdr.postgresql.repository.cluster
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: N/A
  platform:
    platforms: posix
notes:
  - O(cluster) names the cluster whose backups and WAL the expiry rules cover when
    O(lifecycle_clusters) is not set. Without either, the rules are scoped by O(repo_prefix)
    only and hold no expiry, because such a rule would also delete uploads and timeline
    history files.
  - Expiry by lifecycle assumes backups keep running. If no backup succeeds for longer than
    O(lifecycle_margin_days), the newest full ages past the horizon and expires, where
    C(pgdr expire) would have kept it. Watch the age of the newest backup
    (M(pgdr.postgresql.pg_backup_info)).
  - On a versioned bucket an expired object becomes a noncurrent version (behind a delete
    marker) and is removed O(lifecycle_noncurrent_days) later, or once its Object Lock
    retention has passed.
  - A TLS-only policy denies plain-HTTP requests, those of pgdr included; it is written only
    when O(s3_endpoint) is https (or unset, for AWS).
  - SeaweedFS implements bucket policies, versioning, encryption, Object Lock and lifecycle
    expiry, but neither the public access block nor transitions (both C(501 Not Implemented)).
seealso:
  - module: pgdr.postgresql.pg_backup_expire
  - module: pgdr.postgresql.pg_backup_info
requirements:
  - boto3
'''

EXAMPLES = r'''
- name: Harden the bucket; keep two weeks of point-in-time recovery
  pgdr.postgresql.s3_repository:
    s3_bucket: pgdr-prod
    s3_region: eu-west-1
    lifecycle_clusters: [main, reporting]
    retention_days: 14
    full_max_age: 7
    lifecycle_backup_transition_days: 30
    lifecycle_backup_storage_class: STANDARD_IA
  delegate_to: localhost
  run_once: true

- name: Show the rules a change would write, without writing them
  pgdr.postgresql.s3_repository:
    s3_bucket: pgdr-prod
    cluster: main
    retention_days: 30
    lifecycle_rules:
      - ID: scratch-expiry
        Status: Enabled
        Filter:
          Prefix: scratch/
        Expiration:
          Days: 3
  check_mode: true
  register: would

- name: A new bucket whose objects nobody can delete for 35 days
  pgdr.postgresql.s3_repository:
    s3_bucket: pgdr-locked
    s3_endpoint: https://s3.example.net:8443
    s3_addressing: path
    cluster: main
    retention_days: 14
    bucket_object_lock: compliance
    bucket_object_lock_days: 35
    bucket_public_access_block: when_supported
'''

RETURN = r'''
bucket:
  description: The bucket.
  returned: success
  type: str
  sample: pgdr-prod
created:
  description: Whether the bucket was created (or, in check mode, would be).
  returned: success
  type: bool
  sample: false
changes:
  description: What was changed (or, in check mode, would be), one line per setting.
  returned: success
  type: list
  elements: str
  sample: ["versioning: never enabled -> Enabled", "lifecycle rules: add pgdr-main-backup"]
settings:
  description: The state of each managed setting after the run (V(unsupported) or V(skipped) when it could not be applied).
  returned: success
  type: dict
  sample: {"bucket_versioning": "Enabled", "bucket_encryption": {"SSEAlgorithm": "AES256"},
           "bucket_public_access_block": "unsupported", "bucket_tls_only": "on"}
lifecycle:
  description: The lifecycle rules; null when O(lifecycle_manage) is false.
  returned: success
  type: dict
  contains:
    rules:
      description: The whole configuration written (or to write), in the shape of
        put_bucket_lifecycle_configuration's C(Rules).
      type: list
      elements: dict
    current:
      description: The bucket's rules before the run, normalized.
      type: list
      elements: dict
    diff:
      description: Rule IDs C(added), C(removed), C(changed) and C(unchanged) from current to rules.
      type: dict
    kept:
      description: IDs of rules already on the bucket that are neither pgdr's nor in O(lifecycle_rules), kept.
      type: list
      elements: str
    horizon_days:
      description: Days after which backups and WAL expire; null when the policy gives no bound.
      type: int
    clusters:
      description: Clusters the expiry and transition rules cover.
      type: list
      elements: str
    notes:
      description: Why the rules are what they are.
      type: list
      elements: str
  sample:
    horizon_days: 28
    diff: {"added": ["pgdr-main-backup", "pgdr-main-wal", "pgdr-housekeeping"], "removed": [], "changed": [], "unchanged": []}
repository:
  description: Where the repository is.
  returned: success
  type: str
  sample: s3://pgdr-prod
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: ["versioning: never enabled -> Enabled"]
error_code:
  description: Stable code of the failure, for example V(setting_unsupported), V(lifecycle_rule_unsafe),
    V(object_lock_unavailable), V(tls_required).
  returned: failure
  type: str
  sample: setting_unsupported
setting:
  description: The setting the server does not support (with V(setting_unsupported)).
  returned: failure
  type: str
  sample: lifecycle_transitions
problems:
  description: With V(lifecycle_rule_unsafe), one text per refused rule, naming it.
  returned: failure
  type: list
  elements: str
stage:
  description: Stage that failed.
  returned: failure
  type: str
  sample: config
'''

import json

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import PgdrModule
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import bucket


ARGS = dict(groups=("repo", "expire", "bucket"), needs=("s3_bucket",),
            exclude=("lifecycle_rules", "lifecycle_clusters"),
            extras={"lifecycle_rules": {"type": "list", "elements": "dict"},
                    "lifecycle_clusters": {"type": "list", "elements": "str"},
                    "full_max_age": {"type": "int", "default": 7}})


def overrides(params):
    """Module-only list parameters in the engine's text form, and full_max_age (an
    option of the backup group)."""
    values = {"full_max_age": params["full_max_age"]}
    if params.get("lifecycle_rules") is not None:
        values["lifecycle_rules"] = json.dumps(params["lifecycle_rules"])
    if params.get("lifecycle_clusters"):
        values["lifecycle_clusters"] = ",".join(params["lifecycle_clusters"])
    return values


class RepositoryModule(PgdrModule):
    """Warnings of the engine's result become Ansible warnings (module.warn)."""

    def exit(self, result):
        result = dict(result)
        for text in result.pop("warnings", None) or []:
            self.module.warn(text)
        PgdrModule.exit(self, result)


def main():
    RepositoryModule(**ARGS).run(bucket, overrides)


if __name__ == "__main__":
    main()
