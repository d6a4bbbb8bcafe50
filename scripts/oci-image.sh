#!/usr/bin/env bash
# Builds the edge-jwt OCI image (Istio Wasm "compat" variant: one tar+gzip layer holding
# plugin.wasm) as an OCI image layout plus an oci-archive tar, without Docker.
#
#   scripts/oci-image.sh [OUT_DIR]        default OUT_DIR: target/oci
#
#   --wasm FILE   the filter to package (default $EDGE_JWT_WASM or target/edge_jwt.wasm)
#   --tag TAG     image tag (default: the crate version from Cargo.toml)
#
# Output: OUT_DIR/edge-jwt/ (layout) and OUT_DIR/edge-jwt-<tag>.oci.tar; prints the
# manifest digest. Push with skopeo, crane or oras (examples/istio/README.md).
# Reproducible: set SOURCE_DATE_EPOCH to stamp a creation time, else none is written.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${EDGE_JWT_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.tools/venv/bin/python" ]; then PY="$ROOT/.tools/venv/bin/python"; else PY=python3; fi
fi
exec "$PY" "$ROOT/scripts/oci_image.py" "$@"
