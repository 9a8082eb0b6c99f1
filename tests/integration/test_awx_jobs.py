"""The AWX content (extensions/awx/controller.yml) run the way AWX runs jobs: each job
template's playbook through ansible-runner with a private data dir (the project: this
repository; the lab inventory without credentials; the survey's answers as string extra
variables; the repository credential type's injected environment), then status, set_stats
artifacts, and no secret in any job event. The workflow's nodes run in order, each
node's artifacts feeding the next, and a failing verify goes to the failure path."""
import json
import os
import shutil
import subprocess
import uuid

import pytest
import yaml

from lab.lab import REPO, PgCluster, free_port, load_sample_data
from tests.integration.pgdr_run import checksums
from tests.integration.test_playbooks import own_node

CONTROLLER = REPO / "extensions" / "awx" / "controller.yml"
RUNNER = REPO / ".venv" / "bin" / "ansible-runner"


class Controller:
    """The controller content, and jobs of its templates through ansible-runner."""

    def __init__(self, node):
        self.node = node
        self.content = yaml.safe_load(CONTROLLER.read_text())
        self.templates = {t["name"]: t for t in self.content["controller_templates"]}
        self.events = []  # every job event's text, for the secret check

    def survey_defaults(self, name):
        spec = self.templates[name].get("survey_spec", {}).get("spec", [])
        return {q["variable"]: str(q.get("default", "")) for q in spec}

    def credential_env(self):
        """The credential type's env injectors, rendered as AWX does (Jinja over the
        credential's inputs)."""
        kind = self.content["controller_credential_types"][0]
        inputs = {"access_key": self.node.seaweed.access_key,
                  "secret_key": self.node.seaweed.secret_key, "session_token": "",
                  "encryption_passphrase": ""}
        env = {}
        for name, template in kind["injectors"]["env"].items():
            field = template.split("{{")[1].split("}}")[0].split("|")[0].strip()
            env[name] = inputs[field]
        return {k: v for k, v in env.items() if v}

    def run(self, name, **extra):
        """(status, artifacts) of one job of template ``name``; extra variables as AWX
        sends them: strings."""
        template = self.templates[name]
        data = self.node.root / "runner" / uuid.uuid4().hex[:8]
        (data / "env").mkdir(parents=True)
        (data / "inventory").mkdir()
        os.symlink(REPO, data / "project")
        inventory = json.loads(self.node.inventory.read_text())
        group = inventory["all"]["children"]["pgdr_nodes"]["vars"]
        for secret in ("pgdr_s3_access_key", "pgdr_s3_secret_key"):
            group.pop(secret)  # the credential type brings them, as in AWX
        (data / "inventory" / "hosts.json").write_text(json.dumps(inventory))
        answers = dict(self.survey_defaults(name), **extra)
        variables = {k: v if isinstance(v, dict) else str(v) for k, v in answers.items()
                     if v != ""}
        (data / "env" / "extravars").write_text(json.dumps(variables))
        (data / "env" / "envvars").write_text(json.dumps(self.credential_env()))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "ANSIBLE_", "PG"))}
        env["PATH"] = "%s:%s" % (REPO / ".venv" / "bin", env.get("PATH", "/usr/bin:/bin"))
        res = subprocess.run([str(RUNNER), "run", str(data), "-p", template["playbook"],
                              "--ident", "job"], env=env, capture_output=True, text=True,
                             timeout=900, check=False)
        job = data / "artifacts" / "job"
        status = (job / "status").read_text().strip() if (job / "status").exists() else "?"
        artifacts = {}
        for path in sorted((job / "job_events").glob("*.json")):
            text = path.read_text()
            self.events.append(text)
            event = json.loads(text)
            if event.get("event") == "playbook_on_stats":
                artifacts = event["event_data"].get("artifact_data", {})
        self.events.append(res.stdout + res.stderr)
        if status != "successful":
            print("job %s: %s\n%s" % (name, status, res.stdout[-4000:]))
        return status, artifacts


@pytest.fixture(scope="module")
def controller(lab_root, seaweed):
    with own_node(lab_root, seaweed, "awx-") as node:
        node.pg.init()
        node.pg.start()
        load_sample_data(node.pg)
        yield Controller(node)


def test_every_template_runs_as_awx_runs_it(controller):
    status, dummy = controller.run("pgdr setup")
    assert status == "successful"
    choices = controller.templates["pgdr backup"]["survey_spec"]["spec"][0]["choices"]
    assert choices == ["full", "diff", "incr", "auto"]
    for backup_type in choices:
        status, artifacts = controller.run("pgdr backup", backup_type=backup_type)
        assert status == "successful"
        backup = artifacts["pgdr_backup"]
        taken = "diff" if backup_type == "auto" else backup_type  # auto: a full is recent
        assert backup["type"] == taken and backup["id"].endswith(taken)
        assert set(backup) >= {"id", "type", "size_bytes", "stored_bytes", "duration_seconds"}
    status, artifacts = controller.run("pgdr check")
    assert status == "successful"
    assert "repository" in artifacts["pgdr_checked"]["localhost"]
    status, artifacts = controller.run("pgdr expire")
    assert status == "successful"
    assert set(artifacts["pgdr_expire"]) >= {"expired", "kept", "wal_removed"}
    assert len(artifacts["pgdr_expire"]["kept"]) == 4  # the full and its chain

    target = controller.node.root / "restored" / "data"
    port = free_port()
    restored = PgCluster(15, target, port=port)
    controller.node.restored.append(restored)  # stopped when the module's node goes
    status, artifacts = controller.run("pgdr restore", target=str(target), pgdr_restore_port=port)
    assert status == "successful"
    assert artifacts["pgdr_restore"]["target"] == str(target)
    live = checksums(controller.node.pg)
    assert checksums(restored) == live

    # a cutover asked for without typing CUTOVER: refused before any node is touched
    unconfirmed = controller.node.root / "unconfirmed" / "data"
    status, dummy = controller.run("pgdr restore", target=str(unconfirmed),
                                   pgdr_restore_port=free_port(), pgdr_restore_cutover="true")
    assert status == "failed"
    assert "restore_confirm=no must be CUTOVER" in controller.events[-1]
    assert not unconfirmed.exists()
    assert controller.node.pg.is_running() and checksums(controller.node.pg) == live


def test_the_workflow_passes_artifacts_and_takes_its_failure_path(controller):
    workflow = controller.content["controller_workflows"][0]
    nodes = {n["identifier"]: n for n in workflow["simplified_workflow_nodes"]}
    assert nodes["backup"]["success_nodes"] == ["verify"]
    assert nodes["verify"]["success_nodes"] == ["drill"]
    assert nodes["verify"]["failure_nodes"] == ["check"]

    status, artifacts = controller.run(nodes["backup"]["unified_job_template"],
                                       **nodes["backup"].get("extra_data", {}))
    assert status == "successful"
    passed = dict(artifacts)
    status, artifacts = controller.run(nodes["verify"]["unified_job_template"], **passed)
    assert status == "successful"
    assert artifacts["pgdr_verify"]["backup_id"] == passed["pgdr_backup"]["id"]
    passed.update(artifacts)
    status, artifacts = controller.run(nodes["drill"]["unified_job_template"], **passed)
    assert status == "successful"
    assert "pgdr_drill" in artifacts

    # failure path: a verify of a backup that is not there fails, the drill does not run,
    # the failure node (pgdr check) does
    status, dummy = controller.run(nodes["verify"]["unified_job_template"],
                                   backup_id="20000101T000000Z-full")
    assert status == "failed"
    failure = nodes["verify"]["failure_nodes"][0]
    status, dummy = controller.run(nodes[failure]["unified_job_template"])
    assert status == "successful"


def test_no_secret_in_any_job_event(controller):
    assert controller.events, "no job ran"
    secret = controller.node.seaweed.secret_key
    assert not [e for e in controller.events if secret in e]


def test_schedules_name_existing_templates_and_workflows(controller):
    names = set(controller.templates) | {w["name"] for w in
                                         controller.content["controller_workflows"]}
    for schedule in controller.content["controller_schedules"]:
        assert schedule["unified_job_template"] in names
        assert schedule["rrule"].startswith("DTSTART:")
    for workflow in controller.content["controller_workflows"]:
        for node in workflow["simplified_workflow_nodes"]:
            assert node["unified_job_template"] in names
    for template in controller.templates.values():
        assert (REPO / template["playbook"]).exists()
    assert shutil.which("ansible-runner", path=str(RUNNER.parent))
