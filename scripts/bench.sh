#!/usr/bin/env bash
# edge-jwt benchmark: edge-jwt next to Envoy's native jwt_authn in the same Envoy
# binary. This wrapper finds the tools, then runs scripts/bench.py.
#
#   scripts/bench.sh                 throughput/latency matrix + memory, start-up time,
#                                    p99 at half of saturation (10 s runs, 3 rounds)
#   scripts/bench.sh --quick         the same, 1 s runs, 1 round, fewer tokens (smoke)
#   scripts/bench.sh --ed25519       only the Ed25519 library comparison (builds the
#                                    dalek and compact variants of the filter)
#   scripts/bench.sh --all           everything
#   scripts/bench.sh --help          all options
#
# Results: bench-results/<timestamp>/results.{md,json,png}, bench-results/latest.{md,json,png}
# (bench-results/latest-ed25519.md for the library comparison).
#
# Environment (relative paths are relative to the current directory):
#   ENVOY_BIN         Envoy 1.40               default .tools/bin/envoy
#   EDGE_JWT_WASM     the filter               default target/edge_jwt.wasm
#   EDGE_JWT_ISSUER   edge-jwt-issuer binary   default target/release/edge-jwt-issuer
#   PYTHON            interpreter              default .tools/venv/bin/python
#   WRK, H2LOAD       load generators          default: wrk, h2load on PATH
#   EDGE_JWT_DALEK_WASM, EDGE_JWT_COMPACT_WASM  --ed25519: use these builds instead of
#                     building both variants into bench-results/.build/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

: "${ENVOY_BIN:=$ROOT/.tools/bin/envoy}"
: "${EDGE_JWT_WASM:=$ROOT/target/edge_jwt.wasm}"
: "${EDGE_JWT_ISSUER:=$ROOT/target/release/edge-jwt-issuer}"
: "${PYTHON:=$ROOT/.tools/venv/bin/python}"
export ENVOY_BIN EDGE_JWT_WASM EDGE_JWT_ISSUER

# The wasm toolchain scripts/setup.sh picked (only --ed25519 builds anything).
# Read in a subshell and passed on as BENCH_<name>, so nothing else leaks in.
if [ -f "$ROOT/.tools/toolchain.env" ]; then
    while IFS= read -r -d '' kv; do
        export "${kv?}"
    done < <(
        # shellcheck source=/dev/null
        . "$ROOT/.tools/toolchain.env"
        for v in EDGE_JWT_TOOLCHAIN WASM_CARGO WASM_RUSTC WASM_RUSTFLAGS WASM_BUILD_STD \
            WASM_RUSTC_BOOTSTRAP WASM_TARGET; do
            printf '%s=%s\0' "BENCH_$v" "${!v-}"
        done
    )
fi

if [ ! -x "$PYTHON" ]; then
    echo "bench: Python not found at $PYTHON (run scripts/setup.sh python, or set PYTHON)" >&2
    exit 2
fi
exec "$PYTHON" "$ROOT/scripts/bench.py" "$@"
