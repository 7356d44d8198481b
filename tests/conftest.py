"""Shared fixtures: a fresh database per test, the app in process, and real gunicorn servers.

`authsvc.app`, should anything touch it, is built from the environment; so before anything
imports authsvc this file clears every AUTHSVC_* variable a developer may have set and
points AUTHSVC_DB at a throw-away file: the tests never touch a real authsvc.db. The
tests' own knobs, AUTHSVC_TEST_* (more Hypothesis or Schemathesis examples, the README's
screenshot), are not the service's settings and stay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
for _name in [
    name
    for name in os.environ
    if name.startswith("AUTHSVC_") and not name.startswith("AUTHSVC_TEST_")
]:
    del os.environ[_name]
_IMPORT_DIR = tempfile.TemporaryDirectory(prefix="authsvc-import-")
os.environ["AUTHSVC_DB"] = os.path.join(_IMPORT_DIR.name, "import.db")
os.environ["AUTHSVC_BCRYPT_ROUNDS"] = "4"

import pgserver
import servers
from servers import GunicornServer
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client, TestResponse

import store
from authsvc import Auth, AuthApp, Config
from store import Store

# bcrypt's lowest cost: a hash takes about a millisecond instead of a quarter second.
# tests/test_auth.py::test_default_cost_* runs at the real default.
FAST_ROUNDS = 4


def pytest_configure(config: pytest.Config) -> None:
    """Register the e2e marker and turn every warning into an error (LintMiddleware's too).

    One exception: LintMiddleware still demands an absolute Location header, which RFC 9110
    section 10.2.2 no longer does; the logout redirect to "/" is relative on purpose.
    """
    config.addinivalue_line(
        "markers", "e2e: starts a real gunicorn server on 127.0.0.1"
    )
    config.addinivalue_line(
        "markers",
        "sqlite_only: reads SQLite's own file or settings; not run on PostgreSQL",
    )
    config.addinivalue_line(
        "markers", "postgresql_only: several hosts on one database; not run on SQLite"
    )
    config.addinivalue_line(
        "markers",
        "browser: drives headless Chromium (Debian's chromium, chromium-driver)",
    )
    config.addinivalue_line("filterwarnings", "error")
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Absolute URLs required for location header:werkzeug.middleware.lint.HTTPWarning",
    )


# ----------------------------------------------------------------------------- in process


class FakeClock:
    """A clock the test moves by hand, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        """Start at a fixed, realistic Unix time."""
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        """The current fake time, in Unix seconds."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


# ----------------------------------------------------------------------------- backends

BACKENDS = ("sqlite", "postgresql")


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Run a test marked `sqlite_only` (it reads SQLite's file or settings) on SQLite
    only, and one marked `postgresql_only` (several hosts on one database) on PostgreSQL."""

    def excluded(item: pytest.Item) -> bool:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec else None
        return bool(
            (item.get_closest_marker("sqlite_only") and backend == "postgresql")
            or (item.get_closest_marker("postgresql_only") and backend == "sqlite")
        )

    kept = [item for item in items if not excluded(item)]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database every store, Auth, HTTP and end-to-end test runs against, in turn."""
    return request.param


@pytest.fixture(scope="session")
def postgres() -> Iterator[pgserver.PostgresServer]:
    """A throw-away PostgreSQL server for the whole run, with a template database that
    holds the schema. Under CI a missing PostgreSQL fails the run; elsewhere its tests
    skip, saying what to install."""
    try:
        import psycopg  # noqa: F401

        server = pgserver.start_postgres()
    except (FileNotFoundError, ImportError) as missing:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {missing}")
        pytest.skip(pgserver.INSTALL_HINT)
    server.sql("CREATE DATABASE authsvc_template")
    Store(server.url("authsvc_template")).initialize()
    server.sql("CREATE DATABASE authsvc_test TEMPLATE authsvc_template")
    yield server
    store.close_all_pools()
    server.remove()


_database_numbers = itertools.count(1)
# Every table a test can write, emptied before each PostgreSQL test.
ALL_TABLES = (
    "users, sessions, login_attempts, reset_attempts, client_attempts, reset_tokens,"
    " verification_codes, two_factor, recovery_codes, mfa_tokens"
)


def new_database_url(
    backend: str, request: pytest.FixtureRequest, path: Path, *, dedicated: bool = False
) -> str:
    """An empty database with the schema: a new file at `path` on SQLite. On PostgreSQL,
    the shared test database emptied (TRUNCATE takes milliseconds where CREATE DATABASE
    takes a third of a second), or with `dedicated` a database of its own copied from
    the template, for a server that outlives one test; dropped at the end."""
    if backend == "sqlite":
        return str(path)
    server = request.getfixturevalue("postgres")
    if not dedicated:
        request.addfinalizer(store.close_all_pools)
        url = server.url("authsvc_test")
        query(url, f"TRUNCATE {ALL_TABLES} RESTART IDENTITY CASCADE")
        return url
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    server.sql(f"CREATE DATABASE {name} TEMPLATE authsvc_template")
    # Finalizers run last-added first: close this process's pools, then drop.
    request.addfinalizer(
        lambda: server.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    )
    request.addfinalizer(store.close_all_pools)
    return server.url(name)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test's own empty database, on the backend of this run of the test."""
    return new_database_url(backend, request, tmp_path / "test.db")


def query(db: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of one statement (written with `?`), read on a connection of the test's own,
    from a SQLite file or a PostgreSQL URL."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return (
                [tuple(row) for row in cursor.fetchall()] if cursor.description else []
            )
    conn = sqlite3.connect(db, isolation_level=None)  # each statement commits
    try:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


@contextlib.contextmanager
def write_lock_held(db: str) -> Iterator[None]:
    """Hold a write lock on the database from a connection of the test's own, as a long
    bulk load in another process would: SQLite's one write lock, or on PostgreSQL an
    EXCLUSIVE lock on users and sessions (reads go on, writes wait)."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE users, sessions IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
        return
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# The per-client and per-email request limits (README "Configuration"), out of the way,
# ONLY for what makes hundreds of requests from one address within a window: the
# session-wide gunicorn servers that many tests share, the property-based tests,
# Schemathesis, the benchmark. Every other test runs on the defaults (a fresh database
# per test), so a default that gets in the course's way fails a test; the tests of the
# limits themselves (tests/test_limits.py) set them low on purpose.
GENEROUS_LIMITS = {
    "client_max_failures": 1_000_000,
    "client_max_logins": 1_000_000,
    "client_max_registrations": 1_000_000,
    "client_max_resets": 1_000_000,
    "reset_max_per_email": 1_000_000,
    "email_max_resets": 1_000_000,
}
GENEROUS_LIMITS_ENV = {
    f"AUTHSVC_{name.upper()}": str(value) for name, value in GENEROUS_LIMITS.items()
}


def postgres_database_of_release(
    postgres: pgserver.PostgresServer,
    fixture: Path,
    schema_version: int,
    tables: tuple[str, ...],
) -> str:
    """A new PostgreSQL database as an earlier release left it: migrations 1 to
    `schema_version` (PostgreSQL's own), then the rows of `tables` copied from the
    release's SQLite `fixture` (ids kept, sequences moved past them, as copy-db does).
    Its URL; the caller drops it."""
    import psycopg

    name = f"release_{schema_version}_{int(time.time() * 1000)}"
    postgres.sql(f"CREATE DATABASE {name}")
    url = postgres.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        for statements in store.POSTGRES_MIGRATIONS[:schema_version]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("CREATE TABLE authsvc_schema_version (version INTEGER NOT NULL)")
        conn.execute(
            "INSERT INTO authsvc_schema_version VALUES (%s)", (schema_version,)
        )
        for table in tables:
            columns = store.COPIED_TABLES[table]
            names = ", ".join(columns)
            for row in query(str(fixture), f"SELECT {names} FROM {table}"):
                values = [
                    bool(value) if column == "email_verified" else value
                    for column, value in zip(columns, row, strict=True)
                ]
                marks = ", ".join(["%s"] * len(columns))
                conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", values)
            if columns[0] == "id":
                store.PostgresDialect.after_copy(conn, table)
    return url


@pytest.fixture
def config(database_url: str) -> Config:
    """Settings for one test: its own empty database, bcrypt at the lowest cost, every
    other setting (the request limits included) at its default."""
    return Config(db=database_url, bcrypt_rounds=FAST_ROUNDS)


@pytest.fixture
def generous_config(config: Config) -> Config:
    """`config` with the request limits out of the way (GENEROUS_LIMITS), for a test
    that makes hundreds of requests from one address."""
    return dataclasses.replace(config, **GENEROUS_LIMITS)


@pytest.fixture
def clock() -> FakeClock:
    """A hand-driven clock shared by the test's Auth."""
    return FakeClock()


@pytest.fixture
def auth(config: Config, clock: FakeClock) -> Iterator[Auth]:
    """An Auth on the test's database (schema applied), driven by the fake clock."""
    instance = Auth(config, clock=clock)
    yield instance
    instance.close()


def client_for(config: Config, clock: Callable[[], float] = time.time) -> Client:
    """A test client, checked by LintMiddleware, of an app built on `config` and `clock`."""
    return Client(LintMiddleware(AuthApp(Auth(config, clock=clock), config)))


@pytest.fixture
def client(auth: Auth, config: Config) -> Client:
    """A Werkzeug test client for the app, checked by LintMiddleware for WSGI mistakes."""
    return Client(LintMiddleware(AuthApp(auth, config)))


@pytest.fixture
def db_rows(config: Config) -> Callable[[], list[tuple]]:
    """Read every row of users straight from the file, to check what a request changed."""
    return lambda: snapshot(config.db)["users"]


@pytest.fixture
def db_state(config: Config) -> Callable[[], dict[str, list[tuple]]]:
    """Read every row of users and sessions of the test's database."""
    return lambda: snapshot(config.db)


def assert_json(response: TestResponse, status: int, body: dict) -> None:
    """The response has this status and exactly this JSON body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == body


def assert_error(response: TestResponse, status: int) -> str:
    """The response is a JSON error with this status; return its message."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    assert list(response.json) == ["message"]
    assert response.json["message"]
    return response.json["message"]


def snapshot(db: str) -> dict[str, list[tuple]]:
    """Every row of the tables that hold accounts and sessions, read from the database."""
    return {
        table: query(db, f"SELECT * FROM {table} ORDER BY 1")
        for table in ("users", "sessions")
    }


@pytest.fixture
def db_snapshot() -> Callable[[str], dict[str, list[tuple]]]:
    """`snapshot`: what a test compares before and after a request that must change nothing."""
    return snapshot


class AuthActions:
    """Shortcuts for the common requests of a test, in the spirit of flaskr's AuthActions."""

    def __init__(self, client: Client) -> None:
        """Drive `client`."""
        self.client = client

    def register(
        self, email: str = "bob@example.com", password: str = "s3cret pw"
    ) -> TestResponse:
        """POST /users with a form body."""
        return self.client.post("/users", data={"email": email, "password": password})

    def login(
        self, email: str = "bob@example.com", password: str = "s3cret pw"
    ) -> TestResponse:
        """POST /sessions with a form body; the client keeps the cookie it gets."""
        return self.client.post(
            "/sessions", data={"email": email, "password": password}
        )

    def reset_token(self, email: str = "bob@example.com") -> str:
        """POST /reset_password and return the token from the response."""
        response = self.client.post("/reset_password", data={"email": email})
        assert response.status_code == 200, response.json
        return response.json["reset_token"]


@pytest.fixture
def actions(client: Client) -> AuthActions:
    """AuthActions bound to the test's client."""
    return AuthActions(client)


# ----------------------------------------------------------------------------- commands


def run_authsvc(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """`python authsvc.py ARGS` as an operator runs it: this process's environment less
    every AUTHSVC_* variable, plus `env`; `stdin` as its standard input (a pipe)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    return subprocess.run(
        [sys.executable, "authsvc.py", *args],
        cwd=servers.ROOT,
        env={**clean, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_course_client(url: str) -> subprocess.CompletedProcess:
    """The course's own client, tests/main.py, against the server at `url`."""
    return subprocess.run(
        [sys.executable, str(servers.ROOT / "tests" / "main.py"), url],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ----------------------------------------------------------------------------- gunicorn


def start_gunicorn(
    db_path: Path | str, log_path: Path, *, generous: bool = False, **options: object
) -> GunicornServer:
    """servers.start_gunicorn with bcrypt at the test cost and every other setting at
    its default (`generous`: the request limits lifted, GENEROUS_LIMITS); a server that
    fails fails the test."""
    env = {
        "AUTHSVC_BCRYPT_ROUNDS": str(FAST_ROUNDS),
        **(GENEROUS_LIMITS_ENV if generous else {}),
        **(options.pop("env", None) or {}),
    }
    try:
        return servers.start_gunicorn(db_path, log_path, env=env, **options)
    except servers.ServerFailed as failure:
        pytest.fail(str(failure))


@pytest.fixture(scope="session")
def gunicorn_server(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GunicornServer]:
    """One shared server per backend: 2 workers x 4 threads, its own temporary database,
    the request limits lifted (every test that uses it adds its requests, all from
    127.0.0.1)."""
    directory = tmp_path_factory.mktemp(f"gunicorn-{backend}")
    db = new_database_url(backend, request, directory / "authsvc.db", dedicated=True)
    server = start_gunicorn(db, directory / "gunicorn.log", generous=True)
    yield server
    server.stop()


@pytest.fixture
def start_gunicorn_on(tmp_path: Path) -> Iterator[Callable[[str], GunicornServer]]:
    """Start servers on a database the test names; every one is stopped after."""
    started: list[GunicornServer] = []

    def start(db: str) -> GunicornServer:
        server = start_gunicorn(db, tmp_path / "gunicorn.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_server(
    database_url: str, tmp_path: Path
) -> Iterator[Callable[..., GunicornServer]]:
    """Start servers of the test's own on the test's database; every one is stopped after."""
    started: list[GunicornServer] = []

    def start(**kwargs: object) -> GunicornServer:
        server = start_gunicorn(database_url, tmp_path / "gunicorn.log", **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# What must never appear in a log line: a uuid4 (every session id and reset token is
# one), a bcrypt hash, a SHA-256 digest in hex (what the database keeps of them), and the
# passwords the end-to-end tests send.
SECRET_PATTERNS = [
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
    re.compile(r"\$2[aby]\$\d\d\$"),
    re.compile(r"\b[0-9a-f]{64}\b"),
    re.compile(
        "|".join(
            re.escape(password)
            for password in (
                "s3cret pw",
                "n3w pw",
                "Sup3r-S3cret-Pw",
                "Correct-Horse-Battery-Staple",
                "old password",
                "alice-password",
            )
        )
    ),
]


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_server_log() -> Iterator[None]:
    """After the whole run: no log line of any gunicorn server the tests started holds
    a session id, a reset token, a hash, a digest or a password the tests used."""
    yield
    leaks = [
        f"{path}: {line.strip()}"
        for path in sorted(servers.LOG_PATHS)
        if path.exists()
        for line in path.read_text(errors="replace").splitlines()
        if any(pattern.search(line) for pattern in SECRET_PATTERNS)
    ]
    assert not leaks, "secrets in server logs:\n" + "\n".join(leaks[:20])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Iterator[None]:
    """When a test fails, attach the logs of the gunicorn servers still running."""
    report = yield
    if report.failed:
        for server in servers.RUNNING:
            report.sections.append((f"gunicorn log ({server.log_path})", server.log()))
    return report
