#!/usr/bin/env python3
"""A luo control-protocol client using only Python's standard library, written from
docs/uapi.md. Drives a whole live update of a service and checks that a memfd survives it:

    luo_client.py RUNDIR [NEXT_ARGV...]

Preserves a 1 MiB memfd with a known pattern, PREPAREs, loads the next image (if given),
REBOOTs, reconnects to the next image, checks it is UPDATED, restores the memfd, checks every
byte, FINISHes. Prints one JSON line with what it saw; exits non-zero on any mismatch."""
import json
import os
import socket
import struct
import sys
import time

FD_PRESERVE, FD_RESTORE, GET_STATE, SET_EVENT, LOAD_IMAGE, REBOOT = 0xBA00, 0xBA02, 0xBA03, 0xBA04, 0xBA10, 0xBA11
PREPARE, FINISH = 0, 2
TOKEN = 0x1234


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    return s


def call(s, cmd, body, fds=()):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    s.sendmsg([struct.pack("<I", cmd) + body], anc)
    data, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
    if len(data) < 4:
        raise RuntimeError(f"short reply {data!r}")
    got = []
    for level, typ, d in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            got += list(struct.unpack(f"{len(d) // 4}i", d[: len(d) - len(d) % 4]))
    return struct.unpack("<i", data[:4])[0], data[4:], got


def pattern(n):
    return bytes((i * 131 + 17) & 255 for i in range(n))


def main():
    rundir, next_argv = sys.argv[1], sys.argv[2:]
    path = os.path.join(rundir, "liveupdate")
    out = {}
    s = connect(path)
    memfd = os.memfd_create("py-client")
    data = pattern(1 << 20)
    os.write(memfd, data)
    out["preserve"] = call(s, FD_PRESERVE, struct.pack("<IiQ", 16, 0, TOKEN), [memfd])[0]
    os.close(memfd)
    out["prepare"] = call(s, SET_EVENT, struct.pack("<II", 8, PREPARE))[0]
    if next_argv:
        strings = b"".join(x.encode() + b"\0" for x in [""] + next_argv)
        body = struct.pack("<IIII", 16 + len(strings), len(next_argv), 0, 0) + strings
        out["load_image"] = call(s, LOAD_IMAGE, body)[0]
    out["reboot"] = call(s, REBOOT, struct.pack("<II", 8, 0))[0]
    try:
        out["closed_after_reboot"] = s.recv(64) == b""
    except ConnectionResetError:  # the exec closed it (docs/uapi.md: EOF or ECONNRESET)
        out["closed_after_reboot"] = True
    s.close()
    # Until the next image serves its device, connecting fails (or lands in the old image's
    # dying listener and is reset): retry connect + GET_STATE together.
    deadline = time.time() + 30
    while True:
        try:
            s = connect(path)
            out["state_after"] = struct.unpack("<I", call(s, GET_STATE, struct.pack("<II", 8, 0))[1][4:8])[0]
            break
        except (OSError, RuntimeError):
            if time.time() > deadline:
                raise
            time.sleep(0.01)
    # Disconnect in UPDATED: what this agent preserved in the new image (outgoing) is dropped;
    # the handed-over (incoming) files stay, waiting for FD_RESTORE and FINISH.
    extra = os.memfd_create("py-next")
    out["preserve_in_updated"] = call(s, FD_PRESERVE, struct.pack("<IiQ", 16, 0, 0x99), [extra])[0]
    os.close(extra)
    s.close()
    s = None
    for _ in range(300):
        try:
            s = connect(path)
            # GET_FD_STATE on the outgoing set: -ENOENT once the service has dropped it.
            r = call(s, 0xBA05, struct.pack("<IB3xQII", 24, 0, 0x99, 0, 0))[0]
            if r == -2:
                break
            s.close()
            s = None
        except OSError:
            s = None
        time.sleep(0.01)
    out["dropped_on_disconnect"] = s is not None
    res, _body, fds = call(s, FD_RESTORE, struct.pack("<IiQ", 16, 0, TOKEN))
    out["restore"] = res
    out["restored_fds"] = len(fds)
    if fds:
        got = os.pread(fds[0], (1 << 20) + 1, 0)
        out["bytes_intact"] = got == data
        out["size"] = len(got)
        os.close(fds[0])
    out["restore_again"] = call(s, FD_RESTORE, struct.pack("<IiQ", 16, 0, TOKEN))[0]
    out["finish"] = call(s, SET_EVENT, struct.pack("<II", 8, FINISH))[0]
    out["state_final"] = struct.unpack("<I", call(s, GET_STATE, struct.pack("<II", 8, 0))[1][4:8])[0]
    s.close()
    print(json.dumps(out))
    ok = out["bytes_intact"] and out["state_after"] == 4 and out["state_final"] == 1
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
