"""The data layer of authsvc: parameterized SQL through sqlite3 or psycopg, against a schema file.

It mirrors the course's `DB` class (`add_user`, `find_user_by`, `update_user`) without an ORM,
so every statement the service runs can be read here. Each statement is written once, with
`?` placeholders; what differs between the two databases (placeholders, how a write
transaction starts, row locks, the migration bookkeeping, their errors) is gathered in
the two dialect classes under "Dialects", and nowhere else.

`AUTHSVC_DB` picks the database: a file path is SQLite (schema.sql), a `postgresql://` URL
is PostgreSQL (schema.postgres.sql, with the same numbered migrations), through psycopg
and its pool, imported only then: a SQLite user needs neither installed.

Connections. A connection must not be shared between threads (sqlite3's
`check_same_thread` raises if it is) nor carried across `fork()` (two processes would then
share one socket or file lock). Nothing is opened at import or by the constructor, and
nothing opened in one process is used in another, so `gunicorn --preload` forks none.
- SQLite: each thread opens its own connection lazily and keeps it (gunicorn's gthread
  workers keep a fixed pool of threads). Opening one and preparing its statements again
  for every request cost `GET /profile` more than the rest of the request did.
- PostgreSQL: each process opens a pool (psycopg_pool) on first use; a store call borrows
  a connection for its statements and gives it back; a transaction keeps one throughout.

Writes. Every write runs inside `transaction()`. On SQLite `BEGIN IMMEDIATE` takes the one
write lock at the start, so every check-and-set is atomic across gunicorn workers. On
PostgreSQL (READ COMMITTED, several hosts) each check-and-set is made atomic on its own:
a unique index (emails), a conditional UPDATE (single-use reset tokens, session uses), an
upsert (throttle counters), or a lock of the user's row (a login and a reset of one user
queue behind each other, which also keeps the sessions bound), as each method says.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
POSTGRES_SCHEMA_PATH = Path(__file__).with_name("schema.postgres.sql")
logger = logging.getLogger("authsvc.store")

# How long a statement waits for a lock another connection holds (SQLite's busy timeout,
# PostgreSQL's lock_timeout) before giving up. Writes here take milliseconds, so 5 s
# means real trouble: the caller answers "try again" (DatabaseBusy).
BUSY_TIMEOUT_SECONDS = 5.0
# PostgreSQL only: how long to wait for the server to accept a connection, and for any
# one statement. A database that does not answer makes a request fail in seconds (503),
# never hang.
CONNECT_TIMEOUT_SECONDS = 3
STATEMENT_TIMEOUT_SECONDS = 5.0
# PostgreSQL only: how long the pool keeps retrying, with a growing back-off, to open a
# connection the server refuses. After that it stops, and the next request that needs a
# connection starts a new attempt at once: so when the server is back, every worker
# connects within a few seconds, however long the outage was.
RECONNECT_SECONDS = 3.0
# How long a starting worker waits for a write lock it needs to upgrade the schema, or
# for a PostgreSQL server that does not answer yet.
BOOT_WAIT_SECONDS = 120.0
# Meanwhile it tries again every second and says so every this many seconds.
BOOT_WARNING_SECONDS = 5.0


# ----------------------------------------------------------------------------- errors


class UserNotFound(LookupError):
    """No row of `users` matches the filters (the course's `NoResultFound`)."""


class InvalidQuery(ValueError):
    """A filter or field names no column of `users` (the course's `InvalidRequestError`)."""


class DuplicateEmail(ValueError):
    """The email is already registered: the unique index refused a second row."""


class InvalidValue(ValueError):
    """A value the schema refuses (NULL where a column needs one), not a duplicate."""


class DatabaseBusy(RuntimeError):
    """Another connection held a lock we needed for longer than the busy timeout."""


class DatabaseUnavailable(RuntimeError):
    """The database server does not answer (PostgreSQL down, unreachable, overloaded)."""


class DatabaseUnusable(RuntimeError):
    """The database cannot serve: it cannot be opened, or it cannot be written."""


class RowNotCopied(RuntimeError):
    """copy-db: the target database refuses one of the rows (the message names it)."""


class SchemaTooNew(RuntimeError):
    """The database was upgraded by a newer authsvc than this one: refuse to touch it."""


# ----------------------------------------------------------------------------- the rows


@dataclasses.dataclass(frozen=True)
class User:
    """One row of `users`. `session_id` and `reset_token` hold SHA-256 digests, not secrets."""

    id: int
    email: str
    hashed_password: str
    session_id: str | None = None
    reset_token: str | None = None
    session_expires_at: float | None = None
    reset_expires_at: float | None = None
    email_key: str | None = None
    # Migration 9: the address proved to be the user's; when the account was made (Unix
    # seconds); the address an email change waits to confirm.
    email_verified: bool = True
    created_at: float | None = None
    pending_email: str | None = None


# The columns of `users`, in table order. Only these names are ever put into SQL text;
# every value goes through a placeholder. tests/test_store.py checks that this list
# matches the table, so the schema files and this file cannot drift apart.
USER_COLUMNS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(User))
_SELECT_USER = f"SELECT {', '.join(USER_COLUMNS)} FROM users"


def email_key(email: str) -> str:
    """The form of an email that uniqueness and lookups compare: Unicode case folding.

    "JOSÉ@x.io", "josé@x.io" and "Jose\u0301@x.io" (a combining accent) all give
    "josé@x.io". Computed here, once, for both databases: SQLite's NOCASE folds ASCII
    only, and PostgreSQL's lower() depends on the server's locale.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", email).casefold())


# What marks the key of an account that shares its folded email with an older one
# (migrations 5 and 8). Case folding never outputs an ASCII capital letter, so no
# email's folded key can start with it: no sign-up can make a legacy key (migration 5's
# "=" was a character an address may start with, so "=bob@x.io" could take over the
# legacy key of "bob@x.io").
LEGACY_KEY_PREFIX = "EXACT:"


def exact_email_key(email: str) -> str:
    """The key of an account that shares its folded email with an older one (see
    migrations 5 and 8): its exact spelling behind LEGACY_KEY_PREFIX, so it still logs
    in as before, by that spelling and no other."""
    return LEGACY_KEY_PREFIX + email


@dataclasses.dataclass(frozen=True)
class Session:
    """One row of `sessions`: a login on one device. Times are Unix seconds."""

    id: int
    public_id: str
    user_id: int
    digest: str
    created_at: float
    last_used_at: float
    expires_at: float
    user_agent: str = ""
    ip: str = ""


SESSION_COLUMNS: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(Session)
)
_SELECT_SESSION = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"
# The session check of every authenticated request: the session and its user in one
# lookup of the unique digest index (then one of the users primary key).
_SELECT_SESSION_AND_USER = (
    f"SELECT {', '.join('s.' + column for column in SESSION_COLUMNS)}, "
    f"{', '.join('u.' + column + ' AS user_' + column for column in USER_COLUMNS)} "
    "FROM sessions AS s JOIN users AS u ON u.id = s.user_id WHERE s.digest = ?"
)

# The hot path's session check: the same lookup, five columns.
_SELECT_HOT_CHECK = (
    "SELECT s.id, s.expires_at, s.last_used_at, u.id, u.email"
    " FROM sessions AS s JOIN users AS u ON u.id = s.user_id WHERE s.digest = ?"
)
# Where the user's columns start in that row, and where email_verified is among them
# (an INTEGER 0/1 on SQLite, a BOOLEAN on PostgreSQL: a bool in User).
_SESSION_WIDTH = len(SESSION_COLUMNS)
_EMAIL_VERIFIED = USER_COLUMNS.index("email_verified")

# The columns of `reset_tokens` (migration 7): one row per live token.
RESET_TOKEN_COLUMNS = ("digest", "user_id", "expires_at")


@dataclasses.dataclass(frozen=True)
class TwoFactorRow:
    """One row of `two_factor` (migration 10): the sealed secrets (factors.SecretBox),
    never a secret itself. Two-factor is on while `secret` is not None."""

    user_id: int
    secret: str | None
    pending_secret: str | None
    pending_expires_at: float | None
    last_step: int
    enabled_at: float | None


TWO_FACTOR_COLUMNS: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(TwoFactorRow)
)


@dataclasses.dataclass(frozen=True)
class PasskeyRow:
    """One row of `passkeys` (migration 11): a registered WebAuthn credential. Its
    public key is public; nothing here opens anything without the authenticator."""

    id: int
    public_id: str
    user_id: int
    credential_id: str
    public_key: str
    sign_count: int
    name: str
    created_at: float
    last_used_at: float | None


PASSKEY_COLUMNS: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(PasskeyRow)
)

# What `copy_into` copies, in an order that keeps foreign keys satisfied; each table in
# the order of its first column (its key). Two-factor goes with the account: a copy
# without it would let its users log in with the password alone.
COPIED_TABLES: dict[str, tuple[str, ...]] = {
    "users": USER_COLUMNS,
    "sessions": SESSION_COLUMNS,
    "reset_tokens": RESET_TOKEN_COLUMNS,
    "two_factor": TWO_FACTOR_COLUMNS,
    "recovery_codes": ("digest", "user_id"),
    "passkeys": PASSKEY_COLUMNS,
}
# Columns SQLite stores as INTEGER 0/1 and PostgreSQL as BOOLEAN (which takes no integer).
BOOLEAN_COLUMNS = {"users": ("email_verified",)}

# The tables that count attempts per email within a window, all of one shape
# (login_attempts, migration 2; reset_attempts, migration 4).
ATTEMPT_TABLES = ("login_attempts", "reset_attempts")

# The kinds of per-client counter in `client_attempts` (migrations 7 and 8).
CLIENT_ATTEMPT_KINDS = (
    "login_all",
    "login_client",
    "login_pair",
    "reset",
    "reset_pair",
    "register",
)


@dataclasses.dataclass(frozen=True)
class CodeSends:
    """The verification codes sent to one user: how many since `started_at` (the
    current window's start) and when the last one went (Unix seconds)."""

    sends: int
    started_at: float
    last_sent_at: float


@dataclasses.dataclass(frozen=True)
class LoginAttempts:
    """The attempts (logins, or reset requests) counted for one email in its window."""

    attempts: int
    window_started_at: float


# ----------------------------------------------------------------------------- schema

_MIGRATION_HEADER = re.compile(r"^-- @migration (\d+):.*$", re.MULTILINE)


def read_migrations(text: str) -> list[list[str]]:
    """Split a schema file into its migrations, each a list of SQL statements, in order.

    Migration N is the text after the header line `-- @migration N: ...` up to the next
    header. Numbers must run 1, 2, 3...; statements are cut at the `;` that completes
    them (sqlite3.complete_statement), so a `;` inside a comment or string is safe.
    """
    parts = _MIGRATION_HEADER.split(text)
    numbers = [int(number) for number in parts[1::2]]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(
            f"schema migrations must be numbered 1, 2, 3...; found {numbers}"
        )
    return [_statements(body) for body in parts[2::2]]


def _statements(sql: str) -> list[str]:
    """The complete SQL statements in `sql`, in order (comments between them dropped)."""
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


MIGRATIONS = read_migrations(SCHEMA_PATH.read_text(encoding="utf-8"))
POSTGRES_MIGRATIONS = read_migrations(POSTGRES_SCHEMA_PATH.read_text(encoding="utf-8"))
SCHEMA_VERSION = len(MIGRATIONS)
if len(POSTGRES_MIGRATIONS) != SCHEMA_VERSION:
    raise RuntimeError(
        "schema.sql and schema.postgres.sql must have the same migrations"
    )


# ============================================================================ Dialects
# Everything that differs between SQLite and PostgreSQL, and nothing else. The methods
# of Store below write each statement once, with `?` placeholders, and call these.


class SqliteDialect:
    """SQLite: one file, one writer at a time (BEGIN IMMEDIATE), PRAGMA user_version."""

    name = "sqlite"
    migrations = MIGRATIONS
    # A filter on a NULL value: `IS ?` matches NULL where `= ?` never does.
    null_safe_equal = "IS"
    # BEGIN IMMEDIATE takes the database's single write lock at once, so every write
    # transaction runs alone and a check-and-set inside it needs no lock of its own.
    begin_write = "BEGIN IMMEDIATE"
    lock_user: str | None = None
    # The legacy keys (LEGACY_KEY_PREFIX), as a range: email_key compares byte by byte.
    legacy_keys = "email_key >= ? AND email_key < ?"

    @staticmethod
    def fetch_values(conn: sqlite3.Connection, sql: str, params: tuple) -> list:
        """The rows of one statement as sequences of values in column order (a
        sqlite3.Row is one), for reading by position."""
        return conn.execute(sql, params).fetchall()

    @staticmethod
    def sql(text: str) -> str:
        """`text` as this database's driver takes it (sqlite3 takes `?` itself)."""
        return text

    @staticmethod
    def schema_version(conn: Any) -> int:
        """The number of the last migration applied (0 for a new file)."""
        return conn.execute("PRAGMA user_version").fetchone()[0]

    @staticmethod
    def set_schema_version(conn: Any, number: int) -> None:
        """Record migration `number` as applied (a PRAGMA takes no placeholder; `number`
        is an int this code computed)."""
        conn.execute(f"PRAGMA user_version = {int(number)}")

    @staticmethod
    def migration_lock(conn: Any) -> AbstractContextManager[None]:
        """Nothing: the write transaction (BEGIN IMMEDIATE) excludes every other writer."""
        return nullcontext()

    @staticmethod
    def after_copy(conn: Any, table: str) -> None:
        """Nothing: an INTEGER PRIMARY KEY continues after the largest id by itself."""

    @staticmethod
    def translate(error: Exception) -> Exception | None:
        """The store's error for a driver error, or None when it is none of ours."""
        if isinstance(error, sqlite3.IntegrityError):
            if error.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_UNIQUE:
                return DuplicateEmail("the email is already registered")
            return InvalidValue(
                f"the database refused the values: {error.sqlite_errorname}"
            )
        if isinstance(error, sqlite3.OperationalError) and error.sqlite_errorcode in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        ):
            logger.warning(
                "a lock was busy for %.0f s: giving up", BUSY_TIMEOUT_SECONDS
            )
            return DatabaseBusy("the database is busy")
        return None


class PostgresDialect:
    """PostgreSQL: many writers at once (READ COMMITTED), row locks, a version table."""

    name = "postgresql"
    migrations = POSTGRES_MIGRATIONS
    null_safe_equal = "IS NOT DISTINCT FROM"
    begin_write = "BEGIN"
    # Writers of one user's rows (a login, a reset, ending sessions) take this lock
    # first, so they queue behind each other as SQLite's single writer lock makes them.
    lock_user: str | None = "SELECT id FROM users WHERE id = ? FOR UPDATE"
    # The same range in byte order: the database's own collation may ignore
    # punctuation and put "EXACT:bob" after "EXACT;".
    legacy_keys = 'email_key COLLATE "C" >= ? AND email_key COLLATE "C" < ?'
    # Several hosts may start at once: the first to take this lock migrates, the others
    # wait and then find nothing to do. The number is arbitrary, the same everywhere.
    MIGRATION_LOCK_KEY = 7_244_637_001

    @staticmethod
    def fetch_values(conn: Any, sql: str, params: tuple) -> list:
        """The rows of one statement as tuples in column order: a cursor of its own
        with psycopg's tuple_row (the connection's dict_row would merge two columns
        of one name)."""
        from psycopg.rows import tuple_row

        return conn.cursor(row_factory=tuple_row).execute(sql, params).fetchall()

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def sql(text: str) -> str:
        """psycopg writes a placeholder `%s` (the statements here hold no `%`)."""
        return text.replace("?", "%s")

    @staticmethod
    def schema_version(conn: Any) -> int:
        """The number in authsvc_schema_version (0 before the first migration)."""
        exists = conn.execute(
            "SELECT to_regclass('authsvc_schema_version') IS NOT NULL AS present"
        ).fetchone()["present"]
        if not exists:
            return 0
        return conn.execute("SELECT version FROM authsvc_schema_version").fetchone()[
            "version"
        ]

    @staticmethod
    def set_schema_version(conn: Any, number: int) -> None:
        """Record migration `number` as applied, in a one-row table."""
        conn.execute(
            "CREATE TABLE IF NOT EXISTS authsvc_schema_version (version INTEGER NOT NULL)"
        )
        conn.execute("DELETE FROM authsvc_schema_version")
        conn.execute("INSERT INTO authsvc_schema_version VALUES (%s)", (number,))

    @classmethod
    @contextmanager
    def migration_lock(cls, conn: Any) -> Iterator[None]:
        """Queue behind any other host or worker migrating, around the migration's
        transaction (a session lock, taken before BEGIN and released after the end).

        Taken before the transaction starts, not inside it: a transaction reads the
        catalog through caches it refreshes when it begins, so one that began before
        another worker's migrations committed could still see the tables as they were,
        read version 0, and run a migration again (migration 8's RENAME COLUMN then
        fails; the earlier ones are idempotent, which had hidden it).
        """
        conn.execute("SELECT pg_advisory_lock(%s)", (cls.MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (cls.MIGRATION_LOCK_KEY,))

    @staticmethod
    def after_copy(conn: Any, table: str) -> None:
        """Move the table's identity sequence past the ids copied in, so the next insert
        does not collide with them. `table` is one of COPIED_TABLES."""
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        )

    @staticmethod
    def translate(error: Exception) -> Exception | None:
        """The store's error for a psycopg error, or None when it is none of ours."""
        import psycopg
        import psycopg_pool

        if isinstance(error, psycopg.errors.UniqueViolation):
            return DuplicateEmail("the email is already registered")
        if isinstance(error, psycopg.IntegrityError | psycopg.DataError):
            # DataError: a value too long for its column, or of the wrong type.
            return InvalidValue(f"the database refused the values: {error.sqlstate}")
        if isinstance(
            error,
            psycopg.errors.LockNotAvailable
            | psycopg.errors.QueryCanceled
            | psycopg.errors.DeadlockDetected,
        ):
            logger.warning(
                "PostgreSQL gave up on a lock or a statement after %.0f s",
                BUSY_TIMEOUT_SECONDS,
            )
            return DatabaseBusy("the database is busy")
        if isinstance(
            error,
            psycopg.OperationalError
            | psycopg.InterfaceError
            | psycopg_pool.PoolTimeout,
        ):
            logger.warning("PostgreSQL does not answer: %s", type(error).__name__)
            return DatabaseUnavailable("the database does not answer")
        return None


def dialect_for(url: str) -> type[SqliteDialect | PostgresDialect]:
    """PostgreSQL for a postgresql:// (or postgres://) URL, SQLite for anything else."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDialect
    return SqliteDialect


# ----------------------------------------------------------------------------- connections


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open a SQLite connection configured the way every part of authsvc expects.

    `isolation_level=None` turns off the sqlite3 module's implicit transactions, so the
    only transactions are the explicit ones of `Store.transaction()`. `timeout` is
    SQLite's busy timeout. `check_same_thread` stays at its default (True): a free
    tripwire if a connection ever leaks into another thread. The `authsvc_email_key`
    function lets migration 5 fold existing emails exactly as Python does, and
    `authsvc_sha256` lets migration 8 key the attempt tables by digest.
    """
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.create_function("authsvc_email_key", 1, email_key, deterministic=True)
    conn.create_function("authsvc_sha256", 1, sha256_hex, deterministic=True)
    return conn


def _journal_mode(conn: sqlite3.Connection) -> str:
    """The file's journal mode ("wal" once initialize() has run; "delete" before)."""
    return conn.execute("PRAGMA journal_mode").fetchone()[0]


def connect_postgres(url: str) -> Any:
    """Open one PostgreSQL connection with authsvc's settings (not from a pool)."""
    import psycopg
    from psycopg.rows import dict_row

    return psycopg.connect(url, **_postgres_settings(), row_factory=dict_row)


def _postgres_settings() -> dict[str, Any]:
    """Connection settings: autocommit (the store writes BEGIN/COMMIT itself), and the
    timeouts that turn a database that does not answer into an error within seconds."""
    return {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "options": (
            f"-c statement_timeout={int(STATEMENT_TIMEOUT_SECONDS * 1000)}"
            f" -c lock_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}"
            " -c idle_in_transaction_session_timeout=30000"
        ),
    }


# This process's id, kept current across forks by the interpreter's fork hook: the
# connection check of every request compares against it without a getpid() system call.
_PROCESS = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, os.getpid()))


class SqliteConnections:
    """A SQLite connection per thread, opened on first use and kept."""

    def __init__(self, path: str) -> None:
        """Remember the file; open nothing."""
        self.path = path
        self._local = threading.local()
        self._writer_lock = threading.Lock()
        self._writer_pid = os.getpid()

    @contextmanager
    def one_writer(self) -> Iterator[None]:
        """Let one thread of this process at a time into a write transaction.

        SQLite has one write lock per file. A thread that finds it taken sleeps in
        SQLite's busy handler, 1 ms, then 2, 5, 10 ... up to 100 ms at a time, and may
        sleep through the moment it was freed: with 16 threads queueing for it the
        slowest logins waited over a second (p99 16 times the p50 at bcrypt cost 4).
        Threads of one process wait here instead, on a lock that wakes the next one as
        soon as it is released; only the processes (gunicorn's workers) still meet in
        SQLite's handler. Past the busy timeout: DatabaseBusy, as SQLite would say.
        """
        if self._writer_pid != os.getpid():  # a fork: a lock of this process's own
            self._writer_lock = threading.Lock()
            self._writer_pid = os.getpid()
        lock = self._writer_lock
        if not lock.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise DatabaseBusy("another write of this process held on too long")
        try:
            yield
        finally:
            lock.release()

    def borrow(
        self, timeout: float | None = None
    ) -> AbstractContextManager[sqlite3.Connection]:
        """This thread's connection (opened now if it has none, or if it was opened in
        another process before a fork), as a context manager like the pool's. Nothing
        to give back, so `nullcontext`: the session check of every request passes here,
        and a class-based context manager costs less than a generator-based one.
        `timeout` is for PostgreSQL's pool: a local file needs no waiting."""
        return nullcontext(self.thread_connection())

    def thread_connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again after a fork)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != _PROCESS[0]:
            conn = connect(self.path)
            self._local.conn = conn
            self._local.pid = _PROCESS[0]
        return conn

    def close(self) -> None:
        """Close this thread's connection, if it has one; the next use opens a new one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None


# Every PostgreSQL pool holder this process made, for `close_all_pools`. Strong
# references: a pool must be closed, not garbage-collected (its __del__ would try to
# join its worker threads, possibly from one of them). A server makes one or two.
_ALL_POSTGRES_CONNECTIONS: list[PostgresConnections] = []


def close_all_pools() -> None:
    """Close every PostgreSQL pool of this process (tests, and commands before they exit)."""
    while _ALL_POSTGRES_CONNECTIONS:
        _ALL_POSTGRES_CONNECTIONS.pop().close()


# PostgreSQL only: a pooled connection idle for longer than this is tested (one round
# trip) before a request gets it; one returned more recently was just proven to work.
IDLE_CHECK_SECONDS = 1.0


def _mark_returned(conn: Any) -> None:
    """psycopg_pool's `reset` hook: note when the connection came back to the pool."""
    conn.authsvc_returned_at = time.monotonic()


def _check_if_idle(conn: Any) -> None:
    """psycopg_pool's `check` hook: test a connection that sat idle (the server may have
    restarted meanwhile); raising makes the pool drop it and hand out another."""
    from psycopg_pool import ConnectionPool

    if (
        time.monotonic() - getattr(conn, "authsvc_returned_at", 0.0)
        > IDLE_CHECK_SECONDS
    ):
        ConnectionPool.check_connection(conn)


def _log_reconnect_failed(pool: Any) -> None:
    """psycopg_pool gave up a reconnection chain: say so once (the next request retries)."""
    logger.warning("PostgreSQL refused connections for %.0f s", RECONNECT_SECONDS)


class PostgresConnections:
    """A psycopg_pool pool per process, opened on first use.

    A connection that sat idle is tested before it is handed out, so after the server
    restarted a request gets a fresh connection rather than a dead one (and a 503);
    one in steady use is not, which spares a round trip per request.
    """

    def __init__(self, url: str, size: int) -> None:
        """Remember where and how many; open nothing (no connection may cross a fork)."""
        self.url = url
        self.size = size
        self._pool: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def one_writer(self) -> AbstractContextManager[None]:
        """Nothing: PostgreSQL locks rows, not the database, so writers do not queue
        for one lock (SqliteConnections.one_writer is the SQLite side)."""
        return nullcontext()

    def _pool_of_this_process(self) -> Any:
        """The pool, opened on first use in this process."""
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                from psycopg.rows import dict_row
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.size,
                    kwargs={**_postgres_settings(), "row_factory": dict_row},
                    check=_check_if_idle,
                    reset=_mark_returned,
                    timeout=CONNECT_TIMEOUT_SECONDS + 2,
                    reconnect_timeout=RECONNECT_SECONDS,
                    reconnect_failed=_log_reconnect_failed,
                    open=False,
                    name="authsvc",
                )
                self._pool.open(wait=False)
                self._pid = os.getpid()
                _ALL_POSTGRES_CONNECTIONS.append(self)
            return self._pool

    @contextmanager
    def borrow(self, timeout: float | None = None) -> Iterator[Any]:
        """A connection from the pool, given back at the end of the block; wait at most
        `timeout` seconds for one (the pool's own timeout when None)."""
        with self._pool_of_this_process().connection(timeout=timeout) as conn:
            yield conn

    def close(self) -> None:
        """Close this process's pool and its connections (tests, admin commands)."""
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.close()
            self._pool = None


def _checked_columns(names: Any, *, allow_id: bool) -> list[str]:
    """Return `names` as a list after checking each against the allow-list of columns.

    Raises InvalidQuery naming the offending keys: they came from a caller, and pasting an
    unchecked name into SQL text would be an injection.
    """
    allowed = set(USER_COLUMNS) if allow_id else set(USER_COLUMNS) - {"id"}
    names = list(names)
    unknown = sorted(name for name in names if name not in allowed)
    if unknown:
        raise InvalidQuery(f"not a column of users: {', '.join(unknown)}")
    return names


@functools.lru_cache(maxsize=128)
def _select_where(shape: tuple[tuple[str, bool], ...], null_safe_equal: str) -> str:
    """The SELECT for filters of this shape: ((column, value is None), ...).

    Built once per shape and cached: the same SQL text also lets the driver reuse the
    statement it prepared. A filter on `email` compares folded keys (see `email_key`):
    two placeholders, the folded and the exact key, the exact one preferred. Raises
    InvalidQuery for a name that is not a column.
    """
    columns = _checked_columns((column for column, _ in shape), allow_id=True)
    conditions, order = [], ""
    for column, (_, is_none) in zip(columns, shape, strict=True):
        if column == "email":
            conditions.append("email_key IN (?, ?)")
            order = " ORDER BY email_key <> ?"
        elif is_none:
            conditions.append(f"{column} {null_safe_equal} ?")
        else:
            conditions.append(f"{column} = ?")  # `= ?` can use the indexes
    return f"{_SELECT_USER} WHERE {' AND '.join(conditions)}{order} LIMIT 1"


def _select_values(filters: dict[str, Any]) -> list[Any]:
    """The values for `_select_where`'s placeholders, in order."""
    values: list[Any] = []
    exact = None
    for column, value in filters.items():
        if column == "email" and isinstance(value, str):
            exact = exact_email_key(value)
            values += [email_key(value), exact]
        elif column == "email":
            values += [value, value]
        else:
            values.append(value)
    if "email" in filters:
        values.append(exact)
    return values


def _attempt_key(email: str) -> str:
    """An email's folded form, with NUL (which PostgreSQL cannot take, and no registered
    email holds) shown as U+FFFD: what its attempts are counted for."""
    return email_key(email).replace("\0", "\ufffd")


def _subject_key(email: str) -> str:
    """What the attempt tables key an email's attempts by: the SHA-256 (hex) of its
    attempt key. 64 characters whatever the address (an address folds longer than it
    is typed: "ß" is "ss"), and no address in the table; '' for none."""
    if not email:
        return ""
    return hashlib.sha256(_attempt_key(email).encode("utf-8")).hexdigest()


def sha256_hex(text: str) -> str:
    """SHA-256 of `text` in UTF-8, in hex (SQLite's `authsvc_sha256`, for migration 8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _user_from_row(row: Any) -> User:
    """Build a User from a row selected with `_SELECT_USER`.

    `email_verified` is an INTEGER 0/1 on SQLite and a BOOLEAN on PostgreSQL: a bool here.
    """
    values = {column: row[column] for column in USER_COLUMNS}
    values["email_verified"] = bool(values["email_verified"])
    return User(**values)


def _session_from_row(row: Any) -> Session:
    """Build a Session from a row selected with `_SELECT_SESSION`."""
    return Session(**{column: row[column] for column in SESSION_COLUMNS})


# ----------------------------------------------------------------------------- the store


class _DriverErrors:
    """`with _DriverErrors(dialect):` turns a driver error leaving the block into the
    store's own, by the dialect's `translate`; any other error leaves as it is.

    A class rather than a @contextmanager generator: every store call passes through
    one, the session check of every request included, and this costs less.
    """

    def __init__(self, dialect: type[SqliteDialect | PostgresDialect]) -> None:
        """Translate with `dialect`."""
        self.dialect = dialect

    def __enter__(self) -> None:
        """Nothing to set up."""

    def __exit__(
        self, kind: object, error: BaseException | None, traceback: object
    ) -> None:
        """Raise the store's error instead of a driver's; let anything else through."""
        if isinstance(error, Exception):
            translated = self.dialect.translate(error)
            if translated is not None:
                raise translated from None


class _Connection:
    """`with store._conn() as conn:` the open transaction's connection, else one
    borrowed for the block; a driver error leaving the block (or the borrowing) leaves
    as the store's own, by the dialect's `translate`.

    A class rather than a @contextmanager generator: every store call passes through
    one, the session check of every request included, and this costs less.
    """

    __slots__ = ("borrowed", "store", "timeout")

    def __init__(self, store: Store, timeout: float | None) -> None:
        """For one call of `store`'s; nothing borrowed yet."""
        self.store = store
        self.timeout = timeout
        self.borrowed: AbstractContextManager[Any] | None = None

    def __enter__(self) -> Any:
        """The transaction's connection, or a borrowed one."""
        current = getattr(self.store._local, "conn", None)
        if current is not None:
            return current
        with self.store._translating():
            borrowed = self.store._connections.borrow(self.timeout)
            connection = borrowed.__enter__()
        self.borrowed = borrowed
        return connection

    def __exit__(
        self, kind: object, error: BaseException | None, traceback: object
    ) -> None:
        """Give a borrowed connection back; raise the store's error for a driver's."""
        if self.borrowed is not None:
            with self.store._translating():
                self.borrowed.__exit__(kind, error, traceback)
        if isinstance(error, Exception):
            translated = self.store.dialect.translate(error)
            if translated is not None:
                raise translated from None


class Store:
    """The users, sessions and counters of one database: a SQLite file or PostgreSQL.

    Its methods come in groups, each under a banner naming the tables it serves: the
    lifecycle (schema, connections, transactions), then one group per table, so
    everything about sessions, say, is in one place.
    """

    def __init__(self, path: str | os.PathLike[str], pool_size: int = 16) -> None:
        """Remember where the database is; open nothing yet (see the module docstring).

        `pool_size`: PostgreSQL connections per process at most (one per thread that
        uses the database at the same moment). Raises DatabaseUnusable for ":memory:"
        (or an empty path): every connection would get a database of its own, empty, so
        nothing would be shared.
        """
        self.path = os.fspath(path)
        self.dialect = dialect_for(self.path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise DatabaseUnusable(
                f"{self.path!r} is not a file: every connection would see its own empty database"
            )
        self._connections: SqliteConnections | PostgresConnections = (
            PostgresConnections(self.path, pool_size)
            if self.dialect is PostgresDialect
            else SqliteConnections(self.path)
        )
        self._local = threading.local()  # the connection of an open transaction
        self._session_check = self.dialect.sql(_SELECT_SESSION_AND_USER)
        self._hot_check = self.dialect.sql(_SELECT_HOT_CHECK)

    # ====================================================================================
    # Lifecycle: the schema, connections and transactions
    # ====================================================================================

    def initialize(self) -> None:
        """Bring the database up to the current schema, on a connection closed after.

        Safe to run in every worker of every host at every start-up. When the database
        is current it only reads (no lock at all), so a worker can boot while another
        process holds the write lock for a long bulk load. When migrations are due, the
        version is read again inside the write transaction (after the migration lock on
        PostgreSQL), so of several workers or hosts starting at once the first applies
        them and the others find nothing left to do. A lock held past the busy timeout,
        or a PostgreSQL server that does not answer yet, is waited out, tried again every
        second with a warning every BOOT_WARNING_SECONDS, up to BOOT_WAIT_SECONDS: a
        worker that gave up would make gunicorn stop the whole server. Raises SchemaTooNew for a database a newer
        authsvc has upgraded, DatabaseUnusable for one that cannot be opened or written,
        DatabaseBusy or DatabaseUnavailable once BOOT_WAIT_SECONDS have passed.
        """
        deadline = time.monotonic() + BOOT_WAIT_SECONDS
        next_warning = 0.0
        while True:
            try:
                self._initialize_once()
                return
            except (DatabaseBusy, DatabaseUnavailable):
                now = time.monotonic()
                if now >= deadline:
                    raise
                if now >= next_warning:
                    logger.warning("the schema check waits for the database")
                    next_warning = now + BOOT_WARNING_SECONDS
                time.sleep(1)

    def _initialize_once(self) -> None:
        """One attempt of `initialize`."""
        if self.dialect is SqliteDialect:
            try:
                conn = connect(self.path)
            except sqlite3.OperationalError as error:  # a missing directory, say
                raise DatabaseUnusable(f"cannot open {self.path}: {error}") from None
            self._check_writable()
        else:
            with self._translating():
                conn = connect_postgres(self.path)
        try:
            with self._translating():
                self._upgrade(conn)
                self._warn_about_shared_emails(conn)
        finally:
            conn.close()

    def _translating(self) -> _DriverErrors:
        """A context manager that turns a driver error leaving the block into the
        store's own (DatabaseBusy, DatabaseUnavailable, DuplicateEmail, InvalidValue)."""
        return _DriverErrors(self.dialect)

    def _check_writable(self) -> None:
        """Raise DatabaseUnusable unless this process may write the file and its folder.

        SQLite opens a read-only file without complaint and fails at the first write;
        in WAL mode it also creates `-wal` and `-shm` files beside it. Better to refuse
        at start-up than to answer every registration with an error.
        """
        folder = os.path.dirname(os.path.abspath(self.path))
        for target in (self.path, folder):
            # effective_ids: what the process may do, as the kernel will decide it.
            if os.path.exists(target) and not os.access(
                target, os.W_OK, effective_ids=True
            ):
                raise DatabaseUnusable(f"{target} is not writable by this process")

    def _upgrade(self, conn: Any) -> None:
        """Apply the migrations the database lacks (SQLite: in WAL mode, which persists)."""
        dialect = self.dialect
        if dialect is SqliteDialect and _journal_mode(conn) != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        if dialect.schema_version(conn) == SCHEMA_VERSION:
            return
        with dialect.migration_lock(conn):
            conn.execute(dialect.begin_write)
            try:
                version = dialect.schema_version(conn)
                if version > SCHEMA_VERSION:
                    raise SchemaTooNew(
                        f"the database has schema version {version}; this authsvc "
                        f"knows up to {SCHEMA_VERSION}"
                    )
                for number, statements in enumerate(
                    dialect.migrations[version:], start=version + 1
                ):
                    for statement in statements:
                        conn.execute(statement)
                    dialect.set_schema_version(conn, number)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _warn_about_shared_emails(self, conn: Any) -> None:
        """Log how many accounts share a folded email with an older one (migration 5).

        On `initialize`'s own connection: nothing may stay open in a process that forks.
        """
        (row,) = self._execute(
            conn,
            f"SELECT COUNT(*) AS shared FROM users WHERE {self.dialect.legacy_keys}",
            # Every key that starts with the prefix, and no other: ":" + 1 is ";".
            (LEGACY_KEY_PREFIX, LEGACY_KEY_PREFIX[:-1] + ";"),
        ).fetchall()
        if row["shared"]:
            logger.warning(
                "%d account(s) share their email, letter case aside, with an older "
                "account (made before emails were compared for every letter); each "
                "logs in only with its exact spelling (docs/security.md, 'Known limits')",
                row["shared"],
            )

    def answers(self, timeout: float) -> bool:
        """True when a trivial query answers within about `timeout` seconds (GET /health).

        A connection is waited for at most `timeout`; on SQLite the query is a read,
        which WAL mode never makes wait for a writer.
        """
        try:
            with self._conn(timeout) as conn:
                self._execute(conn, "SELECT 1").fetchall()
        except (DatabaseBusy, DatabaseUnavailable):
            return False
        return True

    def schema_version(self) -> int:
        """The number of the last migration applied to the database."""
        with self._conn() as conn:
            return self.dialect.schema_version(conn)

    def _connection(self) -> sqlite3.Connection:
        """SQLite only: this thread's connection (tests read the file's settings on it)."""
        if not isinstance(self._connections, SqliteConnections):
            raise TypeError("only a SQLite store keeps a connection per thread")
        return self._connections.thread_connection()

    def close(self) -> None:
        """SQLite: close this thread's connection. PostgreSQL: close this process's pool.

        The next call opens again. (A server never needs this; tests and commands do.)
        """
        self._connections.close()

    def _conn(self, timeout: float | None = None) -> _Connection:
        """A connection for one store call: the open transaction's, else a borrowed one
        (waiting at most `timeout` for it on PostgreSQL). Driver errors leave the block
        as the store's own (see `_Connection`)."""
        return _Connection(self, timeout)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every store call inside the block one atomic write transaction.

        Re-entrant: inside an open transaction it simply joins it, so store methods
        that write can be composed into one atomic step by an outer `transaction()`.
        Raises DatabaseBusy when a lock stays taken past the busy timeout.
        """
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._connections.one_writer(), self._conn() as conn:
            conn.execute(self.dialect.begin_write)
            self._local.conn = conn
            try:
                yield
            except BaseException:
                self._local.conn = None
                conn.execute("ROLLBACK")
                raise
            self._local.conn = None
            conn.execute("COMMIT")

    def _execute(self, conn: Any, sql: str, params: Any = ()) -> Any:
        """Run one statement, written with `?` placeholders, on `conn`; its cursor."""
        return conn.execute(self.dialect.sql(sql), params)

    def _lock_user(self, conn: Any, user_id: int) -> None:
        """Inside a transaction, make other writers of this user's rows wait (PostgreSQL;
        SQLite's write lock already does)."""
        if self.dialect.lock_user is not None:
            self._execute(conn, self.dialect.lock_user, (user_id,)).fetchall()

    # ====================================================================================
    # users: the course's three methods, and the rest that reads or writes accounts
    # ====================================================================================

    def add_user(
        self, email: str, hashed_password: str, created_at: float | None = None
    ) -> User:
        """Insert a user and return it; its email is not verified yet.

        Raises DuplicateEmail when the email is taken, whatever its letter case: the unique
        index on the folded email decides, so two simultaneous registrations (on any
        number of workers and hosts) cannot both succeed. `created_at`: Unix seconds,
        now when not given.
        """
        if not isinstance(email, str):
            raise InvalidValue("email must be a string")
        key = email_key(email)
        created = time.time() if created_at is None else created_at
        try:
            with self.transaction(), self._conn() as conn:
                (row,) = self._execute(
                    conn,
                    "INSERT INTO users (email, hashed_password, email_key,"
                    " email_verified, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (email, hashed_password, key, False, created),
                ).fetchall()
        except DuplicateEmail:
            raise DuplicateEmail(f"User {email} already exists") from None
        return User(
            id=row["id"],
            email=email,
            hashed_password=hashed_password,
            email_key=key,
            email_verified=False,
            created_at=created,
        )

    def delete_user(self, user_id: int) -> bool:
        """Delete the user and, by ON DELETE CASCADE, every row of theirs (sessions,
        reset tokens, verification code), in one statement; True if there was one."""
        with self.transaction(), self._conn() as conn:
            deleted = self._execute(
                conn, "DELETE FROM users WHERE id = ?", (user_id,)
            ).rowcount
        return deleted == 1

    def find_user_by(self, **filters: Any) -> User:
        """Return the first user matching every filter (`column=value`, joined with AND).

        A value of None matches NULL; `email` matches whatever its letter case. Raises
        InvalidQuery when there is no filter or a filter names no column, UserNotFound
        when no row matches.
        """
        if not filters:
            raise InvalidQuery("find_user_by needs at least one column=value filter")
        if any(isinstance(value, str) and "\0" in value for value in filters.values()):
            # No stored value holds NUL (registration refuses it), and PostgreSQL
            # cannot even take one as a parameter: nothing can match.
            raise UserNotFound(f"no user matches {', '.join(filters)}")
        shape = tuple((column, filters[column] is None) for column in filters)
        sql = _select_where(shape, self.dialect.null_safe_equal)
        # fetchall, not fetchone: it runs the statement to its end, so a long-lived
        # SQLite connection keeps no read transaction (and no WAL snapshot) open.
        with self._conn() as conn:
            rows = self._execute(conn, sql, _select_values(filters)).fetchall()
        if not rows:
            raise UserNotFound(f"no user matches {', '.join(filters)}")
        return _user_from_row(rows[0])

    def update_user(self, user_id: int, **fields: Any) -> None:
        """Set the given columns of user `user_id` (a new email gets its folded key too).

        Raises ValueError: InvalidQuery when a field names no column or is `id`,
        DuplicateEmail when the new email is another user's, InvalidValue for a NULL the
        schema refuses. UserNotFound when there is no such user. No fields is a no-op.
        """
        columns = _checked_columns(fields, allow_id=False)
        if not columns:
            return
        if "email" in fields:
            if not isinstance(fields["email"], str):
                raise InvalidValue("email must be a string")
            fields = {**fields, "email_key": email_key(fields["email"])}
            columns = list(dict.fromkeys([*columns, "email_key"]))
        assignments = ", ".join(f"{column} = ?" for column in columns)
        values = [fields[column] for column in columns]
        try:
            with self.transaction(), self._conn() as conn:
                cursor = self._execute(
                    conn,
                    f"UPDATE users SET {assignments} WHERE id = ?",
                    [*values, user_id],
                )
        except DuplicateEmail:
            raise DuplicateEmail(f"User {fields.get('email')} already exists") from None
        if cursor.rowcount == 0:
            raise UserNotFound(f"no user with id {user_id}")

    def lock_user(self, user_id: int) -> None:
        """Inside `transaction()`: make other writers of this user wait until it ends."""
        with self._conn() as conn:
            self._lock_user(conn, user_id)

    def add_many_users(self, emails: Iterable[str], hashed_password: str) -> int:
        """Insert a user for each email, all with one password hash, in one transaction.

        One transaction and one prepared statement make a million rows a matter of
        seconds. Raises DuplicateEmail (and inserts nothing) if any email is taken.
        Returns the number of rows inserted.
        """
        try:
            with self.transaction(), self._conn() as conn:
                cursor = conn.cursor()
                cursor.executemany(
                    self.dialect.sql(
                        "INSERT INTO users (email, hashed_password, email_key) VALUES (?, ?, ?)"
                    ),
                    ((email, hashed_password, email_key(email)) for email in emails),
                )
        except DuplicateEmail:
            raise DuplicateEmail("one of the emails is already registered") from None
        return cursor.rowcount

    def count_users(self) -> int:
        """How many rows `users` holds."""
        with self._conn() as conn:
            return self._execute(conn, "SELECT COUNT(*) AS n FROM users").fetchall()[0][
                "n"
            ]

    def iter_users_with_sessions(
        self, now: float, live_after: float, batch: int = 1000
    ) -> Iterator[tuple[str, int]]:
        """(email, live sessions) per user, by id, `batch` users per query (keyset
        pagination: a million users never sit in memory, on either database)."""
        last_id = 0
        while True:
            with self._conn() as conn:
                rows = self._execute(
                    conn,
                    "SELECT u.id, u.email, COUNT(s.id) AS live FROM users AS u"
                    " LEFT JOIN sessions AS s ON s.user_id = u.id"
                    " AND s.expires_at > ? AND s.last_used_at > ?"
                    " WHERE u.id > ? GROUP BY u.id, u.email ORDER BY u.id LIMIT ?",
                    (now, live_after, last_id, batch),
                ).fetchall()
            for row in rows:
                yield row["email"], row["live"]
            if len(rows) < batch:
                return
            last_id = rows[-1]["id"]

    # ====================================================================================
    # sessions: one row per login (migration 3)
    # "Live" is decided by the caller's clock, passed in as two bounds: a session is live
    # while `expires_at > now` (its absolute lifetime) and `last_used_at > live_after`
    # (its idle lifetime: `live_after` is now minus the idle lifetime, or -inf when idle
    # expiry is off). The store keeps no clock of its own, so tests can move time.
    # ====================================================================================

    def add_session(
        self,
        session: Session,
        *,
        password_hash: str,
        max_sessions: int,
        live_after: float,
    ) -> bool:
        """Insert `session` (its `id` is ignored) as one atomic step; False if refused.

        In one write transaction, with the user's row locked (PostgreSQL; SQLite's write
        lock serializes it anyway): the user's ended sessions are deleted (expired rows
        are cleaned up at each login), the new row is inserted only if the user's stored
        password hash is still `password_hash`, and the user's least recently used
        sessions beyond `max_sessions` are deleted. The hash condition closes a race: a
        login that checked a password which a reset replaced while bcrypt ran must not
        start a session (it returns False, and nothing is written). The lock keeps the
        bound when one user logs in on several hosts at once.
        """
        now = session.created_at
        with self.transaction(), self._conn() as conn:
            self._lock_user(conn, session.user_id)
            self._execute(
                conn,
                "DELETE FROM sessions WHERE user_id = ?"
                " AND (expires_at <= ? OR last_used_at <= ?)",
                (session.user_id, now, live_after),
            )
            inserted = self._execute(
                conn,
                "INSERT INTO sessions (public_id, user_id, digest, created_at,"
                " last_used_at, expires_at, user_agent, ip)"
                " SELECT ?, id, ?, ?, ?, ?, ?, ? FROM users"
                " WHERE id = ? AND hashed_password = ?",
                (
                    session.public_id, session.digest, session.created_at,
                    session.last_used_at, session.expires_at, session.user_agent,
                    session.ip, session.user_id, password_hash,
                ),
            ).rowcount  # fmt: skip
            self._execute(
                conn,
                "DELETE FROM sessions WHERE user_id = ? AND id NOT IN"
                " (SELECT id FROM sessions WHERE user_id = ?"
                "  ORDER BY last_used_at DESC, id DESC LIMIT ?)",
                (session.user_id, session.user_id, max_sessions),
            )
        return inserted == 1

    def find_session(self, digest: str) -> tuple[Session, User] | None:
        """The session whose id has this digest, with its user; None if there is none.

        Live or not: the caller decides with its clock. One indexed lookup. The session
        check of every authenticated request: its statement is translated once, and the
        row is read by position (both dataclasses' fields are in the SELECT's order),
        not column by column by name.
        """
        with self._conn() as conn:
            rows = self.dialect.fetch_values(conn, self._session_check, (digest,))
        if not rows:
            return None
        values = rows[0]
        user = list(values[_SESSION_WIDTH:])
        user[_EMAIL_VERIFIED] = bool(user[_EMAIL_VERIFIED])
        return Session(*values[:_SESSION_WIDTH]), User(*user)

    def session_check(self, digest: str) -> tuple[int, float, float, int, str] | None:
        """The hot path's question (authsvc.HotPath): for the session whose id has this
        digest, (its row id, expires_at, last_used_at, its user's id, email); None if
        there is none. `find_session`'s one indexed lookup, with only what a live
        session's answer needs, so no row becomes two dataclasses."""
        with self._conn() as conn:
            rows = self.dialect.fetch_values(conn, self._hot_check, (digest,))
        return tuple(rows[0]) if rows else None

    def touch_session(self, session_id: int, now: float, stale_before: float) -> None:
        """Record a use of session `session_id` at `now`, if the recorded one is older
        than `stale_before`.

        The condition is in the UPDATE itself: of many simultaneous requests that all saw
        a stale time, the first writes and the others match no row, so a burst of
        requests costs one write, not one each.
        """
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "UPDATE sessions SET last_used_at = ? WHERE id = ? AND last_used_at < ?",
                (now, session_id, stale_before),
            )

    def user_sessions(
        self, user_id: int, now: float, live_after: float
    ) -> list[Session]:
        """The user's live sessions, most recently used first."""
        with self._conn() as conn:
            rows = self._execute(
                conn,
                f"{_SELECT_SESSION} WHERE user_id = ? AND last_used_at > ?"
                " AND expires_at > ? ORDER BY last_used_at DESC, id DESC",
                (user_id, live_after, now),
            ).fetchall()
        return [_session_from_row(row) for row in rows]

    def delete_session(
        self, user_id: int, public_id: str, now: float, live_after: float
    ) -> Session | None:
        """Delete the user's live session with this public id; return it, or None.

        Another user's session, an ended one and an unknown id are all None alike.
        """
        with self.transaction(), self._conn() as conn:
            rows = self._execute(
                conn,
                "DELETE FROM sessions WHERE public_id = ? AND user_id = ?"
                " AND last_used_at > ? AND expires_at > ?"
                f" RETURNING {', '.join(SESSION_COLUMNS)}",
                (public_id, user_id, live_after, now),
            ).fetchall()
        return _session_from_row(rows[0]) if rows else None

    def delete_session_by_digest(self, digest: str) -> bool:
        """Delete the session whose id has this digest (a logout). True if there was one."""
        with self.transaction(), self._conn() as conn:
            deleted = self._execute(
                conn, "DELETE FROM sessions WHERE digest = ?", (digest,)
            ).rowcount
        return deleted == 1

    def delete_user_sessions(
        self,
        user_id: int,
        now: float,
        live_after: float,
        *,
        keep: int | None = None,
    ) -> int:
        """Delete every session of the user except the one with id `keep`.

        Returns how many of the deleted sessions were live (ended ones go too,
        uncounted). The user's row is locked first (PostgreSQL), so a login of the same
        user on another host cannot slip a session in between.
        """
        keep_id = -1 if keep is None else keep
        with self.transaction(), self._conn() as conn:
            self._lock_user(conn, user_id)
            live = self._execute(
                conn,
                "DELETE FROM sessions WHERE user_id = ? AND id <> ?"
                " AND last_used_at > ? AND expires_at > ?",
                (user_id, keep_id, live_after, now),
            ).rowcount
            self._execute(
                conn,
                "DELETE FROM sessions WHERE user_id = ? AND id <> ?",
                (user_id, keep_id),
            )
        return live

    def count_live_sessions(self, now: float, live_after: float) -> int:
        """How many sessions are live: not past their end, used after `live_after`.

        A range of the index on (expires_at, last_used_at) counted inside the index,
        so a scrape of GET /metrics stays cheap with a million sessions.
        """
        with self._conn() as conn:
            rows = self._execute(
                conn,
                "SELECT COUNT(*) AS n FROM sessions"
                " WHERE expires_at > ? AND last_used_at > ?",
                (now, live_after),
            ).fetchall()
        return rows[0]["n"]

    # ====================================================================================
    # reset_tokens: one row per live token (migration 7)
    # ====================================================================================

    def add_reset_token(self, user_id: int, digest: str, expires_at: float) -> None:
        """Store a new reset token's digest for the user; earlier ones stay usable."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "INSERT INTO reset_tokens (digest, user_id, expires_at) VALUES (?, ?, ?)",
                (digest, user_id, expires_at),
            )

    def reset_token_holder(self, digest: str) -> tuple[User, float] | None:
        """The user whose reset token has this digest, and when it expires; None if no
        token has it. Expired or not: the caller decides with its clock."""
        with self._conn() as conn:
            rows = self._execute(
                conn,
                f"SELECT t.expires_at AS token_expires_at, "
                f"{', '.join('u.' + column for column in USER_COLUMNS)} "
                "FROM reset_tokens AS t JOIN users AS u ON u.id = t.user_id"
                " WHERE t.digest = ?",
                (digest,),
            ).fetchall()
        if not rows:
            return None
        return _user_from_row(rows[0]), rows[0]["token_expires_at"]

    def delete_reset_token(self, digest: str) -> None:
        """Forget one token (one whose mail could not be sent)."""
        with self.transaction(), self._conn() as conn:
            self._execute(conn, "DELETE FROM reset_tokens WHERE digest = ?", (digest,))

    def delete_reset_tokens_of(self, user_id: int) -> None:
        """End every reset token of the user (an operator set the password)."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn, "DELETE FROM reset_tokens WHERE user_id = ?", (user_id,)
            )

    def spend_reset_token(
        self, user_id: int, digest: str, now: float, hashed_password: str
    ) -> bool:
        """Set a new password hash with the live token of this digest, and end every
        token of the user (the password they were for has changed).

        True when the token was still there and live; False when another request spent
        it first or it expired. The DELETE ... WHERE is the condition: of two requests
        racing with one token, on any workers or hosts, exactly one deletes its row.
        """
        with self.transaction(), self._conn() as conn:
            spent = self._execute(
                conn,
                "DELETE FROM reset_tokens WHERE digest = ? AND user_id = ? AND expires_at > ?",
                (digest, user_id, now),
            ).rowcount
            if spent != 1:
                return False
            self._execute(
                conn,
                "UPDATE users SET hashed_password = ? WHERE id = ?",
                (hashed_password, user_id),
            )
            self._execute(
                conn, "DELETE FROM reset_tokens WHERE user_id = ?", (user_id,)
            )
        return True

    # ====================================================================================
    # verification_codes: the code that proves an address, one row per user (migration 9)
    # ====================================================================================

    def code_sends(self, user_id: int) -> CodeSends | None:
        """How many codes the user was sent in the current hour, from when, and the last
        one's time; None if never. Inside a transaction, with the user locked, so the
        check and the `put_code` after it are one step."""
        with self._conn() as conn:
            rows = self._execute(
                conn,
                "SELECT sends, sends_started_at, last_sent_at FROM verification_codes"
                " WHERE user_id = ?",
                (user_id,),
            ).fetchall()
        if not rows:
            return None
        row = rows[0]
        return CodeSends(row["sends"], row["sends_started_at"], row["last_sent_at"])

    def put_code(
        self,
        user_id: int,
        digest: str,
        email: str,
        expires_at: float,
        now: float,
        window: float,
    ) -> None:
        """Make `digest` the user's one live code, for `email`, replacing any earlier one
        (its wrong tries forgotten), and count it as sent: one more in the current
        window of `window` seconds, or the first of a new one."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "INSERT INTO verification_codes (user_id, digest, email, expires_at,"
                " tries, sends, sends_started_at, last_sent_at)"
                " VALUES (?, ?, ?, ?, 0, 1, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
                " digest = excluded.digest, email = excluded.email,"
                " expires_at = excluded.expires_at, tries = 0,"
                " sends = CASE WHEN verification_codes.sends_started_at <= ? THEN 1"
                " ELSE verification_codes.sends + 1 END,"
                " sends_started_at = CASE WHEN verification_codes.sends_started_at <= ?"
                " THEN excluded.sends_started_at"
                " ELSE verification_codes.sends_started_at END,"
                " last_sent_at = excluded.last_sent_at",
                (
                    user_id,
                    digest,
                    email,
                    expires_at,
                    now,
                    now,
                    now - window,
                    now - window,
                ),
            )

    def spend_code(
        self, user_id: int, digest: str, now: float, max_tries: int
    ) -> str | None:
        """Use the user's live code of this digest: the address it proves, or None when
        there is no such code (wrong, used, expired, or ended by wrong tries).

        The UPDATE ... WHERE is the condition: of two requests racing with one code, on
        any workers or hosts, exactly one still finds it there.
        """
        with self.transaction(), self._conn() as conn:
            rows = self._execute(
                conn,
                "UPDATE verification_codes SET digest = NULL WHERE user_id = ?"
                " AND digest = ? AND expires_at > ? AND tries < ? RETURNING email",
                (user_id, digest, now, max_tries),
            ).fetchall()
        return rows[0]["email"] if rows else None

    def count_wrong_code(self, user_id: int, max_tries: int) -> None:
        """Count a wrong code against the user's live one; the `max_tries`th ends it."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "UPDATE verification_codes SET tries = tries + 1,"
                " digest = CASE WHEN tries + 1 >= ? THEN NULL ELSE digest END"
                " WHERE user_id = ? AND digest IS NOT NULL",
                (max_tries, user_id),
            )

    # ====================================================================================
    # two_factor, recovery_codes, mfa_tokens: the second factor (migration 10)
    # Each "once only" is one conditional statement: of two requests racing, on any
    # workers or hosts, exactly one finds its condition still true.
    # ====================================================================================

    def two_factor_of(self, user_id: int) -> TwoFactorRow | None:
        """The user's two_factor row, or None if they never began a set-up."""
        with self._conn() as conn:
            rows = self._execute(
                conn,
                f"SELECT {', '.join(TWO_FACTOR_COLUMNS)} FROM two_factor"
                " WHERE user_id = ?",
                (user_id,),
            ).fetchall()
        return TwoFactorRow(*(rows[0][c] for c in TWO_FACTOR_COLUMNS)) if rows else None

    def two_factor_status(self, user_id: int) -> tuple[bool, int]:
        """(two-factor on, unused recovery codes), in one statement."""
        with self._conn() as conn:
            (row,) = self._execute(
                conn,
                "SELECT (SELECT COUNT(*) FROM two_factor WHERE user_id = ?"
                " AND secret IS NOT NULL) AS factor_on,"
                " (SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?) AS codes_left",
                (user_id, user_id),
            ).fetchall()
        return bool(row["factor_on"]), int(row["codes_left"])

    def put_pending_secret(self, user_id: int, sealed: str, expires_at: float) -> bool:
        """Make `sealed` the user's pending secret until `expires_at`, replacing an
        earlier pending one; False (nothing written) when two-factor is already on."""
        with self.transaction(), self._conn() as conn:
            rows = self._execute(
                conn,
                "INSERT INTO two_factor (user_id, pending_secret, pending_expires_at)"
                " VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
                " pending_secret = excluded.pending_secret,"
                " pending_expires_at = excluded.pending_expires_at"
                " WHERE two_factor.secret IS NULL RETURNING user_id",
                (user_id, sealed, expires_at),
            ).fetchall()
        return bool(rows)

    def enable_two_factor(
        self, user_id: int, pending: str, step: int, now: float
    ) -> bool:
        """Make the pending secret `pending` the user's secret, `step` its last used time
        step; False when it is no longer the pending one, expired, or two-factor is on."""
        with self.transaction(), self._conn() as conn:
            changed = self._execute(
                conn,
                "UPDATE two_factor SET secret = pending_secret, pending_secret = NULL,"
                " pending_expires_at = NULL, last_step = ?, enabled_at = ?"
                " WHERE user_id = ? AND secret IS NULL AND pending_secret = ?"
                " AND pending_expires_at > ?",
                (step, now, user_id, pending, now),
            ).rowcount
        return changed == 1

    def take_time_step(self, user_id: int, step: int) -> bool:
        """Record `step` as the user's last accepted TOTP time step, only if it is later
        than the one recorded: True if this call took it (RFC 6238 section 5.2)."""
        with self.transaction(), self._conn() as conn:
            changed = self._execute(
                conn,
                "UPDATE two_factor SET last_step = ? WHERE user_id = ?"
                " AND secret IS NOT NULL AND last_step < ?",
                (step, user_id, step),
            ).rowcount
        return changed == 1

    def replace_recovery_codes(self, user_id: int, digests: list[str]) -> None:
        """The user's recovery codes become these (their digests); the old ones go."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn, "DELETE FROM recovery_codes WHERE user_id = ?", (user_id,)
            )
            conn.cursor().executemany(
                self.dialect.sql(
                    "INSERT INTO recovery_codes (digest, user_id) VALUES (?, ?)"
                ),
                [(digest, user_id) for digest in digests],
            )

    def use_recovery_code(self, user_id: int, digest: str) -> bool:
        """Spend the user's recovery code of this digest: True if this call deleted it."""
        with self.transaction(), self._conn() as conn:
            deleted = self._execute(
                conn,
                "DELETE FROM recovery_codes WHERE user_id = ? AND digest = ?",
                (user_id, digest),
            ).rowcount
        return deleted == 1

    def delete_two_factor(self, user_id: int) -> bool:
        """Forget the user's secrets, recovery codes and waiting logins; True if
        two-factor was on."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn, "DELETE FROM recovery_codes WHERE user_id = ?", (user_id,)
            )
            self._execute(conn, "DELETE FROM mfa_tokens WHERE user_id = ?", (user_id,))
            rows = self._execute(
                conn,
                "DELETE FROM two_factor WHERE user_id = ? RETURNING secret",
                (user_id,),
            ).fetchall()
        return bool(rows) and rows[0]["secret"] is not None

    def add_mfa_token(self, digest: str, user_id: int, expires_at: float) -> None:
        """Store a waiting login's token digest."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "INSERT INTO mfa_tokens (digest, user_id, expires_at) VALUES (?, ?, ?)",
                (digest, user_id, expires_at),
            )

    def mfa_token_holder(self, digest: str, now: float, max_tries: int) -> int | None:
        """The user id of the live token of this digest, or None."""
        with self._conn() as conn:
            rows = self._execute(
                conn,
                "SELECT user_id FROM mfa_tokens WHERE digest = ? AND expires_at > ?"
                " AND tries < ?",
                (digest, now, max_tries),
            ).fetchall()
        return rows[0]["user_id"] if rows else None

    def spend_mfa_token(self, digest: str, now: float, max_tries: int) -> int | None:
        """Delete the live token of this digest: its user's id, or None if there is no
        live one. Inside a transaction that a wrong code rolls back, which puts it back."""
        with self.transaction(), self._conn() as conn:
            rows = self._execute(
                conn,
                "DELETE FROM mfa_tokens WHERE digest = ? AND expires_at > ?"
                " AND tries < ? RETURNING user_id",
                (digest, now, max_tries),
            ).fetchall()
        return rows[0]["user_id"] if rows else None

    def count_wrong_mfa_code(self, digest: str, max_tries: int) -> None:
        """Count a wrong code against the token; the `max_tries`th deletes it."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "UPDATE mfa_tokens SET tries = tries + 1 WHERE digest = ?",
                (digest,),
            )
            self._execute(
                conn,
                "DELETE FROM mfa_tokens WHERE digest = ? AND tries >= ?",
                (digest, max_tries),
            )

    def delete_mfa_tokens_of(self, user_id: int) -> None:
        """End every waiting login of the user (a new password, sessions ended)."""
        with self.transaction(), self._conn() as conn:
            self._execute(conn, "DELETE FROM mfa_tokens WHERE user_id = ?", (user_id,))

    # ====================================================================================
    # passkeys, webauthn_challenges: WebAuthn credentials and their ceremonies' challenges
    # (factors.Passkeys decides what is checked; here each "once only" is one statement)
    # ====================================================================================

    def add_challenge(
        self,
        digest: str,
        challenge: str,
        purpose: str,
        user_id: int | None,
        expires_at: float,
    ) -> None:
        """Keep a ceremony's challenge until `expires_at`, under its id's digest."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "INSERT INTO webauthn_challenges"
                " (digest, challenge, purpose, user_id, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (digest, challenge, purpose, user_id, expires_at),
            )

    def spend_challenge(
        self, digest: str, purpose: str, user_id: int | None, now: float
    ) -> str | None:
        """Delete the live challenge of this digest made for `purpose` (and, for a
        registration, for `user_id`): the challenge, or None when there is no such live
        one. Of two ceremonies racing with one challenge, one gets it."""
        holder = "user_id IS NULL" if user_id is None else "user_id = ?"
        with self.transaction(), self._conn() as conn:
            rows = self._execute(
                conn,
                "DELETE FROM webauthn_challenges WHERE digest = ? AND purpose = ?"
                f" AND {holder} AND expires_at > ? RETURNING challenge",
                (digest, purpose, *(() if user_id is None else (user_id,)), now),
            ).fetchall()
        return rows[0]["challenge"] if rows else None

    def passkeys_of(self, user_id: int) -> list[PasskeyRow]:
        """The user's passkeys, oldest first."""
        with self._conn() as conn:
            rows = self._execute(
                conn,
                f"SELECT {', '.join(PASSKEY_COLUMNS)} FROM passkeys"
                " WHERE user_id = ? ORDER BY created_at, id",
                (user_id,),
            ).fetchall()
        return [PasskeyRow(*(row[c] for c in PASSKEY_COLUMNS)) for row in rows]

    def count_passkeys(self, user_id: int) -> int:
        """How many passkeys the user has."""
        with self._conn() as conn:
            (row,) = self._execute(
                conn, "SELECT COUNT(*) AS n FROM passkeys WHERE user_id = ?", (user_id,)
            ).fetchall()
        return int(row["n"])

    def passkey_by_credential(self, credential_id: str) -> PasskeyRow | None:
        """The passkey of this credential id (base64url), whoever holds it."""
        with self._conn() as conn:
            rows = self._execute(
                conn,
                f"SELECT {', '.join(PASSKEY_COLUMNS)} FROM passkeys"
                " WHERE credential_id = ?",
                (credential_id,),
            ).fetchall()
        return PasskeyRow(*(rows[0][c] for c in PASSKEY_COLUMNS)) if rows else None

    def add_passkey(self, passkey: PasskeyRow, max_passkeys: int) -> str:
        """Insert the passkey: "added"; "limit" when the user already has
        `max_passkeys` (counted with the user's row locked, so two registrations
        racing cannot both pass); "taken" when its credential id is registered."""
        with self.transaction(), self._conn() as conn:
            self._lock_user(conn, passkey.user_id)
            (row,) = self._execute(
                conn,
                "SELECT COUNT(*) AS n FROM passkeys WHERE user_id = ?",
                (passkey.user_id,),
            ).fetchall()
            if row["n"] >= max_passkeys:
                return "limit"
            columns = PASSKEY_COLUMNS[1:]
            inserted = self._execute(
                conn,
                f"INSERT INTO passkeys ({', '.join(columns)})"
                f" VALUES ({', '.join('?' for _ in columns)})"
                " ON CONFLICT (credential_id) DO NOTHING RETURNING id",
                tuple(getattr(passkey, c) for c in columns),
            ).fetchall()
        return "added" if inserted else "taken"

    def use_passkey(
        self, passkey_id: int, old_count: int, new_count: int, now: float
    ) -> bool:
        """Record a login with the passkey: its new signature counter and the time,
        only if the counter is still `old_count` (True if this call recorded it). Of
        two logins racing with one passkey and one counter value, one passes."""
        with self.transaction(), self._conn() as conn:
            changed = self._execute(
                conn,
                "UPDATE passkeys SET sign_count = ?, last_used_at = ?"
                " WHERE id = ? AND sign_count = ?",
                (new_count, now, passkey_id, old_count),
            ).rowcount
        return changed == 1

    def rename_passkey(
        self, user_id: int, public_id: str, name: str
    ) -> PasskeyRow | None:
        """Rename the user's passkey of this handle: the renamed row, or None when the
        user has no such passkey (another user's is none of theirs)."""
        with self.transaction(), self._conn() as conn:
            rows = self._execute(
                conn,
                "UPDATE passkeys SET name = ? WHERE user_id = ? AND public_id = ?"
                f" RETURNING {', '.join(PASSKEY_COLUMNS)}",
                (name, user_id, public_id),
            ).fetchall()
        return PasskeyRow(*(rows[0][c] for c in PASSKEY_COLUMNS)) if rows else None

    def delete_passkey(self, user_id: int, public_id: str) -> bool:
        """Remove the user's passkey of this handle: True if there was one."""
        with self.transaction(), self._conn() as conn:
            deleted = self._execute(
                conn,
                "DELETE FROM passkeys WHERE user_id = ? AND public_id = ?",
                (user_id, public_id),
            ).rowcount
        return deleted == 1

    def delete_passkeys_of(self, user_id: int) -> int:
        """Remove every passkey of the user (the operator's two-factor-off --passkeys)."""
        with self.transaction(), self._conn() as conn:
            return self._execute(
                conn, "DELETE FROM passkeys WHERE user_id = ?", (user_id,)
            ).rowcount

    # ====================================================================================
    # login_attempts, reset_attempts, client_attempts: the request limits' counters
    # In the database, so every worker and host counts the same attempts (limits.py
    # decides what is counted and when a request is refused).
    # ====================================================================================

    def count_login_attempt(
        self, email: str, now: float, window: float
    ) -> LoginAttempts:
        """Count one login attempt for `email`; the tally of its current window."""
        return self._count_attempt("login_attempts", email, now, window)

    def count_reset_request(
        self, email: str, now: float, window: float
    ) -> LoginAttempts:
        """Count one reset-token request for `email`; the tally of its current window."""
        return self._count_attempt("reset_attempts", email, now, window)

    def _count_attempt(
        self, table: str, email: str, now: float, window: float
    ) -> LoginAttempts:
        """Count one attempt for `email` in `table` and return its window's tally.

        Atomic on both databases, so simultaneous attempts on several workers and hosts
        are all counted: an upsert (INSERT ... ON CONFLICT DO UPDATE) either makes the
        row or adds one to it, in one statement. Rows whose window ended by `now` are
        deleted first, so an attempt after a window ended opens a new one. `table` is
        one of ATTEMPT_TABLES (a name put into SQL text, so never a caller's string).
        """
        if table not in ATTEMPT_TABLES:
            raise InvalidQuery(f"not a table of attempts: {table}")
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                f"DELETE FROM {table} WHERE window_started_at <= ?",
                (now - window,),
            )
            (row,) = self._execute(
                conn,
                f"INSERT INTO {table} (email_digest, attempts, window_started_at)"
                " VALUES (?, 1, ?) ON CONFLICT (email_digest)"
                f" DO UPDATE SET attempts = {table}.attempts + 1"
                " RETURNING attempts, window_started_at",
                (_subject_key(email), now),
            ).fetchall()
        return LoginAttempts(
            attempts=row["attempts"], window_started_at=row["window_started_at"]
        )

    def clear_login_attempts(self, email: str) -> None:
        """Forget the login attempts of `email`, from every client (after a successful
        login or reset).

        client_attempts before login_attempts, the order in which a login is counted
        (limits.Limits.count_login): on PostgreSQL, two transactions that take the same
        rows' locks in opposite orders deadlock.
        """
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "DELETE FROM client_attempts WHERE kind = 'login_pair' AND subject = ?",
                (_subject_key(email),),
            )
            self._execute(
                conn,
                "DELETE FROM login_attempts WHERE email_digest = ?",
                (_subject_key(email),),
            )

    def count_client_attempt(
        self, kind: str, client: str, now: float, window: float, email: str = ""
    ) -> LoginAttempts:
        """Count one attempt of `kind` for `client` (and `email`, for 'login_pair');
        the tally of its current window.

        The same upsert as `_count_attempt`, in `client_attempts` under (kind, client,
        subject); ended windows of this kind are deleted first.
        """
        if kind not in CLIENT_ATTEMPT_KINDS:
            raise InvalidQuery(f"not a kind of client attempt: {kind}")
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "DELETE FROM client_attempts WHERE kind = ? AND window_started_at <= ?",
                (kind, now - window),
            )
            (row,) = self._execute(
                conn,
                "INSERT INTO client_attempts"
                " (kind, client, subject, attempts, window_started_at)"
                " VALUES (?, ?, ?, 1, ?) ON CONFLICT (kind, client, subject)"
                " DO UPDATE SET attempts = client_attempts.attempts + 1"
                " RETURNING attempts, window_started_at",
                (kind, client, _subject_key(email), now),
            ).fetchall()
        return LoginAttempts(
            attempts=row["attempts"], window_started_at=row["window_started_at"]
        )

    def uncount_client_attempt(self, kind: str, client: str) -> None:
        """Take back one counted attempt (a login that succeeded was no failure)."""
        with self.transaction(), self._conn() as conn:
            self._execute(
                conn,
                "UPDATE client_attempts SET attempts = attempts - 1"
                " WHERE kind = ? AND client = ? AND subject = '' AND attempts > 0",
                (kind, client),
            )

    # ====================================================================================
    # Every table: moving to another database (copy-db) and purging what has ended
    # ====================================================================================

    def is_empty(self) -> bool:
        """True when no table of this database holds a row (users, sessions, counters)."""
        with self._conn() as conn:
            return not any(
                self._execute(conn, f"SELECT 1 FROM {table} LIMIT 1").fetchall()
                for table in (
                    *COPIED_TABLES,
                    *ATTEMPT_TABLES,
                    "client_attempts",
                    "verification_codes",
                    "mfa_tokens",
                    "webauthn_challenges",
                )
            )

    def count_rows(self) -> dict[str, int]:
        """How many rows each copied table holds."""
        with self._conn() as conn:
            return {
                table: self._execute(
                    conn, f"SELECT COUNT(*) AS n FROM {table}"
                ).fetchall()[0]["n"]
                for table in COPIED_TABLES
            }

    def copy_into(self, target: Store, batch: int = 1000) -> dict[str, int]:
        """Copy every user (with pending reset tokens) and session into `target`.

        Rows keep their ids, so sessions keep pointing at their users and every session
        id and reset token in use keeps working. One transaction on the target: a failure
        leaves it as empty as it was. Rows stream through in batches, so a million users
        never sit in memory. Throttle counters are not copied (they last minutes). The
        caller checks that the target is empty first. Returns the rows copied per table.
        Raises RowNotCopied naming the first row the target refuses (a value too long
        for its column, say), and nothing is copied.
        """
        copied = {}
        with target.transaction(), target._conn() as out:
            for table, columns in COPIED_TABLES.items():
                copied[table] = 0
                with self._conn() as source:
                    cursor = self._execute(
                        source,
                        f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}",
                    )
                    booleans = BOOLEAN_COLUMNS.get(table, ())
                    while rows := cursor.fetchmany(batch):
                        values = [
                            tuple(
                                bool(row[c]) if c in booleans else row[c]
                                for c in columns
                            )
                            for row in rows
                        ]
                        target._insert_copied(out, table, columns, values)
                        copied[table] += len(rows)
                if columns[0] == "id":
                    target.dialect.after_copy(out, table)
        return copied

    def _insert_copied(
        self, conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple]
    ) -> None:
        """Insert a batch of copied rows; RowNotCopied naming the first one refused.

        The batch runs under a savepoint: when the database refuses it, the rows are
        tried again one at a time, to say which one (the operator fixes or deletes that
        row and copies again).
        """
        insert = self.dialect.sql(
            f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})"
        )
        conn.execute("SAVEPOINT copy_batch")
        try:
            with self._translating():
                conn.cursor().executemany(insert, rows)
        except InvalidValue:
            conn.execute("ROLLBACK TO SAVEPOINT copy_batch")
            for row in rows:
                try:
                    with self._translating():
                        conn.execute(insert, row)
                except InvalidValue as refused:
                    raise RowNotCopied(
                        f"{table} row {columns[0]}={row[0]} cannot be copied: {refused}"
                    ) from None
        conn.execute("RELEASE SAVEPOINT copy_batch")

    def purge(
        self,
        now: float,
        live_after: float,
        windows: dict[str, float],
        client_windows: dict[str, float] | None = None,
        batch: int = 1000,
    ) -> dict[str, int]:
        """Delete ended sessions, expired reset tokens and ended attempt windows.

        In batches of `batch` rows, each its own short transaction, so a purge run from
        cron while the server runs never holds the write lock for long. `windows` gives
        each attempt table's window length, `client_windows` each kind of client
        counter's. Returns the count per kind.
        """
        counts = {
            "sessions": self._delete_in_batches(
                "sessions",
                "expires_at <= ? OR last_used_at <= ?",
                (now, live_after),
                batch,
            ),
            "reset_tokens": self._delete_in_batches(
                "reset_tokens", "expires_at <= ?", (now,), batch, key="digest"
            ),
            "mfa_tokens": self._delete_in_batches(
                "mfa_tokens", "expires_at <= ?", (now,), batch, key="digest"
            ),
            "webauthn_challenges": self._delete_in_batches(
                "webauthn_challenges", "expires_at <= ?", (now,), batch, key="digest"
            ),
            "two_factor_set_ups": self._delete_in_batches(
                "two_factor",
                "secret IS NULL AND pending_expires_at <= ?",
                (now,),
                batch,
                key="user_id",
            ),
        }
        for table, window in windows.items():
            if table not in ATTEMPT_TABLES:
                raise InvalidQuery(f"not a table of attempts: {table}")
            counts[table] = self._delete_in_batches(
                table,
                "window_started_at <= ?",
                (now - window,),
                batch,
                key="email_digest",
            )
        counts["client_attempts"] = 0
        for kind, window in (client_windows or {}).items():
            if kind not in CLIENT_ATTEMPT_KINDS:
                raise InvalidQuery(f"not a kind of client attempt: {kind}")
            counts["client_attempts"] += self._delete_client_attempts(
                kind, now - window
            )
        return counts

    def _delete_client_attempts(self, kind: str, before: float) -> int:
        """Delete the ended windows of one kind of client counter, in one statement:
        each count already deletes its kind's ended rows, so few are ever left."""
        with self.transaction(), self._conn() as conn:
            return self._execute(
                conn,
                "DELETE FROM client_attempts WHERE kind = ? AND window_started_at <= ?",
                (kind, before),
            ).rowcount

    def _delete_in_batches(
        self, table: str, condition: str, params: tuple, batch: int, key: str = "id"
    ) -> int:
        """DELETE the rows of `table` matching `condition`, `batch` at a time; how many.

        `table`, `condition` and `key` are this module's own text, never a caller's.
        """
        deleted = 0
        while True:
            with self.transaction(), self._conn() as conn:
                count = self._execute(
                    conn,
                    f"DELETE FROM {table} WHERE {key} IN"
                    f" (SELECT {key} FROM {table} WHERE {condition} LIMIT ?)",
                    (*params, batch),
                ).rowcount
            deleted += count
            if count < batch:
                return deleted
