#!/usr/bin/env bash
# pgversions.sh: PostgreSQL servers and clients of versions Debian 12 does not ship,
# for the version matrix of the tests (tests/lib/pgcluster.sh --version N).
#
#   pgversions.sh root N     print the root holding version N's binaries, creating it when
#                            missing: "/" when /usr/lib/postgresql/N exists on this machine,
#                            else a Debian chroot made with debootstrap (13: bullseye,
#                            17: trixie, 18: forky) under $PGTIDE_PG_CACHE
#                            (default /var/cache/pgtide-test), outside the work tree so
#                            reruns are instant.  Needs root (chroot) and debootstrap.
#   pgversions.sh bindir N   print a directory of client wrappers (pg_dump, pg_restore, psql,
#                            pgbench, pg_recvlogical) that run version N's binaries on this
#                            machine through the chroot's own dynamic loader (no chroot
#                            needed: paths and sockets are this machine's)
#   pgversions.sh available N  exit 0 when version N can be had here (prints why not otherwise)
#
# A chroot is built once under a lock; a failed build leaves nothing behind.  The Debian
# mirror is the one in this machine's apt sources.
set -euo pipefail
cache=${PGTIDE_PG_CACHE:-/var/cache/pgtide-test}

suite_for() {
  case "$1" in
    13) echo bullseye ;;
    17) echo trixie ;;
    18) echo forky ;;
    *) return 1 ;;
  esac
}

mirror() {
  local m
  m=$(grep -hoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n 1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

why_unavailable() {
  local v=$1
  [ -d "/usr/lib/postgresql/$v/bin" ] && return 0
  [ -x "$cache/pg$v/usr/lib/postgresql/$v/bin/postgres" ] && [ "$(id -u)" -eq 0 ] && return 0
  suite_for "$v" >/dev/null || { echo "no Debian release ships PostgreSQL $v"; return 1; }
  [ "$(id -u)" -eq 0 ] || { echo "PostgreSQL $v runs in a chroot, which needs root"; return 1; }
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (make deps)"; return 1; }
  return 0
}

# Create the chroot for version $1 (once; concurrent callers wait on the lock).
ensure_chroot() {
  local v=$1 dir="$cache/pg$1" suite
  suite=$(suite_for "$v")
  mkdir -p "$cache"
  exec 9>"$cache/pg$v.lock"
  flock -w 900 9 || { echo "pgversions: timed out waiting for $cache/pg$v.lock" >&2; exit 1; }
  if [ ! -x "$dir/usr/lib/postgresql/$v/bin/postgres" ]; then
    rm -rf "$dir.tmp"
    echo "pgversions: building a Debian $suite chroot with PostgreSQL $v in $dir (once, about a minute)" >&2
    # an older debootstrap may not know a newer suite: testing is built like sid
    script=/usr/share/debootstrap/scripts/$suite
    [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
    if ! debootstrap --variant=minbase --include="postgresql-$v" "$suite" "$dir.tmp" "$(mirror)" "$script" \
         >"$cache/pg$v.debootstrap.log" 2>&1; then
      echo "pgversions: debootstrap failed; see $cache/pg$v.debootstrap.log" >&2
      tail -n 5 "$cache/pg$v.debootstrap.log" >&2
      rm -rf "$dir.tmp"
      exit 1
    fi
    # the package's own cluster is not wanted; the tests make their own
    rm -rf "$dir.tmp/var/lib/postgresql/$v/main" "$dir.tmp/etc/postgresql/$v/main"
    mv "$dir.tmp" "$dir"
  fi
  mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
  mkdir -p "$dir/srv/pgtide"
  chmod 1777 "$dir/srv/pgtide"
  exec 9>&-
}

cmd=${1:-}; v=${2:-}
case "$cmd" in
root)
  if [ -d "/usr/lib/postgresql/$v/bin" ]; then echo /; exit 0; fi
  msg=$(why_unavailable "$v") || { echo "pgversions: $msg" >&2; exit 1; }
  ensure_chroot "$v"
  echo "$cache/pg$v"
  ;;
bindir)
  if [ -d "/usr/lib/postgresql/$v/bin" ]; then echo "/usr/lib/postgresql/$v/bin"; exit 0; fi
  r=$("$0" root "$v")
  out="$cache/pg$v-bin"
  mkdir -p "$out"
  for tool in pg_dump pg_restore psql pgbench pg_recvlogical; do
    cat > "$out/$tool.tmp" <<EOF
#!/bin/sh
# PostgreSQL $v's $tool from $r, run with that root's own loader and libraries.
exec "$r/lib64/ld-linux-x86-64.so.2" --library-path "$r/usr/lib/x86_64-linux-gnu:$r/lib/x86_64-linux-gnu" \\
  "$r/usr/lib/postgresql/$v/bin/$tool" "\$@"
EOF
    chmod 755 "$out/$tool.tmp"
    mv "$out/$tool.tmp" "$out/$tool"
  done
  echo "$out"
  ;;
available)
  msg=$(why_unavailable "$v") || { echo "$msg"; exit 1; }
  ;;
*)
  echo "usage: pgversions.sh root N | bindir N | available N" >&2
  exit 2
  ;;
esac
