"""The REAL cs.packetstream 20240630 as a server on 127.0.0.1 (a free port):
serves the demo request types (1 echo, 2 upper, 3 fail, 4 empty, 5 str,
6 int) with the stock PacketConnection (channel 0 only), or with channel 1
registered (--channel1). Prints `LISTENING <port>` on stdout, then one JSON
line per connection once its orderly close is done.

    .venv/bin/python tests/interop/ps_server.py [--channel1]

Each connection is served as the seed's servers do: `with conn:
conn.join_recv()` (serve until the client's EOF, then ERQ, running
requests, EOF)."""

import argparse
import json
import socket
import threading

from ps_common import connection, demo_handler, finish, log, out


def serve(sock, n, channel1):
    conn = connection(sock, "ps_server%d" % n, channel1=channel1, request_handler=demo_handler)
    with conn:
        conn.join_recv()
    sock.close()
    out(json.dumps({"connection": n, "closed": True}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channel1", action="store_true")
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, 0))
    lsock.listen(16)
    out("LISTENING %d" % lsock.getsockname()[1])
    n = 0
    while True:
        sock, peer = lsock.accept()
        log("connection", n, "from", peer)
        threading.Thread(target=serve, args=(sock, n, args.channel1), daemon=True).start()
        n += 1


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        finish(0)
