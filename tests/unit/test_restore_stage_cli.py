"""`pgdr restore-stage STAGE`: the staged restore's stages on the command line, with the
options of the group "stage" (the module pg_restore_stage takes the same ones)."""
import io
import json
import os

from ansible_collections.pgdr.postgresql.plugins.module_utils import _adapter
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import cli, options, verbs
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import stage
from ansible_collections.pgdr.postgresql.plugins.modules import pg_restore_stage


def pgdr(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(["restore-stage"] + list(argv), out, err, environ={})
    return code, out.getvalue(), err.getvalue()


def tree(root):
    return sorted(os.path.relpath(os.path.join(d, n), str(root))
                  for d, dirs, files in os.walk(str(root)) for n in dirs + files)


def test_the_stages_are_one_registry():
    assert tuple(stage.STAGES) == options.STAGE_NAMES
    assert options.BY_NAME["stage"].choices == options.STAGE_NAMES


def test_the_module_and_the_verb_take_the_same_engine_options():
    """What argparse accepts for the verb and what the module's argument spec accepts,
    each built by its own code, name the same engine options."""
    parser = verbs.build_parser("restore-stage")
    sub = [a for a in parser._actions if a.dest == "command"][0].choices["restore-stage"]
    flags = set(a.dest for a in sub._actions) - {"help", "config", "credentials", "json",
                                                 "dry_run"}
    spec = _adapter.argument_spec(**pg_restore_stage.ARGS)
    module = set(spec) - set(_adapter.COMMON_EXTRAS) - set(pg_restore_stage.EXTRAS)
    secrets = set(name for name in module if spec[name].get("no_log"))
    assert flags == module - secrets
    assert {"stage", "state_file", "live_data", "rollback_from", "target"} <= flags
    assert "backup_id" not in flags and "pg_password" in secrets
    assert not set(pg_restore_stage.EXTRAS) & set(options.BY_NAME)


def test_read_prints_the_state_file(tmp_path):
    state = tmp_path / "main.json"
    state.write_text(json.dumps({"plan": {"point": "latest", "backup_id": "20261205T100000F"}}))
    state.chmod(0o600)
    code, out, err = pgdr("read", "--state-file", str(state), "--target",
                          str(tmp_path / "staging"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["changed"] is False
    assert result["restore_state"]["plan"]["backup_id"] == "20261205T100000F"
    assert result["summary"] == "read of %s: nothing to change" % (tmp_path / "staging")


def test_rollback_dry_run_reads_its_directories_from_the_flags_and_moves_nothing(tmp_path):
    live, kept = tmp_path / "main", tmp_path / "main.pre-restore-20261205T100000Z"
    for directory in (live, kept):
        directory.mkdir()
        (directory / "PG_VERSION").write_text("15\n")
    (kept / "mine").write_text("the cluster from before the cutover")
    before = tree(tmp_path)
    code, out, err = pgdr("rollback", "--dry-run", "--state-file", str(tmp_path / "s.json"),
                          "--target", str(tmp_path / "main.staging"), "--live-data", str(live),
                          "--rollback-from", str(kept), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["changed"] is True and result["rollback"]["from"] == str(kept)
    assert result["rollback"]["kept"].startswith(str(live) + ".rolled-back-")
    assert tree(tmp_path) == before  # nothing moved, no state file written


def test_rollback_with_nothing_kept_fails_in_one_line_and_touches_nothing(tmp_path):
    live = tmp_path / "main"
    live.mkdir()
    (live / "PG_VERSION").write_text("15\n")
    before = tree(tmp_path)
    code, out, err = pgdr("rollback", "--state-file", str(tmp_path / "s.json"), "--target",
                          str(tmp_path / "main.staging"), "--live-data", str(live),
                          "--rollback-from", str(tmp_path / "absent"))
    assert code == 2 and out == ""
    assert err.startswith("pgdr restore-stage: error [restore_rollback_missing]: ")
    assert str(tmp_path / "absent") in err and err.count("\n") == 1
    assert tree(tmp_path) == before


def test_an_unknown_stage_is_refused_with_the_stages(tmp_path):
    code, _out, err = pgdr("promote", "--state-file", str(tmp_path / "s.json"),
                           "--target", str(tmp_path / "t"))
    assert code == 2
    assert "[config_invalid]: stage='promote' is not one of: read, plan, " in err
    assert os.listdir(str(tmp_path)) == []


def test_a_missing_state_file_setting_is_named(tmp_path):
    code, _out, err = pgdr("read", "--target", str(tmp_path / "t"))
    assert code == 2
    assert "[config_missing]" in err and "--state-file" in err
    assert os.listdir(str(tmp_path)) == []


def test_the_backup_id_is_the_plan_s_not_a_flag(tmp_path):
    code, _out, err = pgdr("plan", "--backup-id", "20261205T100000F", "--state-file",
                           str(tmp_path / "s.json"), "--target", str(tmp_path / "t"))
    assert code == 2 and "[usage_invalid]" in err and "--backup-id" in err


def test_a_rollback_of_a_patroni_member_while_patroni_runs_moves_nothing(tmp_path,
                                                                         monkeypatch):
    live, kept = tmp_path / "main", tmp_path / "main.pre-restore-20261205T100000Z"
    for directory in (live, kept):
        directory.mkdir()
        (directory / "PG_VERSION").write_text("15\n")
        (directory / "patroni.dynamic.json").write_text("{}")
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [4321])
    before = tree(tmp_path)
    code, out, err = pgdr("rollback", "--state-file", str(tmp_path / "s.json"), "--target",
                          str(tmp_path / "main.staging"), "--live-data", str(live),
                          "--rollback-from", str(kept))
    assert code == 2 and out == ""
    assert err.startswith("pgdr restore-stage: error [restore_patroni_running]: no rollback: ")
    assert "4321" in err and err.count("\n") == 1
    assert tree(tmp_path) == before


def test_a_standby_rebuild_into_a_missing_directory_while_patroni_runs_writes_nothing(
        tmp_path, monkeypatch):
    """A replica's directory set aside while its Patroni runs: Patroni may be building a
    replica there, so the standby stage refuses before it restores anything."""
    monkeypatch.setattr(stage.patroni, "daemons", lambda: [4321])
    code, out, err = pgdr("standby", "--state-file", str(tmp_path / "s.json"), "--target",
                          str(tmp_path / "main"), "--primary-host", "10.0.0.1")
    assert code == 2 and out == ""
    assert "[restore_patroni_running]: no standbys: " in err and "is missing" in err
    assert os.listdir(str(tmp_path)) == []


def test_a_patroni_member_is_refused_when_patroni_cannot_be_looked_for(tmp_path, monkeypatch):
    live = tmp_path / "main"
    live.mkdir()
    (live / "PG_VERSION").write_text("15\n")
    (live / "patroni.dynamic.json").write_text("{}")

    def unreadable():
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(stage.patroni, "daemons", unreadable)
    before = tree(tmp_path)
    code, _out, err = pgdr("rollback", "--state-file", str(tmp_path / "s.json"), "--target",
                           str(tmp_path / "main.staging"), "--live-data", str(live),
                           "--rollback-from", str(live))
    assert code == 2 and "[restore_patroni_running]" in err
    assert "cannot be told" in err and "Permission denied" in err
    assert tree(tmp_path) == before
