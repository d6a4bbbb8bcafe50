"""Differential test: edge-jwt against Envoy's native jwt_authn, configured alike, on the
same Envoy and the same JWKS server. Listener `ingress` runs edge-jwt, listener `native`
runs jwt_authn; both answer an allowed request with a direct response, so "allowed" means
"the filter let it through" (a local reply from a filter never carries that body).

Every token of the corpus (hostile.corpus without query/failover cases, plus
hostile.mutation_corpus) goes to both. Every allow/deny disagreement must fall into a class
of EXPECTED_DISAGREEMENTS, found by looking at the request itself (features()), with the
direction the class predicts; anything else fails the test. See docs/DIFFERENTIAL.md.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import hostile
from harness.envoy import http_listener, http_request, jwt_authn_filter, route_direct, router_filter
from harness.jwks_server import JwksServer

REACHED = "reached-upstream"
MIN_CORPUS = 500
SKEW = 60
MAX_LIFETIME = 86400

EDGE_DENIES = "edge-jwt denies, jwt_authn allows"
EDGE_ALLOWS = "edge-jwt allows, jwt_authn denies"

# class -> (direction it explains, why edge-jwt's answer is the right one)
EXPECTED_DISAGREEMENTS: dict[str, tuple[str, str]] = {
    "small-order-key": (EDGE_DENIES, "jwt_authn (BoringSSL ED25519_verify) accepts small-order public "
                        "keys, so R=identity,S=0 forges any token; edge-jwt refuses such JWKs (RFC 8725 3.2)"),
    "crit": (EDGE_DENIES, "RFC 7515 4.1.11: a recipient that does not understand crit MUST reject; "
             "jwt_authn ignores crit"),
    "enc": (EDGE_DENIES, "an enc member marks a JWE (RFC 7516); jwt_authn ignores it"),
    "jwk-not-for-verify": (EDGE_DENIES, "JWK says use!=sig, key_ops without verify, or publishes d "
                           "(compromised); jwt_authn uses the key anyway"),
    "kid-absent-several-keys": (EDGE_DENIES, "no kid: jwt_authn tries every key in the set; edge-jwt "
                                "needs a kid unless the set has exactly one key"),
    "kid-empty": (EDGE_DENIES, "kid \"\" is a kid naming no key for edge-jwt; jwt_authn treats it as "
                  "no kid and tries every key"),
    "duplicate-kid-in-set": (EDGE_DENIES, "two JWKs share a kid: edge-jwt uses the first only (no "
                             "fallback); jwt_authn tries each"),
    "iat-in-future": (EDGE_DENIES, "iat beyond now+skew: edge-jwt refuses it; jwt_authn never checks iat"),
    "non-strict-base64url": (EDGE_DENIES, "padding, whitespace inside or non-canonical trailing bits: "
                             "edge-jwt wants one encoding per token (RFC 7515 2); jwt_authn's decoder is lenient"),
    "empty-segments": (EDGE_DENIES, "leading/trailing/double dots: jwt_authn drops empty segments; a "
                       "compact JWS is exactly three dot-separated parts"),
    "lenient-extraction": (EDGE_DENIES, "jwt_authn finds 'Bearer ' anywhere in the value and skips "
                           "non-token bytes before the token; edge-jwt wants the value to be "
                           "'Bearer <token>'"),
    "too-large": (EDGE_DENIES, "max_token_bytes (8192 by default) refuses before any parsing; jwt_authn "
                  "has no token size limit below Envoy's header limit"),
    "alg-Ed25519": (EDGE_ALLOWS, "RFC 9864 fully-specified alg 'Ed25519' is the same algorithm as "
                    "'EdDSA' with an Ed25519 key; jwt_authn only knows 'EdDSA'"),
    "claim-types": (EDGE_ALLOWS, "jwt_authn type-checks sub, jti and every aud member; edge-jwt does not "
                    "consume sub/jti and matches aud on its string members (signature is valid)"),
    "scheme-case": (EDGE_ALLOWS, "the auth scheme is case-insensitive (RFC 7235 2.1); jwt_authn's "
                    "value_prefix match is case-sensitive"),
}


# -- request analysis ------------------------------------------------------------------

B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _bytes(v) -> bytes:
    return v if isinstance(v, bytes) else v.encode("latin-1")


def folded_authorization(headers) -> bytes | None:
    """What filters see: Envoy joins repeated lines with ',' and skips empty ones."""
    vals = [_bytes(v).strip() for k, v in headers if k.lower() == "authorization"]
    vals = [v for v in vals if v]
    return b",".join(vals) if vals else None


def edge_token(value: bytes | None) -> bytes | None:
    """edge-jwt's extraction: case-insensitive 'Bearer ' prefix, then trimmed."""
    if value is None:
        return None
    if value.strip().lower() == b"bearer":
        return b""
    if value[:7].lower() != b"bearer ":
        return None
    return value[7:].strip()


def native_token(value: bytes | None) -> bytes | None:
    """jwt_authn's extraction: 'Bearer ' (case-sensitive) anywhere, then from the first
    base64url-or-dot byte to the end of the value."""
    if value is None:
        return None
    pos = value.find(b"Bearer ")
    if pos < 0:
        return None
    rest = value[pos + 7:]
    i = 0
    while i < len(rest) and rest[i] not in B64URL and rest[i] != ord("."):
        i += 1
    return rest[i:]


def strict_b64(seg: bytes) -> bytes | None:
    if any(c not in B64URL for c in seg) or len(seg) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(seg + b"=" * (-len(seg) % 4))
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=") == seg else None


def lenient_b64(seg: bytes) -> bytes | None:
    seg = re.sub(rb"\s", b"", seg).rstrip(b"=")
    if any(c not in B64URL for c in seg) or len(seg) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(seg + b"=" * (-len(seg) % 4))
    except (binascii.Error, ValueError):
        return None


def lenient_json(seg: bytes):
    raw = lenient_b64(seg)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def features(case: hostile.Case, jwks: dict, now: int) -> set[str]:
    """The disagreement classes this request belongs to, read off the request itself."""
    out: set[str] = set()
    value = folded_authorization(case.request_headers)
    et, nt = edge_token(value), native_token(value)
    if et and nt is None and value[:7].lower() == b"bearer ":
        out.add("scheme-case")
    if nt is not None and et != nt:
        out.add("lenient-extraction")
    if et is not None and len(et) > 8192:
        out.add("too-large")
    tok = nt if nt is not None else et
    if not tok:
        return out
    raw_parts = tok.split(b".")
    parts = [p for p in raw_parts if p]
    if len(parts) != len(raw_parts) and len(parts) == 3:
        out.add("empty-segments")
    if len(parts) != 3:
        return out
    if any(strict_b64(p) is None and lenient_b64(p) is not None for p in parts):
        out.add("non-strict-base64url")
    head, body = lenient_json(parts[0]), lenient_json(parts[1])
    if isinstance(head, dict):
        if head.get("alg") == "Ed25519":
            out.add("alg-Ed25519")
        if "crit" in head:
            out.add("crit")
        if "enc" in head:
            out.add("enc")
        kid = head.get("kid")
        same_kid = [k for k in jwks["keys"] if "kid" in head and k.get("kid") == kid]
        candidates = same_kid if kid else jwks["keys"]  # no kid or "": jwt_authn tries all
        if "kid" not in head:
            out.add("kid-absent-several-keys")
        if kid == "":
            out.add("kid-empty")
        if len(same_kid) > 1:
            out.add("duplicate-kid-in-set")
        sig = lenient_b64(parts[2]) or b""
        trivial = len(sig) == 64 and sig[32:] == bytes(32) and any(
            sig[:32] == pt for pt, _ in hostile.SMALL_ORDER.values())  # R small order, S = 0
        for k in candidates:
            x = lenient_b64(k.get("x", "").encode()) if k.get("kty") == "OKP" else None
            if trivial and x is not None and any(x == pt for pt, _ in hostile.SMALL_ORDER.values()):
                out.add("small-order-key")
            if kid and k.get("kty") == "OKP" and (
                    "d" in k or k.get("use", "sig") != "sig"
                    or ("key_ops" in k and "verify" not in k["key_ops"])):
                out.add("jwk-not-for-verify")
    if isinstance(body, dict):
        iat = body.get("iat")
        if isinstance(iat, (int, float)) and not isinstance(iat, bool) and iat > now + SKEW:
            out.add("iat-in-future")
        aud = body.get("aud")
        if (("sub" in body and not isinstance(body["sub"], str))
                or ("jti" in body and not isinstance(body["jti"], str))
                or (isinstance(aud, list) and any(not isinstance(a, str) for a in aud))):
            out.add("claim-types")
    return out


def classify(case, jwks, now, edge_allowed: bool) -> list[str]:
    """Classes explaining a disagreement in this direction ([] = unexplained)."""
    direction = EDGE_ALLOWS if edge_allowed else EDGE_DENIES
    return [c for c in EXPECTED_DISAGREEMENTS
            if c in features(case, jwks, now) and EXPECTED_DISAGREEMENTS[c][0] == direction]


# -- the test --------------------------------------------------------------------------


def test_differential_against_jwt_authn(envoy_factory, tmp_path):
    setting = hostile.default_setting(now=int(time.time()), param=None, failover=False,
                                      skew=SKEW, max_lifetime=MAX_LIFETIME)
    jwks = hostile.primary_jwks(setting)
    server = JwksServer(jwks)
    try:
        _run(setting, jwks, server, envoy_factory, tmp_path)
    finally:
        server.stop()


def _native_provider(s: hostile.Setting, uri: str) -> dict:
    return {"issuer": s.issuer, "audiences": list(s.audiences),
            "remote_jwks": {"http_uri": {"uri": uri, "cluster": "jwks", "timeout": "2s"},
                            "cache_duration": "300s", "async_fetch": {}},
            "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
            "forward": True, "clock_skew_seconds": s.skew, "require_expiration": True,
            "max_lifetime": f"{s.max_lifetime}s"}


def _run(s, jwks, server, envoy_factory, tmp_path):
    native = jwt_authn_filter({"p": _native_provider(s, server.uri)},
                              [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}])

    def hook(boot: dict) -> None:
        boot["static_resources"]["listeners"].append(http_listener(
            "native", 0, [native, router_filter()], [route_direct(200, REACHED)],
            stat_prefix="native_http"))
        for listener in boot["static_resources"]["listeners"]:
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["max_request_headers_kb"] = 8192  # megabyte tokens reach both filters

    cfg = hostile.filter_config(s, server.uri, "jwks")
    env = envoy_factory(cfg, direct_response=(200, REACHED), clusters={"jwks": server.port},
                        concurrency=2, bootstrap_hook=hook)
    native_port = env.listener_port("native")
    assert native_port, "native listener missing"

    def send(port, case):
        query, headers = hostile.split_target(case)
        r = http_request(port, "GET", "/diff" + query, headers, timeout=30)
        return r.status, r.status == 200 and r.body == REACHED.encode()

    warm = hostile.Case("warm", "valid", hostile.bearer(hostile.valid(s, jti="warm")), True)
    deadline = time.monotonic() + 15
    while not (send(env.port, warm)[1] and send(native_port, warm)[1]):
        assert time.monotonic() < deadline, f"no 200 on both listeners\n{env.log_tail()}"
        time.sleep(0.1)

    # Dates are relative to now: re-anchor the same setting (same keys) after start-up.
    s = dataclasses.replace(s, now=int(time.time()))
    cases = hostile.corpus(s) + hostile.mutation_corpus(s, n=450)
    assert len(cases) >= MIN_CORPUS, len(cases)
    agree, unexplained, wrong_edge, by_class, status_pairs = 0, [], [], Counter(), Counter()
    by_kind: dict[str, Counter] = {}
    rows = []
    # Each case goes to both listeners back to back; cases run 8 at a time.
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda c: (send(env.port, c), send(native_port, c)), cases))
    for case, ((es, ea), (ns, na)) in zip(cases, answers):
        assert es < 500 and ns < 500, f"{case.name}: 5xx (edge {es}, native {ns})"
        if case.expect_allowed is not None and ea != case.expect_allowed:
            wrong_edge.append(f"{case.name}: edge-jwt {es}, expected allowed={case.expect_allowed}")
        by_kind.setdefault(case.kind, Counter())["agree" if ea == na else "disagree"] += 1
        if ea == na:
            agree += 1
            if not ea:
                status_pairs[(es, ns)] += 1
            continue
        classes = classify(case, jwks, s.now, ea)
        rows.append((case.name, es, ns, classes))
        if classes:
            by_class[classes[0]] += 1
        else:
            tok = hostile.token_of(case)
            unexplained.append(f"{case.name} [{case.kind}]: edge {es} native {ns} "
                               f"features={sorted(features(case, jwks, s.now))} token={tok!r:.300}")
    elapsed = time.time() - s.now
    summary = {
        "total": len(cases), "agree": agree, "disagree": len(rows),
        "disagree_by_class": dict(by_class.most_common()),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "allowed_by_both": agree - sum(status_pairs.values()),
        "denied_by_both_status_pairs": {f"{a}/{b}": n for (a, b), n in status_pairs.most_common()},
        "seconds": round(elapsed, 1),
    }
    (tmp_path / "differential.json").write_text(json.dumps(
        {"summary": summary, "disagreements": rows}, indent=1))
    print("\ndifferential:", json.dumps(summary, indent=1))
    for name, es, ns, classes in rows:
        print(f"  {es} vs {ns}  {classes[0] if classes else 'UNEXPLAINED':24s} {name}")
    assert elapsed < hostile.TIME_MARGIN, (
        f"corpus took {elapsed:.0f}s: time-boundary cases may have crossed their boundary")
    assert not wrong_edge, "edge-jwt answered against the corpus' expectation:\n" + "\n".join(wrong_edge)
    assert not unexplained, (f"{len(unexplained)} unexplained disagreement(s):\n"
                             + "\n".join(unexplained))
