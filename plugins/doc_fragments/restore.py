# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The restore options (the engine's group restore, but backup_id: point names a backup
    too), documented once for pg_restore_chain and pg_restore_stage; tests/unit/test_docs.py
    checks them against the engine's OPTIONS."""

    DOCUMENTATION = r'''
options:
  point:
    description:
      - 'Point to restore: latest, immediate, a backup id, an ISO 8601 time (no zone means
        UTC), an LSN, xid:N or name:RESTORE_POINT (docs/restore-points.md).'
      - V(latest) replays all the archived WAL after the newest backup that can reach it;
        V(immediate) and a backup id stop at that backup's consistency point. The engine
        picks the newest backup that ended before a time, LSN or xid; a point outside what
        the repository can reach fails with the reachable window.
      - A value it cannot parse fails with RV(error_code=point_invalid), naming the value
        and the accepted forms.
    type: str
    default: latest
  target_inclusive:
    description:
      - Stop just after the target (true) or just before it (false).
    type: bool
    default: true
  target_action:
    description:
      - 'What the restored server does at the target: promote (open for writes on a new
        timeline), pause (read-only, to inspect before promoting) or shutdown.'
    type: str
    default: promote
    choices:
      - promote
      - pause
      - shutdown
  target_timeline:
    description:
      - "Timeline to recover along: latest (the newest archived timeline that descends from the
        backup), current (the backup's own) or a timeline number - to avoid one abandoned by a
        rollback."
    type: str
    default: latest
  thaw:
    description:
      - When objects the restore needs sit in an archive storage class (GLACIER,
        DEEP_ARCHIVE), request their thaw and wait for it, instead of refusing the restore
        before it starts.
    type: bool
    default: false
  thaw_days:
    description:
      - Days a thawed copy stays readable.
    type: int
    default: 3
  thaw_tier:
    description:
      - Retrieval tier of thaw requests.
    type: str
    default: Standard
    choices:
      - Expedited
      - Standard
      - Bulk
  thaw_timeout:
    description:
      - Seconds to wait for thawed objects.
    type: int
    default: 172800
  restore_command:
    description:
      - 'restore_command written into the restored cluster. Default: this pgdr, with the
        same config and credentials files, running wal-fetch.'
    type: str
  target:
    description:
      - Directory to restore into. It must be absent or empty unless force is set.
    type: path
    required: true
  restore_from:
    description:
      - "Where a restore without backup_id starts: auto (the repository's backup the
        planner chooses, or a snapshot backup of this host that ends at or after it: a
        clone downloads nothing) or repository (never a snapshot). A drill always restores
        from the repository."
      - The plan says which, and why, in C(plan.source) and C(plan.why), with a predicted
        RTO from the last drill.
    type: str
    default: auto
    choices:
      - auto
      - repository
  force:
    description:
      - Restore into a non-empty target, deleting what it holds (never the data directory
        of a running server).
    type: bool
    default: false
  delta:
    description:
      - "Bring an existing, stopped data directory (a failed primary, a lagging standby, an
        earlier restored copy) to the backup by rewriting only what differs, compared by
        SHA-256 with the backup's records: files and parts that match are kept, the rest is
        fetched, files the backup does not hold are removed; the result is what a restore
        into an empty directory gives. Never a running server's directory; a failed delta
        restore leaves it unstartable (no pg_control) and a second run resumes it."
    type: bool
    default: false
  tablespace_map:
    description:
      - New locations of tablespaces, by old location, name or OID.
    type: dict
  settings:
    description:
      - PostgreSQL settings written to the restored cluster's postgresql.auto.conf (for
        example port).
    type: dict
  keep_archiving:
    description:
      - Keep the source's WAL archiving settings in the restored cluster. Off by default,
        so that a restored copy never archives into the production repository.
    type: bool
    default: false
  standby:
    description:
      - "Restore the newest backup as a new standby of the running cluster (for example
        Patroni's replica creation method): standby.signal and restore_command, no recovery
        target, and nothing else in postgresql.auto.conf, so archiving and the server's
        settings stay those of the cluster's own configuration. Only with point latest."
    type: bool
    default: false
  bootstrap:
    description:
      - "Restore as the first member of a new cluster whose configuration is managed
        elsewhere (Patroni's bootstrap.method): recovery.signal, restore_command, the point's
        recovery target (immediate at a backup's own end) and the user's settings, nothing
        else in postgresql.auto.conf, so that once promoted the server archives and runs
        with the cluster's own configuration (keep_archiving has no effect). Needs
        target_action promote."
    type: bool
    default: false
  workers:
    description:
      - Parallel workers that read, compress and transfer.
    type: int
    default: 4
'''
