"""Snapshot providers without a btrfs filesystem: the volumes, the mount table, the
scrub of a clone, and how the provider's commands fail (tests/integration/test_snapshots.py
runs them on real btrfs)."""
import os
import time

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options, snapshots
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    ConfigError, PgdrError)

MOUNTINFO = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 0:35 / /srv/bt rw,relatime shared:20 - btrfs /dev/loop0 rw,user_subvol_rm_allowed
41 22 0:36 / /srv/with\\040space rw,relatime shared:21 - tmpfs tmpfs rw
42 22 0:37 / /srv/données rw,relatime shared:22 - xfs /dev/vdb rw
"""


@pytest.fixture
def mountinfo(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return str(path)


def settings(**values):
    return options.resolve(dict({"cluster": "main"}, **values), environ={})


def test_volumes_are_the_data_directory_then_each_tablespace(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    spaces = [{"oid": 16400, "location": str(tmp_path / "b")},
              {"oid": 16390, "location": str(tmp_path / "a")},
              {"oid": 16401, "location": str(data / "pg_tblspc" / "inplace")}]
    found = snapshots.volumes(str(data), spaces)
    assert [(v["role"], v["oid"]) for v in found] == [
        ("pgdata", None), ("tablespace", 16390), ("tablespace", 16400), ("tablespace", 16401)]
    assert [snapshots.volume_name(v) for v in found] == [
        "pgdata", "tablespace-16390", "tablespace-16400", "tablespace-16401"]
    # an in-place tablespace's relative location is the data directory's, not the cwd's
    inplace = snapshots.volumes(str(data), [{"oid": 7, "location": "pg_tblspc/7"}])
    assert inplace[1]["path"] == str(data / "pg_tblspc" / "7")


def test_a_tablespace_inside_the_data_directory_is_refused(tmp_path):
    data, snaps = tmp_path / "data", tmp_path / "snaps"
    data.mkdir()
    snaps.mkdir()
    found = snapshots.volumes(str(data), [{"oid": 9, "location": str(data / "ts")}])
    with pytest.raises(ConfigError) as caught:
        snapshots.provider(settings(snapshot_dir=str(snaps))).check(found)
    assert caught.value.code == "snapshot_unsupported"
    assert str(data / "ts") in caught.value.msg and "inside the data directory" in caught.value.msg


def test_the_mount_table_says_which_filesystem_holds_a_path(mountinfo):
    assert snapshots.filesystem("/srv/bt/pgdata", mountinfo)[1:] == ("btrfs", "/dev/loop0")
    assert snapshots.filesystem("/srv/btother", mountinfo)[1] == "ext4"
    assert snapshots.filesystem("/srv/with space/x", mountinfo)[1] == "tmpfs"
    assert snapshots.filesystem("/srv/données/x", mountinfo)[1] == "xfs"
    assert snapshots.is_mount_point("/srv/bt", mountinfo)
    assert not snapshots.is_mount_point("/srv/bt/pgdata", mountinfo)


def test_a_scrubbed_clone_holds_no_link_and_no_runtime_state(tmp_path):
    """Every link goes without being followed (a clone of a live volume points into the
    source: pg_tblspc, a linked pg_wal, a configuration file, a link deep inside), and
    the runtime state a backup leaves out is emptied."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("the source's")
    root = tmp_path / "clone"
    for folder in ("base/1", "global", "pg_tblspc", "pg_replslot/slot", "pg_stat_tmp",
                   "base/pgsql_tmp", "pg_notify", "pg_dynshmem", "pg_serial",
                   "pg_snapshots", "pg_subtrans"):
        (root / folder).mkdir(parents=True)
    (root / "base/1/1234").write_text("data")
    (root / "base/pgsql_tmp/pgsql_tmp1.0").write_text("temp")
    (root / "global/pg_control").write_text("control")
    (root / "postmaster.pid").write_text("4242")
    (root / "pg_stat_tmp/global.stat").write_text("stats")
    (root / "pg_replslot/slot/state").write_text("slot")
    os.symlink(outside, root / "pg_wal")
    os.symlink(outside, root / "pg_tblspc" / "16390")
    os.symlink(outside / "precious", root / "postgresql.conf")
    os.symlink(outside, root / "base/1/deep")
    snapshots.scrub_clone(str(root), pgdata=True)
    links = [os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs
             if os.path.islink(os.path.join(d, n))]
    assert links == []
    assert (outside / "precious").read_text() == "the source's"
    assert sorted(os.listdir(root / "pg_wal")) == ["archive_status"]
    assert os.listdir(root / "pg_replslot") == [] and os.listdir(root / "pg_stat_tmp") == []
    assert not (root / "postmaster.pid").exists() and not (root / "base/pgsql_tmp").exists()
    assert (root / "base/1/1234").read_text() == "data"
    assert (root / "global/pg_control").exists()  # taken out by the restore itself


def test_a_tablespace_clone_keeps_its_files_and_loses_links_and_temporary_files(tmp_path):
    root = tmp_path / "space"
    (root / "PG_15_202209061/16384/pgsql_tmp").mkdir(parents=True)
    (root / "PG_15_202209061/16384/16500").write_text("rows")
    os.symlink("/etc", root / "PG_15_202209061/link")
    snapshots.scrub_clone(str(root), pgdata=False)
    assert sorted(os.listdir(root / "PG_15_202209061/16384")) == ["16500"]
    assert not os.path.lexists(root / "PG_15_202209061/link")


def test_an_unknown_provider_and_a_missing_snapshot_dir_are_refused_by_name():
    with pytest.raises(ConfigError) as caught:
        snapshots.provider(settings(), "zfs")
    assert caught.value.code == "snapshot_config" and "zfs" in caught.value.msg
    with pytest.raises(ConfigError) as caught:
        snapshots.provider(settings()).check([{"role": "pgdata", "oid": None,
                                               "path": "/var/lib/postgresql"}])
    assert caught.value.code == "snapshot_config" and "snapshot_dir" in caught.value.msg


def test_the_provider_reports_what_its_command_said(tmp_path):
    with pytest.raises(PgdrError) as caught:
        snapshots._run(["sh", "-c", "echo no such subvolume >&2; exit 3"], "snapshot /x")
    assert caught.value.code == "snapshot_failed"
    assert "exited 3 (expected 0)" in caught.value.msg
    assert "no such subvolume" in caught.value.msg
    with pytest.raises(PgdrError) as caught:
        snapshots._run([str(tmp_path / "no-such-command")], "snapshot /x")
    assert caught.value.code == "snapshot_failed" and "could not run" in caught.value.msg


def test_a_command_that_hangs_is_killed_with_everything_it_started(tmp_path):
    """A hung snapshot command must not keep a backup in backup mode for good: after the
    timeout its whole process group is killed and the step fails."""
    pidfile = tmp_path / "child"
    with pytest.raises(PgdrError) as caught:
        snapshots._run(["sh", "-c", "sleep 30 & echo $! > %s; wait" % pidfile],
                       "snapshot /x", timeout=1)
    assert "did not finish in 1 s" in caught.value.msg
    child = int(pidfile.read_text())
    with pytest.raises(OSError):
        for dummy in range(50):  # the background sleep went with its group
            os.kill(child, 0)
            time.sleep(0.05)


def test_a_snapshot_that_is_not_a_subvolume_root_is_missing(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    volume = {"snapshot": {"id": "x", "path": str(plain)}}
    assert snapshots.Btrfs.state(volume) == "missing"
    volume["snapshot"]["path"] = str(tmp_path / "gone")
    assert snapshots.Btrfs.state(volume) == "missing"


def command_settings(tmp_path, **commands):
    log = tmp_path / "calls"
    base = {step: f'echo "{step} $PGDR_SNAPSHOT_ID $PGDR_VOLUME_ROLE $PGDR_VOLUME_OID '
                  f'$PGDR_SNAPSHOT_NAME $PGDR_CLONE_PATH" >> {log}'
            for step in ("create", "check", "clone", "delete")}
    base.update(commands)
    return settings(snapshot_provider="command", **dict(
        ("snapshot_%s_command" % k, v) for k, v in base.items())), log


def test_the_command_provider_tells_each_command_what_to_do(tmp_path, monkeypatch):
    """Each step runs once per volume with its environment (and none of pgdr's settings or
    credentials); create's last line is the snapshot's id (its suggested name when it
    prints nothing), checked at once; check answers 0 or 1."""
    monkeypatch.setenv("PGDR_S3_SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    seen = tmp_path / "env"
    conf, log = command_settings(
        tmp_path, create='env >> %s; [ "$PGDR_VOLUME_ROLE" = pgdata ] && { echo noise; '
                         'echo lv-$PGDR_BACKUP_ID; } || true' % seen,
        check='case "$PGDR_SNAPSHOT_ID" in lv-*|main.*) exit 0;; *) exit 1;; esac',
        clone='mkdir "$PGDR_CLONE_PATH"')
    source = snapshots.provider(conf)
    assert source.name == "command" and source.off_host is False
    volumes = [{"role": "pgdata", "oid": None, "path": "/data"},
               {"role": "tablespace", "oid": 16390, "path": "/ts"}]
    source.check(volumes)
    made = []
    source.create("main", "20261206T120000Z-snapshot", volumes, made)
    assert [v["snapshot"]["id"] for v in made] == [
        "lv-20261206T120000Z-snapshot", "main.20261206T120000Z-snapshot.tablespace-16390"]
    env = seen.read_text()
    assert "do-not-leak" not in env
    assert "PGDR_VOLUME_PATH=/ts" in env and "PGDR_VOLUME_OID=16390" in env
    assert "PGDR_SNAPSHOT_NAME=main.20261206T120000Z-snapshot.tablespace-16390" in env
    assert source.state(made[0]) == "complete"
    source.clone(made[0], str(tmp_path / "clone"))
    assert (tmp_path / "clone").is_dir()
    source.delete(made[1])
    assert [line.rstrip() for line in log.read_text().splitlines()] == [
        "delete main.20261206T120000Z-snapshot.tablespace-16390"]
    # an id the check does not find (a stray line printed last): refused at once, with the
    # record left for the backup to remove
    noisy = snapshots.provider(command_settings(tmp_path, create="echo 'Logical volume made.'",
                                                check="exit 1")[0])
    made = []
    with pytest.raises(PgdrError) as caught:
        noisy.create("main", "20261206T120000Z-snapshot", volumes[:1], made)
    assert "does not find it" in caught.value.msg and len(made) == 1


def test_the_command_provider_needs_all_four_commands_and_reports_their_failures(tmp_path):
    conf, log = command_settings(tmp_path, check="exit 3", clone="true",
                                 delete="echo 'lvremove: no such volume' >&2; exit 5")
    source = snapshots.provider(conf)
    volume = {"role": "pgdata", "oid": None, "snapshot": {"id": "lv1"}}
    with pytest.raises(PgdrError) as caught:
        source.state(volume)  # neither 0 (there) nor 1 (gone): a failure, never "missing"
    assert caught.value.code == "snapshot_failed" and "snapshot_check_command exited 3" in \
        caught.value.msg
    with pytest.raises(PgdrError) as caught:
        source.delete(volume)
    assert "no such volume" in caught.value.msg and caught.value.exit_code == 3
    with pytest.raises(PgdrError) as caught:  # exited 0 without making the directory
        source.clone(volume, str(tmp_path / "nothing"))
    assert "created no directory" in caught.value.msg
    with pytest.raises(ConfigError) as caught:
        snapshots.provider(settings(snapshot_provider="command",
                                    snapshot_create_command="true")).check([])
    assert caught.value.code == "snapshot_config"
    assert "snapshot_check_command, snapshot_clone_command, snapshot_delete_command" in \
        caught.value.msg
