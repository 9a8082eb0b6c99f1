"""Codecs: round trips, real gzip streams, damage is an IntegrityError."""
import gzip
import os

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.compress import Codec, SUFFIX
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    ConfigError, IntegrityError)

DATA = os.urandom(4096) + b"\0" * 100000 + b"page" * 5000


@pytest.mark.parametrize("name", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("level", [None, 1])
def test_round_trip(name, level):
    codec = Codec(name, level)
    packed = codec.compress(DATA)
    assert codec.decompress(packed, len(DATA)) == DATA
    assert codec.decompress(codec.compress(b""), 0) == b""
    assert codec.suffix == SUFFIX[name]
    if name != "none":
        assert len(packed) < len(DATA) // 2


def test_gzip_is_a_real_gzip_stream():
    assert gzip.decompress(Codec("gzip").compress(DATA)) == DATA


@pytest.mark.parametrize("name", ["zstd", "gzip"])
def test_damage_is_detected(name):
    codec = Codec(name)
    packed = bytearray(codec.compress(DATA))
    packed[len(packed) // 2] ^= 0xFF
    with pytest.raises(IntegrityError):
        codec.decompress(bytes(packed[:len(packed) // 2]), len(DATA))


@pytest.mark.parametrize("name", ["zstd", "gzip", "none"])
def test_size_mismatch(name):
    codec = Codec(name)
    with pytest.raises(IntegrityError) as info:
        codec.decompress(codec.compress(DATA), len(DATA) + 1)
    assert info.value.code == "size_mismatch"


def test_unknown_codec():
    with pytest.raises(ConfigError):
        Codec("lz4")
