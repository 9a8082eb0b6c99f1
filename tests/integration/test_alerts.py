"""The alert rules on real parts (issue 12, items 5 and 6).

- promtool checks prometheus/pgdr.rules.yml and runs its rule tests (every alert fires on
  its input series and stays quiet on the others);
- Debian's prometheus and prometheus-node-exporter (textfile collector), on loopback ports,
  read the textfile pgdr writes for a real PostgreSQL 15 archiving into SeaweedFS: a wrong
  bucket in the config file makes ArchivingFailing fire in Prometheus's API within the
  rule's for: (a test copy of the rules with a short one); the fixed config file resolves
  it, and no WAL was lost (a restore to latest holds the last committed row).
"""
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from lab.lab import REPO, Seaweed, free_port
from tests.integration.pgdr_run import (archive_everything, archiving_cluster, postgres_dir,
                                        restore_rows)
from tests.integration.test_faults_archive_heal import _replace
from tests.integration.test_staged_restore import Writer

PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
RULES = REPO / "prometheus" / "pgdr.rules.yml"
RULE_TESTS = REPO / "prometheus" / "pgdr.rules.test.yml"
ALERTS = ("BackupTooOld", "ArchivingFailing", "RPOObjectiveMissed", "RepositoryUnreachable",
          "DrillFailed", "DrillTooOld")
FOR_SECONDS = 10  # the test copy's for: of ArchivingFailing
# how long the S3 server stays down in the outage case (the 2 minutes; lower it
# with PGDR_TEST_OUTAGE_SECONDS when iterating locally)
OUTAGE_SECONDS = int(os.environ.get("PGDR_TEST_OUTAGE_SECONDS", "120"))
# what `pgdr check` says while each break is in place
EXPECTED_CHECK = {"bucket": "bucket_not_found", "secret_key": "access_denied",
                  "archive_command": "check_archive_command_mismatch",
                  "s3_outage": "endpoint_unreachable", "rotated": "access_denied"}
ARCHIVE_TIMEOUT = 5


def _need(binary):
    assert os.access(binary, os.X_OK), "%s missing: run scripts/bootstrap.sh (apt packages " \
        "prometheus and prometheus-node-exporter)" % binary


def _rules():
    return yaml.safe_load(RULES.read_text())["groups"][0]["rules"]


def test_rules_pass_promtool_check_and_their_tests():
    _need(PROMTOOL)
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULES.parent,
                            capture_output=True, text=True, timeout=300, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # every alert of the issue is there, has a for:, a severity and a summary naming the
    # cluster, and the rule tests expect it to fire at least once
    rules = dict((r["alert"], r) for r in _rules())
    tests = RULE_TESTS.read_text()
    for name in ALERTS:
        rule = rules[name]
        assert rule.get("for") and rule["labels"]["severity"] in ("critical", "warning"), rule
        assert "{{ $labels.cluster }}" in rule["annotations"]["summary"], rule
        assert "alertname: %s\n        exp_alerts:\n          - exp_labels" % name in tests, name


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode("utf-8"))


def _wait(condition, timeout, what, step=0.25):
    """Poll until condition() is truthy; its value. A bounded wait, not a timed assert."""
    deadline = time.time() + timeout
    while True:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        assert time.time() < deadline, "%s: not within %s s" % (what, timeout)
        time.sleep(step)


class Servers:
    """prometheus and prometheus-node-exporter on loopback ports, under workdir."""

    def __init__(self, workdir, textfile_dir):
        self.workdir = workdir
        self.textfile_dir = textfile_dir
        self.exporter_port = free_port()
        self.port = free_port(avoid=(self.exporter_port,))
        self.procs = []

    def start(self):
        rules = _rules()
        for rule in rules:
            if rule["alert"] == "ArchivingFailing":
                rule["for"] = "%ds" % FOR_SECONDS
        (self.workdir / "rules.yml").write_text(yaml.safe_dump(
            {"groups": [{"name": "pgdr", "rules": rules}]}))
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.workdir / "rules.yml")],
            "scrape_configs": [{"job_name": "node", "static_configs": [
                {"targets": ["127.0.0.1:%d" % self.exporter_port]}]}]}))
        self._spawn("node-exporter", [
            NODE_EXPORTER, "--web.listen-address=127.0.0.1:%d" % self.exporter_port,
            "--collector.disable-defaults", "--collector.textfile",
            "--collector.textfile.directory=%s" % self.textfile_dir])
        self._spawn("prometheus", [
            PROMETHEUS, "--config.file=%s" % (self.workdir / "prometheus.yml"),
            "--storage.tsdb.path=%s" % (self.workdir / "tsdb"),
            "--web.listen-address=127.0.0.1:%d" % self.port])

    def _spawn(self, name, argv):
        log = open(self.workdir / (name + ".log"), "wb")
        self.procs.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                  cwd=self.workdir)))
        log.close()

    def stop(self):
        for dummy, proc in self.procs:
            proc.terminate()
        for dummy, proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def query(self, expr):
        url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (
            self.port, urllib.parse.quote(expr))
        return _get(url)["data"]["result"]

    def alerts(self, name, state="firing"):
        doc = _get("http://127.0.0.1:%d/api/v1/alerts" % self.port)
        return [a for a in doc["data"]["alerts"]
                if a["labels"]["alertname"] == name and a["state"] == state]

    def logs(self):
        return "\n".join("--- %s\n%s" % (name, (self.workdir / (name + ".log")).read_text()[-3000:])
                         for name, dummy in self.procs)


def _textfile(path):
    return path.read_text() if path.exists() else ""


class Cron(threading.Thread):
    """pgdr metrics every 2 s (the schedule's one-minute job, faster), beside the wal-push
    worker writing the same file."""

    def __init__(self, repo):
        super().__init__(daemon=True)
        self.repo, self.stop, self.failures = repo, threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            code, dummy, err = self.repo.run("metrics")
            if code != 0:
                self.failures.append(err)
            self.stop.wait(2)

    def finish(self):
        self.stop.set()
        self.join(60)


class Break:
    """One way to break archiving, and its fix (as re-running setup, or the S3 service
    coming back, would): a wrong bucket in the config file, a wrong secret key in the
    credentials file, archive_command pointing elsewhere (not through pgdr: only
    pg_stat_archiver, through pgdr metrics, tells), the S3 server stopped for
    OUTAGE_SECONDS, and the server's credentials rotated while the node keeps the old
    ones. The last two run against a private SeaweedFS the test may stop."""

    PRIVATE = ("s3_outage", "rotated")

    def __init__(self, kind, pg, repo, seaweed, bucket):
        self.kind, self.pg, self.repo, self.seaweed = kind, pg, repo, seaweed
        self.broken_at = None
        if kind == "archive_command":
            self.command = pg.psql("SHOW archive_command")
            return
        if kind == "s3_outage":
            return
        self.path, self.line, wrong = (
            (repo.config, "s3_bucket = %s\n" % bucket, "wrong-" + bucket) if kind == "bucket"
            else (repo.credentials, "s3_secret_key = %s\n" % seaweed.secret_key, "wrong"))
        self.good = self.path.read_text()
        assert self.line in self.good
        self.bad = self.good.replace(self.line, self.line.split(" = ")[0] + " = %s\n" % wrong)

    def _command(self, command):
        self.pg.psql("ALTER SYSTEM SET archive_command = '%s'" % command.replace("'", "''"))
        self.pg.psql("SELECT pg_reload_conf()")

    def apply(self):
        self.broken_at = time.time()
        if self.kind == "archive_command":
            self._command("/bin/false")
        elif self.kind == "s3_outage":
            self.seaweed.stop()
        elif self.kind == "rotated":  # the server's key changes; the node has the old one
            self.seaweed.restart(secret_key="rotated-" + self.seaweed.secret_key[:20])
        else:
            _replace(self.path, self.bad)

    def fix(self):
        if self.kind == "archive_command":
            self._command(self.command)
        elif self.kind == "s3_outage":  # the service comes back after its outage
            time.sleep(max(0.0, self.broken_at + OUTAGE_SECONDS - time.time()))
            self.seaweed.restart()
        elif self.kind == "rotated":  # setup re-run with the new key
            _replace(self.path, self.good.replace(self.line, "s3_secret_key = %s\n"
                                                  % self.seaweed.secret_key))
        else:
            _replace(self.path, self.good)


def _check_says(repo):
    """What `pgdr check` says while archiving is broken: (error code, exit code)."""
    code, out, err = repo.run("check", "--check-archive-wait", "15")
    return (out or {}).get("error", {}).get("code", "ok" if code == 0 else err.strip()), code


@pytest.fixture
def repository(request, seaweed, bucket, workdir):
    """(SeaweedFS, bucket): the session's, or a private one for a case that stops or
    re-keys the server."""
    if request.node.callspec.params["kind"] not in Break.PRIVATE:
        yield seaweed, bucket
        return
    private = Seaweed(workdir / "private-s3")
    private.start()
    try:
        private.client().create_bucket(Bucket="matrix")
        yield private, "matrix"
    finally:
        private.stop()


@pytest.mark.parametrize("kind", ["bucket", "secret_key", "archive_command", "s3_outage",
                                  "rotated"])
def test_d12_6_archiving_failing_alert_fires_and_resolves(pg_cluster, workdir, repository,
                                                          kind):
    _need(PROMETHEUS)
    _need(NODE_EXPORTER)
    seaweed, bucket = repository
    textfile_dir = postgres_dir(workdir / "textfile")
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket,
                                 metrics_textfile_dir=str(textfile_dir), rpo_objective=600)
    # rows 1..999 now, the writer's from 1000 on: a restore holds 1..last without a hole
    pg.psql("INSERT INTO ticks (k) SELECT generate_series(1, 999)")
    pg.psql("ALTER SYSTEM SET archive_timeout = %d" % ARCHIVE_TIMEOUT)
    pg.psql("SELECT pg_reload_conf()")
    code, dummy, err = repo.run("backup")
    assert code == 0, err
    archive_everything(pg)
    code, out, err = repo.run("metrics")  # the cron job's first run
    assert code == 0, err
    prom = textfile_dir / "pgdr_main.prom"
    text = _textfile(prom)
    for family in ("pgdr_backup_last_success_timestamp_seconds", "pgdr_repository_up",
                   "pgdr_archive_last_success_timestamp_seconds", "pgdr_rpo_seconds",
                   "pgdr_rpo_objective_met", "pgdr_archive_pending_segments"):
        assert "# TYPE %s " % family in text and "# HELP %s " % family in text, text
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all('cluster="main"' in line for line in samples), text
    assert 'pgdr_repository_up{cluster="main"} 1' in text, text
    assert 'pgdr_backup_last_success_timestamp_seconds{cluster="main",type="full"}' in text

    servers = Servers(workdir, textfile_dir)
    servers.start()
    writer = cron = None
    try:
        _wait(lambda: servers.query('pgdr_repository_up{cluster="main"} == 1'), 60,
              "prometheus scraping the node exporter's textfile\n" + servers.logs())
        assert not servers.alerts("ArchivingFailing", "pending")
        assert not servers.alerts("ArchivingFailing")

        cron = Cron(repo)
        cron.start()
        broken = Break(kind, pg, repo, seaweed, bucket)
        broken.apply()
        broken_at = broken.broken_at
        writer = Writer(pg)
        writer.start()

        def failing_in_textfile():
            values = dict(
                (ln.split("{")[0], float(ln.split()[-1]))
                for ln in _textfile(prom).splitlines()
                if ln.startswith(("pgdr_archive_last_failure", "pgdr_archive_last_success")))
            return values.get("pgdr_archive_last_failure_timestamp_seconds", 0) > values.get(
                "pgdr_archive_last_success_timestamp_seconds", 0)

        _wait(failing_in_textfile, 120, "the failure recorded in the textfile")
        recorded = time.time() - broken_at
        firing = _wait(lambda: servers.alerts("ArchivingFailing"), FOR_SECONDS + 60,
                       "ArchivingFailing firing\n" + servers.logs())
        fired = time.time() - broken_at
        assert firing[0]["labels"]["cluster"] == "main"
        assert firing[0]["labels"]["severity"] == "critical"
        assert "cluster main" in firing[0]["annotations"]["summary"]
        # the alert waited for its for: after the failure was in the textfile
        assert fired >= FOR_SECONDS

        # the cron job while archiving is broken: the repository answers only when the
        # settings are right
        _wait(lambda: 'pgdr_repository_up{cluster="main"} %d' % (kind == "archive_command")
              in _textfile(prom), 30, "pgdr_repository_up from the cron job")

        check_said = _check_says(repo)
        broken.fix()
        fixed_at = time.time()
        archived_before = pg.psql("SELECT coalesce(last_archived_time, 'epoch') "
                                  "FROM pg_stat_archiver")
        _wait(lambda: pg.psql("SELECT coalesce(last_archived_time, 'epoch') > '%s' "
                              "FROM pg_stat_archiver" % archived_before) == "t",
              ARCHIVE_TIMEOUT + 120, "archiving resumed after the fix")
        recovered = time.time() - fixed_at
        _wait(lambda: not servers.alerts("ArchivingFailing")
              and not servers.alerts("ArchivingFailing", "pending"), 120,
              "ArchivingFailing resolved\n" + servers.logs())
        resolved = time.time() - fixed_at
    finally:
        for thread in (writer, cron):
            if thread is not None:
                thread.finish()
        servers.stop()
    assert cron.failures == []
    assert all(proc.poll() is not None for dummy, proc in servers.procs)
    figures = {"case": kind, "check_code": check_said[0], "check_exit": check_said[1],
               "failure_in_textfile_s": round(recorded, 1), "rule_for_s": FOR_SECONDS,
               "alert_firing_after_break_s": round(fired, 1),
               "archiving_recovered_after_fix_s": round(recovered, 1),
               "alert_resolved_after_fix_s": round(resolved, 1)}
    assert check_said[0] == EXPECTED_CHECK[kind], figures

    # nothing lost: every committed row is in a restore to latest
    last = 999 + writer.written
    segment = archive_everything(pg)
    code, dummy, err = repo.run("metrics")
    assert code == 0, err
    text = _textfile(prom)
    assert 'pgdr_repository_up{cluster="main"} 1' in text
    recorded_segment = re.findall(r'pgdr_archive_last_segment_info\{cluster="main",'
                                  r'segment="([0-9A-F]{24})"\} 1', text)
    assert recorded_segment and recorded_segment[0] >= segment, text
    top, dummy = restore_rows(repo, workdir, "restored", "--point", "latest")
    assert top == last
    figures.update(rows_committed=last, rows_restored_to_latest=top)
    (REPO / "tests" / "output" / ("alerts-matrix-%s.json" % kind)).write_text(
        json.dumps(figures, indent=1) + "\n")
    print("alerts matrix:", json.dumps(figures))
    shutil.rmtree(workdir / "tsdb", ignore_errors=True)
