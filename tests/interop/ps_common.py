"""Shared by ps_client.py and ps_server.py: the real cs.packetstream 20240630
PacketConnection over a TCP socket, optionally with channel 1 registered in
the library's per-channel tables (as a subclass would: the stock 20240630
library provisions only channel 0)."""

import os
import socket
import sys

from cs.packetstream import PacketConnection


class Channel1Connection(PacketConnection):
    """A PacketConnection that also provisions channel 1 (sends and serves it).

    The library creates its per-channel tables (`_channel_request_tags`,
    `_pending`, both `{0: ...}`) in `startup_shutdown`, just before its
    receive thread starts; channel 1 is added as they are set, so no request
    can arrive before it exists."""

    def __setattr__(self, name, value):
        if name == "_channel_request_tags" and isinstance(value, dict):
            value.setdefault(1, set())
        elif name == "_pending" and isinstance(value, dict):
            value.setdefault(1, {})
        super().__setattr__(name, value)


def connection(sock, name, *, channel1=False, request_handler=None):
    cls = Channel1Connection if channel1 else PacketConnection
    fd = sock.fileno()
    return cls((fd, fd), name, request_handler=request_handler)


def demo_handler(rq_type, flags, payload):
    """The demo request types of `plexwire packet serve`, plus two that show
    the other return shapes: 5 returns a str, 6 an int."""
    if rq_type == 1:
        return flags, payload
    if rq_type == 2:
        return bytes(payload).upper()
    if rq_type == 3:
        raise ValueError("request type 3 always fails")
    if rq_type == 4:
        return None
    if rq_type == 5:
        return "text \u2713"
    if rq_type == 6:
        return 7
    raise ValueError("unknown request type %d" % rq_type)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def connect(hostport):
    host, port = hostport.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
    # Blocking again: the library reads the file descriptor directly.
    sock.settimeout(None)
    return sock


def finish(code):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
