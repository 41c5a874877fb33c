#!/usr/bin/env bash
# Installs what the browser tests drive, once per machine: Debian's Chromium
# (/usr/bin/chromium) and the npm package playwright-core (pinned below) in
# a cache directory, ${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat/playwright.
# playwright-core downloads no browser: the tests launch the distribution's
# Chromium (scripts/browser/check-page.mjs). Never `npx playwright install`.
# Prints the cache directory on the last line (LIFEBOAT_PLAYWRIGHT_DIR).
set -euo pipefail
VERSION=1.65.1
DIR="${LIFEBOAT_PLAYWRIGHT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat/playwright}"

if [ ! -x /usr/bin/chromium ]; then
  echo "chromium not found; installing it (once)…" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found; installing it (once)…" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >&2
fi

installed="$(node -p "require('$DIR/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$VERSION" ]; then
  echo "installing playwright-core $VERSION into $DIR (once)…" >&2
  mkdir -p "$DIR"
  cat > "$DIR/package.json" <<JSON
{
  "name": "lifeboat-browser-tests",
  "private": true,
  "description": "playwright-core for scripts/browser/*.mjs (lifeboat's browser tests); browsers come from the distribution",
  "dependencies": { "playwright-core": "$VERSION" }
}
JSON
  (cd "$DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent >&2)
fi
echo "$DIR"
