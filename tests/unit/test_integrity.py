"""Issue 11 defect 5: every manifest and archived WAL object is checked before use.

A manifest carries manifest_sha256 over its canonical JSON and its stored bytes' digest
sits in manifest.sha256; a damaged one is named (never treated as an incomplete
backup), and verify checks the WAL archive: checksums, history files, continuity."""
import hashlib
import json
import struct

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import archive, catalog
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import verify
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    Conflict, IntegrityError, NotFound)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage.base import (
    ObjectInfo, Storage)

SIZE = 1024 * 1024  # a small wal_segment_size keeps the fake segments cheap
SYSID = 7000000000000000001


class MemoryStorage(Storage):
    """Objects with the SHA-256 recorded at upload, like S3's x-amz-meta-sha256."""

    def __init__(self):
        self.objects = {}

    def describe(self):
        return "memory"

    def check(self):
        pass

    def put(self, key, data, sha256=None, if_absent=False):
        if if_absent and key in self.objects:
            raise Conflict("exists", code="object_exists")
        self.objects[key] = (data, sha256 or hashlib.sha256(data).hexdigest())

    def get(self, key):
        if key not in self.objects:
            raise NotFound("no %s" % key, code="object_not_found")
        return self.objects[key][0]

    def head(self, key):
        if key not in self.objects:
            return None
        data, sha = self.objects[key]
        return ObjectInfo(key, len(data), sha)

    def list(self, prefix):
        return [ObjectInfo(k, len(v[0])) for k, v in sorted(self.objects.items())
                if k.startswith(prefix)]

    def list_dirs(self, prefix):
        return sorted(set(k[len(prefix):].split("/", 1)[0] for k in self.objects
                          if k.startswith(prefix) and "/" in k[len(prefix):]))

    def rewrite(self, key, data):
        """What an attacker or a broken sync does: new bytes WITH a recomputed checksum."""
        self.objects[key] = (data, hashlib.sha256(data).hexdigest())


def add_backup(storage, backup_id, stop_time, chain=None, timeline=1, stop_lsn="0/300100"):
    prefix = catalog.backup_prefix("main", backup_id)
    listing = catalog.encode_file_list({"files": [], "bundles": [], "wal": []})
    storage.put(prefix + catalog.FILE_LIST, listing)
    manifest = {"format": catalog.FORMAT, "id": backup_id, "cluster": "main",
                "type": backup_id.rsplit("-", 1)[1], "chain": chain or [backup_id],
                "stop_time": stop_time, "timeline": timeline, "stop_lsn": stop_lsn,
                "system_identifier": SYSID, "settings": {"wal_segment_size": SIZE},
                "file_list_sha256": hashlib.sha256(listing).hexdigest()}
    if chain:
        manifest["chain_manifest_sha256"] = catalog.Catalog(storage, "main").manifest_digests(
            chain[:-1])
    catalog.write_manifest(storage, "main", manifest)
    return manifest


FULL1, FULL2, DIFF2 = "20261124T050000Z-full", "20261124T060000Z-full", "20261124T063000Z-diff"


@pytest.fixture
def repo():
    storage = MemoryStorage()
    add_backup(storage, FULL1, "2026-11-24T05:00:10Z")
    add_backup(storage, FULL2, "2026-11-24T06:00:10Z")
    add_backup(storage, DIFF2, "2026-11-24T06:30:10Z", chain=[FULL2, DIFF2])
    return storage


def manifest_key(backup_id):
    return catalog.backup_prefix("main", backup_id) + catalog.MANIFEST


def edit(storage, backup_id, **changes):
    """Edit fields and rewrite the manifest with a recomputed storage checksum."""
    key = manifest_key(backup_id)
    manifest = json.loads(storage.get(key))
    manifest.update(changes)
    storage.rewrite(key, json.dumps(manifest, indent=1, sort_keys=True).encode())


def test_d11_5_sealed_manifest_reads_back(repo):
    cat = catalog.Catalog(repo, "main")
    complete, incomplete = cat.scan()
    assert [m["id"] for m in complete] == [FULL1, FULL2, DIFF2]
    assert incomplete == [] and cat.damaged == []
    data = repo.get(manifest_key(FULL1))
    line = repo.get(catalog.backup_prefix("main", FULL1) + catalog.MANIFEST_DIGEST)
    assert line.decode() == "%s  manifest.json\n" % hashlib.sha256(data).hexdigest()
    assert json.loads(data)["manifest_sha256"] == catalog.canonical_digest(json.loads(data))


@pytest.mark.parametrize("changes", [{"timeline": 2}, {"stop_lsn": "0/900000"}])
def test_d11_5_edited_manifest_is_damaged_not_incomplete(repo, changes):
    edit(repo, FULL2, **changes)
    cat = catalog.Catalog(repo, "main")
    with pytest.raises(IntegrityError) as info:
        cat.manifest(FULL2)
    assert info.value.code == "manifest_damaged"
    assert FULL2 in info.value.msg and manifest_key(FULL2) in info.value.msg
    complete, incomplete = cat.scan()
    assert [m["id"] for m in complete] == [FULL1]  # the diff needs the damaged full
    assert incomplete == []                         # never "incomplete"
    damaged = dict((d["id"], d) for d in cat.damaged)
    assert sorted(damaged) == [FULL2, DIFF2]
    assert damaged[DIFF2]["code"] == "manifest_damaged" and FULL2 in damaged[DIFF2]["msg"]
    with pytest.raises(IntegrityError) as info:
        cat.check_chain(json.loads(repo.get(manifest_key(DIFF2))))
    assert info.value.code == "manifest_damaged" and FULL2 in info.value.msg
    # 'latest' must not silently mean the older FULL1
    with pytest.raises(IntegrityError) as info:
        cat.resolve("latest")
    assert info.value.code == "manifest_damaged" and DIFF2 in info.value.msg
    assert cat.resolve(FULL1)["id"] == FULL1  # named explicitly, an older one is usable


def test_d11_5_resealed_manifest_fails_against_its_digest_object(repo):
    """Edited AND resealed (manifest_sha256 recomputed): manifest.sha256 catches it."""
    key = manifest_key(FULL1)
    manifest = json.loads(repo.get(key))
    manifest["timeline"] = 2
    repo.rewrite(key, catalog.encode_manifest(manifest))
    with pytest.raises(IntegrityError) as info:
        catalog.Catalog(repo, "main").manifest(FULL1)
    assert info.value.code == "manifest_damaged"
    assert "manifest.sha256" in info.value.msg


def test_d11_5_flipped_byte_and_missing_digest(repo):
    key = manifest_key(FULL1)
    data = bytearray(repo.get(key))
    data[len(data) // 2] ^= 0x01
    repo.rewrite(key, bytes(data))
    with pytest.raises(IntegrityError) as info:
        catalog.Catalog(repo, "main").manifest(FULL1)
    assert info.value.code == "manifest_damaged"
    del repo.objects[catalog.backup_prefix("main", FULL2) + catalog.MANIFEST_DIGEST]
    with pytest.raises(IntegrityError) as info:
        catalog.Catalog(repo, "main").manifest(FULL2)
    assert info.value.code == "manifest_damaged" and "digest object is missing" in info.value.msg


def test_d11_5_manifest_of_another_backup_is_damaged(repo):
    """A whole, valid manifest (and its digest) copied under another backup's prefix."""
    for name in (catalog.MANIFEST, catalog.MANIFEST_DIGEST):
        repo.rewrite(catalog.backup_prefix("main", FULL2) + name,
                     repo.get(catalog.backup_prefix("main", FULL1) + name))
    with pytest.raises(IntegrityError) as info:
        catalog.Catalog(repo, "main").manifest(FULL2)
    assert info.value.code == "manifest_damaged" and "describes backup %s" % FULL1 in info.value.msg


def test_d11_5_format_1_manifest_is_refused_by_name(repo):
    key = manifest_key(FULL1)
    old = {"format": 1, "id": FULL1, "cluster": "main", "stop_time": "2026-11-24T05:00:10Z"}
    repo.rewrite(key, json.dumps(old).encode())
    cat = catalog.Catalog(repo, "main")
    with pytest.raises(IntegrityError) as info:
        cat.manifest(FULL1)
    assert info.value.code == "manifest_format" and "format 1" in info.value.msg
    cat.scan()
    assert [d["id"] for d in cat.damaged] == [FULL1]


def test_d11_5_killed_before_manifest_is_incomplete(repo):
    """manifest.sha256 without manifest.json: interrupted, not damaged."""
    del repo.objects[manifest_key(FULL1)]
    cat = catalog.Catalog(repo, "main")
    complete, incomplete = cat.scan()
    assert incomplete == [FULL1] and cat.damaged == []
    with pytest.raises(NotFound):
        cat.manifest(FULL1)


# -- the WAL archive ----------------------------------------------------------------------
def segment(tli, segno, sysid=SYSID):
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, tli, segno * SIZE, 0, sysid, SIZE,
                         8192)
    return header + b"\0" * (SIZE - len(header))


def archive_segment(storage, tli, segno, data=None):
    name = "%08X%08X%08X" % (tli, 0, segno)
    key = archive.wal_key("main", name, "")
    storage.put(key, data if data is not None else segment(tli, segno))
    return key


def history(storage, tli, text):
    key = archive.wal_key("main", "%08X.history" % tli, "")
    storage.put(key, text.encode())
    return key


def wal_check(storage, mode="full", backup=FULL2):
    manifest = catalog.Catalog(storage, "main").manifest(backup)
    problems = dict((name, []) for name, dummy in verify.CLASSES)
    result = verify.WalCheck(storage, "main", manifest, mode, 2, Progress()).run(
        [manifest], problems)
    return result, problems


def test_d11_5_wal_archive_continuous_across_a_timeline_switch(repo):
    for segno in (3, 4, 5):
        archive_segment(repo, 1, segno)
    history(repo, 2, "1\t0/580000\tno recovery target specified\n")
    for segno in (5, 6, 7):
        archive_segment(repo, 2, segno)
    result, problems = wal_check(repo)
    assert not any(problems.values()), problems
    assert result["continuity"] == [{"backup": FULL2, "timeline": 2,
                                     "first": "000000010000000000000004",
                                     "last": "000000020000000000000007", "missing": 0}]
    assert result["segments"] == 6 and result["history_files"] == 1


def test_d11_5_wal_gap_is_named(repo):
    for segno in (4, 5, 7, 8):
        archive_segment(repo, 1, segno)
    result, problems = wal_check(repo, mode="list")
    assert len(problems["gaps"]) == 1
    assert "000000010000000000000006" in problems["gaps"][0]
    assert "000000010000000000000008" in problems["gaps"][0]


@pytest.mark.parametrize("damage", ["flip", "foreign", "wrong_name", "no_checksum"])
def test_d11_5_damaged_archived_segment_is_named(repo, damage):
    archive_segment(repo, 1, 4)
    key = archive_segment(repo, 1, 5)
    data = bytearray(repo.get(key))
    if damage == "flip":
        data[5000] ^= 0x40
        repo.objects[key] = (bytes(data), repo.objects[key][1])  # recorded sha kept
    elif damage == "foreign":
        repo.rewrite(key, segment(1, 5, sysid=SYSID + 1))
    elif damage == "wrong_name":
        repo.rewrite(key, segment(1, 4))
    else:
        repo.objects[key] = (bytes(data), None)
    result, problems = wal_check(repo)
    assert len(problems["wal"]) == 1 and key in problems["wal"][0], problems
    assert not problems["gaps"]


@pytest.mark.parametrize("text, why", [
    ("garbage\n", "cannot be parsed"),
    ("3\t0/580000\treason\n", "not increasing and below 2"),
])
def test_d11_5_bad_history_file_is_named(repo, text, why):
    archive_segment(repo, 1, 4)
    history(repo, 2, text)
    archive_segment(repo, 2, 5)
    result, problems = wal_check(repo)
    assert any(why in p for p in problems["history"]), problems
    assert any("timeline 2 are archived" in p for p in problems["history"]), problems


def test_d11_5_history_disagreeing_with_its_parent(repo):
    history(repo, 2, "1\t0/580000\tx\n")
    history(repo, 3, "1\t0/590000\tx\n2\t0/700000\tx\n")
    result, problems = wal_check(repo)
    assert any("does not agree" in p for p in problems["history"]), problems


def test_d11_5_history_switch_point_edited(repo):
    """A switch LSN moved later (rewritten with a recomputed checksum): timeline 2's
    segments sit before its claimed start, and timeline 1 has a gap up to it."""
    for segno in (4, 5):
        archive_segment(repo, 1, segno)
    for segno in (5, 6, 7):
        archive_segment(repo, 2, segno)
    history(repo, 2, "1\t0/900000\tedited\n")
    result, problems = wal_check(repo)
    assert any("segment 000000020000000000000005 is archived before" in p
               for p in problems["history"]), problems


def test_d11_5_replaced_full_is_caught_by_the_diff_built_on_it(repo):
    """The full's manifest edited, resealed and its digest object rewritten to match:
    consistent by itself, but not the manifest the diff was built on."""
    prefix = catalog.backup_prefix("main", FULL2)
    manifest = json.loads(repo.get(prefix + catalog.MANIFEST))
    manifest["stop_lsn"] = "0/200000"
    data = catalog.encode_manifest(manifest)
    repo.rewrite(prefix + catalog.MANIFEST, data)
    repo.rewrite(prefix + catalog.MANIFEST_DIGEST, catalog.digest_line(data))
    cat = catalog.Catalog(repo, "main")
    assert cat.manifest(FULL2)["stop_lsn"] == "0/200000"  # undetectable alone
    with pytest.raises(IntegrityError) as info:
        cat.check_chain(cat.manifest(DIFF2))
    assert info.value.code == "manifest_damaged"
    assert "not the one it was built on" in info.value.msg and FULL2 in info.value.msg
    complete, incomplete = cat.scan()
    assert [m["id"] for m in complete] == [FULL1, FULL2]
    assert [d["id"] for d in cat.damaged] == [DIFF2]
