"""The REAL cs.packetstream 20240630 as a client: runs its checks against a
packet-stream server (`plexwire packet serve`, request types 1 echo, 2 upper,
3 fail, 4 empty) and prints one JSON line per check on stdout, then
`{"closed": true}` once the orderly close (ERQ, EOF, the server's EOF) is done.

    .venv/bin/python tests/interop/ps_client.py --connect 127.0.0.1:PORT [--channel1]

Every request is submitted before any answer is awaited (many tags in
flight). With --channel1, channel 1 is registered in the library's tables
and half of the requests go on it."""

import argparse
import json
import threading

from ps_common import connect, connection, finish, log, out


def expected(rq_type, flags, payload):
    if rq_type == 1:
        return True, flags, payload
    if rq_type == 2:
        return True, 0, payload.upper()
    if rq_type == 3:
        return False, 0, b"exception during handler"
    return True, 0, b""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connect", required=True)
    ap.add_argument("--channel1", action="store_true")
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    sock = connect(args.connect)
    conn = connection(sock, "ps_client", channel1=args.channel1)
    failures = 0
    with conn:
        plan = []
        for i in range(args.count):
            rq_type = 1 + i % 4
            channel = (i // 4) % 2 if args.channel1 else 0
            if i % 25 == 0:
                payload = bytes(range(256)) + b"z" * 44  # 300 bytes
            elif i % 25 == 1:
                payload = b"\x00\xff" * 10000  # 20 000 bytes
            else:
                payload = ("hello %d on channel %d ab" % (i, channel)).encode()
            flags = i % 8
            R = conn.submit(rq_type, flags, payload, channel=channel)
            plan.append((i, rq_type, flags, channel, payload, R))
        log("submitted", len(plan), "requests before awaiting any")
        for i, rq_type, flags, channel, payload, R in plan:
            ok, rflags, rpayload = R()
            want = expected(rq_type, flags, payload)
            passed = (ok, rflags, bytes(rpayload)) == want
            failures += not passed
            out(json.dumps({
                "check": i, "rq_type": rq_type, "channel": channel, "flags": flags,
                "payload_len": len(payload), "ok": ok, "rflags": rflags,
                "rpayload_len": len(rpayload), "pass": passed,
                "got": None if passed else repr(bytes(rpayload)[:80]),
            }))
    # Leaving `with conn` sent ERQ and EOF and waited for the server's EOF.
    sock.close()
    out(json.dumps({"closed": True, "failures": failures}))
    finish(0)


if __name__ == "__main__":
    t = threading.Timer(60, lambda: (log("ps_client: timed out"), finish(3)))
    t.daemon = True
    t.start()
    main()
