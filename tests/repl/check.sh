#!/usr/bin/env bash
# check.sh FILE.in: feed a transcript's input to `pgtide repl` on piped
# stdin and compare stdout with FILE.out.  FILE.args, when present, holds
# extra arguments (e.g. -c CONFIG).  Prints one ok/not ok line.
set -u
in=$1
base=${in%.in}
name=$(basename "$base")
args=()
[ -f "$base.args" ] && read -r -a args < "$base.args"
actual=$(cd "$(dirname "$in")" && HOME="${TEST_TMP:-/tmp}" "$PGTIDE" repl "${args[@]+"${args[@]}"}" < "$(basename "$in")" 2>&1)
if diff -u "$base.out" <(printf '%s\n' "$actual") > /tmp/repl-diff.$$; then
  echo "ok - repl transcript $name"
else
  echo "not ok - repl transcript $name"
  cat /tmp/repl-diff.$$ >&2
fi
rm -f /tmp/repl-diff.$$
