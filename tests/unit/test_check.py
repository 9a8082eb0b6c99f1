"""pgdr check through its module (issue 12, item 1): each check with ok and seconds, the
first failure a structured failure with its code and the checks done; the probe object is
never left behind; check mode runs the same checks and nothing is ever changed."""
import os

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands.check import (
    archive_command_settings)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    ArchiveCheckFailed)
from ansible_collections.pgdr.postgresql.plugins.modules import pg_check


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    return {"repo_type": "posix", "repo_path": str(path), "cluster": "main",
            "pg_host": "127.0.0.1", "pg_port": 1}


@pytest.mark.parametrize("check_mode", [False, True])
def test_d12_1_postgres_unreachable_after_a_clean_probe(run_module, repo, check_mode):
    result = run_module(pg_check, repo, check_mode=check_mode)
    assert result["failed"] is True and not result.get("changed")
    assert result["error_code"] == "postgres_unavailable"
    assert [(c["name"], c["ok"]) for c in result["checks"]] == [
        ("config", True), ("repository", True), ("postgres", False)]
    assert all(c["seconds"] >= 0 for c in result["checks"])
    assert list(os.walk(repo["repo_path"]))[-1][2] == []  # the probe was deleted


def test_d12_1_missing_repository_directory(run_module, repo, tmp_path):
    result = run_module(pg_check, dict(repo, repo_path=str(tmp_path / "absent")))
    assert result["error_code"] == "repository_not_found"
    assert [c["ok"] for c in result["checks"]] == [True, False]


@pytest.mark.parametrize("command,why", [
    ("cp %p /mnt/wal/%f", "does not run pgdr wal-push"),
    ("/usr/local/bin/pgdr wal-push --no-such-flag %p", "would refuse its arguments"),
    ("/usr/local/bin/pgdr wal-push --config '/x %p", "cannot be parsed"),
])
def test_d12_1_archive_command_that_is_not_pgdr(command, why):
    with pytest.raises(ArchiveCheckFailed) as caught:
        archive_command_settings(command, None)
    assert caught.value.code == "check_archive_command_mismatch" and why in caught.value.msg


def test_d12_1_archive_command_flags_and_config_are_read(tmp_path):
    config = tmp_path / "pgdr.conf"
    config.write_text("[pgdr]\ncluster = main\ns3_bucket = b1\nrepo_prefix = p\n")
    pushed, used = archive_command_settings(
        "/usr/local/bin/pgdr wal-push --config %s --cluster other %%p" % config, None)
    assert (pushed.cluster, pushed.s3_bucket, pushed.repo_prefix) == ("other", "b1", "p")
    assert used == str(config)
    pushed, used = archive_command_settings("/usr/local/bin/pgdr wal-push %p", str(config))
    assert pushed.cluster == "main" and used == str(config)
