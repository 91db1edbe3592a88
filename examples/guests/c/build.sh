#!/usr/bin/env bash
# Builds target/examples/iprep_c.wasm from app.c with the C SDK (sdk/c):
# wit-bindgen's C generator, Debian's clang and wasi-libc, and wasm-tools
# (see sdk/c/build-guest.sh). Runs from any directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
exec "$root/sdk/c/build-guest.sh" "${OUT:-$root/target/examples/iprep_c.wasm}" "$root/wit" "$here/app.c"
