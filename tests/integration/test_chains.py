"""Differential and incremental backups at page level, restored as chains (issue 4):
every backup and points in between restore to exactly the data of their moment."""
import datetime
import time

import pytest

from tests.integration.pgdr_run import (archive_everything, archiving_cluster, checksums,
                                        pgbench_running, restore_args, wait_until_promoted)

# small pieces and bundles, so that even this small data set has multi-part deltas
SMALL = dict(chunk_size=1, bundle_limit=64)


def summarize_wal(pg):
    pg.psql("ALTER SYSTEM SET summarize_wal = on")
    pg.psql("SELECT pg_reload_conf()")


def snapshot(pg):
    """Every logged table of every database (and large objects), by checksum."""
    return checksums(pg)


def backup(repo, kind):
    code, out, err = repo.run("backup", "--type", kind)
    assert code == 0, err
    return out["backup"]


def restore_and_compare(repo, workdir, label, version, point, expected, skip_db=()):
    target = workdir / label / "data"
    restored, args = restore_args(version, target)
    code, out, err = repo.run("restore", "--target", target, "--point", point, *args)
    assert code == 0, err
    restored.start()
    try:
        wait_until_promoted(restored)
        got = snapshot(restored)
        for db in skip_db:
            got.pop(db, None)
        want = dict((db, tables) for db, tables in expected.items() if db not in skip_db)
        assert got == want, "restore of %s differs from the data of its moment" % point
        return restored, out
    finally:
        restored.stop()


def workload(pg, step):
    """Updates, deletes and inserts; each step adds something structural too."""
    pg.psql(f"""
        UPDATE items SET note = note || '-{step}' WHERE id % 7 = {step};
        DELETE FROM items WHERE id % 11 = {step};
        INSERT INTO items (id, note) SELECT 1000000 * {step} + g, 'new-{step}-' || g
          FROM generate_series(1, 3000) g;""", db="shop")


def run_chain(pg_cluster, workdir, seaweed, bucket, version):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket, version=version,
                                 **SMALL)
    if version >= 17:  # the diff and incrs read only the pages the WAL summaries name
        summarize_wal(pg)
    pg.psql("CREATE DATABASE shop")
    pg.psql("""
        CREATE TABLE items (id bigint PRIMARY KEY, note text);
        INSERT INTO items SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g;
        CREATE INDEX items_note ON items (note);
        CREATE TABLE doomed AS SELECT g FROM generate_series(1, 20000) g;
        CREATE TABLE shrinking AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
        CREATE TABLE rebuilt AS SELECT g, md5(g::text) AS v FROM generate_series(1, 30000) g;
        CREATE TABLE tail AS SELECT g, repeat('t', 200) AS pad FROM generate_series(1, 30000) g;
    """, db="shop")
    states = {}

    full = backup(repo, "full")
    states[full["id"]] = snapshot(pg)

    # -- between the full and the diff: a point restored from the full plus WAL
    workload(pg, 1)
    archive_everything(pg)
    # the point keeps its microseconds: a whole second could fall before commits made in it
    states["mid1"] = (snapshot(pg), datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"))
    time.sleep(1.1)
    pg.psql("""
        TRUNCATE shrinking;
        INSERT INTO shrinking SELECT g, 'again' FROM generate_series(1, 100) g;
        DROP TABLE doomed;
        VACUUM FULL rebuilt;
        REINDEX INDEX items_note;""", db="shop")
    pg.psql("CREATE DATABASE late")
    pg.psql("CREATE TABLE born_after_full AS SELECT g FROM generate_series(1, 5000) g",
            db="late")
    diff = backup(repo, "diff")
    assert diff["reference"] == full["id"]
    states[diff["id"]] = snapshot(pg)

    # -- an incremental taken while pgbench writes to its own database
    pg.psql("CREATE DATABASE bench")
    pg.pgbench("-i", "-s", "2", "-q", "bench")
    workload(pg, 2)
    with pgbench_running(pg, 6, "bench"):
        incr1 = backup(repo, "incr")
    assert incr1["reference"] == diff["id"]
    states[incr1["id"]] = snapshot(pg)  # shop, late, postgres did not change during it

    # -- truncation at the end of a relation and re-extension, then another incr
    pg.psql("DELETE FROM tail WHERE g > 5000", db="shop")
    pg.psql("VACUUM tail", db="shop")  # truncates the empty end of the file
    pg.psql("INSERT INTO tail SELECT g, repeat('u', 200) FROM generate_series(5001, 9000) g",
            db="shop")
    workload(pg, 3)
    incr2 = backup(repo, "incr")
    assert incr2["reference"] == incr1["id"]
    assert incr2["chain"] == [full["id"], diff["id"], incr1["id"], incr2["id"]]
    states[incr2["id"]] = snapshot(pg)

    workload(pg, 4)
    archive_everything(pg)
    states["after"] = snapshot(pg)
    return pg, repo, states, (full, diff, incr1, incr2)


def check_chain(pg_cluster, workdir, seaweed, bucket, version):
    pg, repo, states, backups = run_chain(pg_cluster, workdir, seaweed, bucket, version)
    full, diff, incr1, incr2 = backups
    # page-level: the diff and incrementals store a fraction of the full
    for later in (diff, incr1, incr2):
        assert later["stored_size"] < full["stored_size"], later
        assert later["block_source"] == ("wal_summary" if version >= 17 else "page_scan")
    # every backup restores to exactly its moment (bench changed during incr1)
    for item in backups:
        skip = ("bench",) if item is incr1 else ()
        restore_and_compare(repo, workdir, item["id"][-4:] + item["id"][9:15], version,
                            item["id"], states[item["id"]], skip_db=skip)
    # points in between: the full + WAL, and the whole chain + WAL to the end
    snap, moment = states["mid1"]
    restore_and_compare(repo, workdir, "mid1", version, moment, snap)
    restored, out = restore_and_compare(repo, workdir, "latest", version, "latest",
                                        states["after"])
    assert out["plan"]["backup_id"] == incr2["id"]
    return repo, backups


def test_chain_pg15(pg_cluster, workdir, seaweed, bucket):
    repo, backups = check_chain(pg_cluster, workdir, seaweed, bucket, 15)
    full, diff, incr1, incr2 = backups
    # verify reads every object of the chain; a damaged one is named
    code, out, err = repo.run("verify")
    assert code == 0 and out["objects"] > 10, err
    s3 = seaweed.client()
    deltas = s3.list_objects_v2(Bucket=bucket, Prefix=f"main/backup/{diff['id']}/delta/")
    key = deltas["Contents"][0]["Key"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"damaged")
    code, out, err = repo.run("verify")
    assert code == 5 and out["error"]["code"] == "verify_failed", err
    assert key.split("/", 1)[1] in out["error"]["msg"]
    # a chain whose full is gone is never offered
    s3.delete_object(Bucket=bucket, Key=f"main/backup/{full['id']}/manifest.json")
    code, info, err = repo.run("info")
    assert info["backups"] == [] and {full["id"], diff["id"], incr1["id"], incr2["id"]} \
        <= set(info["incomplete"])
    code, out, err = repo.run("restore", "--target", workdir / "never", "--point", incr2["id"])
    assert code == 7 and out["error"]["code"] == "chain_broken"
    assert full["id"] in out["error"]["msg"]


@pytest.mark.pg18
def test_chain_pg18(pg_cluster, workdir, seaweed, bucket):
    check_chain(pg_cluster, workdir, seaweed, bucket, 18)


def test_expire_keeps_chains_and_the_wal_they_need(pg_cluster, workdir, seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket, **SMALL)
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g")
    first = backup(repo, "full")
    pg.psql("UPDATE t SET g = g + 1 WHERE g % 10 = 0")
    first_diff = backup(repo, "diff")
    pg.psql("SELECT pg_switch_wal()")
    second = backup(repo, "full")
    pg.psql("UPDATE t SET g = g + 1 WHERE g % 10 = 1")
    second_incr = backup(repo, "incr")
    pg.psql("UPDATE t SET g = g + 1 WHERE g % 10 = 2")
    archive_everything(pg)
    expected = snapshot(pg)

    # dry run: exactly what would go, nothing gone
    code, plan, err = repo.run("expire", "--retention-full", "1", "--dry-run")
    assert code == 0, err
    assert plan["expired"] == [first["id"], first_diff["id"]]
    assert plan["kept"] == [second["id"], second_incr["id"]]
    assert plan["wal_removed"] > 0 and plan["changed"] is True
    old_wal = set(plan["wal_keys"])
    code, info, err = repo.run("info")
    assert len(info["backups"]) == 4

    code, done, err = repo.run("expire", "--retention-full", "1")
    assert code == 0 and done["expired"] == plan["expired"], err
    code, info, err = repo.run("info")
    assert [b["id"] for b in info["backups"]] == [second["id"], second_incr["id"]]
    s3 = seaweed.client()
    left = set(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="main/")["Contents"])
    assert not any(k.startswith(f"main/backup/{first['id']}/") for k in left)
    assert not old_wal & left
    # what is kept still restores, to the end of the archive
    restore_and_compare(repo, workdir, "kept", 15, "latest", expected)
    # and a second run has nothing to do
    code, again, err = repo.run("expire", "--retention-full", "1")
    assert code == 0 and again["changed"] is False and again["expired"] == []


@pytest.mark.pg18
def test_pg18_diff_reads_only_the_summarized_pages_and_restores_as_the_scan(
        pg_cluster, workdir, seaweed, bucket):
    """The same changes taken by a diff that reads every page (changed_blocks=scan) and one
    that reads only what the WAL summaries name: the second reads a small fraction, stores
    about the same, and both restore to exactly the source's data."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket, version=18, **SMALL)
    summarize_wal(pg)
    pg.psql("""
        CREATE TABLE big (k int PRIMARY KEY, v text);
        INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 150000) g;""")
    pg.psql("VACUUM (FREEZE) big")  # else the VACUUM below would rewrite every page
    full = backup(repo, "full")
    pg.psql("UPDATE big SET v = 'changed' WHERE k BETWEEN 20000 AND 21000")
    pg.psql("DELETE FROM big WHERE k > 140000")
    pg.psql("VACUUM big")  # truncates the end of the table
    pg.psql("INSERT INTO big SELECT g, 'again' FROM generate_series(140001, 141000) g")
    code, scanned, err = repo.run("backup", "--type", "diff", "--changed-blocks", "scan")
    assert code == 0, err
    scanned = scanned["backup"]
    summarized = backup(repo, "diff")
    expected = snapshot(pg)
    assert (scanned["block_source"], summarized["block_source"]) == ("page_scan", "wal_summary")
    assert scanned["reference"] == summarized["reference"] == full["id"]
    assert summarized["delta_read_size"] * 5 < scanned["delta_read_size"], (
        summarized["delta_read_size"], scanned["delta_read_size"])
    assert summarized["stored_size"] < 1.5 * scanned["stored_size"], (
        summarized["stored_size"], scanned["stored_size"])
    for item in (scanned, summarized):
        restore_and_compare(repo, workdir, item["id"][-4:] + item["id"][9:15], 18,
                            item["id"], expected)
