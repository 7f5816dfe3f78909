#!/usr/bin/env bash
# The whole end-to-end benchmark in one command (docs/performance.md):
# every compiled-in transport (tcp, unix, tls, quic) with both codecs against
# the raw relay baseline, NATS request-reply in the same run, the broker's
# memory per idle connection, and a soak under load that fails if the
# broker's memory grows. About 10 minutes with the defaults. Each throughput
# figure is the best of 3 one-second rounds (the machine may be shared).
#
#   bash scripts/bench.sh                       # everything: IDLE=10000, SOAK=300
#   IDLE=1000 SOAK=30 bash scripts/bench.sh     # quicker
#   SOAK=0 bash scripts/bench.sh --seconds 1    # extra arguments go to `plexwire bench`
#
# Installs nats-server with apt when it is missing and we are root (Debian's
# package binds 127.0.0.1 only; the benchmark starts its own server on a free
# loopback port); without it the NATS rows are skipped with the reason.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
IDLE="${IDLE:-10000}"
SOAK="${SOAK:-300}"
JSON="${JSON:-bench.jsonl}"

if ! command -v nats-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing nats-server (apt-get)"
        apt-get install -y -qq nats-server >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; } \
            || echo "could not install nats-server: the NATS rows will be skipped"
    else
        echo "nats-server is not installed (Debian: sudo apt-get install nats-server): the NATS rows will be skipped"
    fi
fi

echo "== building (release, --features full) and the NATS helper"
cargo build --release --features full -p plexwire-cli
cargo build --release -p plexwire-nats-baseline

# The broker and this process each hold one file descriptor per idle
# connection; `plexwire bench` also raises its soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== load on the machine before the run: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; busy = figures are noisy, compare ratios)"
exec ./target/release/plexwire bench --transports all --seconds 1 --sequential 10000 --rounds 3 \
    --idle "$IDLE" --soak "$SOAK" --json "$JSON" "$@"
