#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_check
short_description: Prove that a node's backups and WAL archiving reach the repository
version_added: 0.1.0
description:
  - Runs C(pgdr check) on a database node, the checks in order, the first failure ending
    the run with one stable C(error_code) - the settings are complete; the repository
    answers with these credentials (a probe object under the cluster's prefix is written,
    read back, compared and deleted); PostgreSQL answers; C(archive_mode) is on;
    C(archive_command) runs C(pgdr wal-push) whose config file and flags name the same
    repository (type, bucket, endpoint, prefix, path) and cluster; and a round trip - a tiny
    write and C(pg_switch_wal()), then the segment it closed must reach the repository within
    O(check_archive_wait) seconds (skipped on a standby).
  - Error codes - V(config_missing), V(config_invalid); V(endpoint_unreachable),
    V(bucket_not_found), V(access_denied), V(credentials_missing) (the repository);
    V(check_probe_mismatch); V(postgres_unavailable), V(postgres_refused);
    V(check_archive_mode_off), V(check_archive_command_mismatch), V(check_archive_timeout).
  - Never changes anything (C(changed) is always false) but one WAL segment switch; check
    mode runs the same checks.
  - Give it the node's own O(config_file) and O(credentials_file), those that
    archive_command uses, so that the check proves what the node will run.
author:
  - pgdr contributors (@pgdr)
options:
  check_archive_wait:
    description:
      - Seconds pgdr check waits for the segment that its pg_switch_wal() closed to reach
        the repository.
    type: int
    default: 60
  check_archiving:
    description:
      - "Also check WAL archiving: archive_mode, archive_command (pgdr wal-push into this
        repository and cluster) and a WAL segment's round trip (false: the settings, the
        repository and PostgreSQL only)."
    type: bool
    default: true
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
  - Run it on the database node as the PostgreSQL OS user, with the agent's virtualenv.
seealso:
  - module: pgdr.postgresql.pg_backup_info
  - module: pgdr.postgresql.pg_backup
requirements:
  - boto3 (S3 repositories)
  - psycopg2
'''

EXAMPLES = r'''
- name: Prove that the node archives into its repository
  pgdr.postgresql.pg_check:
    config_file: /etc/pgdr/pgdr.conf
    credentials_file: /etc/pgdr/credentials
    check_archive_wait: 120
  become: true
  become_user: postgres
  register: checked

- name: Check the repository and PostgreSQL only (no archiving on this node)
  pgdr.postgresql.pg_check:
    cluster: main
    s3_bucket: pg-backups
    s3_endpoint: http://127.0.0.1:8333
    s3_addressing: path
    check_archiving: false
'''

RETURN = r'''
ok:
  description: True when every check passed (a failed check fails the task).
  returned: success
  type: bool
  sample: true
cluster:
  description: The cluster checked.
  returned: success
  type: str
  sample: main
repository:
  description: Where the repository is (no secrets).
  returned: success
  type: str
  sample: s3://pg-backups at http://127.0.0.1:8333
checks:
  description:
    - The checks done, in order, each with C(name), C(ok), C(seconds) and C(detail) (and
      C(code) when it failed). On failure the same list is in the failure's C(checks).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: repository, ok: true, seconds: 0.08, detail: "wrote, read back and deleted main/check/probe-db1-4242-1a2b3c4d"}
    - {name: archive_round_trip, ok: true, seconds: 0.61, detail: "segment 000000010000000000000007 archived in 0.6 s"}
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: []
error_code:
  description: Stable code of the failure, for example V(bucket_not_found), V(check_archive_timeout).
  returned: failure
  type: str
  sample: check_archive_command_mismatch
stage:
  description: Stage that failed.
  returned: failure
  type: str
  sample: check
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import PgdrModule
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import check


ARGS = dict(groups=("repo", "pg", "check"), needs=("cluster",))


def main():
    PgdrModule(**ARGS).run(check)


if __name__ == "__main__":
    main()
