#!/usr/bin/env python3
"""Side-by-side PostgreSQL benchmark: lifeboat vs pgBackRest vs pg_basebackup vs the limit.

Starts a throwaway PostgreSQL 15 cluster (data checksums, archive_mode = on,
Unix socket only), fills it with identity-platform-like data generated in SQL
(`users` and `audit_events`, see ../shared/BENCHMARKS.md), then per round, on
fresh repositories and alternating the tools' order between rounds:

1. full backup with each tool (lifeboat, pgBackRest, pg_basebackup) and the
   limit (every file of the data directory compressed once with zstd -1 on
   both cores), with the stored growth of each repository;
2. the "1 % change": 1 % of users updated at random, 1 % more audit events,
   CHECKPOINT;
3. incremental backup (lifeboat, pgBackRest) and its stored growth;
4. restore of the latest (incremental) backup into a fresh directory (files
   only; the server is not started).

Then times `wal-push` / `archive-push` of one real 16 MiB segment, many runs,
process start included. Medians over rounds; peak RSS from GNU time (%M).
Writes the table and the exact command to docs/benchmarks.md with --write-docs.

Run through `scripts/bench.sh pg …`, which installs the peers from Debian's
packages when missing and builds lifeboat in release mode.
"""
import argparse
import glob
import json
import os
import platform
import pwd
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

sys.dont_write_bytecode = True  # no bench/__pycache__ in the working tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import LIFEBOAT, ROOT, du, warm, write_docs_block  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20
STANZA = "bench"
IS_ROOT = os.geteuid() == 0
PG_USER = "postgres"
DOCS_BEGIN, DOCS_END = "<!-- pg-benchmark:begin -->", "<!-- pg-benchmark:end -->"
TOOLS = ("lifeboat", "pgbackrest", "pg_basebackup", "limit")
# Rows per generation batch: one batch is one transaction on one core.
BATCH_USERS = 20000
EVENTS_PER_USER = 4


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Running commands

def pg_env(work):
    """The environment of every command run as the cluster's owner: no
    PG*, LIFEBOAT_* or PGBACKREST_* settings leak in from the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "LIFEBOAT_", "PGBACKREST_"))}
    env.update(HOME=work, LANG="C.UTF-8", LC_ALL="C.UTF-8", TZ="UTC")
    return env


def as_owner(cmd):
    """Prefix that runs a command as the postgres OS user when we are root."""
    if IS_ROOT:
        return ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups"] + cmd
    return cmd


def failure(cmd, rc, out, err):
    text = cmd if isinstance(cmd, str) else shlex.join(cmd)
    msg = f"command failed (exit {rc}): {text}"
    if err and err.strip():
        msg += "\n--- stderr\n" + err.decode(errors="replace")[-4000:]
    if out and out.strip():
        msg += "\n--- stdout\n" + out.decode(errors="replace")[-2000:]
    return BenchError(msg)


def run(cmd, env, cwd=None, owner=True, timeout=3600):
    """Runs a command (a list, or a shell string); returns (seconds, peak RSS
    in MiB, stdout). Raises BenchError with its stderr when it fails.

    Peak RSS comes from GNU time (%M) as in bench.py: ru_maxrss of the
    command's largest process (for pgBackRest with process-max=2, the largest
    of its processes, not their sum)."""
    rss_file = os.path.join(tempfile.gettempdir(), f"pg-bench-rss-{os.getpid()}")
    inner = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    if owner:
        inner = as_owner(inner)
    wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + inner
    t0 = time.perf_counter()
    try:
        p = subprocess.run(wrapped, env=env, cwd=cwd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise failure(cmd, f"timeout after {timeout} s", e.stdout, e.stderr)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise failure(cmd, p.returncode, p.stdout, p.stderr)
    try:
        rss_kib = int(open(rss_file).read().split()[-1])
    except (OSError, ValueError, IndexError):
        rss_kib = 0
    return secs, rss_kib / 1024.0, p.stdout


def give(path):
    """Makes `path` (a directory tree) belong to the cluster's owner."""
    if IS_ROOT:
        pw = pwd.getpwnam(PG_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        for d, dirs, files in os.walk(path):
            for n in dirs + files:
                os.lchown(os.path.join(d, n), pw.pw_uid, pw.pw_gid)


def fresh_dir(path, mode=0o700):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.chmod(path, mode)
    give(path)


def du_except_wal(pgdata):
    return du(pgdata) - du(os.path.join(pgdata, "pg_wal"))


# ---------------------------------------------------------------------------
# The cluster

def find_bindir(explicit):
    """PostgreSQL's binaries: --pg-bindir, else `pg_config --bindir` when it
    is version 15, else /usr/lib/postgresql/15/bin, else the newest there."""
    cands = [explicit] if explicit else []
    if not explicit:
        try:
            cands.append(subprocess.run(["pg_config", "--bindir"], capture_output=True,
                                        text=True, check=True).stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
        cands.append("/usr/lib/postgresql/15/bin")
        cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                        reverse=True)
    for c in cands:
        if c and os.path.exists(os.path.join(c, "initdb")):
            if explicit or " 15." in pg_version(c) or c == cands[-1]:
                return c
    raise BenchError("no PostgreSQL server binaries found (initdb): install the postgresql package "
                     "or pass --pg-bindir")


def pg_version(bindir):
    try:
        return subprocess.run([os.path.join(bindir, "postgres"), "--version"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, work, bindir):
        self.work = work
        self.bindir = bindir
        self.pgdata = os.path.join(work, "pgdata")
        self.log = os.path.join(work, "server.log")
        self.env = pg_env(work)
        self.sock = None
        self.port = None
        self.running = False
        self.archive_failures = 0

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def conninfo(self):
        return f"host={self.sock} port={self.port} user=postgres dbname=postgres"

    def initdb(self):
        shutil.rmtree(self.pgdata, ignore_errors=True)
        run([self.bin("initdb"), "-D", self.pgdata, "-U", "postgres", "--auth=trust",
             "--data-checksums", "--encoding=UTF8", "--locale=C"], self.env)
        with open(os.path.join(self.pgdata, "postgresql.conf"), "a") as f:
            f.write(
                "\n# lifeboat benchmark\n"
                "listen_addresses = ''\n"
                "wal_level = replica\n"
                "archive_mode = on\n"
                "max_wal_senders = 4\n"
                "shared_buffers = 1GB\n"
                "maintenance_work_mem = 512MB\n"
                "max_wal_size = 4GB\n"
                "checkpoint_timeout = 30min\n"
                "autovacuum = off\n"
                "synchronous_commit = off\n"
                "include_if_exists = 'bench.conf'\n")

    def start(self, archive_command):
        """Starts the server on a free port with its socket in a fresh
        temporary directory; bench.conf (rewritten here) holds what changes
        from run to run."""
        self.sock = tempfile.mkdtemp(prefix="lifeboat-pg-bench-")
        os.chmod(self.sock, 0o700)
        give(self.sock)
        self.port = free_port()
        conf = os.path.join(self.pgdata, "bench.conf")
        with open(conf, "w") as f:
            f.write(f"port = {self.port}\n"
                    f"unix_socket_directories = '{self.sock}'\n"
                    f"archive_command = '{archive_command}'\n")
        give(conf)
        if not os.path.exists(self.log):
            open(self.log, "w").close()
        give(self.log)
        self.running = True
        try:
            run([self.bin("pg_ctl"), "-D", self.pgdata, "-l", self.log, "-w", "-t", "300", "start"],
                self.env, timeout=330)
        except BenchError as e:
            raise BenchError(f"{e}\n--- server log\n{self.log_tail()}")
        self.archive_failures = self.archiver()[0]

    def stop(self):
        if self.running:
            try:
                run([self.bin("pg_ctl"), "-D", self.pgdata, "-m", "fast", "-w", "-t", "120", "stop"],
                    self.env, timeout=150)
            except BenchError:
                try:
                    run([self.bin("pg_ctl"), "-D", self.pgdata, "-m", "immediate", "-w", "stop"],
                        self.env, timeout=60)
                except BenchError as e:
                    print(f"warning: could not stop PostgreSQL: {e}", file=sys.stderr)
            self.running = False
        if self.sock:
            shutil.rmtree(self.sock, ignore_errors=True)
            self.sock = None

    def psql(self, sql, db="postgres"):
        _, _, out = run([self.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", self.sock, "-p", str(self.port), "-U", "postgres", "-d", db,
                         "-c", sql], self.env)
        return out.decode().strip()

    def log_tail(self, n=40):
        try:
            return "".join(open(self.log, errors="replace").readlines()[-n:])
        except OSError:
            return ""

    def archiver(self):
        row = self.psql("select failed_count, coalesce(last_failed_wal, ''), "
                        "coalesce(last_archived_wal, '') from pg_stat_archiver")
        failed, last_failed, last = row.split("|")
        return int(failed), last_failed, last

    def wait_archived(self, timeout=180):
        """Waits until PostgreSQL has archived every finished WAL file; fails
        loudly (with the server log) when archive_command fails."""
        deadline = time.time() + timeout
        status = os.path.join(self.pgdata, "pg_wal", "archive_status")
        while True:
            ready = [f for f in os.listdir(status) if f.endswith(".ready")]
            failed, last_failed, _ = self.archiver()
            if failed > self.archive_failures:
                raise BenchError(f"archive_command failed for {last_failed} ({failed - self.archive_failures} "
                                 f"failures)\n--- server log\n{self.log_tail()}")
            if not ready:
                return
            if time.time() > deadline:
                raise BenchError(f"WAL not archived within {timeout} s: {sorted(ready)[:5]}\n"
                                 f"--- server log\n{self.log_tail()}")
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# The dataset (../shared/BENCHMARKS.md): generated in SQL

SCHEMA = """
create table users (
  id uuid primary key,
  email text not null unique,
  password_hash text not null,
  display_name text not null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  profile jsonb not null
);
create table audit_events (
  id uuid primary key,
  action text not null,
  ip inet not null,
  at timestamptz not null,
  details jsonb not null
);
create index audit_events_at on audit_events (at);
"""

FIRST = "array['Alice','Bruno','Chen','Dana','Emeka','Fatima','Greta','Hiro','Ines','Jonas','Kofi','Lena'," \
        "'Mateo','Nadia','Omar','Priya','Quinn','Rosa','Sven','Tariq','Uma','Viktor','Wen','Yara']"
LAST = "array['Smith','Garcia','Kim','Novak','Okafor','Rossi','Tanaka','Muller','Silva','Jensen','Ivanova'," \
       "'Haddad','Nguyen','Kowalski','Moreau','Singh','Larsen','Costa','Weber','Adeyemi']"
DOMAINS = "array['example.com','mail.example.org','corp.example.net','identity.test','users.example']"
ACTIONS = "array['login','logout','token.refresh','password.change','mfa.verify','session.create'," \
          "'role.grant','invite.accept','login.failed','api_key.rotate']"
AGENTS = "array['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'," \
         "'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0'," \
         "'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15'," \
         "'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36'," \
         "'Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1'," \
         "'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0'," \
         "'okhttp/4.12.0','curl/8.4.0']"
TENANTS = "array['acme','globex','initech','umbrella','hooli','stark','wayne','wonka','tyrell','cyberdyne'," \
          "'soylent','aperture','massive','oscorp','vandelay','dunder']"
RESOURCES = "array['/api/v1/sessions','/api/v1/tokens','/api/v1/users/me','/api/v1/users/me/password'," \
            "'/api/v1/mfa/challenge','/api/v1/roles','/api/v1/invitations','/oauth2/authorize','/oauth2/token'," \
            "'/api/v1/api-keys']"


def users_sql(lo, hi):
    """Users lo..hi: uuid, unique email, a 60-character bcrypt-like hash
    (hex from md5 of random()), a display name, timestamps, a small jsonb
    profile."""
    return f"""
insert into users
select gen_random_uuid(),
       lower(({FIRST})[1 + i % 24]) || '.' || lower(({LAST})[1 + (i / 24) % 20]) || i || '@' || ({DOMAINS})[1 + i % 5],
       '$2b$12$' || left(md5(random()::text) || md5(random()::text), 53),
       ({FIRST})[1 + i % 24] || ' ' || ({LAST})[1 + (i / 24) % 20],
       t, t + random() * interval '400 days',
       jsonb_build_object('locale', (array['en-US','de-DE','fr-FR','pt-BR','ja-JP'])[1 + i % 5],
                          'tz', (array['UTC','Europe/Berlin','America/New_York','Asia/Tokyo'])[1 + i % 4],
                          'theme', case when i % 3 = 0 then 'dark' else 'light' end,
                          'mfa', i % 4 = 0,
                          'plan', (array['free','pro','enterprise'])[1 + i % 3],
                          'tenant', ({TENANTS})[1 + i % 16],
                          'email_verified', i % 7 <> 0,
                          'avatar_url', 'https://cdn.example.com/avatars/default-' || (i % 8) || '.png',
                          'logins', (random() * 500)::int)
from (select i, timestamptz '2019-01-01' + i * interval '37 seconds' as t
      from generate_series({lo}, {hi}) i) s;
"""


def events_sql(lo, hi):
    """Audit events lo..hi: uuid, action, IPv4 address, timestamp, jsonb
    with a random session id."""
    return f"""
insert into audit_events
select gen_random_uuid(),
       ({ACTIONS})[1 + (random() * 9)::int],
       ('10.' || (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int)::inet,
       timestamptz '2023-01-01' + i * interval '3 seconds' + random() * interval '3 seconds',
       jsonb_build_object('session', md5(random()::text),
                          'user_agent', ({AGENTS})[1 + (random() * 7)::int],
                          'tenant', ({TENANTS})[1 + (random() * 15)::int],
                          'method', case when random() < 0.6 then 'POST' else 'GET' end,
                          'resource', ({RESOURCES})[1 + (random() * 9)::int],
                          'result', case when random() < 0.95 then 'success' else 'failure' end,
                          'status', case when random() < 0.95 then 200 else 401 end,
                          'mfa', random() < 0.3)
from generate_series({lo}, {hi}) i;
"""


def make_dataset(cl, size_bytes):
    """Loads batches on both cores until the database holds `size_bytes`,
    then freezes it (so later reads set no hint bits) and checkpoints."""
    t0 = time.time()
    cl.psql(SCHEMA)
    lock = threading.Lock()
    state = {"next": 0, "error": None}

    def worker():
        while True:
            with lock:
                if state["error"] or state["next"] < 0:
                    return
                k = state["next"]
                state["next"] += 1
            u0 = k * BATCH_USERS
            e0 = u0 * EVENTS_PER_USER
            try:
                cl.psql(users_sql(u0, u0 + BATCH_USERS - 1)
                        + events_sql(e0, e0 + BATCH_USERS * EVENTS_PER_USER - 1))
                size = int(cl.psql("select pg_database_size('postgres')"))
            except BenchError as e:
                with lock:
                    state["error"] = e
                return
            with lock:
                if size >= size_bytes:
                    state["next"] = -1
                elif k % 10 == 0:
                    print(f"  loaded {size / GIB:.2f} GiB", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if state["error"]:
        raise state["error"]
    print(f"  loaded in {time.time() - t0:.0f} s; vacuum (freeze, analyze)", flush=True)
    vac = [threading.Thread(target=cl.psql, args=(f"vacuum (freeze, analyze) {t}",))
           for t in ("users", "audit_events")]
    for t in vac:
        t.start()
    for t in vac:
        t.join()
    cl.psql("checkpoint")
    print(f"  dataset ready in {time.time() - t0:.0f} s", flush=True)


def one_percent_change(cl):
    """Updates 1 % of users at random, appends 1 % more audit events (after
    the newest one), checkpoints, and lets the archiver take the WAL it
    wrote, so no backup is charged for it."""
    n_events = int(float(cl.psql("select reltuples from pg_class where relname = 'audit_events'")))
    add = max(n_events // 100, 1)
    # events_sql numbers events in 3-second steps from 2023-01-01.
    lo = int(float(cl.psql("select extract(epoch from max(at) - timestamptz '2023-01-01') / 3 from audit_events"))) + 1
    t0 = time.time()
    cl.psql("update users set updated_at = now(), "
            "profile = profile || jsonb_build_object('logins', (profile->>'logins')::int + 1, "
            "'last_login', now()::text) where random() < 0.01;"
            + events_sql(lo, lo + add - 1)
            + "checkpoint; select pg_switch_wal();")
    cl.wait_archived()
    print(f"  1 % change: {add:,} audit events added, ~1 % of users updated, checkpoint "
          f"({time.time() - t0:.1f} s)", flush=True)


def dataset_facts(cl):
    users = int(float(cl.psql("select reltuples from pg_class where relname = 'users'")))
    events = int(float(cl.psql("select reltuples from pg_class where relname = 'audit_events'")))
    return users, events


def zstd_ratio(pgdata):
    """Size of the data directory (without pg_wal) over its size as one
    zstd -1 stream: a loose check of the dataset's compressibility."""
    p = subprocess.run(f"find {shlex.quote(pgdata)} -path {shlex.quote(os.path.join(pgdata, 'pg_wal'))} -prune "
                       f"-o -type f -print0 | xargs -0 cat | zstd -1 -T2 -q -c | wc -c",
                       shell=True, capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.strip():
        raise BenchError(f"zstd ratio check failed: {p.stderr}")
    return du_except_wal(pgdata) / max(int(p.stdout.strip()), 1)


# ---------------------------------------------------------------------------
# The tools

class Tools:
    def __init__(self, work, cl):
        self.work = work
        self.cl = cl
        self.env = cl.env
        self.key = os.path.join(work, "lifeboat.key")
        self.lb_repo = os.path.join(work, "repo-lifeboat")
        self.pgbr_repo = os.path.join(work, "repo-pgbackrest")
        self.pgbr_conf = os.path.join(work, "pgbackrest.conf")
        self.archive_script = os.path.join(work, "archive.sh")

    def lifeboat(self, *args, repo=None):
        return [LIFEBOAT, "--repo", repo or self.lb_repo, "--key-file", self.key, "--quiet"] + list(args)

    def pgbackrest(self, *args, conf=None):
        return ["pgbackrest", f"--config={conf or self.pgbr_conf}", f"--stanza={STANZA}",
                "--log-level-console=off", "--log-level-stderr=warn"] + list(args)

    def armed(self, tool):
        return os.path.join(self.work, f"armed-{tool}")

    def write_files(self):
        """Key file, pgBackRest config and the archive script; all readable by
        the cluster's owner."""
        with open(self.key, "w") as f:
            f.write("lifeboat-benchmark-key-material-0123456789abcdef\n")
        os.chmod(self.key, 0o600)
        give(self.key)
        for d in ("pgbackrest-log", "pgbackrest-lock", "pgbackrest-spool"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
            give(os.path.join(self.work, d))
        with open(self.archive_script, "w") as f:
            f.write(f"""#!/bin/sh
# archive_command of the benchmark cluster: pushes the WAL file ($1, i.e. %p)
# to every repository the benchmark has armed, pgBackRest and lifeboat in
# parallel, and fails if either push fails. An unarmed repository (between
# rounds, while it is recreated) is skipped.
rc=0
pb=
if [ -e {shlex.quote(self.armed('pgbackrest'))} ]; then
  {shlex.join(self.pgbackrest('archive-push', '--no-archive-async'))} "$1" &
  pb=$!
fi
if [ -e {shlex.quote(self.armed('lifeboat'))} ]; then
  {shlex.join(self.lifeboat('pg', 'wal-push'))} "$1" || rc=1
fi
if [ -n "$pb" ]; then wait "$pb" || rc=1; fi
exit $rc
""")
        os.chmod(self.archive_script, 0o755)
        give(self.archive_script)

    def write_pgbr_conf(self, path, repo):
        cl = self.cl
        with open(path, "w") as f:
            f.write(f"""[global]
repo1-path={repo}
repo1-retention-full=100
log-path={os.path.join(self.work, 'pgbackrest-log')}
lock-path={os.path.join(self.work, 'pgbackrest-lock')}
spool-path={os.path.join(self.work, 'pgbackrest-spool')}
log-level-file=warn
process-max=2
compress-type=zst
compress-level=1
start-fast=y
archive-check=n

[{STANZA}]
pg1-path={cl.pgdata}
pg1-socket-path={cl.sock}
pg1-port={cl.port}
pg1-user=postgres
""")
        give(path)

    def fresh_repos(self):
        """Empty repositories for both tools, created while archiving to them
        is off, then armed."""
        for t in ("lifeboat", "pgbackrest"):
            if os.path.exists(self.armed(t)):
                os.remove(self.armed(t))
        self.cl.wait_archived()
        fresh_dir(self.lb_repo)
        fresh_dir(self.pgbr_repo, 0o750)
        run(self.lifeboat("repo", "init"), self.env)
        run(self.pgbackrest("stanza-create"), self.env)
        for t in ("lifeboat", "pgbackrest"):
            open(self.armed(t), "w").close()

    def disarm(self):
        for t in ("lifeboat", "pgbackrest"):
            if os.path.exists(self.armed(t)):
                os.remove(self.armed(t))

    def full(self, tool):
        """(seconds, peak RSS MiB, stored bytes) of a full backup."""
        cl = self.cl
        cl.wait_archived()
        if tool == "lifeboat":
            before = du(self.lb_repo)
            s, m, out = run(self.lifeboat("--json", "pg", "backup", "--type", "full", "--pgdata", cl.pgdata,
                                          "--pg-url", cl.conninfo()), self.env)
            self.check_lifeboat_type(out, "full")
            cl.wait_archived()
            return s, m, du(self.lb_repo) - before
        if tool == "pgbackrest":
            before = du(self.pgbr_repo)
            s, m, _ = run(self.pgbackrest("--type=full", "backup"), self.env)
            cl.wait_archived()
            return s, m, du(self.pgbr_repo) - before
        if tool == "pg_basebackup":
            out = os.path.join(self.work, "out-pg_basebackup")
            shutil.rmtree(out, ignore_errors=True)
            try:
                s, m, _ = run([cl.bin("pg_basebackup"), "-h", cl.sock, "-p", str(cl.port), "-U", "postgres",
                               "-D", out, "-Ft", "-X", "fetch", "-Z", "zstd:1", "-c", "fast"], self.env)
                stored = du(out)
                if not os.path.exists(os.path.join(out, "base.tar.zst")):
                    raise BenchError(f"pg_basebackup wrote no base.tar.zst: {os.listdir(out)}")
            finally:
                shutil.rmtree(out, ignore_errors=True)
            cl.wait_archived()
            return s, m, stored
        if tool == "limit":
            wal = os.path.join(cl.pgdata, "pg_wal")
            s, _, _ = run(f"find {shlex.quote(cl.pgdata)} -path {shlex.quote(wal)} -prune -o -type f -print0 "
                          f"| xargs -0 -P2 -n 50 zstd -1 -q -c > /dev/null", self.env, owner=False)
            return s, None, None
        raise ValueError(tool)

    def incr(self, tool):
        cl = self.cl
        cl.wait_archived()
        if tool == "lifeboat":
            before = du(self.lb_repo)
            s, m, out = run(self.lifeboat("--json", "pg", "backup", "--pgdata", cl.pgdata,
                                          "--pg-url", cl.conninfo()), self.env)
            self.check_lifeboat_type(out, "incr")
            cl.wait_archived()
            return s, m, du(self.lb_repo) - before
        if tool == "pgbackrest":
            before = du(self.pgbr_repo)
            s, m, _ = run(self.pgbackrest("--type=incr", "backup"), self.env)
            cl.wait_archived()
            return s, m, du(self.pgbr_repo) - before
        raise ValueError(tool)

    @staticmethod
    def check_lifeboat_type(out, want):
        try:
            got = json.loads(out)["type"]
        except (ValueError, KeyError, TypeError):
            raise BenchError(f"lifeboat pg backup --json printed no backup type: {out[:500]!r}")
        if got != want:
            raise BenchError(f"lifeboat took a {got} backup where a {want} one was asked for")

    def check_pgbr_archive(self):
        """pgBackRest's archive got WAL through archive_command (its backups
        do not check, with archive-check=n)."""
        segs = [f for _, _, files in os.walk(os.path.join(self.pgbr_repo, "archive"))
                for f in files if len(f) > 25 and f[24] == "-"]
        if not segs:
            raise BenchError(f"no WAL in pgBackRest's archive {self.pgbr_repo}/archive: archive_command "
                             f"did not reach it\n--- server log\n{self.cl.log_tail()}")
        return len(segs)

    def restore(self, tool, expect):
        """Restores the latest backup into a fresh directory; returns
        (seconds, peak RSS MiB, restored bytes)."""
        target = os.path.join(self.work, f"restore-{tool}")
        fresh_dir(target)
        try:
            if tool == "lifeboat":
                s, m, _ = run(self.lifeboat("pg", "restore", "latest", "--pgdata", target,
                                            "--restore-command", "false", "--immediate"), self.env)
            elif tool == "pgbackrest":
                # lifeboat's restore is synced when it returns; pgBackRest's
                # is timed with a sync after it, so both are durable.
                cmd = self.pgbackrest(f"--pg1-path={target}", "--type=immediate", "restore")
                s, m, _ = run(" ".join(shlex.quote(c) for c in cmd) + " && sync", self.env)
            else:
                raise ValueError(tool)
            size = du(target)
            missing = [f for f in ("PG_VERSION", "global/pg_control", "backup_label", "base")
                       if not os.path.exists(os.path.join(target, f))]
            if missing:
                raise BenchError(f"{tool} restore is missing {missing} in {target}")
            if size < 0.9 * expect:
                raise BenchError(f"{tool} restored {size / MIB:.0f} MiB, expected about {expect / MIB:.0f} MiB")
            return s, m, size
        finally:
            shutil.rmtree(target, ignore_errors=True)


def wal_segment(cl):
    """A real, full 16 MiB WAL segment: copies of audit events written to a
    scratch table, so it holds what archiving really sees."""
    before = cl.psql("select pg_current_wal_lsn()")
    cl.psql("create table wal_sample as select * from audit_events limit 250000")
    written = int(float(cl.psql(f"select pg_wal_lsn_diff(pg_current_wal_lsn(), '{before}')")))
    # The segment 16 MiB after the start is full of that table's WAL.
    seg = cl.psql(f"select pg_walfile_name('{before}'::pg_lsn + {16 * MIB})")
    data = open(os.path.join(cl.pgdata, "pg_wal", seg), "rb").read()
    cl.psql("drop table wal_sample")
    if written < 33 * MIB:
        raise BenchError(f"only {written} bytes of WAL written for the sample segment")
    if len(data) != 16 * MIB:
        raise BenchError(f"WAL segment {seg} is {len(data)} bytes, not 16 MiB")
    return data


def bench_wal_push(tools, cl, runs, results):
    """Median over `runs` pushes of one 16 MiB segment, each under a new
    name into one local repository per tool (so each really stores),
    alternating the tools; process start included."""
    work = os.path.join(tools.work, "walpush")
    fresh_dir(work, 0o755)
    fake = os.path.join(work, "pgdata")   # what the tools see as the data directory
    os.makedirs(os.path.join(fake, "pg_wal"))
    os.makedirs(os.path.join(fake, "global"))
    cl.psql("checkpoint")
    shutil.copy(os.path.join(cl.pgdata, "global", "pg_control"), os.path.join(fake, "global", "pg_control"))
    data = wal_segment(cl)
    lb_repo = os.path.join(work, "repo-lifeboat")
    pgbr_repo = os.path.join(work, "repo-pgbackrest")
    fresh_dir(lb_repo)
    fresh_dir(pgbr_repo, 0o750)
    conf = os.path.join(work, "pgbackrest.conf")
    tools.write_pgbr_conf(conf, pgbr_repo)
    give(work)
    env = tools.env
    run(tools.lifeboat("repo", "init", repo=lb_repo), env)
    run(tools.pgbackrest("stanza-create", conf=conf), env)
    lb_before, pgbr_before = du(lb_repo), du(pgbr_repo)
    for i in range(runs):
        for tool in (("lifeboat", "pgbackrest") if i % 2 == 0 else ("pgbackrest", "lifeboat")):
            # Timeline 0x10 keeps the sample names apart from the cluster's own.
            name = f"00000010{0xA00 + i + (0 if tool == 'lifeboat' else 0x1000):08X}00000001"
            seg = os.path.join(fake, "pg_wal", name)
            with open(seg, "wb") as f:
                f.write(data)
            give(seg)
            if tool == "lifeboat":
                cmd = tools.lifeboat("pg", "wal-push", f"pg_wal/{name}", repo=lb_repo)
            else:
                cmd = tools.pgbackrest(f"--pg1-path={fake}", "archive-push", "--no-archive-async",
                                       f"pg_wal/{name}", conf=conf)
            s, m, _ = run(cmd, env, cwd=fake)
            os.remove(seg)
            r = results.setdefault(tool, {})
            r.setdefault("walpush", []).append(s)
            r.setdefault("walpush_mem", []).append(m)
    stored = {"lifeboat": (du(lb_repo) - lb_before) / runs, "pgbackrest": (du(pgbr_repo) - pgbr_before) / runs}
    for tool, per in stored.items():
        if per < 1 * MIB:
            raise BenchError(f"{tool} stored only {per:.0f} bytes per pushed segment: the pushes did not store")
        results[tool]["walpush_stored"] = [per]
    shutil.rmtree(work, ignore_errors=True)
    for tool in ("lifeboat", "pgbackrest"):
        v = results[tool]["walpush"]
        print(f"  {tool} wal-push: median {statistics.median(v) * 1000:.1f} ms over {len(v)} runs "
              f"(min {min(v) * 1000:.1f}, max {max(v) * 1000:.1f}), "
              f"{results[tool]['walpush_stored'][0] / MIB:.1f} MiB stored per segment", flush=True)


# ---------------------------------------------------------------------------
# A round

def bench_round(tools, cl, order, results, expect):
    rec = lambda tool, key, v: results.setdefault(tool, {}).setdefault(key, []).append(v)  # noqa: E731
    tools.fresh_repos()
    warm(cl.pgdata)
    for tool in order:
        s, m, st = tools.full(tool)
        rec(tool, "full", s)
        if m is not None:
            rec(tool, "full_mem", m)
        if st is not None:
            rec(tool, "full_stored", st)
        print(f"  {tool} full: {s:.2f} s" + (f", {m:.0f} MiB RSS, {st / MIB:.1f} MiB stored" if m is not None else ""),
              flush=True)
    one_percent_change(cl)
    warm(cl.pgdata)
    backup_tools = [t for t in order if t in ("lifeboat", "pgbackrest")]
    for tool in backup_tools:
        s, m, st = tools.incr(tool)
        rec(tool, "incr", s)
        rec(tool, "incr_mem", m)
        rec(tool, "incr_stored", st)
        print(f"  {tool} incr: {s:.2f} s, {m:.0f} MiB RSS, {st / MIB:.1f} MiB stored", flush=True)
    tools.check_pgbr_archive()
    for tool in backup_tools:
        s, m, size = tools.restore(tool, expect)
        rec(tool, "restore", s)
        rec(tool, "restore_mem", m)
        print(f"  {tool} restore: {s:.2f} s, {m:.0f} MiB RSS, {size / MIB:.0f} MiB restored", flush=True)


def med(results, tool, key):
    v = results.get(tool, {}).get(key)
    return statistics.median(v) if v else None


def versions(cl):
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    zstd = next((w.rstrip(",") for w in out(["zstd", "-V"]).split() if w.startswith("v")), "?")
    return [out([LIFEBOAT, "--version"]), out(["pgbackrest", "version"]),
            out([cl.bin("pg_basebackup"), "--version"]).replace(" (PostgreSQL)", ""),
            pg_version(cl.bindir).replace("postgres (PostgreSQL)", "PostgreSQL"), f"zstd {zstd}"]


SETTINGS = [
    "- lifeboat: defaults; `pg backup --type full`, then `pg backup` (incremental), "
    "`pg restore latest --immediate --restore-command false`; a key file (no Argon2id).",
    "- pgBackRest: `process-max=2`, `compress-type=zst`, `compress-level=1`, `start-fast=y`, "
    "`archive-check=n` (the copy alone is timed: pgBackRest does not wait for its WAL, while "
    "lifeboat's backup includes waiting for its WAL to reach the repository); `--type=full`, "
    "`--type=incr`; restore `--type=immediate` into an empty directory, timed with a `sync` after it "
    "(lifeboat's restore is synced when it returns).",
    "- pg_basebackup: `-Ft -X fetch -Z zstd:1 -c fast` (client-side compression; its RSS is the "
    "client's alone).",
    "- The limit: `find PGDATA -path PGDATA/pg_wal -prune -o -type f -print0 | "
    "xargs -0 -P2 -n 50 zstd -1 -q -c > /dev/null` (pg_wal left out, as the backups leave it out).",
    "- Cluster: PostgreSQL 15, `initdb --data-checksums`, Unix socket only, `shared_buffers = 1GB`, "
    "`autovacuum = off`, data frozen after loading; the 1 % change updates 1 % of users at random "
    "(`random() < 0.01`), appends 1 % more audit events, then `CHECKPOINT`.",
    "- Archiving: `archive_command` runs `pgbackrest archive-push` and `lifeboat pg wal-push` in "
    "parallel for every WAL file throughout a round (both repositories get all WAL).",
    "- Stored: growth of the tool's repository (or pg_basebackup's output directory) across that "
    "backup, including the WAL archived for it; the 1 % change's own WAL is archived before the "
    "incremental backups and counted for neither.",
    "- Restores write files only; the server is not started.",
    "- wal-push: one real, full 16 MiB segment pushed under a new name each run into a local "
    "repository, as the postgres user, process start included, the two tools alternating.",
    "- Peak RSS: GNU time `%M`, the largest single process (pgBackRest's processes are not summed).",
]


def report(a, results, facts, cl):
    size, users, events, ratio = facts
    gib = size / GIB
    rows = []

    def row(label, tool, key, mem=None, stored=None, thr=True):
        t = med(results, tool, key)
        if t is None:
            return
        rows.append((label, t, gib / t * 1024 if thr else None, med(results, tool, mem) if mem else None,
                     med(results, tool, stored) if stored else None))
    row("lifeboat full backup", "lifeboat", "full", "full_mem", "full_stored")
    row("pgBackRest full backup", "pgbackrest", "full", "full_mem", "full_stored")
    row("pg_basebackup (-Ft -X fetch -Z zstd:1)", "pg_basebackup", "full", "full_mem", "full_stored")
    row("limit (xargs -P2 zstd -1)", "limit", "full")
    row("lifeboat incremental after 1 % change", "lifeboat", "incr", "incr_mem", "incr_stored")
    row("pgBackRest incremental after 1 % change", "pgbackrest", "incr", "incr_mem", "incr_stored")
    row("lifeboat restore (latest, files only)", "lifeboat", "restore", "restore_mem")
    row("pgBackRest restore (latest, files only)", "pgbackrest", "restore", "restore_mem")
    n = len(results.get("lifeboat", {}).get("walpush", []))
    row(f"lifeboat wal-push, 16 MiB segment (median of {n})", "lifeboat", "walpush", "walpush_mem",
        "walpush_stored", thr=False)
    row(f"pgBackRest archive-push, 16 MiB segment (median of {n})", "pgbackrest", "walpush", "walpush_mem",
        "walpush_stored", thr=False)

    goals = []

    def goal(name, lb, pb, target, limit, fmt="{:.2f}x"):
        lbv, pbv = med(results, "lifeboat", lb), med(results, "pgbackrest", pb)
        if lbv is None or pbv is None:
            goals.append((name, "not measured", target, "NOT met"))
            return
        r = lbv / pbv
        goals.append((name, fmt.format(r), target, "met" if r <= limit else "NOT met"))
    goal("full backup time vs pgBackRest full", "full", "full", "<= 0.9x", 0.9)
    goal("full backup stored vs pgBackRest full", "full_stored", "full_stored", "<= 1.05x", 1.05)
    goal("incremental time vs pgBackRest incr", "incr", "incr", "<= 0.35x", 0.35)
    goal("incremental stored vs pgBackRest incr", "incr_stored", "incr_stored", "<= 0.5x", 0.5)
    goal("restore time vs pgBackRest restore", "restore", "restore", "<= 0.6x", 0.6)
    wp = med(results, "lifeboat", "walpush")
    if wp is None:
        goals.append(("wal-push median (16 MiB segment, local repository)", "not measured", "<= 60 ms", "NOT met"))
    else:
        goals.append(("wal-push median (16 MiB segment, local repository)", f"{wp * 1000:.0f} ms", "<= 60 ms",
                      "met" if wp <= 0.060 else "NOT met"))
    mems = []
    for tool, label in (("lifeboat", "lifeboat"), ("pgbackrest", "pgBackRest")):
        vals = [f"{k} {med(results, tool, k + '_mem'):.0f}" for k in ("full", "incr", "restore", "walpush")
                if med(results, tool, k + "_mem") is not None]
        if vals:
            mems.append(f"{label}: " + ", ".join(vals) + " MiB")

    cmd = "scripts/bench.sh pg " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    lines = [
        f"Command: `{cmd.strip()}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} cores, "
        f"{platform.machine()}, data in page cache, repositories and restores on local disk  ",
        f"Dataset: {gib:.2f} GiB data directory without pg_wal ({users:,} users, {events:,} audit events, "
        f"indexes; {ratio:.1f}x with one zstd -1 stream), {a.rounds} round(s) on fresh repositories "
        f"alternating the tools, medians.  ",
        "Tools: " + ", ".join(versions(cl)) + "  ",
        "",
        "| run | time (s) | throughput (MiB/s) | peak RSS (MiB) | stored (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, t, thr, m, st in rows:
        tt = f"{t:.3f}" if t < 1 else f"{t:.2f}"
        lines.append(f"| {label} | {tt} | {'' if thr is None else f'{thr:.0f}'} | "
                     f"{'' if m is None else f'{m:.0f}'} | {'' if st is None else f'{st / MIB:.1f}'} |")
    lines += ["", "| goal (issue #3) | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {n} | {v} | {t} | {ok} |" for n, v, t, ok in goals]
    lines += ["", "Peak RSS (MiB, medians): " + "; ".join(mems) + ".", "", "Settings:", ""] + SETTINGS
    text = "\n".join(lines)
    print("\n" + text)
    if a.write_docs:
        write_docs(text)


def write_docs(block_text):
    intro = textwrap.fill(
        "`scripts/bench.sh pg` installs pgBackRest, PostgreSQL, zstd and GNU time from Debian's "
        "packages when missing, builds lifeboat in release mode and runs `bench/pg_bench.py`: a "
        "throwaway PostgreSQL 15 cluster (`bench-work-pg/`) loaded with identity-platform-like data "
        "(`users`, `audit_events`, see `../shared/BENCHMARKS.md`); per round, on fresh repositories: "
        "full backup with each tool and the limit, the 1 % change, incremental backup, restore of the "
        "latest backup; then `wal-push` of one 16 MiB segment. The block between the markers is "
        "rewritten by `scripts/bench.sh pg … --write-docs`; the prose around it is not.", width=80)
    write_docs_block(block_text, DOCS_BEGIN, DOCS_END,
                     "## PostgreSQL: lifeboat vs pgBackRest vs pg_basebackup\n\n" + intro)


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="PostgreSQL benchmark: lifeboat vs pgBackRest vs pg_basebackup")
    ap.add_argument("--size-gb", type=float, default=4.0,
                    help="database size to generate, GiB (default 4; the real run needs at least 4)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds on fresh repositories (default 3)")
    ap.add_argument("--wal-runs", type=int, default=25, help="wal-push runs per tool (at least 20 for the report)")
    ap.add_argument("--work", default=os.path.join(ROOT, "bench-work-pg"),
                    help="work directory (default bench-work-pg/ in the repository)")
    ap.add_argument("--pg-bindir", help="PostgreSQL binaries (default: pg_config --bindir if 15, "
                                        "else /usr/lib/postgresql/15/bin)")
    ap.add_argument("--keep-cluster", action="store_true",
                    help="keep the generated cluster in the work directory for the next run (else it is removed)")
    ap.add_argument("--write-docs", action="store_true",
                    help="write the report into the PostgreSQL section of docs/benchmarks.md")
    a = ap.parse_args()
    if a.wal_runs < 20:
        ap.error("--wal-runs must be at least 20")
    if not os.access(LIFEBOAT, os.X_OK):
        sys.exit(f"{LIFEBOAT} not found: run `cargo build --release -p lifeboat` (scripts/bench.sh pg does)")
    for tool in ("pgbackrest", "zstd", "/usr/bin/time") + (("setpriv",) if IS_ROOT else ()):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run through scripts/bench.sh pg, which installs it")
    if IS_ROOT:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            sys.exit("no postgres OS user: install the postgresql package")
    work = os.path.abspath(a.work)
    if any(c.isspace() or c in "'\"\\" for c in work):
        sys.exit(f"--work must not contain spaces or quotes: {work}")
    try:
        bindir = find_bindir(a.pg_bindir)
    except BenchError as e:
        sys.exit(str(e))
    print(f"PostgreSQL: {pg_version(bindir)} ({bindir}); work directory {work}", flush=True)
    os.makedirs(work, exist_ok=True)
    give(work)
    os.chmod(work, 0o755)
    cl = Cluster(work, bindir)
    tools = Tools(work, cl)
    results = {}
    marker = os.path.join(work, "pgdata.complete")
    want = f"{a.size_gb} {bindir}"
    ok = False
    try:
        tools.disarm()
        if not (os.path.exists(marker) and open(marker).read() == want
                and os.path.exists(os.path.join(cl.pgdata, "PG_VERSION"))):
            if os.path.exists(marker):
                os.remove(marker)
            print(f"creating a {a.size_gb} GiB cluster", flush=True)
            cl.initdb()
            tools.write_files()  # the archive script must exist before the server starts
            cl.start(f"{tools.archive_script} %p")
            tools.write_pgbr_conf(tools.pgbr_conf, tools.pgbr_repo)
            make_dataset(cl, int(a.size_gb * GIB))
            open(marker, "w").write(want)
        else:
            print("reusing the generated cluster", flush=True)
            tools.write_files()
            cl.start(f"{tools.archive_script} %p")
            tools.write_pgbr_conf(tools.pgbr_conf, tools.pgbr_repo)
        users, events = dataset_facts(cl)
        size = du_except_wal(cl.pgdata)
        ratio = zstd_ratio(cl.pgdata)
        print(f"dataset: {size / GIB:.2f} GiB without pg_wal, {users:,} users, {events:,} audit events, "
              f"{ratio:.1f}x with zstd -1", flush=True)
        if size < 4 * GIB:
            print("note: the data directory is under 4 GiB; the report is for development only", flush=True)
        if not 3.0 <= ratio <= 5.5:
            print(f"warning: the dataset compresses {ratio:.1f}x, not about 4x", flush=True)
        warm(cl.pgdata)
        for i in range(a.rounds):
            order = list(TOOLS) if i % 2 == 0 else list(reversed(TOOLS))
            print(f"round {i + 1}/{a.rounds}: {' '.join(order)}", flush=True)
            bench_round(tools, cl, order, results, size)
        tools.disarm()
        print(f"wal-push: {a.wal_runs} runs per tool", flush=True)
        bench_wal_push(tools, cl, a.wal_runs, results)
        cl.psql("analyze users; analyze audit_events")  # row counts after the rounds' changes
        size = du_except_wal(cl.pgdata)
        facts = (size, *dataset_facts(cl), ratio)
        ok = True
    except BenchError as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr)
    finally:
        tools.disarm()
        cl.stop()
        for d in ("repo-lifeboat", "repo-pgbackrest", "walpush", "restore-lifeboat", "restore-pgbackrest",
                  "out-pg_basebackup"):
            shutil.rmtree(os.path.join(work, d), ignore_errors=True)
        if not a.keep_cluster:
            shutil.rmtree(work, ignore_errors=True)
        try:
            os.remove(os.path.join(tempfile.gettempdir(), f"pg-bench-rss-{os.getpid()}"))
        except OSError:
            pass
    if not ok:
        sys.exit(1)
    report(a, results, facts, cl)


if __name__ == "__main__":
    main()
