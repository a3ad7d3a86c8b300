#!/usr/bin/env bash
# Runs every test of tapir, installing first what the tests need (as root on Debian).
#
#   scripts/test.sh            # unit, property, deterministic and black-box tests, the two-node
#                              # deployment (deploy/two-nodes.sh), then fuzzing
#   FUZZ_SECONDS=0 scripts/test.sh   # skip the bounded fuzz runs
#   TWO_NODES=0 scripts/test.sh      # skip the two-node deployment (locally only: never in CI)
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
# The two-node deployment runs Kamailio's dispatcher in front of two tapir nodes.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need_apt+=(kamailio)
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
