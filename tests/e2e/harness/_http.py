"""Shared bits for the small stdlib HTTP servers of the harness."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ports import LOOPBACK

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


class QuietHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 so Envoy can keep upstream connections alive; every reply sets Content-Length.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # keep pytest output clean

    def read_body(self) -> bytes:
        """Read the request body, Content-Length or chunked (Envoy may send either)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_bytes(self, status: int, body: bytes, ctype: str,
                   extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung handler must never keep pytest alive
    block_on_close = False


def serve_in_thread(handler: type[BaseHTTPRequestHandler], port: int = 0,
                    owner: object | None = None) -> tuple[LoopbackServer, threading.Thread]:
    srv = LoopbackServer((LOOPBACK, port), handler)
    srv.owner = owner  # handlers reach their controlling object through self.server.owner
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                         name=f"{handler.__name__}:{srv.server_address[1]}", daemon=True)
    t.start()
    return srv, t


def add_all_methods(cls: type, fn_name: str = "handle_any") -> type:
    """Route every METHODS verb to one handler method."""
    for m in METHODS:
        setattr(cls, f"do_{m}", lambda self, _f=fn_name: getattr(self, _f)())
    return cls
