#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_restore_chain
short_description: Restore a PostgreSQL backup from the repository into a data directory
version_added: 0.1.0
description:
  - Restores a backup, with the WAL that makes it consistent, into O(target), ready for
    C(pg_ctl start), which replays to the backup's consistency point.
  - Every stored object is checked against its SHA-256 before it is used; on any failure
    the target is emptied again, so a half-restored directory is never mistaken for a
    cluster.
  - With a point past the backup (a time, an LSN, an xid, a restore point name, or
    V(latest) with archived WAL), the restored cluster is set up to fetch and replay the
    archived WAL up to it on start.
  - Idempotent - when O(target) already holds the same backup restored to the same point,
    from an earlier run, nothing is written and the task reports RV(ignore:changed=false).
author:
  - pgdr contributors (@pgdr)
extends_documentation_fragment:
  - pgdr.postgresql.repository
  - pgdr.postgresql.repository.cluster
  - pgdr.postgresql.restore
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the catalog and checks O(target) and the tablespace mapping; writes
      nothing. Reports the same RV(ignore:changed) as the real run.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - O(cluster) is required, as a parameter or in O(config_file).
  - Run it as root or as the PostgreSQL user; as root, restored files belong to the owner
    of O(target) (of its parent directory when it does not exist), and a root-owned one is
    refused (V(target_owner_root)).
  - A target or tablespace location that is, contains or lies inside a running cluster's
    data directory or tablespace is refused (V(target_running)), even with O(force).
  - Restoring beside a live cluster on the same host, map every tablespace elsewhere with
    O(tablespace_map); a location that already holds a cluster's tablespace is refused.
seealso:
  - module: pgdr.postgresql.pg_backup
  - module: pgdr.postgresql.pg_backup_info
requirements:
  - boto3 (S3 repositories)
  - zstandard (zstd-compressed backups)
'''

EXAMPLES = r'''
- name: Restore the latest backup into a scratch directory, on port 5433
  become: true
  pgdr.postgresql.pg_restore_chain:
    cluster: main
    s3_bucket: pg-backups
    s3_endpoint: https://s3.eu-west-1.amazonaws.com
    target: /var/lib/postgresql/restore/main
    settings:
      port: "5433"
  register: restored

- name: Restore to just before a bad deployment, and pause there for inspection
  become: true
  pgdr.postgresql.pg_restore_chain:
    config_file: /etc/pgdr/pgdr.conf
    credentials_file: /etc/pgdr/credentials.conf
    point: "2026-11-24T05:59:00Z"
    target_action: pause
    target: /srv/pitr/main

- name: Bring yesterday's drill copy up to date with the newest backup (only what differs)
  become: true
  pgdr.postgresql.pg_restore_chain:
    config_file: /etc/pgdr/pgdr.conf
    credentials_file: /etc/pgdr/credentials.conf
    point: immediate
    target: /srv/drill/main
    delta: true

- name: Restore one backup, replacing an earlier restore, tablespaces moved
  become: true
  pgdr.postgresql.pg_restore_chain:
    config_file: /etc/pgdr/pgdr.conf
    credentials_file: /etc/pgdr/credentials.conf
    point: 20261124T060012Z-full
    target: /srv/drill/main
    force: true
    tablespace_map:
      fastspace: /srv/drill/fastspace
'''

RETURN = r'''
backup:
  description: The backup restored (same keys as RV(pgdr.postgresql.pg_backup#module:backup)).
  returned: success
  type: dict
  sample:
    id: 20261124T060012Z-full
    type: full
    stop_lsn: 0/2000138
    timeline: 1
target:
  description: The directory restored into.
  returned: success
  type: str
  sample: /var/lib/postgresql/restore/main
tablespaces:
  description: Where each tablespace went, by OID.
  returned: when something was (or would be) restored
  type: dict
  sample: {"16390": "/srv/drill/fastspace"}
plan:
  description: How the point is reached.
  returned: success
  type: dict
  contains:
    point:
      description: The point, as given.
      type: str
      sample: "2026-11-24T05:59:00Z"
    kind:
      description: V(latest), V(immediate), V(backup), V(time), V(lsn), V(xid) or V(name).
      type: str
      sample: time
    backup_id:
      description: The backup restored.
      type: str
      sample: 20261124T050000Z-full
    recovery:
      description: Recovery settings written into the restored cluster.
      type: dict
      sample: {"recovery_target_time": "2026-11-24 05:59:00.000000+00"}
    timeline:
      description: Timeline followed to the point.
      type: int
      sample: 1
    wal_segments:
      description: Archived WAL segments to replay after the backup.
      type: int
      sample: 42
    window:
      description: What the repository can reach (earliest and latest points).
      type: dict
fetch_bytes:
  description: Bytes read from the repository.
  returned: when something was (or would be) restored
  type: int
  sample: 3456789
delta:
  description: What a delta restore (O(delta) into a data directory) kept, wrote, fetched,
    read from the target to compare (files an earlier restore's record does not vouch for)
    and removed; null for a restore into an empty directory.
  returned: when something was restored
  type: dict
  sample: {"kept_bytes": 802816000, "written_bytes": 41943040, "fetched_bytes": 9437184,
           "read_bytes": 16777216, "removed": 12}
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: ["backup 20261124T060012Z-full restored into /srv/drill/main"]
error_code:
  description:
    - Stable code of the failure, for example V(point_invalid), V(no_backup),
      V(target_not_empty), V(target_running), V(tablespace_in_use), V(checksum_mismatch).
  returned: failure
  type: str
  sample: target_not_empty
stage:
  description: Stage that failed (config, plan, check, restore...).
  returned: failure
  type: str
  sample: check
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import PgdrModule
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import restore


# The restore options, minus backup_id: point names a backup too.
ARGS = dict(groups=("repo", "restore"), exclude=("backup_id",), required=("target",),
            needs=("cluster",))


def main():
    PgdrModule(**ARGS).run(restore)


if __name__ == "__main__":
    main()
