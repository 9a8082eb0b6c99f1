"""parallel.run_all: order kept, the first error stops the rest and is re-raised."""
import threading
import time

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import IntegrityError
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.parallel import run_all


def test_results_in_task_order():
    def slow_square(n):
        time.sleep(0.001 * (10 - n))
        return n * n
    assert run_all(slow_square, range(10), 4) == [n * n for n in range(10)]
    assert run_all(slow_square, [], 4) == []
    assert run_all(slow_square, [3], 0) == [9]  # workers < 1 still runs


def test_first_error_propagates_and_stops_the_rest():
    started = []
    lock = threading.Lock()

    def work(n):
        with lock:
            started.append(n)
        if n == 0:
            raise IntegrityError("bad piece %d" % n, code="checksum_mismatch")
        time.sleep(0.01)
        return n

    with pytest.raises(IntegrityError) as info:
        run_all(work, range(200), 2)
    assert info.value.code == "checksum_mismatch"
    assert len(started) < 200  # the pool stopped picking up work


def test_keyboard_interrupt_is_not_swallowed():
    def work(n):
        if n == 1:
            raise KeyboardInterrupt()
        return n
    with pytest.raises(KeyboardInterrupt):
        run_all(work, range(3), 2)
