"""Fixtures for the edge-jwt end-to-end suite.

Missing binaries FAIL (never skip): CI must not go green without having run Envoy.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.echo import EchoServer
from harness.envoy import DEFAULT_ENVOY, DEFAULT_WASM, REPO, Envoy
from harness.issuer import Issuer
from harness.jwks_server import JwksServer

DEFAULT_ISSUER_BIN = REPO / "target" / "release" / "edge-jwt-issuer"

# Every Envoy any factory started, so a failing test can show their logs and nothing outlives the session.
_ENVOYS: list[Envoy] = []


def _require(env: str, default: Path, what: str, how: str) -> Path:
    path = Path(os.environ.get(env) or default)
    if not path.is_file():
        pytest.fail(f"{what} not found at {path}. {how} (or set {env}). "
                    "The e2e suite fails instead of skipping so CI cannot pass vacuously.",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def envoy_bin() -> Path:
    path = _require("ENVOY_BIN", DEFAULT_ENVOY, "Envoy binary",
                    "Install Envoy 1.40 into .tools/bin (make tools)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"Envoy binary {path} is not executable (chmod +x it)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def wasm_path() -> Path:
    return _require("EDGE_JWT_WASM", DEFAULT_WASM, "edge-jwt filter wasm",
                    "Build it (make wasm)")


@pytest.fixture(scope="session")
def issuer_bin() -> Path:
    return _require("EDGE_JWT_ISSUER", DEFAULT_ISSUER_BIN, "edge-jwt-issuer binary",
                    "Build it (cargo build --release -p edge-jwt-issuer)")


@pytest.fixture(scope="module")
def issuer(issuer_bin, tmp_path_factory):
    iss = Issuer(issuer_bin, workdir=tmp_path_factory.mktemp("issuer"))
    iss.start()
    yield iss
    iss.stop()


@pytest.fixture
def jwks_server():
    srv = JwksServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def echo():
    srv = EchoServer()
    yield srv
    srv.stop()


class EnvoyFactory:
    """`make(filter_config, **Envoy kwargs)` -> started Envoy; all are stopped at teardown.

    Defaults: upstream = the module's echo server; the wasm and Envoy binary are required
    (failing the test) only when actually used.
    """

    def __init__(self, request, echo: EchoServer, tmp_path_factory) -> None:
        self._request = request
        self._echo = echo
        self._tmp = tmp_path_factory
        self.envoys: list[Envoy] = []

    def __call__(self, filter_config=None, *, start: bool = True, **kw) -> Envoy:
        kw.setdefault("envoy_bin", self._request.getfixturevalue("envoy_bin"))
        if kw.get("use_wasm", True):
            kw.setdefault("wasm", self._request.getfixturevalue("wasm_path"))
        if "upstream" not in kw and "direct_response" not in kw:
            kw["upstream"] = (self._echo.host, self._echo.port)
        kw.setdefault("workdir", self._tmp.mktemp("envoy"))
        env = Envoy(filter_config, **kw)
        self.envoys.append(env)
        _ENVOYS.append(env)
        if start:
            env.start()
        return env

    def stop_all(self) -> None:
        for env in self.envoys:
            env.stop()


@pytest.fixture
def envoy_factory(request, echo, tmp_path_factory):
    f = EnvoyFactory(request, echo, tmp_path_factory)
    yield f
    f.stop_all()


@pytest.fixture(scope="module")
def module_envoy_factory(request, echo, tmp_path_factory):
    f = EnvoyFactory(request, echo, tmp_path_factory)
    yield f
    f.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when == "call":
        for env in _ENVOYS:
            if env.running():
                rep.sections.append((f"envoy log ({env.workdir})", env.log_tail(80)))


def pytest_sessionfinish(session, exitstatus):
    # Belt and braces: fixture finalizers stop Envoys, this catches anything they missed.
    for env in _ENVOYS:
        env.stop()
