# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run transfer tasks on a pool of threads; the first failure stops the rest.

Threads suit this work: zstd, zlib, hashlib and socket I/O release the GIL.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait


def run_all(function, tasks, workers):
    """Results of ``function(task)`` in task order; re-raises the first error."""
    tasks = list(tasks)
    if not tasks:
        return []
    stop = threading.Event()

    def guarded(task):
        if stop.is_set():
            return None  # a sibling failed: do no more work
        try:
            return function(task)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(guarded, task) for task in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and future.exception() is not None:
                stop.set()
                for other in futures:
                    other.cancel()
                raise future.exception()
    return [future.result() for future in futures]
