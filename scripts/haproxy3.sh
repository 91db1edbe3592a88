#!/usr/bin/env bash
# Prints the path of an HAProxy 3.x binary for the end-to-end tests, building
# one into target/haproxy3/ when there is none yet.
#
# - HAPROXY3_BIN, when set, is used as is (it must run and say 3.x).
# - Otherwise target/haproxy3/haproxy is used when it exists.
# - Otherwise the upstream tarball of Debian's `haproxy` source package
#   (HAPROXY3_VERSION, pinned with its SHA-256) is fetched from Debian's pool
#   and built with OpenSSL (libssl-dev from the system's own suite). Nothing
#   of a newer suite is installed. The version is pinned rather than read off
#   unstable's index: that index moves ahead of what the mirrors keep in the
#   pool, and a pinned tarball with its hash builds the same HAProxy every
#   time.
#
# Everything but the final path goes to stderr, so a Makefile can capture it.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${HAPROXY3_VERSION:-3.2.23}
SHA256=${HAPROXY3_SHA256:-82d14ef33571e4edeb9197516c0d058a3775fb80541e46afe4377428e461fef0}
# Where the tarball is looked for, in order: Debian's pool (until the
# version is superseded there), Debian's snapshot archive, upstream. The
# SHA-256 is checked whichever answers.
URLS=${HAPROXY3_URLS:-"http://deb.debian.org/debian/pool/main/h/haproxy/haproxy_$VERSION.orig.tar.gz https://snapshot.debian.org/archive/debian/20260901T000000Z/pool/main/h/haproxy/haproxy_$VERSION.orig.tar.gz https://www.haproxy.org/download/${VERSION%.*}/src/haproxy-$VERSION.tar.gz"}
OUT=target/haproxy3
BIN=$OUT/haproxy

say() { echo "haproxy3: $*" >&2; }

is_3x() {
    "$1" -v 2>/dev/null | sed -n 1p | grep -Eq 'version 3\.'
}

if [ -n "${HAPROXY3_BIN:-}" ]; then
    if ! is_3x "$HAPROXY3_BIN"; then
        say "HAPROXY3_BIN=$HAPROXY3_BIN does not run as HAProxy 3.x"
        exit 1
    fi
    echo "$HAPROXY3_BIN"
    exit 0
fi

if [ -x "$BIN" ] && "$BIN" -v 2>/dev/null | sed -n 1p | grep -q "version $VERSION-"; then
    echo "$PWD/$BIN"
    exit 0
fi

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${missing[*]} (build tools, from the system's own suite)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "missing ${missing[*]}: install them, or set HAPROXY3_BIN"
        exit 1
    fi
fi

started=$(date +%s)
mkdir -p "$OUT"
orig=$OUT/haproxy_$VERSION.orig.tar.gz
if ! echo "$SHA256  $orig" | sha256sum -c --status 2>/dev/null; then
    for url in $URLS; do
        say "fetching haproxy $VERSION from $url"
        if curl -fsS --retry 2 -m 300 -o "$orig.part" "$url" \
            && echo "$SHA256  $orig.part" | sha256sum -c --status; then
            mv "$orig.part" "$orig"
            break
        fi
        rm -f "$orig.part"
    done
fi
if ! echo "$SHA256  $orig" | sha256sum -c --status 2>/dev/null; then
    say "no source gave haproxy $VERSION with the pinned SHA-256 $SHA256 (tried: $URLS); set HAPROXY3_BIN"
    exit 1
fi
src=$OUT/src
rm -rf "$src" && mkdir -p "$src"
tar -xzf "$orig" -C "$src"
say "building HAProxy $VERSION (USE_OPENSSL=1)"
make -C "$src/haproxy-$VERSION" -j"$(nproc)" TARGET=linux-glibc USE_OPENSSL=1 USE_PROMEX= >"$OUT/build.log" 2>&1 || {
    tail -n 30 "$OUT/build.log" >&2
    say "the build failed (log: $OUT/build.log)"
    exit 1
}
cp "$src/haproxy-$VERSION/haproxy" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
rm -rf "$src/haproxy-$VERSION"
say "built HAProxy $VERSION in $(( $(date +%s) - started )) s"
echo "$PWD/$BIN"
