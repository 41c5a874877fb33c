#!/usr/bin/env python3
"""Elasticsearch/OpenSearch benchmark (issue #16): lifeboat's ingest-mode
backup against the cluster's own snapshot into an `fs` repository alone —
the cost of lifeboat's copy, compression, encryption and dedup on top.

One real OpenSearch 2.19.6 node (scripts/opensearch.sh) holds --docs
documents (default 200 000) in three indices. Seven daily rounds: between
them --change (default 5 %) of the documents are rewritten; each round takes
a native snapshot into the `native` fs repository and a `lifeboat es
backup` (ingest, into a local repository), in alternating order, after
the indices are flushed and no merge runs (a merge ending between the two
would be paid by whichever runs second). Then the
indices are deleted and restored --rounds times each way: the native
restore from `native` (until yellow, counts read), and `lifeboat es
restore` (the files staged, restored, counts compared); the native restore
is followed by `sync`, as lifeboat's staged files are written durably.

Goals: lifeboat's time per snapshot <= 1.3x the native snapshot's, its
repository <= 1.0x the native repository's size after the seventh, restore
<= 1.3x the native restore.

    scripts/bench.sh es [--docs 200000] [--rounds 3] [--write-docs]
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import LIFEBOAT, ROOT, write_docs_block  # noqa: E402

INDICES = [("orders", 3, 0.45), ("customers", 1, 0.2), ("events", 2, 0.35)]
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
         "omicron pi rho sigma tau upsilon phi chi psi omega").split()


class Node:
    def __init__(self, work):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.dir = os.path.join(work, "node")
        self.log = open(os.path.join(work, "node.log"), "w")
        self.proc = subprocess.Popen([os.path.join(ROOT, "scripts", "opensearch.sh"), str(self.port), self.dir],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            raise SystemExit(f"the OpenSearch node did not start: see {self.log.name}")
        self.url = line

    def call(self, method, path, body=None, ndjson=False):
        data = None
        headers = {}
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            headers["Content-Type"] = "application/x-ndjson" if ndjson else "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=3600) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{method} {path}: HTTP {e.code}: {e.read()[:500]!r}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def doc(i, index, version):
    rnd = random.Random(i * 7919 + version)
    return {"n": i, "index": index, "version": version,
            "title": " ".join(rnd.choice(WORDS) for _ in range(6)),
            "body": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(20, 80))),
            "amount": rnd.randint(1, 100000) / 100.0, "tag": f"t{i % 17}",
            "ts": 1764000000000 + i * 1000}


def bulk(node, index, ids, version):
    for start in range(0, len(ids), 5000):
        lines = []
        for i in ids[start:start + 5000]:
            lines.append(json.dumps({"index": {"_index": index, "_id": str(i)}}))
            lines.append(json.dumps(doc(i, index, version)))
        r = node.call("POST", "/_bulk", "\n".join(lines) + "\n", ndjson=True)
        if r.get("errors"):
            raise SystemExit(f"bulk errors in {index}")


def settle(node, timeout=300):
    """Flushes every index and waits until no merge runs, so that the day's
    two snapshots copy the same segments: a merge ending between them would
    be paid by whichever runs second."""
    node.call("POST", "/_flush")
    deadline = time.time() + timeout
    quiet = 0
    while time.time() < deadline:
        stats = node.call("GET", "/_nodes/stats/indices/merge")
        running = sum(n["indices"]["merges"]["current"] for n in stats["nodes"].values())
        quiet = quiet + 1 if running == 0 else 0
        if quiet >= 3:
            return
        time.sleep(0.2)


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return total


def run(cmd, env):
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}")
    return time.perf_counter() - t, p.stdout


def wait_yellow_and_count(node, names):
    node.call("GET", f"/_cluster/health/{','.join(names)}?wait_for_status=yellow&timeout=600s")
    node.call("POST", f"/{','.join(names)}/_refresh")
    return {n: node.call("GET", f"/{n}/_count")["count"] for n in names}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--change", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-work-es"))
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    node = Node(a.work)
    try:
        repo = os.path.join(a.work, "lifeboat-repo")
        key = os.path.join(a.work, "key")
        with open(key, "wb") as f:
            f.write(os.urandom(32).hex().encode())
        staging = os.path.join(node.dir, "repo", "lifeboat")
        native_dir = os.path.join(node.dir, "repo", "native")
        cfg = os.path.join(a.work, "lifeboat.toml")
        with open(cfg, "w") as f:
            f.write(f'repo = "{repo}"\nkey_file = "{key}"\n[elasticsearch.bench]\n'
                    f'url = "{node.url}"\nstaging_dir = "{staging}"\n')
        env = dict(os.environ)
        lb = [LIFEBOAT, "--config", cfg, "--quiet"]
        run(lb + ["repo", "init"], env)
        node.call("PUT", "/_snapshot/native", {"type": "fs", "settings": {"location": native_dir}})

        sizes = {}
        t0 = time.perf_counter()
        for name, shards, share in INDICES:
            n = int(a.docs * share)
            sizes[name] = n
            node.call("PUT", f"/{name}", {"settings": {"number_of_shards": shards, "number_of_replicas": 0}})
            bulk(node, name, list(range(n)), 0)
        node.call("POST", "/_refresh")
        print(f"indexed {a.docs} documents in {time.perf_counter() - t0:.1f} s", flush=True)
        names = [n for n, _, _ in INDICES]

        native_t, lifeboat_t = [], []
        rng = random.Random(42)
        for day in range(1, a.days + 1):
            if day > 1:
                for name in names:
                    ids = rng.sample(range(sizes[name]), int(sizes[name] * a.change))
                    bulk(node, name, ids, day)
                node.call("POST", "/_refresh")
            settle(node)

            def native():
                t = time.perf_counter()
                r = node.call("PUT", f"/_snapshot/native/day-{day}?wait_for_completion=true",
                              {"indices": ",".join(names), "include_global_state": False})
                if r["snapshot"]["state"] != "SUCCESS":
                    raise SystemExit(f"native snapshot: {r}")
                native_t.append(time.perf_counter() - t)

            def lifeboat():
                t, _ = run(lb + ["es", "backup", "bench"], env)
                lifeboat_t.append(t)
            order = (native, lifeboat) if day % 2 else (lifeboat, native)
            for step in order:
                step()
            print(f"  day {day}: native {native_t[-1]:.2f} s, lifeboat {lifeboat_t[-1]:.2f} s", flush=True)

        native_size = du(native_dir)
        lifeboat_size = du(repo)
        staging_size = du(os.path.join(staging, "snapshots"))
        before = wait_yellow_and_count(node, names)

        native_r, lifeboat_r = [], []
        for rnd in range(a.rounds):
            def drop():
                node.call("DELETE", f"/{','.join(names)}")

            def native_restore():
                drop()
                t = time.perf_counter()
                node.call("POST", f"/_snapshot/native/day-{a.days}/_restore?wait_for_completion=true",
                          {"indices": ",".join(names)})
                got = wait_yellow_and_count(node, names)
                # lifeboat's restore writes the staged files durably; the
                # native one gets the same flush to disk.
                os.sync()
                native_r.append(time.perf_counter() - t)
                if got != before:
                    raise SystemExit(f"native restore counts {got} != {before}")

            def lifeboat_restore():
                drop()
                t, _ = run(lb + ["es", "restore", "latest", "--source", "bench"], env)
                lifeboat_r.append(t)
                got = wait_yellow_and_count(node, names)
                if got != before:
                    raise SystemExit(f"lifeboat restore counts {got} != {before}")
            order = (native_restore, lifeboat_restore) if rnd % 2 == 0 else (lifeboat_restore, native_restore)
            for step in order:
                step()
            print(f"  restore round {rnd + 1}: native {native_r[-1]:.2f} s, lifeboat {lifeboat_r[-1]:.2f} s",
                  flush=True)
    finally:
        node.stop()

    med = statistics.median
    snap_ratio = med(lifeboat_t) / med(native_t)
    day_ratios = [lt / nt for lt, nt in zip(lifeboat_t[1:], native_t[1:])]
    size_ratio = lifeboat_size / native_size
    restore_ratio = med(lifeboat_r) / med(native_r)
    mib = lambda b: b / 1048576.0  # noqa: E731
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Run {stamp}: `scripts/bench.sh es --docs {a.docs} --rounds {a.rounds}"
        f"{' --write-docs' if a.write_docs else ''}` on this machine (2 cores), one OpenSearch 2.19.6 node "
        f"(scripts/opensearch.sh, 1 GiB heap), {a.docs} documents in 3 indices (6 primary shards), "
        f"{a.days} daily snapshots with {a.change:.0%} of the documents rewritten between them; before each "
        f"day's pair the indices are flushed and merges awaited, so both snapshots copy the same segments.",
        "",
        "| | native fs snapshot | lifeboat es backup (ingest) | ratio | goal |",
        "|---|---|---|---|---|",
        f"| time per snapshot (median of {a.days}) | {med(native_t):.2f} s | {med(lifeboat_t):.2f} s | "
        f"{snap_ratio:.2f}x | <= 1.3x {'met' if snap_ratio <= 1.3 else 'NOT met'} |",
        f"| each incremental day, lifeboat / native (days 2-{a.days}) | | | median {med(day_ratios):.2f}x, "
        f"worst {max(day_ratios):.2f}x | |",
        f"| first (full) snapshot | {native_t[0]:.2f} s | {lifeboat_t[0]:.2f} s | "
        f"{lifeboat_t[0] / native_t[0]:.2f}x | |",
        f"| repository after the {a.days}th | {mib(native_size):.1f} MiB | {mib(lifeboat_size):.1f} MiB | "
        f"{size_ratio:.2f}x | <= 1.0x {'met' if size_ratio <= 1.0 else 'NOT met'} |",
        f"| restore of all indices (median of {a.rounds}) | {med(native_r):.2f} s | {med(lifeboat_r):.2f} s | "
        f"{restore_ratio:.2f}x | <= 1.3x {'met' if restore_ratio <= 1.3 else 'NOT met'} |",
        "",
        f"lifeboat's staging repository (on the cluster's side) holds one snapshot: {mib(staging_size):.1f} MiB. "
        f"Per-day times, native: {', '.join(f'{t:.2f}' for t in native_t)} s; "
        f"lifeboat: {', '.join(f'{t:.2f}' for t in lifeboat_t)} s. "
        f"Restores, native: {', '.join(f'{t:.2f}' for t in native_r)} s; "
        f"lifeboat: {', '.join(f'{t:.2f}' for t in lifeboat_r)} s.",
    ]
    report = "\n".join(lines)
    print(report)
    if a.write_docs:
        write_docs_block(report, "<!-- es-benchmark:begin -->", "<!-- es-benchmark:end -->",
                         "## Elasticsearch/OpenSearch: lifeboat ingest vs the native fs snapshot (issue #16)\n\n"
                         "lifeboat's time includes the native snapshot it asks the cluster for, the trim of "
                         "the staging repository through the API and storing the new files (compressed, "
                         "encrypted, deduplicated); its restore includes writing the snapshot's files into "
                         "the staging directory before the cluster's restore, and the document counts "
                         "compared after it. The native restore is timed until the indices are yellow and "
                         "counted, then `sync`.")


if __name__ == "__main__":
    main()
