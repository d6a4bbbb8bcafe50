#!/usr/bin/env bash
# edge-jwt soak test under faults: sustained load for a bounded time while the JWKS
# server rotates keys, goes down, serves garbage and comes back (issue 5).
# This wrapper finds the tools, then runs scripts/soak.py.
#
#   scripts/soak.sh --duration 20     brief run (what CI runs, tests/e2e/test_soak_brief.py)
#   scripts/soak.sh --duration 300    long run (5 min); --duration 600 for 10 min
#   scripts/soak.sh --help            all options
#
# Results: bench-results/soak/<timestamp>.{md,json}, bench-results/soak/latest.{md,json},
# and bench-results/soak/<timestamp>/ (Envoy bootstrap and log). Exit status: 0 all rules
# held, 1 a rule was broken (the report says which, with evidence), 2 the run could not
# be set up.
#
# Environment (relative paths are relative to the current directory):
#   ENVOY_BIN       Envoy 1.40        default .tools/bin/envoy
#   EDGE_JWT_WASM   the filter        default target/edge_jwt.wasm
#   PYTHON          interpreter       default .tools/venv/bin/python (needs `cryptography`)
#   WRK             side load         default: wrk on PATH (--wrk-connections 0 to go without)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

: "${ENVOY_BIN:=$ROOT/.tools/bin/envoy}"
: "${EDGE_JWT_WASM:=$ROOT/target/edge_jwt.wasm}"
: "${PYTHON:=$ROOT/.tools/venv/bin/python}"
export ENVOY_BIN EDGE_JWT_WASM

if [ ! -x "$PYTHON" ]; then
    echo "soak: Python not found at $PYTHON (run scripts/setup.sh python, or set PYTHON)" >&2
    exit 2
fi
exec "$PYTHON" "$ROOT/scripts/soak.py" "$@"
