"""A small threaded HTTP reverse proxy on 127.0.0.1 that injects faults in front of a real server.

Tests point a client (the gate, as a subprocess or in-process) at `proxy.url` instead of the server.
Rules match requests by method + path regex and, once `after` matching requests went through
untouched, act on the next `times` ones:
  - "status": answer `status` without forwarding (the server never sees the request);
  - "drop":   close the connection without an answer (the server never sees the request);
  - "lost":   forward it (the server applies it), then close without an answer (a lost response);
  - "delay":  wait `seconds`, then forward normally.
`down()` refuses every connection (nothing listens on the port) until `up()`; `down_after(...)`
takes the proxy down right after a matching request was answered, which is how "MLflow stops after
the version is created but before the alias moves" is staged. Counts of injected faults are kept.

A test fixture only: no deploygate code imports it, and it never reaches beyond its upstream.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.hub_server import read_request_body

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
}


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    mode: str  # "status" | "drop" | "lost" | "delay" | "down-after" | "call"
    status: int = 503
    after: int = 0
    times: int = 1  # < 0: forever
    seconds: float = 0.0
    seen: int = 0
    fired: int = 0
    before: Callable[[], None] | None = None  # "call": run before forwarding
    after_answer: Callable[[], None] | None = None  # "call": run after the answer was sent

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and bool(self.path.search(path))


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int  # 0: no answer
    fault: str | None


@dataclass
class _State:
    rules: list[Rule] = field(default_factory=list)
    log: list[Seen] = field(default_factory=list)
    injected: int = 0


class FaultProxy:
    """Reverse proxy to `upstream` (e.g. the MLflow server URI) with fault rules."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self._state = _State()
        self._lock = threading.RLock()
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._refusing = False  # set the moment the proxy goes down, before the socket is closed
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FaultProxy:
        return self.up()

    def up(self) -> FaultProxy:
        """Listen (again, on the same port)."""
        with self._lock:
            if self._httpd is not None:
                self._refusing = False
                return self
            handler = type("BoundProxyHandler", (_Handler,), {"proxy": self})
            ThreadingHTTPServer.allow_reuse_address = True
            deadline = time.monotonic() + 10
            while True:
                try:
                    httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            httpd.daemon_threads = True
            self._port = int(httpd.server_address[1])
            self._httpd = httpd
            self._refusing = False
            self._thread = threading.Thread(target=httpd.serve_forever, name="fault-proxy", daemon=True)
            self._thread.start()
        return self

    def down(self, *, count: bool = True) -> None:
        """Stop listening: new connections are refused, open keep-alive connections are closed.
        Counted as one injected fault (`count`)."""
        with self._lock:
            if count and not self._refusing:
                self._state.injected += 1
            self._refusing = True
            httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def stop(self) -> None:
        self.down(count=False)

    @property
    def is_up(self) -> bool:
        return self._httpd is not None and not self._refusing

    # --- rules -----------------------------------------------------------------------------------

    def _add(self, method: str, path_regex: str, mode: str, **kw: Any) -> Rule:
        rule = Rule(method.upper(), re.compile(path_regex), mode, **kw)
        with self._lock:
            self._state.rules.append(rule)
        return rule

    def fail(
        self, method: str, path_regex: str, status: int = 503, *, after: int = 0, times: int = 1
    ) -> Rule:
        return self._add(method, path_regex, "status", status=status, after=after, times=times)

    def drop(self, method: str, path_regex: str, *, after: int = 0, times: int = 1) -> Rule:
        return self._add(method, path_regex, "drop", after=after, times=times)

    def lose_response(self, method: str, path_regex: str, *, after: int = 0, times: int = 1) -> Rule:
        return self._add(method, path_regex, "lost", after=after, times=times)

    def delay(self, method: str, path_regex: str, seconds: float, *, after: int = 0, times: int = 1) -> Rule:
        return self._add(method, path_regex, "delay", seconds=seconds, after=after, times=times)

    def down_after(self, method: str, path_regex: str, *, after: int = 0) -> Rule:
        """Answer the matching request normally, then go down (refuse everything until `up()`)."""
        return self._add(method, path_regex, "down-after", after=after, times=1)

    def on(
        self,
        method: str,
        path_regex: str,
        *,
        before: Callable[[], None] | None = None,
        after_answer: Callable[[], None] | None = None,
        after: int = 0,
        times: int = 1,
    ) -> Rule:
        """Run a callback when a matching request arrives (`before` forwarding it) or was answered
        (`after_answer`): e.g. SIGKILL the client at that exact step. Not counted as a fault."""
        return self._add(
            method, path_regex, "call", before=before, after_answer=after_answer, after=after, times=times
        )

    def disarm(self) -> None:
        """Drop every rule; keep the request log."""
        with self._lock:
            self._state.rules.clear()

    def clear(self) -> None:
        """Drop every rule and forget the request log (the injected count is kept)."""
        with self._lock:
            self._state.rules.clear()
            self._state.log.clear()

    @property
    def injected(self) -> int:
        """How many requests a rule acted on (a refused connection while down is not counted)."""
        with self._lock:
            return self._state.injected

    def requests(self, method: str = "*", path_regex: str = "") -> list[Seen]:
        pattern = re.compile(path_regex)
        with self._lock:
            return [s for s in self._state.log if method in ("*", s.method) and pattern.search(s.path)]

    def _take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in list(self._state.rules):
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                rule.fired += 1
                if rule.times >= 0 and rule.fired >= rule.times:
                    self._state.rules.remove(rule)
                if rule.mode != "call":
                    self._state.injected += 1
                return rule
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._state.log.append(seen)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# What a server (or the gateway in front of it) typically answers: JSON error codes as MLflow
# sends them; plain text for 401 (basic auth) and 404 (no such endpoint).
_ERROR_CODES = {403: "PERMISSION_DENIED", 429: "REQUEST_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR"}


def _error_body(status: int) -> tuple[str, bytes]:
    if status in (401, 404):
        return "text/plain", f"injected {status}".encode()
    code = _ERROR_CODES.get(status, "TEMPORARILY_UNAVAILABLE")
    return "application/json", f'{{"error_code": "{code}", "message": "injected {status}"}}'.encode()


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _body(self) -> bytes:
        return read_request_body(self)

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(
            OSError
        ):  # RST rather than FIN: a connection reset, as from a crashed server
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )

    def _handle(self) -> None:
        path = urlsplit(self.path).path
        body = self._body()
        if self.proxy._refusing:  # a keep-alive connection that outlived the listener
            self.proxy._record(Seen(self.command, path, 0, "down"))
            self._abort()
            return
        rule = self.proxy._take(self.command, path)
        mode = rule.mode if rule else None
        if rule is not None and mode == "status":
            ctype, data = _error_body(rule.status)
            self._send(rule.status, [("Content-Type", ctype)], data)
            self.proxy._record(Seen(self.command, path, rule.status, mode))
            return
        if rule is not None and mode == "drop":
            self.proxy._record(Seen(self.command, path, 0, mode))
            self._abort()
            return
        if rule is not None and mode == "delay":
            time.sleep(rule.seconds)
        if rule is not None and rule.before is not None:
            rule.before()
        try:
            status, headers, data = self._forward(body)
        except OSError:
            self.proxy._record(Seen(self.command, path, 0, "upstream"))
            self._abort()
            return
        if mode == "lost":
            self.proxy._record(Seen(self.command, path, 0, mode))
            self._abort()
            return
        self._send(status, headers, data)
        self.proxy._record(Seen(self.command, path, status, mode))
        if rule is not None and rule.after_answer is not None:
            rule.after_answer()
        if mode == "down-after":
            self.close_connection = True
            self.proxy._refusing = True
            threading.Thread(target=self.proxy.down, kwargs={"count": False}, daemon=True).start()

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.proxy.upstream_host, self.proxy.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            headers["Host"] = f"{self.proxy.upstream_host}:{self.proxy.upstream_port}"
            conn.request(
                self.command,
                self.path,
                body=body if body or self.command in ("POST", "PUT", "PATCH") else None,
                headers=headers,
            )
            response = conn.getresponse()
            data = response.read()
            drop = (
                _HOP_BY_HOP if self.command == "HEAD" else _HOP_BY_HOP | {"content-length"}
            )  # HEAD: keep the size
            out = [(k, v) for k, v in response.getheaders() if k.lower() not in drop]
            return response.status, out, data
        finally:
            conn.close()

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if self.command != "HEAD" or not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
