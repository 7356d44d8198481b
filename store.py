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
import time
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


class InvalidValue(ValueError):
    """A value the schema refuses (NULL where a column needs one), not a duplicate."""


class DatabaseBusy(RuntimeError):
    """Another process held SQLite's write lock for longer than the busy timeout."""


class DatabaseUnusable(RuntimeError):
    """The database file cannot serve: it cannot be opened, or it cannot be written."""


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


# The tables that count attempts per email within a window, all of one shape
# (schema.sql: login_attempts, migration 2; reset_attempts, migration 4).
ATTEMPT_TABLES = ("login_attempts", "reset_attempts")


@dataclasses.dataclass(frozen=True)
class LoginAttempts:
    """The attempts (logins, or reset requests) counted for one email in its window."""

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

# How long a starting worker waits for a write lock it needs to upgrade the schema.
BOOT_WAIT_SECONDS = 120.0


def _user_version(conn: sqlite3.Connection) -> int:
    """The number of the last migration applied to the file (0 for a new file)."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _journal_mode(conn: sqlite3.Connection) -> str:
    """The file's journal mode ("wal" once initialize() has run; "delete" before)."""
    return conn.execute("PRAGMA journal_mode").fetchone()[0]


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


def _user_from_row(row: sqlite3.Row, prefix: str = "") -> User:
    """Build a User from a row selected with `_SELECT_USER` (columns named `prefix`+name)."""
    return User(**{column: row[prefix + column] for column in USER_COLUMNS})


def _session_from_row(row: sqlite3.Row) -> Session:
    """Build a Session from a row selected with `_SELECT_SESSION`."""
    return Session(**{column: row[column] for column in SESSION_COLUMNS})


def _integrity_error(error: sqlite3.IntegrityError, email: Any) -> ValueError:
    """The store's own error for a constraint the database enforced.

    Only the unique index on email means "already registered"; a NULL where the schema
    needs a value is another mistake, and saying "duplicate" for it would mislead.
    """
    if error.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_UNIQUE:
        return DuplicateEmail(f"User {email} already exists")
    return InvalidValue(f"the database refused the values: {error.sqlite_errorname}")


# ----------------------------------------------------------------------------- the store


class Store:
    """The users table of one SQLite file, with a connection per thread opened on demand."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Remember where the database is; open nothing yet (see the module docstring).

        Raises DatabaseUnusable for ":memory:" (or an empty path): every connection
        would get a database of its own, empty, so nothing would be shared.
        """
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise DatabaseUnusable(
                f"{self.path!r} is not a file: every connection would see its own empty database"
            )
        self._local = threading.local()

    # -- lifecycle

    def initialize(self) -> None:
        """Bring the file up to the current schema, in WAL mode, on a connection closed after.

        Safe to run in every worker at every start-up (see schema.sql). When the file is
        already current it only reads (WAL readers never wait for a writer), so a worker
        can boot while another process holds the write lock for a long bulk load. When
        migrations are due, the version is read again inside the write transaction, so of
        several workers starting at once the first applies them and the others find
        nothing left to do; a write lock held past the busy timeout is waited out, with a
        warning every BUSY_TIMEOUT_SECONDS, up to BOOT_WAIT_SECONDS: a worker that gave
        up would make gunicorn stop the whole server. Raises SchemaTooNew for a file a
        newer authsvc has upgraded, DatabaseBusy once BOOT_WAIT_SECONDS have passed.
        """
        try:
            conn = connect(self.path)
        except sqlite3.OperationalError as error:  # a missing directory, say
            raise DatabaseUnusable(f"cannot open {self.path}: {error}") from None
        try:
            self._check_writable()
            deadline = time.monotonic() + BOOT_WAIT_SECONDS
            while True:
                try:
                    self._upgrade(conn)
                    return
                except DatabaseBusy:
                    if time.monotonic() >= deadline:
                        raise
                    logger.warning("the schema upgrade waits for the write lock")
        finally:
            conn.close()

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

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """One attempt of `initialize`: WAL mode and the missing migrations, if any."""
        if _user_version(conn) == SCHEMA_VERSION and _journal_mode(conn) == "wal":
            return
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            raise DatabaseBusy("the database is busy") from None
        with transaction(conn):
            version = _user_version(conn)
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

    def schema_version(self) -> int:
        """The number of the last migration applied to the file (PRAGMA user_version)."""
        return _user_version(self._connection())

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
        except sqlite3.IntegrityError as error:
            raise _integrity_error(error, email) from None
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

        Raises ValueError: InvalidQuery when a field names no column or is `id`,
        DuplicateEmail when the new email is another user's, InvalidValue for a NULL the
        schema refuses. UserNotFound when there is no such user. No fields is a no-op.
        """
        columns = _checked_columns(fields, allow_id=False)
        if not columns:
            return
        assignments = ", ".join(f"{column} = ?" for column in columns)
        values = [fields[column] for column in columns]
        conn = self._connection()
        try:
            with transaction(conn):
                cursor = conn.execute(
                    f"UPDATE users SET {assignments} WHERE id = ?", [*values, user_id]
                )
        except sqlite3.IntegrityError as error:
            raise _integrity_error(error, fields.get("email")) from None
        if cursor.rowcount == 0:
            raise UserNotFound(f"no user with id {user_id}")

    # -- sessions: one row per login (schema.sql, migration 3)
    #
    # "Live" is decided by the caller's clock, passed in as two bounds: a session is live
    # while `expires_at > now` (its absolute lifetime) and `last_used_at > live_after`
    # (its idle lifetime: `live_after` is now minus the idle lifetime, or -inf when idle
    # expiry is off). The store keeps no clock of its own, so tests can move time.

    def add_session(
        self,
        session: Session,
        *,
        password_hash: str,
        max_sessions: int,
        live_after: float,
    ) -> bool:
        """Insert `session` (its `id` is ignored) as one atomic step; False if refused.

        In one write transaction: the user's ended sessions are deleted (expired rows
        are cleaned up at each login), the new row is inserted only if the user's stored
        password hash is still `password_hash`, and the user's least recently used
        sessions beyond `max_sessions` are deleted. The hash condition closes a race: a
        login that checked a password which a reset replaced while bcrypt ran must not
        start a session (it returns False, and nothing is written).
        """
        now = session.created_at
        conn = self._connection()
        with transaction(conn):
            conn.execute(
                "DELETE FROM sessions WHERE user_id = ?"
                " AND (expires_at <= ? OR last_used_at <= ?)",
                (session.user_id, now, live_after),
            )
            inserted = conn.execute(
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
            conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND id NOT IN"
                " (SELECT id FROM sessions WHERE user_id = ?"
                "  ORDER BY last_used_at DESC, id DESC LIMIT ?)",
                (session.user_id, session.user_id, max_sessions),
            )
        return inserted == 1

    def find_session(self, digest: str) -> tuple[Session, User] | None:
        """The session whose id has this digest, with its user; None if there is none.

        Live or not: the caller decides with its clock. One indexed lookup.
        """
        rows = (
            self._connection().execute(_SELECT_SESSION_AND_USER, (digest,)).fetchall()
        )
        if not rows:
            return None
        return _session_from_row(rows[0]), _user_from_row(rows[0], prefix="user_")

    def touch_session(self, session_id: int, now: float, stale_before: float) -> None:
        """Record a use of session `session_id` at `now`, if the recorded one is older
        than `stale_before`.

        The condition is in the UPDATE itself: of many simultaneous requests that all saw
        a stale time, the first writes and the others match no row, so a burst of
        requests costs one write, not one each.
        """
        conn = self._connection()
        with transaction(conn):
            conn.execute(
                "UPDATE sessions SET last_used_at = ? WHERE id = ? AND last_used_at < ?",
                (now, session_id, stale_before),
            )

    def user_sessions(
        self, user_id: int, now: float, live_after: float
    ) -> list[Session]:
        """The user's live sessions, most recently used first."""
        rows = (
            self._connection()
            .execute(
                f"{_SELECT_SESSION} WHERE user_id = ? AND last_used_at > ?"
                " AND expires_at > ? ORDER BY last_used_at DESC, id DESC",
                (user_id, live_after, now),
            )
            .fetchall()
        )
        return [_session_from_row(row) for row in rows]

    def delete_session(
        self, user_id: int, public_id: str, now: float, live_after: float
    ) -> Session | None:
        """Delete the user's live session with this public id; return it, or None.

        Another user's session, an ended one and an unknown id are all None alike.
        """
        conn = self._connection()
        with transaction(conn):
            rows = conn.execute(
                "DELETE FROM sessions WHERE public_id = ? AND user_id = ?"
                f" AND last_used_at > ? AND expires_at > ? RETURNING {', '.join(SESSION_COLUMNS)}",
                (public_id, user_id, live_after, now),
            ).fetchall()
        return _session_from_row(rows[0]) if rows else None

    def delete_session_by_digest(self, digest: str) -> bool:
        """Delete the session whose id has this digest (a logout). True if there was one."""
        conn = self._connection()
        with transaction(conn):
            deleted = conn.execute(
                "DELETE FROM sessions WHERE digest = ?", (digest,)
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

        Returns how many of the deleted sessions were live (ended ones go too, uncounted).
        """
        keep_id = -1 if keep is None else keep
        conn = self._connection()
        with transaction(conn):
            live = conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND id <> ?"
                " AND last_used_at > ? AND expires_at > ?",
                (user_id, keep_id, live_after, now),
            ).rowcount
            conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND id <> ?", (user_id, keep_id)
            )
        return live

    # -- login throttling (shared by every worker, because it is in the database)

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

        Atomic, so simultaneous attempts on several workers are all counted. Rows whose
        window ended by `now` are deleted first, so the table holds only live windows and
        an attempt after a window ended opens a new one. `table` is one of
        ATTEMPT_TABLES (a name put into SQL text, so never a caller's string).
        """
        if table not in ATTEMPT_TABLES:
            raise InvalidQuery(f"not a table of attempts: {table}")
        conn = self._connection()
        with transaction(conn):
            conn.execute(
                f"DELETE FROM {table} WHERE window_started_at <= ?", (now - window,)
            )
            (row,) = conn.execute(
                f"INSERT INTO {table} (email, attempts, window_started_at) VALUES (?, 1, ?)"
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
