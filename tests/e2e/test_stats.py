"""edge-jwt stats in the real Envoy 1.40 (issue 6): known traffic in, admin `/stats` out.

Envoy shows the filter's proxy-wasm metrics as `wasmcustom.edge_jwt.<plugin>.<name>` (plugin
`edge-jwt` here) in `/stats`; Prometheus drops the `wasmcustom.` and maps the rest to `_`
(`edge_jwt_edge_jwt_verify_us_count`). Counters and gauges only exist once first touched, so
an absent name reads as 0.

One Envoy with ONE worker (so the per-VM verified-token cache sees every request) and a JWKS
server the test controls (two keys, `cache_duration` 4 s). The scenario runs once, in phases,
and snapshots the stats after each; the tests below assert on the snapshots:

1. known traffic: N valid (one token, repeated), M missing, K expired, B bypassed;
2. an unknown kid (one forced refetch);
3. the JWKS server refuses connections and the TTL passes: failed fetches, stale = 1, while
   the stale keys still verify.

Histograms reach the admin only when stats are flushed: the bootstrap sets
`stats_flush_interval: 1s` (default 5 s).

A second, short test watches the `stale` gauge while every refresh succeeds.
"""
from __future__ import annotations

import re
import time
import uuid

import pytest

from harness import tokens
from harness.configs import DEMO_AUDIENCE
from harness.envoy import Envoy
from harness.jwks_server import JwksServer

ISS = "https://issuer.stats.test"
AUD = DEMO_AUDIENCE
PLUGIN = "edge-jwt"
PREFIX = f"wasmcustom.edge_jwt.{PLUGIN}."
PROM_VERIFY_COUNT = "edge_jwt_edge_jwt_verify_us_count"
CACHE_DURATION_S = 4

N_VALID, M_MISSING, K_EXPIRED, B_BYPASS = 7, 3, 2, 2


class Key:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.seed = tokens.new_seed()

    @property
    def jwk(self) -> dict:
        return tokens.public_jwk(self.seed, self.kid)

    def token(self, **claims) -> str:
        return tokens.sign({"alg": "EdDSA", "typ": "JWT", "kid": self.kid},
                           tokens.claims(ISS, [AUD], **claims), self.seed)


def filter_stats(env: Envoy) -> dict[str, int]:
    """Counters and gauges of the plugin, names without the prefix."""
    return {k[len(PREFIX):]: v for k, v in env.stats(r"^wasmcustom\.edge_jwt\.").items()
            if k.startswith(PREFIX)}


def prometheus_value(env: Envoy, name: str) -> float | None:
    status, body = env.admin_get("/stats/prometheus")
    assert status == 200, body[:300]
    for line in body.decode().splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            return float(m.group(2))
    return None


def wait_for(pred, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def flush_every_second(boot: dict) -> None:
    boot["stats_flush_interval"] = "1s"


def path(prefix: str = "/api") -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def scenario(module_envoy_factory):
    k1, k2, stranger = Key("stats-1"), Key("stats-2"), Key("stats-unknown")
    js = JwksServer(jwks={"keys": [k1.jwk, k2.jwk]})
    cfg = {"providers": {"demo": {
        "issuer": ISS, "audiences": [AUD],
        "remote_jwks": {"http_uri": {"uri": js.uri, "cluster": "jwks", "timeout": "1s"},
                        "cache_duration": f"{CACHE_DURATION_S}s",
                        "retry_policy": {"retry_back_off": {"base_interval": "0.5s", "max_interval": "1s"}}}}},
        "rules": [{"match": {"prefix": "/public"}},
                  {"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}]}
    env = module_envoy_factory(cfg, clusters={"jwks": js.port}, concurrency=1,
                               bootstrap_hook=flush_every_second)
    out: dict = {"env": env, "jwks": js, "sent": []}
    try:
        assert wait_for(lambda: filter_stats(env).get("jwks_fetch_success", 0) >= 1, 10), env.log_tail()
        t_fetch = time.monotonic()

        # -- phase 1: known traffic -------------------------------------------------------
        valid = k1.token()
        expired = [k2.token(ttl=-300) for _ in range(K_EXPIRED)]
        out["sent"] += [valid, *expired]
        statuses = {"valid": [env.get(path(), valid).status for _ in range(N_VALID)],
                    "missing": [env.get(path()).status for _ in range(M_MISSING)],
                    "expired": [env.get(path(), t).status for t in expired],
                    "bypass": [env.get(path("/public")).status for _ in range(B_BYPASS)]}
        out["statuses"] = statuses
        # gauges are written on the filter's 1 s tick
        wait_for(lambda: filter_stats(env).get("keys_loaded") == 2, 3)
        out["phase1"] = filter_stats(env)
        out["phase1_age_since_fetch"] = time.monotonic() - t_fetch
        n_decided = N_VALID + M_MISSING + K_EXPIRED
        out["verify_count"] = wait_for(
            lambda: (lambda v: v if v is not None and v >= n_decided else None)(
                prometheus_value(env, PROM_VERIFY_COUNT)), 4) or prometheus_value(env, PROM_VERIFY_COUNT)

        # -- phase 2: unknown kid ----------------------------------------------------------
        fetches = js.count
        unknown = stranger.token()
        out["sent"].append(unknown)
        out["unknown_status"] = env.get(path(), unknown).status
        out["unknown_fetches"] = js.count - fetches
        out["phase2"] = filter_stats(env)

        # -- phase 3: JWKS server down, TTL passes -----------------------------------------
        js.refuse()
        t_down = time.monotonic()

        def stale_and_failing():
            s = filter_stats(env)
            return s if s.get("stale") == 1 and s.get("jwks_fetch_failed", 0) >= 1 else None

        out["phase3"] = wait_for(stale_and_failing, CACHE_DURATION_S + 5) or filter_stats(env)
        out["phase3_after"] = time.monotonic() - t_down
        out["stale_valid_status"] = env.get(path(), valid).status
        time.sleep(1.2)
        out["phase3_later"] = filter_stats(env)
        out["log"] = env.log_text() + "\n" + env.access_log()
        yield out
    finally:
        js.stop()


def test_traffic_answers(scenario):
    s = scenario["statuses"]
    assert s == {"valid": [200] * N_VALID, "missing": [401] * M_MISSING,
                 "expired": [401] * K_EXPIRED, "bypass": [200] * B_BYPASS}, s


def test_decision_counters(scenario):
    p = scenario["phase1"]
    got = {k: p.get(k, 0) for k in ("allowed", "denied", "denied.missing", "denied.expired", "bypassed")}
    assert got == {"allowed": N_VALID, "denied": M_MISSING + K_EXPIRED, "denied.missing": M_MISSING,
                   "denied.expired": K_EXPIRED, "bypassed": B_BYPASS}, p


def test_token_cache_counters(scenario):
    """One worker: the repeated token misses once, then hits; denials touch neither."""
    p = scenario["phase1"]
    hits, misses = p.get("jwt_cache_hit", 0), p.get("jwt_cache_miss", 0)
    assert hits + misses == N_VALID, p
    assert (hits, misses) == (N_VALID - 1, 1), p


def test_jwks_fetch_and_key_gauges(scenario):
    p = scenario["phase1"]
    assert p.get("jwks_fetch_success", 0) >= 1, p
    assert p.get("jwks_fetch_failed", 0) == 0, p
    assert p.get("keys_loaded") == 2, p
    assert p.get("stale") == 0, p
    assert 0 <= p.get("jwks_age_seconds", -1) <= int(scenario["phase1_age_since_fetch"]) + 1, \
        (p, scenario["phase1_age_since_fetch"])


def test_verify_us_histogram_has_samples(scenario):
    """Every decided (non-bypass) request is timed; bypasses are not."""
    assert scenario["verify_count"] == N_VALID + M_MISSING + K_EXPIRED, scenario["verify_count"]


def test_unknown_kid_refetch(scenario):
    assert scenario["unknown_status"] == 401
    assert scenario["unknown_fetches"] == 1, scenario["unknown_fetches"]
    d = {k: scenario["phase2"].get(k, 0) - scenario["phase1"].get(k, 0)
         for k in ("unknown_kid_refetch", "denied", "denied.unknown_kid", "jwks_fetch_success", "allowed")}
    assert d == {"unknown_kid_refetch": 1, "denied": 1, "denied.unknown_kid": 1,
                 "jwks_fetch_success": 1, "allowed": 0}, d


def test_jwks_down_past_ttl_counts_failures_and_goes_stale(scenario):
    p2, p3, later = scenario["phase2"], scenario["phase3"], scenario["phase3_later"]
    assert p3.get("stale") == 1, (scenario["phase3_after"], p3)
    assert p3.get("jwks_fetch_failed", 0) > p2.get("jwks_fetch_failed", 0), p3
    assert p3.get("jwks_fetch_success") == p2.get("jwks_fetch_success"), (p2, p3)
    assert scenario["phase3_after"] <= CACHE_DURATION_S + 2.5, scenario["phase3_after"]
    # stale keys still serve (max_stale defaults to 24 h), and the picture holds
    assert scenario["stale_valid_status"] == 200
    assert p3.get("keys_loaded") == 2, p3
    assert p3.get("jwks_age_seconds", 0) >= CACHE_DURATION_S, p3
    assert later.get("stale") == 1, later
    assert later.get("jwks_fetch_failed", 0) > p3.get("jwks_fetch_failed", 0), later


def test_logs_never_contain_a_token(scenario):
    log = scenario["log"]
    assert scenario["sent"], "no tokens recorded"
    for tok in scenario["sent"]:
        header, payload, signature = tok.split(".")
        for part, what in ((tok, "token"), (f"{header}.{payload}", "signing input"),
                           (signature, "signature"), (payload, "payload")):
            assert part not in log, f"a {what} of a token sent appears in the Envoy log"


def test_stale_stays_zero_while_every_refresh_succeeds(envoy_factory, jwks_server):
    """`stale` is the alerting signal for "keys past their TTL because refreshes fail". With a
    healthy JWKS server and a 1 s TTL the set is refreshed every ~1 s; the gauge may blink for
    the few milliseconds a refresh is in flight, but must never read 1 for a sizeable span."""
    k = Key("healthy-1")
    jwks_server.jwks = {"keys": [k.jwk]}
    cfg = {"providers": {"demo": {
        "issuer": ISS, "audiences": [AUD],
        "remote_jwks": {"http_uri": {"uri": jwks_server.uri, "cluster": "jwks", "timeout": "1s"},
                        "cache_duration": "1s"}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}]}
    env = envoy_factory(cfg, clusters={"jwks": jwks_server.port}, concurrency=1)
    assert wait_for(lambda: filter_stats(env).get("keys_loaded") == 1, 5), env.log_tail()
    samples: list[tuple[float, int | None]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.5:
        samples.append((time.monotonic() - t0, filter_stats(env).get("stale")))
        time.sleep(0.05)
    s = filter_stats(env)
    assert s.get("jwks_fetch_failed", 0) == 0 and s.get("jwks_fetch_success", 0) >= 3, s
    # longest span over which every sample read stale == 1
    longest, start = 0.0, None
    for t, v in samples:
        if v == 1 and start is None:
            start = t
        elif v != 1 and start is not None:
            longest, start = max(longest, t - start), None
    if start is not None:
        longest = max(longest, samples[-1][0] - start)
    ones = sum(1 for _, v in samples if v == 1)
    assert longest < 0.5, (f"stale read 1 for {longest:.2f}s at a stretch ({ones}/{len(samples)} samples) "
                           f"while all {s.get('jwks_fetch_success')} refreshes succeeded")
