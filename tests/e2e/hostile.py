"""Hostile-token corpus for edge-jwt (issue 5), deterministic for a given seed and clock.

    s = hostile.Setting(issuer=..., audiences=[...], now=..., cur_seed=..., cur_kid=...,
                        next_seed=..., next_kid=...)
    jwks = hostile.primary_jwks(s)            # serve from a JwksServer
    fo = hostile.failover_jwks(s)             # serve from a second JwksServer
    cfg = hostile.filter_config(s, jwks_uri, "jwks", fo_uri, "jwks_fo")
    for case in hostile.corpus(s):            # Case(name, kind, request_headers, expect_allowed)
        ...

`request_headers` is a list of (name, value) pairs sent in order (repeated names stay separate
lines); a value is str, or bytes when it must carry raw non-UTF-8 bytes. A pseudo entry
(":path", "?query") is not a header: it is the query the case needs, appended to the request
path by the sender (see `split_target`). `expect_allowed` is what edge-jwt must answer with
`Setting`'s configuration (`filter_config`).

`mutation_corpus(s, n)` adds valid tokens with random claim sets and random mutations of
them (bit flips in each part, random kids, exp/nbf around the skew boundary), for the
differential test against Envoy's jwt_authn. Its cases carry expect_allowed=None when the
outcome is not fixed by construction.

Signing is Ed25519 via `cryptography` (deterministic), every random choice comes from
random.Random(seed), and every date is relative to Setting.now: the same Setting gives
the same corpus, byte for byte.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from harness import tokens
from harness.tokens import b64url, b64url_decode, public_key

# -- constants -------------------------------------------------------------------------

#: Order of the Ed25519 base point.
L = 2**252 + 27742317777372353535851937790883648493

#: Small-order points (libsodium's blocklist): with one of them as public key, the
#: signature R = identity, S = 0 verifies on a lax verifier whenever [k]A = identity,
#: i.e. k = H(R || A || M) mod L is a multiple of the point's order.
IDENTITY = bytes([1]) + bytes(31)                                    # order 1
ORDER2 = bytes([0xEC]) + b"\xff" * 30 + bytes([0x7F])                # (0, -1)
ORDER4 = bytes(32)                                                   # y = 0
ORDER8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
SMALL_ORDER = {"identity": (IDENTITY, 1), "order2": (ORDER2, 2), "order4": (ORDER4, 4),
               "order8": (ORDER8, 8)}

MIB = 1 << 20

#: Every date in the corpus is at least this many seconds from a verdict boundary (exp + skew,
#: nbf - skew), so a corpus stays right for TIME_MARGIN seconds after Setting.now.
TIME_MARGIN = 40


class Case(NamedTuple):
    name: str
    kind: str
    request_headers: list
    expect_allowed: bool | None


@dataclass
class Setting:
    """What the corpus is built against: the provider as configured, the clock, the keys."""
    issuer: str
    audiences: list[str]
    now: int
    cur_seed: bytes
    cur_kid: str
    next_seed: bytes
    next_kid: str
    seed: int = 5
    skew: int = 60
    max_lifetime: int = 86400
    max_token_bytes: int = 8192
    param: str | None = "access_token"   # from_params; None: no query-parameter cases
    failover: bool = True                 # second JWKS source; False: no failover cases
    # Derived key material (deterministic from `seed`); filled in __post_init__.
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(f"keys:{self.seed}")
        for name in ("attacker", "es256", "x25519", "use_enc", "private", "key_ops", "dup_a",
                     "dup_b", "fo_shadow", "fo_only", "short"):
            self.extra[name] = rng.randbytes(32)

    def kid_of(self, name: str) -> str:
        """The kid a key is published under (its own name for keys in no JWKS)."""
        return {"cur": self.cur_kid, "next": self.next_kid, "fo_only": KID_FO_ONLY}.get(name, name)

    def x(self, name: str) -> bytes:
        return public_key(self.seed_of(name))

    def seed_of(self, name: str) -> bytes:
        return {"cur": self.cur_seed, "next": self.next_seed}.get(name) or self.extra[name]

    @property
    def aud(self) -> str:
        return self.audiences[0]


def b64(data: bytes) -> str:
    return b64url(data)


def jwk(x: bytes, kid: str | None, **extra) -> dict:
    """An Ed25519 public JWK; an extra member set to None is removed."""
    out = {"kty": "OKP", "crv": "Ed25519", "x": b64(x), "use": "sig", "alg": "EdDSA"}
    if kid is not None:
        out["kid"] = kid
    for k, v in extra.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# kids of the crafted keys in the primary JWKS
KID_X1, KID_X31, KID_X33 = "x-1-byte", "x-31-bytes", "x-33-bytes"
KID_ES256, KID_X25519, KID_USE_ENC = "alg-es256", "crv-x25519", "use-enc"
KID_PRIVATE, KID_KEY_OPS, KID_DUP = "has-d", "key-ops-sign", "dup-kid"
KID_FO_ONLY = "failover-only"


def primary_jwks(s: Setting) -> dict:
    """The crafted JWKS: the issuer's current and next keys, then keys edge-jwt must skip
    (wrong length, small order, alg/crv/use mismatch, private part, key_ops), and a kid
    that appears twice (the first entry wins)."""
    short = s.x("short")
    keys = [
        jwk(s.x("cur"), s.cur_kid),
        jwk(s.x("next"), s.next_kid),
        jwk(short[:1], KID_X1),
        jwk(short[:31], KID_X31),
        jwk(short + b"\x00", KID_X33),
    ]
    keys += [jwk(pt, f"small-{name}") for name, (pt, _) in SMALL_ORDER.items()]
    keys += [
        jwk(s.x("es256"), KID_ES256, alg="ES256"),
        jwk(s.x("x25519"), KID_X25519, crv="X25519", alg=None),
        jwk(s.x("use_enc"), KID_USE_ENC, use="enc"),
        jwk(s.x("private"), KID_PRIVATE, d=b64(s.seed_of("private"))),
        jwk(s.x("key_ops"), KID_KEY_OPS, use=None, key_ops=["sign"]),
        jwk(s.x("dup_a"), KID_DUP),
        jwk(s.x("dup_b"), KID_DUP),
        {"kty": "RSA", "kid": "rsa-key", "n": b64(b"\x01" * 256), "e": "AQAB", "alg": "RS256"},
        {"kty": "EC", "kid": "ec-key", "crv": "P-256", "x": b64(bytes(32)), "y": b64(bytes(32))},
    ]
    return {"keys": keys}


def failover_jwks(s: Setting) -> dict:
    """The second source: another key under the current kid (must lose: the first source
    names that kid) and one key only this source has (must work: proves it was loaded)."""
    return {"keys": [jwk(s.x("fo_shadow"), s.cur_kid), jwk(s.x("fo_only"), KID_FO_ONLY)]}


def provider_config(s: Setting, jwks_uri: str, cluster: str, failover_uri: str | None = None,
                    failover_cluster: str | None = None, **extra) -> dict:
    remote: dict = {"http_uri": {"uri": jwks_uri, "cluster": cluster, "timeout": "2s"},
                    "cache_duration": "300s"}
    if failover_uri:
        remote["failover_http_uris"] = [{"uri": failover_uri, "cluster": failover_cluster,
                                         "timeout": "2s"}]
    p = {"issuer": s.issuer, "audiences": list(s.audiences), "remote_jwks": remote,
         "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
         "forward": True, "clock_skew_seconds": s.skew, "require_expiration": True,
         "max_lifetime_seconds": s.max_lifetime}
    if s.param:
        p["from_params"] = [s.param]
    p.update(extra)
    return p


def filter_config(s: Setting, jwks_uri: str, cluster: str, failover_uri: str | None = None,
                  failover_cluster: str | None = None) -> dict:
    cfg = {"providers": {"hostile": provider_config(s, jwks_uri, cluster, failover_uri,
                                                    failover_cluster)},
           "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "hostile"}}]}
    if s.max_token_bytes != 8192:
        cfg["max_token_bytes"] = s.max_token_bytes
    return cfg


# -- token building --------------------------------------------------------------------

_DROP = object()  # as a claim/header value: remove the member


def header(kid: str | None, alg="EdDSA", **extra) -> dict:
    h: dict = {"typ": "JWT"} if alg is _DROP else {"alg": alg, "typ": "JWT"}
    if kid is not None:
        h["kid"] = kid
    for k, v in extra.items():
        if v is _DROP:
            h.pop(k, None)
        else:
            h[k] = v
    return h


def payload(s: Setting, **changes) -> dict:
    """A payload that passes every claim check; a change set to _DROP removes the claim."""
    p = {"iss": s.issuer, "aud": [s.aud], "sub": "hostile-user", "iat": s.now,
         "exp": s.now + 600, "jti": "j-0", "scope": "read"}
    for k, v in changes.items():
        if v is _DROP:
            p.pop(k, None)
        else:
            p[k] = v
    return p


def signed(s: Setting, key: str = "cur", h: dict | bytes | None = None,
           p: dict | bytes | None = None, kid: str | None | object = _DROP) -> str:
    """A compact JWS with a genuine Ed25519 signature from key `key`."""
    if h is None:
        h = header(s.kid_of(key) if kid is _DROP else kid)
    return tokens.sign(h, payload(s) if p is None else p, s.seed_of(key))


def valid(s: Setting, jti: str = "j-0", key: str = "cur", **changes) -> str:
    return signed(s, key, p=payload(s, jti=jti, **changes))


def parts(tok: str) -> list[str]:
    return tok.split(".")


def with_sig(tok: str, sig: bytes | str) -> str:
    h, p, _ = tok.split(".")
    return f"{h}.{p}.{sig if isinstance(sig, str) else b64(sig)}"


def small_order_forgery(s: Setting, point: bytes, order: int, kid: str | None,
                        rng: random.Random) -> str:
    """R = identity, S = 0 under a small-order key; the payload's jti is ground until
    [k]A = identity, so a verifier without small-order checks accepts it."""
    sig = IDENTITY + bytes(32)
    for i in range(10_000):
        h = header(kid)
        p = payload(s, jti=f"forge-{rng.randrange(1 << 30)}-{i}", sub="admin")
        si = tokens.signing_input(h, p)
        k = int.from_bytes(hashlib.sha512(IDENTITY + point + si).digest(), "little") % L
        if k % order == 0:
            return f"{si.decode()}.{b64(sig)}"
    raise AssertionError("no suitable message found")  # pragma: no cover - 1/8 per try


def s_plus_l(tok: str, n: int = 1) -> str:
    """Same signature with S replaced by S + n*L: the same scalar mod L, not canonical."""
    sig = b64url_decode(tok.split(".")[2])
    s_int = int.from_bytes(sig[32:], "little") + n * L
    assert s_int < 1 << 256
    return with_sig(tok, sig[:32] + s_int.to_bytes(32, "little"))


def noncanonical_tail(segment: str) -> str | None:
    """The same bytes with non-zero unused trailing bits (None if there are none)."""
    spare = {2: 4, 3: 2}.get(len(segment) % 4)  # unused bits in the last character
    if not spare:
        return None
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    v = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[v | 1]


def bearer(tok: str | bytes) -> list:
    if isinstance(tok, bytes):
        return [("Authorization", b"Bearer " + tok)]
    return [("Authorization", f"Bearer {tok}")]


def split_target(case: Case) -> tuple[str, list]:
    """(query string incl. '?', or '') and the real headers of a case."""
    query = ""
    hs = []
    for k, v in case.request_headers:
        if k == ":path":
            query = v
        else:
            hs.append((k, v))
    return query, hs


def token_of(case: Case) -> str | bytes | None:
    """The Authorization value (first one) of a case, for reports."""
    for k, v in case.request_headers:
        if k.lower() == "authorization":
            return v
    return None


# -- the corpus ------------------------------------------------------------------------


def corpus(s: Setting) -> list[Case]:
    rng = random.Random(f"corpus:{s.seed}")
    out: list[Case] = []

    def add(name: str, kind: str, headers: list, allowed: bool) -> None:
        out.append(Case(name, kind, headers, allowed))

    def tok(name: str, kind: str, t: str | bytes, allowed: bool = False) -> None:
        add(name, kind, bearer(t), allowed)

    good = valid(s, jti="base")
    gh, gp, gs = good.split(".")
    cur_jwk = jwk(s.x("cur"), s.cur_kid)
    x_cur = s.x("cur")

    # ---- valid controls ----------------------------------------------------------------
    tok("valid-current-key", "valid", good, True)
    tok("valid-next-key", "valid", valid(s, key="next", jti="v-next"), True)
    tok("valid-exp-float", "valid", valid(s, jti="v-float", exp=s.now + 300.5), True)
    tok("valid-exp-float-exponent", "valid", valid(s, jti="v-float-e", exp=float(s.now + 400)), True)
    tok("valid-aud-string", "valid", valid(s, jti="v-aud-s", aud=s.aud), True)
    tok("valid-aud-array-several", "valid",
        valid(s, jti="v-aud-many", aud=["other.example", s.aud, "third.example"]), True)
    tok("valid-alg-Ed25519", "valid",
        signed(s, h=header(s.cur_kid, alg="Ed25519"), p=payload(s, jti="v-ed25519")), True)
    tok("valid-no-typ", "valid",
        signed(s, h=header(s.cur_kid, typ=_DROP), p=payload(s, jti="v-notyp")), True)
    tok("valid-nbf-within-skew", "valid", valid(s, jti="v-nbf", nbf=s.now + 20), True)
    tok("valid-expired-within-skew", "valid",
        valid(s, jti="v-exp-skew", iat=s.now - 900, exp=s.now - s.skew + TIME_MARGIN), True)
    tok("valid-lifetime-just-under-max", "valid",
        valid(s, jti="v-life", iat=s.now - 10, exp=s.now - 10 + s.max_lifetime), True)
    tok("valid-no-iat", "valid", valid(s, jti="v-noiat", iat=_DROP), True)
    big = valid(s, jti="v-big", blob="b" * 9000)
    tok("valid-12kb-token", "valid", big, len(big) <= s.max_token_bytes)
    if s.failover:
        tok("valid-failover-only-kid", "valid", valid(s, key="fo_only", jti="v-fo"), True)

    # ---- algorithm confusion -----------------------------------------------------------
    for hname, h in [("none", header(s.cur_kid, alg="none")),
                     ("none-no-kid", header(None, alg="none")),
                     ("None", header(s.cur_kid, alg="None")),
                     ("NONE", header(s.cur_kid, alg="NONE"))]:
        tok(f"alg-{hname}-empty-signature", "alg", tokens.unsigned(h, gp))
        tok(f"alg-{hname}-with-signature", "alg", tokens.unsigned(h, gp, gs))
    tok("alg-none-signed-for-real", "alg",
        signed(s, h=header(s.cur_kid, alg="none"), p=payload(s, jti="a-none-real")))
    macs = {
        "jwk-json-compact": json.dumps(cur_jwk, separators=(",", ":")).encode(),
        "jwk-json-spaced": json.dumps(cur_jwk).encode(),
        "jwks-json": json.dumps({"keys": [cur_jwk]}).encode(),
        "raw-x": x_cur,
        "b64-x": b64(x_cur).encode(),
    }
    for mname, secret in macs.items():
        for kid in (s.cur_kid, None):
            suffix = "" if kid else "-no-kid"
            h = header(kid, alg="HS256")
            tok(f"alg-HS256-mac-with-{mname}{suffix}", "alg",
                tokens.hs256(h, payload(s, jti=f"hs-{mname}"), secret))
    tok("alg-HS512-mac-with-raw-x", "alg",
        tokens.unsigned(header(s.cur_kid, alg="HS512"), gp,
                        b64(hmac.new(x_cur, f"{gh}.{gp}".encode(), hashlib.sha512).digest())))
    for label, alg in [("RS256", "RS256"), ("ES256", "ES256"), ("PS256", "PS256"),
                       ("ES512", "ES512"), ("EdDSA25519", "EdDSA25519"),
                       ("EdDSA-trailing-space", "EdDSA "), ("EdDSA-leading-space", " EdDSA"),
                       ("eddsa", "eddsa"), ("EDDSA", "EDDSA"), ("ed25519", "ed25519"),
                       ("ED25519", "ED25519"), ("Ed448", "Ed448"), ("EdDSA-NUL", "EdDSA\u0000")]:
        tok(f"alg-{label}-ed25519-signed", "alg",
            signed(s, h=header(s.cur_kid, alg=alg), p=payload(s, jti=f"alg-{label}")))
    tok("alg-RS256-random-256-byte-sig", "alg",
        tokens.unsigned(header(s.cur_kid, alg="RS256"), gp, b64(rng.randbytes(256))))
    for label, val in [("array", ["EdDSA"]), ("object", {"name": "EdDSA"}), ("null", None),
                       ("number", 1), ("true", True), ("empty", "")]:
        tok(f"alg-as-{label}", "alg",
            signed(s, h=header(s.cur_kid, alg=val), p=payload(s, jti=f"alg-{label}")))
    tok("alg-missing", "alg", signed(s, h=header(s.cur_kid, alg=_DROP), p=payload(s, jti="a-miss")))
    for enc_h in [header(s.cur_kid, enc="A256GCM"),
                  header(s.cur_kid, alg="dir", enc="A128CBC-HS256"),
                  header(s.cur_kid, enc=None)]:
        tok(f"enc-member-{enc_h['alg']}-{enc_h['enc']}", "alg",
            signed(s, h=enc_h, p=payload(s, jti=f"enc-{enc_h['enc']}")))
    jwe = ".".join([b64(json.dumps({"alg": "dir", "enc": "A256GCM", "kid": s.cur_kid}).encode()),
                    "", b64(rng.randbytes(12)), b64(rng.randbytes(64)), b64(rng.randbytes(16))])
    tok("jwe-five-parts", "alg", jwe)
    for kid, key, why in [(KID_ES256, "es256", "jwk-alg-ES256"),
                          (KID_X25519, "x25519", "jwk-crv-X25519"),
                          (KID_USE_ENC, "use_enc", "jwk-use-enc"),
                          (KID_PRIVATE, "private", "jwk-with-private-d"),
                          (KID_KEY_OPS, "key_ops", "jwk-key_ops-sign-only")]:
        tok(f"{why}-token-signed-by-that-key", "alg", signed(s, key, p=payload(s, jti=why), kid=kid))
    tok("jwk-alg-ES256-token-alg-ES256", "alg",
        signed(s, "es256", h=header(KID_ES256, alg="ES256"), p=payload(s, jti="es-es")))
    tok("kid-of-rsa-jwk", "alg", signed(s, "attacker", p=payload(s, jti="rsa"), kid="rsa-key"))
    tok("kid-of-ec-jwk", "alg", signed(s, "attacker", p=payload(s, jti="ec"), kid="ec-key"))

    # ---- key material ------------------------------------------------------------------
    for kid in (KID_X1, KID_X31, KID_X33):
        tok(f"jwks-{kid}-token", "key", signed(s, "short", p=payload(s, jti=kid), kid=kid))
    for name, (pt, order) in SMALL_ORDER.items():
        tok(f"small-order-{name}-forgery-R-identity-S-0", "key",
            small_order_forgery(s, pt, order, f"small-{name}", rng))
    tok("small-order-identity-forgery-no-kid", "key",
        small_order_forgery(s, IDENTITY, 1, None, rng))
    tok("forgery-R-identity-S-0-under-current-kid", "key",
        small_order_forgery(s, IDENTITY, 1, s.cur_kid, rng))
    sig = b64url_decode(gs)
    tok("signature-63-bytes", "key", with_sig(good, sig[:63]))
    tok("signature-65-bytes", "key", with_sig(good, sig + b"\x00"))
    tok("signature-0-bytes", "key", with_sig(good, b""))
    tok("signature-128-bytes-doubled", "key", with_sig(good, sig + sig))
    tok("signature-all-zero", "key", with_sig(good, bytes(64)))
    tok("signature-S-plus-L", "key", s_plus_l(good, 1))
    tok("signature-S-plus-8L", "key", s_plus_l(good, 8))
    tok("signature-S-plus-15L", "key", s_plus_l(good, 15))
    tok("signature-S-equals-L", "key", with_sig(good, sig[:32] + L.to_bytes(32, "little")))
    tok("signature-R-flipped", "key", with_sig(good, bytes([sig[0] ^ 1]) + sig[1:]))
    tok("signature-by-attacker-key-under-current-kid", "key",
        signed(s, "attacker", p=payload(s, jti="att"), kid=s.cur_kid))
    nc = noncanonical_tail(gs)
    if nc:
        tok("signature-non-canonical-base64-tail", "key", f"{gh}.{gp}.{nc}")

    # ---- structure ---------------------------------------------------------------------
    ptext = json.dumps(payload(s, jti="dup"), separators=(",", ":")).encode()
    for name, htext in [
        ("dup-alg-HS256-then-EdDSA", f'{{"alg":"HS256","alg":"EdDSA","kid":"{s.cur_kid}"}}'),
        ("dup-alg-EdDSA-then-none", f'{{"alg":"EdDSA","alg":"none","kid":"{s.cur_kid}"}}'),
        ("dup-alg-same-value", f'{{"alg":"EdDSA","alg":"EdDSA","kid":"{s.cur_kid}"}}'),
        ("dup-kid-other-then-current", f'{{"alg":"EdDSA","kid":"{s.next_kid}","kid":"{s.cur_kid}"}}'),
        ("dup-kid-current-then-other", f'{{"alg":"EdDSA","kid":"{s.cur_kid}","kid":"{s.next_kid}"}}'),
        ("dup-kid-escaped-name", f'{{"alg":"EdDSA","kid":"{s.cur_kid}","\\u006bid":"{s.cur_kid}"}}'),
    ]:
        tok(f"header-{name}", "structure", tokens.sign(htext.encode(), ptext, s.cur_seed))
    p_dup = ptext[:-1] + f',"exp":{s.now - 3600}}}'.encode()
    tok("payload-dup-exp-last-expired", "structure",
        tokens.sign(header(s.cur_kid), p_dup, s.cur_seed))
    p_dup2 = ptext[:-1] + b',"aud":"nobody.example"}'
    tok("payload-dup-aud", "structure", tokens.sign(header(s.cur_kid), p_dup2, s.cur_seed))
    for label, crit in [('["exp"]', ["exp"]), ("[]", []), ("null", None), ('"b64"', "b64"),
                        ('["b64"]+b64-false', ["b64"])]:
        extra = {"crit": crit}
        if "b64-false" in label:
            extra["b64"] = False
        tok(f"crit-{label}", "structure",
            signed(s, h=header(s.cur_kid, **extra), p=payload(s, jti=f"crit-{label}")))
    deep = 100_000
    tok("header-json-nested-100000-deep", "structure", tokens.sign(
        (f'{{"alg":"EdDSA","kid":"{s.cur_kid}","x":' + "[" * deep + "]" * deep + "}").encode(),
        ptext, s.cur_seed))
    tok("header-json-nested-100000-unclosed", "structure", tokens.sign(
        (f'{{"alg":"EdDSA","kid":"{s.cur_kid}","x":' + "{\"a\":" * deep).encode(),
        ptext, s.cur_seed))
    tok("payload-json-nested-100000-deep", "structure", tokens.sign(
        header(s.cur_kid), ptext[:-1] + b',"x":' + b"[" * deep + b"]" * deep + b"}", s.cur_seed))
    tok("header-json-nested-200-deep", "structure", tokens.sign(
        (f'{{"alg":"EdDSA","kid":"{s.cur_kid}","x":' + "[" * 200 + "]" * 200 + "}").encode(),
        ptext, s.cur_seed))
    # ~1 MB, validly signed, wrong audience: every step runs on the megabyte.
    pad = 1_000_000 - len(good) - 60
    mb = signed(s, p=payload(s, jti="mb", aud="nobody.example", pad="p" * (pad * 3 // 4)))
    tok(f"token-1MB-signed-wrong-aud-{len(mb)}-bytes", "structure", mb)
    over = signed(s, p=payload(s, jti="over", pad="q" * (MIB * 3 // 4 + 1000)))
    tok(f"token-over-1MiB-signed-valid-{len(over)}-bytes", "structure", over)
    garbage = ".".join(b64(rng.randbytes(n)) for n in (330_000, 330_000, 64))
    tok("token-1MB-random-parts", "structure", garbage)
    add("header-one-million-dots", "structure", [("Authorization", "Bearer " + "." * 1_000_000)], False)
    add("header-one-million-dots-no-scheme", "structure", [("Authorization", "." * 1_000_000)], False)
    tok("dots-only", "structure", "..")
    for label, raw in [
        ("trailing-0xff", good.encode() + b"\xff"),
        ("0xff-in-payload", f"{gh}.{gp[:10]}".encode() + b"\xff" + gp[10:].encode() + f".{gs}".encode()),
        ("latin1-e-acute-in-header-seg", gh.encode()[:-1] + b"\xe9." + f"{gp}.{gs}".encode()),
        ("overlong-utf8-dot", f"{gh}".encode() + b"\xc0\xae" + f"{gp}.{gs}".encode()),
        ("utf8-bom-prefix", b"\xef\xbb\xbf" + good.encode()),
        ("header-json-not-utf8", tokens.sign(b'{"alg":"EdDSA","kid":"' + s.cur_kid.encode()
                                             + b'","x":"\xff\xfe"}', ptext, s.cur_seed).encode()),
        ("payload-json-not-utf8", tokens.sign(header(s.cur_kid), ptext[:-1] + b',"x":"\xc3\x28"}',
                                              s.cur_seed).encode()),
    ]:
        tok(f"non-utf8-{label}", "structure", raw)
    tok("padding-on-header", "structure", f"{gh}=.{gp}.{gs}")
    tok("padding-on-payload", "structure", f"{gh}.{gp}==.{gs}")
    tok("padding-on-signature", "structure", f"{gh}.{gp}.{gs}==")
    std = _std_alphabet_token(s)
    tok("std-alphabet-plus-slash", "structure", std)
    tok("whitespace-space-in-payload", "structure", f"{gh}.{gp[:20]} {gp[20:]}.{gs}")
    tok("whitespace-tab-in-signature", "structure", f"{gh}.{gp}.{gs[:40]}\t{gs[40:]}")
    tok("whitespace-after-dot", "structure", f"{gh}. {gp}.{gs}")
    tok("two-parts", "structure", f"{gh}.{gp}")
    tok("four-parts", "structure", f"{good}.{gs}")
    tok("trailing-dot", "structure", f"{good}.")
    tok("leading-dot", "structure", f".{good}")
    tok("empty-header-segment", "structure", f".{gp}.{gs}")
    tok("empty-payload-segment", "structure", tokens.sign(header(s.cur_kid), b"", s.cur_seed))
    tok("header-is-json-array", "structure", tokens.sign(b'["alg","EdDSA"]', ptext, s.cur_seed))
    tok("payload-is-json-array", "structure", tokens.sign(header(s.cur_kid), b"[1,2]", s.cur_seed))
    tok("payload-is-json-string", "structure", tokens.sign(header(s.cur_kid), b'"hi"', s.cur_seed))
    tok("payload-trailing-garbage", "structure",
        tokens.sign(header(s.cur_kid), ptext + b" x", s.cur_seed))
    tok("payload-tampered-after-signing", "structure", tokens.tamper_payload(good, sub="admin"))
    nc_p = noncanonical_tail(gp)
    if nc_p:
        tok("payload-non-canonical-base64-tail", "structure", f"{gh}.{nc_p}.{gs}")

    # ---- claims ------------------------------------------------------------------------
    for name, changes in [
        ("exp-negative", {"exp": -1}),
        ("exp-negative-float", {"exp": -1.5}),
        ("exp-string", {"exp": str(s.now + 600)}),
        ("exp-bool", {"exp": True}),
        ("exp-null", {"exp": None}),
        ("exp-array", {"exp": [s.now + 600]}),
        ("exp-1e300", {"exp": 1e300}),
        ("exp-2-pow-64", {"exp": 2**64}),
        ("exp-missing", {"exp": _DROP}),
        ("exp-expired-beyond-skew", {"iat": s.now - 900, "exp": s.now - s.skew - 30}),
        ("exp-float-expired", {"iat": s.now - 900, "exp": s.now - s.skew - 30.5}),
        ("aud-empty-array", {"aud": []}),
        ("aud-wrong", {"aud": ["nobody.example"]}),
        ("aud-wrong-string", {"aud": "nobody.example"}),
        ("aud-prefix", {"aud": s.aud[:-1]}),
        ("aud-case", {"aud": s.aud.upper()}),
        ("aud-number", {"aud": 7}),
        ("aud-nested-array", {"aud": [[s.aud]]}),
        ("aud-missing", {"aud": _DROP}),
        ("iss-prefix", {"iss": s.issuer[:-1]}),
        ("iss-superstring", {"iss": s.issuer + ".evil"}),
        ("iss-trailing-slash", {"iss": s.issuer + "/"}),
        ("iss-array", {"iss": [s.issuer]}),
        ("iss-missing", {"iss": _DROP}),
        ("nbf-beyond-skew", {"nbf": s.now + s.skew + 600}),
        ("nbf-string", {"nbf": str(s.now)}),
        ("exp-far-beyond-max-lifetime", {"exp": s.now + s.max_lifetime * 30}),
        ("exp-beyond-max-lifetime-no-iat", {"iat": _DROP, "exp": s.now + s.max_lifetime + 3600}),
        ("exp-year-10000", {"exp": 253_402_300_800 + 10}),
        ("iat-in-future", {"iat": s.now + 3600, "exp": s.now + 7200}),
        ("iat-negative", {"iat": -5}),
        ("iat-string", {"iat": str(s.now)}),
    ]:
        tok(f"claims-{name}", "claims", valid(s, jti=f"c-{name}", **changes))

    # ---- keys and kid ------------------------------------------------------------------
    tok("kid-absent-many-keys-in-set", "kid", signed(s, p=payload(s, jti="k-nokid"), kid=None))
    tok("kid-names-next-key-signed-by-current", "kid",
        signed(s, "cur", p=payload(s, jti="k-swap"), kid=s.next_kid))
    tok("kid-unknown", "kid", signed(s, p=payload(s, jti="k-unknown"), kid="no-such-kid"))
    tok("kid-empty-string", "kid", signed(s, p=payload(s, jti="k-empty"), kid=""))
    tok("kid-number", "kid", signed(s, p=payload(s, jti="k-num"), kid=1))
    tok("kid-null", "kid", tokens.sign(dict(header(None), kid=None), payload(s, jti="k-null"),
                                       s.cur_seed))
    tok("kid-array", "kid", tokens.sign(dict(header(None), kid=[s.cur_kid]),
                                        payload(s, jti="k-arr"), s.cur_seed))
    tok("kid-current-with-trailing-space", "kid",
        signed(s, p=payload(s, jti="k-sp"), kid=s.cur_kid + " "))
    tok("kid-duplicate-in-set-signed-by-second", "kid",
        signed(s, "dup_b", p=payload(s, jti="k-dup-b"), kid=KID_DUP))
    tok("kid-duplicate-in-set-signed-by-first", "kid",
        signed(s, "dup_a", p=payload(s, jti="k-dup-a"), kid=KID_DUP), True)
    if s.failover:
        tok("kid-same-in-two-sources-signed-by-second-source", "kid",
            signed(s, "fo_shadow", p=payload(s, jti="k-fo-shadow"), kid=s.cur_kid))

    # ---- extraction --------------------------------------------------------------------
    other = valid(s, jti="other-valid")
    add("authorization-empty", "extraction", [("Authorization", "")], False)
    add("authorization-whitespace-only", "extraction", [("Authorization", "   ")], False)
    add("scheme-Basic", "extraction", [("Authorization", "Basic dXNlcjpwYXNzd29yZA==")], False)
    add("scheme-Basic-with-valid-jwt", "extraction", [("Authorization", f"Basic {good}")], False)
    add("scheme-Token-with-valid-jwt", "extraction", [("Authorization", f"Token {good}")], False)
    add("scheme-missing-bare-valid-jwt", "extraction", [("Authorization", good)], False)
    add("scheme-Bearer-no-space", "extraction", [("Authorization", f"Bearer{good}")], False)
    add("scheme-Bearer-alone", "extraction", [("Authorization", "Bearer")], False)
    add("scheme-Bearer-space-only", "extraction", [("Authorization", "Bearer    ")], False)
    add("scheme-lowercase-bearer-valid", "extraction", [("Authorization", f"bearer {good}")], True)
    add("scheme-Bearer-extra-spaces-valid", "extraction",
        [("Authorization", f"Bearer    {good}   ")], True)
    add("bearer-valid-then-junk-word", "extraction", [("Authorization", f"Bearer {good} junk")], False)
    add("two-authorization-headers-same-token", "extraction", bearer(good) + bearer(good), False)
    add("two-authorization-headers-different-tokens", "extraction", bearer(good) + bearer(other), False)
    add("two-authorization-headers-valid-and-garbage", "extraction", bearer(good) + bearer("x.y.z"), False)
    # Envoy folds repeated lines with ',' but skips an empty one, so the filter sees exactly
    # one "Bearer <valid>": indistinguishable from a single header, hence allowed.
    add("two-authorization-headers-empty-then-valid", "extraction",
        [("Authorization", "")] + bearer(good), True)
    add("two-authorization-headers-valid-then-empty", "extraction",
        bearer(good) + [("Authorization", "")], True)
    add("one-header-two-tokens-comma", "extraction",
        [("Authorization", f"Bearer {good}, Bearer {other}")], False)
    add("one-header-bearer-valid-comma-basic", "extraction",
        [("Authorization", f"Bearer {good}, Basic dXNlcg==")], False)
    add("no-authorization-at-all", "extraction", [], False)
    add("token-in-other-header-only", "extraction", [("X-Token", f"Bearer {good}")], False)
    if s.param:
        q = s.param
        add("param-only-valid", "extraction", [(":path", f"?{q}={good}")], True)
        add("param-and-header-agree", "extraction", [(":path", f"?{q}={good}")] + bearer(good), True)
        add("param-and-header-disagree-both-valid", "extraction",
            [(":path", f"?{q}={other}")] + bearer(good), False)
        add("param-garbage-header-valid", "extraction", [(":path", f"?{q}=x.y.z")] + bearer(good), False)
        add("param-empty-header-valid", "extraction", [(":path", f"?{q}=")] + bearer(good), False)
        add("param-twice-same", "extraction", [(":path", f"?{q}={good}&{q}={good}")], False)
        add("param-twice-different", "extraction", [(":path", f"?{q}={good}&{q}={other}")], False)
        add("param-name-case-differs", "extraction",
            [(":path", f"?{q.upper()}={good}")], False)
    return out


def _std_alphabet_token(s: Setting) -> str:
    """A valid token re-encoded with '+' and '/' (ground until it has both '-' and '_')."""
    for i in range(1000):
        t = valid(s, jti=f"std-{i}")
        if "-" in t and "_" in t:
            return t.replace("-", "+").replace("_", "/")
    raise AssertionError("no token with both '-' and '_'")  # pragma: no cover


# -- randomized mutations (differential) -----------------------------------------------

def _random_claims(s: Setting, rng: random.Random, i: int) -> dict:
    """A claim set that passes edge-jwt's checks, with random optional members."""
    p: dict = {"iss": s.issuer, "sub": rng.choice(["alice", "bob", "svc-" + str(i), "ü-user"]),
               "jti": f"r-{i}-{rng.randrange(1 << 32):08x}"}
    life = rng.choice([60, 300, 900, 3600, 40000])
    iat = s.now - rng.randrange(0, 50)
    p["exp"] = iat + life
    if rng.random() < 0.85:
        p["iat"] = iat
    aud_choice = rng.random()
    if aud_choice < 0.4:
        p["aud"] = s.aud
    elif aud_choice < 0.8:
        others = [f"svc{rng.randrange(100)}.example" for _ in range(rng.randrange(0, 3))]
        lst = others + [s.aud]
        rng.shuffle(lst)
        p["aud"] = lst
    else:
        p["aud"] = [rng.choice(s.audiences)]
    if rng.random() < 0.3:
        p["nbf"] = iat - rng.randrange(0, 30)
    if rng.random() < 0.5:
        p["scope"] = " ".join(rng.sample(["read", "write", "admin", "openid"], rng.randrange(1, 4)))
    if rng.random() < 0.3:
        p["user_context"] = {"id": p["sub"], "role": rng.choice(["user", "admin"]),
                             "features": rng.sample(["a", "b", "c"], rng.randrange(0, 3))}
    if rng.random() < 0.2:
        p["exp"] = p["exp"] + 0.25  # float exp is a valid NumericDate
    keys = list(p)
    rng.shuffle(keys)
    return {k: p[k] for k in keys}


def _flip_bit(seg: str, rng: random.Random, decoded: bool) -> str:
    """Flip one bit of a segment: of its decoded bytes (re-encoded), or of one character."""
    if decoded:
        raw = bytearray(b64url_decode(seg))
        if not raw:
            return seg + "A"
        j = rng.randrange(len(raw))
        raw[j] ^= 1 << rng.randrange(8)
        return b64(bytes(raw))
    while True:  # CR/LF cannot be sent inside a header value
        j = rng.randrange(len(seg))
        c = chr(ord(seg[j]) ^ (1 << rng.randrange(7)))
        if c not in "\r\n":
            return seg[:j] + c + seg[j + 1:]


def mutation_corpus(s: Setting, n: int = 450, seed: int | None = None) -> list[Case]:
    """`n` header-borne cases: valid random-claim tokens and mutations of them.

    expect_allowed is set where edge-jwt's answer follows from construction, else None."""
    rng = random.Random(f"mut:{s.seed if seed is None else seed}")
    out: list[Case] = []
    kids = [s.cur_kid, s.next_kid]
    i = 0
    while len(out) < n:
        i += 1
        key = rng.choice(["cur", "next"])
        kid = {"cur": s.cur_kid, "next": s.next_kid}[key]
        claims = _random_claims(s, rng, i)
        h = header(kid, alg=rng.choice(["EdDSA"] * 9 + ["Ed25519"]))
        if rng.random() < 0.3:
            h.pop("typ", None)
        t = tokens.sign(h, claims, s.seed_of(key))
        r = rng.random()
        if r < 0.25:
            out.append(Case(f"rand-valid-{i}", "random-valid", bearer(t), True))
            continue
        hp, pp, sp = t.split(".")
        if r < 0.55:
            which = rng.randrange(3)
            decoded = rng.random() < 0.6
            segs = [hp, pp, sp]
            segs[which] = _flip_bit(segs[which], rng, decoded)
            m = ".".join(segs)
            name = f"rand-flip-{['header', 'payload', 'signature'][which]}-{'byte' if decoded else 'char'}-{i}"
            out.append(Case(name, "random-bitflip", bearer(m), None if m != t else True))
        elif r < 0.65:
            rk = rng.choice(["rand-kid-" + str(rng.randrange(1000)), kids[0], kids[1], "",
                             KID_DUP, KID_X31, "small-identity"])
            h2 = dict(h, kid=rk)
            m = tokens.sign(h2, claims, s.seed_of(key))
            out.append(Case(f"rand-kid-{i}", "random-kid", bearer(m),
                            True if rk == kid else (None if rk == KID_DUP else False)))
        elif r < 0.85:
            # exp / nbf around the skew boundary, kept >= TIME_MARGIN s away from it so the
            # time between generation and request cannot change the verdict.
            m = TIME_MARGIN
            off = rng.choice([-3600, -300, -s.skew - m - 10, -s.skew - m, -s.skew + m,
                              -s.skew + m + 10, -10, 10, s.skew - m, s.skew + m, s.skew + 60, 3600])
            c2 = dict(claims)
            c2.pop("nbf", None)
            if rng.random() < 0.5:
                c2["iat"] = s.now - 7200
                c2["exp"] = s.now + off
                ok = s.now <= s.now + off + s.skew
                nm = f"rand-exp{off:+d}-{i}"
            else:
                c2["nbf"] = s.now + off
                c2.setdefault("iat", s.now - 10)
                if c2["iat"] > s.now:
                    c2["iat"] = s.now - 10
                c2["exp"] = max(c2["exp"], s.now + off + 300)
                life = c2["exp"] - c2.get("iat", s.now)
                ok = s.now + off <= s.now + s.skew and life <= s.max_lifetime
                nm = f"rand-nbf{off:+d}-{i}"
            m = tokens.sign(h, c2, s.seed_of(key))
            out.append(Case(nm, "random-time", bearer(m), ok))
        else:
            # A random claim edit: type changes and oddities.
            c2 = dict(claims)
            edit = rng.choice(["sub-int", "jti-int", "iss-int", "aud-with-int", "iat-float",
                               "nbf-float", "exp-str", "iat-future", "extra-nested",
                               "unicode-claim", "drop-iat-long", "scope-array", "typ-int"])
            h2 = dict(h)
            if edit == "sub-int":
                c2["sub"] = rng.randrange(1000)
            elif edit == "jti-int":
                c2["jti"] = rng.randrange(1000)
            elif edit == "iss-int":
                c2["iss"] = 42
            elif edit == "aud-with-int":
                c2["aud"] = [7, s.aud]
            elif edit == "iat-float":
                c2["iat"] = s.now - 5.5
            elif edit == "nbf-float":
                c2["nbf"] = s.now - 5.5
            elif edit == "exp-str":
                c2["exp"] = str(c2["exp"])
            elif edit == "iat-future":
                c2["iat"] = s.now + s.skew + rng.randrange(30, 600)
                c2["exp"] = c2["iat"] + 300
            elif edit == "extra-nested":
                c2["ext"] = {"a": [1, {"b": [True, None, 1.5e10]}], "c": "\u2603"}
            elif edit == "unicode-claim":
                c2["name"] = "Zo\u00eb \U0001F600 \\\"q\""
            elif edit == "drop-iat-long":
                c2.pop("iat", None)
                c2["exp"] = s.now + s.max_lifetime - 600
            elif edit == "scope-array":
                c2["scope"] = ["read", "write"]
            elif edit == "typ-int":
                h2["typ"] = 1
            m = tokens.sign(h2, c2, s.seed_of(key))
            out.append(Case(f"rand-edit-{edit}-{i}", "random-claims", bearer(m), None))
    return out


def default_setting(**kw) -> Setting:
    """A self-contained Setting (keys from the seed), for use without the issuer."""
    rng = random.Random(f"default:{kw.get('seed', 5)}")
    base = dict(issuer="https://issuer.hostile.local", audiences=["api.hostile.local"],
                now=int(time.time()), cur_seed=rng.randbytes(32), cur_kid="cur-key",
                next_seed=rng.randbytes(32), next_kid="next-key")
    base.update(kw)
    return Setting(**base)
