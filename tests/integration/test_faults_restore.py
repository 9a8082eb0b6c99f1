"""Faults during restore (issue 11), on real PostgreSQL 15 and SeaweedFS.

The invariant, checked by every test: the restore either fails with a clear error (exit
code and error code asserted, one line naming the cause) and leaves nothing that starts
or is offered as restored, or it succeeds and the copy starts and holds exactly the
source's data. A running cluster's files are never touched (their tree is hashed before
and after, and the cluster still answers)."""
import hashlib
import json
import os
import pwd
import re
import subprocess

import pytest

from lab.lab import PgCluster, free_port
from tests.integration.pgdr_run import (PGDR, Repo, checksums, postgres_dir, restore_args)

ROWS = 400000


def tree_digest(*roots):
    """{path: sha256 or link target} of every file, directory and link under roots. The
    WAL segments a live server writes on its own (a standby snapshot every 15 s) are
    listed by name only: their presence is compared, not their changing tail."""
    out = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            out[folder] = "dir"
            for name in dirs + files:
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    out[path] = "-> " + os.readlink(path)
                elif os.path.basename(folder) == "pg_wal" and len(name) == 24:
                    out[path] = "WAL segment"
                elif os.path.isfile(path):
                    with open(path, "rb") as handle:
                        out[path] = hashlib.sha256(handle.read()).hexdigest()
    return out


def one_error_line(err, code):
    lines = [l for l in err.splitlines() if "error [" in l]
    assert len(lines) == 1 and "error [%s]" % code in lines[0], err
    return lines[0]


def refused(code, out, err, error_code):
    """A clear refusal: exit 6, the error code, one line."""
    assert code == 6, (code, err)
    assert out["error"]["code"] == error_code, out
    return one_error_line(err, error_code)


def assert_not_startable(version, target):
    """A directory that no PostgreSQL would start: no pg_control, pg_ctl fails."""
    assert not (target / "global" / "pg_control").exists()
    assert not (target / "pgdr_restore.json").exists()
    probe = PgCluster(version, target)
    if (target / "PG_VERSION").exists():
        with pytest.raises(RuntimeError):
            probe.start()
    assert not probe.is_running()


def started_copy(restored, source_sums):
    restored.start()
    try:
        assert checksums(restored) == source_sums
    finally:
        restored.stop()


@pytest.fixture
def source(pg_cluster, workdir, seaweed, bucket):
    """A running cluster at <workdir>/host/pg/data with a tablespace, quiet (autovacuum
    off, frozen, checkpointed: its files do not change on their own), and its backup."""
    pg = pg_cluster(15, settings={"autovacuum": "off"}, name="host/pg")
    space = postgres_dir(workdir / "host" / "ts")
    pg.psql(f"CREATE TABLESPACE extra LOCATION '{space}'")
    pg.psql("CREATE TABLE big (id int PRIMARY KEY, note text)")
    pg.psql(f"INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) "
            f"FROM generate_series(1, {ROWS}) g")
    pg.psql("CREATE TABLE far TABLESPACE extra AS SELECT g AS id FROM generate_series(1, 5000) g")
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    code, out, err = repo.run("backup")
    assert code == 0, err
    pg.psql("VACUUM FREEZE")
    pg.psql("CHECKPOINT")
    sums = checksums(pg)
    pg.psql("CHECKPOINT")
    return pg, space, repo, out["backup"], sums


def fresh_target(workdir, name):
    restored, args = restore_args(15, workdir / name / "data")
    args += ["--tablespace-map", f"extra={postgres_dir(workdir / name / 'ts')}"]
    return restored, args


def test_d11_1_restore_never_touches_a_running_cluster(source, workdir):
    pg, space, repo, backup, sums = source
    alias = workdir / "alias"
    os.symlink(str(pg.datadir), str(alias))
    version_dir = next(space.iterdir())
    targets = [pg.datadir.parent,            # the parent of its data directory
               pg.datadir / "base",          # a folder inside it
               alias,                        # a symlink to it
               workdir / "host",             # a directory two levels above it
               space,                        # its tablespace location
               version_dir,                  # a directory inside that
               space / "new"]                # a directory that would be created in it
    before = tree_digest(pg.datadir, space)
    spare, args = fresh_target(workdir, "spare")
    for target in targets:
        for extra in ([], ["--force"]):
            code, out, err = repo.run("restore", "--target", target, *args, *extra)
            line = refused(code, out, err, "target_running")
            assert str(pg.datadir) in line and "PID %d" % pg.pid() in line, line
    # a tablespace mapped (or restored by default) into the live cluster's location
    for mapping in ([], ["--tablespace-map", f"extra={space}"],
                    ["--tablespace-map", f"extra={pg.datadir / 'ts'}"]):
        code, out, err = repo.run("restore", "--target", workdir / "spare2" / "data",
                                  "--force", *mapping)
        line = refused(code, out, err, "target_running")
        assert "tablespace extra location" in line, line
    # the drill removes its scratch directory afterwards: the same refusal, before anything
    for target in (pg.datadir.parent, pg.datadir / "base", space):
        code, out, err = repo.run("drill", "--target", target, "--drill-port", free_port())
        line = refused(code, out, err, "target_running")
        assert str(pg.datadir) in line, line
    busy = postgres_dir(workdir / "busy")
    (busy / "keep.txt").write_text("precious")
    code, out, err = repo.run("drill", "--target", busy, "--drill-port", free_port())
    refused(code, out, err, "target_not_empty")
    assert (busy / "keep.txt").read_text() == "precious"
    assert tree_digest(pg.datadir, space) == before  # not one byte of the live cluster
    assert checksums(pg) == sums
    assert not (workdir / "spare" / "data").exists() and not (workdir / "spare2").exists()
    # and the same repository restores into a free directory as before
    code, out, err = repo.run("restore", "--target", spare.datadir, *args)
    assert code == 0, err
    started_copy(spare, sums)


def run_as_root(repo, *args, env=None):
    """The CLI run directly by root (no runuser)."""
    cmd = [str(PGDR), "restore", "--config", str(repo.config), "--credentials",
           str(repo.credentials), "--json", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False,
                         env=env, timeout=600)
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    return res.returncode, json.loads(lines[-1]) if lines else None, res.stderr


def test_d11_6_root_restores_for_the_target_owner(source, workdir):
    assert os.geteuid() == 0, "this test runs the engine as root"
    pg, space, repo, backup, sums = source
    postgres = pwd.getpwnam("postgres")
    # the target exists, owned by postgres / the target does not exist, its parent does
    for name, create in (("existing", True), ("missing", False)):
        restored, args = fresh_target(workdir, name)
        if create:
            postgres_dir(restored.datadir)
        code, out, err = run_as_root(repo, "--target", restored.datadir, *args)
        assert code == 0, err
        owner = (postgres.pw_uid, os.stat(restored.datadir.parent).st_gid)
        paths = tree_digest(restored.datadir, workdir / name / "ts")
        wrong = [p for p in paths if (os.lstat(p).st_uid, os.lstat(p).st_gid) != owner]
        assert len(paths) > 900 and wrong == [], wrong[:10]
        started_copy(restored, sums)
    # a root-owned parent: refused before anything is written
    parent = workdir / "rootowned"
    parent.mkdir()
    os.chmod(parent, 0o755)
    code, out, err = run_as_root(repo, "--target", parent / "data", "--tablespace-map",
                                 f"extra={parent / 'ts'}")
    line = refused(code, out, err, "target_owner_root")
    assert str(parent) in line
    assert os.listdir(parent) == []


@pytest.mark.parametrize("point", ["restore.fetch", "restore.finish"])
def test_d11_3_a_killed_restore_never_starts_and_a_rerun_replaces_it(source, workdir, point):
    pg, space, repo, backup, sums = source
    restored, args = fresh_target(workdir, "killed")
    cmd = ["runuser", "-u", "postgres", "--", str(PGDR), "restore", "--config",
           str(repo.config), "--credentials", str(repo.credentials), "--target",
           str(restored.datadir), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False,
                         env=dict(os.environ, PGDR_FAULT_POINT=point), timeout=600)
    assert res.returncode in (-9, 137), (res.returncode, res.stderr)
    assert (restored.datadir / "PG_VERSION").exists()  # killed half way: files are there
    assert_not_startable(15, restored.datadir)
    # not offered as restored: without force, a non-empty target is refused
    code, out, err = repo.run("restore", "--target", restored.datadir, *args)
    refused(code, out, err, "target_not_empty")
    code, out, err = repo.run("restore", "--target", restored.datadir, "--force", *args)
    assert code == 0, err
    started_copy(restored, sums)


def test_d11_4_a_full_filesystem_is_a_clear_error_and_undone(source, workdir, small_fs):
    pg, space, repo, backup, sums = source
    assert backup["size"] > 60 * 1048576, backup["size"]
    small = small_fs(40)
    target = small / "data"
    code, out, err = repo.run("restore", "--target", target, "--tablespace-map",
                              f"extra={small / 'ts'}")
    line = refused(code, out, err, "target_full")
    assert "ENOSPC" in line and str(target) in line, line
    assert os.listdir(target) == []  # emptied again
    assert not [n for n in os.listdir(small / "ts") if n.startswith("PG_")] if (small / "ts").exists() else True
    used = subprocess.run(["df", "--output=used", "-B1", str(small)], capture_output=True,
                          text=True, check=True).stdout.split()[-1]
    assert int(used) < 1048576, used
    # any other write error: target_unwritable (a directory postgres may not write into)
    locked = workdir / "locked"
    locked.mkdir()
    os.chmod(locked, 0o755)
    code, out, err = repo.run("restore", "--target", locked, "--force",
                              "--tablespace-map", f"extra={small / 'ts'}")
    refused(code, out, err, "target_unwritable")
    assert os.listdir(locked) == []


def test_d11_13_restore_messages_say_what_happens(source, workdir):
    pg, space, repo, backup, sums = source
    restored, args = fresh_target(workdir, "msgs")
    code, out, err = repo.run("restore", "--target", restored.datadir, "--dry-run", *args)
    assert code == 0, err
    assert out["dry_run"] is True
    assert re.match(r"would restore backup %s \([0-9.]+ MiB, %d files\) into %s, point "
                    % (re.escape(backup["id"]), out["files"], re.escape(str(restored.datadir))),
                    out["msg"]), out["msg"]
    assert not restored.datadir.exists()
    text = subprocess.run(["runuser", "-u", "postgres", "--", str(PGDR), "restore", "--config",
                           str(repo.config), "--credentials", str(repo.credentials), "--target",
                           str(restored.datadir), "--dry-run", *args],
                          capture_output=True, text=True, cwd="/", check=True).stdout
    assert text.strip() == out["msg"], text
    code, out, err = repo.run("restore", "--target", restored.datadir, *args)
    assert code == 0, err
    assert out["msg"].startswith("restored backup %s (" % backup["id"]), out["msg"]
    assert "%d files" % out["files"] in out["msg"]
    progress = re.findall(r"restore +([0-9.]+)% (\d+)/(\d+) MiB", err)
    assert progress, err
    assert all(float(p) <= 100.0 and int(d) <= int(t) for p, d, t in progress), progress
    assert progress[-1][0] == "100.0" and progress[-1][1] == progress[-1][2], progress
    print("restore progress:", [l for l in err.splitlines() if " done" in l][-1])
    started_copy(restored, sums)
