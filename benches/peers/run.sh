#!/usr/bin/env bash
# Peer benchmark: the same loads direct, through grantdoctor, through mitmproxy (with an
# addon doing grantdoctor's token-endpoint work) and through a hudsucker proxy whose handlers
# do nothing (benches/peers/hudsucker-noop, same stack as grantdoctor), in one run. Installs
# what it needs: mitmproxy 11 into benches/peers/.venv (PyPI), nginx from apt when missing;
# builds hudsucker-noop from crates.io (about 2.5 min the first time).
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
cargo build --release --quiet --locked --manifest-path hudsucker-noop/Cargo.toml
cd ../..
E2E_MITMDUMP="$PWD/benches/peers/.venv/bin/mitmdump" \
E2E_HUDSUCKER="$PWD/benches/peers/hudsucker-noop/target/release/hudsucker-noop" \
  cargo bench --bench e2e
