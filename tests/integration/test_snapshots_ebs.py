"""Snapshot backups through the ebs provider (issue 16): a real PostgreSQL whose manifest and
WAL go to SeaweedFS, its EBS snapshots made in moto's EC2, which runs in this process so the
test can play AWS's part: leave a snapshot pending, complete it, fail it. moto completes
every snapshot at once; the tests make the ones they need pending."""
import json
import os
import signal
import subprocess
import time

import boto3
import pytest

from lab.lab import free_port
from tests.integration.pgdr_run import (PGDR, archive_everything, archiving_cluster, checksums,
                                        postgres_dir, restore_args, wait_until_promoted,
                                        write_rows)

moto_server = pytest.importorskip("moto.server")
from moto.backends import get_backend  # noqa: E402  (after the importorskip)
from moto.ec2.models.elastic_block_store import EBSBackend  # noqa: E402

REGION = "us-east-1"


@pytest.fixture
def ec2():
    """(EC2 client, endpoint) of a moto server thread; its state goes with it."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = "http://127.0.0.1:%d" % port
    try:
        yield boto3.client("ec2", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing"), endpoint
    finally:
        server.stop()
        get_backend("ec2").reset()


@pytest.fixture
def pending_snapshots(monkeypatch):
    """From now on, moto's snapshots start pending, as AWS's do."""
    original = EBSBackend.create_snapshot

    def pending(self, *args, **kwargs):
        snapshot = original(self, *args, **kwargs)
        snapshot.status = "pending"
        return snapshot
    monkeypatch.setattr(EBSBackend, "create_snapshot", pending)
    return monkeypatch


def set_state(snapshot_ids, status):
    """What AWS does later: a snapshot completes, or fails."""
    for accounts in get_backend("ec2").values():
        for backend in accounts.values():
            for snapshot_id in snapshot_ids:
                if snapshot_id in backend.snapshots:
                    backend.snapshots[snapshot_id].status = status


def ebs_snapshots(client):
    """{snapshot id: (state, {tag: value})} of the cluster's snapshots in EC2."""
    found = client.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag:pgdr:cluster", "Values": ["main"]}])["Snapshots"]
    return dict((s["SnapshotId"], (s["State"], tags_of(s))) for s in found)


def tags_of(snapshot):
    return dict((t["Key"], t["Value"]) for t in snapshot.get("Tags", []))


def stored(seaweed, bucket, backup_id=""):
    listed = seaweed.client().list_objects_v2(Bucket=bucket, Prefix="main/snapshot/" + backup_id)
    return dict((o["Key"], o["ETag"]) for o in listed.get("Contents", []))


def ids_of(backup):
    return sorted(set(v["snapshot"]["id"] for v in backup["snapshot"]["volumes"]))


@pytest.fixture
def ebs_cluster(pg_cluster, workdir, seaweed, bucket, ec2):
    """An archiving PostgreSQL 15 with a tablespace; its data directory and tablespace
    mapped to two EBS volumes of moto. (cluster, repo, EC2 client, {path: volume id})."""
    client, endpoint = ec2
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    space = postgres_dir(workdir / "space")
    pg.psql(f"CREATE TABLESPACE far LOCATION '{space}'")
    pg.psql("CREATE TABLE far (k int, v text) TABLESPACE far")
    pg.psql("INSERT INTO far SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    volumes = dict((os.path.realpath(path), client.create_volume(
        AvailabilityZone=REGION + "a", Size=10)["VolumeId"]) for path in (pg.datadir, space))
    repo.settings.update(snapshot_provider="ebs", snapshot_ebs_endpoint=endpoint,
                         snapshot_ebs_region=REGION, retention_full=5,
                         snapshot_ebs_volumes=",".join("%s=%s" % kv for kv in volumes.items()))
    repo.write()
    return pg, repo, client, volumes


def test_an_ebs_snapshot_backup_is_pending_until_aws_completes_it_and_never_offered_before(
        ebs_cluster, pending_snapshots, seaweed, bucket, workdir):
    pg, repo, client, volumes = ebs_cluster
    stamps = {}
    write_rows(pg, 1, 10, stamps)
    code, out, err = repo.run("backup", "--type", "full")
    assert code == 0, err
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    backup = out["backup"]
    record = backup["snapshot"]
    assert (record["provider"], record["off_host"], record["state"]) == ("ebs", True, "pending")
    assert [(v["role"], v["snapshot"]["volume_id"]) for v in record["volumes"]] == [
        ("pgdata", volumes[os.path.realpath(pg.datadir)]),
        ("tablespace", volumes[os.path.realpath(workdir / "space")])]
    made = ebs_snapshots(client)
    assert sorted(made) == ids_of(backup)
    assert all(state == "pending" and tags["pgdr:backup"] == backup["id"]
               for state, tags in made.values()), made
    # never offered while pending: info lists it apart, a restore of it is refused first
    code, info, err = repo.run("info")
    assert code == 0, err
    assert info["snapshots"] == [] and [s["id"] for s in info["pending_snapshots"]] == [
        backup["id"]]
    target = workdir / "early" / "data"
    copy, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--backup-id", backup["id"],
                              "--tablespace-map", f"far={workdir / 'early' / 'space'}", *args)
    assert code == 7 and "snapshot_pending" in err, (code, err)
    assert sorted(os.listdir(target.parent)) == ["data.sock"]  # the test's socket dir
    # AWS completes them: verify records it once, without touching the manifest
    manifest_before = stored(seaweed, bucket, backup["id"])
    set_state(ids_of(backup), "completed")
    code, checked, err = repo.run("verify", "--backup-id", backup["id"])
    assert code == 0, err
    assert checked["snapshots_settled"] == {backup["id"]: "complete"}
    after = stored(seaweed, bucket, backup["id"])
    assert dict((k, v) for k, v in after.items() if not k.endswith("/state.json")) == \
        manifest_before and len(after) == len(manifest_before) + 1
    code, info, err = repo.run("info")
    assert [s["id"] for s in info["snapshots"]] == [backup["id"]]
    assert info["pending_snapshots"] == []
    # the planner passes it over (pgdr does not create EBS volumes) and says why; the
    # repository's full restores exactly to a point after it
    write_rows(pg, 11, 20, stamps)
    archive_everything(pg)
    source = checksums(pg)
    target = workdir / "late" / "data"
    copy, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--point",
                              f"lsn:{stamps[20]['lsn']}", "--tablespace-map",
                              f"far={workdir / 'late' / 'space'}", *args)
    assert code == 0, err
    assert out["plan"]["source"] == "repository", out["plan"]
    assert any(backup["id"] in note and "EBS snapshot" in note
               for note in out["plan"]["notes"]), out["plan"]
    copy.start()
    try:
        wait_until_promoted(copy)
        assert checksums(copy) == source
    finally:
        copy.stop()


def test_a_failed_ebs_snapshot_is_never_offered_and_expire_removes_exactly_it(
        ebs_cluster, pending_snapshots, seaweed, bucket):
    pg, repo, client, volumes = ebs_cluster
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    kept = out["backup"]
    set_state(ids_of(kept), "completed")
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    failed = out["backup"]
    assert failed["snapshot"]["state"] == "pending"
    # the earlier one was settled by this backup, before it began
    assert kept["id"] in [s["id"] for s in repo.run("info")[1]["snapshots"]]
    set_state(ids_of(failed)[:1], "error")
    # the dry run says what it would record and remove, and writes nothing
    objects = stored(seaweed, bucket)
    code, plan, err = repo.run("expire", "--dry-run")
    assert code == 0, err
    assert plan["snapshots_settled"] == {failed["id"]: "failed"}
    assert [e["id"] for e in plan["snapshots_expired"]] == [failed["id"]]
    assert plan["snapshots_kept"] == [kept["id"]]
    assert stored(seaweed, bucket) == objects
    assert sorted(ebs_snapshots(client)) == sorted(ids_of(kept) + ids_of(failed))
    code, info, err = repo.run("info")
    assert [s["id"] for s in info["pending_snapshots"]] == [failed["id"]]
    # the run: the failed backup's snapshots (the error one too) and objects go, no more
    code, done, err = repo.run("expire")
    assert code == 0, err
    assert [e["id"] for e in done["snapshots_expired"]] == [failed["id"]]
    assert sorted(ebs_snapshots(client)) == ids_of(kept)
    assert not stored(seaweed, bucket, failed["id"])
    code, info, err = repo.run("info")
    assert [s["id"] for s in info["snapshots"]] == [kept["id"]]
    assert info["pending_snapshots"] == [] and info["failed_snapshots"] == []
    # one that AWS never completes is kept while a kept one is older, and removed once
    # it is older than every one kept
    code, out, err = repo.run("backup", "--type", "snapshot")
    stuck = out["backup"]
    code, out, err = repo.run("backup", "--type", "snapshot")
    newer = out["backup"]
    set_state(ids_of(newer), "completed")
    code, done, err = repo.run("expire")
    assert code == 0, err
    assert done["snapshots_settled"] == {newer["id"]: "complete"}
    assert done["snapshots_expired"] == [] and done["snapshots_pending"] == [stuck["id"]]
    repo.settings.update(retention_full=1)
    repo.write()
    code, done, err = repo.run("expire")
    assert code == 0, err
    assert [e["id"] for e in done["snapshots_expired"]] == [kept["id"], stuck["id"]]
    assert sorted(ebs_snapshots(client)) == ids_of(newer)
    assert not stored(seaweed, bucket, stuck["id"]) and not stored(seaweed, bucket, kept["id"])


def test_an_ebs_snapshot_backup_waits_for_completion_and_retention_deletes_through_ec2(
        ebs_cluster, pending_snapshots):
    """snapshot_wait: a snapshot completed while the backup waits is recorded complete at
    once. Retention counts snapshot backups on their own and deletes through EC2."""
    pg, repo, client, volumes = ebs_cluster
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    first = out["backup"]
    set_state(ids_of(first), "completed")
    repo.settings.update(snapshot_wait=60)
    repo.write()
    # AWS completes the next one while the backup waits (it asks every 5 s)
    proc = repo.popen("backup", "--type", "snapshot", "--json")
    try:
        deadline = time.time() + 60
        while not [i for i, (state, tags) in ebs_snapshots(client).items()
                   if tags["pgdr:backup"] != first["id"]]:
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(1)
        set_state([i for i, (state, tags) in ebs_snapshots(client).items()
                   if tags["pgdr:backup"] != first["id"]], "completed")
        out_text, err_text = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err_text
    assert json.loads(out_text.splitlines()[-1])["backup"]["snapshot"]["state"] == "complete"
    code, info, err = repo.run("info")
    second = info["snapshots"][-1]
    assert [s["id"] for s in info["snapshots"]] == [first["id"], second["id"]]
    assert info["pending_snapshots"] == []
    repo.settings.update(retention_full=1)
    repo.write()
    code, done, err = repo.run("expire")
    assert code == 0, err
    assert [e["id"] for e in done["snapshots_expired"]] == [first["id"]]
    assert sorted(ebs_snapshots(client)) == ids_of(second)


def test_what_ebs_cannot_snapshot_is_refused_before_backup_mode(
        ebs_cluster, seaweed, bucket, workdir):
    pg, repo, client, volumes = ebs_cluster
    mapping = repo.settings["snapshot_ebs_volumes"]
    for value, wanted in (
            # the tablespace on no mapped volume
            (mapping.split(",")[0], "lies on none of the volumes"),
            # a volume EC2 does not know
            (mapping.split(",")[0] + f",{workdir / 'space'}=vol-0123456789abcdef0",
             "vol-0123456789abcdef0"),
            ("", "needs snapshot_ebs_volumes")):
        repo.settings["snapshot_ebs_volumes"] = value
        repo.write()
        code, out, err = repo.run("backup", "--type", "snapshot")
        assert code == 2 and "snapshot_config" in err and wanted in err, (value, code, err)
        assert stored(seaweed, bucket) == {}
        assert ebs_snapshots(client) == {}
    # a value that is no mount point = volume id is refused when it is read
    repo.settings["snapshot_ebs_volumes"] = "/srv/pg=disk1"
    repo.write()
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 2 and "config_invalid" in err and "disk1" in err, (code, err)
    assert stored(seaweed, bucket) == {} and ebs_snapshots(client) == {}


def test_the_snapshots_of_a_killed_ebs_backup_are_found_by_their_tags_and_removed(
        ebs_cluster, seaweed, bucket):
    """Killed between its snapshots and its manifest: never offered; cleanup finds its
    snapshots by their tags (its intent says they are this repository's) and removes
    exactly those, never a complete backup's."""
    pg, repo, client, volumes = ebs_cluster
    code, out, err = repo.run("backup", "--type", "snapshot")
    assert code == 0, err
    complete = out["backup"]
    cmd = ["runuser", "-u", "postgres", "--", str(PGDR), "backup", "--config",
           str(repo.config), "--credentials", str(repo.credentials), "--json", "--type",
           "snapshot"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False,
                         env=dict(os.environ, PGDR_FAULT_POINT="backup.after_snapshots"))
    killed_codes = (-signal.SIGKILL, 128 + signal.SIGKILL)
    assert res.returncode in killed_codes, (res.returncode, res.stderr)
    killed = sorted(i for i, (state, tags) in ebs_snapshots(client).items()
                    if tags["pgdr:backup"] != complete["id"])
    assert len(killed) == 2, ebs_snapshots(client)
    killed_id = ebs_snapshots(client)[killed[0]][1]["pgdr:backup"]
    code, info, err = repo.run("info")
    assert [s["id"] for s in info["snapshots"]] == [complete["id"]]
    assert info["pending_snapshots"] == [] and killed_id in info["incomplete"]
    repo.settings.update(incomplete_grace_seconds=0)
    repo.write()
    code, listed, err = repo.run("cleanup", "--dry-run")
    assert code == 0, err
    assert {k: sorted(v) for k, v in listed["snapshots_orphaned"].items()} == {
        killed_id: killed}, listed
    code, done, err = repo.run("cleanup")
    assert code == 0, err
    assert sorted(ebs_snapshots(client)) == ids_of(complete)
    assert not stored(seaweed, bucket, killed_id)
    assert stored(seaweed, bucket, complete["id"])
