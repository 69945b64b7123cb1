#!/usr/bin/env bash
# The whole test suite, as README.rst documents it and .ci/run calls it.
# It installs what the tests need on a fresh machine first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== setting up the test environment"
bash scripts/setup-test-env.sh

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy"
cargo clippy --all-targets --features fault-injection -- -D warnings

echo "== static binaries (scripts/build-static.sh)"
# The release artifact (the Docker tests put it into their images) and its
# fault-injection variant (for the second integration run below).
MC_STATIC_BIN=$(bash scripts/build-static.sh)
static_fi=$(bash scripts/build-static.sh --fault-injection)
export MC_STATIC_BIN

echo "== release binaries (scripts/release.sh's other arches)"
# tests/release.rs runs scripts/release.sh, whose x86_64 binary is the one
# above; its aarch64 and armv7 ones are built here, once (cached like the
# others).
time bash scripts/build-static.sh --target aarch64 >/dev/null
time bash scripts/build-static.sh --target armv7 >/dev/null

# The tests and the fuzz targets get a temp dir of their own (TMPDIR), and
# what they make in /tmp by name (mcl-*, mc-launcher-*) is listed before
# and after: the run fails if either holds anything new at the end.
host_tmp=${TMPDIR:-/tmp}
suite_tmp=$(mktemp -d "$host_tmp/mc-launcher-suite.XXXXXX")
chmod 1777 "$suite_tmp" # like /tmp: services run as other users too
# A run that stops early (a failing test) leaves no empty dir behind; one
# that left files keeps them, for a look.
trap 'rmdir "$suite_tmp" 2>/dev/null || true' EXIT
ours() { find /tmp -maxdepth 1 \( -name 'mcl-*' -o -name 'mc-launcher-*' \) ! -path "$suite_tmp" | sort; }
ours_before=$(ours)

echo "== cargo test"
# Integration tests run the real binary as PID 1 of new pid namespaces;
# two at a time keeps timing-sensitive ones honest on a 2-core machine.
TMPDIR=$suite_tmp cargo test --no-fail-fast --features fault-injection -- --test-threads="${MC_TEST_THREADS:-2}"

echo "== integration tests again, against the static binary"
# Not the unit tests, not Docker (docker, registry, swarm: already on the
# static binary), not the release (its own binaries, built once), not the
# source checks (layers, readme): what runs the launcher.
itests=()
for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    case "$t" in docker | registry | swarm | layers | readme | release) ;; *) itests+=(--test "$t") ;; esac
done
MC_TEST_BIN="$static_fi" TMPDIR=$suite_tmp cargo test --no-fail-fast --features fault-injection "${itests[@]}" \
    -- --test-threads="${MC_TEST_THREADS:-2}"

echo "== fuzz (${MC_FUZZ_SECONDS:-20} s per target)"
TMPDIR=$suite_tmp bash fuzz/run.sh "${MC_FUZZ_SECONDS:-20}"

echo "== nothing left in the temp dir"
left=$(find "$suite_tmp" -mindepth 1 -maxdepth 1)
new=$(comm -13 <(echo "$ours_before") <(ours))
if [ -n "$left$new" ]; then
    echo "the tests left files in the temp dir:" >&2
    printf '%s\n' "$left" "$new" >&2
    exit 1
fi
rmdir "$suite_tmp"
