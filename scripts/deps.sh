#!/usr/bin/env bash
# Install whatever Debian packages from vendor/deps.txt are missing.
# Idempotent: prints what it installs, prints nothing when all are present.
# Uses sudo when not root.
set -euo pipefail
manifest="$(dirname "$0")/../vendor/deps.txt"
missing=()
while read -r pkg _; do
  case "$pkg" in ''|'#'*) continue ;; esac
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done < "$manifest"
[ ${#missing[@]} -eq 0 ] && exit 0
echo "make deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "make deps: done"
