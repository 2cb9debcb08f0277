#!/usr/bin/env bash
# Bounded fuzzing, for CI: builds the fuzz targets and runs each for FUZZ_SECONDS (default 50)
# from the committed corpus, then prints the executions per target as libFuzzer counted them.
# Exits non-zero if any target crashes (a panic, a failed invariant, a timeout or running out of
# memory); the input that did it is left in fuzz/artifacts/<target>/. New corpus entries never
# go into the committed fuzz/corpus/: they go to FUZZ_CORPUS_CACHE/<target> when that is set
# (CI keeps it between runs, so each run starts where the last one got to), else to a temporary
# directory. Each run has its own seed (FUZZ_SEED, default random), printed, so that two runs
# do not walk the same inputs and a crash can be replayed with the same seed.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). The long
# run by hand: FUZZ_SECONDS=1800 fuzz/ci.sh (see RELIABILITY.md).
set -uo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-50}
targets=(config token_response socket_request)
# No sanitizer: the code these targets reach is safe Rust (tokend's one `unsafe` block is the
# SO_PEERGROUPS call, which a socketpair caller named by the target does not reach); what is
# hunted is panics, overflows (debug assertions are on) and broken invariants. It doubles the
# executions per second and halves the build.
fuzz=(cargo +nightly fuzz)
opts=(--sanitizer none)
# FUZZ_TARGET_DIR: where the build goes, so that CI on a clean checkout reuses the last one.
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
    opts+=(--target-dir "$FUZZ_TARGET_DIR")
fi

start=$(date +%s)
if ! "${fuzz[@]}" build "${opts[@]}"; then
    echo "fuzz: the targets do not build" >&2
    exit 1
fi
echo "fuzz: built in $(($(date +%s) - start))s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seed=${FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "fuzz: seed $seed (FUZZ_SEED=$seed runs with it again)"
kept=${FUZZ_CORPUS_CACHE:-$work/new}
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$kept/$t"
    before=$(ls "$kept/$t" | wc -l)
    # The first corpus directory receives new entries; the committed one is only read. stdin
    # from /dev/null: a config naming /dev/stdin as a template must not wait for a terminal.
    "${fuzz[@]}" run "${opts[@]}" "$t" "$kept/$t" "corpus/$t" -- \
        -seed="$seed" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        </dev/null >"$work/$t.log" 2>&1
    status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$')
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -1 | grep -o '[0-9]*$')
    added=$(($(ls "$kept/$t" | wc -l) - before))
    if [ -n "${FUZZ_CORPUS_CACHE:-}" ]; then
        where="kept in $kept/$t, $(ls "$kept/$t" | wc -l) there"
    else
        where="not kept"
    fi
    echo "fuzz: $t: ${execs:-?} executions in ${seconds}s (${rate:-?}/s), coverage ${cov:-?}, new corpus entries $added ($where), exit $status"
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        echo "--- $t: libFuzzer output (tail)" >&2
        tail -n 60 "$work/$t.log" >&2
        ls -1 "artifacts/$t" >&2 2>/dev/null
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with cargo +nightly fuzz run --sanitizer none TARGET FILE)" >&2
    exit 1
fi
echo "fuzz: ok, no crash in $((${#targets[@]} * seconds))s of fuzzing"
