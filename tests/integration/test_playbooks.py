"""The collection's playbooks, run for real: ansible-playbook pgdr.postgresql.setup, .backup
and .restore against PostgreSQL 15 and SeaweedFS (S3) on 127.0.0.1.

The node is localhost (ansible_connection=local, become with su, as in the demo). The agent
goes under this module's own directory (pgdr_agent_prefix, pgdr_agent_config_file,
pgdr_agent_credentials_file, pgdr_agent_launcher, pgdr_agent_venv, pgdr_spool_dir), never into /opt,
/usr/local/bin, /etc or /var/spool.

One installation and one backup serve the whole module: the tests run in file order
(setup, backup, restore) and build on each other; run alone, a test gets the agent and a
backup from the `agent` and `backup` fixtures.
"""
import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from lab.lab import REPO, PgCluster, free_port, load_sample_data
from tests.integration.pgdr_run import checksums

ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
CLUSTER = "playbooks"
HOST = "localhost"
# setup.yml also runs the archiving role unless pgdr_archiving is false; these tests cover
# the agent, backup and restore (the archiving role has tests of its own)
ARCHIVING = False
_HEADER = re.compile(r"^(?:PLAY RECAP|PLAY|TASK|RUNNING HANDLER)(?: \[(.*)\])? \*+$", re.M)
_STATUS = re.compile(r"^(ok|changed|skipping|fatal|failed): \[", re.M)
_RECAP = re.compile(r"^%s\s+:\s+(.*)$" % re.escape(HOST), re.M)


def _ansible_env():
    """The environment scripts/demo.sh gives ansible-playbook, without the caller's AWS_*
    keys (the inventory must be the only source of credentials), ANSIBLE_* or PG* settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ANSIBLE_", "PG"))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH="%s:%s" % (REPO / ".venv" / "bin", env.get("PATH", "/usr/bin:/bin")))
    return env


def as_postgres(*cmd):
    return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], cwd="/",
                          capture_output=True, text=True, timeout=300, check=False)


class Run:
    """One ansible-playbook run: exit code, stdout + stderr, the PLAY RECAP of the node and
    the statuses each task reported."""

    def __init__(self, cmd, proc):
        self.cmd = cmd
        self.rc = proc.returncode
        self.output = proc.stdout + proc.stderr
        match = _RECAP.search(proc.stdout)
        self.recap = ({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}
                      if match else {})

    def task(self, name_start):
        """Statuses (ok, changed, skipping, fatal, ...) of the tasks whose name starts so."""
        headers = list(_HEADER.finditer(self.output))
        found = []
        for i, header in enumerate(headers):
            name = (header.group(1) or "").split(" : ", 1)[-1]
            if name.startswith(name_start):
                end = headers[i + 1].start() if i + 1 < len(headers) else len(self.output)
                found += _STATUS.findall(self.output, header.end(), end)
        return found

    def __repr__(self):
        return "%s\n(exit %d)\n%s" % (" ".join(self.cmd), self.rc, self.output)


class Node:
    """localhost as a database node: its cluster, the repository, the inventory, the agent's
    paths, and what the tests found out so far (installed, backup id)."""

    def __init__(self, root, pg, seaweed, bucket):
        self.root, self.pg, self.seaweed, self.bucket = root, pg, seaweed, bucket
        self.prefix = root / "agent"
        self.venv = self.prefix / "venv"
        self.launcher = root / "bin" / "pgdr"
        self.config = root / "etc" / "pgdr.conf"
        self.credentials = root / "etc" / "credentials"
        self.inventory = root / "inventory.yml"
        self.repository = {"type": "s3", "bucket": bucket, "endpoint": seaweed.endpoint,
                           "region": "us-east-1", "addressing": "path", "prefix": "pb"}
        # the restore state: where root alone can write (the checkout's directories may
        # belong to another user); /var/tmp is sticky
        self.state_dir = Path(tempfile.mkdtemp(prefix="pgdr-restore-state-", dir="/var/tmp"))
        self.installed = False
        self.backup_id = None
        self.restored = []
        self.write_inventory()

    @property
    def secret(self):
        return self.seaweed.secret_key

    def write_inventory(self):
        node = {"ansible_connection": "local",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_become_method": "ansible.builtin.su",
                "pgdr_agent_prefix": str(self.prefix),
                "pgdr_agent_launcher": str(self.launcher),
                "pgdr_agent_config_file": str(self.config),
                "pgdr_agent_credentials_file": str(self.credentials),
                # never the machine's node exporter directory
                "pgdr_agent_metrics_textfile_dir": str(self.root / "textfile")}
        group_vars = {"pgdr_cluster": CLUSTER,
                      "pgdr_repository": self.repository,
                      "pgdr_s3_access_key": self.seaweed.access_key,
                      "pgdr_s3_secret_key": self.seaweed.secret_key,
                      "pgdr_pg": {"host": "127.0.0.1", "port": self.pg.port, "user": "postgres",
                                  "data": str(self.pg.datadir), "bindir": str(self.pg.bindir)},
                      "pgdr_workers": 2,
                      "pgdr_compression": "zstd",
                      "pgdr_agent_venv": str(self.venv),
                      "pgdr_spool_dir": str(self.root / "spool"),
                      "pgdr_archiving": ARCHIVING,
                      "pgdr_restore_state_dir": str(self.state_dir)}
        doc = {"all": {"children": {"pgdr_nodes": {"hosts": {HOST: node},
                                                   "vars": group_vars}}}}
        fd = os.open(self.inventory, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle, indent=2)  # JSON is YAML

    def play(self, name, *args, check=False):
        cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory), "pgdr.postgresql." + name,
               *args] + (["--check"] if check else [])
        proc = subprocess.run(cmd, cwd=REPO, env=_ansible_env(), capture_output=True,
                              text=True, timeout=600, check=False)
        return Run(cmd, proc)

    def cli(self, *args):
        """The installed launcher as user postgres, --json: (exit code, result)."""
        res = as_postgres(self.launcher, *args, "--json")
        lines = [line for line in res.stdout.splitlines() if line.strip()]
        assert lines, res.stderr
        return res.returncode, json.loads(lines[-1])

    def stored_objects(self):
        return self.seaweed.usage(self.bucket)[1]


@contextlib.contextmanager
def own_node(lab_root, seaweed, prefix, node_class=None):
    """A node (node_class, default Node) in a directory of its own under lab_root, with a
    PostgreSQL 15 cluster (not initialised) and an empty bucket; afterwards every cluster
    it started is stopped and the directory removed (kept with PGDR_KEEP_OUTPUT=1)."""
    subprocess.run([str(REPO / "scripts" / "link-collection.sh")], check=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=lab_root))
    os.chmod(root, 0o755)
    pg = PgCluster(15, root / "pg15" / "data")
    bucket = "t-" + uuid.uuid4().hex[:16]
    seaweed.create_bucket(bucket)
    this = (node_class or Node)(root, pg, seaweed, bucket)
    try:
        yield this
    finally:
        for cluster in this.restored + [pg]:
            try:
                cluster.stop()
            except (OSError, RuntimeError) as exc:  # keep stopping the others
                print("warning: could not stop cluster %s: %s" % (cluster.datadir, exc))
        if os.environ.get("PGDR_KEEP_OUTPUT") != "1":
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(this.state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def node(lab_root, seaweed):
    """A PostgreSQL 15 cluster with sample data, an empty bucket and the inventory, in a
    directory of its own (what pg_cluster, bucket and workdir give one test, for the module)."""
    with own_node(lab_root, seaweed, "playbooks-") as this:
        this.pg.init()
        this.pg.start()
        load_sample_data(this.pg)
        this.pg.psql("CHECKPOINT")
        yield this


@pytest.fixture
def agent(node):
    """The agent installed by setup.yml (test_setup_installs_the_agent did it already when
    the module runs in order)."""
    if not node.installed:
        run = node.play("setup")
        assert run.rc == 0, run
        node.installed = True


@pytest.fixture
def backup(node, agent):
    """The id of a complete backup taken by backup.yml."""
    if node.backup_id is None:
        run = node.play("backup")
        assert run.rc == 0, run
        node.backup_id = _backup_id(run)
    return node.backup_id


def _backup_id(run):
    match = re.search(r"backup (\S+) of cluster %s on %s:" % (CLUSTER, HOST), run.output)
    assert match, run
    return match.group(1)


def _mode(path):
    st = path.stat()
    return stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, st.st_gid


def _stale_byte_code(engine):
    """Engine modules whose byte code the PostgreSQL user's interpreter would not use (it
    cannot write __pycache__ there: each archive or restore call would compile them): no
    .pyc, one others cannot read, or one whose header names another source mtime or size.
    (The agent's interpreter is the same python3 as this one: same cache tag and magic.)"""
    stale = []
    for source in sorted(engine.rglob("*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        st = source.stat()
        try:
            header = cached.read_bytes()[:16]
            readable = bool(cached.stat().st_mode & 0o004) and (
                cached.parent.stat().st_mode & 0o005) == 0o005
        except OSError:
            readable = False
        if not readable:
            stale.append(str(source.relative_to(engine)))
            continue
        flags, mtime, size = struct.unpack("<III", header[4:16])
        if header[:4] != importlib.util.MAGIC_NUMBER or flags != 0 or (
                mtime, size) != (int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF):
            stale.append(str(source.relative_to(engine)))
    return stale


def test_setup_installs_the_agent(node):
    postgres = pwd.getpwnam("postgres")
    created = [node.prefix, node.launcher.parent, node.config.parent]

    check = node.play("setup", check=True)
    assert check.rc == 0 and check.recap["failed"] == 0, check
    assert check.recap["changed"] > 0, check
    assert check.task("Install the runtime requirements") == ["changed"], check
    assert [p for p in created if p.exists()] == [], "check mode created files:\n%s" % check

    first = node.play("setup")
    assert first.rc == 0 and first.recap["failed"] == 0, first
    assert first.recap["changed"] > 0, first
    assert first.task("Check the pgdr CLI") == ["ok"], first  # the handler ran the launcher
    node.installed = True

    res = as_postgres(node.launcher, "--version")
    assert res.returncode == 0 and re.match(r"^pgdr \S+\n$", res.stdout), res
    assert (node.prefix / "lib" / "pgdr" / "cli.py").is_file()
    assert _stale_byte_code(node.prefix / "lib" / "pgdr") == []
    launcher = node.launcher.read_text()
    assert str(node.venv) in launcher and str(node.config) in launcher, launcher
    assert _mode(node.launcher) == (0o755, "root", 0)
    # docs/architecture.md: pgdr.conf 0640 root:postgres, credentials 0600 postgres
    assert _mode(node.config) == (0o640, "root", postgres.pw_gid)
    assert _mode(node.credentials) == (0o600, "postgres", postgres.pw_gid)
    assert _mode(node.config.parent) == (0o750, "root", postgres.pw_gid)
    config = node.config.read_text()
    assert "s3_bucket = %s" % node.bucket in config and "cluster = %s" % CLUSTER in config
    assert node.secret not in config and "s3_secret_key" not in config
    assert "s3_secret_key = %s" % node.secret in node.credentials.read_text()
    for run in (check, first):
        assert node.secret not in run.output

    second = node.play("setup")
    assert second.rc == 0 and second.recap["changed"] == 0, second
    assert second.recap["ok"] > 0 and node.secret not in second.output


@pytest.mark.usefixtures("agent")
def test_backup_check_mode_then_one_complete_backup(node):
    check = node.play("backup", check=True)
    assert check.rc == 0 and check.recap["failed"] == 0, check
    assert check.task("Take a backup") == ["changed"], check
    assert node.stored_objects() == 0, "check mode wrote into the bucket"
    # the launcher reads the test's config and credentials files, not /etc/pgdr
    code, info = node.cli("info")
    assert code == 0 and info["cluster"] == CLUSTER and info["backups"] == [], info

    real = node.play("backup")
    assert real.rc == 0 and real.recap["failed"] == 0, real
    assert real.task("Take a backup") == ["changed"], real
    assert real.recap["changed"] == check.recap["changed"], (check, real)
    node.backup_id = _backup_id(real)

    code, info = node.cli("info")
    assert code == 0, info
    assert [b["id"] for b in info["backups"]] == [node.backup_id], info
    assert info["incomplete"] == [], info
    assert node.stored_objects() > 0
    for run in (check, real):
        assert node.secret not in run.output


@pytest.mark.usefixtures("agent")
def test_restore_starts_a_copy_with_the_same_data(node, backup):
    target = node.root / "restore" / "data"
    port = free_port()
    restored = PgCluster(15, target, port=port)
    node.restored.append(restored)
    args = ["-e", "point=latest", "-e", "target=%s" % target, "-e", "pgdr_restore_port=%d" % port]

    first = node.play("restore", *args)
    assert first.rc == 0 and first.recap["failed"] == 0, first
    assert first.task("Restore the backup into") == ["changed"], first
    assert first.task("Recover the staged copy on the node") == ["changed"], first
    assert "restored backup %s" % backup in first.output, first
    assert restored.is_running()
    assert checksums(restored) == checksums(node.pg)
    pid = restored.pid()

    again = node.play("restore", *args)
    assert again.rc == 0 and again.recap["failed"] == 0, again
    assert again.task("Restore the backup into") == ["ok"], again
    assert again.recap["changed"] == 0, again
    assert restored.pid() == pid and restored.is_running()
    for run in (first, again):
        assert node.secret not in run.output


@pytest.mark.usefixtures("backup")
def test_restore_refuses_a_point_it_cannot_parse(node):
    target = node.root / "restore-bad" / "data"
    objects = node.stored_objects()
    run = node.play("restore", "-e", json.dumps({"point": "yesterday at noon",
                                                 "target": str(target),
                                                 "pgdr_restore_port": free_port()}))
    assert run.rc != 0 and run.recap["failed"] == 1, run
    assert "[point_invalid]" in run.output, run
    assert run.task("Check the point, the backup and the target") == ["fatal"], run
    assert run.task("Create the target directory") == [], run
    assert not target.parent.exists(), "a refused restore created %s" % target.parent
    assert node.stored_objects() == objects
    assert node.secret not in run.output


@pytest.mark.usefixtures("agent")
def test_failing_backup_fails_the_play_with_the_error_code(node):
    missing = dict(node.repository, bucket="t-missing-" + uuid.uuid4().hex[:8])
    objects = node.stored_objects()
    run = node.play("backup", "-e", json.dumps({"pgdr_repository": missing}))
    assert run.rc != 0 and run.recap["failed"] == 1, run
    assert "[bucket_not_found]" in run.output, run
    assert run.task("Report why the backup failed") == ["fatal"], run
    assert node.stored_objects() == objects
    assert node.secret not in run.output
