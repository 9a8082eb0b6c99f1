"""The posix repository: atomic writes, if_absent conflicts, listings."""
import hashlib
import os

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    Conflict, IntegrityError, NotFound, RepositoryError)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage import open_storage
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage.base import file_sha256


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    return open_storage(options.resolve({"repo_type": "posix", "repo_path": str(root)},
                                        environ={}))


def test_put_get_head_list_delete(storage):
    storage.check()
    storage.put("main/backup/b1/manifest.json", b"{}")
    storage.put("main/backup/b2/data/base/1/1259.zst", b"abc")
    storage.put("main/files/x", b"12345")
    assert storage.get("main/files/x") == b"12345"
    assert storage.head("main/files/x").size == 5
    assert storage.head("main/files/absent") is None
    assert [i.key for i in storage.list("main/backup/")] == [
        "main/backup/b1/manifest.json", "main/backup/b2/data/base/1/1259.zst"]
    assert storage.list_dirs("main/backup/") == ["b1", "b2"]
    assert storage.list_dirs("other/backup/") == []
    assert storage.stored_sha256("main/files/x") == hashlib.sha256(b"12345").hexdigest()
    storage.delete(["main/files/x", "main/files/never-there"])
    with pytest.raises(NotFound) as info:
        storage.get("main/files/x")
    assert info.value.code == "object_not_found"
    assert not [n for n in os.listdir(storage.root + "/main/files") if n.startswith(".")]


def test_if_absent_never_replaces(storage):
    storage.put("k/obj", b"first", if_absent=True)
    with pytest.raises(Conflict) as info:
        storage.put("k/obj", b"second", if_absent=True)
    assert info.value.code == "object_exists"
    assert storage.get("k/obj") == b"first"
    storage.put("k/obj", b"third")  # a plain put replaces
    assert storage.get("k/obj") == b"third"
    assert [i.key for i in storage.list("k/")] == ["k/obj"]  # no temporary left behind


def test_put_file(storage, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100000))
    storage.put_file("f/src.bin", str(src), if_absent=True)
    assert storage.get("f/src.bin") == src.read_bytes()
    assert storage.stored_sha256("f/src.bin") == file_sha256(str(src))
    # the same bytes again (a retry after an unknown outcome) are a success ...
    storage.put_file("f/src.bin", str(src), if_absent=True)
    other = tmp_path / "other.bin"
    other.write_bytes(b"other")
    with pytest.raises(Conflict):  # ... other bytes never replace them
        storage.put_file("f/src.bin", str(other), if_absent=True)
    assert storage.get("f/src.bin") == src.read_bytes()


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs"])
def test_keys_that_escape_are_refused(storage, key):
    with pytest.raises(RepositoryError) as info:
        storage.put(key, b"x")
    assert info.value.code == "invalid_key"


def test_check_missing_root(tmp_path):
    storage = open_storage(options.resolve(
        {"repo_type": "posix", "repo_path": str(tmp_path / "nope")}, environ={}))
    with pytest.raises(RepositoryError) as info:
        storage.check()
    assert info.value.code == "repository_not_found"


# -- the recorded SHA-256 (issue 11, defect 5) ----------------------------------------
def _sidecar(storage, key):
    directory, name = os.path.split(os.path.join(storage.root, *key.split("/")))
    return os.path.join(directory, "." + name + ".sha256")


def test_d11_5_sidecar_recorded_hidden_and_deleted(storage):
    storage.put("main/wal/0001/seg", b"segment bytes", if_absent=True)
    digest = hashlib.sha256(b"segment bytes").hexdigest()
    with open(_sidecar(storage, "main/wal/0001/seg")) as handle:
        assert handle.read().strip() == digest
    assert storage.head("main/wal/0001/seg").sha256 == digest
    assert [i.key for i in storage.list("main/")] == ["main/wal/0001/seg"]
    assert storage.list_dirs("main/wal/") == ["0001"]
    assert storage.get("main/wal/0001/seg", sha256=digest) == b"segment bytes"
    storage.delete(["main/wal/0001/seg"])
    assert os.listdir(os.path.join(storage.root, "main", "wal", "0001")) == []


def test_d11_5_flipped_byte_refused_after_two_reads(storage):
    events = []
    storage.events = events.append
    storage.put("b/bundle", b"A" * 1000)
    path = os.path.join(storage.root, "b", "bundle")
    with open(path, "r+b") as handle:
        handle.seek(500)
        handle.write(b"B")
    with pytest.raises(IntegrityError) as info:
        storage.get("b/bundle")
    error = info.value
    assert error.code == "checksum_mismatch" and error.details["key"] == "b/bundle"
    assert "b/bundle" in error.msg and "1000 bytes" in error.msg and "expected" in error.msg
    assert len(events) == 1 and "reading it again" in events[0]
    # an expected digest given by the caller wins over the recorded one
    with pytest.raises(IntegrityError):
        storage.get("b/bundle", sha256=hashlib.sha256(b"A" * 1000).hexdigest())
    forged = open(path, "rb").read()
    assert storage.get("b/bundle", sha256=hashlib.sha256(forged).hexdigest()) == forged


def test_d11_5_object_without_checksum_refused(storage):
    storage.put("m/manifest.json", b"{}")
    with open(os.path.join(storage.root, "m", "by-hand.json"), "wb") as handle:
        handle.write(b"{}")  # replaced or placed by hand: no recorded digest
    with pytest.raises(IntegrityError) as info:
        storage.get("m/by-hand.json")
    assert info.value.code == "checksum_missing" and "m/by-hand.json" in info.value.msg
    assert storage.head("m/by-hand.json").sha256 is None
    # with an expected digest it can be read; stored_sha256 still compares it
    assert storage.get("m/by-hand.json", sha256=hashlib.sha256(b"{}").hexdigest()) == b"{}"
    assert storage.stored_sha256("m/by-hand.json") == hashlib.sha256(b"{}").hexdigest()
    os.unlink(_sidecar(storage, "m/manifest.json"))
    with pytest.raises(IntegrityError) as info:
        storage.get("m/manifest.json")
    assert info.value.code == "checksum_missing"


def test_d11_9_if_absent_retry_of_same_bytes_restores_sidecar(storage):
    """A put whose outcome was unknown (the object linked, the process died before the
    answer) is retried: the same bytes are a success and their digest is recorded."""
    storage.put("w/seg", b"wal", if_absent=True)
    os.unlink(_sidecar(storage, "w/seg"))  # as if killed between link and sidecar
    storage.put("w/seg", b"wal", if_absent=True)
    assert storage.get("w/seg") == b"wal"
    with pytest.raises(Conflict):
        storage.put("w/seg", b"other", if_absent=True)
    assert storage.get("w/seg") == b"wal"  # the loser did not touch the sidecar


def test_d11_9_if_absent_race_loser_gives_back_the_winners_digest(storage, monkeypatch):
    """Two writers race for the same key: the loser wrote its sidecar before its link
    failed; it is a Conflict and the winner's object still verifies."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage import posix
    real_link = os.link

    def winner_first(src, dst):
        with open(dst + ".win", "wb") as handle:
            handle.write(b"winner")
        os.rename(dst + ".win", dst)  # the winner's object lands first
        return real_link(src, dst)
    monkeypatch.setattr(posix.os, "link", winner_first)
    with pytest.raises(Conflict):
        storage.put("lease", b"loser", if_absent=True)
    monkeypatch.setattr(posix.os, "link", real_link)
    assert storage.get("lease") == b"winner"
    assert [i.key for i in storage.list("")] == ["lease"]


def test_put_file_changed_while_written_is_refused(storage, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"now")
    with pytest.raises(IntegrityError) as info:
        storage.put_file("f/x", str(src), sha256=hashlib.sha256(b"before").hexdigest())
    assert info.value.code == "src_changed"
    assert storage.head("f/x") is None


def test_put_says_whether_it_wrote(storage):
    assert storage.put("k/a", b"x", if_absent=True) is True
    assert storage.put("k/a", b"x", if_absent=True) is False  # already there, same bytes
    assert storage.put("k/a", b"y") is True
