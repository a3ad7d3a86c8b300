#!/bin/bash
# The Kamailio side of the side-by-side benchmarks, on the same loads as tapir.
#
# usage: bench/kamailio.sh cps RATE CALLS [HOLD_S]      signalling only (bench/cps.sh kamailio)
#        bench/kamailio.sh media CALLS DURATION_S [RATE] Kamailio + rtpengine, no recording
#        bench/kamailio.sh recorded CALLS DURATION_S [RATE]   ... with per-call pcap recording
#
# Needs Debian's packages: apt-get install -y kamailio rtpengine-daemon
# Kamailio runs bench/kamailio.cfg (a stateful proxy: tm, record_route) on 127.0.0.1:5060 with
# 4 UDP workers and 512 MB of shared memory; KAM_DEFS="WITH_DIALOG" adds dialog tracking for
# `cps`, KAM_DEFS="KAM_CHILDREN=1" runs one worker (SIPp's built-in uac counts a 180 that
# arrives after the 200, which parallel workers sometimes produce, as a failed call). rtpengine runs in userspace (no kernel module here) on ports 30000-40000.
# Examples:
#   bench/kamailio.sh cps 1000 60000
#   KAM_DEFS=WITH_DIALOG bench/kamailio.sh cps 500 5000 40
#   bench/kamailio.sh recorded 300 60 20
set -u
here=$(cd "$(dirname "$0")" && pwd)
command -v kamailio >/dev/null || { echo "apt-get install -y kamailio rtpengine-daemon" >&2; exit 1; }
what=${1:?cps|media|recorded}; shift
case $what in
  cps) exec "$here/cps.sh" kamailio "$@" ;;
  media) RECORD=0 exec "$here/media.sh" rtpengine "$@" ;;
  recorded) RECORD=1 exec "$here/media.sh" rtpengine "$@" ;;
  *) echo "unknown mode $what" >&2; exit 2 ;;
esac
