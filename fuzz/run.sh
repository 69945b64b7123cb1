#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 20), from the seeds in
# fuzz/seeds (cases found go to fuzz/corpus, which git ignores). cargo fuzz
# needs nightly features: RUSTC_BOOTSTRAP lets this stable toolchain use them.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(config pillar key_line circus_ini ctl_request dotenv)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null 2>&1 || cargo fuzz build -O
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzzing $t for ${secs}s"
    cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -timeout=10 2>&1 | grep -E "^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY|Done [0-9]+ runs)" || true
    if [ -n "$(ls artifacts/"$t" 2>/dev/null)" ]; then
        echo "fuzz target $t found a crash: fuzz/artifacts/$t" >&2
        exit 1
    fi
done
