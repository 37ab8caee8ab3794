#!/usr/bin/env bash
# Peer benchmark: the same loads direct, through grantdoctor and through mitmproxy (with an
# addon doing grantdoctor's token-endpoint work), in one run. Installs what it needs:
# mitmproxy 11 into benches/peers/.venv (PyPI), nginx from apt when missing.
# Usage: bash benches/peers/run.sh   (knobs of benches/e2e.rs apply: E2E_SECONDS, ...)
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v nginx >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
fi
if [ ! -x .venv/bin/mitmdump ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check 'mitmproxy==11.0.*'
fi
# 1,000 held connections need more than the usual 1,024 descriptors per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cd ../..
E2E_MITMDUMP="$PWD/benches/peers/.venv/bin/mitmdump" cargo bench --bench e2e
