#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pg_instance
short_description: Ask a node's PostgreSQL server what a staged restore needs to know
version_added: 0.1.0
description:
  - The engine's node-side PostgreSQL layer (C(postgres/instance.py)), the one the drill
    uses, for the restore and archiving roles - one meaning of "target reached" and one set
    of checks with one set of names.
  - V(state) - recovery and pause state, timeline, replay position and last replayed
    commit, data directory, archive_mode, databases, tablespaces, postmaster pid; a server
    that does not answer gives C(state.up=false) and C(state.error), not a failure.
  - V(wait_recovery) - wait until the server answers and recovery paused at the target or
    ended; fails (V(recovery_failed) with the server log's tail) when the server stopped,
    or (V(recovery_timeout)) after O(timeout) seconds.
  - V(wait_ready) - wait until the server accepts connections.
  - V(verify) - the checks of a restored copy - C(target reached) (when O(recovery) is
    given), C(connections), C(databases), C(database connections), C(amcheck)
    (C(bt_index_check) with heapallindexed on every btree index) and each assertion of
    O(assertions). A failed check does not fail the task; C(ok) says it.
  - V(archive_probe) - C(pg_switch_wal()), then wait until the archiver stored that
    segment (V(check_archive_timeout) after O(timeout) seconds).
  - V(mark_ready) - a copy promoted while archiving was off - mark the history file and the
    finished segments of O(timeline) before O(current_wal) for archiving.
  - V(configuration) - the settings O(settings_names) as the server sees them, every
    setting pending a restart, errors in the configuration files, C(pg_stat_archiver).
  - V(reload) - C(pg_reload_conf()), then wait until new sessions see the new files.
  - V(patroni_config) - when the node runs Patroni (O(patroni_url)), put O(parameters) and
    O(recovery_conf) into Patroni's dynamic configuration (every member gets them; only
    what differs is changed), never into the files Patroni owns; wait until the server
    runs with them or says it needs a restart, and with O(restart) restart this member
    through Patroni. Without Patroni it changes nothing and returns C(patroni=false).
author:
  - pgdr contributors (@pgdr)
options:
  action:
    description:
      - What to ask of the server.
    type: str
    required: true
    choices: [state, wait_recovery, wait_ready, verify, archive_probe, mark_ready, configuration, reload, patroni_config]
  timeout:
    description:
      - Seconds that V(wait_recovery), V(wait_ready) and V(archive_probe) wait.
    type: int
    default: 600
  data_directory:
    description:
      - The server's data directory (V(wait_recovery), V(mark_ready)).
    type: path
  log:
    description:
      - The server's log, whose tail a failed V(wait_recovery) quotes.
    type: path
  recovery:
    description:
      - The recovery settings the restore wrote (its plan's C(recovery)); with it,
        V(verify) starts with the check C(target reached).
    type: dict
  target_action:
    description:
      - "What the restored server does at the target: promote (open for writes on a new
        timeline), pause (read-only, to inspect before promoting) or shutdown."
      - For V(verify) - with V(pause), a named target is reached when recovery paused;
        otherwise when recovery ended.
    type: str
    default: pause
    choices: [pause, promote, shutdown]
  assertions:
    description:
      - The user's checks for V(verify), each with C(name), C(sql) (true when its first
        column is true) and optionally C(database).
    type: list
    elements: dict
    default: []
  expected_databases:
    description:
      - Databases V(verify) expects to find.
    type: list
    elements: str
    default: []
  amcheck:
    description:
      - Check every btree index with amcheck when the extension is available.
    type: bool
    default: true
  amcheck_install:
    description:
      - Whether V(verify) creates the amcheck extension where it is available and missing
        (only on a server out of recovery); C(changed) is true when it did.
    type: bool
    default: true
  timeline:
    description:
      - The timeline whose files V(mark_ready) marks.
    type: int
  current_wal:
    description:
      - The segment being written (V(mark_ready) marks only those before it).
    type: str
  settings_names:
    description:
      - The settings V(configuration) reports (wal_level is always added).
    type: list
    elements: str
    default: []
  parameters:
    description:
      - The PostgreSQL settings V(patroni_config) puts into Patroni's dynamic configuration
        (C(postgresql.parameters)).
    type: dict
    default: {}
  recovery_conf:
    description:
      - The recovery settings (C(restore_command)) V(patroni_config) puts into Patroni's
        dynamic configuration (C(postgresql.recovery_conf)).
    type: dict
    default: {}
  restart:
    description:
      - Whether V(patroni_config) restarts this member through Patroni when a setting
        needs it (archive_mode).
    type: bool
    default: false
  patroni_url:
    description:
      - "Patroni's REST API on this node, asked which member leads and which replicas are
        healthy (backup_from then follows Patroni's view, the same on every member, so
        exactly one member backs up): auto (ask http://127.0.0.1:8008; nothing listening
        there means the node does not run Patroni and PostgreSQL's own views decide), off,
        or a URL that must answer."
      - V(patroni_config) changes Patroni's configuration through it.
    type: str
    default: auto
  patroni_username:
    description:
      - "User of Patroni's REST API (restapi.authentication), sent with the requests that
        change something: the dynamic configuration and restarts. Reading the member list
        needs none."
    type: str
  patroni_password:
    description:
      - Password of patroni_username.
    type: str
extends_documentation_fragment:
  - pgdr.postgresql.postgres
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - V(archive_probe), V(reload) and V(mark_ready) change nothing and report what they
        would do; V(verify) creates no extension and reports where it would.
  diff_mode:
    support: N/A
  platform:
    platforms: posix
notes:
  - Run it on the database node as the PostgreSQL OS user, with the agent's virtualenv
    (psycopg2).
seealso:
  - module: pgdr.postgresql.pg_restore_chain
  - module: pgdr.postgresql.pg_check
requirements:
  - psycopg2
'''

EXAMPLES = r'''
- name: Wait until the staged copy paused at the point
  pgdr.postgresql.pg_instance:
    action: wait_recovery
    pg_port: 5499
    data_directory: /var/lib/postgresql/15/main.staging
    log: /var/lib/postgresql/15/main.staging/pg_ctl.log
    timeout: 3600
  become: true
  become_user: postgres

- name: Check the staged copy
  pgdr.postgresql.pg_instance:
    action: verify
    pg_port: 5499
    recovery: "{{ plan.recovery }}"
    assertions:
      - name: orders are there
        sql: SELECT count(*) > 0 FROM orders
        database: shop
  become: true
  become_user: postgres
  register: verified
'''

RETURN = r'''
state:
  description: The server's state (V(state), V(wait_recovery), V(wait_ready), V(verify)).
  returned: success
  type: dict
  sample: {up: true, in_recovery: true, pause_state: paused, timeline: 1, replay_lsn: 0/3000148,
           last_replay_time: "2026-12-02 10:00:00.12+00", data_directory: /var/lib/postgresql/15/main,
           archive_mode: "off", databases: [postgres, shop], tablespaces: [], postmaster_pid: 4242}
ok:
  description: True when every check of V(verify) passed.
  returned: action is verify
  type: bool
  sample: true
checks:
  description: The checks of V(verify), each with C(name), C(ok) and C(detail).
  returned: action is verify
  type: list
  elements: dict
  sample:
    - {name: target reached, ok: true, detail: "recovery paused at recovery_target_time=2026-12-02 10:00:00"}
    - {name: amcheck, ok: true, detail: "12 btree indexes checked (heapallindexed)"}
amcheck_installed:
  description: Databases where V(verify) created the amcheck extension (or would, in check mode).
  returned: action is verify
  type: list
  elements: str
  sample: [shop]
archived:
  description: The segment V(archive_probe) switched and saw archived.
  returned: action is archive_probe
  type: str
  sample: 000000020000000000000007
patroni:
  description: Whether the node runs Patroni (V(patroni_config)).
  returned: action is patroni_config
  type: bool
  sample: true
changed_settings:
  description: The settings V(patroni_config) changed in Patroni's dynamic configuration.
  returned: action is patroni_config
  type: list
  elements: str
  sample: [archive_command, archive_mode]
pending_restart:
  description: The settings that still wait for a restart after V(patroni_config).
  returned: action is patroni_config
  type: list
  elements: str
  sample: []
marked:
  description: The files V(mark_ready) marked for archiving (or would, in check mode).
  returned: action is mark_ready
  type: list
  elements: str
  sample: [00000002.history]
configuration:
  description: What V(configuration) read - C(settings) (each with C(setting), C(sourcefile),
    C(pending_restart), C(context)), C(pending), C(errors), C(archiver), C(version_num),
    C(config_file), C(data_directory), C(postmaster_pid).
  returned: action is configuration
  type: dict
  sample: {version_num: 150010, pending: [], errors: [], settings: {archive_mode: {setting: "on"}}}
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: []
error_code:
  description: Stable code of the failure, for example V(recovery_failed), V(recovery_timeout).
  returned: failure
  type: str
  sample: recovery_failed
stage:
  description: The action that failed.
  returned: failure
  type: str
  sample: wait_recovery
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import (
    CHECK_EXTRAS, PgdrModule)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import instance

EXTRAS = dict(
    action=dict(type="str", required=True, choices=list(instance.ACTIONS)),
    timeout=dict(type="int", default=600),
    data_directory=dict(type="path"),
    log=dict(type="path"),
    recovery=dict(type="dict"),
    timeline=dict(type="int"),
    current_wal=dict(type="str"),
    settings_names=dict(type="list", elements="str", default=[]),
    parameters=dict(type="dict", default={}),
    recovery_conf=dict(type="dict", default={}),
    restart=dict(type="bool", default=False),
)
EXTRAS.update(CHECK_EXTRAS)
ARGS = dict(groups=("pg",), include=("patroni_url", "patroni_username", "patroni_password"),
            extras=EXTRAS, files=False)
REQUIRED_IF = [("action", "wait_recovery", ("data_directory", "log")),
               ("action", "mark_ready", ("data_directory", "timeline", "current_wal"))]


def main():
    module = PgdrModule(required_if=REQUIRED_IF, **ARGS)
    params = dict((name, module.params[name]) for name in EXTRAS if name != "action")
    module.run(instance.Request(module.params["action"], **params))


if __name__ == "__main__":
    main()
