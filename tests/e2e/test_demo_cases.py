"""The demo matrix against the real filter: issuer as remote JWKS, provider `demo`,
`/public` bypassed, everything else requires a token."""
from __future__ import annotations

import uuid

import pytest

from harness import tokens
from harness.configs import DEMO_AUDIENCE, demo_config

REALM = 'Bearer realm="edge-jwt"'


@pytest.fixture(scope="module")
def demo_envoy(module_envoy_factory, issuer):
    cfg = demo_config(issuer.issuer_url, jwks_uri=issuer.jwks_uri, cluster="issuer")
    env = module_envoy_factory(cfg, clusters={"issuer": issuer.port}, concurrency=2)
    # The filter fetches the JWKS asynchronously after start: wait (bounded) for it to verify.
    r = env.wait_status("/warmup", _valid(issuer), 200, timeout=10)
    assert r.status == 200, f"no 200 within 10 s of start (JWKS never fetched?): {r}\n{env.log_tail()}"
    return env


def _valid(issuer, **kw) -> str:
    fields = {"sub": "alice", "aud": [DEMO_AUDIENCE], "ttl": 300}
    fields.update(kw)
    return issuer.mint(**fields)


def _marker() -> str:
    return f"/api/{uuid.uuid4().hex}"


def _assert_invalid_token(r, echo, path):
    assert r.status == 401, r
    www = r.header("www-authenticate") or ""
    assert www.startswith(REALM), www
    assert 'error="invalid_token"' in www and 'error_description="' in www, www
    assert echo.find(path) == [], "a rejected request reached the upstream"


def test_valid_token_reaches_upstream(demo_envoy, issuer, echo):
    path = _marker()
    tok = _valid(issuer)
    r = demo_envoy.get(path, tok)
    assert r.status == 200, r
    seen = echo.find(path)
    assert len(seen) == 1
    assert seen[0]["headers"].get("authorization") == f"Bearer {tok}"  # forward defaults to true


def _tampered(issuer):
    return tokens.tamper_payload(_valid(issuer), sub="admin")


def _alg_none(issuer):
    h, p, _ = tokens.split(_valid(issuer))
    return tokens.unsigned(dict(h, alg="none"), p)


def _alg_none_sig_kept(issuer):
    tok = _valid(issuer)
    h, p, _ = tokens.split(tok)
    return tokens.unsigned(dict(h, alg="none"), p, tok.rsplit(".", 1)[1])


BAD_TOKENS = {
    "tampered_payload": _tampered,
    "expired_beyond_skew": lambda iss: _valid(iss, ttl=-300),
    "wrong_audience": lambda iss: _valid(iss, aud=["other.example"]),
    "alg_none": _alg_none,
    "alg_none_signature_kept": _alg_none_sig_kept,
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_token_is_401_invalid_token(demo_envoy, issuer, echo, case):
    path = _marker()
    r = demo_envoy.get(path, BAD_TOKENS[case](issuer))
    _assert_invalid_token(r, echo, path)


def test_missing_token_is_401_without_error_code(demo_envoy, echo):
    path = _marker()
    r = demo_envoy.get(path)
    assert r.status == 401, r
    www = r.header("www-authenticate")
    assert www is not None and www.startswith(REALM), www
    assert "error=" not in www, f"RFC 6750 3.1: no error code when no token was sent: {www}"
    assert echo.find(path) == []


def test_public_needs_no_token(demo_envoy, echo):
    path = f"/public/{uuid.uuid4().hex}"
    r = demo_envoy.get(path)
    assert r.status == 200, r
    assert len(echo.find(path)) == 1


def test_scheme_is_case_insensitive(demo_envoy, issuer, echo):
    path = _marker()
    r = demo_envoy.request("GET", path, [("Authorization", f"bearer {_valid(issuer)}")])
    assert r.status == 200, r
    assert len(echo.find(path)) == 1


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Basic xyz"])
def test_present_but_malformed_header_is_invalid_token(demo_envoy, echo, value):
    # A header that is there but carries no usable bearer token is an invalid token, not a missing one.
    path = _marker()
    r = demo_envoy.request("GET", path, [("Authorization", value)])
    _assert_invalid_token(r, echo, path)


def test_local_jwks_only(envoy_factory, issuer, echo):
    """Inline JWKS, no remote source: verifies from the first request (parsed at configure time)."""
    cfg = demo_config(issuer.issuer_url, local_jwks=issuer.jwks())
    assert "remote_jwks" not in cfg["providers"]["demo"]
    env = envoy_factory(cfg)
    path = _marker()
    r = env.get(path, _valid(issuer))
    assert r.status == 200, (r, env.log_tail())
    assert len(echo.find(path)) == 1
    # a key that is not in the inline JWKS, even under the current kid, is refused
    h, p, _ = tokens.split(_valid(issuer))
    forged = tokens.sign(h, p, tokens.new_seed())
    path = _marker()
    _assert_invalid_token(env.get(path, forged), echo, path)
    path = _marker()
    _assert_invalid_token(env.get(path, _valid(issuer, aud=["other.example"])), echo, path)
