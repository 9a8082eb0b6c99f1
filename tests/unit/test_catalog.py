"""Backup ids, the layout, and the catalog read from a posix repository."""
import hashlib
import json
import re

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import catalog, options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    IntegrityError, NotFound)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage import open_storage


def test_backup_ids_are_sortable_and_readable():
    first = catalog.new_backup_id("full", now=1795500000)
    later = catalog.new_backup_id("full", now=1795500001)
    assert re.match(r"^\d{8}T\d{6}Z-full$", first)
    assert first == "20261124T060000Z-full"
    assert sorted([later, first]) == [first, later]
    assert catalog.backup_prefix("main", first) == "main/backup/%s/" % first


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    storage = open_storage(options.resolve({"repo_type": "posix", "repo_path": str(root)},
                                           environ={}))
    return storage, catalog.Catalog(storage, "main")


def add_backup(storage, backup_id, stop_time, files=None, **extra):
    prefix = catalog.backup_prefix("main", backup_id)
    listing = catalog.encode_file_list({"files": files or [], "bundles": [], "wal": []})
    storage.put(prefix + catalog.FILE_LIST, listing)
    manifest = dict({"format": catalog.FORMAT, "id": backup_id, "cluster": "main",
                     "stop_time": stop_time,
                     "file_list_sha256": hashlib.sha256(listing).hexdigest()}, **extra)
    catalog.write_manifest(storage, "main", manifest)
    return manifest


def test_scan_and_resolve(repo):
    storage, cat = repo
    with pytest.raises(NotFound) as info:
        cat.resolve("latest")
    assert info.value.code == "no_backup"
    add_backup(storage, "20261124T050000Z-full", "2026-11-24T05:00:10Z")
    add_backup(storage, "20261124T060000Z-full", "2026-11-24T06:00:10Z",
               files=[{"path": "PG_VERSION"}])
    storage.put("main/backup/20261124T070000Z-full/bundle/000001.zst", b"partial")
    complete, incomplete = cat.scan()
    assert [m["id"] for m in complete] == ["20261124T050000Z-full", "20261124T060000Z-full"]
    assert incomplete == ["20261124T070000Z-full"]
    assert cat.resolve("latest")["id"] == "20261124T060000Z-full"
    assert cat.resolve(None)["id"] == "20261124T060000Z-full"
    assert cat.resolve("20261124T050000Z-full")["id"] == "20261124T050000Z-full"
    assert cat.file_list(cat.resolve("latest"))["files"] == [{"path": "PG_VERSION"}]
    with pytest.raises(NotFound) as info:
        cat.resolve("20261124T070000Z-full")  # incomplete: never restored
    assert info.value.code == "backup_not_found"


def test_damaged_manifest_and_file_list(repo):
    storage, cat = repo
    manifest = add_backup(storage, "20261124T050000Z-full", "2026-11-24T05:00:10Z")
    prefix = catalog.backup_prefix("main", manifest["id"])
    storage.put(prefix + catalog.FILE_LIST, b"tampered")
    with pytest.raises(IntegrityError) as info:
        cat.file_list(manifest)
    assert info.value.code == "checksum_mismatch"
    storage.put(prefix + catalog.MANIFEST, b"{not json")
    with pytest.raises(IntegrityError) as info:
        catalog.Catalog(storage, "main").manifest(manifest["id"])
    assert info.value.code == "manifest_damaged"
    storage.put(prefix + catalog.MANIFEST, json.dumps({"format": 99}).encode())
    with pytest.raises(IntegrityError) as info:
        catalog.Catalog(storage, "main").manifest(manifest["id"])
    assert info.value.code == "manifest_damaged"


def test_snapshot_backups_live_apart_and_are_never_chosen(repo):
    """A snapshot backup has its own folder (an older pgdr never lists it), is listed in
    catalog.snapshots, never among the backups latest or a planner picks from, and a
    damaged one does not stop latest."""
    storage, cat = repo
    full = add_backup(storage, "20261124T060000Z-full", "2026-11-24T06:01:00Z")
    snap = add_backup(storage, "20261124T070000Z-snapshot", "2026-11-24T07:00:05Z")
    assert catalog.is_snapshot(snap["id"]) and not catalog.is_snapshot(full["id"])
    assert catalog.backup_prefix("main", snap["id"]) == "main/snapshot/%s/" % snap["id"]
    assert storage.list("main/snapshot/%s/" % snap["id"])
    assert not storage.list("main/backup/%s/" % snap["id"])
    storage.put("main/snapshot/20261124T080000Z-snapshot/" + catalog.MANIFEST, b"{broken")
    storage.put("main/snapshot/20261124T080000Z-snapshot/" + catalog.MANIFEST_DIGEST,
                b"0" * 64)
    complete, incomplete = cat.scan()
    assert [m["id"] for m in complete] == [full["id"]] and incomplete == []
    assert [m["id"] for m in cat.snapshots] == [snap["id"]]
    assert [d["id"] for d in cat.damaged_snapshots] == ["20261124T080000Z-snapshot"]
    assert cat.damaged == []
    assert cat.resolve("latest")["id"] == full["id"]
    assert cat.manifest(snap["id"])["id"] == snap["id"]  # restored by its id


def pending(storage, backup_id, stop_time):
    return add_backup(storage, backup_id, stop_time, snapshot={
        "provider": "ebs", "off_host": True, "state": "pending", "volumes": []})


def test_a_pending_snapshot_backup_is_offered_only_once_its_state_object_says_complete(repo):
    storage, cat = repo
    first = pending(storage, "20261124T070000Z-snapshot", "2026-11-24T07:00:05Z")
    second = pending(storage, "20261124T080000Z-snapshot", "2026-11-24T08:00:05Z")
    cat.scan()
    assert cat.snapshots == [] and [m["id"] for m in cat.pending_snapshots] == [
        first["id"], second["id"]]
    manifest_bytes = storage.get("main/snapshot/%s/%s" % (first["id"], catalog.MANIFEST))
    cat.settle_snapshot(cat.manifest(first["id"]), "complete")
    # written once: a second run that disagrees takes the first answer
    other = catalog.Catalog(storage, "main")
    other.scan()
    assert [m["id"] for m in other.snapshots] == [first["id"]]
    assert storage.get("main/snapshot/%s/%s" % (first["id"], catalog.MANIFEST)) == manifest_bytes
    late = catalog.Catalog(storage, "main")
    late.scan()
    late.pending_snapshots.append(late.manifest(first["id"]))
    late.settle_snapshot(late.manifest(first["id"]), "failed", "too late")
    assert late.manifest(first["id"])["snapshot"]["state"] == "complete"
    # not recorded (a dry run): only this catalog sees it
    cat.settle_snapshot(cat.manifest(second["id"]), "failed", "error at AWS", write=False)
    assert [m["id"] for m in cat.failed_snapshots] == [second["id"]]
    fresh = catalog.Catalog(storage, "main")
    fresh.scan()
    assert [m["id"] for m in fresh.pending_snapshots] == [second["id"]]


@pytest.mark.parametrize("content, wanted", [
    (b"{broken", "is not valid JSON"),
    (b'{"state": "complete-ish"}', "'complete-ish', not a state of complete or failed"),
    (b'["complete"]', "not a state of complete or failed")])
def test_a_damaged_state_object_makes_its_snapshot_backup_damaged(repo, content, wanted):
    storage, cat = repo
    snap = pending(storage, "20261124T070000Z-snapshot", "2026-11-24T07:00:05Z")
    storage.put("main/snapshot/%s/%s" % (snap["id"], catalog.SNAPSHOT_STATE), content)
    cat.scan()
    assert cat.snapshots == cat.pending_snapshots == cat.failed_snapshots == []
    assert [d["id"] for d in cat.damaged_snapshots] == [snap["id"]]
    assert wanted in cat.damaged_snapshots[0]["msg"]


def test_a_snapshot_manifest_with_an_unknown_state_is_damaged(repo):
    storage, cat = repo
    add_backup(storage, "20261124T070000Z-snapshot", "2026-11-24T07:00:05Z",
               snapshot={"provider": "ebs", "state": "failed", "volumes": []})
    cat.scan()
    assert cat.snapshots == cat.failed_snapshots == []
    assert "'failed' (expected complete or pending)" in cat.damaged_snapshots[0]["msg"]
