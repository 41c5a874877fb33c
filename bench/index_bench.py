#!/usr/bin/env python3
"""Index memory vs repository size (issue #14 section 4).

For each size N (chunks in the index), writes a real repository with
`crates/repo/examples/gen_index.rs` (tiny 64-1024-byte chunks, through the
public API), then measures with GNU time (`/usr/bin/time -v`) the wall time
and peak RSS of these commands of each binary given:

- `files backup` of a small directory (open + index load + a tiny backup),
- `snapshots`,
- `files restore` of that small backup,
- and whatever is in EXTRA below (hook for `forget` / `prune`).

The first `files backup` after a repository is generated builds the local
index cache (`LIFEBOAT_CACHE_DIR`); it is reported as `cache build`, then a
second backup (one file changed) and the other commands run with the cache
in place. Results go to a JSON file and a
plot of peak RSS against chunk count (`bench/index_plot.py`).

    cargo build --release -p lifeboat -p lifeboat-repo --example gen_index
    python3 bench/index_bench.py --sizes 1000000 10000000 \\
        --bin new=target/release/lifeboat --bin main=/path/to/main/lifeboat
    python3 bench/index_plot.py bench/index_results.json docs/index-memory.png

Generated repositories are deleted after measuring (--keep to keep them).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "bench"

# Hook for the forget/prune work (issue #14): (label, argv after `lifeboat`).
# They run after the commands above, in this order, on each repository and
# each binary; they may change the repository, so keep them last. E.g.:
#   ("forget", ["forget", "--keep-last", "1"]),
#   ("prune", ["prune"]),
EXTRA = [
    ("forget", ["forget", "--keep-last", "1", "--keep-daily", "0", "--keep-weekly", "0",
                "--keep-monthly", "0", "--keep-yearly", "0"]),
    ("prune", ["prune"]),
]


def timed(argv, env):
    """Runs argv under GNU time; returns (seconds, peak RSS in KiB, stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        p = subprocess.run(["/usr/bin/time", "-v", "-o", t.name] + argv, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        report = t.read()
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", report).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    return secs, rss, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--bin", action="append", required=True, help="label=path")
    ap.add_argument("--gen", default=os.path.join(ROOT, "target/release/examples/gen_index"))
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/index_results.json"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    bins = dict(b.split("=", 1) for b in args.bin)
    results = json.load(open(args.out)) if os.path.exists(args.out) else []
    os.makedirs(args.work, exist_ok=True)
    small = os.path.join(args.work, "small")
    os.makedirs(small, exist_ok=True)
    for i in range(20):
        with open(os.path.join(small, f"f{i}"), "wb") as f:
            f.write(os.urandom(50_000))
    for n in args.sizes:
        repo = os.path.join(args.work, f"r{n}")
        if not os.path.exists(repo):
            out = subprocess.run([args.gen, repo, str(n), PASSWORD], check=True,
                                 stdout=subprocess.PIPE, text=True).stdout
            chunks = int(out.split()[-1])
        else:
            chunks = n
        for label, exe in bins.items():
            cache = os.path.join(args.work, f"cache-{label}")
            shutil.rmtree(cache, ignore_errors=True)
            env = dict(os.environ, LIFEBOAT_REPO=repo, LIFEBOAT_PASSWORD=PASSWORD,
                       LIFEBOAT_CACHE_DIR=cache)
            runs = []
            secs, rss, _ = timed([exe, "files", "backup", small, "--tag", label], env)
            runs.append(("cache build (first files backup)", secs, rss))
            with open(os.path.join(small, "f0"), "wb") as f:
                f.write(os.urandom(50_000))
            secs, rss, _ = timed([exe, "files", "backup", small, "--tag", label], env)
            runs.append(("files backup", secs, rss))
            secs, rss, _ = timed([exe, "snapshots"], env)
            runs.append(("snapshots", secs, rss))
            target = os.path.join(args.work, "restore")
            shutil.rmtree(target, ignore_errors=True)
            secs, rss, _ = timed([exe, "files", "restore", "latest", "--target", target], env)
            runs.append(("files restore", secs, rss))
            shutil.rmtree(target, ignore_errors=True)
            for name, argv in EXTRA:
                secs, rss, _ = timed([exe] + argv, env)
                runs.append((name, secs, rss))
            for name, secs, rss in runs:
                row = {"binary": label, "chunks": chunks, "command": name,
                       "seconds": round(secs, 2), "peak_rss_mib": round(rss / 1024, 1)}
                print(json.dumps(row), flush=True)
                results.append(row)
            shutil.rmtree(cache, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(repo, ignore_errors=True)
    json.dump(results, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
