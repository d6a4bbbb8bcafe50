"""Envoy under test: bootstrap built as a dict, written as JSON, process started and always stopped."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from .ports import LOOPBACK, port_open

REPO = Path(__file__).resolve().parents[3]
DEFAULT_ENVOY = REPO / ".tools" / "bin" / "envoy"
DEFAULT_WASM = REPO / "target" / "edge_jwt.wasm"
LISTENER_NAME = "ingress"
_STARTUP_NOISE = re.compile(r"server\.cc:\d+\]   |^\s*$")  # indented lines list extensions

# -- bootstrap pieces ------------------------------------------------------------


def socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def static_cluster(name: str, host: str, port: int, connect_timeout: str = "1s") -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}],
        },
    }


def wasm_filter(filter_config: dict | str, wasm_path: str | os.PathLike,
                plugin_name: str = "edge-jwt", root_id: str = "edge_jwt", vm_id: str = "",
                extra: dict | None = None) -> dict:
    """The edge-jwt filter. A str config is passed verbatim (lets tests send invalid JSON)."""
    value = filter_config if isinstance(filter_config, str) else json.dumps(filter_config)
    config = {
        "name": plugin_name,
        "root_id": root_id,
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm_path)}},
        },
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value},
    }
    config.update(extra or {})
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                         "config": config},
    }


def typed_filter(name: str, type_url: str, **config) -> dict:
    """Any other HTTP filter (RBAC, header_to_metadata, ...) for filters_before/filters_after."""
    return {"name": name, "typed_config": {"@type": type_url, **config}}


def jwt_authn_filter(providers: dict, rules: list[dict]) -> dict:
    """Envoy's native jwt_authn, for comparisons and the harness self-check."""
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": rules,
        },
    }


def router_filter() -> dict:
    return {"name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def file_access_log(path: str | os.PathLike) -> dict:
    return {"name": "envoy.access_loggers.file",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                             "path": str(path)}}


def route_to_cluster(cluster: str, prefix: str = "/", timeout: str = "10s") -> dict:
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster, "timeout": timeout}}


def route_direct(status: int = 200, body: str = "direct", prefix: str = "/") -> dict:
    return {"match": {"prefix": prefix},
            "direct_response": {"status": status, "body": {"inline_string": body}}}


def http_listener(name: str, port: int, http_filters: list[dict], routes: list[dict],
                  stat_prefix: str = "ingress_http", access_log: str | None = None) -> dict:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {"name": "local",
                         "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": http_filters,
    }
    if access_log:
        hcm["access_log"] = [file_access_log(access_log)]
    return {
        "name": name,
        "address": socket_address(LOOPBACK, port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


# -- process ---------------------------------------------------------------------


class Response(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitive; None if absent."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


def http_request(port: int, method: str = "GET", path: str = "/",
                 headers: Iterable[tuple[str, str]] = (), body: bytes | None = None,
                 timeout: float = 10.0, host: str = LOOPBACK) -> Response:
    """One HTTP/1.1 request on a fresh connection; headers go out exactly as listed
    (repeated names stay separate lines). Adds Host and Content-Length only if absent."""
    headers = list(headers)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        names = {k.lower() for k, _ in headers}
        if "host" not in names:
            conn.putheader("Host", "edge.test")
        if body is not None and "content-length" not in names:
            conn.putheader("Content-Length", str(len(body)))
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


class EnvoyStartError(RuntimeError):
    def __init__(self, msg: str, returncode: int | None, log: str) -> None:
        super().__init__(f"{msg}\n--- envoy log tail ---\n{log}")
        self.returncode = returncode  # None: still running when we gave up
        self.log = log


class Envoy:
    """One Envoy process with a listener named `ingress` on a kernel-chosen 127.0.0.1 port.

    Filter chain: filters_before + [edge-jwt wasm, unless use_wasm=False] + filters_after + router.
    Upstream: cluster `upstream` to `upstream=(host, port)`, or `direct_response=(status, body)`.
    Extra STATIC clusters (JWKS hosts): `clusters={"name": port}` or add_cluster() before start().
    Use as a context manager (or start()/stop()); stop() is idempotent.
    """

    def __init__(self, filter_config: dict | str | None = None, *,
                 upstream: tuple[str, int] | None = None,
                 direct_response: tuple[int, str] | None = None,
                 use_wasm: bool = True,
                 wasm: str | os.PathLike | None = None,
                 plugin_name: str = "edge-jwt", root_id: str = "edge_jwt", vm_id: str = "",
                 wasm_extra: dict | None = None,
                 filters_before: Iterable[dict] = (), filters_after: Iterable[dict] = (),
                 clusters: dict[str, int] | None = None,
                 concurrency: int = 2, log_level: str = "info",
                 envoy_bin: str | os.PathLike | None = None,
                 workdir: str | os.PathLike | None = None,
                 ready_timeout: float = 15.0,
                 bootstrap_hook: Callable[[dict], None] | None = None,
                 extra_args: Iterable[str] = ()) -> None:
        if use_wasm and filter_config is None:
            raise ValueError("filter_config is required unless use_wasm=False")
        if (upstream is None) == (direct_response is None):
            raise ValueError("give exactly one of upstream=(host, port) or direct_response=(status, body)")
        self.filter_config = filter_config
        self.upstream = upstream
        self.direct_response = direct_response
        self.use_wasm = use_wasm
        self.wasm = Path(wasm or os.environ.get("EDGE_JWT_WASM") or DEFAULT_WASM)
        self.plugin_name, self.root_id, self.vm_id = plugin_name, root_id, vm_id
        self.wasm_extra = wasm_extra
        self.filters_before = list(filters_before)
        self.filters_after = list(filters_after)
        self.concurrency = concurrency
        self.log_level = log_level
        self.envoy_bin = str(envoy_bin or os.environ.get("ENVOY_BIN") or DEFAULT_ENVOY)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edge-jwt-envoy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ready_timeout = ready_timeout
        self.bootstrap_hook = bootstrap_hook
        self.extra_args = list(extra_args)
        self.clusters: list[dict] = []
        for name, port in (clusters or {}).items():  # name -> port on 127.0.0.1
            self.add_cluster(name, LOOPBACK, port)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0
        self.config_path = self.workdir / "envoy.json"
        self.log_path = self.workdir / "envoy.log"
        self.out_path = self.workdir / "envoy.out"
        self.access_log_path = self.workdir / "access.log"

    # -- bootstrap -------------------------------------------------------------
    def add_cluster(self, name: str, host: str = LOOPBACK, port: int = 0,
                    connect_timeout: str = "1s") -> "Envoy":
        """A STATIC cluster, e.g. the JWKS host the filter calls out to."""
        self.clusters.append(static_cluster(name, host, port, connect_timeout))
        return self

    def http_filters(self) -> list[dict]:
        chain = list(self.filters_before)
        if self.use_wasm:
            chain.append(wasm_filter(self.filter_config, self.wasm, self.plugin_name,
                                     self.root_id, self.vm_id, self.wasm_extra))
        chain += self.filters_after
        chain.append(router_filter())
        return chain

    def bootstrap(self) -> dict:
        clusters = list(self.clusters)
        if self.upstream is not None:
            clusters.append(static_cluster("upstream", *self.upstream))
            routes = [route_to_cluster("upstream")]
        else:
            routes = [route_direct(*self.direct_response)]
        boot = {
            "admin": {"address": socket_address(LOOPBACK, 0)},
            "static_resources": {
                "listeners": [http_listener(LISTENER_NAME, 0, self.http_filters(), routes,
                                            access_log=str(self.access_log_path))],
                "clusters": clusters,
            },
        }
        if self.bootstrap_hook:
            self.bootstrap_hook(boot)
        return boot

    def write_bootstrap(self) -> Path:
        self.config_path.write_text(json.dumps(self.bootstrap(), indent=2))
        return self.config_path

    # -- lifecycle -------------------------------------------------------------
    def command(self) -> list[str]:
        return [self.envoy_bin, "-c", str(self.config_path),
                "--use-dynamic-base-id", "--concurrency", str(self.concurrency),
                "-l", self.log_level, "--log-path", str(self.log_path),
                "--admin-address-path", str(self.workdir / "admin.addr"),
                # defaults (10 s / 64 KiB) would show logs long after the event a test waits for
                "--file-flush-interval-msec", "100", "--file-flush-min-size-kb", "0",
                *self.extra_args]

    def start(self) -> "Envoy":
        """Start and wait (bounded) until admin /ready says LIVE and the listener accepts.

        Raises EnvoyStartError (process stopped) if Envoy exits or is not ready in time.
        """
        if not Path(self.envoy_bin).is_file():
            raise FileNotFoundError(f"Envoy binary not found: {self.envoy_bin} (set ENVOY_BIN)")
        if self.use_wasm and not self.wasm.is_file():
            raise FileNotFoundError(f"edge-jwt wasm not found: {self.wasm} (build it or set EDGE_JWT_WASM)")
        if self.running():
            raise RuntimeError("Envoy already running; stop() it first")
        self.port = self.admin_port = 0  # a restart must not reuse the old ports
        (self.workdir / "admin.addr").unlink(missing_ok=True)
        self.write_bootstrap()
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        why = "timed out"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                why = f"exited with code {self.proc.returncode}"
                break
            if self._probe_ready():
                return self
            time.sleep(0.1)
        rc = self.proc.poll()
        self.stop()
        raise EnvoyStartError(f"Envoy not ready after {self.ready_timeout}s: {why}", rc,
                              self.log_tail())

    def _probe_ready(self) -> bool:
        if not self.admin_port:
            try:
                addr = (self.workdir / "admin.addr").read_text().strip()
                self.admin_port = int(addr.rsplit(":", 1)[1])
            except (OSError, ValueError, IndexError):
                return False
        try:
            status, body = self.admin_get("/ready", timeout=1)
        except OSError:
            return False
        if status != 200:
            return False
        if not self.port:
            self.port = self.listener_port() or 0
        return bool(self.port) and port_open(self.port)

    def listener_port(self, name: str = LISTENER_NAME) -> int | None:
        status, body = self.admin_get("/listeners?format=json")
        if status != 200:
            return None
        for ls in json.loads(body).get("listener_statuses", []):
            if ls.get("name") == name:
                return int(ls["local_address"]["socket_address"]["port_value"])
        return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float = 15.0) -> int | None:
        """Exit code, or None if still running after `timeout`."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. Safe to call twice or before start()."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "Envoy":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- traffic ---------------------------------------------------------------
    def request(self, method: str = "GET", path: str = "/",
                headers: Iterable[tuple[str, str]] = (), body: bytes | None = None,
                timeout: float = 10.0) -> Response:
        """One request to the listener on a fresh connection (see http_request)."""
        return http_request(self.port, method, path, headers, body, timeout)

    def get(self, path: str = "/", token: str | None = None,
            headers: Iterable[tuple[str, str]] = (), **kw) -> Response:
        """GET with `Authorization: Bearer <token>` when a token is given."""
        hs = list(headers)
        if token is not None:
            hs.insert(0, ("Authorization", f"Bearer {token}"))
        return self.request("GET", path, hs, **kw)

    def wait_status(self, path: str, token: str | None = None, status: int = 200,
                    timeout: float = 10.0, headers: Iterable[tuple[str, str]] = ()) -> Response:
        """Repeat a GET until it answers `status` (e.g. the first async JWKS fetch landed).

        Bounded by `timeout`; returns the last response either way so the caller asserts.
        """
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(path, token, headers, timeout=5)
            if r.status == status or time.monotonic() >= deadline:
                return r
            time.sleep(0.1)

    # -- admin -----------------------------------------------------------------
    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(LOOPBACK, self.admin_port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def admin_post(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(LOOPBACK, self.admin_port, timeout=timeout)
        try:
            conn.request("POST", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def stats(self, filter: str | None = None) -> dict[str, int]:  # noqa: A002 - mirrors admin param
        """Counters and gauges from admin /stats (JSON form); `filter` is Envoy's regex filter."""
        q = "/stats?format=json"
        if filter:
            q += "&filter=" + urllib.parse.quote(filter)
        status, body = self.admin_get(q)
        if status != 200:
            raise RuntimeError(f"admin {q} -> {status}: {body[:300]!r}")
        out: dict[str, int] = {}
        for entry in json.loads(body).get("stats", []):
            if "name" in entry and "value" in entry:
                out[entry["name"]] = int(entry["value"])
        return out

    # -- logs ------------------------------------------------------------------
    def log_text(self) -> str:
        """Envoy's application log plus anything it wrote on stdout/stderr."""
        parts = []
        for p in (self.out_path, self.log_path):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def log_tail(self, lines: int = 60) -> str:
        """Last lines of the log, minus the start-up extension/header-map listing."""
        keep = [ln for ln in self.log_text().splitlines()
                if not _STARTUP_NOISE.search(ln)]
        return "\n".join(keep[-lines:])

    def wait_log(self, needle: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.1)
        return needle in self.log_text()

    def access_log(self) -> str:
        return self.access_log_path.read_text(errors="replace") if self.access_log_path.exists() else ""

    # -- validate --------------------------------------------------------------
    @staticmethod
    def validate(path: str | os.PathLike, envoy_bin: str | os.PathLike | None = None,
                 timeout: float = 60.0) -> tuple[int, str]:
        """`envoy --mode validate -c path` -> (exit code, combined output)."""
        binary = str(envoy_bin or os.environ.get("ENVOY_BIN") or DEFAULT_ENVOY)
        p = subprocess.run([binary, "--mode", "validate", "-c", str(path), "-l", "info"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace")

    def validate_config(self) -> tuple[int, str]:
        """Write this instance's bootstrap and validate it without starting Envoy."""
        return Envoy.validate(self.write_bootstrap(), self.envoy_bin)
