"""The staged restore's cutover (commands/stage.py): every refusal comes before anything
stops or moves, the state says 'moving' before the live cluster stops, and the copy ends up
in the live directory's place with the live configuration and its recovery settings gone.
pg_ctl and the servers are stood in for; the directories and the state file are real."""
import json
import os

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import errors, options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import stage
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress

PID = 4242
VERIFIED = {"version": 1,
            "plan": {"point": "2026-12-05 10:00:00", "backup_id": "F1", "port": 5499},
            "staged": {"backup_id": "F1"},
            "recovered": {"port": 5499, "postmaster_pid": PID},
            "verified": {"ok": True, "backup_id": "F1", "checks": [], "postmaster_pid": PID}}


class FakeCtl(object):
    """pg_ctl of one directory: what it was asked, and the state file at that moment."""

    def __init__(self, world, datadir):
        self.world, self.datadir, self.log = world, datadir, datadir + "/pg_ctl.log"

    def running(self):
        return self.datadir in self.world.up

    def stop(self, **_kwargs):
        self.world.seen.append(("stop", self.datadir, self.world.read()))
        if self.datadir not in self.world.stubborn:
            self.world.up.discard(self.datadir)
        return True

    def run(self, *args, **_kwargs):
        self.world.seen.append((args[-1], self.datadir, self.world.read()))
        if self.datadir in self.world.unstartable:
            with open(self.log, "a") as handle:
                handle.write("FATAL:  could not load pg_hba.conf\n")
            return type("Done", (), {"returncode": 1})
        self.world.up.add(self.datadir)
        return type("Done", (), {"returncode": 0})

    def start(self, _timeout):
        self.run("start")


class World(object):
    def __init__(self, tmp_path, monkeypatch):
        self.path = tmp_path / "state" / "copy.json"
        self.path.parent.mkdir(mode=0o700)
        self.live, self.copy = str(tmp_path / "data"), str(tmp_path / "data.staging")
        for directory, conf in ((self.live, "port = 5432\n"), (self.copy, "port = 5499\n")):
            (tmp_path / directory).mkdir()
            (tmp_path / directory / "postgresql.conf").write_text(conf)
            (tmp_path / directory / "PG_VERSION").write_text("15\n")
        (tmp_path / "data" / "postgresql.auto.conf").write_text("work_mem = '8MB'\n")
        (tmp_path / "data.staging" / "postgresql.auto.conf").write_text(
            "restore_command = 'pgdr wal-fetch %f %p'\n"
            "recovery_target_time = '2026-12-05 10:00:00'\n"
            "recovery_target_action = 'pause'\n")
        (tmp_path / "data.staging" / "pgdr_restore.json").write_text("{}")
        self.up, self.stubborn, self.seen = {self.live, self.copy}, set(), []
        self.unstartable, self.tails, self.recovery_fails = set(), [], False
        self.archive_fails = False
        self.restores, self.restore_errors, self.streams = [], [], True
        self.copy_state = {"up": True, "in_recovery": True, "data_directory": self.copy,
                           "postmaster_pid": PID, "timeline": 1}
        monkeypatch.setattr(stage.osuser, "call_as", self.call_as)
        monkeypatch.setattr(stage.osuser, "switch_args", lambda _user: {})
        monkeypatch.setattr(stage.instance, "PgCtl",
                            lambda _bin, datadir, _log, **_k: FakeCtl(self, datadir))

    def call_as(self, _user, function, *args):
        if function is stage._server_state:
            return dict(self.copy_state)
        if function is stage._wait_recovery:
            # the new cluster starts with the copy's recovery settings: what it was given
            self.seen.append(("recovery", open(self.live + "/postgresql.auto.conf").read()))
            recovering = os.path.exists(self.live + "/recovery.signal")  # a rollback's
            if recovering and self.recovery_fails:
                self.up.discard(self.live)
                raise errors.PostgresError("the restored server stopped during recovery",
                                           code="recovery_failed", stage="recover")
            return {"up": True, "in_recovery": False, "timeline": 3 if recovering else 2,
                    "archive_mode": "on", "data_directory": self.live}
        if function is stage._wait_ready:
            self.seen.append(("ready",))
            return {"up": True, "in_recovery": True}
        if function is stage._wait_streaming:
            self.seen.append(("streaming", args[1]))
            if not self.streams:
                raise errors.PostgresError("the standby does not stream",
                                           code="restore_standby_not_streaming", stage="standbys")
            return {"status": "streaming", "timeline": args[1]}
        if function is stage._standby_plan:  # check mode: the plan only, as the OS user
            self.seen.append(("plan", args[0].target_timeline))
            for error in self.restore_errors:
                raise error
            return {"backup": {"id": "F2"}, "plan": {}}
        if function is stage._restore:  # the repository rebuild, as the OS user
            self.seen.append(("restore", args[0].target))
            self.restores.append(args[0])
            for error in self.restore_errors:
                raise error
            return {"changed": True, "backup": {"id": "F2"}, "events": ["delta restore kept"],
                    "delta": {"kept_bytes": 900, "written_bytes": 100, "fetched_bytes": 80}}
        if function is stage._archive_probe:
            if self.archive_fails:
                raise errors.PostgresError("no segment archived within 30 s",
                                           code="archive_timeout", stage="cutover")
            return {"archived": "000000020000000000000005"}
        if function is stage.instance.log_tail:
            self.tails.append(args[0])  # read as the OS user, never as root
        return function(*args)

    def write(self, records):
        self.path.write_text(json.dumps(records))
        self.path.chmod(0o600)

    def read(self):
        return json.loads(self.path.read_text()) if self.path.exists() else None

    def cutover(self, dry_run=False, step="cutover", **params):
        settings = options.resolve({"target": self.copy, "pg_port": 5432}, environ={})
        params = dict(dict(state_file=str(self.path), os_user="", timeout=5,
                           live_data=self.live, archive_timeout=30), **params)
        return stage.Request(step, **params).run(settings, Progress(), dry_run=dry_run)

    def rollback(self, dry_run=False, **params):
        return self.cutover(dry_run=dry_run, step="rollback", **params)

    def contents(self, directory):
        with open(directory + "/postgresql.conf") as handle:
            return handle.read()


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "_device", lambda _path, _stage: 1)  # one filesystem
    return World(tmp_path, monkeypatch)


def test_the_verified_copy_takes_the_live_directorys_place(world):
    world.write(VERIFIED)
    result = world.cutover()
    assert result["changed"]
    done = world.read()["cutover"]
    assert done["phase"] == "done" and done["timeline"] == 2
    assert done["archived"] == "000000020000000000000005"
    kept = done["kept"]
    assert kept.startswith(world.live + ".pre-restore-")
    # the copy stopped, then the state said moving, then the live cluster stopped
    stops = [(d, s["cutover"]["phase"] if "cutover" in s else None)
             for what, d, s in [e for e in world.seen if e[0] == "stop"]]
    assert stops == [(world.copy, None), (world.live, "moving")]
    # the live directory holds the copy, with the live configuration, and the old one is kept
    with open(world.live + "/postgresql.conf") as handle:
        assert handle.read() == "port = 5432\n"
    with open(kept + "/postgresql.conf") as handle:
        assert handle.read() == "port = 5432\n"
    [given] = [e[1] for e in world.seen if e[0] == "recovery"]
    assert "work_mem = '8MB'" in given  # the live auto.conf
    assert "recovery_target_time = '2026-12-05 10:00:00'" in given
    assert "recovery_target_action = 'promote'" in given and "'pause'" not in given
    with open(world.live + "/postgresql.auto.conf") as handle:
        assert handle.read() == "work_mem = '8MB'\n"  # promoted: the recovery block is gone

    assert not os.path.exists(world.copy) and not os.path.exists(world.live + "/pgdr_restore.json")
    again = world.cutover()
    assert not again["changed"] and world.read()["cutover"] == done


@pytest.mark.parametrize("change, code", [
    (lambda w: w.write(dict(VERIFIED, verified=dict(VERIFIED["verified"], ok=False))),
     "restore_not_verified"),
    (lambda w: w.write(dict(VERIFIED, staged={"backup_id": "F0"})), "restore_not_verified"),
    (lambda w: w.copy_state.update(postmaster_pid=5151), "restore_copy_restarted"),
    (lambda w: w.copy_state.update(up=False), "restore_copy_restarted"),
    (lambda w: w.copy_state.update(data_directory="/srv/other"), "restore_wrong_server"),
    (lambda w: w.write(dict(VERIFIED, cutover={"active": True, "phase": "moving", "kept": "/k"})),
     "restore_cutover_unfinished"),
])
def test_a_refused_cutover_stops_and_moves_nothing(world, change, code):
    world.write(VERIFIED)
    change(world)
    before = world.read()
    with pytest.raises(errors.PgdrError) as caught:
        world.cutover()
    assert caught.value.code == code and caught.value.stage == "cutover", caught.value.msg
    assert world.seen == [] and world.read() == before
    assert world.up == {world.live, world.copy}


def test_directories_that_cannot_be_renamed_into_place_stop_nothing(world, monkeypatch):
    world.write(VERIFIED)
    monkeypatch.setattr(stage, "_device", lambda path, _stage: 2 if path == world.live else 1)
    with pytest.raises(errors.ConfigError) as caught:
        world.cutover()
    assert caught.value.code == "restore_cutover_blocked"
    assert world.live in caught.value.msg and "no mount point" in caught.value.msg
    assert world.seen == [] and "cutover" not in world.read()


def test_a_live_cluster_that_does_not_stop_is_never_moved(world):
    world.write(VERIFIED)
    world.stubborn.add(world.live)
    with pytest.raises(errors.PostgresError) as caught:
        world.cutover()
    assert caught.value.code == "restore_stop_failed" and world.live in caught.value.msg

    assert os.path.exists(world.live + "/postgresql.conf") and not [
        e for e in world.seen if e[0] == "start"]
    assert world.read()["cutover"]["phase"] == "moving"  # and the next run says so


def test_check_mode_checks_and_predicts_without_stopping_anything(world):
    world.write(VERIFIED)
    result = world.cutover(dry_run=True)
    assert result["changed"] and result["cutover"]["data"] == world.live
    assert result["cutover"]["port"] == 5432
    assert world.seen == [] and world.read() == VERIFIED


def test_the_recovery_block_goes_in_and_comes_out_whole(tmp_path):
    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text("a = 1\n")
    stage.set_recovery_block(str(tmp_path), ["x = 1", "y = 2"])
    stage.set_recovery_block(str(tmp_path), ["x = 3"])  # replaced, not added
    assert auto.read_text().count("x =") == 1 and "x = 3" in auto.read_text()
    stage.set_recovery_block(str(tmp_path), None)
    assert auto.read_text() == "a = 1\n"
    assert oct(auto.stat().st_mode & 0o777) == "0o600"


def test_rollback_puts_the_kept_directory_back_and_keeps_the_restored_one(world):
    world.write(VERIFIED)
    kept = world.cutover()["cutover"]["kept"]
    world.seen[:] = []
    back = world.rollback()
    assert back["changed"] and world.contents(world.live) == "port = 5432\n"
    aside = back["rollback"]["kept"]
    assert aside.startswith(world.live + ".rolled-back-") and back["rollback"]["from"] == kept
    assert os.path.isdir(aside) and not os.path.exists(kept)
    assert [e[0] for e in world.seen] == ["stop", "start", "recovery"]
    state = world.read()
    assert state["cutover"]["active"] is False and state["rollback"] == back["rollback"]
    again = world.rollback()
    assert not again["changed"] and world.read() == state


def test_rollback_after_a_cutover_that_stopped_before_moving_anything_touches_nothing(world):
    world.write(dict(VERIFIED, cutover={"active": True, "phase": "moving",
                                        "kept": world.live + ".pre-restore-X"}))
    before = world.read()
    with pytest.raises(errors.ConfigError) as caught:
        world.rollback()
    assert caught.value.code == "restore_rollback_missing"
    assert world.live + ".pre-restore-X" in caught.value.msg
    assert "still the live cluster's" in caught.value.msg
    assert world.seen == [] and world.read() == before and world.contents(world.live)


def test_rollback_after_a_cutover_that_moved_only_the_live_directory_moves_it_back(world):
    kept = world.live + ".pre-restore-X"
    os.rename(world.live, kept)
    world.up.discard(world.live)
    world.write(dict(VERIFIED, cutover={"active": True, "phase": "moving", "kept": kept}))
    back = world.rollback()
    assert back["changed"] and world.contents(world.live) == "port = 5432\n"
    assert [e[0] for e in world.seen] == ["start", "recovery"]  # nothing to stop or keep
    assert not os.path.exists(back["rollback"]["kept"]) and not os.path.exists(kept)


class Clone(object):
    """pg_basebackup: what it was given, and a data directory it writes (or a failure)."""

    def __init__(self, returncode=0):
        self.returncode, self.calls = returncode, []

    def __call__(self, argv, **kwargs):
        self.calls.append((argv, kwargs["env"]))
        if self.returncode == 0:
            data = [a for a in argv if a.startswith("--pgdata=")][0].split("=", 1)[1]
            os.mkdir(data)
            with open(data + "/PG_VERSION", "w") as handle:
                handle.write("15\n")
        return type("Done", (), {"returncode": self.returncode, "stdout": b"could not connect"})


def standby(world, monkeypatch, clone, dry_run=False, **params):
    monkeypatch.setattr(stage.subprocess, "run", clone)
    settings = options.resolve({"target": world.live, "pg_port": 5432, "pg_password": "s3cret",
                                "cluster": "main"}, environ={})
    params = dict(dict(state_file=str(world.path), os_user="", timeout=5,
                       primary_host="pg1", rebuild_for="20261205T140000Z",
                       standby_source="primary"), **params)
    return stage.Request("standby", **params).run(settings, Progress(), dry_run=dry_run)


def test_a_standby_is_kept_aside_cloned_from_the_new_primary_and_started(world, monkeypatch):
    clone = Clone()
    result = standby(world, monkeypatch, clone)
    kept = result["standby"]["kept"]
    assert result["changed"] and kept.startswith(world.live + ".pre-rebuild-")
    assert world.contents(kept) == "port = 5432\n" and os.path.isfile(world.live + "/PG_VERSION")
    [(argv, env)] = clone.calls
    assert "--host=pg1" in argv and "--pgdata=%s" % world.live in argv
    assert "--write-recovery-conf" in argv
    assert env["PGPASSWORD"] == "s3cret" and not [a for a in argv if "s3cret" in a]
    assert [e[0] for e in world.seen] == ["stop", "start", "ready", "streaming"]
    assert world.read()["standby"] == result["standby"]
    again = standby(world, monkeypatch, clone)
    assert not again["changed"] and len(clone.calls) == 1


def test_a_failed_clone_keeps_the_old_standby_aside_and_records_nothing(world, monkeypatch):
    with pytest.raises(errors.PostgresError) as caught:
        standby(world, monkeypatch, Clone(returncode=1))
    assert caught.value.code == "restore_standby_clone_failed"
    assert "could not connect" in caught.value.msg
    [kept] = [p for p in os.listdir(os.path.dirname(world.live)) if ".pre-rebuild-" in p]
    assert kept and world.read() is None
    assert not [e for e in world.seen if e[0] == "start"]


def test_a_standby_is_rebuilt_from_the_repository_in_place_and_recorded_once_it_streams(
        world, monkeypatch):
    clone = Clone()
    result = standby(world, monkeypatch, clone, standby_source="repository", follow_timeline=3)
    [asked] = world.restores
    asked_for = (asked.target, asked.delta, asked.standby, asked.point)
    assert asked_for == (world.live, True, True, "latest")
    assert asked.target_timeline == "3" and asked.backup_id == "latest"
    # the timeline picks the backup and is checked streaming; never pinned in the conf
    assert asked.settings == {"primary_conninfo": "host='pg1' port='5432' user='postgres' "
                                                  "password='s3cret'"}
    assert [e[0] for e in world.seen] == ["stop", "restore", "start", "ready", "streaming"]
    assert ("streaming", 3) in world.seen and clone.calls == []  # the primary is not read
    record = world.read()["standby"]
    assert record == result["standby"] and record["source"] == "repository"
    assert record["kept"] is None and record["backup_id"] == "F2"
    assert record["delta"]["kept_bytes"] == 900
    assert world.contents(world.live) == "port = 5432\n"  # the fake restore kept the files
    again = standby(world, monkeypatch, clone, standby_source="repository", follow_timeline=3)
    assert not again["changed"] and len(world.restores) == 1


def test_a_failed_repository_rebuild_is_neither_started_nor_recorded(world, monkeypatch):
    world.restore_errors.append(errors.PgdrError("S3 refused", code="s3_error", stage="restore"))
    with pytest.raises(errors.PgdrError) as caught:
        standby(world, monkeypatch, Clone(), standby_source="repository")
    assert caught.value.code == "s3_error" and world.read() is None
    assert [e[0] for e in world.seen] == ["stop", "restore"]


def test_a_rebuilt_standby_that_does_not_stream_is_not_recorded(world, monkeypatch):
    world.streams = False
    with pytest.raises(errors.PostgresError) as caught:
        standby(world, monkeypatch, Clone(), standby_source="repository")
    assert caught.value.code == "restore_standby_not_streaming" and world.read() is None
    again = Clone()
    world.streams = True
    assert standby(world, monkeypatch, again, standby_source="repository")["changed"]
    assert len(world.restores) == 2  # not taken for done: rebuilt again


def test_check_mode_rebuild_plans_but_stops_and_writes_nothing(world, monkeypatch):
    result = standby(world, monkeypatch, Clone(), dry_run=True, standby_source="repository",
                     follow_timeline=3)
    assert result["changed"] and result["standby"]["source"] == "repository"
    assert result["standby"]["backup_id"] == "F2"  # what the real run would restore
    assert world.seen == [("plan", "3")] and world.restores == [] and world.read() is None


def test_check_mode_says_when_the_repository_has_no_backup_for_the_standby(world, monkeypatch):
    world.restore_errors.append(errors.NotFound("no complete backup of cluster main",
                                                code="backup_not_found", stage="plan"))
    with pytest.raises(errors.NotFound):
        standby(world, monkeypatch, Clone(), dry_run=True, standby_source="repository")
    assert [e[0] for e in world.seen] == ["plan"] and world.read() is None


@pytest.mark.parametrize("values, expected", [
    ({"host": "pg1", "user": "rep"}, "host='pg1' user='rep'"),
    ({"password": "it's a \\ key"}, "password='it\\'s a \\\\ key'"),
    ({"host": "pg1", "password": None}, "host='pg1'"),
])
def test_conninfo_quotes_as_libpq_reads(values, expected):
    assert stage.libpq_conninfo(**values) == expected


def test_a_standby_without_its_new_primary_is_left_alone(world, monkeypatch):
    with pytest.raises(errors.ConfigError) as caught:
        standby(world, monkeypatch, Clone(), primary_host="")
    assert caught.value.code == "restore_standby_unknown"
    assert world.seen == [] and world.contents(world.live) == "port = 5432\n"


def test_without_require_verify_a_copy_that_is_down_keeps_its_recovery_settings(world):
    world.write(dict((k, v) for k, v in VERIFIED.items() if k != "verified"))
    world.copy_state = {"up": False}
    world.up.discard(world.copy)
    result = world.cutover(require_verify=False)
    assert result["cutover"]["phase"] == "done"
    [given] = [e[1] for e in world.seen if e[0] == "recovery"]
    assert "recovery_target_action = 'promote'" in given and "restore_command" in given


def test_a_standby_that_cannot_start_fails_at_once_with_its_log(world, monkeypatch):
    world.unstartable.add(world.live)
    with pytest.raises(errors.PostgresError) as caught:
        standby(world, monkeypatch, Clone())
    assert caught.value.code == "restore_start_failed" and caught.value.stage == "standbys"
    assert "could not load pg_hba.conf" in caught.value.msg and world.live in caught.value.msg
    assert not [e for e in world.seen if e[0] == "ready"]  # no wait for a server that is down
    assert world.read() is None  # not recorded: the same rebuild runs again
    [kept] = [p for p in os.listdir(os.path.dirname(world.live)) if ".pre-rebuild-" in p]
    assert world.contents(os.path.join(os.path.dirname(world.live), kept)) == "port = 5432\n"


def test_a_rollback_whose_cluster_cannot_start_says_why(world):
    world.write(VERIFIED)
    world.cutover()
    world.unstartable.add(world.live)
    with pytest.raises(errors.PostgresError) as caught:
        world.rollback()
    assert caught.value.code == "restore_start_failed" and caught.value.stage == "rollback"
    assert "could not load pg_hba.conf" in caught.value.msg
    # through the recovery onto a new timeline, then as it is: both read the log's tail
    assert world.tails == [world.live + "/pg_ctl.log"] * 2
    assert not os.path.exists(world.live + "/recovery.signal")
    assert world.contents(world.live) == "port = 5432\n"  # the old cluster is back in place
    assert world.read()["rollback"]["phase"] == "moving" and world.read()["cutover"]["active"]
    world.unstartable.clear()  # the DBA fixed pg_hba.conf
    predicted = world.rollback(dry_run=True)
    assert predicted["changed"] and world.read()["rollback"]["phase"] == "moving"
    resumed = world.rollback()
    assert resumed["changed"] and resumed["rollback"]["phase"] == "done"
    assert world.contents(world.live) == "port = 5432\n"
    assert os.path.isfile(resumed["rollback"]["kept"] + "/PG_VERSION")  # the restored one
    assert not world.read()["cutover"]["active"]
    assert not world.rollback()["changed"]


def test_a_half_done_rollback_with_no_directory_left_changes_nothing(world):
    world.write(dict(VERIFIED, cutover={"active": True, "phase": "done", "kept": "/nowhere"},
                     rollback={"phase": "moving", "at": "20261205T150000Z",
                               "from": world.live + ".gone", "kept": world.live + ".aside"}))
    os.rename(world.live, world.live + ".elsewhere")
    before = world.read()
    with pytest.raises(errors.ConfigError) as caught:
        world.rollback()
    assert caught.value.code == "restore_rollback_missing"
    assert "stopped half-way" in caught.value.msg and world.live in caught.value.msg
    assert world.read() == before and not os.path.exists(world.live)
    assert not [e for e in world.seen if e[0] in ("start", "stop")]


def half_done_rollback(world, **params):
    """A cutover, then a rollback whose cluster did not start: the kept directory is back."""
    world.write(VERIFIED)
    world.cutover()
    world.unstartable.add(world.live)
    with pytest.raises(errors.PostgresError):
        world.rollback(**params)
    world.unstartable.clear()
    return world.read()


def test_no_cutover_while_a_rollback_is_half_done(world):
    before = half_done_rollback(world)
    seen = len(world.seen)
    with pytest.raises(errors.ConfigError) as caught:
        world.cutover()
    assert caught.value.code == "restore_cutover_blocked" and "rollback" in caught.value.msg
    assert world.read() == before and len(world.seen) == seen


def test_a_half_done_rollback_from_a_chosen_directory_resumes_with_it(world):
    kept = world.live + ".chosen"
    world.write(VERIFIED)
    world.cutover()
    os.rename(world.read()["cutover"]["kept"], kept)
    world.unstartable.add(world.live)
    with pytest.raises(errors.PostgresError):
        world.rollback(rollback_from=kept)
    world.unstartable.clear()
    resumed = world.rollback(rollback_from=kept)
    assert resumed["rollback"]["phase"] == "done" and resumed["rollback"]["from"] == kept
    assert world.contents(world.live) == "port = 5432\n" and not os.path.exists(kept)


def test_a_rollback_record_of_an_earlier_cutover_is_not_resumed(world):
    state = half_done_rollback(world)
    # the same directories, but the record belongs to another cutover than the one in place
    state["rollback"]["cutover_at"] = "20261101T000000Z"
    world.write(state)
    before = sorted(os.listdir(os.path.dirname(world.live)))
    with pytest.raises(errors.ConfigError) as caught:
        world.rollback()
    assert caught.value.code == "restore_rollback_missing"  # the cutover's kept one moved back
    assert sorted(os.listdir(os.path.dirname(world.live))) == before


def test_a_half_done_rollback_without_a_live_directory_is_not_resumed(world):
    state = half_done_rollback(world)
    state["plan"].pop("data", None)
    world.write(state)
    before = sorted(os.listdir(os.path.dirname(world.live)))
    with pytest.raises(errors.ConfigError) as caught:
        world.rollback(live_data="")
    assert caught.value.code == "restore_rollback_missing"
    assert sorted(os.listdir(os.path.dirname(world.live))) == before


def test_a_rollback_starts_the_kept_directory_onto_a_timeline_above_the_restored_one(world):
    """The repository holds the restored timeline's history file: the kept directory starts
    through an archive recovery with the copy's restore_command, to no target and on its
    own timeline, so that PostgreSQL promotes it above every archived timeline; the
    settings are gone once it runs."""
    world.write(VERIFIED)
    cut = world.cutover()["cutover"]
    assert cut["restore_command"] == "restore_command = 'pgdr wal-fetch %f %p'"
    world.seen[:] = []
    back = world.rollback()["rollback"]
    [given] = [entry[1] for entry in world.seen if entry[0] == "recovery"]
    assert given.splitlines()[0] == "work_mem = '8MB'"
    assert "restore_command = 'pgdr wal-fetch %f %p'" in given
    assert "recovery_target_timeline = 'current'" in given
    assert "recovery_target_time = ''" in given and "recovery_target_lsn = ''" in given
    assert back["timeline"] == 3 and back["new_timeline"] is True and back["warning"] is None
    assert open(world.live + "/postgresql.auto.conf").read() == "work_mem = '8MB'\n"
    assert not os.path.exists(world.live + "/recovery.signal")
    assert world.read()["rollback"] == back


def test_a_kept_directory_with_wal_not_yet_archived_starts_as_it_is(world):
    """An archive recovery deems every segment archived and may delete one that is not:
    such a directory starts on its old timeline, and the record says why."""
    world.write(VERIFIED)
    kept = world.cutover()["cutover"]["kept"]
    status = os.path.join(kept, "pg_wal", "archive_status")
    os.makedirs(status)
    open(os.path.join(status, "000000010000000000000007.ready"), "w").close()
    world.seen[:] = []
    back = world.rollback()["rollback"]
    [given] = [entry[1] for entry in world.seen if entry[0] == "recovery"]
    assert "restore_command" not in given
    assert back["new_timeline"] is False
    assert "1 WAL segments" in back["warning"] and "000000010000000000000007" in back["warning"]
    assert os.path.exists(world.live + "/pg_wal/archive_status/000000010000000000000007.ready")


def test_a_rollback_whose_recovery_fails_starts_on_its_old_timeline_and_says_so(world):
    """The repository out of reach: wal-fetch stops the recovery. The directory starts as
    it is, without the recovery settings, and the record says so."""
    world.write(VERIFIED)
    world.cutover()
    world.recovery_fails = True
    world.seen[:] = []
    back = world.rollback()["rollback"]
    assert [e[0] for e in world.seen] == ["stop", "start", "recovery", "start", "recovery"]
    assert "restore_command" not in world.seen[-1][1]
    assert back["phase"] == "done" and back["new_timeline"] is False and back["timeline"] == 2
    assert "could not start on a new timeline" in back["warning"]
    assert "stopped during recovery" in back["warning"]
    assert open(world.live + "/postgresql.auto.conf").read() == "work_mem = '8MB'\n"
    assert not os.path.exists(world.live + "/recovery.signal")


def test_a_rollback_from_another_directory_starts_it_as_it_is(world, tmp_path):
    world.write(VERIFIED)
    world.cutover()
    other = tmp_path / "data.other"
    other.mkdir()
    (other / "PG_VERSION").write_text("15\n")
    (other / "postgresql.auto.conf").write_text("")
    back = world.rollback(rollback_from=str(other))["rollback"]
    assert back["new_timeline"] is False and str(other) in back["warning"]
    assert not os.path.exists(world.live + "/recovery.signal")


def test_a_cutover_that_stopped_after_its_promotion_is_rolled_back_onto_a_new_timeline(world):
    """The copy promoted (its timeline's history may be archived) but the cutover stopped
    before it was recorded done: the restore_command was on record before the copy
    started, so the rollback still recovers the kept directory onto a timeline of its own."""
    world.write(VERIFIED)
    world.archive_fails = True
    with pytest.raises(errors.PostgresError):
        world.cutover()
    [started] = [entry[2] for entry in world.seen if entry[0] == "start"]
    assert started["cutover"]["phase"] == "moving"
    assert started["cutover"]["restore_command"] == "restore_command = 'pgdr wal-fetch %f %p'"
    world.archive_fails = False
    world.seen[:] = []
    back = world.rollback()["rollback"]
    [given] = [entry[1] for entry in world.seen if entry[0] == "recovery"]
    assert "recovery_target_timeline = 'current'" in given
    assert back["new_timeline"] is True and back["warning"] is None
    assert back["archived"] == "000000020000000000000005"
    assert not os.path.exists(world.live + "/recovery.signal")


def test_a_new_timeline_that_does_not_reach_the_repository_is_a_warning(world):
    world.write(VERIFIED)
    world.cutover()
    world.archive_fails = True
    back = world.rollback()["rollback"]
    assert back["phase"] == "done" and back["new_timeline"] is True and back["archived"] is None
    assert "did not reach the repository" in back["warning"]
    assert "no segment archived within 30 s" in back["warning"]
