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

echo "== cargo test"
# Integration tests run the real binary as PID 1 of new pid namespaces;
# two at a time keeps timing-sensitive ones honest on a 2-core machine.
cargo test --no-fail-fast --features fault-injection -- --test-threads="${MC_TEST_THREADS:-2}"

echo "== integration tests again, against the static binary"
# Not the unit tests, not Docker (docker, registry, swarm: already on the
# static binary), not the release (its own binaries, built once), not the
# source checks (layers, readme): what runs the launcher.
itests=()
for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    case "$t" in docker | registry | swarm | layers | readme | release) ;; *) itests+=(--test "$t") ;; esac
done
MC_TEST_BIN="$static_fi" cargo test --no-fail-fast --features fault-injection "${itests[@]}" \
    -- --test-threads="${MC_TEST_THREADS:-2}"

echo "== fuzz (${MC_FUZZ_SECONDS:-20} s per target)"
bash fuzz/run.sh "${MC_FUZZ_SECONDS:-20}"
