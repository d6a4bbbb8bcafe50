"""Smoke test of the benchmark: `scripts/bench.sh --quick` runs end to end (every setup,
workload and concurrency, plus memory, start-up and half-saturation sections) and writes
its report. Checks that figures are there and positive, never how fast anything is."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.mdtable import table
from harness.envoy import REPO

SETUPS = ["passthrough", "jwt_authn_nocache", "jwt_authn_cache", "edge-jwt_nocache", "edge-jwt"]
WORKLOADS = ["repeated", "distinct", "mixed"]
CONCURRENCY = ["1", "2"]


_table = table


def _num(cell: str) -> float:
    return float(cell.replace(",", "").replace("×", "").replace("%", "").split()[0])


@pytest.fixture(scope="module")
def bench_out(envoy_bin, wasm_path, issuer_bin, tmp_path_factory):
    missing = [t for t in ("wrk", "h2load") if not shutil.which(t)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install the load generators (scripts/setup.sh loadgen)",
                    pytrace=False)
    out = tmp_path_factory.mktemp("bench") / "bench-results"  # never the repo's bench-results/latest.md
    env = dict(os.environ, ENVOY_BIN=str(envoy_bin), EDGE_JWT_WASM=str(wasm_path),
               EDGE_JWT_ISSUER=str(issuer_bin), PYTHON=sys.executable)
    p = subprocess.run(["bash", str(REPO / "scripts" / "bench.sh"), "--quick", "--out", str(out)],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       text=True, timeout=300)
    assert p.returncode == 0, f"bench.sh --quick exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-6000:]}"
    return out


def test_report_files_exist(bench_out):
    runs = [d for d in bench_out.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(runs) == 1, runs
    for f in ("results.md", "results.json"):
        assert (runs[0] / f).is_file(), f
    assert (bench_out / "latest.md").is_file()
    assert (bench_out / "latest.json").is_file()
    latest = (bench_out / "latest.md").read_text()
    if importlib.util.find_spec("matplotlib"):
        assert (bench_out / "latest.png").stat().st_size > 0
        assert (runs[0] / "results.png").stat().st_size > 0
    else:
        assert "matplotlib is not installed" in latest
    assert (runs[0] / "results.md").read_text().count("| workload | concurrency | setup |") == 1


@pytest.mark.parametrize("name", ["latest.md", "results.md"])
def test_a_row_per_setup_workload_and_concurrency(bench_out, name):
    path = bench_out / name if name == "latest.md" else next(
        d for d in bench_out.iterdir() if d.is_dir() and not d.name.startswith(".")) / name
    rows = _table(path.read_text(), "workload")
    seen = {(r["workload"], r["concurrency"], r["setup"]) for r in rows}
    want = {(w, c, s) for w in WORKLOADS for c in CONCURRENCY for s in SETUPS}
    assert want <= seen, f"missing rows: {sorted(want - seen)}"
    for r in rows:
        for col in ("req/s", "p50 ms", "p99 ms", "Envoy CPU µs/req", "RSS MiB", "vs passthrough"):
            assert _num(r[col]) > 0, (col, r)


def test_status_codes_match_the_workload(bench_out):
    """Valid tokens get 200 everywhere; tampered tokens (mixed) get 401 from every auth setup."""
    rows = _table((bench_out / "latest.md").read_text(), "workload")
    for r in rows:
        non2xx = _num(r["non-2xx"])
        if r["workload"] == "mixed" and r["setup"] != "passthrough":
            assert non2xx > 0, r
        else:
            assert non2xx == 0, r


def test_cache_setups_cache_and_nocache_setups_do_not(bench_out):
    """The setups are configured as named: one repeated token is a cache hit after the first
    request on each worker in the *_cache setups and edge-jwt; the nocache setups count no hits."""
    rows = _table((bench_out / "latest.md").read_text(), "workload")
    for r in rows:
        if r["workload"] != "repeated":
            continue
        if r["setup"] in ("jwt_authn_cache", "edge-jwt"):
            assert _num(r["cache hits"]) >= 90, r
        elif r["setup"] != "passthrough":
            assert r["cache hits"] in ("–", "0%"), r


def test_json_summary_and_extra_sections(bench_out):
    data = json.loads((bench_out / "latest.json").read_text())
    assert {s["setup"] for s in data["summary"]} == set(SETUPS)
    assert all(s["rps"] > 0 for s in data["summary"])
    assert data["meta"]["wasm"]["bytes"] > 0
    md = (bench_out / "latest.md").read_text()

    mem = _table(md, "concurrency")  # the memory table is the first one led by concurrency
    assert {r["setup"] for r in mem} == set(SETUPS)
    assert all(_num(r["RSS after load MiB"]) > 0 for r in mem)

    start = _table(md, "setup")
    labels = {r["setup"] for r in start}
    assert {"edge-jwt (local_jwks)", "edge-jwt (remote_jwks)", "jwt_authn_nocache (local_jwks)"} <= labels
    assert all(_num(r["first 200 ms"]) > 0 for r in start)

    half = [r for r in _table(md[md.index("## p99 at half"):], "concurrency")]
    assert {"passthrough", "edge-jwt"} <= {r["setup"] for r in half}
    assert all(_num(r["p99 ms"]) > 0 and _num(r["achieved req/s"]) > 0 for r in half)
