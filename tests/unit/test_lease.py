"""The repository lease: at most one holder, expiry, and a takeover only one node wins."""
import os
import socket

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.lease import Lease
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.options import resolve
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage.posix import PosixStorage


class Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def storage(tmp_path):
    return PosixStorage(resolve({"repo_type": "posix", "repo_path": str(tmp_path)}, environ={}))


def lease(storage, clock, holder):
    made = Lease(storage, "main", "backup", 60, clock=clock)
    made.holder = holder
    made._start_renewal = lambda: None  # no background thread in unit tests
    return made


def test_second_node_sees_the_holder(storage):
    clock = Clock()
    first, second = lease(storage, clock, "pg1:1"), lease(storage, clock, "pg2:2")
    assert first.acquire() == (True, None)
    held, holder = second.acquire()
    assert held is False and holder["holder"] == "pg1:1" and holder["expires_at"] == 1060.0


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
    late.current = lambda: stale
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
