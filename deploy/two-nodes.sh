#!/usr/bin/env bash
# Two tapir nodes behind Kamailio's dispatcher, sharing one PostgreSQL catalog and one S3
# bucket (docs/deployment.md), proven end to end on loopback:
#
#   1. CALLS calls through Kamailio spread over both nodes; each is catalogued once, with
#      its node, and stored in the bucket with the SHA-256 the catalog says; calls that hold
#      and resume show that re-INVITEs, their ACKs and the BYE follow the Record-Route to
#      the node of the call;
#   2. one node is killed with -9 while it carries calls; Kamailio's OPTIONS probes take it
#      out and new calls through Kamailio keep succeeding on the other node, which leaves
#      the dead node's entries alone;
#   3. the killed node restarts, repairs its interrupted recordings, uploads them once and
#      catalogues them as stored; Kamailio's probes bring it back and it takes calls again;
#   4. the other node gets SIGTERM with a call in progress: Kamailio routes new calls around
#      it (503), its call ends normally, and it exits once that call's recording is stored.
#
# Everything runs from a temporary directory on free loopback ports: a throw-away
# PostgreSQL cluster (as `nobody` when run as root), the test S3 server, two tapir nodes
# (ids `a` and `b`), a SIPp callee, Kamailio with deploy/kamailio/kamailio.cfg, and SIPp
# callers. Every process it starts is stopped when it exits, however it exits.
#
#   deploy/two-nodes.sh           # after `cargo build -p tapir -p tapir-tests --bins`
#                                 # (scripts/test.sh runs it after `cargo test`)
# Environment:
#   TAPIR_BIN   the tapir binary (default: target/debug/tapir); tapir-s3-server and
#               tapir-tone-pcap are taken from the same directory
#   CALLS       calls of the first round (default 20)
#   LIMIT_S     the whole run is stopped and failed past this many seconds (default 240)
#   KEEP=1      keep the temporary directory (it is kept anyway when something failed)
#   CI=true     a missing tool (kamailio, sipp, PostgreSQL) is a failure, not a skip
#
# Prints one PASS/FAIL line per check and a summary; exits non-zero when any check failed.
set -uo pipefail
# Kamailio lives in /usr/sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

repo=$(cd "$(dirname "$0")/.." && pwd)
TAPIR_BIN=${TAPIR_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/tapir}
bindir=$(dirname "$TAPIR_BIN")
S3_BIN=$bindir/tapir-s3-server
TONE_BIN=$bindir/tapir-tone-pcap
CALLS=${CALLS:-20}
LIMIT_S=${LIMIT_S:-240}
KAM_CFG=$repo/deploy/kamailio/kamailio.cfg
SIPP_DIR=$repo/tests/sipp
export AWS_ACCESS_KEY_ID=two-nodes-access
export AWS_SECRET_ACCESS_KEY=two-nodes-secret-key
export NO_COLOR=1
unset RUST_LOG

started=$(date +%s)
passed=0
failed=0
say() { echo "[two-nodes $(($(date +%s) - started))s] $*"; }
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
# same A B: the two strings are equal (printed when not).
same() { [ "$1" = "$2" ] || { echo "  got:      $(echo "$1" | head -c 300)"; echo "  expected: $(echo "$2" | head -c 300)"; return 1; }; }
# check DESCRIPTION COMMAND...: PASS when the command succeeds.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
# A broken precondition: nothing after it can be checked.
abort() { fail "$*"; exit 1; }

# ---- tools -------------------------------------------------------------------------------

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 ($2)"); }
need kamailio "apt-get install -y kamailio"
need sipp "apt-get install -y sip-tester"
need python3 "apt-get install -y python3"
need curl "apt-get install -y curl"
need sha256sum coreutils
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || missing+=("PostgreSQL (apt-get install -y postgresql)")
if [ "$(id -u)" -eq 0 ]; then need runuser util-linux; fi
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${CI:-}" = true ]; then
        echo "FAIL: missing: ${missing[*]}"
        exit 1
    fi
    echo "SKIPPED: deploy/two-nodes.sh needs: ${missing[*]}"
    exit 0
fi
for b in "$TAPIR_BIN" "$S3_BIN" "$TONE_BIN"; do
    [ -x "$b" ] || { echo "FAIL: $b is missing: cargo build -p tapir -p tapir-tests --bins"; exit 1; }
done

# ---- the temporary directory and the clean-up --------------------------------------------

work=$(mktemp -d /tmp/tapir-two-nodes.XXXXXX)
# PostgreSQL runs as `nobody`, who must reach its directory inside.
chmod 755 "$work"
pids=()   # process groups started here (each service runs under setsid)
pg_started=0
watchdog=
summary=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ "$summary" = 1 ] || echo "two-nodes: $passed passed, $failed failed"
    [ -n "$watchdog" ] && kill -KILL -- "-$watchdog" 2>/dev/null
    local p
    for p in "${pids[@]}"; do
        kill -KILL -- "-$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    if [ "$pg_started" = 1 ]; then
        pg_ctl_as pg_ctl stop -D "$work/pg/data" -m immediate -w >/dev/null 2>&1 ||
            echo "could not stop PostgreSQL of $work/pg/data"
    fi
    if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ] || [ "${KEEP:-0}" = 1 ]; then
        echo "logs kept in $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
on_signal() {
    if [ -e "$work/.timed-out" ]; then
        fail "still running after ${LIMIT_S}s: stopped"
    else
        fail "interrupted"
    fi
    exit 1
}
trap on_signal INT TERM
setsid bash -c "sleep $LIMIT_S; touch '$work/.timed-out'; kill -TERM $$" </dev/null >/dev/null 2>&1 &
watchdog=$!

# spawn DIR LOG COMMAND...: starts a service in DIR, in its own process group (setsid, so
# that the clean-up ends it with everything it forked); its output goes to LOG. Sets $spawned.
spawn() {
    local dir=$1 log=$2; shift 2
    (cd "$dir" && exec setsid "$@" >>"$log" 2>&1 </dev/null) &
    spawned=$!
    pids+=("$spawned")
}

# forget PID: a process reaped here leaves the clean-up list (its number may be reused).
forget() {
    local p keep=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# Waits up to SECONDS for COMMAND to succeed (polling, not sleeping blindly).
wait_for() {
    local secs=$1; shift
    local end=$(($(date +%s%N) / 1000000 + secs * 1000))
    while [ "$(($(date +%s%N) / 1000000))" -lt "$end" ]; do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}

# Free loopback ports, from 10000-19999 (the Rust harness takes its ports elsewhere):
#   free_ports N       N ports free for both UDP and TCP
#   free_block LEN     the first of LEN consecutive free UDP ports (even)
free_ports() {
    python3 - "$@" <<'EOF'
import random, socket, sys
args = sys.argv[1:]
held, out = [], []
def bindable(port, tcp=True):
    socks = []
    try:
        kinds = [socket.SOCK_DGRAM] + ([socket.SOCK_STREAM] if tcp else [])
        for kind in kinds:
            s = socket.socket(socket.AF_INET, kind)
            socks.append(s)
            s.bind(("127.0.0.1", port))
        held.extend(socks)
        return True
    except OSError:
        for s in socks:
            s.close()
        return False
if args[0] == "block":
    n = int(args[1])
    while True:
        base = random.randrange(15000, 19999 - n, 2)
        if all(bindable(p, tcp=False) for p in range(base, base + n)):
            print(base)
            break
        for s in held:
            s.close()
        held.clear()
else:
    while len(out) < int(args[0]):
        p = random.randrange(10000, 15000)
        if p not in out and bindable(p):
            out.append(p)
    print(" ".join(map(str, out)))
EOF
}
free_block() { free_ports block "$1"; }

# ---- PostgreSQL --------------------------------------------------------------------------

pg_ctl_as() {
    local tool=$1; shift
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$work/pg" && runuser -u nobody -- "$pgbin/$tool" "$@")
    else
        (cd "$work/pg" && "$pgbin/$tool" "$@")
    fi
}

read -r pg_port s3_port kam_port a_sip b_sip a_http b_http uas_port uas_held_port \
    <<<"$(free_ports 9)"
mkdir -p "$work/pg"
[ "$(id -u)" -eq 0 ] && chown nobody "$work/pg"
chmod 700 "$work/pg"
say "PostgreSQL on 127.0.0.1:$pg_port"
pg_ctl_as initdb -D "$work/pg/data" -U postgres -A trust -E UTF8 --no-sync >"$work/pg-init.log" 2>&1 ||
    abort "initdb (see $work/pg-init.log)"
pg_ctl_as pg_ctl -D "$work/pg/data" -l "$work/pg/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $work/pg -c fsync=off -c max_connections=60" \
    start >"$work/pg-start.log" 2>&1 || abort "PostgreSQL start (see $work/pg-start.log)"
pg_started=1
psql_() { "$pgbin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -XAtq -v ON_ERROR_STOP=1 "$@"; }
psql_ -d postgres -c "CREATE DATABASE tapir" || abort "create the catalog database"
sql() { psql_ -d tapir -F ' ' -c "$1"; }
# sql_is QUERY VALUE: the query answers VALUE (for wait_for, which runs it at each poll).
sql_is() { [ "$(sql "$1")" = "$2" ]; }
catalog_url="postgres://postgres@127.0.0.1:$pg_port/tapir"

# ---- S3 ----------------------------------------------------------------------------------

mkdir -p "$work/s3"
spawn "$work" "$work/s3.log" "$S3_BIN" --root "$work/s3" --listen "127.0.0.1:$s3_port" --bucket recordings
wait_for 20 grep -q '^listening' "$work/s3.log" || abort "the S3 server did not start (see $work/s3.log)"
bucket=$work/s3/recordings
say "S3 bucket 'recordings' on 127.0.0.1:$s3_port"

# ---- the callee, and the tone the parties play -------------------------------------------

mkdir -p "$work/uas"
"$TONE_BIN" "$work/uas/tone.pcap" 30 || abort "write the tone pcap"
sipp_common=(-nostdin -trace_err)
spawn "$work/uas" "$work/uas/sipp.log" sipp -sf "$SIPP_DIR/uas_tone.xml" \
    -i 127.0.0.1 -p "$uas_port" -mp "$(free_block 4)" "${sipp_common[@]}"
# A callee that answers the caller's hold and resume re-INVITEs.
mkdir -p "$work/uas-held"
spawn "$work/uas-held" "$work/uas-held/sipp.log" sipp -sf "$SIPP_DIR/uas_held.xml" \
    -i 127.0.0.1 -p "$uas_held_port" -mp "$(free_block 4)" "${sipp_common[@]}"

# ---- two tapir nodes ---------------------------------------------------------------------

# write_node ID SIP_PORT HTTP_PORT
write_node() {
    local id=$1 sip=$2 http=$3 rtp
    rtp=$(free_block 64)
    mkdir -p "$work/$id"
    cat >"$work/$id/tapir.toml" <<EOF
[sip]
listen_udp = ["127.0.0.1:$sip"]
listen_tcp = ["127.0.0.1:$sip"]

[media]
ips = ["127.0.0.1"]
port_min = $rtp
port_max = $((rtp + 63))

[http]
listen = "127.0.0.1:$http"

[log]
level = "info"

[node]
id = "$id"

[catalog]
url = "$catalog_url"

[storage]
s3 = { endpoint = "http://127.0.0.1:$s3_port", bucket = "recordings", region = "us-east-1", allow_http = true }
retry_initial_ms = 200
retry_max_ms = 2000

[[routes]]
name = "held"
target = "sip:127.0.0.1:$uas_held_port"
customer = "caller"
user_prefix = "held"
direction = "inbound"
record = "always"

[[routes]]
name = "callee"
target = "sip:127.0.0.1:$uas_port"
customer = "caller"
direction = "inbound"
record = "always"
EOF
}

declare -A node_pid node_http
start_node() {
    spawn "$work/$1" "$work/$1/tapir.log" "$TAPIR_BIN" --config tapir.toml
    node_pid[$1]=$spawned
}
node_ready() { [ "$(grep -c 'tapir ready' "$work/$1/tapir.log" 2>/dev/null)" -ge "${2:-1}" ]; }

write_node a "$a_sip" "$a_http"
write_node b "$b_sip" "$b_http"
node_http=([a]=$a_http [b]=$b_http)
# Both at once on an empty catalog: their migrations must not collide.
start_node a
start_node b
for id in a b; do
    wait_for 60 node_ready "$id" || abort "node $id did not start (see $work/$id/tapir.log)"
done
say "nodes a (SIP $a_sip) and b (SIP $b_sip) ready"
check "both nodes migrated one empty catalog at once (schema applied once per version)" \
    same "$(sql "SELECT count(*) = count(DISTINCT version) AND count(*) > 0 FROM _sqlx_migrations")" t

# metric NODE NAME [LABEL-REGEX]: the sum of a metric's samples on a node.
metric() {
    curl -s --max-time 5 "http://127.0.0.1:${node_http[$1]}/metrics" |
        awk -v n="$2" -v f="${3:-}" '$1 ~ "^"n"({|$)" && (f == "" || $1 ~ f) { s += $2 } END { printf "%d\n", s }'
}

# ---- Kamailio ----------------------------------------------------------------------------

mkdir -p "$work/kamailio"
cat >"$work/kamailio/dispatcher.list" <<EOF
1 sip:127.0.0.1:$a_sip 0 0
1 sip:127.0.0.1:$b_sip 0 0
EOF
# One worker: SIPp counts a 180 that overtakes its 200 as a failed call.
spawn "$work/kamailio" "$work/kamailio/kamailio.log" kamailio -DD -E -f "$KAM_CFG" \
    -A "LISTEN=udp:127.0.0.1:$kam_port" -A "DS_LIST=\"$work/kamailio/dispatcher.list\"" \
    -A DS_PING_S=1 -A FR_TIMER_MS=3000 -A KAM_CHILDREN=1 \
    -P "$work/kamailio/kamailio.pid" -Y "$work/kamailio" -w "$work/kamailio" -m 64 -M 8
kam_log=$work/kamailio/kamailio.log
# Kamailio is up once its OPTIONS probes reach both nodes.
probed() { [ "$(metric "$1" tapir_sip_messages_in_total)" -ge "${2:-1}" ]; }
wait_for 30 probed a && wait_for 10 probed b ||
    abort "Kamailio's OPTIONS probes never reached both nodes (see $kam_log)"
say "Kamailio on 127.0.0.1:$kam_port probing both nodes"

# ---- callers -----------------------------------------------------------------------------

# run_calls NAME CALLS RATE HOLD_MS [SCENARIO USER]: SIPp callers through Kamailio, in the
# background (sets $uac_pid; its directory is $work/NAME). The default scenario plays a tone
# for HOLD_MS and hangs up; the callee is chosen by the Request-URI user.
declare -A prep_sip prep_media
# prepare_calls NAME: picks the ports and lays the directory of a run ahead of time.
prepare_calls() {
    prep_sip[$1]=$(free_ports 1)
    prep_media[$1]=$(free_block 4)
    mkdir -p "$work/$1"
    cp "$work/uas/tone.pcap" "$work/$1/"
}
run_calls() {
    local name=$1 n=$2 rate=$3 hold=$4 scenario=${5:-uac_tone.xml} user=${6:-callee} sport mport
    [ -n "${prep_sip[$name]:-}" ] || prepare_calls "$name"
    sport=${prep_sip[$name]}
    mport=${prep_media[$name]}
    spawn "$work/$name" "$work/$name/sipp.log" sipp "127.0.0.1:$kam_port" \
        -sf "$SIPP_DIR/$scenario" -s "$user" -i 127.0.0.1 -p "$sport" -mp "$mport" \
        -m "$n" -r "$rate" -l "$n" -d "$hold" "${sipp_common[@]}" -trace_msg
    uac_pid=$spawned
}
# wait_calls PID SECONDS: sets $rc to SIPp's exit code (0: every call succeeded), or -2
# when it ran out of time (and was killed).
wait_calls() {
    local pid=$1 end=$(($(date +%s) + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$end" ]; then
            kill -KILL -- "-$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            forget "$pid"
            rc=-2
            return
        fi
        sleep 0.2
    done
    wait "$pid"
    rc=$?
    forget "$pid"
}
# The Call-IDs a SIPp run used (from its message trace).
call_ids_of() { cat "$work/$1"/*_messages.log 2>/dev/null | sed -n 's/^Call-ID: *//p' | tr -d '\r' | sort -u; }

stored_count() { sql "SELECT count(*) FROM recordings WHERE state = 'stored'"; }
all_stored() { [ "$(stored_count)" -ge "$1" ] && [ "$(sql "SELECT count(*) FROM recordings WHERE state <> 'stored'")" = 0 ]; }

# Every catalogued recording: its object is in the bucket with the catalogued size and hash.
verify_bucket() {
    local bad=0 key size sha f
    while read -r key size sha; do
        f=$bucket/$key
        if [ ! -f "$f" ]; then
            echo "  missing object $key"; bad=$((bad + 1)); continue
        fi
        [ "$(stat -c %s "$f")" = "$size" ] || { echo "  $key: size $(stat -c %s "$f") != $size"; bad=$((bad + 1)); }
        [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sha" ] || { echo "  $key: SHA-256 differs"; bad=$((bad + 1)); }
    done < <(sql "SELECT storage_key, size_bytes, sha256 FROM recordings ORDER BY contact_id")
    [ "$bad" = 0 ]
}

# ---- round 1: calls spread over both nodes -----------------------------------------------

say "round 1: $CALLS calls through Kamailio"
run_calls round1 "$CALLS" 10 2000
wait_calls "$uac_pid" 60
check "round 1: all $CALLS calls through Kamailio succeeded (sipp rc $rc)" test "$rc" = 0
wait_for 40 all_stored "$CALLS"
for id in a b; do
    n=$(metric "$id" tapir_calls_total)
    check "round 1: node $id took calls (tapir_calls_total = $n)" test "$n" -gt 0
done
check "round 1: $CALLS entries catalogued, each stored, distinct contact ids" \
    same "$(sql "SELECT count(*), count(DISTINCT contact_id), count(*) FILTER (WHERE state = 'stored') FROM recordings")" "$CALLS $CALLS $CALLS"
check "round 1: each entry has a 64-digit SHA-256, a size and a storage key" \
    same "$(sql "SELECT count(*) FROM recordings WHERE sha256 ~ '^[0-9a-f]{64}$' AND size_bytes > 44 AND storage_key IS NOT NULL")" "$CALLS"
check "round 1: entries of both nodes, and of no other" \
    same "$(sql "SELECT string_agg(DISTINCT node, ',' ORDER BY node) FROM recordings")" "a,b"
check "round 1: each SIPp call catalogued exactly once (its Call-ID, once)" \
    same "$(call_ids_of round1) $CALLS" \
    "$(sql "SELECT call_id_customer FROM recordings ORDER BY 1" | sort -u) $(sql "SELECT count(DISTINCT call_id_customer) FROM recordings")"
for id in a b; do
    n=$(metric "$id" tapir_calls_total 'outcome="completed"')
    check "round 1: node $id catalogued as many entries as it completed calls ($n)" \
        same "$(sql "SELECT count(*) FROM recordings WHERE node = '$id'")" "$n"
done
check "round 1: every object in the bucket has the catalogued size and SHA-256" verify_bucket

# ---- in-dialog requests: re-INVITEs through Kamailio reach the node of the call ---------

say "round 1b: 2 calls that hold and resume (re-INVITEs), through Kamailio"
run_calls hold 2 2 700 uac_hold.xml held
wait_calls "$uac_pid" 60
check "round 1b: both calls held and resumed with re-INVITEs through Kamailio, then ended (sipp rc $rc)" \
    test "$rc" = 0
hold_ids=$(call_ids_of hold | sed "s/.*/'&'/" | paste -sd, -)
wait_for 20 sql_is "SELECT count(*) FROM recordings WHERE call_id_customer IN ($hold_ids) AND state = 'stored'" 2
check "round 1b: one stored entry each, one on each node (round robin)" \
    same "$(sql "SELECT count(*), count(DISTINCT node) FROM recordings WHERE call_id_customer IN ($hold_ids) AND state = 'stored' AND route = 'held'")" "2 2"

# ---- round 2: node a killed with -9 mid-call ---------------------------------------------

say "round 2: 4 long calls, then kill -9 node a while it carries some"
run_calls round2 4 4 12000
round2_pid=$uac_pid
# Node a carries calls and has flushed audio of each into its spool (the recorder flushes
# every 0.8 s): a crash then leaves something to repair.
spool_ready() {
    local active files
    active=$(metric a tapir_recordings_active)
    [ "$active" -gt 0 ] || return 1
    [ "$(($(metric a tapir_calls_active) + $(metric b tapir_calls_active)))" -ge 4 ] || return 1
    files=$(find "$work/a/spool" -maxdepth 1 -name '*.wav' -size +24k 2>/dev/null | wc -l)
    [ "$files" -ge "$active" ]
}
wait_for 20 spool_ready || abort "node a never carried a round-2 call with audio in its spool"
killed_calls=$(metric a tapir_recordings_active)
# Round 3 starts the moment node a is gone, before Kamailio's probes can notice.
prepare_calls round3
kill -KILL "${node_pid[a]}"
wait "${node_pid[a]}" 2>/dev/null
forget "${node_pid[a]}"
run_calls round3 6 6 1500
say "killed node a (pid ${node_pid[a]}) with $killed_calls recordings in progress"

# ---- round 3: new calls while node a is dead ---------------------------------------------

wait_calls "$uac_pid" 60
check "round 3: all 6 new calls through Kamailio succeeded with node a dead (sipp rc $rc)" test "$rc" = 0
# Whichever noticed first, a call's time-out (ds_mark_dst) or a probe's, node a is out; the
# probes bring it back after the restart (checked below).
check "round 3: Kamailio took node a out of the rotation (time-out of a call or of a probe)" \
    grep -qE "node sip:127.0.0.1:$a_sip did not answer call .*: marked inactive|tapir node sip:127.0.0.1:$a_sip is down" "$kam_log"
# The first calls after the kill went out before any probe could notice (a probe needs
# FR_TIMER_MS, 3 s here, to time out; the six calls leave within one second), so round
# robin sent some to the dead node: each must have timed out there and failed over to b.
failovers() {
    local cid to_a=0 over=0
    for cid in $(call_ids_of round3); do
        grep -qF "call $cid to node sip:127.0.0.1:$a_sip" "$kam_log" && to_a=$((to_a + 1))
        grep -qF "call $cid failed over to node sip:127.0.0.1:$b_sip" "$kam_log" && over=$((over + 1))
    done
    echo "  calls sent to the dead node: $to_a, failed over to node b: $over"
    [ "$to_a" -ge 1 ] && [ "$over" = "$to_a" ]
}
check "round 3: the calls Kamailio sent to the dead node failed over to node b on time-out" failovers
wait_calls "$round2_pid" 60
say "round 2 callers done (sipp rc $rc: the calls on node a lost their BYE with it)"
r3_ids=$(call_ids_of round3 | sed "s/.*/'&'/" | paste -sd, -)
wait_for 20 sql_is "SELECT count(*) FROM recordings WHERE call_id_customer IN ($r3_ids) AND state = 'stored'" 6
check "round 3: its 6 calls are catalogued once each, all on node b, stored" \
    same "$(sql "SELECT count(*), count(DISTINCT contact_id), count(*) FILTER (WHERE node = 'b' AND state = 'stored') FROM recordings WHERE call_id_customer IN ($r3_ids)")" "6 6 6"
interrupted_ids=$(sql "SELECT contact_id FROM recordings WHERE node = 'a' AND state <> 'stored' ORDER BY 1")
check "while node a is dead its $killed_calls interrupted entries stay as it left them ('recording'; node b does not touch them)" \
    same "$(sql "SELECT count(*) FILTER (WHERE state = 'recording') || ' ' || count(*) FROM recordings WHERE node = 'a' AND state <> 'stored'")" "$killed_calls $killed_calls"

# ---- restart of node a: repair, upload, back in the rotation -----------------------------

say "restarting node a"
restart_at_ms=$(($(date +%s%N) / 1000000))
start_node a
wait_for 60 node_ready a 2 || abort "node a did not restart (see $work/a/tapir.log)"
ids_sql=$(echo "$interrupted_ids" | sed "s/.*/'&'/" | paste -sd, -)
repaired_stored() { test "$(sql "SELECT count(*) FROM recordings WHERE contact_id IN ($ids_sql) AND state = 'stored'")" = "$killed_calls"; }
wait_for 40 repaired_stored
check "restart: node a said what it reconciled (interrupted_in_spool=$killed_calls)" \
    grep -q "reconciled spool, catalog and storage interrupted_in_spool=$killed_calls " "$work/a/tapir.log"
check "restart: node a repaired $killed_calls interrupted recordings" \
    same "$(grep -c 'repaired a recording interrupted by a crash' "$work/a/tapir.log")" "$killed_calls"
check "restart: the interrupted entries are stored, by node a, with their SHA-256, after the restart" \
    same "$(sql "SELECT count(*) FROM recordings WHERE contact_id IN ($ids_sql) AND state = 'stored' AND node = 'a' AND sha256 ~ '^[0-9a-f]{64}$' AND updated_ms >= $restart_at_ms")" "$killed_calls"
sidecars_interrupted() {
    local id key n=0
    for id in $interrupted_ids; do
        key=$(sql "SELECT storage_key FROM recordings WHERE contact_id = '$id'")
        python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("interrupted") is True else 1)' \
            "$bucket/${key%.*}.json" 2>/dev/null && n=$((n + 1))
    done
    [ "$n" = "$killed_calls" ]
}
check "restart: their stored sidecars say interrupted: true" sidecars_interrupted
check "restart: node a's spool holds no audio any more" \
    same "$(find "$work/a/spool" -name '*.wav' -o -name '*.mp3' | wc -l)" 0

# Kamailio's probes find node a again; new calls reach it.
wait_for 20 grep -q "tapir node sip:127.0.0.1:$a_sip is up" "$kam_log"
check "restart: Kamailio's probes put node a back in the rotation" \
    grep -q "tapir node sip:127.0.0.1:$a_sip is up" "$kam_log"
run_calls round4 4 4 1500
wait_calls "$uac_pid" 60
check "round 4: all 4 calls succeeded with both nodes up (sipp rc $rc)" test "$rc" = 0
n=$(metric a tapir_calls_total 'outcome="completed"')
check "round 4: the restarted node a took calls again ($n)" test "$n" -gt 0

# ---- round 5: node b drains on SIGTERM (a rolling upgrade) -------------------------------

say "round 5: a long call on each node, SIGTERM to node b, then new calls"
run_calls round5long 2 2 5000
long_pid=$uac_pid
both_busy() { [ "$(metric a tapir_calls_active)" -ge 1 ] && [ "$(metric b tapir_calls_active)" -ge 1 ]; }
wait_for 20 both_busy || abort "round 5: the long calls did not reach both nodes"
kill -TERM "${node_pid[b]}"
wait_for 10 grep -q "draining: new calls get 503" "$work/b/tapir.log" || abort "node b did not drain"
run_calls round5 4 4 1000
wait_calls "$uac_pid" 60
check "round 5: all 4 new calls through Kamailio succeeded while node b drained (sipp rc $rc)" test "$rc" = 0
r5_ids=$(call_ids_of round5 | sed "s/.*/'&'/" | paste -sd, -)
wait_for 20 sql_is "SELECT count(*) FROM recordings WHERE call_id_customer IN ($r5_ids) AND state = 'stored'" 4
check "round 5: they were all taken by node a" \
    same "$(sql "SELECT count(*) FILTER (WHERE node = 'a') FROM recordings WHERE call_id_customer IN ($r5_ids)")" 4
routed_around() {
    local cid to_b=0 over=0
    for cid in $(call_ids_of round5); do
        grep -qF "call $cid to node sip:127.0.0.1:$b_sip" "$kam_log" && to_b=$((to_b + 1))
        grep -qF "call $cid failed over to node sip:127.0.0.1:$a_sip" "$kam_log" && over=$((over + 1))
    done
    echo "  calls sent to the draining node: $to_b, retried on node a after its 503: $over"
    [ "$over" = "$to_b" ] && grep -q "tapir node sip:127.0.0.1:$b_sip is down" "$kam_log"
}
check "round 5: Kamailio routed around the draining node (503 retried on node a, probes answered 503)" routed_around
wait_calls "$long_pid" 60
check "round 5: the call in progress on the draining node (and on node a) ended normally (sipp rc $rc)" test "$rc" = 0
b_exited() { ! kill -0 "${node_pid[b]}" 2>/dev/null; }
wait_for 30 b_exited
wait "${node_pid[b]}" 2>/dev/null
b_rc=$?
forget "${node_pid[b]}"
check "round 5: node b exited by itself after its last call (status $b_rc)" test "$b_rc" = 0
long_ids=$(call_ids_of round5long | sed "s/.*/'&'/" | paste -sd, -)
check "round 5: node b stored its last call's recording before it exited (not left for a repair)" \
    same "$(sql "SELECT count(*) FROM recordings WHERE call_id_customer IN ($long_ids) AND node = 'b' AND state = 'stored'") $(find "$work/b/spool" -name '*.wav' | wc -l)" "1 0"

# ---- the whole catalog -------------------------------------------------------------------

total=$((CALLS + 2 + 4 + 6 + 4 + 2 + 4))
wait_for 40 all_stored "$total"
check "end: $total entries, one per call, distinct contact ids and Call-IDs, all stored" \
    same "$(sql "SELECT count(*), count(DISTINCT contact_id), count(DISTINCT call_id_customer), count(*) FILTER (WHERE state = 'stored') FROM recordings")" "$total $total $total $total"
check "end: every object in the bucket has the catalogued size and SHA-256" verify_bucket
check "end: nothing left to upload on either node (node b has stopped: its outbox is empty)" \
    same "$(metric a tapir_uploads_pending) $(find "$work/a/spool/outbox" "$work/b/spool/outbox" -type f | wc -l)" "0 0"
check "end: nothing quarantined" \
    same "$(find "$work/a/spool/quarantine" "$work/b/spool/quarantine" -type f 2>/dev/null | wc -l)" 0

say "done in $(($(date +%s) - started))s; entries per node: $(sql "SELECT string_agg(node || '=' || n, ' ') FROM (SELECT node, count(*) AS n FROM recordings GROUP BY node ORDER BY node) x")"
echo "two-nodes: $passed passed, $failed failed"
summary=1
[ "$failed" = 0 ]
