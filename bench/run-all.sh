#!/bin/bash
# Runs the whole benchmark suite REPS times, alternating tapir and the peers, and appends every
# `result:` line (with the run's name, repetition, date and the load average before it) to
# OUT (default bench/results/YYYY-MM-DD.txt). bench/summarize.py turns that file into means
# and ranges.
#
# usage: bench/run-all.sh REPS [RUN...]
#   RUN names (default: all, in this order):
#     cps300        tapir, 300 CPS for 60 s (issue 2)
#     cps1000       tapir, 1,000 CPS for 60 s (issue 3)
#     direct1000    SIPp caller straight to the callee, 1,000 CPS for 60 s (latency baseline)
#     kam1000       Kamailio stateful proxy, 1,000 CPS for 60 s
#     kam1000c1     the same with one Kamailio worker (no 180/200 reordering)
#     held          tapir, 5,000 calls held 60 s, memory sampled at 45 s
#     kamheld       Kamailio with the dialog module, same
#     media         tapir, 300 calls x 60 s of PCMA both ways (issue 2)
#     wav           tapir recording WAV, same load (issue 4)
#     mp3           tapir recording MP3, same load
#     rtpe          Kamailio + rtpengine, same load, no recording
#     rtpepcap      Kamailio + rtpengine, same load, per-call pcap recording
# Takes about 15 minutes per repetition of the full list, longer while the machine is busy
# Work directories are removed after each run unless KEEP=1
# (each run first waits for a 1-minute load below MAX_LOAD, default 1.0, up to LOAD_WAIT_S).
set -u
here=$(cd "$(dirname "$0")" && pwd)
reps=${1:?REPS}; shift
runs=("$@")
[ ${#runs[@]} -eq 0 ] && runs=(cps300 cps1000 direct1000 kam1000 kam1000c1 held kamheld media wav mp3 rtpe rtpepcap)
out=${OUT:-$here/results/$(date +%F).txt}
mkdir -p "$(dirname "$out")"

one() {
  case $1 in
    cps300) "$here/cps.sh" tapir 300 18000 ;;
    cps1000) "$here/cps.sh" tapir 1000 60000 ;;
    direct1000) "$here/cps.sh" direct 1000 60000 ;;
    kam1000) "$here/kamailio.sh" cps 1000 60000 ;;
    kam1000c1) KAM_DEFS=KAM_CHILDREN=1 "$here/kamailio.sh" cps 1000 60000 ;;
    held) HELD_AT=45 "$here/cps.sh" tapir 500 5000 60 ;;
    kamheld) HELD_AT=45 KAM_DEFS=WITH_DIALOG "$here/kamailio.sh" cps 500 5000 60 ;;
    media) "$here/media.sh" tapir 300 60 20 ;;
    wav) "$here/recorded.sh" wav 300 60 20 ;;
    mp3) "$here/recorded.sh" mp3 300 60 20 ;;
    rtpe) "$here/kamailio.sh" media 300 60 20 ;;
    rtpepcap) "$here/kamailio.sh" recorded 300 60 20 ;;
    *) echo "unknown run $1" >&2; return 2 ;;
  esac
}

# The commit the measured binary was built from (TAPIR_COMMIT), else this checkout's HEAD.
commit=${TAPIR_COMMIT:-$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)}
for rep in $(seq 1 "$reps"); do
  for r in "${runs[@]}"; do
    log=$(mktemp /tmp/bench-run-XXXX.log)
    one "$r" >"$log" 2>&1
    up=$(awk '/^uptime_before:/ {sub(/^.*load average: /, ""); print $1; exit}' "$log" | tr -d ,)
    cpu_line=$(grep '^sipp rc=' "$log" | head -1)
    res=$(grep '^result:' "$log" | head -1)
    if [ "${KEEP:-0}" != 1 ] && [ -n "$res" ]; then
      # Recordings and pcaps of a 300-call run take hundreds of MB: keep only the figures.
      for d in $(grep -o '/tmp/\(bench-[a-z]*\|load\)-[A-Za-z0-9]*' "$log" | sort -u); do rm -rf "$d"; done
    fi
    echo "run=$r rep=$rep date=$(date -Is) commit=$commit load1_before=${up:-?} ${cpu_line:+load_sh: $cpu_line |} ${res:-NO RESULT (see $log)}" | tee -a "$out"
  done
done
