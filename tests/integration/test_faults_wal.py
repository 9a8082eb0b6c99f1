"""Faults around WAL archiving and recovery on real PostgreSQL and SeaweedFS (issue 11,
defects 2, 4, 5, 11 and 13): full filesystems, kills at named points, damaged archived
segments and prefetched WAL of another restore.

The invariant: after every fault either the command failed with a clear error (exit code
and error code asserted) and PostgreSQL did not promote, or it succeeded and the restored
copy holds exactly the source's rows."""
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from tests.integration.pgdr_run import (PGDR, Repo, archive_everything, archiving_cluster,
                                        assert_exact_copy,
                                        checksums, postgres_dir, restore_args,
                                        wait_until_promoted)

SEGMENT = 16 * 1024 * 1024
KILLED = 128 + 9  # runuser reports the SIGKILLed command as 128 + 9


def pgdr(repo, command, *args, cwd="/", fault=None, timeout=600):
    """The real CLI as user postgres, in cwd, optionally killed at a named point."""
    env = dict(os.environ)
    env.pop("PGDR_FAULT_POINT", None)
    if fault:
        env["PGDR_FAULT_POINT"] = fault
    cmd = ["runuser", "-u", "postgres", "--", str(PGDR), command, "--config", str(repo.config),
           "--credentials", str(repo.credentials), "--json", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(cwd), env=env,
                         timeout=timeout, check=False)
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    return res.returncode, (json.loads(lines[-1]) if lines else None), res.stderr


def chown_tree(path):
    shutil.chown(path, "postgres", "postgres")
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), "postgres", "postgres")


def fake_segment(name, seed=b""):
    """A 16 MiB segment whose first page carries a valid XLOG long page header."""
    segno = int(name[8:16], 16) * (0x100000000 // SEGMENT) + int(name[16:24], 16)
    header = struct.pack("<HHIQIIQII", 0xD110, 0x0002, int(name[:8], 16), segno * SEGMENT, 0,
                         0, 7000000000000000001, SEGMENT, 8192)
    block = os.urandom(8192) + seed
    return (header + block * (SEGMENT // len(block) + 1))[:SEGMENT]


def source(pg_cluster, workdir, seaweed, bucket, segments=4, name="primary", **settings):
    """An archiving cluster with a backup and rows in `segments` later segments, all
    archived: (cluster, repo, its checksums)."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket, name=name, **settings)
    code, dummy, err = repo.run("backup")
    assert code == 0, err
    for i in range(segments):
        pg.psql("INSERT INTO ticks (k) SELECT g FROM generate_series(%d, %d) g"
                % (i * 100 + 1, i * 100 + 100))
        if i == 1:
            pg.psql("SELECT pg_create_restore_point('early')")
        pg.psql("SELECT pg_switch_wal()")
    archive_everything(pg)
    return pg, repo, checksums(pg)


def segment_key_after(s3, bucket, stop_wal):
    """The key of the first archived full segment after the backup's stop segment."""
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="main/wal/")
                  ["Contents"])
    return next(k for k in keys if len(k.rsplit("/", 1)[-1].split(".")[0]) == 24
                and ".backup" not in k and k.rsplit("/", 1)[-1][:24] > stop_wal)


def restored_copy(repo, target, *extra):
    restored, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, *extra, *args)
    assert code == 0, err
    return restored, out


def promoted(restored):
    """True when the copy ended recovery on a new timeline (it promoted)."""
    return any(n.endswith(".history") for n in os.listdir(restored.datadir / "pg_wal"))


def start_outcome(restored, timeout=120):
    """Start the copy and follow its recovery to the end: "stopped" (recovery failed and
    the server went down) or "promoted". pg_ctl -w returns once a hot standby accepts
    connections, which may be before the damaged segment is reached."""
    try:
        restored.start()
    except RuntimeError:
        pass
    deadline = time.time() + timeout
    while True:
        if not restored.is_running():
            return "stopped"
        try:
            if restored.psql("SELECT pg_is_in_recovery()") == "f":
                return "promoted"
        except RuntimeError:
            pass  # going down
        assert time.time() < deadline, "recovery neither ended nor failed in %d s" % timeout
        time.sleep(0.2)


def assert_stopped_unpromoted(restored, *fragments):
    """Recovery stopped: the server is down, did not promote, and its log names why."""
    assert not restored.is_running()
    assert not promoted(restored)
    log = restored.log.read_text()
    for fragment in fragments:
        assert fragment in log, log[-3000:]
    return log


def leftovers(directory):
    found = []
    for root, dirs, files in os.walk(directory):
        found += [os.path.join(root, f) for f in files if ".tmp" in f or "pgdr-tmp" in f]
    return found


def fill(path, leave_mib):
    """Fill the filesystem at path until about leave_mib MiB are free; the filler."""
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize - leave_mib * 1024 * 1024
    filler = path / "filler"
    with open(filler, "wb") as handle:
        while free > 0:
            chunk = min(free, 1 << 20)
            try:
                handle.write(b"\0" * chunk)
                handle.flush()
            except OSError:
                break
            free -= chunk
    return filler


# -- defect 2: a full or failing destination stops recovery; it resumes once fixed ----------

@pytest.mark.parametrize("spooled", [True, False], ids=["prefetch", "direct"])
def test_d11_2_full_wal_destination_stops_recovery_then_resumes(pg_cluster, workdir, seaweed,
                                                                bucket, small_fs, spooled):
    pg, repo, expected = source(pg_cluster, workdir, seaweed, bucket)
    if not spooled:
        repo.settings.pop("spool_dir")
        repo.write()
    restored, dummy = restored_copy(repo, workdir / "copy" / "data")
    # pg_wal on a filesystem with less room than one segment
    small = small_fs(256, "walfs")
    pg_wal = restored.datadir / "pg_wal"
    for entry in os.listdir(pg_wal):
        shutil.move(str(pg_wal / entry), str(small / entry))
    pg_wal.rmdir()
    os.symlink(small, pg_wal)
    chown_tree(small)
    filler = fill(small, 8)
    assert start_outcome(restored) == "stopped"
    assert_stopped_unpromoted(restored, "error [wal_dest_unwritable]",
                              "no space left on device")
    _wait_worker_gone(workdir / "spool", "fetch.lock")  # its downloads are not leftovers
    assert leftovers(small) == [] and leftovers(workdir / "spool") == []
    # space is freed: recovery resumes and the copy is exact
    filler.unlink()
    assert_exact_copy(restored, expected)
    assert leftovers(small) == []


def test_d11_2_full_spool_falls_back_to_direct_fetch(pg_cluster, workdir, seaweed, bucket,
                                                     small_fs):
    pg, repo, expected = source(pg_cluster, workdir, seaweed, bucket)
    spool = small_fs(2, "spoolfs")
    repo.settings["spool_dir"] = spool
    repo.write()
    (spool / "fetch").mkdir()
    chown_tree(spool)
    fill(spool, 0)
    restored, dummy = restored_copy(repo, workdir / "copy" / "data")
    assert_exact_copy(restored, expected)
    _wait_worker_gone(spool, "fetch.lock")
    assert leftovers(spool) == []
    assert "is unusable (" in restored.log.read_text()  # said so, and fetched directly


def test_d11_2_kill_mid_write_then_rerun(workdir, seaweed, bucket):
    repo = Repo.s3(postgres_dir(workdir / "conf"), seaweed, bucket)
    name = "000000010000000000000007"
    wal = postgres_dir(workdir / "src") / name
    data = fake_segment(name)
    wal.write_bytes(data)
    shutil.chown(wal, "postgres")
    assert pgdr(repo, "wal-push", wal)[0] == 0
    pgdata = postgres_dir(workdir / "data")
    postgres_dir(pgdata / "pg_wal")
    code, dummy, dummy2 = pgdr(repo, "wal-fetch", name, "pg_wal/RECOVERYXLOG", cwd=pgdata,
                               fault="wal_fetch.mid_write")
    assert code == KILLED  # above 125: PostgreSQL stops recovery
    assert os.listdir(pgdata / "pg_wal") == ["RECOVERYXLOG.pgdr-tmp"]  # half, never placed
    code, out, err = pgdr(repo, "wal-fetch", name, "pg_wal/RECOVERYXLOG", cwd=pgdata)
    assert code == 0, err
    assert os.listdir(pgdata / "pg_wal") == ["RECOVERYXLOG"]
    assert (pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == data


def test_d11_2_missing_destination_directory(workdir, seaweed, bucket):
    repo = Repo.s3(postgres_dir(workdir / "conf"), seaweed, bucket)
    name = "000000010000000000000007"
    wal = postgres_dir(workdir / "src") / name
    wal.write_bytes(fake_segment(name))
    shutil.chown(wal, "postgres")
    assert pgdr(repo, "wal-push", wal)[0] == 0
    code, out, err = pgdr(repo, "wal-fetch", name, workdir / "gone" / "RECOVERYXLOG")
    assert code == 129 and out["error"]["code"] == "wal_dest_unwritable", err
    assert "gone/RECOVERYXLOG" in err and err.count("\n") == 1


# -- defect 4: prefetched WAL of another restore is never replayed ---------------------------

def test_d11_4_forced_restore_of_another_system_into_the_same_path(pg_cluster, workdir, seaweed,
                                                                   bucket):
    spool = postgres_dir(workdir / "shared-spool")
    systems = {}
    for label in ("a", "b"):
        here = postgres_dir(workdir / label)
        os.chmod(here, 0o755)
        pg, repo, expected = source(pg_cluster, here, seaweed, bucket, name="pg-" + label,
                                    segments=8 if label == "a" else 4, repo_prefix=label)
        pg.stop()
        repo.settings["spool_dir"] = spool  # one node's spool for both restores
        repo.write()
        systems[label] = (repo, expected)
    target = workdir / "copy" / "data"
    # A to an early point only: its prefetcher stages A's later segments, which have the
    # names B's recovery asks for
    restored, dummy = restored_copy(systems["a"][0], target, "--point", "name:early")
    restored.start()
    try:
        wait_until_promoted(restored)
    finally:
        restored.stop()
    _wait_worker_gone(spool, "fetch.lock")
    staged = [f for r, d, fs in os.walk(spool / "fetch") for f in fs if len(f) == 24]
    restored, dummy = restored_copy(systems["b"][0], target, "--force")
    assert_exact_copy(restored, systems["b"][1])
    assert "different database system" not in restored.log.read_text()
    assert staged, "A's restore staged nothing ahead: the test would prove nothing"
    _wait_worker_gone(spool, "fetch.lock")
    assert len(os.listdir(spool / "fetch")) == 1  # B's first call removed A's staged WAL


# -- defect 5: a damaged archived segment stops recovery, whatever the compression -----------

@pytest.mark.parametrize("compression", ["none", "zstd", "gzip"])
def test_d11_5_flipped_byte_in_archived_segment_stops_recovery(pg_cluster, workdir, seaweed,
                                                               bucket, compression):
    """Needs storage.get verifying the stored SHA-256 (the storage change of issue 11)."""
    pg, repo, expected = source(pg_cluster, workdir, seaweed, bucket, compression=compression)
    code, info, err = repo.run("info")
    stop_wal = info["backups"][-1]["stop_wal"]
    s3 = seaweed.client()
    key = segment_key_after(s3, bucket, stop_wal)
    stored = s3.get_object(Bucket=bucket, Key=key)
    body = bytearray(stored["Body"].read())
    body[min(len(body) - 1, 8192 + 200)] ^= 0x01  # one flipped byte, sha256 metadata kept
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=stored["Metadata"])
    assert s3.head_object(Bucket=bucket, Key=key)["Metadata"] == stored["Metadata"]
    restored, dummy = restored_copy(repo, workdir / "copy" / "data")
    try:
        assert start_outcome(restored) == "stopped"
    finally:
        restored.stop()
    log = assert_stopped_unpromoted(restored, key.rsplit("/", 1)[-1][:24])
    assert "error [checksum_mismatch]" in log or "error [decompress_failed]" in log, log[-3000:]
    assert leftovers(restored.datadir / "pg_wal") == []


# -- defect 11: only WAL is archived ----------------------------------------------------------

def test_d11_11_wal_push_of_a_non_wal_file_uploads_nothing(workdir, seaweed, bucket):
    repo = Repo.s3(postgres_dir(workdir / "conf"), seaweed, bucket)
    code, out, err = pgdr(repo, "wal-push", "/etc/passwd")
    assert code == 2 and out["error"]["code"] == "wal_path_invalid"
    assert "/etc/passwd is not a WAL file" in err
    name = "000000010000000000000005"
    fake = postgres_dir(workdir / "src") / name
    fake.write_bytes(b"\x01" * SEGMENT)
    shutil.chown(fake, "postgres")
    code, out, err = pgdr(repo, "wal-push", fake)
    assert code == 2 and out["error"]["code"] == "wal_file_invalid", err
    assert "XLOG long page header" in err
    assert seaweed.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


# -- defect 13 and kill points of wal-push ------------------------------------------------------

@pytest.mark.parametrize("point", ["wal_push.before_put", "wal_push.after_put"])
def test_d11_6_kill_wal_push_then_rerun(workdir, seaweed, bucket, point):
    repo = Repo.s3(postgres_dir(workdir / "conf"), seaweed, bucket, compression="zstd")
    name = "000000010000000000000009"
    wal = postgres_dir(workdir / "src") / name
    data = fake_segment(name)
    wal.write_bytes(data)
    shutil.chown(wal, "postgres")
    key = f"main/wal/{name[:16]}/{name}.zst"
    s3 = seaweed.client()
    code, dummy, dummy2 = pgdr(repo, "wal-push", wal, fault=point)
    assert code == KILLED
    present = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert present == ([] if point == "wal_push.before_put" else [key])
    first = s3.get_object(Bucket=bucket, Key=key)["Body"].read() if present else None
    code, out, err = pgdr(repo, "wal-push", wal)
    assert code == 0, err
    stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if first is not None:
        assert stored == first  # never rewritten
    pgdata = postgres_dir(workdir / "data")
    code, out, err = pgdr(repo, "wal-fetch", name, pgdata / "RECOVERYXLOG", cwd=pgdata)
    assert code == 0, err
    assert (pgdata / "RECOVERYXLOG").read_bytes() == data
    # other bytes under that name: refused, the archived object untouched
    wal.write_bytes(fake_segment(name, seed=b"other"))
    code, out, err = pgdr(repo, "wal-push", wal)
    assert code == 8 and out["error"]["code"] == "wal_conflict", err
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == stored


def _async_node(workdir, seaweed, bucket, **settings):
    """A data directory as archive_command sees it: pg_control, pg_wal with one segment
    marked ready, and a repository with a spool."""
    pgdata = postgres_dir(workdir / "data")
    postgres_dir(pgdata / "global")
    (pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", 7000000000000000001)
                                                   + b"\0" * 8184)
    name = "00000001000000000000000B"
    postgres_dir(pgdata / "pg_wal" / "archive_status")
    (pgdata / "pg_wal" / name).write_bytes(fake_segment(name))
    (pgdata / "pg_wal" / "archive_status" / (name + ".ready")).write_text("")
    chown_tree(pgdata)
    spool = postgres_dir(workdir / "spool")
    repo = Repo.s3(postgres_dir(workdir / "conf"), seaweed, bucket, spool_dir=spool,
                   archive_idle=1, **settings)
    return pgdata, name, spool, repo


def _wait_worker_gone(spool, lock_name="push.lock"):
    """Wait (bounded) until no background worker (push or prefetch) holds its lock."""
    locks = [os.path.join(r, lock_name) for r, d, f in os.walk(spool) if lock_name in f]
    deadline = time.time() + 60
    for lock in locks:
        with open(lock) as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                    break
                except OSError:
                    assert time.time() < deadline, "push worker still running after 60 s"
                    time.sleep(0.1)


def test_d11_13_async_worker_killed_after_put_then_rerun(workdir, seaweed, bucket):
    pgdata, name, spool, repo = _async_node(workdir, seaweed, bucket, archive_wait=3)
    code, out, err = pgdr(repo, "wal-push", "pg_wal/" + name, cwd=pgdata,
                          fault="wal_push.after_put")
    assert code == 1 and out["error"]["code"] == "wal_push_timeout", err
    assert "is not running" in err  # the killed worker: said so in PostgreSQL's log
    _wait_worker_gone(spool)
    s3 = seaweed.client()
    key = f"main/wal/{name[:16]}/{name}.zst"
    first = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    code, out, err = pgdr(repo, "wal-push", "pg_wal/" + name, cwd=pgdata)
    assert code == 0, err
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == first


def test_d11_13_stalled_archive_names_the_cause(workdir, seaweed, bucket):
    pgdata, name, spool, repo = _async_node(workdir, seaweed, bucket, archive_wait=20)
    repo.settings["s3_endpoint"] = "http://127.0.0.1:9"  # nothing listens there
    repo.write()
    code, out, err = pgdr(repo, "wal-push", "pg_wal/" + name, cwd=pgdata)
    assert code != 0
    assert out["error"]["code"] in ("wal_push_failed", "wal_push_timeout"), err
    assert "127.0.0.1:9" in err or "onnect" in err, err  # the cause, not just 'no result'


def test_d11_13_no_results_left_in_the_spool_after_many_pushes(pg_cluster, workdir, seaweed,
                                                               bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket, archive_idle=2)
    for i in range(40):
        pg.psql("INSERT INTO ticks (k) VALUES (%d)" % (i + 1))
        pg.psql("SELECT pg_switch_wal()")
    archive_everything(pg)
    assert pg.psql("SELECT failed_count FROM pg_stat_archiver") == "0"
    _wait_worker_gone(workdir / "spool")
    results = [f for r, d, fs in os.walk(workdir / "spool" / "archive") for f in fs
               if f.endswith((".ok", ".error")) or ".tmp." in f]
    ready = os.listdir(pg.datadir / "pg_wal" / "archive_status")
    pending = [n for n in ready if n.endswith(".ready")]
    assert len(results) <= len(pending), (results, pending)


def test_d11_3_segment_deleted_after_the_plan_stops_recovery(pg_cluster, workdir, seaweed,
                                                             bucket):
    """A segment the restore's plan saw archived is deleted before recovery fetches it:
    'not in the archive' would let PostgreSQL end recovery there and promote with the rows
    after it missing. wal-fetch stops recovery instead (wal_vanished); with the segment
    back, the same copy recovers exactly."""
    pg, repo, expected = source(pg_cluster, workdir, seaweed, bucket)
    code, info, err = repo.run("info")
    stop_wal = info["backups"][-1]["stop_wal"]
    restored, out = restored_copy(repo, workdir / "copy" / "data", "--point", "latest")
    assert out["plan"]["wal_segments"] >= 2, out["plan"]
    s3 = seaweed.client()
    key = segment_key_after(s3, bucket, stop_wal)
    stored = s3.get_object(Bucket=bucket, Key=key)
    body, metadata = stored["Body"].read(), stored["Metadata"]
    s3.delete_object(Bucket=bucket, Key=key)
    try:
        assert start_outcome(restored) == "stopped"
    finally:
        restored.stop()
    assert_stopped_unpromoted(restored, "error [wal_vanished]", key.rsplit("/", 1)[-1][:24])
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
    assert_exact_copy(restored, expected)


# -- issue 15 item 3: segments the prefetcher made ready skip the engine -------------------

HANDOVER = """
import importlib.util, os, sys
engine = sys.argv[1]
spec = importlib.util.spec_from_file_location("pgdr", os.path.join(engine, "__init__.py"),
                                              submodule_search_locations=[engine])
module = importlib.util.module_from_spec(spec)
sys.modules["pgdr"] = module
spec.loader.exec_module(module)
from pgdr.walready import handover
code = handover(sys.argv[2:])
print(code, "pgdr.cli" in sys.modules)
"""


def test_ready_segments_are_handed_over_without_the_engine_and_the_copy_is_exact(
        pg_cluster, workdir, seaweed, bucket):
    pg, repo, expected = source(pg_cluster, workdir, seaweed, bucket, segments=6,
                                compression="none")
    code, info, err = repo.run("info")
    s3 = seaweed.client()
    first_key = segment_key_after(s3, bucket, info["backups"][-1]["stop_wal"])
    first = first_key.rsplit("/", 1)[-1][:24]
    second = "%s%08X" % (first[:16], int(first[16:], 16) + 1)  # low segment numbers here
    restored, dummy = restored_copy(repo, workdir / "copy" / "data")
    data = restored.datadir
    options = ["--config", str(repo.config), "--credentials", str(repo.credentials)]
    # the full way: it starts the prefetcher and points the directory at its spool
    full = subprocess.run(["runuser", "-u", "postgres", "--", str(PGDR), "wal-fetch", *options,
                           first, "pg_wal/RECOVERYXLOG"], cwd=str(data), capture_output=True,
                          text=True, check=False)
    assert full.returncode == 0, full.stderr
    ready = None
    deadline = time.time() + 60
    while ready is None and time.time() < deadline:
        ready = next((os.path.join(r, second) for r, d, fs in os.walk(workdir / "spool")
                      if second in fs and os.path.basename(r) == "ready"), None)
        time.sleep(0.1)
    assert ready, "the prefetcher made %s ready within 60 s" % second
    # the fast path alone: no CLI imported, the segment byte for byte the archived one
    engine = PGDR.parent.parent / "plugins" / "module_utils" / "_pgdr"
    fast = subprocess.run(["runuser", "-u", "postgres", "--", sys.executable, "-c", HANDOVER,
                           str(engine), *options, second, "pg_wal/RECOVERYXLOG"],
                          cwd=str(data), capture_output=True, text=True, check=False)
    assert fast.stdout.split() == ["0", "False"], fast.stdout + fast.stderr
    archived = s3.get_object(Bucket=bucket, Key=first_key[:-24] + second)["Body"].read()
    assert (data / "pg_wal" / "RECOVERYXLOG").read_bytes() == archived
    assert not os.path.exists(ready)
    os.unlink(data / "pg_wal" / "RECOVERYXLOG")
    # recovery itself then goes through both ways, and the copy is exact
    assert_exact_copy(restored, expected)
    _wait_worker_gone(workdir / "spool", "fetch.lock")
    assert leftovers(workdir / "spool") == [] and leftovers(data) == []
