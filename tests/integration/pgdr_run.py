"""Run the real `pgdr` CLI as user postgres, as cron and archive_command will, and
compare clusters table by table."""
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import psycopg2

from lab.lab import REPO, PgCluster, free_port

PGDR = REPO / "bin" / "pgdr"


class Repo:
    """Config + credentials files for one repository, readable only by postgres."""

    def __init__(self, workdir: Path, cluster_name: str = "main", **settings):
        self.dir = workdir / "pgdr-conf"
        self.dir.mkdir(exist_ok=True)
        os.chown(self.dir, _uid("postgres"), -1)
        self.config = self.dir / "pgdr.conf"
        self.credentials = self.dir / "credentials"
        self.settings = {"cluster": cluster_name, "workers": 2}
        self.secrets = {}
        for key, value in settings.items():
            (self.secrets if key.endswith(("_access_key", "_secret_key", "_passphrase"))
             else self.settings)[key] = value
        self.write()

    @classmethod
    def s3(cls, workdir, seaweed, bucket, pg=None, **extra):
        settings = dict(repo_type="s3", s3_bucket=bucket, s3_endpoint=seaweed.endpoint,
                        s3_region="us-east-1", s3_addressing="path",
                        s3_access_key=seaweed.access_key, s3_secret_key=seaweed.secret_key)
        settings = _with_pg(settings, pg)
        settings.update(extra)
        return cls(workdir, **settings)

    def write(self):
        for path, values in ((self.config, self.settings), (self.credentials, self.secrets)):
            path.write_text("[pgdr]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
            os.chown(path, _uid("postgres"), -1)
            os.chmod(path, 0o600)

    def run(self, command, *args, timeout=600):
        """(exit code, parsed --json output, stderr text)."""
        cmd = ["runuser", "-u", "postgres", "--", str(PGDR), command, "--config",
               str(self.config), "--credentials", str(self.credentials), "--json", *map(str, args)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=timeout,
                             check=False)
        lines = [l for l in res.stdout.splitlines() if l.strip()]
        out = json.loads(lines[-1]) if lines else None
        return res.returncode, out, res.stderr

    def popen(self, command, *args):
        cmd = ["runuser", "-u", "postgres", "--", str(PGDR), command, "--config",
               str(self.config), "--credentials", str(self.credentials), *map(str, args)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
                                start_new_session=True)


def _with_pg(settings, pg):
    if pg is not None:
        settings.update(pg_host="127.0.0.1", pg_port=pg.port, pg_user="postgres",
                        pg_data=pg.datadir)
    return settings


def _uid(user):
    import pwd
    return pwd.getpwnam(user).pw_uid


def postgres_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, _uid("postgres"), -1)
    os.chmod(path, 0o700)
    return path


def restore_args(version: int, target: Path):
    """A PgCluster for a restore target, and the settings that let it start beside the
    source (its own port and socket directory)."""
    postgres_dir(target.parent)
    os.chmod(target.parent, 0o755)
    restored = PgCluster(version, target, port=free_port())
    postgres_dir(restored.socket_dir)
    os.chmod(restored.socket_dir, 0o755)
    return restored, ["--settings", f"port={restored.port}",
                      "--settings", f"unix_socket_directories={restored.socket_dir}"]


def restore_started(repo: Repo, version: int, target: Path, *extra) -> PgCluster:
    """Restore the repository's latest backup into target and start it (the caller stops
    it)."""
    restored, args = restore_args(version, target)
    code, dummy, err = repo.run("restore", "--target", target, *extra, *args)
    assert code == 0, err
    restored.start()
    return restored


@contextlib.contextmanager
def pgbench_running(pg: PgCluster, seconds: int, database: str, warmup: float = 1.0):
    """pgbench writing to database in the background for the body of the with block
    (it starts warmup seconds before the body and is waited for after it)."""
    load = subprocess.Popen(["runuser", "-u", "postgres", "--", str(pg.bindir / "pgbench"),
                             "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                             "-c", "2", "-T", str(seconds), database],
                            cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        yield load
    finally:
        load.wait()


def databases(pg: PgCluster):
    return pg.psql("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").split()


def checksums(pg: PgCluster):
    """{database: {table: (rows, md5 of all rows)}} plus large objects, for every logged
    user table (unlogged tables are empty after any restore, by design)."""
    result = {}
    for db in databases(pg):
        conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
                            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 'u' AND n.nspname NOT IN "
                            "('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1")
                tables = [row[0] for row in cur.fetchall()]
                sums = {}
                for table in tables:
                    cur.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' "
                                f"ORDER BY t::text), '')) FROM {table} t")
                    sums[table] = cur.fetchone()
                cur.execute("SELECT count(*), md5(coalesce(string_agg(loid::text || ':' || "
                            "pageno || ':' || md5(data), ',' ORDER BY loid, pageno), '')) "
                            "FROM pg_largeobject")
                sums["<large objects>"] = cur.fetchone()
            result[db] = sums
        finally:
            conn.close()
    return result


def archiving_cluster(pg_cluster, workdir, seaweed, bucket, name="primary", version=15,
                      **repo_settings):
    spool = postgres_dir(workdir / "spool")
    repo = Repo.s3(workdir, seaweed, bucket, spool_dir=spool, archive_wait=30, **repo_settings)
    push = (f"{REPO}/bin/pgdr wal-push --config {repo.config} "
            f"--credentials {repo.credentials} %p")
    settings = {"archive_mode": "on", "archive_command": push, "track_commit_timestamp": "on"}
    pg = pg_cluster(version, settings=settings, name=name)
    repo.settings.update(pg_host="127.0.0.1", pg_port=pg.port, pg_data=pg.datadir)
    repo.write()
    pg.psql("CREATE TABLE ticks (k int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    return pg, repo


def write_rows(pg, first, last, stamps):
    """One transaction per row; record each row's xid, commit time and the WAL position
    right after its commit."""
    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for k in range(first, last + 1):
            cur.execute("BEGIN")
            cur.execute("INSERT INTO ticks (k) VALUES (%s)", (k,))
            cur.execute("SELECT txid_current() % (2^32)::bigint")
            xid = int(cur.fetchone()[0])
            cur.execute("COMMIT")
            cur.execute("SELECT pg_xact_commit_timestamp(xmin), pg_current_wal_insert_lsn() "
                        "FROM ticks WHERE k = %s", (k,))
            committed, lsn = cur.fetchone()
            stamps[k] = {"xid": xid, "commit": committed, "lsn": lsn}
            time.sleep(0.04)
    conn.close()


def archive_everything(pg):
    segment = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.time() + 60
    while time.time() < deadline:
        if pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= segment:
            return segment
        time.sleep(0.1)
    raise AssertionError("segment %s was not archived in 60 s: %s" % (
        segment, pg.psql("SELECT * FROM pg_stat_archiver")))


def restore_rows(repo, workdir, label, *point_args):
    """Restore to a point into workdir/label/data, start it, wait for the end of recovery:
    (max k of table ticks, the restore's JSON); asserts rows 1..max are all there."""
    target = workdir / label / "data"
    restored, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, *point_args, *args)
    assert code == 0, err
    restored.start()
    try:
        wait_until_promoted(restored)
        rows = restored.psql("SELECT count(*), coalesce(max(k), 0) FROM ticks").split("|")
    finally:
        restored.stop()
    assert rows[0] == rows[1], rows  # no holes: rows 1..max
    return int(rows[1]), out


def promote_restored_copy(repo, workdir, version=15):
    """Restore latest into workdir/new-primary/data and start it as the new primary,
    archiving its new timeline into the same repository (stop the old primary first)."""
    return promoted_copy(repo, workdir / "new-primary" / "data", version)


def assert_exact_copy(restored, expected, what="the restored copy"):
    """The copy starts, ends recovery and holds exactly the source's rows (checksums()
    of the source); stopped again afterwards."""
    restored.start()
    try:
        wait_until_promoted(restored)
        assert checksums(restored) == expected, "%s has other data than its source" % what
    finally:
        restored.stop()


def wait_until_promoted(pg, timeout=120):
    """pg_ctl -w returns once a hot standby accepts read-only connections, while
    recovery may still be replaying: wait for the end of recovery (action promote)."""
    deadline = time.time() + timeout
    while pg.psql("SELECT pg_is_in_recovery()") == "t":
        assert time.time() < deadline, "recovery did not finish in %d s" % timeout
        time.sleep(0.1)


def promoted_copy(repo: Repo, target: Path, version: int = 15) -> PgCluster:
    """Restore latest into target as a new primary that archives into the same repository
    (a new timeline), started and promoted; the caller stops it."""
    promoted, args = restore_args(version, target)
    push = (f"{REPO}/bin/pgdr wal-push --config {repo.config} "
            f"--credentials {repo.credentials} %p")
    code, dummy, err = repo.run("restore", "--target", target, "--point", "latest",
                                "--keep-archiving", "--settings", f"archive_command={push}",
                                *args)
    assert code == 0, err
    promoted.start()
    wait_until_promoted(promoted)
    return promoted


def backup_objects(seaweed, bucket, cluster="main"):
    """Keys of a cluster's backups in the bucket (the WAL archive, which goes on growing
    beside them, left out): what a refused or check-mode backup must leave unchanged."""
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="%s/backup/" % cluster)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
