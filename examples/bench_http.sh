#!/usr/bin/env bash
# HTTP under a restart storm, with wrk (HTTP/1.1 keep-alive) and h2load (h2): the http example
# (uninterruptible + hyper) steady and restarted every 50 ms, and the same service in plain
# hyper (examples/plain_http.rs) as the floor. A benchmark, not a test: the figures go in
# BENCHMARKS.md. Needs the Debian packages wrk and nghttp2-client.
#
#   bash examples/bench_http.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
cargo build --release --quiet --example http --example plain_http
bin=target/release/examples
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; pkill -f "$bin/http" 2>/dev/null; rm -rf "$tmp"' EXIT

wait_listening() { for _ in $(seq 200); do grep -q "listening on" "$1" && return; sleep 0.05; done; exit 1; }

run_load() { # name url
    echo "== $1: wrk -t2 -c64 -d${seconds}s (HTTP/1.1 keep-alive)"
    wrk -t2 -c64 -d"${seconds}s" "$2" | grep -E "Requests/sec|requests in|Socket errors|Non-2xx"
    echo "== $1: h2load -c64 -m1 -D$seconds (h2, prior knowledge)"
    h2load -c64 -m1 -D"$seconds" "$2" | grep -E "^finished in|^requests:"
}

"$bin/plain_http" 127.0.0.1:6892 > "$tmp/plain.log" &
wait_listening "$tmp/plain.log"
run_load "plain hyper" http://127.0.0.1:6892/
kill %1

BIND=tcp://127.0.0.1:6893 PID_FILE="$tmp/http.pid" "$bin/http" > "$tmp/http.log" 2>&1 &
wait_listening "$tmp/http.log"
run_load "uninterruptible, steady" http://127.0.0.1:6893/

storm() { while true; do kill -USR1 "$(cat "$tmp/http.pid")" 2>/dev/null || true; sleep 0.05; done; }
storm & storm_pid=$!
run_load "uninterruptible, restarted every 50 ms" http://127.0.0.1:6893/
kill $storm_pid
echo "restarts: $(grep -c 'is ready: this process stops accepting' "$tmp/http.log")"
kill -TERM "$(cat "$tmp/http.pid")"
