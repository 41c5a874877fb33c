#!/usr/bin/env python3
"""Side-by-side benchmark: lifeboat vs restic vs borg vs the zstd limit.

Builds a mixed ~4 GiB dataset (text-like, database-page-like and random files),
then, alternating the tools in each round, times: first backup, unchanged second
backup, restore (lifeboat and restic), and the limit (every file compressed once
with zstd -1 on both cores). Medians over the rounds; peak RSS from wait4.
Writes the table and the exact command to docs/benchmarks.md with --write-docs.

Run through scripts/bench.sh, which builds lifeboat in release mode and installs
the peers from Debian's packages.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIFEBOAT = os.path.join(ROOT, "target", "release", "lifeboat")
WORDS = [w.encode() for w in (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up other "
    "about out many then them these so some her would make like him into time has look two more write go see "
    "number no way could people my than first water been call who oil its now find long down day did get come "
    "made may part user email session login logout token refresh password change verify mfa audit event admin "
    "identity platform tenant organization role permission grant revoke invite accept decline device browser "
    "chrome firefox safari linux windows macos android ios mobile desktop api key secret rotate expire created "
    "updated deleted active disabled locked unlocked success failure error warning info debug trace request "
    "response status code ok forbidden unauthorized notfound conflict timeout retry backoff jitter region zone "
    "primary replica standby failover restore backup snapshot archive glacier bucket object version lifecycle "
    "policy retention compliance gdpr erasure ledger drill report rpo rto alert webhook notify schedule cron "
    "daily weekly monthly yearly full incremental differential wal segment timeline lsn xid checkpoint vacuum "
    "analyze index btree hash gin gist brin table column row tuple page heap toast fsm vm pg_wal pg_xact"
).split()]
WORDS = (WORDS * (256 // len(WORDS) + 1))[:256]


def text_block(n):
    out = bytearray()
    while len(out) < n:
        out += b" ".join(map(WORDS.__getitem__, os.urandom(32768)))
        out += b"\n"
    return bytes(out[:n])


def page_block(pages, lsn):
    """PostgreSQL-like heap pages: a header, line pointers, tuples of ids,
    random uuids, text and timestamps; compresses about 2-3x."""
    out = bytearray()
    text = text_block(pages * 4096)
    rnd = os.urandom(pages * 1024)
    t = r = 0
    for p in range(pages):
        page = bytearray(struct.pack("<QHHHHHH", lsn + p, 0, 0, 24 + 4 * 60, 8192 - 60 * 120, 8192, 0x2004))
        page += b"".join(struct.pack("<HH", 8192 - (i + 1) * 120, 120) for i in range(60))
        body = bytearray()
        for i in range(60):
            body += struct.pack("<QQ", lsn * 64 + p * 60 + i, 1700000000 + p)
            body += rnd[r:r + 16]
            body += text[t:t + 80]
            r = (r + 16) % (len(rnd) - 16)
            t = (t + 80) % (len(text) - 80)
        page += bytes(8192 - len(page) - len(body)) + body
        out += page[:8192]
    return bytes(out)


def make_dataset(path, gib):
    marker = os.path.join(path, ".complete")
    if os.path.exists(marker) and open(marker).read() == str(gib):
        return
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    total = int(gib * (1 << 30))
    text_total, pages_total = int(total * 0.375), int(total * 0.375)
    rand_total = total - text_total - pages_total
    t0 = time.time()
    # Text: a few large logs and many small documents.
    os.makedirs(os.path.join(path, "text/docs"))
    small = min(2000, text_total // 4 // 16384)
    for i in range(small):
        with open(os.path.join(path, f"text/docs/doc{i:05}.txt"), "wb") as f:
            f.write(text_block(1024 + (i * 7919) % 30000))
    left = text_total - small * 16384
    i = 0
    while left > 0:
        n = min(left, 48 << 20)
        with open(os.path.join(path, f"text/log{i:03}.log"), "wb") as f:
            for off in range(0, n, 1 << 20):
                f.write(text_block(min(1 << 20, n - off)))
        left -= n
        i += 1
    # Database-like: 1 GiB segments, like PostgreSQL relation files.
    os.makedirs(os.path.join(path, "db/base/16384"))
    left, seg, lsn = pages_total, 0, 1
    while left > 0:
        n = min(left, 1 << 30)
        with open(os.path.join(path, f"db/base/16384/24576{'.' + str(seg) if seg else ''}"), "wb") as f:
            for off in range(0, n, 4 << 20):
                pages = min(4 << 20, n - off) // 8192
                f.write(page_block(pages, lsn))
                lsn += pages
        left -= n
        seg += 1
    # Random: already-compressed media and encrypted blobs.
    os.makedirs(os.path.join(path, "random"))
    left, i = rand_total, 0
    while left > 0:
        n = min(left, 64 << 20)
        with open(os.path.join(path, f"random/blob{i:03}.bin"), "wb") as f:
            f.write(os.urandom(n))
        left -= n
        i += 1
    open(marker, "w").write(str(gib))
    print(f"dataset: {du(path) / (1 << 30):.2f} GiB in {time.time() - t0:.0f} s", flush=True)


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(d, f)).st_size
    return total


def run(cmd, env=None, shell=False):
    """Runs a command; returns (seconds, peak RSS in MiB, stdout).

    Peak RSS comes from GNU time (%M), not from this process's wait4: on Linux
    a child's ru_maxrss includes the RSS of the Python process it was forked
    from, which would put a floor under every tool's figure."""
    rss_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-rss-{os.getpid()}")
    if shell:
        wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss_file, "sh", "-c", cmd]
    else:
        wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd
    t0 = time.perf_counter()
    p = subprocess.run(wrapped, env=env, capture_output=True)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {cmd}\n{p.stderr.decode(errors='replace')[-3000:]}")
    try:
        rss_kib = int(open(rss_file).read().split()[-1])
    except (OSError, ValueError, IndexError):
        rss_kib = 0
    return secs, rss_kib / 1024.0, p.stdout


def warm(path):
    for d, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                while fh.read(1 << 22):
                    pass


def bench_round(work, data, order, results):
    env = dict(os.environ)
    for tool in order:
        repo = os.path.join(work, f"repo-{tool}")
        target = os.path.join(work, f"restore-{tool}")
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        r = results.setdefault(tool, {})
        if tool == "lifeboat":
            e = dict(env, LIFEBOAT_REPO=repo, LIFEBOAT_KEY="0123456789abcdef0123456789abcdef")
            run([LIFEBOAT, "repo", "init"], env=e)
            s, m, out = run([LIFEBOAT, "--json", "files", "backup", data], env=e)
            r.setdefault("first", []).append(s); r.setdefault("first_mem", []).append(m)
            r.setdefault("stored", []).append(json.loads(out)["stats"]["bytes_stored"])
            s, m, _ = run([LIFEBOAT, "--json", "files", "backup", data], env=e)
            r.setdefault("second", []).append(s); r.setdefault("second_mem", []).append(m)
            s, m, _ = run([LIFEBOAT, "--quiet", "files", "restore", "latest", "--target", target], env=e)
            r.setdefault("restore", []).append(s); r.setdefault("restore_mem", []).append(m)
        elif tool == "restic":
            e = dict(env, RESTIC_REPOSITORY=repo, RESTIC_PASSWORD="benchmark", RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"))
            run(["restic", "init", "--repository-version", "2"], env=e)
            s, m, _ = run(["restic", "backup", "--quiet", data], env=e)
            r.setdefault("first", []).append(s); r.setdefault("first_mem", []).append(m)
            r.setdefault("stored", []).append(du(repo))
            s, m, _ = run(["restic", "backup", "--quiet", data], env=e)
            r.setdefault("second", []).append(s); r.setdefault("second_mem", []).append(m)
            # lifeboat's restore is synced when it returns; restic's is timed
            # with a sync after it, so both are durable.
            s, m, _ = run(f"restic restore latest --target {target} && sync", env=e, shell=True)
            r.setdefault("restore", []).append(s); r.setdefault("restore_mem", []).append(m)
        elif tool == "borg":
            e = dict(env, BORG_PASSPHRASE="benchmark", BORG_BASE_DIR=os.path.join(work, "borg-base"))
            run(["borg", "init", "--encryption", "repokey-blake2", repo], env=e)
            s, m, _ = run(["borg", "create", "--compression", "zstd,3", f"{repo}::a", data], env=e)
            r.setdefault("first", []).append(s); r.setdefault("first_mem", []).append(m)
            r.setdefault("stored", []).append(du(repo))
            s, m, _ = run(["borg", "create", "--compression", "zstd,3", f"{repo}::b", data], env=e)
            r.setdefault("second", []).append(s); r.setdefault("second_mem", []).append(m)
        elif tool == "limit":
            s, _, _ = run(f"find {data} -type f -print0 | xargs -0 -P2 -n 50 zstd -1 -q -c > /dev/null", shell=True)
            r.setdefault("first", []).append(s)
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        print(f"  {tool}: " + ", ".join(f"{k}={v[-1]:.2f}" for k, v in r.items() if not k.endswith("stored")), flush=True)


def med(results, tool, key):
    v = results.get(tool, {}).get(key)
    return statistics.median(v) if v else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-work"))
    ap.add_argument("--tools", default="lifeboat,restic,borg,limit")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    data = os.path.join(a.work, "data")
    os.makedirs(a.work, exist_ok=True)
    make_dataset(data, a.size_gib)
    size = du(data)
    warm(data)
    tools = a.tools.split(",")
    results = {}
    for i in range(a.rounds):
        order = tools if i % 2 == 0 else list(reversed(tools))
        print(f"round {i + 1}/{a.rounds}: {' '.join(order)}", flush=True)
        bench_round(a.work, data, order, results)

    gib = size / (1 << 30)
    rows = []
    def row(label, tool, key, mem_key=None, stored=False):
        t = med(results, tool, key)
        if t is None:
            return
        m = med(results, tool, mem_key) if mem_key else None
        st = med(results, tool, "stored") if stored else None
        rows.append((label, t, gib / t * 1024, m, st))
    for tool in ("lifeboat", "restic", "borg"):
        row(f"{tool} first backup", tool, "first", "first_mem", stored=True)
        row(f"{tool} unchanged second backup", tool, "second", "second_mem")
        row(f"{tool} restore" + (" + sync" if tool == "restic" else ""), tool, "restore", "restore_mem")
    row("limit (xargs -P2 zstd -1)", "limit", "first")

    lb_first, rs_first = med(results, "lifeboat", "first"), med(results, "restic", "first")
    lb_second, lb_restore = med(results, "lifeboat", "second"), med(results, "lifeboat", "restore")
    rs_restore, limit = med(results, "restic", "restore"), med(results, "limit", "first")
    lb_mem = max(med(results, "lifeboat", k) or 0 for k in ("first_mem", "second_mem", "restore_mem"))
    rs_mem = max(med(results, "restic", k) or 0 for k in ("first_mem", "second_mem", "restore_mem"))
    goals = []
    def goal(name, value, target, ok):
        goals.append((name, value, target, "met" if ok else "NOT met"))
    if lb_first and rs_first:
        goal("first backup throughput vs restic", f"{rs_first / lb_first:.1f}x", ">= 4x", rs_first / lb_first >= 4)
    if lb_first and limit:
        goal("first backup time vs the limit", f"{lb_first / limit:.2f}x", "<= 1.3x", lb_first / limit <= 1.3)
    if lb_first and lb_second:
        goal("unchanged second backup vs first", f"{lb_first / lb_second:.1f}x faster", ">= 10x", lb_first / lb_second >= 10)
    if lb_restore and rs_restore:
        goal("restore throughput vs restic", f"{rs_restore / lb_restore:.1f}x", ">= 3x", rs_restore / lb_restore >= 3)
    if lb_mem and rs_mem:
        goal("peak memory vs restic", f"{lb_mem:.0f} MiB vs {rs_mem:.0f} MiB", "<=", lb_mem <= rs_mem)

    cmd = "scripts/bench.sh " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{cmd.strip()}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} cores, "
        f"{platform.machine()}, data in page cache, repositories on local disk  ",
        f"Dataset: {gib:.2f} GiB (37.5 % text-like, 37.5 % database pages, 25 % random), "
        f"{a.rounds} rounds alternating the tools, medians.  ",
        "Tools: " + ", ".join(version_of(t) for t in tools) + "  ",
        "",
        "| run | time (s) | throughput (MiB/s) | peak RSS (MiB) | stored (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, t, thr, m, st in rows:
        lines.append(f"| {label} | {t:.2f} | {thr:.0f} | {'' if m is None else f'{m:.0f}'} | "
                     f"{'' if st is None else f'{st / (1 << 20):.0f}'} |")
    lines += ["", "| goal | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {n} | {v} | {t} | {ok} |" for n, v, t, ok in goals]
    report = "\n".join(lines)
    print("\n" + report)
    if a.write_docs:
        write_docs(report)


def version_of(tool):
    try:
        if tool == "lifeboat":
            return subprocess.run([LIFEBOAT, "--version"], capture_output=True, text=True).stdout.strip()
        if tool == "restic":
            return " ".join(subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.split()[:2])
        if tool == "borg":
            return subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout.strip()
        if tool == "limit":
            words = subprocess.run(["zstd", "-V"], capture_output=True, text=True).stdout.split()
            return "zstd " + next((w.rstrip(",") for w in words if w.startswith("v")), "?")
    except (OSError, IndexError):
        pass
    return tool


def write_docs_block(block_text, begin, end, section):
    """Writes `block_text` between the markers `begin` and `end` of
    docs/benchmarks.md, or appends `section` (heading and prose) and the
    block when the markers are not there yet. The prose around a block is
    never rewritten."""
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = f"{begin}\n{block_text}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section.strip() + "\n\n" + block + "\n"
    open(path, "w").write(text)
    print(f"wrote {path}")


def write_docs(report):
    write_docs_block(report, "<!-- files-benchmark:begin -->", "<!-- files-benchmark:end -->",
                     "## Files: lifeboat vs restic vs borg")

if __name__ == "__main__":
    main()
