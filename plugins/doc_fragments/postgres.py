# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """PostgreSQL connection options, documented once; tests/unit/test_docs.py checks
    them against the engine's OPTIONS (plugins/module_utils/_pgdr/options.py)."""

    DOCUMENTATION = r'''
options:
  pg_host:
    description:
      - Host or socket directory of the PostgreSQL server.
    type: str
    default: /var/run/postgresql
  pg_port:
    description:
      - Port of the PostgreSQL server.
    type: int
    default: 5432
  pg_user:
    description:
      - Role that runs the backup (superuser, or a role granted pg_backup_start/pg_backup_stop
        and pg_read_all_settings).
    type: str
    default: postgres
  pg_database:
    description:
      - Database to connect to.
    type: str
    default: postgres
  pg_password:
    description:
      - Password of pg_user (prefer a .pgpass file).
    type: str
  pg_data:
    description:
      - Data directory of the cluster. Defaults to what the server reports; when set, it must
        match.
    type: path
'''
