"""Issue 11, defect 13 (backup side): progress never passes its total, and the file count
of the log line, the CLI text and the JSON is one number."""
import io
import re

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import cli
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import backup
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.compress import Codec
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres.datadir import Entry
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress

LINE = re.compile(r"pgdr: (backup(?: WAL)?) +([0-9.]+)% (\d+)/(\d+) MiB")
MIB = 1024 * 1024


class Storage(object):
    def __init__(self):
        self.objects = {}

    def put(self, key, data, sha256=None, if_absent=False):
        self.objects[key] = data


def run_for(progress):
    """A BackupRun with a memory storage and no PostgreSQL (copy_* and _copy_wal only)."""
    run = backup.BackupRun.__new__(backup.BackupRun)
    run.settings = None
    run.progress = progress
    run.meter = backup.Meter(progress)
    run.codec = Codec("none")
    run.storage = Storage()
    run.parent_files, run.parent_bundles = {}, {}
    run.threshold, run.block_size = 0, 8192
    run.lease = None
    return run


def lines(stream):
    found = [LINE.search(l) for l in stream.getvalue().splitlines()]
    return [(m.group(1), float(m.group(2)), int(m.group(3)), int(m.group(4)))
            for m in found if m]


def test_d11_13_meter_never_advances_past_its_total():
    stream = io.StringIO()
    meter = backup.Meter(Progress(stream, interval=0))
    meter.begin("backup", 10 * MIB)
    for dummy in range(3):
        meter.advance(5 * MIB)        # 15 MiB read of a 10 MiB listing
    meter.advance(-1)
    assert meter.done == meter.total == 10 * MIB
    meter.end()
    seen = lines(stream)
    assert seen and all(pct <= 100.0 and done <= total for dummy, pct, done, total in seen)
    assert seen[-1][1:] == (100.0, 10, 10)


def test_d11_13_a_file_growing_while_read_stays_at_100_percent(tmp_path):
    """The listing says 1 MiB, the file holds 3 MiB when its bundle is read: the backup
    stores what it read and the progress line stops at 100%, never 300%."""
    path = tmp_path / "grows"
    path.write_bytes(b"x" * (3 * MIB))
    entry = Entry("base/1/grows", "file", size=MIB, source=str(path))
    stream = io.StringIO()
    run = run_for(Progress(stream, interval=0))
    bundle = backup.Bundle(1, "k/bundle/000001")
    bundle.members.append(entry)
    run.meter.begin("backup", entry.size)
    record = run.copy_bundle(bundle)
    run.meter.end()
    assert record["members"][0]["size"] == 3 * MIB  # all of it stored
    seen = lines(stream)
    assert seen and max(pct for dummy, pct, dummy2, dummy3 in seen) == 100.0
    assert all(done <= total for dummy, dummy2, done, total in seen)


def test_d11_13_wal_copied_after_the_data_has_its_own_total(tmp_path):
    """The WAL copied after the data was counted on the data's total: 289/273 MiB."""
    wal_dir = tmp_path / "pg_wal"
    wal_dir.mkdir()
    segment = "000000010000000000000002"
    (wal_dir / segment).write_bytes(b"w" * (16 * MIB))
    stream = io.StringIO()
    run = run_for(Progress(stream, interval=0))
    run.settings = type("S", (), {"workers": 2})()
    data = tmp_path / "data"
    data.write_bytes(b"d" * (2 * MIB))
    run.meter.begin("backup", 2 * MIB)
    run.copy_piece(backup.Piece(Entry("base/1/1", "file", size=2 * MIB, source=str(data)),
                                0, 0, 2 * MIB, "k/data/base/1/1"))
    run.meter.end()
    records = run._copy_wal(str(tmp_path), "k/", 1, 0x2000028, 0x2000100, 16 * MIB)
    assert [r["name"] for r in records] == [segment]
    seen = lines(stream)
    assert all(pct <= 100.0 and done <= total for dummy, pct, done, total in seen), seen
    assert ("backup", 100.0, 2, 2) in seen and ("backup WAL", 100.0, 16, 16) in seen


def manifest(files):
    return {"file_count": sum(1 for f in files if f["kind"] == "file"), "size": 3 * MIB,
            "stored_size": MIB, "duration": 1.5, "id": "20261124T060012Z-full"}


def test_d11_13_log_line_cli_text_and_json_give_one_file_count():
    """'1908 files' in the message vs 1878 in the JSON: the message counted directories
    and tablespace links too. Now all three read the manifest's file_count."""
    entries = [Entry("base", "dir"), Entry("base/1", "dir"), Entry("pg_tblspc/16400",
                                                                   "tablespace", link="/t"),
               Entry("base/1/1", "file", size=10), Entry("base/1/2", "file", size=20)]
    control = Entry("global/pg_control", "file", size=8192)
    bundle = backup.Bundle(1, "k/bundle/000001")
    bundle.members = entries[3:]
    records = [{"key": "k/bundle/000001", "size": 30, "stored_size": 30,
                "stored_sha256": "s", "sha256": "s", "reused": [],
                "members": [{"path": e.path, "offset": 0, "size": e.size, "sha256": "x"}
                            for e in entries[3:]]},
               {"key": "k/bundle/000000", "size": 8192, "stored_size": 8192,
                "stored_sha256": "s", "sha256": "s", "reused": [],
                "members": [{"path": control.path, "offset": 0, "size": 8192,
                             "sha256": "c"}]}]
    last = backup.Bundle(0, "k/bundle/000000")
    files, dummy = backup._file_records(entries + [control], [bundle], records, last, {},
                                        "20261124T060012Z-full")
    assert len(files) == 6  # what the old message counted
    m = manifest(files)
    assert m["file_count"] == 3
    summary = dict(m, type="full")
    text = cli._render("backup", {"backup": summary})
    logged = "backup %s complete: %s" % (m["id"], backup.describe(m))
    for line in (text, logged):
        assert re.search(r"\b(\d+) files\b", line).group(1) == "3", line
