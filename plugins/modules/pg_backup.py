#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_backup
short_description: Take a physical backup of a PostgreSQL cluster into an S3 or posix repository
version_added: 0.1.0
description:
  - Takes an online, non-exclusive physical backup of a running PostgreSQL cluster (14 or
    newer) and stores it in the repository, with the WAL from its start to its stop so that
    it is restorable on its own.
  - Runs on the database node, as the cluster's owner (usually C(postgres)), since it reads
    the data directory.
  - A backup is complete only once its manifest is written; a failed or interrupted backup
    removes what it stored and is never offered for restore.
author:
  - pgdr contributors (@pgdr)
extends_documentation_fragment:
  - pgdr.postgresql.repository
  - pgdr.postgresql.repository.cluster
  - pgdr.postgresql.postgres
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Connects to PostgreSQL and to the repository and checks them; takes no backup.
      Reports RV(ignore:changed=true), as the real run does.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  type:
    description:
      - "Backup type: full; diff (the pages changed since the newest full); incr (the pages
        changed since the newest backup of any type); auto (a full when there is none or the
        newest is older than full_max_age days, a diff otherwise); snapshot (the data
        directory and tablespaces snapshotted by snapshot_provider, the manifest and WAL
        stored in the repository: docs/snapshots.md)."
      - A diff or incr stores only the pages of relation files whose LSN is at or after the
        reference backup's start LSN (and new, all-zero pages), and other files only when
        their checksum changed. With no full backup of this cluster, a full is taken instead.
      - A snapshot backup's data stays with the provider; with V(btrfs) it is on the
        cluster's own disks, so it is not disaster recovery by itself (O(from_snapshot)
        carries it into the repository).
    type: str
    default: full
    choices:
      - full
      - diff
      - incr
      - auto
      - snapshot
  snapshot_provider:
    description:
      - "What takes the snapshots of type snapshot: btrfs (read-only snapshots of the btrfs
        subvolumes that hold the data directory and each tablespace; not off-host), ebs
        (AWS EBS snapshots of the volumes in snapshot_ebs_volumes; off-host) or command
        (the snapshot_*_command settings: LVM, ZFS, a SAN, a cloud)."
    type: str
    default: btrfs
    choices:
      - btrfs
      - ebs
      - command
  snapshot_ebs_volumes:
    description:
      - "snapshot_provider=ebs: the EBS volume that holds each path, as MOUNT_POINT=vol-ID;
        the data directory and every tablespace must lie on one of them."
      - Set the EBS settings in the configuration file (O(config_file)) too, so that
        verify and expire find them.
    type: dict
  snapshot_ebs_region:
    description:
      - "snapshot_provider=ebs: the volumes' region (unset: s3_region)."
    type: str
  snapshot_ebs_endpoint:
    description:
      - "snapshot_provider=ebs: endpoint URL of the EC2 API (unset: AWS's own for the
        region)."
    type: str
  snapshot_wait:
    description:
      - "Seconds a snapshot backup waits, after backup mode ended, for the provider to
        report every snapshot complete; one still pending is recorded pending, never
        offered, and marked complete by a later backup, verify or expire."
    type: int
    default: 0
  snapshot_create_command:
    description:
      - "snapshot_provider=command: a shell command that snapshots one volume
        (PGDR_VOLUME_PATH, PGDR_VOLUME_ROLE, PGDR_VOLUME_OID, PGDR_SNAPSHOT_NAME,
        PGDR_CLUSTER, PGDR_BACKUP_ID) and prints the snapshot's id last (docs/snapshots.md)."
      - Set the four commands in the configuration file (O(config_file)) too, so that
        restore, verify, expire and cleanup find them.
    type: str
  snapshot_check_command:
    description:
      - "snapshot_provider=command: a shell command that exits 0 when snapshot
        PGDR_SNAPSHOT_ID is there and complete, 1 when it is not."
    type: str
  snapshot_clone_command:
    description:
      - "snapshot_provider=command: a shell command that creates directory
        PGDR_CLONE_PATH holding snapshot PGDR_SNAPSHOT_ID, writable."
    type: str
  snapshot_delete_command:
    description:
      - "snapshot_provider=command: a shell command that deletes snapshot
        PGDR_SNAPSHOT_ID."
    type: str
  snapshot_off_host:
    description:
      - "snapshot_provider=command: the snapshots survive the loss of this host (a SAN, a
        cloud); info, restore and expire then use them from any host."
    type: bool
    default: false
  from_snapshot:
    description:
      - "Make a full backup in the repository from this snapshot backup's snapshots (read
        where the provider keeps them; neither the live cluster's disks nor PostgreSQL are
        read): its consistency point and WAL, once per snapshot backup. latest: the newest
        snapshot backup whose snapshots this host holds (none: a skip)."
      - Run it on the host that holds the snapshots; a second run for the same snapshot
        backup changes nothing and returns the full backup made the first time.
    type: str
  snapshot_dir:
    description:
      - "btrfs: the directory that receives the snapshots, on the same btrfs filesystem as
        the data directory and outside every volume."
    type: path
  full_max_age:
    description:
      - "With type auto: days after which the next backup is a full again."
    type: int
    default: 7
  changed_blocks:
    description:
      - "How a diff or incr finds the pages changed since its reference: auto (the server's
        WAL summaries on PostgreSQL 17+ with summarize_wal on, else reading every page's
        LSN) or scan (always read every page)."
      - With WAL summaries a diff reads only the changed pages; the manifest records
        C(block_source) (V(wal_summary) or V(page_scan)) and C(delta_read_size).
    type: str
    default: auto
    choices:
      - auto
      - scan
  backup_from:
    description:
      - "Which node backs up, decided on the node at run time: primary (only the primary),
        standby (only a standby), prefer-standby (a healthy standby when there is one, else
        the primary). The same schedule can then run on every node and keeps working after a
        failover."
    type: str
    default: primary
    choices:
      - primary
      - standby
      - prefer-standby
  standby_max_lag:
    description:
      - Seconds of replay lag above which a standby is not healthy enough to back up from.
    type: int
    default: 300
  patroni_url:
    description:
      - "Patroni's REST API on this node, asked which member leads and which replicas are
        healthy (backup_from then follows Patroni's view, the same on every member, so
        exactly one member backs up): auto (ask http://127.0.0.1:8008; nothing listening
        there means the node does not run Patroni and PostgreSQL's own views decide), off,
        or a URL that must answer."
    type: str
    default: auto
  standby_max_lag_bytes:
    description:
      - "With Patroni: bytes of replay lag (as Patroni reports it) above which a replica is
        not healthy enough to back up from."
    type: int
    default: 67108864
  backup_lease:
    description:
      - Seconds a node's backup lease lasts in the repository without renewal (renewed while
        the backup runs; a crashed holder blocks others at most this long).
    type: int
    default: 600
  min_interval:
    description:
      - "Minutes: skip the backup when one of this type (or a full) started less than this ago,
        so that the same schedule on several nodes gives one backup per run. 0 turns it off."
    type: int
    default: 0
  compression:
    description:
      - Compression of stored data.
    type: str
    default: zstd
    choices:
      - zstd
      - gzip
      - none
  compression_level:
    description:
      - Compression level (zstd 1-19, gzip 1-9). Unset means the codec's fast default.
    type: int
  workers:
    description:
      - Parallel workers that read, compress and transfer.
    type: int
    default: 4
  chunk_size:
    description:
      - Large files are stored in pieces of this many MiB, so that one large table is read,
        compressed and transferred in parallel.
    type: int
    default: 32
  bundle_limit:
    description:
      - Files smaller than this many KiB are bundled together, so that thousands of small
        files cost few requests.
    type: int
    default: 1024
  fast_checkpoint:
    description:
      - Ask PostgreSQL for an immediate checkpoint at backup start instead of waiting for a
        spread one.
    type: bool
    default: true
notes:
  - O(cluster) is required, as a parameter or in O(config_file).
  - Needs the Python packages C(psycopg2), C(boto3) (S3 repositories) and C(zstandard)
    (zstd compression) on the managed node.
  - Every run takes a new backup, so the task always reports RV(ignore:changed=true).
seealso:
  - module: pgdr.postgresql.pg_backup_info
  - module: pgdr.postgresql.pg_restore_chain
requirements:
  - psycopg2
  - boto3 (S3 repositories)
  - zstandard (zstd compression)
'''

EXAMPLES = r'''
- name: Full backup of the local cluster to S3
  become: true
  become_user: postgres
  pgdr.postgresql.pg_backup:
    cluster: main
    s3_bucket: pg-backups
    s3_endpoint: https://s3.eu-west-1.amazonaws.com
    s3_region: eu-west-1
    s3_access_key: "{{ vault_pgdr_access_key }}"
    s3_secret_key: "{{ vault_pgdr_secret_key }}"
  register: backup

- name: Show what was stored
  ansible.builtin.debug:
    msg: "{{ backup.backup.id }}: {{ backup.backup.stored_size }} bytes, LSN {{ backup.backup.start_lsn }}-{{ backup.backup.stop_lsn }}"

- name: Backup to an NFS mount with the settings the agent role wrote
  become: true
  become_user: postgres
  pgdr.postgresql.pg_backup:
    config_file: /etc/pgdr/pgdr.conf
    credentials_file: /etc/pgdr/credentials.conf
    workers: 8
'''

RETURN = r'''
skipped:
  description:
    - True when this node did not back up because it is not its turn (O(backup_from), a
      lease held by another node, or O(min_interval)); C(changed) is then false.
  returned: when the node did not back up
  type: bool
  sample: true
reason:
  description: Why this node did not back up, naming the designated node or lease holder.
  returned: when the node did not back up
  type: str
  sample: "standby pg2 (10.0.0.2) is streaming with a replay lag of 0 s: it is the designated node"
backup:
  description:
    - The backup taken. In check mode, only RV(backup.type) and RV(backup.cluster).
  returned: when a backup was taken
  type: dict
  contains:
    id:
      description: Backup id, sortable by time.
      type: str
      sample: 20261124T060012Z-full
    cluster:
      description: Cluster name in the repository.
      type: str
      sample: main
    type:
      description: Kind of backup.
      type: str
      sample: full
    reference:
      description: Backup this one is relative to (none for a full backup).
      type: str
      sample: null
    pg_version:
      description: C(server_version_num) of the cluster.
      type: int
      sample: 160004
    timeline:
      description: Timeline the backup started on.
      type: int
      sample: 1
    start_lsn:
      description: WAL position where the backup started.
      type: str
      sample: 0/2000028
    stop_lsn:
      description: WAL position where the backup stopped (its consistency point).
      type: str
      sample: 0/2000138
    start_wal:
      description: First WAL segment stored with the backup.
      type: str
      sample: "000000010000000000000002"
    stop_wal:
      description: Last WAL segment stored with the backup.
      type: str
      sample: "000000010000000000000002"
    start_time:
      description: When the backup started (UTC, ISO 8601).
      type: str
      sample: "2026-11-24T06:00:12Z"
    stop_time:
      description: When the backup was complete (UTC, ISO 8601).
      type: str
      sample: "2026-11-24T06:00:15Z"
    duration:
      description: Seconds the backup took.
      type: float
      sample: 3.2
    compression:
      description: Compression of the stored data.
      type: str
      sample: zstd
    file_count:
      description: Files in the backup.
      type: int
      sample: 980
    size:
      description: Bytes read from the data directory.
      type: int
      sample: 23456789
    wal_size:
      description: Bytes of WAL stored with the backup.
      type: int
      sample: 16777216
    stored_size:
      description: Bytes stored in the repository (compressed).
      type: int
      sample: 3456789
    from_standby:
      description: Whether the backup was taken from a standby.
      type: bool
      sample: false
    system_identifier:
      description: The cluster's system identifier.
      type: str
      sample: "7311234567890123456"
pg_data:
  description: Data directory that would be backed up.
  returned: check mode
  type: str
  sample: /var/lib/postgresql/16/main
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: ["backup 20261124T060012Z-full of /var/lib/postgresql/16/main starting"]
error_code:
  description:
    - Stable code of the failure (for example V(postgres_unavailable), V(bucket_not_found),
      V(config_missing)); tasks can match on it.
  returned: failure
  type: str
  sample: postgres_unavailable
stage:
  description: Stage that failed (config, connect, backup...).
  returned: failure
  type: str
  sample: connect
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import PgdrModule
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import backup


ARGS = dict(groups=("repo", "pg", "backup"), needs=("cluster",))


def main():
    PgdrModule(**ARGS).run(backup)


if __name__ == "__main__":
    main()
