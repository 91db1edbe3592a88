#!/usr/bin/env bash
# Builds target/examples/iprep_js.wasm (a WebAssembly component for
# spoa-host) from app.js and the SDK (the npm package spoa-guest, from
# sdk/javascript) with esbuild and componentize-js, default features. Runs from any directory; does nothing when the component is newer
# than its inputs (FORCE=1 rebuilds). The toolchain is pinned by
# package-lock.json and installed into node_modules/ by `npm ci`.
# APP_DIR=DIR OUT=FILE build another guest (DIR/app.js, DIR/wit/world.wit)
# with this toolchain, as the test fixtures do.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="$root/wit"
app="${APP_DIR:-$here}"
out="${OUT:-$root/target/examples/iprep_js.wasm}"
stage="${out%.wasm}.wit"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "build.sh: node and npm not found. Install Node.js 20 or newer with npm" >&2
    echo "  (https://nodejs.org, or Debian/Ubuntu: apt-get install nodejs npm)." >&2
    exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "build.sh: Node.js $(node --version) is too old, componentize-js needs 20 or newer." >&2
    exit 1
fi

# The toolchain: (re)install when node_modules is missing or older than the lock.
cd "$here"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "build.sh: installing the toolchain into $here/node_modules"
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

# Skip when the component is newer than every input.
if [ -z "${FORCE:-}" ] && [ -f "$out" ] && [ "$out" -nt node_modules/.package-lock.json ] &&
    [ -z "$(find "$app" "$here/build.sh" "$wit" "$root/sdk/javascript" -newer "$out" -not -path "$here/node_modules/*" \
        \( -name '*.js' -o -name '*.wit' -o -name build.sh -o -name package-lock.json \) \
        -print -quit)" ]; then
    echo "build.sh: $out is up to date"
    exit 0
fi

# The WIT: this example's world (wit/) with spoa-host's WIT as a dependency.
rm -rf "$stage"
mkdir -p "$stage/deps/spoa-agent"
cp "$app/wit/world.wit" "$stage/"
[ -d "$app/wit/deps" ] && cp -r "$app/wit/deps/." "$stage/deps/"
cp "$wit/spoa.wit" "$stage/deps/spoa-agent/"
cp -r "$wit/deps/." "$stage/deps/"

mkdir -p "$(dirname "$out")"
# componentize-js takes one module: bundle app.js with the SDK (the npm
# package spoa-guest, sdk/javascript) and anything else it imports, leaving
# the WIT imports to componentize-js. NODE_PATH lets an APP_DIR without
# node_modules of its own import the SDK installed here.
NODE_PATH="$here/node_modules" node_modules/.bin/esbuild "$app/app.js" --bundle --format=esm \
    --platform=neutral --external:'spoa:*' --external:'wasi:*' --log-level=warning \
    --outfile="$stage/app.bundle.js"
node_modules/.bin/componentize-js --wit "$stage" --world-name guest -o "$out.tmp" "$stage/app.bundle.js"
mv "$out.tmp" "$out"
echo "build.sh: wrote $out ($(wc -c <"$out") bytes)"
