#!/usr/bin/env bash
# Starts the tests' OpenSearch node by hand: scripts/opensearch.sh PORT DIR
# A real OpenSearch 2.19.6 node (embedded, testkit/opensearch; built on first
# use by scripts/install-opensearch.sh), single-node, security off (plain HTTP,
# no authentication), HTTP on 127.0.0.1:PORT, its files under DIR (DIR/repo is
# path.repo, for `fs` snapshot repositories). Prints http://127.0.0.1:PORT once
# _cluster/health is yellow or green; stops the node on SIGTERM or Ctrl-C.
# The node's log goes to standard error. JVM options: LIFEBOAT_OPENSEARCH_JAVA_OPTS
# (default -Xms512m -Xmx1g).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: scripts/opensearch.sh PORT DIR" >&2
  exit 2
fi
port=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
root=$("$(dirname "$0")/install-opensearch.sh" | tail -n 1)
# shellcheck disable=SC2086
java ${LIFEBOAT_OPENSEARCH_JAVA_OPTS:--Xms512m -Xmx1g} -cp "$(cat "$root/classpath")" \
  lifeboat.testkit.OpenSearchNode "$port" "$dir" >&2 &
node=$!
trap 'kill -TERM "$node" 2>/dev/null; wait "$node"; exit 0' TERM INT
url="http://127.0.0.1:$port"
deadline=$(( $(date +%s) + 180 ))
until curl -fsS "$url/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null | grep -Eq '"status":"(yellow|green)"'; do
  if ! kill -0 "$node" 2>/dev/null; then
    wait "$node" || true
    echo "opensearch.sh: the node exited before it was healthy (its log is above)" >&2
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "opensearch.sh: the node was not healthy within 180 s; stopping it" >&2
    kill -TERM "$node"; wait "$node" || true
    exit 1
  fi
  sleep 0.5
done
echo "$url"
wait "$node"
