"""The operator's commands, run as subprocesses (`python authsvc.py <command>`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pgserver
import pytest
import requests
from conftest import FAST_ROUNDS, query
from servers import ROOT, GunicornServer

from authsvc import Auth, Config

TIMEOUT = 15


def run_command(*args: str, db: str | None = None) -> subprocess.CompletedProcess:
    """`python authsvc.py ARGS` with AUTHSVC_DB set (or not), as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    if db is not None:
        env["AUTHSVC_DB"] = db
    return subprocess.run(
        [sys.executable, "authsvc.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_lists_every_command() -> None:
    result = run_command("--help")
    assert result.returncode == 0
    for command in ("migrate", "copy-db"):
        assert command in result.stdout


def test_migrate_prints_the_version(database_url: str) -> None:
    result = run_command("migrate", db=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("schema at version 5")


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
    auth.close()
    postgres.sql("CREATE DATABASE copied")
    url = postgres.url("copied")

    result = run_command("copy-db", sqlite_path, url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "users: 5, sessions: 1 copied"

    server = start_gunicorn_on(url)
    profile = requests.get(
        f"{server.url}/profile", cookies={"session_id": session_id}, timeout=TIMEOUT
    )
    assert profile.json() == {"email": "user3@example.com"}
    data = {"email": "user4@example.com", "reset_token": token, "new_password": "n3w"}
    assert requests.put(f"{server.url}/reset_password", data=data, timeout=TIMEOUT).ok
    new = {"email": "user5@example.com", "password": "pw"}
    assert requests.post(f"{server.url}/users", data=new, timeout=TIMEOUT).ok
    assert query(url, "SELECT COUNT(*) FROM users") == [(6,)]

    again = run_command("copy-db", sqlite_path, url)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        "copy-db: the PostgreSQL database is not empty: nothing was copied"
    )
    assert query(url, "SELECT COUNT(*) FROM users") == [(6,)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("/nonexistent/old.db", "postgresql://x@127.0.0.1:1/x"), "no SQLite database"),
        (("old.db", "mysql://x"), "is not a postgresql:// URL"),
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
