"""Piece planning (commands/backup.plan_pieces): every byte of every file lands in exactly
one task, big files in chunk-sized pieces, small ones in bundles of at most a chunk,
relation files the reference stored in pieces as page deltas, and keys that never collide."""
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands.backup import (
    Bundle, DeltaPart, Piece, plan_pieces)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.compress import Codec
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres.datadir import Entry

MiB = 1024 * 1024
PREFIX = "main/backup/20261203T000000Z-full/"


def entries():
    return [Entry("base", "dir"),
            Entry("base/5/1259", "file", size=120 * 1024),
            Entry("base/5/16384", "file", size=10 * MiB + 5),      # 3 pieces of 4 MiB
            Entry("base/5/16390", "file", size=4 * MiB),           # exactly one chunk
            Entry("PG_VERSION", "file", size=3),
            Entry("postgresql.conf", "file", size=30 * 1024),
            Entry("global/pg_control", "file", size=8192),
            Entry("pg_tblspc/16500", "tablespace", link="/srv/ts")]


def plan(parent_files=None, chunk=4 * MiB, limit=64 * 1024):
    return plan_pieces(entries(), PREFIX, Codec("none"), chunk, limit, parent_files)


def coverage(tasks):
    """{path: sorted [(offset, length)]} of what the tasks store."""
    covered = {}
    for task in tasks:
        if isinstance(task, Bundle):
            for member in task.members:
                covered.setdefault(member.path, []).append((0, member.size))
        else:
            covered.setdefault(task.entry.path, []).append((task.offset, task.length))
    return {path: sorted(spans) for path, spans in covered.items()}


def test_every_byte_of_every_file_in_exactly_one_task():
    tasks = plan()
    files = {e.path: e.size for e in entries() if e.kind == "file"}
    covered = coverage(tasks)
    assert set(covered) == set(files)  # directories and tablespace links are not tasks
    for path, spans in covered.items():
        position = 0
        for offset, length in spans:
            assert offset == position, (path, spans)  # no gap, no overlap
            position += length
        assert position == files[path], (path, spans)


def test_big_files_in_chunks_small_ones_in_bundles_and_keys_unique():
    tasks = plan()
    pieces = [t for t in tasks if isinstance(t, Piece)]
    assert sorted(p.key for p in pieces if p.entry.path == "base/5/16384") == [
        PREFIX + "data/base/5/16384.part%04d" % i for i in range(3)]
    assert [p.key for p in pieces if p.entry.path == "base/5/16390"] == [
        PREFIX + "data/base/5/16390"]  # one piece: no part suffix
    bundles = [t for t in tasks if isinstance(t, Bundle)]
    assert all(b.size <= 4 * MiB for b in bundles)
    assert {m.path for b in bundles for m in b.members} == {
        "PG_VERSION", "postgresql.conf", "global/pg_control"}
    keys = [t.key for t in tasks]
    assert len(keys) == len(set(keys))
    assert all(k.startswith(PREFIX) for k in keys)


def test_bundles_never_exceed_a_chunk():
    many = [Entry("base/5/%d" % n, "file", size=40 * 1024) for n in range(100)]
    tasks = plan_pieces(many, PREFIX, Codec("none"), 256 * 1024, 64 * 1024)
    bundles = [t for t in tasks if isinstance(t, Bundle)]
    assert all(b.size <= 256 * 1024 for b in bundles)
    assert sum(len(b.members) for b in bundles) == 100
    assert len({b.key for b in bundles}) == len(bundles)


def test_relation_files_the_reference_stored_in_pieces_become_page_deltas():
    parent = {"base/5/16384": {"pieces": [{"key": "old"}]},
              "postgresql.conf": {"bundle": "old-bundle"}}  # not a relation: whole again
    tasks = plan(parent)
    deltas = [t for t in tasks if isinstance(t, DeltaPart)]
    assert {d.entry.path for d in deltas} == {"base/5/16384"}
    assert sorted(d.key for d in deltas) == [
        PREFIX + "delta/base/5/16384.part%04d" % i for i in range(3)]
    assert "postgresql.conf" in {m.path for t in tasks if isinstance(t, Bundle)
                                 for m in t.members}


def test_largest_tasks_first():
    sizes = [t.length if isinstance(t, Piece) else t.size for t in plan()]
    assert sizes == sorted(sizes, reverse=True)
