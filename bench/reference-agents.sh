#!/usr/bin/env bash
# Builds the two agents `make bench` runs beside spoa-host, from their
# published sources, into target/bench-agents/:
#
# - the `spop` crate's example agent (examples/agent_tcp.rs, native Rust, no
#   sandbox), from crates.io;
# - HAProxy's C example agent (contrib/spoa_example, libevent), from the
#   HAProxy 2.2.9 source Debian publishes (the last HAProxy release that
#   carried it; later ones point to a GitHub repository, which no registry
#   here serves).
#
# Each download is checked against its pinned SHA-256. The only changes made
# to either source: the spop example's listen address, hard-wired to
# 0.0.0.0:12345, is read from $SPOP_ADDR, so the bench can give it a free
# port, and its manifest gets an empty [workspace] (it is unpacked inside
# ours). Prints the path of each binary built, or why it was not.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench-agents
mkdir -p "$OUT"

SPOP_VERSION=0.13.1
SPOP_SHA256=95c4d808bea3babfe46c31e12924868312811a7a067b56dd4356963d901fb110
HAPROXY_VERSION=2.2.9
HAPROXY_SHA256=21680459b08b9ba21c8cc9f5dbd0ee6e1842f57a3a67f87179871e1c13ebd4e3

fetch() {  # fetch URL FILE SHA256
    if [ ! -f "$2" ] || ! echo "$3  $2" | sha256sum -c --quiet - 2>/dev/null; then
        curl -fsSL --retry 2 -m 300 -o "$2.part" "$1" || return 1
        echo "$3  $2.part" | sha256sum -c --quiet - || { echo "$1: SHA-256 differs" >&2; return 1; }
        mv "$2.part" "$2"
    fi
}

spop_agent() {
    local dir=$OUT/spop-$SPOP_VERSION
    local bin=$dir/target/release/examples/agent_tcp
    if [ ! -x "$bin" ]; then
        fetch "https://static.crates.io/crates/spop/spop-$SPOP_VERSION.crate" "$OUT/spop-$SPOP_VERSION.crate" "$SPOP_SHA256" || return 1
        rm -rf "$dir" && tar xzf "$OUT/spop-$SPOP_VERSION.crate" -C "$OUT" || return 1
        sed -i 's|TcpListener::bind("0.0.0.0:12345")|TcpListener::bind(std::env::var("SPOP_ADDR").unwrap_or_else(\|_\| "0.0.0.0:12345".into()))|' \
            "$dir/examples/agent_tcp.rs"
        grep -q SPOP_ADDR "$dir/examples/agent_tcp.rs" || { echo "spop example: its listen address moved" >&2; return 1; }
        # Its own workspace (it is unpacked inside this one), its own lock
        # file, its own target directory.
        printf '\n[workspace]\n' >>"$dir/Cargo.toml"
        (cd "$dir" && cargo build --release --locked --example agent_tcp) >"$OUT/spop-build.log" 2>&1 \
            || { echo "spop example: build failed, see $OUT/spop-build.log" >&2; return 1; }
    fi
    echo "spop=$bin"
}

c_agent() {
    local dir=$OUT/haproxy-$HAPROXY_VERSION/contrib/spoa_example
    if [ ! -x "$dir/spoa" ]; then
        if [ ! -f /usr/include/event2/event.h ]; then
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libevent-dev >/dev/null
            fi
            [ -f /usr/include/event2/event.h ] || { echo "C agent: needs libevent-dev (apt-get install libevent-dev)" >&2; return 1; }
        fi
        fetch "http://deb.debian.org/debian/pool/main/h/haproxy/haproxy_$HAPROXY_VERSION.orig.tar.gz" \
            "$OUT/haproxy_$HAPROXY_VERSION.orig.tar.gz" "$HAPROXY_SHA256" || return 1
        tar xzf "$OUT/haproxy_$HAPROXY_VERSION.orig.tar.gz" -C "$OUT" "haproxy-$HAPROXY_VERSION/contrib/spoa_example" || return 1
        # Its Makefile's -Werror predates this compiler's warnings.
        make -C "$dir" CFLAGS="-g -O2 -Wall -pthread" >"$OUT/spoa-example-build.log" 2>&1 \
            || { echo "C agent: build failed, see $OUT/spoa-example-build.log" >&2; return 1; }
    fi
    echo "c=$dir/spoa"
}

spop_agent || echo "spop=" 
c_agent || echo "c="
