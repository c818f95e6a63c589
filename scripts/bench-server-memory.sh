#!/usr/bin/env bash
# The test server's peak memory (VmHWM) during one command, for each
# command named, each on a server started afresh over the same data:
# 1,000 generated jobs (examples/bench.rs `generate`, default shape),
# made on the first run and kept in .secantus/run/server-memory/data.
#
#   scripts/bench-server-memory.sh scan bare bare-chunked fetch
#   DUPCHECK=/path/to/other/dupcheck scripts/bench-server-memory.sh scan
#   scripts/bench-server-memory.sh clean      # deletes the data
#
# Needs the Rust server (DUPCHECK_SERVER=rs scripts/test-server.sh builds
# it) and `cargo build --release --bin dupcheck --example bench`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
server="$root/.secantus/rs/bin/secantusd-rs"
dir="$root/.secantus/run/server-memory"
bench="$root/target/release/examples/bench"
dupcheck=${DUPCHECK:-$root/target/release/dupcheck}
pid=

start() {
  : >"$dir/log"
  "$server" --host 127.0.0.1 --port 0 --storage-path "$dir/data" >>"$dir/log" 2>&1 &
  pid=$!
  local port=
  for _ in $(seq 1 300); do
    port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$dir/log" | grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "server did not start:" >&2; cat "$dir/log" >&2; exit 2; }
  uri="mongodb://127.0.0.1:$port"
}

stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

peak() {
  awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$pid/status"
}

[ -x "$server" ] || { echo "no $server: run DUPCHECK_SERVER=rs scripts/test-server.sh start x first" >&2; exit 2; }
[ -x "$bench" ] || { echo "no $bench: cargo build --release --example bench" >&2; exit 2; }
trap stop EXIT

if [ "${1:-}" = clean ]; then
  rm -rf "$dir"
  exit 0
fi
mkdir -p "$dir"
if [ ! -d "$dir/data" ]; then
  start
  "$bench" generate --uri "$uri" --jobs 1000 2>/dev/null
  stop
fi

for what in "$@"; do
  start
  at_start=$(peak)
  case $what in
    scan) "$dupcheck" scan --uri "$uri" --db dupcheck_bench --all --format json >/dev/null || [ $? = 1 ] ;;
    bare | bare-chunked | fetch)
      "$bench" "$what" --uri "$uri" --db dupcheck_bench --collection bulk_jobs >/dev/null ;;
    *) echo "unknown command $what: scan, bare, bare-chunked or fetch" >&2; exit 2 ;;
  esac
  echo "$what: server peak RSS $(peak) (after start: $at_start)"
  stop
done
