#!/usr/bin/env python3
"""Setup latency a proxy adds, read from a loopback capture of its SIP port.

usage: bench/added_latency.py CAPTURE.pcap PROXY_PORT [STEAL_SAMPLES]

SIPp's own setup time (-trace_rtt) only counts in steps of its scheduling loop (4 ms
here), too coarse for a 5 ms target. The capture is exact: for each call it takes

    (first INVITE out of the proxy  - first INVITE into it)
  + (first 2xx out of the proxy     - first 2xx into it)

from the kernel's timestamps on `lo`, so it counts everything the proxy adds (socket
queueing, scheduling, processing) and nothing the endpoints do. Both legs of a call are
matched by an `X-Seq` header the caller puts in its INVITE and the proxy copies to the
other leg (bench/cps.sh with PCAP=1 adds it); the 2xx are matched by Call-ID.

Prints one `added:` line: calls matched, mean, p50, p90, p99, p99.9, max in ms, and the
INVITE and 2xx halves' p99; then the p99 per 10 s window of the run.

STEAL_SAMPLES (bench/cps.sh writes it) holds `epoch_seconds steal_ticks` lines, the
cumulative steal time of /proc/stat about once a second. With it the script also prints the
hypervisor's steal per 10 s window and an `added_quiet:` line: the same figures over the
calls set up in seconds when the host took less than 0.5 % of the machine. On a shared
virtual machine the tail follows the host's steal; the quiet seconds show what the proxy
itself adds.
"""

import bisect
import os
import struct
import sys

QUIET_STEAL_PCT = 0.5


def steal_by_second(path):
    """(start times, steal % of the machine in each interval) from the sampler's lines."""
    hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                rows.append((float(parts[0]), int(parts[1])))
    starts, pcts = [], []
    for (t0, s0), (t1, s1) in zip(rows, rows[1:]):
        if t1 > t0:
            starts.append(t0)
            pcts.append(100.0 * (s1 - s0) / ((t1 - t0) * hz * ncpu))
    return starts, pcts


def packets(path):
    """Yields (timestamp_s, src_port, dst_port, udp_payload) from a pcap of UDP/IPv4."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            sys.exit(f"{path}: empty or truncated capture")
        magic = struct.unpack("<I", head[:4])[0]
        if magic == 0xA1B2C3D4:
            endian, scale = "<", 1e-6
        elif magic == 0xA1B23C4D:
            endian, scale = "<", 1e-9
        elif magic == 0xD4C3B2A1:
            endian, scale = ">", 1e-6
        elif magic == 0x4D3CB2A1:
            endian, scale = ">", 1e-9
        else:
            sys.exit(f"{path}: not a pcap file")
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        # 1: Ethernet (tcpdump -i lo), 113: Linux cooked (-i any), 276: cooked v2.
        l2 = {1: 14, 113: 16, 276: 20}.get(linktype)
        if l2 is None:
            sys.exit(f"{path}: link type {linktype} not handled")
        rec = struct.Struct(endian + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _orig = rec.unpack(h)
            data = f.read(incl)
            ip = data[l2:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0xF) * 4
            udp = ip[ihl:]
            if len(udp) < 8:
                continue
            sport, dport = struct.unpack("!HH", udp[:4])
            yield sec + frac * scale, sport, dport, udp[8:]


def header(msg, name):
    """The value of the first header `name` (case-insensitive; compact forms not needed)."""
    key = name.lower().encode() + b":"
    for line in msg.split(b"\r\n")[1:]:
        if not line:
            break
        if line[: len(key)].lower() == key:
            return line[len(key):].strip().decode(errors="replace")
    return None


def main():
    path, port = sys.argv[1], int(sys.argv[2])
    steal = steal_by_second(sys.argv[3]) if len(sys.argv) > 3 else None
    inv_in, inv_out = {}, {}        # X-Seq -> first time
    callid_seq = {}                 # Call-ID on either leg -> X-Seq
    ok_in, ok_out = {}, {}          # X-Seq -> first time of the INVITE's 2xx
    for t, sport, dport, payload in packets(path):
        first = payload.split(b"\r\n", 1)[0]
        if first.startswith(b"INVITE "):
            seq, cid = header(payload, "X-Seq"), header(payload, "Call-ID")
            if seq is None or cid is None:
                continue
            if header(payload, "To") and ";tag=" in header(payload, "To"):
                continue  # re-INVITE
            callid_seq[cid] = seq
            table = inv_in if dport == port else inv_out if sport == port else None
            if table is not None:
                table.setdefault(seq, t)
        elif first.startswith(b"SIP/2.0 2"):
            cseq = header(payload, "CSeq") or ""
            if not cseq.endswith("INVITE"):
                continue
            seq = callid_seq.get(header(payload, "Call-ID"))
            if seq is None:
                continue
            table = ok_in if dport == port else ok_out if sport == port else None
            if table is not None:
                table.setdefault(seq, t)
    inv, ok, total = [], [], []
    start = min(inv_in.values(), default=0.0)
    windows = {}  # 10 s window of the call's start -> added latencies
    quiet = []  # added latencies of calls set up in seconds of (almost) no steal

    def steal_at(t):
        i = bisect.bisect_right(steal[0], t) - 1
        return steal[1][i] if 0 <= i < len(steal[1]) and t - steal[0][i] < 2.0 else None
    for seq, t0 in inv_in.items():
        if seq in inv_out and seq in ok_in and seq in ok_out:
            a = inv_out[seq] - t0
            b = ok_out[seq] - ok_in[seq]
            inv.append(a * 1e3)
            ok.append(b * 1e3)
            total.append((a + b) * 1e3)
            windows.setdefault(int((t0 - start) // 10), []).append((a + b) * 1e3)
            if steal is not None:
                st = steal_at(t0)
                if st is not None and st < QUIET_STEAL_PCT:
                    quiet.append((a + b) * 1e3)
    if not total:
        sys.exit("no call matched (is X-Seq in the INVITEs, and the port right?)")
    for v in (inv, ok, total):
        v.sort()

    def pct(v, p):
        return v[min(len(v) - 1, int(p / 100 * len(v)))]

    print(
        "added: "
        f"calls={len(total)} of {len(inv_in)} "
        f"mean_ms={sum(total) / len(total):.3f} p50_ms={pct(total, 50):.3f} "
        f"p90_ms={pct(total, 90):.3f} p99_ms={pct(total, 99):.3f} "
        f"p99.9_ms={pct(total, 99.9):.3f} max_ms={total[-1]:.3f} "
        f"invite_p50_ms={pct(inv, 50):.3f} invite_p99_ms={pct(inv, 99):.3f} "
        f"answer_p50_ms={pct(ok, 50):.3f} answer_p99_ms={pct(ok, 99):.3f} "
        f"over_5ms={sum(1 for x in total if x > 5.0)}"
    )
    # The proxy's tables grow while the first calls' transactions linger (32 s); the windows
    # tell that start from the steady state.
    parts = []
    for w in sorted(windows):
        v = sorted(windows[w])
        parts.append(f"{w * 10}-{w * 10 + 10}s:{pct(v, 99):.2f}")
    print("added_p99_by_10s: " + " ".join(parts))
    if steal is None:
        return
    parts = []
    for w in sorted(windows):
        lo, hi = start + w * 10, start + w * 10 + 10
        v = [p for t, p in zip(*steal) if lo <= t < hi]
        if v:
            parts.append(f"{w * 10}-{w * 10 + 10}s:{sum(v) / len(v):.2f}")
    print("host_steal_pct_by_10s: " + " ".join(parts))
    quiet.sort()
    if quiet:
        print(
            f"added_quiet: calls={len(quiet)} (set up in seconds with host steal < "
            f"{QUIET_STEAL_PCT} %) p50_ms={pct(quiet, 50):.3f} p99_ms={pct(quiet, 99):.3f} "
            f"p99.9_ms={pct(quiet, 99.9):.3f} max_ms={quiet[-1]:.3f} "
            f"over_5ms={sum(1 for x in quiet if x > 5.0)}"
        )
    else:
        print(f"added_quiet: calls=0 (no second with host steal < {QUIET_STEAL_PCT} %)")


if __name__ == "__main__":
    main()
