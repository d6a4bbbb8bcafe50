"""Upstream echo server: answers 200 with what it received, so tests see what passed the filter."""
from __future__ import annotations

import json
import threading

from ._http import QuietHandler, add_all_methods, serve_in_thread
from .ports import LOOPBACK


class _EchoHandler(QuietHandler):
    def handle_any(self) -> None:
        body = self.read_body()
        header_list = [(k.lower(), v) for k, v in self.headers.items()]
        headers: dict[str, str] = {}
        for k, v in header_list:
            headers[k] = f"{headers[k]},{v}" if k in headers else v  # repeated names joined like HTTP does
        record = {"method": self.command, "path": self.path, "headers": headers,
                  "header_list": header_list, "body": body.decode("utf-8", "replace")}
        self.server.owner._record(record)
        out = json.dumps({"method": self.command, "path": self.path, "headers": headers}).encode()
        self.send_bytes(200, out, "application/json")


add_all_methods(_EchoHandler)


class EchoServer:
    """`with EchoServer() as echo:`; `echo.port`, `echo.requests`, `echo.find(path_substring)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._srv, self._thread = serve_in_thread(_EchoHandler, owner=self)
        self.host = LOOPBACK
        self.port: int = self._srv.server_address[1]

    def _record(self, rec: dict) -> None:
        with self._lock:
            self._requests.append(rec)

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def find(self, path_part: str) -> list[dict]:
        """Requests whose path contains `path_part` (tests tag paths with a unique marker)."""
        return [r for r in self.requests if path_part in r["path"]]

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "EchoServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
