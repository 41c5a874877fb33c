#!/usr/bin/env bash
# Benchmarks lifeboat side by side with restic, borg and the zstd limit.
# Installs the peers from Debian's packages when missing, builds lifeboat in
# release mode, and passes its arguments to bench/bench.py (e.g. --write-docs,
# --size-gib 4, --rounds 3).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for t in restic borg zstd /usr/bin/time; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=()
  for t in "${missing[@]}"; do case "$t" in borg) pkgs+=(borgbackup);; /usr/bin/time) pkgs+=(time);; *) pkgs+=("$t");; esac; done
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
fi
cargo build --release -p lifeboat
exec python3 bench/bench.py "$@"
