# Shared helpers for the bench scripts (sourced, not run).
#
# Environment:
#   TAPIR_BIN    tapir binary (default: target/release/tapir of this repository, rebuilt first)
#   MAX_LOAD     wait until the 1-minute load average is below this before measuring (default 1.0)
#   LOAD_WAIT_S  give up waiting after this many seconds and measure anyway (default 300)
#   SUT_CPUS     CPU list (taskset -c) for tapir, and SIPP_CPUS for SIPp and tcpdump, to keep
#                the load generator off the cores of the system under test (default: unpinned)

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
TAPIR_BIN_GIVEN=${TAPIR_BIN:-}
TAPIR_BIN=${TAPIR_BIN:-${CARGO_TARGET_DIR:-$repo_dir/target}/release/tapir}
HZ=$(getconf CLK_TCK)
TAPIR_HTTP=${TAPIR_HTTP:-127.0.0.1:9090}
TAPIR_SIP=${TAPIR_SIP:-127.0.0.1:5090}
KAM_SIP=${KAM_SIP:-127.0.0.1:5060}
UAS_PORT=${UAS_PORT:-25070}

# Prefix for load-generator commands: pins them to SIPP_CPUS when set. An array rather than a
# function so that `$!` of a backgrounded command is the command itself (taskset execs it).
LOAD_PIN=()
[ -n "${SIPP_CPUS:-}" ] && LOAD_PIN=(taskset -c "$SIPP_CPUS")

log() { echo "[$(date +%T)] $*" >&2; }

# Waits for a quiet machine: the 2 cores are shared with builds.
wait_quiet() {
  local max=${MAX_LOAD:-1.0} waited=0 limit=${LOAD_WAIT_S:-300}
  while :; do
    local l1
    l1=$(cut -d' ' -f1 /proc/loadavg)
    if python3 -c "import sys; sys.exit(0 if $l1 < $max else 1)"; then break; fi
    if [ "$waited" -ge "$limit" ]; then log "load still $l1 after ${limit}s, measuring anyway"; break; fi
    sleep 10; waited=$((waited + 10))
  done
  log "uptime: $(uptime)"
  echo "uptime_before: $(uptime)"
}

# utime+stime ticks of a process and all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Sum of utime+stime ticks over several pids.
cpu_ticks_sum() { local t=0 p; for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done; echo $t; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Proportional set size: shared pages (Kamailio's shm) are counted once across processes.
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
pss_kb_sum() { local t=0 p; for p in "$@"; do t=$((t + $(pss_kb "$p"))); done; echo $t; }

# Direct children of a pid (Kamailio's workers).
children_of() { awk -v pp="$1" '$4 == pp {print $1}' /proc/[0-9]*/stat 2>/dev/null; }

# Sum of one Prometheus metric (all label sets, or those matching a label regex).
metric() {
  local name=$1 filter=${2:-}
  curl -s "http://$TAPIR_HTTP/metrics" | awk -v n="$name" -v f="$filter" '
    $1 ~ "^"n"({|$)" && (f == "" || $1 ~ f) { s += $2 } END { printf "%d\n", s }'
}

# Samples a value command every second into a file until the pid is gone or the flag file is.
# usage: sampler OUTFILE FLAGFILE CMD...
sampler() {
  local out=$1 flag=$2; shift 2
  while [ -e "$flag" ]; do echo "$(date +%s) $("$@")" >>"$out"; sleep 1; done
}

# Starts tapir with a config file; sets TAPIR_PID. Extra args: environment assignments.
start_tapir() {
  local cfg=$1 work=$2; shift 2
  # A stale binary measures old code: rebuild the default one first (a no-op when current).
  if [ -z "${TAPIR_BIN_GIVEN:-}" ]; then
    (cd "$repo_dir" && cargo build --release -q -p tapir) || exit 1
  fi
  [ -x "$TAPIR_BIN" ] || { echo "no tapir binary at $TAPIR_BIN (cargo build --release -p tapir)" >&2; exit 1; }
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  (cd "$work" && exec ${SUT_CPUS:+taskset -c "$SUT_CPUS"} env "$@" "$TAPIR_BIN" --config "$cfg" >"$work/tapir.log" 2>&1) &
  TAPIR_PID=$!
  local i
  for i in $(seq 1 100); do
    curl -sf "http://$TAPIR_HTTP/metrics" >/dev/null 2>&1 && return 0
    kill -0 "$TAPIR_PID" 2>/dev/null || { cat "$work/tapir.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "tapir did not come up" >&2; exit 1
}

stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  local i
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# Starts Kamailio (bench/kamailio.cfg) as a stateful proxy on $KAM_SIP toward the callee;
# sets KAM_PID (main process). Args: extra -A defines, e.g. WITH_RTPENGINE.
start_kamailio() {
  local work=$1; shift
  local defs=() d
  for d in "$@"; do defs+=(-A "$d"); done
  ulimit -n 65536 2>/dev/null || true
  kamailio -f "$bench_dir/kamailio.cfg" -DD -E -m "${KAM_SHM_MB:-512}" -M 16 \
    "${defs[@]}" -w "$work" -Y "$work" >"$work/kamailio.log" 2>&1 &
  KAM_PID=$!
  local i
  for i in $(seq 1 50); do
    ss -lun | grep -q "${KAM_SIP}\b" && [ -n "$(children_of "$KAM_PID")" ] && { sleep 0.5; return 0; }
    kill -0 "$KAM_PID" 2>/dev/null || { cat "$work/kamailio.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "kamailio did not come up" >&2; cat "$work/kamailio.log" >&2; exit 1
}

# Kamailio's main process and its workers.
kamailio_pids() { echo "$KAM_PID $(children_of "$KAM_PID" | tr '\n' ' ')"; }

# Starts rtpengine in userspace with per-call pcap recording into $work/rtpengine-spool
# (RECORD=0 turns recording off); sets RTPE_PID.
start_rtpengine() {
  local work=$1 rec=()
  mkdir -p "$work/rtpengine-spool"
  if [ "${RECORD:-1}" = 1 ]; then
    rec=(--recording-dir="$work/rtpengine-spool" --recording-method=pcap)
  fi
  ulimit -n 65536 2>/dev/null || true
  # rtpengine 10.5 may crash on SIGTERM at shutdown: keep it from leaving a core file.
  (ulimit -c 0; exec rtpengine --config-file=none -f -E --table=-1 --interface=127.0.0.1 \
    --listen-ng=127.0.0.1:2223 --port-min=30000 --port-max=40000 "${rec[@]}" \
    --log-level=4 >"$work/rtpengine.log" 2>&1) &
  RTPE_PID=$!
  local i
  for i in $(seq 1 50); do
    ss -lun | grep -q '127.0.0.1:2223\b' && return 0
    kill -0 "$RTPE_PID" 2>/dev/null || { cat "$work/rtpengine.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "rtpengine did not come up" >&2; exit 1
}

# Kernel UDP counters (system-wide): receive-buffer overflows are packets the kernel dropped
# before any process read them.
udp_rcvbuf_errors() { awk '/^Udp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp; }
# Kernel drops (receive buffer full) on the UDP sockets bound to a local port, summed.
udp_port_drops() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p=":$hex" '$2 ~ p"$" { s += $NF } END { print s + 0 }' /proc/net/udp /proc/net/udp6
}
# Datagrams to a port nobody listens on: e.g. echoes that arrive after a call's ports closed.
udp_noports() { awk '/^Udp:/ { if (h) { print $3; exit } h = 1 }' /proc/net/snmp; }

# Last row of a SIPp -trace_stat file: field by header name.
stat_field() {
  local csv=$1 name=$2
  python3 - "$csv" "$name" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
h = rows[0]
print(rows[-1][h.index(sys.argv[2])])
PY
}
