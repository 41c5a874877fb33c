#!/usr/bin/env python3
"""Restore speed, side by side: lifeboat vs restic restore + sync vs cp -r + sync.

lifeboat's restores are durable when they return (synced); restic's and cp's
are not, so each of theirs is timed with a `sync` after it. `cp -r` + `sync`
is the write limit: reading cached files and writing them once, which on these
machines' disks is often what bounds a restore.

The tree (issue #12's): 400 MiB of random data, a 600 MiB text log of about
4 M lines, and 60 000 8 KiB database-like pages, each with 16 random bytes at
its start and 64 more, zeros elsewhere: in one file the 64 are at the page's
end, in the other right after the 16 (so half of every page is zeros). Both repositories are made once;
then, alternating the tools each round (A B C, C B A, ...), each restores the
tree into an empty directory on the same disk. Before every timed run the
source tree and that tool's repository are read into the page cache, so every
tool starts from the same place; medians over the rounds.

Run through `scripts/bench.sh restore [--rounds 5] [--write-docs]`.
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no bench/__pycache__ in the working tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import ROOT, du, warm, write_docs_block  # noqa: E402

LIFEBOAT = os.environ.get("LIFEBOAT_BIN") or bench.LIFEBOAT
MIB = 1 << 20
KEY = "0123456789abcdef0123456789abcdef-restore-bench"


MARK = "2"


def make_tree(path):
    marker = os.path.join(path, ".complete")
    if os.path.exists(marker) and open(marker).read() == MARK:
        return
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, "random"))
    os.makedirs(os.path.join(path, "log"))
    os.makedirs(os.path.join(path, "db"))
    for i in range(8):
        with open(os.path.join(path, f"random/blob{i}.bin"), "wb") as f:
            for _ in range(50):
                f.write(os.urandom(MIB))
    words = [w.encode() for w in (
        "user login logout session token refresh password verify mfa audit event admin tenant role "
        "grant revoke device browser api key rotate created updated deleted success failure error "
        "warning info request response status ok forbidden timeout retry region primary replica"
    ).split()]
    with open(os.path.join(path, "log/app.log"), "wb") as f:
        written, line = 0, 0
        rnd = os.urandom(1 << 20)
        r = 0
        while written < 600 * MIB:
            buf = bytearray()
            while len(buf) < MIB:
                n = 8 + rnd[r] % 24
                body = b" ".join(words[rnd[(r + k) % len(rnd)] % len(words)] for k in range(n))
                r = (r + n + 1) % len(rnd)
                buf += b"2026-11-28T10:%02d:%02d.%06dZ id=%d %s\n" % (
                    line // 60000 % 60, line // 1000 % 60, line % 1000000, line, body)
                line += 1
            f.write(buf)
            written += len(buf)
    # Two page files of 30 000 pages: the 64 bytes at the page's end (a heap
    # page with one tuple), and right after the 16 (the second half of every
    # page zeros: what made lifeboat write 4 KiB at a time before).
    for name, tail_at_end in (("16384", True), ("16385", False)):
        with open(os.path.join(path, "db", name), "wb") as f:
            for chunk in range(30):
                buf = bytearray(8192 * 1000)
                rnd = os.urandom(80 * 1000)
                for p in range(1000):
                    page, r = p * 8192, p * 80
                    buf[page:page + 16] = rnd[r:r + 16]
                    at = page + 8128 if tail_at_end else page + 16
                    buf[at:at + 64] = rnd[r + 16:r + 80]
                f.write(buf)
    open(marker, "w").write(MARK)


def run(cmd, env=None, shell=False):
    """Seconds and peak RSS (MiB) of a command; exits on failure."""
    secs, mib, _ = bench.run(cmd, env=env, shell=shell)
    return secs, mib


def same_tree(a, b):
    """True when b holds every file of a with the same size (contents are
    checked by each tool; sizes catch a restore that did not happen)."""
    for d, _, files in os.walk(a):
        for f in files:
            if f == ".complete":
                continue
            pa = os.path.join(d, f)
            pb = os.path.join(b, os.path.relpath(pa, a))
            if not os.path.exists(pb) or os.path.getsize(pb) != os.path.getsize(pa):
                return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-work", "restore"))
    ap.add_argument("--tools", default="lifeboat,restic,copy")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    data = os.path.join(a.work, "tree")
    t0 = time.time()
    make_tree(data)
    size = du(data)
    print(f"tree: {size / MIB:.0f} MiB ({time.time() - t0:.0f} s to make or find)", flush=True)
    env = dict(os.environ)
    lb_repo = os.path.join(a.work, "repo-lifeboat")
    rs_repo = os.path.join(a.work, "repo-restic")
    lb_env = dict(env, LIFEBOAT_REPO=lb_repo, LIFEBOAT_KEY=KEY)
    rs_env = dict(env, RESTIC_REPOSITORY=rs_repo, RESTIC_PASSWORD="benchmark",
                  RESTIC_CACHE_DIR=os.path.join(a.work, "restic-cache"))
    tools = a.tools.split(",")
    if "lifeboat" in tools:
        shutil.rmtree(lb_repo, ignore_errors=True)
        run([LIFEBOAT, "--quiet", "repo", "init"], lb_env)
        run([LIFEBOAT, "--quiet", "files", "backup", data], lb_env)
    if "restic" in tools:
        shutil.rmtree(rs_repo, ignore_errors=True)
        run(["restic", "init", "--repository-version", "2"], rs_env)
        run(["restic", "backup", "--quiet", data], rs_env)
    results = {t: {"s": [], "mib": []} for t in tools}
    for i in range(a.rounds):
        order = tools if i % 2 == 0 else list(reversed(tools))
        print(f"round {i + 1}/{a.rounds}: {' '.join(order)}", flush=True)
        for tool in order:
            target = os.path.join(a.work, f"restore-{tool}")
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["sync"])
            warm(data)
            if tool == "lifeboat":
                warm(lb_repo)
                s, m = run([LIFEBOAT, "--quiet", "files", "restore", "latest", "--target", target], lb_env)
            elif tool == "restic":
                warm(rs_repo)
                s, m = run(f"restic restore --quiet latest --target {target} && sync", rs_env, shell=True)
            else:
                s, m = run(f"cp -r {data} {target} && sync", env, shell=True)
            restored = target if tool == "copy" else os.path.join(target, data.lstrip("/"))
            if not same_tree(data, restored):
                sys.exit(f"{tool} did not restore the tree into {restored}")
            results[tool]["s"].append(s)
            results[tool]["mib"].append(m)
            print(f"  {tool}: {s:.2f} s, {m:.0f} MiB RSS", flush=True)
            shutil.rmtree(target, ignore_errors=True)

    med = {t: statistics.median(results[t]["s"]) for t in tools}
    mem = {t: statistics.median(results[t]["mib"]) for t in tools}
    label = {"lifeboat": "lifeboat files restore (synced)", "restic": "restic restore + sync",
             "copy": "cp -r + sync (the write limit)"}
    cmd = "scripts/bench.sh restore " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{cmd.strip()}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} cores, "
        f"{platform.machine()}; source tree and repository read into the page cache before each run; "
        f"restores into an empty directory on the same disk  ",
        f"Tree: {size / MIB:.0f} MiB (400 MiB random, a 600 MiB text log, 60 000 mostly-zero 8 KiB pages); "
        f"{a.rounds} rounds alternating the tools, medians; every round: "
        + ", ".join(f"{t} " + " ".join(f"{x:.2f}" for x in results[t]["s"]) for t in tools) + "  ",
        "",
        "| restore | time (s) | MiB/s | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for t in tools:
        lines.append(f"| {label[t]} | {med[t]:.2f} | {size / MIB / med[t]:.0f} | {mem[t]:.0f} |")
    goals = []
    if "lifeboat" in med and "restic" in med:
        r = med["lifeboat"] / med["restic"]
        goals.append(("files restore vs restic restore + sync", f"{r:.2f}x", "<= 0.8x", r <= 0.8))
    if "lifeboat" in med and "copy" in med:
        r = med["lifeboat"] / med["copy"]
        goals.append(("files restore vs cp -r + sync", f"{r:.2f}x", "<= 1.3x", r <= 1.3))
    if goals:
        lines += ["", "| goal | measured | target | |", "|---|---|---|---|"]
        lines += [f"| {n} | {v} | {t} | {'met' if ok else 'NOT met'} |" for n, v, t, ok in goals]
    report = "\n".join(lines)
    print("\n" + report)
    if a.write_docs:
        write_docs_block(report, "<!-- restore-benchmark:begin -->", "<!-- restore-benchmark:end -->",
                         "## Files restore: lifeboat vs restic + sync vs cp -r + sync")


if __name__ == "__main__":
    main()
