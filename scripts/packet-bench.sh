#!/usr/bin/env bash
# The packet-stream benchmark in one run (issue 16, item 10): echo requests/s
# at 1 and 100 in flight, one connection over loopback TCP, against
#   - plexwire packet serve        (plexwire to plexwire; one task keeping N requests
#                                   in flight, as the raw client does, and also a
#                                   caller task per request),
#   - a raw frame echo             (plexwire bench-relay: the raw relay round trip, no protocol),
#   - the real cs.packetstream 20240630 server (tests/interop/ps_server.py, from .venv),
# then the ratios. Release build; every server is started and stopped here.
#
#   bash scripts/packet-bench.sh [SECONDS_PER_POINT]      (default 3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs="${1:-3}"
cargo build -q --release -p plexwire-cli
bin="${CARGO_TARGET_DIR:-target}/release/plexwire"
py=.venv/bin/python
[[ -x "$py" ]] || bash scripts/python-peers.sh >&2
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

start() { # name, marker, command...
    local name="$1" marker="$2"; shift 2
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q "^$marker" "$tmp/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    awk -v m="$marker" '$1 == m { print $2; exit }' "$tmp/$name.out"
}

pw_url="$(start serve LISTENING "$bin" packet serve --listen tcp://127.0.0.1:0)"
raw_url="$(start relay listening "$bin" bench-relay --listen tcp://127.0.0.1:0)"
py_port="$(start python LISTENING "$py" tests/interop/ps_server.py)"
py_url="tcp://127.0.0.1:$py_port"

{
    "$bin" packet bench --connect "$pw_url" --seconds "$secs" | sed 's/"peer":"packet-stream"/"peer":"plexwire"/'
    "$bin" packet bench --tasks --connect "$pw_url" --seconds "$secs" | sed 's/"peer":"packet-stream-tasks"/"peer":"plexwire-tasks"/'
    "$bin" packet bench --raw --connect "$raw_url" --seconds "$secs"
    "$bin" packet bench --connect "$py_url" --seconds "$secs" | sed 's/"peer":"packet-stream"/"peer":"python"/'
} | tee "$tmp/results.jsonl"

python3 - "$tmp/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate = {(r["peer"], r["in_flight"]): r["requests_per_second"] for r in rows}
print()
print("| in flight | plexwire→plexwire req/s | (a caller task per request) | raw relay req/s | python server req/s | raw / plexwire | plexwire / python |")
print("|---|---|---|---|---|---|---|")
for d in sorted({k[1] for k in rate}):
    pw, pwt, raw, py = (rate[(p, d)] for p in ("plexwire", "plexwire-tasks", "raw-relay", "python"))
    print(f"| {d} | {pw:,.0f} | {pwt:,.0f} | {raw:,.0f} | {py:,.0f} | {raw/pw:.2f} | {pw/py:.0f}× |")
PY
