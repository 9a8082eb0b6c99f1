#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_backup_expire
short_description: Delete backups and WAL outside the retention policy, keeping chains whole
version_added: 0.1.0
description:
  - Keeps the newest O(retention_full) full backups and/or every backup needed to restore any
    point of the last O(retention_days) days (so also the newest full older than that
    window), each with its whole chain - a diff keeps its full, an incr every ancestor.
  - Deletes the other backups (their manifest first, so a half-deleted backup is never
    offered for restore; a diff or incr before the backups it needs), the objects of
    incomplete backups (no manifest) that no backup is still writing, and archived WAL older
    than the start of the oldest kept backup. Timeline history files are kept.
  - In check mode, lists exactly what would be deleted and deletes nothing; C(changed)
    predicts the real run.
author:
  - pgdr contributors (@pgdr)
options:
  retention_full:
    description:
      - Full backups to keep (each with the diff and incr backups that depend on it).
    type: int
  retention_days:
    description:
      - Keep every backup needed to restore any point of the last this many days.
    type: int
  incomplete_grace_seconds:
    description:
      - Seconds after its last object was written before the objects of an incomplete
        backup (killed, no manifest) are removed by expire and cleanup; a backup that a live
        lease names is never removed, and one older than a complete backup needs no wait.
    type: int
    default: 3600
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
  - At least one of O(retention_full) and O(retention_days) is required (as a parameter or
    in O(config_file)).
seealso:
  - module: pgdr.postgresql.pg_backup
  - module: pgdr.postgresql.pg_backup_info
requirements:
  - boto3 (S3 repositories)
'''

EXAMPLES = r'''
- name: Keep two weeks of point-in-time recovery, and at least two full backups
  pgdr.postgresql.pg_backup_expire:
    cluster: main
    config_file: /etc/pgdr/pgdr.conf
    retention_full: 2
    retention_days: 14

- name: Show what a one-full retention would delete
  pgdr.postgresql.pg_backup_expire:
    cluster: main
    config_file: /etc/pgdr/pgdr.conf
    retention_full: 1
  check_mode: true
  register: would
'''

RETURN = r'''
expired:
  description: Ids of the complete backups deleted (or, in check mode, to delete).
  returned: success
  type: list
  elements: str
  sample: ["20261117T010000Z-full", "20261118T010000Z-diff"]
incomplete_removed:
  description: Ids of incomplete backups (no manifest) whose objects were deleted.
  returned: success
  type: list
  elements: str
  sample: []
incomplete_kept:
  description: Incomplete backups left in place, each with why (a live lease names it, the
    lease cannot be read, or it was written less than O(incomplete_grace_seconds) ago).
  returned: success
  type: list
  elements: dict
  sample: []
kept:
  description: Ids of the backups kept.
  returned: success
  type: list
  elements: str
  sample: ["20261124T010000Z-full", "20261125T010000Z-diff"]
wal_removed:
  description: Number of archived WAL files deleted (or to delete).
  returned: success
  type: int
  sample: 96
wal_keys:
  description: In check mode, the keys of the WAL files that would be deleted (at most 1000).
  returned: check mode
  type: list
  elements: str
  sample: ["main/wal/0000000100000000/000000010000000000000004.zst"]
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: ["removed backup 20261117T010000Z-full (412 objects)"]
error_code:
  description: Stable code of the failure, for example V(config_missing), V(bucket_not_found).
  returned: failure
  type: str
  sample: config_missing
stage:
  description: Stage that failed.
  returned: failure
  type: str
  sample: config
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import PgdrModule
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import expire


ARGS = dict(groups=("repo", "expire", "cleanup"), needs=("cluster",))


def main():
    PgdrModule(**ARGS).run(expire)


if __name__ == "__main__":
    main()
