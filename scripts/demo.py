#!/usr/bin/env python3
"""edge-jwt demo: the issuer, an echo upstream and Envoy running envoy/edge-jwt.yaml, on loopback.

    scripts/demo.sh            (or: make demo) build, run the checks, then stay up for curl
    scripts/demo.sh --once     build, run the checks, stop; exit 1 if a check is wrong

Run directly (binaries already built): python scripts/demo.py [--once].

Environment: ENVOY_BIN (default .tools/bin/envoy), EDGE_JWT_WASM (target/edge_jwt.wasm),
EDGE_JWT_ISSUER (target/release/edge-jwt-issuer).

Envoy runs the shipped envoy/edge-jwt.yaml; scripts/envoy_localize.py only rewrites its
addresses, ports and wasm path (written to demo-state/envoy.yaml). Issuer keys live in
demo-state/keys and survive between runs. Every process started here is stopped on exit,
Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
try:
    from envoy_localize import localize  # noqa: E402
except ImportError as _e:  # PyYAML
    sys.exit(f"demo: {_e}: run with .tools/venv/bin/python (scripts/setup.sh python)")

LOOPBACK = "127.0.0.1"
ISSUER_URL = "https://issuer.demo.local"  # must match the provider in envoy/edge-jwt.yaml
AUDIENCE = "api.demo.local"
REALM = 'Bearer realm="edge-jwt"'
SOURCE_CONFIG = ROOT / "envoy" / "edge-jwt.yaml"
PREFERRED = {"listener": 10000, "issuer": 9000, "admin": 9901, "upstream": 8080}

START_TIMEOUT = 15.0   # each process to come up
WARMUP_TIMEOUT = 20.0  # the first JWKS fetch to land (a valid token gets 200)
STOP_TIMEOUT = 5.0     # SIGTERM -> SIGKILL


class Stop(Exception):
    """SIGTERM/SIGHUP: unwind through the finally blocks like Ctrl-C does."""


class DemoError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- output

_COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _c(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _COLOR else text


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- ports


def port_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port (a listener there, even one using
    SO_REUSEPORT like Envoy's, makes this bind fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def pick_port(preferred: int, taken: set[int]) -> int:
    if preferred not in taken and port_free(preferred):
        port = preferred
    else:
        port = kernel_port()
        while port in taken:
            port = kernel_port()
    taken.add(port)
    return port


# ----------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child (Linux): SIGTERM it if demo.py itself dies without cleaning up (SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Proc:
    """A child in its own process group; stop() takes the whole group down."""

    def __init__(self, name: str, cmd: list[str], log: Path, stdout: Path | None = None) -> None:
        self.name, self.cmd, self.log = name, cmd, log
        self._files = [open(log, "wb")]
        out = self._files[0]
        if stdout is not None:
            out = open(stdout, "wb")
            self._files.append(out)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=self._files[0], start_new_session=True, cwd=ROOT,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self.proc.wait(timeout=STOP_TIMEOUT)
            # Anything the child left in its group (it has none today) goes too.
            self._signal(signal.SIGKILL)
        finally:
            for f in self._files:
                f.close()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # pgid == pid: start_new_session
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        keep = [ln for ln in text.splitlines() if ln.strip() and not re.search(r"\]   ", ln)]
        return "\n".join(keep[-lines:])


# ----------------------------------------------------------------------------- echo upstream


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]},{v}" if k in headers else v
        body = json.dumps({"method": self.command, "path": self.path, "headers": headers},
                          indent=1).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any

    def log_message(self, *args) -> None:
        pass


class EchoServer:
    def __init__(self, port: int) -> None:
        srv = ThreadingHTTPServer((LOOPBACK, port), _Echo)
        srv.daemon_threads = True
        self.srv, self.port = srv, srv.server_address[1]
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="echo", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(timeout=5)


# ----------------------------------------------------------------------------- HTTP + tokens


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict | None:
        try:
            out = json.loads(self.body)
            return out if isinstance(out, dict) else None
        except ValueError:
            return None


def fetch(port: int, path: str, headers: list[tuple[str, str]] = (), method: str = "GET",
         body: bytes | None = None, timeout: float = 5.0) -> Resp:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers))
        r = conn.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def tampered(token: str, **changes) -> str:
    """Same header and signature, payload edited: the signature no longer matches."""
    h, p, s = token.split(".")
    payload = b64url_json(p)
    payload.update(changes)
    return f"{h}.{b64url(json.dumps(payload, separators=(',', ':')).encode())}.{s}"


def alg_none(token: str, keep_signature: bool = False) -> str:
    """The classic: header says alg "none"; no signature, or the original one left in place."""
    _, p, s = token.split(".")
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}, separators=(",", ":")).encode())
    return f"{header}.{p}.{s if keep_signature else ''}"


class IssuerClient:
    def __init__(self, port: int) -> None:
        self.base = f"http://{LOOPBACK}:{port}"

    def mint(self, **fields) -> str:
        data = json.dumps(fields).encode()
        req = urllib.request.Request(self.base + "/token", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read())["access_token"]
        except urllib.error.HTTPError as e:
            raise DemoError(f"issuer POST /token {fields} -> {e.code}: {e.read()[:300]!r}") from e


# ----------------------------------------------------------------------------- the checks


@dataclass
class Case:
    name: str
    path: str
    expect: int
    token: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    # (response) -> problem or None; the status is checked before this runs
    check: Callable[[Resp], str | None] | None = None


def www_description(r: Resp) -> str:
    www = r.headers.get("www-authenticate")
    if www is None:
        return ""
    m = re.search(r'error_description="([^"]*)"', www)
    if m:
        code = re.search(r'error="([^"]*)"', www)
        return f"{code.group(1) if code else '?'}: {m.group(1)}"
    return f"WWW-Authenticate: {www}"


def upstream_saw(r: Resp) -> dict[str, str] | None:
    body = r.json()
    return body.get("headers") if body and isinstance(body.get("headers"), dict) else None


def reason(r: Resp) -> str:
    if r.status in (401, 403) and "www-authenticate" in r.headers:
        return www_description(r)
    seen = upstream_saw(r)
    if seen is None:
        return r.body[:80].decode(errors="replace").strip() or "(no body)"
    parts = [f"upstream saw x-jwt-verified: {seen['x-jwt-verified']}" if "x-jwt-verified" in seen
             else "upstream saw no x-jwt-verified"]
    auth = seen.get("authorization", "")
    if auth.lower().startswith("bearer "):
        try:
            claims = b64url_json(auth.split()[1].split(".")[1])
            parts.append(f"sub={claims.get('sub')} scope={claims.get('scope')!r}")
        except (ValueError, IndexError):
            pass
    return ", ".join(parts)


def verified_upstream(r: Resp) -> str | None:
    seen = upstream_saw(r)
    if seen is None:
        return "the answer is not the echo upstream's"
    if seen.get("x-jwt-verified") != "true":
        return f"upstream saw x-jwt-verified={seen.get('x-jwt-verified')!r}, want 'true'"
    return None


def unverified_upstream(r: Resp) -> str | None:
    seen = upstream_saw(r)
    if seen is None:
        return "the answer is not the echo upstream's"
    if "x-jwt-verified" in seen:
        return f"upstream saw x-jwt-verified={seen['x-jwt-verified']!r} (a client copy got through)"
    return None


def challenge(error: str | None) -> Callable[[Resp], str | None]:
    def check(r: Resp) -> str | None:
        www = r.headers.get("www-authenticate")
        if www is None:
            return "no WWW-Authenticate header"
        if not www.startswith(REALM):
            return f"WWW-Authenticate {www!r} lacks {REALM}"
        if error is None and "error=" in www:
            return f"missing token should get a bare challenge, got {www!r}"
        if error is not None and f'error="{error}"' not in www:
            return f'WWW-Authenticate {www!r} lacks error="{error}"'
        return None
    return check


def build_cases(issuer: IssuerClient) -> list[Case]:
    def mint(**kw) -> str:
        fields = {"sub": "alice", "aud": [AUDIENCE], "scope": "read", "ttl": 300}
        fields.update(kw)
        return issuer.mint(**fields)

    valid = mint()
    spoof = (("x-jwt-verified", "true"),)
    return [
        Case("valid token", "/api/orders", 200, valid, check=verified_upstream),
        Case("valid, no admin scope", "/admin/users", 403, valid,
             check=challenge("insufficient_scope")),
        Case("valid, admin scope", "/admin/users", 200, mint(sub="root", scope="read admin"),
             check=verified_upstream),
        Case("tampered payload", "/api/orders", 401, tampered(valid, sub="root", scope="read admin"),
             check=challenge("invalid_token")),
        Case("expired (ttl -300)", "/api/orders", 401, mint(ttl=-300),
             check=challenge("invalid_token")),
        Case("wrong audience", "/api/orders", 401, mint(aud=["other.example"]),
             check=challenge("invalid_token")),
        Case("alg none", "/api/orders", 401, alg_none(valid), check=challenge("invalid_token")),
        Case("alg none, signature kept", "/api/orders", 401, alg_none(valid, keep_signature=True),
             check=challenge("invalid_token")),
        Case("missing token", "/api/orders", 401, check=challenge(None)),
        Case("/public, no token", "/public/status", 200, check=unverified_upstream),
        Case("spoofed x-jwt-verified", "/api/orders", 401, extra=spoof, check=challenge(None)),
        Case("spoofed on /public", "/public/status", 200, extra=spoof, check=unverified_upstream),
    ]


def run_case(port: int, c: Case) -> tuple[int | str, bool, str]:
    headers = list(c.extra)
    if c.token is not None:
        headers.append(("Authorization", f"Bearer {c.token}"))
    try:
        r = fetch(port, c.path, headers)
    except OSError as e:
        return "error", False, f"request failed: {e}"
    why = reason(r)
    if r.status != c.expect:
        return r.status, False, why
    problem = c.check(r) if c.check else None
    return r.status, problem is None, problem or why


def print_table(rows: list[tuple[str, ...]]) -> None:
    head = ("case", "request", "expected", "got", "", "reason")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]

    def line(r, colour=False):
        cells = [str(r[i]).ljust(widths[i]) for i in range(5)]
        if colour:
            cells[4] = _c("32", cells[4]) if r[4] == "OK" else _c("31;1", cells[4])
        return "  ".join(cells) + "  " + r[5]

    say(_c("1", line(head)))
    say("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    for r in rows:
        say(line(r, colour=True))


# ----------------------------------------------------------------------------- the demo


def env_path(var: str, default: Path) -> Path:
    p = Path(os.environ.get(var) or default)
    return p if p.is_absolute() else (Path.cwd() / p)


class Demo:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.procs: list[Proc] = []
        self.echo: EchoServer | None = None
        self.envoy: Proc | None = None
        self.issuer_proc: Proc | None = None
        self.ports: dict[str, int] = {}
        self.envoy_started = 0.0

    # -- start -----------------------------------------------------------------
    def start(self) -> None:
        envoy_bin = env_path("ENVOY_BIN", ROOT / ".tools" / "bin" / "envoy")
        wasm = env_path("EDGE_JWT_WASM", ROOT / "target" / "edge_jwt.wasm")
        issuer_bin = env_path("EDGE_JWT_ISSUER", ROOT / "target" / "release" / "edge-jwt-issuer")
        for what, p, how in (("Envoy", envoy_bin, "scripts/setup.sh envoy"),
                             ("edge-jwt wasm", wasm, "scripts/build.sh"),
                             ("edge-jwt-issuer", issuer_bin, "scripts/build.sh")):
            if not p.is_file():
                raise DemoError(f"{what} not found at {p}: run {how} (or set the path, see --help)")
        (self.state / "keys").mkdir(parents=True, exist_ok=True)
        os.chmod(self.state / "keys", 0o700)

        taken: set[int] = set()
        self.ports = {k: pick_port(v, taken) for k, v in PREFERRED.items()}

        self.echo = EchoServer(self.ports["upstream"])

        self.issuer_proc = self._spawn(
            "issuer", [str(issuer_bin), "serve", "--dir", str(self.state / "keys"),
                       "--listen", f"{LOOPBACK}:{self.ports['issuer']}", "--issuer", ISSUER_URL],
            self.state / "issuer.log")
        self._wait(lambda: self._http_ok(self.ports["issuer"], "/healthz"), self.issuer_proc,
                   "the issuer to answer /healthz")
        self.issuer = IssuerClient(self.ports["issuer"])

        config = localize(SOURCE_CONFIG, self.state / "envoy.yaml",
                          clusters={"issuer": (LOOPBACK, self.ports["issuer"]),
                                    "upstream": (LOOPBACK, self.echo.port)},
                          listener_port=self.ports["listener"], admin_port=self.ports["admin"],
                          wasm_path=wasm)
        self.envoy = self._spawn(
            "envoy", [str(envoy_bin), "-c", str(config), "--concurrency", "2",
                      "--use-dynamic-base-id", "-l", "info"],
            self.state / "envoy.log", stdout=self.state / "access.log")
        self.envoy_started = time.monotonic()
        self._wait(lambda: self._http_ok(self.ports["admin"], "/ready"), self.envoy,
                   "Envoy admin /ready")

    def _spawn(self, name: str, cmd: list[str], log: Path, stdout: Path | None = None) -> Proc:
        p = Proc(name, cmd, log, stdout)
        self.procs.append(p)
        return p

    @staticmethod
    def _http_ok(port: int, path: str) -> bool:
        try:
            return fetch(port, path, timeout=1).status == 200
        except OSError:
            return False

    def _wait(self, ready: Callable[[], bool], proc: Proc, what: str,
              timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not proc.alive():
                raise DemoError(f"{proc.name} exited with code {proc.proc.returncode} while "
                                f"waiting for {what}. {proc.log}:\n{proc.tail()}")
            time.sleep(0.1)
        raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}. {proc.log}:\n"
                        f"{proc.tail()}")

    def warm_up(self) -> float:
        """Bounded wait until a valid token gets 200 (the first JWKS fetch is async).
        Returns the seconds since Envoy was started."""
        token = self.issuer.mint(aud=[AUDIENCE], ttl=120)
        last: list = ["no answer"]

        def ok() -> bool:
            try:
                r = fetch(self.ports["listener"], "/api/warmup",
                         [("Authorization", f"Bearer {token}")], timeout=7)
            except OSError as e:
                last[0] = str(e)
                return False
            last[0] = f"{r.status} {www_description(r) or r.body[:100]!r}"
            if r.status not in (200, 503):  # 503: keys not fetched yet; anything else is final
                raise DemoError(f"a valid token got {last[0]} instead of 200; "
                                f"see {self.envoy.log}")
            return r.status == 200

        try:
            self._wait(ok, self.envoy, "a valid token to get 200", WARMUP_TIMEOUT)
        except DemoError as e:
            if last[0] in str(e):
                raise
            raise DemoError(f"{e}\nlast answer: {last[0]}") from None
        return time.monotonic() - self.envoy_started

    # -- stop ------------------------------------------------------------------
    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                say(f"demo: stopping {p.name}: {e}")
        self.procs.clear()
        if self.echo is not None:
            self.echo.stop()
            self.echo = None

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                raise DemoError(f"{p.name} exited unexpectedly (code {p.proc.returncode}). "
                                f"{p.log}:\n{p.tail()}")


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def print_ready(demo: Demo) -> None:
    lp, ap, ip = demo.ports["listener"], demo.ports["admin"], demo.ports["issuer"]
    token = demo.issuer.mint(sub="alice", aud=[AUDIENCE], scope="read", ttl=3600)
    admin = demo.issuer.mint(sub="root", aud=[AUDIENCE], scope="read admin", ttl=3600)
    base = f"http://{LOOPBACK}:{lp}"
    say(_c("1", "Try it yourself") + " (tokens valid for 1 hour):\n")
    say(f"TOKEN={token}")
    say(f"ADMIN_TOKEN={admin}\n")
    say(f'curl -i {base}/api/orders -H "Authorization: Bearer $TOKEN"          # 200')
    say(f"curl -i {base}/api/orders                                          # 401")
    say(f'curl -i {base}/admin/users -H "Authorization: Bearer $TOKEN"         # 403 insufficient_scope')
    say(f'curl -i {base}/admin/users -H "Authorization: Bearer $ADMIN_TOKEN"   # 200')
    say(f"curl -i {base}/public/status                                       # 200, no token needed")
    say(f'curl -i {base}/api/orders -H "x-jwt-verified: true"                # 401: the header is ours')
    say(f"curl -s --http2-prior-knowledge {base}/api/orders -H \"Authorization: Bearer $TOKEN\"  # h2c")
    say("\n# mint more (fields: sub scope aud ttl extra_claims ...; examples/issuer/README.md):")
    say(f"curl -s -X POST http://{LOOPBACK}:{ip}/token -d '{{\"scope\":\"read admin\",\"ttl\":600}}'")
    say(f"curl -s http://{LOOPBACK}:{ip}/.well-known/jwks.json")
    say(f"# rotate the signing key (Envoy picks the new key up from the JWKS):")
    say(f"curl -s -X POST http://{LOOPBACK}:{ip}/admin/rotate/promote")
    say(f"\n# Envoy admin: RBAC decisions and request counts")
    say(f"curl -s http://{LOOPBACK}:{ap}/stats | grep -E 'ingress_http\\.(rbac|downstream_rq_[2-5]xx)'")
    say(f"\nlogs: {rel(demo.state / 'envoy.log')}, {rel(demo.state / 'access.log')}, "
        f"{rel(demo.state / 'issuer.log')}; config: {rel(demo.state / 'envoy.yaml')}")
    say(_c("1", "\nRunning. Ctrl-C stops everything."))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="edge-jwt demo (see the module docstring)",
                                 epilog="Env: ENVOY_BIN, EDGE_JWT_WASM, EDGE_JWT_ISSUER")
    ap.add_argument("--once", action="store_true",
                    help="run the checks and stop; exit 1 if any is wrong")
    ap.add_argument("--state-dir", default=str(ROOT / "demo-state"),
                    help="keys, generated config and logs (default: demo-state/)")
    args = ap.parse_args(argv)
    state = Path(args.state_dir).resolve()

    def on_signal(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    demo = Demo(state)
    code = 0
    try:
        demo.start()
        p = demo.ports
        say(f"edge-jwt demo (state: {rel(state)})")
        say(f"  envoy     http://{LOOPBACK}:{p['listener']}   admin http://{LOOPBACK}:{p['admin']}"
            f"   config {rel(SOURCE_CONFIG)}")
        say(f"  issuer    http://{LOOPBACK}:{p['issuer']}    {ISSUER_URL}, keys {rel(state / 'keys')}")
        say(f"  upstream  http://{LOOPBACK}:{demo.echo.port}    echo (answers with the headers it got)")
        waited = demo.warm_up()
        say(f"  ready: JWKS fetched, first valid token verified {waited:.1f}s after Envoy started\n")

        rows = []
        failed = 0
        for c in build_cases(demo.issuer):
            got, ok, why = run_case(p["listener"], c)
            failed += not ok
            req = ("GET " + c.path + (" +token" if c.token else "")
                   + "".join(f" +{k}: {v}" for k, v in c.extra))
            rows.append((c.name, req, str(c.expect), str(got), "OK" if ok else "FAIL", why))
        print_table(rows)
        say()
        if failed:
            say(_c("31;1", f"{failed} of {len(rows)} checks FAILED") +
                f" (logs: {rel(state / 'envoy.log')})")
        else:
            say(_c("32", f"all {len(rows)} checks OK"))

        if args.once:
            code = 1 if failed else 0
        else:
            say()
            print_ready(demo)
            while True:
                time.sleep(0.5)
                demo.check_alive()
    except KeyboardInterrupt:
        say("\ndemo: Ctrl-C, stopping")
        code = 130 if args.once else 0
    except Stop as s:
        say(f"\ndemo: {s}, stopping")
        code = 143 if args.once else 0
    except DemoError as e:
        say(f"demo: error: {e}")
        code = 1
    finally:
        # A second Ctrl-C while stopping must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()
        say("demo: stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
