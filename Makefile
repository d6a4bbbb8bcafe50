# edge-jwt: build, test, demo, bench.
#
#   make setup   install the toolchain, Envoy, the test venv, wrk/h2load (scripts/setup.sh)
#   make build   target/edge_jwt.wasm + target/release/edge-jwt-issuer (scripts/build.sh)
#   make test    build, then unit tests, clippy, e2e (what CI runs)
#   make demo    scripts/demo.sh $(ARGS)
#   make bench   scripts/bench.sh $(ARGS)
#   make clean   cargo clean (keeps .tools)
#
# Parts of `make test`: unit, clippy, e2e. E2E=path selects the e2e tests.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
# Steps share cargo's lock and print a lot: run them one at a time, in order.
.NOTPARALLEL:

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
# The native (rustup) cargo, never Debian's /usr/bin/cargo that the wasm fallback installs.
NATIVE_CARGO := $(shell c="$${CARGO_HOME:-$$HOME/.cargo}/bin/cargo"; if [ -x "$$c" ]; then echo "$$c"; else command -v cargo; fi)
PYTEST := $(ROOT)/.tools/venv/bin/pytest
E2E ?= tests/e2e
ARGS ?=
# Extra arguments for clippy after `--`, e.g. CLIPPY_ARGS="-D warnings".
# By default the lint levels are the ones set in Cargo.toml [lints] and in src/.
CLIPPY_ARGS ?=

.PHONY: setup tools build wasm test unit clippy e2e demo bench clean distclean

setup:
	bash scripts/setup.sh

tools: setup

build:
	bash scripts/build.sh

wasm: build

test: setup build unit clippy e2e

# Native unit tests: host target only (the wasm-only filter glue is cfg'd out).
unit:
	env -u CARGO_BUILD_TARGET $(NATIVE_CARGO) test --workspace

# Clippy on the filter crate, natively (the core, tests) and for wasm32-wasip1 (the
# proxy-wasm glue, which only compiles there).
clippy:
	env -u CARGO_BUILD_TARGET $(NATIVE_CARGO) clippy -p edge-jwt --all-targets -- $(CLIPPY_ARGS)
	bash scripts/build.sh --clippy $(CLIPPY_ARGS)

e2e: setup build
	@test -e "$(firstword $(E2E))" || { echo "e2e: $(E2E) not found" >&2; exit 1; }
	$(PYTEST) -q $(E2E)

demo: build
	bash scripts/demo.sh $(ARGS)

bench: build
	@test -f scripts/bench.sh || { echo "bench: scripts/bench.sh not written yet" >&2; exit 1; }
	bash scripts/bench.sh $(ARGS)

clean:
	$(NATIVE_CARGO) clean

# Also drops .tools (Envoy, venv, toolchain choice); the next setup reinstalls.
distclean: clean
	rm -rf .tools
