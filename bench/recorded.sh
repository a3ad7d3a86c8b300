#!/bin/bash
# Recorded media load: every call through tapir is recorded (route record = "always"), or the
# same load through Kamailio + rtpengine recording per-call pcaps.
#
# usage: bench/recorded.sh FORMAT CALLS DURATION_S [RATE_CPS]
#   FORMAT   wav | mp3   tapir with [recording] format = FORMAT
#            rtpengine   Kamailio + rtpengine (userspace), --recording-method=pcap
#
# Examples:
#   bench/recorded.sh wav 300 60 20
#   bench/recorded.sh mp3 300 60 20
#   bench/recorded.sh rtpengine 300 60 20
#
# This is bench/media.sh with recording on; its `result:` line adds the recordings' sidecar
# counters (packets received/lost/late per channel, tap drops) for tapir, or the pcap packet
# count for rtpengine, and `cpu_ms_per_call_s_incl_finish`, which also counts the CPU spent
# after the load until every recording is finished (MP3 transcoding happens after hang-up).
set -u
here=$(cd "$(dirname "$0")" && pwd)
fmt=${1:?FORMAT}; shift
case $fmt in
  wav|mp3) REC=$fmt exec "$here/media.sh" tapir "$@" ;;
  rtpengine) RECORD=1 exec "$here/media.sh" rtpengine "$@" ;;
  *) echo "FORMAT must be wav, mp3 or rtpengine" >&2; exit 2 ;;
esac
