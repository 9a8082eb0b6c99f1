"""`pgdr check` on real PostgreSQL 15 and SeaweedFS (issue 12, item 1): every cause of a
set-up that does not protect fails with its own stable error code and exit code, names the
cause in one line, lists the checks done (ok/failed, seconds), and leaves no probe object
behind; a working set-up passes every check, WAL round trip included."""
import shutil

from tests.integration.pgdr_run import Repo, archiving_cluster

ALL = ["config", "repository", "postgres", "archive_mode", "archive_command",
       "archive_round_trip"]


def _names(out, ok=True):
    checks = out["checks"] if ok else out["error"]["checks"]
    return [c["name"] for c in checks], [c["ok"] for c in checks]


def _no_probe_left(seaweed, bucket, cluster="main"):
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(
        Bucket=bucket, Prefix="%s/check/" % cluster).get("Contents", [])]
    assert keys == [], keys


def _set_archive_command(pg, command):
    pg.psql("ALTER SYSTEM SET archive_command = '%s'" % command.replace("'", "''"))
    pg.psql("SELECT pg_reload_conf()")


def test_d12_1_check_passes_on_a_working_setup_with_a_wal_round_trip(pg_cluster, workdir,
                                                                     seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    code, out, err = repo.run("check", "--check-archive-wait", 60)
    assert code == 0, err
    names, oks = _names(out)
    assert names == ALL and all(oks), out
    assert out["changed"] is False and all(c["seconds"] >= 0 for c in out["checks"])
    segment = out["checks"][-1]["detail"].split()[1]
    archived = pg.psql("SELECT last_archived_wal FROM pg_stat_archiver")
    assert archived >= segment, (archived, out)
    _no_probe_left(seaweed, bucket)
    # check mode (--dry-run) runs the same checks
    code, dry, err = repo.run("check", "--dry-run")
    assert code == 0 and _names(dry) == (ALL, [True] * 6), err


def test_d12_1_check_names_a_missing_bucket(pg_cluster, workdir, seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    repo.settings["s3_bucket"] = "no-such-bucket-" + bucket
    repo.write()
    code, out, err = repo.run("check")
    assert code == 3 and out["error"]["code"] == "bucket_not_found", err
    assert _names(out, ok=False) == (["config", "repository"], [True, False])
    errors = [line for line in err.splitlines() if "error [" in line]
    assert len(errors) == 1 and "bucket 'no-such-bucket-%s' does not exist" % bucket in errors[0]


def test_d12_1_check_names_a_wrong_secret_key(pg_cluster, workdir, seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    repo.secrets["s3_secret_key"] = "wrong-" + seaweed.secret_key
    repo.write()
    code, out, err = repo.run("check")
    assert code == 3 and out["error"]["code"] == "access_denied", err
    assert "wrong-" not in err and "wrong-" not in str(out)


def test_d12_1_check_refuses_archive_mode_off(pg_cluster, workdir, seaweed, bucket):
    pg = pg_cluster(15)
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    code, out, err = repo.run("check")
    assert code == 10 and out["error"]["code"] == "check_archive_mode_off", err
    assert _names(out, ok=False)[1] == [True, True, True, False]
    _no_probe_left(seaweed, bucket)


def test_d12_1_check_refuses_an_archive_command_into_another_cluster(pg_cluster, workdir,
                                                                     seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    other = workdir / "other.conf"  # archive_command's config: another cluster's prefix
    other.write_text(repo.config.read_text().replace("cluster = main", "cluster = other"))
    shutil.chown(other, "postgres")
    _set_archive_command(pg, pg.psql("SHOW archive_command").replace(str(repo.config),
                                                                     str(other)))
    code, out, err = repo.run("check")
    assert code == 10 and out["error"]["code"] == "check_archive_command_mismatch", err
    assert "cluster 'other' (archive_command) != 'main' (this check)" in err, err


def test_d12_1_check_times_out_when_the_segment_never_arrives(pg_cluster, workdir, seaweed,
                                                              bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    # archive_command reads this credentials file: the archiver fails, the check's own
    # credentials (another file) are right
    bad = workdir / "bad-credentials"
    bad.write_text("[pgdr]\ns3_access_key = %s\ns3_secret_key = wrong\n" % seaweed.access_key)
    shutil.chown(bad, "postgres")
    bad.chmod(0o600)
    _set_archive_command(pg, pg.psql("SHOW archive_command").replace(str(repo.credentials),
                                                                     str(bad)))
    code, out, err = repo.run("check", "--check-archive-wait", 5)
    assert code == 10 and out["error"]["code"] == "check_archive_timeout", err
    assert _names(out, ok=False) == (ALL, [True] * 5 + [False])
    assert "check_archive_wait=5s" in err and "failure" in err, err
