"""Delta restore (issue 15, item 4), on real PostgreSQL 15 and SeaweedFS.

An existing, stopped data directory (here a restored copy that was started and went its
own way, as a failed primary or yesterday's drill copy does) is brought to a newer backup
by rewriting only what differs. The invariant, checked by every test: the delta either
succeeds, and the directory is then file for file what a restore into an empty directory
gives and starts with exactly the source's rows (amcheck clean), or it fails with a clear
error and leaves nothing that starts; a refused one touches nothing at all."""
import json
import os
import shutil
import subprocess

import pytest

from tests.integration.pgdr_run import (PGDR, Repo, checksums, postgres_dir, restore_args)
from tests.integration.test_faults_restore import (assert_not_startable, refused,
                                                   tree_digest)

ROWS = 200000  # about 26 MiB of table: 26 pieces of 1 MiB (chunk_size below)
MARKER = "pgdr_restore.json"
STAMPS = "pgdr_restore.files"  # the restore's record of the files it wrote


@pytest.fixture
def diverged(pg_cluster, workdir, seaweed, bucket):
    """(source, repo, copy, its restore arguments, the diff backup's id, the source's
    checksums at that backup). The copy holds the source's full backup, started and
    changed on its own since; the source changed 5% of its big table and took a diff."""
    pg = pg_cluster(15, settings={"autovacuum": "off"}, name="src/pg")
    space = postgres_dir(workdir / "src" / "ts")
    pg.psql(f"CREATE TABLESPACE extra LOCATION '{space}'")
    # fillfactor 90 and one row in 20 updated: the new versions fit on their page (HOT),
    # so updating the rows of 5% of the pages changes 5% of the pages (pageinspect: 137
    # of 2769); all the rows of a range would spill onto every page with free space
    pg.psql("CREATE TABLE big (id int PRIMARY KEY, note text) WITH (fillfactor = 90)")
    pg.psql(f"INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) "
            f"FROM generate_series(1, {ROWS}) g")
    pg.psql("CREATE TABLE far TABLESPACE extra AS SELECT g AS id, md5(g::text) AS note "
            "FROM generate_series(1, 50000) g")
    pg.psql("VACUUM FREEZE")
    pg.psql("CHECKPOINT")
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg, chunk_size=1)
    code, out, err = repo.run("backup")
    assert code == 0, err
    copy, args = restore_args(15, workdir / "copy" / "data")
    args += ["--tablespace-map", f"extra={postgres_dir(workdir / 'copy' / 'ts')}"]
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point",
                              out["backup"]["id"], *args)
    assert code == 0, err
    copy.start()
    copy.psql("UPDATE big SET note = 'copy' WHERE id BETWEEN 150001 AND 154000 "
              "AND id % 20 = 0")
    copy.psql("CREATE TABLE junk AS SELECT g FROM generate_series(1, 10000) g")
    copy.psql("DELETE FROM far WHERE id > 49000")
    copy.stop()
    pg.psql(f"UPDATE big SET note = 'source' WHERE id BETWEEN 1 AND {ROWS // 20} "
            "AND id % 20 = 0")
    pg.psql("INSERT INTO far SELECT g, 'new' FROM generate_series(50001, 51000) g")
    pg.psql("CHECKPOINT")
    code, out, err = repo.run("backup", "--type", "diff")
    assert code == 0, err
    return pg, repo, copy, args, out["backup"]["id"], checksums(pg)


def relative_tree(copy):
    """tree_digest of the copy and its tablespace, by path relative to the copy's parent,
    without the marker and the record of the files (they say when they were written)."""
    base = str(copy.datadir.parent) + "/"
    tree = tree_digest(copy.datadir, copy.datadir.parent / "ts")
    return dict((path[len(base):], value) for path, value in tree.items()
                if not path.endswith(("/" + MARKER, "/" + STAMPS)))


def assert_exact_and_clean(copy, sums):
    copy.start()
    try:
        assert checksums(copy) == sums
        copy.psql("CREATE EXTENSION IF NOT EXISTS amcheck")
        copy.psql("SELECT bt_index_check(c.oid, true) FROM pg_class c JOIN pg_am a ON "
                  "a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence <> 't'")
    finally:
        copy.stop()


def test_a_delta_restore_rewrites_only_what_differs_and_equals_a_fresh_restore(diverged):
    pg, repo, copy, args, diff_id, sums = diverged
    (copy.datadir / "base" / "stray-file").write_text("not in any backup")
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--delta", *args)
    assert code == 0, err
    delta = out["delta"]
    full_size = out["backup"]["size"]
    assert delta["read_bytes"] > 0.5 * full_size, delta  # the copy ran: most files changed
    # most of the data was already there (measured: 48.8 of 53.7 MB kept; written 22.9 MB:
    # the pieces under the diff's pages, those pages again, and the backup's own 16 MiB WAL
    # segment; a restore into an empty directory writes all 70 MB)
    assert delta["kept_bytes"] > 0.8 * full_size, delta
    assert delta["written_bytes"] < 0.5 * (full_size + 16 * 1024 * 1024), delta
    assert delta["removed"] >= 2, delta  # the stray file, junk's files, the copy's WAL...
    assert not (copy.datadir / "base" / "stray-file").exists()
    after_delta = relative_tree(copy)
    # the same backup restored into the emptied directory: the very same tree
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--force", *args)
    assert code == 0, err
    assert out["delta"] is None
    # what the delta downloaded: a small part of what a restore into an empty directory
    # does (measured: 2.0 MB against 13.9 MB)
    assert delta["fetched_bytes"] < 0.3 * out["fetch_bytes"], (delta, out["fetch_bytes"])
    assert relative_tree(copy) == after_delta
    assert_exact_and_clean(copy, sums)
    # the copy was started and written to (amcheck installed): its marker still names the
    # point, but a delta of that point is not skipped, and brings it back
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--delta", *args)
    assert code == 0 and out["changed"] is True and out["delta"]["written_bytes"] > 0, (
        code, out, err)
    assert relative_tree(copy) == after_delta
    # and a delta of a copy that did not change since changes nothing
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--delta", *args)
    assert code == 0 and out["changed"] is False, (code, out, err)


def test_a_refused_delta_touches_nothing_and_a_killed_one_never_starts(diverged, workdir):
    pg, repo, copy, args, diff_id, sums = diverged
    # never into a running cluster, even with force
    live = tree_digest(pg.datadir)
    for extra in ([], ["--force"]):
        code, out, err = repo.run("restore", "--target", pg.datadir, "--point", diff_id,
                                  "--delta", *extra)
        line = refused(code, out, err, "target_running")
        assert str(pg.datadir) in line
    assert tree_digest(pg.datadir).keys() == live.keys()
    # a directory that is not a data directory: named, not touched
    other = postgres_dir(workdir / "other")
    (other / "keep.txt").write_text("precious")
    code, out, err = repo.run("restore", "--target", other, "--point", diff_id, "--delta")
    line = refused(code, out, err, "target_not_a_cluster")
    assert str(other) in line and "PG_VERSION" in line, line
    assert os.listdir(other) == ["keep.txt"]
    # a database directory of a stopped cluster (it has a PG_VERSION), or an empty
    # directory in it: no restore goes there, with delta, force or neither
    inside = copy.datadir / "base" / "5"
    empty = postgres_dir(copy.datadir / "pg_stat_tmp" / "new")
    before = tree_digest(copy.datadir)
    for target, extra in ((inside, ["--delta"]), (inside, ["--force"]), (empty, [])):
        code, out, err = repo.run("restore", "--target", target, "--point", diff_id,
                                  *extra)
        line = refused(code, out, err, "target_inside_cluster")
        assert str(copy.datadir) in line and str(target) in line, line
    assert tree_digest(copy.datadir) == before
    empty.rmdir()
    # killed half-way through the fetch: it does not start, and is not offered
    cmd = ["runuser", "-u", "postgres", "--", str(PGDR), "restore", "--config",
           str(repo.config), "--credentials", str(repo.credentials), "--target",
           str(copy.datadir), "--point", diff_id, "--delta", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False,
                         env=dict(os.environ, PGDR_FAULT_POINT="restore.fetch"), timeout=600)
    assert res.returncode in (-9, 137), (res.returncode, res.stderr)
    assert_not_startable(15, copy.datadir)
    # the tablespace's disk replaced meanwhile (its location is gone): a rerun finishes
    # it all the same, and the data are exactly the source's
    shutil.rmtree(workdir / "copy" / "ts")
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--delta", *args)
    assert code == 0, err
    assert out["delta"]["kept_bytes"] > 0
    assert_exact_and_clean(copy, sums)


def test_a_delta_never_touches_what_a_pg_wal_link_points_to(diverged, workdir):
    """pg_wal is a link to a directory outside the target (initdb --waldir, or a clone of
    a primary whose WAL is on another disk: it may be that primary's WAL). The delta
    replaces the link by the backup's own pg_wal and leaves that directory as it was."""
    pg, repo, copy, args, diff_id, sums = diverged
    wal_disk = postgres_dir(workdir / "copy" / "wal")
    for name in os.listdir(copy.datadir / "pg_wal"):
        shutil.move(str(copy.datadir / "pg_wal" / name), str(wal_disk / name))
    (copy.datadir / "pg_wal").rmdir()
    os.symlink(wal_disk, copy.datadir / "pg_wal")
    (wal_disk / "stray").write_text("not in any backup")
    before = tree_digest(wal_disk)
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--delta", *args)
    assert code == 0, err
    assert not os.path.islink(copy.datadir / "pg_wal") and (copy.datadir / "pg_wal").is_dir()
    assert tree_digest(wal_disk) == before
    assert_exact_and_clean(copy, sums)


def test_a_delta_trusts_only_files_nothing_changed_since_a_restore_recorded_them(diverged):
    """A restore records each file's stamp (inode, size, mtime, ctime) and digests; a delta
    reads only the files whose stamp differs. A page overwritten behind PostgreSQL's back,
    with the file's size and times put back, still changes its ctime: it is read and
    rewritten, and the copy is file for file a fresh restore."""
    pg, repo, copy, args, diff_id, sums = diverged
    full_id = json.loads((copy.datadir / MARKER).read_text())["backup_id"]
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", full_id,
                              "--force", *args)
    assert code == 0, err
    assert (copy.datadir / STAMPS).stat().st_mode & 0o777 == 0o600
    # template1's biggest catalog file: the diff does not change it
    victim = max((p for p in (copy.datadir / "base" / "1").iterdir() if p.is_file()),
                 key=lambda p: p.stat().st_size)
    info = damage_behind_its_back(victim)
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--delta", *args)
    assert code == 0, err
    delta = out["delta"]
    # the victim was read; the files the record vouches for were not (most of them)
    assert info.st_size <= delta["read_bytes"] < 0.5 * out["backup"]["size"], delta
    after_delta = relative_tree(copy)
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--force", *args)
    assert code == 0, err
    assert relative_tree(copy) == after_delta
    # the same backup and point again: "already there" only while no file it recorded
    # changed; with the victim damaged again, the delta runs and repairs it
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--delta", *args)
    assert code == 0 and out["changed"] is False, (code, out, err)
    damage_behind_its_back(victim)
    code, out, err = repo.run("restore", "--target", copy.datadir, "--point", diff_id,
                              "--delta", *args)
    assert code == 0 and out["changed"] is True, (code, out, err)
    assert out["delta"]["read_bytes"] >= info.st_size, out["delta"]
    assert relative_tree(copy) == after_delta
    assert_exact_and_clean(copy, sums)


def damage_behind_its_back(path):
    """4 KiB of noise in the middle of path, its size and times put back; its old stat."""
    info = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(info.st_size // 2)
        handle.write(os.urandom(4096))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_mtime_ns == info.st_mtime_ns and path.stat().st_size == info.st_size
    return info
