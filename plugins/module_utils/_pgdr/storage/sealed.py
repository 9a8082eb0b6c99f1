# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side encryption of every object, as a storage wrapper (docs/encryption.md).

open_storage() wraps every backend in ``Sealed``: the one place that encrypts and
decrypts, so no verb knows about keys. Per cluster, ``<cluster>/keys/repository.json``
says the repository is encrypted and lists its recipients; ``<cluster>/keys/data/<id>.json``
holds one data key, wrapped for each recipient. Everything else is encrypted:

    <cluster>/backup/<id>/..., <cluster>/snapshot/<id>/...   data key  backup-<id>.<r>
    <cluster>/wal/<timeline + log>/...                       data key  wal-<timeline + log>.<r>
    <cluster>/wal/history/...                                data key  wal-history.<r>
    anything else (leases, drill reports, uploads, probes)   data key  misc-<YYYYMM>.<r>

(<r>: 16 random hex digits, one per writing process.)

The SHA-256s that callers pass and expect (manifests' ``stored_sha256``) are those of the
plaintext; the backend records the ciphertext's, so a damaged object is still re-read
and reported before it is decrypted. Never mixed: a client with a key refuses a
repository holding plaintext objects, a client without one refuses to write into an
encrypted repository and to read its objects.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re
import tempfile
import threading
import time

from .. import crypt
from ..errors import ConfigError, Conflict, IntegrityError, NotFound, RepositoryError
from .base import ObjectInfo, Storage, file_sha256

KEYS_DIR = "keys"
RECORD = "repository.json"
DATA_KEYS = "data"
FORMAT = 1
PLAIN_RECHECK = 60
# Folders a new encrypted repository may already hold: its keys, and check probes.
EMPTY_FOLDERS = (KEYS_DIR, "check")
# KMS answers meaning "this key does not open it" (another key, a key disabled, deleted
# or not ours to use), as opposed to "KMS cannot be reached" (kms_failed).
KMS_NOT_THIS_KEY = ("IncorrectKeyException", "InvalidCiphertextException", "NotFoundException",
                    "DisabledException", "KMSInvalidStateException", "AccessDeniedException")
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_WAL_DIR = re.compile(r"^[0-9A-F]{16}$")


def record_key(cluster):
    return "%s/%s/%s" % (cluster, KEYS_DIR, RECORD)


def data_key_record(cluster, key_id):
    return "%s/%s/%s/%s.json" % (cluster, KEYS_DIR, DATA_KEYS, key_id)


def backup_scope(backup_id):
    """The scope of the data keys that encrypt one backup's (or snapshot's) objects."""
    return "backup-%s" % backup_id


def backup_keys_prefix(cluster, backup_id):
    """Where the data key records of one backup's objects start."""
    return "%s/%s/%s/%s." % (cluster, KEYS_DIR, DATA_KEYS, backup_scope(backup_id))


def scope_of(key, now=None):
    """Which data keys encrypt the object at ``key`` (see the module's table); each
    writing process makes its own, ``<scope>.<random>``."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[1] in ("backup", "snapshot"):
        return backup_scope(parts[2])
    if len(parts) >= 3 and parts[1] == "wal":
        if parts[2] == "history":
            return "wal-history"
        if _WAL_DIR.match(parts[2]):
            return "wal-%s" % parts[2]
    return "misc-%s" % time.strftime("%Y%m", time.gmtime(now))


def _is_key_object(key):
    parts = key.split("/")
    return len(parts) >= 2 and parts[1] == KEYS_DIR


def same_kms_key(recorded, configured_key):
    """Whether the configured KMS key is the recipient's: the same id, ARN or alias, or
    an ARN and the bare id of one key."""
    if not recorded or not configured_key:
        return False
    return (recorded == configured_key or recorded.split("/")[-1] == configured_key
            or configured_key.split("/")[-1] == recorded)


def configured(settings):
    return bool(settings.encryption_passphrase or settings.encryption_kms_key)


class Sealed(Storage):
    """A backend, encrypting when the repository is encrypted."""

    def __init__(self, inner, settings):
        self.inner = inner
        self.settings = settings
        self._rings = {}
        self._asked = {}
        self._lock = threading.Lock()

    # -- what passes through -------------------------------------------------------------
    def __getattr__(self, name):
        # A backend's own attributes (posix root, S3 client, prefix) stay reachable.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def events(self):
        return self.inner.events

    @events.setter
    def events(self, value):
        self.inner.events = value

    def describe(self):
        return self.inner.describe()

    def check(self):
        return self.inner.check()

    def head(self, key):
        return self.inner.head(key)

    def list(self, prefix):
        return self.inner.list(prefix)

    def list_dirs(self, prefix):
        return self.inner.list_dirs(prefix)

    def delete(self, keys):
        return self.inner.delete(keys)

    def archived_objects(self, prefix):
        return self.inner.archived_objects(prefix)

    def request_thaw(self, key, days, tier):
        return self.inner.request_thaw(key, days, tier)

    # -- what is encrypted ---------------------------------------------------------------
    def put(self, key, data, sha256=None, if_absent=False):
        ring = None if _is_key_object(key) else self.keyring(key.split("/")[0], writing=True)
        if ring is None:
            return self.inner.put(key, data, sha256=sha256, if_absent=if_absent)
        if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
            raise _changed(key, "its bytes")
        try:
            return self.inner.put(key, ring.seal(key, data), if_absent=if_absent)
        except Conflict as exc:
            return self._retried(key, hashlib.sha256(data).hexdigest(), exc)

    def put_file(self, key, path, sha256=None, if_absent=False):
        ring = None if _is_key_object(key) else self.keyring(key.split("/")[0], writing=True)
        if ring is None:
            return self.inner.put_file(key, path, sha256=sha256, if_absent=if_absent)
        if sha256 and file_sha256(path) != sha256.lower():
            raise _changed(key, path)
        # Sealed into a temporary file, one segment at a time: large uploads keep the
        # backend's multipart transfer and never sit whole in memory.
        key_id, secret = ring.writer_key(key)
        with tempfile.NamedTemporaryFile(prefix="pgdr-sealed-") as sealed_copy:
            with open(path, "rb") as source:
                crypt.seal_stream(source, sealed_copy.write, key, key_id, secret,
                                  ring.segment_size)
            sealed_copy.flush()
            try:
                return self.inner.put_file(key, sealed_copy.name, if_absent=if_absent)
            except Conflict as exc:
                return self._retried(key, file_sha256(path), exc)

    def _retried(self, key, sha256, conflict):
        """An if_absent write found the object there. Each write draws a new salt, so the
        stored bytes never equal the new ones: the same plaintext there is a retry of a
        write whose answer was lost (False), other bytes are the Conflict."""
        if self.stored_sha256(key) == sha256:
            return False
        raise conflict

    def get(self, key, sha256=None):
        if _is_key_object(key):
            return self.inner.get(key, sha256=sha256)
        cluster = key.split("/")[0]
        if not configured(self.settings):
            return self._get_plain(key, cluster, sha256)
        data = self.inner.get(key)  # the ciphertext, checked against its recorded SHA-256
        ring = self.keyring(cluster, writing=False)
        if ring is None:
            raise _not_encrypted(cluster, self.describe(), "object %s is not encrypted" % key)
        data = ring.open(key, data)  # object_not_encrypted when it is not
        if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
            raise IntegrityError("object %s in %s decrypts to other bytes than its backup "
                                 "recorded (SHA-256 %s... expected)"
                                 % (key, self.describe(), sha256[:12]),
                                 code="checksum_mismatch", key=key)
        return data

    def _get_plain(self, key, cluster, sha256):
        """A client without a key: the backend's own checks, and a clear refusal for an
        encrypted object (whose stored SHA-256 is not the plaintext's a caller expects)."""
        try:
            data = self.inner.get(key, sha256=sha256)
        except IntegrityError as exc:
            if exc.code == "checksum_mismatch" and crypt.is_sealed(self.inner._fetch(key)[0]):
                raise _key_missing(cluster, self.describe(), "object %s is encrypted" % key)
            raise
        if crypt.is_sealed(data):
            raise _key_missing(cluster, self.describe(), "object %s is encrypted" % key)
        return data

    def stored_sha256(self, key):
        if _is_key_object(key) or self._compare_ring(key) is None:
            return self.inner.stored_sha256(key)
        info = self.plain_head(key)
        return None if info is None else info.sha256

    def plain_head(self, key):
        info = self.inner.head(key)
        if info is None or _is_key_object(key):
            return info
        if self._compare_ring(key) is None:
            return info
        data = self.get(key)
        return ObjectInfo(key, len(data), hashlib.sha256(data).hexdigest(), info.mtime)

    def _compare_ring(self, key):
        """The keyring for comparing a stored object with a local one, before a write: a
        client without a key asks whether the cluster is encrypted (and is refused when it
        is), a client with one never makes a record for it (check mode writes nothing)."""
        return self.keyring(key.split("/")[0], writing=not configured(self.settings))

    def encrypted(self, cluster, create=True):
        """Whether ``cluster``'s objects are encrypted; opens its keys (and refuses as
        writes do) when they are, so a key problem shows before any work starts. With
        ``create``, a client with a key makes a new cluster's record as its first write
        would."""
        return self.keyring(cluster, writing=create) is not None

    # -- keys ----------------------------------------------------------------------------
    def keyring(self, cluster, writing):
        """The cluster's Keyring, None for a plaintext repository. Reads of a client
        without a key never ask (an encrypted object says so itself); writes always do."""
        if not writing and not configured(self.settings) and cluster not in self._rings:
            return None
        with self._lock:
            if cluster in self._rings and not self._stale(cluster):
                return self._rings[cluster]
            ring = self._open_ring(cluster, writing)
            # A client with a key that found no record on a read asks again on its first
            # write (which makes the record); every other answer is final.
            if ring is not None or writing or not configured(self.settings):
                self._rings[cluster] = ring
                self._asked[cluster] = time.monotonic()
            return ring

    def _stale(self, cluster):
        """A plaintext answer is asked again after PLAIN_RECHECK seconds: a long-lived
        writer without a key (the wal-push worker) learns that a keyed client made the
        cluster encrypted, and refuses from then on."""
        return (self._rings[cluster] is None
                and time.monotonic() - self._asked[cluster] > PLAIN_RECHECK)

    def _open_ring(self, cluster, writing):
        record = self.read_record(cluster)
        if record is None and not configured(self.settings):
            return None
        if record is None:
            if not writing:
                return None
            record = self._create_record(cluster)
        if not configured(self.settings):
            raise _key_missing(cluster, self.describe(), "its record %s says so"
                               % record_key(cluster))
        return Keyring(self, cluster, record, Recipients(self.settings, cluster))

    def read_record(self, cluster):
        """The cluster's encryption record, None when it is not encrypted."""
        try:
            data = self.inner.get(record_key(cluster))
        except NotFound:
            return None
        try:
            record = json.loads(data.decode("utf-8"))
            if record.get("format") != FORMAT or not isinstance(record.get("recipients"), list):
                raise ValueError("format %r" % record.get("format"))
        except (ValueError, AttributeError) as exc:
            raise IntegrityError("the encryption record %s in %s cannot be read (%s): "
                                 "nothing is read or written without it"
                                 % (record_key(cluster), self.describe(), exc),
                                 code="decrypt_failed", key=record_key(cluster))
        return record

    def _create_record(self, cluster):
        found = [name.rstrip("/").split("/")[-1]
                 for name in self.inner.list_dirs("%s/" % cluster)]
        plain = sorted(set(found) - set(EMPTY_FOLDERS))
        if plain:
            raise _not_encrypted(cluster, self.describe(), "it already holds %s/ written "
                                 "without encryption" % "/, ".join(plain))
        record = {"format": FORMAT, "cipher": "AES-256-GCM", "segment_size": crypt.SEGMENT_SIZE,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "recipients": Recipients(self.settings, cluster).new_recipients()}
        try:
            self.inner.put(record_key(cluster), encode_record(record), if_absent=True)
        except Conflict:  # another node made it first: theirs is the record
            return self.read_record(cluster)
        return record


class Keyring(object):
    """One cluster's data keys, opened through the recipients this client holds.

    Every process makes its own data key per scope (``<scope>.<random>``): two writers
    never write the same key record, so no server's handling of concurrent if_absent
    writes can make one of them seal objects under a key that is then replaced."""

    def __init__(self, sealed, cluster, record, recipients):
        self.sealed, self.storage, self.cluster = sealed, sealed.inner, cluster
        self.recipients = recipients
        self.record, self.opened = None, {}
        self._keys = {}      # key id -> secret, for reading and writing
        self._writing = {}   # scope -> this process's key id
        self._lock = threading.Lock()
        self.use(record)

    def use(self, record):
        """Open ``record``'s recipients (again after a rotation changed them)."""
        if self.record is None or record["recipients"] != self.record["recipients"]:
            self.opened = self.recipients.open(record["recipients"], self.storage.describe())
        self.record = record
        self.segment_size = int(record.get("segment_size", crypt.SEGMENT_SIZE))

    def describe(self):
        """The recipients the record names, and which of them this client opened."""
        return "recipients %s; this client opens %s" % (
            ", ".join(r["id"] for r in self.record["recipients"]), ", ".join(sorted(self.opened)))

    def seal(self, key, data):
        key_id, secret = self.writer_key(key)
        return crypt.seal(data, key, key_id, secret, self.segment_size)

    def writer_key(self, key):
        """(key id, secret) this process seals the object at ``key`` with."""
        with self._lock:
            scope = scope_of(key)
            if scope not in self._writing:
                key_id = "%s.%s" % (scope, crypt.new_key()[:8].hex())
                self._keys[key_id] = self._create(key_id)
                self._writing[scope] = key_id
            key_id = self._writing[scope]
            return key_id, self._keys[key_id]

    def open(self, key, data):
        key_id = crypt.parse_header(data, key)[0]
        with self._lock:
            if key_id not in self._keys:
                self._keys[key_id] = self._load(key_id)
            secret = self._keys[key_id]
        return crypt.open_sealed(data, key, secret)

    def _load(self, key_id):
        if not _KEY_ID.match(key_id):
            raise IntegrityError("data key id %r is not one pgdr writes" % key_id,
                                 code="decrypt_failed")
        where = data_key_record(self.cluster, key_id)
        try:
            record = json.loads(self.storage.get(where).decode("utf-8"))
        except NotFound:
            raise IntegrityError("data key %s is missing from %s (%s): the objects it "
                                 "encrypts cannot be read" % (key_id, self.storage.describe(),
                                                              where),
                                 code="data_key_missing", key=where)
        except ValueError as exc:
            raise IntegrityError("data key record %s cannot be read: %s" % (where, exc),
                                 code="data_key_missing", key=where)
        return self.unwrap(key_id, record)

    def _create(self, key_id):
        """A new data key, stored wrapped for every recipient of the record as it is once
        the key is stored: a rotation that started meanwhile either lists this key (and
        wraps it for its new recipient) or shows here, before anything is sealed."""
        where = data_key_record(self.cluster, key_id)
        secret = crypt.new_key()
        wrapped_for = None
        for dummy in range(3):
            self.use(self.sealed.read_record(self.cluster) or self.record)
            if wrapped_for == self.record["recipients"]:
                return secret
            record = {"format": FORMAT, "key_id": key_id,
                      "wrapped": dict((rid, opener.wrap(secret, self.context(key_id)))
                                      for rid, opener in self.wrappers())}
            self.storage.put(where, encode_record(record), if_absent=wrapped_for is None)
            wrapped_for = self.record["recipients"]
        raise ConfigError("the recipients of %s kept changing while data key %s was made: "
                          "a key rotation is running; try again when it has finished"
                          % (self.storage.describe(), key_id), code="encryption_key_wrong",
                          stage="config")

    def wrappers(self):
        """(recipient id, opener) of every recipient of the record: a new data key is
        wrapped for all of them, so this client must open them all."""
        missing = [r["id"] for r in self.record["recipients"] if r["id"] not in self.opened]
        if missing:
            raise ConfigError("a new data key must be wrapped for every recipient of the "
                              "repository, and this client cannot use %s: configure it too "
                              "(docs/encryption.md); nothing was written" % ", ".join(missing),
                              code="encryption_key_wrong", stage="config")
        return sorted(self.opened.items())

    def context(self, key_id):
        return "pgdr data key %s/%s" % (self.cluster, key_id)

    def unwrap(self, key_id, record):
        wrapped = record.get("wrapped") or {}
        for rid, opener in sorted(self.opened.items()):
            if rid in wrapped:
                secret = opener.unwrap(wrapped[rid], self.context(key_id))
                if secret is not None:
                    return secret
        raise IntegrityError("data key %s of %s is not wrapped for any recipient this client "
                             "opens (%s), or its wrapping was changed"
                             % (key_id, self.storage.describe(), ", ".join(sorted(self.opened))),
                             code="data_key_missing", key=key_id)


class Recipients(object):
    """The recipients this client's settings can open or create."""

    def __init__(self, settings, cluster, passphrase=None, kms_key=None):
        self.settings = settings
        self.cluster = cluster
        self.passphrase = passphrase if passphrase is not None else settings.encryption_passphrase
        self.kms_key = kms_key if kms_key is not None else settings.encryption_kms_key
        self._kms = None

    def new_recipients(self):
        made = []
        if self.passphrase:
            made.append(PassphraseRecipient.create(self.passphrase))
        if self.kms_key:
            made.append(KmsRecipient.create(self.kms(), self.kms_key, self.cluster))
        return made

    def open(self, records, where):
        """{recipient id: opener} of the recordeds this client opens; ConfigError
        encryption_key_wrong when it opens none."""
        opened = {}
        for record in records:
            opener = None
            if record.get("type") == "passphrase" and self.passphrase:
                opener = PassphraseRecipient.open(record, self.passphrase)
            elif record.get("type") == "kms" and same_kms_key(record.get("key"), self.kms_key):
                opener = KmsRecipient.open(record, self.kms(), self.cluster)
            if opener is not None:
                opened[record["id"]] = opener
        if not opened:
            raise ConfigError(
                "the configured %s opens none of the recipients of the encrypted repository "
                "%s (%s): wrong passphrase or KMS key; nothing was read or written"
                % (" and ".join(n for n, v in (("encryption_passphrase", self.passphrase),
                                               ("encryption_kms_key", self.kms_key)) if v),
                   where, ", ".join(r.get("id", "?") for r in records)),
                code="encryption_key_wrong", stage="config")
        return opened

    def kms(self):
        if self._kms is None:
            from .s3 import aws_session
            s = self.settings
            self._kms = aws_session(s).client(
                "kms", region_name=s.encryption_kms_region or s.s3_region,
                endpoint_url=s.encryption_kms_endpoint or None)
        return self._kms


class PassphraseRecipient(object):
    """A key-encryption key from a passphrase through scrypt."""

    def __init__(self, kek):
        self.kek = kek

    @staticmethod
    def create(passphrase):
        salt = crypt.new_key()[:crypt.SALT]
        rid = "passphrase-%s" % hashlib.sha256(salt).hexdigest()[:8]
        kek = crypt.derive_passphrase_key(passphrase, salt, crypt.SCRYPT)
        record = {"id": rid, "type": "passphrase", "kdf": "scrypt", "salt": crypt.b64(salt),
                  "check": crypt.wrap(kek, crypt.CHECK_TEXT, rid)}
        record.update(crypt.SCRYPT)
        return record

    @classmethod
    def open(cls, record, passphrase):
        kek = crypt.derive_passphrase_key(passphrase, crypt.unb64(record["salt"]), record)
        if crypt.unwrap(kek, record["check"], record["id"]) != crypt.CHECK_TEXT:
            return None
        return cls(kek)

    def wrap(self, secret, context):
        return crypt.wrap(self.kek, secret, context)

    def unwrap(self, wrapped, context):
        return crypt.unwrap(self.kek, wrapped, context)


class KmsRecipient(object):
    """A KMS key: data keys are encrypted by KMS, bound to their id."""

    def __init__(self, client, key):
        self.client, self.key = client, key

    @staticmethod
    def create(client, key, cluster):
        rid = "kms-%s" % hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
        opener = KmsRecipient(client, key)
        return {"id": rid, "type": "kms", "key": key,
                "check": opener.wrap(crypt.CHECK_TEXT, "pgdr key check %s" % cluster)}

    @classmethod
    def open(cls, record, client, cluster):
        opener = cls(client, record["key"])
        text = opener.unwrap(record["check"], "pgdr key check %s" % cluster)
        return opener if text == crypt.CHECK_TEXT else None

    def wrap(self, secret, context):
        try:
            answer = self.client.encrypt(KeyId=self.key, Plaintext=secret,
                                         EncryptionContext={"pgdr": context})
        except Exception as exc:  # botocore's errors: one clear line
            raise RepositoryError("KMS key %s refused to encrypt a data key: %s"
                                  % (self.key, exc), code="kms_failed", stage="config")
        return crypt.b64(answer["CiphertextBlob"])

    def unwrap(self, wrapped, context):
        """The secret; None when this key did not wrap it (or the context differs)."""
        try:
            answer = self.client.decrypt(CiphertextBlob=crypt.unb64(wrapped), KeyId=self.key,
                                         EncryptionContext={"pgdr": context})
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in KMS_NOT_THIS_KEY:
                return None
            raise RepositoryError("KMS key %s refused to decrypt a data key: %s"
                                  % (self.key, exc), code="kms_failed", stage="config")
        return answer["Plaintext"]


def encode_record(record):
    return (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _changed(key, source):
    return IntegrityError("%s changed while it was stored as %s: its SHA-256 is not the one "
                          "given; nothing was written" % (source, key), code="src_changed",
                          key=key)


def _key_missing(cluster, where, why):
    return ConfigError("the repository %s encrypts cluster %s (%s) and neither "
                       "encryption_passphrase nor encryption_kms_key is set: nothing is "
                       "read or written without a key" % (where, cluster, why),
                       code="encryption_key_missing", stage="config")


def _not_encrypted(cluster, where, why):
    return ConfigError("an encryption key is configured but cluster %s in %s is not "
                       "encrypted (%s): pgdr never mixes plaintext and encrypted objects; "
                       "use a new cluster name or repository for encrypted backups"
                       % (cluster, where, why), code="repository_not_encrypted",
                       stage="config")
