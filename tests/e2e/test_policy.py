"""Policy features of edge-jwt in the real Envoy 1.40 (issue 4).

Each section runs a real Envoy with the built filter and the echo server as upstream, so a
test sees both the answer the client got and exactly what reached the application:

1. RBAC after the filter, on each of the three verdict channels (allow AND deny each):
   filter state `wasm.custom.jwt_verified` (RBAC `filter_state` matcher), the request header
   `x-jwt-verified` (RBAC `header` matcher, what an Istio AuthorizationPolicy on
   `request.headers[x-jwt-verified]` compiles to), and dynamic metadata via
   `header_to_metadata` (RBAC `metadata` matcher);
2. claim_to_headers (strings, nested, arrays, objects, numbers/bools, CR/LF) and stripping of
   client-sent copies on verified, bypassed and refused requests;
3. forward_payload_header;  4. forward: true / false;
5. rules: exact path vs prefix, methods, first match wins, optional JWT, required_scopes;
6. bypass_cors_preflight;  7. audit_mode;  8. jwt_or_session;
9. the revocation list: listed jti / sub refused, list updates beat the verified-token cache,
   list unavailable past max_stale (deny -> 503, allow -> 200);
10. the verified-token cache never outlives the token's exp or its key's presence in the JWKS.

Tokens come from the example issuer where the token shape matters (user_context, scope; its
JWKS fetched over a real callout, for the RBAC Envoy through a JwksServer mirroring it so the
cold start can be held), and from keys of our own (harness.tokens) where a test must control
the key set or the clock claims. Timings: refresh intervals and TTLs are 1 s, so the
waits here are a few seconds at most; all are bounded.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from harness import tokens
from harness.configs import DEMO_AUDIENCE
from harness.envoy import Envoy, typed_filter
from harness.jwks_server import JwksServer

AUD = DEMO_AUDIENCE
OWN_ISS = "https://issuer.policy.test"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
H2M_TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
PLUGIN = "edge-jwt"
STAT = f"wasmcustom.edge_jwt.{PLUGIN}."
RBAC_DENIED_BODY = b"RBAC: access denied"
REALM = 'Bearer realm="edge-jwt"'


# -- helpers ---------------------------------------------------------------------------


def marker(prefix: str) -> str:
    """A unique path under `prefix`, so each request is found again at the echo server."""
    return f"{prefix}/{uuid.uuid4().hex}"


def reached(echo, path: str) -> dict:
    """The one request the upstream saw for `path` (its headers, lower-cased)."""
    seen = echo.find(path)
    assert len(seen) == 1, f"upstream saw {len(seen)} requests for {path}: {seen}"
    return seen[0]


def not_reached(echo, path: str) -> None:
    assert echo.find(path) == [], f"request {path} reached the upstream: {echo.find(path)}"


def header_values(rec: dict, name: str) -> list[str]:
    return [v for k, v in rec["header_list"] if k == name]


def verdict(rec: dict) -> tuple[str | None, str | None]:
    h = rec["headers"]
    return h.get("x-jwt-verified"), h.get("x-jwt-reason")


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.1):
    """Bounded poll; returns the last value of pred()."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def counters(env: Envoy) -> dict[str, int]:
    """The filter's stats, names without the `wasmcustom.edge_jwt.<plugin>.` prefix."""
    return {k[len(STAT):]: v for k, v in env.stats(r"^wasmcustom\.edge_jwt\.").items()
            if k.startswith(STAT)}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
            if after.get(k, 0) != before.get(k, 0)}


def first_200(env: Envoy, token: str, path: str = "/warm", timeout: float = 10.0) -> None:
    """The first request waits for the cold-start JWKS fetch; anything but 200 is a failure."""
    r = env.wait_status(path, token, 200, timeout=timeout)
    assert r.status == 200, f"valid token not accepted after start: {r}\n{env.log_tail()}"


class Key:
    """An Ed25519 key of our own, and tokens signed with it."""

    def __init__(self, kid: str, iss: str = OWN_ISS) -> None:
        self.kid, self.iss = kid, iss
        self.seed = tokens.new_seed()

    @property
    def jwk(self) -> dict:
        return tokens.public_jwk(self.seed, self.kid)

    def token(self, **claims) -> str:
        return tokens.sign({"alg": "EdDSA", "typ": "JWT", "kid": self.kid},
                           tokens.claims(self.iss, [AUD], **claims), self.seed)


def jwks_of(*keys: Key) -> dict:
    return {"keys": [k.jwk for k in keys]}


def issuer_provider(issuer, **extra) -> dict:
    """A provider trusting the example issuer, its JWKS fetched through cluster `issuer`."""
    p = {"issuer": issuer.issuer_url, "audiences": [AUD],
         "remote_jwks": {"http_uri": {"uri": issuer.jwks_uri, "cluster": "issuer", "timeout": "2s"}}}
    p.update(extra)
    return p


def bad_signature(issuer) -> str:
    """The issuer's kid, but signed with another key."""
    return tokens.sign({"alg": "EdDSA", "typ": "JWT", "kid": issuer.kid()},
                       tokens.claims(issuer.issuer_url, [AUD]), tokens.new_seed())


OPTIONAL = {"requires_any": {"requirements": [{"provider_name": "demo"}, {"allow_missing": {}}]}}


# == 1. RBAC on each verdict channel ======================================================
#
# One Envoy: edge-jwt (every path optional: an absent token passes it marked "false"), then
# header_to_metadata, then three RBAC filters. Each RBAC filter guards only its own path
# prefix (requests elsewhere match its "elsewhere" policy) and has its own stat prefix, so a
# 403 is attributable to exactly one channel.

CHANNELS = {
    # Wasm set_property("custom.jwt_verified") is filter state "wasm.custom.jwt_verified", a
    # CelState whose serializeAsString() is the raw value: the plain matcher works in 1.40.
    "fs": {"filter_state": {"key": "wasm.custom.jwt_verified", "string_match": {"exact": "true"}}},
    "hdr": {"header": {"name": "x-jwt-verified", "string_match": {"exact": "true"}}},
    # `sourced_metadata` (dynamic metadata by default): the plain `metadata` principal is
    # deprecated in 1.40 and logs a warning at start.
    "md": {"sourced_metadata": {"metadata_matcher": {
        "filter": "custom", "path": [{"key": "jwt_verified"}],
        "value": {"string_match": {"exact": "true"}}}}},
}
RBAC_LOG = ("%REQ(:PATH)% %RESPONSE_CODE% fs=%FILTER_STATE(wasm.custom.jwt_verified:PLAIN)% "
            "md=%DYNAMIC_METADATA(custom:jwt_verified)%\n")


def rbac_gate(channel: str) -> dict:
    prefix = f"/{channel}/"
    return typed_filter(
        f"rbac-{channel}", RBAC_TYPE,
        rules_stat_prefix=f"{channel}_",
        rules={"action": "ALLOW", "policies": {
            f"{channel}-verified": {"permissions": [{"url_path": {"path": {"prefix": prefix}}}],
                                    "principals": [CHANNELS[channel]]},
            "elsewhere": {"permissions": [{"not_rule": {"url_path": {"path": {"prefix": prefix}}}}],
                          "principals": [{"any": True}]},
        }})


def header_to_metadata() -> dict:
    return typed_filter("envoy.filters.http.header_to_metadata", H2M_TYPE, request_rules=[{
        "header": "x-jwt-verified",
        "on_header_present": {"metadata_namespace": "custom", "key": "jwt_verified", "type": "STRING"},
        "remove": False}])


def _access_log_format(fmt: str) -> Callable[[dict], None]:
    def hook(boot: dict) -> None:
        hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"][0]["typed_config"]["log_format"] = {"text_format_source": {"inline_string": fmt}}
    return hook


@pytest.fixture(scope="module")
def rbac(module_envoy_factory, issuer):
    """The RBAC Envoy. Its JWKS (the issuer's keys) comes from a JwksServer that delays the
    first answer by 1 s, so the first requests, one per channel, are certainly paused by the
    filter and resumed when the keys land: the verdict must reach the later filters on that
    path too (set_property / headers from the root context after set_effective_context)."""
    js = JwksServer(jwks=issuer.jwks())
    js.set_mode("delay", delay_seconds=1.0)
    cfg = {"providers": {"demo": {
        "issuer": issuer.issuer_url, "audiences": [AUD],
        "remote_jwks": {"http_uri": {"uri": js.uri, "cluster": "jwks", "timeout": "3s"}}}},
        "rules": [{"match": {"prefix": "/"}, "requires": OPTIONAL}]}
    env = module_envoy_factory(
        cfg, clusters={"jwks": js.port}, concurrency=1,
        filters_after=[header_to_metadata()] + [rbac_gate(c) for c in CHANNELS],
        bootstrap_hook=_access_log_format(RBAC_LOG))
    tok = issuer.mint(sub="alice")
    paths = {c: marker(f"/{c}") for c in CHANNELS}
    with ThreadPoolExecutor(max_workers=len(paths)) as ex:
        futures = {c: ex.submit(env.get, p, tok) for c, p in paths.items()}
        cold = {c: (paths[c], f.result()) for c, f in futures.items()}
    js.mode = "ok"
    yield env, cold
    js.stop()


@pytest.fixture(scope="module")
def rbac_env(rbac):
    return rbac[0]


def rbac_stats(env: Envoy, channel: str) -> dict[str, int]:
    s = env.stats(r"^http\.ingress_http\.rbac\.")
    # Envoy 1.40 names them http.<hcm prefix>.rbac.<rules_stat_prefix>.allowed/denied
    return {k: s.get(f"http.ingress_http.rbac.{channel}_.{k}", 0) for k in ("allowed", "denied")}


@pytest.mark.parametrize("channel", list(CHANNELS))
def test_rbac_allows_verified_request(rbac_env, issuer, echo, channel):
    before = rbac_stats(rbac_env, channel)
    path = marker(f"/{channel}")
    r = rbac_env.get(path, issuer.mint(sub="alice"))
    assert r.status == 200, r
    assert verdict(reached(echo, path)) == ("true", None)
    after = rbac_stats(rbac_env, channel)
    assert (after["allowed"] - before["allowed"], after["denied"] - before["denied"]) == (1, 0), (before, after)


@pytest.mark.parametrize("forged", [False, True], ids=["plain", "client-sends-x-jwt-verified-true"])
@pytest.mark.parametrize("channel", list(CHANNELS))
def test_rbac_denies_unverified_request(rbac_env, echo, channel, forged):
    """No token: edge-jwt lets it through marked false/missing (allow_missing), and it is the
    RBAC filter of this channel that answers 403. A client's own `x-jwt-verified: true` is
    removed by edge-jwt before any later filter looks at headers or copies them to metadata."""
    before = rbac_stats(rbac_env, channel)
    path = marker(f"/{channel}")
    headers = [("x-jwt-verified", "true"), ("x-jwt-reason", "none")] if forged else []
    r = rbac_env.request("GET", path, headers)
    assert (r.status, r.body) == (403, RBAC_DENIED_BODY), r
    not_reached(echo, path)
    after = rbac_stats(rbac_env, channel)
    assert (after["allowed"] - before["allowed"], after["denied"] - before["denied"]) == (0, 1), (before, after)


def test_rbac_verdicts_as_other_filters_see_them(rbac_env, issuer, echo):
    """What the later filters read: filter state (PLAIN) and metadata both carry "true" for a
    verified request and "false" for a missing token, never the client's forged value; the
    upstream of an allowed unverified request (path outside every gate) sees false/missing."""
    ok, missing, forged = marker("/fs"), marker("/fs"), marker("/elsewhere")
    assert rbac_env.get(ok, issuer.mint()).status == 200
    assert rbac_env.get(missing).status == 403
    assert rbac_env.request("GET", forged, [("x-jwt-verified", "true")]).status == 200
    assert verdict(reached(echo, forged)) == ("false", "missing")
    assert wait_until(lambda: forged in rbac_env.access_log(), 10), rbac_env.access_log()[-2000:]
    lines = {ln.split(" ")[0]: ln for ln in rbac_env.access_log().splitlines()}
    assert lines[ok] == f"{ok} 200 fs=true md=true", lines[ok]
    assert lines[missing] == f"{missing} 403 fs=false md=false", lines[missing]
    assert lines[forged] == f"{forged} 200 fs=false md=false", lines[forged]


def test_rbac_sees_verdict_of_requests_paused_at_cold_start(rbac, echo):
    env, cold = rbac
    for channel, (path, r) in cold.items():
        assert r.status == 200, (channel, r)
        assert verdict(reached(echo, path)) == ("true", None), channel
    c = counters(env)
    assert c.get("paused", 0) >= len(cold), f"cold-start requests were not paused: {c}"
    assert c.get("paused_then_refused", 0) == 0, c


def test_rbac_not_reached_by_invalid_token(rbac_env, issuer, echo):
    """allow_missing lets an absent token through, never a bad one: edge-jwt answers 401."""
    path = marker("/hdr")
    before = rbac_stats(rbac_env, "hdr")
    r = rbac_env.get(path, tokens.tamper_payload(issuer.mint(), sub="root"))
    assert r.status == 401, r
    assert 'error="invalid_token"' in (r.header("www-authenticate") or ""), r
    not_reached(echo, path)
    assert rbac_stats(rbac_env, "hdr") == before


# == 2-6. claim headers, payload, forward, rules, CORS (one Envoy) ===========================

CLAIM_HEADERS = [
    {"header_name": "x-sub", "claim_name": "sub"},
    {"header_name": "x-scope", "claim_name": "scope"},
    {"header_name": "x-role", "claim_name": "user_context.role"},
    {"header_name": "x-features", "claim_name": "user_context.features"},
    {"header_name": "x-user-context", "claim_name": "user_context"},
    {"header_name": "x-note", "claim_name": "note"},
    {"header_name": "x-tier", "claim_name": "tier"},
    {"header_name": "x-cacheable", "claim_name": "edge_cacheable"},
]
CLAIM_HEADER_NAMES = [c["header_name"] for c in CLAIM_HEADERS]
PAYLOAD_HEADER = "x-jwt-payload"
OWNED = CLAIM_HEADER_NAMES + [PAYLOAD_HEADER, "x-jwt-verified", "x-jwt-reason"]

MAIN_RULES = [
    # exact path vs prefix, first match wins
    {"match": {"path": "/exact"}, "requires": {"provider_name": "demo"}},
    {"match": {"prefix": "/exact"}},
    {"match": {"prefix": "/first"}},
    {"match": {"prefix": "/first/locked"}, "requires": {"provider_name": "demo"}},
    # methods: GET needs a token and POST bypasses on /read; the reverse on /write
    {"match": {"prefix": "/read", "methods": ["GET"]}, "requires": {"provider_name": "demo"}},
    {"match": {"prefix": "/read"}},
    {"match": {"prefix": "/write", "methods": ["get", "HEAD"]}},
    {"match": {"prefix": "/write"}, "requires": {"provider_name": "demo"}},
    {"match": {"prefix": "/public"}},
    {"match": {"prefix": "/opt"}, "requires": OPTIONAL},
    {"match": {"prefix": "/scoped"}, "requires": {"provider_name": "demo"},
     "required_scopes": ["read", "write"]},
    {"match": {"prefix": "/nofwd"}, "requires": {"provider_name": "nofwd"}},
    {"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}},
]


@pytest.fixture(scope="module")
def main_env(module_envoy_factory, issuer):
    cfg = {
        "providers": {
            "demo": issuer_provider(issuer, claim_to_headers=CLAIM_HEADERS,
                                    forward_payload_header=PAYLOAD_HEADER),
            "nofwd": issuer_provider(issuer, forward=False),
        },
        "rules": MAIN_RULES,
        "bypass_cors_preflight": True,
    }
    env = module_envoy_factory(cfg, clusters={"issuer": issuer.port}, concurrency=1)
    first_200(env, issuer.mint())
    first_200(env, issuer.mint(), path="/nofwd/warm")
    return env


def rich_token(issuer, **kw) -> str:
    fields = dict(sub="alice", scope="read write",
                  user_context={"id": "alice", "role": "admin", "features": ["beta", "dark-mode"]},
                  extra_claims={"note": "caf\u00e9 100%\r\nX-Injected: yes", "tier": 3})
    fields.update(kw)
    return issuer.mint(**fields)


def test_claim_to_headers_reach_upstream(main_env, issuer, echo):
    path = marker("/api")
    r = main_env.get(path, rich_token(issuer))
    assert r.status == 200, r
    rec = reached(echo, path)
    h = rec["headers"]
    assert h.get("x-jwt-verified") == "true" and "x-jwt-reason" not in h, h
    assert h.get("x-sub") == "alice", h
    assert h.get("x-scope") == "read write", h
    assert h.get("x-role") == "admin", h
    # arrays and objects: base64url (no padding) of their JSON
    for name, want in (("x-features", ["beta", "dark-mode"]),
                       ("x-user-context", {"id": "alice", "role": "admin", "features": ["beta", "dark-mode"]})):
        v = h.get(name, "")
        assert re.fullmatch(r"[A-Za-z0-9_-]+", v), (name, v)
        assert json.loads(tokens.b64url_decode(v)) == want, (name, v)
    # strings: visible ASCII kept, everything else (CR, LF, UTF-8, '%') percent-encoded
    assert h.get("x-note") == "caf%C3%A9 100%25%0D%0AX-Injected: yes", h
    assert "x-injected" not in h, h
    # numbers and booleans as JSON
    assert h.get("x-tier") == "3", h
    assert h.get("x-cacheable") == "false", h


def test_claim_headers_replace_client_copies_on_verified_request(main_env, issuer, echo):
    """Client copies are removed before the filter sets its own: one value each, the claim's.
    A claim the token lacks (features) leaves no header at all, not the client's."""
    path = marker("/api")
    tok = rich_token(issuer, user_context={"id": "alice", "role": "user"})
    forged = [(n, "forged") for n in OWNED]
    r = main_env.request("GET", path, [("Authorization", f"Bearer {tok}"), *forged,
                                       ("X-Role", "superuser")])
    assert r.status == 200, r
    rec = reached(echo, path)
    assert header_values(rec, "x-role") == ["user"], rec["header_list"]
    assert header_values(rec, "x-sub") == ["alice"], rec["header_list"]
    assert header_values(rec, "x-jwt-verified") == ["true"], rec["header_list"]
    assert header_values(rec, PAYLOAD_HEADER) == [tok.split(".")[1]], rec["header_list"]
    for name in ("x-features", "x-jwt-reason"):
        assert header_values(rec, name) == [], (name, rec["header_list"])
    assert "forged" not in json.dumps(rec["header_list"]), rec["header_list"]


@pytest.mark.parametrize("prefix", ["/public", "/write", "/first/locked"])
def test_client_copies_stripped_on_bypass(main_env, echo, prefix):
    """Bypass rules (including a method-bypass and a first-match bypass) still strip every
    header the filter owns."""
    path = marker(prefix)
    r = main_env.request("GET", path, [(n, "forged") for n in OWNED])
    assert r.status == 200, r
    rec = reached(echo, path)
    leaked = [(k, v) for k, v in rec["header_list"] if k in OWNED]
    assert leaked == [], leaked


@pytest.mark.parametrize("case", ["no-token", "bad-token", "missing-scope"])
def test_denied_request_with_forged_headers_never_reaches_upstream(main_env, issuer, echo, case):
    path = marker("/scoped" if case == "missing-scope" else "/api")
    hs = [(n, "forged") for n in OWNED]
    if case == "bad-token":
        hs.insert(0, ("Authorization", f"Bearer {bad_signature(issuer)}"))
    elif case == "missing-scope":
        hs.insert(0, ("Authorization", f"Bearer {issuer.mint(scope='read')}"))
    r = main_env.request("GET", path, hs)
    assert r.status == (403 if case == "missing-scope" else 401), r
    not_reached(echo, path)


def test_forward_payload_header_is_the_tokens_payload(main_env, issuer, echo):
    path = marker("/api")
    tok = rich_token(issuer)
    assert main_env.get(path, tok).status == 200
    got = reached(echo, path)["headers"].get(PAYLOAD_HEADER)
    assert got == tok.split(".")[1], (got, tok)
    assert json.loads(tokens.b64url_decode(got))["sub"] == "alice"


def test_forward_true_keeps_authorization(main_env, issuer, echo):
    path = marker("/api")
    tok = issuer.mint()
    assert main_env.get(path, tok).status == 200
    assert reached(echo, path)["headers"].get("authorization") == f"Bearer {tok}"


def test_forward_false_removes_authorization(main_env, issuer, echo):
    path = marker("/nofwd")
    r = main_env.get(path, issuer.mint())
    assert r.status == 200, r
    h = reached(echo, path)["headers"]
    assert "authorization" not in h, h
    assert h.get("x-jwt-verified") == "true", h


# -- 5. rules ----------------------------------------------------------------------------

RULE_CASES = [
    # (method, path, with token?, expected status)
    ("GET", "/exact", False, 401),            # exact rule requires
    ("GET", "/exact?x=1", False, 401),        # query string ignored for matching
    ("GET", "/exact", True, 200),
    ("GET", "/exact/sub", False, 200),        # not the exact path: the prefix bypass after it
    ("GET", "/exactly", False, 200),
    ("GET", "/first/locked", False, 200),     # first match wins: /first bypass comes first
    ("GET", "/read/x", False, 401),           # GET requires
    ("GET", "/read/x", True, 200),
    ("POST", "/read/x", False, 200),          # POST bypasses
    ("GET", "/write/x", False, 200),          # GET bypasses (methods are case-insensitive)
    ("HEAD", "/write/x", False, 200),
    ("POST", "/write/x", False, 401),         # POST requires
    ("PUT", "/write/x", False, 401),
    ("POST", "/write/x", True, 200),
    ("GET", "/other", False, 401),            # catch-all
]


@pytest.mark.parametrize("method,path,with_token,status", RULE_CASES,
                         ids=[f"{m}-{p}-{'tok' if t else 'none'}" for m, p, t, _ in RULE_CASES])
def test_rules_paths_methods_first_match(main_env, issuer, echo, method, path, with_token, status):
    tag = uuid.uuid4().hex
    full = f"{path}{'&' if '?' in path else '?'}t={tag}"
    hs = [("Authorization", f"Bearer {issuer.mint()}")] if with_token else []
    r = main_env.request(method, full, hs, body=b"x" if method in ("POST", "PUT") else None)
    assert r.status == status, (method, path, r)
    if status == 200:
        reached(echo, tag)
    else:
        assert (r.header("www-authenticate") or "").startswith(REALM), r
        not_reached(echo, tag)


def test_optional_jwt_absent_passes_marked_missing(main_env, echo):
    path = marker("/opt")
    r = main_env.get(path)
    assert r.status == 200, r
    assert verdict(reached(echo, path)) == ("false", "missing")


def test_optional_jwt_present_and_valid_is_verified(main_env, issuer, echo):
    path = marker("/opt")
    assert main_env.get(path, issuer.mint(sub="bob")).status == 200
    rec = reached(echo, path)
    assert verdict(rec) == ("true", None)
    assert rec["headers"].get("x-sub") == "bob"


@pytest.mark.parametrize("kind", ["bad-signature", "expired", "garbage"])
def test_optional_jwt_present_and_invalid_is_401(main_env, issuer, echo, kind):
    tok = {"bad-signature": lambda: bad_signature(issuer),
           "expired": lambda: issuer.mint(ttl=-300),
           "garbage": lambda: "not.a.jwt"}[kind]()
    path = marker("/opt")
    r = main_env.get(path, tok)
    assert r.status == 401, r
    assert 'error="invalid_token"' in (r.header("www-authenticate") or ""), r
    not_reached(echo, path)


@pytest.mark.parametrize("scope", ["read write", "write admin read", ["read", "write"], ["write", "x", "read"]],
                         ids=["string", "string-superset", "array", "array-superset"])
def test_required_scopes_granted(main_env, issuer, echo, scope):
    # The issuer always writes scope as a string; extra_claims puts an array in its place.
    tok = issuer.mint(scope=scope) if isinstance(scope, str) else issuer.mint(extra_claims={"scope": scope})
    assert isinstance(tokens.split(tok)[1]["scope"], type(scope))
    path = marker("/scoped")
    r = main_env.get(path, tok)
    assert r.status == 200, r
    reached(echo, path)


@pytest.mark.parametrize("scope", ["read", "readwrite", ["read"], "read  writes"],
                         ids=["string-missing-one", "string-glued", "array-missing-one", "prefix-only"])
def test_required_scopes_missing_is_403(main_env, issuer, echo, scope):
    tok = issuer.mint(scope=scope) if isinstance(scope, str) else issuer.mint(extra_claims={"scope": scope})
    path = marker("/scoped")
    r = main_env.get(path, tok)
    assert r.status == 403, r
    www = r.header("www-authenticate") or ""
    assert www.startswith(REALM) and 'error="insufficient_scope"' in www, www
    not_reached(echo, path)


# -- 6. CORS preflight ---------------------------------------------------------------------

PREFLIGHT = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")]


def test_cors_preflight_bypasses_when_enabled(main_env, echo):
    path = marker("/api")
    r = main_env.request("OPTIONS", path, PREFLIGHT)
    assert r.status == 200, r
    assert verdict(reached(echo, path)) == (None, None)


@pytest.mark.parametrize("headers", [[], PREFLIGHT[:1], PREFLIGHT[1:], [("Origin", ""), PREFLIGHT[1]]],
                         ids=["none", "origin-only", "method-only", "empty-origin"])
def test_options_that_is_not_a_preflight_needs_a_token(main_env, echo, headers):
    path = marker("/api")
    r = main_env.request("OPTIONS", path, headers)
    assert r.status == 401, r
    not_reached(echo, path)


def test_preflight_headers_on_get_do_not_bypass(main_env, echo):
    path = marker("/api")
    assert main_env.request("GET", path, PREFLIGHT).status == 401
    not_reached(echo, path)


# == 7. audit mode ==========================================================================


@pytest.fixture(scope="module")
def audit_env(module_envoy_factory, issuer):
    cfg = {"providers": {"demo": issuer_provider(issuer)},
           "rules": [{"match": {"prefix": "/public"}},
                     {"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}],
           "audit_mode": True}
    env = module_envoy_factory(cfg, clusters={"issuer": issuer.port}, concurrency=1)
    first_200(env, issuer.mint())
    return env


def test_audit_mode_never_denies_and_marks(audit_env, issuer, echo):
    cases = {
        "valid": (issuer.mint(), ("true", None)),
        "bad_signature": (bad_signature(issuer), ("false", "bad_signature")),
        "expired": (issuer.mint(ttl=-300), ("false", "expired")),
        "missing": (None, ("false", "missing")),
        "malformed": ("abc.def", ("false", "malformed")),
    }
    before = counters(audit_env)
    paths = {}
    for name, (tok, want) in cases.items():
        path = paths[name] = marker(f"/audit-{name}")
        r = audit_env.get(path, tok)
        assert r.status == 200, (name, r)
        assert verdict(reached(echo, path)) == want, name
    d = delta(before, counters(audit_env))
    assert d.get("audit_would_deny") == 4, d
    for code in ("bad_signature", "expired", "missing", "malformed"):
        assert d.get(f"audit_would_deny.{code}") == 1, (code, d)
    assert d.get("allowed") == 1, d
    assert "denied" not in d, d
    # one info line per audited request, with method and path, never the token
    assert audit_env.wait_log(f"{paths['malformed']} would get 401 malformed", timeout=10), audit_env.log_tail()
    log = audit_env.log_text()
    assert f"{paths['expired']} would get 401 expired" in log
    for name in ("valid", "bad_signature", "expired"):
        tok = cases[name][0]
        assert tok not in log and tok.split(".")[-1] not in log, f"{name} token in the Envoy log"


def test_audit_mode_strips_forged_marks(audit_env, echo):
    path = marker("/public")
    assert audit_env.request("GET", path, [("x-jwt-verified", "true"), ("x-jwt-reason", "x")]).status == 200
    assert verdict(reached(echo, path)) == (None, None)
    path = marker("/api")
    assert audit_env.request("GET", path, [("x-jwt-verified", "true")]).status == 200
    assert verdict(reached(echo, path)) == ("false", "missing")


# == 8. JWT or session ======================================================================


@pytest.fixture(scope="module")
def session_env(module_envoy_factory, issuer):
    """jwt_or_session, and no bypass_cors_preflight (to show it is off by default)."""
    cfg = {"providers": {"demo": issuer_provider(issuer)},
           "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}],
           "jwt_or_session": {"cookie": "sid"}}
    env = module_envoy_factory(cfg, clusters={"issuer": issuer.port}, concurrency=1)
    first_200(env, issuer.mint())
    return env


@pytest.mark.parametrize("cookie", ["sid=abc", "theme=dark; sid=abc; lang=en"])
def test_session_cookie_without_token_passes_marked_session(session_env, echo, cookie):
    path = marker("/app")
    r = session_env.request("GET", path, [("Cookie", cookie), ("x-jwt-verified", "true")])
    assert r.status == 200, r
    assert verdict(reached(echo, path)) == ("false", "session")


@pytest.mark.parametrize("cookie", [None, "sid=", "sidx=abc", "other=sid"])
def test_no_token_no_session_cookie_401(session_env, echo, cookie):
    path = marker("/app")
    r = session_env.request("GET", path, [("Cookie", cookie)] if cookie else [])
    assert r.status == 401, r
    not_reached(echo, path)


def test_invalid_token_with_session_cookie_401(session_env, issuer, echo):
    path = marker("/app")
    r = session_env.request("GET", path, [("Authorization", f"Bearer {bad_signature(issuer)}"),
                                          ("Cookie", "sid=abc")])
    assert r.status == 401, r
    assert 'error="invalid_token"' in (r.header("www-authenticate") or ""), r
    not_reached(echo, path)


def test_valid_token_with_session_cookie_is_verified(session_env, issuer, echo):
    path = marker("/app")
    r = session_env.request("GET", path, [("Authorization", f"Bearer {issuer.mint()}"),
                                          ("Cookie", "sid=abc")])
    assert r.status == 200, r
    assert verdict(reached(echo, path)) == ("true", None)


def test_cors_preflight_bypass_is_off_by_default(session_env, echo):
    path = marker("/app")
    r = session_env.request("OPTIONS", path, PREFLIGHT)
    assert r.status == 401, r
    not_reached(echo, path)


# == 9. revocation list =====================================================================

REVOKED = {"jti": ["revoked-1"], "sub": ["mallory"]}


@pytest.fixture(scope="module")
def revocation(module_envoy_factory):
    """Two Envoys on one list server: on_stale deny and on_stale allow. Keys are local
    (local_jwks), so the list is the only feed."""
    key = Key("rev-1")
    lists = JwksServer(jwks=json.loads(json.dumps(REVOKED)), path="/revoked.json")
    envs = {}
    for policy in ("deny", "allow"):
        cfg = {"providers": {"demo": {"issuer": OWN_ISS, "audiences": [AUD],
                                      "local_jwks": {"inline_string": json.dumps(jwks_of(key))}}},
               "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}],
               "revocation": {"http_uri": {"uri": lists.uri, "cluster": "revocation", "timeout": "1s"},
                              "refresh_interval": "1s", "max_stale": "2s", "on_stale": policy}}
        envs[policy] = module_envoy_factory(cfg, clusters={"revocation": lists.port}, concurrency=1)
    for env in envs.values():
        first_200(env, key.token(jti=uuid.uuid4().hex))
    yield key, lists, envs
    lists.stop()


@pytest.mark.parametrize("policy", ["deny", "allow"])
@pytest.mark.parametrize("claims", [{"jti": "revoked-1"}, {"sub": "mallory"}], ids=["jti", "sub"])
def test_listed_jti_or_sub_is_refused(revocation, echo, policy, claims):
    key, _, envs = revocation
    path = marker("/rev")
    r = envs[policy].get(path, key.token(**claims))
    assert r.status == 401, r
    www = r.header("www-authenticate") or ""
    assert 'error="invalid_token"' in www and 'error_description="Jwt has been revoked"' in www, www
    not_reached(echo, path)
    ok = marker("/rev")
    assert envs[policy].get(ok, key.token(jti="fine-1", sub="alice")).status == 200
    reached(echo, ok)


def test_list_update_beats_the_verified_token_cache(revocation):
    """A token accepted (and answered from the verified-token cache) is refused within ~2 s
    of its jti being added to the list."""
    key, lists, envs = revocation
    env = envs["deny"]
    jti = f"later-{uuid.uuid4().hex[:8]}"
    tok = key.token(jti=jti)
    before = counters(env)
    for _ in range(3):
        assert env.get(marker("/rev"), tok).status == 200
    d = delta(before, counters(env))
    assert d.get("jwt_cache_hit", 0) >= 2, f"token not served from the cache: {d}"
    lists.jwks = {"jti": REVOKED["jti"] + [jti], "sub": REVOKED["sub"]}
    t0 = time.monotonic()
    r = wait_until(lambda: env.get(marker("/rev"), tok).status == 401, timeout=6)
    took = time.monotonic() - t0
    assert r, f"token still accepted {took:.1f}s after its jti was listed\n{env.log_tail()}"
    print(f"[revocation] listed jti refused after {took:.2f}s (refresh_interval 1s)")
    assert took < 3.5, f"revocation took {took:.2f}s with refresh_interval 1s"
    assert counters(env).get("revocation_fetch_success", 0) >= 2


def test_list_unavailable_past_max_stale(revocation, echo):
    """List server down: past max_stale (2 s) on_stale=deny answers 503 + Retry-After for any
    token; on_stale=allow passes tokens that are not on the last list it had and still
    refuses those that are. The list coming back restores normal service."""
    key, lists, envs = revocation
    lists.refuse()
    try:
        t0 = time.monotonic()
        r = wait_until(lambda: (lambda x: x if x.status == 503 else None)(
            envs["deny"].get(marker("/rev"), key.token(jti=uuid.uuid4().hex))), timeout=10)
        took = time.monotonic() - t0
        assert r, f"on_stale deny still serving 10s after the list went away\n{envs['deny'].log_tail()}"
        print(f"[revocation] on_stale=deny answered 503 {took:.2f}s after the list server went down")
        assert r.header("retry-after"), r
        assert r.body == b"Revocation list is not available", r
        d = counters(envs["deny"])
        assert d.get("revocation_fetch_failed", 0) >= 1, d
        assert d.get("denied.revocation_unavailable", 0) >= 1, d

        allow = envs["allow"]
        path = marker("/rev")
        r = allow.get(path, key.token(jti=uuid.uuid4().hex))
        assert r.status == 200, r
        reached(echo, path)
        assert allow.get(marker("/rev"), key.token(jti="revoked-1")).status == 401
        assert allow.get(marker("/rev"), key.token(sub="mallory")).status == 401
        assert counters(allow).get("revocation_fetch_failed", 0) >= 1
    finally:
        lists.resume()
    r = wait_until(lambda: envs["deny"].get(marker("/rev"), key.token(jti=uuid.uuid4().hex)).status == 200,
                   timeout=8)
    assert r, f"no recovery after the list came back\n{envs['deny'].log_tail()}"


# == 10. verified-token cache never outlives exp or the key =================================


@pytest.fixture(scope="module")
def cache_run(module_envoy_factory):
    k1, k2 = Key("cache-1"), Key("cache-2")
    js = JwksServer(jwks=jwks_of(k1, k2))
    cfg = {"providers": {"demo": {
        "issuer": OWN_ISS, "audiences": [AUD], "clock_skew_seconds": 0,
        "remote_jwks": {"http_uri": {"uri": js.uri, "cluster": "jwks", "timeout": "1s"},
                        "cache_duration": "1s"}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}]}
    # one worker: every request meets the same VM, hence the same token cache
    env = module_envoy_factory(cfg, clusters={"jwks": js.port}, concurrency=1)
    first_200(env, k1.token())
    yield env, js, k1, k2
    js.stop()


def test_cached_token_refused_once_expired(cache_run):
    env, _, k1, _ = cache_run
    tok = k1.token(ttl=2)
    exp = tokens.split(tok)[1]["exp"]
    before = counters(env)
    for _ in range(4):
        r = env.get(marker("/c"), tok)
        assert r.status == 200, r
    d = delta(before, counters(env))
    assert d.get("jwt_cache_miss") == 1 and d.get("jwt_cache_hit") == 3, d
    # clock_skew_seconds 0: refused as soon as now > exp (whole seconds)
    time.sleep(max(0.0, exp + 1.05 - time.time()))
    r = env.get(marker("/c"), tok)
    assert r.status == 401, f"cached token accepted after its exp: {r}"
    assert 'error_description="Jwt is expired"' in (r.header("www-authenticate") or ""), r
    assert env.get(marker("/c"), k1.token()).status == 200


def test_cached_token_refused_once_its_key_leaves_the_jwks(cache_run):
    env, js, k1, k2 = cache_run
    tok = k2.token()
    before = counters(env)
    for _ in range(3):
        assert env.get(marker("/c"), tok).status == 200
    d = delta(before, counters(env))
    assert d.get("jwt_cache_hit") == 2, d
    js.jwks = jwks_of(k1)
    t0 = time.monotonic()
    r = wait_until(lambda: env.get(marker("/c"), tok).status == 401, timeout=6)
    took = time.monotonic() - t0
    assert r, f"token of a removed key still accepted after {took:.1f}s\n{env.log_tail()}"
    print(f"[token cache] token of removed key refused after {took:.2f}s (cache_duration 1s)")
    last = env.get(marker("/c"), tok)
    assert last.status == 401, last
    assert "Jwks doesn't have key to match kid" in (last.header("www-authenticate") or ""), last
    assert env.get(marker("/c"), k1.token()).status == 200
