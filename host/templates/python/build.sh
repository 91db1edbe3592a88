#!/usr/bin/env bash
# Builds @NAME@.wasm with componentize-py (pinned, installed into a venv:
# .venv here, or SPOA_PYTHON_VENV to share one) and the Python SDK (the
# `spoa` package of @SDK@/sdk/python/src, put on the guest's Python path).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
venv="${SPOA_PYTHON_VENV:-.venv}"
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
VIRTUAL_ENV="$(cd "$venv" && pwd)" "$venv/bin/componentize-py" -d wit -w handler-with-batch \
    componentize -p . -p "@SDK@/sdk/python/src" app -o @NAME@.wasm
echo "wrote @NAME@.wasm ($(wc -c <@NAME@.wasm) bytes)"
