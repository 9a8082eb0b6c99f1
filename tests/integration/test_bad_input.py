"""Bad parameters and unsafe targets: one clear message each, and nothing lost."""
import os
import time

from lab.lab import free_port
from tests.integration.pgdr_run import Repo, postgres_dir


def one_error_line(err):
    lines = [l for l in err.splitlines() if "error [" in l]
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_bucket(pg_cluster, seaweed, workdir):
    pg = pg_cluster(15)
    repo = Repo.s3(workdir, seaweed, "no-such-bucket", pg=pg)
    code, out, err = repo.run("backup")
    assert code == 3 and out["error"]["code"] == "bucket_not_found"
    assert "'no-such-bucket' does not exist" in one_error_line(err)


def test_wrong_credentials(pg_cluster, seaweed, bucket, workdir):
    pg = pg_cluster(15)
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    repo.secrets["s3_secret_key"] = "wrong-secret"
    repo.write()
    code, out, err = repo.run("backup")
    assert code == 3 and out["error"]["code"] == "access_denied"
    line = one_error_line(err)
    assert "denied" in line and "wrong-secret" not in err + str(out)


def test_wrong_s3_port_fails_fast(pg_cluster, seaweed, bucket, workdir):
    pg = pg_cluster(15)
    port = free_port()
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg, s3_endpoint=f"http://127.0.0.1:{port}")
    started = time.time()
    code, out, err = repo.run("info")
    assert code == 3 and out["error"]["code"] == "endpoint_unreachable"
    assert f"127.0.0.1:{port}" in one_error_line(err)
    assert time.time() - started < 60  # a quick check, not eight slow retries


def test_wrong_postgres_port(seaweed, bucket, workdir):
    port = free_port()
    repo = Repo.s3(workdir, seaweed, bucket, pg_host="127.0.0.1", pg_port=port)
    code, out, err = repo.run("backup")
    assert code == 4 and out["error"]["code"] == "postgres_unavailable"
    assert f"127.0.0.1:{port}" in one_error_line(err)


def test_invalid_option_value_names_value_and_choices(seaweed, bucket, workdir):
    repo = Repo.s3(workdir, seaweed, bucket, compression="lz9")
    code, out, err = repo.run("info")
    assert code == 2
    assert "compression='lz9' is not one of: zstd, gzip, none" in one_error_line(err)


def test_restore_refuses_live_and_nonempty_targets(pg_cluster, seaweed, bucket, workdir):
    pg = pg_cluster(15)
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    code, dummy, err = repo.run("backup")
    assert code == 0, err

    # the data directory of a running server: refused, even with force, and untouched
    before = {p: os.stat(os.path.join(pg.datadir, p)).st_mtime_ns for p in os.listdir(pg.datadir)}
    code, out, err = repo.run("restore", "--target", pg.datadir, "--force")
    assert code == 6 and out["error"]["code"] == "target_running", err
    after = {p: os.stat(os.path.join(pg.datadir, p)).st_mtime_ns for p in os.listdir(pg.datadir)}
    assert before == after
    assert pg.psql("SELECT 1") == "1"

    # a non-empty directory: refused unless forced, and then replaced
    target = postgres_dir(workdir / "busy")
    (target / "keep.txt").write_text("precious")
    code, out, err = repo.run("restore", "--target", target)
    assert code == 6 and out["error"]["code"] == "target_not_empty"
    assert (target / "keep.txt").read_text() == "precious"
    code, out, err = repo.run("restore", "--target", target, "--force")
    assert code == 0, err
    assert not (target / "keep.txt").exists() and (target / "PG_VERSION").exists()


def test_unknown_backup_id(seaweed, bucket, workdir):
    repo = Repo.s3(workdir, seaweed, bucket)
    code, out, err = repo.run("restore", "--target", workdir / "x", "--backup-id",
                              "20990101T000000Z-full")
    assert code == 7 and out["error"]["code"] == "backup_not_found"
    assert "20990101T000000Z-full" in one_error_line(err)
