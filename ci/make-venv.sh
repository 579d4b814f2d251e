#!/usr/bin/env bash
# Create (if missing) and fill the virtualenv that PostgreSQL backends and the tests use.
#
#   OROCHI_PREFIX   install prefix (default /opt/orochi); the venv is $OROCHI_PREFIX/venv
#   OROCHI_PYTHON   interpreter to build it from (default /usr/bin/python3.11: the one
#                   with a shared libpython, the only one a backend can embed)
#
# Installs requirements-dev.txt from the repository root, then makes the prefix
# world-readable: backends run as the postgres OS user and must read the venv.
set -euo pipefail
umask 022

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX=${OROCHI_PREFIX:-/opt/orochi}
PYTHON=${OROCHI_PYTHON:-/usr/bin/python3.11}
VENV="$PREFIX/venv"

if [ ! -x "$PYTHON" ]; then
  echo "make-venv: $PYTHON not found (run ci/install-system-deps.sh)" >&2
  exit 1
fi

# The prefix must be writable by us; when not root, create it with sudo and take it.
if [ ! -d "$PREFIX" ] || [ ! -w "$PREFIX" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$PREFIX"
  else
    sudo mkdir -p "$PREFIX"
    sudo chown "$(id -u):$(id -g)" "$PREFIX"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "make-venv: creating $VENV from $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

# A venv made from another interpreter (e.g. a python3.11 without a shared libpython)
# would hold wheels the backend cannot load: refuse rather than guess.
want=$("$PYTHON" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])')
have=$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])')
if [ "$want" != "$have" ]; then
  echo "make-venv: $VENV was made from another Python ($have, want $want);" \
       "remove it and run again" >&2
  exit 1
fi

"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install -r requirements-dev.txt

chmod -R a+rX "$PREFIX"

# Every directory above the prefix must be traversable by the postgres user too.
dir=$PREFIX
while [ "$dir" != "/" ]; do
  if (( (8#$(stat -c %a "$dir") & 1) == 0 )); then
    echo "make-venv: warning: $dir is not traversable by other users;" \
         "the postgres server cannot load $VENV" >&2
  fi
  dir=$(dirname "$dir")
done

echo "make-venv: $VENV ready"
