"""A bad filter config must stop Envoy, not run it unprotected.

Observed with Envoy 1.40 (default failure policy, fail closed): when the plugin's
on_configure refuses, a static listener's wasm filter makes Envoy exit with code 1 at
start ("Unable to create Wasm plugin <name>"), and `--mode validate` fails the same way.
"""
from __future__ import annotations

import re

import pytest

from harness import tokens
from harness.configs import demo_config
from harness.envoy import EnvoyStartError

# Everything valid except the rule: a usable inline key, so "ghost" is the only problem.
UNKNOWN_PROVIDER = {
    "providers": demo_config("https://issuer.e2e.local", local_jwks={
        "keys": [tokens.public_jwk(tokens.new_seed(), kid="k1")]})["providers"],
    "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "ghost"}}],
}
INVALID_JSON = '{"providers": {"demo": {"issuer": '


def _config_lines(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if "edge-jwt: config" in ln]


def _refused(envoy_factory, cfg):
    env = envoy_factory(cfg, start=False, ready_timeout=15)
    with pytest.raises(EnvoyStartError) as ei:
        env.start()
    err = ei.value
    assert err.returncode not in (None, 0), f"Envoy did not exit on a bad config:\n{err.log}"
    log = env.log_text()
    assert "Unable to create Wasm plugin" in log, log[-3000:]
    assert not env.running()
    return env, _config_lines(log)


def test_unknown_provider_refused(envoy_factory):
    env, lines = _refused(envoy_factory, UNKNOWN_PROVIDER)
    assert any("ghost" in ln for ln in lines), \
        f"expected an 'edge-jwt: config' line naming 'ghost', got {lines}\n{env.log_tail()}"


def test_invalid_json_refused(envoy_factory):
    env, lines = _refused(envoy_factory, INVALID_JSON)
    # serde_json errors read "... at line L column C"; accept an explicit "JSON" too
    assert any(re.search(r"json|line \d+ column \d+", ln, re.I) for ln in lines), \
        f"expected an 'edge-jwt: config' line about the JSON, got {lines}\n{env.log_tail()}"


@pytest.mark.parametrize("cfg", [UNKNOWN_PROVIDER, INVALID_JSON], ids=["unknown_provider", "invalid_json"])
def test_validate_mode_refuses(envoy_factory, cfg):
    # `envoy --mode validate` runs on_configure too, so CI can catch bad configs without serving.
    env = envoy_factory(cfg, start=False)
    rc, out = env.validate_config()
    assert rc != 0, out[-3000:]
    assert _config_lines(out), out[-3000:]
