#!/usr/bin/env bash
# Installs and starts the MongoDB wire-protocol server the tests talk to:
# SecantusDB, pinned, in a project-local folder (.secantus/), on an
# ephemeral loopback port with its own storage.
#
#   scripts/test-server.sh start NAME [--auth]   prints the mongodb:// URI
#   scripts/test-server.sh stop NAME
#
# DUPCHECK_SERVER=py (default) uses the PyPI wheel, installed in seconds;
# DUPCHECK_SERVER=rs builds the crates.io server (several minutes, faster
# at run time). With --auth the server requires SCRAM and has one user,
# dupcheck / dupcheck-test-pw, made before auth was switched on.
set -euo pipefail

PY_VERSION=0.7.0b3
RS_VERSION=0.5.3-beta.196
root=$(cd "$(dirname "$0")/.." && pwd)
home="$root/.secantus"
flavour=${DUPCHECK_SERVER:-py}

install() {
  case "$flavour" in
    py)
      if [ ! -x "$home/py/bin/secantusd-py" ]; then
        echo "installing secantusdb==$PY_VERSION into .secantus/py" >&2
        python3 -m venv "$home/py"
        "$home/py/bin/pip" install --quiet --disable-pip-version-check \
          "secantusdb==$PY_VERSION" >&2
      fi
      server="$home/py/bin/secantusd-py"
      python="$home/py/bin/python"
      ;;
    rs)
      if [ ! -x "$home/rs/bin/secantusd-rs" ]; then
        command -v cmake >/dev/null || apt-get install -y -qq cmake >&2
        echo "building secantus-mdb $RS_VERSION into .secantus/rs" >&2
        cargo install --quiet secantus-mdb --version "$RS_VERSION" \
          --ignore-rust-version --root "$home/rs" >&2
      fi
      server="$home/rs/bin/secantusd-rs"
      # pymongo is needed only to create the --auth user.
      [ -x "$home/py/bin/python" ] || flavour=py install
      python="$home/py/bin/python"
      ;;
    *) echo "DUPCHECK_SERVER must be py or rs, not $flavour" >&2; exit 2 ;;
  esac
}

# Starts the server in the background; sets $port.
launch() {
  local dir=$1; shift
  : >"$dir/log"
  "$server" --host 127.0.0.1 --port 0 --storage-path "$dir/data" "$@" \
    >>"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  port=
  for _ in $(seq 1 300); do
    port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$dir/log" 2>/dev/null \
      | tail -n 1 | grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && break
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/log" >&2; exit 2; }
    sleep 0.1
  done
  [ -n "$port" ] || { echo "server did not start:" >&2; cat "$dir/log" >&2; exit 2; }
}

halt() {
  local dir=$1
  if [ -f "$dir/pid" ]; then
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
}

cmd=${1:-}; name=${2:-}
[ -n "$name" ] || { echo "usage: $0 start|stop NAME [--auth]" >&2; exit 2; }
dir="$home/run/$name"

case "$cmd" in
  start)
    install
    halt "$dir"
    rm -rf "$dir"; mkdir -p "$dir/data"
    launch "$dir"
    if [ "${3:-}" = "--auth" ]; then
      "$python" - "$port" <<'PY'
import sys, pymongo
c = pymongo.MongoClient("127.0.0.1", int(sys.argv[1]), serverSelectionTimeoutMS=10000)
c.admin.command("createUser", "dupcheck", pwd="dupcheck-test-pw", roles=["root"])
PY
      halt "$dir"
      launch "$dir" --auth
      echo "mongodb://dupcheck:dupcheck-test-pw@127.0.0.1:$port/?authSource=admin"
    else
      echo "mongodb://127.0.0.1:$port"
    fi
    ;;
  stop) halt "$dir"; rm -rf "$dir" ;;
  *) echo "usage: $0 start|stop NAME [--auth]" >&2; exit 2 ;;
esac
