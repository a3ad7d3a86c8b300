#!/bin/bash
# Media load: concurrent calls with 20 ms G.711 (PCMA) RTP both ways through a system under
# test, using the reference load /work/shared/bench/load.sh (SIPp caller plays PCMA for the
# call's length, SIPp callee on 127.0.0.1:25070 echoes every packet: 100 packets per
# call-second cross the relay).
#
# usage: bench/media.sh SUT CALLS DURATION_S [RATE_CPS]
#   SUT    tapir      tapir (bench/tapir-bench.toml) on 127.0.0.1:5090;
#                     REC=wav or REC=mp3 records every call (route record = "always")
#          rtpengine  Kamailio (bench/kamailio.cfg -A WITH_RTPENGINE) on 127.0.0.1:5060 driving
#                     rtpengine in userspace; RECORD=1 (default) records per-call pcaps,
#                     RECORD=0 relays only
#   CALLS, DURATION_S, RATE_CPS   as for load.sh (RATE default 20): CALLS calls of DURATION_S
#                     each, started at RATE_CPS; choose DURATION_S > CALLS/RATE so all are up
#                     at once.
#
# Examples:
#   bench/media.sh tapir 300 60 20            # issue 2: 300 concurrent calls with media
#   REC=wav bench/media.sh tapir 300 60 20    # issue 4 (bench/recorded.sh wraps this)
#   bench/media.sh rtpengine 300 60 20        # Kamailio + rtpengine, pcap recording
#
# Prints load.sh's line (CPU ms per call-second of the watched processes over the load), then
# one `result:` line: RTP packets the caller sent (from the pcap), packets relayed per
# direction and dropped inside tapir (its metrics), kernel receive-buffer drops on the relay's
# own sockets (bench/udp_drops.py; the system-wide counter also counts SIPp's caller socket,
# which never reads the echo), the same for the SIPp callee's echo socket (packets that never
# come back), peak RSS and memory per call, and for recordings the sidecars' packet
# counters. Environment: LOAD_SH (default /work/shared/bench/load.sh), KEEP=1 (keep the work
# directory with its recordings and logs; removed otherwise), bench/lib.sh's.
# Runs vary (shared 2-core machine): repeat and compare means.
#
# Transcription (tapir, with REC): TRANSCRIBE=pocketsphinx (or none, the default) sets
# [transcripts] engine, TRANSCRIBE_CONCURRENCY its concurrency (default 1); BACKLOG_CALLS=N
# first runs an unmeasured load of N calls of the same length and waits for their recordings,
# so that with an engine their transcription jobs run during the measured load (run the
# engine-off comparison with the same backlog). TAPIR_EXTRA_CONFIG=FILE appends a file to the
# configuration. The result then adds the CPU of the transcription threads during the load,
# the call path's CPU per call-second without them (`cpu_ms_per_call_s_call_path`), and the
# transcripts finished meanwhile; relay and recording counters count the measured load only.
set -u
. "$(dirname "$0")/lib.sh"

sut=${1:?SUT}
calls=${2:?CALLS}
dur=${3:?DURATION_S}
rate=${4:-20}
rec=${REC:-none}
[ "$1" = rtpengine ] && { [ "${RECORD:-1}" = 1 ] && rec=pcap || rec=none; }
LOAD_SH=${LOAD_SH:-/work/shared/bench/load.sh}
work=$(mktemp -d /tmp/bench-media-XXXX)

cleanup() {
  [ -n "${TAPIR_PID:-}" ] && stop_pid "$TAPIR_PID"
  [ -n "${KAM_PID:-}" ] && stop_pid "$KAM_PID"
  [ -n "${RTPE_PID:-}" ] && stop_pid "$RTPE_PID"
  rm -f "$work/sampling"
  # A run's recordings take about 2 MB per call: kept only when asked for (KEEP=1).
  if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

case $sut in
  tapir)
    cfg=$work/tapir.toml
    cp "$bench_dir/tapir-bench.toml" "$cfg"
    if [ "$rec" != none ]; then
      mkdir -p "$work/spool" "$work/recordings"
      # The route is the file's last table: these keys land on it.
      cat >>"$cfg" <<EOF
record = "always"
format = "$rec"

[recording]
spool_dir = "$work/spool"
recordings_dir = "$work/recordings"
format = "$rec"
EOF
      # tapir runs in $work: its embedded catalog (tapir.db) is created there.
      if [ "${TRANSCRIBE:-none}" != none ]; then
        printf '\n[transcripts]\nengine = "%s"\nconcurrency = %s\n' \
          "$TRANSCRIBE" "${TRANSCRIBE_CONCURRENCY:-1}" >>"$cfg"
      fi
    fi
    if [ -n "${TAPIR_EXTRA_CONFIG:-}" ]; then
      { echo; cat "$TAPIR_EXTRA_CONFIG"; } >>"$cfg"
    fi
    start_tapir "$cfg" "$work"
    target=$TAPIR_SIP; pids=$TAPIR_PID ;;
  rtpengine)
    start_rtpengine "$work"
    start_kamailio "$work" WITH_RTPENGINE
    target=$KAM_SIP; pids="$RTPE_PID $(kamailio_pids)" ;;
  *) echo "unknown SUT $sut" >&2; exit 2 ;;
esac

# CPU ticks of tapir's transcription threads (named transcribe-N).
transcribe_ticks() {
  [ "$sut" = tapir ] || { echo 0; return; }
  cat /proc/"$TAPIR_PID"/task/*/stat 2>/dev/null | awk '$2 ~ /^\(transcribe-/ {s += $14 + $15} END {print s + 0}'
}
metric_or0() { if [ "$sut" = tapir ]; then metric "$@"; else echo 0; fi; }

backlog=${BACKLOG_CALLS:-0}
if [ "$backlog" -gt 0 ] && [ "$sut" = tapir ]; then
  log "backlog: $backlog calls of ${dur}s first (not measured)"
  "$LOAD_SH" "$target" "$backlog" "$dur" "$rate" >"$work/backlog.out"
  for _ in $(seq 1 600); do
    n=$(find "$work/recordings" -name '*.json' ! -name '*.peaks.json' 2>/dev/null | wc -l)
    [ "$n" -ge "$backlog" ] && [ "$(metric tapir_recordings_active)" = 0 ] \
      && [ "$(metric tapir_uploads_pending)" = 0 ] && break
    sleep 1
  done
  find "$work/recordings" -name '*.json' ! -name '*.peaks.json' | sort >"$work/backlog.txt"
  log "backlog stored: $(wc -l <"$work/backlog.txt") recordings; transcript jobs queued $(metric_or0 tapir_transcript_jobs 'queued'), running $(metric_or0 tapir_transcript_jobs 'running')"
fi
touch "$work/backlog.txt"

wait_quiet
sleep 1
ra0=$(metric_or0 tapir_rtp_packets_relayed_total 'a_rtp"')
rb0=$(metric_or0 tapir_rtp_packets_relayed_total 'b_rtp"')
dropped0=$(metric_or0 tapir_rtp_packets_dropped_total)
tapd0=$(metric_or0 tapir_tap_dropped_total)
done0=$(metric_or0 tapir_transcripts_total 'done')
tr0=$(transcribe_ticks)
# shellcheck disable=SC2086
rss0=$(for p in $pids; do rss_kb "$p"; done | awk '{s+=$1} END {print s}')
# shellcheck disable=SC2086
pss0=$(pss_kb_sum $pids)
rcv0=$(udp_rcvbuf_errors); inerr0=$(udp_noports)
# shellcheck disable=SC2086
c0=$(cpu_ticks_sum $pids)

touch "$work/sampling"
case $sut in tapir) prange="30000 54999" ;; *) prange="30000 40000" ;; esac
# shellcheck disable=SC2086
python3 "$bench_dir/udp_drops.py" $prange "$work/sampling" "$work/udp_drops.txt" $pids &
drops_pid=$!
# The SIPp callee's echo socket (load.sh: -mp 26000): what it cannot read never comes back.
python3 "$bench_dir/udp_drops.py" 26000 26003 "$work/sampling" "$work/echo_drops.txt" &
echo_drops_pid=$!
# shellcheck disable=SC2086
sampler "$work/mem.txt" "$work/sampling" bash -c "echo \$(cat $(for p in $pids; do printf '/proc/%s/status ' "$p"; done) 2>/dev/null | awk '/^VmRSS:/ {s+=\$2} END {print s}') \$(cat $(for p in $pids; do printf '/proc/%s/smaps_rollup ' "$p"; done) 2>/dev/null | awk '/^Pss:/ {s+=\$2} END {print s}')" &

# shellcheck disable=SC2086
WATCH_PIDS="$pids" "$LOAD_SH" "$target" "$calls" "$dur" "$rate" | tee "$work/load.out"
t_load_end=$(date +%s.%N)
# shellcheck disable=SC2086
c_load=$(cpu_ticks_sum $pids)
tr1=$(transcribe_ticks)
done1=$(metric_or0 tapir_transcripts_total 'done')
jobs_left=$(metric_or0 tapir_transcript_jobs)
rcv1=$(udp_rcvbuf_errors); inerr1=$(udp_noports)
rm -f "$work/sampling"
wait "$drops_pid" "$echo_drops_pid"

relayed_a=0 relayed_b=0 dropped=0 tap_dropped=0 drop_detail=""
if [ "$sut" = tapir ]; then
  relayed_a=$(( $(metric tapir_rtp_packets_relayed_total 'a_rtp"') - ra0 ))
  relayed_b=$(( $(metric tapir_rtp_packets_relayed_total 'b_rtp"') - rb0 ))
  dropped=$(( $(metric tapir_rtp_packets_dropped_total) - dropped0 ))
  tap_dropped=$(( $(metric tapir_tap_dropped_total) - tapd0 ))
  drop_detail=$(curl -s "http://$TAPIR_HTTP/metrics" | grep '^tapir_rtp_packets_dropped_total' | tr ' \n' '=,')
  if [ "$rec" != none ]; then
    # Wait for every recording to be finished (MP3: transcoded) and catalogued.
    for _ in $(seq 1 600); do
      n=$(find "$work/recordings" -name '*.json' ! -name '*.peaks.json' 2>/dev/null | wc -l)
      [ "$n" -ge $((calls + backlog)) ] && [ "$(metric tapir_recordings_active)" = 0 ] && break
      sleep 1
    done
  fi
fi
t_done=$(date +%s.%N)
# shellcheck disable=SC2086
c_done=$(cpu_ticks_sum $pids)
load_work=$(awk '/^work dir:/ {print $3}' "$work/load.out")

python3 - "$work" "$sut" "$rec" "$calls" "$dur" "$rss0" "$pss0" "$c0" "$c_load" "$c_done" "$HZ" \
  "$t_load_end" "$t_done" "$relayed_a" "$relayed_b" "$dropped" "$tap_dropped" "$rcv0" "$rcv1" \
  "$inerr0" "$inerr1" "$load_work" "$drop_detail" "$(cat "$work/udp_drops.txt")" "$(cat "$work/echo_drops.txt")" \
  "${TRANSCRIBE:-none}" "$backlog" "$tr0" "$tr1" "$done0" "$done1" "$jobs_left" <<'PY'
import glob, json, os, struct, sys
(work, sut, rec, calls, dur, rss0, pss0, c0, c_load, c_done, hz, t_load_end, t_done, ra, rb,
 dropped, tap_dropped, rcv0, rcv1, inerr0, inerr1, load_work, drop_detail, sock, echo,
 transcribe, backlog, tr0, tr1, done0, done1, jobs_left) = sys.argv[1:]
skip = set(l.strip() for l in open(f"{work}/backlog.txt") if l.strip())
calls, dur, hz = int(calls), int(dur), int(hz)
mem = [tuple(map(int, l.split()[1:3])) for l in open(f"{work}/mem.txt") if len(l.split()) == 3]
rss_peak = max((m[0] for m in mem), default=0)
pss_peak = max((m[1] for m in mem), default=0)
sent_per_call = dur * 50  # the pcap load.sh makes: 20 ms packets for DURATION_S
out = [f"sut={sut}", f"rec={rec}", f"calls={calls}", f"dur={dur}",
       f"caller_rtp_sent={calls * sent_per_call}",
       "relay_socket_" + sock.split()[0], "relay_socket_kernel_" + sock.split()[1],
       "sipp_echo_socket_kernel_" + echo.split()[1],
       f"udp_rcvbuf_errors_system={int(rcv1) - int(rcv0)}",
       f"udp_noports_system={int(inerr1) - int(inerr0)}",
       f"rss_idle_kb={rss0}", f"rss_peak_kb={rss_peak}", f"pss_peak_kb={pss_peak}",
       f"rss_per_call_kib={(rss_peak - int(rss0)) / calls:.1f}",
       f"pss_per_call_kib={(pss_peak - int(pss0)) / calls:.1f}"]
cpu_load = (int(c_load) - int(c0)) / hz
cpu_all = (int(c_done) - int(c0)) / hz
out += [f"cpu_ms_per_call_s_incl_finish={1000 * cpu_all / (calls * dur):.3f}",
        f"finish_wait_s={float(t_done) - float(t_load_end):.1f}"]
if sut == "tapir" and (transcribe != "none" or int(backlog) > 0):
    tr_cpu = (int(tr1) - int(tr0)) / hz
    out += [f"transcribe={transcribe}", f"backlog={backlog}",
            f"cpu_ms_per_call_s_load={1000 * cpu_load / (calls * dur):.3f}",
            f"transcribe_cpu_s_during_load={tr_cpu:.1f}",
            f"cpu_ms_per_call_s_call_path={1000 * (cpu_load - tr_cpu) / (calls * dur):.3f}",
            f"transcripts_done_during_load={int(done1) - int(done0)}",
            f"transcript_jobs_left={jobs_left}"]
if sut == "tapir":
    out += [f"relayed_a_rtp={ra}", f"relayed_b_rtp={rb}", f"dropped={dropped}",
            f"tap_dropped={tap_dropped}"]
    if drop_detail:
        out.append(f"dropped_by_reason={drop_detail.rstrip(',')}")
    if rec != "none":
        metas = []
        for p in glob.glob(f"{work}/recordings/**/*.json", recursive=True):
            if p.endswith(".peaks.json") or p in skip:
                continue
            try:
                metas.append(json.load(open(p)))
            except ValueError:
                pass
        s = lambda ch, k: sum(m.get(ch, {}).get(k, 0) for m in metas)
        out += [f"recordings={len(metas)}",
                f"complete={sum(1 for m in metas if m.get('complete'))}",
                f"rec_customer_received={s('customer', 'received')}",
                f"rec_agent_received={s('agent', 'received')}",
                f"rec_lost={s('customer', 'lost') + s('agent', 'lost')}",
                f"rec_late_dropped={s('customer', 'late_dropped') + s('agent', 'late_dropped')}",
                f"rec_early_dropped={s('customer', 'early_dropped') + s('agent', 'early_dropped')}",
                f"rec_before_start={s('customer', 'before_start') + s('agent', 'before_start')}",
                f"rec_tap_drops={sum(m.get('tap_drops', 0) for m in metas)}",
                f"rec_errors={sum(1 for m in metas if m.get('error'))}"]
        exts = {}
        for p in glob.glob(f"{work}/recordings/**/*", recursive=True):
            e = os.path.splitext(p)[1]
            if e in (".wav", ".mp3") and os.path.splitext(p)[0] + ".json" not in skip:
                exts[e] = exts.get(e, 0) + 1
        out.append("files=" + ",".join(f"{k}:{v}" for k, v in sorted(exts.items())))
else:
    pk = files = 0
    for p in glob.glob(f"{work}/rtpengine-spool/**/*.pcap", recursive=True):
        files += 1
        with open(p, "rb") as f:
            f.read(24)
            while True:
                hd = f.read(16)
                if len(hd) < 16:
                    break
                n = struct.unpack("<IIII", hd)[2]
                f.seek(n, 1)
                pk += 1
    out += [f"pcap_files={files}", f"pcap_packets={pk}",
            f"pcap_packets_expected_both_ways={calls * sent_per_call * 2}"]
print("result: " + " ".join(out))
PY
echo "work dir: $work (load: $load_work)"
