"""Client-side encryption on real PostgreSQL 15 and SeaweedFS (issue 17).

Round trips (full, incr, diff, WAL, PITR) compared table by table; nothing readable in
the bucket; every fault (a flipped, truncated or swapped object, a wrong, missing or
deleted key, plaintext and encrypted mixed) refused with a clear error before anything
is written; rotation restores old backups with only the new key; the passphrase absent
from process arguments, output and the bucket."""
import os
import threading
import time

from lab.lab import free_port
from tests.integration.pgdr_run import (archive_everything, archiving_cluster,
                                        checksums, postgres_dir, restore_rows, write_rows)
from tests.integration.test_faults_corruption import (SMALL, Damage, backup, restore_exact,
                                                      restore_refused, verify_fails)

PASSPHRASE = "pgdr-test-passphrase-Zq7"
NEW_PASSPHRASE = "pgdr-rotated-passphrase-K4w"
MARKER = "plaintext-marker-8d1f"
MAGIC = b"PGDRENC"


def encrypted_cluster(pg_cluster, workdir, seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket,
                                 encryption_passphrase=PASSPHRASE, **SMALL)
    assert "encryption_passphrase" in repo.secrets and PASSPHRASE not in repo.config.read_text()
    pg.psql("CREATE TABLE items AS SELECT g AS id, '%s ' || repeat(md5(g::text), 4) AS note "
            "FROM generate_series(1, 30000) g" % MARKER)
    return pg, repo


def bucket_objects(seaweed, bucket, prefix="main/"):
    s3 = seaweed.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", ())]
    return dict((k, s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys)


def etags(seaweed, bucket, prefix):
    s3 = seaweed.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return dict((o["Key"], o["ETag"]) for page in pages for o in page.get("Contents", ()))


def watch_arguments(stop, seen):
    """Every process command line (and environment of pgdr's) while ``stop`` is unset."""
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                for name in ("cmdline", "environ"):
                    try:
                        with open("/proc/%s/%s" % (pid, name), "rb") as handle:
                            data = handle.read()
                    except OSError:
                        continue
                    if PASSPHRASE.encode() in data and (name == "cmdline" or b"pgdr" in data):
                        seen.append((pid, name, data[:200]))
        time.sleep(0.02)


def test_encrypted_round_trips_and_nothing_readable_in_the_bucket(
        pg_cluster, workdir, seaweed, bucket):
    pg, repo = encrypted_cluster(pg_cluster, workdir, seaweed, bucket)
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=watch_arguments, args=(stop, seen), daemon=True)
    watcher.start()
    outputs = []
    try:
        states, stamps = {}, {}
        full = backup(repo, "full")
        states[full] = checksums(pg)
        write_rows(pg, 1, 10, stamps)
        pg.psql("UPDATE items SET note = 'changed ' || note WHERE id % 40 = 0")
        code, out, err = repo.run("backup", "--type", "incr")
        assert code == 0, err
        incr = out["backup"]["id"]
        outputs += [str(out), err]
        states[incr] = checksums(pg)
        write_rows(pg, 11, 20, stamps)
        diff = backup(repo, "diff")
        states[diff] = checksums(pg)
        write_rows(pg, 21, 30, stamps)
        archive_everything(pg)
        states["end"] = checksums(pg)
        code, out, err = repo.run("verify")
        assert code == 0, err
        outputs += [str(out), err]
        code, out, err = repo.run("check")
        assert code == 0 and "encrypted (recipients passphrase-" in str(out), (out, err)
        outputs += [str(out), err]
    finally:
        stop.set()
        watcher.join()
    assert not seen, seen  # never in a command line, nor in pgdr's environment
    objects = bucket_objects(seaweed, bucket)
    data = [k for k in objects if not k.startswith("main/keys/")]
    assert any("/wal/0000000" in k for k in data) and any("/bundle/" in k for k in data)
    assert all(objects[k].startswith(MAGIC) for k in data), \
        [k for k in data if not objects[k].startswith(MAGIC)]
    for key, body in objects.items():
        assert PASSPHRASE.encode() not in body and MARKER.encode() not in body, key
    pg.stop()
    # by id: the chain of incr and diff decrypts with each backup's own data key
    for backup_id in (full, incr, diff):
        restored = restore_exact(repo, workdir, "id-" + backup_id[-4:], backup_id,
                                 states[backup_id])
        outputs.append(str(restored))
    restore_exact(repo, workdir, "latest", "latest", states["end"])
    rows, out = restore_rows(repo, workdir, "pitr", "--point", "lsn:%s" % stamps[15]["lsn"],
                             "--target-inclusive", "false")
    assert rows == 15
    for text in outputs:
        assert PASSPHRASE not in text
    for path in (workdir / "latest" / "data").glob("*.conf"):
        assert PASSPHRASE not in path.read_text(errors="replace"), path


def other_key(repo, passphrase):
    """The same repository seen by a client with another passphrase (None: no key)."""
    if passphrase is None:
        repo.secrets.pop("encryption_passphrase", None)
    else:
        repo.secrets["encryption_passphrase"] = passphrase
    repo.write()


def test_faults_are_refused_before_anything_is_written(pg_cluster, workdir, seaweed, bucket):
    pg, repo = encrypted_cluster(pg_cluster, workdir, seaweed, bucket)
    full = backup(repo, "full")
    pg.psql("UPDATE items SET note = 'changed ' || note WHERE id % 40 = 0")
    diff = backup(repo, "diff")
    write_rows(pg, 1, 5, {})
    archive_everything(pg)
    expected = checksums(pg)
    before = etags(seaweed, bucket, "main/")
    # a wrong key and no key: backup, check, restore, verify and wal-fetch refuse
    for passphrase, code_name in (("not-the-passphrase", "encryption_key_wrong"),
                                  (None, "encryption_key_missing")):
        other_key(repo, passphrase)
        for verb, args in (("backup", ("--type", "full")), ("check", ()), ("verify", ())):
            code, out, err = repo.run(verb, *args)
            assert code == 2 and out["error"]["code"] == code_name, (verb, code, err)
            assert "nothing" in out["error"]["msg"] and PASSPHRASE not in err
        restore_refused(repo, workdir, "key-%s" % code_name, "latest", 2, (code_name,), ())
        fetched = workdir / "fetched"
        code, out, err = repo.run("wal-fetch", "000000010000000000000002", fetched)
        assert code > 125, (code, err)  # never "not found" (1): PostgreSQL must stop
        assert not fetched.exists()
    other_key(repo, PASSPHRASE)
    assert etags(seaweed, bucket, "main/") == before  # nothing written by any of them
    pg.stop()
    # damaged objects: flipped with the storage checksum kept, and rewritten with a
    # recomputed one (flipped, cut short, swapped with another object)
    damage = Damage(seaweed, bucket)
    pieces = [k for k in damage.keys("main/backup/%s/data/" % full) if ".part0001" in k]
    swap_with = damage.keys("main/backup/%s/bundle/" % full)[-1]
    swapped_bytes = damage.s3.get_object(Bucket=bucket, Key=swap_with)["Body"].read()
    cases = (("flipped", lambda data: data[:-40] + bytes([data[-40] ^ 1]) + data[-39:]),
             ("cut", lambda data: data[:-17]),
             ("swapped", lambda data: swapped_bytes))
    for label, change in cases:
        damage.rewrite(pieces[0], change)
        error = restore_refused(repo, workdir, "damaged-" + label, "latest", 5,
                                ("decrypt_failed",), (pieces[0].split("/", 1)[1],))
        assert "cannot be decrypted" in error["msg"]
        verify_fails(repo, [pieces[0].split("/", 1)[1]])
        damage.undo()
    damage.flip(pieces[0])
    restore_refused(repo, workdir, "damaged-kept", "latest", 5, ("checksum_mismatch",),
                    (pieces[0].split("/", 1)[1],))
    damage.undo()
    # the data key record of the diff deleted: its restore refuses, the full still restores
    record = damage.keys("main/keys/data/backup-%s." % diff)[0]
    saved = damage.s3.get_object(Bucket=bucket, Key=record)
    damage.s3.delete_object(Bucket=bucket, Key=record)
    restore_refused(repo, workdir, "no-data-key", diff, 5,
                    ("data_key_missing", "manifest_damaged"),
                    ("backup-%s" % diff,))
    damage.s3.put_object(Bucket=bucket, Key=record, Body=saved["Body"].read(),
                         Metadata=saved["Metadata"])
    restore_exact(repo, workdir, "after-faults", "latest", expected)


def test_plaintext_and_encrypted_never_mix(pg_cluster, workdir, seaweed, bucket):
    pg, plain = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    backup(plain, "full")
    archive_everything(pg)
    before = etags(seaweed, bucket, "")
    plain.secrets["encryption_passphrase"] = PASSPHRASE  # a key added to a plain cluster
    plain.write()
    for verb, args in (("backup", ("--type", "full")), ("check", ()), ("verify", ())):
        code, out, err = plain.run(verb, *args)
        assert code == 2 and out["error"]["code"] == "repository_not_encrypted", (verb, err)
        assert "never mixes" in out["error"]["msg"]
    restore_refused(plain, workdir, "mixed", "latest", 2, ("repository_not_encrypted",), ())
    assert etags(seaweed, bucket, "") == before


def test_rotation_restores_old_backups_with_only_the_new_key(pg_cluster, workdir, seaweed,
                                                             bucket):
    pg, repo = encrypted_cluster(pg_cluster, workdir, seaweed, bucket)
    backup(repo, "full")
    write_rows(pg, 1, 5, {})
    archive_everything(pg)
    pg.stop()
    expected = checksums_of_stopped(pg)
    data_before = etags(seaweed, bucket, "main/backup/")
    data_before.update(etags(seaweed, bucket, "main/wal/"))
    repo.secrets["new_encryption_passphrase"] = NEW_PASSPHRASE
    repo.write()
    code, out, err = repo.run("key-rotate", "--dry-run")
    assert code == 0 and out["changed"] is False and out["data_keys"] >= 2, err
    code, out, err = repo.run("key-rotate")
    assert code == 0 and len(out["added"]) == 1 and len(out["removed"]) == 1, err
    assert NEW_PASSPHRASE not in err + str(out)
    after = etags(seaweed, bucket, "main/backup/")
    after.update(etags(seaweed, bucket, "main/wal/"))
    assert after == data_before  # no data object rewritten
    del repo.secrets["new_encryption_passphrase"]
    other_key(repo, PASSPHRASE)
    restore_refused(repo, workdir, "old-key", "latest", 2, ("encryption_key_wrong",), ())
    other_key(repo, NEW_PASSPHRASE)
    restore_exact(repo, workdir, "new-key", "latest", expected)
    code, out, err = repo.run("verify")
    assert code == 0, err
    # a drill decrypts too: it restores, checks and records its report, encrypted
    scratch = postgres_dir(workdir / "drill") / "data"
    code, out, err = repo.run("drill", "--target", scratch, "--drill-port", free_port(),
                              "--point", "latest", "--pg-bindir", pg.bindir)
    assert code == 0 and out["success"] is True, err
    reports = bucket_objects(seaweed, bucket, "main/drill/")
    assert reports and all(body.startswith(MAGIC) for body in reports.values()), reports.keys()


def checksums_of_stopped(pg):
    pg.start()
    try:
        return checksums(pg)
    finally:
        pg.stop()
