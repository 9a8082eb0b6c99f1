"""A real Patroni cluster (Patroni from PyPI, etcd from Debian, PostgreSQL 15) of three
members on 127.0.0.1: the same `pgdr backup --backup-from prefer-standby` on every member
gives exactly one backup, from the replica Patroni's member list designates; after the
leader is killed (-9, Patroni and PostgreSQL) under pgbench load, Patroni fails over,
archiving continues from the new leader with no gap (verify's WAL continuity check), the
next backup runs on the new topology with no config change, a restore to latest holds
every row committed before and after the failover, and one to a time after it exactly the
rows committed up to that time. Also the staged and the bootstrap PITR of a Patroni
cluster."""
import json
import re
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from lab.lab import REPO, PgCluster, free_port, pg_bindir
from tests.integration.pgdr_run import (PGDR, Repo, archive_everything, checksums,
                                        postgres_dir, restore_args, restore_rows,
                                        wait_until_promoted, write_rows)

PATRONI = REPO / ".venv" / "bin" / "patroni"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"

pytestmark = pytest.mark.skipif(
    not PATRONI.exists() or not Path(ETCD).exists(),
    reason="needs patroni (test-requirements.txt) and etcd (scripts/bootstrap.sh)")


def _get(url):
    with urllib.request.urlopen(url, timeout=3) as response:
        return json.loads(response.read().decode())


class Member:
    """One Patroni member: its PostgreSQL (a PgCluster for psql and stop), its REST API,
    and a pgdr config for backups on this node."""

    def __init__(self, workdir, name, etcd_port, archive, fetch, replica_from=None,
                 scope="pgdrtest", bootstrap_from=None, api_auth=None):
        self.name = name
        self.api_auth = api_auth  # (user, password): restapi.authentication
        self.scope = scope
        self.replica_from = replica_from  # a Repo: build this replica from the repository
        self.bootstrap_from = bootstrap_from  # (Repo, point): a new cluster from a backup
        self.home = postgres_dir(workdir / name)
        os.chmod(self.home, 0o755)
        self.api = free_port()
        self.pg = PgCluster(15, self.home / "data", port=free_port())
        postgres_dir(self.pg.socket_dir)
        self.url = "http://127.0.0.1:%d" % self.api
        self.config = self.home / "patroni.yml"
        self._write_config = lambda: self.config.write_text(
            yaml.safe_dump(self._settings(etcd_port, archive, fetch)))
        self._write_config()
        os.chown(self.config, self.pg_uid, -1)
        self.process = None

    def bootstrap_next_from(self, repo, point):
        """Patroni reads bootstrap only when it initialises a cluster: the PITR's leader
        gets its bootstrap.method before it starts on an empty data directory."""
        self.bootstrap_from = (repo, point)
        self._write_config()

    @property
    def pg_uid(self):
        import pwd
        return pwd.getpwnam("postgres").pw_uid

    def _settings(self, etcd_port, archive, fetch):
        hba = ["local all all trust", "host all all 127.0.0.1/32 trust",
               "host replication all 127.0.0.1/32 trust"]
        settings = self._all_settings(etcd_port, archive, fetch, hba)
        if archive is None:  # archiving comes later, through pgdr (pg_instance)
            dcs = settings["bootstrap"]["dcs"]["postgresql"]["parameters"]
            for name in ("archive_mode", "archive_command", "archive_timeout"):
                dcs.pop(name)
            settings["postgresql"].pop("recovery_conf")
        return settings

    def _all_settings(self, etcd_port, archive, fetch, hba):
        return {
            "scope": self.scope, "name": self.name,
            "restapi": dict({"listen": "127.0.0.1:%d" % self.api,
                             "connect_address": "127.0.0.1:%d" % self.api},
                            **({"authentication": dict(zip(("username", "password"),
                                                           self.api_auth))}
                               if self.api_auth else {})),
            "etcd3": {"hosts": ["127.0.0.1:%d" % etcd_port]},
            "bootstrap": {
                "dcs": {"ttl": 20, "loop_wait": 1, "retry_timeout": 5,
                        "postgresql": {"use_pg_rewind": False, "parameters": {
                            # archiving through Patroni's dynamic configuration: every member
                            # gets it, and the new leader archives after a failover
                            "archive_mode": "on", "archive_command": archive,
                            "archive_timeout": 5, "wal_level": "replica",
                            "hot_standby": "on", "track_commit_timestamp": "on",
                            "max_wal_senders": 10, "max_replication_slots": 10}}},
                "initdb": [{"encoding": "UTF8"}, "no-locale", {"auth": "trust"}],
                **self._bootstrap_method()},
            "postgresql": {
                "listen": "127.0.0.1:%d" % self.pg.port,
                "connect_address": "127.0.0.1:%d" % self.pg.port,
                "data_dir": str(self.pg.datadir), "bin_dir": str(pg_bindir(15)),
                "pgpass": str(self.home / "pgpass"), "pg_hba": hba,
                "authentication": {"superuser": {"username": "postgres"},
                                   "replication": {"username": "postgres"}},
                "parameters": {"unix_socket_directories": str(self.pg.socket_dir)},
                # Patroni owns the recovery settings (it removes them from
                # postgresql.auto.conf): restore_command goes through its configuration
                "recovery_conf": {"restore_command": fetch},
                # pg_basebackup as its users run it: a spread checkpoint first would make
                # every build by pg_basebackup wait for it (82 s in a reinit)
                "basebackup": [{"checkpoint": "fast"}],
                **self._replica_methods()},
        }

    def _replica_methods(self):
        """Patroni's replica creation: from the repository (the newest backup plus WAL,
        without loading the leader) when asked, pg_basebackup from the leader otherwise
        and as the fallback."""
        if self.replica_from is None:
            return {}
        repo = self.replica_from
        # --delta with keep_data: a replica Patroni re-creates (reinit) whose directory
        # still holds its data is brought to the backup in place; an empty one is restored
        command = "%s restore --standby --delta --target %s --config %s --credentials %s" % (
            PGDR, self.pg.datadir, repo.config, repo.credentials)
        return {"create_replica_methods": ["pgdr", "basebackup"],
                "pgdr": {"command": command, "no_params": True, "keep_data": True}}

    def _bootstrap_method(self):
        """A new cluster whose first member is restored from the repository to a point
        (Patroni's bootstrap.method); pgdr's recovery settings are kept until promotion."""
        if self.bootstrap_from is None:
            return {}
        repo, point = self.bootstrap_from
        command = "%s restore --bootstrap --point %s --target %s --config %s " \
                  "--credentials %s" % (PGDR, point, self.pg.datadir, repo.config,
                                        repo.credentials)
        return {"method": "pgdr", "pgdr": {"command": command, "no_params": True,
                                           "keep_existing_recovery_conf": True}}

    def start(self):
        log = open(self.home / "patroni.log", "ab")
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(PATRONI), str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True)

    def kill(self):
        """kill -9 Patroni and its PostgreSQL: the node is gone."""
        pid_file = self.pg.datadir / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if postmaster:
            try:
                os.killpg(os.getpgid(postmaster), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # Patroni stops its PostgreSQL
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def backup(self, repo_settings):
        repo = Repo(self.home, **repo_settings, pg_host="127.0.0.1", pg_port=self.pg.port,
                    pg_user="postgres", pg_data=self.pg.datadir, patroni_url=self.url)
        code, out, err = repo.run("backup", "--backup-from", "prefer-standby")
        assert code == 0, err
        return out


def members_view(member):
    return {m["name"]: m for m in _get(member.url + "/cluster")["members"]}


def wait_for(members, leader=None, replicas=(), timeout=120, not_leader=None):
    """Until Patroni reports the given leader running (or any leader but not_leader when
    None) and every named replica streaming; returns the leader's name."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for member in members:
            try:
                last = members_view(member)
                break
            except OSError:
                continue
        if last:
            leaders = [n for n, m in last.items()
                       if m["role"] == "leader" and m["state"] == "running"
                       and n != not_leader]
            # streaming with a known lag: what the engine needs to count a replica eligible
            streaming = {n for n, m in last.items() if m["state"] == "streaming"
                         and isinstance(m.get("replay_lag", m.get("lag")), int)}
            if leaders and (leader is None or leaders == [leader]) \
                    and set(replicas) <= streaming:
                return leaders[0]
        time.sleep(0.5)
    raise AssertionError("Patroni did not reach leader=%s replicas=%s in %d s: %s"
                         % (leader, replicas, timeout, last))


@pytest.fixture
def etcd(workdir):
    client, peer = free_port(), free_port()
    data = workdir / "etcd"
    proc = subprocess.Popen(
        [ETCD, "--name", "pgdrtest", "--data-dir", str(data),
         "--listen-client-urls", "http://127.0.0.1:%d" % client,
         "--advertise-client-urls", "http://127.0.0.1:%d" % client,
         "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
         "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
         "--initial-cluster", "pgdrtest=http://127.0.0.1:%d" % peer],
        stdout=open(workdir / "etcd.log", "ab"), stderr=subprocess.STDOUT,
        start_new_session=True)
    deadline = time.time() + 30
    while True:
        try:
            _get("http://127.0.0.1:%d/health" % client)
            break
        except OSError:
            assert time.time() < deadline, (workdir / "etcd.log").read_text()[-2000:]
            time.sleep(0.2)
    yield client
    proc.terminate()
    proc.wait(30)


def _archiving_repo(workdir, seaweed, bucket):
    """The repository of cluster "patroni" with its archive_command and restore_command."""
    spool = postgres_dir(workdir / "spool")
    repo = Repo.s3(workdir, seaweed, bucket, spool_dir=spool, archive_wait=30,
                   cluster_name="patroni")
    archive = "%s wal-push --config %s --credentials %s %%p" % (
        PGDR, repo.config, repo.credentials)
    fetch = "%s wal-fetch --config %s --credentials %s %%f %%p" % (
        PGDR, repo.config, repo.credentials)
    return repo, archive, fetch


@pytest.fixture
def patroni_cluster(workdir, etcd, seaweed, bucket):
    """Three members archiving into one repository through Patroni's dynamic
    configuration: pg1 bootstraps and leads and takes the first backup (of pgbench
    data), then pg2 is built by pg_basebackup from the leader and pg3 from that backup
    plus WAL (pgdr as Patroni's replica creation method), each timed."""
    archive_repo, archive, fetch = _archiving_repo(workdir, seaweed, bucket)
    members = [Member(workdir, "pg1", etcd, archive, fetch),
               Member(workdir, "pg2", etcd, archive, fetch),
               Member(workdir, "pg3", etcd, archive, fetch, replica_from=archive_repo)]
    repo_settings = dict(archive_repo.settings, **archive_repo.secrets)
    repo_settings.pop("cluster")
    repo_settings["cluster_name"] = "patroni"
    built = {}
    try:
        members[0].start()
        wait_for(members[:1], leader="pg1")
        leader = members[0].pg
        leader.psql("CREATE DATABASE bench")
        leader.pgbench("-i", "-s", "10", "-q", "bench")
        assert "skipped" not in members[0].backup(repo_settings)  # the only member: it
        for member in members[1:]:
            started = time.time()
            member.start()
            wait_for(members, leader="pg1", replicas=(member.name,))
            built[member.name] = time.time() - started
        yield members, archive_repo, repo_settings, built
    finally:
        for member in members:
            member.stop()


def _reinit(member):
    """patronictl reinit of one member, waiting for it: seconds it took, and what Patroni
    logged meanwhile."""
    log = member.home / "patroni.log"
    seen = log.stat().st_size
    started = time.time()
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PATRONI.parent / "patronictl"), "-c",
         str(member.config), "reinit", member.scope, member.name, "--force", "--wait"],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # --wait may return before Patroni has even begun (its state not yet "creating
    # replica"): the rebuild ends when Patroni logs how the replica was created
    deadline = time.time() + 300
    while "replica has been created using" not in log.read_text(errors="replace")[seen:]:
        assert time.time() < deadline, log.read_text(errors="replace")[seen:][-3000:]
        time.sleep(0.2)
    return time.time() - started, log.read_text(errors="replace")[seen:]


def test_a_broken_replica_is_rebuilt_in_place_from_the_repository(patroni_cluster):
    """patronictl reinit of a replica whose table file was damaged: pgdr (keep_data,
    --delta) brings its directory back to the newest backup in place, rewriting what
    differs, then it streams from the leader with exactly the leader's rows; timed against
    the reinit of the other replica by pg_basebackup from the leader."""
    members, repo, repo_settings, built = patroni_cluster
    leader, by_basebackup, replica = members
    leader.pg.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 20000",
                   db="bench")
    table = replica.pg.datadir / leader.pg.psql("SELECT pg_relation_filepath('pgbench_accounts')",
                                                db="bench")
    # a page in the middle of the table, which no WAL after the backup touches (the update
    # is on the first pages): only the delta can repair it, replay would not
    middle = int(leader.pg.psql("SELECT pg_relation_size('pgbench_accounts')",
                                db="bench")) // 8192 // 2 * 8192
    damage = b"\xde\xad" * 4096
    with open(table, "r+b") as handle:  # the replica's copy of the table is damaged
        handle.seek(middle)
        handle.write(damage)
    in_place, log = _reinit(replica)
    with open(table, "rb") as handle:
        handle.seek(middle)
        assert handle.read(8192) != damage
    assert "replica has been created using pgdr" in log, log[-3000:]
    assert "delta restore kept" in log, log[-3000:]
    from_leader, log = _reinit(by_basebackup)
    assert "replica has been created using basebackup" in log, log[-3000:]
    print("replica rebuilt: in place from the repository %.1f s, by pg_basebackup from the "
          "leader %.1f s" % (in_place, from_leader))
    leader.pg.psql("CREATE TABLE after_reinit AS SELECT 1 AS k", db="bench")
    wait_for(members, leader="pg1", replicas=("pg2", "pg3"))
    expected = checksums(leader.pg)
    for member in (replica, by_basebackup):
        deadline = time.time() + 60
        while member.pg.psql("SELECT count(*) FROM pg_class WHERE relname = 'after_reinit'",
                             db="bench") != "1":
            assert time.time() < deadline, "%s does not follow the leader" % member.name
            time.sleep(0.5)
        assert checksums(member.pg) == expected, member.name
    marker = json.loads((replica.pg.datadir / "pgdr_restore.json").read_text())
    assert marker["mode"] == "standby"


def _one_backup(members, repo_settings):
    """Run the same backup command on every member (as the schedule does): the one that
    backed up, and the reasons the others gave."""
    took, reasons = [], {}
    for member in members:
        out = member.backup(repo_settings)
        if out.get("skipped"):
            reasons[member.name] = out["reason"]
        else:
            took.append(member.name)
    return took, reasons


def test_patroni_designates_one_member_and_survives_a_failover(patroni_cluster, workdir):
    members, archive_repo, repo_settings, built = patroni_cluster
    by_name = {m.name: m for m in members}
    leader = by_name["pg1"]
    # pg3 came from the repository, not from the leader, and holds the leader's data
    assert (by_name["pg3"].pg.datadir / "pgdr_restore.json").exists()
    pg3_log = (by_name["pg3"].home / "patroni.log").read_text()
    assert "replica has been created using pgdr" in pg3_log
    assert not (by_name["pg2"].pg.datadir / "pgdr_restore.json").exists()
    bench_sums = leader.pg.psql("SELECT sum(abalance), count(*) FROM pgbench_accounts", db="bench")
    assert by_name["pg3"].pg.psql("SELECT sum(abalance), count(*) FROM pgbench_accounts",
                                  db="bench") == bench_sums
    leader.pg.psql("CREATE TABLE ticks (k int PRIMARY KEY, "
                   "at timestamptz DEFAULT clock_timestamp())")
    stamps = {}
    write_rows(leader.pg, 1, 50, stamps)

    took, reasons = _one_backup(members, repo_settings)
    assert took == ["pg2"], reasons  # the replica first by name; pg3 and the leader skip
    assert "replica pg2" in reasons["pg1"] and "replica pg2" in reasons["pg3"]
    code, info, err = archive_repo.run("info")
    assert code == 0, err
    before_failover = info["backups"][-1]["id"]

    write_rows(leader.pg, 51, 100, stamps)
    archive_everything(leader.pg)
    # the leader dies under load: pgbench writes until the kill
    history = int(leader.pg.psql("SELECT count(*) FROM pgbench_history", db="bench"))
    load = subprocess.Popen(
        [str(leader.pg.bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(leader.pg.port),
         "-U", "postgres", "-c", "2", "-T", "60", "bench"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    killed_at = time.time()
    leader.kill()
    load.wait(60)
    survivors = [by_name["pg2"], by_name["pg3"]]
    new_leader = wait_for(survivors, timeout=120, not_leader="pg1")
    failover_seconds = time.time() - killed_at
    new = by_name[new_leader]
    wait_until_promoted(new.pg)  # Patroni names the leader before promotion has ended
    # the load ran: its transactions reached the new leader
    assert int(new.pg.psql("SELECT count(*) FROM pgbench_history", db="bench")) > history
    write_rows(new.pg, 101, 150, stamps)
    archive_everything(new.pg)

    # the next scheduled run, once the remaining replica streams from the new leader: it
    # is the designated member, on every node's view. (While Patroni is still re-pointing
    # it, the leader would be designated instead; two runs minutes apart can then both
    # back up, which the schedule's min_interval turns into one: docs/patroni.md.)
    replica = [m.name for m in survivors if m.name != new_leader][0]
    wait_for(survivors, leader=new_leader, replicas=(replica,))
    took, reasons = _one_backup(survivors, repo_settings)
    backup_after_failover = time.time() - killed_at
    assert took == [replica], reasons
    assert "replica %s" % replica in reasons[new_leader], reasons

    rows, restored = restore_rows(archive_repo, workdir, "after-failover", "--point", "latest")
    assert rows == 150, "the restore to latest lost rows committed around the failover"
    # a time after the failover: exactly the rows committed up to it, across the timelines
    rows_at, dummy = restore_rows(archive_repo, workdir, "at-125", "--point",
                                  "time:" + stamps[125]["commit"].isoformat())
    assert rows_at == 125, rows_at
    # the WAL gap check: from the backup before the failover, every segment up to the end
    # of the archive is there, across the switch to the new leader's timeline
    code, verified, err = archive_repo.run("verify", "--backup-id", before_failover,
                                           "--verify-wal", "list")
    assert code == 0, err
    continuity = verified["wal"]["continuity"][-1]
    assert continuity["missing"] == 0 and continuity["timeline"] >= 2, continuity
    print("patroni: replica built by pg_basebackup %.1f s, from the repository %.1f s; "
          "failover %.1f s, next backup done %.1f s after the kill (by %s); "
          "restore to latest holds %d/150 rows, timeline %s; WAL gap check from %s: %s to "
          "%s, %d missing" % (
              built["pg2"], built["pg3"], failover_seconds, backup_after_failover, took[0], rows,
              restored.get("plan", {}).get("timeline") if restored else None, before_failover,
              continuity["first"], continuity["last"], continuity["missing"]))

    # a standby follows its primary from the newest backup: any other point is refused
    # before anything is written
    elsewhere = workdir / "standby-at-a-point" / "data"
    code, out, err = archive_repo.run("restore", "--standby", "--point", "immediate",
                                      "--target", elsewhere)
    assert code == 2 and "standby" in err and "point=immediate" in err, (code, err)
    assert not elsewhere.exists()


def test_archiving_goes_through_patroni_dynamic_configuration(workdir, etcd, seaweed, bucket):
    """A Patroni member that does not archive: pg_instance patroni_config puts
    archive_mode, archive_command and archive_timeout into Patroni's dynamic configuration
    (never into a file Patroni owns), restarts the member through Patroni for archive_mode,
    and a switched segment reaches the repository. Check mode predicts the change; a second
    run changes nothing; a node without Patroni is told so."""
    from plugins.module_utils._pgdr.options import resolve
    from plugins.module_utils._pgdr.postgres import instance
    from plugins.module_utils._pgdr.progress import Progress

    spool = postgres_dir(workdir / "spool")
    repo = Repo.s3(workdir, seaweed, bucket, spool_dir=spool, archive_wait=30,
                   cluster_name="patroni")
    member = Member(workdir, "pg1", etcd, None, None)
    owned = [member.config, member.pg.datadir / "postgresql.conf"]
    try:
        member.start()
        wait_for([member], leader="pg1")
        before = dict((path, path.read_bytes()) for path in owned)
        archive = "%s wal-push --config %s --credentials %s %%p" % (
            PGDR, repo.config, repo.credentials)
        fetch = "%s wal-fetch --config %s --credentials %s %%f %%p" % (
            PGDR, repo.config, repo.credentials)
        parameters = {"archive_mode": "on", "archive_command": archive, "archive_timeout": 5}

        def ask(dry_run=False, url=member.url, restart=True):
            settings = resolve({"pg_host": "127.0.0.1", "pg_port": member.pg.port,
                                "pg_user": "postgres", "patroni_url": url}, environ={})
            return instance.Request("patroni_config", parameters=parameters,
                                    recovery_conf={"restore_command": fetch},
                                    restart=restart, timeout=120).run(
                settings, Progress(), dry_run=dry_run)

        predicted = ask(dry_run=True)
        assert member.pg.psql("SHOW archive_mode") == "off"  # check mode changed nothing
        applied = ask()
        assert predicted["changed_settings"] == applied["changed_settings"] == [
            "archive_command", "archive_mode", "archive_timeout", "restore_command"]
        assert applied["patroni"] is True and applied["restarted"] is True, applied
        assert applied["pending_restart"] == []
        assert member.pg.psql("SHOW archive_mode") == "on"
        assert member.pg.psql("SHOW archive_command") == archive
        dcs = _get(member.url + "/config")["postgresql"]
        assert dcs["parameters"]["archive_command"] == archive
        assert dcs["recovery_conf"]["restore_command"] == fetch
        # Patroni's own files: Patroni wrote postgresql.conf again, pgdr never did
        assert member.config.read_bytes() == before[member.config]
        assert "pgdr" not in (member.pg.datadir / "postgresql.base.conf").read_text() \
            if (member.pg.datadir / "postgresql.base.conf").exists() else True
        segment = member.pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.time() + 60
        while member.pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
            assert time.time() < deadline, member.pg.psql("SELECT * FROM pg_stat_archiver")
            time.sleep(0.5)
        code, info, err = repo.run("info")
        assert code == 0, err
        again = ask()
        assert again["changed"] is False and again["changed_settings"] == []
        nowhere = ask(url="off")
        assert nowhere == {"changed": False, "patroni": False}
    finally:
        member.stop()


def test_the_archiving_role_goes_through_patroni(workdir, etcd, seaweed, bucket):
    """The archiving role on a Patroni member: no file beside postgresql.conf, no include
    line in it, the settings in Patroni's dynamic configuration, archive_mode's restart
    done by Patroni; a second run changes nothing."""
    from tests.integration.test_playbooks import ANSIBLE_PLAYBOOK, _ansible_env
    subprocess.run([str(REPO / "scripts" / "link-collection.sh")], check=True)
    repo = Repo.s3(workdir, seaweed, bucket, cluster_name="patroni")
    password = "api-Pa55-%d" % os.getpid()
    member = Member(workdir, "pg1", etcd, None, None, api_auth=("pgdr", password))
    playbook = workdir / "archiving.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "WAL archiving on a Patroni member", "hosts": "localhost",
        "gather_facts": False, "roles": [{"role": "pgdr.postgresql.pgdr_archiving"}]}]))
    # an inventory, not -e: the role's own ansible_python_interpreter must win over it
    variables = {"ansible_connection": "local", "ansible_become_method": "ansible.builtin.su",
                 "ansible_python_interpreter": "/usr/bin/python3",
                 "pgdr_archiving_launcher": str(PGDR), "pgdr_archiving_config_file": str(repo.config),
                 "pgdr_archiving_python": str(REPO / ".venv" / "bin" / "python"),
                 "pgdr_archiving_spool_dir": str(workdir / "spool"),
                 "pgdr_archiving_pg_host": "127.0.0.1", "pgdr_archiving_pg_port": member.pg.port,
                 "pgdr_archiving_patroni_url": member.url, "pgdr_archiving_rpo": 60,
                 "pgdr_archiving_patroni_username": "pgdr", "pgdr_archiving_patroni_password": password}
    inventory = workdir / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": variables}}}))

    def play():
        # -vvv prints every module's arguments: the password must still not appear
        return subprocess.run([str(ANSIBLE_PLAYBOOK), "-vvv", "-i", str(inventory),
                               str(playbook)],
                              cwd=REPO, env=_ansible_env(),
                              capture_output=True, text=True, timeout=600, check=False)
    try:
        member.start()
        wait_for([member], leader="pg1")
        patroni_file = member.config.read_bytes()
        first = play()
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        assert member.pg.psql("SHOW archive_mode") == "on"
        assert "wal-push" in member.pg.psql("SHOW archive_command")
        assert member.pg.psql("SHOW archive_timeout") == "50s"  # RPO 60 s - 10 s margin
        dcs = _get(member.url + "/config")["postgresql"]["parameters"]
        assert dcs["archive_mode"] == "on" and "wal-push" in dcs["archive_command"]
        conf = member.pg.datadir / "postgresql.conf"
        # Patroni wrote the settings into its postgresql.conf; pgdr added no include line
        # and no file of its own beside it
        assert "include_if_exists" not in conf.read_text() and not (
            member.pg.datadir / "pgdr-archiving.conf").exists()
        assert member.config.read_bytes() == patroni_file
        assert "Patroni's dynamic configuration" in first.stdout
        assert password not in first.stdout + first.stderr  # no_log
        second = play()
        assert second.returncode == 0 and re.search(r"changed=0\b", second.stdout), \
            second.stdout[-3000:]
    finally:
        member.stop()


def test_a_new_patroni_cluster_bootstraps_from_a_backup_at_a_point(workdir, etcd, seaweed,
                                                                   bucket):
    """Patroni's bootstrap.method through `pgdr restore --bootstrap`: a new cluster (its
    own scope) starts from the repository at a restore point and holds exactly the rows
    committed before it; once promoted it runs with Patroni's configuration (archiving on,
    no recovery target left behind) and archives its new timeline into the repository. A
    bootstrap that cannot promote is refused before anything is written."""
    repo, archive, fetch = _archiving_repo(workdir, seaweed, bucket)
    source = Member(workdir, "old1", etcd, archive, fetch)
    new = Member(workdir, "new1", etcd, archive, fetch, scope="pgdrnew",
                 bootstrap_from=(repo, "name:before_the_mistake"))
    settings = dict(repo.settings, **repo.secrets)
    settings.pop("cluster")
    settings["cluster_name"] = "patroni"
    try:
        source.start()
        wait_for([source], leader="old1")
        source.pg.psql("CREATE TABLE ticks (k int PRIMARY KEY, "
                       "at timestamptz DEFAULT clock_timestamp())")
        stamps = {}
        write_rows(source.pg, 1, 20, stamps)
        assert "skipped" not in source.backup(settings)
        write_rows(source.pg, 21, 40, stamps)
        source.pg.psql("SELECT pg_create_restore_point('before_the_mistake')")
        write_rows(source.pg, 41, 60, stamps)
        archive_everything(source.pg)
        source.stop()

        refused = workdir / "refused" / "data"
        code, out, err = repo.run("restore", "--bootstrap", "--target-action", "pause",
                                  "--point", "name:before_the_mistake", "--target", refused)
        assert code == 2 and "target_action=promote" in err and "pause" in err, (code, out, err)
        assert not refused.exists()
        code, out, err = repo.run("restore", "--bootstrap", "--standby", "--target", refused)
        assert code == 2 and "bootstrap and standby" in err, (code, out, err)
        assert not refused.exists()

        started = time.time()
        new.start()
        wait_for([new], leader="new1", timeout=180)
        wait_until_promoted(new.pg)
        print("patroni bootstrap from the repository: leader promoted in %.1f s"
              % (time.time() - started))
        assert new.pg.psql("SELECT count(*), min(k), max(k) FROM ticks") == "40|1|40"
        assert (new.pg.datadir / "pgdr_restore.json").exists()
        assert "pgdr" in (new.home / "patroni.log").read_text()
        # Patroni's configuration, not the restore's: archiving on, no target left
        assert new.pg.psql("SHOW archive_mode") == "on"
        # Patroni removes the recovery settings from postgresql.auto.conf at the end of
        # its bootstrap: a later restart, or a replica copied from this member, never
        # stops at the old target
        auto_conf = new.pg.datadir / "postgresql.auto.conf"
        deadline = time.time() + 60
        while "recovery_target" in auto_conf.read_text():
            assert time.time() < deadline, auto_conf.read_text()
            time.sleep(0.5)
        assert "archive_mode" not in auto_conf.read_text()
        timeline = int(new.pg.psql("SELECT timeline_id FROM pg_control_checkpoint()"))
        assert timeline >= 2
        new.pg.psql("INSERT INTO ticks (k) VALUES (41)")  # on the new timeline only
        segment = archive_everything(new.pg)
        assert int(segment[:8], 16) == timeline
        # a bootstrap to a backup's own consistency point still recovers and promotes: a
        # new timeline, never the source's next segment names again
        at_backup = postgres_dir(workdir / "bootstrap-immediate") / "data"
        code, out, err = repo.run("restore", "--bootstrap", "--point", "immediate",
                                  "--target", at_backup)
        assert code == 0, (out, err)
        settings_written = (at_backup / "postgresql.auto.conf").read_text()
        assert "recovery_target = 'immediate'" in settings_written
        assert "recovery_target_action = 'promote'" in settings_written
        assert "wal-fetch" in settings_written and "archive_mode" not in settings_written
        assert (at_backup / "recovery.signal").exists()
        rows, restored = restore_rows(repo, workdir, "after-bootstrap", "--point", "latest")
        assert rows == 41, ("latest after the bootstrap follows the new cluster's timeline",
                            restored)
    finally:
        source.stop()
        new.stop()


def test_patroni_config_sends_the_rest_api_credentials(workdir, etcd):
    """A Patroni member with restapi.authentication (autobase's default): pg_instance
    patroni_config without credentials, or with a wrong password, fails with a clear error
    naming the options and changes nothing; with them, the settings are applied (a restart
    through Patroni with credentials: test_the_archiving_role_goes_through_patroni). The
    password never appears in the error."""
    from plugins.module_utils._pgdr.errors import PostgresError
    from plugins.module_utils._pgdr.options import resolve
    from plugins.module_utils._pgdr.postgres import instance
    from plugins.module_utils._pgdr.progress import Progress

    password = "api-Pa55-%d" % os.getpid()
    member = Member(workdir, "pg1", etcd, None, None, api_auth=("pgdr", password))

    def ask(credentials):
        given = {"pg_host": "127.0.0.1", "pg_port": member.pg.port, "pg_user": "postgres",
                 "patroni_url": member.url}
        given.update(credentials)
        settings = resolve(given, environ={})
        return instance.Request("patroni_config", parameters={"archive_timeout": 17},
                                recovery_conf={}, restart=True, timeout=120).run(
            settings, Progress())

    try:
        member.start()
        wait_for([member], leader="pg1")
        for credentials, expected in (
                ({}, "needs patroni_username and patroni_password"),
                ({"patroni_username": "pgdr", "patroni_password": "wrong"},
                 "refused patroni_username and patroni_password")):
            with pytest.raises(PostgresError) as refused:
                ask(credentials)
            assert refused.value.code == "patroni_config_refused"
            assert expected in str(refused.value) and "401" in str(refused.value)
            assert password not in str(refused.value)
            dcs = _get(member.url + "/config").get("postgresql", {}).get("parameters", {})
            assert "archive_timeout" not in dcs, dcs
        applied = ask({"patroni_username": "pgdr", "patroni_password": password})
        assert applied["changed_settings"] == ["archive_timeout"], applied
        assert member.pg.psql("SHOW archive_timeout") == "17s"
    finally:
        member.stop()


def _replicates_and_archives(leader, replica):
    """A new row on the leader reaches the replica; the segment then archived."""
    expected = str(int(leader.pg.psql("SELECT count(*) FROM ticks")) + 1)
    leader.pg.psql("INSERT INTO ticks (k) SELECT max(k) + 1 FROM ticks")
    deadline = time.time() + 60
    while replica.pg.psql("SELECT count(*) FROM ticks") != expected:
        assert time.time() < deadline, "the replica does not follow the new leader"
        time.sleep(0.5)
    return archive_everything(leader.pg)


def _two_members(workdir, etcd, seaweed, bucket):
    """The repository, two members (not started) that build replicas from it, and the
    settings of a backup on a member."""
    repo, archive, fetch = _archiving_repo(workdir, seaweed, bucket)
    members = [Member(workdir, "pg1", etcd, archive, fetch, replica_from=repo),
               Member(workdir, "pg2", etcd, archive, fetch, replica_from=repo)]
    settings = dict(repo.settings, **repo.secrets)
    settings.pop("cluster")
    settings["cluster_name"] = "patroni"
    return repo, members, settings


def _a_mistake_after_a_restore_point(members, settings):
    """Two members started (pg1 leads); rows 1-20, a backup (from the replica), rows
    21-40, the restore point before_the_mistake, then rows 41-60: the mistake."""
    leader, replica = members
    leader.start()
    wait_for(members, leader="pg1")
    replica.start()
    wait_for(members, leader="pg1", replicas=("pg2",))
    leader.pg.psql("CREATE TABLE ticks (k int PRIMARY KEY, "
                   "at timestamptz DEFAULT clock_timestamp())")
    stamps = {}
    write_rows(leader.pg, 1, 20, stamps)
    took, reasons = _one_backup(members, settings)
    assert took == ["pg2"], reasons
    write_rows(leader.pg, 21, 40, stamps)
    leader.pg.psql("SELECT pg_create_restore_point('before_the_mistake')")
    write_rows(leader.pg, 41, 60, stamps)  # the mistake


def test_pitr_of_a_whole_patroni_cluster_from_the_repository(workdir, etcd, seaweed, bucket):
    """The PITR of a Patroni cluster as docs/patroni.md gives it: stop every member, remove
    the cluster from the DCS, set the data directories aside, start the leader with
    bootstrap.method pgdr at the point, then the replicas, which Patroni builds from the
    repository. Ends with exactly the rows before the point on both members, replication
    working, and the new timeline archived."""
    repo, members, settings = _two_members(workdir, etcd, seaweed, bucket)
    leader, replica = members
    try:
        _a_mistake_after_a_restore_point(members, settings)
        code, info, err = repo.run("info")
        assert code == 0, err
        first_backup = info["backups"][-1]["id"]
        took, reasons = _one_backup(members, settings)  # the nightly backup, after it
        assert took == ["pg2"], reasons
        archive_everything(leader.pg)

        started = time.time()
        replica.stop()
        leader.stop()
        _remove_from_dcs(leader)
        for member in members:  # kept, as the staged restore keeps pre-restore data
            member.pg.datadir.rename(member.pg.datadir.with_name("data.before-pitr"))
        leader.bootstrap_next_from(repo, "name:before_the_mistake")
        leader.start()
        wait_for(members, leader="pg1", timeout=180)
        wait_until_promoted(leader.pg)
        archive_everything(leader.pg)  # the new timeline's history is in the repository
        replica_log = replica.home / "patroni.log"
        seen = replica_log.stat().st_size
        replica.start()
        wait_for(members, leader="pg1", replicas=("pg2",), timeout=180)
        print("patroni cluster PITR: both members back in %.1f s" % (time.time() - started))

        for member in members:
            assert member.pg.psql("SELECT count(*), min(k), max(k) FROM ticks") == "40|1|40", \
                member.name
        # built from the repository (from the backup before the fork: the nightly one is on
        # the abandoned history), not by pg_basebackup from the leader
        assert "replica has been created using pgdr" in replica_log.read_text()[seen:]
        built = json.loads((replica.pg.datadir / "pgdr_restore.json").read_text())
        assert built["backup_id"] == first_backup, (built["backup_id"], first_backup)
        segment = _replicates_and_archives(leader, replica)
        assert int(segment[:8], 16) >= 2, segment  # the new timeline is archived
    finally:
        for member in members:
            member.stop()


def _restore_stage(repo, stage, state_file, target, *extra):
    """`pgdr restore-stage STAGE` as root, as pg_restore_stage runs it: (code, JSON, err)."""
    res = subprocess.run([str(PGDR), "restore-stage", stage, "--config", str(repo.config),
                          "--credentials", str(repo.credentials), "--json", "--state-file",
                          str(state_file), "--target", str(target), "--pg-host", "127.0.0.1",
                          "--pg-user", "postgres", "--timeout", "180", *map(str, extra)],
                         capture_output=True, text=True, cwd="/", check=False, timeout=300)
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    return res.returncode, json.loads(lines[-1]) if lines else None, res.stderr


def _remove_from_dcs(member):
    removed = subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PATRONI.parent / "patronictl"), "-c",
         str(member.config), "remove", member.scope],
        input="%s\nYes I am aware\n%s\n" % (member.scope, member.name),
        capture_output=True, text=True, timeout=60, check=False)
    assert removed.returncode == 0, removed.stdout + removed.stderr


def test_a_staged_restore_of_a_patroni_leader_is_verified_then_taken_over_by_patroni(
        workdir, etcd, seaweed, bucket):
    """The staged restore on a Patroni cluster: plan, stage, recover and verify beside the
    running leader; the cutover is refused while Patroni runs (nothing stops or moves);
    with Patroni stopped on both members and the cluster removed from the DCS, the
    verified copy is cut over and promoted, Patroni takes it over as leader, and the
    replica, its directory set aside, is built again from the repository. Both end with
    exactly the rows before the point, replicating, the new timeline archived."""
    repo, members, settings = _two_members(workdir, etcd, seaweed, bucket)
    leader, replica = members
    staging = leader.home / "data.staging"
    state_file = workdir / "pg1-restore.json"
    live = ["--live-data", leader.pg.datadir, "--pg-port", leader.pg.port,
            "--archive-timeout", 60]
    copy = None
    try:
        _a_mistake_after_a_restore_point(members, settings)
        archive_everything(leader.pg)

        copy, copy_settings = restore_args(15, staging)
        code, _plan, err = _restore_stage(repo, "plan", state_file, staging, *live,
                                          "--point", "name:before_the_mistake",
                                          "--target-action", "pause", "--port", copy.port)
        assert code == 0, err
        for stage in ("stage", "recover", "verify"):
            code, done, err = _restore_stage(repo, stage, state_file, staging,
                                             *(copy_settings if stage == "stage" else ()))
            assert code == 0, (stage, err)
        assert copy.psql("SELECT count(*), max(k) FROM ticks") == "40|40"

        # while Patroni runs, the cutover stops nothing and moves nothing
        before = (leader.pg.datadir.stat().st_ino, staging.stat().st_ino)
        code, _out, err = _restore_stage(repo, "cutover", state_file, staging, *live)
        assert code == 2 and "[restore_patroni_running]" in err, (code, err)
        assert (leader.pg.datadir.stat().st_ino, staging.stat().st_ino) == before
        assert members_view(leader)["pg1"]["role"] == "leader"
        assert leader.pg.psql("SELECT count(*) FROM ticks") == "60"
        assert copy.psql("SELECT pg_is_in_recovery()") == "t"

        # as the restore role runs it (pgdr_restore_patroni_service): the cutover checked
        # while Patroni runs, Patroni stopped, the cutover removing the cluster from the DCS
        patroni_args = ("--patroni-scope", leader.scope, "--patronictl",
                        PATRONI.parent / "patronictl", "--patroni-config", leader.config)
        code, _out, err = _restore_stage(repo, "cutover", state_file, staging, *live,
                                         *patroni_args, "--dry-run")
        assert code == 0, err
        started = time.time()
        replica.stop()
        leader.stop()
        code, done, err = _restore_stage(repo, "cutover", state_file, staging, *live,
                                         *patroni_args)
        assert code == 0, err
        cut = done["restore_state"]["cutover"]
        assert cut["phase"] == "done" and cut["archived"] and cut["patroni"] is True, cut
        assert cut["patroni_scope"] == leader.scope, cut
        assert leader.pg.psql("SELECT count(*), max(k) FROM ticks") == "40|40"
        # the replica's directory set aside by the standby stage, for Patroni to build (on
        # this one machine before the leader's Patroni starts: the stage refuses while a
        # Patroni runs on the node)
        code, aside, err = _restore_stage(
            repo, "standby", workdir / "pg2-standby.json", replica.pg.datadir,
            "--standby-source", "patroni", "--primary-host", "127.0.0.1",
            "--rebuild-for", cut["at"])
        assert code == 0, err
        kept = Path(aside["standby"]["kept"])
        assert not replica.pg.datadir.exists() and (kept / "PG_VERSION").is_file()
        leader.start()  # Patroni takes over the promoted cluster
        wait_for(members, leader="pg1", timeout=180)
        seen = (replica.home / "patroni.log").stat().st_size
        replica.start()
        wait_for(members, leader="pg1", replicas=("pg2",), timeout=180)
        print("patroni staged PITR: both members back %.1f s after the first stop"
              % (time.time() - started))
        for member in members:
            assert member.pg.psql("SELECT count(*), min(k), max(k) FROM ticks") == "40|1|40", \
                member.name
        log = (replica.home / "patroni.log").read_text()[seen:]
        assert "replica has been created using pgdr" in log
        segment = _replicates_and_archives(leader, replica)
        assert int(segment[:8], 16) == cut["timeline"], (segment, cut)
        assert not (leader.pg.datadir / "recovery.signal").exists()

        # rollback, the same way: Patroni stopped and the cluster out of the DCS, the kept
        # directory back on the leader, the replica's own kept directory back
        replica.stop()
        leader.stop()
        _remove_from_dcs(leader)
        code, done, err = _restore_stage(repo, "rollback", state_file, staging, *live)
        assert code == 0, err
        back = done["rollback"]
        # on a timeline above the abandoned one, so that Patroni's replicas, which always
        # ask for recovery_target_timeline=latest with restore_command, follow it
        assert back["new_timeline"] is True and back["warning"] is None, back
        assert back["timeline"] > cut["timeline"], (back, cut)
        leader.start()
        wait_for(members, leader="pg1", timeout=180)
        replica.pg.datadir.rename(replica.pg.datadir.with_name("data.pitr"))
        kept.rename(replica.pg.datadir)
        replica.start()  # with restore_command, as before the PITR
        wait_for(members, leader="pg1", replicas=("pg2",), timeout=180)
        for member in members:  # the rows from before the restore, the mistake included
            assert member.pg.psql("SELECT count(*), min(k), max(k) FROM ticks") == "60|1|60", \
                member.name
        segment = _replicates_and_archives(leader, replica)
        assert int(segment[:8], 16) == back["timeline"], (segment, back)
    finally:
        if copy is not None:
            copy.stop()
        for member in members:
            member.stop()
