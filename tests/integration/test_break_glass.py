"""docs/break-glass.md, followed literally: its `sh break-glass` blocks run in order, with
the AWS CLI (its own virtualenv), zstd, jq and python3's standard library, and nothing of
pgdr on the PATH, against a full + diff + incr chain with a tablespace and archived WAL in
SeaweedFS. The result starts and holds exactly what a pgdr restore of the same point
holds, and what the source holds."""
import os
import re
import shutil
import subprocess
import time

import pytest

from lab.lab import REPO, PgCluster, free_port, pg_bindir
from tests.integration.pgdr_run import (archive_everything, archiving_cluster, checksums,
                                        postgres_dir, restore_args, wait_until_promoted,
                                        write_rows)

DOC = REPO / "docs" / "break-glass.md"
AWS_BIN = REPO / ".cache" / "awscli-venv" / "bin"
BLOCK = re.compile(r"^```sh break-glass\n(.*?)^```$", re.M | re.S)


def doc_script():
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 5, "docs/break-glass.md lost its marked blocks"
    return "\n".join(blocks)


def test_the_doc_has_no_pgdr_command():
    """Every command of the procedure is a standard tool: pgdr is never called."""
    script = doc_script()
    verbs = "|".join(("backup", "restore", "wal-fetch", "wal-push", "info", "verify", "drill",
                      "check", "expire", "cleanup", "metrics"))
    assert not re.search(r"\bpgdr\s+(%s)\b" % verbs, script), "the procedure calls pgdr"
    assert "bin/pgdr" not in script and "/opt/pgdr" not in script
    for tool in ("aws s3", "zstd -d", "sha256sum -c", "jq", "python3", "pg_ctl", "psql"):
        assert tool in script, tool


@pytest.fixture
def chain(pg_cluster, workdir, seaweed, bucket):
    """Full, then diff, then incr, with writes between and after them, a tablespace made
    before the full, everything archived, the source idle."""
    if not (AWS_BIN / "aws").exists():
        pytest.fail("the AWS CLI is missing in %s: run make setup" % AWS_BIN)
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    space = postgres_dir(workdir / "ts-source")
    pg.psql(f"CREATE TABLESPACE extra LOCATION '{space}'")
    pg.psql("CREATE TABLE in_extra TABLESPACE extra AS SELECT g, md5(g::text) AS h "
            "FROM generate_series(1, 20000) g")
    pg.psql("CREATE DATABASE bench")
    pg.pgbench("-i", "-s", "3", "-q", "bench")
    write_rows(pg, 1, 20, {})
    for kind, first in (("full", 21), ("diff", 41), ("incr", 61)):
        code, out, err = repo.run("backup", "--type", kind)
        assert code == 0 and out["backup"]["type"] == kind, err
        pg.pgbench("-t", "300", "-c", "2", "bench")
        pg.psql("UPDATE in_extra SET h = md5(h) WHERE g %% 7 = %d" % (first % 7))
        write_rows(pg, first, first + 19, {})
    archive_everything(pg)
    return pg, repo


def test_break_glass_restore_matches_pgdr(chain, workdir, seaweed, bucket):
    pg, repo = chain
    expected = checksums(pg)

    # pgdr's own restore of the same point (the end of the archive)
    own, args = restore_args(15, workdir / "pgdr" / "data")
    started = time.time()
    code, out, err = repo.run("restore", "--target", own.datadir, "--point", "latest",
                              "--tablespace-map", "extra=%s" % postgres_dir(workdir / "ts-own"),
                              *args)
    assert code == 0, err
    own.start()
    try:
        wait_until_promoted(own)
        pgdr_seconds = time.time() - started
        assert checksums(own) == expected, "pgdr's own restore differs from the source"
    finally:
        own.stop()

    # the same point by hand, following the document
    target = workdir / "glass" / "data"
    postgres_dir(target.parent)
    os.chmod(target.parent, 0o755)
    port = free_port()
    env = {"PATH": "%s:/usr/bin:/bin:/usr/sbin:/sbin" % AWS_BIN, "HOME": str(workdir),
           "LANG": "C.UTF-8", "ENDPOINT": seaweed.endpoint, "BUCKET": bucket, "PREFIX": "",
           "CLUSTER": "main", "BACKUP": "", "TARGET": str(target),
           "PGBIN": str(pg_bindir(15)), "PORT": str(port), "RECOVERY_TARGET": "",
           "AWS_ACCESS_KEY_ID": seaweed.access_key,
           "AWS_SECRET_ACCESS_KEY": seaweed.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}
    assert shutil.which("pgdr", path=env["PATH"]) is None
    started = time.time()
    res = subprocess.run(["bash", "-c", doc_script()], env=env, cwd=str(workdir),
                         capture_output=True, text=True, timeout=900, check=False)
    glass_seconds = time.time() - started
    restored = PgCluster(15, target, port=port)
    restored.socket_dir = target
    try:
        assert res.returncode == 0, "the procedure failed (%d):\n%s\n%s\n%s" % (
            res.returncode, res.stdout[-3000:], res.stderr[-3000:],
            (workdir / "glass" / "data.log").read_text()[-3000:]
            if (workdir / "glass" / "data.log").exists() else "")
        assert "restoring backup " in res.stdout and "-incr" in res.stdout, res.stdout
        assert checksums(restored) == expected, "the break-glass restore differs"
    finally:
        restored.stop()
    secrets_seen = [s for s in (seaweed.secret_key,) if s in res.stdout + res.stderr]
    assert not secrets_seen, "the procedure printed the secret key"
    assert seaweed.secret_key not in (target / "postgresql.auto.conf").read_text()
    assert seaweed.secret_key not in (target / "restore_wal.sh").read_text()
    print("break-glass: %.1f s by hand (AWS CLI, zstd, jq, python3) vs %.1f s with pgdr, "
          "restore to latest of a full + diff + incr chain with a tablespace"
          % (glass_seconds, pgdr_seconds))
