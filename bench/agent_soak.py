#!/usr/bin/env python3
"""Soak benchmark of `lifeboat agent` (issue #15): its memory and file
descriptors over a long run of fast schedules.

A small PostgreSQL cluster (archiving into the repository, with a writer
changing rows every second) and a Redis server are backed up by the agent on
schedules of a few seconds — pg incremental every 10 s, full every 2 min,
dump every 45 s, Redis every 10 s, forget + prune every 5 min, verify every
5 min — for --minutes (default 30). The agent's RSS (VmRSS) and open file
descriptors are sampled every --sample seconds; the goal: RSS growth under
5 % after the first 5 minutes, no descriptor growth.

    scripts/bench.sh soak [--minutes 30] [--write-docs]

A heap profile of the agent over the same run: build with the `dhat-heap`
feature (`cargo build --release -p lifeboat --features dhat-heap`), then run
this script directly (scripts/bench.sh rebuilds without it); the agent
writes $TMPDIR/lifeboat-dhat-heap-<pid>.json when it stops (dhat-rs's
format: the live bytes per allocation site at the heap's peak and at the
end). heaptrack does not work here: the job children inherit its preload
and end the trace.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_bench  # noqa: E402
from pg_bench import Cluster, give, run, as_owner  # noqa: E402
from dump_bench import Redis, load_redis  # noqa: E402
from bench import LIFEBOAT, ROOT, write_docs_block  # noqa: E402


def proc_status(pid):
    """(RSS, private anonymous RSS, file-backed RSS) in MiB and open descriptors."""
    kb = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                kb[key] = int(line.split()[1])
    except OSError:
        return None, None
    # Its own descriptors: the pipes and pidfds of the children running at
    # that moment come and go with them, and are left out.
    try:
        fds = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if not (target.startswith("pipe:") or target == "anon_inode:[pidfd]"):
                fds += 1
    except OSError:
        fds = None
    mib = {k: v / 1024.0 for k, v in kb.items()}
    return mib, fds


def find_process(cmd, wait=30.0):
    """The pid of the process running exactly `cmd` (waits for it to start)."""
    want = ("\0".join(cmd) + "\0").encode()
    deadline = time.time() + wait
    while time.time() < deadline:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if f.read() == want:
                        return int(name)
            except OSError:
                continue
        time.sleep(0.2)
    raise pg_bench.BenchError(f"no process runs {' '.join(cmd)}")


def sample(minute, mem, fds):
    return {"minute": round(minute, 2), "rss_mib": round(mem.get("VmRSS", 0), 2),
            "anon_mib": round(mem.get("RssAnon", 0), 2), "file_mib": round(mem.get("RssFile", 0), 2),
            "fds": fds}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--sample", type=float, default=60.0, help="seconds between samples (default 60)")
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-work-soak"))
    ap.add_argument("--bindir", default=None)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--wrap", default="", help="a profiler to run the agent under, e.g. 'heaptrack -o FILE' "
                    "(the samples are then of the profiled agent; not for --write-docs)")
    a = ap.parse_args()
    if a.wrap and a.write_docs:
        ap.error("--wrap measures a profiled agent: its figures do not go into the docs")

    work = a.work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chmod(work, 0o755)
    give(work)
    bindir = pg_bench.find_bindir(a.bindir)
    cl = Cluster(work, bindir)
    redis = Redis(work)
    key = os.path.join(work, "key")
    repo = os.path.join(work, "repo")
    with open(key, "w") as f:
        f.write("lifeboat-soak-key-material-0123456789abcdef\n")
    os.chmod(key, 0o600)
    give(key)
    env = cl.env
    run([LIFEBOAT, "--repo", repo, "--key-file", key, "--quiet", "repo", "init"], env)
    cl.initdb()
    cl.start(f"{LIFEBOAT} --repo {repo} --key-file {key} --quiet pg wal-push %p")
    cl.psql("create table t (id int primary key, v text); "
            "insert into t select g, md5(g::text) from generate_series(1, 200000) g")
    load_redis(redis, 20 << 20)
    cfg = os.path.join(work, "lifeboat.toml")
    with open(cfg, "w") as f:
        f.write(f"""repo = "{repo}"
key_file = "{key}"

[postgres.main]
pgdata = "{cl.pgdata}"
pg_url = "{cl.conninfo()}"
schedule.full = "@every 2m"
schedule.incr = "@every 10s"
schedule.dump = "@every 45s"

[redis.cache]
redis_url = "{redis.url()}"
schedule.backup = "@every 10s"

[repository]
schedule.forget = "@every 5m"
schedule.verify = "@every 5m"
verify_read_data_subset = "1/5"

[retention.postgres]
keep_last = 5
[retention.pg_dump]
keep_last = 5
[retention.redis]
keep_last = 5

[agent]
listen = "127.0.0.1:{pg_bench.free_port()}"
refresh = "5s"
""")
    give(cfg)
    stop_writer = threading.Event()

    def writer():
        i = 0
        while not stop_writer.is_set():
            i += 1
            try:
                cl.psql(f"update t set v = md5(random()::text) where id % 1000 = {i % 1000}")
            except pg_bench.BenchError:
                pass
            stop_writer.wait(1.0)

    wt = threading.Thread(target=writer, daemon=True)
    wt.start()
    log = open(os.path.join(work, "agent.log"), "w")
    agent_cmd = [LIFEBOAT, "--config", cfg, "agent"]
    agent = subprocess.Popen(as_owner(a.wrap.split() + agent_cmd), env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    # The agent runs under setpriv: its own pid is the child's (setpriv
    # execs). Under a profiler it is a descendant: found by its command line.
    pid = agent.pid if not a.wrap else find_process(agent_cmd)
    samples = []
    t0 = time.time()
    end = t0 + a.minutes * 60
    try:
        while time.time() < end:
            mem, fds = proc_status(pid)
            if mem is None:
                raise pg_bench.BenchError(f"the agent exited: see {log.name}")
            minute = (time.time() - t0) / 60
            samples.append(sample(minute, mem, fds))
            print(f"  {minute:5.1f} min: RSS {mem.get('VmRSS', 0):6.1f} MiB "
                  f"(anonymous {mem.get('RssAnon', 0):5.1f}, file {mem.get('RssFile', 0):5.1f}), {fds} fds",
                  flush=True)
            time.sleep(min(a.sample, max(0.0, end - time.time())) or 0.01)
        mem, fds = proc_status(pid)
        samples.append(sample((time.time() - t0) / 60, mem, fds))
    finally:
        os.kill(pid, signal.SIGTERM)
        try:
            agent.wait(timeout=600)
        except subprocess.TimeoutExpired:
            agent.kill()
        stop_writer.set()
        wt.join(timeout=10)
        cl.stop()
        redis.stop()
        log.close()
    jobs = json.loads(subprocess.run(as_owner([LIFEBOAT, "--config", cfg, "--json", "jobs", "--last", "0"]),
                                     env=env, capture_output=True, check=True).stdout)
    outcomes = {}
    for j in jobs:
        outcomes[j["outcome"]] = outcomes.get(j["outcome"], 0) + 1
    after5 = [s for s in samples if s["minute"] >= 5.0]
    base = after5[0] if after5 else samples[0]
    last = samples[-1]
    growth = (last["rss_mib"] - base["rss_mib"]) / base["rss_mib"] * 100.0
    anon_growth = (last["anon_mib"] - base["anon_mib"]) / max(base["anon_mib"], 0.01) * 100.0
    fd_growth = (last["fds"] or 0) - (base["fds"] or 0)
    peak = max(s["rss_mib"] for s in samples)
    json.dump({"samples": samples, "outcomes": outcomes}, open(os.path.join(work, "soak.json"), "w"), indent=1)
    rows = "\n".join(f"| {s['minute']:.0f} | {s['rss_mib']:.1f} | {s['anon_mib']:.2f} | {s['file_mib']:.1f} | {s['fds']} |"
                     for s in samples)
    report = f"""Command: `scripts/bench.sh soak --minutes {a.minutes:g} --write-docs`  
Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} cores; PostgreSQL {pg_bench.pg_version(bindir)} (200 000 rows, a writer updating 200 rows a second), redis-server with 20 MiB of sessions  
Schedules: pg incr every 10 s, full every 2 min, dump every 45 s; Redis every 10 s; forget + prune and verify (1/5 of the packs) every 5 min. Runs: {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}  

| goal | measured | target | |
|---|---|---|---|
| agent RSS growth after the first 5 min | {growth:+.1f} % ({base['rss_mib']:.1f} → {last['rss_mib']:.1f} MiB; peak {peak:.1f}) | < 5 % | {'met' if growth < 5 else 'NOT met'} |
| its private memory (RssAnon: heap, stacks) after the first 5 min | {anon_growth:+.1f} % ({base['anon_mib']:.2f} → {last['anon_mib']:.2f} MiB) | (flat) | |
| its file-backed RSS (the binary's code pages it has run) | {base['file_mib']:.1f} → {last['file_mib']:.1f} MiB | | |
| open file descriptors (without running children's pipes), first 5 min → end | {base['fds']} → {last['fds']} | no growth | {'met' if fd_growth <= 0 else 'NOT met'} |

<details><summary>samples</summary>

| minute | RSS (MiB) | anonymous (MiB) | file-backed (MiB) | fds |
|---:|---:|---:|---:|---:|
{rows}

</details>"""
    print()
    print(report)
    if a.write_docs:
        write_docs_block(report, "<!-- agent-soak:begin -->", "<!-- agent-soak:end -->",
                         "## Agent soak: memory and descriptors over a long run (issue #15)\n\n"
                         "`bench/agent_soak.py`. Each job runs as a child process, so what stays is the "
                         "agent's own state: what it keeps of the job history (bounded: aggregates, the "
                         "newest 100 records, 240 chart points per source, the keys read in the last "
                         "36 h), the schedule and the listener. RSS counts the binary's code pages too, "
                         "shared with the page cache: they grow as code paths run for the first time, "
                         "up to the code the agent runs; the private (anonymous) memory is what a leak "
                         "would show in.")


if __name__ == "__main__":
    main()
