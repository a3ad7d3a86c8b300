#!/bin/bash
# SRTP against plain RTP through the binary: CPU per recorded call-second of tapir with SDES-SRTP
# on both legs, and with plain RTP, under the same load from the same generator.
#
# SIPp sends no SRTP, so the load is srtp-load (tests/src/bin/srtp-load.rs, built here in
# release): it plays caller and callee, CALLS calls over SIP/UDP at RATE_CPS, each held
# DURATION_S, 20 ms PCMA both ways. In `srtp` mode the caller offers RTP/SAVP with its own
# a=crypto and the callee answers with its own key, so tapir unprotects what arrives on each
# leg and protects toward the other with its own keys; in `plain` mode it is RTP/AVP. tapir runs
# bench/tapir-bench.toml with every call recorded as WAV (as bench/recorded.sh), whose route
# leaves srtp at its default (`allow` on both legs): the same configuration for both modes.
#
# usage: bench/srtp.sh MODE CALLS DURATION_S [RATE_CPS]
#   MODE   srtp | plain   one run, one `result:` line
#          both           REPS runs of each (default 3), alternated plain, srtp, plain, ...;
#                         every `result:` line is also appended to OUT (default
#                         bench/results/YYYY-MM-DD-srtp-load.txt), then the means and their ratio
#
# Examples:
#   bench/srtp.sh both 100 60          # 100 calls x 60 s, 3 runs of each, alternated
#   SUITE=AEAD_AES_128_GCM bench/srtp.sh srtp 100 60
#
# Figures in each `result:` line:
#   cpu_ms_per_call_s_window   tapir's CPU while all calls are up (the generator reads
#                              /proc/PID/stat when the last call is up and when the first
#                              hangs up), per call-second of that window: the steady state
#   cpu_ms_per_call_s_incl_finish   from before the first INVITE until every recording is
#                              finished and catalogued, per call-second placed (as
#                              bench/recorded.sh counts it)
#   dropped / srtp_dropped / tap_dropped   packets tapir dropped (all must be 0), kernel drops
#                              on tapir's relay sockets, relayed counts per leg, the sidecars'
#                              packet counters, and what the generator sent, received and
#                              could not decrypt
# Environment: SUITE (srtp mode's suite, default AES_CM_128_HMAC_SHA1_80), LOAD_BIN (the
# generator; default: built from this checkout), UAC_PORT (default 25080), RTP_BASE (the
# generator's first RTP port, default 26000; it uses 4 x CALLS ports from there), KEEP=1 keeps
# the work directory, and bench/lib.sh's (TAPIR_BIN, MAX_LOAD, SUT_CPUS, SIPP_CPUS for the
# generator).
set -u
. "$(dirname "$0")/lib.sh"

mode=${1:?MODE}
calls=${2:?CALLS}
dur=${3:?DURATION_S}
rate=${4:-20}
UAC_PORT=${UAC_PORT:-25080}
RTP_BASE=${RTP_BASE:-26000}
SUITE=${SUITE:-AES_CM_128_HMAC_SHA1_80}
LOAD_BIN_GIVEN=${LOAD_BIN:-}
LOAD_BIN=${LOAD_BIN:-${CARGO_TARGET_DIR:-$repo_dir/target}/release/srtp-load}

build_load() {
  if [ -z "$LOAD_BIN_GIVEN" ]; then
    (cd "$repo_dir" && cargo build --release -q -p tapir-tests --bin srtp-load) || exit 1
  fi
  [ -x "$LOAD_BIN" ] || { echo "no generator at $LOAD_BIN" >&2; exit 1; }
}

# One run: prints the generator's line and one `result:` line.
one() {
  local m=$1 work cfg c0 c_load c_done rcv0 rcv1 t_load_end t_done
  work=$(mktemp -d /tmp/bench-srtp-XXXX)
  cfg=$work/tapir.toml
  mkdir -p "$work/spool" "$work/recordings"
  cp "$bench_dir/tapir-bench.toml" "$cfg"
  # The route is the file's last table: these keys land on it.
  cat >>"$cfg" <<EOF
record = "always"
format = "wav"

[recording]
spool_dir = "$work/spool"
recordings_dir = "$work/recordings"
format = "wav"
EOF
  start_tapir "$cfg" "$work"
  wait_quiet
  sleep 1
  local rss0
  rss0=$(rss_kb "$TAPIR_PID")
  rcv0=$(udp_rcvbuf_errors)
  touch "$work/sampling"
  python3 "$bench_dir/udp_drops.py" 30000 54999 "$work/sampling" "$work/udp_drops.txt" "$TAPIR_PID" &
  local drops_pid=$!
  sampler "$work/mem.txt" "$work/sampling" rss_kb "$TAPIR_PID" &
  c0=$(cpu_ticks "$TAPIR_PID")
  "${LOAD_PIN[@]}" "$LOAD_BIN" --target "$TAPIR_SIP" --uac "127.0.0.1:$UAC_PORT" \
    --uas "127.0.0.1:$UAS_PORT" --calls "$calls" --duration "$dur" --rate "$rate" --mode "$m" \
    --suite "$SUITE" --rtp-base "$RTP_BASE" --tapir-pid "$TAPIR_PID" | tee "$work/load.out"
  local load_rc=${PIPESTATUS[0]}
  t_load_end=$(date +%s.%N)
  c_load=$(cpu_ticks "$TAPIR_PID")
  rcv1=$(udp_rcvbuf_errors)
  rm -f "$work/sampling"
  wait "$drops_pid"
  local relayed_a relayed_b dropped srtp_dropped tap_dropped detail
  relayed_a=$(metric tapir_rtp_packets_relayed_total 'a_rtp"')
  relayed_b=$(metric tapir_rtp_packets_relayed_total 'b_rtp"')
  dropped=$(metric tapir_rtp_packets_dropped_total)
  srtp_dropped=$(metric tapir_srtp_packets_dropped_total)
  tap_dropped=$(metric tapir_tap_dropped_total)
  detail=$(curl -s "http://$TAPIR_HTTP/metrics" | grep -E '^tapir_(srtp|rtp)_packets_dropped_total' | awk '$2 != 0' | tr ' \n' '=,')
  local n
  for _ in $(seq 1 600); do
    n=$(find "$work/recordings" -name '*.wav' 2>/dev/null | wc -l)
    [ "$n" -ge "$calls" ] && [ "$(metric tapir_recordings_active)" = 0 ] && break
    sleep 1
  done
  t_done=$(date +%s.%N)
  c_done=$(cpu_ticks "$TAPIR_PID")
  stop_pid "$TAPIR_PID"
  python3 - "$work" "$m" "$calls" "$dur" "$c0" "$c_load" "$c_done" "$HZ" "$t_load_end" "$t_done" \
    "$relayed_a" "$relayed_b" "$dropped" "$srtp_dropped" "$tap_dropped" "$rcv0" "$rcv1" "$rss0" \
    "$load_rc" "${detail%,}" "$(cat "$work/udp_drops.txt")" <<'PY'
import glob, json, sys
(work, mode, calls, dur, c0, c_load, c_done, hz, t_load_end, t_done, ra, rb, dropped, sdropped,
 tap, rcv0, rcv1, rss0, load_rc, detail, sock) = sys.argv[1:]
calls, dur, hz = int(calls), int(dur), int(hz)
gen = {}
for l in open(f"{work}/load.out"):
    if l.startswith("srtp-load:"):
        gen = dict(kv.split("=", 1) for kv in l.split()[1:])
mem = [int(l.split()[1]) for l in open(f"{work}/mem.txt") if len(l.split()) == 2]
rss_peak = max(mem, default=0)
metas = []
for p in glob.glob(f"{work}/recordings/**/*.json", recursive=True):
    if p.endswith(".peaks.json"):
        continue
    try:
        metas.append(json.load(open(p)))
    except ValueError:
        pass
s = lambda ch, k: sum(m.get(ch, {}).get(k, 0) for m in metas)
wavs = len(glob.glob(f"{work}/recordings/**/*.wav", recursive=True))
out = [f"mode={mode}", f"suite={gen.get('suite', '?')}", f"calls={calls}", f"dur={dur}",
       f"load_rc={load_rc}", f"completed={gen.get('completed', '?')}",
       f"failed={gen.get('failed', '?')}",
       f"cpu_ms_per_call_s_window={gen.get('cpu_ms_per_call_s_window', '?')}",
       f"window_s={gen.get('window_s', '?')}",
       f"cpu_ms_per_call_s_load={1000 * (int(c_load) - int(c0)) / hz / (calls * dur):.3f}",
       f"cpu_ms_per_call_s_incl_finish={1000 * (int(c_done) - int(c0)) / hz / (calls * dur):.3f}",
       f"finish_wait_s={float(t_done) - float(t_load_end):.1f}",
       f"relayed_a_rtp={ra}", f"relayed_b_rtp={rb}", f"dropped={dropped}",
       f"srtp_dropped={sdropped}", f"tap_dropped={tap}",
       "relay_socket_" + sock.split()[0], "relay_socket_kernel_" + sock.split()[1],
       f"udp_rcvbuf_errors_system={int(rcv1) - int(rcv0)}",
       f"rss_per_call_kib={(rss_peak - int(rss0)) / calls:.1f}"]
for k in ("caller_sent", "callee_sent", "caller_received", "callee_received",
          "caller_undecryptable", "callee_undecryptable", "sender_late_max_ms"):
    out.append(f"gen_{k}={gen.get(k, '?')}")
out += [f"recordings={len(metas)}", f"wav_files={wavs}",
        f"complete={sum(1 for m in metas if m.get('complete'))}",
        f"rec_customer_received={s('customer', 'received')}",
        f"rec_agent_received={s('agent', 'received')}",
        f"rec_lost={s('customer', 'lost') + s('agent', 'lost')}",
        f"rec_late_dropped={s('customer', 'late_dropped') + s('agent', 'late_dropped')}",
        f"rec_tap_drops={sum(m.get('tap_drops', 0) for m in metas)}"]
if detail:
    out.append(f"dropped_by_reason={detail}")
print("result: " + " ".join(out))
PY
  echo "work dir: $work"
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"; fi
}

cleanup() { [ -n "${TAPIR_PID:-}" ] && stop_pid "$TAPIR_PID"; }
trap cleanup EXIT

build_load
case $mode in
  srtp|plain) one "$mode" ;;
  both)
    reps=${REPS:-3}
    out=${OUT:-$bench_dir/results/$(date +%F)-srtp-load.txt}
    mkdir -p "$(dirname "$out")"
    commit=${TAPIR_COMMIT:-$(git -C "$repo_dir" rev-parse --short HEAD 2>/dev/null || echo unknown)}
    for rep in $(seq 1 "$reps"); do
      for m in plain srtp; do
        runlog=$(mktemp /tmp/bench-srtp-run-XXXX.log)
        one "$m" >"$runlog" 2>&1
        cat "$runlog"
        line=$(grep '^result:' "$runlog")
        rm -f "$runlog"
        up=$(awk '{print $1}' /proc/loadavg)
        echo "rep=$rep date=$(date -Is) commit=$commit load1_after=$up $line" | tee -a "$out"
      done
    done
    python3 - "$out" "$commit" "$calls" "$dur" <<'PY'
import statistics, sys
# This commit's runs of this load in OUT (earlier ones of the same day included).
rows = [dict(kv.split("=", 1) for kv in l.split() if "=" in kv)
        for l in open(sys.argv[1]) if "result:" in l and f"commit={sys.argv[2]}" in l]
rows = [r for r in rows if r.get("calls") == sys.argv[3] and r.get("dur") == sys.argv[4]]
for key in ("cpu_ms_per_call_s_window", "cpu_ms_per_call_s_incl_finish"):
    by = {m: [float(r[key]) for r in rows if r.get("mode") == m and r.get(key, "?") != "?"]
          for m in ("plain", "srtp")}
    if by["plain"] and by["srtp"]:
        p, s = statistics.mean(by["plain"]), statistics.mean(by["srtp"])
        pm, sm = statistics.median(by["plain"]), statistics.median(by["srtp"])
        print(f"summary {key}: plain mean {p:.3f} ms {by['plain']} srtp mean {s:.3f} ms "
              f"{by['srtp']} ratio of means {s / p:.2f}, of medians {sm / pm:.2f}")
PY
    ;;
  *) echo "MODE must be srtp, plain or both" >&2; exit 2 ;;
esac
