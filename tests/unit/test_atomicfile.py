"""atomicfile.replace: the one writer of the engine's small files. A reader sees the old
content or the new one; a failed write leaves the old file and no temporary file; a link
planted where the temporary file goes is never followed."""
import os
import stat

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import atomicfile


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_replace_writes_the_whole_file_private_whatever_the_umask(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    before = os.umask(0)
    try:
        atomicfile.replace(str(path), "new \u00e9")
    finally:
        os.umask(before)
    assert path.read_bytes() == "new \u00e9".encode("utf-8")
    assert _mode(path) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text("old")

    def broken_fsync(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomicfile.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomicfile.replace(str(path), b"new")
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_a_link_at_the_temporary_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "report.json"
    tmp = str(path) + ".tmp.1"
    os.symlink(str(victim), tmp)
    with pytest.raises(OSError):
        atomicfile.replace(str(path), b"data", tmp=tmp)
    assert victim.read_text() == "precious"
    assert not path.exists()
    # without a named temporary file the name cannot be foreseen: a guessed link is moot
    os.symlink(str(victim), str(path) + ".tmp")
    atomicfile.replace(str(path), b"data")
    assert victim.read_text() == "precious" and path.read_bytes() == b"data"


def test_mode_none_with_a_named_temporary_file_follows_the_umask(tmp_path):
    path = tmp_path / "segment"
    before = os.umask(0o027)
    try:
        atomicfile.replace(str(path), b"x", mode=None, tmp=str(path) + ".tmp.7")
    finally:
        os.umask(before)
    assert _mode(path) == 0o640
    atomicfile.replace(str(path), b"y", mode=0o644, durable=False)
    assert _mode(path) == 0o644 and path.read_bytes() == b"y"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_owner_is_given_before_the_file_appears(tmp_path):
    path = tmp_path / "pgdr_restore.files"
    atomicfile.replace(str(path), b"{}", owner=(65534, 65534))
    info = os.lstat(path)
    assert (info.st_uid, info.st_gid) == (65534, 65534)


def test_durable_syncs_the_file_and_the_directory_and_a_cache_does_not(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(atomicfile.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    atomicfile.replace(str(tmp_path / "a"), b"1")
    assert len(synced) == 2  # the file, then its directory
    del synced[:]
    atomicfile.replace(str(tmp_path / "b"), b"2", durable=False)
    assert synced == []
