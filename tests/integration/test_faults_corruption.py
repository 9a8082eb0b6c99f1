"""Corruption of every kind of stored object (issue 11, defect 5 and the fault suite).

Each object is damaged in SeaweedFS through boto3 - a flipped byte with the checksum
recorded at upload kept (what a disk or a sync does), or an edit rewritten WITH a
recomputed checksum (so only pgdr's own checks can catch it) - and then restore (latest
and by id), verify and info run. The invariant: either the command fails with a clear
error naming the damaged object (exit code and error code asserted) and the restore
target is left empty, or it succeeds and the restored data is exactly right."""
import hashlib
import json

import pytest

from tests.integration.pgdr_run import (archive_everything, archiving_cluster,
                                        assert_exact_copy, checksums,
                                        promoted_copy, restore_args, wait_until_promoted,
                                        write_rows)

SMALL = dict(chunk_size=1, bundle_limit=64)  # pieces, bundles and deltas even here


# -- damage ---------------------------------------------------------------------------
class Damage:
    """Damage objects in the bucket and put every one back afterwards."""

    def __init__(self, seaweed, bucket):
        self.s3 = seaweed.client()
        self.bucket = bucket
        self.saved = []

    def _read(self, key):
        obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        data, meta = obj["Body"].read(), obj.get("Metadata", {})
        self.saved.append((key, data, meta))
        return data, meta

    def flip(self, key, offset=None):
        """One flipped bit; the SHA-256 recorded at upload stays (it no longer matches)."""
        data, meta = self._read(key)
        data = bytearray(data)
        data[len(data) // 2 if offset is None else offset] ^= 0x02
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(data), Metadata=meta)

    def rewrite(self, key, change):
        """New bytes with a recomputed checksum: the storage layer cannot tell."""
        data, dummy = self._read(key)
        new = change(data)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=new,
                           Metadata={"sha256": hashlib.sha256(new).hexdigest()})

    def undo(self):
        for key, data, meta in reversed(self.saved):
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=meta)
        self.saved = []

    def keys(self, prefix):
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                  Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def edit_json(**changes):
    def change(data):
        manifest = json.loads(data)
        manifest.update(changes)
        return json.dumps(manifest, indent=1, sort_keys=True).encode()
    return change


# -- operations and the invariant ------------------------------------------------------
def backup(repo, kind):
    code, out, err = repo.run("backup", "--type", kind)
    assert code == 0, err
    return out["backup"]["id"]


def target_empty(target):
    return not target.exists() or not any(target.iterdir())


def restore_refused(repo, workdir, label, point, exit_code, codes, names):
    """The restore fails with exit_code, an error code in codes, a message naming every
    one of names, and leaves nothing in its target."""
    target = workdir / label / "data"
    dummy, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--point", point, *args)
    assert code == exit_code, (code, err)
    assert out["error"]["code"] in codes, out["error"]
    for name in names:
        assert name in out["error"]["msg"], (name, out["error"]["msg"])
    last = err.strip().splitlines()[-1]  # one readable line naming the cause
    assert last.startswith("pgdr restore: error [%s]" % out["error"]["code"]), err
    assert target_empty(target), list(target.iterdir())
    return out["error"]


def restore_exact(repo, workdir, label, point, expected):
    """The restore succeeds and PostgreSQL comes up with exactly the expected data."""
    target = workdir / label / "data"
    restored, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--point", point, *args)
    assert code == 0, err
    assert_exact_copy(restored, expected, "restore of %s" % point)
    return out


def restore_never_wrong(repo, workdir, label, point, expected, damaged_name):
    """For damage only recovery reads (archived WAL, history): the restore refuses, or
    PostgreSQL fails to recover naming the damage, or it comes up with exactly the
    expected data. It never comes up with other data. Returns the outcome."""
    target = workdir / label / "data"
    restored, args = restore_args(15, target)
    code, out, err = repo.run("restore", "--target", target, "--point", point, *args)
    if code != 0:  # damaged (5), or the gap the damage leaves in the archive (7)
        assert code in (5, 7) and out["error"]["code"] != "internal", err
        assert damaged_name in out["error"]["msg"] or "missing" in out["error"]["msg"], err
        assert target_empty(target)
        return "refused"
    try:
        try:
            restored.start()
            wait_until_promoted(restored)
        except (RuntimeError, AssertionError):
            log = restored.log.read_text(errors="replace")
            assert damaged_name in log and "error [" in log, log[-3000:]
            return "recovery failed naming %s" % damaged_name
        assert checksums(restored) == expected, "restore of %s has other data" % point
        return "exact"
    finally:
        restored.stop()


def verify_fails(repo, names, *args):
    code, out, err = repo.run("verify", *args)
    assert code == 5, (code, err)
    for name in names:
        assert name in out["error"]["msg"], (name, out["error"]["msg"])
    return out["error"]


# -- scenarios ---------------------------------------------------------------------------
def chain(pg_cluster, workdir, seaweed, bucket, compression="zstd"):
    """full1, full2 and a diff of full2, WAL archived past the diff; the data of each
    backup's moment and of the end of the archive."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket,
                                 compression=compression, **SMALL)
    pg.psql("CREATE TABLE items AS SELECT g AS id, repeat(md5(g::text), 4) AS note "
            "FROM generate_series(1, 40000) g")
    states = {}
    full1 = backup(repo, "full")
    pg.psql("INSERT INTO items SELECT g, 'second' FROM generate_series(40001, 41000) g")
    full2 = backup(repo, "full")
    states[full2] = checksums(pg)
    pg.psql("UPDATE items SET note = 'changed ' || note WHERE id % 50 = 0")
    diff = backup(repo, "diff")
    states[diff] = checksums(pg)
    write_rows(pg, 1, 20, {})
    archive_everything(pg)
    states["end"] = checksums(pg)
    return pg, repo, (full1, full2, diff), states


def test_d11_5_corrupt_manifests(pg_cluster, workdir, seaweed, bucket):
    pg, repo, (full1, full2, diff), states = chain(pg_cluster, workdir, seaweed, bucket)
    pg.stop()
    damage = Damage(seaweed, bucket)
    key = "main/backup/%s/manifest.json"

    # 1. full2's timeline edited, rewritten with a recomputed storage checksum
    damage.rewrite(key % full2, edit_json(timeline=2))
    for point in (full2, diff):  # the damaged backup and the diff built on it
        error = restore_refused(repo, workdir, "m1-" + point[-4:], point, 5,
                                ("manifest_damaged",), (full2, key % full2))
    assert "needs backup %s" % full2 in error["msg"]
    # latest: the newest usable backup (full1) and the WAL to the end: exact data
    out = restore_exact(repo, workdir, "m1-latest", "latest", states["end"])
    assert out["plan"]["backup_id"] == full1
    code, info, err = repo.run("info")
    assert code == 0, err
    damaged = dict((d["id"], d) for d in info["damaged"])
    assert sorted(damaged) == sorted([full2, diff]) and damaged[full2]["key"] == key % full2
    assert damaged[full2]["code"] == "manifest_damaged"
    assert [b["id"] for b in info["backups"]] == [full1] and info["incomplete"] == []
    code, out, err = repo.run("verify")  # latest would silently be full1: refused
    assert code == 5 and out["error"]["code"] == "manifest_damaged", err
    verify_fails(repo, [full2, key % full2], "--backup-id", full1)
    damage.undo()

    # 2. one flipped bit in the diff's manifest (storage checksum kept)
    damage.flip(key % diff)
    restore_refused(repo, workdir, "m2", diff, 5, ("manifest_damaged",), (diff, key % diff))
    code, out, err = repo.run("verify", "--backup-id", diff)
    assert code == 5 and out["error"]["code"] == "manifest_damaged" and diff in err
    code, info, err = repo.run("info")
    assert code == 0 and [d["id"] for d in info["damaged"]] == [diff], err
    damage.undo()

    # 3. the diff's stop_lsn edited, recomputed checksum
    damage.rewrite(key % diff, edit_json(stop_lsn="0/1000000"))
    restore_refused(repo, workdir, "m3", diff, 5, ("manifest_damaged",), (key % diff,))
    damage.undo()

    # 4. the digest object edited: the manifest no longer matches it
    damage.rewrite("main/backup/%s/manifest.sha256" % diff, lambda data: b"0" * 64 + data[64:])
    restore_refused(repo, workdir, "m4", diff, 5, ("manifest_damaged",),
                    ("main/backup/%s/manifest.sha256" % diff,))
    damage.undo()

    # all put back: everything verifies and the diff restores exactly
    code, out, err = repo.run("verify")
    assert code == 0 and out["backup_id"] == diff and out["wal"]["continuity"], err
    restore_exact(repo, workdir, "m-after", diff, states[diff])


def test_d11_5_corrupt_backup_objects(pg_cluster, workdir, seaweed, bucket):
    pg, repo, (full1, full2, diff), states = chain(pg_cluster, workdir, seaweed, bucket)
    pg.stop()
    damage = Damage(seaweed, bucket)
    prefix = "main/backup/%s/"
    cases = {
        "file list": prefix % diff + "files.json.gz",
        "bundle": [k for k in damage.keys(prefix % diff + "bundle/")
                   if not k.endswith("/000000.zst")][0],
        "piece": [k for k in damage.keys(prefix % full2 + "data/") if ".part0001" in k][0],
        "delta part": damage.keys(prefix % diff + "delta/")[0],
        "backup WAL": [k for k in damage.keys(prefix % diff + "wal/") if "history" not in k][0],
    }
    outcomes = {}
    for kind, key in sorted(cases.items()):
        damage.flip(key)
        name = key.split("/", 1)[1]
        for point in (diff, "latest"):  # latest is the diff: it needs every one of them
            error = restore_refused(repo, workdir, "%s-%s" % (kind.replace(" ", ""), point[-4:]),
                                    point, 5, ("checksum_mismatch",), (name,))
            outcomes[(kind, point)] = error["code"]
        verify_fails(repo, [name])
        code, info, err = repo.run("info")  # info reads manifests only
        assert code == 0 and info["backups"][-1]["id"] == diff and not info["damaged"], err
        damage.undo()
    # a bundle rewritten with a recomputed storage checksum: the file list still knows
    damage.rewrite(cases["bundle"], lambda data: data[:-1] + bytes([data[-1] ^ 1]))
    restore_refused(repo, workdir, "bundle-rewritten", diff, 5, ("checksum_mismatch",),
                    (cases["bundle"].split("/", 1)[1],))
    # ...and a restore that does not need that bundle succeeds with exact data
    restore_exact(repo, workdir, "full2-intact", full2, states[full2])
    damage.undo()


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_d11_5_corrupt_archived_wal(pg_cluster, workdir, seaweed, bucket, compression):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket, compression=compression)
    full = backup(repo, "full")
    at_full = checksums(pg)
    segment = pg.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    write_rows(pg, 1, 40, {})
    archive_everything(pg)
    pg.psql("CREATE TABLE later AS SELECT 1 AS x")  # WAL archived after that segment
    archive_everything(pg)
    expected = checksums(pg)
    pg.stop()
    key = "main/wal/%s/%s%s" % (segment[:16], segment, ".zst" if compression == "zstd" else "")
    damage = Damage(seaweed, bucket)
    # in a record near the start of the segment: replay would stop there, rows lost
    damage.flip(key, offset=None if compression == "zstd" else 200)
    error = verify_fails(repo, [key.split("/", 1)[1], "archived WAL segments"])
    assert error["problem_counts"]["wal"] == 1 and error["problem_counts"]["objects"] == 0
    code, out, err = repo.run("verify", "--verify-wal", "list")  # the listing is intact
    assert code == 0 and out["wal"]["mode"] == "list", err
    code, info, err = repo.run("info")
    assert code == 0 and info["backups"][-1]["id"] == full, err
    # the backup's own point needs no archived WAL: exact
    restore_exact(repo, workdir, "own-point", full, at_full)
    # latest needs the damaged segment: refused or failed loudly, never other data
    outcome = restore_never_wrong(repo, workdir, "latest", "latest", expected, segment)
    assert outcome != "exact"  # the segment holds every row after the backup
    damage.undo()
    code, out, err = repo.run("verify")
    assert code == 0 and out["wal"]["segments"] >= 1, err
    # a segment gone while later WAL exists: a gap, named, in both modes
    damage.s3.delete_object(Bucket=bucket, Key=key)
    for mode in ("full", "list"):
        error = verify_fails(repo, [segment, "gaps in the WAL archive"], "--verify-wal", mode)
        assert error["problem_counts"]["gaps"] == 1 and error["problem_counts"]["wal"] == 0


HISTORY = "main/wal/history/00000002.history"


@pytest.fixture
def promoted(pg_cluster, workdir, seaweed, bucket):
    """Rows 1-10 on timeline 1, a promoted copy archiving rows 11-20 on timeline 2 into the
    same repository: (repo, the data at the end of timeline 2)."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    backup(repo, "full")
    write_rows(pg, 1, 10, {})
    archive_everything(pg)
    pg.stop()
    copy = promoted_copy(repo, workdir / "new-primary" / "data")
    copy.psql("CHECKPOINT")
    assert copy.psql("SELECT timeline_id FROM pg_control_checkpoint()") == "2"
    write_rows(copy, 11, 20, {})
    archive_everything(copy)
    expected = checksums(copy)
    copy.stop()
    code, out, err = repo.run("verify")
    assert code == 0 and out["wal"]["history_files"] == 1, err
    assert out["wal"]["continuity"][0]["timeline"] == 2
    return repo, expected


def test_d11_5_corrupt_history_file_flipped(promoted, workdir, seaweed, bucket):
    """A flipped bit, storage checksum kept: the parent timeline digit 1 -> 3. Timeline
    2's rows must never be dropped in silence (the restore needs verified reads)."""
    repo, expected = promoted
    damage = Damage(seaweed, bucket)
    damage.flip(HISTORY, offset=0)
    verify_fails(repo, [HISTORY.split("/", 1)[1], "history files"])
    restore_never_wrong(repo, workdir, "h1", "latest", expected, "00000002.history")
    damage.undo()
    restore_exact(repo, workdir, "h-after", "latest", expected)


def test_d11_5_corrupt_history_file_switch_moved(promoted, workdir, seaweed, bucket):
    """The switch point moved later, rewritten with a recomputed checksum: only the
    content can tell (segments of timeline 2 before its start, a gap on timeline 1)."""
    repo, expected = promoted
    damage = Damage(seaweed, bucket)

    def later_switch(data):
        parent, lsn, rest = data.decode().split("\t", 2)
        high, low = lsn.split("/")
        return ("%s\t%s/%X\t%s" % (parent, high, int(low, 16) + 0x5000000, rest)).encode()
    damage.rewrite(HISTORY, later_switch)
    verify_fails(repo, ["00000002.history", "history files"])
    restore_never_wrong(repo, workdir, "h2", "latest", expected, "00000002.history")
