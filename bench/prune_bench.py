#!/usr/bin/env python3
"""Prune side by side: lifeboat prune vs restic prune (issue #14).

Builds one dataset (files of random bytes), backs it up 200 times with both
tools, changing 1-5 % of it between backups (whole files rewritten, and
blocks rewritten in place), then forgets all but the last 30 snapshots with
each tool's own `forget --keep-last 30`, and times each tool's prune with its
defaults (both tolerate 5 % unused space; lifeboat on local disk deletes at
once). Reports time, peak RSS (GNU time) and the space each freed.

Run through `scripts/bench.sh prune` (release build, restic from Debian).
Writes the table and the exact command to docs/benchmarks.md with
--write-docs.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import LIFEBOAT, ROOT, du, run, version_of, write_docs_block  # noqa: E402

PASSWORD = "benchmark password, not a secret"


def rewrite(path, rng, whole):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if whole:
            f.write(rng.randbytes(size))
        else:
            at = rng.randrange(0, max(1, size - (64 << 10)))
            f.seek(at)
            f.write(rng.randbytes(64 << 10))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-work", "prune"))
    ap.add_argument("--files", type=int, default=512, help="files of --file-mib MiB")
    ap.add_argument("--file-mib", type=int, default=1)
    ap.add_argument("--snapshots", type=int, default=200)
    ap.add_argument("--keep", type=int, default=30)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()

    shutil.rmtree(a.work, ignore_errors=True)
    data = os.path.join(a.work, "data")
    os.makedirs(data)
    rng = random.Random(14)
    for i in range(a.files):
        with open(os.path.join(data, f"f{i:05}"), "wb") as f:
            f.write(rng.randbytes(a.file_mib << 20))

    env = dict(os.environ)
    env.update({
        "LIFEBOAT_REPO": os.path.join(a.work, "lifeboat-repo"),
        "LIFEBOAT_PASSWORD": PASSWORD,
        "RESTIC_REPOSITORY": os.path.join(a.work, "restic-repo"),
        "RESTIC_PASSWORD": PASSWORD,
        "RESTIC_CACHE_DIR": os.path.join(a.work, "restic-cache"),
        "XDG_CACHE_HOME": os.path.join(a.work, "cache"),
    })
    subprocess.run([LIFEBOAT, "repo", "init"], env=env, check=True, capture_output=True)
    # A key-file slot too: unattended lifeboat opens with key material
    # (BLAKE3), not a passphrase (Argon2id, 64 MiB): prune is measured both ways.
    key = os.path.join(a.work, "key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    subprocess.run([LIFEBOAT, "repo", "key", "add", "--new-key-file", key], env=env, check=True,
                   capture_output=True)
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)

    t0 = time.perf_counter()
    for n in range(a.snapshots):
        if n:
            # 1-5 % of the files change: half rewritten whole, half in place.
            k = max(1, int(a.files * rng.uniform(0.01, 0.05)))
            for i in rng.sample(range(a.files), k):
                rewrite(os.path.join(data, f"f{i:05}"), rng, whole=rng.random() < 0.5)
        subprocess.run([LIFEBOAT, "--quiet", "files", "backup", data], env=env, check=True,
                       capture_output=True)
        subprocess.run(["restic", "backup", "--quiet", data], env=env, check=True,
                       capture_output=True)
        if n % 20 == 0:
            print(f"{n}/{a.snapshots} snapshots ({time.perf_counter() - t0:.0f} s)", flush=True)

    run([LIFEBOAT, "--quiet", "forget", "--keep-last", str(a.keep)], env=env)
    run(["restic", "forget", "--keep-last", str(a.keep)], env=env)

    # The same forgotten repository twice, to prune once per way of opening it.
    keyed = env["LIFEBOAT_REPO"] + "-keyed"
    subprocess.run(["cp", "-a", env["LIFEBOAT_REPO"], keyed], check=True)
    env_keyed = dict(env, LIFEBOAT_REPO=keyed)
    del env_keyed["LIFEBOAT_PASSWORD"]
    rows = {}
    for tool, cmd, e, repo in [
        ("lifeboat", [LIFEBOAT, "--quiet", "prune"], env, env["LIFEBOAT_REPO"]),
        ("lifeboat (key file)", [LIFEBOAT, "--quiet", "--key-file", key, "prune"], env_keyed, keyed),
        ("restic", ["restic", "prune"], env, env["RESTIC_REPOSITORY"]),
    ]:
        before = du(repo)
        secs, rss, _ = run(cmd, env=e)
        after = du(repo)
        rows[tool] = (secs, rss, before, after)
        print(f"{tool}: {secs:.1f} s, {rss:.0f} MiB, {before / 2**20:.0f} -> {after / 2**20:.0f} MiB", flush=True)
    # Both repositories still hold what they keep.
    subprocess.run([LIFEBOAT, "--quiet", "verify"], env=env, check=True, capture_output=True)
    subprocess.run(["restic", "check"], env=env, check=True, capture_output=True)

    lb, rs = rows["lifeboat"], rows["restic"]
    freed_lb, freed_rs = lb[2] - lb[3], rs[2] - rs[3]
    gib = a.files * a.file_mib / 1024
    lines = [
        f"Dataset: {a.files} files of {a.file_mib} MiB of random bytes ({gib:.1f} GiB), "
        f"{a.snapshots} backups with 1-5 % changed between them, forget --keep-last {a.keep}, then prune "
        f"with each tool's defaults. {os.cpu_count()} cores. "
        f"{version_of('lifeboat')}; {version_of('restic')}.",
        "",
        "| | time | peak RSS | repository before | after | freed |",
        "|---|---|---|---|---|---|",
    ]
    for tool in ("lifeboat", "lifeboat (key file)", "restic"):
        s, r, b, af = rows[tool]
        lines.append(f"| {tool} prune | {s:.1f} s | {r:.0f} MiB | {b / 2**20:.0f} MiB | "
                     f"{af / 2**20:.0f} MiB | {(b - af) / 2**20:.0f} MiB |")
    lk = rows["lifeboat (key file)"]
    t_ratio = lb[0] / rs[0] if rs[0] else float("inf")
    m_ratio = lb[1] / rs[1] if rs[1] else float("inf")
    mk_ratio = lk[1] / rs[1] if rs[1] else float("inf")
    f_diff = abs(freed_lb - freed_rs) / freed_rs if freed_rs else 0.0
    lines += [
        "",
        f"- time: {t_ratio:.2f}x restic's (goal <= 0.5x): {'met' if t_ratio <= 0.5 else 'NOT met'}",
        f"- peak RSS: {m_ratio:.2f}x restic's with a passphrase (goal <= 0.5x): "
        f"{'met' if m_ratio <= 0.5 else 'NOT met'} (Argon2id's 64 MiB is the floor of any command "
        f"opened with a passphrase); {mk_ratio:.2f}x with a key file: {'met' if mk_ratio <= 0.5 else 'NOT met'}",
        f"- space freed: {freed_lb / 2**20:.0f} MiB vs {freed_rs / 2**20:.0f} MiB, "
        f"{f_diff * 100:.1f} % apart (goal within 5 %): {'met' if f_diff <= 0.05 else 'NOT met'}",
        "",
        f"Command: `scripts/bench.sh prune{' --write-docs' if a.write_docs else ''}`",
    ]
    report = "\n".join(lines)
    print(report)
    if a.write_docs:
        write_docs_block(report, "<!-- prune-benchmark:begin -->", "<!-- prune-benchmark:end -->",
                         "## Prune: lifeboat vs restic")
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
