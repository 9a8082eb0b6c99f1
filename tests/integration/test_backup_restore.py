"""Full backup to real SeaweedFS and restore into a new directory that starts and holds
exactly the data of the source (issue 2)."""
import os
import signal
import time

import pytest

from lab.lab import PgCluster
from tests.integration.pgdr_run import (Repo, checksums, pgbench_running, postgres_dir,
                                        restore_args, restore_started)

SMALL_TABLES = 2000


def build_dataset(pg: PgCluster, workdir):
    """Two databases, a second tablespace, large objects, an unlogged table, a
    multi-megabyte table and a few thousand small tables."""
    tsdir = postgres_dir(workdir / "ts-source")
    pg.psql(f"CREATE TABLESPACE extra LOCATION '{tsdir}'")
    pg.psql("CREATE DATABASE shop")
    pg.psql("CREATE DATABASE crm TABLESPACE extra")
    pg.psql("""
        CREATE TABLE orders (id bigint PRIMARY KEY, customer int, note text, placed timestamptz);
        INSERT INTO orders SELECT g, g % 997, md5(g::text) || repeat('x', g % 50),
               '2026-01-01'::timestamptz + g * interval '1 minute'
          FROM generate_series(1, 150000) g;
        CREATE INDEX orders_customer ON orders (customer);
        CREATE TABLE archived (id int, payload text) TABLESPACE extra;
        INSERT INTO archived SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 5000) g;
        CREATE UNLOGGED TABLE session_cache (k int, v text);
        INSERT INTO session_cache SELECT g, 'v' || g FROM generate_series(1, 1000) g;
        SELECT lo_from_bytea(0, convert_to(repeat('large object ', 20000), 'UTF8'));
        SELECT lo_from_bytea(0, '\\x00010203'::bytea);
    """, db="shop")
    pg.psql(f"""
        DO $$ BEGIN
          FOR i IN 1..{SMALL_TABLES} LOOP
            EXECUTE format('CREATE TABLE contact_%s (id int, name text)', i);
            EXECUTE format('INSERT INTO contact_%s VALUES (%s, %L)', i, i, 'name ' || i);
          END LOOP;
        END $$;""", db="crm")
    pg.psql("CHECKPOINT")


def roundtrip(pg_cluster, seaweed, bucket, workdir, version, **repo_settings):
    pg = pg_cluster(version)
    build_dataset(pg, workdir)
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg, **repo_settings)

    code, out, err = repo.run("backup")
    assert code == 0, err
    backup = out["backup"]
    assert backup["type"] == "full" and backup["pg_version"] // 10000 == version
    assert backup["file_count"] > 3 * SMALL_TABLES
    assert 0 < backup["stored_size"] < backup["size"]

    code, info, err = repo.run("info")
    assert code == 0, err
    assert [b["id"] for b in info["backups"]] == [backup["id"]] and info["incomplete"] == []
    # thousands of small files are bundled: few objects, not one per file
    objects = seaweed.usage(bucket, f"main/backup/{backup['id']}/")[1]
    assert objects < backup["file_count"] / 20

    target = workdir / "restored" / "data"
    restored, args = restore_args(version, target)
    postgres_dir(workdir / "ts-restored")
    code, out, err = repo.run("restore", "--target", target,
                              "--tablespace-map", f"extra={workdir / 'ts-restored'}", *args)
    assert code == 0, err
    assert out["backup"]["id"] == backup["id"] and out["changed"] is True
    restored.start()
    try:
        assert checksums(restored) == checksums(pg)
        assert restored.psql("SELECT count(*) FROM session_cache", db="shop") == "0"
        assert restored.psql("SHOW archive_mode") == "off"
        assert restored.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace "
                             "WHERE spcname = 'extra'") == str(workdir / "ts-restored")
    finally:
        restored.stop()
    return repo, backup, target


def test_full_backup_and_restore_pg15(pg_cluster, seaweed, bucket, workdir):
    repo, backup, target = roundtrip(pg_cluster, seaweed, bucket, workdir, 15)
    # the same restore again changes nothing (idempotence) and does not touch the target
    before = sorted(os.listdir(target))
    code, out, err = repo.run("restore", "--target", target,
                              "--tablespace-map", f"extra={workdir / 'ts-restored'}")
    assert code == 0, err
    assert out["changed"] is False and out["backup"]["id"] == backup["id"]
    assert sorted(os.listdir(target)) == before


@pytest.mark.pg18
def test_full_backup_and_restore_pg18_in_small_pieces(pg_cluster, seaweed, bucket, workdir):
    # 1 MiB pieces and 64 KiB bundles: large files are split in many objects
    backup = roundtrip(pg_cluster, seaweed, bucket, workdir, 18, chunk_size=1,
                       bundle_limit=64, compression="gzip", workers=3)[1]
    assert backup["compression"] == "gzip"


def test_posix_repository_roundtrip(pg_cluster, workdir):
    pg = pg_cluster(15)
    pg.psql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
    repo = Repo(workdir, repo_type="posix", repo_path=postgres_dir(workdir / "repo"),
                pg_host="127.0.0.1", pg_port=pg.port, compression="none")
    code, out, err = repo.run("backup")
    assert code == 0, err
    restored = restore_started(repo, 15, workdir / "restored")
    try:
        assert checksums(restored) == checksums(pg)
    finally:
        restored.stop()


def test_corrupted_object_fails_before_anything_starts(pg_cluster, seaweed, bucket, workdir):
    pg = pg_cluster(15)
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100000) g")
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    code, out, err = repo.run("backup")
    assert code == 0, err
    s3 = seaweed.client()
    key = next(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
               if "/data/" in o["Key"])
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF  # one flipped byte
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))

    target = postgres_dir(workdir / "restored")
    code, out, err = repo.run("restore", "--target", target)
    assert code == 5, err
    assert out["error"]["code"] == "checksum_mismatch"
    assert key.split("/", 1)[1] in out["error"]["msg"] and "damaged" in out["error"]["msg"]
    assert os.listdir(target) == [], "a failed restore must leave nothing that could start"


def test_killed_backup_is_never_offered_for_restore(pg_cluster, seaweed, bucket, workdir):
    pg = pg_cluster(15)
    pg.pgbench("-i", "-s", "8", "-q", "postgres")
    # one worker and small pieces: the backup takes long enough to be killed half-way
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg, workers=1, chunk_size=1)
    proc = repo.popen("backup")
    s3 = seaweed.client()
    deadline = time.time() + 60
    while time.time() < deadline:
        if s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) >= 5:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    code, info, err = repo.run("info")
    assert code == 0, err
    assert info["backups"] == [] and len(info["incomplete"]) == 1
    code, out, err = repo.run("restore", "--target", workdir / "never")
    assert code == 7 and out["error"]["code"] == "no_backup", err
    assert not (workdir / "never").exists()
    # the server aborted the killed backup with its session: the next one succeeds
    code, out, err = repo.run("backup")
    assert code == 0, err
    code, info, dummy = repo.run("info")
    assert [b["id"] for b in info["backups"]] == [out["backup"]["id"]]
    assert len(info["incomplete"]) == 1


def test_backup_under_write_load_restores_consistent(pg_cluster, seaweed, bucket, workdir):
    pg = pg_cluster(15)
    pg.pgbench("-i", "-s", "5", "-q", "postgres")
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    with pgbench_running(pg, 12, "postgres", warmup=2):
        code, out, err = repo.run("backup")
        assert code == 0, err
    restored = restore_started(repo, 15, workdir / "restored")
    try:
        # pgbench's invariant: every balance equals the sum of the history's deltas
        sums = restored.psql("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                             "(SELECT sum(tbalance) FROM pgbench_tellers), "
                             "(SELECT sum(bbalance) FROM pgbench_branches), "
                             "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
                             "(SELECT count(*) FROM pgbench_history)").split("|")
        assert len(set(sums[:4])) == 1, sums
        assert int(sums[4]) > 0, "the backup should have caught transactions in flight"
        restored.psql("CREATE EXTENSION amcheck; SELECT bt_index_check(c.oid) FROM pg_class c "
                      "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' "
                      "AND c.relname LIKE 'pgbench%'")
    finally:
        restored.stop()
