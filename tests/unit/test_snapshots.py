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


# -- the ebs provider, against moto's EC2 in this process ----------------------------------
def ebs_settings(**values):
    return settings(snapshot_provider="ebs", s3_access_key="testing", s3_secret_key="testing",
                    snapshot_ebs_region="us-east-1", **values)


@pytest.fixture
def ec2():
    moto = pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    with moto.mock_aws():
        yield boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")


def test_ebs_volumes_must_be_mount_points_and_volume_ids():
    for value, wanted in (("srv/pg=vol-0123456789abcdef0", "absolute mount point"),
                          ("/srv/pg=disk1", "EBS volume id"),
                          ("/srv/pg", "not a valid dict")):
        with pytest.raises(ConfigError) as err:
            ebs_settings(snapshot_ebs_volumes=value)
        assert "snapshot_ebs_volumes" in err.value.msg and wanted in err.value.msg, err.value.msg


def test_ebs_snapshots_each_volume_once_and_reports_every_state(ec2):
    data, space = (ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
                   for dummy in range(2))
    source = snapshots.provider(ebs_settings(snapshot_ebs_volumes={
        "/srv/pg": data, "/srv/pg/space": space, "/srv/other": data}))
    found = [{"role": "pgdata", "oid": None, "path": "/srv/pg/15/main"},
             {"role": "tablespace", "oid": 16400, "path": "/srv/pg/space/ts"},
             {"role": "tablespace", "oid": 16401, "path": "/srv/other/ts"}]
    source.check(found)
    made = []
    source.create("main", "20261206T120000Z-snapshot", found, made)
    # the longest mount point names the volume; one EBS volume, one snapshot
    assert [v["snapshot"]["volume_id"] for v in made] == [data, space, data]
    assert made[0]["snapshot"]["id"] == made[2]["snapshot"]["id"] != made[1]["snapshot"]["id"]
    assert [source.state(v) for v in made] == ["complete"] * 3
    left = source.leftovers("main")
    assert list(left) == ["20261206T120000Z-snapshot"]
    assert sorted(v["snapshot"]["id"] for v in left["20261206T120000Z-snapshot"]) == sorted(
        set(v["snapshot"]["id"] for v in made))
    assert source.leftovers("other") == {}
    # what AWS reports later: pending, then an error
    from moto.backends import get_backend
    stored = get_backend("ec2")["123456789012"]["us-east-1"].snapshots
    for status, state in (("pending", "pending"), ("error", "failed"),
                          ("completed", "complete")):
        stored[made[1]["snapshot"]["id"]].status = status
        assert source.state(made[1]) == state
    for volume in made:  # the shared snapshot is deleted once, then found gone
        source.delete(volume)
    assert [source.state(v) for v in made] == ["missing"] * 3


def test_ebs_refuses_unmapped_and_unknown_volumes_before_backup_mode(ec2):
    data = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    found = [{"role": "pgdata", "oid": None, "path": "/srv/pg/15/main"},
             {"role": "tablespace", "oid": 16400, "path": "/srv/space"}]
    for mapping, wanted in (({}, "needs snapshot_ebs_volumes"),
                            ({"/srv/pg": data}, "tablespace-16400 /srv/space lies on none"),
                            ({"/srv/pg": data, "/srv/space": "vol-0123456789abcdef0"},
                             "vol-0123456789abcdef0")):
        with pytest.raises(ConfigError) as err:
            snapshots.provider(ebs_settings(snapshot_ebs_volumes=mapping)).check(found)
        assert err.value.code == "snapshot_config" and wanted in err.value.msg, err.value.msg


def test_an_ebs_snapshot_is_never_cloned_by_pgdr():
    volume = {"snapshot": {"id": "snap-0123456789abcdef0", "mount": "/srv/pg"}}
    source = snapshots.provider(ebs_settings())
    with pytest.raises(PgdrError) as err:
        source.check_clone(volume, "/srv/restore/data")
    assert err.value.code == "snapshot_target_invalid"
    assert "create-volume --snapshot-id snap-0123456789abcdef0" in err.value.msg


def fake_nvme(sysfs, disk, model, serial):
    device = sysfs / disk / "device"
    device.mkdir(parents=True)
    (device / "model").write_text(model + "\n")
    (device / "serial").write_text(serial + "\n")


def test_an_nvme_ebs_device_names_its_volume(tmp_path):
    fake_nvme(tmp_path, "nvme1n1", "Amazon Elastic Block Store", "vol0123456789abcdef0")
    fake_nvme(tmp_path, "nvme2n1", "Amazon EC2 NVMe Instance Storage", "AWS1234")
    assert snapshots.ebs_volume_of_device("/dev/nvme1n1", str(tmp_path)) == \
        "vol-0123456789abcdef0"
    assert snapshots.ebs_volume_of_device("/dev/nvme1n1p2", str(tmp_path)) == \
        "vol-0123456789abcdef0"
    assert snapshots.ebs_volume_of_device("/dev/nvme2n1", str(tmp_path)) is None
    assert snapshots.ebs_volume_of_device("/dev/nvme3n1", str(tmp_path)) is None
    assert snapshots.ebs_volume_of_device("/dev/xvdf", str(tmp_path)) is None


def test_ebs_refuses_a_mapping_the_device_contradicts(ec2, tmp_path, monkeypatch):
    data = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    fake_nvme(tmp_path, "nvme1n1", "Amazon Elastic Block Store", "vol0123456789abcdef0")
    monkeypatch.setattr(snapshots.Ebs, "SYSFS", str(tmp_path))
    monkeypatch.setattr(snapshots, "filesystem", lambda path: ("/srv/pg", "xfs", "/dev/nvme1n1"))
    source = snapshots.provider(ebs_settings(snapshot_ebs_volumes={"/srv/pg": data}))
    with pytest.raises(ConfigError) as err:
        source.check([{"role": "pgdata", "oid": None, "path": "/srv/pg/15/main"}])
    assert err.value.code == "snapshot_config"
    assert "maps /srv/pg to %s" % data in err.value.msg
    assert "EBS volume vol-0123456789abcdef0" in err.value.msg


def test_a_snapshot_other_credentials_cannot_see_is_never_taken_for_gone(ec2):
    data = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    source = snapshots.provider(ebs_settings(snapshot_ebs_volumes={"/srv/pg": data}))
    made = []
    source.create("main", "20261206T120000Z-snapshot",
                  [{"role": "pgdata", "oid": None, "path": "/srv/pg/15/main"}], made)
    record = made[0]["snapshot"]
    assert (record["region"], record["owner"]) == ("us-east-1", "123456789012")
    source.delete(made[0])
    assert source.state(made[0]) == "missing"
    record["owner"] = "210987654321"  # taken by another account
    with pytest.raises(PgdrError) as err:
        source.state(made[0])
    assert err.value.code == "snapshot_failed" and "210987654321" in err.value.msg


class FakeCatalog(object):
    def __init__(self, manifests, fail_write=False):
        self.pending_snapshots = list(manifests)
        self.fail_write, self.settled = fail_write, []

    def settle_snapshot(self, manifest, state, why=None, write=True):
        if self.fail_write and write:
            raise PgdrError("AccessDenied on PutObject", code="s3_error")
        manifest["snapshot"].update(state=state, settled={"why": why})
        self.settled.append((manifest["id"], state, write))


class Progress(object):
    def __init__(self):
        self.lines = []

    def event(self, line):
        self.lines.append(line)


def test_settle_records_what_the_provider_says_and_survives_a_failed_write(monkeypatch):
    answers = {"a": ["complete", "complete"], "b": ["complete", "pending"],
               "c": ["complete", "failed"], "d": ["missing", "complete"],
               "e": ["missing", "complete"]}
    now = time.time()

    def manifest(backup_id):
        # e ended a minute ago: EC2 may not list its snapshots yet; the others long ago
        ended = now - (60 if backup_id == "e" else 2 * snapshots.SETTLE_MISSING_AFTER)
        return {"id": backup_id, "host": "elsewhere", "stop_epoch": ended, "snapshot": {
            "provider": "ebs", "off_host": True, "state": "pending", "volumes": [
                {"snapshot": {"id": "%s-%d" % (backup_id, n)}} for n in range(2)]}}
    monkeypatch.setattr(snapshots.Ebs, "state", lambda self, volume: answers[
        volume["snapshot"]["id"][0]][int(volume["snapshot"]["id"][-1])])
    found = FakeCatalog([manifest(i) for i in "abcde"])
    progress = Progress()
    changed = snapshots.settle(ebs_settings(), found, progress, now=now)
    assert changed == {"a": "complete", "c": "failed", "d": "failed"}
    assert found.settled == [("a", "complete", True), ("c", "failed", True),
                             ("d", "failed", True)]
    dry = FakeCatalog([manifest("a")])
    assert snapshots.settle(ebs_settings(), dry, Progress(), write=False) == {"a": "complete"}
    assert dry.settled == [("a", "complete", False)]
    broken, progress = FakeCatalog([manifest("a")], fail_write=True), Progress()
    assert snapshots.settle(ebs_settings(), broken, progress) == {}
    assert "cannot be recorded: AccessDenied" in progress.lines[-1]
