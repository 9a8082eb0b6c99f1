"""Delta restore's pure parts (commands/restore.py): which base pieces of a layered file a
delta layer writes into or cuts (those are always rewritten before the layers), and the
byte comparison that decides what a delta keeps."""
import hashlib

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands.restore import (
    DeltaCounts, RestoreRun, same_bytes, touched_pieces)

BLOCK = 8192
CHUNK = 4 * BLOCK


def layered(*layers):
    """A file of 4 pieces of 4 pages each, with the given layers ((file size, runs))."""
    pieces = [{"key": "p%d" % i, "offset": i * CHUNK, "size": CHUNK} for i in range(4)]
    deltas = [{"file_size": size, "parts": [{"block_size": BLOCK, "blocks": runs}]}
              for size, runs in layers]
    return {"pieces": pieces, "deltas": deltas}


def keys(item):
    return [piece["key"] for piece in touched_pieces(item)]


def test_only_the_pieces_a_layer_writes_into_are_touched():
    assert keys(layered((4 * CHUNK, [[5, 1]]))) == ["p1"]          # page 5: piece 1
    assert keys(layered((4 * CHUNK, [[3, 2]]))) == ["p0", "p1"]    # pages 3-4 straddle
    assert keys(layered((4 * CHUNK, [[0, 1]]), (4 * CHUNK, [[15, 1]]))) == ["p0", "p3"]
    assert keys(layered((4 * CHUNK, []))) == []                    # a layer without pages


def test_pieces_a_layer_cuts_are_touched_and_growth_touches_none():
    assert keys(layered((2 * CHUNK + BLOCK, []))) == ["p2", "p3"]  # cut inside piece 2
    assert keys(layered((5 * CHUNK, [[16, 4]]))) == []             # pages past the base


def test_holds_compares_a_range_or_the_whole_file_unless_the_record_vouches(tmp_path):
    path = tmp_path / "16384"
    data = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(512))
    path.write_bytes(data)

    def sha(raw):
        return hashlib.sha256(raw).hexdigest()
    assert same_bytes(str(path), 256, 512, sha(data[256:768]))
    assert not same_bytes(str(path), 256, 512, sha(data[0:512]))
    assert not same_bytes(str(path), len(data) - 10, 20, sha(data[-10:]))  # short: differs
    run = object.__new__(RestoreRun)
    run.target, run.trusted, run.delta = str(tmp_path), {}, DeltaCounts()
    assert run._holds("16384", 256, 512, sha(data[256:768]))
    assert run._holds("16384", 0, len(data), sha(data), whole=True)
    assert not run._holds("16384", 0, 512, sha(data[:512]), whole=True)  # more bytes there
    assert not run._holds("16384", len(data) - 10, 20, sha(data[-10:]))
    assert not run._holds("absent", 0, 0, sha(b""), whole=True)
    (tmp_path / "link").symlink_to(path)
    assert not run._holds("link", 0, len(data), sha(data), whole=True)  # a link is no file
    assert run.delta.read_bytes == 512 + len(data)  # only what was read and hashed
    # a file the restore's record vouches for answers from it, without a read
    info = path.stat()
    run.trusted = {"16384": ((info.st_dev, info.st_ino),
                             {"256+512": sha(data[256:768]), "0+512": "another digest"})}
    assert run._holds("16384", 256, 512, sha(data[256:768]))
    assert not run._holds("16384", 0, 512, sha(data[:512]))
    # the record knows a range: as a whole file, only when nothing follows it
    run.trusted["16384"][1]["0+512"] = sha(data[:512])
    assert run._holds("16384", 0, 512, sha(data[:512]))
    assert not run._holds("16384", 0, 512, sha(data[:512]), whole=True)
    assert run.delta.read_bytes == 512 + len(data)


def test_prune_relinks_a_tablespace_first_and_cleans_its_location(tmp_path):
    """The backup's tablespace 222 lives where the target's 111 pointed: the new link comes
    first (a kill after it leaves the location the target's own), stale files of that major
    go, another major's data and the files the backup holds stay; a missing location is
    created."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands.restore import (
        DeltaCounts, RestoreRun)
    target, location, gone = tmp_path / "data", tmp_path / "ts", tmp_path / "ts2"
    for folder in (target / "pg_tblspc", target / "global", location / "PG_16_1" / "5",
                   location / "PG_15_9"):
        folder.mkdir(parents=True)
    (target / "PG_VERSION").write_text("16\n")
    (target / "global" / "pg_control").write_bytes(b"old")
    (target / "stray").write_text("x")
    (target / "pg_tblspc" / "111").symlink_to(location)
    (location / "PG_16_1" / "5" / "stale").write_text("x")
    (location / "PG_16_1" / "5" / "keep").write_text("x")
    (location / "PG_15_9" / "other-major").write_text("x")
    run = object.__new__(RestoreRun)
    run.target, run.version_dir, run.owner, run.delta = str(target), "PG_16_", None, DeltaCounts()
    folders = ("global", "pg_tblspc", "pg_tblspc/222/PG_16_1", "pg_tblspc/222/PG_16_1/5",
               "pg_tblspc/333/PG_16_1")
    files = [{"path": p, "kind": "dir"} for p in folders]
    files += [{"path": "PG_VERSION", "kind": "file"}, {"path": "global/pg_control", "kind": "file"},
              {"path": "pg_tblspc/222/PG_16_1/5/keep", "kind": "file"},
              {"path": "pg_tblspc/222", "kind": "tablespace"},
              {"path": "pg_tblspc/333", "kind": "tablespace"}]
    run.prune({"files": files, "wal": []},
              {"222": ("/old/a", str(location)), "333": ("/old/b", str(gone))})
    assert sorted(p.name for p in (target / "pg_tblspc").iterdir()) == ["222", "333"]
    assert (target / "pg_tblspc" / "222").resolve() == location
    assert (target / "pg_tblspc" / "333").resolve() == gone and gone.is_dir()
    assert not (location / "PG_16_1" / "5" / "stale").exists()
    assert (location / "PG_16_1" / "5" / "keep").exists()
    assert (location / "PG_15_9" / "other-major").exists()
    assert not (target / "stray").exists() and not (target / "global" / "pg_control").exists()
    assert (target / "PG_VERSION").exists() and run.delta.removed == 3  # stale, stray, 111


def test_a_server_started_before_the_prune_keeps_its_pg_control(tmp_path, monkeypatch):
    """A server that started on the target after the check (during a thaw, say): prune
    refuses before it removes anything, and the failure path (which drops pg_control only
    once the delta is writing) leaves the live cluster's files alone."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import restore
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
        TargetRefused)
    target = tmp_path / "data"
    (target / "global").mkdir(parents=True)
    (target / "global" / "pg_control").write_bytes(b"live")
    (target / "pgdr_restore.json").write_text("{}")

    def running(path, what="target", stage="check"):
        raise TargetRefused("%s %s runs" % (what, path), code="target_running")
    monkeypatch.setattr(restore, "refuse_live", running)
    run = object.__new__(restore.RestoreRun)
    run.target, run.version_dir, run.owner = str(target), "PG_16_", None
    run.delta = restore.DeltaCounts()
    with pytest.raises(TargetRefused):
        run.prune({"files": [], "wal": []}, {})
    assert run.delta.writing is False
    assert (target / "global" / "pg_control").read_bytes() == b"live"
    assert (target / "pgdr_restore.json").exists()
