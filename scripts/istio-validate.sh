#!/usr/bin/env bash
# Validates Istio manifests against Istio's published CRD schemas and TypeScript types.
#
#   scripts/istio-validate.sh [--json] [FILE.yaml...]     default: examples/istio/*.yaml
#
# Installs its npm packages (scripts/istio-validate/package-lock.json:
# @kubernetes-models/istio 3.0.1 = Istio 1.29.2 CRDs, typescript 5.9.3, yaml 2.9.1)
# into .tools/istio-validate on first use with `npm ci` (needs node + npm and the npm
# registry once; offline afterwards), then runs scripts/istio-validate/validate.mjs.
# Exit: 0 all valid, 1 a manifest is invalid, 2 usage/installation problem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/scripts/istio-validate"
DEPS="${EDGE_JWT_ISTIO_VALIDATE_DIR:-$ROOT/.tools/istio-validate}"

command -v node >/dev/null 2>&1 || { echo "istio-validate: node not found (apt-get install nodejs npm)" >&2; exit 2; }
command -v npm >/dev/null 2>&1 || { echo "istio-validate: npm not found (apt-get install npm)" >&2; exit 2; }

want="$(cat "$SRC/package.json" "$SRC/package-lock.json" | sha256sum | cut -d' ' -f1)"
stamp="$DEPS/.edge-jwt-stamp"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -d "$DEPS/node_modules/@kubernetes-models/istio" ]; then
    mkdir -p "$DEPS"
    (
        # One install at a time (parallel test runs).
        if command -v flock >/dev/null 2>&1; then exec 9>"$DEPS/.lock"; flock 9; fi
        if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
            cp "$SRC/package.json" "$SRC/package-lock.json" "$DEPS/"
            echo "istio-validate: installing npm packages into ${DEPS#"$ROOT"/}" >&2
            (cd "$DEPS" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
            echo "$want" >"$stamp"
        fi
    )
fi

if [ $# -eq 0 ] || { [ $# -eq 1 ] && [ "$1" = --json ]; }; then
    set -- "$@" "$ROOT"/examples/istio/*.yaml
fi
exec node "$SRC/validate.mjs" --deps "$DEPS" "$@"
