"""Continuous WAL archiving and point-in-time restore on real PostgreSQL and SeaweedFS
(issue 3): exactly the rows up to the target are present, none after."""
import datetime
import os

import pytest

from tests.integration.pgdr_run import (Repo, archive_everything, archiving_cluster,
                                        postgres_dir, promote_restored_copy, restore_rows,
                                        write_rows)

ROWS = 40


def between(stamps, k):
    """A time strictly between the commits of rows k and k+1, as ISO 8601 UTC."""
    mid = stamps[k]["commit"] + (stamps[k + 1]["commit"] - stamps[k]["commit"]) / 2
    return mid.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def history(pg_cluster, workdir, seaweed, bucket):
    """Backup B1, rows 1-20, backup B2, rows 21-40 with a restore point after 30."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    code, first, err = repo.run("backup")
    assert code == 0, err
    stamps = {}
    write_rows(pg, 1, ROWS // 2, stamps)
    code, second, err = repo.run("backup")
    assert code == 0, err
    write_rows(pg, ROWS // 2 + 1, 30, stamps)
    # a quote and a backslash: postgresql.auto.conf must escape both as ALTER SYSTEM does
    pg.psql("SELECT pg_create_restore_point('it''s after\\30')")
    pg.psql("SELECT pg_switch_wal()")  # rows 21-30 and 31-40 in different segments
    write_rows(pg, 31, ROWS, stamps)
    archive_everything(pg)
    return pg, repo, stamps, first["backup"]["id"], second["backup"]["id"]


def test_restore_to_times_lsn_xid_and_name(history, workdir):
    pg, repo, stamps, first, second = history
    rows, out = restore_rows(repo, workdir, "t7", "--point", between(stamps, 7))
    assert rows == 7 and out["plan"]["backup_id"] == first
    rows, out = restore_rows(repo, workdir, "t33", "--point", between(stamps, 33))
    assert rows == 33 and out["plan"]["backup_id"] == second
    # a zone-less time is UTC
    naive = between(stamps, 25).rstrip("Z").replace("T", " ")
    assert restore_rows(repo, workdir, "t25", "--point", naive)[0] == 25
    rows = restore_rows(repo, workdir, "lsn", "--point", f"lsn:{stamps[12]['lsn']}",
                        "--target-inclusive", "false")[0]
    assert rows == 12
    assert restore_rows(repo, workdir, "xid", "--point", f"xid:{stamps[28]['xid']}")[0] == 28
    assert restore_rows(repo, workdir, "name", "--point", "name:it's after\\30")[0] == 30
    rows, out = restore_rows(repo, workdir, "latest", "--point", "latest")
    assert rows == ROWS and out["plan"]["backup_id"] == second


def test_unreachable_points_are_refused_before_anything_is_written(history, workdir, seaweed, bucket):
    pg, repo, stamps, first, second = history
    target = workdir / "never"
    code, out, err = repo.run("restore", "--target", target, "--point", "2001-01-01T00:00:00Z")
    assert code == 7 and out["error"]["code"] == "point_unreachable"
    assert "before the end of the oldest backup" in out["error"]["msg"]
    code, out, err = repo.run("restore", "--target", target, "--point", "2999-01-01 00:00")
    assert code == 7 and "after the last archived WAL" in out["error"]["msg"]
    assert "reachable window" in out["error"]["msg"]
    code, out, err = repo.run("restore", "--target", target, "--point", "yesterday")
    assert code == 2 and out["error"]["code"] == "point_invalid"
    assert "'yesterday'" in out["error"]["msg"] and "ISO 8601" in out["error"]["msg"]
    assert not target.exists()


def test_gap_in_archive_is_found_by_the_planner(history, workdir, seaweed, bucket):
    pg, repo, stamps, first, second = history
    s3 = seaweed.client()
    wal = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="main/wal/")["Contents"]
                 if o["Key"].rsplit("/", 1)[-1][:24].isalnum() and ".history" not in o["Key"]
                 and ".backup" not in o["Key"])
    code, out, dummy = repo.run("info")
    stop_wal = out["backups"][-1]["stop_wal"]
    later = [k for k in wal if k.rsplit("/", 1)[-1][:24] > stop_wal]
    assert len(later) >= 2, later
    s3.delete_object(Bucket=bucket, Key=later[0])
    missing = later[0].rsplit("/", 1)[-1][:24]
    code, out, err = repo.run("restore", "--target", workdir / "gap", "--point",
                              between(stamps, ROWS - 1))
    assert code == 7 and out["error"]["code"] == "point_unreachable", err
    assert f"segment {missing} is missing" in out["error"]["msg"]
    assert not (workdir / "gap").exists()
    # points before the gap stay restorable
    assert restore_rows(repo, workdir, "before-gap", "--point", between(stamps, 10))[0] == 10


def test_restore_across_a_promotion(pg_cluster, workdir, seaweed, bucket):
    """The old primary dies; a restored copy is promoted and becomes the new primary,
    archiving timeline 2 into the same repository; a point on timeline 2 restores from
    the backup taken on timeline 1, through the history file."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    code, dummy, err = repo.run("backup")
    assert code == 0, err
    stamps = {}
    write_rows(pg, 1, 10, stamps)
    archive_everything(pg)
    pg.stop()

    promoted = promote_restored_copy(repo, workdir)
    assert promoted.psql("SELECT timeline_id FROM pg_control_checkpoint()") in ("1", "2")
    promoted.psql("CHECKPOINT")
    assert promoted.psql("SELECT timeline_id FROM pg_control_checkpoint()") == "2"
    write_rows(promoted, 11, 20, stamps)
    archive_everything(promoted)
    promoted.stop()
    assert seaweed.client().head_object(Bucket=bucket, Key="main/wal/history/00000002.history")

    rows, out = restore_rows(repo, workdir, "tl2", "--point", between(stamps, 15))
    assert rows == 15 and out["plan"]["timeline"] == 2


def test_wal_push_never_overwrites(pg_cluster, workdir, seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    segment = archive_everything(pg)
    key = f"main/wal/{segment[:16]}/{segment}.zst"
    s3 = seaweed.client()
    stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    sync = Repo.s3(workdir / "sync" if postgres_dir(workdir / "sync") else None, seaweed, bucket)
    # the same bytes again: success, nothing written
    original = pg.datadir / "pg_wal" / segment
    code, dummy, err = sync.run("wal-push", original)
    assert code == 0, err
    # other bytes under the same name: refused loudly, the archived object untouched
    forged = postgres_dir(workdir / "forged") / segment
    data = original.read_bytes()  # a valid first page (wal-push checks it), other records
    forged.write_bytes(data[:8192] + b"\x01" * (len(data) - 8192))
    os.chown(forged, pg_uid(), -1)
    code, out, err = sync.run("wal-push", forged)
    assert code == 8 and out["error"]["code"] == "wal_conflict", err
    assert "refusing to overwrite" in err
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == stored


def test_wal_fetch_exit_codes(workdir, seaweed, bucket):
    repo = Repo.s3(postgres_dir(workdir / "f"), seaweed, bucket)
    dest = postgres_dir(workdir / "dest") / "RECOVERYXLOG"
    code, out, err = repo.run("wal-fetch", "000000010000000000000099", dest)
    assert code == 1 and out["error"]["code"] == "wal_not_found"  # end of archive: go on
    broken = Repo.s3(postgres_dir(workdir / "g"), seaweed, bucket,
                     s3_endpoint="http://127.0.0.1:9")
    code, out, err = broken.run("wal-fetch", "000000010000000000000099", dest)
    assert code > 125, err  # fatal for PostgreSQL: recovery stops instead of ending early


def pg_uid():
    import pwd
    return pwd.getpwnam("postgres").pw_uid
