"""The staged restore's steps (commands/stage.py) and what they leave in the state file:
nothing vouches for a copy that was not verified as it runs now, and a failed check is on
record before the step fails. pg_ctl and the server are stood in for; the state file is real."""
import json

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import errors, options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import stage
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress

PAUSED = {"up": True, "in_recovery": True, "pause_state": "paused", "timeline": 1,
          "replay_lsn": "0/3000148", "last_replay_time": "2026-12-04 10:00:00+00",
          "postmaster_pid": 4242}
RECORDED = dict((k, PAUSED[k]) for k in stage.RECOVERED_KEYS)


class FakeCtl(object):
    def __init__(self, running, state_file, seen):
        self.is_running, self.state_file, self.seen = running, state_file, seen

    def running(self):
        return self.is_running

    def run(self, *args, **_kwargs):
        self.seen.append(("pg_ctl", args, json.loads(open(self.state_file).read())))

    def stop(self, **_kwargs):
        self.seen.append(("stop",))


@pytest.fixture
def world(tmp_path, monkeypatch):
    path = tmp_path / "copy.restore.json"
    datadir = tmp_path / "copy"
    seen, server = [], {"now": dict(PAUSED), "fail": []}

    def call_as(_user, function, *args):
        for failure in server["fail"]:
            raise failure
        if function is stage._wait_recovery:
            return dict({"data_directory": str(datadir)}, **server["now"])
        if function is stage.instance.log_tail:  # read as the OS user, never as root
            seen.append(("log_tail", args[0]))
            return function(*args)
        raise AssertionError(function)

    monkeypatch.setattr(stage.osuser, "call_as", call_as)
    monkeypatch.setattr(stage.osuser, "switch_args", lambda _user: {})
    monkeypatch.setattr(stage.instance, "PgCtl",
                        lambda *a, **k: FakeCtl(server.get("running", False), str(path), seen))

    def run(step, dry_run=False, engine=None, **params):
        settings = options.resolve(dict(engine or {}, target=str(datadir)), environ={})
        params = dict(dict(state_file=str(path), os_user="", timeout=5), **params)
        return stage.Request(step, **params).run(settings, Progress(), dry_run=dry_run)

    def write(records):
        path.write_text(json.dumps(records))

    def read():
        return json.loads(path.read_text()) if path.exists() else None

    return type("World", (), dict(run=staticmethod(run), write=staticmethod(write),
                                  read=staticmethod(read), seen=seen, server=server))


BEFORE = {"version": 1, "plan": {"point": "latest", "backup_id": "F1", "port": 5499},
          "staged": {"backup_id": "F1"}, "recovered": dict(RECORDED, port=5499, log="x"),
          "verified": {"ok": True, "backup_id": "F1", "checks": []}}


def test_a_copy_about_to_start_loses_its_records_before_pg_ctl_runs(world):
    world.write(BEFORE)
    world.server["fail"].append(errors.PostgresError("stopped", code="recovery_failed",
                                                     stage="recover"))
    with pytest.raises(errors.PostgresError):
        world.run("recover")
    [(command, args, state_at_start)] = world.seen
    assert command == "pg_ctl"
    assert "start" in args
    assert "verified" not in state_at_start and "recovered" not in state_at_start
    assert "verified" not in world.read() and world.read()["staged"] == {"backup_id": "F1"}


def test_a_running_copy_as_recorded_keeps_its_verify(world):
    world.server["running"] = True
    world.write(BEFORE)
    first = world.run("recover")  # BEFORE's log path is not this one: recorded anew
    assert first["changed"] and "verified" not in world.read()
    world.write(dict(world.read(), verified=BEFORE["verified"]))
    again = world.run("recover")
    assert not again["changed"] and world.read()["verified"] == BEFORE["verified"]
    assert world.seen == []  # pg_ctl never started it


def test_a_copy_restarted_behind_pgdrs_back_is_not_the_one_verified(world):
    world.server["running"] = True
    world.write(BEFORE)
    world.run("recover")
    world.write(dict(world.read(), verified=BEFORE["verified"]))
    world.server["now"] = dict(PAUSED, postmaster_pid=5151)
    result = world.run("recover")
    assert result["changed"] and "verified" not in world.read()
    assert world.read()["recovered"]["postmaster_pid"] == 5151


def test_recover_needs_a_staged_copy_and_says_which_step_to_run(world):
    world.write({"version": 1, "plan": BEFORE["plan"]})
    with pytest.raises(errors.ConfigError) as caught:
        world.run("recover")
    assert caught.value.code == "restore_stage_missing"
    assert "--tags plan,stage" in caught.value.msg and world.seen == []


def test_check_mode_without_a_plan_predicts_a_start_and_writes_nothing(world):
    result = world.run("recover", dry_run=True)
    assert result["changed"] and result["started"] and world.read() is None
    assert world.seen == []


def test_verify_records_a_failed_check_before_it_fails(world, monkeypatch):
    world.write(BEFORE)
    checks = [{"name": "connections", "ok": True, "detail": "up"},
              {"name": "no rows", "ok": False, "detail": "returned False"}]
    monkeypatch.setattr(stage.osuser, "call_as", lambda _u, _f, *_a: {
        "ok": False, "checks": checks, "state": PAUSED, "amcheck_installed": []})
    with pytest.raises(errors.ObjectiveMissed) as caught:
        world.run("verify")
    assert caught.value.code == "restore_verify_failed"
    assert "no rows: FAILED (returned False)" in caught.value.msg
    assert world.read()["verified"] == {"ok": False, "backup_id": "F1", "checks": checks,
                                        "postmaster_pid": 4242, "staged_at": None}


def test_recover_never_records_another_server_on_the_copys_port(world):
    """The live cluster answers on the port the copy could not bind: nothing is recorded,
    and the error names both directories."""
    world.server["running"] = True
    world.write(BEFORE)
    world.server["now"] = dict(PAUSED, in_recovery=False, data_directory="/srv/live/data")
    with pytest.raises(errors.ConfigError) as caught:
        world.run("recover")
    assert caught.value.code == "restore_wrong_server"
    assert "/srv/live/data" in caught.value.msg and "copy" in caught.value.msg
    assert world.read()["recovered"] == BEFORE["recovered"]  # untouched
    assert [e[0] for e in world.seen if e[0] == "log_tail"] == ["log_tail"]  # as the OS user


def test_verify_needs_a_recover_record(world):
    world.write(dict((k, v) for k, v in BEFORE.items() if k not in ("recovered", "verified")))
    with pytest.raises(errors.ConfigError) as caught:
        world.run("verify")
    assert caught.value.code == "restore_stage_missing"
    assert "--tags plan,stage,recover" in caught.value.msg


@pytest.mark.parametrize("now, code", [
    ({"data_directory": "/srv/live/data", "postmaster_pid": 4242}, "restore_wrong_server"),
    ({"postmaster_pid": 5151}, "restore_copy_restarted"),
    ({"postmaster_pid": None}, "restore_wrong_server")])
def test_verify_checks_nothing_on_a_server_that_is_not_the_recovered_copy(tmp_path, monkeypatch,
                                                                          now, code):
    """Before any check (amcheck may CREATE EXTENSION), the server must be the copy recover
    recorded: its data directory and its postmaster pid."""
    datadir = str(tmp_path / "copy")
    server = dict({"up": True, "data_directory": datadir}, **now)

    class Server(object):
        def __init__(self, *_a, **_k):
            pass

        def state(self):
            return dict(server)

    monkeypatch.setattr(stage.instance, "Instance", Server)
    monkeypatch.setitem(stage.instance.ACTIONS, "verify", lambda *_a: pytest.fail("checked"))
    settings = options.resolve({"target": datadir, "pg_port": 5499}, environ={})
    params = {"copy": {"datadir": datadir, "postmaster_pid": 4242, "log": None}}
    with pytest.raises(errors.PgdrError) as caught:
        stage._checks(settings, params, False)
    assert caught.value.code == code and "5499" in caught.value.msg


@pytest.mark.parametrize("point, backup, kept", [("latest", "F1", True), ("latest", "F2", False),
                                                 ("immediate", "F1", False)])
def test_another_plan_drops_the_copys_records_the_same_keeps_them(world, monkeypatch, point,
                                                                  backup, kept):
    world.write(dict(BEFORE, cutover={"active": False, "kept": "/old"}))
    monkeypatch.setattr(stage.osuser, "call_as", lambda _u, _f, *_a: {
        "changed": False, "dry_run": False,
        "backup": {"id": backup, "stop_time": "t", "pg_version": 150000},
        "plan": {"kind": point, "timeline": 1, "recovery": {}, "wal_segments": 2},
        "fetch_bytes": 0, "tablespaces": {}})
    world.run("plan", engine={"point": point, "cluster": "main"})
    state = world.read()
    assert ("staged" in state and "verified" in state) is kept
    assert state["cutover"] == {"active": False, "kept": "/old"}  # rollback needs it
    assert state["plan"]["backup_id"] == backup and state["plan"]["point"] == point


def test_verify_judges_the_target_by_the_modules_action_when_the_plan_has_none(world,
                                                                               monkeypatch):
    world.write(dict(BEFORE, plan={"point": "latest", "backup_id": "F1", "port": 5499,
                                   "recovery": {"recovery_target_time": "2026-12-04"}}))
    asked = []
    monkeypatch.setattr(stage.osuser, "call_as", lambda _u, _f, _s, params, _d: asked.append(
        params["target_action"]) or {"ok": True, "checks": [], "state": PAUSED,
                                     "amcheck_installed": []})
    world.run("verify", engine={"target_action": "pause"})
    assert asked == ["pause"]


def test_a_backup_that_completed_after_the_plan_is_staged_but_never_passes_for_the_plans(
        world, monkeypatch):
    """latest chose F1 at plan time; F2 completed before stage ran: the copy holds F2, the
    record says so (cutover refuses it), and the stage fails saying to plan again."""
    world.write({"version": 1, "plan": dict(BEFORE["plan"], point="latest")})
    monkeypatch.setattr(stage.osuser, "call_as", lambda _u, _f, *_a: {
        "changed": True, "backup": {"id": "F2"}, "events": []})
    with pytest.raises(errors.ConfigError) as caught:
        world.run("stage", engine={"cluster": "main"})
    assert caught.value.code == "restore_plan_stale"
    assert "F1" in caught.value.msg and "F2" in caught.value.msg and "plan again" in caught.value.msg
    assert world.read()["staged"]["backup_id"] == "F2"


def test_recover_refuses_a_copy_restored_to_shut_down_at_the_point(world):
    world.write(dict(BEFORE, plan=dict(BEFORE["plan"], action="shutdown")))
    with pytest.raises(errors.ConfigError) as caught:
        world.run("recover")
    assert caught.value.code == "restore_action_shutdown" and "pause" in caught.value.msg
    assert world.seen == [] and world.read()["verified"] == BEFORE["verified"]


def test_a_cutover_under_a_running_patroni_stops_and_moves_nothing(world, tmp_path, monkeypatch):
    """A Patroni member's directory is never stopped or moved behind Patroni's back: it
    would start the server again or fail over. Refused before anything stops, check mode
    included; with Patroni stopped the same checks pass."""
    live = tmp_path / "main"
    live.mkdir()
    (live / "PG_VERSION").write_text("15\n")
    (live / "patroni.dynamic.json").write_text("{}")
    (tmp_path / "copy").mkdir()
    verified = dict(BEFORE, verified=dict(BEFORE["verified"], postmaster_pid=4242))
    world.write(verified)
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [31337])
    for dry_run in (True, False):
        with pytest.raises(errors.ConfigError) as caught:
            world.run("cutover", dry_run=dry_run, live_data=str(live))
        assert caught.value.code == "restore_patroni_running"
        assert "31337" in caught.value.msg and "patronictl remove" in caught.value.msg
        assert world.seen == [] and world.read() == verified
        assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "copy.restore.json", "main"]
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [])
    monkeypatch.setattr(stage.Step, "as_user", lambda _step, function, *args: function(*args))
    monkeypatch.setattr(stage, "_server_state", lambda _settings: PAUSED)
    monkeypatch.setattr(stage, "require_copy", lambda *a, **k: None)
    result = world.run("cutover", dry_run=True, live_data=str(live))
    assert result["changed"] and result["cutover"]["data"] == str(live)


def _patroni_member(tmp_path, name="main"):
    live = tmp_path / name
    live.mkdir()
    (live / "PG_VERSION").write_text("15\n")
    (live / "patroni.dynamic.json").write_text("{}")
    return live


def test_a_patroni_cutover_is_checked_while_patroni_runs_and_leaves_the_dcs_last(
        world, tmp_path, monkeypatch):
    """With patroni_scope the role checks the cutover (check mode) before it stops Patroni:
    the check does not ask whether Patroni runs. The cutover itself asks again, and removes
    the cluster from the DCS after every check and before anything stops or is recorded:
    when patronictl fails, nothing was stopped, moved or recorded."""
    live = _patroni_member(tmp_path)
    (tmp_path / "copy").mkdir()
    verified = dict(BEFORE, verified=dict(BEFORE["verified"], postmaster_pid=4242))
    world.write(verified)
    removed, listed = [], []
    monkeypatch.setattr(stage.patroni, "remove_cluster", lambda *args: removed.append(args))
    monkeypatch.setattr(stage.patroni, "check_cluster", lambda *args: listed.append(args))
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [31337])
    monkeypatch.setattr(stage.Step, "as_user", lambda _step, function, *args: function(*args))
    monkeypatch.setattr(stage, "_server_state", lambda _settings: PAUSED)
    monkeypatch.setattr(stage, "require_copy", lambda *a, **k: None)
    checked = world.run("cutover", dry_run=True, live_data=str(live), patroni_scope="molecule")
    assert checked["changed"] and checked["cutover"]["patroni_scope"] == "molecule"
    assert listed == [("patronictl", "/etc/patroni/patroni.yml", "molecule")] and removed == []
    with pytest.raises(errors.ConfigError) as caught:  # Patroni still runs: no real cutover
        world.run("cutover", live_data=str(live), patroni_scope="molecule")
    assert caught.value.code == "restore_patroni_running"
    assert removed == [] and world.seen == [] and world.read() == verified

    def refused(*_args):
        raise errors.ConfigError("patronictl failed", code="restore_patroni_dcs", stage="cutover")

    monkeypatch.setattr(stage.patroni, "daemons", lambda: [])
    monkeypatch.setattr(stage.patroni, "remove_cluster", refused)
    with pytest.raises(errors.ConfigError) as caught:
        world.run("cutover", live_data=str(live), patroni_scope="molecule",
                  patronictl="/opt/patroni/bin/patronictl")
    assert caught.value.code == "restore_patroni_dcs"
    assert world.seen == [] and world.read() == verified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "copy.restore.json", "main"]


def test_a_cutover_never_removes_a_patroni_cluster_its_directory_is_not_part_of(
        world, tmp_path, monkeypatch):
    live = tmp_path / "main"
    live.mkdir()
    (live / "PG_VERSION").write_text("15\n")
    (tmp_path / "copy").mkdir()
    world.write(BEFORE)
    monkeypatch.setattr(stage.patroni, "remove_cluster", lambda *args: pytest.fail("removed"))
    for dry_run in (True, False):
        with pytest.raises(errors.ConfigError) as caught:
            world.run("cutover", dry_run=dry_run, live_data=str(live), patroni_scope="other")
        assert caught.value.code == "restore_cutover_blocked"
        assert "patroni_scope is other" in caught.value.msg and str(live) in caught.value.msg
        assert world.seen == [] and world.read() == BEFORE


def test_a_patroni_replica_is_set_aside_for_patroni_to_build_once(world, tmp_path, monkeypatch):
    """standby_source patroni: Patroni stopped, the replica's directory is only kept aside
    (its Patroni builds it when it starts); the same rebuild again changes nothing, even
    while Patroni is still building it, and Patroni running over a kept directory refuses."""
    replica = _patroni_member(tmp_path, "copy")  # the world's target directory
    params = dict(primary_host="pg1", standby_source="patroni", rebuild_for="20261207T120000Z")
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [31337])
    with pytest.raises(errors.ConfigError) as caught:
        world.run("standby", **params)
    assert caught.value.code == "restore_patroni_running" and replica.exists()
    # the role's check before the cutover: Patroni runs and stops later
    checked = world.run("standby", dry_run=True, patroni_scope="molecule", **params)
    assert checked["changed"] and replica.exists() and world.read() is None
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [])
    predicted = world.run("standby", dry_run=True, **params)
    assert predicted["changed"] and replica.exists() and world.read() is None
    done = world.run("standby", **params)
    kept = tmp_path / ("copy.pre-rebuild-%s" % done["standby"]["at"])
    assert done["changed"] and done["standby"]["kept"] == str(kept)
    assert not replica.exists() and (kept / "patroni.dynamic.json").exists()
    assert world.read()["standby"]["source"] == "patroni"
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [31337])  # Patroni building it
    again = world.run("standby", **params)
    assert not again["changed"] and again["standby"] == done["standby"]


def test_only_a_patroni_members_directory_is_set_aside_for_patroni(world, tmp_path, monkeypatch):
    plain = tmp_path / "copy"  # the world's target directory
    plain.mkdir()
    (plain / "PG_VERSION").write_text("15\n")
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [])
    with pytest.raises(errors.ConfigError) as caught:
        world.run("standby", primary_host="pg1", standby_source="patroni",
                  rebuild_for="20261207T120000Z")
    assert caught.value.code == "restore_standby_unknown" and str(plain) in caught.value.msg
    assert plain.exists() and world.read() is None
