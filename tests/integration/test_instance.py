"""The node-side PostgreSQL layer (postgres/instance.py) that the drill and the restore and
archiving roles (module pg_instance) share, on a real PostgreSQL 15: the checks name what
failed, check mode predicts what the real run changes, and a server that stops during
recovery is reported with its log."""
import os

import pytest

from plugins.module_utils._pgdr.errors import PostgresError
from plugins.module_utils._pgdr.options import resolve
from plugins.module_utils._pgdr.postgres import instance
from plugins.module_utils._pgdr.progress import Progress
from tests.integration.pgdr_run import archiving_cluster


def ask(pg, action, dry_run=False, **params):
    settings = resolve({"pg_host": "127.0.0.1", "pg_port": pg.port, "pg_user": "postgres",
                        "pg_database": "postgres"}, environ={})
    return instance.Request(action, **params).run(settings, Progress(), dry_run=dry_run)


def test_verify_names_each_failed_check_and_predicts_the_amcheck_install(pg_cluster):
    pg = pg_cluster(15)
    pg.psql("CREATE DATABASE shop")
    pg.psql("CREATE TABLE orders (k int PRIMARY KEY); INSERT INTO orders "
            "SELECT generate_series(1, 500)", db="shop")
    assertions = [{"name": "orders are there", "sql": "SELECT count(*) = 500 FROM orders",
                   "database": "shop"},
                  {"name": "a row too many", "sql": "SELECT count(*) = 501 FROM orders",
                   "database": "shop"},
                  {"name": "broken sql", "sql": "SELECT nope FROM orders", "database": "shop"}]
    params = dict(assertions=assertions, expected_databases=["shop", "crm"],
                  recovery={}, target_action="promote")

    predicted = ask(pg, "verify", dry_run=True, **params)
    assert pg.psql("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'",
                   db="shop") == "0"  # check mode created nothing
    real = ask(pg, "verify", **params)
    assert predicted["changed"] is real["changed"] is True
    assert predicted["amcheck_installed"] == real["amcheck_installed"]
    assert "shop" in real["amcheck_installed"]

    results = dict((c["name"], c) for c in real["checks"])
    assert [c["name"] for c in real["checks"]] == [
        "target reached", "connections", "databases", "database connections", "amcheck",
        "orders are there", "a row too many", "broken sql"]
    assert real["ok"] is False
    assert [n for n, c in results.items() if not c["ok"]] == [
        "databases", "a row too many", "broken sql"], real["checks"]
    assert results["databases"]["detail"] == "missing: crm"
    assert "heapallindexed" in results["amcheck"]["detail"]
    assert "nope" in results["broken sql"]["detail"]
    # a second run installs nothing: changed false
    again = ask(pg, "verify", **params)
    assert again["changed"] is False and again["amcheck_installed"] == []


def wal_keys(seaweed, bucket):
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="main/wal/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_archive_probe_sees_the_switched_segment_in_the_repository(
        pg_cluster, workdir, seaweed, bucket):
    pg, _repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    position = pg.psql("SELECT pg_current_wal_lsn()")
    assert ask(pg, "archive_probe", dry_run=True, timeout=60) == {
        "changed": True, "archived": None}
    assert pg.psql("SELECT pg_current_wal_lsn()") == position  # check mode switched nothing
    probed = ask(pg, "archive_probe", timeout=60)
    assert probed["changed"] is True and probed["timeline"] == 1
    assert [k for k in wal_keys(seaweed, bucket) if probed["archived"] in k], (
        probed, wal_keys(seaweed, bucket))


def test_mark_ready_marks_only_finished_segments_of_the_timeline(tmp_path):
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    for name in ("00000002.history", "000000020000000000000003", "000000020000000000000004",
                 "000000020000000000000005", "000000010000000000000003"):
        (wal / name).write_bytes(b"")
    (wal / "archive_status" / "000000020000000000000003.done").write_bytes(b"")
    predicted = instance.mark_ready(str(tmp_path), 2, "000000020000000000000005",
                                    dry_run=True)
    assert not list((wal / "archive_status").glob("*.ready"))
    marked = instance.mark_ready(str(tmp_path), 2, "000000020000000000000005")
    assert predicted == marked == ["00000002.history", "000000020000000000000004"]
    assert sorted(p.name for p in (wal / "archive_status").glob("*.ready")) == [
        "00000002.history.ready", "000000020000000000000004.ready"]
    assert instance.mark_ready(str(tmp_path), 2, "000000020000000000000005") == []


def test_a_server_that_stops_during_recovery_is_reported_with_its_log(pg_cluster, workdir):
    pg = pg_cluster(15)
    pg.stop()
    log = workdir / "server.log"
    log.write_text("FATAL:  could not locate required checkpoint record\n")
    with pytest.raises(PostgresError) as failed:
        ask(pg, "wait_recovery", timeout=5, data_directory=str(pg.datadir), log=str(log))
    assert failed.value.code == "recovery_failed"
    assert "could not locate required checkpoint record" in failed.value.msg
    assert ask(pg, "state")["state"]["up"] is False  # a down server is a state, not a failure
    with pytest.raises(PostgresError) as refused:
        ask(pg, "wait_ready", timeout=1)
    assert refused.value.code == "postgres_unavailable"
    assert not os.path.exists(os.path.join(pg.datadir, "postmaster.pid"))
