"""The repository lease: at most one holder, expiry, and a takeover only one node wins."""
import os
import socket
import time

import json

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (Conflict,
                                                                                   RepositoryError)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.lease import (READ_ATTEMPTS,
                                                                                  Lease)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.options import resolve
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage.posix import PosixStorage


class Clock(object):
    """Starts at the real time (markers and damaged leases age by their stored mtime)."""

    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


@pytest.fixture
def storage(tmp_path):
    return PosixStorage(resolve({"repo_type": "posix", "repo_path": str(tmp_path)}, environ={}))


def lease(storage, clock, holder):
    made = Lease(storage, "main", "backup", 60, clock=clock, sleep=lambda seconds: None)
    made.holder = holder
    made._start_renewal = lambda: None  # no background thread in unit tests
    return made


def test_second_node_sees_the_holder(storage):
    clock = Clock()
    first, second = lease(storage, clock, "pg1:1"), lease(storage, clock, "pg2:2")
    assert first.acquire() == (True, None)
    held, holder = second.acquire()
    assert held is False and holder["holder"] == "pg1:1" and holder["expires_at"] == clock.now + 60


def test_release_frees_and_only_the_holder_releases(storage):
    clock = Clock()
    first, second = lease(storage, clock, "pg1:1"), lease(storage, clock, "pg2:2")
    assert first.acquire()[0]
    second.release()  # not the holder: the lease stays
    assert second.acquire()[0] is False
    first.release()
    assert second.acquire()[0] is True


def test_expired_lease_of_a_dead_node_is_taken_over_once(storage):
    clock = Clock()
    dead = lease(storage, clock, "pg1:1")
    assert dead.acquire()[0]
    clock.now += 61  # the holder died and never renewed
    taker, late = lease(storage, clock, "pg2:2"), lease(storage, clock, "pg3:3")
    stale = dead.current()
    assert taker.acquire() == (True, None)
    assert taker.current()["holder"] == "pg2:2"
    # a slow contender that read the same expired lease cannot win that takeover again
    views = [stale]
    real_read = late.read
    late.read = lambda: views.pop() if views else real_read()
    held, holder = late.acquire()
    assert held is False
    assert taker.current()["holder"] == "pg2:2"
    # and the dead node's late release does not remove the new holder's lease
    dead.release()
    assert taker.current()["holder"] == "pg2:2"


def test_lease_of_a_dead_process_on_this_host_is_taken_at_once(storage):
    clock = Clock()
    dead = lease(storage, clock, "%s:%d" % (socket.gethostname(), 2 ** 22 + 12345))
    assert dead.acquire()[0]  # a pid above pid_max: no such process
    taker = lease(storage, clock, "%s:%d" % (socket.gethostname(), os.getpid()))
    assert taker.acquire() == (True, None)
    assert taker.current()["holder"] == taker.holder


class FaultyStorage(object):
    """A real PosixStorage that fails chosen calls the way S3 does under faults.

    ``fail(method, action, times)``: the next ``times`` calls of ``method`` on the lease
    key (or on keys containing ``match``) do ``action``: ``500-after`` (the write is
    stored, the answer lost), ``conflict-after`` (stored, then the client's retry gets
    412), ``500`` (nothing stored / nothing read), ``cut`` (a read returns a truncated
    body)."""

    def __init__(self, inner):
        self.inner = inner
        self.faults = []
        self.calls = []

    def fail(self, method, action, times=1, match="lock/backup.json"):
        self.faults.extend([(method, match, action)] * times)

    def _fault(self, method, key):
        self.calls.append((method, key))
        for index, (wanted, match, action) in enumerate(self.faults):
            if wanted == method and match in key and (match != "lock/backup.json"
                                                      or key.endswith(match)):
                del self.faults[index]
                return action
        return None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put(self, key, data, sha256=None, if_absent=False):
        action = self._fault("put", key)
        if action == "500":
            raise RepositoryError("S3 put of %s failed: InternalError" % key, code="s3_error")
        self.inner.put(key, data, sha256=sha256, if_absent=if_absent)
        if action == "500-after":
            raise RepositoryError("S3 put of %s failed: InternalError" % key, code="s3_error")
        if action == "conflict-after":
            raise Conflict("object %s already exists" % key, code="object_exists")

    def get(self, key):
        action = self._fault("get", key)
        if action == "500":
            raise RepositoryError("S3 get of %s failed: InternalError" % key, code="s3_error")
        data = self.inner.get(key)
        return data[:len(data) // 2] if action == "cut" else data


@pytest.fixture
def faulty(storage):
    return FaultyStorage(storage)


def lease_path(storage):
    return os.path.join(storage.root, "main", "lock", "backup.json")


@pytest.mark.parametrize("action", ["500-after", "conflict-after"])
def test_d11_7_a_lost_answer_to_our_own_lease_write_is_our_lease(faulty, action):
    clock = Clock()
    mine = lease(faulty, clock, "pg1:1")
    faulty.fail("put", action)
    assert mine.acquire() == (True, None)  # not "pg1:1 holds the backup lease": itself
    assert mine.current()["nonce"] == mine.nonce
    other = lease(faulty, clock, "pg2:2")
    assert other.acquire()[0] is False


def test_d11_7_a_cut_lease_read_is_retried_and_never_lets_a_second_node_in(faulty):
    clock = Clock()
    first, second = lease(faulty, clock, "pg1:1"), lease(faulty, clock, "pg2:2")
    assert first.acquire()[0]
    faulty.fail("get", "cut", times=READ_ATTEMPTS - 1)
    held, holder = second.acquire()
    assert held is False and holder["holder"] == "pg1:1"  # verified live: a real skip
    # a lease that stays unreadable: a clear error, no skip, no takeover
    faulty.fail("get", "cut", times=READ_ATTEMPTS)
    with pytest.raises(RepositoryError) as raised:
        second.acquire()
    assert raised.value.code == "lease_unreadable" and "main/lock/backup.json" in raised.value.msg
    faulty.fail("get", "500", times=READ_ATTEMPTS)
    with pytest.raises(RepositoryError) as raised:
        second.acquire()
    assert raised.value.code == "lease_unreadable"
    assert first.current()["nonce"] == first.nonce
    assert not [k for m, k in faulty.calls if m == "put" and ".takeover." in k]


def test_d11_7_damaged_lease_with_a_leftover_marker_does_not_block_forever(faulty, storage):
    clock = Clock()
    dead = lease(faulty, clock, "pg1:1")
    assert dead.acquire()[0]
    with open(lease_path(storage), "wb") as handle:
        handle.write(b'{"holder": "pg1:1", "nonce": "ab')  # damaged in the store
    # a leftover marker of an earlier takeover of that damaged lease that died half-way
    taker = lease(faulty, clock, "pg2:2")
    stale_marker = "main/lock/backup.json.takeover.%s.0" % taker._ident(taker.read())
    storage.put(stale_marker, b"pg9:9", if_absent=True)
    # rewritten less than a period ago: it may be a live holder's -> an error, not a skip
    with pytest.raises(RepositoryError) as raised:
        taker.acquire()
    assert raised.value.code == "lease_unreadable" and "taken over after" in raised.value.msg
    clock.now += 61  # nobody rewrote it for a whole period: recoverable, said so
    logged = []
    taker.log = logged.append
    assert taker.acquire() == (True, None)
    assert taker.current()["holder"] == "pg2:2"
    assert any("damaged" in line for line in logged)
    assert any("superseding" in line for line in logged)
    assert storage.head(stale_marker[:-1] + "1") is not None


def test_d11_7_a_taker_that_died_half_way_blocks_for_one_period_only(faulty, storage):
    clock = Clock()
    dead = lease(faulty, clock, "pg1:1")
    assert dead.acquire()[0]
    clock.now += 61
    # a taker won the marker, then died before it replaced the lease
    marker = "main/lock/backup.json.takeover.%s.0" % dead.nonce
    storage.put(marker, b"pg9:9", if_absent=True)
    os.utime(os.path.join(storage.root, *marker.split("/")), (clock.now, clock.now))
    second = lease(faulty, clock, "pg2:2")
    with pytest.raises(RepositoryError) as raised:
        second.acquire()  # not exit 0: nobody runs a backup
    assert raised.value.code == "lease_contended" and "taking over" in raised.value.msg
    clock.now += 61
    assert second.acquire() == (True, None)


def test_d11_7_a_lease_that_cannot_be_renewed_before_it_expires_is_lost(faulty):
    clock = Clock()
    mine = lease(faulty, clock, "pg1:1")
    assert mine.acquire()[0]
    mine.set_backup("20261202T000000Z-full")
    assert mine.current()["backup_id"] == "20261202T000000Z-full"
    faulty.fail("put", "500", times=100)  # the repository is down for writes
    clock.now += 30
    with pytest.raises(RepositoryError):
        mine.renew()
    mine.check()  # not expired yet: the backup goes on
    clock.now += 25  # 55 s of 60: past the safety margin before expiry
    with pytest.raises(RepositoryError) as raised:
        mine.check()
    assert raised.value.code == "lease_lost"
    # a node that takes it over after the expiry runs alone: this one stopped
    clock.now += 10
    faulty.faults = []
    taker = lease(faulty, clock, "pg2:2")
    assert taker.acquire() == (True, None)
    with pytest.raises(RepositoryError):
        mine.renew()
    assert taker.current()["nonce"] == taker.nonce


def test_d11_7_renewal_stops_when_another_node_holds_the_lease(faulty, storage):
    clock = Clock()
    mine = lease(faulty, clock, "pg1:1")
    assert mine.acquire()[0]
    other = lease(faulty, clock, "pg2:2")
    storage.put("main/lock/backup.json", other_body(other, clock))
    with pytest.raises(RepositoryError) as raised:
        mine.renew()
    assert raised.value.code == "lease_lost" and "pg2:2" in raised.value.msg
    assert mine.current()["holder"] == "pg2:2"  # never overwritten by the loser


def other_body(other, clock):
    return json.dumps({"holder": other.holder, "nonce": other.nonce,
                       "expires_at": clock.now + 60}).encode()


def test_d11_7_lease_state_for_cleanup(faulty, storage):
    clock = Clock()
    probe = lease(faulty, clock, "pg3:3")
    assert probe.state() == ("absent", None)
    mine = lease(faulty, clock, "pg1:1")
    assert mine.acquire()[0]
    assert probe.state()[0] == "live"
    faulty.fail("get", "500", times=READ_ATTEMPTS)
    status, why = probe.state()
    assert status == "unknown" and "cannot be read" in why
    clock.now += 61
    assert probe.state()[0] == "free"
