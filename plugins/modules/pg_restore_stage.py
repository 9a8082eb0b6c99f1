#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_restore_stage
short_description: Run one stage of a staged restore on the node, with its state file
version_added: 0.1.0
description:
  - The engine's staged restore (C(commands/stage.py)). Each stage reads the restore's
    state file (O(state_file)), does its work and records the outcome there; a stage
    recorded anew drops the records that depended on the old one (a copy started again
    was not verified as it runs now).
  - V(read) - the state as it is (RV(restore_state)); changes nothing.
  - V(plan) - the restore of O(point) into O(target) checked without writing (the engine's
    dry run, as O(os_user)) - the point, the backup, the WAL to reach it, the staging
    directory and every tablespace location, moved into O(tablespace_dir) by OID - then
    recorded with an estimated duration. The same point of the same backup keeps its
    record and the later ones; another point or backup drops the copy's records. A
    tablespace of the live cluster that the backup lacks fails (V(tablespace_unknown)).
  - V(stage) - restore the plan's point (its backup, action and tablespace locations)
    into O(target), the staging directory, as O(os_user), with pg_restore_chain's engine
    (O(delta) rewrites only what differs). A copy written again loses its recover and
    verify records, and so does a failed restore; the failure is then reported as the
    restore's. A copy of another backup than the plan's (one that completed after the plan
    chose the newest) is recorded as what it is and fails with V(restore_plan_stale).
  - V(recover) - start the staged copy in O(target) with pg_ctl unless it runs,
    and wait until recovery paused at the point or ended; fails (V(recovery_failed), with
    the server log's tail) when the server stopped, or (V(recovery_timeout)) after
    O(timeout) seconds; a copy restored with target_action C(shutdown) is refused first
    (V(restore_action_shutdown)). What answers on the port is recorded only when it runs from
    O(target) (else V(restore_wrong_server) - the live cluster on that port is never
    recorded as the copy), with its postmaster pid.
  - V(verify) - the checks of a restored copy, the drill's - C(target reached),
    C(connections), C(databases), C(database connections), C(amcheck) (C(bt_index_check)
    with heapallindexed on every btree index) and each assertion of O(assertions) - then
    records them; fails with V(restore_verify_failed) when one failed, after recording it,
    so that cutover refuses the copy. Needs a V(recover) record; before any check, the
    server on the port must run from O(target) (V(restore_wrong_server)) with the
    postmaster pid recover recorded (V(restore_copy_restarted)). The record carries that
    pid, which cutover compares with the running one.
  - V(cutover), V(rollback) and V(standby) never act on a Patroni member's data directory
    (one holding C(patroni.dynamic.json)) while Patroni runs on the node - Patroni would
    start the server again, fail over or rebuild the member into the directory being moved -
    and fail first with V(restore_patroni_running). With Patroni stopped on every member and
    the cluster removed from the DCS they run, and Patroni takes over the promoted cluster
    when it starts (docs/patroni.md).
  - Runs as root (the state file is root's, 0600, because cutover acts on it, and a state
    file that is a link or another user's is refused); pg_ctl, the restore and the
    connections to the copy run as O(os_user).
  - "V(cutover) - the verified copy replaces the live cluster. Every check comes first and a
    failed one stops nothing - a V(verify) record that passed for the plan's backup (unless
    O(require_verify) is false, else V(restore_not_verified)), the server on the copy's
    port running from O(target) with the postmaster pid verify recorded
    (V(restore_copy_restarted)), and O(live_data), its parent and O(target) on one
    filesystem with neither a mount point (V(restore_cutover_blocked)). Then the copy and
    the live cluster stop (O(service_name) with systemctl, else pg_ctl; a server still
    running stops the cutover, V(restore_stop_failed)), the live directory is kept as
    O(live_data)C(.pre-restore-<UTC time>), the copy is renamed into place with the live
    configuration files, starts on O(pg_port), recovers to the point and promotes; the
    recovery settings are removed and, when archiving is on and O(archive_timeout) is
    positive, a switched segment must reach the repository. The state records
    C(phase=moving) before the first stop and C(phase=done) at the end; a cutover that
    stopped half-way is refused (V(restore_cutover_unfinished)) and the same cutover again
    changes nothing."
  - V(rollback) - back to the data directory the cutover kept (or O(rollback_from)); the
    cut-over cluster stops (as for V(cutover)) and is kept as
    O(live_data)C(.rolled-back-<UTC time>), the kept directory is renamed back and starts
    on O(pg_port). The directory the cutover kept starts through a short archive recovery
    (the staged copy's restore_command, no target, its own timeline) that promotes it onto
    a timeline above the restored one, whose history file the repository holds; it starts
    as it is, with a C(warning) in the record, when it holds WAL not yet archived, when
    that start fails, or for O(rollback_from). Allowed after a cutover that stopped
    half-way (a live directory already moved aside is not looked for); V(restore_rollback_missing) when there is no kept
    directory. A rollback done is not done again; one that stopped half-way (its record
    says C(phase=moving), for example a cluster that did not start) resumes where it was.
  - V(standby) - on a standby's node, after a cutover - the standby (O(target)) stops (as
    for V(cutover)) and is rebuilt. With O(standby_source=repository) (the default) a delta
    restore, as O(os_user), brings its directory to the newest backup on the way to
    O(follow_timeline) (only what differs is written, the new primary is not read), with
    C(standby.signal), pgdr's restore_command and C(primary_conninfo) to O(primary_host)
    on O(pg_port) as O(replication_user) (O(pg_password) included, the file 0600). With
    O(standby_source=primary) the directory is kept as O(target)C(.pre-rebuild-<UTC time>)
    (the same filesystem rule) and cloned with pg_basebackup (C(--write-recovery-conf);
    the password through the environment). Either way it starts (O(service_name), else
    pg_ctl) and is recorded only once its WAL receiver streams on that timeline
    (V(restore_standby_not_streaming) else). The state file is the standby's own. The same
    rebuild again (O(rebuild_for) and O(primary_host) recorded, the directory there)
    changes nothing. With O(standby_source=patroni) (a Patroni replica, Patroni stopped on
    the node) the directory is only kept as O(target)C(.pre-rebuild-<UTC time>) and
    recorded, and the Patroni started next builds the replica (its C(create_replica_methods))
    and the caller waits for it to stream.
author:
  - pgdr contributors (@pgdr)
extends_documentation_fragment:
  - pgdr.postgresql.repository
  - pgdr.postgresql.repository.cluster
  - pgdr.postgresql.restore
  - pgdr.postgresql.postgres
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written, started, recorded or created. V(stage) predicts as
        pg_restore_chain does; V(recover) predicts whether it would start the copy;
        V(verify) runs the checks read-only and predicts whether the record would change;
        V(cutover) runs its checks and predicts a change unless that cutover is done;
        V(rollback) checks the kept directory and predicts a change unless it is done;
        V(standby) predicts a change unless that rebuild is done and, from the repository,
        plans it and names the backup it would restore (or fails as the run would).
  diff_mode:
    support: N/A
  platform:
    platforms: posix
options:
  stage:
    description:
      - "The stage to run: read, plan, stage, recover, verify, cutover, rollback or standby."
    type: str
    required: true
    choices: [read, plan, stage, recover, verify, cutover, rollback, standby]
  state_file:
    description:
      - The staged restore's state file, written by the plan stage. It and every directory
        above it must be owned by root (or the user running pgdr) and not writable by group
        or others (sticky directories such as /tmp excepted).
      - Else V(restore_state_invalid) - whoever could replace it could make cutover act on a
        state of their own. Its directory is created 0700.
    type: path
    required: true
  os_user:
    description: The OS user that runs PostgreSQL; pg_ctl and the connections run as it.
    type: str
    default: postgres
  port:
    description:
      - Port of the staged copy when the plan did not record one (the plan's port wins, and
        for verify and cutover the port recover started it on).
    type: int
  pg_bindir:
    description:
      - "Directory of pg_ctl for the restored cluster's version. Default:
        /usr/lib/postgresql/<major>/bin."
    type: path
  live_tablespaces:
    description:
      - "plan: OIDs of the live cluster's tablespaces, each mapped to tablespace_dir/<oid>
        (tablespace_map wins)."
    type: list
    elements: str
  tablespace_dir:
    description:
      - "plan: where the staged copy's tablespaces go. Default: the target directory
        followed by .tablespaces."
    type: path
  live_data:
    description:
      - "plan: the live cluster's data directory (recorded; cutover renames the staged copy
        into its place, which needs one filesystem). cutover and rollback: that directory
        (default the plan's)."
      - V(plan) returns whether that is so in RV(same_filesystem).
    type: path
  primary_host:
    description:
      - "standby: the new primary's address."
    type: str
  replication_user:
    description:
      - "standby: the role the standby streams as (and pg_basebackup connects as, with
        standby_source primary)."
    type: str
    default: postgres
  standby_source:
    description:
      - "standby: where the standby's data come from. repository: the newest backup on the
        way to the new timeline, by delta restore into the standby's own directory (only
        what differs is written; the new primary is not read), then the archive and
        streaming; primary: pg_basebackup from the new primary, the previous directory kept
        as <data>.pre-rebuild-<UTC time>; patroni: a Patroni replica's directory (Patroni
        stopped) only kept aside, for the Patroni started next to build it (its
        create_replica_methods)."
    type: str
    choices: [repository, primary, patroni]
    default: repository
  patroni_scope:
    description:
      - "cutover: the Patroni cluster (scope) the live data directory is a member of. After
        every check the cutover removes it from the DCS (patronictl remove), so that Patroni
        started next takes over the promoted cluster as leader; the caller stops Patroni on
        every member first (in check mode the cutover does not ask whether it runs, and
        checks that patronictl lists the cluster). standby with standby_source patroni, in
        check mode: the caller stops Patroni on the replica later, so whether it runs is not
        asked. Empty: no Patroni."
      - V(restore_cutover_blocked) when the live data directory is not a Patroni member's;
        V(restore_patroni_dcs) when patronictl fails, which it does while the DCS still holds
        a leader key (a member's Patroni runs) - nothing was changed either way.
    type: str
  patronictl:
    description:
      - "cutover with patroni_scope: the patronictl program."
    type: str
    default: patronictl
  patroni_config:
    description:
      - "cutover with patroni_scope: Patroni's configuration file, which tells patronictl
        where the DCS is."
    type: path
    default: /etc/patroni/patroni.yml
  follow_timeline:
    description:
      - "standby: the timeline the standby must stream on (the restore role passes the
        cutover's): the backup is one on the way to it. recovery_target_timeline stays
        latest. Default: the archive's latest timeline, any for the streaming check."
    type: int
  rebuild_for:
    description:
      - "standby: what the rebuild follows (the restore role passes the cutover's time); a
        standby rebuilt for it already is left alone."
    type: str
  rollback_from:
    description:
      - "rollback: the data directory to move back, instead of the one the cutover kept."
    type: path
  service_name:
    description:
      - "cutover, rollback and standby: the service that runs the live cluster (systemctl
        stops and starts it); empty for pg_ctl."
    type: str
    default: ""
  live_log:
    description:
      - "cutover, rollback and standby: pg_ctl's server log for the cluster started.
        Default: pg_ctl.log in live_data."
    type: path
  stop_timeout:
    description:
      - "cutover, rollback and standby: seconds each cluster gets to stop."
    type: int
    default: 600
  archive_timeout:
    description:
      - "cutover: seconds the new timeline's first switched segment gets to reach the
        repository; 0 skips that check."
    type: int
    default: 120
  require_verify:
    description:
      - "cutover: refuse a copy that verify did not pass, or that runs another postmaster
        than the one verify checked."
    type: bool
    default: true
  throughput:
    description: V(plan) - bytes per second the estimate assumes for the fetch.
    type: int
    default: 104857600
  wal_segment_seconds:
    description: V(plan) - seconds the estimate assumes per WAL segment to replay.
    type: float
    default: 0.5
  log:
    description:
      - "The staged copy's server log. Default: restored-server.log in the target directory."
    type: path
  timeout:
    description:
      - Seconds recover (and cutover, rollback and standby, for the cluster they start)
        waits for the start and for recovery to reach the point.
    type: int
    default: 600
  assertions:
    description: V(verify) - SQL assertions, each with C(name), C(sql) and an optional
      C(database); true when the first column of the first row is true.
    type: list
    elements: dict
    default: []
  expected_databases:
    description:
      - "verify: databases that must exist in the copy."
    type: list
    elements: str
  amcheck:
    description:
      - Check every btree index with amcheck when the extension is available.
    type: bool
    default: true
  amcheck_install:
    description:
      - "verify: create the amcheck extension where it is missing (a copy that was
        promoted; a paused copy is read-only)."
    type: bool
    default: true
notes:
  - Run it on the database node as root (C(become)), with the agent's virtualenv (psycopg2).
  - O(cluster) is required for V(stage), as a parameter or in O(config_file).
'''

EXAMPLES = r'''
- name: Restore the planned point into the staging directory
  pgdr.postgresql.pg_restore_stage:
    stage: stage
    state_file: /var/lib/postgresql/15/main.staging.restore.json
    target: /var/lib/postgresql/15/main.staging
    config_file: /etc/pgdr/pgdr.conf
    credentials_file: /etc/pgdr/credentials
    delta: true
  become: true

- name: Put the verified copy in the live cluster's place
  pgdr.postgresql.pg_restore_stage:
    stage: cutover
    state_file: /var/lib/pgdr-restore/main.staging-0a1b2c3d4e5f.json
    target: /var/lib/postgresql/15/main.staging
    live_data: /var/lib/postgresql/15/main
    service_name: postgresql@15-main
    pg_port: 5432
  become: true

- name: Recover the staged copy to the point
  pgdr.postgresql.pg_restore_stage:
    stage: recover
    state_file: /var/lib/postgresql/15/main.staging.restore.json
    target: /var/lib/postgresql/15/main.staging
    timeout: 3600
  become: true

- name: Verify the staged copy
  pgdr.postgresql.pg_restore_stage:
    stage: verify
    state_file: /var/lib/postgresql/15/main.staging.restore.json
    target: /var/lib/postgresql/15/main.staging
    assertions:
      - name: orders are there
        sql: SELECT count(*) > 0 FROM orders
        database: shop
  become: true
'''

RETURN = r'''
summary:
  description: One line - the stage, the directory it acted on (the live data directory for
    V(cutover) and V(rollback), else O(target)) and whether it changed anything (C(done),
    C(would change) in check mode, or C(nothing to change)).
  returned: success
  type: str
  sample: "cutover of /var/lib/postgresql/15/main: done"
plan_record:
  description: V(plan) - what was recorded - C(point), C(kind), C(backup_id),
    C(backup_stop_time), C(pg_version), C(timeline), C(recovery), C(wal_segments),
    C(fetch_bytes), C(estimated_seconds), C(staging), C(data), C(port), C(action),
    C(tablespaces).
  returned: stage is plan
  type: dict
  sample: {point: latest, kind: latest, backup_id: 20261202T100000F, wal_segments: 12,
           fetch_bytes: 14573568, estimated_seconds: 6.1, tablespaces: {}}
same_filesystem:
  description: V(plan) - whether O(target) and O(live_data) have their parents on one
    filesystem (null when O(live_data) is not given or cannot be read).
  returned: stage is plan
  type: bool
  sample: true
backup:
  description: V(stage) - the backup restored (as pg_restore_chain returns it).
  returned: stage is stage
  type: dict
  sample: {id: 20261202T100000F, stop_time: "2026-12-02T10:00:05Z", cluster: main}
fetch_bytes:
  description: V(stage) - bytes fetched from the repository (or that would be).
  returned: stage is stage
  type: int
  sample: 14573568
delta:
  description: V(stage) with O(delta) - C(kept_bytes), C(written_bytes), C(fetched_bytes),
    C(removed), C(read_bytes).
  returned: stage is stage and delta is true
  type: dict
  sample: {kept_bytes: 48800000, written_bytes: 2500000}
restore_state:
  description: The whole state file after the stage (as it would be, in check mode).
  returned: always
  type: dict
  sample: {version: 1, plan: {point: latest, backup_id: 20261202T100000F}, staged: {},
           recovered: {port: 5499, in_recovery: true, pause_state: paused}}
state:
  description: The copy's server state (see pgdr.postgresql.pg_instance).
  returned: success
  type: dict
  sample: {up: true, in_recovery: true, pause_state: paused, timeline: 1, replay_lsn: 0/3000148}
started:
  description: V(recover) - whether the copy was started (or would be, in check mode).
  returned: stage is recover
  type: bool
  sample: true
port:
  description: V(recover) - the copy's port.
  returned: stage is recover
  type: int
  sample: 5499
log:
  description: V(recover) - the copy's server log.
  returned: stage is recover
  type: str
  sample: /var/lib/postgresql/15/main.staging/restored-server.log
bin_dir:
  description: V(recover) - the directory of the pg_ctl used.
  returned: stage is recover
  type: str
  sample: /usr/lib/postgresql/15/bin
ok:
  description: V(verify) - true when every check passed.
  returned: stage is verify
  type: bool
  sample: true
checks:
  description: V(verify) - the checks, each with C(name), C(ok) and C(detail).
  returned: stage is verify, also on failure
  type: list
  elements: dict
  sample:
    - {name: target reached, ok: true, detail: "recovery paused at recovery_target_time=2026-12-02 10:00:00"}
amcheck_installed:
  description: V(verify) - databases where amcheck was created (or would be).
  returned: stage is verify
  type: list
  elements: str
  sample: []
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: ["verify of /var/lib/postgresql/15/main.staging: done"]
cutover:
  description: V(cutover) - what was recorded - C(phase) (V(done)), C(at), C(kept) (the old
    data directory), C(point), C(backup_id), C(timeline), C(archive_mode), C(archived) (the
    segment that reached the repository, or null), C(patroni) (true when Patroni manages the
    cluster - start it on the node next), C(patroni_scope) (the Patroni cluster removed from
    the DCS, else null), C(restore_command) (the staged copy's, put on record before the
    copy starts in the live directory's place; a rollback recovers the kept directory with
    it); in check mode C(data), C(kept), C(port), C(point), C(patroni_scope).
  returned: stage is cutover
  type: dict
  sample: {phase: done, at: 20261205T140000Z, kept: /var/lib/postgresql/15/main.pre-restore-20261205T140000Z,
           timeline: 3, archive_mode: "on", archived: 000000030000000000000012}
rollback:
  description: V(rollback) - what was recorded - C(at), C(from) (the directory moved back),
    C(kept) (where the cut-over directory went), C(timeline) (the one it runs on),
    C(new_timeline) (true when it started through an archive recovery onto a timeline above
    the restored one, so that restores of latest and replicas follow it), C(archived) (a
    segment of the new timeline that reached the repository, its history file before it,
    else null), C(warning) (why it started on its old timeline instead, or why its new one
    is not in the repository, else null).
  returned: stage is rollback
  type: dict
  sample: {at: 20261205T150000Z, from: /var/lib/postgresql/15/main.pre-restore-20261205T140000Z,
           kept: /var/lib/postgresql/15/main.rolled-back-20261205T150000Z}
standby:
  description: V(standby) - what was recorded - C(at), C(source), C(kept) (the previous
    data directory with O(standby_source=primary) or O(standby_source=patroni), else
    null), C(primary), C(for); from
    the repository also C(backup_id) and C(delta) (C(kept_bytes), C(written_bytes),
    C(fetched_bytes), C(removed)).
  returned: stage is standby
  type: dict
  sample: {at: 20261205T150000Z, source: repository, kept: null, primary: pg1,
           for: 20261205T140000Z, backup_id: 20261205T020000Z-full,
           delta: {kept_bytes: 54735667, written_bytes: 18664652, fetched_bytes: 5242880,
                   removed: 3}}
error_code:
  description: Stable code of the failure, for example V(restore_verify_failed),
    V(recovery_failed), V(restore_stage_missing), V(restore_wrong_server),
    V(restore_copy_restarted).
  returned: failure
  type: str
  sample: restore_verify_failed
stage:
  description: The step that failed.
  returned: failure
  type: str
  sample: verify
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import (
    CHECK_EXTRAS, PgdrModule)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import stage
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.verbs import (
    COMMANDS, EXCLUDED, POSITIONAL)

# The module's own parameters; the stage's others are the engine's options (group "stage").
EXTRAS = dict(
    throughput=dict(type="int", default=104857600),
    wal_segment_seconds=dict(type="float", default=0.5),
    assertions=dict(CHECK_EXTRAS["assertions"]),
)
ARGS = dict(groups=COMMANDS["restore-stage"][1], include=POSITIONAL["restore-stage"],
            exclude=EXCLUDED["restore-stage"], required=("target", "stage", "state_file"),
            extras=EXTRAS)


def main():
    module = PgdrModule(**ARGS)
    module.run(stage.Request(**dict((name, module.params[name]) for name in EXTRAS)))


if __name__ == "__main__":
    main()
