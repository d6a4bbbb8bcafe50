#!/usr/bin/env bash
# The edge-jwt demo: build, then run the issuer, an echo upstream and Envoy with
# envoy/edge-jwt.yaml on loopback, check a table of requests, and stay up for curl.
#
#   scripts/demo.sh            (make demo)   checks, then ready-to-paste curl commands; Ctrl-C stops
#   scripts/demo.sh --once                   checks, stop; exit 1 if any check is wrong
#
# Environment (all optional):
#   ENVOY_BIN        Envoy 1.40           default .tools/bin/envoy        (scripts/setup.sh envoy)
#   EDGE_JWT_WASM    the filter           default target/edge_jwt.wasm    (scripts/build.sh)
#   EDGE_JWT_ISSUER  the issuer binary    default target/release/edge-jwt-issuer
#   PYTHON           interpreter with PyYAML, default .tools/venv/bin/python (scripts/setup.sh python)
#   EDGE_JWT_SKIP_BUILD=1   use the binaries as they are, do not run scripts/build.sh
#
# State (issuer keys, generated Envoy config, logs) goes to demo-state/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'demo: %s\n' "$*"; }

if [ "${EDGE_JWT_SKIP_BUILD:-0}" != 1 ]; then
    say "building (scripts/build.sh)"
    bash "$ROOT/scripts/build.sh"
else
    say "EDGE_JWT_SKIP_BUILD=1: not building"
fi

# Envoy and the venv come from setup.sh unless the caller points elsewhere.
steps=()
[ -n "${ENVOY_BIN:-}" ] || steps+=(envoy)
[ -n "${PYTHON:-}" ] || steps+=(python)
if [ ${#steps[@]} -gt 0 ]; then
    bash "$ROOT/scripts/setup.sh" "${steps[@]}"
fi

PYTHON="${PYTHON:-$ROOT/.tools/venv/bin/python}"
[ -x "$PYTHON" ] || { echo "demo: error: no python at $PYTHON (run scripts/setup.sh python or set PYTHON)" >&2; exit 1; }

# exec: demo.py gets Ctrl-C / SIGTERM itself and stops every process it started.
exec "$PYTHON" "$ROOT/scripts/demo.py" "$@"
