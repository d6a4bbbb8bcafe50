"""A JWKS server whose behaviour tests switch at run time (failure modes, counting)."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from ._http import LoopbackServer, QuietHandler, add_all_methods, serve_in_thread
from .ports import LOOPBACK

MODES = ("ok", "delay", "hang", "refuse", "status", "html", "not_json", "not_jwks",
         "empty_keys", "oversized")
ONE_MIB = 1024 * 1024


@dataclass
class Hit:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    client: str = ""  # "host:port" of the connection the request came on


def oversized_body(jwks: dict, size: int = ONE_MIB) -> bytes:
    """A JSON JWKS of at least `size` bytes: the real keys first, then filler OKP keys."""
    keys = list(jwks.get("keys", []))
    filler = {"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
              "x": "A" * 43, "pad": "p" * 1000}
    base = len(json.dumps({"keys": keys}))
    step = len(json.dumps(dict(filler, kid="filler-000000"))) + 2
    n = max(0, (size - base) // step + 2)
    keys += [dict(filler, kid=f"filler-{i:06d}") for i in range(n)]
    body = json.dumps({"keys": keys}).encode()
    assert len(body) >= size, (len(body), size)
    return body


class _JwksHandler(QuietHandler):
    def handle_any(self) -> None:
        owner: JwksServer = self.server.owner
        if owner.mode == "refuse":
            # Down means down: a keep-alive connection accepted before refuse() is dropped
            # unanswered and uncounted (it used to get a 500 "unknown mode refuse").
            self.close_connection = True
            return
        self.read_body()
        owner._hit(self.path, {k.lower(): v for k, v in self.headers.items()},
                   "%s:%s" % self.client_address[:2])
        mode = owner.mode
        extra = dict(owner.headers)
        if owner.path is not None and self.path.split("?")[0] != owner.path:
            self.send_bytes(404, b"not found", "text/plain", extra)
            return
        if mode == "hang":
            # Never answer; let go when stopped or after the bound so no thread outlives the test much.
            owner._stop.wait(owner.hang_seconds)
            self.close_connection = True
            return
        if mode == "delay":
            if owner._stop.wait(owner.delay_seconds):
                self.close_connection = True
                return
            mode = "ok"
        if mode == "ok":
            self.send_bytes(200, json.dumps(owner.jwks).encode(), "application/json", extra)
        elif mode == "status":
            self.send_bytes(owner.status_code, b'{"error":"nope"}', "application/json", extra)
        elif mode == "html":
            self.send_bytes(200, b"<html><body><h1>Login</h1></body></html>", "text/html", extra)
        elif mode == "not_json":
            self.send_bytes(200, b'{"keys": [ this is not json', "application/json", extra)
        elif mode == "not_jwks":
            self.send_bytes(200, b'{"hello":"world","n":1}', "application/json", extra)
        elif mode == "empty_keys":
            self.send_bytes(200, b'{"keys":[]}', "application/json", extra)
        elif mode == "oversized":
            self.send_bytes(200, oversized_body(owner.jwks, owner.oversized_bytes),
                            "application/json", extra)
        else:
            self.send_bytes(500, f"unknown mode {mode}".encode(), "text/plain", extra)


add_all_methods(_JwksHandler)


class JwksServer:
    """Controllable JWKS endpoint on 127.0.0.1.

    Set `jwks`, `mode` (see MODES), `delay_seconds`, `status_code`, `headers`, or call
    `set_mode(...)`. `refuse()` closes the listening socket (connects are refused; requests
    on connections accepted earlier are dropped unanswered and not counted) and
    `resume()` re-binds the same port. `count`, `hits`, `reset_count()` for single-flight tests.
    """

    def __init__(self, jwks: dict | None = None, path: str | None = None) -> None:
        self.jwks: dict = jwks if jwks is not None else {"keys": []}
        self.path = path  # None: any path serves the JWKS
        self.mode = "ok"
        self.delay_seconds = 3.0
        self.hang_seconds = 30.0
        self.status_code = 500
        self.oversized_bytes = ONE_MIB
        self.headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._hits: list[Hit] = []
        self._stop = threading.Event()
        self._srv: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._bind(0)
        self.host = LOOPBACK
        self.port: int = self._srv.server_address[1]

    # -- lifecycle -------------------------------------------------------------
    def _bind(self, port: int) -> None:
        self._srv, self._thread = serve_in_thread(_JwksHandler, port=port, owner=self)

    def _close(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._thread.join(timeout=5)
            self._srv = self._thread = None

    def refuse(self) -> None:
        self.mode = "refuse"
        self._close()

    def resume(self, mode: str = "ok") -> None:
        """Re-bind the same port after refuse(); retried briefly in case the kernel lags."""
        if self._srv is None:
            deadline = time.monotonic() + 5
            while True:
                try:
                    self._bind(self.port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        self.mode = mode

    def stop(self) -> None:
        self._stop.set()  # releases hanging/delayed handlers
        self._close()

    def __enter__(self) -> "JwksServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- control ---------------------------------------------------------------
    def set_mode(self, mode: str, **kw) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        for k, v in kw.items():
            if not hasattr(self, k):
                raise AttributeError(k)
            setattr(self, k, v)
        if mode == "refuse":
            self.refuse()
        elif self._srv is None:
            self.resume(mode)
        else:
            self.mode = mode

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.path or '/.well-known/jwks.json'}"

    # -- counting --------------------------------------------------------------
    def _hit(self, path: str, headers: dict[str, str], client: str = "") -> None:
        with self._lock:
            self._hits.append(Hit(time.monotonic(), path, headers, client))

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._hits)

    @property
    def hits(self) -> list[Hit]:
        with self._lock:
            return list(self._hits)

    @property
    def timestamps(self) -> list[float]:
        return [h.at for h in self.hits]

    def reset_count(self) -> None:
        with self._lock:
            self._hits.clear()

    def wait_count(self, n: int, timeout: float = 10.0) -> bool:
        """Bounded wait until at least n requests arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count >= n:
                return True
            time.sleep(0.05)
        return self.count >= n
