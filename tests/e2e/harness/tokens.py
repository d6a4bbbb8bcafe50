"""JOSE helpers for hand-made tokens (hostile or not), signed with `cryptography`."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    if isinstance(text, str):
        text = text.encode("ascii")
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def _segment(part: dict | bytes | str) -> str:
    """dict -> compact JSON; bytes -> taken as the raw segment content; str -> used verbatim (already b64url)."""
    if isinstance(part, dict):
        return b64url(json.dumps(part, separators=(",", ":")).encode())
    if isinstance(part, bytes):
        return b64url(part)
    return part


def new_seed() -> bytes:
    return os.urandom(32)


def public_key(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


def public_jwk(seed: bytes, kid: str | None = None, **extra) -> dict:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(public_key(seed)), "use": "sig", "alg": "EdDSA"}
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return jwk


def sign_raw(signing_input: bytes, seed: bytes) -> bytes:
    """Ed25519 signature over exactly these bytes."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(signing_input)


def signing_input(header: dict | bytes | str, payload: dict | bytes | str) -> bytes:
    return f"{_segment(header)}.{_segment(payload)}".encode("ascii")


def sign(header: dict | bytes | str, payload: dict | bytes | str, seed: bytes) -> str:
    """Compact JWS signed with EdDSA. Header/payload are not validated: that's the point."""
    si = signing_input(header, payload)
    return f"{si.decode()}.{b64url(sign_raw(si, seed))}"


def unsigned(header: dict | bytes | str, payload: dict | bytes | str, signature: str = "") -> str:
    """Token with an arbitrary (default empty) signature segment, e.g. alg=none."""
    return f"{signing_input(header, payload).decode()}.{signature}"


def hs256(header: dict | bytes | str, payload: dict | bytes | str, key: bytes) -> str:
    """HMAC-SHA256 token, for the 'HS256 keyed with the public key' confusion attack."""
    si = signing_input(header, payload)
    return f"{si.decode()}.{b64url(hmac.new(key, si, hashlib.sha256).digest())}"


def split(token: str) -> tuple[dict, dict, bytes]:
    """(header, payload, signature) of a compact token; raises on garbage."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s)


def tamper_payload(token: str, **changes) -> str:
    """Same header and signature, payload with `changes` applied: must never verify."""
    h, p, s = token.split(".")
    payload = json.loads(b64url_decode(p))
    payload.update(changes)
    return f"{h}.{_segment(payload)}.{s}"


def claims(iss: str, aud: str | list[str] | None, sub: str = "alice", ttl: int = 300,
           now: int | None = None, **extra) -> dict:
    """A standard payload: iat=now, exp=now+ttl; extra keys override/add."""
    now = int(time.time()) if now is None else now
    out: dict = {"iss": iss, "sub": sub, "iat": now, "exp": now + ttl}
    if aud is not None:
        out["aud"] = aud
    out.update(extra)
    return out
