#!/usr/bin/env bash
# Services the test suite uses: a chromium for the real-browser tests (STUDIO_TEST_CHROMIUM, default Debian's
# /usr/bin/chromium) and a local PostgreSQL server for the store tests on PostgreSQL (each test makes a throwaway
# database there). What is missing is installed with apt-get when this runs as root, saying what and how it went;
# apt's own output goes to stderr, as every message here: stdout carries only the "export ..." lines that
# scripts/test.sh evaluates. A service still missing skips its tests with how to get it, or fails them when CI is set.
set -uo pipefail
say() { echo "[test services] $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
updated=0
apt_install() {
  if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install $*: that needs apt-get and root (run bash scripts/test_services.sh as root)"
    return 1
  fi
  say "installing $* with apt-get"
  if [ $updated = 0 ]; then
    apt-get update -q >&2 || say "apt-get update failed (its output is above); trying the install anyway"
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}
missing() { say "$1: its tests will be skipped, or fail when CI is set"; }

chromium=${STUDIO_TEST_CHROMIUM:-/usr/bin/chromium}
if [ -x "$chromium" ]; then
  say "chromium for the browser tests: $chromium"
elif [ "$chromium" != /usr/bin/chromium ]; then
  missing "STUDIO_TEST_CHROMIUM=$chromium is not an executable file"
elif apt_install chromium && [ -x "$chromium" ]; then
  say "installed chromium: $chromium"
else
  missing "FAILED to install chromium (the reason is above)"
fi

start_local_postgres() {
  command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql || return 1
  local cluster
  cluster=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
  [ -n "$cluster" ] || { say "postgresql is installed but has no cluster under /etc/postgresql"; return 1; }
  pg_ctlcluster "$cluster" main status >/dev/null 2>&1 || pg_ctlcluster "$cluster" main start >&2 || return 1
  for _ in $(seq 1 40); do su postgres -c "pg_isready -q" 2>/dev/null && break; sleep 0.5; done
  su postgres -c "pg_isready" >&2 || return 1
  # role studio may create databases (each test makes its own); studio_test is the one the URL names, only
  # connected to
  su postgres -c "psql -qtc \"SELECT 1 FROM pg_roles WHERE rolname='studio'\" | grep -q 1 || psql -qc \"CREATE ROLE studio LOGIN SUPERUSER PASSWORD 'studio'\"" >&2 || return 1
  su postgres -c "psql -qtc \"SELECT 1 FROM pg_database WHERE datname='studio_test'\" | grep -q 1 || createdb -O studio studio_test" >&2 || return 1
}

if [ -n "${STUDIO_TEST_POSTGRES_URL:-}" ]; then
  say "PostgreSQL for the store tests: the server STUDIO_TEST_POSTGRES_URL names"
elif ! is_root; then
  missing "no PostgreSQL: a local one needs root (run this script as root), or set STUDIO_TEST_POSTGRES_URL"
elif start_local_postgres; then
  say "PostgreSQL for the store tests: the local server, database studio_test"
  echo "export STUDIO_TEST_POSTGRES_URL=postgresql+psycopg2://studio:studio@127.0.0.1:5432/studio_test"
else
  missing "FAILED to set up a local PostgreSQL (the reason is above)"
fi
