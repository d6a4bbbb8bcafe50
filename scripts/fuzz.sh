#!/usr/bin/env bash
# Fuzzes the edge-jwt pure core with cargo-fuzz (libFuzzer) on the nightly toolchain.
#
#   scripts/fuzz.sh [--smoke] [--seconds N] [--parallel P] [--build-only] [target...]
#
#   --smoke        10 s per target (unless --seconds is given): the quick check for `make test`
#   --seconds N    fuzz each target for N seconds (default 60), libFuzzer -max_total_time
#   --parallel P   run up to P targets at once (default 1; the machine has 2 cores)
#   --build-only   install cargo-fuzz if needed, build the targets, and stop
#   target...      default: every target in fuzz/fuzz_targets/
#
# Per target it prints executions and exec/s (libFuzzer's -print_final_stats=1 line),
# the corpus size, and any crash with its reproducer. It exits non-zero if any target
# crashed, hit an oracle failure, timed out on one input or ran out of memory.
#
# Where things go (all git-ignored, so a run never dirties the tree):
#   fuzz/seeds/<target>/     committed seed corpus (read only here)
#   fuzz/corpus/<target>/    the growing corpus; new inputs are written here
#   fuzz/artifacts/<target>/ crash-*, timeout-*, oom-* reproducers (cargo-fuzz's default)
#   fuzz/artifacts/runs/<stamp>/<target>.log   full libFuzzer output
#   fuzz/artifacts/last-run.md                 the summary table of the last run
#   .tools/cargo-fuzz/bin/cargo-fuzz           project-local cargo-fuzz
#
# Environment:
#   CARGO_FUZZ_VERSION   cargo-fuzz version to install (default 0.13.2)
#   FUZZ_TOOLCHAIN       rustup toolchain (default nightly)
#   FUZZ_RSS_LIMIT_MB    libFuzzer -rss_limit_mb (default 2048)
#   FUZZ_TIMEOUT         libFuzzer -timeout: seconds one input may take (default 20)
#   EDGE_JWT_FUZZ_ALLOW  comma-separated names of known, reported oracle findings to skip
#                        (e.g. cache_overflow); see fuzz/src/lib.rs
#
# Reproduce a crash:  RUSTUP_TOOLCHAIN=nightly .tools/cargo-fuzz/bin/cargo-fuzz fuzz run TARGET FILE
# Minimize it:        RUSTUP_TOOLCHAIN=nightly .tools/cargo-fuzz/bin/cargo-fuzz fuzz tmin TARGET FILE
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'fuzz: %s\n' "$*"; }
die() { printf 'fuzz: error: %s\n' "$*" >&2; exit 2; }

seconds=""
smoke=0
parallel=1
build_only=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --smoke) smoke=1 ;;
    --seconds) [ $# -ge 2 ] || die "--seconds needs a value"; seconds="$2"; shift ;;
    --seconds=*) seconds="${1#*=}" ;;
    --parallel) [ $# -ge 2 ] || die "--parallel needs a value"; parallel="$2"; shift ;;
    --parallel=*) parallel="${1#*=}" ;;
    --build-only) build_only=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) targets+=("$1") ;;
    esac
    shift
done
if [ -z "$seconds" ]; then
    if [ "$smoke" = 1 ]; then seconds=10; else seconds=60; fi
fi
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer, got '$seconds'"
[[ "$parallel" =~ ^[1-9][0-9]*$ ]] || die "--parallel must be a positive integer, got '$parallel'"

all_targets=()
for f in fuzz/fuzz_targets/*.rs; do
    all_targets+=("$(basename "$f" .rs)")
done
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
    [ -f "fuzz/fuzz_targets/$t.rs" ] || die "no fuzz target '$t' (have: ${all_targets[*]})"
done

# rustup's cargo, never Debian's /usr/bin/cargo; native target only.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
unset CARGO_BUILD_TARGET
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
command -v rustup >/dev/null || die "rustup not found: cargo-fuzz needs rustup's $TOOLCHAIN toolchain"
rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1 ||
    die "rustup toolchain '$TOOLCHAIN' is missing (rustup toolchain install $TOOLCHAIN --profile minimal)"

CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
CARGO_FUZZ="$ROOT/.tools/cargo-fuzz/bin/cargo-fuzz"
if ! "$CARGO_FUZZ" --version 2>/dev/null | grep -x "cargo-fuzz $CARGO_FUZZ_VERSION" >/dev/null; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/cargo-fuzz"
    cargo install --root "$ROOT/.tools/cargo-fuzz" cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

cargo_fuzz() { RUSTUP_TOOLCHAIN="$TOOLCHAIN" "$CARGO_FUZZ" fuzz "$@"; }

# Build every requested target up front: parallel runs must not race on the build.
# cargo-fuzz defaults: release, debug assertions and overflow checks on, AddressSanitizer.
say "building ${targets[*]} ($(rustup run "$TOOLCHAIN" rustc --version))"
for t in "${targets[@]}"; do
    cargo_fuzz build "$t"
done
[ "$build_only" = 1 ] && exit 0

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
logdir="fuzz/artifacts/runs/$stamp"
mkdir -p "$logdir"

# Runs one target; its result goes to $logdir/<target>.result as key=value lines.
run_target() {
    local t="$1" log="$logdir/$1.log" res="$logdir/$1.result"
    local corpus="fuzz/corpus/$t" seeds="fuzz/seeds/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    local args=(
        "-max_total_time=$seconds"
        "-rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-2048}"
        "-timeout=${FUZZ_TIMEOUT:-20}"
        -print_final_stats=1
    )
    [ -f "fuzz/dict/$t.dict" ] && args+=("-dict=fuzz/dict/$t.dict")
    local dirs=("$corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")
    # One job, one worker: cargo-fuzz --jobs 1 runs libFuzzer in process. (libFuzzer's
    # own -jobs=1 -workers=1 would fork a child that logs to ./fuzz-0.log instead.)
    local start end rc=0
    start=$(date +%s)
    # -max_total_time only bounds fuzzing; the outer timeout catches a wedged process.
    timeout --kill-after=30 $((seconds + 300)) \
        env RUSTUP_TOOLCHAIN="$TOOLCHAIN" "$CARGO_FUZZ" fuzz run --jobs 1 "$t" "${dirs[@]}" -- "${args[@]}" \
        >"$log" 2>&1 || rc=$?
    end=$(date +%s)
    final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n1; }
    local artifact
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)"
    {
        echo "rc=$rc"
        echo "wall=$((end - start))"
        echo "execs=$(final_stat number_of_executed_units)"
        echo "eps=$(final_stat average_exec_per_sec)"
        echo "new=$(final_stat new_units_added)"
        echo "rss=$(final_stat peak_rss_mb)"
        echo "corpus_files=$(find "$corpus" -type f | wc -l)"
        echo "seed_files=$(find "$seeds" -type f 2>/dev/null | wc -l)"
        # libFuzzer's in-memory corpus at the end: "corp: N/SIZE".
        echo "corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -n1 | cut -d' ' -f2)"
        echo "cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)"
        echo "artifact=$artifact"
        # A Rust panic: its location line and the message after it; else libFuzzer's own words.
        local why
        why="$(grep -m1 -A1 'panicked at' "$log" | tr '\n' ' ' | cut -c1-300)"
        [ -n "$why" ] || why="$(grep -m1 -E 'ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY:' "$log" | cut -c1-300)"
        # cargo fuzz run rebuilds when src/ changed since the build step.
        [ -n "$why" ] || why="$(grep -m1 -E '^error(\[E[0-9]+\])?:' "$log" | cut -c1-300)"
        echo "why=$why"
    } >"$res"
}

say "running ${#targets[@]} target(s), ${seconds}s each, up to $parallel at a time; logs in $logdir"
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$parallel" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    say "start $t"
    run_target "$t" &
    running=$((running + 1))
done
wait || true

failed=0
summary="fuzz/artifacts/last-run.md"
{
    echo "# edge-jwt fuzz run $stamp"
    echo
    echo "$(rustup run "$TOOLCHAIN" rustc --version), $("$CARGO_FUZZ" --version | head -n1), ${seconds}s per target, up to $parallel at a time, $(nproc) CPUs."
    echo
    echo "| target | time (s) | executions | exec/s | corpus files (on disk) | libFuzzer corpus | cov | new units | peak RSS (MB) | result |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
} >"$summary"
echo
printf '%-26s %7s %12s %8s %8s %10s  %s\n' target time executions exec/s corpus rss_mb result
for t in "${targets[@]}"; do
    res="$logdir/$t.result"
    rc=1 wall=0 execs="" eps="" new="" rss="" corpus_files=0 seed_files=0 corp="" cov="" artifact="" why=""
    [ -f "$res" ] && while IFS='=' read -r k v; do printf -v "$k" '%s' "$v"; done <"$res"
    if [ "$rc" = 0 ]; then
        result=ok
    else
        failed=1
        case "$(basename "${artifact:-none}")" in
        crash-*) result="CRASH" ;;
        timeout-*) result="TIMEOUT" ;;
        oom-*) result="OOM" ;;
        slow-unit-*) result="SLOW" ;;
        *) if grep -q 'failed to build fuzz script' "$logdir/$t.log" 2>/dev/null; then
               result="BUILD FAILED"
           else
               result="FAILED (rc $rc)"
           fi ;;
        esac
    fi
    printf '%-26s %7s %12s %8s %8s %10s  %s\n' "$t" "$wall" "${execs:-?}" "${eps:-?}" "$corpus_files" "${rss:-?}" "$result"
    echo "| $t | $wall | ${execs:-?} | ${eps:-?} | $corpus_files | ${corp:-?} | ${cov:-?} | ${new:-?} | ${rss:-?} | $result |" >>"$summary"
    if [ "$rc" != 0 ]; then
        {
            echo
            echo "$t: $result"
            [ -n "$why" ] && echo "  $why"
            if [ -n "$artifact" ]; then
                echo "  reproducer: $artifact"
                echo "  reproduce:  RUSTUP_TOOLCHAIN=$TOOLCHAIN .tools/cargo-fuzz/bin/cargo-fuzz fuzz run $t $artifact"
                echo "  minimize:   RUSTUP_TOOLCHAIN=$TOOLCHAIN .tools/cargo-fuzz/bin/cargo-fuzz fuzz tmin $t $artifact"
            fi
            echo "  log:        $logdir/$t.log"
        } | tee -a "$summary.tail" >&2
    fi
done
if [ -f "$summary.tail" ]; then
    { echo; echo '```'; cat "$summary.tail"; echo '```'; } >>"$summary"
    rm -f "$summary.tail"
fi
echo
say "summary: $summary"
if [ "$failed" != 0 ]; then
    say "FAILED: a target crashed, failed an oracle, timed out or ran out of memory (see above)"
    exit 1
fi
say "all ${#targets[@]} target(s) ran ${seconds}s without a crash"
