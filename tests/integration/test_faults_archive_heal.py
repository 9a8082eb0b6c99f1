"""Archiving heals itself (issue 12, item 2) on real PostgreSQL 15 and SeaweedFS: with a
wrong bucket in the config file, pushes fail and pg_stat_archiver counts them (wal-push
exits non-zero); the worker logs the failure once a minute, not once a segment; once the
config file is fixed (replaced, as the agent role's template does), archiving resumes
within one archive_timeout with nothing killed by hand, and a restore to latest holds the
last committed row (no segment missing)."""
import os
import shutil
import time

import pytest

from tests.integration.pgdr_run import (archive_everything, archiving_cluster, restore_args,
                                        wait_until_promoted)
from tests.integration.test_staged_restore import Writer  # rows k = 1000, 1001, ...

ARCHIVE_TIMEOUT = 5


def _replace(path, text):
    """Write like Ansible's template module: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    shutil.chown(tmp, "postgres")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _archiver(pg):
    failed, last = pg.psql("SELECT failed_count, coalesce(last_archived_wal, '') "
                           "FROM pg_stat_archiver").split("|")
    return int(failed), last


def _pending(pg):
    return int(pg.psql("SELECT count(*) FROM pg_ls_archive_statusdir() "
                       "WHERE name LIKE '%.ready'"))


def _poll(condition, timeout, what):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "%s: not within %s s" % (what, timeout)
        time.sleep(0.2)


@pytest.mark.parametrize("broken", ["bucket", "secret_key"])
def test_d12_2_archiving_resumes_after_the_config_is_fixed(pg_cluster, workdir, seaweed,
                                                           bucket, broken):
    """bucket: a wrong bucket in the config file; secret_key: credentials rotated (a wrong
    secret in the credentials file, then the right one)."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    pg.psql("ALTER SYSTEM SET archive_timeout = %d" % ARCHIVE_TIMEOUT)
    pg.psql("SELECT pg_reload_conf()")
    code, dummy, err = repo.run("backup")
    assert code == 0, err
    archive_everything(pg)  # the backup's WAL is archived before the bucket breaks
    _poll(lambda: _pending(pg) == 0, 60, "the archiver idle")
    path, line, wrong = ((repo.config, "s3_bucket = %s\n" % bucket, "wrong-" + bucket)
                         if broken == "bucket" else
                         (repo.credentials, "s3_secret_key = %s\n" % seaweed.secret_key,
                          "wrong-secret"))
    good = path.read_text()
    assert line in good
    _replace(path, good.replace(line, line.split(" = ")[0] + " = %s\n" % wrong))
    failed_before, archived_before = _archiver(pg)
    writer = Writer(pg)
    writer.start()
    try:
        # wal-push exits non-zero: PostgreSQL counts the failures, nothing is archived
        _poll(lambda: _archiver(pg)[0] >= failed_before + 3, 120, "archive failures")
        time.sleep(2 * ARCHIVE_TIMEOUT)  # segments pile up while the bucket is wrong
        failed_broken, archived_broken = _archiver(pg)
        assert archived_broken == archived_before
        assert _pending(pg) >= 2

        _replace(path, good)  # fixed, as re-running setup would
        fixed_at = time.time()
        _poll(lambda: _archiver(pg)[1] != archived_broken, ARCHIVE_TIMEOUT,
              "archiving resumed after the fix")
        resumed = time.time() - fixed_at
    finally:
        writer.finish()
    assert not writer.is_alive() and writer.written > 0
    last = 999 + writer.written
    archive_everything(pg)

    logs = list((workdir / "spool" / "archive").glob("main-*/worker.log"))
    assert len(logs) == 1, logs
    text = logs[0].read_text()
    failing = [line for line in text.splitlines() if "archiving FAILING" in line]
    assert 1 <= len(failing) <= 2, text  # once a minute (the broken period is < 2 min)
    assert (wrong in failing[0]) == (broken == "bucket")  # a secret is never logged
    assert ("access to" in failing[0]) == (broken == "secret_key")
    assert "archiving recovered" in text
    print(text)
    print("archiving resumed %.1f s after the fix; %d failures counted while broken"
          % (resumed, failed_broken - failed_before))

    target = workdir / "restored" / "data"
    restored, args = restore_args(15, target)
    code, dummy, err = repo.run("restore", "--target", target, "--point", "latest", *args)
    assert code == 0, err
    restored.start()
    try:
        wait_until_promoted(restored)
        count, top = restored.psql("SELECT count(*), max(k) FROM ticks").split("|")
    finally:
        restored.stop()
    assert (int(count), int(top)) == (writer.written, last)
