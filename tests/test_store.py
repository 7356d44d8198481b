"""store.py: the course's DB tasks 0-3, the schema, and the connection rules."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import query, write_lock_held

import store
from store import DuplicateEmail, InvalidQuery, Store, User, UserNotFound


@pytest.fixture
def db(database_url: str) -> Store:
    """A store on a fresh database (SQLite file or PostgreSQL) with the schema applied."""
    instance = Store(database_url)
    instance.initialize()
    yield instance
    instance.close()


def read_all(db: str) -> list[tuple]:
    """Every users row, read on a separate connection."""
    return query(db, f"SELECT {', '.join(store.USER_COLUMNS)} FROM users ORDER BY id")


# -- task 0: the model


@pytest.mark.sqlite_only
def test_users_table_mirrors_the_course_model(db: Store) -> None:
    conn = sqlite3.connect(db.path)
    columns = {
        row[1]: (row[2], row[3]) for row in conn.execute("PRAGMA table_info(users)")
    }
    conn.close()
    assert columns["id"] == ("INTEGER", 0)
    assert columns["email"] == ("VARCHAR(250)", 1)
    assert columns["hashed_password"] == ("VARCHAR(250)", 1)
    assert columns["session_id"] == ("VARCHAR(250)", 0)
    assert columns["reset_token"] == ("VARCHAR(250)", 0)


@pytest.mark.parametrize(
    ("table", "columns"),
    [("users", store.USER_COLUMNS), ("sessions", store.SESSION_COLUMNS)],
)
def test_column_allow_list_matches_the_schema(
    db: Store, table: str, columns: tuple[str, ...]
) -> None:
    """On both databases: the dataclasses name the columns, in table order."""
    if db.dialect.name == "sqlite":
        rows = query(db.path, f"SELECT name FROM pragma_table_info('{table}')")
    else:
        rows = query(
            db.path,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = ? ORDER BY ordinal_position",
            (table,),
        )
    assert tuple(name for (name,) in rows) == columns


# -- task 1: add_user


def test_add_user_returns_users_with_increasing_ids(db: Store) -> None:
    first = db.add_user("test@test.com", "SuperHashedPwd")
    second = db.add_user("test1@test.com", "SuperHashedPwd1")
    assert (first.id, second.id) == (1, 2)
    assert first == User(
        id=1,
        email="test@test.com",
        hashed_password="SuperHashedPwd",
        email_key="test@test.com",
        email_verified=False,  # a new account has proved no address yet
        created_at=first.created_at,
    )
    assert db.find_user_by(id=1) == first


def test_add_user_refuses_an_email_taken_in_another_letter_case(db: Store) -> None:
    db.add_user("bob@example.com", "h1")
    with pytest.raises(DuplicateEmail, match="User BOB@Example.com already exists"):
        db.add_user("BOB@Example.com", "h2")
    assert len(read_all(db.path)) == 1


@pytest.mark.parametrize("other", ["A@B.CO", "a@b.co"])
def test_the_unique_index_refuses_duplicates_even_bypassing_the_store(
    db: Store, other: str
) -> None:
    """Writing the rows by hand, with the folded key the schema asks for: the database
    itself refuses the second (whatever Python code does or forgets)."""
    insert = "INSERT INTO users (email, hashed_password, email_key) VALUES (?, 'h', ?)"
    query(db.path, insert, ("a@b.co", store.email_key("a@b.co")))
    with pytest.raises(Exception) as refused:
        query(db.path, insert, (other, store.email_key(other)))
    assert "IntegrityError" in {cls.__name__ for cls in type(refused.value).__mro__}


def test_sql_metacharacters_are_stored_as_plain_text(db: Store) -> None:
    email = "x'); DROP TABLE users; --@example.com"
    user = db.add_user(email, "h")
    assert db.find_user_by(email=email) == user
    (row,) = read_all(db.path)
    assert row[:8] == (1, email, "h", None, None, None, None, email.casefold())


# -- task 2: find_user_by


def test_find_user_by_returns_the_matching_user(db: Store) -> None:
    user = db.add_user("test@test.com", "PwdHashed")
    assert db.find_user_by(email="test@test.com") == user
    assert db.find_user_by(id=user.id, hashed_password="PwdHashed") == user


def test_find_user_by_email_ignores_letter_case(db: Store) -> None:
    user = db.add_user("test@test.com", "PwdHashed")
    assert db.find_user_by(email="TEST@Test.COM") == user


def test_find_user_by_raises_not_found_when_nothing_matches(db: Store) -> None:
    db.add_user("test@test.com", "PwdHashed")
    with pytest.raises(UserNotFound):
        db.find_user_by(email="test2@test.com")


def test_find_user_by_none_matches_null(db: Store) -> None:
    user = db.add_user("test@test.com", "PwdHashed")
    assert db.find_user_by(session_id=None) == user


@pytest.mark.parametrize(
    "filters",
    [{"no_email": "test@test.com"}, {"email = email OR 1": "x"}, {}],
    ids=["unknown column", "injection attempt", "no filter"],
)
def test_find_user_by_rejects_anything_but_columns(db: Store, filters: dict) -> None:
    db.add_user("test@test.com", "PwdHashed")
    with pytest.raises(InvalidQuery):
        db.find_user_by(**filters)


# -- task 3: update_user


def test_update_user_changes_the_given_columns(db: Store) -> None:
    user = db.add_user("test@test.com", "hashedPwd")
    assert db.update_user(user.id, hashed_password="NewPwd", reset_token="r") is None
    assert db.find_user_by(id=user.id).hashed_password == "NewPwd"
    assert db.find_user_by(id=user.id).reset_token == "r"


@pytest.mark.parametrize(
    "field", ["no_such_column", "id", "email = 'x', hashed_password"]
)
def test_update_user_raises_value_error_for_a_non_column(db: Store, field: str) -> None:
    user = db.add_user("test@test.com", "hashedPwd")
    with pytest.raises(ValueError):
        db.update_user(user.id, **{field: "x"})
    assert db.find_user_by(id=user.id) == user


def test_update_user_raises_not_found_for_an_unknown_id(db: Store) -> None:
    with pytest.raises(UserNotFound):
        db.update_user(99, session_id="x")


def test_update_user_cannot_take_another_users_email(db: Store) -> None:
    db.add_user("a@example.com", "h")
    other = db.add_user("b@example.com", "h")
    with pytest.raises(store.DuplicateEmail):
        db.update_user(other.id, email="A@example.com")
    assert db.find_user_by(id=other.id).email == "b@example.com"


def test_update_user_refuses_a_null_email_with_a_value_error(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    with pytest.raises(store.InvalidValue):
        db.update_user(user.id, email=None)
    assert issubclass(store.InvalidValue, ValueError)
    assert not issubclass(store.InvalidValue, store.DuplicateEmail)


def test_add_user_with_no_email_is_not_taken_for_a_duplicate(db: Store) -> None:
    with pytest.raises(store.InvalidValue):
        db.add_user(None, "h")  # type: ignore[arg-type]
    assert read_all(db.path) == []


# -- transactions


def test_a_failed_transaction_leaves_nothing_behind(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    with pytest.raises(RuntimeError), db.transaction():
        db.update_user(user.id, hashed_password="changed")
        raise RuntimeError("abort")
    assert db.find_user_by(id=user.id).hashed_password == "h"


@pytest.mark.sqlite_only
def test_a_transaction_holds_the_write_lock_until_it_ends(db: Store) -> None:
    other = sqlite3.connect(db.path, timeout=0, isolation_level=None)
    with db.transaction(), pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()


# -- schema at start-up


def test_initialize_is_idempotent_and_keeps_every_user(db: Store) -> None:
    db.add_user("keep@example.com", "h")
    before = read_all(db.path)
    db.initialize()
    Store(db.path).initialize()
    assert read_all(db.path) == before


def boot_at_once(database: Path | str, workers: int = 8) -> None:
    """`workers` threads apply the schema to one database at the same moment, as the
    workers of a starting server do; re-raises the first error of any of them."""
    barrier = threading.Barrier(workers)

    def boot(_: int) -> None:
        barrier.wait()
        Store(database).initialize()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(boot, range(workers)))


def test_many_workers_can_apply_the_schema_at_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    boot_at_once(path)
    assert read_all(str(path)) == []


@pytest.mark.postgresql_only
def test_many_workers_can_migrate_one_new_postgresql_database_at_once(
    postgres: object, request: pytest.FixtureRequest
) -> None:
    """Eight workers (or hosts) start on a database with no schema at all: one applies
    every migration, the others wait and then find nothing to do. Migration 8 renames
    columns, so a second application would fail: none happens."""
    name = f"race_{os.getpid()}"
    postgres.sql(f"CREATE DATABASE {name}")
    request.addfinalizer(
        lambda: postgres.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    )
    request.addfinalizer(store.close_all_pools)
    url = postgres.url(name)
    boot_at_once(url)
    assert Store(url).schema_version() == store.SCHEMA_VERSION


@pytest.mark.sqlite_only
def test_the_database_runs_in_wal_mode_with_a_busy_timeout(db: Store) -> None:
    conn = db._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (
        conn.execute("PRAGMA busy_timeout").fetchone()[0]
        == store.BUSY_TIMEOUT_SECONDS * 1000
    )
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


# -- connections


def test_nothing_is_opened_before_first_use(tmp_path: Path) -> None:
    instance = Store(tmp_path / "lazy.db")
    instance.initialize()
    assert getattr(instance._local, "conn", None) is None


@pytest.mark.sqlite_only
def test_each_thread_gets_its_own_connection(db: Store) -> None:
    db.add_user("a@example.com", "h")
    seen: list[sqlite3.Connection] = []  # kept alive, so no two can share an address

    def look() -> None:
        seen.append(db._connection())
        assert db.find_user_by(email="a@example.com").id == 1
        db.close()

    threads = [threading.Thread(target=look) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mine = db._connection()
    assert len({id(conn) for conn in [*seen, mine]}) == 3


@pytest.mark.sqlite_only
def test_close_closes_the_connection(db: Store) -> None:
    conn = db._connection()
    db.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")
    assert (
        db.add_user("after@example.com", "h").id == 1
    )  # the next call opens a new one


# -- schema versions


@pytest.mark.sqlite_only
def test_a_new_database_gets_every_migration(db: Store) -> None:
    assert db.schema_version() == store.SCHEMA_VERSION == len(store.MIGRATIONS) == 11
    tables = {
        row[0]
        for row in db._connection().execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert {"users", "login_attempts", "sessions", "reset_attempts"} <= tables
    assert {"two_factor", "passkeys", "webauthn_challenges"} <= tables


def test_a_first_release_database_is_upgraded_and_keeps_its_users(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        (Path(__file__).parent / "fixtures" / "schema-first-release.sql").read_text()
    )
    conn.execute(
        "INSERT INTO users (email, hashed_password) VALUES ('old@example.com', 'h')"
    )
    conn.close()
    upgraded = Store(path)
    upgraded.initialize()
    assert upgraded.schema_version() == store.SCHEMA_VERSION
    assert upgraded.find_user_by(email="old@example.com").hashed_password == "h"
    upgraded.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(
        store.SchemaTooNew, match=f"schema version {store.SCHEMA_VERSION + 1}"
    ):
        Store(path).initialize()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []  # untouched
    conn.close()


def test_migrations_must_be_numbered_in_order() -> None:
    with pytest.raises(ValueError, match="numbered"):
        store.read_migrations(
            "-- @migration 1: a\nSELECT 1;\n-- @migration 3: c\nSELECT 3;\n"
        )


def test_a_semicolon_in_a_comment_does_not_split_a_statement() -> None:
    (statements,) = store.read_migrations(
        "-- @migration 1: x\nCREATE TABLE t (\n  -- a; b\n  x INTEGER\n);\nCREATE INDEX i ON t (x);\n"
    )
    assert statements == [
        "CREATE TABLE t (\n  -- a; b\n  x INTEGER\n);",
        "CREATE INDEX i ON t (x);",
    ]


# -- login attempts


def test_login_attempts_are_counted_per_email_within_a_window(db: Store) -> None:
    counts = [
        db.count_login_attempt("a@example.com", 1000.0 + i, 60).attempts
        for i in range(3)
    ]
    assert counts == [1, 2, 3]
    assert db.count_login_attempt("A@EXAMPLE.COM", 1003.0, 60) == store.LoginAttempts(
        4, 1000.0
    )
    assert db.count_login_attempt("b@example.com", 1003.0, 60).attempts == 1


def test_a_new_window_starts_when_the_old_one_ends(db: Store) -> None:
    db.count_login_attempt("a@example.com", 1000.0, 60)
    db.count_login_attempt("a@example.com", 1059.0, 60)
    assert db.count_login_attempt("a@example.com", 1060.0, 60) == store.LoginAttempts(
        1, 1060.0
    )


def test_clearing_forgets_the_attempts(db: Store) -> None:
    db.count_login_attempt("a@example.com", 1000.0, 60)
    db.clear_login_attempts("A@example.com")
    assert db.count_login_attempt("a@example.com", 1001.0, 60).attempts == 1


def test_ended_windows_are_deleted(db: Store) -> None:
    for index in range(5):
        db.count_login_attempt(f"user{index}@example.com", 1000.0, 60)
    db.count_login_attempt("late@example.com", 2000.0, 60)
    assert query(db.path, "SELECT email_digest FROM login_attempts") == [
        (hashlib.sha256(b"late@example.com").hexdigest(),)
    ]


@pytest.mark.sqlite_only  # the same loop waits for a PostgreSQL that does not answer
def test_a_start_up_that_waits_says_so_every_five_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The schema check tries again every second, and warns every BOOT_WARNING_SECONDS
    (as docs/operations.md, "Running in production", says), not at every try."""

    class Clock:
        now = 0.0

        def monotonic(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.now += seconds

    monkeypatch.setattr(store, "time", Clock())
    monkeypatch.setattr(store, "BUSY_TIMEOUT_SECONDS", 0.01)
    monkeypatch.setattr(store, "BOOT_WAIT_SECONDS", 12.0)
    path = tmp_path / "new.db"
    with (
        write_lock_held(str(path)),
        pytest.raises(store.DatabaseBusy),
        caplog.at_level("WARNING", logger="authsvc.store"),
    ):
        Store(path).initialize()
    waits = [r for r in caplog.records if "schema check waits" in r.getMessage()]
    assert len(waits) == 3  # at 0, 5 and 10 s of 12 tries


def test_a_write_lock_held_too_long_is_database_busy(
    db: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_SECONDS", 0.05)
    db.close()  # the next connection gets the short timeout
    with write_lock_held(db.path), pytest.raises(store.DatabaseBusy):
        db.add_user("late@example.com", "h")
    assert db.add_user("late@example.com", "h").id == 1
