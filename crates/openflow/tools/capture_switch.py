#!/usr/bin/env python3
"""A scripted fake OpenFlow 1.4 switch that records what a controller sends.

Used to capture the bytes in tests/captured.rs:

    python3 tools/capture_switch.py /tmp/sw.sock &
    ovs-ofctl --no-names -O OpenFlow14 add-flow unix:/tmp/sw.sock "..."

Every message received (except hello/echo) is printed as one hex line,
prefixed with its type. It answers just enough for ovs-ofctl to finish:
hello, echo, barrier, features and (empty or minimal) multipart replies.
"""
import os
import socket
import struct
import sys

OFP_VERSION = 5


def msg(t, xid, body=b""):
    return struct.pack("!BBHI", OFP_VERSION, t, 8 + len(body), xid) + body


def recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve(c):
    c.sendall(msg(0, 1, struct.pack("!HHI", 1, 8, 1 << OFP_VERSION)))
    while True:
        hdr = recv_exact(c, 8)
        if hdr is None:
            return
        _v, t, length, xid = struct.unpack("!BBHI", hdr)
        body = recv_exact(c, length - 8) or b""
        raw = hdr + body
        if t == 0:
            continue
        if t == 2:  # echo request
            c.sendall(msg(3, xid, body))
            continue
        print(f"type={t} {raw.hex()}", flush=True)
        if t == 20:  # barrier
            c.sendall(msg(21, xid))
        elif t == 5:  # features
            c.sendall(msg(6, xid, struct.pack("!QIBB2xII", 1, 0, 254, 0, 0, 0)))
        elif t == 18:  # multipart request: empty reply of the same type
            mp_type = struct.unpack("!H", body[:2])[0]
            reply = b""
            if mp_type == 11:  # meter features
                reply = struct.pack("!IIIBB2x", 1000, 0x2, 0xf, 1, 0)
            c.sendall(msg(19, xid, struct.pack("!HH4x", mp_type, 0) + reply))


def main():
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    while True:
        c, _ = s.accept()
        with c:
            serve(c)
        print("--", flush=True)


if __name__ == "__main__":
    main()
