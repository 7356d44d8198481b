"""The data layer of authsvc: parameterized SQL through the stdlib sqlite3, against schema.sql.

It mirrors the course's `DB` class (`add_user`, `find_user_by`, `update_user`) without an ORM,
so every statement the service runs can be read here.

Connections. A sqlite3 connection must not be shared between threads (sqlite3's
`check_same_thread` raises if it is) nor carried across `fork()` (two processes would then
share one file descriptor and one lock state). So a `Store` holds no connection of its own:
each thread opens its own connection lazily, on first use, and keeps it for its next
requests (gunicorn's gthread workers keep a fixed pool of threads). Opening a connection
and preparing its statements again for every request cost `GET /profile` more than the
rest of the request did (tests/bench.py; README "Performance"). Nothing is opened at
import or by the constructor, and a connection is never used in another process than the
one that opened it, so `gunicorn --preload` forks no connection.

Writes. Every write runs inside `transaction()`: `BEGIN IMMEDIATE` takes SQLite's write lock
at the start, so a check-and-set (a single-use token, say) is atomic across gunicorn workers,
and WAL mode never has to fail a read-then-write transaction with SQLITE_BUSY.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
logger = logging.getLogger("authsvc.store")

# How long a connection waits for another process's write lock before giving up with
# "database is locked". Writes here are a few milliseconds, so 5 s means real trouble.
BUSY_TIMEOUT_SECONDS = 5.0


# ----------------------------------------------------------------------------- errors


class UserNotFound(LookupError):
    """No row of `users` matches the filters (the course's `NoResultFound`)."""


class InvalidQuery(ValueError):
    """A filter or field names no column of `users` (the course's `InvalidRequestError`)."""


class DuplicateEmail(ValueError):
    """The email is already registered: the unique index refused a second row."""


class DatabaseBusy(RuntimeError):
    """Another process held SQLite's write lock for longer than the busy timeout."""


class SchemaTooNew(RuntimeError):
    """The database was upgraded by a newer authsvc than this one: refuse to touch it."""


# ----------------------------------------------------------------------------- the row


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


# The columns of `users`, in table order. Only these names are ever put into SQL text;
# every value goes through a `?` placeholder. tests/test_store.py checks that this list
# matches `PRAGMA table_info(users)`, so schema.sql and this file cannot drift apart.
USER_COLUMNS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(User))
_SELECT_USER = f"SELECT {', '.join(USER_COLUMNS)} FROM users"


@dataclasses.dataclass(frozen=True)
class LoginAttempts:
    """The login attempts counted for one email in the current throttling window."""

    attempts: int
    window_started_at: float


# ----------------------------------------------------------------------------- schema

_MIGRATION_HEADER = re.compile(r"^-- @migration (\d+):.*$", re.MULTILINE)


def read_migrations(text: str) -> list[list[str]]:
    """Split schema.sql into its migrations, each a list of SQL statements, in order.

    Migration N is the text after the header line `-- @migration N: ...` up to the next
    header. Numbers must run 1, 2, 3...; statements are cut at the `;` that completes
    them (sqlite3.complete_statement), so a `;` inside a comment or string is safe.
    """
    parts = _MIGRATION_HEADER.split(text)
    numbers = [int(number) for number in parts[1::2]]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(
            f"schema.sql migrations must be numbered 1, 2, 3...; found {numbers}"
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
SCHEMA_VERSION = len(MIGRATIONS)


# ----------------------------------------------------------------------------- connections


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open a connection configured the way every part of authsvc expects.

    `isolation_level=None` turns off the sqlite3 module's implicit transactions, so the
    only transactions are the explicit `BEGIN IMMEDIATE ... COMMIT` of `transaction()`.
    `timeout` is SQLite's busy timeout. `check_same_thread` stays at its default (True):
    a free tripwire if a connection ever leaks into another thread.
    """
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block as one write transaction: BEGIN IMMEDIATE, then COMMIT or ROLLBACK.

    Raises DatabaseBusy when another connection keeps the write lock past the busy
    timeout (a long bulk load, say): the caller can answer "try again" instead of failing.

    Re-entrant: inside an open transaction it simply joins it, so `Store` methods that
    write can be composed into one atomic step by an outer `Store.transaction()`.
    Note that `with conn:` would only commit; it neither begins IMMEDIATE nor closes.
    """
    if conn.in_transaction:
        yield conn
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
            raise
        logger.warning(
            "the write lock was busy for %.0f s: giving up", BUSY_TIMEOUT_SECONDS
        )
        raise DatabaseBusy("the database is busy") from None
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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


@functools.lru_cache(maxsize=64)
def _select_where(shape: tuple[tuple[str, bool], ...]) -> str:
    """The SELECT for filters of this shape: ((column, value is None), ...).

    Built once per shape and cached: the same SQL text also lets sqlite3 reuse the
    statement it prepared. Raises InvalidQuery for a name that is not a column.
    """
    columns = _checked_columns((column for column, _ in shape), allow_id=True)
    # `IS ?` is equality that also matches NULL = NULL; `= ?` can use the indexes.
    where = " AND ".join(
        f"{column} IS ?" if is_none else f"{column} = ?"
        for column, (_, is_none) in zip(columns, shape, strict=True)
    )
    return f"{_SELECT_USER} WHERE {where} LIMIT 1"


def _user_from_row(row: sqlite3.Row) -> User:
    """Build a User from a row selected with `_SELECT_USER`."""
    return User(**{column: row[column] for column in USER_COLUMNS})


# ----------------------------------------------------------------------------- the store


class Store:
    """The users table of one SQLite file, with a connection per thread opened on demand."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Remember where the database is; open nothing yet (see the module docstring)."""
        self.path = os.fspath(path)
        self._local = threading.local()

    # -- lifecycle

    def initialize(self) -> None:
        """Bring the file up to the current schema, in WAL mode, on a connection closed after.

        Safe to run in every worker at every start-up (see schema.sql): the version is read
        inside the write transaction, so of several workers starting at once the first
        applies the missing migrations and the others find nothing left to do. WAL lets
        readers (every `GET /profile`) run while one writer writes; the mode is stored in
        the file. Raises SchemaTooNew for a file a newer authsvc has upgraded.
        """
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            with transaction(conn):
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise SchemaTooNew(
                        f"{self.path} has schema version {version}; this authsvc knows "
                        f"up to {SCHEMA_VERSION}"
                    )
                for number, statements in enumerate(
                    MIGRATIONS[version:], start=version + 1
                ):
                    for statement in statements:
                        conn.execute(statement)
                    # A PRAGMA takes no placeholder; `number` is an int this code computed.
                    conn.execute(f"PRAGMA user_version = {number}")
        finally:
            conn.close()

    def schema_version(self) -> int:
        """The number of the last migration applied to the file (PRAGMA user_version)."""
        return self._connection().execute("PRAGMA user_version").fetchone()[0]

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use.

        The process id is recorded with it: a connection inherited through `fork()` is
        never reused (the child opens its own).
        """
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = connect(self.path)
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection, if it has one; the next call opens a new one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every store call inside the block one atomic write transaction."""
        with transaction(self._connection()):
            yield

    # -- the course's three methods

    def add_user(self, email: str, hashed_password: str) -> User:
        """Insert a user and return it.

        Raises DuplicateEmail when the email is taken, whatever its letter case: the unique
        index decides, so two simultaneous registrations cannot both succeed.
        """
        conn = self._connection()
        try:
            with transaction(conn):
                cursor = conn.execute(
                    "INSERT INTO users (email, hashed_password) VALUES (?, ?)",
                    (email, hashed_password),
                )
        except sqlite3.IntegrityError:
            raise DuplicateEmail(f"User {email} already exists") from None
        return User(id=cursor.lastrowid, email=email, hashed_password=hashed_password)

    def find_user_by(self, **filters: Any) -> User:
        """Return the first user matching every filter (`column=value`, joined with AND).

        A value of None matches NULL. Raises InvalidQuery when there is no filter or a
        filter names no column, UserNotFound when no row matches.
        """
        if not filters:
            raise InvalidQuery("find_user_by needs at least one column=value filter")
        shape = tuple((column, filters[column] is None) for column in filters)
        # fetchall, not fetchone: it runs the statement to its end, so this thread's
        # long-lived connection keeps no read transaction (and no WAL snapshot) open.
        rows = (
            self._connection()
            .execute(_select_where(shape), list(filters.values()))
            .fetchall()
        )
        if not rows:
            raise UserNotFound(f"no user matches {', '.join(filters)}")
        return _user_from_row(rows[0])

    def update_user(self, user_id: int, **fields: Any) -> None:
        """Set the given columns of user `user_id`.

        Raises ValueError (InvalidQuery) when a field names no column or is `id`, and
        UserNotFound when there is no such user. No fields is a no-op.
        """
        columns = _checked_columns(fields, allow_id=False)
        if not columns:
            return
        assignments = ", ".join(f"{column} = ?" for column in columns)
        values = [fields[column] for column in columns]
        conn = self._connection()
        with transaction(conn):
            cursor = conn.execute(
                f"UPDATE users SET {assignments} WHERE id = ?", [*values, user_id]
            )
        if cursor.rowcount == 0:
            raise UserNotFound(f"no user with id {user_id}")

    # -- login throttling (shared by every worker, because it is in the database)

    def count_login_attempt(
        self, email: str, now: float, window: float
    ) -> LoginAttempts:
        """Count one login attempt for `email` and return the tally of its current window.

        Atomic, so simultaneous attempts on several workers are all counted. Rows whose
        window ended by `now` are deleted first, so the table holds only live windows and
        an attempt after a window ended opens a new one.
        """
        conn = self._connection()
        with transaction(conn):
            conn.execute(
                "DELETE FROM login_attempts WHERE window_started_at <= ?",
                (now - window,),
            )
            (row,) = conn.execute(
                "INSERT INTO login_attempts (email, attempts, window_started_at) VALUES (?, 1, ?)"
                " ON CONFLICT (email) DO UPDATE SET attempts = attempts + 1"
                " RETURNING attempts, window_started_at",
                (email, now),
            ).fetchall()
        return LoginAttempts(
            attempts=row["attempts"], window_started_at=row["window_started_at"]
        )

    def clear_login_attempts(self, email: str) -> None:
        """Forget the login attempts of `email` (after a successful login)."""
        conn = self._connection()
        with transaction(conn):
            conn.execute("DELETE FROM login_attempts WHERE email = ?", (email,))

    # -- bulk loading (tests/bench.py seeds a million users with it)

    def add_many_users(self, emails: Iterable[str], hashed_password: str) -> int:
        """Insert a user for each email, all with one password hash, in one transaction.

        One transaction and one prepared statement make a million rows a matter of
        seconds. Raises DuplicateEmail (and inserts nothing) if any email is taken.
        Returns the number of rows inserted.
        """
        conn = self._connection()
        try:
            with transaction(conn):
                cursor = conn.executemany(
                    "INSERT INTO users (email, hashed_password) VALUES (?, ?)",
                    ((email, hashed_password) for email in emails),
                )
        except sqlite3.IntegrityError:
            raise DuplicateEmail("one of the emails is already registered") from None
        return cursor.rowcount
