"""Staged restores (role pgdr.postgresql.pgdr_restore through playbooks/restore.yml) and drills
(`pgdr drill`, playbooks/drill.yml) on real clusters: PostgreSQL 15 with WAL archiving
into SeaweedFS, on 127.0.0.1.

One node for the module (setup with archiving, one backup, ten rows committed one at a
time, T = the commit of row 5); the tests run in file order and build on each other:
  1. a staged restore to T beside the live cluster while it keeps taking writes;
  2. a failing user assertion: the play stops before cutover, the live cluster untouched;
  3. a drill to T: its RTO is the wall time of the command, its point the target;
  4. cutover (the production port serves the restored data, archived on a new timeline),
     then rollback (the original data is back).
"""
import datetime
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from lab.lab import PgCluster, free_port
from tests.integration import test_playbooks as tp
from tests.integration.pgdr_run import archive_everything, checksums, write_rows

CLUSTER = "staged"


class StagedNode(tp.Node):
    """test_playbooks' node, with WAL archiving on and a cluster name of its own."""

    def write_inventory(self):
        super().write_inventory()
        doc = json.loads(self.inventory.read_text())
        group = doc["all"]["children"]["pgdr_nodes"]["vars"]
        group.update(pgdr_cluster=CLUSTER, pgdr_archiving=True, pgdr_archiving_rpo=60,
                     pgdr_archiving_service_name="")
        self.inventory.write_text(json.dumps(doc, indent=2))

    def wal_keys(self):
        client = self.seaweed.client()
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix="%s/%s/wal/" % (self.repository["prefix"], CLUSTER)):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys


class Writer(threading.Thread):
    """Keeps inserting rows (k from 1000 on) into the live cluster until stopped."""

    def __init__(self, pg):
        super().__init__(daemon=True)
        self.pg, self.stop, self.written = pg, threading.Event(), 0

    def run(self):
        conn = psycopg2.connect(host="127.0.0.1", port=self.pg.port, user="postgres",
                                dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self.stop.is_set():
                cur.execute("INSERT INTO ticks (k) VALUES (%s)", (1000 + self.written,))
                self.written += 1
                time.sleep(0.02)
        conn.close()

    def finish(self):
        self.stop.set()
        self.join(10)


def rows(pg, port=None):
    port = port or pg.port
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(array_agg(k ORDER BY k), '{}') FROM ticks")
            return cur.fetchone()[0]
    finally:
        conn.close()


def sql(port, statement):
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchone()[0]
    finally:
        conn.close()


def datadir_digest(datadir):
    """SHA-256 over the names and contents of the data directory's files, less what a
    running server rewrites by itself (WAL, statistics, pid file, logs)."""
    volatile = ("pg_wal", "pg_stat_tmp", "pg_logical", "pg_subtrans", "pg_stat")
    sums = {}
    for root, dirs, files in os.walk(datadir):
        rel = os.path.relpath(root, datadir)
        dirs[:] = sorted(d for d in dirs if not (rel == "." and d in volatile))
        for name in sorted(files):
            if (rel == "." and (name.startswith("postmaster") or name.endswith(".log"))
                    or name == "pg_internal.init"):
                continue
            sums[os.path.join(rel, name)] = hashlib.sha256(Path(root, name).read_bytes()).hexdigest()
    return sums


def changed_files(before, after):
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


@pytest.fixture(scope="module")
def node(lab_root, seaweed):
    """Like test_playbooks' node, plus archiving, a backup, rows 1-10 and the point T."""
    yield from _node(lab_root, seaweed)


def _node(lab_root, seaweed):
    from lab.lab import load_sample_data
    with tp.own_node(lab_root, seaweed, "staged-", StagedNode) as this:
        pg = this.pg
        this.stamps = {}
        try:
            pg.init({"track_commit_timestamp": "on"})
            pg.start()
            load_sample_data(pg)
            for db in ("postgres", "shop"):
                pg.psql("CREATE EXTENSION amcheck", db=db)
            pg.psql("CREATE TABLE ticks (k int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
            started = time.time()
            run = this.play("setup")
            assert run.rc == 0, run
            run = this.play("backup")
            assert run.rc == 0, run
            this.timings = {"setup and backup": round(time.time() - started, 1)}
            write_rows(pg, 1, 10, this.stamps)
            archive_everything(pg)
            this.point = _utc(this.stamps[5]["commit"])
            yield this
        finally:
            print("timings: %s" % getattr(this, "timings", {}))


def _utc(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def staging(node):
    return Path(str(node.pg.datadir) + ".staging")


def state_path(node, copy=None):
    """Where the restore role keeps the state of the staged copy in copy (default: the
    staging directory): pgdr_restore_state_dir/<name>-<12 hex of the path's SHA-1>.json."""
    copy = str(copy or staging(node))
    return node.state_dir / ("%s-%s.json" % (os.path.basename(copy),
                                             hashlib.sha1(copy.encode()).hexdigest()[:12]))


def state_of(node, copy=None):
    return json.loads(state_path(node, copy).read_text())


def test_staged_restore_to_a_point_while_the_original_keeps_writing(node):
    port = free_port()
    staged = PgCluster(15, staging(node), port=port)
    node.restored.append(staged)
    pid = node.pg.pid()
    writer = Writer(node.pg)
    writer.start()
    try:
        started = time.time()
        run = node.play("restore", "-e", "point=%s" % node.point, "-e", "pgdr_restore_port=%d" % port)
        node.timings["staged restore"] = round(time.time() - started, 1)
        written_during = writer.written
    finally:
        writer.finish()
    assert run.rc == 0 and run.recap["failed"] == 0, run
    assert run.task("Restore the backup into") == ["changed"], run
    assert run.task("Recover the staged copy on the node") == ["changed"], run
    assert run.task("Verify the staged copy on the node") == ["changed"], run
    # stages not asked for (cutover, rollback, standbys) print one line each, not every task
    printed = re.findall(r"^TASK \[(.*?)\]", run.output, re.M)
    node.timings["tasks printed by a plain restore.yml"] = len(printed)
    for inside in ("Cut over on the node", "Roll back on the node",
                   "Rebuild the standby on the node"):
        assert not [t for t in printed if t.endswith(inside)], (inside, printed)
    # the original stayed up on its port, same postmaster, and kept growing
    assert node.pg.pid() == pid and node.pg.is_running()
    assert written_during > 0
    live = rows(node.pg)
    assert live[:10] == list(range(1, 11)) and len(live) == 10 + writer.written
    # the staged copy: paused at T, read-only, exactly rows 1-5
    assert staged.is_running()
    assert sql(port, "SELECT pg_is_in_recovery()") is True
    assert sql(port, "SELECT pg_get_wal_replay_pause_state()") == "paused"
    assert rows(node.pg, port) == [1, 2, 3, 4, 5]
    assert sql(port, "SHOW archive_mode") == "off"
    state = state_of(node)
    assert state["plan"]["point"] == node.point and state["staged"]["directory"] == str(staging(node))
    assert stat.S_IMODE(os.stat(state_path(node)).st_mode) == 0o600
    assert state["verified"]["postmaster_pid"] == staged.pid(), state
    assert state["verified"]["ok"] is True, state
    names = [c["name"] for c in state["verified"]["checks"]]
    assert names[:1] == ["target reached"] and "amcheck" in names, names
    amcheck = next(c for c in state["verified"]["checks"] if c["name"] == "amcheck")
    assert amcheck["ok"] and not amcheck["detail"].startswith("0 "), amcheck
    assert node.secret not in run.output

    again = node.play("restore", "-e", "point=%s" % node.point, "-e", "pgdr_restore_port=%d" % port)
    assert again.rc == 0 and again.recap["changed"] == 0, again

    # another point over the stopped copy, and back: each time only what differs from the
    # backup is rewritten (pgdr_restore_delta), and the copy pauses at exactly that point
    for point, expected in ((_utc(node.stamps[7]["commit"]), list(range(1, 8))),
                            (node.point, [1, 2, 3, 4, 5])):
        staged.stop()
        moved = node.play("restore", "-e", "point=%s" % point, "-e", "pgdr_restore_port=%d" % port,
                          "-e", "pgdr_restore_delta=true")
        assert moved.rc == 0 and moved.recap["failed"] == 0, moved
        assert moved.task("Restore the backup into") == ["changed"], moved
        assert "delta: kept" in " ".join(moved.output.split()), moved
        assert sql(port, "SELECT pg_get_wal_replay_pause_state()") == "paused"
        assert rows(node.pg, port) == expected

    # the same point staged again over the copy (it ran since, so the delta rewrites it):
    # the earlier recovery and verify no longer vouch for it, and cutover refuses it
    staged.stop()
    restaged = node.play("restore", "--tags", "plan,stage", "-e", "point=%s" % node.point,
                         "-e", "pgdr_restore_port=%d" % port, "-e", "pgdr_restore_delta=true")
    assert restaged.rc == 0 and restaged.task("Restore the backup into") == ["changed"], restaged
    state = state_of(node)
    assert state["staged"] and not {"recovered", "verified"} & set(state), state
    pid = node.pg.pid()
    cut = node.play("restore", "--tags", "cutover")
    assert cut.rc != 0 and "no verified staged copy" in " ".join(cut.output.split()), cut
    assert node.pg.pid() == pid and node.pg.is_running()
    assert not list(node.pg.datadir.parent.glob("data.pre-restore-*"))
    # recovered and verified again, the copy is vouched for (the cutover test uses it)
    healed = node.play("restore", "--tags", "recover,verify")
    assert healed.rc == 0 and healed.recap["failed"] == 0, healed
    state = state_of(node)
    assert state["verified"]["ok"] is True, state
    assert rows(node.pg, port) == [1, 2, 3, 4, 5]


def test_failing_assertion_stops_before_cutover_and_leaves_the_live_cluster_alone(node):
    port = free_port()
    target = Path(str(node.pg.datadir) + ".check")
    staged = PgCluster(15, target, port=port)
    node.restored.append(staged)
    # the server's own background work must not count: no autovacuum for a while, then a
    # checkpoint; relcache init files (pg_internal.init) are caches, left out
    node.pg.psql("ALTER SYSTEM SET autovacuum = off")
    node.pg.psql("SELECT pg_reload_conf()")
    logical = checksums(node.pg)
    node.pg.psql("CHECKPOINT")
    pid, before = node.pg.pid(), datadir_digest(node.pg.datadir)
    assertions = [{"name": "five rows", "sql": "SELECT count(*) = 5 FROM ticks"},
                  {"name": "no rows at all", "sql": "SELECT count(*) = 0 FROM ticks"}]
    started = time.time()
    run = node.play("restore", "-e", json.dumps({
        "point": node.point, "target": str(target), "pgdr_restore_port": port,
        "restore_action": "pause", "pgdr_restore_assertions": assertions, "pgdr_restore_cutover": True}))
    node.timings["failing verify"] = round(time.time() - started, 1)
    assert run.rc != 0, run
    assert run.task("Verify the staged copy on the node") == ["fatal"], run
    assert "no rows at all: FAILED" in run.output and "five rows: ok" in run.output, run
    assert "restore_verify_failed" in run.output, run
    # the failed checks are on record: a later cutover refuses the copy
    state = state_of(node, target)
    assert state["verified"]["ok"] is False, state
    assert [c["name"] for c in state["verified"]["checks"] if not c["ok"]] == ["no rows at all"]
    assert run.task("Stop the live cluster") == [], run
    assert run.task("Keep the live data directory") == [], run
    assert node.pg.pid() == pid and node.pg.is_running()
    after = datadir_digest(node.pg.datadir)
    node.pg.psql("ALTER SYSTEM RESET autovacuum")
    node.pg.psql("SELECT pg_reload_conf()")
    assert changed_files(before, after) == []
    assert checksums(node.pg) == logical
    assert not list(node.pg.datadir.parent.glob("data.pre-restore-*"))


def test_drill_measures_rto_and_reaches_the_point(node):
    target = node.root / "drill" / "data"
    target.parent.mkdir()
    os.chown(target.parent, pwd.getpwnam("postgres").pw_uid, -1)
    port = free_port()
    started = time.monotonic()
    code, report = node.cli("drill", "--target", target, "--drill-port", port,
                            "--point", node.point, "--pg-bindir", node.pg.bindir,
                            "--rto-objective", 600, "--rpo-objective", 600,
                            "--check-sql", "SELECT count(*) = 5 FROM ticks")
    wall = time.monotonic() - started
    node.timings["drill (cli)"] = round(wall, 1)
    assert code == 0 and report["success"] is True, report
    # RTO ends when the copy is verified; the stop and removal after it are reported apart
    assert abs(report["rto_seconds"] - (wall - report["teardown_seconds"])) < 1.0, (
        report["rto_seconds"], report["teardown_seconds"], wall)
    assert report["point"] == node.point
    committed = node.stamps[5]["commit"].timestamp()
    assert abs(report["recovered"]["last_commit_time"] - committed) < 0.001, report
    assert report["rpo_seconds"] < 0.001
    assert all(c["ok"] for c in report["checks"]) and len(report["checks"]) >= 4, report
    assert not target.exists() or not any(target.iterdir())

    # the playbook: objectives from the inventory, AWX artifact, textfile, fetched report
    fetched = node.root / "reports"
    started = time.time()
    run = node.play("drill", "-e", json.dumps({
        "point": node.point, "drill_port": free_port(), "drill_target": str(target),
        "pgdr_rto": 600, "pgdr_rpo": 600, "drill_report_dir": str(fetched),
        "drill_check_sql": ["SELECT count(*) = 5 FROM ticks"]}))
    node.timings["drill (playbook)"] = round(time.time() - started, 1)
    assert run.rc == 0 and run.recap["failed"] == 0, run
    flat = " ".join(run.output.split())
    assert "success; RTO" in flat and "RTO objective 600 s met" in flat, run
    assert len(list(fetched.glob("*.json"))) == 1
    prom = (target.parent / "pgdr.prom").read_text()
    assert 'pgdr_drill_success{cluster="staged"} 1' in prom
    assert 'pgdr_drill_objective_met{cluster="staged",objective="rto"} 1' in prom

    failing = node.play("drill", "-e", json.dumps({
        "point": node.point, "drill_port": free_port(), "drill_target": str(target),
        "drill_check_sql": ["SELECT count(*) = 6 FROM ticks"]}))
    assert failing.rc != 0 and failing.task("Fail when the drill failed") == ["fatal"], failing


def test_cutover_then_rollback(node):
    original = rows(node.pg)
    data = node.pg.datadir
    history = [k for k in node.wal_keys() if ".history" in k]
    # the verified copy started again is not the copy verify checked: cutover refuses it
    # (stops nothing) until recover and verify have run on it again
    port = state_of(node)["recovered"]["port"]
    copy = PgCluster(15, staging(node), port=port)
    copy.stop()
    copy.start()
    pid = node.pg.pid()
    refused = node.play("restore", "--tags", "cutover")
    assert refused.rc != 0 and "is not the one verify checked" in " ".join(
        refused.output.split()), refused
    assert refused.task("Cut over on the node") == ["fatal"], refused
    assert "restore_copy_restarted" in refused.output and copy.is_running(), refused
    assert node.pg.pid() == pid and not list(data.parent.glob("data.pre-restore-*"))
    healed = node.play("restore", "--tags", "recover,verify")
    assert healed.rc == 0 and healed.recap["failed"] == 0, healed
    assert state_of(node)["verified"]["postmaster_pid"] == copy.pid()
    started = time.time()
    cut = node.play("restore", "--tags", "cutover")
    node.timings["cutover"] = round(time.time() - started, 1)
    assert cut.rc == 0 and cut.recap["failed"] == 0, cut
    assert state_of(node)["cutover"]["patroni"] is False  # no Patroni: the standbys next
    assert "and rebuild the standbys (--tags standbys)" in " ".join(cut.output.split()), cut
    # the production port serves the restored data, promoted, archiving on a new timeline
    assert rows(node.pg) == [1, 2, 3, 4, 5]
    assert sql(node.pg.port, "SELECT pg_is_in_recovery()") is False
    assert sql(node.pg.port, "SHOW archive_mode") == "on"
    assert sql(node.pg.port, "SHOW data_directory") == str(data)
    timeline = int(sql(node.pg.port, "SELECT pg_walfile_name(pg_current_wal_lsn())")[:8], 16)
    assert timeline >= 2
    keys = node.wal_keys()
    assert [k for k in keys if k.endswith("%08X.history" % timeline)
            or "%08X.history" % timeline in k], keys
    assert len([k for k in keys if ".history" in k]) > len(history)
    kept = list(data.parent.glob("data.pre-restore-*"))
    assert len(kept) == 1 and (kept[0] / "PG_VERSION").exists()
    assert not staging(node).exists()
    # promoted: no recovery setting is left for a clone or a restore of its backups, and
    # neither is the restore's marker nor wal-fetch's scan state
    auto = (data / "postgresql.auto.conf").read_text()
    assert "recovery_target" not in auto and "restore_command" not in auto, auto
    assert not [p for p in ("pgdr_restore.json", "pgdr_restore.files", "pgdr_walscan.tail",
                            "pgdr_walscan.stop")
                if (data / p).exists()]

    again = node.play("restore", "--tags", "cutover")
    assert again.rc == 0 and again.recap["changed"] == 0, again

    started = time.time()
    back = node.play("restore", "--tags", "rollback")
    node.timings["rollback"] = round(time.time() - started, 1)
    assert back.rc == 0 and back.recap["failed"] == 0, back
    assert rows(node.pg) == original
    assert sql(node.pg.port, "SELECT pg_is_in_recovery()") is False
    assert not list(data.parent.glob("data.pre-restore-*"))
    assert len(list(data.parent.glob("data.rolled-back-*"))) == 1
    _rolled_back_onto_a_timeline_of_its_own(node, data, timeline, original)


def _rolled_back_onto_a_timeline_of_its_own(node, data, abandoned, original):
    """The repository holds the abandoned restored timeline's history: the rolled-back
    cluster runs on a timeline above it, archived, without recovery settings left, and a
    restore of latest returns its rows, not the restored ones."""
    record = state_of(node)["rollback"]
    assert record["new_timeline"] is True and record["warning"] is None, record
    rolled = int(sql(node.pg.port, "SELECT pg_walfile_name(pg_current_wal_lsn())")[:8], 16)
    assert rolled > abandoned and record["timeline"] == rolled, (rolled, abandoned, record)
    auto = (data / "postgresql.auto.conf").read_text()
    assert "restore_command" not in auto and "recovery_target" not in auto, auto
    assert not (data / "recovery.signal").exists()
    switched = sql(node.pg.port, "SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.time() + 60
    while not [k for k in node.wal_keys() if "%08X.history" % rolled in k] or sql(
            node.pg.port, "SELECT coalesce(last_archived_wal >= '%s', false) "
            "FROM pg_stat_archiver" % switched) is not True:
        assert time.time() < deadline, (switched, node.wal_keys())
        time.sleep(0.5)
    target = node.root / "after-rollback" / "data"
    target.parent.mkdir()
    os.chown(target.parent, pwd.getpwnam("postgres").pw_uid, -1)
    expected = "SELECT count(*) = %d AND sum(k) = %d FROM ticks" % (len(original), sum(original))
    code, report = node.cli("drill", "--target", target, "--drill-port", free_port(),
                            "--point", "latest", "--pg-bindir", node.pg.bindir,
                            "--check-sql", expected)
    assert code == 0 and report["success"] is True, report


def test_a_state_file_the_postgres_user_put_there_is_never_acted_on(node):
    """A state the PostgreSQL user wrote (a plan, a staged copy and a verify that passed, all
    forged), a link put in its place, a state in a directory that user owns, or one left
    beside the copy where earlier versions kept it: each is refused before any stage runs,
    and the live cluster is not touched."""
    victim = Path(str(node.pg.datadir) + ".victim.json")
    victim.write_text("{}")
    postgres = pwd.getpwnam("postgres")
    theirs = Path(str(node.pg.datadir) + ".forged")  # the PostgreSQL user's directory
    theirs.mkdir()
    os.chown(str(theirs), postgres.pw_uid, postgres.pw_gid)
    legacy = Path(str(staging(node)) + ".restore.json")
    forgery = json.dumps({
        "version": 1, "plan": {"point": "latest", "backup_id": "X"},
        "staged": {"backup_id": "X", "directory": str(staging(node))},
        "verified": {"ok": True, "backup_id": "X", "checks": [], "postmaster_pid": 1}})
    pid = node.pg.pid()
    cases = {"file": (node.state_dir / "forged.json", "pgdr did not write it"),
             "link": (node.state_dir / "forged.json", "never followed"),
             "their directory": (theirs / "forged.json", "is not private"),
             "legacy": (None, "now reads")}
    for kind, (forged, expected) in cases.items():
        if kind == "link":
            forged.unlink()
            forged.symlink_to(victim)
        elif kind == "legacy":
            legacy.write_text(forgery)
        else:
            forged.write_text(forgery)
            os.chown(str(forged), postgres.pw_uid, postgres.pw_gid)
        extra = ["-e", "pgdr_restore_state_file=%s" % forged] if forged else []
        cut = node.play("restore", "--tags", "cutover", *extra)
        text = " ".join(cut.output.split())
        assert cut.rc != 0 and expected in text, (kind, cut)
        if kind != "legacy":
            assert "restore_state_invalid" in text, (kind, cut)
        assert cut.task("Cut over on the node") == [], cut
        assert node.pg.pid() == pid and node.pg.is_running()
        assert not list(node.pg.datadir.parent.glob("data.pre-restore-*"))
    assert victim.read_text() == "{}" and legacy.read_text() == forgery
    for leftover in (node.state_dir / "forged.json", legacy, victim):
        leftover.unlink()
    shutil.rmtree(str(theirs))


def test_a_cutover_that_stopped_half_way_is_never_reported_as_done(node):
    """A cutover interrupted while it moved the data directories left 'phase: moving' on
    record. Before, the next run reported it as cut over and skipped every stage. Now every
    run fails and says what to do; rollback is still allowed, and refuses when there is
    nothing to move back (the live directory is not moved aside)."""
    path = state_path(node)
    before = path.read_bytes()
    state = json.loads(before)
    kept = "%s.pre-restore-20261205T000000Z" % node.pg.datadir  # never created
    state["cutover"] = {"active": True, "phase": "moving", "at": "20261205T000000Z",
                        "kept": kept, "point": state["plan"]["point"],
                        "backup_id": state["plan"]["backup_id"]}
    path.write_text(json.dumps(state))
    pid = node.pg.pid()
    aside = sorted(node.pg.datadir.parent.glob("data.rolled-back-*"))
    try:
        again = node.play("restore")
        text = " ".join(again.output.split())
        assert again.rc != 0 and "did not finish" in text and kept in text, again
        assert "was cut over at" not in text, again
        back = node.play("restore", "--tags", "rollback")
        text = " ".join(back.output.split())
        assert back.rc != 0 and "nothing to roll back to" in text, back
        assert node.pg.pid() == pid and node.pg.is_running()
        assert sorted(node.pg.datadir.parent.glob("data.rolled-back-*")) == aside
        assert json.loads(path.read_text()) == state  # nothing recorded
    finally:
        path.write_bytes(before)
