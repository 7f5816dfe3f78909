#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after another.
#
#   bash fuzz/run.sh SECONDS [TARGET...]      # CI: bash fuzz/run.sh 30
#
# Each target starts from its committed seed corpus (fuzz/corpus/<target>/,
# copied into the ignored working corpus fuzz/corpus-work/<target>/, which
# also keeps what earlier runs found) and runs at low priority, one process,
# one job. Prints one line per target with its executions; exits non-zero if
# any target crashed, leaked, timed out or ran out of memory, printing the
# artifact to reproduce it with:
#   cargo +nightly fuzz run -O -a TARGET fuzz/artifacts/TARGET/crash-…
# Set FUZZ_NICE=0 to run at normal priority.
set -euo pipefail

usage="usage: bash fuzz/run.sh SECONDS [TARGET...]"
secs="${1:?$usage}"
shift
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nice_cmd=(nice -n "${FUZZ_NICE:-19}")

# cargo-fuzz needs nightly's -Z flags. Where no nightly can be installed,
# the stable toolchain (which ships the sanitizer runtimes) accepts them with
# RUSTC_BOOTSTRAP=1.
cargo_cmd=(cargo +nightly)
if ! rustup toolchain list | grep -q nightly; then
    if ! rustup toolchain install nightly --profile minimal; then
        echo "fuzz/run.sh: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1" >&2
        cargo_cmd=(cargo)
        export RUSTC_BOOTSTRAP=1
    fi
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cd "$fuzz_dir" && "${cargo_cmd[@]}" fuzz list)
fi

# -O -a: optimised, with debug assertions and overflow checks (cargo-fuzz's
# own default); AddressSanitizer is on by default.
(cd "$fuzz_dir" && "${nice_cmd[@]}" "${cargo_cmd[@]}" fuzz build -O -a)

failed=0
summary=()
for t in "${targets[@]}"; do
    seeds="$fuzz_dir/corpus/$t"
    work="$fuzz_dir/corpus-work/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    logs="$fuzz_dir/corpus-work/logs/$t"
    mkdir -p "$work" "$artifacts" "$logs"
    if [[ -d "$seeds" ]]; then
        cp -n "$seeds"/* "$work"/ 2>/dev/null || true
    fi
    rm -f "$logs"/fuzz-*.log
    before="$(ls -A "$artifacts")"

    echo "=== $t: ${secs}s"
    # With -jobs=1 libFuzzer runs the fuzzing in one child process that logs
    # to fuzz-0.log in the working directory; run from the log directory.
    rc=0
    (cd "$logs" && "${nice_cmd[@]}" "${cargo_cmd[@]}" fuzz run --fuzz-dir "$fuzz_dir" -O -a "$t" "$work" -- \
        -max_total_time="$secs" -jobs=1 -workers=1 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$logs/run.log" 2>&1) || rc=$?

    log="$logs/fuzz-0.log"
    [[ -f "$log" ]] || log="$logs/run.log"
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
    new_artifacts="$(comm -13 <(echo "$before") <(ls -A "$artifacts"))"
    if ((rc != 0)) || [[ -n "$new_artifacts" ]] || grep -qE '^==[0-9]+==ERROR|panicked at|deadly signal' "$log"; then
        failed=1
        tail -n 60 "$log" >&2
        paths="$(grep -o 'Test unit written to [^ ]*' "$log" | sed 's/Test unit written to //' | sort -u | tr '\n' ' ')"
        for a in $new_artifacts; do
            [[ "$paths" == *"$a"* ]] || paths+="$artifacts/$a "
        done
        summary+=("$t: FAILED after ${execs:-?} executions (exit $rc); artifact: ${paths:-none written, see $log}")
    else
        summary+=("$t: ok, ${execs:-?} executions in ${secs}s")
    fi
done

echo "=== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
