#!/usr/bin/env bash
# `make bench`: every figure of BENCHMARKS.md in one run, on this machine.
# Starts its own agents on free ports and stops them when done.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=./target/release/spoa-host
BENCH=./target/release/spoa-bench
GUEST=target/guest_iprep.wasm
DURATION=${DURATION:-10s}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
AGENT_PID=""
stop_agent() { if [ -n "$AGENT_PID" ]; then kill "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""; fi; }
trap stop_agent EXIT
start_agent() {  # start_agent ARGS…  → sets AGENT_PID, PORT (AGENT_BIN overrides the binary)
    PORT=$(free_port)
    "${AGENT_BIN:-$HOST}" "$@" -a 127.0.0.1 -p "$PORT" 2>>target/bench-agent.log &
    AGENT_PID=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && return 0; sleep 0.1; done
    echo "agent did not start" >&2; exit 1
}
run() { "$BENCH" --addr 127.0.0.1:"$PORT" --agent-pid "$AGENT_PID" "$@"; echo; }

# IP tables (BENCHMARKS.md, "IP tables"): the structure's load time, memory
# and lookup beside prefix-trie; a lookup from a Rust guest on top of its
# call; the agent's resident memory and load time with a million networks;
# the example guests at 4x16 with the 2-line list and with the million; and
# the million-network file replaced every 2 s under 4x16 load.
ip_tables() {
    local tables=target/bench-tables
    mkdir -p "$tables"
    ./target/release/spoa-tablecost --compare-trie
    ./target/release/spoa-tablecost --write-list "$tables/1m.txt" -n 1000000
    local small=examples/guests/rust/data/blocklist.txt
    local probe=target/fixtures/guest_tables.wasm
    if [ -f "$probe" ]; then
        for list in "$small" "$tables/1m.txt"; do
            echo "a lookup from a Rust guest, table $list:"
            ./target/release/spoa-callcost "$probe" --only reuse --message contains --baseline noop \
                --arg table=str:blocklist --arg ip=ipv4:198.51.100.7 --ip-table blocklist="$list" 2>/dev/null | tail -1
        done
    fi
    for list in "$small" "$tables/1m.txt"; do
        : >target/bench-agent.log
        start_agent --module "$GUEST" --ip-table blocklist="$list"
        echo "agent with table $list: $(grep -o 'entries=[0-9]*' target/bench-agent.log | tail -1), load $(grep -o 'took_ms=[0-9.]*' target/bench-agent.log | head -1), idle RSS $(awk '/VmRSS/ {print $2, $3}' /proc/"$AGENT_PID"/status)"
        stop_agent
    done
    echo
    for example in rust python js; do
        module=target/examples/iprep_$example.wasm
        [ -f "$module" ] || { echo "$module missing (make examples): skipped"; continue; }
        for list in "$small" "$tables/1m.txt"; do
            start_agent --module "$module" --guest-memory 128MiB --guest-timeout 200ms --ip-table blocklist="$list"
            run -d "$DURATION" -c 4 -p 16 --label "example guest: $example, table $list"
            stop_agent
        done
    done
    cp "$tables/1m.txt" "$tables/live.txt"
    start_agent --module "$GUEST" --ip-table blocklist="$tables/live.txt"
    run -d "$DURATION" -c 4 -p 16 --label "guest-iprep, 1M-network table, 4x16, no reload"
    ( for _ in $(seq 20); do sleep 2; cp "$tables/1m.txt" "$tables/live.new"; mv "$tables/live.new" "$tables/live.txt"; done ) &
    local replacer=$!
    run -d "$DURATION" -c 4 -p 16 --label "guest-iprep, 1M-network table, 4x16, the file replaced every 2 s"
    kill "$replacer" 2>/dev/null || true; wait "$replacer" 2>/dev/null || true
    echo "table reloads during the run: $(grep -c 'reason="file changed"' target/bench-agent.log)"
    stop_agent
    echo
}

# The example guests, one per language (BENCHMARKS.md, "Guests in four
# languages"; make examples builds them): size, load cold and from the
# cache, the cost of a call, and msgs per agent CPU-s and RSS at 4x16.
languages() {
    for example in rust python js c; do
        module=target/examples/iprep_$example.wasm
        [ -f "$module" ] || { echo "$module missing (make examples): skipped"; continue; }
        echo "example guest: $example, $(wc -c <"$module") bytes"
        flags=(--guest-memory 128MiB --guest-timeout 50ms --ip-table blocklist=examples/guests/rust/data/blocklist.txt)
        ./target/release/spoa-callcost "$module" --only reuse "${flags[@]}" --expect-actions 2
        ./target/release/spoa-callcost "$module" --only reuse --no-cache "${flags[@]}" --expect-actions 2 | grep load:
        start_agent --module "$module" "${flags[@]}"
        run -d "$DURATION" -c 4 -p 16 --label "example guest: $example"
        stop_agent
    done
}

# Safe deploys (BENCHMARKS.md, "Recording and shadows"): guest-iprep at 4x16
# without, with recording at 1 % and 100 %, and with a shadow of itself at
# 10 % and 100 %, each beside the same agent without, in one run.
deploys() {
    local dir=target/bench-deploys
    rm -rf "$dir"; mkdir -p "$dir"
    local guest; guest=$(realpath "$GUEST")
    for share in none 0.01 1; do
        if [ "$share" = none ]; then
            start_agent --module "$GUEST"
            run -d "$DURATION" -c 4 -p 16 --label "guest-iprep, 4x16, no recording"
        else
            start_agent --module "$GUEST" --record "$dir/record-$share" --record-share "$share"
            run -d "$DURATION" -c 4 -p 16 --label "guest-iprep, 4x16, --record-share $share"
            echo "recorded: $(cat "$dir/record-$share"/*.jsonl | wc -l) lines, $(du -sh "$dir/record-$share" | cut -f1)"
        fi
        stop_agent
    done
    for share in none 0.1 1; do
        local config="$dir/shadow-$share.toml"
        printf '[[guest]]\nname = "iprep"\nmodule = "%s"\nmessages = ["check-client-ip"]\n' "$guest" >"$config"
        if [ "$share" != none ]; then
            printf '[guest.shadow]\nmodule = "%s"\nshare = %s\n' "$guest" "$share" >>"$config"
        fi
        : >target/bench-metrics.txt
        local metrics; metrics=$(free_port)
        start_agent --config "$config" --metrics-address 127.0.0.1:"$metrics"
        run -d "$DURATION" -c 4 -p 16 --label "guest-iprep (--config), 4x16, shadow share $share"
        curl -s "http://127.0.0.1:$metrics/metrics" | grep '^spoa_shadow_total' || true
        stop_agent
    done
    echo
}

# Beside the agents others wrote (bench/reference-agents.sh builds them):
# msgs per agent CPU-s of guest-iprep (the wasm32-unknown-unknown build,
# and the same code built with `cargo build --target wasm32-wasip2`, and
# built against 0.1.5: typed batches), the native path (both also with one
# worker thread, and over a Unix socket), the `spop` crate's example agent
# and HAProxy's C example agent, at 4x16 and 16x64, in rounds that
# alternate them; guest-iprep and the native path also with --no-rebalance.
start_other() {  # start_other ENV-ASSIGNMENT|- BINARY ARGS… (PORT is set first)
    local env=$1; shift
    if [ "$env" = - ]; then "$@" >>target/bench-agent.log 2>&1 & else env "$env" "$@" >>target/bench-agent.log 2>&1 & fi
    AGENT_PID=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && return 0; sleep 0.1; done
    echo "agent did not start" >&2; exit 1
}
side_by_side() {
    local agents; agents=$(bench/reference-agents.sh)
    local spop c; spop=$(sed -n 's/^spop=//p' <<<"$agents"); c=$(sed -n 's/^c=//p' <<<"$agents")
    for round in 1 2; do
        for shape in "4 16" "16 64"; do
            set -- $shape
            start_agent --module "$GUEST"
            run -d "$DURATION" -c "$1" -p "$2" --label "round $round, guest-iprep, $1x$2"
            stop_agent
            start_agent --module "$FIXTURES/guest_iprep_wasip2.wasm"
            run -d "$DURATION" -c "$1" -p "$2" --label "round $round, guest-iprep built for wasm32-wasip2, $1x$2"
            stop_agent
            start_agent --module tests/fixtures/prebuilt/guest_iprep_0_1_5.wasm
            run -d "$DURATION" -c "$1" -p "$2" --label "round $round, guest-iprep built against 0.1.5 (typed batches, no packed export), $1x$2"
            stop_agent
            start_agent --native-iprep
            run -d "$DURATION" -c "$1" -p "$2" --label "round $round, native path, $1x$2"
            stop_agent
            # Connections kept where they were placed (main before the
            # data plane moved them by load: docs/operators.md, "Sizing the
            # data plane").
            start_agent --module "$GUEST" --no-rebalance
            run -d "$DURATION" -c "$1" -p "$2" --label "round $round, guest-iprep, --no-rebalance, $1x$2"
            stop_agent
            start_agent --native-iprep --no-rebalance
            run -d "$DURATION" -c "$1" -p "$2" --label "round $round, native path, --no-rebalance, $1x$2"
            stop_agent
            # One data-plane thread, the load generator on the other core:
            # what a worker's sleeps and wake-ups cost (docs/operators.md,
            # "Sizing the data plane").
            start_agent --module "$GUEST" --workers 1
            run -d "$DURATION" -c "$1" -p "$2" --label "round $round, guest-iprep, --workers 1, $1x$2"
            stop_agent
            start_agent --native-iprep --workers 1
            run -d "$DURATION" -c "$1" -p "$2" --label "round $round, native path, --workers 1, $1x$2"
            stop_agent
            # Over a Unix socket (HAProxy: `server … unix@PATH`), default workers.
            start_agent --module "$GUEST" --unix "$AGENT_SOCKET"
            run --unix "$AGENT_SOCKET" -d "$DURATION" -c "$1" -p "$2" --label "round $round, guest-iprep over a Unix socket, $1x$2"
            stop_agent
            start_agent --native-iprep --unix "$AGENT_SOCKET"
            run --unix "$AGENT_SOCKET" -d "$DURATION" -c "$1" -p "$2" --label "round $round, native path over a Unix socket, $1x$2"
            stop_agent
            if [ -n "$spop" ]; then
                PORT=$(free_port); start_other "SPOP_ADDR=127.0.0.1:$PORT" "$spop"
                run -d "$DURATION" -c "$1" -p "$2" --label "round $round, spop $SPOP_LABEL example agent, $1x$2"
                stop_agent
            fi
            if [ -n "$c" ]; then
                PORT=$(free_port); start_other - "$c" -p "$PORT" -n "$(nproc)" -c pipelining
                run -d "$DURATION" -c "$1" -p "$2" --label "round $round, HAProxy's C example agent, $1x$2"
                stop_agent
            fi
        done
    done
    [ -n "$spop" ] || echo "the spop crate's example agent was not built (see above)"
    [ -n "$c" ] || echo "HAProxy's C example agent was not built (see above)"
}
FIXTURES=target/fixtures
AGENT_SOCKET=target/bench-agent.sock
SPOP_LABEL=0.13.1

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "kernel: $(uname -r); $($HOST --version)"
echo "command: make bench (DURATION=$DURATION${ONLY:+, ONLY=$ONLY})"
echo

# ONLY=tables (or deploys, or languages) make bench: that section alone.
if [ "${ONLY:-}" = tables ]; then
    ip_tables
    exit 0
fi
if [ "${ONLY:-}" = deploys ]; then
    deploys
    exit 0
fi
if [ "${ONLY:-}" = languages ]; then
    languages
    exit 0
fi
if [ "${ONLY:-}" = agents ]; then
    side_by_side
    exit 0
fi

# One guest call without the network, per instance mode and native.
./target/release/spoa-callcost "$GUEST"
# The same message in batches (handle-messages), per message: what a batch
# saves of the entry, and the floor of a message that does nothing.
for size in 16 64; do
    ./target/release/spoa-callcost "$GUEST" --only reuse --batch "$size" | tail -1
done
./target/release/spoa-callcost "$GUEST" --only reuse --batch 16 --message other --expect-actions 0 | tail -1
echo

# Before/after in one run: OLD_HOST=/path/to/an/older/spoa-host make bench
if [ -n "${OLD_HOST:-}" ]; then
    AGENT_BIN=$OLD_HOST start_agent --module "$GUEST"
    run -d "$DURATION" -c 4 -p 16 --label "OLD_HOST ($OLD_HOST), wasm guest"
    stop_agent
fi

start_agent --module "$GUEST"
run -d "$DURATION" -c 4 -p 16 --label "wasm guest (reused instances)"
run -d "$DURATION" -c 16 -p 64 --label "wasm guest, 16x64"
run -d "$DURATION" -c 4 -p 16 -m 4 --label "wasm guest, 4 messages per NOTIFY"
run -d "$DURATION" -c 1 -p 1 --label "wasm guest, no pipelining (latency floor)"
run -c 4 -p 16 -d 3s --idle 1000 --label "wasm guest with 1000 idle connections"
stop_agent

# Batches: when the ACKs of a burst of 50 NOTIFYs of a ~2 ms message come
# (first, median, last), with the batch export and without it; and
# guest-iprep's 0.1.3 build (no batch export) beside today's at 4x16, 16x64.
BATCH=target/fixtures/guest_batch.wasm
if [ -f "$BATCH" ]; then
    start_agent --module "$BATCH" --guest-timeout 100ms
    run --burst 50 --label "(batch export)"
    stop_agent
    start_agent --module "$BATCH" --guest-timeout 100ms --guest-batch 1
    run --burst 50 --label "(--guest-batch 1: one call per message)"
    stop_agent
fi
PREBUILT=tests/fixtures/prebuilt/guest_iprep_0_1_3.wasm
start_agent --module "$PREBUILT"
run -d "$DURATION" -c 4 -p 16 --label "guest-iprep built against 0.1.3 (no batch export), 4x16"
run -d "$DURATION" -c 16 -p 64 --label "guest-iprep built against 0.1.3 (no batch export), 16x64"
stop_agent

# Guests apart from the network: 4 connections keep a guest looping to its
# 10 ms deadline; health checks and another connection are timed meanwhile.
HOSTILE=target/fixtures/guest_hostile_a.wasm
if [ -f "$HOSTILE" ]; then
    if [ -n "${OLD_HOST:-}" ]; then
        AGENT_BIN=$OLD_HOST start_agent --module "$HOSTILE"
        run -d "$DURATION" -c 1 -p 1 --spin 4 --healthchecks-per-sec 100 --label "OLD_HOST, 4 connections looping to the deadline, 1 other"
        stop_agent
    fi
    start_agent --module "$HOSTILE"
    run -d "$DURATION" -c 1 -p 1 --spin 4 --healthchecks-per-sec 100 --label "4 connections looping to the deadline, 1 other"
    stop_agent
fi

# Several guests: the other guest's latency while one loops to its deadline
# or traps on every call (4 connections each), against the same agent idle.
if [ -f "$HOSTILE" ]; then
    start_agent --config bench/several-guests.toml
    run -d "$DURATION" -c 1 -p 1 --label "several guests: iprep alone"
    run -d "$DURATION" -c 1 -p 1 --spin 4 --spin-message loop --label "several guests: iprep while the other guest loops to its deadline"
    run -d "$DURATION" -c 1 -p 1 --spin 4 --spin-message trap --label "several guests: iprep while the other guest traps"
    run -d "$DURATION" -c 4 -p 16 --label "several guests: iprep, 4x16 (routing cost)"
    stop_agent
fi

# Shared state: the key-value store's cost per operation, in process and over
# a real Redis, and the rate-limit guest (two store calls per message) with
# each backend. The limit is out of reach so every message counts.
RATE=target/guest_ratelimit.wasm
RATE_ARGS=(--module "$RATE" --guest-config limit=1000000000)
./target/release/spoa-kvcost -d 2s
# The expiry sweep with a million entries: store-call latency meanwhile.
./target/release/spoa-kvsweep -n 1000000 -d 5s
./target/release/spoa-callcost "$RATE" --only reuse --expect-actions 2 --guest-config limit=1000000000
echo
start_agent "${RATE_ARGS[@]}"
run -d "$DURATION" -c 4 -p 16 --label "rate-limit guest, in-process store, 4x16"
stop_agent
if command -v redis-server >/dev/null; then
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
    REDIS_PID=$!
    sleep 0.5
    ./target/release/spoa-kvcost -d 2s --kv "redis://127.0.0.1:$REDIS_PORT"
    ./target/release/spoa-callcost "$RATE" --only reuse --expect-actions 2 --guest-config limit=1000000000 --kv "redis://127.0.0.1:$REDIS_PORT"
    echo "redis-benchmark (this machine's floor): $(redis-benchmark -p "$REDIS_PORT" -t get -n 20000 -c 1 -q | grep -o 'GET: [0-9.]* requests per second, p50=[0-9.]* msec' | tail -1)"
    echo
    start_agent "${RATE_ARGS[@]}" --kv "redis://127.0.0.1:$REDIS_PORT"
    run -d "$DURATION" -c 4 -p 16 --label "rate-limit guest, Redis store, 4x16"
    stop_agent
    start_agent "${RATE_ARGS[@]}" --kv "redis://127.0.0.1:$REDIS_PORT" -n 1
    run -d "$DURATION" -c 4 -p 16 --label "rate-limit guest, Redis store, 4x16, -n 1"
    stop_agent
    kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
else
    echo "redis-server not installed: skipping the Redis figures (apt-get install redis-server)"
fi
echo

# TLS next to plain TCP, one run (the generator speaks mutual TLS too).
PKI=target/bench-pki
scripts/dev-certs.sh "$PKI" >/dev/null
start_agent --module "$GUEST"
run -d "$DURATION" -c 4 -p 16 --label "plain TCP, 4x16"
stop_agent
start_agent --module "$GUEST" --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" --tls-client-ca "$PKI/ca.pem"
run -d "$DURATION" -c 4 -p 16 --tls-ca "$PKI/ca.pem" --tls-cert "$PKI/client.pem" --tls-key "$PKI/client.key" --label "mutual TLS, 4x16"
stop_agent

side_by_side
languages
ip_tables
deploys

start_agent --native-iprep
run -d "$DURATION" -c 4 -p 16 --label "native build of the same logic"
run -d "$DURATION" -c 16 -p 64 --label "native, 16x64"
stop_agent

start_agent --module "$GUEST" --fresh-instance
run -d "$DURATION" -c 4 -p 16 --label "wasm guest, --fresh-instance"
stop_agent

# Through HAProxy: wrk requests/s with the SPOE filter vs without.
if command -v haproxy >/dev/null && command -v wrk >/dev/null; then
    start_agent --module "$GUEST"
    dir=$(mktemp -d)
    HTTP_PORT=$(free_port)
    sed 's/^    filter spoe/    #filter spoe/' examples/haproxy-2.6/haproxy.cfg > "$dir/no-spoe.cfg"
    for variant in with-spoe no-spoe; do
        cfg=examples/haproxy-2.6/haproxy.cfg
        [ "$variant" = no-spoe ] && cfg="$dir/no-spoe.cfg"
        HTTP_BIND=127.0.0.1:$HTTP_PORT AGENT1_ADDR=127.0.0.1:$PORT SPOE_CONF=$PWD/examples/haproxy-2.6/spoe-iprep.conf SCORE_THRESHOLD=0 \
            haproxy -db -f "$cfg" >"$dir/haproxy-$variant.log" 2>&1 &
        HAPROXY_PID=$!
        sleep 1
        echo "wrk through HAProxy $(haproxy -v 2>&1 | sed -n 1p | cut -d" " -f3), $variant: wrk -t1 -c32 -d$DURATION"
        wrk -t1 -c32 -d"$DURATION" "http://127.0.0.1:$HTTP_PORT/" | grep -E 'Requests/sec|Latency|Non-2xx|requests in'
        kill "$HAPROXY_PID"; wait "$HAPROXY_PID" 2>/dev/null || true
        echo
    done
    stop_agent
    rm -rf "$dir"
else
    echo "haproxy or wrk not installed: skipping the HAProxy comparison (apt-get install haproxy wrk)"
fi
