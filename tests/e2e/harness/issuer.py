"""Runs the edge-jwt-issuer binary (`serve`) and talks to it; re-exports the signing helpers."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .tokens import (b64url, b64url_decode, claims, hs256, public_jwk, sign, sign_raw,  # noqa: F401
                     split, tamper_payload, unsigned)

__all__ = ["Issuer", "IssuerError", "DEFAULT_ISSUER_URL", "b64url", "b64url_decode", "claims",
           "hs256", "public_jwk", "sign", "sign_raw", "split", "tamper_payload", "unsigned"]

LISTEN_RE = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))")
DEFAULT_ISSUER_URL = "https://issuer.e2e.local"


class IssuerError(RuntimeError):
    pass


class Issuer:
    """`edge-jwt-issuer serve` on 127.0.0.1:0 in its own key directory.

    `Issuer(bin).start()` or use as a context manager. `mint(**fields)` -> token,
    `rotate("publish"|"promote"|"retire")`, `jwks()`, `keys_file()`, `seed(status)`.
    """

    def __init__(self, binary: str | os.PathLike, workdir: str | os.PathLike | None = None,
                 issuer_url: str = DEFAULT_ISSUER_URL, cache_max_age: int | None = None,
                 edge_ttl: int | None = None, grace: int | None = None,
                 start_timeout: float = 15.0) -> None:
        self.binary = str(binary)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edge-jwt-issuer-"))
        self.dir = self.workdir / "keys"
        self.issuer_url = issuer_url
        self.opts = {"--cache-max-age": cache_max_age, "--edge-ttl": edge_ttl, "--grace": grace}
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.port = 0

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "Issuer":
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "serve", "--dir", str(self.dir), "--listen", "127.0.0.1:0",
               "--issuer", self.issuer_url]
        for flag, val in self.opts.items():
            if val is not None:
                cmd += [flag, str(val)]
        # stdout to a file, not a pipe: a chatty server can never block on a full pipe.
        self._out = self.workdir / "issuer.out"
        self._err = self.workdir / "issuer.err"
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self._out.read_text(errors="replace"))
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        rc = self.proc.poll()
        self.stop()
        raise IssuerError(f"issuer did not print 'listening on http://127.0.0.1:PORT' within "
                          f"{self.start_timeout}s (exit code {rc}); cmd={cmd}\n{self.output()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def output(self) -> str:
        parts = []
        for p in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if p is not None and p.exists():
                parts.append(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def __enter__(self) -> "Issuer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _ok(self, method: str, path: str, body: dict | None = None) -> bytes:
        status, out = self._call(method, path, body)
        if status // 100 != 2:
            raise IssuerError(f"{method} {path} -> {status}: {out[:500]!r}")
        return out

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def jwks(self) -> dict:
        return json.loads(self._ok("GET", "/.well-known/jwks.json"))

    def mint(self, **fields) -> str:
        """POST /token. Fields per the issuer contract: sub, scope, aud, ttl, user_context,
        jti, key (current|next|retiring), no_kid, extra_claims, nbf_offset. None values are dropped."""
        body = {k: v for k, v in fields.items() if v is not None}
        return json.loads(self._ok("POST", "/token", body))["access_token"]

    def rotate(self, step: str) -> dict:
        if step not in ("publish", "promote", "retire"):
            raise ValueError(step)
        out = self._ok("POST", f"/admin/rotate/{step}", {})
        return json.loads(out) if out.strip() else {}

    def admin_keys(self) -> dict:
        return json.loads(self._ok("GET", "/admin/keys"))

    # -- key file --------------------------------------------------------------
    def keys_file(self) -> dict:
        return json.loads((self.dir / "keys.json").read_text())

    def key(self, status: str = "current") -> dict:
        for k in self.keys_file()["keys"]:
            if k.get("status") == status:
                return k
        raise KeyError(f"no {status} key in {self.dir / 'keys.json'}")

    def seed(self, status: str = "current") -> bytes:
        """The raw 32-byte Ed25519 seed, for signing hostile tokens with sign()."""
        seed = b64url_decode(self.key(status)["seed"])
        assert len(seed) == 32, len(seed)
        return seed

    def kid(self, status: str = "current") -> str:
        return self.key(status)["kid"]
