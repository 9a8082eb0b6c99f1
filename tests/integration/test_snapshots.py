"""Snapshot backups on real btrfs (a loop device): the data directory and a tablespace are
subvolumes, the backup's manifest and WAL go to SeaweedFS, and every restore is started
and compared table by table with the source (issue 16)."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from lab.lab import PgCluster, free_port
from tests.integration.pgdr_run import (PGDR, archive_everything, archiving_cluster,
                                        checksums, postgres_dir, restore_args,
                                        wait_until_promoted, write_rows)

KILLED = (-signal.SIGKILL, 128 + signal.SIGKILL)
# sparse: only what is written takes room on the host. Large enough for a cluster, its
# snapshots and one restored copy at a time, whatever the machine's speed
LOOP_SIZE = "8G"


def _run(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def subvolume(path):
    _run("btrfs", "subvolume", "create", str(path))
    shutil.chown(path, "postgres", "postgres")
    os.chmod(path, 0o700)
    return path


def drop(path):
    """Remove a directory that may be (or hold) subvolumes."""
    if not os.path.lexists(path):
        return
    if os.lstat(path).st_ino == 256:
        for inner in sorted(_run("find", str(path), "-mindepth", "1", "-inum", "256",
                                 "-type", "d").stdout.split(), reverse=True):
            _run("btrfs", "subvolume", "delete", inner, check=False)
        _run("btrfs", "subvolume", "delete", str(path))
    else:
        shutil.rmtree(path)


@pytest.fixture
def btrfs(workdir):
    """A btrfs filesystem on a sparse loop file, mounted at workdir/bt (postgres may
    remove its own subvolumes); unmounted and removed after the test."""
    image, mount = workdir / "btrfs.img", workdir / "bt"
    _run("truncate", "-s", LOOP_SIZE, str(image))
    _run("mkfs.btrfs", "-q", str(image))
    mount.mkdir()
    _run("mount", "-o", "loop,user_subvol_rm_allowed", str(image), str(mount))
    os.chmod(mount, 0o755)
    try:
        yield mount
    finally:
        subprocess.run(["pkill", "-9", "-f", str(mount)], check=False)
        time.sleep(0.5)
        _run("umount", "-l", str(mount), check=False)
        image.unlink()


@pytest.fixture
def snapshotted(pg_cluster, workdir, seaweed, bucket, btrfs):
    """An archiving PostgreSQL 15 whose data directory is a btrfs subvolume and which has
    a tablespace on another; snapshot_dir beside them. (cluster, repo, btrfs mount)."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    pg.stop()
    data = subvolume(btrfs / "pgdata")
    _run("cp", "-a", f"{pg.datadir}/.", str(data))
    pg.datadir = data
    pg.start()
    space = subvolume(btrfs / "space")
    postgres_dir(btrfs / "snaps")
    pg.psql(f"CREATE TABLESPACE far LOCATION '{space}'")
    pg.psql("CREATE TABLE far (k int, v text) TABLESPACE far")
    pg.psql("INSERT INTO far SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    pg.psql("CREATE DATABASE bench")
    pg.pgbench("-i", "-s", "2", "bench")
    repo.settings.update(pg_data=data, snapshot_dir=btrfs / "snaps")
    repo.write()
    return pg, repo, btrfs


def pgbench_at_rate(pg, seconds):
    """pgbench at a fixed rate: the same amount of data on any machine."""
    return subprocess.Popen(["runuser", "-u", "postgres", "--", str(pg.bindir / "pgbench"),
                             "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-c",
                             "2", "-R", "100", "-T", str(seconds), "bench"], cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def restored(repo, btrfs, label, *args, check=True):
    """Restore into btrfs/<label>/data and start it; (cluster, JSON, stderr) - stopped
    and removed by the caller through finished()."""
    target = btrfs / label / "data"
    copy, extra = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--tablespace-map",
                              f"far={btrfs / label / 'space'}", *args, *extra)
    if check:
        assert code == 0, err
    return copy, code, out, err


def rows_and_sums(copy):
    copy.start()
    try:
        wait_until_promoted(copy)
        count, top = copy.psql("SELECT count(*), coalesce(max(k), 0) FROM ticks").split("|")
        assert count == top, (count, top)  # rows 1..top, no hole
        return int(top), checksums(copy)
    finally:
        copy.stop()


def backed_up(pg, repo, *kinds):
    """Ten rows before each backup of these kinds, ten after the last, all archived:
    (stamps of the rows, [backup ids])."""
    stamps, ids = {}, []
    for kind in kinds:
        write_rows(pg, len(stamps) + 1, len(stamps) + 10, stamps)
        code, out, err = repo.run("backup", "--type", kind)
        assert code == 0, err
        ids.append(out["backup"]["id"])
    write_rows(pg, len(stamps) + 1, len(stamps) + 10, stamps)
    archive_everything(pg)
    return stamps, ids


def restored_to_lsn(repo, workdir, label, backup_id, lsn):
    """Restore backup_id to an LSN into workdir/label (the tablespace beside it), start
    it: (rows, checksums)."""
    target = workdir / label / "data"
    copy, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--backup-id", backup_id,
                              "--point", f"lsn:{lsn}", "--tablespace-map",
                              f"far={workdir / label / 'space'}", *args)
    assert code == 0, err
    return rows_and_sums(copy)


def finished(copy):
    """A restored copy stopped and removed: the loop device holds one at a time."""
    drop(copy.datadir.parent)


def checkpoints(pg):
    return pg.psql("SELECT checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter")


def snapshot_state(btrfs, seaweed, bucket):
    listed = seaweed.client().list_objects_v2(Bucket=bucket, Prefix="main/")
    stored = sorted(o["Key"] for o in listed.get("Contents", [])
                    if "/wal/" not in o["Key"] and "/lease/" not in o["Key"])
    return stored, sorted(os.listdir(btrfs / "snaps"))


def test_a_snapshot_backup_under_load_restores_exactly_to_every_kind_of_point(snapshotted):
    pg, repo, btrfs = snapshotted
    stamps = {}
    write_rows(pg, 1, 30, stamps)
    load = pgbench_at_rate(pg, 6)
    time.sleep(1.5)
    code, out, err = repo.run("backup", "--type", "snapshot")
    load.wait()
    assert code == 0, err
    backup = out["backup"]
    assert backup["type"] == "snapshot" and backup["snapshot"]["provider"] == "btrfs"
    volumes = backup["snapshot"]["volumes"]
    assert [v["role"] for v in volumes] == ["pgdata", "tablespace"], volumes
    for volume in volumes:  # read-only snapshots in snapshot_dir
        assert os.path.dirname(volume["snapshot"]["path"]) == str(btrfs / "snaps")
        flags = _run("btrfs", "property", "get", volume["snapshot"]["path"], "ro").stdout
        assert "ro=true" in flags, flags
    at_backup = checksums(pg)["bench"]  # pgbench has stopped
    write_rows(pg, 31, 90, stamps)
    archive_everything(pg)
    source = checksums(pg)

    # info lists it apart from the repository's backups, with what it is not
    code, info, err = repo.run("info")
    assert code == 0, err
    assert [s["id"] for s in info["snapshots"]] == [backup["id"]]
    assert info["backups"] == [] and "not disaster recovery" in info["snapshots"][0]["note"]

    # its own consistency point (its id as the point, as restore.yml -e point=ID gives
    # it): every row committed before the backup started
    copy, code, out, err = restored(repo, btrfs, "at-backup", "--point", backup["id"])
    assert out["backup"]["id"] == backup["id"]
    rows, sums = rows_and_sums(copy)
    finished(copy)
    assert rows >= 30, rows
    assert sums["postgres"]["public.far"] == source["postgres"]["public.far"]
    assert sums["bench"]["public.pgbench_branches"][0] == at_backup["public.pgbench_branches"][0]
    # then points after it, from the snapshot and the archive; the last: every table equal
    for label, point, expected in (("lsn", f"lsn:{stamps[50]['lsn']}", 50),
                                   ("xid", f"xid:{stamps[60]['xid']}", 60),
                                   ("time", "time:" + stamps[75]["commit"].isoformat(), 75),
                                   ("last", f"lsn:{stamps[90]['lsn']}", 90)):
        copy, code, out, err = restored(repo, btrfs, label, "--backup-id", backup["id"],
                                        "--point", point)
        rows, sums = rows_and_sums(copy)
        finished(copy)
        assert rows == expected, (label, rows, out["plan"])
        assert sums["bench"] == source["bench"], label  # pgbench ended before row 31
        if label == "last":
            assert sums == source
    # the source is untouched by all of it
    assert checksums(pg) == source


def test_a_snapshot_backup_killed_after_its_snapshots_is_never_offered(snapshotted):
    pg, repo, btrfs = snapshotted
    cmd = ["runuser", "-u", "postgres", "--", str(PGDR), "backup", "--config",
           str(repo.config), "--credentials", str(repo.credentials), "--json", "--type",
           "snapshot"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False,
                         env=dict(os.environ, PGDR_FAULT_POINT="backup.after_snapshots"))
    assert res.returncode in KILLED, (res.returncode, res.stderr)
    left = sorted(os.listdir(btrfs / "snaps"))
    assert len(left) == 2, left  # the snapshots were taken
    killed_id = left[0].split(".")[1]
    code, info, err = repo.run("info")
    assert code == 0, err
    assert info["snapshots"] == [] and info["backups"] == []
    copy, code, out, err = restored(repo, btrfs, "killed", "--backup-id", killed_id,
                                    check=False)
    assert code == 7 and "backup_not_found" in err, (code, err)
    assert not os.path.exists(copy.datadir)
    # the next snapshot backup runs, and is the one offered
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    code, info, err = repo.run("info")
    assert [s["id"] for s in info["snapshots"]] == [out["backup"]["id"]]
    # cleanup lists the killed backup's snapshots (no manifest names them), then removes
    # exactly those
    repo.settings.update(incomplete_grace_seconds=0)
    repo.write()
    code, listed, err = repo.run("cleanup", "--dry-run")
    assert code == 0, err
    assert listed["snapshots_orphaned"] == {killed_id: left}, listed
    assert len(os.listdir(btrfs / "snaps")) == 4
    code, done, err = repo.run("cleanup")
    assert code == 0, err
    assert sorted(os.listdir(btrfs / "snaps")) == sorted(
        v["snapshot"]["id"] for v in out["backup"]["snapshot"]["volumes"])


def test_what_cannot_be_snapshotted_is_refused_before_backup_mode(snapshotted, seaweed,
                                                                  bucket, workdir):
    pg, repo, btrfs = snapshotted
    before = snapshot_state(btrfs, seaweed, bucket)
    started_with = checkpoints(pg)

    def refused(code_wanted, *extra, **settings):
        saved = dict(repo.settings)
        repo.settings.update(settings)
        for key in [k for k, v in settings.items() if v is None]:
            del repo.settings[key]
        repo.write()
        try:
            code, out, err = repo.run("backup", "--type", "snapshot", *extra)
        finally:
            repo.settings.clear()
            repo.settings.update(saved)
            repo.write()
        assert code == 2 and code_wanted in err, (code, err)
        # never in backup mode: pg_backup_start's checkpoint was never requested
        assert checkpoints(pg) == started_with
        assert snapshot_state(btrfs, seaweed, bucket) == before
        return err

    err = refused("snapshot_config", snapshot_dir=None)
    assert "snapshot_dir" in err
    inside = postgres_dir(btrfs / "pgdata" / "snaps")
    err = refused("snapshot_config", snapshot_dir=inside)
    assert str(inside) in err
    inside.rmdir()
    elsewhere = postgres_dir(workdir / "snaps-elsewhere")
    refused("snapshot_config", snapshot_dir=elsewhere)
    nested = subvolume(btrfs / "pgdata" / "nested")
    err = refused("snapshot_unsupported")
    assert str(nested) in err
    err = refused("snapshot_unsupported", "--dry-run")  # check mode refuses the same
    drop(nested)
    # a tablespace in a plain directory of the filesystem
    plain = postgres_dir(btrfs / "plain")
    pg.psql(f"CREATE TABLESPACE plain LOCATION '{plain}'")
    err = refused("snapshot_unsupported")
    assert str(plain) in err and "subvolume" in err
    pg.psql("DROP TABLESPACE plain")


def test_a_snapshot_restore_refuses_before_writing_and_never_touches_the_source(
        snapshotted, workdir):
    pg, repo, btrfs = snapshotted
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    backup = out["backup"]
    source = checksums(pg)

    def refused(target, *extra):
        before = _tree(target)
        copy, args = restore_args(15, target) if not target.exists() else (None, [])
        code, out, err = repo.run("restore", "--target", target, "--backup-id",
                                  backup["id"], "--tablespace-map",
                                  f"far={target.parent / 'space'}", *extra, *args)
        assert code in (6, 7), (code, err)
        assert _tree(target) == before
        return err

    busy = postgres_dir(btrfs / "busy" / "data")
    (busy / "keep").write_text("mine")
    assert "target_not_empty" in refused(busy)
    other = postgres_dir(workdir / "not-btrfs" / "data")
    assert "snapshot_target_invalid" in refused(other)
    real = postgres_dir(btrfs / "real")
    os.symlink(real, postgres_dir(btrfs / "linked") / "data")
    assert "snapshot_target_invalid" in refused(btrfs / "linked" / "data")
    postgres_dir(btrfs / "left")
    (btrfs / "left" / "data").mkdir()
    shutil.chown(btrfs / "left" / "data", "postgres")
    postgres_dir(btrfs / "left" / ".data.pgdr-clone")
    (btrfs / "left" / ".data.pgdr-clone" / "x").write_text("kept")
    err = refused(btrfs / "left" / "data")
    assert "snapshot_target_invalid" in err and ".data.pgdr-clone" in err
    assert (btrfs / "left" / ".data.pgdr-clone" / "x").read_text() == "kept"
    assert "snapshot_target_invalid" in refused(postgres_dir(btrfs / "delta" / "data"),
                                                "--delta")
    (postgres_dir(btrfs / "tsbusy" / "space") / "other").write_text("not ours")
    err = refused(btrfs / "tsbusy" / "data")  # its tablespace maps to a busy location
    assert "snapshot_target_invalid" in err and "other" in err, err
    assert (btrfs / "tsbusy" / "space" / "other").read_text() == "not ours"
    assert "target_running" in refused(pg.datadir, "--force")  # the running source
    # a snapshot gone: verify names it, the restore refuses
    _run("btrfs", "subvolume", "delete", backup["snapshot"]["volumes"][1]["snapshot"]["path"])
    code, out, err = repo.run("verify", "--backup-id", backup["id"])
    assert code != 0 and backup["snapshot"]["volumes"][1]["snapshot"]["id"] in err, err
    assert "snapshot_missing" in refused(btrfs / "gone" / "data")
    assert checksums(pg) == source


def test_a_snapshot_restore_killed_halfway_never_starts_and_a_rerun_is_exact(snapshotted):
    pg, repo, btrfs = snapshotted
    stamps, (backup_id,) = backed_up(pg, repo, "snapshot")
    source = checksums(pg)
    target = btrfs / "killed" / "data"
    copy, args = restore_args(15, target)
    cmd = ["runuser", "-u", "postgres", "--", str(PGDR), "restore", "--config",
           str(repo.config), "--credentials", str(repo.credentials), "--target",
           str(target), "--backup-id", backup_id, "--point", f"lsn:{stamps[20]['lsn']}",
           "--tablespace-map", f"far={target.parent / 'space'}", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False,
                         env=dict(os.environ, PGDR_FAULT_POINT="restore.fetch"))
    assert res.returncode in KILLED, (res.returncode, res.stderr)
    assert not (target / "global" / "pg_control").exists()  # it does not start
    assert not (target.parent / ".data.pgdr-clone").exists()
    start = subprocess.run(["runuser", "-u", "postgres", "--", str(copy.bindir / "pg_ctl"),
                            "-D", str(target), "-w", "-t", "20", "start"], cwd="/",
                           capture_output=True, text=True, check=False)
    assert start.returncode != 0, start.stdout
    code, out, err = repo.run("restore", "--target", target, "--backup-id", backup_id,
                              "--point", f"lsn:{stamps[20]['lsn']}", "--force",
                              "--tablespace-map", f"far={target.parent / 'space'}", *args)
    assert code == 0, err
    rows, sums = rows_and_sums(copy)
    assert rows == 20 and sums == source
    assert checksums(pg) == source


def _tree(path):
    """Every entry below path (links not followed) with its size: what a refusal leaves."""
    if not os.path.lexists(path):
        return None
    if os.path.islink(path):
        return ("link", os.readlink(path))
    found = []
    for folder, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            full = os.path.join(folder, name)
            found.append((os.path.relpath(full, path), os.lstat(full).st_size
                          if not os.path.isdir(full) else -1))
    return sorted(found)


def test_expire_removes_exactly_the_snapshot_backups_it_listed(snapshotted, seaweed, bucket):
    """Snapshot backups are kept by the same policy, counted on their own: with
    retention_full=1 the newest stays, and the dry run lists exactly what goes (manifest,
    objects and snapshots); a full backup in the repository is not counted against it."""
    pg, repo, btrfs = snapshotted
    made = []
    for dummy in range(3):
        code, out, err = repo.run("backup", "--type", "snapshot")
        assert code == 0, err
        made.append(out["backup"])
    code, out, err = repo.run("backup", "--type", "full")
    assert code == 0, err
    repo.settings.update(retention_full=1)
    repo.write()
    code, listed, err = repo.run("expire", "--dry-run")
    assert code == 0, err
    assert [e["id"] for e in listed["snapshots_expired"]] == [b["id"] for b in made[:2]]
    named = sorted(v["snapshot"]["id"] for b in made[:2] for v in b["snapshot"]["volumes"])
    assert sorted(s for e in listed["snapshots_expired"] for s in e["snapshots"]) == named
    assert listed["snapshots_kept"] == [made[2]["id"]] and listed["expired"] == []
    assert sorted(os.listdir(btrfs / "snaps")) == sorted(
        v["snapshot"]["id"] for b in made for v in b["snapshot"]["volumes"])  # dry: all there
    code, done, err = repo.run("expire")
    assert code == 0, err
    assert done["snapshots_expired"] == listed["snapshots_expired"]
    assert sorted(os.listdir(btrfs / "snaps")) == sorted(
        v["snapshot"]["id"] for v in made[2]["snapshot"]["volumes"])
    stored, dummy = snapshot_state(btrfs, seaweed, bucket)
    assert not [k for k in stored if made[0]["id"] in k or made[1]["id"] in k], stored
    code, info, err = repo.run("info")
    assert [s["id"] for s in info["snapshots"]] == [made[2]["id"]]
    assert len(info["backups"]) == 1
    # the kept one still restores, exactly
    source = checksums(pg)
    copy, code, out, err = restored(repo, btrfs, "kept", "--backup-id", made[2]["id"])
    rows, sums = rows_and_sums(copy)
    finished(copy)
    assert sums["postgres"]["public.far"] == source["postgres"]["public.far"]


def test_a_snapshot_carried_into_the_repository_restores_without_it(snapshotted, workdir):
    """--from-snapshot makes a full backup in the repository from the snapshots alone
    (PostgreSQL is stopped meanwhile: neither it nor its disks are read). With the
    snapshots gone (the host lost), the full restores exactly to a point after it on
    another filesystem, a diff refers to it, and a second run changes nothing."""
    pg, repo, btrfs = snapshotted
    stamps = {}
    write_rows(pg, 1, 20, stamps)
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    snap = out["backup"]
    write_rows(pg, 21, 40, stamps)
    archive_everything(pg)
    pg.stop()
    try:
        code, out, err = repo.run("backup", "--type", "full", "--from-snapshot", snap["id"])
    finally:
        pg.start()
    assert code == 0, err
    full = out["backup"]
    assert full["type"] == "full" and full["from_snapshot"] == snap["id"]
    assert (full["start_lsn"], full["stop_lsn"]) == (snap["start_lsn"], snap["stop_lsn"])
    assert full["stored_size"] > 1024 * 1024  # the data, not only the WAL
    # again, by id and as the schedule names it (latest): the same full, nothing new
    for name in (snap["id"], "latest"):
        code, again, err = repo.run("backup", "--type", "full", "--from-snapshot", name)
        assert code == 0 and again["changed"] is False, (name, err, again)
        assert again["backup"]["id"] == full["id"], name
    for volume in snap["snapshot"]["volumes"]:  # the host's disks lost
        _run("btrfs", "property", "set", "-ts", volume["snapshot"]["path"], "ro", "false")
        _run("btrfs", "subvolume", "delete", volume["snapshot"]["path"])
    source = checksums(pg)
    rows, sums = restored_to_lsn(repo, workdir, "from-s3", full["id"], stamps[30]["lsn"])
    assert rows == 30 and sums["postgres"]["public.far"] == source["postgres"]["public.far"]
    assert sums["bench"] == source["bench"]
    # a diff refers to it, and the chain restores to the source's last row
    write_rows(pg, 41, 50, stamps)
    pg.psql("UPDATE far SET v = 'changed' WHERE k <= 100")
    code, out, err = repo.run("backup", "--type", "diff")
    assert code == 0, err
    assert out["backup"]["reference"] == full["id"]
    source = checksums(pg)
    target = workdir / "chain" / "data"
    copy, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--tablespace-map",
                              f"far={workdir / 'chain' / 'space'}", *args)
    assert code == 0, err
    rows, sums = rows_and_sums(copy)
    assert rows == 50 and sums == source


def test_the_planner_takes_a_snapshot_that_ends_after_the_repository_backup(snapshotted,
                                                                            workdir):
    """Without backup_id, a snapshot backup of this host that ends at or after the
    repository's backup serves the point (the plan says so and why, with a predicted
    RTO); restore_from=repository, or a target the snapshot cannot be cloned into, takes
    the repository's backup instead. Every copy holds exactly the rows up to the point."""
    pg, repo, btrfs = snapshotted
    stamps, (full_id, snap_id) = backed_up(pg, repo, "full", "snapshot")
    point = f"lsn:{stamps[25]['lsn']}"
    copy, code, out, err = restored(repo, btrfs, "auto", "--point", point)
    plan = out["plan"]
    assert plan["backup_id"] == snap_id and plan["source"] == "snapshot", plan
    assert full_id in plan["why"]
    assert plan["predicted_rto"] == {"seconds": None, "basis": "no drill yet"}
    rows, sums = rows_and_sums(copy)
    finished(copy)
    assert rows == 25
    for label, extra in (("told", ["--point", point, "--restore-from", "repository"]),
                         ("elsewhere", ["--point", point]),
                         ("xid", ["--point", f"xid:{stamps[25]['xid']}"])):
        base = workdir if label == "elsewhere" else btrfs
        target = base / label / "data"
        copy, args = restore_args(15, target)
        code, out, err = repo.run("restore", "--target", target, "--tablespace-map",
                                  f"far={base / label / 'space'}", *extra, *args)
        assert code == 0, err
        assert out["plan"]["backup_id"] == full_id and out["plan"]["source"] == "repository"
        if label == "elsewhere":
            assert any(snap_id in note for note in out["plan"]["notes"]), out["plan"]
        rows, sums = rows_and_sums(copy)
        drop(target.parent)
        assert rows == 25, label


def test_the_command_provider_backs_up_restores_and_expires_through_the_users_commands(
        pg_cluster, workdir, seaweed, bucket):
    """snapshot_provider=command with commands that copy directories (what an LVM, ZFS
    or SAN script does by other means): the backup restores exactly to a point after it;
    a create command that fails for one volume fails the backup with nothing stored and
    the snapshot already made deleted again; expire deletes through the delete command."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    space = postgres_dir(workdir / "space")
    store = postgres_dir(workdir / "store")
    pg.psql(f"CREATE TABLESPACE far LOCATION '{space}'")
    pg.psql("CREATE TABLE far (k int, v text) TABLESPACE far")
    pg.psql("INSERT INTO far SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    commands = {
        "snapshot_create_command":
            f'cp -a "$PGDR_VOLUME_PATH" "{store}/$PGDR_SNAPSHOT_NAME" && echo "$PGDR_SNAPSHOT_NAME"',
        "snapshot_check_command": f'test -d "{store}/$PGDR_SNAPSHOT_ID"',
        "snapshot_clone_command": f'cp -a "{store}/$PGDR_SNAPSHOT_ID" "$PGDR_CLONE_PATH"',
        "snapshot_delete_command": f'rm -rf "{store}/$PGDR_SNAPSHOT_ID"'}
    repo.settings.update(snapshot_provider="command", **commands)
    repo.write()
    stamps = {}
    write_rows(pg, 1, 10, stamps)
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    first = out["backup"]
    assert first["snapshot"]["provider"] == "command"
    assert [v["role"] for v in first["snapshot"]["volumes"]] == ["pgdata", "tablespace"]
    write_rows(pg, 11, 20, stamps)
    archive_everything(pg)
    source = checksums(pg)
    rows, sums = restored_to_lsn(repo, workdir, "copy", first["id"], stamps[15]["lsn"])
    assert rows == 15 and sums["postgres"]["public.far"] == source["postgres"]["public.far"]
    assert sorted(os.listdir(store)) == snapshot_ids(first)
    # carried into the repository: btrfs snapshots only, refused before anything is stored
    code, out, err = repo.run("backup", "--type", "full", "--from-snapshot", first["id"])
    assert code == 2 and "snapshot_unsupported" in err, (code, err)
    # a clone command that fails halfway (a directory made, then an error): the restore
    # fails naming it, and nothing of it is left, hidden clone included
    repo.settings["snapshot_clone_command"] = (
        'mkdir "$PGDR_CLONE_PATH" && echo "clone: disk quota exceeded" >&2 && exit 4')
    repo.write()
    target = workdir / "half" / "data"
    copy, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--backup-id", first["id"],
                              "--tablespace-map", f"far={workdir / 'half' / 'space'}", *args)
    assert code == 3 and "disk quota exceeded" in err, (code, err)
    assert sorted(os.listdir(workdir / "half")) == ["data.sock"]  # the test's own socket dir
    repo.settings.update(commands)
    repo.write()

    # a create that fails for the tablespace: nothing stored, the data directory's undone
    repo.settings["snapshot_create_command"] = (
        '[ "$PGDR_VOLUME_ROLE" = tablespace ] && { echo "lvcreate: volume group full" >&2; '
        'exit 5; }; ' + commands["snapshot_create_command"])
    repo.write()
    before = snapshot_state_of(seaweed, bucket)
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 3 and "snapshot_failed" in err and "volume group full" in err, (code, err)
    assert snapshot_state_of(seaweed, bucket) == before
    assert sorted(os.listdir(store)) == snapshot_ids(first)
    repo.settings.update(commands)
    repo.write()

    # a second one, then expire keeps the newest and deletes the first's through the command
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    second = out["backup"]
    repo.settings.update(retention_full=1)
    repo.write()
    code, done, err = repo.run("expire")
    assert code == 0, err
    assert [e["id"] for e in done["snapshots_expired"]] == [first["id"]]
    assert sorted(os.listdir(store)) == snapshot_ids(second)


def snapshot_ids(backup):
    return sorted(v["snapshot"]["id"] for v in backup["snapshot"]["volumes"])


def snapshot_state_of(seaweed, bucket):
    listed = seaweed.client().list_objects_v2(Bucket=bucket, Prefix="main/snapshot/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_drill_of_a_snapshot_backup_restores_starts_checks_and_removes_its_copy(
        snapshotted):
    """A drill told the snapshot backup's id clones it, starts the copy, runs its checks
    and reports the snapshot as its source; nothing of the copy is left after it, and a
    second drill of the same backup succeeds as well (the clones went with the first)."""
    pg, repo, btrfs = snapshotted
    stamps = {}
    write_rows(pg, 1, 12, stamps)
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    snap_id = out["backup"]["id"]
    postgres_dir(btrfs / "drill")
    target = btrfs / "drill" / "data"
    for attempt in (1, 2):
        code, report, err = repo.run(
            "drill", "--target", target, "--drill-port", free_port(), "--point", snap_id,
            "--tablespace-map", f"far={btrfs / 'drill' / 'space'}",
            "--check-sql", "SELECT count(*) = 12 FROM ticks",
            "--check-sql", "SELECT count(*) = 5000 FROM far")
        assert code == 0 and report["success"] is True, (attempt, err, report)
        assert report["backup_id"] == snap_id and report["source"] == "snapshot"
        assert all(c["ok"] for c in report["checks"]), report
        assert not target.exists() or not any(target.iterdir()), attempt


def test_a_snapshot_backup_from_a_standby_restores_exactly(pg_cluster, workdir, seaweed,
                                                           bucket):
    """backup_from=standby with type snapshot, as for the other types: the standby's data
    directory and tablespace are snapshotted (the command provider, copies), the manifest
    says from_standby, and the backup restores exactly to a point after it; the primary
    is never snapshotted."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    space = postgres_dir(workdir / "space")
    pg.psql(f"CREATE TABLESPACE far LOCATION '{space}'")
    pg.psql("CREATE TABLE far (k int, v text) TABLESPACE far")
    pg.psql("INSERT INTO far SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    standby_space = postgres_dir(workdir / "standby-space")
    standby = PgCluster(15, workdir / "standby" / "data", port=free_port())
    postgres_dir(workdir / "standby")
    postgres_dir(standby.socket_dir)
    standby._run([pg.bindir / "pg_basebackup", "-h", "127.0.0.1", "-p", pg.port, "-U",
                  "postgres", "-D", standby.datadir, "-R", "-X", "stream",
                  f"--tablespace-mapping={space}={standby_space}"])
    with open(standby.datadir / "postgresql.auto.conf", "a") as conf:
        conf.write(f"port = {standby.port}\nunix_socket_directories = '{standby.socket_dir}'\n")
    standby.start()
    try:
        store = postgres_dir(workdir / "store")
        repo.settings.update(
            pg_port=standby.port, pg_data=standby.datadir, backup_from="standby",
            snapshot_provider="command",
            snapshot_create_command=f'cp -a "$PGDR_VOLUME_PATH" "{store}/$PGDR_SNAPSHOT_NAME"',
            snapshot_check_command=f'test -d "{store}/$PGDR_SNAPSHOT_ID"',
            snapshot_clone_command=f'cp -a "{store}/$PGDR_SNAPSHOT_ID" "$PGDR_CLONE_PATH"',
            snapshot_delete_command=f'rm -rf "{store}/$PGDR_SNAPSHOT_ID"')
        repo.write()
        stamps = {}
        write_rows(pg, 1, 10, stamps)
        deadline = time.time() + 60
        while standby.psql("SELECT count(*) FROM ticks") != "10":
            assert time.time() < deadline, "the standby did not replay the rows"
            time.sleep(0.2)
        code, out, err = repo.run("backup", "--type", "snapshot")
        assert code == 0, err
        backup = out["backup"]
        assert backup["from_standby"] is True, backup
        assert [v["path"] for v in backup["snapshot"]["volumes"]] == [
            os.path.realpath(standby.datadir), os.path.realpath(standby_space)]
        write_rows(pg, 11, 20, stamps)
        archive_everything(pg)
        source = checksums(pg)
    finally:
        standby.stop()
    # the point lies in the backup's stop segment, after its stop: the standby's copy of
    # that segment ends at the stop, the archive's holds the rest
    segment = [_lsn(lsn) // (16 << 20) for lsn in (stamps[15]["lsn"], backup["stop_lsn"])]
    assert segment[0] == segment[1] and _lsn(stamps[15]["lsn"]) > _lsn(backup["stop_lsn"])
    rows, sums = restored_to_lsn(repo, workdir, "copy", backup["id"], stamps[15]["lsn"])
    assert rows == 15 and sums["postgres"]["public.far"] == source["postgres"]["public.far"]


def _lsn(text):
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def restore_stage(repo, stage, state_file, target, *extra):
    """`pgdr restore-stage STAGE` as root, as pg_restore_stage runs it: (code, JSON, err)."""
    res = subprocess.run([str(PGDR), "restore-stage", stage, "--config", str(repo.config),
                          "--credentials", str(repo.credentials), "--json", "--state-file",
                          str(state_file), "--target", str(target), *map(str, extra)],
                         capture_output=True, text=True, cwd="/", check=False, timeout=600)
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    return res.returncode, json.loads(lines[-1]) if lines else None, res.stderr


def test_a_staged_restore_takes_the_snapshot_backup_and_verifies_the_copy(snapshotted,
                                                                          workdir):
    """The staged restore's plan, stage, recover and verify (restore.yml's stages, through
    the CLI) with a snapshot backup of this host ending after the repository's full: the
    plan takes the snapshot backup, the copy is cloned, recovers to the point beside the
    running source, passes verify, and holds exactly the rows up to the point."""
    pg, repo, btrfs = snapshotted
    stamps, (full_id, snap_id) = backed_up(pg, repo, "full", "snapshot")
    source = checksums(pg)
    state_file = workdir / "restore-state.json"
    target = btrfs / "staged" / "data"
    copy, settings = restore_args(15, target)  # its own port and socket directory
    oid = pg.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'far'")
    code, plan, err = restore_stage(repo, "plan", state_file, target, "--live-data",
                                    pg.datadir, "--point", f"lsn:{stamps[25]['lsn']}",
                                    "--port", copy.port, "--live-tablespaces", oid)
    assert code == 0, err
    assert plan["plan_record"]["backup_id"] == snap_id, plan
    assert plan["plan"]["source"] == "snapshot", plan["plan"]
    try:
        for stage in ("stage", "recover", "verify"):
            code, done, err = restore_stage(repo, stage, state_file, target,
                                            *(settings if stage == "stage" else ()))
            assert code == 0, (stage, err)
        assert done["restore_state"]["staged"]["backup_id"] == snap_id
        count, top = copy.psql("SELECT count(*), max(k) FROM ticks").split("|")
        assert (count, top) == ("25", "25")
        assert checksums(copy)["postgres"]["public.far"] == source["postgres"]["public.far"]
    finally:
        copy.stop()
    assert checksums(pg) == source  # the running source untouched
