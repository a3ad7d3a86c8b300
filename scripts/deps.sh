#!/usr/bin/env bash
# Installs the Debian packages that tapir's build and tests need (as root), or says which
# are missing and fails. Run by scripts/test.sh and by CI before the first build.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
# Speech for the conversation-metrics tests (crates/analysis/tests/espeak.rs).
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
# A real SDES-SRTP client for the SRTP tests (crates/tapir/tests/baresip.rs).
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip)
# The two-node deployment runs Kamailio's dispatcher in front of two tapir nodes.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need_apt+=(kamailio)
# The catalog tests start a throw-away PostgreSQL cluster from these binaries.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
# The offline transcription engine (crates/transcript) links PocketSphinx 5prealpha and
# reads its US-English model; the crate does not build without the library.
pkg-config --exists pocketsphinx 2>/dev/null || need_apt+=(libpocketsphinx-dev pkg-config)
[ -f /usr/share/pocketsphinx/model/en-us/en-us.lm.bin ] || need_apt+=(pocketsphinx-en-us)
# The browser test of the review pages (crates/tapir/tests/browser.rs) drives Debian's
# headless Chromium over its chromedriver.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "missing: ${need_apt[*]} (run as root, or: sudo apt-get install -y ${need_apt[*]})" >&2
        exit 1
    fi
fi

