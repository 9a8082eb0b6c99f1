# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The encrypted object format and the wrapping of data keys (docs/encryption.md).

An encrypted object is a header followed by segments::

    magic "PGDRENC" | version 1 (1 byte) | algorithm 1 (1 byte) | segment size (4 bytes,
    big-endian) | key id length (1 byte) | key id (ASCII) | salt (16 random bytes)

then the plaintext in segments of ``segment size`` bytes (the last one shorter, or empty
for an empty object), each sealed with AES-256-GCM (16-byte tag appended) under a key
made for this object alone: HKDF-SHA256(data key, salt, "pgdr object v1"). Segment i's
nonce is i as 11 big-endian bytes then 1 for the last segment, 0 for the others, so a
truncated object fails. Every segment's associated data is the header plus the object's
repository key, so an object moved or swapped to another key fails too.

Data keys (32 random bytes) are wrapped for each recipient: a passphrase through scrypt,
or a KMS key. Nothing here reads settings or storage: storage/sealed.py does.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import io
import os
import struct

from .errors import ConfigError, IntegrityError

MAGIC = b"PGDRENC"
VERSION = 1
ALGORITHM = 1  # AES-256-GCM, per-object key by HKDF-SHA256
SEGMENT_SIZE = 1024 * 1024
TAG = 16
SALT = 16
KEY_BYTES = 32
OBJECT_INFO = b"pgdr object v1"
CHECK_TEXT = b"pgdr key check v1"
# scrypt: 32 MiB of memory and ~0.1 s per derivation here; recorded with each recipient,
# so a repository made with other figures still opens.
SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
_FIXED = struct.Struct(">7sBBIB")


def _primitives():
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
        from cryptography.exceptions import InvalidTag
    except ImportError:
        raise ConfigError("an encrypted repository needs the Python package cryptography "
                          "(pip install cryptography)", code="dependency_missing",
                          stage="config")
    return hashes, AESGCM, HKDF, Scrypt, InvalidTag


def is_sealed(data):
    """Whether ``data`` starts like an encrypted object."""
    return data[:len(MAGIC)] == MAGIC


def new_key():
    return os.urandom(KEY_BYTES)


def b64(data):
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    return base64.b64decode(text.encode("ascii"))


def _header(key_id, salt, segment_size):
    name = key_id.encode("ascii")
    return _FIXED.pack(MAGIC, VERSION, ALGORITHM, segment_size, len(name)) + name + salt


def _object_cipher(data_key, salt):
    hashes, AESGCM, HKDF, dummy, dummy2 = _primitives()
    okm = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
               info=OBJECT_INFO).derive(data_key)
    return AESGCM(okm)


def _nonce(index, last):
    """11 bytes of segment counter, then the last-segment flag."""
    return struct.pack(">3xQB", index, 1 if last else 0)


def seal(data, object_key, key_id, data_key, segment_size=SEGMENT_SIZE):
    """The encrypted form of ``data`` stored at ``object_key``."""
    parts = []
    seal_stream(io.BytesIO(data), parts.append, object_key, key_id, data_key, segment_size)
    return b"".join(parts)


def seal_stream(source, write, object_key, key_id, data_key, segment_size=SEGMENT_SIZE):
    """Encrypt what ``source`` (a binary file) holds, handing the encrypted object to
    ``write`` piece by piece: one segment in memory at a time."""
    salt = os.urandom(SALT)
    header = _header(key_id, salt, segment_size)
    aad = header + object_key.encode("utf-8")
    cipher = _object_cipher(data_key, salt)
    write(header)
    chunk, index = source.read(segment_size), 0
    while True:
        following = source.read(segment_size) if len(chunk) == segment_size else b""
        write(cipher.encrypt(_nonce(index, not following), chunk, aad))
        if not following:
            return
        chunk, index = following, index + 1


def parse_header(data, object_key):
    """(key id, header length, segment size, salt) of an encrypted object; IntegrityError
    decrypt_failed when it is not one this pgdr can read."""
    if not is_sealed(data):
        raise IntegrityError("object %s is not encrypted, in a repository whose objects all "
                             "are: it was not written by pgdr with the repository's key "
                             "(replaced by hand?) and is not trusted" % object_key,
                             code="object_not_encrypted", key=object_key)
    if len(data) < _FIXED.size:
        raise _damaged(object_key, "shorter than its header")
    dummy, version, algorithm, segment_size, name_length = _FIXED.unpack(data[:_FIXED.size])
    if version != VERSION or algorithm != ALGORITHM:
        raise _damaged(object_key, "format version %d, algorithm %d: this pgdr reads "
                       "version %d, algorithm %d" % (version, algorithm, VERSION, ALGORITHM))
    end = _FIXED.size + name_length + SALT
    if segment_size < 1 or len(data) < end:
        raise _damaged(object_key, "its header is cut or invalid")
    key_id = data[_FIXED.size:_FIXED.size + name_length].decode("ascii", "replace")
    return key_id, end, segment_size, data[end - SALT:end]


def open_sealed(data, object_key, data_key):
    """The plaintext of an encrypted object, authenticated; IntegrityError decrypt_failed
    when any byte, its length or its key in the repository was changed."""
    dummy, dummy2, dummy3, dummy4, InvalidTag = _primitives()
    key_id, start, segment_size, salt = parse_header(data, object_key)
    aad = bytes(data[:start]) + object_key.encode("utf-8")
    cipher = _object_cipher(data_key, salt)
    view = memoryview(data)[start:]
    step = segment_size + TAG
    count = max(1, -(-len(view) // step))
    parts = []
    try:
        for index in range(count):
            chunk = bytes(view[index * step:(index + 1) * step])
            parts.append(cipher.decrypt(_nonce(index, index == count - 1), chunk, aad))
    except InvalidTag:
        raise _damaged(object_key, "segment %d of %d fails authentication: the object was "
                       "changed, cut short or moved from another key" % (index + 1, count))
    return b"".join(parts)


def _damaged(object_key, why):
    return IntegrityError("encrypted object %s cannot be decrypted: %s" % (object_key, why),
                          code="decrypt_failed", key=object_key)


# -- key-encryption keys ----------------------------------------------------------------
def derive_passphrase_key(passphrase, salt, params):
    dummy, dummy2, dummy3, Scrypt, dummy4 = _primitives()
    return Scrypt(salt=salt, length=KEY_BYTES, n=int(params["n"]), r=int(params["r"]),
                  p=int(params["p"])).derive(passphrase.encode("utf-8"))


def wrap(kek, secret, context):
    """``secret`` sealed under a key-encryption key; ``context`` (text) is bound to it."""
    dummy, AESGCM, dummy2, dummy3, dummy4 = _primitives()
    nonce = os.urandom(12)
    return b64(nonce + AESGCM(kek).encrypt(nonce, secret, context.encode("utf-8")))


def unwrap(kek, wrapped, context):
    """The secret, or None when ``kek`` is not the key it was wrapped with."""
    dummy, AESGCM, dummy2, dummy3, InvalidTag = _primitives()
    raw = unb64(wrapped)
    try:
        return AESGCM(kek).decrypt(raw[:12], raw[12:], context.encode("utf-8"))
    except InvalidTag:
        return None
