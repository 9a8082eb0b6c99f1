# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lease in the repository: at most one node backs up a cluster at a time.

Only create-if-absent writes decide who holds it (S3 If-None-Match: *, posix
link()), so it needs no lock service. The lease names its holder and expires:
a holder that dies blocks others only until then; a live holder renews it.

Taking over an expired lease is itself a create-if-absent race: the taker
writes a marker keyed by the expired lease's nonce, and only the node whose
marker write succeeds may remove the old lease and write its own. Markers stay
behind (tiny), so a slow contender can never win the same takeover twice.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import socket
import threading
import time
import uuid

from .errors import Conflict, NotFound


class Lease(object):
    def __init__(self, storage, cluster, name, seconds, clock=time.time):
        self.storage = storage
        self.key = "%s/lock/%s.json" % (cluster, name)
        self.seconds = seconds
        self.clock = clock
        self.holder = "%s:%d" % (socket.gethostname(), os.getpid())
        self.nonce = uuid.uuid4().hex
        self._stop = threading.Event()
        self._renewer = None

    def _body(self):
        now = self.clock()
        return json.dumps({"holder": self.holder, "nonce": self.nonce, "acquired_at": now,
                           "expires_at": now + self.seconds}).encode("utf-8")

    def current(self):
        """The lease as stored, or None."""
        try:
            return json.loads(self.storage.get(self.key).decode("utf-8"))
        except NotFound:
            return None
        except ValueError:
            return {"holder": "unknown (unreadable lease)", "nonce": "unreadable",
                    "expires_at": 0}

    def acquire(self):
        """(True, None) when held now; (False, the holder's lease) when someone else
        holds a valid one."""
        for dummy in range(3):
            try:
                self.storage.put(self.key, self._body(), if_absent=True)
                self._start_renewal()
                return True, None
            except Conflict:
                pass
            held = self.current()
            if held is None:
                continue  # released meanwhile: try again
            if held.get("expires_at", 0) > self.clock() and not self._dead_here(held):
                return False, held
            marker = "%s.takeover.%s" % (self.key, held.get("nonce"))
            try:
                self.storage.put(marker, self.holder.encode("utf-8"), if_absent=True)
            except Conflict:
                return False, held  # another node is taking it over
            self.storage.delete([self.key])
        return False, self.current()

    @staticmethod
    def _dead_here(held):
        """True when the holder ran on this host and its process is gone (killed, or
        crashed): its lease need not block anyone until it expires."""
        host, sep, pid = str(held.get("holder", "")).rpartition(":")
        if not sep or host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except OSError as exc:
            return exc.errno == errno.ESRCH
        try:  # a killed process not yet reaped by its parent is a zombie: dead too
            with open("/proc/%s/stat" % pid) as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (IOError, OSError, IndexError):
            return False

    def _start_renewal(self):
        def renew():
            while not self._stop.wait(self.seconds / 3.0):
                self.storage.put(self.key, self._body())
        self._renewer = threading.Thread(target=renew, name="pgdr-lease", daemon=True)
        self._renewer.start()

    def release(self):
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        held = self.current()
        if held is not None and held.get("nonce") == self.nonce:
            self.storage.delete([self.key])
