#!/usr/bin/env bash
# secret_scan.sh DIR...: fail if any test secret appears in any file under DIR.
# The secrets are listed in tests/lib/secrets.txt.
set -u
here=$(dirname "$0")
status=0
while read -r name value; do
  case "$name" in ''|'#'*) continue ;; esac
  hits=$(grep -rlF --exclude=.pgpass --exclude=pgpass --exclude=credentials --exclude="*.secret" -- "$value" "$@" 2>/dev/null | grep -v '/secret-scan.log$')
  if [ -n "$hits" ]; then
    echo "not ok - secret '$name' leaked into: $(echo $hits | head -c 400)"
    status=1
  else
    echo "ok - secret '$name' absent from all logs, state files and reports"
  fi
done < "$here/secrets.txt"
files=$(find "$@" -type f 2>/dev/null | wc -l)
echo "scanned $files files" >&2
exit $status
