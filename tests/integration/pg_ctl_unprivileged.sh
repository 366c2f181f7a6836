#!/bin/sh
# pg_ctl for test sessions that run as root (CI containers): initdb and postgres refuse to
# run as root, so run the real pg_ctl ($KD_TEST_PG_CTL) as an unprivileged user
# ($KD_TEST_PG_USER, Debian's `postgres` by default).
# * The server's data directory is a private /tmp/kd-pgdata.<hash of the requested path>
#   owned by that user, and every -D/--pgdata argument is rewritten to it. The path that
#   pytest-postgresql asked for (inside pytest's temp dirs) only gets a symlink to it.
#   Why: a nested pytest session (the qa tests start some) prunes old numbered temp dirs,
#   and a postmaster whose data directory path vanishes shuts itself down (it rechecks its
#   lock file). The private path never vanishes while the server runs; `stop` removes it.
# * The log file is created for that user, and its root-owned parent directories (pytest's
#   temp dirs, mode 0700) get the search bit for others; nothing is made readable/writable.
set -eu
real="${KD_TEST_PG_CTL:?set KD_TEST_PG_CTL to the real pg_ctl}"
user="${KD_TEST_PG_USER:-postgres}"

open_path() {
  dir=$(dirname "$1")
  while [ "$dir" != "/" ]; do
    chmod o+x "$dir" 2>/dev/null || true
    dir=$(dirname "$dir")
  done
}

private_dir() {
  printf '/tmp/kd-pgdata.%s' "$(printf '%s' "$1" | sha256sum | cut -c1-16)"
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
[ -n "$datadir" ] || exec runuser -u "$user" -- "$real" "$@"

private=$(private_dir "$datadir")
if [ "$action" = "initdb" ] && [ ! -e "$private" ]; then
  mkdir -m 0700 "$private"
  chown "$user" "$private"
  mkdir -p "$(dirname "$datadir")"
  [ -e "$datadir" ] || ln -s "$private" "$datadir"
  open_path "$datadir"
fi

# The same arguments, with the data directory replaced by the private one.
prev_arg=""
for arg in "$@"; do
  shift
  case "$prev_arg" in
    --pgdata|-D) set -- "$@" "$private" ;;
    *) set -- "$@" "$arg" ;;
  esac
  prev_arg="$arg"
done

if [ "$action" = "stop" ]; then
  status=0
  runuser -u "$user" -- "$real" "$@" || status=$?
  rm -rf "$private"
  [ -L "$datadir" ] && rm -f "$datadir"
  exit "$status"
fi
exec runuser -u "$user" -- "$real" "$@"
