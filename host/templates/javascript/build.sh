#!/usr/bin/env bash
# Builds @NAME@.wasm: esbuild bundles app.js with the SDK (spoa-guest), then
# componentize-js builds the component against wit/ (spoa-host's WIT).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[ -d node_modules ] || npm install --no-audit --no-fund
node_modules/.bin/esbuild app.js --bundle --format=esm --platform=neutral \
    --external:'spoa:*' --external:'wasi:*' --log-level=warning --outfile=.build/app.js
node_modules/.bin/componentize-js --wit wit --world-name guest -o @NAME@.wasm .build/app.js
echo "wrote @NAME@.wasm ($(wc -c <@NAME@.wasm) bytes)"
