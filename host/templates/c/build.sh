#!/usr/bin/env bash
# Builds @NAME@.wasm from app.c with the C SDK (@SDK@/sdk/c): wit-bindgen's
# C generator, Debian's clang and wasi-libc, and wasm-tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
exec "@SDK@/sdk/c/build-guest.sh" @NAME@.wasm wit app.c
