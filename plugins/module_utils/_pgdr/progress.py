# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress and log lines for long work.

On a terminal: one line redrawn in place. Elsewhere (cron, logs): a plain,
timestamped line every ``interval`` seconds. Modules pass no stream and get
the events back in the result instead.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

MIB = 1024.0 * 1024.0


class Progress(object):
    def __init__(self, stream=None, interval=10.0, clock=time.time):
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.interval = 0.5 if self.tty else interval
        self.clock = clock
        self.events = []
        self._lock = threading.Lock()
        self._task = None
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last = 0.0

    def event(self, message):
        """A one-off line: what is happening, or a warning."""
        self.events.append(message)
        self._write("%s pgdr: %s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), message), final=True)

    def begin(self, task, total_bytes):
        with self._lock:
            self._task, self._total, self._done = task, total_bytes, 0
            self._started = self._last = self.clock()

    def advance(self, nbytes):
        with self._lock:
            self._done += nbytes
            now = self.clock()
            if now - self._last < self.interval:
                return
            self._last = now
            line = self._line(now)
        self._write(line, final=False)

    def end(self):
        with self._lock:
            line = self._line(self.clock())
        self._write(line + " done", final=True)

    def _line(self, now):
        elapsed = max(now - self._started, 1e-6)
        # never past 100%: a total that grew while the work ran (a file extended while a
        # backup reads it) is shown as its known size, never as "105.9% 289/273 MiB"
        done = min(self._done, self._total) if self._total else self._done
        pct = 100.0 * done / self._total if self._total else 100.0
        return "%s pgdr: %s %5.1f%% %.0f/%.0f MiB %.1f MiB/s" % (
            time.strftime("%Y-%m-%dT%H:%M:%S"), self._task, pct, done / MIB,
            max(self._total, done) / MIB, self._done / MIB / elapsed)

    def _write(self, line, final):
        if self.stream is None:
            return
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
