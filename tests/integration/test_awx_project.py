"""An AWX / Automation Controller project built on this repository resolves the
collection (collections/requirements.yml, here from a built tarball since no Galaxy is
reachable), and the execution environment definition produces a build context that
installs the collection's Python and system requirements (ansible-builder create)."""
import os
import subprocess
from pathlib import Path

import yaml

from lab.lab import REPO

VENV_BIN = REPO / ".venv" / "bin"


def _run(argv, cwd, expect=0, **env):
    """A command outside the checkout's ansible.cfg (as on a controller): only the
    environment given here, no Galaxy server that answers."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    clean.update(ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/", ANSIBLE_HOME=str(cwd / "home"),
                 PATH="%s:%s" % (VENV_BIN, os.environ["PATH"]), **env)
    res = subprocess.run([str(a) for a in argv], cwd=cwd, env=clean, capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == expect, "%s exited %d, expected %d:\n%s\n%s" % (
        " ".join(map(str, argv)), res.returncode, expect, res.stdout[-3000:], res.stderr[-3000:])
    return res.stdout + res.stderr


def test_project_sync_resolves_the_collection_for_every_playbook(workdir):
    built = workdir / "built"
    _run(["ansible-galaxy", "collection", "build", REPO, "--output-path", built], workdir)
    tarball = sorted(built.glob("pgdr-postgresql-*.tar.gz"))[-1]

    # the project's requirements, with the Galaxy entry pointed at the built tarball
    requirements = yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())
    assert requirements == yaml.safe_load((REPO / "requirements.yml").read_text())
    entries = requirements["collections"]
    assert [e["name"] for e in entries] == ["pgdr.postgresql"]
    entries[0] = {"name": str(tarball), "type": "file"}
    synced = workdir / "project-requirements.yml"
    synced.write_text(yaml.safe_dump(requirements))
    collections = workdir / "collections"
    _run(["ansible-galaxy", "collection", "install", "-r", synced, "-p", collections], workdir)

    # as AWX runs a job template: the project's playbook by its path, the collection from
    # the project sync (the environment overrides the checkout's ansible.cfg)
    empty = workdir / "not-synced"
    empty.mkdir()
    unsynced = _run(["ansible-playbook", "-i", "localhost,", REPO / "playbooks" / "backup.yml",
                     "--list-tasks"], workdir, expect=4, ANSIBLE_COLLECTIONS_PATH=str(empty))
    assert "Could not resolve action pgdr.postgresql.pg_backup" in unsynced, unsynced
    for playbook in sorted((REPO / "playbooks").glob("*.yml")):
        listed = _run(["ansible-playbook", "-i", "localhost,", playbook, "--list-tasks"],
                      workdir, ANSIBLE_COLLECTIONS_PATH=str(collections))
        assert "playbook: %s" % playbook in listed, listed
        # and as pgdr.postgresql.<name> from the installed collection
        _run(["ansible-playbook", "-i", "localhost,", "pgdr.postgresql." + playbook.stem,
              "--list-tasks"], workdir, ANSIBLE_COLLECTIONS_PATH=str(collections))


def test_execution_environment_context_installs_the_requirements(workdir):
    definition = REPO / "extensions" / "awx" / "execution-environment.yml"
    spec = yaml.safe_load(definition.read_text())
    assert spec["version"] == 3
    context = workdir / "context"
    _run(["ansible-builder", "create", "-f", definition, "-c", context], workdir)
    build = context / "_build"
    python = (build / "requirements.txt").read_text()
    for package in ("boto3", "botocore", "psycopg2-binary", "zstandard"):
        assert package in python, python
    system = (build / "bindep.txt").read_text()
    assert "openssh-client" in system and "postgresql" not in system and "make" not in system
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())
    assert [e["name"] for e in galaxy["collections"]] == ["pgdr.postgresql"]
    containerfile = (context / "Containerfile").read_text()
    assert "requirements.txt" in containerfile and "bindep.txt" in containerfile
    assert Path(build / "scripts" / "assemble").exists()
