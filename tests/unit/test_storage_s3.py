"""The S3 backend's retries and read-back logic against a scripted client (issue 11,
defects 5, 8 and 9): what is retried, what is settled by the stored SHA-256, what is
reported as damage."""
import hashlib
import io

import pytest
from botocore.exceptions import (ClientError, ConnectionClosedError, EndpointConnectionError,
                                 ResponseStreamingError)
from botocore.response import StreamingBody

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    Conflict, IntegrityError, NotFound, RepositoryError)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage import (
    open_storage, s3)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def client_error(status, code, operation="PutObject"):
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class Fake:
    """A bucket in a dict; `faults` is a list of callables run before each request
    (None: no fault), popped in order."""

    def __init__(self):
        self.objects = {}   # key -> (bytes, metadata)
        self.faults = []
        self.calls = []

    def _fault(self, name, **kwargs):
        self.calls.append(name)
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            return fault(name, kwargs)
        return None

    def put_object(self, Bucket, Key, Body, Metadata, IfNoneMatch=None, **other):
        def store():
            if IfNoneMatch and Key in self.objects:
                raise client_error(412, "PreconditionFailed")
            self.objects[Key] = (Body, Metadata)
        if self._fault("put", store=store) == "skip":
            return {}
        store()
        return {}

    def head_object(self, Bucket, Key):
        self._fault("head")
        if Key not in self.objects:
            raise client_error(404, "404", "HeadObject")
        body, meta = self.objects[Key]
        return {"ContentLength": len(body), "Metadata": dict(meta)}

    def get_object(self, Bucket, Key):
        body_fault = self._fault("get")
        if Key not in self.objects:
            raise client_error(404, "NoSuchKey", "GetObject")
        body, meta = self.objects[Key]
        if body_fault == "cut":
            stream = StreamingBody(io.BytesIO(body[:len(body) // 2]), len(body))
        elif body_fault == "reset":
            class Broken:
                def read(self, *args):
                    raise ResponseStreamingError(error="Connection reset by peer")

                def close(self):
                    pass
            stream = Broken()
        elif body_fault == "flip":
            damaged = bytearray(body)
            damaged[0] ^= 1
            stream = StreamingBody(io.BytesIO(bytes(damaged)), len(body))
        else:
            stream = StreamingBody(io.BytesIO(body), len(body))
        return {"Body": stream, "ContentLength": len(body), "Metadata": dict(meta)}


def after_store_500(name, kwargs):
    kwargs["store"]()
    raise client_error(500, "InternalError")


def reset_before(name, kwargs):
    raise ConnectionClosedError(endpoint_url="http://127.0.0.1:1/b/k")


def after_store_reset(name, kwargs):
    kwargs["store"]()
    raise ConnectionClosedError(endpoint_url="http://127.0.0.1:1/b/k")


def body(kind):
    return lambda name, kwargs: kind


@pytest.fixture
def storage(monkeypatch):
    monkeypatch.setattr(s3.time, "sleep", lambda seconds: None)
    events = []
    st = open_storage(options.resolve({"repo_type": "s3", "s3_bucket": "bk",
                                       "s3_endpoint": "http://127.0.0.1:1",
                                       "s3_max_attempts": 4}, environ={}),
                      events=events.append).inner  # the backend itself, not sealed.Sealed
    st._local.raw = Fake()
    st.recorded = events
    return st


def test_d11_8_cut_and_reset_bodies_are_retried(storage):
    storage.put("k", b"0123456789")
    fake = storage._raw
    fake.faults = [body("cut"), body("reset"), None]
    assert storage.get("k") == b"0123456789"
    assert fake.calls[-3:] == ["get", "get", "get"]
    assert len(storage.recorded) == 2 and "IncompleteRead" in storage.recorded[0]
    assert all("; retry " in line for line in storage.recorded)


def test_d11_8_truncated_forever_is_a_repository_error_not_damage(storage):
    storage.put("k", b"0123456789")
    storage._raw.faults = [body("cut")] * 4
    with pytest.raises(RepositoryError) as info:
        storage.get("k")
    assert info.value.code != "checksum_mismatch" and "gave up after 4 attempts" in \
        info.value.msg


def test_d11_8_server_errors_retried_then_given_up(storage):
    storage._raw.faults = [lambda n, k: (e for e in ()).throw(client_error(503, "SlowDown"))] * 4
    with pytest.raises(RepositoryError) as info:
        storage.put("k", b"x")
    assert "gave up after 4 attempts" in info.value.msg and "SlowDown" in info.value.msg
    assert len(storage.recorded) == 3


def test_d11_5_damaged_read_is_read_again_then_refused(storage):
    storage.put("k", b"0123456789")
    storage._raw.faults = [body("flip"), None]
    assert storage.get("k") == b"0123456789"  # one damaged transfer: read again
    assert "reading it again" in storage.recorded[-1]
    storage._raw.faults = [body("flip"), body("flip")]
    with pytest.raises(IntegrityError) as info:
        storage.get("k")
    assert info.value.code == "checksum_mismatch" and "k" in info.value.msg
    assert info.value.details["expected_sha256"] == sha(b"0123456789")


def test_d11_5_no_recorded_checksum(storage):
    storage._raw.objects["k"] = (b"by hand", {})
    with pytest.raises(IntegrityError) as info:
        storage.get("k")
    assert info.value.code == "checksum_missing"
    assert storage.get("k", sha256=sha(b"by hand")) == b"by hand"
    with pytest.raises(NotFound):
        storage.get("absent")


@pytest.mark.parametrize("fault", [after_store_500, after_store_reset])
def test_d11_9_if_absent_answer_lost_is_settled_by_readback(storage, fault):
    storage._raw.faults = [None, fault]  # the HEAD, then the PUT that did store
    storage.put("manifest.json", b"{complete}", if_absent=True)
    assert storage._raw.objects["manifest.json"][0] == b"{complete}"
    assert storage.head("manifest.json").sha256 == sha(b"{complete}")


def test_d11_9_if_absent_412_with_other_bytes_is_a_conflict(storage):
    storage.put("lease", b"theirs", if_absent=True)
    with pytest.raises(Conflict) as info:
        storage.put("lease", b"ours", if_absent=True)
    assert info.value.code == "object_exists"
    # a reset before the request reached the server, then someone else's object: Conflict
    fake = storage._raw
    fake.faults = [None, reset_before, None]
    del fake.objects["lease"]
    original = fake.put_object

    def racing(**kwargs):
        fake.objects.setdefault("lease", (b"other", {"sha256": sha(b"other")}))
        return original(**kwargs)
    fake.put_object = racing
    with pytest.raises(Conflict):
        storage.put("lease", b"ours", if_absent=True)
    assert fake.objects["lease"][0] == b"other"


def test_plain_put_retried_after_reset(storage):
    storage._raw.faults = [reset_before, after_store_500, None]
    storage.put("k", b"v")
    assert storage.get("k") == b"v"


def test_connection_refused_retried_bounded(storage):
    def refused(name, kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    storage._raw.faults = [refused] * 4
    with pytest.raises(RepositoryError) as info:
        storage.head("k")
    assert info.value.code == "endpoint_unreachable"
    storage._raw.faults = [refused, None]
    assert storage.head("k") is None


def test_put_says_whether_it_wrote(storage):
    assert storage.put("k", b"x", if_absent=True) is True
    assert storage.put("k", b"x", if_absent=True) is False
    storage._raw.faults = [None, after_store_500]  # stored by an attempt of this call
    assert storage.put("j", b"x", if_absent=True) is True


def test_check_fails_fast_when_unreachable_but_retries_5xx(storage):
    fake = storage._raw
    calls = []

    def head_bucket(Bucket):
        calls.append(1)
        return fake._fault("head_bucket")
    fake.head_bucket = head_bucket

    def refused(name, kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    def unavailable(name, kwargs):
        raise client_error(503, "503", "HeadBucket")
    fake.faults = [refused] * 4
    with pytest.raises(RepositoryError) as info:
        storage.check()
    assert info.value.code == "endpoint_unreachable" and len(calls) == 2
    del calls[:]
    fake.faults = [unavailable] * 3 + [None]
    storage.check()  # a busy server is not a wrong port
    assert len(calls) == 4
