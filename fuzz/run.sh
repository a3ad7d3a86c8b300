#!/usr/bin/env bash
# Runs each fuzz target for a bounded time.
#
#   FUZZ_SECONDS=60 fuzz/run.sh              # every target, 60 s each (default 30)
#   fuzz/run.sh sip_parse                    # only the named targets
#
# cargo-fuzz builds with -Z flags (sanitizers, coverage instrumentation), which need a nightly
# compiler. A nightly toolchain is used when rustup has one; otherwise the stable compiler is
# told to accept the flags with RUSTC_BOOTSTRAP=1, which works for these targets.
# Crashes land in fuzz/artifacts/<target>/; the grown corpus stays in fuzz/corpus/<target>/.
set -euo pipefail

cd "$(dirname "$0")"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

# Seeds: the torture messages (when shared/ sits beside the repository) and a few RTP packets.
torture=../../shared/sip-torture
mkdir -p corpus/sip_parse corpus/sdp_parse corpus/rtp_parse corpus/srtp_unprotect
if [ -d "$torture" ]; then
    cp -f "$torture"/rfc4475/*.dat "$torture"/rfc5118/* corpus/sip_parse/
    for f in "$torture"/rfc5118/*-sdp "$torture"/rfc4475/sdp01.dat; do
        # The body after the blank line is the SDP.
        awk 'body {print} /^\r?$/ {body=1}' "$f" >"corpus/sdp_parse/$(basename "$f")"
    done
fi
# V=2, PT 0, seq 1, ts 160, SSRC 0x01020304, 4 bytes of payload; then with CSRC, extension
# and padding bits set, so every branch of the header parser has a starting point.
printf '\x80\x00\x00\x01\x00\x00\x00\xa0\x01\x02\x03\x04\xff\xff\xff\xff' >corpus/rtp_parse/plain
printf '\xb1\x80\x00\x02\x00\x00\x01\x40\x01\x02\x03\x04\x0a\x0b\x0c\x0d\xbe\xde\x00\x01\x10\x20\x30\x40\xaa\xbb\x00\x02' \
    >corpus/rtp_parse/csrc-ext-pad
# srtp_unprotect: a mode byte (suite, MKI, RTP/RTCP), a byte to corrupt (0xff: none), then the
# packet: an RTP packet per suite, and an RTCP sender report with an MKI.
for suite in 0 1 2; do
    printf "\\x0$suite"'\xff\x80\x00\x00\x01\x00\x00\x00\xa0\x01\x02\x03\x04\xff\xff\xff\xff' \
        >"corpus/srtp_unprotect/rtp-$suite"
done
printf '\x5c\x10\x80\xc8\x00\x06\x01\x02\x03\x04\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00\x05' \
    >corpus/srtp_unprotect/rtcp-mki

for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${FUZZ_SECONDS}s"
    cargo "${toolchain[@]}" fuzz run "$t" "corpus/$t" -- -max_total_time="$FUZZ_SECONDS"
done
