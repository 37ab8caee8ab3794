#!/usr/bin/env bash
# The token path with `--store postgres://…` against the default `--store sqlite`, in one run of
# the end-to-end harness: the PostgreSQL build is its "variant" (E2E_VARIANT_ARGS). Starts a
# throwaway cluster of Debian's postgresql (as the `postgres` user when run as root), on a free
# loopback port, with the server's default durability (synchronous_commit on), and removes it
# at the end. Extra E2E_* knobs pass through (default E2E_ONLY=token,rotation).
# STORE_BENCH=ledger runs the ledger at a million grants on the cluster instead
# (benches/ledger_scale.rs; LEDGER_GRANTS to change).
# STORE_PIN=1 gives the database server the last CPU and everything else (the harness, the
# origin, both proxies) the others, as with a database on a machine of its own: the two
# proxies then share the same CPUs, and only the PostgreSQL build's waits on the database
# differ.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "needs PostgreSQL: apt-get install postgresql" >&2
  exit 1
fi
dir=$(mktemp -d)
as=()
if [ "$(id -u)" = 0 ]; then
  as=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
pin_db=() pin_rest=()
if [ "${STORE_PIN:-0}" = 1 ]; then
  last=$(($(nproc) - 1))
  [ "$last" -ge 1 ] || { echo "STORE_PIN needs two CPUs or more" >&2; exit 1; }
  pin_db=(taskset -c "$last")
  pin_rest=(taskset -c "0-$((last - 1))")
fi
pg() { "${pin_db[@]}" "${as[@]}" "$bin/$1" "${@:2}"; }
cleanup() {
  pg pg_ctl -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

password=bench-store-pass
printf '%s' "$password" > "$dir/pw"
[ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg initdb -D "$dir/data" -U grantdoctor --auth=scram-sha-256 --pwfile="$dir/pw" --no-sync >/dev/null
pg pg_ctl -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null

url="postgres://grantdoctor:$password@127.0.0.1:$port/postgres"
if [ "${STORE_BENCH:-e2e}" = ledger ]; then
  LEDGER_STORE=$url cargo bench --bench ledger_scale
  exit
fi
export E2E_ONLY=${E2E_ONLY:-token,rotation}
export E2E_VARIANT_ARGS="--store $url"
"${pin_rest[@]}" cargo bench --bench e2e
