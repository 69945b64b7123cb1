#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 20), from the seeds in
# fuzz/seeds (cases found go to fuzz/corpus, which git ignores). cargo fuzz
# needs nightly features: RUSTC_BOOTSTRAP lets this stable toolchain use them.
#   fuzz/run.sh [SECONDS] [TARGET...]
# Targets run MC_FUZZ_JOBS at a time (default: the number of CPUs), each on
# one core for its full SECONDS of wall time: the same fuzzing per target as
# one after another, in less wall time (libFuzzer's -max_total_time is
# wall-clock and a target is single-threaded).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(config pillar key_line circus_ini ctl_request dotenv)
jobs=${MC_FUZZ_JOBS:-$(nproc)}
[ "$jobs" -ge 1 ] || jobs=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null 2>&1 || cargo fuzz build -O
logs=$(mktemp -d "${TMPDIR:-/tmp}/mc-launcher-fuzz.XXXXXX")
trap 'rm -rf "$logs"' EXIT
fuzz_one() {
    cargo fuzz run -O "$1" "corpus/$1" "seeds/$1" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -timeout=10 2>&1 | grep -E "^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY|Done [0-9]+ runs)" || true
}
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
    batch=("${targets[@]:i:jobs}")
    for t in "${batch[@]}"; do
        mkdir -p "corpus/$t"
        echo "== fuzzing $t for ${secs}s"
        fuzz_one "$t" >"$logs/$t" &
    done
    wait
    for t in "${batch[@]}"; do
        echo "-- $t"
        cat "$logs/$t"
        if [ -n "$(ls artifacts/"$t" 2>/dev/null)" ]; then
            echo "fuzz target $t found a crash: fuzz/artifacts/$t" >&2
            exit 1
        fi
    done
done
