#!/usr/bin/env bash
# Install everything and run every check: lint, layering contracts, types, the test suite on
# SQLite and (when Debian's PostgreSQL can be installed or is present) on PostgreSQL too.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

if [ -z "${LORADEX_TEST_PG_URL:-}" ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian postgresql for the PostgreSQL tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || echo "warning: could not install postgresql"
  fi
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    PGDIR=$(mktemp -d /tmp/loradex-pg.XXXXXX)
    # A free loopback port unless one is given: a fixed one fails when another server (a
    # developer's own `scripts/pg.sh start`) already listens there.
    PGPORT=${LORADEX_TEST_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    LORADEX_TEST_PG_URL=$(scripts/pg.sh start "$PGDIR" "$PGPORT" | tail -n 1)
    export LORADEX_TEST_PG_URL
    trap 'scripts/pg.sh stop "$PGDIR" >/dev/null 2>&1 || true' EXIT
  else
    echo "warning: PostgreSQL unavailable; PostgreSQL tests will be skipped"
  fi
fi
echo "PostgreSQL for tests: ${LORADEX_TEST_PG_URL:-none}"

# The browser test (tests/test_web_browser.py) drives Debian's chromium through Playwright; no
# browser is ever downloaded. In CI (CI=true) a missing chromium is an error, never a skip.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian chromium for the browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium"
fi
if [ ! -x /usr/bin/chromium ]; then
  if [ "${CI:-}" = true ]; then
    echo "error: CI needs /usr/bin/chromium for the browser test (apt-get install chromium)" >&2
    exit 1
  fi
  echo "warning: chromium unavailable; the browser test will be skipped"
fi

ruff check .
ruff format --check .
lint-imports
mypy
pytest -q "$@"
