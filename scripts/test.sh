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

echo "== cargo test"
# Integration tests run the real binary as PID 1 of new pid namespaces;
# two at a time keeps timing-sensitive ones honest on a 2-core machine.
cargo test --features fault-injection -- --test-threads="${MC_TEST_THREADS:-2}"

echo "== fuzz (${MC_FUZZ_SECONDS:-20} s per target)"
bash fuzz/run.sh "${MC_FUZZ_SECONDS:-20}"
