"""Builders for edge-jwt filter configs (docs/CONFIG.md vocabulary)."""
from __future__ import annotations

import json

DEMO_AUDIENCE = "api.demo.local"
DEMO_RULES = [
    {"match": {"prefix": "/public"}},
    {"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}},
]


def remote_jwks(uri: str, cluster: str, timeout: str = "2s", cache_duration: str | None = None) -> dict:
    out: dict = {"http_uri": {"uri": uri, "cluster": cluster, "timeout": timeout}}
    if cache_duration:
        out["cache_duration"] = cache_duration
    return out


def provider(issuer: str | None, audiences: list[str] | None = None, *,
             remote: dict | None = None, local_jwks: dict | str | None = None, **extra) -> dict:
    p: dict = {}
    if issuer is not None:
        p["issuer"] = issuer
    if audiences is not None:
        p["audiences"] = audiences
    if remote is not None:
        p["remote_jwks"] = remote
    if local_jwks is not None:
        p["local_jwks"] = {"inline_string": local_jwks if isinstance(local_jwks, str)
                           else json.dumps(local_jwks)}
    p.update(extra)
    return p


def demo_config(issuer: str, *, jwks_uri: str | None = None, cluster: str = "issuer",
                local_jwks: dict | str | None = None, audiences: list[str] | None = None,
                rules: list[dict] | None = None, **provider_extra) -> dict:
    """Provider `demo` + the /public bypass rule, as in docs/CONFIG.md."""
    remote = remote_jwks(jwks_uri, cluster) if jwks_uri else None
    return {
        "providers": {"demo": provider(issuer, audiences or [DEMO_AUDIENCE], remote=remote,
                                       local_jwks=local_jwks, **provider_extra)},
        "rules": rules if rules is not None else DEMO_RULES,
    }
