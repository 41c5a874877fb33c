#!/usr/bin/env bash
# Benchmarks lifeboat side by side with its peers.
#   scripts/bench.sh [args]     files: restic, borg and the zstd limit (bench/bench.py;
#                               e.g. --write-docs, --size-gib 4, --rounds 3)
#   scripts/bench.sh pg [args]  PostgreSQL: pgBackRest, pg_basebackup and the zstd limit
#                               (bench/pg_bench.py; e.g. --size-gb 4 --rounds 3 --write-docs)
#   scripts/bench.sh dump [args]  Redis (vs redis-cli --rdb + zstd -1) and pg dump (vs
#                               pg_dump -Fc | gzip -9) (bench/dump_bench.py; e.g. --write-docs)
#   scripts/bench.sh restore [args]  files restore vs restic restore + sync vs cp -r + sync
#                               (bench/restore_bench.py; e.g. --rounds 5 --write-docs)
#   scripts/bench.sh prune [args]  prune vs restic prune after 200 backups and
#                               forget --keep-last 30 (bench/prune_bench.py; e.g. --write-docs)
#   scripts/bench.sh soak [args]  the agent's memory and descriptors over fast schedules
#                               against PostgreSQL and Redis (bench/agent_soak.py; e.g.
#                               --minutes 30 --write-docs)
#   scripts/bench.sh replicate [args]  replicate between two Garage servers vs
#                               rclone sync and restic copy (bench/replicate_bench.py;
#                               e.g. --size-mib 1024 --rounds 3 --write-docs)
#   scripts/bench.sh es [args]    Elasticsearch/OpenSearch: lifeboat ingest vs the native
#                               fs snapshot on a real OpenSearch node (bench/es_bench.py;
#                               e.g. --docs 200000 --write-docs)
# Installs the peers from Debian's packages when missing, builds lifeboat in
# release mode and passes the remaining arguments to the Python harness.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=files
if [ "${1:-}" = pg ]; then mode=pg; shift; fi
if [ "${1:-}" = dump ]; then mode=dump; shift; fi
if [ "${1:-}" = restore ]; then mode=restore; shift; fi
if [ "${1:-}" = prune ]; then mode=prune; shift; fi
if [ "${1:-}" = soak ]; then mode=soak; shift; fi
if [ "${1:-}" = es ]; then mode=es; shift; fi
if [ "${1:-}" = replicate ]; then mode=replicate; shift; fi
missing=()
if [ "$mode" = dump ] || [ "$mode" = soak ]; then
  need=(redis-server redis-cli zstd gzip /usr/bin/time setpriv)
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing+=(postgresql); fi
elif [ "$mode" = es ]; then
  # The OpenSearch node of the tests (testkit/opensearch, built by
  # scripts/install-opensearch.sh on first use) needs Java 17 and Maven.
  need=(curl java mvn)
elif [ "$mode" = pg ]; then
  need=(pgbackrest zstd /usr/bin/time setpriv)
  # PostgreSQL's server binaries are not on PATH in Debian.
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
     && ! { command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; }; then
    missing+=(postgresql)
  fi
elif [ "$mode" = replicate ]; then
  need=(restic rclone /usr/bin/time)
  scripts/install-garage.sh >/dev/null
elif [ "$mode" = restore ] || [ "$mode" = prune ]; then
  need=(restic /usr/bin/time)
else
  need=(restic borg zstd /usr/bin/time)
fi
for t in "${need[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=()
  for t in "${missing[@]}"; do
    case "$t" in
      borg) pkgs+=(borgbackup);;
      /usr/bin/time) pkgs+=(time);;
      setpriv) pkgs+=(util-linux);;
      redis-cli) pkgs+=(redis-tools);;
      java) pkgs+=(openjdk-17-jdk-headless);;
      mvn) pkgs+=(maven);;
      *) pkgs+=("$t");;
    esac
  done
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
fi
cargo build --release -p lifeboat
if [ "$mode" = pg ]; then
  exec python3 bench/pg_bench.py "$@"
fi
if [ "$mode" = dump ]; then
  exec python3 bench/dump_bench.py "$@"
fi
if [ "$mode" = soak ]; then
  exec python3 bench/agent_soak.py "$@"
fi
if [ "$mode" = es ]; then
  exec python3 bench/es_bench.py "$@"
fi
if [ "$mode" = replicate ]; then
  exec python3 bench/replicate_bench.py "$@"
fi
if [ "$mode" = restore ]; then
  exec python3 bench/restore_bench.py "$@"
fi
if [ "$mode" = prune ]; then
  exec python3 bench/prune_bench.py "$@"
fi
exec python3 bench/bench.py "$@"
