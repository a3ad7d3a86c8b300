#!/usr/bin/env bash
# Runs every test of tapir, installing first what the tests need (as root on Debian).
#
#   scripts/test.sh            # unit, property, deterministic and black-box tests, then fuzzing
#   FUZZ_SECONDS=0 scripts/test.sh   # skip the bounded fuzz runs
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
# Speech for the conversation-metrics tests (crates/analysis/tests/espeak.rs).
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
# A real SDES-SRTP client for the SRTP tests (crates/tapir/tests/baresip.rs).
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip)
# The catalog tests start a throw-away PostgreSQL cluster from these binaries.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "missing: ${need_apt[*]} (run as root, or: sudo apt-get install -y ${need_apt[*]})" >&2
        exit 1
    fi
fi

cargo test --workspace --all-targets
# Doc tests are not part of --all-targets.
cargo test --workspace --doc

if [ "${FUZZ_SECONDS:-30}" != "0" ]; then
    FUZZ_SECONDS="${FUZZ_SECONDS:-30}" fuzz/run.sh
fi
