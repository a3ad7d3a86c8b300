#!/bin/bash
# Signalling load: SIPp's built-in uac -> system under test -> SIPp's built-in uas, on loopback.
#
# usage: bench/cps.sh SUT RATE CALLS [HOLD_S]
#   SUT     tapir     tapir (bench/tapir-bench.toml) on 127.0.0.1:5090
#           kamailio  Kamailio stateful proxy (bench/kamailio.cfg) on 127.0.0.1:5060
#                     (KAM_DEFS="WITH_DIALOG" adds the dialog module)
#           direct    no proxy: the caller talks to the callee (baseline for setup latency)
#   RATE    calls per second offered by SIPp (-r)
#   CALLS   total calls (-m)
#   HOLD_S  seconds each call stays up before BYE (default 0). With HOLD_S > 0 the script
#           also measures memory per established call: it samples the SUT's RSS (and PSS)
#           once every call is up (CALLS/RATE + 5 s after the start) against the idle
#           baseline, so choose HOLD_S > CALLS/RATE + 10. HELD_AT=S samples S seconds after
#           the start instead (e.g. after the setup transactions' 32 s linger has passed).
#
# Examples:
#   bench/cps.sh tapir 300 18000          # issue 2: 300 CPS for 60 s
#   bench/cps.sh tapir 1000 60000         # issue 3: 1,000 CPS for 60 s
#   bench/cps.sh direct 1000 60000        # the same without a proxy, for added latency
#   bench/cps.sh tapir 500 5000 40        # memory per established call, 5,000 calls held
#
# PCAP=1 (tapir or kamailio; needs tcpdump) also captures the proxy's SIP port on `lo` and
# prints an `added:` line from bench/added_latency.py: the setup latency the proxy adds, per
# call, from kernel timestamps rather than SIPp's 4 ms clock, with the same figures per 10 s
# window and over the seconds in which the hypervisor took (almost) nothing. The caller then runs SIPp's
# built-in uac scenario with one header more (X-Seq, to match the two legs of a call).
#
# Prints one `result:` line: SIPp's successful/failed counts, achieved rate, setup time
# (INVITE sent -> 200 received, SIPp -trace_rtt, per call) p50/p99/max, the SUT's CPU (% of
# one core, averaged over the run) and RSS, and the hypervisor's steal time over the run.
# Environment: see bench/lib.sh (TAPIR_BIN, MAX_LOAD). Runs vary (shared 2-core machine):
# repeat each measurement and compare means.
set -u
. "$(dirname "$0")/lib.sh"

sut=${1:?SUT}
rate=${2:?RATE}
calls=${3:?CALLS}
hold=${4:-0}
work=$(mktemp -d /tmp/bench-cps-XXXX)
uac_port=${UAC_PORT:-25080}
pids=""

cleanup() {
  [ -n "${uas_pid:-}" ] && stop_pid "$uas_pid"
  [ -n "${TAPIR_PID:-}" ] && stop_pid "$TAPIR_PID"
  [ -n "${KAM_PID:-}" ] && stop_pid "$KAM_PID"
  [ -n "${tcpdump_pid:-}" ] && kill "$tcpdump_pid" 2>/dev/null
  rm -f "$work/sampling"
}
trap cleanup EXIT

case $sut in
  tapir)
    start_tapir "$bench_dir/tapir-bench.toml" "$work"
    target=$TAPIR_SIP; pids=$TAPIR_PID ;;
  kamailio)
    # shellcheck disable=SC2086
    start_kamailio "$work" ${KAM_DEFS:-}
    target=$KAM_SIP; pids=$(kamailio_pids) ;;
  direct)
    target=127.0.0.1:$UAS_PORT ;;
  *) echo "unknown SUT $sut" >&2; exit 2 ;;
esac

cd "$work" || exit 1
timeout_s=$((calls / rate + hold + 120))
"${LOAD_PIN[@]}" sipp -sn uas -i 127.0.0.1 -p "$UAS_PORT" -m "$calls" -nostdin -timeout "${timeout_s}s" \
  -trace_stat -stf uas.csv -fd 1 >uas.out 2>&1 &
uas_pid=$!
sleep 0.5

wait_quiet
[ -n "$pids" ] && sleep 1
rss0=0 pss0=0
# shellcheck disable=SC2086
if [ -n "$pids" ]; then
  rss0=$(for p in $pids; do rss_kb "$p"; done | awk '{s+=$1} END {print s}')
  pss0=$(pss_kb_sum $pids)
fi
rcv0=$(udp_rcvbuf_errors)
# shellcheck disable=SC2086
c0=$(cpu_ticks_sum $pids); t0=$(date +%s.%N)
steal0=$(awk '/^cpu /{print $9}' /proc/stat)

touch "$work/sampling"
if [ -n "$pids" ]; then
  # shellcheck disable=SC2086
  sampler "$work/rss.txt" "$work/sampling" bash -c "cat $(for p in $pids; do printf '/proc/%s/status ' "$p"; done) 2>/dev/null | awk '/^VmRSS:/ {s+=\$2} END {print s}'" &
fi
if [ "$hold" -gt 0 ] && [ -n "$pids" ]; then
  (
    sleep "${HELD_AT:-$((calls / rate + 5))}"
    echo "$(for p in $pids; do rss_kb "$p"; done | awk '{s+=$1} END {print s}') $(pss_kb_sum $pids)" >"$work/held.txt"
    [ "$sut" = tapir ] && metric tapir_calls_active >"$work/held_active.txt"
  ) &
fi

scenario=(-sn uac)
if [ "${PCAP:-0}" = 1 ] && [ "$sut" != direct ]; then
  sipp -sd uac 2>/dev/null | sed '/CSeq: 1 INVITE/a\      X-Seq: [call_number]' >"$work/uac_seq.xml"
  scenario=(-sf "$work/uac_seq.xml")
  "${LOAD_PIN[@]}" tcpdump -i lo -n -s 0 -B 65536 -w "$work/sip.pcap" udp port "${target##*:}" 2>"$work/tcpdump.err" &
  tcpdump_pid=$!
  for _ in $(seq 1 50); do grep -q listening "$work/tcpdump.err" && break; sleep 0.1; done
  if ! kill -0 "$tcpdump_pid" 2>/dev/null; then
    echo "tcpdump did not start (installed? allowed to capture?):" >&2
    cat "$work/tcpdump.err" >&2
    exit 1
  fi
fi

(
  while [ -e "$work/sampling" ]; do
    echo "$(udp_port_drops "${target##*:}") $(udp_port_drops "$uac_port") $(udp_port_drops "$UAS_PORT")"
    sleep 1
  done >"$work/drops.txt"
) &
# The hypervisor's steal time, second by second, so that the latency of each call can be set
# against how much of the machine the host took while it was set up.
(
  while [ -e "$work/sampling" ]; do
    echo "$(date +%s.%N) $(awk '/^cpu /{print $9}' /proc/stat)"
    sleep 1
  done >"$work/steal.txt"
) &

lim=$((rate * 10)); [ "$hold" -gt 0 ] && lim=$calls
"${LOAD_PIN[@]}" sipp "$target" "${scenario[@]}" -i 127.0.0.1 -p "$uac_port" -r "$rate" -m "$calls" -l "$lim" \
  -d $((hold * 1000)) -nostdin -timeout "${timeout_s}s" -trace_stat -stf uac.csv -fd 1 \
  -trace_rtt -rtt_freq 100 -trace_err >uac.out 2>&1
rc=$?
# Which socket overflowed, if any: the system under test's SIP port or SIPp's (the largest
# count sampled while each lived).
sock_drops=$(awk '{ for (i = 1; i <= 3; i++) if ($i > m[i]) m[i] = $i }
  END { printf "sut_sip_socket_drops=%d uac_socket_drops=%d uas_socket_drops=%d", m[1], m[2], m[3] }' \
  "$work/drops.txt" 2>/dev/null)
# shellcheck disable=SC2086
c1=$(cpu_ticks_sum $pids); t1=$(date +%s.%N)
steal1=$(awk '/^cpu /{print $9}' /proc/stat)
rcv1=$(udp_rcvbuf_errors)
rm -f "$work/sampling"
wait "$uas_pid" 2>/dev/null; uas_pid=""

# Time the hypervisor ran something else on this VM's CPUs, in % of all CPU time of the run:
# the part of the noise that no process here causes.
steal_pct=$(awk -v a="$steal0" -v b="$steal1" -v t0="$t0" -v t1="$t1" -v hz="$HZ" -v n="$(nproc)" \
  'BEGIN { printf "%.2f", 100 * (b - a) / hz / ((t1 - t0) * n) }')
extra="$sock_drops host_steal_pct=$steal_pct"
if [ "$sut" = tapir ]; then
  extra="$extra tapir_sip_retransmissions=$(metric tapir_sip_retransmissions_total) tapir_calls_active_after=$(metric tapir_calls_active)"
fi
held=$(cat "$work/held.txt" 2>/dev/null || echo "")
held_active=$(cat "$work/held_active.txt" 2>/dev/null || echo "")
rss_peak=$(awk '{ if ($2 > m) m = $2 } END {print m+0}' "$work/rss.txt" 2>/dev/null || echo 0)

python3 - "$work" "$rc" "$c0" "$c1" "$HZ" "$t0" "$t1" "$calls" "$rss0" "$pss0" "$rss_peak" \
  "$held" "$held_active" "$rcv0" "$rcv1" "$sut" "$rate" "$hold" "$extra" <<'PY'
import glob, sys
(work, rc, c0, c1, hz, t0, t1, calls, rss0, pss0, rss_peak, held, held_active, rcv0, rcv1,
 sut, rate, hold, extra) = sys.argv[1:]
rows = [l.rstrip("\n").split(";") for l in open(f"{work}/uac.csv") if l.strip()]
h, last = rows[0], rows[-1]
f = lambda name: last[h.index(name)]
succ, fail = int(f("SuccessfulCall(C)")), int(f("FailedCall(C)"))
retr = int(f("Retransmissions(C)"))
rtts = []
for path in glob.glob(f"{work}/*_rtt.csv"):
    for line in open(path):
        parts = line.strip().split(";")
        try:
            rtts.append(float(parts[1]))
        except (IndexError, ValueError):
            pass
rtts.sort()
def pct(p):
    if not rtts:
        return float("nan")
    return rtts[min(len(rtts) - 1, int(p / 100 * len(rtts)))]
wall = float(t1) - float(t0)
cpu = (int(c1) - int(c0)) / int(hz)
total = succ + fail
out = [f"sut={sut}", f"rate={rate}", f"calls={calls}", f"hold_s={hold}", f"sipp_rc={rc}",
       f"successful={succ}", f"failed={fail}",
       f"failed_pct={100 * fail / total if total else float('nan'):.3f}",
       f"sipp_retransmissions={retr}", f"wall={wall:.1f}s",
       f"achieved_cps={succ / wall:.0f}",
       f"setup_ms_mean={sum(rtts) / len(rtts) if rtts else float('nan'):.3f}",
       f"setup_ms_p50={pct(50):.3f}", f"p90={pct(90):.3f}", f"p99={pct(99):.3f}",
       f"max={rtts[-1] if rtts else float('nan'):.3f}", f"rtt_samples={len(rtts)}",
       f"udp_rcvbuf_errors={int(rcv1) - int(rcv0)}"]
if sut != "direct":
    out += [f"cpu={100 * cpu / wall:.1f}%", f"cpu_s={cpu:.2f}",
            f"cpu_us_per_call={1e6 * cpu / max(succ, 1):.0f}",
            f"rss_idle_kb={rss0}", f"rss_peak_kb={rss_peak}", f"pss_idle_kb={pss0}"]
if held:
    hr, hp = map(int, held.split())
    out += [f"held_rss_kb={hr}", f"held_pss_kb={hp}",
            f"rss_per_held_call_kib={(hr - int(rss0)) / int(calls):.2f}",
            f"pss_per_held_call_kib={(hp - int(pss0)) / int(calls):.2f}"]
    if held_active:
        out.append(f"tapir_calls_active_when_sampled={held_active}")
if extra:
    out.append(extra)
print("result: " + " ".join(out))
PY
if [ -n "${tcpdump_pid:-}" ]; then
  kill -INT "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null; tcpdump_pid=""
  grep -h "dropped by kernel" "$work/tcpdump.err" | sed 's/^/tcpdump: /'
  python3 "$bench_dir/added_latency.py" "$work/sip.pcap" "${target##*:}" "$work/steal.txt"
  [ "${KEEP_PCAP:-0}" = 1 ] || rm -f "$work/sip.pcap"
fi
echo "work dir: $work"
