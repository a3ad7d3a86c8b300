#!/usr/bin/env python3
"""Kernel drops on the relay's own UDP sockets during a run.

usage: udp_drops.py PORT_MIN PORT_MAX FLAG_FILE OUT_FILE [PID...]

Every second, reads /proc/net/udp and /proc/net/udp6 and keeps, per socket (inode) bound to a
local port in [PORT_MIN, PORT_MAX], the largest `drops` count seen (packets the kernel
discarded because the socket's receive buffer was full). Sockets close when their call ends,
so the counters are sampled while they live. With PIDs, only sockets those processes hold
count. Stops when FLAG_FILE disappears and writes
"sockets=N drops=D" to OUT_FILE. Only the relay's port range is counted: SIPp's own media
sockets (which never read the echoed audio) are outside it.
"""
import os
import sys
import time


def owned(pids):
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    t = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if t.startswith("socket:["):
                    inodes.add(t[8:-1])
        except OSError:
            pass
    return inodes


def scan(lo, hi, seen, pids):
    mine = owned(pids) if pids else None
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    port = int(p[1].rsplit(":", 1)[1], 16)
                    if lo <= port <= hi and (mine is None or p[9] in mine):
                        inode, drops = p[9], int(p[-1])
                        if drops > seen.get(inode, 0) or inode not in seen:
                            seen[inode] = drops
        except OSError:
            pass


def main():
    lo, hi, flag, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    pids = sys.argv[5:]
    seen = {}
    while os.path.exists(flag):
        scan(lo, hi, seen, pids)
        time.sleep(1)
    scan(lo, hi, seen, pids)
    with open(out, "w") as f:
        f.write(f"sockets={len(seen)} drops={sum(seen.values())}\n")


if __name__ == "__main__":
    main()
