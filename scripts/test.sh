#!/usr/bin/env bash
# Runs every test of tapir, installing first what the tests need (as root on Debian).
#
#   scripts/test.sh            # unit, property, deterministic and black-box tests, the two-node
#                              # deployment (deploy/two-nodes.sh), then fuzzing
#   FUZZ_SECONDS=0 scripts/test.sh   # skip the bounded fuzz runs
#   TWO_NODES=0 scripts/test.sh      # skip the two-node deployment (locally only: never in CI)
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests (and the build of the offline transcription engine) need.
scripts/deps.sh

# The helper programs the black-box tests start (the test S3 server, the SRTP load generator)
# live in another package than the tests that use them, so cargo test alone does not build them.
cargo build -p tapir -p tapir-tests --bins
cargo test --workspace --all-targets
# Doc tests are not part of --all-targets.
cargo test --workspace --doc

# Two nodes behind Kamailio on one PostgreSQL and one S3 bucket, with a node killed mid-call
# (it uses the binaries the tests above built in target/debug).
if [ "${CI:-}" = true ] || [ "${TWO_NODES:-1}" != 0 ]; then
    deploy/two-nodes.sh
else
    echo "two-node deployment skipped (TWO_NODES=0)"
fi

if [ "${FUZZ_SECONDS:-30}" != "0" ]; then
    FUZZ_SECONDS="${FUZZ_SECONDS:-30}" fuzz/run.sh
fi
