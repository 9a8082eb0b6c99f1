"""Orphans of failed and killed backups (issue 11, defects 9 and 10): what a failed backup
removes, what cleanup and expire remove, and what they never touch."""
import io
import json
import os
import time

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import cli
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import catalog
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.catalog import Catalog
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import (backup,
                                                                                     cleanup,
                                                                                     info)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import RepositoryError
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.lease import READ_ATTEMPTS
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.options import resolve
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage.posix import PosixStorage

OLD = "20260101T000000Z-full"     # killed long ago
NEW = "20260102T000000Z-full"     # complete, started after OLD
NOW_ID = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-full"  # just started


class FaultyStorage(object):
    """A real PosixStorage whose chosen methods raise a transient S3-like error: the next
    ``failing[method]`` calls of that method (on keys containing ``match[method]``)."""

    def __init__(self, inner):
        self.inner = inner
        self.failing, self.match = {}, {}

    def __getattr__(self, name):
        real = getattr(self.inner, name)
        if not callable(real):
            return real

        def call(*args, **kwargs):
            key = str(args[0]) if args else ""
            if self.failing.get(name, 0) > 0 and self.match.get(name, "") in key:
                self.failing[name] -= 1
                raise RepositoryError("S3 %s failed: InternalError" % name, code="s3_error")
            return real(*args, **kwargs)
        return call


@pytest.fixture
def settings(tmp_path):
    return resolve({"repo_type": "posix", "repo_path": str(tmp_path), "cluster": "main"},
                   environ={})


@pytest.fixture
def storage(settings):
    return FaultyStorage(PosixStorage(settings))


def put_backup(storage, backup_id, complete):
    prefix = "main/backup/%s/" % backup_id
    storage.put(prefix + "bundle/000001.zst", b"data")
    storage.put(prefix + "data/base/1/1234.zst", b"data" * 10)
    if complete:
        catalog.write_manifest(storage, "main", {
            "format": catalog.FORMAT, "id": backup_id, "cluster": "main", "type": "full",
            "chain": [backup_id],
            "stop_time": backup_id[:4] + "-01-01T00:00:00Z"})


def keys(storage, backup_id):
    return [i.key for i in storage.list("main/backup/%s/" % backup_id)]


def discarding(storage):
    run = backup.BackupRun.__new__(backup.BackupRun)
    run.storage, run.progress = storage, Progress()
    return run


def test_d11_9_failed_backup_removes_what_it_stored(storage):
    put_backup(storage, OLD, complete=False)
    run = discarding(storage)
    run._discard(OLD, "main/backup/%s/" % OLD, RepositoryError("boom", code="s3_error"))
    assert keys(storage, OLD) == []
    assert any("boom" in e and "removed the 2 object(s)" in e for e in run.progress.events)


def test_d11_9_failed_backup_never_removes_a_complete_one(storage):
    put_backup(storage, OLD, complete=True)
    run = discarding(storage)
    run._discard(OLD, "main/backup/%s/" % OLD, RepositoryError("late", code="s3_error"))
    assert len(keys(storage, OLD)) == 4  # + manifest.sha256
    assert any("complete and kept" in e for e in run.progress.events)


def test_d11_9_what_cannot_be_removed_is_left_for_cleanup(storage):
    put_backup(storage, OLD, complete=False)
    storage.failing["delete"] = 1
    run = discarding(storage)
    run._discard(OLD, "main/backup/%s/" % OLD, RepositoryError("boom", code="s3_error"))
    assert len(keys(storage, OLD)) == 2
    assert any("pgdr cleanup" in e for e in run.progress.events)
    # and a manifest check that fails leaves everything in place too
    storage.failing["head"] = 1
    run._discard(OLD, "main/backup/%s/" % OLD, RepositoryError("boom", code="s3_error"))
    assert len(keys(storage, OLD)) == 2


def test_d11_10_empty_prefixes_are_not_backups(storage, settings):
    put_backup(storage, OLD, complete=False)
    storage.delete(keys(storage, OLD))  # an empty directory stays (as SeaweedFS keeps one)
    assert os.path.isdir(os.path.join(settings.repo_path, "main", "backup", OLD))
    assert Catalog(storage, "main").scan()[1] == [OLD]
    assert info.run(settings.replace(pg_host="/nonexistent"))["incomplete"] == []


def plan(storage, settings, grace=3600):
    complete, incomplete = Catalog(storage, "main").scan()
    return cleanup.plan(storage, settings.replace(incomplete_grace_seconds=grace),
                        complete, incomplete, time.time())


def lease_of(storage, backup_id=None, expires_in=600):
    body = {"holder": "pg9:99", "nonce": "n" * 32, "expires_at": time.time() + expires_in}
    if backup_id:
        body["backup_id"] = backup_id
    storage.put("main/lock/backup.json", json.dumps(body).encode())


def test_d11_10_old_orphans_go_a_fresh_one_waits(storage, settings):
    put_backup(storage, OLD, complete=False)
    put_backup(storage, NEW, complete=True)
    put_backup(storage, NOW_ID, complete=False)
    removable, kept = plan(storage, settings)
    assert sorted(removable) == [OLD]  # older than a complete backup
    assert [k["id"] for k in kept] == [NOW_ID] and "incomplete_grace_seconds" in kept[0]["why"]
    assert sorted(plan(storage, settings, grace=0)[0]) == [OLD, NOW_ID]


def test_d11_10_never_the_backup_a_live_lease_names(storage, settings):
    put_backup(storage, OLD, complete=False)
    put_backup(storage, NOW_ID, complete=False)
    lease_of(storage, NOW_ID)
    removable, kept = plan(storage, settings, grace=0)
    assert sorted(removable) == [OLD]
    assert kept == [{"id": NOW_ID, "why": kept[0]["why"]}] and "pg9:99" in kept[0]["why"]
    lease_of(storage)  # a live lease that names no backup yet: nothing goes
    assert plan(storage, settings, grace=0)[0] == {}
    lease_of(storage, NOW_ID, expires_in=-1)  # expired: its holder is gone
    assert sorted(plan(storage, settings, grace=0)[0]) == [OLD, NOW_ID]


def test_d11_10_unreadable_lease_removes_nothing(storage, settings, monkeypatch):
    monkeypatch.setattr(cleanup, "open_storage", lambda settings: storage)
    real_lease = cleanup.Lease
    monkeypatch.setattr(cleanup, "Lease", lambda *args: real_lease(*args, sleep=lambda s: None))
    put_backup(storage, OLD, complete=False)
    lease_of(storage, NOW_ID)
    storage.failing["get"], storage.match["get"] = READ_ATTEMPTS, "/lock/"
    removable, kept = plan(storage, settings, grace=0)
    assert removable == {} and "cannot be read" in kept[0]["why"]
    storage.failing["get"] = READ_ATTEMPTS
    with pytest.raises(RepositoryError) as raised:
        cleanup.run(settings.replace(incomplete_grace_seconds=0), Progress())
    assert raised.value.code == "lease_unreadable"
    assert len(keys(storage, OLD)) == 2


def test_d11_10_cleanup_dry_run_then_run(storage, settings):
    put_backup(storage, OLD, complete=False)
    put_backup(storage, NEW, complete=True)
    run_settings = settings.replace(incomplete_grace_seconds=0)
    dry = cleanup.run(run_settings, Progress(), dry_run=True)
    assert dry["incomplete_removed"] == [OLD] and dry["objects_removed"] == 2
    assert len(keys(storage, OLD)) == 2
    done = cleanup.run(run_settings, Progress())
    assert done["incomplete_removed"] == [OLD] and keys(storage, OLD) == []
    assert len(keys(storage, NEW)) == 4  # + manifest.sha256
    assert cleanup.run(run_settings, Progress())["changed"] is False


def test_d11_10_cleanup_verb_exit_codes(storage, settings):
    put_backup(storage, OLD, complete=False)
    put_backup(storage, NEW, complete=True)
    argv = ["cleanup", "--repo-type", "posix", "--repo-path", settings.repo_path,
            "--cluster", "main"]
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(argv + ["--dry-run"], out, err, environ={}) == 0
    assert out.getvalue().startswith("incomplete backups removed: %s (2 objects" % OLD)
    assert len(keys(storage, OLD)) == 2
    # a damaged lease rewritten just now: maybe a running backup's; exit 3, nothing removed
    storage.put("main/lock/backup.json", b'{"holder": "pg9:9", "nonce"')
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(argv + ["--json"], out, err, environ={}) == 3
    assert json.loads(out.getvalue())["error"]["code"] == "lease_unreadable"
    assert "error [lease_unreadable]" in err.getvalue() and len(keys(storage, OLD)) == 2


def test_d11_10_expire_keeps_the_wal_a_damaged_backup_may_need(storage, settings):
    """An older backup whose manifest cannot be read (damaged, or of an older format) may
    still be restored by hand with the archived WAL: expire removes no WAL while one is
    listed as damaged, and removes it once the damage is gone."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import expire
    for backup_id, start in ((OLD, "000000010000000000000002"),
                             (NEW, "000000010000000000000005")):
        catalog.write_manifest(storage, "main", {
            "format": catalog.FORMAT, "id": backup_id, "cluster": "main", "type": "full",
            "chain": [backup_id], "timeline": 1, "start_wal": start,
            "stop_time": backup_id[:4] + "-" + backup_id[4:6] + "-" + backup_id[6:8]
            + "T00:00:00Z"})
    for segno in range(2, 7):
        storage.put("main/wal/0000000100000000/00000001000000000000000%d" % segno, b"w")
    manifest = "main/backup/%s/manifest.json" % OLD
    storage.put(manifest, storage.get(manifest).replace(b'"timeline": 1', b'"timeline": 2'))
    policy = settings.replace(retention_full=1)
    events = Progress()
    result = expire.run(policy, events)
    assert result["expired"] == [] and result["wal_removed"] == 0
    assert any("cannot be read" in e and OLD in e for e in events.events)
    assert len(storage.list("main/wal/")) == 5
    storage.delete(keys(storage, OLD))  # the operator removes the damaged backup
    result = expire.run(policy, Progress())
    assert result["wal_removed"] == 3 and len(storage.list("main/wal/")) == 2


# -- snapshots of killed snapshot backups (orphans) ------------------------------------------
SNAP_OLD, SNAP_DONE, SNAP_FOREIGN = ("20260101T000000Z-snapshot", "20260102T000000Z-snapshot",
                                     "20260103T000000Z-snapshot")
SNAP_NOW = NOW_ID.replace("-full", "-snapshot")


class FakeProvider(object):
    """What the btrfs provider finds in snapshot_dir, and what it is asked to delete."""

    name = "btrfs"

    def __init__(self, ids):
        self.ids, self.deleted = ids, []

    def leftovers(self, cluster):
        return dict((i, [{"snapshot": {"id": "%s.%s.pgdata" % (cluster, i)}}]) for i in self.ids)

    def delete(self, volume):
        self.deleted.append(volume["snapshot"]["id"])


def intent(storage, backup_id):
    storage.put("main/snapshot/%s/%s" % (backup_id, catalog.SNAPSHOT_INTENT), b"{}")


@pytest.fixture
def snapshot_dir(settings, monkeypatch, storage):
    """Leftovers of: a killed backup with its intent (OLD), a complete one (DONE), one of
    another repository (FOREIGN: no intent here) and a running one (NOW)."""
    provider = FakeProvider([SNAP_OLD, SNAP_DONE, SNAP_FOREIGN, SNAP_NOW])
    monkeypatch.setattr(cleanup.snapshots, "provider", lambda *args: provider)
    for backup_id in (SNAP_OLD, SNAP_DONE, SNAP_NOW):
        intent(storage, backup_id)
    catalog.write_manifest(storage, "main", {"format": catalog.FORMAT, "id": SNAP_DONE,
                                             "cluster": "main", "type": "snapshot",
                                             "stop_time": "2026-01-02T00:00:00Z"})
    return settings.replace(snapshot_dir="/srv/snaps"), provider


def orphans(storage, settings, grace=3600):
    cat = Catalog(storage, "main")
    cat.snapshots = [{"id": SNAP_DONE}]
    return cleanup.orphans(storage, settings.replace(incomplete_grace_seconds=grace), cat,
                           time.time())


def test_only_this_repositorys_killed_snapshot_backups_leave_orphans(storage, snapshot_dir):
    settings, provider = snapshot_dir
    removable, waiting = orphans(storage, settings)
    assert sorted(removable) == [SNAP_OLD] and waiting == {SNAP_NOW}  # within the grace
    lease_of(storage, SNAP_OLD)  # a live lease names it: it may still be taking them
    removable, waiting = orphans(storage, settings, grace=0)
    assert sorted(removable) == [SNAP_NOW] and waiting == {SNAP_OLD}
    lease_of(storage)  # a live lease that names no backup yet: nothing goes
    assert orphans(storage, settings, grace=0) == ({}, {SNAP_OLD, SNAP_NOW})
    assert orphans(storage, settings.replace(snapshot_dir=None)) == ({}, set())


def test_orphans_go_with_their_snapshots_and_never_once_the_backup_completed(
        storage, snapshot_dir):
    settings, provider = snapshot_dir
    removable, waiting = orphans(storage, settings)
    # completed between the listing and the removal: kept
    catalog.write_manifest(storage, "main", {"format": catalog.FORMAT, "id": SNAP_OLD,
                                             "cluster": "main", "type": "snapshot",
                                             "stop_time": "2026-01-01T00:00:00Z"})
    assert cleanup.remove_orphans(storage, settings, removable, Progress()) == []
    assert provider.deleted == []
    storage.delete(["main/snapshot/%s/%s" % (SNAP_OLD, catalog.MANIFEST)])
    assert cleanup.remove_orphans(storage, settings, removable, Progress()) == []
    assert provider.deleted == ["main.%s.pgdata" % SNAP_OLD]


def test_a_killed_snapshot_backup_of_another_host_keeps_its_objects(storage, settings):
    """cleanup or expire on another node (or without snapshot_dir) never removes the
    objects of a killed btrfs snapshot backup: its intent is how the host that holds the
    snapshots finds them as orphans. One of this host's, without leftovers, may go."""
    for backup_id, host in ((SNAP_OLD, "other-node"), (SNAP_FOREIGN, cleanup.socket.gethostname())):
        storage.put("main/snapshot/%s/%s" % (backup_id, catalog.SNAPSHOT_INTENT), json.dumps(
            {"id": backup_id, "host": host, "provider": "btrfs"}).encode())
    incomplete = [SNAP_OLD, SNAP_FOREIGN, OLD]
    cat = Catalog(storage, "main")
    for snapshot_dir, waiting in ((None, {SNAP_OLD, SNAP_FOREIGN}), ("/srv/none", {SNAP_OLD})):
        found = cleanup.orphans(storage, settings.replace(snapshot_dir=snapshot_dir), cat,
                                time.time(), incomplete)
        assert found == ({}, waiting), snapshot_dir
    assert cleanup.held_for_snapshots({SNAP_OLD: [], OLD: []}, {SNAP_OLD})[0]["id"] == SNAP_OLD


def test_a_killed_ebs_snapshot_backup_waits_for_a_node_with_the_ebs_settings(
        storage, settings, monkeypatch):
    """Its snapshots are found by their tags only through the ebs provider: elsewhere its
    objects stay. With ebs set, a provider that cannot list them holds every killed
    snapshot backup instead of failing cleanup or expire."""
    storage.put("main/snapshot/%s/%s" % (SNAP_OLD, catalog.SNAPSHOT_INTENT), json.dumps(
        {"id": SNAP_OLD, "host": "other-node", "provider": "ebs"}).encode())
    cat = Catalog(storage, "main")
    found = cleanup.orphans(storage, settings, cat, time.time(), [SNAP_OLD, OLD])
    assert found == ({}, {SNAP_OLD})

    class Unreachable(object):
        name = "ebs"

        def leftovers(self, cluster):
            raise cleanup.RepositoryError("cannot list: EC2 unreachable", code="snapshot_failed")
    monkeypatch.setattr(cleanup.snapshots, "provider", lambda s: Unreachable())
    found = cleanup.orphans(storage, settings.replace(snapshot_provider="ebs"), cat,
                            time.time(), [SNAP_OLD, OLD])
    assert found == ({}, {SNAP_OLD})
