#!/usr/bin/env python3
"""Run the harness scripts against each other: real ReasonChip 0.0.6 broker +
worker + client, on 127.0.0.1 (free ports) and UNIX sockets under a temp dir.
It checks the harness itself and produces the observations in README.md.

    .venv/bin/python tests/interop/rc_selftest.py [--keep DIR] [--only NAME ...]

stdout: a report (commands, every line each client printed, exit statuses).
Exit status: 0 if every client exited 0 and printed only JSON lines with the
expected results (see CHECKS), 1 otherwise. Every process it starts is
ended (SIGTERM, then SIGKILL) by its own pid.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, name, argv, logdir):
        self.name = name
        self.argv = argv
        self.err_path = os.path.join(logdir, name + ".stderr")
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout=15.0) -> bool:
        # READY is the first stdout line; poll with a deadline.
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                chunk = os.read(self.p.stdout.fileno(), 4096)
                if not chunk:
                    return False
                buf += chunk
                if b"\n" in buf:
                    return buf.split(b"\n", 1)[0] == b"READY"
        return False

    def stop(self, timeout=8.0):
        """SIGTERM, wait; SIGKILL if needed. Returns (rc, seconds, how)."""
        if self.p.poll() is not None:
            return self.p.returncode, 0.0, "already exited"
        t0 = time.monotonic()
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
            return rc, round(time.monotonic() - t0, 2), "SIGTERM"
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait(), round(time.monotonic() - t0, 2), "SIGKILL"

    def close(self):
        self.err.close()


def run_client(url, scenario, logdir, tag, timeout=90):
    argv = [PY, os.path.join(HERE, "rc_client.py"), "--broker", url, scenario]
    t0 = time.monotonic()
    with open(os.path.join(logdir, f"client-{tag}-{scenario}.stderr"), "wb") as err:
        try:
            cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, timeout=timeout)
            rc, out = cp.returncode, cp.stdout.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as ex:
            rc, out = "TIMEOUT", (ex.stdout or b"").decode("utf-8", "replace")
    return argv, rc, out, round(time.monotonic() - t0, 2)


# expected (pipeline, phase/via) -> predicate over the JSON line
def check_line(scn, rec):
    p, ok, rc, res = rec.get("pipeline"), rec.get("ok"), rec.get("rc"), rec.get("result")
    if scn in ("basic", "concurrent"):
        if p == "add":
            v = rec["variables"]
            return ok and rc == "OK" and res == v["a"] + v["b"]
        if p == "echo":
            return ok and rc == "OK" and res == rec["variables"]
        if p == "nothing":
            return ok and rc == "OK" and res is None
        if p == "fail":
            return not ok and rc == "PROCESSOR_EXCEPTION" and rec["error"] == "1 == 2"
    if scn == "unknown":
        return not ok and rc == "PROCESSOR_EXCEPTION" and rec["stacktrace"] == []
    if scn == "no_capacity":
        return not ok and rc == "NO_CAPACITY" and rec["error"] == "No capacity available"
    if scn == "detach":
        if rec.get("phase") == "after_detach":
            return ok and res == rec["variables"]
        return ok and res is None and rc is None
    if scn == "cancel":
        # reasonchip-vs-reasonchip: no reply to the CANCEL, and the broker is
        # deadlocked afterwards (documented 0.0.6 defects 2 and 3).
        if rec.get("phase") == "cancel":
            return rec.get("observed") == "no_reply"
        return rec.get("exception") == "TimeoutError"
    return False


EXPECTED_LINES = {"basic": 4, "concurrent": 4, "unknown": 1, "no_capacity": 1, "detach": 3, "cancel": 2}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", metavar="DIR", help="keep logs and sockets in DIR (default: temp dir, removed)")
    ap.add_argument("--only", action="append", choices=["tcp", "unix", "http", "no_capacity", "cancel_tcp", "cancel_unix"],
                    help="run only these setups")
    args = ap.parse_args()

    base = args.keep or tempfile.mkdtemp(prefix="rc-selftest-")
    os.makedirs(base, exist_ok=True)
    failures = []
    procs = []

    def say(*a):
        print(*a, flush=True)

    def setup(name, clients, workers, worker_url=None):
        """Start a broker (and a worker if worker_url) and wait for READY."""
        b = Proc(f"{name}-broker", [PY, os.path.join(HERE, "rc_broker.py")]
                 + sum((["--clients", u] for u in clients), [])
                 + sum((["--workers", u] for u in workers), []), base)
        procs.append(b)
        say(f"$ {' '.join(b.argv[1:])}")
        if not b.wait_ready():
            failures.append(f"{name}: broker not READY")
            say("  broker: NOT READY")
            return b, None
        say("  broker: READY")
        w = None
        if worker_url:
            w = Proc(f"{name}-worker", [PY, os.path.join(HERE, "rc_worker.py"), "--broker", worker_url,
                                        "--capacity", "16"], base)
            procs.append(w)
            say(f"$ {' '.join(w.argv[1:])}")
            if not w.wait_ready():
                failures.append(f"{name}: worker not READY")
                say("  worker: NOT READY")
            else:
                say("  worker: READY")
            time.sleep(0.2)  # REGISTER has no reply; give the broker a moment
        return b, w

    def client(name, url, scenario):
        argv, rc, out, secs = run_client(url, scenario, base, name)
        say(f"$ {' '.join(argv[1:])}    # exit {rc}, {secs}s")
        lines = [l for l in out.splitlines()]
        for l in lines:
            say("  " + l)
        if rc != 0:
            failures.append(f"{name}/{scenario}: exit {rc}")
        if len(lines) != EXPECTED_LINES[scenario]:
            failures.append(f"{name}/{scenario}: {len(lines)} lines, expected {EXPECTED_LINES[scenario]}")
        for l in lines:
            try:
                rec = json.loads(l)
            except ValueError:
                failures.append(f"{name}/{scenario}: non-JSON stdout line {l!r}")
                continue
            if not check_line(scenario, rec):
                failures.append(f"{name}/{scenario}: unexpected {l}")

    def teardown(*ps):
        for p in ps:
            if p is None:
                continue
            rc, secs, how = p.stop()
            say(f"  {p.name}: exit {rc} after {how} ({secs}s)")
            p.close()

    def want(n):
        return not args.only or n in args.only

    try:
        for tname in ("tcp", "unix", "http"):
            if not want(tname):
                continue
            say(f"\n## setup {tname}")
            cp, wp = free_port(), free_port()
            d = os.path.join(base, tname)
            os.makedirs(d, exist_ok=True)
            clients = [f"tcp://127.0.0.1:{cp}", f"socket://{d}/client.sock"]
            workers = [f"tcp://127.0.0.1:{wp}", f"socket://{d}/worker.sock"]
            if tname == "http":
                hp = free_port()
                clients.append(f"http://127.0.0.1:{hp}")
                curl, wurl = f"http://127.0.0.1:{hp}", workers[0]
                scenarios = ["basic", "concurrent", "unknown"]  # broker-generated replies deadlock HTTP (0.0.6)
            elif tname == "tcp":
                curl, wurl = clients[0], workers[0]
                scenarios = ["basic", "concurrent", "unknown", "detach"]
            else:
                curl, wurl = clients[1], workers[1]
                scenarios = ["basic", "concurrent", "unknown", "detach"]
            b, w = setup(tname, clients, workers, wurl)
            for s in scenarios:
                client(tname, curl, s)
            teardown(w, b)

        if want("no_capacity"):
            say("\n## setup no_capacity (broker only)")
            cp, wp = free_port(), free_port()
            d = os.path.join(base, "nocap")
            os.makedirs(d, exist_ok=True)
            clients = [f"tcp://127.0.0.1:{cp}", f"socket://{d}/client.sock"]
            b, _ = setup("no_capacity", clients, [f"tcp://127.0.0.1:{wp}"])
            client("no_capacity-tcp", clients[0], "no_capacity")
            client("no_capacity-unix", clients[1], "no_capacity")
            teardown(b)

        for tname in ("cancel_tcp", "cancel_unix"):
            if not want(tname):
                continue
            say(f"\n## setup {tname}")
            cp, wp = free_port(), free_port()
            d = os.path.join(base, tname)
            os.makedirs(d, exist_ok=True)
            clients = [f"tcp://127.0.0.1:{cp}", f"socket://{d}/client.sock"]
            workers = [f"tcp://127.0.0.1:{wp}", f"socket://{d}/worker.sock"]
            i = 0 if tname == "cancel_tcp" else 1
            b, w = setup(tname, clients, workers, workers[i])
            client(tname, clients[i], "cancel")
            if w is not None:
                r = w.p.poll()
                say(f"  worker after cancel: {'still running' if r is None else f'exited {r}'}")
            teardown(w, b)
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            say(f"\nlogs kept in {base}")

    say("\n## result")
    if failures:
        for f in failures:
            say("FAIL " + f)
        return 1
    say("all setups behaved as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
