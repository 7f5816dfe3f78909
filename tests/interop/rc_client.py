#!/usr/bin/env python3
"""Run pipelines through a broker with the real ReasonChip 0.0.6 client
library (reasonchip.net.client: Multiplexor + Api, or Client for raw packets).

    .venv/bin/python tests/interop/rc_client.py --broker tcp://127.0.0.1:PORT SCENARIO

Scenarios (pipelines from tests/interop/pipelines/):
  basic        add {a:2,b:40}, echo {msg,n,uni}, nothing {}, fail {}   (Api)
  concurrent   4 concurrent add runs with distinct inputs               (Api)
  cancel       RUN sleep {seconds:5} then, 0.3 s later, a raw CANCEL with the
               same cookie (Client; the 0.0.6 Api has no cancel); then one
               add run to see whether the broker still answers
  detach       echo detached via Api, echo detached via raw Client (waits to
               see whether anything comes back), then a normal echo
  no_capacity  echo, meant for a broker with no worker                 (Api)
  unknown      a pipeline the worker does not have                      (Api)

stdout: one JSON object per line, nothing else. Every line has
  scenario, pipeline, variables, ok, result, rc, error, exception,
  stacktrace, elapsed_s
and some have phase / via / detach / observed / cookie / cancel_after_s /
after_cancel_s. For an Api run:
  ok=true  -> Api.run_pipeline returned; rc="OK" (null for a detached run,
              where nothing is received), result = returned value
  ok=false -> the Api raised; for RemoteException subclasses rc/error/
              stacktrace are the RESULT's fields and exception the class name;
              a local timeout gives exception "TimeoutError", rc null.
Exit status: 0 when the scenario ran to the end (whatever the results),
1 if the broker could not be reached, 3 if the --deadline watchdog fired.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import typing

from reasonchip.net.client import Api, Client, Multiplexor
from reasonchip.net.client import exceptions as rex
from reasonchip.net.protocol import PacketType, SocketPacket
from reasonchip.net.transports import client_to_broker

log = logging.getLogger("rc_client")

SCENARIOS = ["basic", "concurrent", "cancel", "detach", "no_capacity", "unknown"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", required=True, metavar="URL",
                   help="broker client endpoint: tcp://HOST:PORT, socket:///path or http://HOST:PORT")
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="per-run timeout in seconds (default 10)")
    p.add_argument("--cancel-wait", type=float, default=8.0, metavar="S",
                   help="cancel: how long to wait for a reply after the CANCEL (default 8, > the 5 s sleep)")
    p.add_argument("--detach-wait", type=float, default=1.5, metavar="S",
                   help="detach: how long to wait for an (unexpected) reply to a raw detached RUN (default 1.5)")
    p.add_argument("--deadline", type=float, default=60.0, metavar="S",
                   help="watchdog: hard-exit with status 3 after this many seconds (default 60)")
    p.add_argument("--log-level", default="INFO", help="root log level (default INFO)")
    return p.parse_args()


def hard_exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)


def record(scenario: str, pipeline: str, variables: typing.Any, **extra) -> dict:
    rec = {
        "scenario": scenario,
        "pipeline": pipeline,
        "variables": variables,
        "ok": False,
        "result": None,
        "rc": None,
        "error": None,
        "exception": None,
        "stacktrace": None,
        "elapsed_s": None,
    }
    rec.update(extra)
    return rec


def fill_from_exception(rec: dict, ex: BaseException, timeout: float) -> None:
    rec["exception"] = type(ex).__name__
    if isinstance(ex, rex.RemoteException):
        rec["rc"] = str(ex.rc) if ex.rc is not None else None
        rec["error"] = ex.error
        rec["stacktrace"] = ex.stacktrace
    elif isinstance(ex, asyncio.TimeoutError):
        rec["exception"] = "TimeoutError"
        rec["error"] = f"no reply within {timeout}s"
    else:
        rec["error"] = str(ex) or repr(ex)


def fill_from_packet(rec: dict, pkt: SocketPacket) -> None:
    rec["packet_type"] = str(pkt.packet_type)
    rec["rc"] = str(pkt.rc) if pkt.rc is not None else None
    rec["ok"] = pkt.rc == "OK"
    rec["error"] = pkt.error
    rec["stacktrace"] = pkt.stacktrace
    try:
        rec["result"] = json.loads(pkt.result) if pkt.result is not None else None
    except ValueError:
        rec["result"] = pkt.result


async def api_run(api: Api, scenario: str, pipeline: str, variables: typing.Any,
                  timeout: float, detached: bool = False, **extra) -> dict:
    rec = record(scenario, pipeline, variables, **extra)
    if detached:
        rec["detach"] = True
    t0 = time.monotonic()
    try:
        res = await asyncio.wait_for(
            api.run_pipeline(pipeline, variables, detached=detached), timeout=timeout)
        rec["ok"] = True
        rec["result"] = res
        rec["rc"] = None if detached else "OK"
    except Exception as ex:
        fill_from_exception(rec, ex, timeout)
    rec["elapsed_s"] = round(time.monotonic() - t0, 3)
    return rec


async def wait_packet(client: Client, timeout: float) -> typing.Optional[SocketPacket]:
    # Client.receive_packet(timeout) leaves its queue.get() task pending on
    # timeout (it would swallow a later packet); wait_for cancels it.
    try:
        return await asyncio.wait_for(client.get_conn().incoming_queue.get(), timeout=timeout)
    except asyncio.TimeoutError:
        return None


# ------------------------------------------------------------------ scenarios

async def sc_basic(mux: Multiplexor, args) -> None:
    api = Api(mux)
    for pipeline, variables in [
        ("add", {"a": 2, "b": 40}),
        ("echo", {"msg": "hi", "n": 7, "uni": "h\u00e9llo \u2713"}),
        ("nothing", {}),
        ("fail", {}),
    ]:
        emit(await api_run(api, "basic", pipeline, variables, args.timeout))


async def sc_concurrent(mux: Multiplexor, args) -> None:
    api = Api(mux)
    inputs = [{"a": 1, "b": 2}, {"a": 10, "b": 20}, {"a": 100, "b": 200}, {"a": 1000, "b": 2000}]
    tasks = [asyncio.create_task(api_run(api, "concurrent", "add", v, args.timeout, index=i))
             for i, v in enumerate(inputs)]
    # one line per run, in completion order
    for fut in asyncio.as_completed(tasks):
        emit(await fut)


async def sc_cancel(mux: Multiplexor, args) -> None:
    variables = {"seconds": 5}
    async with Client(multiplexor=mux) as client:
        rec = record("cancel", "sleep", variables, phase="cancel", cookie=str(client.get_cookie()),
                     cancel_after_s=0.3, observed=None, after_cancel_s=None)
        t0 = time.monotonic()
        sent = await client.send_packet(SocketPacket(
            packet_type=PacketType.RUN, pipeline="sleep",
            variables=json.dumps(variables), detach=False))
        if not sent:
            rec.update(observed="send_failed", error="RUN could not be sent")
        else:
            # A reply before the cancel would be a bug in the peer; notice it.
            early = await wait_packet(client, 0.3)
            if early is not None:
                rec["observed"] = "reply_before_cancel"
                fill_from_packet(rec, early)
            else:
                sent = await client.send_packet(SocketPacket(packet_type=PacketType.CANCEL))
                t_cancel = time.monotonic()
                log.info("CANCEL sent for %s: %s", client.get_cookie(), sent)
                if not sent:
                    rec.update(observed="send_failed", error="CANCEL could not be sent")
                else:
                    pkt = await wait_packet(client, args.cancel_wait)
                    rec["after_cancel_s"] = round(time.monotonic() - t_cancel, 3)
                    if pkt is None:
                        rec["observed"] = "no_reply"
                        rec["error"] = f"nothing received within {args.cancel_wait}s of the CANCEL"
                    else:
                        rec["observed"] = "reply"
                        fill_from_packet(rec, pkt)
        rec["elapsed_s"] = round(time.monotonic() - t0, 3)
        emit(rec)

    # Does the broker still serve after that?
    follow_timeout = min(args.timeout, 3.0)
    emit(await api_run(Api(mux), "cancel", "add", {"a": 1, "b": 1}, follow_timeout, phase="after_cancel"))


async def sc_detach(mux: Multiplexor, args) -> None:
    api = Api(mux)
    v = {"msg": "detached"}
    emit(await api_run(api, "detach", "echo", v, args.timeout, detached=True, via="api"))

    v2 = {"msg": "detached-raw"}
    async with Client(multiplexor=mux) as client:
        rec = record("detach", "echo", v2, via="client", detach=True, cookie=str(client.get_cookie()),
                     observed=None)
        t0 = time.monotonic()
        sent = await client.send_packet(SocketPacket(
            packet_type=PacketType.RUN, pipeline="echo",
            variables=json.dumps(v2), detach=True))
        if not sent:
            rec.update(observed="send_failed", error="RUN could not be sent")
        else:
            pkt = await wait_packet(client, args.detach_wait)
            if pkt is None:
                rec.update(ok=True, observed="no_reply")
            else:
                rec["observed"] = "reply"
                fill_from_packet(rec, pkt)
        rec["elapsed_s"] = round(time.monotonic() - t0, 3)
        emit(rec)

    emit(await api_run(api, "detach", "echo", {"msg": "after"}, args.timeout, phase="after_detach"))


async def sc_no_capacity(mux: Multiplexor, args) -> None:
    emit(await api_run(Api(mux), "no_capacity", "echo", {"msg": "hi"}, args.timeout))


async def sc_unknown(mux: Multiplexor, args) -> None:
    emit(await api_run(Api(mux), "unknown", "no_such_pipeline", {"x": 1}, args.timeout))


async def main(args: argparse.Namespace) -> int:
    mux = Multiplexor(client_to_broker(args.broker))
    try:
        await mux.start()
    except Exception as ex:
        log.error("cannot connect to broker %s: %s: %s", args.broker, type(ex).__name__, ex)
        return 1

    await globals()["sc_" + args.scenario](mux, args)

    try:
        await mux.stop(timeout=2.0)
    except Exception as ex:
        log.warning("Multiplexor.stop(): %r", ex)
    return 0


if __name__ == "__main__":
    a = parse_args()
    logging.basicConfig(stream=sys.stderr, level=a.log_level.upper(),
                        format="%(asctime)s rc_client[%(process)d] %(levelname)s %(name)s: %(message)s")

    async def guarded() -> int:
        def watchdog():
            log.error("deadline of %.0fs reached; exiting 3", a.deadline)
            hard_exit(3)
        asyncio.get_running_loop().call_later(a.deadline, watchdog)
        return await main(a)

    hard_exit(asyncio.run(guarded()))
