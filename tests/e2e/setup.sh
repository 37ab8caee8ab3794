#!/usr/bin/env bash
# Installs the real clients the end-to-end suite drives: a Python venv with requests and
# simple-salesforce, and jsforce from npm, all inside tests/e2e/. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
if [ ! -d node_modules/jsforce ]; then
  npm install --no-audit --no-fund --loglevel=error
fi
