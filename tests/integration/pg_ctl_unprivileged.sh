#!/bin/sh
# pg_ctl for test sessions that run as root (CI containers): initdb and postgres refuse to
# run as root, so run the real pg_ctl ($KD_TEST_PG_CTL) as an unprivileged user
# ($KD_TEST_PG_USER, Debian's `postgres` by default).
# * The data directory lives in a private /tmp/kd-pgdata.* directory owned by that user,
#   linked from where pytest-postgresql asked for it: pytest prunes old numbered temp dirs
#   of other sessions, which must not delete a running server's data. `stop` removes it.
# * The log file is created for that user, and its root-owned parent directories (pytest's
#   temp dirs, mode 0700) get the search bit for others; nothing is made readable/writable.
set -eu
real="${KD_TEST_PG_CTL:?set KD_TEST_PG_CTL to the real pg_ctl}"
user="${KD_TEST_PG_USER:-postgres}"

open_path() {
  dir=$(dirname "$1")
  while [ "$dir" != "/" ]; do
    chmod o+x "$dir"
    dir=$(dirname "$dir")
  done
}

action="${1:-}"
datadir=""
prev=""
for arg in "$@"; do
  case "$prev" in
    --pgdata|-D) datadir="$arg" ;;
    -l) touch "$arg"; chown "$user" "$arg"; open_path "$arg" ;;
  esac
  prev="$arg"
done

if [ "$action" = "initdb" ] && [ -n "$datadir" ] && [ ! -e "$datadir" ]; then
  private=$(mktemp -d /tmp/kd-pgdata.XXXXXX)
  chown "$user" "$private"
  mkdir -p "$(dirname "$datadir")"
  ln -s "$private" "$datadir"
  open_path "$datadir"
fi

if [ "$action" = "stop" ] && [ -L "$datadir" ]; then
  status=0
  runuser -u "$user" -- "$real" "$@" || status=$?
  rm -rf "$(readlink "$datadir")" "$datadir"
  exit "$status"
fi
exec runuser -u "$user" -- "$real" "$@"
