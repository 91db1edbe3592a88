#!/usr/bin/env bash
# Builds target/examples/iprep_python.wasm (a WebAssembly component for
# spoa-host) from app.py and spoa.py with componentize-py. Runs from any
# directory; does nothing when the component is newer than its inputs
# (FORCE=1 rebuilds). componentize-py is installed, pinned by
# requirements.txt, into a venv under target/toolchains/python.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="$root/wit"
venv="$root/target/toolchains/python"
out="$root/target/examples/iprep_python.wasm"

if ! command -v python3 >/dev/null 2>&1; then
    echo "build.sh: python3 not found. Install Python 3.9 or newer with venv and pip" >&2
    echo "  (Debian/Ubuntu: apt-get install python3 python3-venv python3-pip)." >&2
    exit 1
fi

# The toolchain: (re)install when requirements.txt changed.
stamp="$venv/.requirements.txt"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "build.sh: python3 cannot create a venv with pip." >&2
        echo "  Debian/Ubuntu: apt-get install python3-venv python3-pip" >&2
        exit 1
    fi
    echo "build.sh: installing $(grep -v '^#' "$here/requirements.txt" | xargs) into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

# Skip when the component is newer than every input.
if [ -z "${FORCE:-}" ] && [ -f "$out" ] && [ "$out" -nt "$stamp" ] &&
    [ -z "$(find "$here" "$wit" -newer "$out" \
        \( -name '*.py' -o -name '*.wit' -o -name build.sh \) \
        -not -path '*/__pycache__/*' -not -path "$here/bindings/*" -print -quit)" ]; then
    echo "build.sh: $out is up to date"
    exit 0
fi

mkdir -p "$(dirname "$out")"
cd "$here"
# Bindings for editors and type checkers (componentize-py generates its own
# copy while componentizing; this one is not used by the build).
rm -rf bindings
"$venv/bin/componentize-py" -d "$wit" -w handler bindings bindings >/dev/null
# VIRTUAL_ENV and -p keep the bundled Python path to this folder and the venv.
VIRTUAL_ENV="$venv" "$venv/bin/componentize-py" -d "$wit" -w handler \
    componentize -p "$here" app -o "$out.tmp"
mv "$out.tmp" "$out"
echo "build.sh: wrote $out ($(wc -c <"$out") bytes)"
