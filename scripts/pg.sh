#!/usr/bin/env bash
# Throwaway PostgreSQL server on loopback for tests (trust auth: never expose it).
#   scripts/pg.sh start DIR PORT   -> initdb DIR if needed, start, print the SQLAlchemy URL
#   scripts/pg.sh stop DIR
# Uses Debian's binaries under /usr/lib/postgresql/<major>/bin (newest installed major).
# As root, the server runs as the 'postgres' user (initdb refuses to run as root).
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

find_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n "$d" && -x "$d/initdb" ]] || die "no PostgreSQL found under /usr/lib/postgresql/*/bin (apt-get install -y postgresql)"
  echo "$d"
}

as_owner() {
  # Run a server binary as the data directory's owner: root itself is refused by initdb/pg_ctl.
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local dir=$1 port=$2 bindir
  bindir=$(find_bindir)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "user 'postgres' is missing (install the postgresql package)"
    chown postgres "$dir"
    chmod 700 "$dir"
  fi
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    local out
    out=$(as_owner "$bindir/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 \
      --no-locale 2>&1) || { echo "$out" >&2; die "initdb failed"; }
  fi
  if as_owner "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    return
  fi
  # fsync=off: a throwaway test server, speed over durability. Socket in the data dir: /var/run/postgresql may not exist or be writable.
  as_owner "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" >/dev/null \
    || { tail -n 30 "$dir/server.log" >&2 || true; die "server did not start"; }
  echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
}

stop() {
  local dir=$1 bindir
  bindir=$(find_bindir)
  [[ -f "$dir/PG_VERSION" ]] || die "$dir is not a PostgreSQL data directory"
  as_owner "$bindir/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) [[ $# -eq 3 ]] || die "usage: $0 start DIR PORT"; start "$2" "$3" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
  *) die "usage: $0 start DIR PORT | stop DIR" ;;
esac
