#!/usr/bin/env bash
# scripts/componentize-py.sh SRC_DIR OUT.wasm [WORLD]
# Builds the Python guest whose `app.py` is in SRC_DIR into a WebAssembly
# component for spoa-host's WORLD (default `handler`; `handler-with-init`
# when the guest exports `init`) of wit/, with componentize-py
# pinned by examples/guests/python/requirements.txt and installed into a venv
# under target/toolchains/python (when missing or when the pin changed),
# with the SDK package `spoa-guest` (sdk/python) installed beside it.
# Does nothing when OUT is newer than its inputs (FORCE=1 rebuilds). Runs from
# any directory.
set -euo pipefail

src="$(cd "$1" && pwd)"
out="$2"
world="${3:-handler}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wit="$root/wit"
requirements="$root/examples/guests/python/requirements.txt"
venv="$root/target/toolchains/python"
stamp="$venv/.requirements.txt"

if ! command -v python3 >/dev/null 2>&1; then
    echo "componentize-py.sh: python3 not found. Install Python 3.9 or newer with venv and pip" >&2
    echo "  (Debian/Ubuntu: apt-get install python3 python3-venv python3-pip)." >&2
    exit 1
fi
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "componentize-py.sh: python3 cannot create a venv with pip." >&2
        echo "  Debian/Ubuntu: apt-get install python3-venv python3-pip" >&2
        exit 1
    fi
    echo "componentize-py.sh: installing $(grep -v '^#' "$requirements" | xargs) into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi

# The SDK (sdk/python, the `spoa` package), installed into the venv as any
# pip package is; reinstalled when its sources change.
sdk="$root/sdk/python"
sdk_stamp="$venv/.spoa-sdk"
sdk_hash="$(cd "$sdk" && find pyproject.toml src -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*' | sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$sdk_stamp" 2>/dev/null)" != "$sdk_hash" ]; then
    echo "componentize-py.sh: installing the SDK ($sdk) into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$sdk"
    echo "$sdk_hash" >"$sdk_stamp"
fi

if [ -z "${FORCE:-}" ] && [ -f "$out" ] && [ "$out" -nt "$stamp" ] &&
    [ "$out" -nt "$sdk_stamp" ] &&
    [ -z "$(find "$src" "$wit" "${BASH_SOURCE[0]}" -newer "$out" \
        \( -name '*.py' -o -name '*.wit' -o -name '*.sh' \) \
        -not -path '*/__pycache__/*' -not -path "$src/bindings/*" -print -quit)" ]; then
    echo "componentize-py.sh: $out is up to date"
    exit 0
fi

mkdir -p "$(dirname "$out")"
cd "$src"
# VIRTUAL_ENV and -p keep the bundled Python path to SRC_DIR and the venv.
VIRTUAL_ENV="$venv" "$venv/bin/componentize-py" -d "$wit" -w "$world" \
    componentize -p "$src" app -o "$out.tmp"
mv "$out.tmp" "$out"
echo "componentize-py.sh: wrote $out ($(wc -c <"$out") bytes)"
