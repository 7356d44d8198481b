"""The operator's commands, run as subprocesses (`python authsvc.py <command>`)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pgserver
import pytest
import requests
from conftest import FAST_ROUNDS, query, run_authsvc, write_lock_held
from servers import GunicornServer
from softauthn import SoftPasskey

import store
from authsvc import Auth, Config
from factors import code_at, time_step
from store import Store

TIMEOUT = 15


def run_command(*args: str, db: str | None = None) -> subprocess.CompletedProcess:
    """`python authsvc.py ARGS` with AUTHSVC_DB set (or not), as an operator runs it."""
    return run_authsvc(*args, env={"AUTHSVC_DB": db} if db is not None else {})


def test_help_lists_every_command() -> None:
    result = run_command("--help")
    assert result.returncode == 0
    for command in ("migrate", "copy-db"):
        assert command in result.stdout


def test_migrate_prints_the_version(database_url: str) -> None:
    result = run_command("migrate", db=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"schema at version {store.SCHEMA_VERSION}")


@pytest.mark.e2e
def test_copy_db_moves_users_and_keeps_them_logged_in(
    tmp_path: Path,
    postgres: pgserver.PostgresServer,
    start_gunicorn_on: Callable[[str], GunicornServer],
) -> None:
    sqlite_path = str(tmp_path / "old.db")
    auth = Auth(Config(db=sqlite_path, bcrypt_rounds=FAST_ROUNDS))
    for index in range(5):
        auth.register_user(f"user{index}@example.com", f"pw{index}")
    session_id = auth.create_session("user3@example.com", "Laptop/1.0", "192.0.2.1")
    token = auth.get_reset_password_token("user4@example.com")
    two_factor_user = auth.find_user("user2@example.com")
    enrolment = auth.begin_two_factor(two_factor_user, "pw2")
    auth.enable_two_factor(
        two_factor_user, code_at(enrolment.secret, time_step(time.time()))
    )
    key = SoftPasskey()
    passkey_user = auth.find_user("user1@example.com")
    ceremony = auth.passkeys.registration_options(passkey_user.id, passkey_user.email)
    auth.passkeys.register(
        passkey_user.id, ceremony.challenge_id, key.create(ceremony.options), "laptop"
    )
    auth.close()
    postgres.sql("CREATE DATABASE copied")
    url = postgres.url("copied")

    # The URL from AUTHSVC_DB, as the server takes it: never on the command line.
    result = run_command("copy-db", sqlite_path, db=url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "users: 5, sessions: 1, reset_tokens: 1, two_factor: 1, recovery_codes: 10,"
        " passkeys: 1 copied"
    )

    server = start_gunicorn_on(url)
    profile = requests.get(
        f"{server.url}/profile", cookies={"session_id": session_id}, timeout=TIMEOUT
    )
    assert profile.json() == {"email": "user3@example.com"}
    # Two-factor went with the account: the password alone does not log in.
    data = {"email": "user2@example.com", "password": "pw2"}
    login = requests.post(f"{server.url}/sessions", data=data, timeout=TIMEOUT)
    assert login.status_code == 401 and "mfa_token" in login.json()
    # The passkey too: it logs its user in on the new database.
    options = requests.post(f"{server.url}/sessions/passkey/options", timeout=TIMEOUT)
    ceremony_json = options.json()
    assert options.status_code == 200, options.text
    with_passkey = requests.post(
        f"{server.url}/sessions/passkey",
        json={
            "challenge_id": ceremony_json["challenge_id"],
            "credential": key.get(ceremony_json["options"]),
        },
        timeout=TIMEOUT,
    )
    assert with_passkey.json() == {"email": "user1@example.com", "message": "logged in"}
    data = {"email": "user4@example.com", "reset_token": token, "new_password": "n3w"}
    assert requests.put(f"{server.url}/reset_password", data=data, timeout=TIMEOUT).ok
    new = {"email": "user5@example.com", "password": "pw"}
    assert requests.post(f"{server.url}/users", data=new, timeout=TIMEOUT).ok
    assert query(url, "SELECT COUNT(*) FROM users") == [(6,)]

    again = run_command("copy-db", sqlite_path, db=url)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        "copy-db: the PostgreSQL database is not empty: nothing was copied"
    )
    assert query(url, "SELECT COUNT(*) FROM users") == [(6,)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("/nonexistent/old.db", "postgresql://x@127.0.0.1:1/x"), "no SQLite database"),
        (("old.db", "mysql://x"), "must be a postgresql:// URL"),
        (
            ("postgresql://x@127.0.0.1:1/x", "postgresql://y"),
            "is not a SQLite file path",
        ),
    ],
)
def test_copy_db_refuses_what_it_cannot_copy(
    args: tuple[str, str], message: str
) -> None:
    result = run_command("copy-db", *args)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_copy_db_refuses_a_password_on_the_command_line(tmp_path: Path) -> None:
    """ps and the shell's history keep a command line: the URL with its password goes
    in AUTHSVC_DB (or the password in PGPASSWORD or ~/.pgpass)."""
    sqlite_path = tmp_path / "old.db"
    Store(sqlite_path).initialize()
    result = run_command(
        "copy-db", str(sqlite_path), "postgresql://authsvc:hunter2@127.0.0.1:1/x"
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "AUTHSVC_DB" in line and "PGPASSWORD" in line
    assert "hunter2" not in line


def test_copy_db_without_a_target_names_authsvc_db(tmp_path: Path) -> None:
    sqlite_path = tmp_path / "old.db"
    Store(sqlite_path).initialize()
    result = run_command("copy-db", str(sqlite_path), db=str(tmp_path / "other.db"))
    assert result.returncode == 1
    assert "AUTHSVC_DB (or POSTGRES_URL) must be a postgresql:// URL" in result.stderr


def test_an_unknown_command_is_a_usage_error() -> None:
    result = run_command("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_migrate_names_authsvc_db_when_it_cannot_serve() -> None:
    result = run_command("migrate", db="/nonexistent/dir/a.db")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "migrate: AUTHSVC_DB='/nonexistent/dir/a.db' cannot be used"
    )


# -- the user commands, on both backends


def run_with_password(
    *args: str, db: str, password: str
) -> subprocess.CompletedProcess:
    """A command that reads a password, given on stdin as a pipe (one line)."""
    env = {"AUTHSVC_DB": db, "AUTHSVC_BCRYPT_ROUNDS": str(FAST_ROUNDS)}
    return run_authsvc(*args, env=env, stdin=password + "\n")


def failure(result: subprocess.CompletedProcess) -> str:
    """The one-line message a failed command ends stderr with (audit lines come before)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    return result.stderr.strip().splitlines()[-1]


def test_create_user_registers_with_the_password_from_stdin(database_url: str) -> None:
    result = run_with_password(
        "create-user", "Bob@Example.com", db=database_url, password="s3cret pw"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "user 1 created: Bob@Example.com"
    assert "event=register outcome=ok user=1 client=cli" in result.stderr
    assert "s3cret pw" not in result.stderr + result.stdout
    auth = Auth(Config(db=database_url, bcrypt_rounds=FAST_ROUNDS))
    assert auth.valid_login("bob@example.com", "s3cret pw")
    auth.close()


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-email", "pw", "email is not a valid address"),
        ("a,b@c.io", "pw", "email is not a valid address"),
        ("ok@example.com", "p" * 73, "password must be at most 72 bytes in UTF-8"),
        ("ok@example.com", "", "password is required"),
        ("ok@example.com", "a\0b", "password must not contain a NUL character"),
    ],
)
def test_create_user_checks_what_post_users_checks(
    database_url: str, email: str, password: str, message: str
) -> None:
    Store(database_url).initialize()
    result = run_with_password("create-user", email, db=database_url, password=password)
    assert failure(result).startswith(f"create-user: {message}")
    assert query(database_url, "SELECT COUNT(*) FROM users") == [(0,)]


def test_create_user_refuses_a_taken_email(database_url: str) -> None:
    run_with_password("create-user", "bob@example.com", db=database_url, password="pw")
    result = run_with_password(
        "create-user", "BOB@example.com", db=database_url, password="x"
    )
    assert failure(result) == "create-user: email already registered"


def test_set_password_and_end_sessions(database_url: str) -> None:
    auth = Auth(Config(db=database_url, bcrypt_rounds=FAST_ROUNDS))
    user = auth.register_user("bob@example.com", "old pw")
    sessions = [auth.create_session("bob@example.com") for _ in range(3)]
    result = run_with_password(
        "set-password", "bob@example.com", db=database_url, password="new pw"
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == f"password set for user {user.id}; 3 session(s) ended"
    )
    assert "event=password_update outcome=ok" in result.stderr
    assert auth.valid_login("bob@example.com", "new pw")
    assert not auth.valid_login("bob@example.com", "old pw")
    assert [auth.get_user_from_session_id(s) for s in sessions] == [None] * 3
    auth.create_session("bob@example.com")
    auth.create_session("bob@example.com")
    ended = run_command("end-sessions", "BOB@example.com", db=database_url)
    assert ended.stdout.strip() == f"2 session(s) ended for user {user.id}"
    assert "event=end_sessions outcome=ok" in ended.stderr
    auth.close()


@pytest.mark.parametrize("command", ["set-password", "end-sessions"])
def test_an_unknown_email_fails_with_one_line(database_url: str, command: str) -> None:
    result = run_with_password(
        command, "nobody@example.com", db=database_url, password="pw"
    )
    assert failure(result) == f"{command}: no user has the email nobody@example.com"


def test_users_counts_and_lists_live_sessions(database_url: str) -> None:
    auth = Auth(Config(db=database_url, bcrypt_rounds=FAST_ROUNDS))
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        auth.register_user(email, "pw")
    auth.create_session("b@example.com")
    auth.create_session("b@example.com")
    auth.close()
    assert run_command("users", db=database_url).stdout == "3 user(s)\n"
    listed = run_command("users", "--list", db=database_url).stdout.splitlines()
    assert listed == [
        "a@example.com\t0",
        "b@example.com\t2",
        "c@example.com\t0",
        "3 user(s)",
    ]


def test_purge_deletes_only_what_has_ended(database_url: str) -> None:
    """Rows made by an Auth whose clock stands two days back have all ended by now."""
    import time

    past = Auth(
        Config(db=database_url, bcrypt_rounds=FAST_ROUNDS),
        clock=lambda: time.time() - 2 * 86400,
    )
    past.register_user("old@example.com", "pw")
    past.create_session("old@example.com")
    past.get_reset_password_token("old@example.com")
    old = past.find_user("old@example.com")
    past.two_factor.new_mfa_token(old.id)  # a login that waited for its code
    past.two_factor.begin(old.id, old.email)  # a two-factor set-up never confirmed
    past.passkeys.login_options()  # a passkey login never finished
    past._db.count_login_attempt("x@example.com", time.time() - 2 * 86400, 900)
    past._db.count_reset_request("x@example.com", time.time() - 2 * 86400, 3600)
    past._db.count_client_attempt(
        "login_client", "192.0.2.1", time.time() - 2 * 86400, 900
    )
    past.close()
    now = Auth(Config(db=database_url, bcrypt_rounds=FAST_ROUNDS))
    now.register_user("new@example.com", "pw")  # not old@: a login purges its user's
    live = now.create_session("new@example.com")  # ended sessions by itself
    new = now.find_user("new@example.com")
    now.two_factor.new_mfa_token(new.id)  # both still waiting: kept
    now.two_factor.begin(new.id, new.email)
    now.passkeys.login_options()
    now.close()
    result = run_command("purge", db=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "sessions: 1, reset_tokens: 1, mfa_tokens: 1, webauthn_challenges: 1,"
        " two_factor_set_ups: 1, login_attempts: 1, reset_attempts: 1,"
        " client_attempts: 1 deleted"
    )
    again = Auth(Config(db=database_url, bcrypt_rounds=FAST_ROUNDS))
    assert again.get_user_from_session_id(live) is not None
    assert query(database_url, "SELECT user_id FROM mfa_tokens") == [(new.id,)]
    assert query(database_url, "SELECT user_id FROM two_factor") == [(new.id,)]
    assert query(database_url, "SELECT COUNT(*) FROM webauthn_challenges") == [(1,)]
    again.close()


@pytest.mark.sqlite_only  # SQLite's busy timeout (5 s); PostgreSQL's lock timeout is alike
def test_a_busy_database_fails_with_one_line(database_url: str) -> None:
    run_command("migrate", db=database_url)
    with write_lock_held(database_url):
        result = run_with_password(
            "create-user", "late@example.com", db=database_url, password="pw"
        )
    assert failure(result) == "create-user: the database is busy; try again"
