"""The Envoy configs we ship under envoy/ are valid, and envoy/edge-jwt.yaml really runs.

`envoy/edge-jwt.yaml` is run as users get it, with only its addresses, ports and wasm
path rewritten for loopback by scripts/envoy_localize.py (the same function the demo
uses): the real issuer as JWKS host, the echo server as upstream.
"""
from __future__ import annotations

import copy
import json
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.bootstrap_walk import walk
from harness.envoy import REPO, Envoy
from harness.issuer import Issuer
from harness.ports import LOOPBACK

sys.path.insert(0, str(REPO / "scripts"))
from envoy_localize import LocalizeError, load, localize_bootstrap  # noqa: E402

ENVOY_DIR = REPO / "envoy"
STANDALONE = ENVOY_DIR / "edge-jwt.yaml"
SHIPPED = sorted(p for ext in ("*.yaml", "*.yml") for p in ENVOY_DIR.glob(ext))
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
REALM = 'Bearer realm="edge-jwt"'
STAT_PREFIX = "http.ingress_http."




def _edge_jwt_config(boot: dict) -> dict:
    """The filter's JSON config inside a bootstrap (the first edge-jwt wasm filter)."""
    for d in walk(boot):
        if d.get("@type") == WASM_TYPE:
            return json.loads(d["config"]["configuration"]["value"])
    raise AssertionError("no envoy.filters.http.wasm filter in the bootstrap")


SHIPPED_FILTER = _edge_jwt_config(load(STANDALONE))
PROVIDER = SHIPPED_FILTER["providers"]["demo"]
ISSUER_URL = PROVIDER["issuer"]
AUDIENCE = PROVIDER["audiences"][0]


# -- every shipped file validates ----------------------------------------------------


def test_something_is_shipped():
    assert STANDALONE in SHIPPED, f"{STANDALONE} missing; shipped: {SHIPPED}"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_config_validates(path, envoy_bin, wasm_path, tmp_path):
    """`envoy --mode validate` on the file as shipped, but with the built wasm: DNS names
    (issuer, upstream) stay as they are; validate mode does not resolve them."""
    boot = localize_bootstrap(load(path), clusters={}, wasm_path=wasm_path, strict=False)
    out = tmp_path / path.name
    out.write_text(json.dumps(boot, indent=1))
    rc, text = Envoy.validate(out, envoy_bin)
    # validate mode loads the wasm and runs the plugin's on_configure: a refused filter
    # config fails here too.
    assert rc == 0 and "OK" in text, f"{path.name}: envoy --mode validate exit {rc}\n{text[-3000:]}"


# -- the localizer changes addresses only -------------------------------------------


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, prefix + (i,))
    else:
        yield prefix, node


def test_localize_touches_only_addresses_ports_and_wasm(tmp_path):
    src = load(STANDALONE)
    out = localize_bootstrap(copy.deepcopy(src),
                             clusters={"issuer": (LOOPBACK, 1111), "upstream": (LOOPBACK, 2222)},
                             listener_port=3333, admin_port=4444, wasm_path=tmp_path / "x.wasm")
    a, b = dict(_leaves(src)), dict(_leaves(out))
    assert a.keys() == b.keys()
    changed = {k for k in a if a[k] != b[k]}
    for k in changed:
        assert k[-1] in ("address", "port_value", "filename"), f"unexpected change at {k}"
    assert b[("admin", "address", "socket_address", "port_value")] == 4444
    lst = out["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert lst == {"address": LOOPBACK, "port_value": 3333}
    eps = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
           ["address"]["socket_address"] for c in out["static_resources"]["clusters"]}
    assert eps == {"issuer": {"address": LOOPBACK, "port_value": 1111},
                   "upstream": {"address": LOOPBACK, "port_value": 2222}}
    assert _edge_jwt_config(out) == SHIPPED_FILTER


def test_localize_refuses_unmapped_dns_cluster():
    with pytest.raises(LocalizeError, match="upstream"):
        localize_bootstrap(load(STANDALONE), clusters={"issuer": (LOOPBACK, 1)})
    with pytest.raises(LocalizeError, match="nope"):
        localize_bootstrap(load(STANDALONE), clusters={"nope": (LOOPBACK, 1)}, strict=True)


# -- envoy/edge-jwt.yaml, running -----------------------------------------------------


@pytest.fixture(scope="module")
def issuer(issuer_bin, tmp_path_factory):
    """Overrides the conftest issuer: the shipped config trusts ISSUER_URL."""
    iss = Issuer(issuer_bin, workdir=tmp_path_factory.mktemp("issuer"), issuer_url=ISSUER_URL)
    iss.start()
    yield iss
    iss.stop()


def _shipped_envoy(factory, issuer, echo, wasm_path, extra_hook=None):
    """envoy/edge-jwt.yaml via the harness' Envoy (process handling, admin, logs): the
    bootstrap it writes is the localized shipped file. Ports 0: the harness reads the
    listener and admin ports back."""
    def hook(boot: dict) -> None:
        local = localize_bootstrap(load(STANDALONE),
                                   clusters={"issuer": (LOOPBACK, issuer.port),
                                             "upstream": (echo.host, echo.port)},
                                   listener_port=0, admin_port=0, wasm_path=wasm_path)
        if extra_hook:
            extra_hook(local)
        boot.clear()
        boot.update(local)

    env = factory(None, use_wasm=False, upstream=(echo.host, echo.port), bootstrap_hook=hook,
                  concurrency=2)
    # Until the first JWKS fetch lands the filter holds requests, then answers 503; any
    # other answer is final.
    token = _valid(issuer)
    deadline = time.monotonic() + 15
    while True:
        r = env.get("/api/warmup", token, timeout=10)
        if r.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status == 200, f"valid token not accepted after start: {r}\n{env.log_tail()}"
    return env


@pytest.fixture(scope="module")
def shipped(module_envoy_factory, issuer, echo, wasm_path):
    return _shipped_envoy(module_envoy_factory, issuer, echo, wasm_path)


def _valid(issuer, **kw) -> str:
    fields = {"sub": "alice", "aud": [AUDIENCE], "ttl": 300, "scope": "read"}
    fields.update(kw)
    return issuer.mint(**fields)


def _path(prefix: str = "/api") -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


def test_valid_token_reaches_upstream_marked_verified(shipped, issuer, echo):
    path = _path()
    r = shipped.get(path, _valid(issuer))
    assert r.status == 200, r
    seen = echo.find(path)
    assert len(seen) == 1
    assert seen[0]["headers"].get("x-jwt-verified") == "true", seen[0]["headers"]


def test_listener_speaks_h2c(shipped):
    """codec_type AUTO: an HTTP/2 prior-knowledge preface gets a SETTINGS frame back."""
    with socket.create_connection((LOOPBACK, shipped.port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        frame = s.recv(9)
    assert len(frame) == 9 and frame[3] == 0x04, f"no HTTP/2 SETTINGS frame back: {frame!r}"


def test_missing_token_401(shipped, echo):
    path = _path()
    r = shipped.get(path)
    assert r.status == 401, r
    assert r.header("www-authenticate") == REALM, r
    assert echo.find(path) == []


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_client_verdict_header_without_token_401(shipped, echo, value):
    path = _path()
    r = shipped.request("GET", path, [("x-jwt-verified", value)])
    assert r.status == 401, r
    assert (r.header("www-authenticate") or "").startswith(REALM), r
    assert echo.find(path) == []


def test_client_verdict_header_on_public_is_stripped(shipped, echo):
    path = _path("/public")
    r = shipped.request("GET", path, [("x-jwt-verified", "true")])
    assert r.status == 200, r
    seen = echo.find(path)
    assert len(seen) == 1
    assert "x-jwt-verified" not in seen[0]["headers"], seen[0]["headers"]


def test_admin_needs_admin_scope(shipped, issuer, echo):
    path = _path("/admin")
    r = shipped.get(path, _valid(issuer))
    assert r.status == 403, r
    assert 'error="insufficient_scope"' in (r.header("www-authenticate") or ""), r
    assert echo.find(path) == []
    path = _path("/admin")
    r = shipped.get(path, _valid(issuer, scope="read admin"))
    assert r.status == 200, r
    assert len(echo.find(path)) == 1


@pytest.mark.parametrize("prefix", ["/publicity", "/public-internal", "/publicfoo"])
def test_public_bypass_is_a_path_segment_not_a_string_prefix(shipped, echo, prefix):
    """path_separated_prefix: /public and below bypass; /publicity does not."""
    marker = uuid.uuid4().hex
    r = shipped.request("GET", f"{prefix}/{marker}")
    assert r.status == 401, r
    assert echo.find(marker) == []


@pytest.mark.parametrize("prefix", ["/adminx", "/administrator"])
def test_admin_scope_rule_is_a_path_segment(shipped, issuer, echo, prefix):
    """A read-only token is not held to the admin scope outside /admin, and /admin itself is."""
    r = shipped.get(f"{prefix}/{uuid.uuid4().hex}", _valid(issuer))
    assert r.status == 200, r
    r = shipped.get("/admin", _valid(issuer))
    assert r.status == 403, r


def test_dot_segments_cannot_reach_protected_path_via_public(shipped, echo):
    """normalize_path: /public/../api/x is /api/x for edge-jwt and RBAC alike."""
    marker = uuid.uuid4().hex
    r = shipped.request("GET", f"/public/../api/{marker}")
    assert r.status == 401, r
    assert echo.find(marker) == []


def _rbac(env) -> dict[str, int]:
    s = env.stats(r"^http\.ingress_http\.rbac\.")
    return {k: s.get(STAT_PREFIX + "rbac." + k, 0) for k in ("allowed", "denied")}


def test_rbac_allows_valid_request_on_verdict(shipped, issuer):
    before = _rbac(shipped)
    r = shipped.get(_path(), _valid(issuer))
    assert r.status == 200, r
    after = _rbac(shipped)
    assert after["allowed"] == before["allowed"] + 1, (before, after)
    assert after["denied"] == before["denied"], (before, after)


def test_rbac_is_not_reached_by_rejected_request(shipped):
    before = _rbac(shipped)
    assert shipped.get(_path()).status == 401
    assert _rbac(shipped) == before


def test_rbac_policy_that_matched(module_envoy_factory, issuer, echo, wasm_path, tmp_path):
    """Which RBAC policy allowed the request: `jwt-verified` (metadata custom.jwt_verified
    == "true", written by header_to_metadata from the filter's verdict) for /api, `public`
    for /public. Instrumented copy: the access log format is the only addition."""
    fmt = ("%REQ(:PATH)% %RESPONSE_CODE% verdict=%DYNAMIC_METADATA(custom:jwt_verified)% "
           "policy=%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)%\n")

    def instrument(boot: dict) -> None:
        for d in walk(boot):
            if d.get("name") == "envoy.access_loggers.stdout":
                d["typed_config"]["log_format"] = {"text_format_source": {"inline_string": fmt}}
                return
        raise AssertionError("no stdout access log in the shipped config")

    env = _shipped_envoy(module_envoy_factory, issuer, echo, wasm_path, instrument)
    api, pub = _path(), _path("/public")
    assert env.get(api, _valid(issuer)).status == 200
    assert env.get(pub).status == 200
    assert env.wait_log(f"{pub} 200", timeout=15), env.log_tail()
    lines = env.log_text().splitlines()
    api_line = next(ln for ln in lines if ln.startswith(f"{api} "))
    pub_line = next(ln for ln in lines if ln.startswith(f"{pub} "))
    assert api_line == f"{api} 200 verdict=true policy=jwt-verified", api_line
    assert pub_line == f"{pub} 200 verdict=- policy=public", pub_line
