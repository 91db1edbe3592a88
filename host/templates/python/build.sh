#!/usr/bin/env bash
# Builds @NAME@.wasm with componentize-py (pinned) and the Python SDK
# (spoa-guest, from @SDK@/sdk/python), installed into a venv: .venv here, or
# SPOA_PYTHON_VENV to share one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
venv="${SPOA_PYTHON_VENV:-.venv}"
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "@SDK@/sdk/python"
VIRTUAL_ENV="$(cd "$venv" && pwd)" "$venv/bin/componentize-py" -d wit -w handler-with-batch \
    componentize -p . app -o @NAME@.wasm
echo "wrote @NAME@.wasm ($(wc -c <@NAME@.wasm) bytes)"
