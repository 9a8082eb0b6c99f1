#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_drill
short_description: Restore a point into a scratch directory, prove it and measure RTO and RPO
version_added: 0.1.0
description:
  - Runs C(pgdr drill) on a database node - the point is restored into the empty O(target),
    started on O(drill_port) (127.0.0.1, archiving off), recovered to the point, checked
    with the staged restore's checks (target reached, connections, databases, database
    connections, amcheck with heapallindexed, the O(check_sql) assertions as
    C(assertion 1), C(assertion 2), ...), measured, stopped and removed.
  - The report (JSON) is stored in the repository under C(<cluster>/drill/<UTC time>.json),
    never overwritten, and written to O(report_file) and the Prometheus O(textfile).
  - A failed check fails the task with RV(error_code=drill_failed) and the report in
    RV(report); a missed objective with O(fail_on_objective) fails with
    RV(error_code=objective_missed).
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
    details: Checks O(target) and the repository and chooses the point (a V(random) one
      too); restores nothing. Reports RV(ignore:changed=true), as the real run does.
  diff_mode:
    support: N/A
  platform:
    platforms: posix
options:
  target:
    description:
      - Directory to restore into. It must be absent or empty unless force is set.
      - The drill refuses a non-empty one (force does not apply) and removes it afterwards.
    type: path
    required: true
  point:
    description:
      - 'Point to restore: latest, immediate, a backup id, an ISO 8601 time (no zone means
        UTC), an LSN, xid:N or name:RESTORE_POINT (docs/restore-points.md).'
      - V(random) draws a point the repository really reaches.
    type: str
    default: latest
  workers:
    description:
      - Parallel workers that read, compress and transfer.
    type: int
    default: 4
  pg_bindir:
    description:
      - "Directory of pg_ctl for the restored cluster's version. Default:
        /usr/lib/postgresql/<major>/bin."
    type: path
  drill_port:
    description:
      - "Private port the drill's scratch cluster listens on (127.0.0.1 only)."
    type: int
  check_sql:
    description:
      - "SQL assertions run on the restored copy, each returning true when the data is right
        (in database pg_database)."
    type: list
    elements: str
  drill_timeout:
    description:
      - "Seconds the drill waits for recovery to reach the point."
    type: int
    default: 3600
  amcheck:
    description:
      - "Check every btree index with amcheck when the extension is available."
    type: bool
    default: true
  report_file:
    description:
      - "Where to write the drill's JSON report too."
    type: path
  textfile:
    description:
      - "Prometheus textfile (node exporter textfile collector) for the drill's metrics."
    type: path
  rto_objective:
    description:
      - "Declared recovery time objective in seconds."
    type: int
  rpo_objective:
    description:
      - "Declared recovery point objective in seconds."
    type: int
  fail_on_objective:
    description:
      - "Fail (exit 9) when a declared objective is missed, so that a scheduler or AWX
        alerts."
    type: bool
    default: false
notes:
  - Run it on the database node as the PostgreSQL OS user (PostgreSQL refuses root), with
    the agent's virtualenv, and C(PGDR_LAUNCHER) in the environment (the restored copy's
    C(restore_command) calls it).
seealso:
  - module: pgdr.postgresql.pg_restore_chain
  - module: pgdr.postgresql.pg_instance
requirements:
  - boto3 (S3 repositories)
  - psycopg2
'''

EXAMPLES = r'''
- name: Drill a random point of the recoverable window
  pgdr.postgresql.pg_drill:
    config_file: /etc/pgdr/pgdr.conf
    credentials_file: /etc/pgdr/credentials
    target: /var/spool/pgdr/drill/data
    drill_port: 6432
    point: random
    check_sql:
      - SELECT count(*) > 0 FROM orders
    rto_objective: 900
  environment:
    PGDR_LAUNCHER: /usr/local/bin/pgdr
  become: true
  become_user: postgres
  register: drill
'''

RETURN = r'''
success:
  description: True when every check passed.
  returned: success
  type: bool
  sample: true
point:
  description: The point drilled (a V(random) one as drawn).
  returned: always
  type: str
  sample: lsn:0/5000060
backup_id:
  description: The backup restored.
  returned: success
  type: str
  sample: 20261202T100000F
rto_seconds:
  description: Wall time from the plan to a verified, open copy.
  returned: success
  type: float
  sample: 12.4
rpo_seconds:
  description: Gap between a time asked for and the last commit recovered before it.
  returned: success
  type: float
  sample: 0.0
archive_lag_seconds:
  description: The data a disaster now would lose (the age of the oldest WAL not archived).
  returned: success
  type: float
  sample: 1.2
objectives:
  description: Each declared objective with C(objective), C(measured) and C(met).
  returned: success
  type: dict
  sample: {rto: {objective: 900, measured: 12.4, met: true}}
checks:
  description: The checks, each with C(name), C(ok) and C(detail).
  returned: success
  type: list
  elements: dict
  sample:
    - {name: target reached, ok: true, detail: "recovery paused at recovery_target_lsn=0/5000060"}
report_key:
  description: Where the report is stored in the repository.
  returned: success
  type: str
  sample: main/drill/20261202T100500Z.json
report:
  description: The whole report of a failed drill (the same keys as a successful one).
  returned: failure
  type: dict
  sample: {success: false, checks: [{name: amcheck, ok: false, detail: "..."}]}
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: []
error_code:
  description: Stable code of the failure, for example V(drill_failed), V(objective_missed).
  returned: failure
  type: str
  sample: drill_failed
stage:
  description: Stage that failed.
  returned: failure
  type: str
  sample: drill
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import PgdrModule
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import drill

ARGS = dict(groups=("repo", "drill", "pg"), include=("target", "point", "workers"),
            required=("target",), needs=("cluster", "drill_port"))


def main():
    PgdrModule(**ARGS).run(drill)


if __name__ == "__main__":
    main()
