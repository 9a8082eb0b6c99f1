"""A restore's record of the files it wrote (filestamps.py): a delta trusts a recorded
digest only while nothing at all changed the file, whatever the change."""
import json
import os
import time

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import filestamps

NAME = "pgdr_restore.files"
ONE = {filestamps.range_key(0, 5): "digest-of-hello"}


def test_the_recording_waits_out_the_last_writes_step(tmp_path):
    (tmp_path / "a").write_bytes(b"hello")
    assert filestamps.record(str(tmp_path), NAME, {"a": dict(ONE)}) == 1


@pytest.fixture
def later(monkeypatch):
    """The record taken a second after the files were written: every one is settled."""
    now = time.time_ns() + 10 ** 9
    monkeypatch.setattr(filestamps.time, "time_ns", lambda: now)


def ranges(tmp_path):
    return dict((rel, known) for rel, (dummy, known) in
                filestamps.trusted(str(tmp_path), NAME).items())


def recorded(tmp_path, names=("a",)):
    for name in names:
        (tmp_path / name).write_bytes(b"hello")
    return filestamps.record(str(tmp_path), NAME, dict((n, dict(ONE)) for n in names))


def test_an_unchanged_file_is_trusted_with_its_digests(tmp_path, later):
    assert recorded(tmp_path, ("a", "b")) == 2
    assert ranges(tmp_path) == {"a": ONE, "b": ONE}
    assert (tmp_path / NAME).stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / (NAME + ".tmp")).exists()


def _rewrite_same_times(path):
    info = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"jello")  # same size
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_mtime_ns == info.st_mtime_ns


def _replace(path):
    path.with_name("new").write_bytes(b"hello")
    os.rename(path.with_name("new"), path)


@pytest.mark.parametrize("change", [
    _rewrite_same_times,
    lambda path: os.chmod(path, 0o640),
    lambda path: os.truncate(path, 5),  # same size: the kernel stamps it all the same
    lambda path: path.write_bytes(b"hello"),  # the same bytes written again
    _replace,  # a new inode
    lambda path: path.unlink(),
    lambda path: (path.unlink(), os.symlink("/etc/hostname", path)),
], ids=["bytes-with-times-put-back", "chmod", "truncate", "same-bytes", "replaced",
        "removed", "symlink"])
def test_any_change_after_the_record_voids_the_trust(tmp_path, later, change):
    recorded(tmp_path, ("a", "b"))
    assert filestamps.changed_since(str(tmp_path), NAME) == 0
    time.sleep(0.02)  # past the kernel's timestamp step
    change(tmp_path / "a")
    assert ranges(tmp_path) == {"b": ONE}
    assert filestamps.changed_since(str(tmp_path), NAME) == 1


def test_a_file_changed_within_the_clock_step_is_not_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(filestamps.time, "sleep", lambda seconds: None)
    (tmp_path / "a").write_bytes(b"hello")
    assert filestamps.record(str(tmp_path), NAME, {"a": dict(ONE)}) == 0
    assert filestamps.trusted(str(tmp_path), NAME) == {}


class Stat(object):
    def __init__(self, ctime_ns):
        self.st_ctime_ns = ctime_ns


def test_whole_second_timestamps_need_two_seconds():
    now = 1000 * 10 ** 9
    assert filestamps._settled(Stat(now - 10 ** 9 + 1), now)  # fine clock: 50 ms
    assert not filestamps._settled(Stat(now - 10 ** 9), now)  # whole seconds: 2 s
    assert filestamps._settled(Stat(now - 3 * 10 ** 9), now)
    assert not filestamps._settled(Stat(now - 10 ** 7), now)


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"version": 2, "files": {}}',
                                     b'{"version": 1, "files": {"a": 7}}',
                                     b'{"version": 1, "files": {"a": {"stamp": 1}}}'])
def test_a_record_that_does_not_parse_trusts_nothing(tmp_path, content):
    (tmp_path / "a").write_bytes(b"hello")
    (tmp_path / NAME).write_bytes(content)
    assert filestamps.trusted(str(tmp_path), NAME) == {}


def test_no_record_trusts_nothing_and_sees_no_change(tmp_path):
    assert filestamps.trusted(str(tmp_path), NAME) == {}
    assert filestamps.changed_since(str(tmp_path), NAME) == 0


def test_a_record_names_only_what_it_knows(tmp_path, later):
    (tmp_path / "a").write_bytes(b"hello")
    assert filestamps.record(str(tmp_path), NAME, {"a": {}, "gone": dict(ONE)}) == 0
    assert json.loads((tmp_path / NAME).read_text()) == {"version": 1, "files": {}}


def test_a_vouched_digest_holds_only_for_the_very_file_checked(tmp_path, later):
    """A delta may relink a tablespace after reading the record: the same path then names
    another file, which the record does not vouch for."""
    recorded(tmp_path, ("a", "b"))
    known = filestamps.trusted(str(tmp_path), NAME)
    root = str(tmp_path)
    assert filestamps.vouched(known, root, "a", 0, 5) == "digest-of-hello"
    assert filestamps.vouched(known, root, "a", 0, 4) is None  # a range it does not know
    assert filestamps.vouched(known, root, "c", 0, 5) is None
    os.chmod(tmp_path / "a", 0o600)  # the caller's own change: the same file still
    assert filestamps.vouched(known, root, "a", 0, 5) == "digest-of-hello"
    _replace(tmp_path / "b")
    assert filestamps.vouched(known, root, "b", 0, 5) is None
