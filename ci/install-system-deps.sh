#!/usr/bin/env bash
# Install the system packages Orochi needs to build and test, and nothing else.
#
# Idempotent and cheap: each package is checked with dpkg first; on a machine that has
# them all this prints a line and exits without touching apt (no `apt-get update`).
# Uses sudo for apt-get when not root. Debian/Ubuntu only.
#
#   PG_MAJOR   PostgreSQL major version (default 15)
#   PYTHON_VERSION   the CPython the backends embed (default 3.11)
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}

packages=(
  "postgresql-${PG_MAJOR}"
  "postgresql-contrib-${PG_MAJOR}"   # a virtual package provided by postgresql-NN on Debian
  "postgresql-server-dev-${PG_MAJOR}"
  "python${PYTHON_VERSION}"
  "python${PYTHON_VERSION}-dev"
  "python${PYTHON_VERSION}-venv"
  "build-essential"
  "sqlsmith"                         # the SQL fuzzer of tests/safety (random queries, no crash)
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-system-deps: dpkg not found; install these by hand: ${packages[*]}" >&2
  exit 1
fi

# "installed" = a package of that name is installed, or an installed package Provides it.
installed_list=$(dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Provides}\n' 2>/dev/null \
  | awk -F'|' '$1 ~ /^ii/ {
      print $2
      n = split($3, p, ",")
      for (i = 1; i <= n; i++) { sub(/^ +/, "", p[i]); sub(/ .*/, "", p[i]); if (p[i] != "") print p[i] }
    }' | sort -u)

missing=()
for pkg in "${packages[@]}"; do
  if ! grep -qxF -- "$pkg" <<<"$installed_list"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system-deps: all present (${packages[*]})"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-system-deps: missing ${missing[*]}; need root or sudo to install them" >&2
  exit 1
fi

echo "install-system-deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
