#!/usr/bin/env bash
# Builds the embedded OpenSearch node of the tests (testkit/opensearch: a Maven
# module, OpenSearch's jars from Maven Central) once per machine into
# ${LIFEBOAT_CACHE:-~/.cache/lifeboat}/opensearch-VERSION, and prints that
# directory on the last line. The node runs with
#   java -cp "$(cat DIR/classpath)" lifeboat.testkit.OpenSearchNode PORT NODEDIR
# Rebuilt only when the module's sources change (a stamp of their hash);
# Maven runs offline when its local repository (DIR/m2) already holds the jars.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.19.6
MODULE=testkit/opensearch
ROOT="${LIFEBOAT_CACHE:-${HOME}/.cache/lifeboat}/opensearch-${VERSION}"
stamp=$(cat "$MODULE/pom.xml" $(find "$MODULE/src" -type f | sort) | sha256sum | cut -d' ' -f1)
if [ -f "$ROOT/stamp" ] && [ "$(cat "$ROOT/stamp")" = "$stamp" ] && [ -f "$ROOT/classpath" ]; then
  echo "$ROOT"
  exit 0
fi
for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-opensearch.sh: $tool not found (Java 17 and Maven are needed; scripts/test.sh installs them)" >&2
    exit 1
  fi
done
mkdir -p "$ROOT"
rm -rf "$ROOT/build" "$ROOT/stamp"
mvn_args=(-B -q -Dstyle.color=never -f "$MODULE/pom.xml" "-Dmaven.repo.local=$ROOT/m2" "-Dlauncher.out=$ROOT/build" compile)
start=$(date +%s)
if [ -d "$ROOT/m2" ] && mvn -o "${mvn_args[@]}" >/dev/null 2>&1; then
  :
else
  echo "building the OpenSearch ${VERSION} test node into ${ROOT} (once per machine: ~70 MB of jars from Maven Central)…" >&2
  mvn "${mvn_args[@]}" >&2
  echo "built in $(( $(date +%s) - start ))s" >&2
fi
echo "$ROOT/build/classes:$ROOT/build/lib/*" > "$ROOT/classpath"
echo "$stamp" > "$ROOT/stamp"
echo "$ROOT"
