"""Transient S3 faults between pgdr and SeaweedFS (issue 11, defects 5, 8 and 9): every
request and body read is retried, a write whose answer was lost is settled by the stored
SHA-256, and a stored object that does not match its checksum is refused, never used.

The invariant checked everywhere: a command either succeeds and its result is exactly
right (restored, started and compared table by table), or fails with a clear error and
leaves nothing offered for restore (info) and nothing in the restore target.

PGDR_FAULT_RUNS=10 repeats the fault-rate runs (default 1) and prints the success counts.
"""
import json
import os
import shutil
import time

import pytest

from tests.integration.pgdr_run import (Repo, archive_everything, archiving_cluster,
                                        assert_exact_copy,
                                        checksums, postgres_dir, restore_args)

RUNS = int(os.environ.get("PGDR_FAULT_RUNS", "1"))
CLEAR_EXIT = (3, 5, 7, 8)  # repository, integrity, not found, conflict


def faulty_repo(workdir, seaweed, bucket, s3_faults, pg, **extra):
    """A repository reached through the fault proxy (and small parts, so that WAL
    segments go as multipart uploads)."""
    return Repo.s3(workdir, seaweed, bucket, pg=pg, s3_endpoint=s3_faults.endpoint,
                   s3_part_size=5, **extra)


def small_dataset(pg):
    pg.psql("""
        CREATE TABLE orders (id bigint PRIMARY KEY, note text);
        INSERT INTO orders SELECT g, md5(g::text) || repeat('x', g % 40)
          FROM generate_series(1, 40000) g;
        CREATE TABLE tiny AS SELECT g FROM generate_series(1, 100) g;
        CHECKPOINT;""")


def restore_and_compare(repo, workdir, label, expected, *extra):
    """(exit code, output, stderr); on success the restored cluster started and held
    exactly `expected`; on failure the target holds nothing."""
    target = workdir / label / "data"
    restored, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, *extra, *args, timeout=300)
    if code != 0:
        assert not target.exists() or os.listdir(target) == [], \
            "a failed restore left files in %s: %s" % (target, err)
        return code, out, err
    assert_exact_copy(restored, expected, "restore %s" % label)
    shutil.rmtree(target.parent, ignore_errors=True)
    return code, out, err


def assert_clear(code, out, err):
    """A clean failure: a known exit code, a stable error code, one readable line."""
    assert code in CLEAR_EXIT, (code, err)
    assert out and out["error"]["code"] and out["error"]["code"] != "internal", err
    assert "Traceback" not in err, err


def test_d11_8_cut_body_retried(pg_cluster, seaweed, bucket, workdir, s3_faults):
    pg = pg_cluster(15)
    small_dataset(pg)
    repo = faulty_repo(workdir, seaweed, bucket, s3_faults, pg, compression="none")
    code, out, err = repo.run("backup")
    assert code == 0, err
    expected = checksums(pg)
    # cut the body of the first three object reads of the backup's data
    s3_faults.set_rule("cut", method="GET", key=r"/main/backup/[^/]+/(data|bundle)/", times=3)
    code, out, err = restore_and_compare(repo, workdir, "restored", expected)
    assert code == 0, err
    assert s3_faults.counts["cut"] == 3
    assert "checksum_mismatch" not in err and err.count("retry 1/") >= 1, err


def put_500_after_store(pg_cluster, seaweed, bucket, workdir, s3_faults, name):
    """The server stores the object, then answers 500: the backup completes (exit 0) and
    restores exactly; the second attempt finds its own bytes and succeeds."""
    pg = pg_cluster(15)
    small_dataset(pg)
    repo = faulty_repo(workdir, seaweed, bucket, s3_faults, pg)
    s3_faults.set_rule("forward_500", method="PUT", key="/main/backup/[^/]+/%s$" % name)
    code, out, err = repo.run("backup")
    assert code == 0, err
    assert s3_faults.counts["forward_500"] == 1
    backup_id = out["backup"]["id"]
    code, info, err = repo.run("info")
    assert code == 0 and [b["id"] for b in info["backups"]] == [backup_id], err
    assert info["incomplete"] == []
    code, out, err = restore_and_compare(repo, workdir, "restored", checksums(pg))
    assert code == 0 and out["backup"]["id"] == backup_id, err


def test_d11_9_put_500_after_store_manifest(pg_cluster, seaweed, bucket, workdir, s3_faults):
    put_500_after_store(pg_cluster, seaweed, bucket, workdir, s3_faults, "manifest.json")


def test_d11_9_put_500_after_store_files_list(pg_cluster, seaweed, bucket, workdir,
                                              s3_faults):
    put_500_after_store(pg_cluster, seaweed, bucket, workdir, s3_faults, "files.json.gz")


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("kind", ["bundle", "data"])
def test_d11_5_corrupt_object_refused(pg_cluster, seaweed, bucket, workdir, compression, kind):
    """One flipped byte in a stored object whose recorded metadata still says the
    original digest: restore and verify refuse it by name, and write nothing."""
    pg = pg_cluster(15)
    small_dataset(pg)
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg, compression=compression)
    code, out, err = repo.run("backup")
    assert code == 0, err
    s3 = seaweed.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="main/backup/")
            ["Contents"] if "/%s/" % kind in o["Key"]]
    assert keys, "no %s object in the backup" % kind
    key = max(keys, key=lambda k: s3.head_object(Bucket=bucket, Key=k)["ContentLength"])
    stored = s3.get_object(Bucket=bucket, Key=key)
    body = bytearray(stored["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=stored["Metadata"])

    target = postgres_dir(workdir / "restored")
    code, out, err = repo.run("restore", "--target", target)
    assert code == 5 and out["error"]["code"] == "checksum_mismatch", err
    msg = out["error"]["msg"]
    assert key.split("/", 1)[1] in msg and "damaged" in msg and "expected" in msg, msg
    assert os.listdir(target) == [], "a refused restore must write nothing"
    code, out, err = repo.run("verify")
    assert code == 5 and out["error"]["code"] == "verify_failed", err
    assert key.split("/", 1)[1] in out["error"]["msg"]


def test_d11_9_wal_push_reset_then_500_after_store(pg_cluster, seaweed, bucket, workdir,
                                                   s3_faults):
    """wal-push: the first PUT is reset before it reaches the server, the second is
    stored and answered 500; the push succeeds (the third attempt finds its own bytes),
    and wal-fetch through a cut body returns the pushed segment byte for byte."""
    pg = pg_cluster(15)
    small_dataset(pg)
    segment = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    source = postgres_dir(workdir / "segments") / segment
    shutil.copy(pg.datadir / "pg_wal" / segment, source)
    shutil.chown(source, "postgres")
    repo = faulty_repo(postgres_dir(workdir / "push"), seaweed, bucket, s3_faults, None)
    s3_faults.set_rule("reset", method="PUT", key="/main/wal/")
    s3_faults.set_rule("forward_500", method="PUT", key="/main/wal/")
    code, out, err = repo.run("wal-push", source)
    assert code == 0, err
    s3_faults.set_rule("cut", method="GET", key="/main/wal/")
    dest = postgres_dir(workdir / "fetched") / "RECOVERYXLOG"
    code, out, err = repo.run("wal-fetch", segment, dest)
    assert code == 0, err
    assert dest.read_bytes() == source.read_bytes()
    assert s3_faults.counts == {"cut": 1, "reset": 1, "forward_500": 1}
    # the same segment pushed again is a success; other bytes are refused, untouched
    forged = postgres_dir(workdir / "forged") / segment
    original = source.read_bytes()  # its valid first page, other bytes after it
    forged.write_bytes(original[:8192] + b"\x01" * (len(original) - 8192))
    shutil.chown(forged, "postgres")
    code, out, err = repo.run("wal-push", forged)
    assert code == 8, err
    code, out, err = repo.run("wal-fetch", segment, dest)
    assert code == 0 and dest.read_bytes() == source.read_bytes(), err


def test_d11_9_multipart_put_file_faults(seaweed, bucket, s3_faults, tmp_path):
    """put_file as a multipart upload: a part reset, a part stored and answered 500,
    the completion stored and answered 500. The upload succeeds once, holds our bytes,
    and an if_absent upload of other bytes is a Conflict."""
    from plugins.module_utils._pgdr import options
    from plugins.module_utils._pgdr.errors import Conflict
    from plugins.module_utils._pgdr.storage import open_storage
    events = []
    storage = open_storage(options.resolve(dict(
        repo_type="s3", s3_bucket=bucket, s3_endpoint=s3_faults.endpoint,
        s3_addressing="path", s3_access_key=seaweed.access_key,
        s3_secret_key=seaweed.secret_key, s3_part_size=5, workers=2), environ={}),
        events=events.append)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))  # three parts
    s3_faults.set_rule("reset", method="PUT", key="/big$", nth=1)
    s3_faults.set_rule("forward_500", method="PUT", key="/big$", nth=2)
    s3_faults.set_rule("forward_500", method="POST", key="/big$", nth=2)  # the completion
    storage.put_file("files/big", str(big), if_absent=True)
    assert s3_faults.counts == {"reset": 1, "forward_500": 2}
    assert len(events) == 3 and all("; retry " in line for line in events), events
    assert storage.get("files/big") == big.read_bytes()
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(11 * 1024 * 1024))
    with pytest.raises(Conflict):
        storage.put_file("files/big", str(other), if_absent=True)
    assert storage.get("files/big") == big.read_bytes()
    for line in events:
        assert seaweed.secret_key not in line and seaweed.access_key not in line


# -- fault rates --------------------------------------------------------------------------
OPERATIONS = ("backup full", "backup diff", "wal-push", "wal-fetch", "info", "verify",
              "restore")
TOTALS = {}


def fault_run(pg_cluster, seaweed, workdir, s3_faults, rate, run):
    """One pass of every operation at `rate`: [(operation, "ok" | "clean failure",
    the error line)]."""
    bucket = "f-%d-%d-%d" % (int(rate * 100), run, int(time.time() * 1000) % 100000)
    seaweed.create_bucket(bucket)
    base = postgres_dir(workdir / ("run-%d-%d" % (int(rate * 100), run)))
    s3_faults.clear()
    pg, repo = archiving_cluster(pg_cluster, base, seaweed, bucket,
                                 name="src-%d-%d" % (int(rate * 100), run),
                                 s3_endpoint=s3_faults.endpoint, s3_part_size=5)
    small_dataset(pg)
    s3_faults.set_rate(rate, seed=1000 * run + int(rate * 100))
    outcome = []
    complete = []

    def record(name, code, out, err):
        if code == 0:
            outcome.append((name, "ok", None))
        else:
            assert_clear(code, out, err)
            outcome.append((name, "clean failure", "%s: %s" % (out["error"]["code"],
                                                               out["error"]["msg"])))

    # backups: a full, more data, a diff
    code, out, err = repo.run("backup", "--type", "full", timeout=300)
    record("backup full", code, out, err)
    if code == 0:
        complete.append(out["backup"]["id"])
    pg.psql("UPDATE orders SET note = note || '+' WHERE id % 5 = 0; "
            "INSERT INTO tiny SELECT g FROM generate_series(101, 300) g; CHECKPOINT")
    code, out, err = repo.run("backup", "--type", "diff", timeout=300)
    record("backup diff", code, out, err)
    if code == 0:
        complete.append(out["backup"]["id"])
    expected = checksums(pg)

    # wal-push of a few segments into another cluster name, fetched back byte for byte
    pusher = Repo.s3(postgres_dir(base / "pusher"), seaweed, bucket, cluster_name="pushed",
                     s3_endpoint=s3_faults.endpoint, s3_part_size=5)
    segdir = postgres_dir(base / "segments")
    pushed = []
    for i in range(3):
        pg.psql("INSERT INTO tiny SELECT g FROM generate_series(1, 1000) g")
        segment = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
        shutil.copy(pg.datadir / "pg_wal" / segment, segdir / segment)
        shutil.chown(segdir / segment, "postgres")
        code, out, err = pusher.run("wal-push", segdir / segment, timeout=300)
        record("wal-push", code, out, err)
        if code == 0:
            pushed.append(segment)
    fetched_all = True
    for segment in pushed:
        dest = segdir / ("fetched-" + segment)
        code, out, err = pusher.run("wal-fetch", segment, dest, timeout=300)
        if code == 0:
            assert dest.read_bytes() == (segdir / segment).read_bytes(), segment
        else:
            assert code > 125, (code, err)  # a fault is never "not in the archive"
            fetched_all = False
    outcome.append(("wal-fetch", "ok" if fetched_all else "clean failure", None))

    code, info, err = repo.run("info", timeout=300)
    record("info", code, info, err)
    if code == 0:
        # exactly the backups that reported success are offered, nothing else
        assert sorted(b["id"] for b in info["backups"]) == sorted(complete), info
    code, out, err = repo.run("verify", timeout=300)
    record("verify", code, out, err)
    # the cluster's own archiving (archive_command -> wal-push) gets through the faults;
    # then a restore to the end of the archive (wal-fetch under faults too)
    archive_everything(pg)
    expected = checksums(pg)
    if complete:
        code, out, err = restore_and_compare(repo, base, "restored", expected)
        record("restore", code, out, err)
    s3_faults.clear()
    pg.stop()
    return outcome


@pytest.mark.parametrize("rate", [0.05, 0.20])
def test_d11_8_fault_rate(pg_cluster, seaweed, workdir, s3_faults, rate):
    """At 5% injected transient faults (every kind mixed) every operation succeeds with
    exact data; at 20% each succeeds with exact data or fails cleanly."""
    counts = dict((name, {"ok": 0, "clean failure": 0}) for name in OPERATIONS)
    errors = []
    faults, requests = {}, 0
    for run in range(RUNS):
        for name, result, error in fault_run(pg_cluster, seaweed, workdir, s3_faults, rate,
                                             run):
            counts[name][result] += 1
            if error:
                errors.append("%s: %s" % (name, error))
        for kind, number in s3_faults.counts.items():
            faults[kind] = faults.get(kind, 0) + number
        requests += sum(s3_faults.requests.values())
        s3_faults.counts.clear()
        s3_faults.requests.clear()
    summary = {"rate": rate, "runs": RUNS, "faults": faults, "requests": requests,
               "operations": counts, "errors": errors}
    print("\nfault-rate summary: " + json.dumps(summary, sort_keys=True))
    out = os.environ.get("PGDR_FAULT_SUMMARY")
    if out:
        with open(out, "a") as handle:
            handle.write(json.dumps(summary, sort_keys=True) + "\n")
    assert sum(faults.values()) > 0
    if rate <= 0.05:
        failed = dict((n, c) for n, c in counts.items() if c["clean failure"])
        assert not failed, "at %d%% every operation must succeed: %s" % (rate * 100, failed)


@pytest.mark.parametrize("swap", ["http-to-https-port", "https-to-http-port"])
def test_d11_13_endpoint_scheme_swapped(seaweed, bucket, workdir, swap):
    """Not a bare '400 Bad Request' or an SSL error: the scheme to use, at once."""
    if swap == "http-to-https-port":
        endpoint = seaweed.https_endpoint.replace("https://", "http://")
        hint = "use https://"
    else:
        endpoint = seaweed.endpoint.replace("http://", "https://")
        hint = "use http://"
    repo = Repo.s3(workdir, seaweed, bucket, s3_endpoint=endpoint, s3_verify_tls="false")
    code, out, err = repo.run("verify")
    assert code == 3 and out["error"]["code"] == "endpoint_wrong_scheme", err
    assert endpoint in out["error"]["msg"] and hint in out["error"]["msg"]
    assert "retry" not in err  # a permanent error: not retried
