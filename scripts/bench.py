#!/usr/bin/env python3
"""Helper of scripts/bench.sh and scripts/footprint.sh (not run by hand).

  bench.py time RUNS CMD...        run CMD RUNS times (stdout read from a
                                   pipe and dropped: GNU grep stops at the
                                   first match when stdout is /dev/null;
                                   stderr discarded); print
                                   `median_s max_rss_kib`
  bench.py users N TOTAL PATH      write TOTAL access lines cycling over N
                                   distinct users (one address each) to PATH
  bench.py writer RATE SECS SRC DST
                                   append lines of SRC to DST at RATE lines/s
                                   for SECS seconds (batches every 10 ms,
                                   scheduled on absolute deadlines)
  bench.py wait-lines PID STDERR N TIMEOUT
                                   SIGUSR1 the daemon PID until its last
                                   `stats:` line in STDERR says lines>=N
"""

import os
import re
import resource
import signal
import subprocess
import sys
import time

LINE = ("2026/11/21 10:00:{s:02d}.{us:06d} from 198.{a}.{b}.{c}:{port} accepted "
        "tcp:www.example.com:443 [vless-in >> direct] email: u{u}@example.com\n")


def cmd_time(runs, *cmd):
    times = []
    for _ in range(int(runs)):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    times.sort()
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{times[len(times) // 2]:.6f} {rss}")


def users(n, total, path):
    n, total = int(n), int(total)
    with open(path, "w", encoding="ascii") as f:
        buf = []
        for j in range(total):
            u = j % n
            # 198.18.0.0/15 has 131072 addresses: users past that share one
            # (NAT), which the policy allows (one key per user).
            a = u % 131072
            buf.append(LINE.format(s=(j // 100000) % 60, us=j % 1000000, a=18 + (a >> 16),
                                   b=(a >> 8) & 255, c=a & 255, port=1024 + u % 60000, u=u))
            if len(buf) == 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


def writer(rate, secs, src, dst):
    rate, secs = int(rate), float(secs)
    with open(src, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    per = max(1, rate // 100)
    fd = os.open(dst, os.O_WRONLY | os.O_APPEND)
    start = time.monotonic()
    i = 0
    tick = 0
    while True:
        due = start + tick * 0.01
        if due - start >= secs:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        batch = lines[i:i + per]
        if len(batch) < per:
            i = 0
            batch = lines[:per]
        os.write(fd, b"".join(batch))
        i += per
        tick += 1
    print(tick * per)


def wait_lines(pid, stderr, n, timeout):
    pid, n, deadline = int(pid), int(n), time.monotonic() + float(timeout)
    pat = re.compile(rb"stats: lines=(\d+)")
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGUSR1)
        time.sleep(0.05)
        with open(stderr, "rb") as f:
            got = pat.findall(f.read())
        if got and int(got[-1]) >= n:
            return
    print(f"bench: daemon did not reach {n} lines in {timeout} s", file=sys.stderr)
    sys.exit(1)


def main():
    cmds = {"time": cmd_time, "users": users, "writer": writer, "wait-lines": wait_lines}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
