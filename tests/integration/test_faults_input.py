"""Issue 11, defects 11 and 13 through the real CLI: input PostgreSQL or the engine would
refuse is refused before anything is written (no object in the bucket, no file in the
target), in one line naming the option, the value and what is expected, exit 2; and a
backup's progress and counts tell the truth."""
import gzip
import json
import re

import pytest

from tests.integration.pgdr_run import Repo, pgbench_running, postgres_dir


def one_error_line(err):
    lines = [l for l in err.splitlines() if "error [" in l]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def keys(seaweed, bucket):
    listing = seaweed.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def refused(repo, verb, *args, option, shown):
    """Exit 2, config_invalid, one line 'pgdr VERB: error [config_invalid]: OPTION=VALUE ...'."""
    code, out, err = repo.run(verb, *args)
    line = one_error_line(err)
    assert code == 2, err
    assert out["failed"] and out["error"]["code"] == "config_invalid", out
    assert out["error"]["option"] == option, out
    assert line.startswith("pgdr %s: error [config_invalid]: %s=%s " % (verb, option, shown)), line
    assert "expected" in line or "is not a valid" in line, line
    return line


BAD_BACKUP = [
    (("--chunk-size", "0"), "chunk_size", "0"),
    (("--workers", "0"), "workers", "0"),
    (("--workers", "-4"), "workers", "-4"),
    (("--s3-part-size", "0"), "s3_part_size", "0"),
    (("--bundle-limit", "-1"), "bundle_limit", "-1"),
    (("--backup-lease", "0"), "backup_lease", "0"),
    (("--compression", "gzip", "--compression-level", "15"), "compression_level", "15"),
    (("--pg-port", "70000"), "pg_port", "70000"),
    (("--cluster", "../main"), "cluster", "'../main'"),
    (("--cluster", "main\nx"), "cluster", "'main\\nx'"),
    (("--repo-prefix", "../up"), "repo_prefix", "'../up'"),
    (("--repo-prefix", "/abs"), "repo_prefix", "'/abs'"),
    (("--repo-prefix", "a//b"), "repo_prefix", "'a//b'"),
    (("--repo-prefix", "a\\b"), "repo_prefix", "'a\\\\b'"),
]


def test_d11_11_bad_backup_options_write_nothing_to_s3(pg_cluster, seaweed, bucket, workdir):
    pg = pg_cluster(15)
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    for args, option, shown in BAD_BACKUP:
        refused(repo, "backup", *args, option=option, shown=shown)
        assert keys(seaweed, bucket) == [], args
    # nothing was started on the server either: no backup in progress, no pgdr slot
    assert pg.psql("SELECT count(*) FROM pg_replication_slots") == "0"


def test_d11_11_dotdot_refused_on_posix_too(workdir):
    """'..' in cluster names and backup ids was refused by the posix backend only."""
    root = postgres_dir(workdir / "posix-repo")
    outside = postgres_dir(workdir / "outside")
    repo = Repo(workdir, repo_type="posix", repo_path=root)
    refused(repo, "backup", "--cluster", "../outside", option="cluster", shown="'../outside'")
    refused(repo, "verify", "--backup-id", "../../outside", option="backup_id",
            shown="'../../outside'")
    assert list(root.iterdir()) == [] and list(outside.iterdir()) == []


SETTINGS = [  # (--settings value, why it is refused)
    ("port=5999\nlisten_addresses='*'", "control character"),
    ("work_mem=64MB\r", "control character"),
    ("work mem=64MB", "setting name"),
    ("application_name=ends\\", "backslash"),
    ("max_connections=abc", "non-negative integer"),
    ("max_connections=-5", "non-negative integer"),
    ("max_wal_senders=ten", "non-negative integer"),
]


def test_d11_11_bad_restore_input_writes_nothing(pg_cluster, seaweed, bucket, workdir):
    pg = pg_cluster(15)
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    code, out, err = repo.run("backup")
    assert code == 0, err
    stored = keys(seaweed, bucket)
    absent = postgres_dir(workdir / "restores") / "absent-target"
    empty = postgres_dir(workdir / "empty-target")
    for target in (absent, empty):
        for value, why in SETTINGS:
            line = refused(repo, "restore", "--target", target, "--settings", value,
                           option="settings", shown=repr(value))
            assert why in line, line
        refused(repo, "restore", "--target", target, "--backup-id", "../x", option="backup_id",
                shown="'../x'")
        refused(repo, "restore", "--target", target, "--target-timeline", "2; rm",
                option="target_timeline", shown="'2; rm'")
        refused(repo, "restore", "--target", target, "--tablespace-map", "ts=",
                option="tablespace_map", shown="'ts='")
        refused(repo, "restore", "--target", target, "--workers", "0", option="workers",
                shown="0")
        refused(repo, "restore", "--target", target, "--restore-command", "x\ny",
                option="restore_command", shown="'x\\ny'")
    assert not absent.exists()
    assert list(empty.iterdir()) == []
    assert keys(seaweed, bucket) == stored


@pytest.mark.parametrize("verb", ["backup", "restore", "info", "verify", "expire", "drill",
                                  "wal-push", "wal-fetch"])
def test_d11_11_usage_errors_one_line_through_the_real_cli(verb, seaweed, bucket, workdir):
    repo = Repo.s3(workdir, seaweed, bucket)
    positional = {"wal-push": ["/nonexistent"], "wal-fetch": ["000000010000000000000001",
                                                              "/nonexistent/x"]}.get(verb, [])
    code, out, err = repo.run(verb, *positional, "--no-such-option")
    line = one_error_line(err)
    assert line.startswith("pgdr %s: error [usage_invalid]: " % verb), line
    assert "--no-such-option" in line
    assert out["error"]["code"] == "usage_invalid"
    assert code == (130 if verb == "wal-fetch" else 2)
    assert keys(seaweed, bucket) == []


PROGRESS = re.compile(r"pgdr: (backup(?: WAL)?) +([0-9.]+)% (\d+)/(\d+) MiB")


def test_d11_13_backup_under_load_counts_and_progress_agree(pg_cluster, seaweed, bucket,
                                                            workdir):
    """Files grow while the backup reads them (pgbench writing) and WAL is copied after the
    data: no progress line passes 100% or its total, and the text result, the log line and
    the stored manifest give one file count."""
    pg = pg_cluster(15)
    pg.pgbench("-i", "-s", "4", "-q", "postgres")
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg, chunk_size=1, bundle_limit=64)
    with pgbench_running(pg, 8, "postgres", warmup=1):
        proc = repo.popen("backup")
        stdout, stderr = proc.communicate(timeout=600)
    stdout, stderr = stdout.decode(), stderr.decode()
    assert proc.returncode == 0, stderr
    seen = [(m.group(1), float(m.group(2)), int(m.group(3)), int(m.group(4)))
            for m in map(PROGRESS.search, stderr.splitlines()) if m]
    assert any(task == "backup" for task, dummy, dummy2, dummy3 in seen), stderr
    for task, pct, done, total in seen:
        assert pct <= 100.0 and done <= total, (task, pct, done, total, stderr)
    text = re.search(r"^backup (\S+): (\d+) files, ", stdout, re.M)
    logged = re.search(r"backup (\S+) complete: (\d+) files, ", stderr)
    assert text and logged, (stdout, stderr)
    backup_id = text.group(1)
    assert logged.group(1) == backup_id
    client = seaweed.client()
    prefix = "main/backup/%s/" % backup_id
    manifest = json.loads(client.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"]
                          .read())
    listing = json.loads(gzip.decompress(
        client.get_object(Bucket=bucket, Key=prefix + "files.json.gz")["Body"].read()))
    regular = sum(1 for f in listing["files"] if f["kind"] == "file")
    assert int(text.group(2)) == int(logged.group(2)) == manifest["file_count"] == regular
    assert len(listing["files"]) > regular  # directories exist, and are not counted as files
