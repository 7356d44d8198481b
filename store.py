"""The data layer of authsvc: parameterized SQL through the stdlib sqlite3, against schema.sql.

It mirrors the course's `DB` class (`add_user`, `find_user_by`, `update_user`) without an ORM,
so every statement the service runs can be read here.

Connections. A sqlite3 connection must not be shared between threads (sqlite3's
`check_same_thread` raises if it is) nor carried across `fork()` (two processes would then
share one file descriptor and one lock state). So a `Store` holds no connection of its own:
each thread opens its own connection lazily, on first use, and the web layer closes it at
the end of every request (`Store.close`). Nothing is opened at import or by the constructor,
so `gunicorn --preload` forks no connection.

Writes. Every write runs inside `transaction()`: `BEGIN IMMEDIATE` takes SQLite's write lock
at the start, so a check-and-set (a single-use token, say) is atomic across gunicorn workers,
and WAL mode never has to fail a read-then-write transaction with SQLITE_BUSY.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("schema.sql")

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

    Re-entrant: inside an open transaction it simply joins it, so `Store` methods that
    write can be composed into one atomic step by an outer `Store.transaction()`.
    Note that `with conn:` would only commit; it neither begins IMMEDIATE nor closes.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
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
        """Apply schema.sql and switch the file to WAL mode, on a connection closed after.

        Safe to run in every worker at every start-up: the schema is idempotent and never
        drops anything. WAL lets readers (every `GET /profile`) run while one writer writes;
        the setting is stored in the file, so once is enough.
        """
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA_PATH.read_text(encoding="utf-8"))
        finally:
            conn.close()

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
        columns = _checked_columns(filters, allow_id=True)
        # `IS ?` is equality that also matches NULL = NULL; `= ?` can use the indexes.
        where = " AND ".join(
            f"{column} IS ?" if filters[column] is None else f"{column} = ?"
            for column in columns
        )
        values = [filters[column] for column in columns]
        row = (
            self._connection()
            .execute(f"{_SELECT_USER} WHERE {where} LIMIT 1", values)
            .fetchone()
        )
        if row is None:
            raise UserNotFound(f"no user matches {', '.join(columns)}")
        return _user_from_row(row)

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
