#!/usr/bin/env python3
"""Benchmark authsvc under gunicorn against a hello-world ceiling, side by side, in one run.

    .venv/bin/python tests/bench.py                      # 2 workers, the README's settings
    .venv/bin/python tests/bench.py --threads 4 --json bench.json
    .venv/bin/python tests/bench.py --scale-users 1000000

Not a test (pytest does not collect it): it prints figures. Machines here are shared and
noisy, so it reports ratios measured in the same run next to the absolute numbers:

- `GET /`, `GET /profile` and `GET /auth/request` (valid cookies) on authsvc, and the same requests on a
  minimal WSGI app (tests/hello_wsgi.py) under the same gunicorn settings: the ceiling;
- `POST /sessions` (right passwords) and `POST /users` (fresh emails) against bcrypt's own
  limit, measured in this process: cores / seconds per `checkpw` at the configured cost;
- `GET /profile` while other connections keep logins at the bcrypt limit (a login storm);
- with --scale-users, profile and login latency at --users and at that many users;
- peak RSS per worker, and the database's bytes per user.

Load comes from wrk (Debian package `wrk`) on 127.0.0.1, with Lua scripts for the cookies
and form bodies; every run is bounded by --duration and --connections.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
_WORK = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
# Should anything touch authsvc.app, it is built from the environment: on a scratch file.
os.environ["AUTHSVC_DB"] = str(_WORK / "scratch.db")

import pgserver
from servers import GunicornServer, start_gunicorn

import store as store_module
from authsvc import Auth, Config
from store import Store

PASSWORD = "bench password"
PROFILE_USERS = 200  # users with a live session, for GET /profile
LOGIN_USERS = 200  # other users, for POST /sessions (each login adds a session)

# Every wrk script ends with this: one machine-readable line with the run's figures.
LUA_DONE = """
done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d,'
    .. ' "errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_status": %d,'
    .. ' "errors_timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
"""


def email_of(index: int) -> str:
    """The email of seeded user number `index`."""
    return f"bench-{index:07d}@example.com"


def lua_list(values: list[str]) -> str:
    """A Lua table literal of strings."""
    return "{" + ", ".join(json.dumps(value) for value in values) + "}"


def with_cookies(path: str, cookies: list[str]) -> str:
    """A wrk script of GET `path`, each request with the next of the session cookies."""
    return f"""
local cookies = {lua_list(cookies)}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "{path}", {{["Cookie"] = "session_id=" .. cookies[n % #cookies + 1]}})
end
"""


def write_scripts(
    directory: Path, cookies: list[str], login_emails: list[str]
) -> dict[str, Path]:
    """The wrk scripts of each scenario, written to `directory`."""
    form = "application/x-www-form-urlencoded"
    scripts = {
        "root": 'request = function() return wrk.format("GET", "/") end\n',
        "profile": with_cookies("/profile", cookies),
        # What a proxy in front of another application asks at each of its requests.
        "auth_request": with_cookies("/auth/request", cookies),
        "login": f"""
local emails = {lua_list([email.replace("@", "%40") for email in login_emails])}
local n = 0
request = function()
  n = n + 1
  local body = "email=" .. emails[n % #emails + 1] .. "&password=bench%20password"
  return wrk.format("POST", "/sessions", {{["Content-Type"] = "{form}"}}, body)
end
""",
        "register": f"""
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("id", threads) end
local n = 0
request = function()
  n = n + 1
  local email = "new-" .. os.time() .. "-" .. id .. "-" .. n .. "%40example.com"
  return wrk.format("POST", "/users", {{["Content-Type"] = "{form}"}}, "email=" .. email .. "&password=pw")
end
""",
    }
    paths = {}
    for name, body in scripts.items():
        paths[name] = directory / f"{name}.lua"
        paths[name].write_text(body + LUA_DONE)
    return paths


def wrk_command(url: str, script: Path, duration: float, connections: int) -> list[str]:
    """A bounded wrk run: one thread (to leave the cores to the servers), a 30 s timeout."""
    return [
        "wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:g}s",
        "--timeout", "30s", "-s", str(script), url,
    ]  # fmt: skip


def parse_wrk(output: str) -> dict[str, float]:
    """The figures of a wrk run, from its BENCH line: rps, p50/p99 in ms, errors."""
    line = next(line for line in output.splitlines() if line.startswith("BENCH "))
    raw = json.loads(line.removeprefix("BENCH "))
    errors = sum(value for key, value in raw.items() if key.startswith("errors_"))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "errors": errors,
    }


def worker_cpu_seconds(server: GunicornServer) -> float:
    """User + system CPU time the server's workers have used so far."""
    ticks = 0
    for pid in server.worker_pids():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(
    server: GunicornServer, script: Path, duration: float, connections: int
) -> dict:
    """Run wrk against `server` to the end; its figures, and the workers' CPU per request.

    CPU per request moves much less than requests/s when other tenants of the machine
    take CPU time, so it tells what the app itself costs.
    """
    cpu_before = worker_cpu_seconds(server)
    result = subprocess.run(
        wrk_command(server.url, script, duration, connections),
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    figures = parse_wrk(result.stdout)
    cpu = worker_cpu_seconds(server) - cpu_before
    figures["cpu_us_per_request"] = cpu / max(figures["requests"], 1) * 1e6
    return figures


def bcrypt_limit(rounds: int, samples: int = 5) -> tuple[float, float]:
    """(seconds per checkpw at `rounds`, logins per second the cores allow)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds))
    timings = []
    for _ in range(samples):
        start = time.perf_counter()
        bcrypt.checkpw(PASSWORD.encode(), hashed)
        timings.append(time.perf_counter() - start)
    seconds = statistics.median(timings)
    return seconds, os.cpu_count() / seconds


def seed(store: Store, start: int, stop: int, hashed_password: str) -> float:
    """Insert users start..stop-1 through the store; return the seconds it took."""
    began = time.perf_counter()
    store.add_many_users(
        (email_of(index) for index in range(start, stop)), hashed_password
    )
    return time.perf_counter() - began


def bytes_per_user(db: str, users: int) -> float:
    """The database's size per user: the SQLite file after a checkpoint folds the WAL
    into it, or PostgreSQL's pg_database_size."""
    if db.startswith("postgresql://"):
        ((size,),) = rows_of(db, "SELECT pg_database_size(current_database())")
        return size / users
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return Path(db).stat().st_size / users


def rows_of(db: str, sql: str) -> list[tuple]:
    """The rows of one statement, on a connection of our own (SQLite or PostgreSQL)."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    conn = sqlite3.connect(db)
    try:
        return [tuple(row) for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def peak_rss_mib(server: GunicornServer) -> list[float]:
    """Each worker's peak resident memory (VmHWM), in MiB."""
    peaks = []
    for pid in server.worker_pids():
        status = Path(f"/proc/{pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        peaks.append(int(line.split()[1]) / 1024)
    return peaks


def side_by_side(
    servers: dict[str, GunicornServer], script: Path, args: argparse.Namespace
) -> dict[str, dict]:
    """Alternate the servers on one script for --rounds rounds; each keeps its median run.

    Alternating, rather than one long run each, spreads whatever else the machine is
    doing over both servers alike; the median run drops the odd disturbed one.
    """
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, server in servers.items():
            runs[name].append(run_wrk(server, script, args.duration, args.connections))
    return {
        name: sorted(found, key=lambda run: run["rps"])[len(found) // 2]
        for name, found in runs.items()
    }


def login_storm(
    args: argparse.Namespace, server: GunicornServer, scripts: dict[str, Path]
) -> dict[str, dict]:
    """GET /profile (2 connections) while --login-connections keep logins at the bcrypt limit.

    The logins run --bcrypt-duration seconds (a login takes one to two seconds here: a
    shorter window would miscount them) and the profile run sits inside them. Their
    workers are the same, so the CPU column goes on the logins' row: all the workers'
    CPU over the storm per login (the profile requests' share is about 2% of it).
    """
    storm_seconds = max(args.bcrypt_duration, args.duration + 4)
    cpu_before = worker_cpu_seconds(server)
    storm = subprocess.Popen(
        wrk_command(
            server.url, scripts["login"], storm_seconds, args.login_connections
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)  # let the storm fill every bcrypt slot first
    profile = run_wrk(server, scripts["profile"], args.duration, 2)
    storm_output, _ = storm.communicate(timeout=storm_seconds + 60)
    logins = parse_wrk(storm_output)
    logins["cpu_us_per_request"] = (
        (worker_cpu_seconds(server) - cpu_before) / max(logins["requests"], 1) * 1e6
    )
    profile.pop("cpu_us_per_request")  # the storm's bcrypt work is in the same workers
    return {
        "profile during login storm": profile,
        "logins during the storm": logins,
    }


def gunicorn_options(args: argparse.Namespace) -> dict:
    """The gunicorn settings every server of a run shares (--workers, --threads...)."""
    return {
        "workers": args.workers,
        "threads": args.threads,
        "extra_args": ("--worker-class", args.worker_class),
    }


def start_authsvc(
    args: argparse.Namespace, db: str, log_name: str, metrics: bool = False
) -> GunicornServer:
    """An authsvc server on `db`, at the run's bcrypt cost; `metrics`: AUTHSVC_METRICS on,
    with a multiprocess directory of its own (as the README's production set-up)."""
    env = {
        "AUTHSVC_BCRYPT_ROUNDS": str(args.bcrypt_rounds),
        # wrk is one client on one address: the per-client limits (README "Configuration")
        # would answer most sign-ups 429 after the 30th. The load is the point here.
        "AUTHSVC_CLIENT_MAX_REGISTRATIONS": "1000000",
        "AUTHSVC_CLIENT_MAX_RESETS": "1000000",
        "AUTHSVC_CLIENT_MAX_FAILURES": "1000000",
    }
    if metrics:
        metrics_dir = _WORK / "prometheus"
        metrics_dir.mkdir(exist_ok=True)
        env |= {"AUTHSVC_METRICS": "true", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    return start_gunicorn(db, _WORK / log_name, env=env, **gunicorn_options(args))


def start_servers(
    args: argparse.Namespace, db: str
) -> tuple[GunicornServer, GunicornServer]:
    """authsvc and the hello-world app, under the same gunicorn settings."""
    options = gunicorn_options(args)
    authsvc = start_authsvc(args, db, "authsvc.log")
    hello = start_gunicorn(
        _WORK / "unused.db",
        _WORK / "hello.log",
        app="hello_wsgi:app",
        **{
            **options,
            "extra_args": (*options["extra_args"], "--pythonpath", str(ROOT / "tests")),
        },
    )
    return authsvc, hello


def scale_probe(
    server: GunicornServer, scripts: dict[str, Path], duration: float
) -> dict[str, dict]:
    """Latency of one client at a time: GET /profile, then POST /sessions."""
    return {
        "profile": run_wrk(server, scripts["profile"], duration, 1),
        "login": run_wrk(server, scripts["login"], duration, 1),
    }


def session_uses(db: str) -> dict[int, float]:
    """Each session row's recorded last use, by row id (read on a connection of our own)."""
    return dict(rows_of(db, "SELECT id, last_used_at FROM sessions"))


def on_every_host(
    hosts: list[GunicornServer], script: Path, duration: float, connections: int
) -> dict[str, float]:
    """wrk against every host at once (`connections` each); the figures added up: the
    requests/s of all hosts, the worst p50 and p99, and the errors of all."""
    runs = [
        subprocess.Popen(
            wrk_command(host.url, script, duration, connections),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in hosts
    ]
    figures = [parse_wrk(run.communicate(timeout=duration + 60)[0]) for run in runs]
    return {
        "rps": sum(f["rps"] for f in figures),
        "p50_ms": max(f["p50_ms"] for f in figures),
        "p99_ms": max(f["p99_ms"] for f in figures),
        "errors": sum(f["errors"] for f in figures),
        "requests": sum(f["requests"] for f in figures),
    }


def two_hosts(
    args: argparse.Namespace, first: GunicornServer, db: str, scripts: dict
) -> dict[str, dict]:
    """A second authsvc server on the same database, and the profile and login loads on
    both at once (each host gets the connections one host gets alone)."""
    second = start_authsvc(args, db, "authsvc-2.log")
    try:
        hosts = [first, second]
        return {
            "2 hosts profile": on_every_host(
                hosts, scripts["profile"], args.duration, args.connections
            ),
            "2 hosts login": on_every_host(
                hosts, scripts["login"], args.bcrypt_duration, args.login_connections
            ),
        }
    finally:
        second.stop()


def measure(
    args: argparse.Namespace,
    authsvc: GunicornServer,
    hello: GunicornServer,
    scripts: dict,
    metered: GunicornServer | None = None,
) -> dict:
    """Every throughput scenario, in order; the figures by scenario name. `metered`, an
    authsvc with metrics on, joins the profile runs (the cost of counting)."""
    results: dict[str, dict] = {}
    for server in (hello, authsvc):  # the first seconds of load run slow: not measured
        run_wrk(server, scripts["profile"], 2, args.connections)
    for name in ("root", "profile", "auth_request"):
        uses_before, started = session_uses(str(authsvc.db_path)), time.monotonic()
        compared = {"hello": hello, "authsvc": authsvc}
        if name == "profile" and metered is not None:
            compared["authsvc, metrics on"] = metered
        for server_name, figures in side_by_side(compared, scripts[name], args).items():
            results[f"{server_name} {name}"] = figures
        if name == "profile":
            # Each GET /profile may record its session's use, at most once a minute per
            # session (the runs here are shorter): a changed row is one write.
            uses_after = session_uses(str(authsvc.db_path))
            results["authsvc profile"]["use_writes"] = sum(
                uses_after.get(row) != used for row, used in uses_before.items()
            )
            results["authsvc profile"]["use_write_seconds"] = time.monotonic() - started
    if args.quick:
        return results
    # A login takes about a second under this load and wrk counts only the requests that
    # end within the run, so these runs are longer: what is cut off at the end is small.
    for name, script in (("login", "login"), ("register", "register")):
        results[f"authsvc {name}"] = run_wrk(
            authsvc, scripts[script], args.bcrypt_duration, args.login_connections
        )
    results.update(login_storm(args, authsvc, scripts))
    return results


def main() -> None:
    """Parse the options, run every scenario, print the table, write --json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating runs of / and /profile"
    )
    parser.add_argument(
        "--bcrypt-duration",
        type=float,
        default=30.0,
        help="seconds for logins, sign-ups",
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="for / and /profile"
    )
    parser.add_argument(
        "--login-connections",
        type=int,
        default=8,
        help="for logins, sign-ups, the storm",
    )
    parser.add_argument(
        "--users", type=int, default=1000, help="users seeded before the scenarios"
    )
    parser.add_argument(
        "--scale-users",
        type=int,
        default=0,
        help="then grow to this many and re-measure",
    )
    parser.add_argument("--bcrypt-rounds", type=int, default=Config.bcrypt_rounds)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--hosts",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: also run profile and login loads on two authsvc servers on one database (--postgres)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="run authsvc on a throw-away PostgreSQL server (durable settings) instead of SQLite",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only GET / and GET /profile side by side with hello (no bcrypt scenarios)",
    )
    parser.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="leave out the third server, authsvc with AUTHSVC_METRICS=true, from the profile runs",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    if args.users < PROFILE_USERS + LOGIN_USERS:
        sys.exit(f"--users must be at least {PROFILE_USERS + LOGIN_USERS}")

    if args.hosts == 2 and not args.postgres:
        sys.exit("--hosts 2 needs --postgres: two hosts cannot share a SQLite file")
    postgres = pgserver.start_postgres(durable=True) if args.postgres else None
    db = postgres.url() if postgres else str(_WORK / "authsvc.db")
    try:
        run(args, db)
    finally:
        store_module.close_all_pools()
        if postgres:
            postgres.remove()


def run(args: argparse.Namespace, db: str) -> None:
    """Seed the database `db`, run every scenario, print the table, write --json."""
    config = Config(db=db, bcrypt_rounds=args.bcrypt_rounds)
    auth = Auth(config)  # applies the schema; creates the profile sessions below
    store = Store(config.db)
    hashed = bcrypt.hashpw(
        PASSWORD.encode(), bcrypt.gensalt(args.bcrypt_rounds)
    ).decode()
    seeding = {"users": args.users, "seconds": seed(store, 0, args.users, hashed)}
    cookies = [auth.create_session(email_of(index)) for index in range(PROFILE_USERS)]
    login_emails = [
        email_of(index) for index in range(PROFILE_USERS, PROFILE_USERS + LOGIN_USERS)
    ]
    scripts = write_scripts(_WORK, cookies, login_emails)
    seconds_per_check, limit = bcrypt_limit(args.bcrypt_rounds)

    authsvc, hello = start_servers(args, db)
    metered = (
        start_authsvc(args, db, "authsvc-metrics.log", metrics=True)
        if args.metrics
        else None
    )
    scraped = ""
    try:
        results = measure(args, authsvc, hello, scripts, metered)
        if metered is not None:
            scraped = requests.get(f"{metered.url}/metrics", timeout=10).text
            metered.stop()
        if args.hosts == 2:
            results.update(two_hosts(args, authsvc, db, scripts))
        scale = {}
        if args.scale_users > args.users:
            scale[args.users] = scale_probe(authsvc, scripts, args.duration)
            # The million-row insert holds the write lock for seconds: let the last login
            # wrk left in flight finish its writes first (it would wait, then get a 503).
            time.sleep(2)
            seeding |= {
                "grown_to": args.scale_users,
                "grow_seconds": seed(store, args.users, args.scale_users, hashed),
            }
            scale[args.scale_users] = scale_probe(authsvc, scripts, args.duration)
        rss = peak_rss_mib(authsvc)
        log_errors = [line for line in authsvc.log().splitlines() if "[ERROR]" in line]
    finally:
        authsvc.stop()
        hello.stop()
        if metered is not None:
            metered.stop()

    # Each hot scenario against hello's same run: req/s, and CPU per request the other
    # way round (hello's ÷ authsvc's), so that for both higher is better, 1 the ceiling.
    ratios = {}
    for name in ("profile", "root", "auth_request"):
        ours, ceiling = results[f"authsvc {name}"], results[f"hello {name}"]
        ratios[f"{name} / hello {name}"] = ours["rps"] / ceiling["rps"]
        ratios[f"hello / authsvc CPU per request, {name}"] = (
            ceiling["cpu_us_per_request"] / ours["cpu_us_per_request"]
        )
    if not args.quick:
        for name in ("login", "register"):
            figures = results[f"authsvc {name}"]
            ratios[f"{name} / bcrypt limit"] = figures["rps"] / limit
            ratios[f"{name} p99 / p50"] = figures["p99_ms"] / figures["p50_ms"]
    if metered is not None:
        ratios["metrics on / off CPU per request, profile"] = (
            results["authsvc, metrics on profile"]["cpu_us_per_request"]
            / results["authsvc profile"]["cpu_us_per_request"]
        )
    for measure_name in ("profile", "login"):
        if scale:
            big, small = (
                scale[args.scale_users][measure_name],
                scale[args.users][measure_name],
            )
            ratios[
                f"{measure_name} p50 at {args.scale_users} / at {args.users} users"
            ] = big["p50_ms"] / small["p50_ms"]
    report = {
        # The cores this process may run on (taskset, a container's cpuset), not the
        # machine's: the load generator and the servers share them.
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "python": sys.version.split()[0],
        },
        "database": "PostgreSQL" if db.startswith("postgresql://") else "SQLite",
        "settings": {key: value for key, value in vars(args).items() if key != "json"},
        "bcrypt": {"seconds_per_checkpw": seconds_per_check, "limit_per_second": limit},
        "scenarios": results,
        "scale": {str(users): probe for users, probe in scale.items()},
        "ratios": ratios,
        "peak_rss_mib_per_worker": rss,
        "server_log_errors": log_errors,
        "seeding": seeding,
        "metrics_scrape": scraped,
        "bytes_per_user": bytes_per_user(db, max(args.users, args.scale_users)),
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(_WORK, ignore_errors=True)


def print_report(report: dict) -> None:
    """The figures as plain-text tables."""
    settings = report["settings"]
    print(
        f"\nauthsvc benchmark: {report['machine']['cores']} cores, Python {report['machine']['python']}, "
        f"gunicorn {settings['workers']} workers x {settings['threads']} threads ({settings['worker_class']}), "
        f"bcrypt cost {settings['bcrypt_rounds']}, {settings['users']} users, "
        f"{report['database']}, wrk on 127.0.0.1\n"
    )
    print(
        f"{'scenario':42} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6} {'CPU us/req':>10}"
    )
    for name, figures in report["scenarios"].items():
        cpu = (
            f"{figures['cpu_us_per_request']:10.0f}"
            if "cpu_us_per_request" in figures
            else f"{'':10}"
        )
        print(
            f"{name:42} {figures['rps']:8.1f} {figures['p50_ms']:9.2f} "
            f"{figures['p99_ms']:9.2f} {figures['errors']:6d} {cpu}"
        )
    for users, probe in report["scale"].items():
        for name, figures in probe.items():
            print(f"{name + ' at ' + users + ' users, 1 client':42} {figures['rps']:8.1f} "
                  f"{figures['p50_ms']:9.2f} {figures['p99_ms']:9.2f} {figures['errors']:6d} "
                  f"{figures['cpu_us_per_request']:10.0f}")  # fmt: skip
    bcrypt_figures = report["bcrypt"]
    print(
        f"\nbcrypt limit: {bcrypt_figures['limit_per_second']:.2f}/s "
        f"({bcrypt_figures['seconds_per_checkpw'] * 1000:.0f} ms per checkpw)"
    )
    print("\nratios:")
    for name, value in report["ratios"].items():
        print(f"  {name:48} {value:6.2f}")
    profile = report["scenarios"]["authsvc profile"]
    print(
        f"\nsession-use writes during the profile runs: {profile['use_writes']} "
        f"in {profile['use_write_seconds']:.0f} s "
        f"({profile['use_writes'] / profile['use_write_seconds']:.1f}/s, "
        "hello and authsvc runs taken together)"
    )
    rss = ", ".join(f"{value:.1f}" for value in report["peak_rss_mib_per_worker"])
    print(
        f"\npeak RSS per worker: {rss} MiB; server log errors: {len(report['server_log_errors'])}"
    )
    for line in report["server_log_errors"][:5]:
        print(f"  {line}")
    seeding = report["seeding"]
    grown = (
        f"; grown to {seeding['grown_to']} in {seeding['grow_seconds']:.1f} s"
        if "grown_to" in seeding
        else ""
    )
    print(f"seeded {seeding['users']} users in {seeding['seconds']:.2f} s{grown}")
    print(f"database: {report['bytes_per_user']:.0f} bytes per user")
    if report["metrics_scrape"]:
        print(
            "\nGET /metrics of the metrics-on server after its runs (histogram buckets left out):"
        )
        for line in report["metrics_scrape"].splitlines():
            if "_bucket{" not in line and not line.startswith("#"):
                print(f"  {line}")


if __name__ == "__main__":
    main()
