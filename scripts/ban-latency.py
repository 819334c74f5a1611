#!/usr/bin/env python3
"""Helper of scripts/ban-latency.sh (not meant to be run by hand).

  ban-latency.py server ADDR PORT READYFILE [TALK_NET]
      Accept TCP connections on ADDR:PORT forever and hold them open
      (never read, never close): the proxy's side of idle connections.
      With TALK_NET, every connection from TALK_NET.x also gets one byte
      every 100 ms (a trickle download: the client only ACKs), so the
      kernel shows it in use whatever its log line's age. The sends are
      spread over the period in 10 ms slots (connection k in slot
      k * golden ratio mod 1): a burst of all of them at once would load
      both cores every 100 ms and hit the trials it meets.

  ban-latency.py client NODE PORT LOG FIFO IDLE N IDLE_SRC BAN_NET SHELL_NET
      From the client namespace: open IDLE idle connections from IDLE_SRC,
      and one connection per trial address (BAN_NET.i and SHELL_NET.i,
      i = 1..N). Then N times, alternating:
        refract: t0, append a violating access line for BAN_NET.i to LOG,
                 wait (poll, no busy loop) until the client socket of
                 BAN_NET.i sees RST/EOF, t1;
        shell:   t0, write SHELL_NET.i to FIFO (a per-event shell follower
                 runs `ipset add` + `ss -K` for it), wait for the reset, t1.
      Both clocks are CLOCK_MONOTONIC in this one process. Prints one line
      per path: `refract|shell n=.. p50_us=.. p99_us=.. max_us=.. lost=..`,
      then `idle_alive=K` (idle connections still open at the end: none of
      them may be hit).

  ban-latency.py live NODE PORT LOG IDLE N IDLE_SRC DEV1_NET DEV2_NET WINDOW_S
      Bans decided by liveness. Opens IDLE idle connections from
      IDLE_SRC and, per trial user i = 1..N, device 1's connection from
      DEV1_NET.i (the server trickles data into it: TALK_NET) and device
      2's from DEV2_NET.i. Writes device 1's line (its real source port)
      for every user, waits WINDOW_S + 0.5 s so each of them is older than
      the window, then N times: t0, append device 2's line, wait (poll)
      until device 2's socket sees the reset, t1, pause 15 ms
      (BANLAT_GAP_MS): the cadence of the client mode's refract trials,
      each followed by a shell trial. A ban's exact kill is followed by
      the dump for the key's other connections, which walks the
      namespace's whole TCP hash (milliseconds on the host's shared one);
      bans every 5 ms would time the queue behind those walks, not the
      ban. The window rule alone would admit device 2; only the daemon's
      lookup of device 1's socket can ban it. Prints `live n=.. p50_us=..
      p99_us=.. max_us=.. lost=..`, `dev1_alive=K` (device 1 sockets
      neither reset nor closed: none may be) and `idle_alive=K`.

  ban-latency.py flood LOG PID STDERR N FIRST_SRC
      The ban flood, against the daemon PID already following LOG (its
      stderr is STDERR): one user first online from FIRST_SRC, then N lines
      from N distinct addresses (10.1.0.0 + i), each a ban, appended in
      1 MiB writes as fast as they go. Then SIGUSR1 every 20 ms until the
      daemon's counters say every ban reached the enforcer and every ban's
      kill is finished (one `ban KEY: ended …` line each). Prints
      `flood bans=N secs=S bans_per_s=R kill_reports=K`, timed from the
      first write to the first stats line showing it all done.

  BANLAT_SAMPLES=FILE (client and live): every sample in trial order is
  appended to FILE, one line per path, for a look at the tail.
"""

import os
import re
import select
import signal
import socket
import sys
import time

LINE = ("2026/01/30 17:03:38.067799 from {addr}:{port} accepted "
        "tcp:www.example.com:443 [vless-in >> direct] email: {user}\n")
WAIT_S = 5.0


TALK_EVERY_S = 0.1
TALK_SLOTS = 10


def server(addr, port, ready, talk_net=None):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, int(port)))
    ls.listen(4096)
    with open(ready, "w", encoding="ascii") as f:
        f.write("ready\n")
    held = []
    if talk_net is None:
        while True:
            conn, _ = ls.accept()
            held.append(conn)
    prefix = talk_net + "."
    slots = [[] for _ in range(TALK_SLOTS)]
    talkers = 0
    ls.setblocking(False)
    p = select.poll()
    p.register(ls.fileno(), select.POLLIN)
    due = time.monotonic()
    slot = 0
    while True:
        p.poll(max(0, int((due - time.monotonic()) * 1000)) + 1)
        while True:
            try:
                conn, peer = ls.accept()
            except BlockingIOError:
                break
            if peer[0].startswith(prefix):
                slots[int((talkers * 0.6180339887 % 1) * TALK_SLOTS)].append(conn)
                talkers += 1
            else:
                held.append(conn)
        if time.monotonic() >= due:
            due += TALK_EVERY_S / TALK_SLOTS
            for c in slots[slot]:
                try:
                    c.send(b"x", socket.MSG_DONTWAIT)
                except OSError:
                    pass
            slot = (slot + 1) % TALK_SLOTS


def connect(node, port, src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect((node, port))
    s.setblocking(False)
    return s


def wait_reset(sock, deadline_s):
    """Blocks in poll(2) until `sock` is readable or in error (RST or FIN
    from the node); returns the CLOCK_MONOTONIC time then, or None."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if not p.poll(int(deadline_s * 1000)):
        return None
    t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        return t1
    except BlockingIOError:
        return None
    return t1 if data == b"" else None


def pct(sorted_us, q):
    if not sorted_us:
        return -1
    idx = max(0, -(-q * len(sorted_us) // 100) - 1)
    return sorted_us[idx]


def report(name, samples, lost):
    # BANLAT_SAMPLES=FILE: every sample in trial order, for a look at the
    # tail (which trials, how spread).
    keep = os.environ.get("BANLAT_SAMPLES")
    if keep:
        with open(keep, "a", encoding="ascii") as f:
            f.write(f"{name} {' '.join(map(str, samples))}\n")
    s = sorted(samples)
    print(f"{name} n={len(s)} p50_us={pct(s, 50)} p99_us={pct(s, 99)} "
          f"max_us={s[-1] if s else -1} lost={lost}", flush=True)


def client(node, port, log, fifo, idle, n, idle_src, ban_net, shell_net):
    port, idle, n = int(port), int(idle), int(n)
    idle_socks = [connect(node, port, idle_src) for _ in range(idle)]
    ban = [connect(node, port, f"{ban_net}.{i}") for i in range(1, n + 1)]
    shell = [connect(node, port, f"{shell_net}.{i}") for i in range(1, n + 1)]
    print(f"connections open: {idle} idle + {2 * n} trial", file=sys.stderr, flush=True)
    logfd = os.open(log, os.O_WRONLY | os.O_APPEND)
    # Every trial user is first online from the idle source (window 1h), so
    # the trial address is the over-limit newcomer.
    origin = "".join(LINE.format(addr=idle_src, port=40000, user=f"lat{i}@example.com")
                     for i in range(1, n + 1))
    os.write(logfd, origin.encode())
    time.sleep(1.0)
    fifofd = os.open(fifo, os.O_WRONLY)
    got = {"refract": [], "shell": []}
    lost = {"refract": 0, "shell": 0}
    for i in range(1, n + 1):
        # The port Xray logs is the client connection's own source port.
        line = LINE.format(addr=f"{ban_net}.{i}", port=ban[i - 1].getsockname()[1],
                           user=f"lat{i}@example.com").encode()
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        os.write(logfd, line)
        t1 = wait_reset(ban[i - 1], WAIT_S)
        if t1 is None:
            lost["refract"] += 1
        else:
            got["refract"].append((t1 - t0) // 1000)
        msg = f"{shell_net}.{i}\n".encode()
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        os.write(fifofd, msg)
        t1 = wait_reset(shell[i - 1], WAIT_S)
        if t1 is None:
            lost["shell"] += 1
        else:
            got["shell"].append((t1 - t0) // 1000)
        # Let both paths settle (the shell follower's processes exit, the
        # daemon's reply traffic drains) before the next pair.
        time.sleep(0.005)
    os.close(fifofd)
    report("refract", got["refract"], lost["refract"])
    report("shell", got["shell"], lost["shell"])
    p = select.poll()
    for s in idle_socks:
        p.register(s.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    hit = len(p.poll(0))
    print(f"idle_alive={idle - hit}", flush=True)


LIVE_GAP_S = float(os.environ.get("BANLAT_GAP_MS", "15")) / 1000


def live(node, port, log, idle, n, idle_src, dev1_net, dev2_net, window_s):
    port, idle, n, window_s = int(port), int(idle), int(n), float(window_s)
    idle_socks = [connect(node, port, idle_src) for _ in range(idle)]
    dev1 = [connect(node, port, f"{dev1_net}.{i}") for i in range(1, n + 1)]
    dev2 = [connect(node, port, f"{dev2_net}.{i}") for i in range(1, n + 1)]
    print(f"connections open: {idle} idle + {2 * n} trial", file=sys.stderr, flush=True)
    logfd = os.open(log, os.O_WRONLY | os.O_APPEND)
    # Device 1's only line, with its connection's real source port (what
    # the daemon looks up), then silence longer than the window.
    first = "".join(LINE.format(addr=f"{dev1_net}.{i}", port=dev1[i - 1].getsockname()[1],
                                user=f"live{i}@example.com") for i in range(1, n + 1))
    os.write(logfd, first.encode())
    time.sleep(window_s + 0.5)
    got, lost = [], 0
    for i in range(1, n + 1):
        line = LINE.format(addr=f"{dev2_net}.{i}", port=dev2[i - 1].getsockname()[1],
                           user=f"live{i}@example.com").encode()
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        os.write(logfd, line)
        t1 = wait_reset(dev2[i - 1], WAIT_S)
        if t1 is None:
            lost += 1
        else:
            got.append((t1 - t0) // 1000)
        time.sleep(LIVE_GAP_S)
    report("live", got, lost)
    # Device 1 is readable (the trickle), so only an error or hangup (a
    # reset, a close) counts as hit.
    p = select.poll()
    for s in dev1:
        p.register(s.fileno(), select.POLLERR | select.POLLHUP | select.POLLRDHUP)
    print(f"dev1_alive={n - len(p.poll(0))}", flush=True)
    p = select.poll()
    for s in idle_socks:
        p.register(s.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    print(f"idle_alive={idle - len(p.poll(0))}", flush=True)


FLOOD_WAIT_S = 900.0


def flood(log, pid, stderr, n, first_src):
    pid, n = int(pid), int(n)
    stats_pat = re.compile(rb"stats: .*\benforcer_bans=(\d+)")
    ended_pat = re.compile(rb"ban [^ ]+: ended ")
    user = "flood@example.com"
    with open(stderr, "rb") as f:
        old = f.read()
    pos = len(old)
    reports0 = len(ended_pat.findall(old))
    bans0 = [int(b) for b in stats_pat.findall(old)]
    bans0 = bans0[-1] if bans0 else 0
    if not bans0:
        # No stats line yet: ask for one, so the base count is known.
        os.kill(pid, signal.SIGUSR1)
        time.sleep(0.2)
        with open(stderr, "rb") as f:
            old = f.read()
        pos = len(old)
        reports0 = len(ended_pat.findall(old))
        got = stats_pat.findall(old)
        bans0 = int(got[-1]) if got else 0
    first = LINE.format(addr=first_src, port=40000, user=user)
    logfd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.write(logfd, first.encode())
    time.sleep(0.5)
    text = "".join(LINE.format(addr=f"10.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",
                               port=40000 + i % 20000, user=user)
                   for i in range(n)).encode()
    t0 = time.monotonic()
    for at in range(0, len(text), 1 << 20):
        os.write(logfd, text[at:at + (1 << 20)])
    os.close(logfd)
    reports = reports0
    bans = bans0
    tail = b""
    while time.monotonic() - t0 < FLOOD_WAIT_S:
        os.kill(pid, signal.SIGUSR1)
        time.sleep(0.02)
        with open(stderr, "rb") as f:
            f.seek(pos)
            chunk = f.read()
        pos += len(chunk)
        # Only whole lines count; a partial last line waits for the next read.
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        whole, tail = data[:cut], data[cut:]
        reports += len(ended_pat.findall(whole))
        got = stats_pat.findall(whole)
        if got:
            bans = int(got[-1])
        if bans - bans0 >= n and reports - reports0 >= n:
            secs = time.monotonic() - t0
            print(f"flood bans={n} secs={secs:.3f} bans_per_s={n / secs:.0f} "
                  f"kill_reports={reports - reports0}", flush=True)
            return
    print(f"flood bans={n} secs=-1 bans_per_s=-1 enforcer_bans={bans - bans0} "
          f"kill_reports={reports - reports0} (not done in {FLOOD_WAIT_S:.0f} s)", flush=True)
    sys.exit(1)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "server" and len(sys.argv) in (5, 6):
        server(*sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "live" and len(sys.argv) == 11:
        live(*sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "client" and len(sys.argv) == 11:
        client(*sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "flood" and len(sys.argv) == 7:
        flood(*sys.argv[2:])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
