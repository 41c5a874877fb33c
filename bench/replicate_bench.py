#!/usr/bin/env python3
"""Replication side by side (issue #17): two Garage servers on loopback as
two regions; the same data backed up to the first by lifeboat and by
restic; then, alternating the tools each round (A B C, B C A, ...):

- `lifeboat replicate` of lifeboat's repository to the second server
  (every object checked against its name or keys before it is stored);
- `rclone sync` of the same repository prefix to the second server (the
  bytes copied as they are, rclone checking sizes and MD5 ETags);
- `restic copy` of restic's repository to a restic repository on the second
  server (decrypts and encrypts every blob again).

Each round starts from an empty destination. Throughput is the size of the
copied repository over the time. After each lifeboat round the replica is
verified (`verify`, structure) with its own figure, not counted in the time.

Run through `scripts/bench.sh replicate` (release build, restic and rclone
from Debian, Garage from scripts/install-garage.sh). --write-docs puts the
table and the exact command in docs/benchmarks.md.
"""
import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import LIFEBOAT, ROOT, run, version_of, write_docs_block  # noqa: E402

PASSWORD = "benchmark password, not a secret"
GARAGE = os.path.expanduser("~/.cache/lifeboat/garage-2.5.0/bin/garage")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Garage:
    """A single-node Garage with one bucket and one key, as testkit starts it."""

    def __init__(self, work, name, key=None):
        self.dir = os.path.join(work, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.s3_port, rpc, admin = free_port(), free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.bucket = f"bench-{name}"
        # restic copy reads both repositories with the same AWS_* keys: the
        # second server is given the first one's key.
        self.key_id, self.secret = key or ("GK" + os.urandom(12).hex(), os.urandom(32).hex())
        self.config = os.path.join(self.dir, "garage.toml")
        with open(self.config, "w") as f:
            f.write(f"""metadata_dir = "{self.dir}/meta"
data_dir = "{self.dir}/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{os.urandom(32).hex()}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{self.s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{os.urandom(16).hex()}"
""")
        log = open(os.path.join(self.dir, "garage.log"), "ab")
        self.proc = subprocess.Popen([GARAGE, "-c", self.config, "server"], stdout=log, stderr=log,
                                     env=dict(os.environ, RUST_LOG="garage=warn"))
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.s3_port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("garage did not start")
                time.sleep(0.05)
        node = self.cli("node", "id", "-q").split("@")[0].strip()
        self.cli("layout", "assign", "-z", "dc1", "-c", "100G", node)
        self.cli("layout", "apply", "--version", "1")
        self.cli("key", "import", "--yes", "-n", "bench", self.key_id, self.secret)
        self.cli("bucket", "create", self.bucket)
        self.cli("bucket", "allow", "--read", "--write", "--owner", self.bucket, "--key", self.key_id)
        time.sleep(1)

    def cli(self, *args):
        deadline = time.time() + 30
        while True:
            p = subprocess.run([GARAGE, "-c", self.config, *args], capture_output=True, text=True)
            if p.returncode == 0:
                return p.stdout
            if time.time() > deadline:
                raise RuntimeError(f"garage {args}: {p.stderr}")
            time.sleep(0.2)

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    def rclone_env(self, remote):
        r = remote.upper()
        return {
            f"RCLONE_CONFIG_{r}_TYPE": "s3",
            f"RCLONE_CONFIG_{r}_PROVIDER": "Other",
            f"RCLONE_CONFIG_{r}_ENDPOINT": self.endpoint,
            f"RCLONE_CONFIG_{r}_REGION": "garage",
            f"RCLONE_CONFIG_{r}_ACCESS_KEY_ID": self.key_id,
            f"RCLONE_CONFIG_{r}_SECRET_ACCESS_KEY": self.secret,
            f"RCLONE_CONFIG_{r}_FORCE_PATH_STYLE": "true",
        }


def s3_toml(g):
    return (f'endpoint = "{g.endpoint}"\nregion = "garage"\n'
            f'access_key_id = "{g.key_id}"\nsecret_access_key = "{g.secret}"\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-work", "replicate"))
    ap.add_argument("--size-mib", type=int, default=1024, help="data backed up (files of 4 MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=16,
                    help="copies in flight, both: lifeboat --parallel (its default), rclone --transfers")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    data = os.path.join(a.work, "data")
    os.makedirs(data)
    rng = random.Random(17)
    # Half random, half text-like: compresses about 1.5x, as real backups do.
    for i in range(a.size_mib // 4):
        with open(os.path.join(data, f"f{i:05}"), "wb") as f:
            if i % 2:
                f.write(rng.randbytes(4 << 20))
            else:
                words = [rng.choice([b"alpha", b"beta", b"gamma", b"delta", b"region", b"replica"])
                         for _ in range(900_000)]
                f.write(b" ".join(words)[: 4 << 20])

    src = Garage(a.work, "primary")
    dst = Garage(a.work, "dr", key=(src.key_id, src.secret))
    try:
        cfg = os.path.join(a.work, "lifeboat.toml")
        with open(cfg, "w") as f:
            f.write(f'repo = "s3://{src.bucket}/lifeboat"\n\n[s3]\n{s3_toml(src)}\n'
                    f'[[replica]]\nname = "dr"\nrepo = "s3://{dst.bucket}/lifeboat"\ndelete_delay = "0s"\n'
                    f'[replica.s3]\n{s3_toml(dst)}')
        base = dict(os.environ)
        # rclone's AWS SDK refuses a custom CA bundle with its own HTTP
        # transport; nothing here speaks TLS (loopback, plain HTTP).
        base.pop("AWS_CA_BUNDLE", None)
        lenv = dict(base, LIFEBOAT_CONFIG=cfg, LIFEBOAT_PASSWORD=PASSWORD)
        renv = dict(base, RESTIC_PASSWORD=PASSWORD, RESTIC_FROM_PASSWORD=PASSWORD,
                    AWS_ACCESS_KEY_ID=src.key_id, AWS_SECRET_ACCESS_KEY=src.secret, AWS_DEFAULT_REGION="garage")
        renv.update(src.rclone_env("a"))
        renv.update(dst.rclone_env("b"))
        lenv.update(renv)
        restic_src = f"s3:{src.endpoint}/{src.bucket}/restic"
        restic_dst = f"s3:{dst.endpoint}/{dst.bucket}/restic"

        print("backing up the data to the first server with lifeboat and restic ...", flush=True)
        run([LIFEBOAT, "repo", "init", "--kdf-memory", "8MiB"], env=lenv)
        run([LIFEBOAT, "--quiet", "files", "backup", data], env=lenv)
        run(["restic", "-r", restic_src, "init", "--repository-version", "2"], env=renv)
        run(["restic", "-r", restic_src, "backup", "--quiet", data], env=renv)
        sizes = {}
        for name, prefix in (("lifeboat", "lifeboat"), ("restic", "restic")):
            out = subprocess.run(["rclone", "size", "--json", f"a:{src.bucket}/{prefix}"], env=renv,
                                 capture_output=True, text=True, check=True).stdout
            sizes[name] = json.loads(out)["bytes"]

        def purge(prefix):
            subprocess.run(["rclone", "purge", f"b:{dst.bucket}/{prefix}"], env=renv, capture_output=True)

        def lifeboat_round():
            purge("lifeboat")
            secs, rss, _ = run([LIFEBOAT, "--quiet", "replicate", "--parallel", str(a.parallel)], env=lenv)
            v0 = time.perf_counter()
            venv = dict(lenv, LIFEBOAT_REPO=f"s3://{dst.bucket}/lifeboat",
                        LIFEBOAT_S3_ENDPOINT=dst.endpoint, AWS_ACCESS_KEY_ID=dst.key_id,
                        AWS_SECRET_ACCESS_KEY=dst.secret, AWS_REGION="garage")
            venv.pop("LIFEBOAT_CONFIG")
            p = subprocess.run([LIFEBOAT, "--quiet", "verify"], env=venv, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"the replica does not verify: {p.stdout}{p.stderr}")
            verified.append(time.perf_counter() - v0)
            return secs, rss, sizes["lifeboat"]

        def rclone_round():
            purge("rclone")
            secs, rss, _ = run(["rclone", "sync", f"a:{src.bucket}/lifeboat", f"b:{dst.bucket}/rclone",
                                "--transfers", str(a.parallel), "--checkers", str(a.parallel)], env=renv)
            return secs, rss, sizes["lifeboat"]

        def restic_round():
            purge("restic")
            run(["restic", "-r", restic_dst, "init", "--repository-version", "2",
                 "--from-repo", restic_src, "--copy-chunker-params"], env=renv)
            secs, rss, _ = run(["restic", "-r", restic_dst, "copy", "--from-repo", restic_src, "--quiet"],
                               env=renv)
            return secs, rss, sizes["restic"]

        # Warm-up, not timed: the first writes into a fresh Garage bucket
        # cost more than later ones, whichever tool makes them.
        subprocess.run(["rclone", "copy", f"a:{src.bucket}/lifeboat", f"b:{dst.bucket}/warmup",
                        "--transfers", str(a.parallel)], env=renv, capture_output=True)
        purge("warmup")

        tools = [("lifeboat replicate", lifeboat_round), ("rclone sync", rclone_round),
                 ("restic copy", restic_round)]
        results = {name: [] for name, _ in tools}
        verified = []
        for r in range(a.rounds):
            order = tools[r % len(tools):] + tools[:r % len(tools)]
            for name, fn in order:
                secs, rss, size = fn()
                results[name].append((secs, rss, size))
                print(f"round {r + 1}: {name}: {secs:.2f} s, {size / secs / 2**20:.1f} MiB/s, {rss:.0f} MiB RSS",
                      flush=True)
    finally:
        src.stop()
        dst.stop()

    base = statistics.median(s for s, _, _ in results["lifeboat replicate"])
    rows = []
    for name, runs in results.items():
        t = statistics.median(s for s, _, _ in runs)
        size = runs[0][2]
        rss = max(m for _, m, _ in runs)
        rows.append(f"| {name} | {size / 2**20:.0f} MiB | {t:.2f} s | {size / t / 2**20:.1f} MiB/s | "
                    f"{t / base:.2f}x | {rss:.0f} MiB |")
    cmd = (f"scripts/bench.sh replicate --size-mib {a.size_mib} --rounds {a.rounds} --parallel {a.parallel}"
           + (" --write-docs" if a.write_docs else ""))
    report = "\n".join([
        f"Command: `{cmd}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{version_of('lifeboat')}, {version_of('restic')}, "
        f"{subprocess.run(['rclone', 'version'], capture_output=True, text=True).stdout.split(chr(10))[0]}; "
        f"medians of {a.rounds} rounds, tools alternating; {a.parallel} copies in flight for each: "
        f"lifeboat --parallel {a.parallel}, rclone --transfers {a.parallel} --checkers {a.parallel}).",
        "",
        "| tool | repository copied | time | throughput | time vs lifeboat | peak RSS |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"The replica verified after every lifeboat round (`verify`, median {statistics.median(verified):.2f} s, "
        "not counted above).",
    ])
    print(report)
    if a.write_docs:
        write_docs_block(report, "<!-- replicate-benchmark:begin -->", "<!-- replicate-benchmark:end -->",
                         "## Replication: lifeboat replicate vs rclone sync vs restic copy")


if __name__ == "__main__":
    main()
