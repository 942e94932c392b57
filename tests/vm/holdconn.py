#!/usr/bin/env python3
"""
Hold idle TCP connections open inside a test VM, to see whether a firewalld restart or reload
flushes the conntrack table or breaks established connections (adapted from the lab):

    holdconn.py server PORT           threaded echo server, runs until killed
    holdconn.py hold HOST PORT N      open N connections and keep them idle; on SIGUSR1 send a
                                      line over each and print '<time> ping ok=X fail=Y' (flushed)
"""

import signal
import socket
import sys
import threading
import time


def serve(port: int) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(128)

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    while True:
        conn, _ = server.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def hold(host: str, port: int, n: int) -> None:
    conns = [socket.create_connection((host, port), timeout=5) for _ in range(n)]

    def ping(*_) -> None:
        ok = 0
        for conn in conns:
            try:
                conn.sendall(b"ping\n")
                ok += conn.recv(16) == b"ping\n"
            except OSError:
                pass
        print(f"{time.time():.0f} ping ok={ok} fail={n - ok}", flush=True)

    signal.signal(signal.SIGUSR1, ping)
    print(f"holding {n}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
