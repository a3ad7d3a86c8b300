#!/usr/bin/env bash
# Runs every test of tapir, installing first what the tests need (as root on Debian).
#
#   scripts/test.sh            # unit, property, deterministic and black-box tests, then fuzzing
#   FUZZ_SECONDS=0 scripts/test.sh   # skip the bounded fuzz runs
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests (and the build of the offline transcription engine) need.
scripts/deps.sh

cargo test --workspace --all-targets
# Doc tests are not part of --all-targets.
cargo test --workspace --doc

if [ "${FUZZ_SECONDS:-30}" != "0" ]; then
    FUZZ_SECONDS="${FUZZ_SECONDS:-30}" fuzz/run.sh
fi
