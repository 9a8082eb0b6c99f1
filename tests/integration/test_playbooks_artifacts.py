"""AWX artifacts and temporary credentials (issue 12, item 7), with the real playbooks on
localhost, PostgreSQL 15 and SeaweedFS:
- backup.yml publishes set_stats pgdr_backup (id, type, size, duration) and restore.yml
  pgdr_restore (the point reached, the target, the measured RTO): the custom stats AWX
  keeps as the job's artifacts (shown here with ANSIBLE_SHOW_CUSTOM_STATS);
- the controller's AWS_SESSION_TOKEN reaches the engine's settings (the credentials file,
  mode 0600, as the engine reads it) and never appears in any play's output."""
import json
import re
import subprocess
import uuid

import pytest

from lab.lab import REPO, PgCluster, free_port
from tests.integration.test_playbooks import (ANSIBLE_PLAYBOOK, _ansible_env, _mode,
                                              as_postgres, own_node)


@pytest.fixture(scope="module")
def node(lab_root, seaweed):
    with own_node(lab_root, seaweed, "artifacts-") as this:
        this.pg.init()
        this.pg.start()
        this.pg.psql("CREATE TABLE t (k int)")
        this.pg.psql("INSERT INTO t SELECT generate_series(1, 1000)")
        yield this


def _play(node, name, token, *args):
    """ansible-playbook with AWS_SESSION_TOKEN in its environment and the custom stats shown
    (what AWX keeps as the job's artifacts): (exit code, the stats, the whole output)."""
    collections = node.root / "collections" / "ansible_collections" / "pgdr"
    collections.mkdir(parents=True, exist_ok=True)
    if not (collections / "postgresql").exists():  # this checkout, whatever .cache holds
        (collections / "postgresql").symlink_to(REPO)
    env = dict(_ansible_env(), AWS_SESSION_TOKEN=token, ANSIBLE_SHOW_CUSTOM_STATS="true",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_COLLECTIONS_PATH=str(node.root / "collections"))
    cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(node.inventory), "pgdr.postgresql." + name, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    output = proc.stdout + proc.stderr
    found = re.findall(r"^\s*RUN: (\{.*\})\s*$", proc.stdout, re.M)
    return proc.returncode, json.loads(found[-1]) if found else {}, output


def test_d12_7_set_stats_and_the_session_token(node):
    token = "FwoGZXIvYXdzE" + uuid.uuid4().hex  # an STS token's shape
    code, doc, output = _play(node, "setup", token)
    # the token reached the engine: the credentials file (0600, owner postgres) holds it,
    # the engine's own resolve() reads it from there, and every S3 request carries it:
    # SeaweedFS, which issued no such token, refuses them (the same setup without the
    # token passes below)
    assert code != 0 and "denied (403)" in output, output
    assert token not in output
    assert _mode(node.credentials)[:2] == (0o600, "postgres")
    assert "s3_session_token = %s\n" % token in node.credentials.read_text()
    assert token not in node.config.read_text()
    probe = as_postgres(
        node.venv / "bin" / "python", "-c",
        "import sys; sys.path.insert(0, %r); from pgdr.options import resolve; "
        "s = resolve(config_file=%r, credentials_file=%r, environ={}); "
        "print(s.s3_session_token == %r)" % (str(node.prefix / "lib"), str(node.config),
                                             str(node.credentials), token))
    assert probe.returncode == 0 and probe.stdout.strip() == "True", probe

    code, doc, output = _play(node, "setup", "")  # the token expired: not set any more
    assert code == 0, output
    assert "s3_session_token" not in node.credentials.read_text()
    token = ""

    code, doc, output = _play(node, "backup", token, "-e", "backup_type=full")
    assert code == 0, output
    assert "pgdr_backup" in doc, output[-3000:]
    stats = doc["pgdr_backup"]
    assert set(stats) >= {"id", "type", "size_bytes", "duration_seconds", "cluster", "host"}
    assert stats["type"] == "full" and int(stats["size_bytes"]) > 0
    assert float(stats["duration_seconds"]) > 0
    code, info = node.cli("info")
    assert code == 0 and [b["id"] for b in info["backups"]] == [stats["id"]], info
    assert info["backups"][0]["size"] == int(stats["size_bytes"])

    target = node.root / "restore" / "data"
    port = free_port()
    node.restored.append(PgCluster(15, target, port=port))
    code, doc, output = _play(node, "restore", token, "-e", "point=latest",
                              "-e", "target=%s" % target, "-e", "pgdr_restore_port=%d" % port)
    assert code == 0, output
    assert "pgdr_restore" in doc, output[-3000:]
    stats = doc["pgdr_restore"]
    assert stats["target"] == str(target), stats
    assert stats["point"] == "latest" and stats["backup_id"] == info["backups"][0]["id"]
    assert stats["reached_lsn"] and float(stats["rto_seconds"]) > 0, stats
    assert node.restored[-1].psql("SELECT count(*) FROM t") == "1000"
