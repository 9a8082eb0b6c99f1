"""The encrypted object format and the sealed storage (issue 17): round trips, every
kind of tampering refused, clients that must not read or write refused before anything
is written, two recipients (passphrase and KMS, against moto), and key rotation."""
import json
import os

import moto
import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import crypt, options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import key_rotate
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    ConfigError, IntegrityError, PgdrError)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage import open_storage
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage import sealed

KEY = b"k" * 32
OBJ = "c/backup/20260101T000000Z-full/data/base/1/2.zst"
PIECE = "c/backup/20260101T000000Z-full/data/base/1/3.zst"
WAL = "c/wal/0000000100000000/000000010000000000000001.zst"


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 64, 100])
def test_round_trip_across_segment_boundaries(size):
    data = os.urandom(size)
    sealed_bytes = crypt.seal(data, OBJ, "backup-x", KEY, segment_size=16)
    assert crypt.is_sealed(sealed_bytes) and data not in sealed_bytes[20:] or size < 4
    assert crypt.open_sealed(sealed_bytes, OBJ, KEY) == data
    assert crypt.parse_header(sealed_bytes, OBJ)[0] == "backup-x"


def test_the_same_plaintext_never_seals_the_same():
    assert crypt.seal(b"x" * 100, OBJ, "i", KEY) != crypt.seal(b"x" * 100, OBJ, "i", KEY)


def _refused(data, key=OBJ, secret=KEY, code="decrypt_failed"):
    with pytest.raises(IntegrityError) as info:
        crypt.open_sealed(data, key, secret)
    assert info.value.code == code and key in info.value.msg
    return info.value.msg


def test_every_kind_of_tampering_is_refused():
    data = os.urandom(64)
    good = crypt.seal(data, OBJ, "backup-x", KEY, segment_size=16)
    body = len(good) - 4 * (16 + crypt.TAG)
    for offset in (0, 9, body - 1, body, len(good) - 1):  # header, key id, salt, data, tag
        flipped = bytearray(good)
        flipped[offset] ^= 1
        with pytest.raises(IntegrityError):
            crypt.open_sealed(bytes(flipped), OBJ, KEY)
    # cut at a segment boundary: the last segment left was not sealed as the last
    assert "fails authentication" in _refused(good[:body + 2 * (16 + crypt.TAG)])
    _refused(good[:-1])
    _refused(good + b"\0" * 5)
    _refused(good, key=PIECE)                       # moved or swapped to another key
    _refused(good, secret=b"j" * 32)                # another data key
    _refused(crypt.MAGIC + b"\1", code="decrypt_failed")  # shorter than a header
    _refused(b"{\"plain\": true}" * 3, code="object_not_encrypted")


def repo(tmp_path, **extra):
    values = dict(repo_type="posix", repo_path=str(tmp_path / "repo"), cluster="c")
    values.update(extra)
    return open_storage(options.resolve(values, environ={}))


def files(tmp_path):
    root = tmp_path / "repo"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_sealed_repository_stores_only_ciphertext_and_reads_back(tmp_path):
    st = repo(tmp_path, encryption_passphrase="correct horse")
    assert st.put(OBJ, b"secret rows" * 100) is True
    assert st.put(WAL, b"wal bytes") is True
    assert st.get(OBJ) == b"secret rows" * 100
    # a retry of the same bytes after a lost answer is not a conflict, other bytes are
    assert st.put(OBJ, b"secret rows" * 100, if_absent=True) is False
    with pytest.raises(PgdrError) as info:
        st.put(OBJ, b"other", if_absent=True)
    assert info.value.code in ("conflict", "object_exists")
    raw = (tmp_path / "repo" / OBJ).read_bytes()
    assert raw.startswith(crypt.MAGIC) and b"secret rows" not in raw
    ids = [f for f in files(tmp_path) if f.startswith("c/keys/data/") and f.endswith(".json")]
    assert [i.rsplit(".", 2)[0] for i in ids] == ["c/keys/data/backup-20260101T000000Z-full",
                                                  "c/keys/data/wal-0000000100000000"]
    for name in files(tmp_path):
        assert b"correct horse" not in (tmp_path / "repo" / name).read_bytes()
    # plaintext size and SHA-256 for callers that compare with a local file
    info = st.plain_head(OBJ)
    assert info.size == 1100
    import hashlib
    assert st.stored_sha256(OBJ) == hashlib.sha256(b"secret rows" * 100).hexdigest()


@pytest.mark.parametrize("settings, code", [
    ({}, "encryption_key_missing"),
    ({"encryption_passphrase": "wrong"}, "encryption_key_wrong"),
])
def test_clients_without_the_key_touch_nothing(tmp_path, settings, code):
    repo(tmp_path, encryption_passphrase="correct horse").put(OBJ, b"rows")
    before = {n: (tmp_path / "repo" / n).read_bytes() for n in files(tmp_path)}
    other = repo(tmp_path, **settings)
    for action in (lambda: other.get(OBJ), lambda: other.get(OBJ, sha256="0" * 64),
                   lambda: other.put(PIECE, b"x"), lambda: other.put(WAL, b"x"),
                   lambda: other.encrypted("c")):
        with pytest.raises(ConfigError) as info:
            action()
        assert info.value.code == code and "nothing" in info.value.msg
    assert {n: (tmp_path / "repo" / n).read_bytes() for n in files(tmp_path)} == before


def test_a_key_never_writes_into_a_plaintext_repository(tmp_path):
    repo(tmp_path).put(WAL, b"plain wal")
    before = files(tmp_path)
    keyed = repo(tmp_path, encryption_passphrase="p")
    for action in (lambda: keyed.put(OBJ, b"x"), lambda: keyed.get(WAL),
                   lambda: keyed.encrypted("c")):
        with pytest.raises(ConfigError) as info:
            action()
        assert info.value.code == "repository_not_encrypted" and "wal/" in info.value.msg \
            or "not encrypted" in info.value.msg
    assert files(tmp_path) == before
    # a plaintext object slipped into an encrypted repository is refused too
    keyed2 = repo(tmp_path, cluster="d", encryption_passphrase="p")
    keyed2.put("d/backup/x/a", b"x")
    repo(tmp_path).inner.put("d/backup/x/b", b"plain")
    with pytest.raises(IntegrityError) as info:
        keyed2.get("d/backup/x/b")
    assert info.value.code == "object_not_encrypted"


def test_a_missing_or_moved_data_key_is_refused(tmp_path):
    st = repo(tmp_path, encryption_passphrase="p")
    st.put(OBJ, b"rows")
    st.put(PIECE, b"more")
    fresh = repo(tmp_path, encryption_passphrase="p")
    raw = fresh.inner.get(OBJ)
    fresh.inner.put(PIECE, raw)  # swapped, with a valid storage checksum
    with pytest.raises(IntegrityError) as info:
        fresh.get(PIECE)
    assert info.value.code == "decrypt_failed" and PIECE in info.value.msg
    fresh.inner.delete([i.key for i in fresh.list("c/keys/data/backup-")])
    with pytest.raises(IntegrityError) as info:
        repo(tmp_path, encryption_passphrase="p").get(OBJ)
    assert info.value.code == "data_key_missing"


def kms_key(region="us-east-1"):
    import boto3
    client = boto3.client("kms", region_name=region)
    return client, client.create_key()["KeyMetadata"]["Arn"]


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with moto.mock_aws():
        yield


def test_two_recipients_either_one_opens_and_escrow_survives_a_lost_kms_key(tmp_path, aws):
    client, arn = kms_key()
    st = repo(tmp_path, encryption_passphrase="escrow", encryption_kms_key=arn)
    st.put(OBJ, b"rows")
    record = json.loads((tmp_path / "repo" / "c/keys/repository.json").read_text())
    assert sorted(r["type"] for r in record["recipients"]) == ["kms", "passphrase"]
    assert repo(tmp_path, encryption_kms_key=arn).get(OBJ) == b"rows"
    assert repo(tmp_path, encryption_passphrase="escrow").get(OBJ) == b"rows"
    from moto.kms.models import kms_backends
    del kms_backends["123456789012"]["us-east-1"].keys[arn.split("/")[-1]]  # the key is lost
    with pytest.raises(PgdrError) as info:
        repo(tmp_path, encryption_kms_key=arn).get(OBJ)
    assert info.value.code in ("kms_failed", "encryption_key_wrong")
    assert repo(tmp_path, encryption_passphrase="escrow").get(OBJ) == b"rows"
    # a writer must wrap new data keys for both: with only one it refuses
    with pytest.raises(ConfigError) as info:
        repo(tmp_path, encryption_passphrase="escrow").put(WAL, b"x")
    assert info.value.code == "encryption_key_wrong" and "kms-" in info.value.msg


def rotate(tmp_path, **settings):
    values = dict(repo_type="posix", repo_path=str(tmp_path / "repo"), cluster="c")
    values.update(settings)
    return key_rotate.run(options.resolve(values, environ={}), Progress(open(os.devnull, "w")))


def test_rotation_rewraps_without_touching_data(tmp_path, aws):
    st = repo(tmp_path, encryption_passphrase="old")
    st.put(OBJ, b"rows")
    st.put(WAL, b"wal")
    data_before = {n: (tmp_path / "repo" / n).read_bytes() for n in files(tmp_path)
                   if "/keys/" not in n}
    result = rotate(tmp_path, encryption_passphrase="old", new_encryption_passphrase="new")
    assert result["data_keys"] == 2 and len(result["removed"]) == 1
    assert data_before == {n: (tmp_path / "repo" / n).read_bytes() for n in files(tmp_path)
                           if "/keys/" not in n}
    assert repo(tmp_path, encryption_passphrase="new").get(OBJ) == b"rows"
    with pytest.raises(ConfigError) as info:
        repo(tmp_path, encryption_passphrase="old").get(OBJ)
    assert info.value.code == "encryption_key_wrong"
    # a KMS escrow added beside the passphrase, then the passphrase alone still opens
    client, arn = kms_key()
    result = rotate(tmp_path, encryption_passphrase="new", encryption_kms_key=arn,
                    new_encryption_kms_key=arn)
    assert not result["removed"] and len(result["added"]) == 1
    assert repo(tmp_path, encryption_kms_key=arn).get(WAL) == b"wal"
    assert repo(tmp_path, encryption_passphrase="new").get(WAL) == b"wal"
    for name in files(tmp_path):
        if name.startswith("c/keys/data/") and name.endswith(".json"):
            wrapped = json.loads((tmp_path / "repo" / name).read_text())["wrapped"]
            assert sorted(k.split("-")[0] for k in wrapped) == ["kms", "passphrase"]


def test_rotation_refuses_a_plaintext_repository_and_nothing_to_rotate(tmp_path):
    repo(tmp_path).put(WAL, b"x")
    with pytest.raises(ConfigError) as info:
        rotate(tmp_path, new_encryption_passphrase="n")
    assert info.value.code in ("repository_not_encrypted",)
    with pytest.raises(ConfigError) as info:
        rotate(tmp_path)
    assert info.value.code == "config_missing"


def test_key_scopes_follow_the_repository_layout():
    assert sealed.scope_of(OBJ) == "backup-20260101T000000Z-full"
    assert sealed.scope_of("c/snapshot/X-snapshot/manifest.json") == "backup-X-snapshot"
    assert sealed.scope_of(WAL) == "wal-0000000100000000"
    assert sealed.scope_of("c/wal/history/00000002.history") == "wal-history"
    assert sealed.scope_of("c/lock/backup.json", now=0) == "misc-197001"


def test_concurrent_writers_never_share_a_data_key_record(tmp_path):
    """Two nodes sealing the same scope at once (a month's leases, a WAL period): each
    makes its own data key, so no server's if_absent semantics can replace one."""
    first = repo(tmp_path, encryption_passphrase="p")
    second = repo(tmp_path, encryption_passphrase="p")
    first.put("c/lock/a.json", b"first")
    second.put("c/lock/b.json", b"second")
    assert len(first.list("c/keys/data/misc-")) == 2
    third = repo(tmp_path, encryption_passphrase="p")
    assert third.get("c/lock/a.json") == b"first" and third.get("c/lock/b.json") == b"second"


def test_a_writer_opened_before_a_rotation_seals_nothing_under_a_stale_record(tmp_path):
    old = repo(tmp_path, encryption_passphrase="old")
    old.put(WAL, b"wal")  # opened, with its WAL key made
    rotate(tmp_path, encryption_passphrase="old", new_encryption_passphrase="new")
    before = files(tmp_path)
    with pytest.raises(ConfigError) as info:
        old.put(OBJ, b"rows")  # a new data key: the record it reads again has "new" only
    assert info.value.code == "encryption_key_wrong"
    assert [f for f in files(tmp_path) if f not in before and "/keys/" not in f] == []


def test_a_sha256_that_does_not_match_is_refused_and_large_files_are_streamed(tmp_path):
    st = repo(tmp_path, encryption_passphrase="p")
    with pytest.raises(IntegrityError) as info:
        st.put(OBJ, b"rows", sha256="0" * 64)
    assert info.value.code == "src_changed" and not (tmp_path / "repo" / OBJ).exists()
    big = tmp_path / "dump"
    big.write_bytes(os.urandom(3 * crypt.SEGMENT_SIZE + 5))
    import hashlib
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    assert st.put_file("c/dumps/dump", str(big), sha256=digest) is True
    assert st.put_file("c/dumps/dump", str(big), sha256=digest, if_absent=True) is False
    assert repo(tmp_path, encryption_passphrase="p").get("c/dumps/dump") == big.read_bytes()
    assert st.stored_sha256("c/dumps/dump") == digest


def test_expire_removes_an_expired_backups_data_keys_and_nothing_else(tmp_path):
    """Crypto-shredding: with its data keys gone, a copy of an expired backup's objects
    left anywhere (an old version in a versioned bucket) can no longer be read. The kept
    backup, the WAL and their keys stay, and read back."""
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import catalog
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.catalog import Catalog
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import expire
    values = dict(repo_type="posix", repo_path=str(tmp_path / "repo"), cluster="c",
                  encryption_passphrase="p")
    st = repo(tmp_path, encryption_passphrase="p")
    ids = ("20260101T000000Z-full", "20260102T000000Z-full")
    for backup_id, start in zip(ids, ("000000010000000000000002", "000000010000000000000005")):
        st.put("c/backup/%s/data/base/1/1.zst" % backup_id, b"rows of " + backup_id.encode())
        catalog.write_manifest(st, "c", {
            "format": catalog.FORMAT, "id": backup_id, "cluster": "c", "type": "full",
            "chain": [backup_id], "timeline": 1, "start_wal": start,
            "stop_time": "2026-01-0%sT00:00:00Z" % backup_id[7]})
    st.put("c/wal/0000000100000000/000000010000000000000005", b"wal")
    root = tmp_path / "repo"
    old_copy = dict((name, (root / name).read_bytes()) for name in files(tmp_path)
                    if name.startswith("c/backup/%s/" % ids[0]))
    result = expire.run(options.resolve(dict(values, retention_full=1), environ={}), Progress())
    assert result["expired"] == [ids[0]]
    left = files(tmp_path)
    assert not [f for f in left if ids[0] in f], left
    assert len([f for f in left if f.startswith("c/keys/data/backup-%s." % ids[1])]) == 1
    assert len([f for f in left if f.startswith("c/keys/data/wal-")]) == 1
    again = repo(tmp_path, encryption_passphrase="p")
    assert again.get("c/backup/%s/data/base/1/1.zst" % ids[1]) == b"rows of " + ids[1].encode()
    assert [m["id"] for m in Catalog(again, "c").scan()[0]] == [ids[1]]
    # the expired backup's objects, put back as old versions would be: unreadable now
    for name, body in old_copy.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
    with pytest.raises(PgdrError) as info:
        again.get("c/backup/%s/data/base/1/1.zst" % ids[0])
    assert info.value.code == "data_key_missing"
