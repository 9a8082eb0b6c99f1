"""The modules run in-process (AnsibleModule with patched arguments) against a
posix repository: results, check mode, idempotence and structured failures.
One test runs a module through the ansible CLI to prove the payload is complete."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.pgdr.postgresql.plugins.modules import (
    pg_backup, pg_backup_info, pg_restore_chain, s3_backup_upload)


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    return {"repo_type": "posix", "repo_path": str(path)}


def test_info_of_an_empty_repository(run_module, repo):
    result = run_module(pg_backup_info, dict(repo, cluster="main"), check_mode=True)
    assert result["changed"] is False
    assert result["backups"] == [] and result["latest"] is None
    assert result["incomplete"] == [] and result["events"] == []
    assert result["repository"] == "posix:" + repo["repo_path"]


def test_missing_cluster_is_a_structured_failure(run_module, repo):
    result = run_module(pg_backup_info, repo)
    assert result["failed"] is True
    assert result["error_code"] == "config_missing" and result["stage"] == "config"
    assert "cluster" in result["msg"]


def test_repository_failure_carries_code_and_stage(run_module, tmp_path):
    result = run_module(pg_backup_info, {"repo_type": "posix", "cluster": "main",
                                         "repo_path": str(tmp_path / "absent")})
    assert result["failed"] is True
    assert (result["error_code"], result["stage"]) == ("repository_not_found", "connect")


def test_restore_point_is_checked_before_anything(run_module, repo, tmp_path):
    result = run_module(pg_restore_chain, dict(repo, cluster="main", point="yesterday-ish",
                                               target=str(tmp_path / "t")))
    assert result["failed"] is True and result["error_code"] == "point_invalid"
    assert "'yesterday-ish'" in result["msg"]
    assert not (tmp_path / "t").exists()
    result = run_module(pg_restore_chain, dict(repo, cluster="main",
                                               target=str(tmp_path / "t")))
    assert result["error_code"] == "no_backup"


def test_backup_type_must_be_a_known_type(run_module, repo):
    result = run_module(pg_backup, dict(repo, cluster="main", type="weekly"))
    assert result["failed"] is True and "type" in result["msg"]
    assert "full, diff, incr, auto" in result["msg"]


def test_secrets_are_not_logged(run_module, repo):
    result = run_module(pg_backup_info, dict(repo, cluster="main",
                                             s3_secret_key="hunter2-secret"))
    assert "hunter2-secret" not in json.dumps(result)


def test_config_file_fills_parameters_left_at_default(run_module, repo, tmp_path):
    config = tmp_path / "pgdr.conf"
    config.write_text("[pgdr]\nrepo_type = posix\nrepo_path = %s\ncluster = main\n"
                      % repo["repo_path"])
    result = run_module(pg_backup_info, {"config_file": str(config)})
    assert result["changed"] is False and result["cluster"] == "main"
    result = run_module(pg_backup_info, {"config_file": str(config), "cluster": "other"})
    assert result["cluster"] == "other"
    result = run_module(pg_backup_info, {"config_file": str(tmp_path / "absent.conf")})
    assert result["error_code"] == "config_missing"


def test_upload_check_mode_then_idempotent(run_module, repo, tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "pg_hba.conf").write_text("local all all peer\n")
    args = dict(repo, src=str(src), dest="main/config/")
    planned = run_module(s3_backup_upload, args, check_mode=True)
    assert planned["changed"] is True and planned["uploaded"] == ["main/config/pg_hba.conf"]
    assert os.listdir(repo["repo_path"]) == []
    done = run_module(s3_backup_upload, args)
    assert done["changed"] is True and done["uploaded"] == planned["uploaded"]
    again = run_module(s3_backup_upload, args)
    assert again["changed"] is False and again["unchanged"] == planned["uploaded"]
    assert run_module(s3_backup_upload, args, check_mode=True)["changed"] is False
    (src / "pg_hba.conf").write_text("local all all trust\n")
    refused = run_module(s3_backup_upload, args)
    assert refused["failed"] is True and refused["error_code"] == "object_differs"
    assert refused["keys"] == ["main/config/pg_hba.conf"] and refused["stage"] == "plan"
    replaced = run_module(s3_backup_upload, dict(args, overwrite="different"))
    assert replaced["changed"] is True
    reserved = run_module(s3_backup_upload, dict(args, dest="main/backup/x"))
    assert reserved["error_code"] == "dest_reserved"


def test_encrypted_upload_is_idempotent_and_never_shows_the_passphrase(
        run_module, repo, tmp_path):
    src = tmp_path / "dump.sql"
    src.write_text("INSERT INTO secrets VALUES ('row');\n")
    args = dict(repo, src=str(src), dest="main/dumps/", encryption_passphrase="vault-pass-9q")
    results = [run_module(s3_backup_upload, args, check_mode=True)]
    assert results[0]["changed"] is True and os.listdir(repo["repo_path"]) == []
    results.append(run_module(s3_backup_upload, args))
    assert results[-1]["changed"] is True
    stored = open(os.path.join(repo["repo_path"], "main/dumps/dump.sql"), "rb").read()
    assert stored.startswith(b"PGDRENC") and b"secrets" not in stored
    results.append(run_module(s3_backup_upload, args))
    assert results[-1]["changed"] is False and results[-1]["unchanged"] == ["main/dumps/dump.sql"]
    results.append(run_module(s3_backup_upload, dict(args, encryption_passphrase="guess")))
    assert results[-1]["failed"] is True and results[-1]["error_code"] == "encryption_key_wrong"
    results.append(run_module(s3_backup_upload, dict(args, encryption_passphrase=None)))
    assert results[-1]["error_code"] == "encryption_key_missing"
    for result in results:
        assert "vault-pass-9q" not in json.dumps(result) and "guess" not in json.dumps(result)


@pytest.mark.skipif(not shutil.which("ansible", path=os.path.dirname(sys.executable)),
                    reason="the ansible CLI is not installed beside this Python")
def test_ansiballz_payload_is_complete(collections_root, repo, tmp_path):
    """Through the ansible CLI: the module gets the whole engine it imports."""
    (tmp_path / "f.txt").write_text("x\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root,
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "atmp"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    env.pop("ANSIBLE_CONFIG", None)  # and cwd=tmp_path: no ansible.cfg applies
    args = "repo_type=posix repo_path=%s src=%s dest=main/files/" % (
        repo["repo_path"], tmp_path / "f.txt")
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-c", "local",
         "-i", "localhost,", "-e", "ansible_python_interpreter=%s" % sys.executable,
         "-m", "pgdr.postgresql.s3_backup_upload", "-a", args],
        env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
        universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("=>", 1)[1])  # localhost | CHANGED => {...}
    assert result["changed"] is True and result["uploaded"] == ["main/files/f.txt"]
