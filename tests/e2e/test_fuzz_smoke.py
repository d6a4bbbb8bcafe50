"""Fuzz smoke: each cargo-fuzz target runs briefly over its committed seeds.

Runs `scripts/fuzz.sh --smoke TARGET` (10 s per target; FUZZ_SMOKE_SECONDS overrides),
which replays fuzz/seeds/TARGET first, so every seed is also a regression test of the
oracles. Like the rest of the e2e suite this FAILS, never skips, when a tool is missing
(rustup's nightly toolchain; cargo-fuzz is installed into .tools/cargo-fuzz on first use).

Known, reported findings can be let through while they are open with
EDGE_JWT_FUZZ_ALLOW=name[,name...] (see fuzz/README.md); it is passed on unchanged.
"""
from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "fuzz"
TARGETS = sorted(p.stem for p in (FUZZ / "fuzz_targets").glob("*.rs"))
SECONDS = int(os.environ.get("FUZZ_SMOKE_SECONDS", "10"))


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def test_fuzz_crate_stands_alone():
    """fuzz/ is its own workspace and not a member of the root one."""
    fuzz_manifest = tomllib.loads((FUZZ / "Cargo.toml").read_text())
    assert "workspace" in fuzz_manifest, "fuzz/Cargo.toml needs an empty [workspace] table"
    assert fuzz_manifest["package"]["metadata"]["cargo-fuzz"] is True
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    members = root.get("workspace", {}).get("members", [])
    assert not any(m.rstrip("/") == "fuzz" or m.startswith("fuzz/") for m in members), members
    bins = {b["name"] for b in fuzz_manifest.get("bin", [])}
    assert bins == set(TARGETS), "every fuzz_targets/*.rs needs its [[bin]] and vice versa"
    for t in TARGETS:
        assert any((FUZZ / "seeds" / t).iterdir()), f"fuzz/seeds/{t} is empty"


@pytest.fixture(scope="module")
def fuzz_built():
    """Installs cargo-fuzz if needed and builds every target once (slow the first time)."""
    r = subprocess.run(["bash", "scripts/fuzz.sh", "--build-only"], cwd=REPO,
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        pytest.fail(f"scripts/fuzz.sh --build-only failed (rc {r.returncode}):\n"
                    f"{_tail(r.stdout + r.stderr)}", pytrace=False)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_smoke(fuzz_built, target):
    r = subprocess.run(["bash", "scripts/fuzz.sh", "--smoke", "--seconds", str(SECONDS), target],
                       cwd=REPO, capture_output=True, text=True, timeout=SECONDS + 900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"fuzz smoke of {target} failed (rc {r.returncode}):\n{_tail(out)}"
    # The summary row: target, time, executions, exec/s, corpus, rss, result.
    row = re.search(rf"^{re.escape(target)}\s+\d+\s+(\d+)\s+\d+\s+(\d+)\s+\S+\s+ok$", r.stdout, re.M)
    assert row, f"no result row for {target}:\n{_tail(out)}"
    assert int(row.group(1)) > 0, f"{target} executed nothing"
