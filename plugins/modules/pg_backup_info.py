#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_backup_info
short_description: List the backups, recoverable window and archive lag of a cluster
version_added: 0.1.0
description:
  - Reads the repository's catalog of one cluster - its complete backups, oldest first,
    the latest one, and the ids of incomplete backups (no manifest; never restored).
  - Reports the recoverable window (earliest and latest restorable points, and a gap in
    the WAL archive if there is one) and, where the PostgreSQL server answers, the archive
    lag now (the current RPO - WAL not yet archived).
  - With O(verify=true), downloads the backup's whole chain and checks every object
    against the SHA-256 of its stored and original bytes; a damaged or missing object fails
    the task with C(error_code=verify_failed) and lists them. Nothing is written.
  - Changes nothing; runs anywhere that reaches the repository (the controller, a
    database node). Without a reachable server, C(available) is false.
author:
  - pgdr contributors (@pgdr)
options:
  verify:
    description:
      - Also download and check every object of the backup's chain (the latest, or backup_id).
    type: bool
    default: false
  backup_id:
    description:
      - "Backup to restore or verify: an id from info, or latest."
    type: str
    default: latest
  rto_objective:
    description:
      - Declared recovery time objective in seconds.
    type: int
  rpo_objective:
    description:
      - Declared recovery point objective in seconds.
    type: int
  fail_on_objective:
    description:
      - Fail (exit 9) when a declared objective is missed, so that a scheduler or AWX alerts.
    type: bool
    default: false
extends_documentation_fragment:
  - pgdr.postgresql.repository
  - pgdr.postgresql.repository.cluster
  - pgdr.postgresql.postgres
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: N/A
  platform:
    platforms: posix
notes:
  - O(cluster) is required, as a parameter or in O(config_file).
seealso:
  - module: pgdr.postgresql.pg_backup
  - module: pgdr.postgresql.pg_restore_chain
requirements:
  - boto3 (S3 repositories)
'''

EXAMPLES = r'''
- name: List the backups of cluster main
  pgdr.postgresql.pg_backup_info:
    cluster: main
    s3_bucket: pg-backups
    s3_endpoint: http://127.0.0.1:8333
    s3_addressing: path
  register: info

- name: Verify every object of the latest backup's chain
  pgdr.postgresql.pg_backup_info:
    cluster: main
    config_file: /etc/pgdr/pgdr.conf
    verify: true
  register: checked

- name: Fail when the newest backup is older than a day
  ansible.builtin.assert:
    that:
      - info.latest is not none
      - (now(utc=true) - (info.latest.stop_time | to_datetime('%Y-%m-%dT%H:%M:%SZ'))).total_seconds() < 86400
    fail_msg: "no backup of main in the last 24 hours"
'''

RETURN = r'''
cluster:
  description: The cluster listed.
  returned: success
  type: str
  sample: main
repository:
  description: Where the repository is (no secrets).
  returned: success
  type: str
  sample: s3://pg-backups at http://127.0.0.1:8333
backups:
  description:
    - Complete backups, oldest first, each with the keys of
      RV(pgdr.postgresql.pg_backup#module:backup).
  returned: success
  type: list
  elements: dict
  sample:
    - id: 20261124T060012Z-full
      type: full
      start_lsn: 0/2000028
      stop_lsn: 0/2000138
      stop_time: "2026-11-24T06:00:15Z"
      stored_size: 3456789
latest:
  description: The newest complete backup (the last of RV(backups)), or null when there is none.
  returned: success
  type: dict
  sample:
    id: 20261124T060012Z-full
    type: full
incomplete:
  description: Ids of backups without a manifest (interrupted; never restored).
  returned: success
  type: list
  elements: str
  sample: ["20261124T050000Z-full"]
damaged:
  description:
    - Backups whose manifest fails its checks (or whose chain goes through one), with the
      error code (C(manifest_damaged), C(manifest_format)), the damaged object's key and
      why. They are never restored, and never silently dropped from this list.
  returned: success
  type: list
  elements: dict
  sample:
    - id: 20261124T070000Z-full
      code: manifest_damaged
      key: main/backup/20261124T070000Z-full/manifest.json
      msg: "manifest of backup 20261124T070000Z-full is damaged: ..."
verified:
  description:
    - With O(verify=true), the verified backup's id, chain, object count and bytes (null
      otherwise; a damaged or missing object fails the task).
  returned: success
  type: dict
  sample:
    backup_id: 20261124T063801Z-incr
    chain: [20261124T061458Z-full, 20261124T063752Z-diff, 20261124T063801Z-incr]
    objects: 82
    stored_bytes: 84305112
objectives:
  description:
    - C(rpo) and C(rto), each with the declared C(objective), the C(value) now (RPO - the
      archive lag, or the newest backup's age without archiving; RTO - predicted from the
      newest backup's size at the last drill's throughput), its C(basis), and C(met)
      (null without an objective). With O(fail_on_objective), a missed one fails the task
      with C(error_code=objective_missed).
  returned: success
  type: dict
  sample:
    rpo: {objective: 60, value: 0.0, basis: archive lag, met: true}
    rto: {objective: 900, value: 412.5, basis: "newest backup at the last drill's 176 MiB/s", met: true}
last_drill:
  description: The newest drill report's summary (success, point, RTO, RPO), or null.
  returned: success
  type: dict
  sample:
    finished_at: "2026-11-24T06:57:14Z"
    success: true
    rto_seconds: 6.5
window:
  description:
    - The recoverable window from the newest backup along the archive, or null when there
      is no backup. C(latest_lsn) and C(latest_time) are the start of the last complete
      record and the time of the last commit in the WAL archived contiguously after the
      newest backup; C(gap_before) names WAL archived after a missing segment
      (C(missing_segment)); C(problem) says why the timeline could not be followed.
  returned: success
  type: dict
  sample:
    earliest: "2026-11-24T06:00:15Z"
    backup_end: "2026-11-24T06:00:15Z"
    latest_time: "2026-11-24T06:41:02Z"
    latest_segment: "000000010000000000000031"
    timeline: 1
    gap_before: null
archive:
  description:
    - The server's archiver state (C(available) false, with C(reason),
      when the server cannot be reached). C(lag_seconds) is the age of the oldest
      WAL file not yet archived, C(pending_segments) how many wait.
  returned: success
  type: dict
  sample:
    available: true
    archive_mode: "on"
    pending_segments: 0
    lag_seconds: 0.0
    last_archived_wal: "000000010000000000000031"
    failed_count: 0
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: []
error_code:
  description: Stable code of the failure, for example V(bucket_not_found), V(access_denied).
  returned: failure
  type: str
  sample: bucket_not_found
stage:
  description: Stage that failed.
  returned: failure
  type: str
  sample: connect
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import PgdrModule
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import info


ARGS = dict(groups=("repo", "pg", "info"), needs=("cluster",))


def main():
    PgdrModule(**ARGS).run(info)


if __name__ == "__main__":
    main()
