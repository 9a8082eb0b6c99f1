"""Changed blocks from WAL summaries (postgres/walsummary.py): relation paths to keys,
blocks of one part of one segment file, truncation limits, holes in the summaries."""
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import walsummary

PER_SEGMENT = 131072  # 1 GiB of 8 KiB blocks


def test_relation_paths_become_summary_keys():
    key = walsummary.relation_key
    assert key("base/5/16384") == (1663, 5, 16384, 0, 0)
    assert key("base/5/16384.2") == (1663, 5, 16384, 0, 2)
    assert key("base/5/16384_init") == (1663, 5, 16384, 3, 0)
    assert key("global/1262") == (1664, 0, 1262, 0, 0)
    assert key("pg_tblspc/16390/PG_15_202209061/5/16400.1") == (16390, 5, 16400, 0, 1)
    for other in ("base/5/16384_fsm", "base/5/16384_vm", "base/5/PG_VERSION", "pg_xact/0000",
                  "postgresql.auto.conf", "base/5/pg_filenode.map"):
        assert key(other) is None, other


def test_blocks_of_a_part_are_counted_from_the_part_start():
    rows = [(1663, 5, 16384, 0, 3, False), (1663, 5, 16384, 0, 700, False),
            (1663, 5, 16384, 0, PER_SEGMENT + 10, False),   # segment .1
            (1663, 5, 16385, 0, 4, False),                  # another relation
            (1663, 5, 16384, 3, 1, False)]                  # the init fork
    changed = walsummary.ChangedBlocks(rows, PER_SEGMENT)
    assert changed.blocks("base/5/16384", 0, 512) == [3]
    assert changed.blocks("base/5/16384", 512, 512) == [700 - 512]
    assert changed.blocks("base/5/16384.1", 0, 512) == [10]
    assert changed.blocks("base/5/16384_init", 0, 8) == [1]
    assert changed.blocks("base/5/99999", 0, 512) == []
    assert changed.blocks("base/5/16384_vm", 0, 8) is None  # compared whole by the caller


def test_a_truncated_relation_gives_every_block_from_the_lowest_limit():
    rows = [(1663, 5, 16384, 0, 100, True), (1663, 5, 16384, 0, 40, True),
            (1663, 5, 16384, 0, 7, False)]
    changed = walsummary.ChangedBlocks(rows, PER_SEGMENT)
    assert changed.blocks("base/5/16384", 0, 50) == [7] + list(range(40, 50))
    assert changed.blocks("base/5/16384", 64, 16) == list(range(16))
    assert changed.blocks("base/5/16384.1", 0, 4) == [0, 1, 2, 3]


def test_holes_in_the_summaries_are_found():
    hole = walsummary._hole
    assert hole([(100, 200), (200, 350)], 150, 300) is None
    assert hole([(100, 200), (250, 350)], 150, 300) == "miss 0/C8..0/FA"
    assert hole([(160, 400)], 150, 300) == "miss 0/96..0/A0"
    assert hole([(100, 200)], 150, 300) == "end at 0/C8, before 0/12C"
    assert hole([], 150, 300) == "end at 0/96, before 0/12C"


def test_runs_close_together_are_read_in_one_span():
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres.pages import (
        read_spans)
    runs = [[0, 2], [5, 1], [40, 3], [44, 1], [100, 1]]
    assert read_spans(runs, 4) == [[0, 6, [[0, 2], [5, 1]]], [40, 5, [[40, 3], [44, 1]]],
                                   [100, 1, [[100, 1]]]]
    assert read_spans(runs, 0) == [[s, n, [[s, n]]] for s, n in runs]
    assert read_spans([], 32) == []


def test_summarized_pages_read_in_spans_are_exactly_the_changed_pages(tmp_path):
    """The spans read unchanged pages along; what is stored is still only the changed ones,
    byte for byte, with a trailing partial page, and disk_read counts what was read."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import backup
    size = 8192
    raw = b"".join(bytes([i % 251]) * size for i in range(300)) + b"tail"
    relation = tmp_path / "16384"
    relation.write_bytes(raw)
    changed = [3, 4, 10, 200, 201, 202, 299]

    class Summary(object):
        def blocks(self, rel, first, count):
            return [b - first for b in changed if first <= b < first + count]

    class Entry(object):
        source, path = str(relation), "base/5/16384"

    class Part(object):
        entry, offset, length = Entry(), 0, len(raw)
    run = object.__new__(backup.BackupRun)
    run.block_size, run.summary = size, Summary()
    length, runs, data, disk_read = run._read_summarized(Part(), 0)
    assert length == len(raw)
    assert runs == [[3, 2], [10, 1], [200, 3], [299, 2]]  # 300: the partial page
    assert data == b"".join(raw[b * size:(b + 1) * size] for b in changed + [300])
    # 3..10 in one span (gap 5 < 32), 200..202, 299..300: 8 + 3 + 1 pages + 4 bytes
    assert disk_read == 12 * size + 4
