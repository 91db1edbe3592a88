#!/usr/bin/env bash
# Builds @NAME@.wasm: a wasm32-wasip2 cdylib is a WebAssembly component.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2
target_dir="${CARGO_TARGET_DIR:-target}"
cp "$target_dir/wasm32-wasip2/release/@CRATE@.wasm" @NAME@.wasm
echo "wrote @NAME@.wasm ($(wc -c <@NAME@.wasm) bytes)"
