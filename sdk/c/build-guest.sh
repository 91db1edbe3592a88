#!/usr/bin/env bash
# sdk/c/build-guest.sh OUT.wasm WIT_DIR SOURCE.c...
# Builds a C guest into a WebAssembly component of spoa:agent's
# `handler-with-batch` world, from the standard tools: wit-bindgen's C
# generator writes the bindings of WIT_DIR, Debian's clang and wasi-libc
# (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32) compile
# them with this SDK (spoa.c, spoa_headers.c) and the sources, and
# `wasm-tools component new` makes the component. A module that imports
# WASI preview 1 (printf, files) is adapted with WASI_ADAPTER (the reactor
# adapter of the wasi-preview1-component-adapter-provider crate); the SDK
# itself imports none, so a guest that does not either runs without WASI.
# Tools: WIT_BINDGEN and WASM_TOOLS, else on PATH, else target/tools/bin of
# the spoa-host tree this SDK is in (`make c-tools` installs them there).
set -euo pipefail
out="$1"; wit="$2"; shift 2
sdk="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$(cd "$sdk/../.." && pwd)/target/tools"
find_tool() {
    if [ -n "${!1:-}" ]; then echo "${!1}"; return; fi
    if command -v "$2" >/dev/null 2>&1; then command -v "$2"; return; fi
    if [ -x "$tools/bin/$2" ]; then echo "$tools/bin/$2"; return; fi
    echo "build-guest.sh: $2 not found: cargo install $3 (or make c-tools in the spoa-host tree), or set $1" >&2
    exit 1
}
wit_bindgen="$(find_tool WIT_BINDGEN wit-bindgen wit-bindgen-cli)"
wasm_tools="$(find_tool WASM_TOOLS wasm-tools wasm-tools)"
if ! command -v clang >/dev/null 2>&1 || [ ! -f /usr/lib/wasm32-wasi/libc.a ]; then
    echo "build-guest.sh: clang and wasi-libc not found (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)" >&2
    exit 1
fi
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
if ! "$wit_bindgen" c "$wit" --world handler-with-batch --out-dir "$gen" >"$gen/log" 2>&1; then
    cat "$gen/log" >&2
    exit 1
fi
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall ${CFLAGS:-} -I "$gen" -I "$sdk" \
    -o "$gen/core.wasm" "$@" "$sdk/spoa.c" "$sdk/spoa_headers.c" \
    "$gen/handler_with_batch.c" "$gen/handler_with_batch_component_type.o"
adapt=()
"$wasm_tools" print "$gen/core.wasm" >"$gen/core.wat"
if grep -q '(import "wasi_snapshot_preview1"' "$gen/core.wat"; then
    adapter="${WASI_ADAPTER:-$tools/wasi_snapshot_preview1.reactor.wasm}"
    if [ ! -f "$adapter" ]; then
        echo "build-guest.sh: the module imports WASI preview 1; set WASI_ADAPTER to the reactor adapter" >&2
        exit 1
    fi
    adapt=(--adapt "wasi_snapshot_preview1=$adapter")
fi
mkdir -p "$(dirname "$out")"
"$wasm_tools" component new "$gen/core.wasm" "${adapt[@]}" -o "$out.tmp"
mv "$out.tmp" "$out"
echo "build-guest.sh: wrote $out ($(wc -c <"$out") bytes)"
