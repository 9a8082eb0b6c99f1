"""Faults during backup and expire on real PostgreSQL 15 and SeaweedFS (issue 11, defects 7,
9 and 10): kill -9 at named points, a lease lost mid-backup, orphans and their cleanup.

Every test checks the invariant: the command either failed with a clear error and left
nothing that is offered for restore, or it succeeded and restores exactly."""
import hashlib
import json
import os
import signal
import time

import pytest

from tests.integration.pgdr_run import Repo, checksums, restore_started

KILLED = (-signal.SIGKILL, 128 + signal.SIGKILL)


def killed_at(repo, monkeypatch, point, command, *args):
    """Run a pgdr command that SIGKILLs itself at ``point``; its stderr."""
    monkeypatch.setenv("PGDR_FAULT_POINT", point)
    try:
        code, out, err = repo.run(command, *args)
    finally:
        monkeypatch.delenv("PGDR_FAULT_POINT")
    assert code in KILLED, "expected a kill at %s, got %s: %s" % (point, code, err)
    return err


def objects(s3, bucket, prefix):
    """{key: etag} under prefix."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            found[item["Key"]] = item["ETag"]
    return found


def backup_ok(repo, *args):
    code, out, err = repo.run("backup", *args)
    assert code == 0, err
    assert out.get("skipped") is not True, out
    return out["backup"], err


def info(repo):
    code, out, err = repo.run("info")
    assert code == 0, err
    return out


def restores_exactly(repo, workdir, label, expected):
    restored = restore_started(repo, 15, workdir / label / "data")
    try:
        assert checksums(restored) == expected, "restore of latest differs from its source"
    finally:
        restored.stop()


def dataset(pg_cluster, workdir, seaweed, bucket, rows=20000, **settings):
    pg = pg_cluster(15)
    pg.psql("CREATE TABLE t (k int PRIMARY KEY, v text); "
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %d) g" % rows)
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg, chunk_size=1, bundle_limit=64, **settings)
    return pg, repo


@pytest.mark.parametrize("point", ["backup.after_bundles", "backup.before_manifest",
                                   "backup.after_manifest"])
def test_d11_9_backup_killed_at_each_point(point, pg_cluster, seaweed, bucket, workdir,
                                           monkeypatch):
    pg, repo = dataset(pg_cluster, workdir, seaweed, bucket)
    first, dummy = backup_ok(repo)
    before = checksums(pg)
    pg.psql("INSERT INTO t SELECT g, 'later' FROM generate_series(20001, 30000) g; CHECKPOINT")
    after = checksums(pg)
    s3 = seaweed.client()

    killed_at(repo, monkeypatch, point, "backup")
    state = info(repo)
    listed = [b["id"] for b in state["backups"]]
    if point == "backup.after_manifest":
        # the manifest is stored: the backup is complete, and restores exactly
        assert len(listed) == 2 and listed[0] == first["id"] and state["incomplete"] == []
        restores_exactly(repo, workdir, "killed", after)
    else:
        # never offered: restore latest is still the previous complete backup, exactly
        assert listed == [first["id"]] and len(state["incomplete"]) == 1
        killed = state["incomplete"][0]
        assert objects(s3, bucket, "main/backup/%s/" % killed)
        restores_exactly(repo, workdir, "previous", before)
    complete_objects = dict((b, objects(s3, bucket, "main/backup/%s/" % b)) for b in listed)

    # the next backup runs: the lease of the killed process (this host) is taken over
    latest, err = backup_ok(repo)
    assert "took over the lease" in err, err
    # cleanup removes the killed backup's objects (a complete backup started after it),
    # touches no complete backup, and info lists no empty prefix (SeaweedFS keeps those)
    code, dry, err = repo.run("cleanup", "--dry-run")
    assert code == 0, err
    code, done, err = repo.run("cleanup")
    assert code == 0, err
    assert done["incomplete_removed"] == dry["incomplete_removed"] == state["incomplete"]
    state = info(repo)
    assert state["incomplete"] == []
    assert [b["id"] for b in state["backups"]] == listed + [latest["id"]]
    for removed in done["incomplete_removed"]:
        assert objects(s3, bucket, "main/backup/%s/" % removed) == {}
    assert (done["bytes_removed"] > 0) == (point != "backup.after_manifest")
    for backup_id, stored in complete_objects.items():
        assert objects(s3, bucket, "main/backup/%s/" % backup_id) == stored, backup_id


def backup_started(repo, s3, bucket):
    """A backup running in the background that has stored its first objects."""
    proc = repo.popen("backup")
    deadline = time.time() + 120
    while not objects(s3, bucket, "main/backup/") and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the backup ended before the test could act beside it"
    return proc


def test_d11_7_backup_that_loses_its_lease_stops_and_removes_what_it_stored(
        pg_cluster, seaweed, bucket, workdir, s3_faults):
    pg, repo = dataset(pg_cluster, workdir, seaweed, bucket, rows=1500000, workers=1,
                       backup_lease=6, s3_endpoint=s3_faults.endpoint)
    # every object of the backup is stored a second late (the lease is not): the backup
    # still runs when the other node takes the lease, however fast the machine is (an idle
    # one finished the whole backup in 1.7 s, before its next lease renewal)
    s3_faults.set_rule("delay", method="PUT", key="/main/backup/", times=10 ** 6)
    s3 = seaweed.client()
    proc = backup_started(repo, s3, bucket)
    # another node takes the lease over (as after an expiry): this backup must stop
    foreign = {"holder": "pg9:99", "nonce": "f" * 32, "acquired_at": time.time(),
               "expires_at": time.time() + 3600}
    body = json.dumps(foreign).encode()  # written as pgdr writes it: with its SHA-256
    s3.put_object(Bucket=bucket, Key="main/lock/backup.json", Body=body,
                  Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    stdout, stderr = proc.communicate(timeout=300)
    stderr = stderr.decode()
    assert proc.returncode == 3, stderr
    assert "error [lease_lost]" in stderr and "pg9:99" in stderr, stderr
    assert "removed the" in stderr, stderr
    # nothing left that looks like a backup, and the other node's lease is untouched
    assert objects(s3, bucket, "main/backup/") == {}
    state = info(repo)
    assert state["backups"] == [] and state["incomplete"] == []
    lease = json.loads(s3.get_object(Bucket=bucket, Key="main/lock/backup.json")["Body"].read())
    assert lease["nonce"] == foreign["nonce"]
    # and while that other node holds it, a backup here is a verified skip (exit 0)
    code, out, err = repo.run("backup")
    assert code == 0 and out["skipped"] is True and "pg9:99" in out["reason"], err


def test_d11_7_unreadable_lease_fails_the_backup_instead_of_skipping(pg_cluster, seaweed,
                                                                     bucket, workdir):
    pg, repo = dataset(pg_cluster, workdir, seaweed, bucket)
    s3 = seaweed.client()
    s3.put_object(Bucket=bucket, Key="main/lock/backup.json", Body=b'{"holder": "pg9:9", "no')
    s3.put_object(Bucket=bucket, Key="main/lock/backup.json.takeover.unreadable", Body=b"x")
    code, out, err = repo.run("backup")
    assert code == 3 and out["error"]["code"] == "lease_unreadable", err
    assert "main/lock/backup.json" in out["error"]["msg"] and "taken over after" in err
    assert objects(s3, bucket, "main/backup/") == {}
    # cleanup cannot tell whether a backup writes an incomplete one: an error, nothing removed
    orphan = "main/backup/20200101T000000Z-full/bundle/000001.zst"
    s3.put_object(Bucket=bucket, Key=orphan, Body=b"x")
    code, out, err = repo.run("cleanup", "--incomplete-grace-seconds", "0")
    assert code == 3 and out["error"]["code"] == "lease_unreadable", err
    assert list(objects(s3, bucket, "main/backup/")) == [orphan]
    # once nobody rewrote it for a whole period, the damaged lease is taken over, loudly
    repo.settings["backup_lease"] = 5
    repo.write()
    time.sleep(5.5)
    first, err = backup_ok(repo)
    assert "damaged" in err and "taking it over" in err, err
    restores_exactly(repo, workdir, "after-damaged-lease", checksums(pg))


def test_d11_10_cleanup_never_touches_the_backup_a_live_lease_names(pg_cluster, seaweed,
                                                                    bucket, workdir):
    pg, repo = dataset(pg_cluster, workdir, seaweed, bucket, rows=400000, workers=1)
    s3 = seaweed.client()
    proc = backup_started(repo, s3, bucket)
    code, out, err = repo.run("cleanup", "--incomplete-grace-seconds", "0")
    assert code == 0 and out["incomplete_removed"] == [], err
    for entry in out["incomplete_kept"]:  # empty only if the backup completed meanwhile
        assert "is writing it" in entry["why"], entry
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()
    state = info(repo)
    assert len(state["backups"]) == 1 and state["incomplete"] == []
    restores_exactly(repo, workdir, "written-during-cleanup", checksums(pg))


def test_d11_10_expire_killed_mid_delete_then_rerun(pg_cluster, seaweed, bucket, workdir,
                                                    monkeypatch):
    pg, repo = dataset(pg_cluster, workdir, seaweed, bucket)
    old_full, dummy = backup_ok(repo, "--type", "full")
    pg.psql("UPDATE t SET v = 'diff' WHERE k % 10 = 0")
    old_diff, dummy = backup_ok(repo, "--type", "diff")
    pg.psql("UPDATE t SET v = 'new' WHERE k % 10 = 1")
    new_full, dummy = backup_ok(repo, "--type", "full")
    pg.psql("UPDATE t SET v = 'new diff' WHERE k % 10 = 2")
    new_diff, dummy = backup_ok(repo, "--type", "diff")
    expected = checksums(pg)
    s3 = seaweed.client()
    kept = dict((b["id"], objects(s3, bucket, "main/backup/%s/" % b["id"]))
                for b in (new_full, new_diff))

    killed_at(repo, monkeypatch, "expire.mid_delete", "expire", "--retention-full", "1")
    state = info(repo)
    listed = [b["id"] for b in state["backups"]]
    # no chain broken: the old diff (deleted first) is gone or incomplete, its full whole
    assert listed == [old_full["id"], new_full["id"], new_diff["id"]], listed
    assert state["incomplete"] == [old_diff["id"]]
    for backup_id, stored in kept.items():
        assert objects(s3, bucket, "main/backup/%s/" % backup_id) == stored

    code, done, err = repo.run("expire", "--retention-full", "1")
    assert code == 0, err
    state = info(repo)
    assert [b["id"] for b in state["backups"]] == [new_full["id"], new_diff["id"]]
    assert state["incomplete"] == []
    for gone in (old_full, old_diff):
        assert objects(s3, bucket, "main/backup/%s/" % gone["id"]) == {}
    for backup_id, stored in kept.items():
        assert objects(s3, bucket, "main/backup/%s/" % backup_id) == stored
    restores_exactly(repo, workdir, "after-expire", expected)
    code, again, err = repo.run("expire", "--retention-full", "1")
    assert code == 0 and again["changed"] is False, err
    assert os.environ.get("PGDR_FAULT_POINT") is None
