"""The playbooks prove and refuse (issue 12, items 1, 3 and 4), run for real against
PostgreSQL 15 and SeaweedFS on 127.0.0.1 (localhost as the node, as in test_playbooks.py),
with WAL archiving on:

- setup.yml with a wrong bucket fails with ONE line naming the cause and the inventory
  variable to fix; fixed in the inventory and run again, it passes its own pgdr check (a
  WAL segment's round trip: archiving works again, nothing killed by hand);
- cluster.yml with its defaults installs cron lines that each exit 0 when run as cron
  runs them (the user, cron's minimal environment, /bin/sh -c), the nightly expire
  included (its retention comes from the same variables as the lifecycle rules);
- a group of another name, a misspelled or a bad extra variable: the play fails with one
  line naming the variable, before any node is touched.
"""
import json
import pwd
import re
import subprocess

import pytest

from lab.lab import REPO
from tests.integration.test_playbooks import ANSIBLE_PLAYBOOK, Node, Run, _ansible_env, own_node


class ArchivingNode(Node):
    """The test_playbooks node with archiving on, the schedule's files under its root,
    and this checkout as the collection (whatever .cache/collections points at)."""

    def write_inventory(self):
        super().write_inventory()
        doc = json.loads(self.inventory.read_text())
        group = doc["all"]["children"]["pgdr_nodes"]
        group["vars"].update(
            pgdr_archiving=True, pgdr_check_archive_wait=60,
            pgdr_archiving_service_name="", pgdr_archiving_rpo=30,
            pgdr_schedule_cron_file=str(self.root / "cron.d" / "pgdr"),
            pgdr_schedule_wrapper=str(self.root / "bin" / "pgdr-cron"),
            pgdr_schedule_log_file=str(self.root / "log" / "backup.log"),
            pgdr_schedule_state_dir=str(self.root / "state"),
            pgdr_schedule_logrotate=False)
        (self.root / "cron.d").mkdir(exist_ok=True)  # as /etc/cron.d exists on a node
        self.inventory.write_text(json.dumps(doc, indent=2))

    def play(self, name, *args, check=False, inventory=None):
        collections = self.root / "collections" / "ansible_collections" / "pgdr"
        collections.mkdir(parents=True, exist_ok=True)
        if not (collections / "postgresql").exists():
            (collections / "postgresql").symlink_to(REPO)
        cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory or self.inventory),
               "pgdr.postgresql." + name, *args] + (["--check"] if check else [])
        env = dict(_ansible_env(), ANSIBLE_COLLECTIONS_PATH=str(self.root / "collections"))
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=900, check=False)
        return Run(cmd, proc)


@pytest.fixture(scope="module")
def node(lab_root, seaweed):
    with own_node(lab_root, seaweed, "checkplays-", node_class=ArchivingNode) as this:
        this.pg.init()
        this.pg.start()
        this.pg.psql("CREATE TABLE ticks (k int PRIMARY KEY)")
        yield this


def _errors(run):
    """The one-line causes of the failed tasks."""
    return re.findall(r"^\[ERROR\]: Task failed: Action failed: (.*)$", run.output, re.M)


def test_d12_1_setup_fails_naming_the_bucket_then_heals_when_fixed(node):
    node.repository["bucket"] = "t-wrong-" + node.bucket
    node.write_inventory()
    broken = node.play("setup")
    assert broken.rc != 0, broken
    errors = _errors(broken)
    assert len(errors) == 1, broken
    assert errors[0].startswith("pgdr check on localhost: bucket 't-wrong-%s' does not exist"
                                % node.bucket), broken
    assert errors[0].endswith("fix pgdr_repository.bucket"), broken
    assert node.secret not in broken.output

    node.repository["bucket"] = node.bucket  # fixed in the inventory, setup run again
    node.write_inventory()
    fixed = node.play("setup")
    assert fixed.rc == 0 and fixed.recap["failed"] == 0, fixed
    output = " ".join(fixed.output.split())
    assert re.search(r"pgdr check on localhost: config ok .*archive_round_trip ok", output), fixed
    node.installed = True


def _cron_lines(path):
    """(schedule, user, command) of each entry of a cron.d file."""
    entries = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 6 if not line.startswith("@") else 2)
        if line.startswith("@"):
            entries.append((fields[0], fields[1], fields[2]))
        else:
            entries.append((" ".join(fields[:5]), fields[5], fields[6]))
    return entries


def _as_cron(user, command):
    """Run a cron command as cron does: as the user, in its home, with cron's environment."""
    home = pwd.getpwnam(user).pw_dir
    env = {"HOME": home, "LOGNAME": user, "USER": user, "SHELL": "/bin/sh",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run(["setpriv", "--reuid", user, "--regid", user, "--init-groups",
                           "--", "/bin/sh", "-c", command], env=env, cwd=home,
                          capture_output=True, text=True, timeout=600, check=False)


def test_d12_3_every_default_cron_line_exits_0(node):
    run = node.play("cluster")
    assert run.rc == 0 and run.recap["failed"] == 0, run
    config = node.config.read_text()
    assert "retention_full = 2" in config, config  # the default, one source for both
    entries = _cron_lines(node.root / "cron.d" / "pgdr")
    jobs = [command.split()[1] for dummy, dummy, command in entries]
    assert jobs == ["backup-full", "backup-diff", "expire", "metrics"], entries
    for schedule, user, command in entries:
        assert user == "postgres"
        res = _as_cron(user, command)
        log = (node.root / "log" / "backup.log").read_text()
        assert res.returncode == 0, (command, res.stdout, res.stderr, log[-3000:])
        assert res.stdout == "" and res.stderr == ""  # cron would mail anything printed
    log = (node.root / "log" / "backup.log").read_text()
    assert log.count("exit 0 after") == 3, log  # the metrics job logs only its failures
    metrics = (node.root / "textfile" / "pgdr_playbooks.prom").read_text()
    assert 'pgdr_repository_up{cluster="playbooks"} 1' in metrics, metrics
    assert 'pgdr_backup_max_age_seconds{cluster="playbooks"} 93600' in metrics, metrics
    assert "expired nothing" in log or "expired " in log, log


@pytest.mark.parametrize("playbook,args,expected", [
    (playbook, ["-e", "pgdr_hosts=dbs"], "no host of the inventory matches pgdr_hosts=dbs")
    for playbook in ("backup", "restore", "drill", "setup", "cluster")] + [
    ("restore", ["-e", "piont=latest"], "piont is not a variable of pgdr: did you mean point?"),
    ("drill", ["-e", "piont=latest"], "piont is not a variable of pgdr: did you mean point?"),
    ("backup", ["-e", "backup_tpye=diff"],
     "backup_tpye is not a variable of pgdr: did you mean backup_type?"),
    # restore_host never was a name (the old one is restore_node)
    ("restore", ["-e", "restore_host=db1"],
     "restore_host is not a variable of pgdr: did you mean pgdr_restore_host?"),
])
def test_d12_4_playbooks_refuse_before_touching_a_node(node, playbook, args, expected):
    run = node.play(playbook, *args)
    errors = _errors(run)
    assert run.rc != 0 and len(errors) == 1 and errors[0].startswith(expected), run
    assert "PLAY [Check the hosts and the variables" in run.output
    assert len(re.findall(r"^PLAY \[", run.output, re.M)) == 1, run  # no node play ran


@pytest.mark.parametrize("playbook,args,expected", [
    ("backup", ["-e", "backup_type=diff2"],
     "backup_type=diff2 is not a backup type: use full, diff, incr, auto or snapshot"),
    ("restore", ["-e", "target=rel/dir", "-e", "restore_action=go"],
     "target=rel/dir is not an absolute directory; restore_action=go is not one of "
     "promote, pause, shutdown"),
    ("drill", ["-e", "drill_port=abc"], "drill_port=abc is not a port number"),
    # the names before 0.2.0 reach the role: the playbook checks them as well
    ("restore", ["-e", "restore_cutover=true", "-e", "restore_confirm=yes"],
     "a cutover replaces the live cluster: restore_confirm=yes must be CUTOVER"),
    ("restore", ["-e", "restore_port=54x"], "pgdr_restore_port=54x is not a port number"),
    ("setup", ["-e", "pgdr_retention_full=two"], "pgdr_retention_full=two is not a whole number"),
])
def test_d12_4_bad_values_name_the_variable_set(node, playbook, args, expected):
    run = node.play(playbook, *args)
    assert run.rc != 0 and _errors(run) == [expected], run


def test_d12_4_another_group_name_fails_with_one_line(node, tmp_path):
    doc = json.loads(node.inventory.read_text())
    doc["all"]["children"] = {"databases": doc["all"]["children"]["pgdr_nodes"]}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps(doc))
    run = node.play("backup", inventory=inventory)
    assert run.rc != 0, run
    assert _errors(run) == [
        "no host of the inventory matches pgdr_hosts=pgdr_nodes (its default): set -e "
        "pgdr_hosts=GROUP to the group of the database nodes (the inventory has: databases), "
        "or name that group pgdr_nodes"], run


@pytest.mark.parametrize("given,expected", [
    ({"s3_ca_bundel": "/etc/ssl/corp.pem"},
     "pgdr_options: s3_ca_bundel is not an engine option: did you mean s3_ca_bundle?"),
    ({"s3_secret_key": "not-to-be-printed-42"},
     "pgdr_options: s3_secret_key is a secret: set it with its own variable"),
])
def test_pgdr_options_are_checked_before_touching_a_node(node, given, expected):
    run = node.play("backup", "-e", json.dumps({"pgdr_options": given}))
    assert run.rc != 0 and expected in run.output, run
    assert len(re.findall(r"^PLAY \[", run.output, re.M)) == 1, run  # no node play ran
    assert "not-to-be-printed-42" not in run.output


def test_pgdr_options_reach_the_modules_that_take_them(node):
    """min_interval reaches pg_backup (a backup within a day of the last one is skipped);
    drill_port, which pg_backup does not take, is left out for it instead of failing."""
    assert node.play("backup").rc == 0
    code, before = node.cli("info")
    run = node.play("backup", "-e", json.dumps({"pgdr_options": {"min_interval": 86400,
                                                                 "drill_port": 7999}}))
    assert run.rc == 0 and "min_interval" in run.output, run
    code, after = node.cli("info")
    assert code == 0 and after["backups"] == before["backups"]
