#!/usr/bin/env python3
"""Send HMP commands to a qemu monitor unix socket and print the replies.

    qmon.py SOCK 'cmd1' 'cmd2' ...

The pseudo-command WAITMIGRATE polls 'info migrate' until the migration is completed, failed
or cancelled (timeout: $QMON_MIGRATE_TIMEOUT seconds, default 600); exit status 1 if it did
not complete.
Used by vm.sh for snapshot save (stop; migrate "exec:zstd ..."; WAITMIGRATE; quit) and restore.
"""

import os
import re
import socket
import sys
import time


def main() -> int:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sys.argv[1])
    sock.settimeout(0.5)

    def rd() -> str:
        buf = b""
        end = time.time() + 2
        while time.time() < end:
            try:
                d = sock.recv(65536)
                if not d:
                    break
                buf += d
                if buf.rstrip().endswith(b"(qemu)"):
                    break
            except TimeoutError:
                pass
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", buf.decode(errors="replace"))

    rc = 0
    rd()  # banner
    for c in sys.argv[2:]:
        if c == "WAITMIGRATE":
            deadline = time.time() + float(os.environ.get("QMON_MIGRATE_TIMEOUT", "600"))
            while True:
                sock.sendall(b"info migrate\n")
                out = rd()
                m = re.search(r"Migration status: (\S+)", out)
                if m and m.group(1) in ("completed", "failed", "cancelled"):
                    print(out)
                    if m.group(1) != "completed":
                        rc = 1
                    break
                if time.time() > deadline:
                    print(out)
                    rc = 1
                    break
                time.sleep(0.5)
            continue
        sock.sendall(c.encode() + b"\n")
        print(rd())
    return rc


if __name__ == "__main__":
    sys.exit(main())
