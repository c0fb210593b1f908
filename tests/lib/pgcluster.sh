#!/usr/bin/env bash
# pgcluster.sh: throwaway PostgreSQL clusters for tests, the demo and benchmarks.
#
#   pgcluster.sh start DIR [--version N] [--tls] [--port N] [--conf 'key = value']...
#       initdb in DIR (as the postgres user when running as root), wal_level=logical,
#       a free port on 127.0.0.1, password auth over TCP (the superuser 'postgres'
#       gets the password from tests/lib/secrets.txt, stored in a pgpass file, never
#       in the conninfo).  Prints the conninfo on stdout.
#       --tls: also creates a CA and a server certificate for CN=localhost and
#       requires TLS on TCP; verify-full works with sslrootcert=DIR/ca.crt.
#       --version N: PostgreSQL N (default 15, Debian 12's).  A version this machine
#       does not have runs in a Debian chroot (tests/lib/pgversions.sh); its data
#       directory lives inside the chroot and DIR/data links to it.
#   pgcluster.sh stop DIR        stop immediately and remove DIR
#   pgcluster.sh restart DIR     stop immediately (as a crash would) and start again
#   pgcluster.sh conninfo DIR    print the conninfo again
#   pgcluster.sh stop-all ROOT   stop every cluster found under ROOT
#
# The pgpass file is $PGPASSFILE when set (created if missing), else DIR/pgpass.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
default_pgbin=${PGBIN:-$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v initdb)")}
pgbin=$default_pgbin
chroot_root=""   # set for a cluster that runs in a chroot

# Run a PostgreSQL server program as the postgres user, in the cluster's chroot if any.
as_pg() {
  if [ -n "$chroot_root" ]; then chroot "$chroot_root" runuser -u postgres -- "$@"
  elif [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"
  else "$@"; fi
}

# Set pgbin and chroot_root for the cluster in DIR (recorded by start).
load_cluster() {
  local dir=$1
  chroot_root=""
  pgbin=$default_pgbin
  if [ -f "$dir/chroot" ]; then
    chroot_root=$(cat "$dir/chroot")
    pgbin=$(cat "$dir/pgbin")
  elif [ -f "$dir/pgbin" ]; then
    pgbin=$(cat "$dir/pgbin")
  fi
}

# The data directory's path as the server sees it (inside the chroot, if any).
server_path() {
  local dir=$1 real
  real=$(readlink -f "$dir/data")
  echo "${real#"$chroot_root"}"
}

secret() { awk -v k="$1" '$1 == k { print $2 }' "$here/secrets.txt"; }

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 30000) + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      # also avoid ports another cluster of ours reserved but has not bound yet
      if mkdir "/tmp/pgtide-port-$p.lock" 2>/dev/null; then echo "$p"; return; fi
    fi
  done
  echo "pgcluster: no free port found" >&2; exit 1
}

cmd=${1:-}; shift || true
case "$cmd" in
start)
  dir=$1; shift
  tls=0; port=""; confs=(); version=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --tls) tls=1 ;;
      --version) version=$2; shift ;;
      --port) port=$2; shift ;;
      --conf) confs+=("$2"); shift ;;
      *) echo "pgcluster: unknown option $1" >&2; exit 2 ;;
    esac
    shift
  done
  fixed_port=$port
  [ -n "$port" ] || port=$(free_port)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  # where the server's files live: DIR itself, or a directory inside the version's chroot
  sdir=$dir
  if [ -n "$version" ]; then
    vroot=$("$here/pgversions.sh" root "$version")
    if [ "$vroot" = / ]; then
      pgbin=/usr/lib/postgresql/$version/bin
    else
      chroot_root=$vroot
      pgbin=/usr/lib/postgresql/$version/bin
      inner=$(mktemp -d "$vroot/srv/pgtide/c.XXXXXX")
      chmod 700 "$inner"
      chroot "$vroot" chown postgres: "${inner#"$vroot"}"
      ln -s "$inner/data" "$dir/data"
      echo "$vroot" > "$dir/chroot"
      sdir=${inner#"$vroot"}
    fi
    echo "$pgbin" > "$dir/pgbin"
  fi
  spath() { if [ -n "$chroot_root" ]; then echo "$chroot_root$1"; else echo "$1"; fi; }
  pw=$(secret pg_password)
  pwfile=$(spath "$sdir")/pwfile
  printf '%s\n' "$pw" > "$pwfile"
  [ -z "$chroot_root" ] && [ "$(id -u)" -eq 0 ] && chown postgres: "$pwfile"
  [ -n "$chroot_root" ] && chroot "$chroot_root" chown postgres: "$sdir/pwfile"
  as_pg "$pgbin/initdb" -D "$sdir/data" -U postgres --pwfile="$sdir/pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { rm -f "$pwfile"; cat "$dir/initdb.log" >&2; exit 1; }
  rm -f "$pwfile"
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$sdir'"
    echo "wal_level = logical"
    echo "max_replication_slots = 20"
    echo "max_wal_senders = 20"
    echo "fsync = off"
    echo "full_page_writes = off"
    echo "shared_buffers = 128MB"
    echo "max_connections = 100"
    echo "logging_collector = off"
    echo "log_min_messages = warning"
    for c in "${confs[@]+"${confs[@]}"}"; do echo "$c"; done
  } >> "$dir/data/postgresql.conf"
  host=127.0.0.1
  if [ $tls -eq 1 ]; then
    (
      cd "$dir"
      openssl req -new -x509 -days 2 -nodes -subj "/CN=pgtide test CA" \
        -keyout ca.key -out ca.crt >/dev/null 2>&1
      openssl req -new -nodes -subj "/CN=localhost" -keyout server.key -out server.csr >/dev/null 2>&1
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile san.ext -out server.crt >/dev/null 2>&1
      cp server.crt server.key data/
      chmod 600 data/server.key
      if [ -n "$chroot_root" ]; then
        chroot "$chroot_root" chown postgres: "$sdir/data/server.crt" "$sdir/data/server.key"
      elif [ "$(id -u)" -eq 0 ]; then
        chown postgres: data/server.crt data/server.key
      fi
      chmod 644 ca.crt
    )
    {
      echo "ssl = on"
      echo "ssl_cert_file = 'server.crt'"
      echo "ssl_key_file = 'server.key'"
    } >> "$dir/data/postgresql.conf"
    # TCP connections must use TLS
    sed -i -e 's/^host /hostssl /' "$dir/data/pg_hba.conf"
    host=localhost
  fi
  echo "host replication all 127.0.0.1/32 scram-sha-256" >> "$dir/data/pg_hba.conf"
  [ $tls -eq 1 ] && sed -i -e 's/^host replication/hostssl replication/' "$dir/data/pg_hba.conf"
  # Another process may take the port between our check and the server's
  # bind: then move to a fresh port and try again.
  started=0
  for attempt in 1 2 3 4 5; do
    if as_pg "$pgbin/pg_ctl" -D "$sdir/data" -l "$sdir/server.log" -w -t 60 start >/dev/null; then
      started=1; break
    fi
    rmdir "/tmp/pgtide-port-$port.lock" 2>/dev/null || true
    grep -q "could not bind\|Address already in use" "$(spath "$sdir")/server.log" || break
    [ -n "$fixed_port" ] && break
    port=$(free_port)
    sed -i -e "s/^port = .*/port = $port/" "$dir/data/postgresql.conf"
  done
  rmdir "/tmp/pgtide-port-$port.lock" 2>/dev/null || true
  [ -n "$chroot_root" ] && ln -sf "$(spath "$sdir")/server.log" "$dir/server.log"
  [ $started -eq 1 ] || { cat "$dir/server.log" >&2; exit 1; }
  conninfo="host=$host port=$port user=postgres dbname=postgres"
  [ $tls -eq 1 ] && conninfo="$conninfo sslmode=verify-full sslrootcert=$dir/ca.crt"
  echo "$conninfo" > "$dir/conninfo"
  echo "$port" > "$dir/port"
  pgpass=${PGPASSFILE:-$dir/pgpass}
  touch "$pgpass"; chmod 600 "$pgpass"
  for h in 127.0.0.1 localhost; do
    grep -qF "$h:$port:" "$pgpass" || echo "$h:$port:*:postgres:$pw" >> "$pgpass"
  done
  echo "$conninfo"
  ;;
stop)
  dir=$1
  load_cluster "$dir"
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$pgbin/pg_ctl" -D "$(server_path "$dir")" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  if [ -n "$chroot_root" ] && [ -L "$dir/data" ]; then
    inner=$(dirname "$(readlink -f "$dir/data")")
    case "$inner" in "$chroot_root"/srv/pgtide/c.*) rm -rf "$inner" ;; esac
  fi
  rm -rf "$dir"
  ;;
restart)
  # an immediate restart (as after a crash: no checkpoint, every session cut), same port
  dir=$1
  load_cluster "$dir"
  sp=$(server_path "$dir")
  as_pg "$pgbin/pg_ctl" -D "$sp" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  as_pg "$pgbin/pg_ctl" -D "$sp" -l "$(dirname "$sp")/server.log" -w -t 60 start >/dev/null
  ;;
conninfo)
  cat "$1/conninfo"
  ;;
stop-all)
  root=$1
  find "$root" -name postmaster.pid -path '*/data/*' 2>/dev/null | while read -r pid; do
    as_pg "$pgbin/pg_ctl" -D "$(dirname "$pid")" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  done
  # clusters in a chroot: DIR/chroot marks them, DIR/data links inside
  find "$root" -name chroot -type f 2>/dev/null | while read -r mark; do
    "$0" stop "$(dirname "$mark")" || true
  done
  ;;
*)
  echo "usage: pgcluster.sh start DIR [--version N] [--tls] [--port N] [--conf SETTING] | stop DIR | restart DIR | conninfo DIR | stop-all ROOT" >&2
  exit 2
  ;;
esac
