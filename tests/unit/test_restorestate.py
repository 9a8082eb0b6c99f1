"""The staged restore's state file (restorestate.py): a stage recorded anew drops what
relied on the old record, and the file is written whole, 0600, or not at all."""
import json
import os
import stat

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import restorestate
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import ConfigError

FULL = {"plan": {"point": "latest"}, "staged": {"backup_id": "F1"},
        "recovered": {"port": 5499}, "verified": {"ok": True}, "cutover": {"active": False}}


def test_a_missing_file_is_an_empty_state(tmp_path):
    state = restorestate.RestoreState.load(str(tmp_path / "none.json"))
    assert state.records == {} and state.get("plan", {}) == {}


@pytest.mark.parametrize("body, expected", [("{not json", "is not JSON"),
                                            ("[1, 2]", "holds list, expected a JSON object")])
def test_a_file_that_is_not_a_json_object_is_refused_by_name(tmp_path, body, expected):
    path = tmp_path / "state.json"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        restorestate.RestoreState.load(str(path))
    assert caught.value.code == "restore_state_invalid"
    assert str(path) in caught.value.msg and expected in caught.value.msg


@pytest.mark.parametrize("stage, dropped", [("plan", {"staged", "recovered", "verified"}),
                                            ("staged", {"recovered", "verified"}),
                                            ("recovered", {"verified"}),
                                            ("verified", set())])
def test_a_stage_done_again_drops_the_records_that_relied_on_it(stage, dropped):
    state = restorestate.RestoreState("unused", FULL)
    state.record(stage, {"new": True}, fresh=True)
    assert state.get(stage) == {"new": True}
    assert set(FULL) - set(state.records) == dropped
    assert "cutover" in state.records  # rollback needs it, whatever was redone


def test_a_stage_that_found_its_work_done_keeps_the_later_records():
    state = restorestate.RestoreState("unused", FULL)
    state.record("recovered", {"port": 5499, "again": True}, fresh=False)
    assert state.get("verified") == {"ok": True}


def test_the_file_is_written_whole_and_private(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{}")
    os.chmod(str(path), 0o644)
    state = restorestate.RestoreState(str(path), FULL)
    state.save()
    assert json.loads(path.read_text()) == dict(FULL, version=restorestate.VERSION)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert restorestate.RestoreState.load(str(path)).records == dict(FULL, version=1)


def test_an_unwritable_place_fails_by_name_and_leaves_nothing(tmp_path):
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "state.json"
    with pytest.raises(ConfigError) as caught:
        restorestate.RestoreState(str(path), FULL).save()
    assert caught.value.code == "restore_state_invalid" and str(path) in caught.value.msg
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_the_directory_is_created_with_the_first_record(tmp_path):
    path = tmp_path / "new" / "state.json"
    restorestate.RestoreState(str(path), FULL).save()
    assert json.loads(path.read_text())["plan"] == FULL["plan"]


def test_a_link_at_the_state_path_is_never_followed(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps({"verified": {"ok": True}}))
    path = tmp_path / "state.json"
    path.symlink_to(victim)
    with pytest.raises(ConfigError) as caught:
        restorestate.RestoreState.load(str(path))
    assert caught.value.code == "restore_state_invalid" and "link" in caught.value.msg
    restorestate.RestoreState(str(path), {"plan": {}}).save()  # replaces the link itself
    assert not path.is_symlink() and json.loads(victim.read_text()) == {"verified": {"ok": True}}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_state_another_user_put_there_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"verified": {"ok": True}}))
    os.chown(str(path), 65534, 65534)
    with pytest.raises(ConfigError) as caught:
        restorestate.RestoreState.load(str(path))
    assert caught.value.code == "restore_state_invalid"
    assert "pgdr did not write it" in caught.value.msg


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    path = tmp_path / "state.json"
    os.mkfifo(str(path))
    with pytest.raises(ConfigError) as caught:
        restorestate.RestoreState.load(str(path))
    assert "not a regular file" in caught.value.msg


def _refused(path):
    with pytest.raises(ConfigError) as caught:
        restorestate.RestoreState.load(str(path))
    assert caught.value.code == "restore_state_invalid" and "is not private" in caught.value.msg
    with pytest.raises(ConfigError):
        restorestate.RestoreState(str(path), FULL).save()
    return caught.value.msg


def test_a_directory_others_can_write_is_refused_for_reads_and_writes(tmp_path):
    """Whoever can write the directory (or one above it) can swap in a state of their own,
    an older one included: cutover would act on it."""
    shared = tmp_path / "shared"
    (shared / "below").mkdir(parents=True)
    os.chmod(str(shared), 0o775)
    msg = _refused(shared / "below" / "state.json")
    assert str(shared) + " is writable by group or others (mode 775)" in msg
    assert not (shared / "below" / "state.json").exists()


def test_a_sticky_directory_counts_as_private(tmp_path):
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(str(sticky), 0o1777)
    path = sticky / "state" / "state.json"
    restorestate.RestoreState(str(path), FULL).save()
    assert restorestate.RestoreState.load(str(path)).records == dict(FULL, version=1)


def test_a_link_to_an_unsafe_directory_is_followed_in_the_check(tmp_path):
    """The path as named may look private while the directory it resolves to is not."""
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    os.chmod(str(unsafe), 0o777)
    (tmp_path / "private").mkdir(mode=0o700)
    (tmp_path / "private" / "link").symlink_to(unsafe)
    assert "is writable by group or others" in _refused(tmp_path / "private" / "link" / "s.json")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_directory_another_user_owns_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(str(theirs), 65534, 65534)
    assert "is owned by uid 65534" in _refused(theirs / "state.json")


def test_the_directories_created_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "a" / "b" / "state.json"
        restorestate.RestoreState(str(path), FULL).save()
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(os.stat(str(directory)).st_mode) == 0o700
