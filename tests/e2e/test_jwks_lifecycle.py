"""JWKS lifecycle of edge-jwt in the real Envoy, several workers.

What is proved here, each against a JWKS server the test controls (harness `JwksServer`)
or the real example issuer:

1. single flight: one fetch per refresh window for all workers together;
2. key rotation (issuer publish / promote, and a brand-new kid) without a 401 on any worker;
3. cold start: requests wait for the first fetch and pass;
4. cold start beyond `initial_fetch_wait`: 503 + Retry-After, or 401 when configured;
5. outage (refused, HTTP 500, hang): stale keys serve, then recovery; past `max_stale`: fail closed;
6. a bad JWKS body never replaces the good set, and is logged once per state change;
7. failover sources and keys split across sources;
8. a flood of random kids costs at most one extra fetch (refetch cooldown);
9. two plugins in one Envoy never share cache entries;
10. the issuer's rotation steps as seen in its JWKS.

Measured figures (fetch counts, cold-start waits, flood latencies) go to RESULTS, printed at
the end of the module (and written to `<basetemp>/jwks_lifecycle_results.json`).

Timing notes, from the filter's design: every worker VM (and the main-thread VM) ticks every
1 s (20 ms while requests wait), so a refresh lands up to ~1 s after the TTL runs out, and a
key set another VM fetched reaches a VM's view at that VM's next tick; the rotation tests
require that this lag never shows as a 401. Durations here are short on purpose
(`cache_duration` 1-2 s, backoff 0.2-1 s) to keep the module well under 90 s: the three outage
kinds and the six bad answers each run side by side in one Envoy (module fixtures that
observe, then stop Envoy; the parametrized tests judge what was observed).
"""
from __future__ import annotations

import json
import re
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

from harness import tokens
from harness.configs import DEMO_AUDIENCE, remote_jwks
from harness.envoy import Envoy, Response, wasm_filter
from harness.issuer import Issuer
from harness.jwks_server import JwksServer

ISS = "https://issuer.lifecycle.test"
AUD = DEMO_AUDIENCE
FAST_BACKOFF = {"retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"}}

RESULTS: dict = {}


# -- results -----------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _results(request, tmp_path_factory):
    yield
    out = Path(tmp_path_factory.getbasetemp()) / "jwks_lifecycle_results.json"
    out.write_text(json.dumps(RESULTS, indent=2, sort_keys=True, default=str))
    text = "\n".join(f"{k}: {json.dumps(v, sort_keys=True, default=str)}" for k, v in sorted(RESULTS.items()))
    print(f"\n=== JWKS lifecycle results ({out}) ===\n{text}")
    # Also on the terminal without -s: output captured during teardown is otherwise dropped.
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    cap = request.config.pluginmanager.getplugin("capturemanager")
    if tr is not None and cap is not None and request.config.getoption("capture") != "no":
        with cap.global_and_fixture_disabled():
            tr.write_line("")
            tr.write_line(f"=== JWKS lifecycle results ({out}) ===")
            for line in text.splitlines():
                tr.write_line(line)


def record(section: str, **values) -> None:
    RESULTS.setdefault(section, {}).update(values)
    print(f"[{section}] " + ", ".join(f"{k}={v}" for k, v in values.items()))


# -- keys, tokens, configs ----------------------------------------------------------


class Key:
    """An Ed25519 key of our own: its JWK and tokens signed with it."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.seed = tokens.new_seed()

    @property
    def jwk(self) -> dict:
        return tokens.public_jwk(self.seed, self.kid)

    def token(self, kid: str | None = None, **claims) -> str:
        header = {"alg": "EdDSA", "typ": "JWT", "kid": kid or self.kid}
        return tokens.sign(header, tokens.claims(ISS, [AUD], **claims), self.seed)


def jwks_of(*keys: Key) -> dict:
    return {"keys": [k.jwk for k in keys]}


def random_kid_token() -> str:
    return Key(f"rnd-{uuid.uuid4().hex}").token()


def remote_cfg(primary: tuple[str, str], *failover: tuple[str, str], timeout: str = "2s",
               **extra) -> dict:
    """`remote_jwks` with (uri, cluster) sources, plus any edge-jwt cache fields."""
    out = remote_jwks(primary[0], primary[1], timeout)
    if failover:
        out["failover_http_uris"] = [{"uri": u, "cluster": c, "timeout": timeout} for u, c in failover]
    out.update(extra)
    return out


def one_provider(remote: dict, issuer: str = ISS, name: str = "demo") -> dict:
    return {
        "providers": {name: {"issuer": issuer, "audiences": [AUD], "remote_jwks": remote}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": name}}],
    }


def two_providers(remote_a: dict, remote_b: dict) -> dict:
    """Provider `a` guards /a, provider `b` guards /b (same issuer and audience)."""
    return {
        "providers": {"a": {"issuer": ISS, "audiences": [AUD], "remote_jwks": remote_a},
                      "b": {"issuer": ISS, "audiences": [AUD], "remote_jwks": remote_b}},
        "rules": [{"match": {"prefix": "/a"}, "requires": {"provider_name": "a"}},
                  {"match": {"prefix": "/b"}, "requires": {"provider_name": "b"}}],
    }


# -- traffic and observation ----------------------------------------------------------


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.05):
    """Bounded poll; returns the last value of pred() (truthy on success)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def timed_get(env: Envoy, path: str, token: str | None, timeout: float = 10.0) -> tuple[Response, float]:
    t0 = time.monotonic()
    r = env.get(path, token, timeout=timeout)
    return r, time.monotonic() - t0


def spray(env: Envoy, token_for: Callable[[int], str | None], n: int, threads: int = 8,
          prefix: str = "/x") -> list[tuple[int, float]]:
    """n GETs, each on a fresh connection (so the kernel spreads them over the workers),
    `threads` at a time. Returns (status, seconds) per request, in order."""
    def one(i: int) -> tuple[int, float]:
        r, dt = timed_get(env, f"{prefix}/{i}", token_for(i))
        return r.status, dt

    with ThreadPoolExecutor(max_workers=threads) as ex:
        return list(ex.map(one, range(n)))


def statuses(results: list[tuple[int, float]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for s, _ in results:
        out[s] = out.get(s, 0) + 1
    return out


def worker_connections(env: Envoy) -> dict[str, int]:
    """Downstream connections per worker, from the listener's per-worker stats."""
    out = {}
    for name, v in env.stats(r"worker_\d+\.downstream_cx_total").items():
        m = re.search(r"(worker_\d+)\.downstream_cx_total$", name)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + v
    return out


def workers_used(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(1 for w, v in after.items() if v > before.get(w, 0))


def log_lines(env: Envoy, needle: str) -> list[str]:
    return [ln for ln in env.log_text().splitlines() if needle in ln]


# The filter's wording of these lines has changed before; match only what must be there:
# the source's URI, then "failed:" (a failed fetch) or "loaded" (a good one).
def failure_lines(env: Envoy, uri: str) -> list[str]:
    pat = re.compile(r"edge-jwt: .*" + re.escape(uri) + r"\b.* failed: ")
    return [ln for ln in log_lines(env, uri) if pat.search(ln)]


def loaded_lines(env: Envoy, uri: str) -> list[str]:
    pat = re.compile(r"edge-jwt: .*" + re.escape(uri) + r"\b.* loaded\b")
    return [ln for ln in log_lines(env, uri) if pat.search(ln)]


def recovered_lines(env: Envoy, uri: str) -> list[str]:
    return [ln for ln in loaded_lines(env, uri) if "(recovered)" in ln]


def short(line: str) -> str:
    """The wasm message of an Envoy log line, with the thread id."""
    m = re.match(r"\[[^\]]*\]\[(\d+)\].*?wasm log [^:]*: (.*)$", line)
    return f"[{m.group(1)}] {m.group(2)}" if m else line


def spacings(ts: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in zip(ts, ts[1:])]


def warm(env: Envoy, token: str, path: str = "/warm", timeout: float = 10.0) -> None:
    r = env.wait_status(path, token, 200, timeout=timeout)
    assert r.status == 200, f"no 200 within {timeout}s (JWKS never loaded?): {r}\n{env.log_tail()}"


def make_envoy(envoy_factory, cfg: dict, servers: dict[str, JwksServer | int], concurrency: int = 2,
               **kw) -> Envoy:
    clusters = {name: (s if isinstance(s, int) else s.port) for name, s in servers.items()}
    return envoy_factory(cfg, clusters=clusters, concurrency=concurrency, **kw)


# -- 1. single flight -------------------------------------------------------------------


def test_single_flight_one_fetch_per_refresh_window(envoy_factory, jwks_server):
    """Four workers under steady traffic: the JWKS server sees one fetch per TTL window
    (TTL 2 s from `Cache-Control: max-age=2`, `min_cache_duration` lowered to 1 s)."""
    k = Key("sf-1")
    jwks_server.jwks = jwks_of(k)
    jwks_server.headers = {"Cache-Control": "public, max-age=2"}
    cfg = one_provider(remote_cfg((jwks_server.uri, "jwks"), min_cache_duration="1s"))
    env = make_envoy(envoy_factory, cfg, {"jwks": jwks_server}, concurrency=4)
    warm(env, k.token())
    assert jwks_server.count == 1, f"cold start fetched {jwks_server.count} times: {jwks_server.timestamps}"

    tok = k.token()
    before = worker_connections(env)
    stop_at = time.monotonic() + 7.0
    seen: list[int] = []
    lock = threading.Lock()

    def driver() -> None:
        while time.monotonic() < stop_at:
            r = env.get(f"/sf/{uuid.uuid4().hex}", tok, timeout=5)
            with lock:
                seen.append(r.status)

    t_start = time.monotonic()
    threads = [threading.Thread(target=driver, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    elapsed = time.monotonic() - t_start
    ts = jwks_server.timestamps
    gaps = spacings(ts)
    in_window = [t for t in ts if t >= t_start]
    used = workers_used(before, worker_connections(env))
    codes = {s: seen.count(s) for s in set(seen)}
    record("single_flight", concurrency=4, traffic_seconds=round(elapsed, 2), requests=len(seen),
           statuses=codes, workers_used=used, fetches_total=len(ts),
           fetches_during_traffic=len(in_window), fetch_spacing_s=gaps)

    assert codes == {200: len(seen)}, f"not all 200 during refreshes: {codes}"
    assert used >= 3, f"traffic reached only {used} of 4 workers"
    # Never two fetches in one window: refreshes are at least ~TTL apart...
    assert all(g >= 1.5 for g in gaps), f"two fetches within one refresh window: spacing {gaps}"
    # ...and they do happen: TTL 2 s plus at most ~1 s until some VM's tick notices.
    assert all(g <= 3.6 for g in gaps), f"a refresh came late: spacing {gaps}"
    lo, hi = int(elapsed // 3.6), int(elapsed / 2.0) + 1
    assert lo <= len(in_window) <= hi, (
        f"{len(in_window)} fetches in {elapsed:.1f}s of traffic, expected {lo}..{hi} "
        f"(one per 2 s window, up to 1 s tick lag)")


# -- 2. rotation --------------------------------------------------------------------------


def first_refusal(responses: list[Response]) -> str | None:
    """Status and WWW-Authenticate of the first non-200, for the failure message."""
    for r in responses:
        if r.status != 200:
            return f"{r.status} {r.header('www-authenticate')}"
    return None


def _many(env: Envoy, token: str, n: int = 24, threads: int = 4, prefix: str = "/rot"):
    before = worker_connections(env)
    res = spray(env, lambda i: token, n, threads, prefix)
    return statuses(res), workers_used(before, worker_connections(env)), res


def test_issuer_rotation_never_401(envoy_factory, issuer_bin, tmp_path):
    """Real issuer as the JWKS source: next key works before promotion; after promotion the
    new current and the retiring key both work on every worker; the freshly published next
    key (never fetched yet) triggers one refetch and works on every worker."""
    iss = Issuer(issuer_bin, workdir=tmp_path / "issuer").start()
    try:
        cfg = one_provider(remote_cfg((iss.jwks_uri, "issuer")), issuer=iss.issuer_url)
        env = make_envoy(envoy_factory, cfg, {"issuer": iss.port})
        mint = lambda key: iss.mint(sub="rot", aud=[AUD], ttl=300, key=key)  # noqa: E731
        warm(env, mint("current"))
        steps: dict[str, dict] = {}

        iss.rotate("publish")  # idempotent: the store already has a next key
        kids = [k["kid"] for k in iss.jwks()["keys"]]
        assert kids == [iss.kid("current"), iss.kid("next")], kids
        for key in ("current", "next"):
            codes, used, _ = _many(env, mint(key))
            steps[f"published/{key}"] = {"statuses": codes, "workers": used}

        old_current, old_next = iss.kid("current"), iss.kid("next")
        iss.rotate("promote")
        assert iss.kid("current") == old_next and iss.kid("retiring") == old_current
        for key in ("current", "retiring"):
            codes, used, _ = _many(env, mint(key))
            steps[f"promoted/{key}"] = {"statuses": codes, "workers": used}

        # Promotion published a brand-new next key the filter has never fetched.
        fresh = mint("next")
        r, dt = timed_get(env, "/rot/fresh-first", fresh)
        steps["fresh_next/first"] = {"status": r.status, "seconds": round(dt, 3)}
        seq_r = [env.get(f"/rot/fresh-seq/{i}", fresh) for i in range(20)]
        seq = [x.status for x in seq_r]
        steps["fresh_next/sequential"] = {"statuses": statuses([(x, 0) for x in seq]), "order": seq,
                                          "first_refusal": first_refusal(seq_r)}
        codes, used, _ = _many(env, fresh)
        steps["fresh_next/parallel"] = {"statuses": codes, "workers": used}
        record("rotation_issuer", steps=steps)

        assert steps["fresh_next/first"]["status"] == 200, steps["fresh_next/first"]
        for step, v in steps.items():
            if "workers" in v:
                assert v["statuses"] == {200: 24}, f"{step}: {v}"
                assert v["workers"] >= 2, f"{step}: only {v['workers']} worker answered"
        seq = steps["fresh_next/sequential"]
        assert seq["statuses"] == {200: 20}, f"freshly published key refused after its refetch: {seq}"
    finally:
        iss.stop()


def test_new_kid_published_then_used_immediately_never_401(envoy_factory, jwks_server):
    """A kid published on the JWKS server and used right away: the unknown kid forces one
    refetch, the request waits for it, and every worker accepts the token (>= 20 requests,
    fresh connections), never 401."""
    k1, k2 = Key("nk-1"), Key("nk-2")
    jwks_server.jwks = jwks_of(k1)
    cfg = one_provider(remote_cfg((jwks_server.uri, "jwks"), cache_duration="300s"))
    env = make_envoy(envoy_factory, cfg, {"jwks": jwks_server})
    warm(env, k1.token())
    # every worker answers k1 before the change (each has synced the first entry)
    codes, used, _ = _many(env, k1.token(), prefix="/nk-before")
    assert codes == {200: 24} and used >= 2, (codes, used)
    c0 = jwks_server.count

    jwks_server.jwks = jwks_of(k1, k2)
    tok = k2.token()
    first, dt = timed_get(env, "/nk/first", tok)
    seq = [timed_get(env, f"/nk/seq/{i}", tok) for i in range(20)]
    seq_codes = statuses([(r.status, d) for r, d in seq])
    codes, used, res = _many(env, tok, prefix="/nk-par")
    extra = jwks_server.count - c0
    refusal = first_refusal([r for r, _ in seq])
    record("rotation_new_kid", first_status=first.status, first_wait_s=round(dt, 3),
           sequential_statuses=seq_codes, parallel_statuses=codes, parallel_workers=used,
           extra_fetches=extra, first_refusal=refusal)
    assert first.status == 200, (first, env.log_tail(20))
    assert seq_codes == {200: 20}, (
        f"new kid refused on some worker after the forced refetch: {seq_codes} "
        f"(statuses in order: {[r.status for r, _ in seq]}; first refusal: {refusal})")
    assert codes == {200: 24} and used >= 2, (codes, used)
    assert extra == 1, f"expected exactly one forced refetch, saw {extra}"


# -- 3./4. cold start ----------------------------------------------------------------------


def test_cold_start_requests_wait_for_first_fetch(envoy_factory, jwks_server):
    """JWKS answers after 2 s: ~20 concurrent requests sent as soon as Envoy is ready all
    wait for the keys and pass; the server sees a single fetch."""
    k = Key("cold-1")
    jwks_server.jwks = jwks_of(k)
    jwks_server.set_mode("delay", delay_seconds=2.0)
    cfg = one_provider(remote_cfg((jwks_server.uri, "jwks"), timeout="5s", cache_duration="300s"))
    env = make_envoy(envoy_factory, cfg, {"jwks": jwks_server})
    tok = k.token()
    barrier = threading.Barrier(20)

    def one(i: int) -> tuple[int, float, float, float]:
        barrier.wait(timeout=10)
        t0 = time.monotonic()
        r, dt = timed_get(env, f"/cold/{i}", tok)
        return r.status, dt, t0, t0 + dt

    with ThreadPoolExecutor(max_workers=20) as ex:
        res = list(ex.map(one, range(20)))
    waits = sorted(r[1] for r in res)
    codes = statuses([(r[0], r[1]) for r in res])
    sent_at = min(r[2] for r in res)
    first_hit = jwks_server.timestamps[0] if jwks_server.count else sent_at
    record("cold_start", statuses=codes, fetches=jwks_server.count,
           wait_min_s=round(waits[0], 3), wait_median_s=round(statistics.median(waits), 3),
           wait_max_s=round(waits[-1], 3), jwks_delay_s=2.0,
           fetch_started_before_requests_s=round(sent_at - first_hit, 3))
    assert codes == {200: 20}, f"cold start: {codes}\n{env.log_tail(20)}"
    assert jwks_server.count == 1, f"cold start fetched {jwks_server.count} times"
    # they really waited for the delayed answer (it lands 2 s after the fetch started)
    lands = first_hit + 2.0
    assert all(r[3] >= lands - 0.05 for r in res), "a request passed before the keys arrived"
    assert waits[-1] < 5.0, waits


def test_cold_start_beyond_wait_fails_with_503_or_401(envoy_factory, jwks_server, echo):
    """JWKS hangs; `initial_fetch_wait: 1s` -> 503 with Retry-After (default), or 401 when the
    provider sets `keys_unavailable_status: 401`. Neither reaches the upstream."""
    k = Key("hang-1")
    jwks_server.jwks = jwks_of(k)
    jwks_server.set_mode("hang", hang_seconds=10.0)
    common = {"initial_fetch_wait": "1s", "cache_duration": "300s"}
    cfg = two_providers(remote_cfg((jwks_server.uri, "jwks"), timeout="5s", **common),
                        remote_cfg((jwks_server.uri, "jwks"), timeout="5s",
                                   keys_unavailable_status=401, **common))
    env = make_envoy(envoy_factory, cfg, {"jwks": jwks_server})
    tok = k.token()
    mark = uuid.uuid4().hex

    def one(path: str) -> tuple[Response, float]:
        return timed_get(env, path, tok)

    with ThreadPoolExecutor(max_workers=8) as ex:
        a = list(ex.map(one, [f"/a/{mark}/{i}" for i in range(4)]))
        b = list(ex.map(one, [f"/b/{mark}/{i}" for i in range(4)]))
    record("cold_start_beyond_wait",
           a_default=[(r.status, r.header("retry-after"), round(dt, 2)) for r, dt in a],
           b_401=[(r.status, (r.header("www-authenticate") or "")[:60], round(dt, 2)) for r, dt in b])
    for r, dt in a:
        assert r.status == 503, (r, env.log_tail(20))
        assert r.header("retry-after") and r.header("retry-after").isdigit(), r.headers
        assert 0.8 <= dt < 3.0, f"waited {dt:.2f}s, initial_fetch_wait is 1s"
    for r, dt in b:
        assert r.status == 401, (r, env.log_tail(20))
        assert 'error="invalid_token"' in (r.header("www-authenticate") or ""), r.headers
        assert 0.8 <= dt < 3.0, f"waited {dt:.2f}s, initial_fetch_wait is 1s"
    assert echo.find(mark) == [], "a request without keys reached the upstream"


# -- 5. outage ------------------------------------------------------------------------------
#
# The three outage kinds run side by side in one Envoy (one provider and one JWKS server
# each, routes /<kind>/...), so the module pays for one start and one TTL wait.

OUTAGES = {
    "refuse": lambda s: s.refuse(),                           # connect refused (503 from Envoy)
    "status_500": lambda s: s.set_mode("status", status_code=500),
    "hang": lambda s: s.set_mode("hang", hang_seconds=3.0),  # callout timeout 0.5 s (504)
}


def providers_cfg(servers: dict[str, JwksServer], **remote_extra) -> dict:
    """One provider per server, named like the server's key, guarding /<name>/."""
    return {
        "providers": {n: {"issuer": ISS, "audiences": [AUD],
                          "remote_jwks": remote_cfg((s.uri, f"jwks_{n}"), **remote_extra)}
                      for n, s in servers.items()},
        "rules": [{"match": {"prefix": f"/{n}/"}, "requires": {"provider_name": n}} for n in servers],
    }


def spray_each(env: Envoy, reqs: dict[str, tuple[str, str]], per: int, threads: int = 6):
    """`per` fresh-connection GETs for each name -> (path prefix, token); statuses per name."""
    names = list(reqs)
    out: dict[str, list[int]] = {n: [] for n in names}

    def one(i: int) -> tuple[str, int]:
        n = names[i % len(names)]
        prefix, tok = reqs[n]
        return n, env.get(f"{prefix}{uuid.uuid4().hex}", tok, timeout=10).status

    with ThreadPoolExecutor(max_workers=threads) as ex:
        for n, s in ex.map(one, range(per * len(names))):
            out[n].append(s)
    return out


@pytest.fixture(scope="module")
def outage_run(module_envoy_factory):
    """Keys load; then each server fails its own way; traffic meanwhile; then all resume.
    Yields what was seen, per outage kind; the tests below judge it."""
    servers = {n: JwksServer() for n in OUTAGES}
    keys = {n: Key(f"out-{n}") for n in OUTAGES}
    env = None
    try:
        for n, s in servers.items():
            s.jwks = jwks_of(keys[n])
        cfg = providers_cfg(servers, timeout="0.5s", cache_duration="2s", retry_policy=FAST_BACKOFF)
        env = make_envoy(module_envoy_factory, cfg, {f"jwks_{n}": s for n, s in servers.items()})
        reqs = {n: (f"/{n}/", keys[n].token()) for n in OUTAGES}
        for n, (prefix, tok) in reqs.items():
            warm(env, tok, f"{prefix}warm")
        obs = {n: {"during": [], "uri": s.uri} for n, s in servers.items()}
        t_out = time.monotonic()
        for n, s in servers.items():
            OUTAGES[n](s)
        # the TTL (2 s) runs out and a refresh fails (logged), while traffic keeps flowing
        all_failed = lambda: all(failure_lines(env, s.uri) for s in servers.values())  # noqa: E731
        while time.monotonic() - t_out < 8 and not all_failed():
            for n, st in spray_each(env, reqs, 4).items():
                obs[n]["during"] += st
        before = worker_connections(env)
        for n, st in spray_each(env, reqs, 24).items():
            obs[n]["during"] += st
        used = workers_used(before, worker_connections(env))
        stale_for = time.monotonic() - t_out
        for n, s in servers.items():
            obs[n].update(fails=failure_lines(env, s.uri), workers=used, stale_for=stale_for,
                          count_before_resume=s.count)
            s.resume("ok")
        t_res = time.monotonic()
        wait_until(lambda: all(recovered_lines(env, s.uri) for s in servers.values()), timeout=8)
        recovered_within = round(time.monotonic() - t_res, 2)
        after = spray_each(env, reqs, 12)
        for n, s in servers.items():
            rec = recovered_lines(env, s.uri)
            obs[n].update(after=after[n], recovered=rec,
                          fetches_after_resume=s.count - obs[n]["count_before_resume"])
            record(f"outage_{n}", stale_served=len(obs[n]["during"]), stale_for_s=round(stale_for, 2),
                   all_recovered_within_s=recovered_within,
                   statuses_during=statuses([(x, 0) for x in obs[n]["during"]]),
                   failure_lines=[short(x) for x in obs[n]["fails"]],
                   recovered_lines=[short(x) for x in rec],
                   fetches_after_resume=obs[n]["fetches_after_resume"],
                   statuses_after=statuses([(x, 0) for x in after[n]]))
        obs["_env"] = env
    finally:
        # all observed: stop now rather than at module end (logs stay readable)
        if env is not None:
            env.stop()
        for s in servers.values():
            s.stop()
    yield obs


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_outage_serves_stale_keys_then_recovers(outage_run, outage):
    """JWKS refused / HTTP 500 / hanging past the TTL (2 s): valid tokens keep passing on the
    stale keys; after the server is back the filter refetches and logs the recovery once."""
    o, env = outage_run[outage], outage_run["_env"]
    during = statuses([(s, 0) for s in o["during"]])
    assert o["fails"], f"no failed refresh logged within 8 s of the outage\n{env.log_tail(20)}"
    assert during == {200: len(o["during"])}, f"stale keys not served during the outage: {during}"
    assert o["stale_for"] > 2.0, "the outage did not outlast the TTL"
    assert o["workers"] >= 2, o["workers"]
    assert o["fetches_after_resume"] >= 1, "fetch count did not rise after resume"
    assert len(o["recovered"]) == 1, (
        "expected one 'loaded (recovered)' line:\n" + "\n".join(short(x) for x in o["recovered"])
        + f"\n{env.log_tail(20)}")
    assert set(o["after"]) == {200}, statuses([(s, 0) for s in o["after"]])


def test_max_stale_then_fail_closed(envoy_factory, jwks_server, echo):
    """TTL 1 s, `max_stale: 2s`; the JWKS becomes unreachable: tokens pass until TTL+max_stale
    after the last good fetch, then fail closed: 503 + Retry-After (default) or 401
    (`keys_unavailable_status: 401`). After the server comes back, tokens pass again."""
    k = Key("stale-1")
    jwks_server.jwks = jwks_of(k)
    common = {"cache_duration": "1s", "max_stale": "2s", "retry_policy": FAST_BACKOFF}
    cfg = two_providers(remote_cfg((jwks_server.uri, "jwks"), timeout="0.5s", **common),
                        remote_cfg((jwks_server.uri, "jwks"), timeout="0.5s",
                                   keys_unavailable_status=401, **common))
    env = make_envoy(envoy_factory, cfg, {"jwks": jwks_server})
    tok = k.token()
    warm(env, tok, "/a/warm")
    warm(env, tok, "/b/warm")
    jwks_server.refuse()
    last_good = max(jwks_server.timestamps)

    seen: list[tuple[float, int]] = []
    while time.monotonic() - last_good < 7:
        r = env.get(f"/a/{uuid.uuid4().hex}", tok, timeout=5)
        seen.append((time.monotonic() - last_good, r.status))
        if r.status != 200:
            break
        time.sleep(0.05)
    closed_at, status = seen[-1]
    last_200 = max((t for t, s in seen if s == 200), default=None)
    mark = uuid.uuid4().hex
    a = spray(env, lambda i: tok, 16, 4, f"/a/{mark}")
    b_resp = [env.get(f"/b/{mark}/{i}", tok) for i in range(8)]
    a_one = env.get(f"/a/{mark}/h", tok)
    record("max_stale", ttl_s=1, max_stale_s=2, last_200_after_last_fetch_s=round(last_200 or -1, 2),
           fail_closed_after_last_fetch_s=round(closed_at, 2), first_closed_status=status,
           a_statuses=statuses(a), b_statuses=statuses([(r.status, 0) for r in b_resp]),
           retry_after=a_one.header("retry-after"))
    assert status == 503, f"never failed closed within 7 s after the last good fetch: {seen[-5:]}"
    assert all(s == 200 for _, s in seen[:-1]), f"stale keys refused too early: {seen}"
    assert 2.7 <= closed_at <= 4.5, (
        f"failed closed {closed_at:.2f}s after the last good fetch; TTL + max_stale is 3 s")
    assert statuses(a) == {503: 16}, statuses(a)
    assert a_one.status == 503 and (a_one.header("retry-after") or "").isdigit(), a_one
    assert all(r.status == 401 and 'error="invalid_token"' in (r.header("www-authenticate") or "")
               for r in b_resp), [(r.status, r.header("www-authenticate")) for r in b_resp]
    assert echo.find(mark) == [], "a request without trusted keys reached the upstream"

    jwks_server.resume("ok")
    r = env.wait_status("/a/again", tok, 200, timeout=8)
    assert r.status == 200, f"no recovery after resume: {r}\n{env.log_tail(20)}"
    assert env.wait_status("/b/again", tok, 200, timeout=5).status == 200


# -- 6. bad bodies ---------------------------------------------------------------------------
#
# All six bad answers side by side in one Envoy (one provider and server each).

BAD_BODIES = {
    "html": (dict(mode="html"), "not a JSON object"),
    "not_json": (dict(mode="not_json"), "not a JSON object"),
    "not_jwks": (dict(mode="not_jwks"), '"keys"'),
    "empty_keys": (dict(mode="empty_keys"), "no usable"),
    "oversized": (dict(mode="oversized"), "65536"),
    "status_404": (dict(mode="status", status_code=404), "HTTP status 404"),
}
BAD_ATTEMPTS = 3  # failed refetches each server must see before the checks


@pytest.fixture(scope="module")
def bad_body_run(module_envoy_factory):
    """Keys load (TTL 1 s); every server switches to its bad answer; wait until each saw
    BAD_ATTEMPTS failed refetches; then valid tokens are sent on every route."""
    servers = {n: JwksServer() for n in BAD_BODIES}
    keys = {n: Key(f"bad-{n}") for n in BAD_BODIES}
    env = None
    try:
        for n, s in servers.items():
            s.jwks = jwks_of(keys[n])
        cfg = providers_cfg(servers, timeout="1s", cache_duration="1s",
                            retry_policy={"retry_back_off": {"base_interval": "0.2s",
                                                             "max_interval": "0.5s"}})
        env = make_envoy(module_envoy_factory, cfg, {f"jwks_{n}": s for n, s in servers.items()})
        reqs = {n: (f"/{n}/", keys[n].token()) for n in BAD_BODIES}
        for n, (prefix, tok) in reqs.items():
            warm(env, tok, f"{prefix}warm")
        c0 = {}
        for n, s in servers.items():
            kw = dict(BAD_BODIES[n][0])
            c0[n] = s.count
            s.set_mode(kw.pop("mode"), **kw)
        wait_until(lambda: all(s.count >= c0[n] + BAD_ATTEMPTS for n, s in servers.items()), timeout=12)
        before = worker_connections(env)
        seen = spray_each(env, reqs, 30)
        used = workers_used(before, worker_connections(env))
        obs = {}
        for n, s in servers.items():
            fails = failure_lines(env, s.uri)
            # each VM keeps its own upstream connection: distinct client ports ~ distinct VMs
            conns = sorted({h.client for h in s.hits[c0[n]:]})
            obs[n] = {"attempts": s.count - c0[n], "statuses": seen[n], "workers": used, "fails": fails,
                      "connections": conns}
            record(f"bad_body_{n}", refetches_with_bad_body=obs[n]["attempts"],
                   attempts_from_connections=len(conns),
                   statuses=statuses([(x, 0) for x in seen[n]]), workers=used,
                   failure_lines=[short(x) for x in fails])
        obs["_env"] = env
    finally:
        # all observed: stop now rather than at module end (logs stay readable)
        if env is not None:
            env.stop()
        for s in servers.values():
            s.stop()
    yield obs


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_body_keeps_good_keys(bad_body_run, case):
    """After the TTL, refetches get a bad answer: the good set stays in use on every worker,
    and the failure is logged once for the state change, not per attempt or per request."""
    o, env = bad_body_run[case], bad_body_run["_env"]
    reason = BAD_BODIES[case][1]
    codes = statuses([(s, 0) for s in o["statuses"]])
    assert o["attempts"] >= BAD_ATTEMPTS, f"only {o['attempts']} refetches within 12 s\n{env.log_tail(20)}"
    assert codes == {200: len(o["statuses"])}, f"good keys lost after a {case} answer: {codes}"
    assert o["workers"] >= 2, o["workers"]
    assert o["fails"] and all(reason in x for x in o["fails"]), [short(x) for x in o["fails"]]
    assert len(o["fails"]) == 1, (
        f"{len(o['fails'])} failure lines for one state change ({o['attempts']} failed attempts "
        f"over {len(o['connections'])} Envoy connections, {len(o['statuses'])} requests):\n"
        + "\n".join(short(x) for x in o["fails"]))


# -- 7. several sources ----------------------------------------------------------------------


def test_failover_source_serves_when_primary_is_down(envoy_factory):
    """`http_uri` refuses connections from the start; the failover source's keys verify."""
    k = Key("fo-1")
    with JwksServer(jwks_of(k)) as a, JwksServer(jwks_of(k)) as b:
        a.refuse()
        cfg = one_provider(remote_cfg((a.uri, "jwks_a"), (b.uri, "jwks_b"), timeout="1s",
                                      cache_duration="300s"))
        env = make_envoy(envoy_factory, cfg, {"jwks_a": a, "jwks_b": b})
        tok = k.token()
        r, dt = timed_get(env, "/fo/first", tok)
        codes, used, _ = _many(env, tok, prefix="/fo")
        fails = failure_lines(env, a.uri)
        record("failover", first_status=r.status, first_wait_s=round(dt, 3), statuses=codes,
               workers=used, fetches_b=b.count, primary_failure_lines=[short(x) for x in fails])
        assert r.status == 200, (r, env.log_tail(20))
        assert codes == {200: 24} and used >= 2, (codes, used)
        assert b.count == 1, f"failover source fetched {b.count} times"
        assert fails, "the primary's failure is not logged"
        # the log must name the source that actually served the keys
        assert loaded_lines(env, b.uri), (
            "no 'loaded' line names the failover source's URI:\n"
            + "\n".join(short(x) for x in log_lines(env, "loaded")))


def test_keys_split_across_sources_all_accepted(envoy_factory):
    """k1 only on source A, k2 only on source B: both verify. A kid on both: A (first) wins."""
    k1, k2 = Key("split-1"), Key("split-2")
    dup_a, dup_b = Key("split-dup"), Key("split-dup")
    with JwksServer(jwks_of(k1, dup_a)) as a, JwksServer(jwks_of(k2, dup_b)) as b:
        cfg = one_provider(remote_cfg((a.uri, "jwks_a"), (b.uri, "jwks_b"), cache_duration="300s"))
        env = make_envoy(envoy_factory, cfg, {"jwks_a": a, "jwks_b": b})
        warm(env, k1.token())
        assert wait_until(lambda: b.count >= 1, 5), "source B never fetched"
        warm(env, k2.token())
        out = {}
        for name, tok in (("k1_on_A", k1.token()), ("k2_on_B", k2.token()),
                          ("dup_A_key", dup_a.token()), ("dup_B_key", dup_b.token())):
            codes, used, _ = _many(env, tok, prefix=f"/split-{name}")
            out[name] = {"statuses": codes, "workers": used}
        record("split_sources", results=out, fetches_a=a.count, fetches_b=b.count)
        assert out["k1_on_A"]["statuses"] == {200: 24}, out
        assert out["k2_on_B"]["statuses"] == {200: 24}, out
        assert out["dup_A_key"]["statuses"] == {200: 24}, out
        assert out["dup_B_key"]["statuses"] == {401: 24}, f"first source must win a duplicate kid: {out}"


# -- 8. random-kid flood -----------------------------------------------------------------------


def test_random_kid_flood_costs_at_most_one_fetch(envoy_factory, jwks_server):
    """1000 tokens with random kids (20 at a time) under the default 30 s refetch cooldown:
    at most one extra JWKS fetch, all 401 quickly, valid tokens keep passing meanwhile."""
    k = Key("flood-1")
    jwks_server.jwks = jwks_of(k)
    cfg = one_provider(remote_cfg((jwks_server.uri, "jwks"), cache_duration="300s"))
    env = make_envoy(envoy_factory, cfg, {"jwks": jwks_server})
    tok = k.token()
    warm(env, tok)
    c0 = jwks_server.count
    flood_tokens = [random_kid_token() for _ in range(1000)]
    valid: list[int] = []
    done = threading.Event()

    def valid_traffic() -> None:
        while not done.is_set():
            valid.append(env.get(f"/flood-ok/{uuid.uuid4().hex}", tok, timeout=5).status)

    vt = threading.Thread(target=valid_traffic, daemon=True)
    vt.start()
    t0 = time.monotonic()
    try:
        res = spray(env, lambda i: flood_tokens[i], 1000, 20, "/flood")
    finally:
        done.set()
        vt.join(timeout=10)
    elapsed = time.monotonic() - t0
    lat = sorted(dt for _, dt in res)
    extra = jwks_server.count - c0
    record("flood", requests=1000, threads=20, seconds=round(elapsed, 2), statuses=statuses(res),
           extra_fetches=extra, latency_max_s=round(lat[-1], 3),
           latency_p99_s=round(lat[int(len(lat) * 0.99) - 1], 3),
           latency_median_s=round(statistics.median(lat), 4),
           valid_during_flood=statuses([(s, 0) for s in valid]))
    assert statuses(res) == {401: 1000}, statuses(res)
    assert extra <= 1, f"flood caused {extra} extra fetches (cooldown 30 s)"
    assert lat[-1] < 2.0, f"slowest random-kid 401 took {lat[-1]:.2f}s"
    assert valid and set(valid) == {200}, statuses([(s, 0) for s in valid])


# -- 9. two plugins ------------------------------------------------------------------------------


def test_two_plugins_never_share_entries(envoy_factory, wasm_path):
    """Two edge-jwt filters (plugin names differ, same VM id, same provider name `demo`), each
    with its own JWKS: a token both trust passes, one trusted by a single filter is refused,
    and each server is fetched only by its own filter."""
    shared, only_a, only_b = Key("pl-shared"), Key("pl-a"), Key("pl-b")
    with JwksServer(jwks_of(shared, only_a), path="/a/jwks.json") as sa, \
            JwksServer(jwks_of(shared, only_b), path="/b/jwks.json") as sb:
        cfg_a = one_provider(remote_cfg((sa.uri, "jwks_a"), cache_duration="300s"))
        cfg_b = one_provider(remote_cfg((sb.uri, "jwks_b"), cache_duration="300s"))
        env = make_envoy(envoy_factory, cfg_a, {"jwks_a": sa, "jwks_b": sb},
                         plugin_name="edge-jwt-a",
                         filters_before=[wasm_filter(cfg_b, wasm_path, plugin_name="edge-jwt-b")])
        warm(env, shared.token())
        out = {}
        for name, tok in (("shared", shared.token()), ("only_a", only_a.token()),
                          ("only_b", only_b.token())):
            codes, used, _ = _many(env, tok, n=12, prefix=f"/pl-{name}")
            out[name] = codes
        prefixes = sorted({m.group(1) for m in re.finditer(r'shared-data prefix "([^"]+)"', env.log_text())})
        record("two_plugins", statuses=out, fetches_a=sa.count, fetches_b=sb.count,
               paths_a=sorted({h.path for h in sa.hits}), paths_b=sorted({h.path for h in sb.hits}),
               prefixes=prefixes)
        assert prefixes == ["edge-jwt/edge-jwt-a/", "edge-jwt/edge-jwt-b/"], prefixes
        assert out["shared"] == {200: 12}, out
        assert out["only_a"] == {401: 12}, out
        assert out["only_b"] == {401: 12}, out
        # each server: its initial fetch, plus at most one forced refetch for the kid it lacks
        assert 1 <= sa.count <= 2 and 1 <= sb.count <= 2, (sa.count, sb.count)
        assert {h.path for h in sa.hits} == {"/a/jwks.json"}
        assert {h.path for h in sb.hits} == {"/b/jwks.json"}


# -- 10. issuer rotation, HTTP only ----------------------------------------------------------------


def test_issuer_rotation_steps_in_jwks(issuer_bin, tmp_path):
    iss = Issuer(issuer_bin, workdir=tmp_path / "issuer").start()
    try:
        kids = lambda: [k["kid"] for k in iss.jwks()["keys"]]  # noqa: E731
        cur, nxt = iss.kid("current"), iss.kid("next")
        iss.rotate("publish")
        after_publish = kids()
        assert after_publish == [cur, nxt], after_publish
        iss.rotate("promote")
        new_next = iss.kid("next")
        after_promote = kids()
        assert after_promote == [nxt, new_next, cur], after_promote
        assert iss.admin_keys() == {"current": nxt, "next": new_next, "retiring": [cur]}
        iss.rotate("retire")
        after_retire = kids()
        assert after_retire == [nxt, new_next], after_retire
        assert cur not in after_retire
        record("issuer_rotation", publish=after_publish, promote=after_promote, retire=after_retire)
    finally:
        iss.stop()
