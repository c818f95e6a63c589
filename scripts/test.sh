#!/usr/bin/env bash
# Runs every test: builds dupcheck, starts the test servers (unless
# DUPCHECK_TEST_URI points at a MongoDB of your own), runs the suite, and
# stops what it started.
#
#   DUPCHECK_TEST_URI=mongodb://...       run against this server instead
#   DUPCHECK_TEST_AUTH_URI=mongodb://...  a URI with valid credentials on
#                                         a server requiring auth (optional
#                                         with DUPCHECK_TEST_URI; the auth
#                                         tests are skipped without it)
#   DUPCHECK_SERVER=rs                    test on the Rust SecantusDB build
set -euo pipefail
cd "$(dirname "$0")/.."

started=()
cleanup() {
  for name in "${started[@]}"; do scripts/test-server.sh stop "$name" || true; done
}
trap cleanup EXIT

if [ -z "${DUPCHECK_TEST_URI:-}" ]; then
  # Names of this run's own, so two runs on one machine do not collide.
  started+=("tests-$$")
  DUPCHECK_TEST_URI=$(scripts/test-server.sh start "tests-$$")
  started+=("auth-$$")
  DUPCHECK_TEST_AUTH_URI=$(scripts/test-server.sh start "auth-$$" --auth)
  export DUPCHECK_TEST_URI DUPCHECK_TEST_AUTH_URI
fi
echo "testing against ${DUPCHECK_TEST_URI}" >&2

# Examples (the benchmark harnesses) are built, so they cannot rot, but
# have no tests of their own to run.
cargo build --quiet --all-targets
log=$(mktemp)
status=0
cargo test --lib --bins --tests -- "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -oE '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
rm -f "$log"
echo "tests: $passed passed, $failed failed"
exit "$status"
