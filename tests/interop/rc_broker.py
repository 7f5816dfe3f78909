#!/usr/bin/env python3
"""Run a real ReasonChip 0.0.6 broker (reasonchip.net.broker.Broker).

    .venv/bin/python tests/interop/rc_broker.py \
        --clients tcp://127.0.0.1:PORT [--clients socket:///tmp/x.sock ...] \
        --workers tcp://127.0.0.1:PORT [--workers ...]

URLs use ReasonChip's own parser: tcp://HOST:PORT, tcp://[v6]:PORT,
socket:///abs/path, http://HOST:PORT (clients only), grpc://HOST:PORT.
A port of 0 or no port means ReasonChip's default port, not "any free port".

stdout: exactly the line READY once every listener is bound; nothing else.
stderr: logs. Runs until SIGTERM/SIGINT/SIGHUP. Exit status: 0 after a
signal, 1 if the broker could not start. The 0.0.6 broker can deadlock (see
reasonchip.md, defect 2); shutdown is therefore bounded by --stop-timeout and
the process always ends with os._exit.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys

from reasonchip.net.broker import Broker
from reasonchip.net.transports.utils import (
    TransportOptions,
    broker_for_clients,
    broker_for_workers,
)

log = logging.getLogger("rc_broker")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", action="append", required=True, metavar="URL",
                   help="endpoint to serve clients on (repeatable)")
    p.add_argument("--workers", action="append", required=True, metavar="URL",
                   help="endpoint to listen for workers on (repeatable)")
    p.add_argument("--stop-timeout", type=float, default=3.0, metavar="S",
                   help="seconds to wait for Broker.stop() before forcing exit (default 3)")
    p.add_argument("--log-level", default="INFO", help="root log level (default INFO)")
    return p.parse_args()


def socket_paths(urls):
    out = []
    for u in urls:
        try:
            o = TransportOptions.from_args(u)
        except ValueError:
            continue
        if o.scheme == "socket":
            out.append(o.target)
    return out


def hard_exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


async def main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda s=sig: (log.info("got %s", s.name), stop.set()))

    try:
        broker = Broker(
            client_transports=broker_for_clients(args.clients),
            worker_transports=broker_for_workers(args.workers),
        )
        await broker.start()
    except Exception as ex:  # bad URL, port in use, ...
        log.error("broker failed to start: %s: %s", type(ex).__name__, ex)
        return 1

    log.info("broker listening: clients=%s workers=%s", args.clients, args.workers)
    print("READY", flush=True)

    await stop.wait()

    log.info("stopping broker (timeout %.1fs)", args.stop_timeout)
    try:
        await asyncio.wait_for(broker.stop(), timeout=args.stop_timeout)
    except asyncio.TimeoutError:
        log.warning("Broker.stop() did not finish in %.1fs (deadlocked?); forcing exit", args.stop_timeout)
    except Exception as ex:
        log.warning("Broker.stop() failed: %s: %s", type(ex).__name__, ex)

    # Broker.stop() never unlinks UNIX sockets; tidy up.
    for path in socket_paths(args.clients + args.workers):
        try:
            os.unlink(path)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    a = parse_args()
    logging.basicConfig(stream=sys.stderr, level=a.log_level.upper(),
                        format="%(asctime)s rc_broker[%(process)d] %(levelname)s %(name)s: %(message)s")
    # os._exit: asyncio.run's cleanup could wait on tasks stuck in the 0.0.6
    # broker's deadlocked lock.
    hard_exit(asyncio.run(main(a)))
