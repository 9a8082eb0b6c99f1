# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compression codecs for stored pieces: zstd (default), gzip, none.

Pieces are compressed whole in memory (a piece is at most chunk_size), which
keeps every stored object independently readable and verifiable.
zstandard releases the GIL, so worker threads compress in parallel.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import zlib

from .errors import ConfigError, IntegrityError

SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a real gzip stream, readable by `gzip -d`


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise ConfigError("compression=zstd needs the Python package 'zstandard' "
                          "(pip install zstandard), or choose compression=gzip",
                          code="dependency_missing", stage="config")
    return zstandard


STREAM_CHUNK = 1024 * 1024


class Codec(object):
    def __init__(self, name, level=None):
        if name not in SUFFIX:
            raise ConfigError("compression=%r is not one of: %s"
                              % (name, ", ".join(SUFFIX)), stage="config")
        self.name = name
        self.level = level
        self.suffix = SUFFIX[name]
        if name == "zstd":
            self._zstd = _zstd()

    def compress(self, data):
        if self.name == "zstd":
            level = 3 if self.level is None else self.level
            # the frame checksum lets every reader detect damage, even without a manifest
            return self._zstd.ZstdCompressor(level=level, write_checksum=True).compress(data)
        if self.name == "gzip":
            level = 6 if self.level is None else self.level
            packer = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
            return packer.compress(data) + packer.flush()
        return bytes(data)

    def decompress(self, data, expected_size=None):
        try:
            if self.name == "zstd":
                out = self._zstd.ZstdDecompressor().decompress(
                    data, max_output_size=expected_size or 0)
            elif self.name == "gzip":
                out = zlib.decompress(data, _GZIP_WBITS)
            else:
                out = bytes(data)
        except Exception as exc:  # each codec has its own error class
            raise IntegrityError("cannot decompress %s data: %s" % (self.name, exc),
                                 code="decompress_failed", stage="restore")
        if expected_size is not None and len(out) != expected_size:
            raise IntegrityError("decompressed %d bytes, expected %d"
                                 % (len(out), expected_size),
                                 code="size_mismatch", stage="restore")
        return out

    def decompress_into(self, data, write):
        """Decompress ``data`` calling ``write(chunk)`` with pieces of at most
        STREAM_CHUNK bytes: no buffer of the whole output, so restoring a large
        piece does not map (and fault in) fresh memory each time."""
        try:
            if self.name == "zstd":
                reader = self._zstd.ZstdDecompressor().stream_reader(data, read_size=STREAM_CHUNK)
                while True:
                    chunk = reader.read(STREAM_CHUNK)
                    if not chunk:
                        break
                    write(chunk)
            elif self.name == "gzip":
                unpacker = zlib.decompressobj(_GZIP_WBITS)
                view = memoryview(data)
                while view:
                    write(unpacker.decompress(view, STREAM_CHUNK))
                    view = memoryview(unpacker.unconsumed_tail)
                write(unpacker.flush())
            else:
                write(data)
        except Exception as exc:  # each codec has its own error class
            raise IntegrityError("cannot decompress %s data: %s" % (self.name, exc),
                                 code="decompress_failed", stage="restore")


class CodecsByKey(object):
    """The codec of each stored object from its key's suffix: a chain or an archive may
    mix compressions (the setting changed between backups)."""

    def __init__(self):
        self.codecs = {}

    def for_key(self, key):
        name = next((n for n, suffix in SUFFIX.items() if suffix and key.endswith(suffix)),
                    "none")
        if name not in self.codecs:
            self.codecs[name] = Codec(name)
        return self.codecs[name]

    def decompress(self, data, expected_size=None, key=""):
        return self.for_key(key).decompress(data, expected_size)

    def decompress_into(self, data, write, key=""):
        return self.for_key(key).decompress_into(data, write)
