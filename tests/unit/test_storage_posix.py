"""The posix repository: atomic writes, if_absent conflicts, listings."""
import hashlib
import os

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    Conflict, NotFound, RepositoryError)
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
