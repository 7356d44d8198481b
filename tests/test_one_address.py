"""SPEC "One address, one account": no spelling of an address reaches another's row.

Migration 5 kept accounts that older releases let fold together (`JOSÉ@x.io` and
`josé@x.io`), the later one under a legacy key of its exact spelling. That key must be one
no sign-up can make (migration 8), a lookup takes the exact-spelling branch only for the
row that holds that spelling, and every answer names the stored email. Also here: an
address that folds longer than it is typed (`ß` is `ss`), on both backends alike.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST_ROUNDS, AuthActions, client_for, query, run_authsvc
from test_smtp import SmtpServer, smtp_config, start_smtp
from werkzeug.test import Client

import authsvc
import store
from authsvc import Auth, Config
from store import Store

FIXTURES = Path(__file__).parent / "fixtures"
OWNER = "bob@x.io"
NEWCOMER = "=bob@x.io"


def command(*args: str, db: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`python authsvc.py ARGS` on `db`, as an operator runs it."""
    env = {"AUTHSVC_DB": db, "AUTHSVC_BCRYPT_ROUNDS": str(FAST_ROUNDS)}
    return run_authsvc(*args, env=env, stdin=stdin)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A plain SMTP server on loopback (aiosmtpd), stopped after the test."""
    server = start_smtp()
    yield server
    server.controller.stop()


def login(client: Client, email: str, password: str) -> object:
    return client.post("/sessions", data={"email": email, "password": password})


# -- an "=" sign-up (it took the owner's account over)


def test_an_equals_sign_up_beside_an_existing_address_takes_nothing_over(
    client: Client, actions: AuthActions
) -> None:
    assert actions.register(OWNER, "owner pw").status_code == 200
    assert actions.register(NEWCOMER, "newcomer pw").status_code == 200
    owner = login(client, OWNER, "owner pw")
    assert owner.status_code == 200
    assert owner.json == {"email": OWNER, "message": "logged in"}
    assert login(client, OWNER, "newcomer pw").status_code == 401
    newcomer = login(client, NEWCOMER, "newcomer pw")
    assert newcomer.json == {"email": NEWCOMER, "message": "logged in"}
    reset = client.post("/reset_password", data={"email": OWNER})
    assert reset.json["email"] == OWNER
    token = reset.json["reset_token"]
    update = {"email": OWNER, "reset_token": token, "new_password": "owner again"}
    assert client.put("/reset_password", data=update).json["email"] == OWNER
    assert login(client, OWNER, "owner again").status_code == 200
    assert login(client, NEWCOMER, "newcomer pw").status_code == 200


def test_an_equals_sign_up_does_not_answer_for_the_unregistered_address(
    client: Client, actions: AuthActions
) -> None:
    assert actions.register(NEWCOMER, "newcomer pw").status_code == 200
    assert login(client, OWNER, "newcomer pw").status_code == 401
    assert client.post("/reset_password", data={"email": OWNER}).status_code == 403
    assert actions.register(OWNER, "owner pw").status_code == 200


def test_an_equals_sign_up_gets_no_mail_meant_for_the_owner(
    config: Config, smtp: SmtpServer
) -> None:
    client = client_for(smtp_config(config, smtp.port))
    AuthActions(client).register(OWNER, "owner pw")
    AuthActions(client).register(NEWCOMER, "newcomer pw")
    client.post("/reset_password", data={"email": OWNER})
    client.post("/reset_password", data={"email": "=nobody@x.io"})
    assert [message["To"] for message in smtp.mailbox.messages] == [
        OWNER,
        "=nobody@x.io",
    ]
    assert "Reset token" in smtp.mailbox.messages[0].get_content()
    assert "no account" in smtp.mailbox.messages[1].get_content()


def test_the_commands_act_on_the_owner_not_on_an_equals_sign_up(
    database_url: str,
) -> None:
    auth = Auth(Config(db=database_url, bcrypt_rounds=FAST_ROUNDS))
    owner = auth.register_user(OWNER, "owner pw")
    newcomer = auth.register_user(NEWCOMER, "newcomer pw")
    newcomers_session = auth.create_session(NEWCOMER)
    auth.create_session(OWNER)
    ended = command("end-sessions", OWNER, db=database_url)
    assert ended.stdout.strip() == f"1 session(s) ended for user {owner.id}"
    assert auth.get_user_from_session_id(newcomers_session).id == newcomer.id
    set_password = command("set-password", OWNER, db=database_url, stdin="new pw\n")
    assert set_password.returncode == 0, set_password.stderr
    assert auth.valid_login(OWNER, "new pw")
    assert auth.valid_login(NEWCOMER, "newcomer pw")
    auth.close()


# -- the legacy keys of an upgraded database


@pytest.fixture
def release_3_db(tmp_path: Path) -> Path:
    """A copy of the database release 3 made (schema 7; tests/fixtures/README.md):
    "josé@example.com" there shares its folded email with the older "JOSÉ@example.com"
    and has migration 5's key "=josé@example.com"."""
    path = tmp_path / "release-3.db"
    shutil.copyfile(FIXTURES / "release-3.db", path)
    return path


def test_legacy_keys_move_where_no_sign_up_can_reach(release_3_db: Path) -> None:
    assert query(str(release_3_db), "SELECT email_key FROM users WHERE id = 4") == [
        ("=josé@example.com",)
    ]
    Store(release_3_db).initialize()
    assert query(str(release_3_db), "SELECT email_key FROM users WHERE id = 4") == [
        (store.LEGACY_KEY_PREFIX + "josé@example.com",)
    ]
    # Only that row was a legacy one; every other key is its email folded.
    for email, key in query(str(release_3_db), "SELECT email, email_key FROM users"):
        if email != "josé@example.com":
            assert key == store.email_key(email)


def test_a_legacy_account_keeps_its_spelling_and_an_equals_sign_up_is_its_own(
    release_3_db: Path,
) -> None:
    secrets = json.loads((FIXTURES / "release-3.json").read_text())
    passwords = secrets["passwords"]
    config = Config(db=str(release_3_db), bcrypt_rounds=FAST_ROUNDS)
    client = client_for(config)
    lower = login(client, "josé@example.com", passwords["josé@example.com"])
    assert lower.json == {"email": "josé@example.com", "message": "logged in"}
    # Any other spelling is the folded key's, the older account's.
    upper = login(client, "José@example.com", passwords["JOSÉ@example.com"])
    assert upper.json == {"email": "JOSÉ@example.com", "message": "logged in"}
    signed_up = AuthActions(client).register("=josé@example.com", "newcomer pw")
    assert signed_up.status_code == 200
    assert login(client, "josé@example.com", "newcomer pw").status_code == 401
    assert (
        login(client, "josé@example.com", passwords["josé@example.com"]).json["email"]
        == "josé@example.com"
    )
    assert login(client, "=josé@example.com", "newcomer pw").json == {
        "email": "=josé@example.com",
        "message": "logged in",
    }


def test_start_up_counts_only_the_legacy_keys(
    release_3_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Store(release_3_db).initialize()
    auth = Auth(Config(db=str(release_3_db), bcrypt_rounds=FAST_ROUNDS))
    auth.register_user("=alice@example.com", "pw")
    auth.register_user("exact:carol@example.com", "pw")
    auth.close()
    caplog.clear()
    with caplog.at_level("WARNING", logger="authsvc.store"):
        Store(release_3_db).initialize()
    (line,) = [r.getMessage() for r in caplog.records if "share" in r.getMessage()]
    assert line.startswith("1 account(s) share their email")


# -- an address that folds longer than it is typed


# 125 "ß" and "@x.io": 130 characters typed, 255 once folded ("ß" is "ss").
LONG_FOLDING = "ß" * 125 + "@x.io"


def test_an_address_that_folds_long_signs_up_logs_in_and_resets(
    client: Client, actions: AuthActions
) -> None:
    assert len(LONG_FOLDING) == 130 and len(store.email_key(LONG_FOLDING)) == 255
    assert actions.register(LONG_FOLDING, "pw").status_code == 200
    assert login(client, LONG_FOLDING, "wrong").status_code == 401
    capital = LONG_FOLDING.replace("ß", "ẞ")  # U+1E9E, the capital sharp s: one letter
    assert login(client, capital, "pw").status_code == 200
    token = actions.reset_token(LONG_FOLDING)
    update = {"email": LONG_FOLDING, "reset_token": token, "new_password": "n3w"}
    assert client.put("/reset_password", data=update).status_code == 200
    assert actions.register(capital, "pw").json == {
        "message": "email already registered"
    }


def test_an_address_that_folds_long_asks_for_a_mailed_reset(
    config: Config, smtp: SmtpServer
) -> None:
    client = client_for(smtp_config(config, smtp.port))
    AuthActions(client).register(LONG_FOLDING, "pw")
    assert (
        client.post("/reset_password", data={"email": LONG_FOLDING}).status_code == 200
    )
    assert [message["To"] for message in smtp.mailbox.messages] == [LONG_FOLDING]


@pytest.mark.postgresql_only  # SQLite does not enforce a declared length
def test_a_value_the_database_refuses_is_the_stores_invalid_value(
    database_url: str,
) -> None:
    """The last line: PostgreSQL's DataError for a value its column cannot hold is the
    store's InvalidValue (which the HTTP layer answers 400), never an untranslated
    driver error (a 500)."""
    db = Store(database_url)
    with pytest.raises(store.InvalidValue):
        db.add_user("a" * 300 + "@x.io", "h")  # no route lets such an email through
    assert query(database_url, "SELECT COUNT(*) FROM users") == [(0,)]
    assert authsvc.DOMAIN_ERRORS[store.InvalidValue][0] == 400


@pytest.mark.postgresql_only
def test_copy_db_moves_a_long_folding_address_and_names_a_row_it_cannot(
    tmp_path: Path, database_url: str
) -> None:
    """copy-db takes what SQLite took; a row PostgreSQL refuses (an email longer than
    any route accepts, made by hand) is named in one line, and nothing is copied."""
    sqlite_path = str(tmp_path / "old.db")
    auth = Auth(Config(db=sqlite_path, bcrypt_rounds=FAST_ROUNDS))
    auth.register_user(LONG_FOLDING, "pw")
    auth.close()
    moved = command("copy-db", sqlite_path, db=database_url)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == (
        "users: 1, sessions: 0, reset_tokens: 0, two_factor: 0, recovery_codes: 0,"
        " passkeys: 0 copied"
    )
    assert query(database_url, "SELECT email FROM users") == [(LONG_FOLDING,)]

    query(database_url, "TRUNCATE users RESTART IDENTITY CASCADE")
    conn = sqlite3.connect(sqlite_path)
    conn.execute(
        "INSERT INTO users (email, hashed_password, email_key) VALUES (?, 'h', ?)",
        ("a" * 300 + "@x.io", "a" * 300 + "@x.io"),
    )
    conn.commit()
    conn.close()
    refused = command("copy-db", sqlite_path, db=database_url)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("copy-db: users row id=2 cannot be copied: ")
    assert line.endswith("; nothing was copied")
    assert query(database_url, "SELECT COUNT(*) FROM users") == [(0,)]
