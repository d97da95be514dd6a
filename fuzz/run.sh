#!/usr/bin/env bash
# Runs the fuzz targets one after the other.
#
#   fuzz/run.sh SECONDS [TARGET]
#
# Every [[bin]] of fuzz/Cargo.toml, in order (or only TARGET), for SECONDS each, with the
# working corpus fuzz/corpus/<target> (kept between runs, not committed) and the committed
# seeds fuzz/seeds/<target>. RUNS=N also stops each target after N executions. Extra
# libFuzzer flags can be given in FUZZ_ARGS. Prints one summary line per target and exits
# non-zero when any target crashed (reproducers land in fuzz/artifacts/<target>/).
set -uo pipefail

if [[ $# -lt 1 || $# -gt 2 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET]   (env: RUNS=N, FUZZ_ARGS=...)" >&2
    exit 2
fi
seconds=$1
only=${2:-}
fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$fuzz_dir/.." || exit 2

mapfile -t targets < <(awk '/^\[\[bin\]\]/ { bin = 1; next } bin && /^name *=/ { gsub(/[" ]/, "", $0); sub(/^name=/, "", $0); print; bin = 0 }' "$fuzz_dir/Cargo.toml")
if [[ -n $only ]]; then
    if ! printf '%s\n' "${targets[@]}" | grep -qx -- "$only"; then
        echo "unknown target $only; targets: ${targets[*]}" >&2
        exit 2
    fi
    targets=("$only")
fi

logs=$fuzz_dir/artifacts/logs
mkdir -p "$logs"
summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "$fuzz_dir/corpus/$t" "$fuzz_dir/seeds/$t" "$fuzz_dir/artifacts/$t"
    before=$(find "$fuzz_dir/artifacts/$t" -type f | wc -l)
    flags=(-max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1)
    [[ -n ${RUNS:-} ]] && flags+=(-runs="$RUNS")
    # shellcheck disable=SC2206 # FUZZ_ARGS is a list of flags
    [[ -n ${FUZZ_ARGS:-} ]] && flags+=(${FUZZ_ARGS})
    log=$logs/$t.log
    echo "== $t: ${flags[*]} (log $log)"
    start=$(date +%s)
    cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" "$t" \
        "$fuzz_dir/corpus/$t" "$fuzz_dir/seeds/$t" -- "${flags[@]}" >"$log" 2>&1
    status=$?
    elapsed=$(($(date +%s) - start))
    after=$(find "$fuzz_dir/artifacts/$t" -type f | wc -l)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    corpus=$(find "$fuzz_dir/corpus/$t" -type f | wc -l)
    if grep -aq "failed to build fuzz script" "$log"; then
        failed=1
        crash="BUILD FAILED (see $log)"
    elif [[ $status -ne 0 || $after -gt $before ]]; then
        failed=1
        crash="CRASH (exit $status, $((after - before)) new artifact(s); see $log)"
    else
        crash="no crash"
    fi
    line="$t: ${execs:-?} executions in ${secs:-?}s of fuzzing, ${elapsed}s with the build (${rate:-?} exec/s), corpus $corpus files, $crash"
    echo "$line"
    summary+=("$line")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
