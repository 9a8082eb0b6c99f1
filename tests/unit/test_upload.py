"""The upload verb against a posix repository: verified, idempotent, refusing."""
import os

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import upload
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    ConfigError, Conflict, IntegrityError, NotFound)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage.posix import (
    PosixStorage)


@pytest.fixture
def env(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.conf").write_text("a = 1\n")
    (src / "sub" / "b.sql").write_bytes(os.urandom(50000))
    os.symlink("nowhere", str(src / "broken-link"))

    def run(dry_run=False, **explicit):
        values = {"repo_type": "posix", "repo_path": str(repo), "src": str(src),
                  "dest": "main/files"}
        values.update(explicit)
        return upload.run(options.resolve(values, environ={}), Progress(), dry_run)

    run.repo, run.src = repo, src
    return run


def listing(repo):
    return sorted(os.path.relpath(os.path.join(entry[0], f), str(repo))
                  for entry in os.walk(str(repo)) for f in entry[2])


def test_directory_upload_is_idempotent(env):
    planned = env(dry_run=True)
    assert planned["changed"] is True
    assert planned["uploaded"] == ["main/files/a.conf", "main/files/sub/b.sql"]
    assert listing(env.repo) == []  # check mode writes nothing
    first = env()
    assert first["changed"] is True and first["uploaded"] == planned["uploaded"]
    assert [o["action"] for o in first["objects"]] == ["create", "create"]
    assert (env.repo / "main/files/sub/b.sql").read_bytes() == \
        (env.src / "sub" / "b.sql").read_bytes()
    second = env()
    assert second["changed"] is False and second["uploaded"] == []
    assert second["unchanged"] == planned["uploaded"]
    assert env(dry_run=True)["changed"] is False


def test_different_content_never_by_default(env):
    env()
    (env.src / "a.conf").write_text("a = 2\n")
    (env.src / "new.txt").write_text("new\n")
    with pytest.raises(Conflict) as info:
        env()
    assert info.value.code == "object_differs"
    assert info.value.details["keys"] == ["main/files/a.conf"]
    assert "overwrite=different" in info.value.msg
    # nothing was written: neither the conflicting object nor the new one
    assert (env.repo / "main/files/a.conf").read_text() == "a = 1\n"
    assert not (env.repo / "main/files/new.txt").exists()
    with pytest.raises(Conflict):
        env(dry_run=True)  # check mode fails the same way
    planned = env(dry_run=True, overwrite="different")
    assert planned["uploaded"] == ["main/files/a.conf", "main/files/new.txt"]
    result = env(overwrite="different")
    assert dict((o["key"], o["action"]) for o in result["objects"]) == {
        "main/files/a.conf": "replace", "main/files/new.txt": "create",
        "main/files/sub/b.sql": "unchanged"}
    assert (env.repo / "main/files/a.conf").read_text() == "a = 2\n"


def test_single_file_and_trailing_slash(env):
    src = str(env.src / "a.conf")
    assert env(src=src, dest="docs/")["uploaded"] == ["docs/a.conf"]
    assert env(src=src, dest="docs/renamed.conf")["uploaded"] == ["docs/renamed.conf"]
    assert env(src=src, dest="docs/")["changed"] is False


@pytest.mark.parametrize("dest,code", [
    ("../outside", "dest_invalid"), ("a/../../b", "dest_invalid"), ("/abs/key", "dest_invalid"),
    ("a//b", "dest_invalid"), ("./a", "dest_invalid"), ("", "config_missing"),
    ("main/backup", "dest_reserved"), ("main/backup/20261124T060000Z-full", "dest_reserved"),
    ("other/wal/", "dest_reserved"),
])
def test_refused_keys(env, dest, code):
    with pytest.raises(ConfigError) as info:
        env(dest=dest)
    assert info.value.code == code
    assert listing(env.repo) == []


def test_reserved_key_inside_a_directory(env):
    (env.src / "backup").mkdir()
    (env.src / "backup" / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        env(dest="main")  # main/backup/manifest.json would fake a backup
    assert info.value.code == "dest_reserved"
    assert listing(env.repo) == []


def test_missing_and_empty_sources(env, tmp_path):
    with pytest.raises(NotFound) as info:
        env(src=str(tmp_path / "absent"))
    assert info.value.code == "src_not_found"
    (tmp_path / "empty").mkdir()
    result = env(src=str(tmp_path / "empty"))
    assert result["changed"] is False and result["objects"] == []


def test_verification_catches_a_bad_store(env, monkeypatch):
    real_put = PosixStorage.put_file

    def damaging_put(self, key, path, sha256=None, if_absent=False):
        real_put(self, key, path, sha256, if_absent)
        with open(os.path.join(self.root, key), "ab") as handle:
            handle.write(b"!")

    monkeypatch.setattr(PosixStorage, "put_file", damaging_put)
    with pytest.raises(IntegrityError) as info:
        env()
    assert info.value.code == "upload_verify_failed"
