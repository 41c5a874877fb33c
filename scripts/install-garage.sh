#!/usr/bin/env bash
# Installs Garage (a real S3-compatible server, used by the tests) once per
# machine into ~/.cache/lifeboat, and prints the binary's path on the last line.
set -euo pipefail
VERSION=2.5.0
ROOT="${HOME}/.cache/lifeboat/garage-${VERSION}"
BIN="${ROOT}/bin/garage"
if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi
echo "building Garage ${VERSION} from crates.io into ${ROOT} (once per machine, ~12-15 minutes on 2 cores)…" >&2
cargo install --locked garage --version "$VERSION" --root "$ROOT" >&2
echo "$BIN"
