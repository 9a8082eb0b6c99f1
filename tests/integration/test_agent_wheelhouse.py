"""The agent on a node without PyPI access: pgdr_agent_wheelhouse (a directory of wheels on the
controller) is copied to the node and pip installs from it alone. Here every package index
is unreachable (PIP_INDEX_URL points at a closed port): setup.yml still installs a working
agent, so nothing came from an index."""
import json
import subprocess

from lab.lab import REPO
from tests.integration.test_playbooks import as_postgres, own_node


def test_setup_installs_the_agent_from_a_wheelhouse_without_an_index(
        lab_root, seaweed, monkeypatch):
    with own_node(lab_root, seaweed, "wheelhouse-") as node:
        node.pg.init()
        node.pg.start()
        wheelhouse = node.root / "wheelhouse"
        subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "pip", "download", "-q",
                        "--disable-pip-version-check", "--only-binary=:all:",
                        "-r", str(REPO / "requirements.txt"), "-d", str(wheelhouse)],
                       check=True, timeout=600)
        inventory = json.loads(node.inventory.read_text())
        inventory["all"]["children"]["pgdr_nodes"]["hosts"]["localhost"][
            "pgdr_agent_wheelhouse"] = str(wheelhouse)
        node.inventory.write_text(json.dumps(inventory))
        monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")

        run = node.play("setup")
        assert run.rc == 0, run
        assert run.task("Copy the wheelhouse to the node") == ["changed"], run
        assert run.task("Install the runtime requirements") == ["changed"], run
        copied = sorted(p.name for p in (node.prefix / "wheelhouse").iterdir())
        assert copied == sorted(p.name for p in wheelhouse.iterdir())
        probe = as_postgres(node.venv / "bin" / "python", "-c",
                            "import boto3, botocore, psycopg2, zstandard, cryptography")
        assert probe.returncode == 0, probe.stderr
