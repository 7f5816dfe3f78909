#!/usr/bin/env python3
"""Run a real ReasonChip 0.0.6 worker (reasonchip.net.worker.TaskManager)
serving the pipeline collection in tests/interop/pipelines/.

    .venv/bin/python tests/interop/rc_worker.py --broker tcp://127.0.0.1:PORT --capacity 16

This is what `reasonchip worker --broker URL --tasks N --collection DIR`
does, minus the database/SSL options.

stdout: exactly the line READY once the worker is connected and has sent
REGISTER (the protocol has no reply to REGISTER, so acceptance cannot be
observed); nothing else. stderr: logs.
Exit status: 0 after SIGTERM/SIGINT/SIGHUP; 1 if it could not connect or the
collection failed to load; 2 if the worker's TaskManager ended by itself
(broker closed the connection, CANCEL crash, capacity race, unexpected
packet...).
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from reasonchip.core.engine.engine import Engine
from reasonchip.net.transports import worker_to_broker
from reasonchip.net.worker import TaskManager

HERE = os.path.dirname(os.path.abspath(__file__))
log = logging.getLogger("rc_worker")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", required=True, metavar="URL",
                   help="broker worker endpoint: tcp://HOST:PORT or socket:///path")
    p.add_argument("--capacity", type=int, default=16, metavar="N",
                   help="capacity sent in REGISTER (default 16; keep well above client concurrency)")
    p.add_argument("--collection", action="append", default=[], metavar="DIR",
                   help="pipeline collection root (repeatable; default tests/interop/pipelines)")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="keep retrying the connection for this long (default 5)")
    p.add_argument("--stop-timeout", type=float, default=3.0, metavar="S",
                   help="seconds to wait for in-flight runs on shutdown before forcing exit (default 3)")
    p.add_argument("--log-level", default="INFO", help="root log level (default INFO)")
    return p.parse_args()


def hard_exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


async def connect(engine: Engine, args: argparse.Namespace) -> TaskManager:
    deadline = time.monotonic() + args.connect_timeout
    while True:
        # A fresh transport each attempt: a failed connect leaves TaskManager
        # unusable (its start() asserts it was never started).
        tm = TaskManager(engine=engine, transport=worker_to_broker(args.broker),
                         max_capacity=args.capacity)
        try:
            await tm.start()
            return tm
        except ConnectionError as ex:
            if time.monotonic() >= deadline:
                raise
            log.info("connect to %s failed (%s); retrying", args.broker, ex)
            await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> int:
    collections = args.collection or [os.path.join(HERE, "pipelines")]
    try:
        engine = Engine()
        engine.initialize(pipelines=collections)
    except Exception as ex:
        log.error("failed to load pipelines from %s: %s: %s", collections, type(ex).__name__, ex)
        return 1
    log.info("loaded pipelines %s from %s", sorted(engine.pipelines), collections)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda s=sig: (log.info("got %s", s.name), stop.set()))

    try:
        tm = await connect(engine, args)
    except Exception as ex:
        log.error("could not connect to broker %s: %s: %s", args.broker, type(ex).__name__, ex)
        return 1

    handler = tm._handler  # the multiplexing task; inspected only to log how it ended
    log.info("registered with %s, capacity %d", args.broker, args.capacity)
    print("READY", flush=True)

    t_stop = asyncio.create_task(stop.wait())
    t_tm = asyncio.create_task(tm.wait())
    done, _ = await asyncio.wait([t_stop, t_tm], return_when=asyncio.FIRST_COMPLETED)

    if t_tm in done:
        how = "cancelled" if handler.cancelled() else repr(handler.exception()) if handler.exception() else "returned"
        log.warning("TaskManager ended by itself (multiplexing loop %s); exiting 2", how)
        return 2

    log.info("stopping worker (waits for in-flight runs, timeout %.1fs)", args.stop_timeout)
    try:
        await asyncio.wait_for(tm.stop(), timeout=args.stop_timeout)
    except (asyncio.TimeoutError, Exception) as ex:
        log.warning("TaskManager.stop() did not finish cleanly: %r; forcing exit", ex)
    engine.shutdown()
    return 0


if __name__ == "__main__":
    a = parse_args()
    logging.basicConfig(stream=sys.stderr, level=a.log_level.upper(),
                        format="%(asctime)s rc_worker[%(process)d] %(levelname)s %(name)s: %(message)s")
    hard_exit(asyncio.run(main(a)))
