#!/usr/bin/env python3
"""Helper of scripts/ban-latency.sh (not meant to be run by hand).

  ban-latency.py server ADDR PORT READYFILE
      Accept TCP connections on ADDR:PORT forever and hold them open
      (never read, never close): the proxy's side of idle connections.

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
"""

import os
import select
import socket
import sys
import time

LINE = ("2026/01/30 17:03:38.067799 from {addr}:{port} accepted "
        "tcp:www.example.com:443 [vless-in >> direct] email: {user}\n")
WAIT_S = 5.0


def server(addr, port, ready):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, int(port)))
    ls.listen(4096)
    with open(ready, "w", encoding="ascii") as f:
        f.write("ready\n")
    held = []
    while True:
        conn, _ = ls.accept()
        held.append(conn)


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


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "server" and len(sys.argv) == 5:
        server(*sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "client" and len(sys.argv) == 11:
        client(*sys.argv[2:])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
