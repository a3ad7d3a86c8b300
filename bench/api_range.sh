#!/usr/bin/env bash
# Time to first byte of a Range request to the recordings API, over loopback HTTP, on a
# 60-minute stereo WAV (8 kHz, 16 bit: 115 MB) in local storage.
#
# The WAV and its sidecar are put in the spool's outbox before tapir starts: tapir's start-up
# reconciliation stores and catalogues them like any finished recording. Then N requests of
# `Range: bytes=1000000-1999999` (a new connection each, as curl makes them) are timed with
# curl's time_starttransfer (connect included), twice: with the file in the page cache
# ("warm"), and with the file's pages dropped before each request ("cold", posix_fadvise
# DONTNEED on the stored file, so the read goes to the disk). One answer is compared byte for
# byte with the stored file's slice.
#
# Usage: bench/api_range.sh [requests per series, default 200]
# Environment: TAPIR_BIN (see lib.sh), MAX_LOAD / LOAD_WAIT_S.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${1:-200}
work=$(mktemp -d)
TAPIR_PID=
cleanup() { [ -n "$TAPIR_PID" ] && stop_pid "$TAPIR_PID"; rm -rf "$work"; }
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
SIP_PORT=$(free_port)
TAPIR_HTTP=127.0.0.1:$(free_port)
ID=bench-range-60min

log "writing a 60-minute WAV into $work/spool/outbox"
mkdir -p "$work/spool/outbox"
python3 - "$work/spool/outbox" "$ID" <<'PY'
import json, os, sys, time, wave
outbox, cid = sys.argv[1], sys.argv[2]
start = int(time.time() * 1000) - 3_700_000
w = wave.open(os.path.join(outbox, cid + ".wav"), "wb")
w.setnchannels(2); w.setsampwidth(2); w.setframerate(8000)
second = os.urandom(32000)  # noise: one second of stereo frames, repeated
for _ in range(3600):
    w.writeframesraw(second)
w.close()
meta = {
    "contact_id": cid, "from": "+4930123456", "to": "201", "route": "bench",
    "direction": "inbound", "station": "201", "agent_id": "anna",
    "start_unix_ms": start, "end_unix_ms": start + 3_600_000,
    "duration_ms": 3_600_000, "call_duration_ms": 3_600_000, "format": "wav",
    "complete": True, "recorded": True,
}
with open(os.path.join(outbox, cid + ".json"), "w") as f:
    json.dump(meta, f)
PY

cat >"$work/tapir.toml" <<EOF
[sip]
listen_udp = ["127.0.0.1:$SIP_PORT"]
listen_tcp = []

[media]
ips = ["127.0.0.1"]
port_min = 30000
port_max = 30999

[http]
listen = "$TAPIR_HTTP"

[log]
level = "warn"

[[routes]]
name = "bench"
target = "sip:127.0.0.1:9"
customer = "caller"
EOF

wait_quiet
start_tapir "$work/tapir.toml" "$work"
# A reading token, as a CRM or the review page's player would present (access control is on).
TOKEN=$(cd "$work" && "$TAPIR_BIN" --config "$work/tapir.toml" token add bench --scope read 2>/dev/null)
AUTH="Authorization: Bearer $TOKEN"
URL="http://$TAPIR_HTTP/api/v1/recordings/$ID/audio"
for i in $(seq 1 600); do
  state=$(curl -s -H "$AUTH" "http://$TAPIR_HTTP/api/v1/recordings/$ID" | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("state", ""))
except Exception: print("")')
  [ "$state" = stored ] && break
  [ "$i" = 600 ] && { echo "the recording was never stored" >&2; cat "$work/tapir.log" >&2; exit 1; }
  sleep 0.1
done
KEY=$(curl -s -H "$AUTH" "http://$TAPIR_HTTP/api/v1/recordings/$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["storage_key"])')
FILE="$work/recordings/$KEY"
SIZE=$(stat -c %s "$FILE")
log "stored as $KEY, $SIZE bytes"

# One answer, byte for byte.
curl -s -o "$work/part" -H "$AUTH" -H 'Range: bytes=1000000-1999999' "$URL"
dd if="$FILE" bs=1000000 skip=1 count=1 status=none of="$work/want"
cmp "$work/part" "$work/want" || { echo "the range differs from the stored file" >&2; exit 1; }

drop_cache() {
  python3 -c 'import os,sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$FILE"
}

series() {
  local name=$1 cold=$2 out="$work/$1.txt" i
  : >"$out"
  for i in $(seq 1 "$N"); do
    [ "$cold" = 1 ] && drop_cache
    curl -s -o /dev/null -H "$AUTH" -H 'Range: bytes=1000000-1999999' \
      -w '%{http_code} %{size_download} %{time_connect} %{time_starttransfer} %{time_total}\n' "$URL" >>"$out"
  done
  python3 - "$name" "$out" <<'PY'
import sys
name, path = sys.argv[1], sys.argv[2]
rows = [l.split() for l in open(path)]
bad = [r for r in rows if r[0] != "206" or r[1] != "1000000"]
if bad:
    sys.exit(f"{name}: unexpected answers {bad[:3]}")
ttfb = sorted(float(r[3]) * 1000 for r in rows)
total = sorted(float(r[4]) * 1000 for r in rows)
def q(v, p):
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
print(f"{name}: n={len(rows)} first byte ms p50={q(ttfb, .5):.2f} p95={q(ttfb, .95):.2f} "
      f"p99={q(ttfb, .99):.2f} max={ttfb[-1]:.2f}; whole MB ms p50={q(total, .5):.2f} p95={q(total, .95):.2f}")
PY
}

echo "file: $SIZE bytes, range bytes=1000000-1999999, tapir $(git -C "$repo_dir" rev-parse --short HEAD)"
series warm 0
series cold 1
echo "uptime_after: $(uptime)"
