"""An S3 fault proxy for the tests: a small threaded HTTP proxy on 127.0.0.1 in front
of SeaweedFS that injects the transient faults a real network and a real S3 service
produce, by rate (seeded) or by rule (method + key regex + nth occurrence).

pgdr talks plain http to the proxy (s3_endpoint=proxy.endpoint); the proxy forwards to
SeaweedFS's plain http port. Requests are forwarded byte for byte: path, query and every
header, Host included, stay as the client sent them, so SigV4 signatures still match.

Fault kinds:
    500            answer 500 InternalError, the request is not forwarded
    503            answer 503 ServiceUnavailable, not forwarded
    slowdown       answer 503 SlowDown, not forwarded
    reset          reset the connection before any answer, not forwarded
    forward_reset  forward (the write happens), then reset before the answer
    forward_500    forward (the write happens), then answer 500
    cut            forward, answer with the full Content-Length, send half the body, reset
    delay          wait `delay_seconds`, then forward normally
"""
import random
import re
import socket
import socketserver
import struct
import threading
import time
import http.client
from collections import Counter
from urllib.parse import unquote, urlsplit

KINDS = ("500", "503", "slowdown", "reset", "forward_reset", "forward_500", "cut", "delay")
TRANSIENT = KINDS  # every kind is one a client must survive by retrying

_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError",
            "We encountered an internal error. Please try again."),
    "503": (503, "Service Unavailable", "ServiceUnavailable", "Please try again."),
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}
_HOP = ("connection", "keep-alive", "proxy-connection", "expect", "te", "upgrade")


class Rule:
    def __init__(self, kind, method=None, key=None, nth=1, times=1):
        assert kind in KINDS, kind
        self.kind, self.method, self.nth, self.times = kind, method, nth, times
        self.key = re.compile(key) if key else None
        self.seen = 0
        self.fired = 0

    def matches(self, method, path):
        if self.method and method != self.method:
            return False
        if self.key and not self.key.search(path):
            return False
        self.seen += 1
        if self.seen >= self.nth and self.fired < self.times:
            self.fired += 1
            return True
        return False


class S3Faults:
    """proxy = S3Faults(upstream); proxy.start(); ...; proxy.stop()."""

    def __init__(self, upstream, seed=0, delay_seconds=1.0):
        parts = urlsplit(upstream)
        assert parts.scheme == "http", "forward to SeaweedFS's plain http endpoint"
        self.upstream = (parts.hostname, parts.port)
        self.delay_seconds = delay_seconds
        self.counts = Counter()      # injected faults per kind
        self.requests = Counter()    # requests seen per method
        self.log = []                # (method, path, kind) of every injected fault
        self._lock = threading.Lock()
        self._rules = []
        self._rate = 0.0
        self._kinds = TRANSIENT
        self._methods = None
        self._rng = random.Random(seed)
        self._server = None
        self._thread = None

    # -- control -------------------------------------------------------------------
    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def set_rate(self, rate, kinds=TRANSIENT, seed=None, methods=None):
        """Inject a fault into that share of requests (kinds chosen at random)."""
        with self._lock:
            self._rate = rate
            self._kinds = tuple(kinds)
            self._methods = set(methods) if methods else None
            if seed is not None:
                self._rng = random.Random(seed)

    def set_rule(self, kind, method=None, key=None, nth=1, times=1):
        """Inject `kind` into the nth request (and the times-1 following ones) whose
        method and decoded path (a regex search) match."""
        rule = Rule(kind, method, key, nth, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self):
        with self._lock:
            self._rules = []
            self._rate = 0.0

    def total(self):
        return sum(self.counts.values())

    def start(self):
        proxy = self

        class Handler(_Handler):
            faults = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- decisions -------------------------------------------------------------------
    def _choose(self, method, path):
        with self._lock:
            self.requests[method] += 1
            kind = None
            for rule in self._rules:
                if rule.matches(method, path):
                    kind = rule.kind
                    break
            if kind is None and self._rate and (self._methods is None or
                                                method in self._methods):
                if self._rng.random() < self._rate:
                    kind = self._rng.choice(self._kinds)
            if kind is not None:
                self.counts[kind] += 1
                self.log.append((method, path, kind))
            return kind


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Reset(Exception):
    pass


class _Handler(socketserver.StreamRequestHandler):
    faults = None  # the S3Faults, set by a subclass
    upstream = None

    def handle(self):
        try:
            while self._one():
                pass
        except (_Reset, ConnectionError, socket.timeout, OSError):
            pass
        finally:
            if self.upstream is not None:
                self.upstream.close()

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass

    def _one(self):
        line = self.rfile.readline(65537)
        while line in (b"\r\n", b"\n"):
            line = self.rfile.readline(65537)
        if not line:
            return False
        method, target, dummy = line.decode("latin-1").split(" ", 2)
        headers = []
        while True:
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, dummy, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        lower = {name.lower(): value for name, value in headers}
        if lower.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._body(lower)
        path = unquote(urlsplit(target).path)
        kind = self.faults._choose(method, path)
        if kind in _ERRORS:
            self._error(kind)
        elif kind == "reset":
            self._reset()
        else:
            if kind == "delay":
                time.sleep(self.faults.delay_seconds)
            status, reason, out_headers, data = self._forward(method, target, headers, body)
            if kind == "forward_reset":
                self._reset()
            elif kind == "forward_500":
                self._error("500")
            elif kind == "cut":
                if method == "HEAD" or len(data) < 2:
                    self._reset()
                self._answer(status, reason, out_headers, data[:len(data) // 2],
                             length=len(data))
                self._reset()
            else:
                self._answer(status, reason, out_headers, data, head=method == "HEAD")
        return lower.get("connection", "").lower() != "close"

    def _body(self, lower):
        if "content-length" in lower:
            return self.rfile.read(int(lower["content-length"]))
        if lower.get("transfer-encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size_line = self.rfile.readline(65537)
                raw += size_line
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)
                raw += chunk
                if size == 0:
                    while chunk not in (b"\r\n", b""):  # trailers up to the empty line
                        chunk = self.rfile.readline(65537)
                        raw += chunk
                    return raw
        return b""

    def _forward(self, method, target, headers, body):
        for attempt in (1, 2):
            if self.upstream is None:
                self.upstream = http.client.HTTPConnection(*self.faults.upstream, timeout=120)
            try:
                self.upstream.putrequest(method, target, skip_host=True,
                                         skip_accept_encoding=True)
                for name, value in headers:
                    if name.lower() not in _HOP:
                        self.upstream.putheader(name, value)
                self.upstream.endheaders()
                if body:
                    self.upstream.send(body)
                response = self.upstream.getresponse()
                data = response.read()
                out = [(n, v) for n, v in response.getheaders()
                       if n.lower() not in _HOP + ("transfer-encoding",)]
                return response.status, response.reason, out, data
            except (http.client.HTTPException, OSError):
                self.upstream.close()
                self.upstream = None
                if attempt == 2:
                    raise

    def _answer(self, status, reason, headers, data, length=None, head=False):
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        for name, value in headers:
            if name.lower() == "content-length" and not head:
                continue
            lines.append("%s: %s" % (name, value))
        if not head:
            lines.append("Content-Length: %d" % (len(data) if length is None else length))
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") +
                         (b"" if head else data))

    def _error(self, kind):
        status, reason, code, message = _ERRORS[kind]
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
                '<Message>%s</Message><RequestId>s3faults</RequestId></Error>'
                % (code, message)).encode()
        self._answer(status, reason, [("Content-Type", "application/xml")], body)

    def _reset(self):
        """Close with RST: the client sees 'connection reset by peer'."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        finally:
            raise _Reset()
