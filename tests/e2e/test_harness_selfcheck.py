"""Proves the harness itself with what needs no edge-jwt code: real Envoy + native jwt_authn
(remote_jwks from our JwksServer), the echo upstream, the signing helpers and request counting."""
from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from harness import tokens
from harness.envoy import EnvoyStartError, http_request, jwt_authn_filter, typed_filter
from harness.jwks_server import ONE_MIB, JwksServer

ISS = "https://selfcheck.e2e.local"
AUD = "api.demo.local"


def _fetch(url: str, timeout: float = 3.0) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# -- pure helpers ------------------------------------------------------------------


def test_sign_helpers_roundtrip():
    seed = tokens.new_seed()
    tok = tokens.sign({"alg": "EdDSA", "kid": "k1"}, tokens.claims(ISS, [AUD]), seed)
    h, p, sig = tokens.split(tok)
    assert h == {"alg": "EdDSA", "kid": "k1"} and p["iss"] == ISS
    pub = Ed25519PublicKey.from_public_bytes(tokens.public_key(seed))
    pub.verify(sig, tok.rsplit(".", 1)[0].encode())  # raises if the helper signs the wrong bytes
    assert tokens.b64url_decode(tokens.public_jwk(seed)["x"]) == tokens.public_key(seed)
    # tampering keeps header and signature but the signature no longer matches
    bad = tokens.tamper_payload(tok, sub="admin")
    assert bad.split(".")[0] == tok.split(".")[0] and bad.split(".")[2] == tok.split(".")[2]
    with pytest.raises(Exception):
        pub.verify(tokens.split(bad)[2], bad.rsplit(".", 1)[0].encode())
    assert tokens.unsigned({"alg": "none"}, {"a": 1}).endswith(".")
    # raw bytes segments are encoded as given (for non-JSON / duplicate-key headers)
    raw = tokens.sign(b'{"alg":"EdDSA","alg":"none"}', b"{}", seed)
    assert tokens.b64url_decode(raw.split(".")[0]) == b'{"alg":"EdDSA","alg":"none"}'
    assert len(tokens.hs256({"alg": "HS256"}, {}, tokens.public_key(seed)).split(".")) == 3


# -- JWKS server ------------------------------------------------------------------


def test_jwks_server_modes():
    jwks = {"keys": [tokens.public_jwk(tokens.new_seed(), kid="k1")]}
    with JwksServer(jwks) as srv:
        url = srv.uri
        assert _fetch(url)[0] == 200 and json.loads(_fetch(url)[2]) == jwks
        srv.headers = {"Cache-Control": "max-age=7"}
        assert _fetch(url)[1]["Cache-Control"] == "max-age=7"
        srv.headers = {}
        srv.set_mode("status", status_code=503)
        assert _fetch(url)[0] == 503
        srv.set_mode("html")
        st, hd, body = _fetch(url)
        assert st == 200 and hd["Content-Type"] == "text/html" and body.startswith(b"<html")
        srv.set_mode("not_json")
        with pytest.raises(json.JSONDecodeError):
            json.loads(_fetch(url)[2])
        srv.set_mode("not_jwks")
        assert "keys" not in json.loads(_fetch(url)[2])
        srv.set_mode("empty_keys")
        assert json.loads(_fetch(url)[2]) == {"keys": []}
        srv.set_mode("oversized")
        body = _fetch(url)[2]
        assert len(body) >= ONE_MIB and json.loads(body)["keys"][0] == jwks["keys"][0]
        srv.set_mode("delay", delay_seconds=0.7)
        t0 = time.monotonic()
        assert _fetch(url)[0] == 200 and time.monotonic() - t0 >= 0.6
        srv.set_mode("hang")
        t0 = time.monotonic()
        with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
            _fetch(url, timeout=0.8)
        assert time.monotonic() - t0 < 5
        port = srv.port
        srv.set_mode("refuse")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        srv.resume()
        assert srv.port == port and _fetch(url)[0] == 200
        n = srv.count
        srv.reset_count()
        assert n >= 10 and srv.count == 0
        srv.path = "/.well-known/jwks.json"
        assert _fetch(f"http://127.0.0.1:{port}/other")[0] == 404
        assert srv.count == 1 and srv.hits[0].path == "/other"


# -- echo + raw requests ------------------------------------------------------------


def test_echo_sees_repeated_headers_as_sent(echo):
    r = http_request(echo.port, "POST", "/e?x=1",
                     [("Authorization", "Bearer a"), ("Authorization", "Bearer b"), ("X-T", "1")],
                     body=b"hello")
    assert r.status == 200
    seen = echo.find("/e?x=1")[-1]
    assert [v for k, v in seen["header_list"] if k == "authorization"] == ["Bearer a", "Bearer b"]
    assert seen["body"] == "hello" and r.json()["headers"]["x-t"] == "1"


# -- Envoy -----------------------------------------------------------------------------


def test_envoy_direct_response_and_clean_stop(module_envoy_factory):
    env = module_envoy_factory(use_wasm=False, direct_response=(203, "direct-ok"))
    r = env.request("GET", "/anything")
    assert (r.status, r.body) == (203, b"direct-ok")
    assert env.stats("downstream_rq_2xx")["http.ingress_http.downstream_rq_2xx"] == 1
    assert env.wait_log("starting main dispatch loop", timeout=5)
    pid = env.proc.pid
    env.stop()
    env.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    env.start()  # restartable: fresh ports, same bootstrap
    assert env.proc.pid != pid and env.request("GET", "/again").status == 203


def test_envoy_start_failure_is_reported_with_log(envoy_factory):
    def break_it(boot):  # a route to a cluster that does not exist: Envoy refuses the bootstrap
        hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = "nope"
        hcm["route_config"]["validate_clusters"] = True

    env = envoy_factory(use_wasm=False, start=False, bootstrap_hook=break_it)
    rc, out = env.validate_config()
    assert rc != 0 and "nope" in out
    with pytest.raises(EnvoyStartError) as ei:
        env.start()
    assert ei.value.returncode not in (None, 0)
    assert "nope" in ei.value.log
    assert not env.running()


def _jwt_authn(jwks_uri: str, timeout: str = "2s") -> dict:
    provider = {"issuer": ISS, "audiences": [AUD], "forward": True,
                "remote_jwks": {"http_uri": {"uri": jwks_uri, "cluster": "jwks", "timeout": timeout},
                                "cache_duration": "300s"}}
    rules = [{"match": {"prefix": "/public"}},
             {"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}]
    return jwt_authn_filter({"p": provider}, rules)


@pytest.fixture
def signer():
    seed = tokens.new_seed()
    return seed, {"keys": [tokens.public_jwk(seed, kid="k1")]}


def test_native_jwt_authn_through_harness(envoy_factory, jwks_server, echo, signer):
    seed, jwks = signer
    jwks_server.jwks = jwks
    env = envoy_factory(use_wasm=False, filters_before=[_jwt_authn(jwks_server.uri)],
                        clusters={"jwks": jwks_server.port})

    hdr = {"alg": "EdDSA", "typ": "JWT", "kid": "k1"}
    good = tokens.sign(hdr, tokens.claims(ISS, [AUD]), seed)
    mark = uuid.uuid4().hex
    r = env.get(f"/api/{mark}", good)
    assert r.status == 200, (r, env.log_tail())
    seen = echo.find(mark)
    assert len(seen) == 1 and seen[0]["headers"]["authorization"] == f"Bearer {good}"
    assert 1 <= jwks_server.count <= env.concurrency

    other = tokens.new_seed()
    bad = {
        "missing": None,
        "tampered": tokens.tamper_payload(good, sub="admin"),
        "alg_none": tokens.unsigned({"alg": "none", "kid": "k1"}, tokens.claims(ISS, [AUD])),
        "expired": tokens.sign(hdr, tokens.claims(ISS, [AUD], ttl=-300), seed),
        "unknown_key": tokens.sign(hdr, tokens.claims(ISS, [AUD]), other),
        "hs256_pubkey": tokens.hs256({"alg": "HS256", "kid": "k1"}, tokens.claims(ISS, [AUD]),
                                     tokens.public_key(seed)),
    }
    for name, tok in bad.items():
        m = uuid.uuid4().hex
        r = env.get(f"/api/{m}", tok)
        assert r.status == 401, (name, r)
        assert echo.find(m) == [], f"{name} reached upstream"
    # jwt_authn answers 403 (not 401) for a verified token with the wrong audience
    m = uuid.uuid4().hex
    r = env.get(f"/api/{m}", tokens.sign(hdr, tokens.claims(ISS, ["other.local"]), seed))
    assert r.status == 403 and echo.find(m) == []
    assert env.get("/public/x").status == 200

    # sequential requests keep hitting each worker's cache: at most one fetch per worker
    for _ in range(10):
        assert env.get("/api/again", good).status == 200
    assert 1 <= jwks_server.count <= env.concurrency
    assert env.stats("jwt_authn")["http.ingress_http.jwt_authn.allowed"] >= 11


def test_native_jwt_authn_jwks_failures(envoy_factory, jwks_server, signer):
    seed, jwks = signer
    jwks_server.jwks = jwks
    jwks_server.set_mode("hang")
    env = envoy_factory(use_wasm=False, filters_before=[_jwt_authn(jwks_server.uri, "1s")],
                        start=False)
    env.add_cluster("jwks", port=jwks_server.port).start()
    good = tokens.sign({"alg": "EdDSA", "kid": "k1"}, tokens.claims(ISS, [AUD]), seed)
    t0 = time.monotonic()
    assert env.get("/api", good).status == 401  # fetch timed out
    assert time.monotonic() - t0 < 5
    assert jwks_server.count >= 1
    # a refused JWKS host fails too; stop() must not wait for hung handlers
    jwks_server.set_mode("refuse")
    env2 = envoy_factory(use_wasm=False, filters_before=[_jwt_authn(jwks_server.uri, "1s")],
                         start=False)
    env2.add_cluster("jwks", port=jwks_server.port).start()
    assert env2.get("/api", good).status == 401


def test_extra_filters_around_the_chain(envoy_factory, echo):
    # header_to_metadata + RBAC before the (omitted) wasm slot: the chain builder keeps order
    h2m = typed_filter(
        "envoy.filters.http.header_to_metadata",
        "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
        request_rules=[{"header": "x-user", "on_header_present": {
            "metadata_namespace": "e2e", "key": "user", "type": "STRING"}}])
    rbac = typed_filter(
        "envoy.filters.http.rbac", "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        rules={"action": "ALLOW", "policies": {"alice": {
            "permissions": [{"any": True}],
            "principals": [{"metadata": {"filter": "e2e", "path": [{"key": "user"}],
                                         "value": {"string_match": {"exact": "alice"}}}}]}}})
    env = envoy_factory(use_wasm=False, filters_before=[h2m], filters_after=[rbac])
    names = [f["name"] for f in env.http_filters()]
    assert names == ["envoy.filters.http.header_to_metadata", "envoy.filters.http.rbac",
                     "envoy.filters.http.router"]
    assert env.request("GET", "/r", [("x-user", "alice")]).status == 200
    assert env.request("GET", "/r", [("x-user", "bob")]).status == 403
