#!/usr/bin/env bash
# Services the test suite uses when it can have them: Debian's chromium (real-browser tests) and a local
# PostgreSQL server (the store tests on PostgreSQL). Prints "export ..." lines for the test run; a missing
# service only skips its tests, with the reason in pytest's output.
set -uo pipefail
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
updated=0
apt_install() {
  [ $updated = 1 ] || { apt-get update -qq >/dev/null 2>&1; updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

if [ ! -x /usr/bin/chromium ] && can_apt; then
  echo "installing chromium for the browser tests" >&2
  apt_install chromium || echo "could not install chromium: browser tests will be skipped" >&2
fi

if [ -z "${STUDIO_TEST_POSTGRES_URL:-}" ] && can_apt; then
  command -v pg_ctlcluster >/dev/null 2>&1 || { echo "installing postgresql for the store tests" >&2; apt_install postgresql; }
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    cluster=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
    [ -n "$cluster" ] && pg_ctlcluster "$cluster" main start >/dev/null 2>&1
    for _ in $(seq 1 20); do su postgres -c "pg_isready -q" 2>/dev/null && break; sleep 0.5; done
    su postgres -c "psql -qtc \"SELECT 1 FROM pg_roles WHERE rolname='studio'\" | grep -q 1 || psql -qc \"CREATE ROLE studio LOGIN SUPERUSER PASSWORD 'studio'\"" >/dev/null 2>&1
    su postgres -c "psql -qtc \"SELECT 1 FROM pg_database WHERE datname='studio_test'\" | grep -q 1 || createdb -O studio studio_test" >/dev/null 2>&1
    if su postgres -c "pg_isready -q" 2>/dev/null; then
      echo "export STUDIO_TEST_POSTGRES_URL=postgresql+psycopg2://studio:studio@127.0.0.1:5432/studio_test"
    else
      echo "PostgreSQL did not start: its tests will be skipped" >&2
    fi
  fi
fi
