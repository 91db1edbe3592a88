#!/usr/bin/env bash
# Builds target/examples/iprep_python.wasm (a WebAssembly component for
# spoa-host) from app.py and spoa.py with componentize-py, pinned by
# requirements.txt and installed into a venv under target/toolchains/python
# (see scripts/componentize-py.sh). Runs from any directory; does nothing
# when the component is up to date (FORCE=1 rebuilds). Also writes bindings/
# for editors and type checkers (the build does not use them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
"$root/scripts/componentize-py.sh" "$here" "$root/target/examples/iprep_python.wasm" handler-with-batch
if [ ! -d "$here/bindings" ]; then
    (cd "$here" && "$root/target/toolchains/python/bin/componentize-py" -d "$root/wit" -w handler-with-batch bindings bindings >/dev/null)
fi
