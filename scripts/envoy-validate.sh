#!/usr/bin/env bash
# Validates Envoy bootstrap files with the project's Envoy:
#
#   scripts/envoy-validate.sh FILE...
#
# runs `envoy --mode validate -c FILE` for each FILE (paths inside FILE, such as the
# wasm filename, are relative to the current directory, as for a running Envoy).
# Prints "ok FILE" or "FAIL FILE" plus Envoy's output; exits 1 if any failed.
# ENVOY_BIN overrides the binary (default .tools/bin/envoy; scripts/setup.sh envoy
# installs it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENVOY="${ENVOY_BIN:-$ROOT/.tools/bin/envoy}"

if [ $# -eq 0 ]; then
    echo "usage: $0 FILE..." >&2
    exit 2
fi
if [ ! -x "$ENVOY" ]; then
    echo "envoy-validate: $ENVOY not found; run: bash scripts/setup.sh envoy" >&2
    exit 2
fi

failed=0
for f in "$@"; do
    if [ ! -f "$f" ]; then
        echo "FAIL $f (no such file)"
        failed=1
        continue
    fi
    # Validate mode opens no listener, but still claims a shared-memory base id;
    # a dynamic one lets it run beside other Envoys.
    if out=$("$ENVOY" --mode validate -c "$f" --use-dynamic-base-id -l warn 2>&1); then
        echo "ok $f"
    else
        echo "FAIL $f"
        printf '%s\n' "$out" | sed 's/^/  /'
        failed=1
    fi
done
exit "$failed"
