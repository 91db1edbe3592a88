#!/usr/bin/env bash
# What `make test` needs outside cargo: HAProxy (the end-to-end tests run a
# real one; a 3.x is built by scripts/haproxy3.sh), Redis (the shared-state
# tests run a real redis-server), promtool (Debian's prometheus package: the
# alerting rules' tests), lintian (the Debian package's check) and the Python
# and JavaScript toolchains the example guests are built with (python3 with
# venv, node and npm), and the C guests' clang, lld and wasi-libc. Installs what is missing with
# apt-get when it can (root and apt-get present); otherwise says what to
# install. The HAProxy and Redis tests fail, never skip, without them. The TLS tests
# generate their certificates with the openssl command.
set -euo pipefail

missing=()
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv python3-pip)
# C guests: Debian's clang and lld with wasi-libc and the wasm32 builtins.
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev-wasm32)

if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "test-deps: installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "test-deps: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})." >&2
        echo "test-deps: the tests that need them will fail." >&2
    fi
fi
if command -v haproxy >/dev/null 2>&1; then
    # sed reads to the end: `head` could close the pipe early, and with
    # pipefail haproxy's SIGPIPE would fail the whole target.
    haproxy -v 2>&1 | sed -n 1p
fi
if command -v redis-server >/dev/null 2>&1; then
    redis-server --version
fi
# HAProxy 3.x for the second end-to-end pass (scripts/test-haproxy3.sh):
# built once into target/haproxy3 from Debian's source package, unless
# HAPROXY3_BIN names one. A failure here fails that pass, loudly.
if haproxy3=$("$(dirname "$0")/haproxy3.sh"); then
    "$haproxy3" -v 2>&1 | sed -n 1p
else
    echo "test-deps: HAProxy 3.x could not be built (see above); the 3.x end-to-end tests will fail" >&2
fi
