#!/usr/bin/env bash
# Builds the edge-jwt filter (wasm32-wasip1, release) and the example issuer (native).
#
#   scripts/build.sh [EXTRA CARGO ARGS...]   build; the extra args go to the wasm build
#   scripts/build.sh --clippy [ARGS...]      clippy on the filter crate for the wasm
#                                            target (the filter glue only compiles there);
#                                            ARGS go after `--` to clippy
#
# Environment:
#   EDGE_JWT_FEATURES   features of the wasm build. A plain list ("compact") replaces the
#                       defaults: --no-default-features --features LIST. A value starting
#                       with "-" is passed to cargo as is
#                       ("--no-default-features --features compact").
#   EDGE_JWT_WASM_OUT   where to copy the .wasm (default target/edge_jwt.wasm; a
#                       relative path is relative to the current directory)
#   EDGE_JWT_WASM_TOOLCHAIN=auto|rustup|debian   passed to scripts/setup.sh
#
# The toolchain comes from scripts/setup.sh (step "toolchain"), recorded in
# .tools/toolchain.env: rustup's wasm32-wasip1 target (cargo target dir target/) or
# Debian's rustc-web with -Zbuild-std (target dir target/debian-wasm).
set -euo pipefail

CALLER_PWD="$PWD"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'build: %s\n' "$*"; }

mode=build
if [ "${1:-}" = "--clippy" ]; then
    mode=clippy
    shift
fi

bash "$ROOT/scripts/setup.sh" toolchain
# shellcheck source=/dev/null
. "$ROOT/.tools/toolchain.env"

feature_args=()
if [ -n "${EDGE_JWT_FEATURES:-}" ]; then
    case "$EDGE_JWT_FEATURES" in
    -*) read -r -a feature_args <<<"$EDGE_JWT_FEATURES" ;;
    *) feature_args=(--no-default-features --features "$EDGE_JWT_FEATURES") ;;
    esac
fi

# Runs the wasm toolchain's cargo with its environment. RUSTFLAGS is set exactly
# (not appended to) so that it is the same on every run: a change of RUSTFLAGS
# makes cargo rebuild std.
wasm_cargo() {
    if [ "$EDGE_JWT_TOOLCHAIN" = debian ]; then
        env -u CARGO_ENCODED_RUSTFLAGS -u RUSTUP_TOOLCHAIN \
            CARGO="$WASM_CARGO" RUSTC="$WASM_RUSTC" RUSTDOC=/usr/bin/rustdoc \
            RUSTC_BOOTSTRAP="$WASM_RUSTC_BOOTSTRAP" RUSTFLAGS="$WASM_RUSTFLAGS" \
            CARGO_TARGET_DIR="$ROOT/$WASM_TARGET_DIR" \
            "$@"
    else
        CARGO_TARGET_DIR="$ROOT/$WASM_TARGET_DIR" "$@"
    fi
}
build_std=()
[ -z "$WASM_BUILD_STD" ] || build_std=("$WASM_BUILD_STD")

if [ "$mode" = clippy ]; then
    if [ "$EDGE_JWT_TOOLCHAIN" = debian ]; then
        # cargo-clippy runs $CARGO with clippy-driver from its own directory.
        clippy=("$WASM_CLIPPY" clippy)
    else
        clippy=("$WASM_CARGO" clippy)
    fi
    say "clippy ($EDGE_JWT_TOOLCHAIN, $WASM_TARGET) on edge-jwt"
    wasm_cargo "${clippy[@]}" --release --target "$WASM_TARGET" "${build_std[@]}" \
        -p edge-jwt --lib "${feature_args[@]}" -- "$@"
    exit 0
fi

out="${EDGE_JWT_WASM_OUT:-$ROOT/target/edge_jwt.wasm}"
case "$out" in /*) ;; *) out="$CALLER_PWD/$out" ;; esac

say "wasm ($EDGE_JWT_TOOLCHAIN toolchain${EDGE_JWT_FEATURES:+, features: $EDGE_JWT_FEATURES})"
start=$(date +%s)
wasm_cargo "$WASM_CARGO" build --release --target "$WASM_TARGET" "${build_std[@]}" \
    -p edge-jwt --lib "${feature_args[@]}" "$@"
built="$ROOT/$WASM_TARGET_DIR/$WASM_TARGET/release/edge_jwt.wasm"
[ -f "$built" ] || { echo "build: error: $built not produced" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
cp -f "$built" "$out.tmp"
mv -f "$out.tmp" "$out"
size=$(stat -c %s "$out")
say "wasm: ${out#"$ROOT"/} $size bytes ($(( (size + 1023) / 1024 )) KiB) in $(( $(date +%s) - start ))s"

say "issuer (native)"
env -u CARGO_TARGET_DIR "$NATIVE_CARGO" build --release -p edge-jwt-issuer
say "issuer: target/release/edge-jwt-issuer"
