#!/usr/bin/env bash
# The README's first command: lifeboat's main job on its embedded default.
# Installs the PostgreSQL server from Debian's packages when it is missing (the
# demo starts a throwaway cluster with it), then runs `lifeboat demo`.
# Arguments pass through (e.g. --keep, --json, --scale 4, --files).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v pg_config >/dev/null 2>&1; then
  echo "PostgreSQL server not found; installing it (once)…" >&2
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq postgresql >&2
fi
if [ "$(id -u)" = 0 ] && ! command -v setpriv >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux
fi
exec cargo run --release -q -p lifeboat -- demo "$@"
