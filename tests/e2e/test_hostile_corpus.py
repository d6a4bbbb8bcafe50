"""The hostile corpus (hostile.py) against the real filter in a real Envoy: every case gets
the answer it must get, refused requests never reach the upstream, and afterwards every
worker's VM still answers (no panic, no trap, no VM re-created).

Keys are the issuer's (current + next), published by a JwksServer next to crafted keys
(hostile.primary_jwks); a second JwksServer is the failover source (hostile.failover_jwks).
The HCM header limit is raised to its maximum so megabyte tokens reach the filter instead
of being cut off by Envoy's 60 KiB default.
"""
from __future__ import annotations

import dataclasses
import re
import time
import uuid

import pytest

import hostile
from harness.envoy import Envoy
from harness.jwks_server import JwksServer

AUDIENCE = "api.hostile.local"
# Lines that would mean a VM died or a callback failed.
FATAL = re.compile(r"panicked|wasm trap|Function: proxy_on_\S+ failed|Wasm VM failed|"
                   r"Plugin configured to fail closed failed to load", re.I)
LIVENESS_CONNECTIONS = 50


def max_headers(boot: dict) -> None:
    """HCM max_request_headers_kb at its maximum (8 MiB) on every listener."""
    for listener in boot["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    f["typed_config"]["max_request_headers_kb"] = 8192


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]


def vm_stats(env: Envoy) -> dict[str, int]:
    return {k: v for k, v in env.stats(r"^wasm\.").items()
            if k.startswith("wasm.envoy.wasm.runtime.") or ".vm_reload" in k
            or k == "wasm.wasm_vm_count"}


def worker_connections(env: Envoy) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, v in env.stats(r"^listener\..*worker_\d+\.downstream_cx_total$").items():
        w = re.search(r"(worker_\d+)\.downstream_cx_total$", name).group(1)
        out[w] = out.get(w, 0) + v
    return out


@pytest.mark.parametrize("concurrency,max_token_bytes", [(2, 1 << 20), (4, 8192)],
                         ids=["concurrency2-max_token_1MiB", "concurrency4-max_token_default"])
def test_hostile_corpus_refused_and_vms_alive(concurrency, max_token_bytes, issuer, echo,
                                               envoy_factory):
    setting = hostile.Setting(
        issuer=issuer.issuer_url, audiences=[AUDIENCE], now=int(time.time()),
        cur_seed=issuer.seed("current"), cur_kid=issuer.kid("current"),
        next_seed=issuer.seed("next"), next_kid=issuer.kid("next"),
        max_token_bytes=max_token_bytes)
    primary = JwksServer(hostile.primary_jwks(setting))
    failover = JwksServer(hostile.failover_jwks(setting))
    try:
        cfg = hostile.filter_config(setting, primary.uri, "jwks", failover.uri, "jwks_fo")
        env = envoy_factory(cfg, clusters={"jwks": primary.port, "jwks_fo": failover.port},
                            concurrency=concurrency, bootstrap_hook=max_headers)
        _run(env, setting, issuer, echo, primary, failover, concurrency)
    finally:
        primary.stop()
        failover.stop()


def _run(env, setting, issuer, echo, primary, failover, concurrency):
    good = hostile.valid(setting, jti="warmup")
    r = env.wait_status("/warmup", good, 200, timeout=10)
    assert r.status == 200, f"filter never verified a valid token: {r}\n{env.log_tail()}"
    assert primary.wait_count(1) and failover.wait_count(1), "a JWKS source was never fetched"
    # Every VM syncs the shared key sets on its tick (1 s): after that none of them can
    # lack the failover set, whichever worker a connection lands on.
    time.sleep(1.2)
    fo = hostile.valid(setting, key="fo_only", jti="warm-fo")
    r = env.wait_status("/warmup-fo", fo, 200, timeout=10)
    assert r.status == 200, f"failover source key not usable: {r}\n{env.log_tail()}"
    vms_before = vm_stats(env)

    setting = dataclasses.replace(setting, now=int(time.time()))  # same keys, dates from now
    cases = hostile.corpus(setting)
    minted = issuer.mint(aud=[AUDIENCE], ttl=300)
    cases.append(hostile.Case("issuer-minted-token", "valid", hostile.bearer(minted), True))
    run = uuid.uuid4().hex[:8]
    failures, timings, reasons = [], [], {}
    for i, case in enumerate(cases):
        query, headers = hostile.split_target(case)
        marker = f"/hostile/{run}/{i:04d}-"
        path = f"{marker}{slug(case.name)}{query}"
        t0 = time.monotonic()
        try:
            resp = env.request("GET", path, headers, timeout=30)
        except OSError as e:  # a reset or a hang is a failure, never a skip
            failures.append(f"{case.name}: request failed: {e!r}")
            continue
        timings.append((time.monotonic() - t0, case.name, resp.status))
        reached = echo.find(marker)
        if case.expect_allowed:
            if resp.status != 200 or len(reached) != 1:
                failures.append(f"{case.name} [{case.kind}]: expected allowed, got {resp.status} "
                                f"(upstream saw {len(reached)}) {resp.header('www-authenticate')}")
        else:
            if resp.status not in (401, 403) or reached:
                failures.append(f"{case.name} [{case.kind}]: expected refused, got {resp.status}"
                                f" (upstream saw {len(reached)})")
            www = resp.header("www-authenticate") or ""
            m = re.search(r'error_description="([^"]*)"', www)
            reason = m.group(1) if m else (www or f"status {resp.status}")
            reasons[reason] = reasons.get(reason, 0) + 1

    elapsed = time.time() - setting.now
    timings.sort(reverse=True)
    print(f"\n{len(cases)} hostile cases, concurrency {concurrency}, "
          f"max_token_bytes {setting.max_token_bytes}; slowest 5:")
    for secs, name, status in timings[:5]:
        print(f"  {secs * 1000:8.1f} ms  {status}  {name}")
    print("refusal reasons:", dict(sorted(reasons.items(), key=lambda kv: -kv[1])))
    assert not failures, f"{len(failures)} of {len(cases)} cases wrong:\n" + "\n".join(failures)
    assert elapsed < hostile.TIME_MARGIN, f"corpus took {elapsed:.0f}s: dates may have drifted"

    # Liveness: many fresh connections with a valid token, until every worker has answered.
    before = worker_connections(env)
    statuses: dict[int, int] = {}
    sent = 0
    while sent < LIVENESS_CONNECTIONS or (_workers_used(before, worker_connections(env))
                                          < concurrency and sent < 4 * LIVENESS_CONNECTIONS):
        r = env.get(f"/alive/{run}/{sent}", good, timeout=10)
        statuses[r.status] = statuses.get(r.status, 0) + 1
        sent += 1
    used = _workers_used(before, worker_connections(env))
    assert statuses == {200: sent}, f"after the corpus, valid tokens got {statuses}"
    assert used == concurrency, f"only {used} of {concurrency} workers took a connection"

    fatal = [ln for ln in env.log_text().splitlines() if FATAL.search(ln)]
    assert not fatal, "VM failure in the Envoy log:\n" + "\n".join(fatal[:20])
    vms_after = vm_stats(env)
    print("VM stats before/after:", vms_before, vms_after)
    for name in ("wasm.envoy.wasm.runtime.v8.created", "wasm.envoy.wasm.runtime.v8.active"):
        if name in vms_before:
            assert vms_after.get(name) == vms_before[name], f"{name}: {vms_before[name]} -> {vms_after.get(name)}"
    reloads = {k: v for k, v in vms_after.items() if ".vm_reload" in k and v}
    assert not reloads, f"VMs were reloaded: {reloads}"
    assert env.running(), "Envoy exited"


def _workers_used(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(1 for w, v in after.items() if v > before.get(w, 0))
