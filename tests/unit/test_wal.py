"""WAL segment names and LSN arithmetic."""
import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import ConfigError
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import wal

MIB16 = 16 * 1024 * 1024


@pytest.mark.parametrize("text,value", [
    ("0/0", 0), ("0/16B3740", 0x16B3740), ("1/0", 1 << 32),
    ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1), ("a/b", (0xA << 32) | 0xB),
])
def test_lsn_round_trip(text, value):
    assert wal.parse_lsn(text) == value
    assert wal.format_lsn(value) == text.upper()


@pytest.mark.parametrize("text", ["", "0", "0/", "x/1", "1/2/3", "123456789/0"])
def test_bad_lsn(text):
    with pytest.raises(ConfigError):
        wal.parse_lsn(text)


def test_segment_names():
    assert wal.segment_name(1, 0, MIB16) == "000000010000000000000000"
    assert wal.segment_name(1, 255, MIB16) == "0000000100000000000000FF"
    assert wal.segment_name(1, 256, MIB16) == "000000010000000100000000"  # 256 per 4 GiB
    assert wal.segment_name(0x2A, 5, 1024 * MIB16 // 16) == "0000002A0000000100000001"  # 1 GiB
    assert wal.SEGMENT_NAME.match(wal.segment_name(3, 12345, MIB16))
    assert wal.history_name(2) == "00000002.history"
    assert wal.HISTORY_NAME.match(wal.history_name(10))


def test_segments_between():
    start = wal.parse_lsn("0/2000028")
    assert wal.segments_between(1, start, wal.parse_lsn("0/2000138"), MIB16) == [
        "000000010000000000000002"]
    # a stop exactly on a boundary does not need the next segment
    assert wal.segments_between(1, start, wal.parse_lsn("0/4000000"), MIB16) == [
        "000000010000000000000002", "000000010000000000000003"]
    assert wal.segments_between(1, start, wal.parse_lsn("0/4000001"), MIB16)[-1] == \
        "000000010000000000000004"
    # crossing a 4 GiB 'log' boundary
    names = wal.segments_between(2, wal.parse_lsn("0/FF000000"), wal.parse_lsn("1/1000000"),
                                 MIB16)
    assert names == ["0000000200000000000000FF", "000000020000000100000000"]
    # start == stop still yields the segment holding it
    assert wal.segments_between(1, start, start, MIB16) == ["000000010000000000000002"]
