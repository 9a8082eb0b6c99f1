# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lease in the repository: at most one node backs up a cluster at a time.

Only create-if-absent writes decide who holds it (S3 If-None-Match: *, posix
link()), so it needs no lock service. The lease names its holder and expires:
a holder that dies blocks others only until then; a live holder renews it, and
a holder that cannot renew it before it expires gives it up (``check()`` then
fails its backup) rather than run beside a node that took it over.

Taking over an expired lease is itself a create-if-absent race: the taker
writes a marker ``<lease>.takeover.<lease nonce>.<attempt>``, and only the
node whose marker write succeeds may remove the old lease and write its own.
Markers stay behind (tiny), so a slow contender can never win the same
takeover twice; a marker older than the lease period belongs to a taker that
died half-way, and the next attempt number supersedes it.

Faults never decide: a write whose outcome is unknown is read back (our own
nonce means the lease is ours), and a read that fails or does not parse is
retried, never taken for an expired lease. A lease that stays unreadable is an
error, except a damaged lease nobody rewrote for a whole period: that one is
taken over, with a message saying so.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import socket
import threading
import time
import uuid

from .errors import Conflict, IntegrityError, NotFound, PgdrError, RepositoryError

READ_ATTEMPTS = 4    # reads of the lease before it counts as unreadable
ACQUIRE_ROUNDS = 6   # put/read rounds before contention is an error


def _iso(timestamp):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class Unreadable(object):
    """A lease object that exists but cannot be used: ``damaged`` when complete
    reads kept giving bytes that are not a lease (or failed their checksum), else
    the reads themselves failed; ``ident`` keys the takeover of a damaged one."""

    def __init__(self, damaged, why, ident=None):
        self.damaged, self.why, self.ident = damaged, why, ident


class Lease(object):
    def __init__(self, storage, cluster, name, seconds, clock=time.time, sleep=time.sleep,
                 log=None):
        self.storage = storage
        self.key = "%s/lock/%s.json" % (cluster, name)
        self.seconds = seconds
        self.clock = clock
        self.sleep = sleep
        self.log = log or (lambda message: None)
        self.holder = "%s:%d" % (socket.gethostname(), os.getpid())
        self.nonce = uuid.uuid4().hex
        self.backup_id = None
        self.acquired_at = None
        self.expires_at = None  # of the newest lease this node is sure it stored
        self.lost = None        # why this node no longer holds the lease
        self._stop = threading.Event()
        self._renewer = None

    # -- reading ---------------------------------------------------------------------
    def _body(self):
        now = self.clock()
        lease = {"holder": self.holder, "nonce": self.nonce,
                 "acquired_at": self.acquired_at or now, "renewed_at": now,
                 "expires_at": now + self.seconds}
        if self.backup_id:
            lease["backup_id"] = self.backup_id
        return lease

    def read(self):
        """The lease as stored: None when absent, a dict, or an Unreadable. Failed and
        unparsable reads are retried first (a cut body is not a damaged lease)."""
        why, damaged, raw = "", False, None
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                self.sleep(0.2 * 2 ** attempt)
            try:
                raw = self.storage.get(self.key)
            except NotFound:
                return None
            except IntegrityError as exc:  # a complete read failed its checksum
                why, damaged, raw = exc.msg, True, None
                continue
            except PgdrError as exc:
                why, damaged = exc.msg, False
                continue
            lease = _parse(raw)
            if lease is not None:
                return lease
            why, damaged = "%d bytes that are not a lease: %r" % (len(raw), raw[:60]), True
        ident = "damaged-" + hashlib.sha256(raw).hexdigest()[:16] if raw is not None else None
        return Unreadable(damaged, why, ident)

    def current(self):
        """The lease as stored, or None; RepositoryError when it cannot be read."""
        held = self.read()
        if isinstance(held, Unreadable):
            raise self._unreadable(held, None)
        return held

    def _stored_at(self):
        """When the lease object was last written, from the listing (None: absent)."""
        for info in self.storage.list(self.key):
            if info.key == self.key:
                return info.mtime
        return None

    def _unreadable(self, held, stored_at):
        since = (" (stored at %s; if no backup runs, it is taken over after %s)"
                 % (_iso(stored_at), _iso(stored_at + self.seconds)) if stored_at else "")
        return RepositoryError(
            "the backup lease %s cannot be read after %d attempts (%s)%s: not backing up, "
            "since another node may hold it" % (self.key, READ_ATTEMPTS, held.why, since),
            code="lease_unreadable", stage="lease")

    def live(self, held):
        """True when ``held`` (a lease dict) belongs to a holder that may still run."""
        return held.get("expires_at", 0) > self.clock() and not _dead_here(held)

    def state(self):
        """(status, lease): 'absent', 'live' (lease dict), 'free' (expired, or its holder
        died here, or damaged and not rewritten for a period) or 'unknown' (why)."""
        held = self.read()
        if held is None:
            return "absent", None
        if isinstance(held, Unreadable):
            stored_at = self._stored_at() if held.damaged else None
            if stored_at is not None and stored_at + self.seconds < self.clock():
                return "free", None
            return "unknown", self._unreadable(held, stored_at).msg
        return ("live" if self.live(held) else "free"), held

    # -- acquiring -------------------------------------------------------------------
    def acquire(self):
        """(True, None) when this node holds the lease now; (False, lease) when another
        node holds a valid one (read and verified). RepositoryError when the lease cannot
        be read, or cannot be settled: never a guess either way."""
        self.acquired_at = self.clock()
        reason, pause = "no answer", 0.0
        for dummy in range(ACQUIRE_ROUNDS):
            self.sleep(pause)
            pause = min(max(pause * 2, 1.0), 5.0)
            body = self._body()
            try:
                self.storage.put(self.key, _encode(body), if_absent=True)
                return self._held(body["expires_at"])
            except Conflict:
                pass
            except RepositoryError as exc:  # stored or not: the read below tells
                self.log("writing the backup lease failed (%s); reading it back" % exc.msg)
            held = self.read()
            if held is None:
                reason = "the lease disappeared between two requests"
                continue
            if isinstance(held, Unreadable):
                stored_at = self._stored_at() if held.damaged else None
                if stored_at is None or stored_at + self.seconds >= self.clock():
                    raise self._unreadable(held, stored_at)
                self.log("the backup lease %s is damaged (%s) and nobody rewrote it since "
                         "%s, more than backup_lease=%ds ago: taking it over"
                         % (self.key, held.why, _iso(stored_at), self.seconds))
                ident, what = self._ident(held), "damaged lease"
            elif held.get("nonce") == self.nonce:
                # our write went through although its answer was lost
                return self._held(held.get("expires_at"))
            elif self.live(held):
                return False, held
            else:
                ident, what = held.get("nonce"), "lease of %s (expired at %s)" % (
                    held.get("holder"), _iso(held.get("expires_at", 0)))
            won, reason = self._take_over(ident, what)
            if won and self._same(ident):
                self.storage.delete([self.key])
                self.log("took over the %s" % what)
                pause = 0.0
            elif won:
                reason = "the %s changed while it was taken over" % what
        raise RepositoryError("the backup lease %s could not be acquired after %d rounds: "
                              "%s" % (self.key, ACQUIRE_ROUNDS, reason),
                              code="lease_contended", stage="lease")

    def _ident(self, held):
        """What keys the takeover of a damaged lease: its bytes, else when it was stored."""
        return held.ident or "damaged-%d" % int(self._stored_at() or 0)

    def _same(self, ident):
        """Whether the stored lease is still the one being taken over."""
        held = self.read()
        if isinstance(held, Unreadable):
            return self._ident(held) == ident
        return held is not None and held.get("nonce") == ident

    def _take_over(self, ident, what):
        """(True, None) when this node won the takeover of the lease ``ident``; else
        (False, why)."""
        prefix = "%s.takeover.%s." % (self.key, ident)
        attempts = sorted((int(info.key[len(prefix):]), info)
                          for info in self.storage.list(prefix)
                          if info.key[len(prefix):].isdigit())
        number = 0
        if attempts:
            last, info = attempts[-1]
            if info.mtime is None or info.mtime + self.seconds > self.clock():
                return False, ("another node is taking over the %s (marker %s, written at "
                               "%s); it is superseded after %s if that node dies"
                               % (what, info.key, _iso(info.mtime or 0),
                                  _iso((info.mtime or 0) + self.seconds)))
            number = last + 1
            self.log("takeover marker %s is older than backup_lease=%ds: its node died "
                     "half-way; superseding it" % (info.key, self.seconds))
        marker = "%s%d" % (prefix, number)
        data = _encode({"holder": self.holder, "nonce": self.nonce, "at": self.clock()})
        try:
            self.storage.put(marker, data, if_absent=True)
            return True, None
        except Conflict:
            pass
        except RepositoryError as exc:
            self.log("writing takeover marker %s failed (%s); reading it back"
                     % (marker, exc.msg))
        try:
            won = self.storage.get(marker) == data
        except NotFound:
            won = False
        return won, "another node won the takeover of the %s (marker %s)" % (what, marker)

    def _held(self, expires_at):
        self.expires_at = expires_at
        self.lost = None
        self._start_renewal()
        return True, None

    # -- keeping it ------------------------------------------------------------------
    def _margin(self):
        return self.seconds / 10.0

    def set_backup(self, backup_id):
        """Name the backup this lease protects (cleanup never removes it), at once."""
        self.backup_id = backup_id
        try:
            self.renew()
        except PgdrError as exc:
            self.log("warning: the backup lease could not be renewed now (%s); retrying"
                     % exc.msg)

    def renew(self):
        """Store the lease again with a later expiry, if it is still ours and has not
        expired; otherwise the lease is lost (``check()`` fails from then on)."""
        self.check()
        held = self.read()
        if isinstance(held, Unreadable):
            raise self._unreadable(held, None)
        if held is None or held.get("nonce") != self.nonce:
            self.lost = ("the lease is now %s" % ("held by %s" % held.get("holder")
                                                  if held else "gone"))
            self.check()
        self.check()  # the read may have taken long: never write a lease after its expiry
        body = self._body()
        self.storage.put(self.key, _encode(body))
        self.expires_at = max(self.expires_at or 0, body["expires_at"])

    def check(self):
        """RepositoryError (lease_lost) once this node may no longer hold the lease: not
        renewed in time (so another node may take it over) or taken from it."""
        if not self.lost and self.expires_at is not None \
                and self.clock() >= self.expires_at - self._margin():
            self.lost = ("it could not be renewed before it expires at %s"
                         % _iso(self.expires_at))
        if self.lost:
            raise RepositoryError("the backup lease %s is lost: %s; stopping this backup "
                                  "so that two never run at once" % (self.key, self.lost),
                                  code="lease_lost", stage="lease")

    def _start_renewal(self):
        self._renewer = threading.Thread(target=self._renew_loop, name="pgdr-lease",
                                         daemon=True)
        self._renewer.start()

    def _renew_loop(self):
        wait = self.seconds / 3.0
        while not self._stop.wait(wait):
            try:
                self.renew()
                wait = self.seconds / 3.0
            except PgdrError as exc:
                if self.lost:
                    self.log("backup lease lost: %s" % self.lost)
                    return
                self.log("warning: renewing the backup lease failed (%s); retrying"
                         % exc.msg)
                wait = self.seconds / 30.0

    def release(self):
        """Stop renewing and remove the lease if it is ours (best effort: an error here
        must not hide the backup's own outcome; the lease then expires)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        try:
            held = self.read()
            if isinstance(held, dict) and held.get("nonce") == self.nonce:
                self.storage.delete([self.key])
        except PgdrError as exc:
            self.log("warning: the backup lease %s was not removed (%s); it expires at %s"
                     % (self.key, exc.msg, _iso(self.expires_at or 0)))


def _encode(lease):
    return json.dumps(lease, sort_keys=True).encode("utf-8")


def _parse(raw):
    """The lease in ``raw``, or None when the bytes are not a whole lease."""
    try:
        lease = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one too
        return None
    if not isinstance(lease, dict) or not isinstance(lease.get("nonce"), str) \
            or not isinstance(lease.get("expires_at"), (int, float)):
        return None
    return lease


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
