"""authsvc's Auth and helpers: the course's tasks 4-18, with sessions and tokens hardened."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import bcrypt
import pytest
from conftest import FakeClock, query

from authsvc import (
    Auth,
    Config,
    InvalidPassword,
    InvalidToken,
    UnknownEmail,
    _digest,
    _generate_uuid,
    _hash_password,
)
from store import DuplicateEmail

EMAIL = "bob@bob.com"
PASSWORD = "MyPwdOfBob"


@pytest.fixture
def bob(auth: Auth) -> int:
    """Bob registered; his user id."""
    return auth.register_user(EMAIL, PASSWORD).id


def stored_secrets(db: str) -> list[str]:
    """Every non-NULL value in the database's session and reset columns."""
    rows = query(db, "SELECT session_id, reset_token FROM users")
    rows += query(db, "SELECT digest FROM sessions")
    rows += query(db, "SELECT digest FROM reset_tokens")
    return [value for row in rows for value in row if value is not None]


# -- task 4: _hash_password


def test_hash_password_returns_a_salted_bcrypt_hash() -> None:
    first = _hash_password("Hello Holberton", rounds=4)
    second = _hash_password("Hello Holberton", rounds=4)
    assert isinstance(first, bytes)
    assert first.startswith(b"$2b$04$")
    assert first != second  # a new salt every time
    assert bcrypt.checkpw(b"Hello Holberton", first)


def test_hash_password_uses_cost_12_by_default() -> None:
    assert _hash_password("Hello Holberton").startswith(b"$2b$12$")


def test_hash_password_refuses_more_than_72_bytes() -> None:
    with pytest.raises(InvalidPassword, match="72 bytes"):
        _hash_password("é" * 37, rounds=4)  # 74 bytes in UTF-8, 37 characters


# -- task 5: register_user


def test_register_user_stores_a_hash_not_the_password(
    auth: Auth, config: Config
) -> None:
    user = auth.register_user("me@me.com", "mySecuredPwd")
    assert user.email == "me@me.com"
    assert user.hashed_password.startswith("$2b$04$")
    assert bcrypt.checkpw(b"mySecuredPwd", user.hashed_password.encode())


def test_register_user_twice_raises_the_course_value_error(auth: Auth) -> None:
    auth.register_user("me@me.com", "mySecuredPwd")
    with pytest.raises(ValueError, match="^User me@me.com already exists$") as raised:
        auth.register_user("me@me.com", "mySecuredPwd")
    assert isinstance(raised.value, DuplicateEmail)


def test_default_cost_register_and_login(tmp_path: Path) -> None:
    """The one test at bcrypt's real cost: what production stores and checks."""
    auth = Auth(Config(db=str(tmp_path / "default.db")))
    user = auth.register_user(EMAIL, PASSWORD)
    assert user.hashed_password.startswith("$2b$12$")
    assert auth.valid_login(EMAIL, PASSWORD)
    assert not auth.valid_login(EMAIL, "WrongPwd")
    auth.close()


# -- task 8: valid_login


def test_valid_login(auth: Auth, bob: int) -> None:
    assert auth.valid_login(EMAIL, PASSWORD) is True
    assert auth.valid_login(EMAIL, "WrongPwd") is False
    assert auth.valid_login("unknown@email", PASSWORD) is False


def test_valid_login_ignores_email_letter_case(auth: Auth, bob: int) -> None:
    assert auth.valid_login(EMAIL.upper(), PASSWORD) is True


def test_valid_login_refuses_a_password_bcrypt_cannot_check(
    auth: Auth, bob: int
) -> None:
    with pytest.raises(InvalidPassword):
        auth.valid_login(EMAIL, "x" * 73)


# -- task 9: _generate_uuid


def test_generate_uuid_returns_a_fresh_uuid4_string() -> None:
    first, second = _generate_uuid(), _generate_uuid()
    assert isinstance(first, str)
    assert uuid.UUID(first).version == 4
    assert first != second


# -- tasks 10, 12, 13: sessions


def test_create_session_returns_an_id_or_none(auth: Auth, bob: int) -> None:
    session_id = auth.create_session(EMAIL)
    assert uuid.UUID(session_id).version == 4
    assert auth.create_session("unknown@email.com") is None


def test_the_database_stores_only_digests(auth: Auth, bob: int, config: Config) -> None:
    session_id = auth.create_session(EMAIL)
    reset_token = auth.get_reset_password_token(EMAIL)
    assert sorted(stored_secrets(config.db)) == sorted(
        [_digest(session_id), _digest(reset_token)]
    )
    files = [Path(config.db), Path(config.db + "-wal")]
    raw = b"".join(path.read_bytes() for path in files if path.exists())
    assert session_id.encode() not in raw
    assert reset_token.encode() not in raw


def test_a_copied_digest_opens_no_session(auth: Auth, bob: int, config: Config) -> None:
    auth.create_session(EMAIL)
    (digest,) = stored_secrets(config.db)
    assert auth.get_user_from_session_id(digest) is None


def test_get_user_from_session_id(auth: Auth, bob: int) -> None:
    session_id = auth.create_session(EMAIL)
    assert auth.get_user_from_session_id(session_id).id == bob
    assert auth.get_user_from_session_id(None) is None
    assert auth.get_user_from_session_id("") is None
    assert auth.get_user_from_session_id(_generate_uuid()) is None


def test_each_login_issues_a_new_id_and_keeps_the_others(auth: Auth, bob: int) -> None:
    first = auth.create_session(EMAIL)
    second = auth.create_session(EMAIL)
    assert first != second
    assert auth.get_user_from_session_id(first).id == bob
    assert auth.get_user_from_session_id(second).id == bob


def test_a_session_expires_after_its_lifetime(tmp_path: Path, clock: FakeClock) -> None:
    auth = Auth(
        Config(db=str(tmp_path / "ttl.db"), bcrypt_rounds=4, session_ttl=60),
        clock=clock,
    )
    auth.register_user(EMAIL, PASSWORD)
    session_id = auth.create_session(EMAIL)
    clock.advance(59)
    assert auth.get_user_from_session_id(session_id) is not None
    clock.advance(1)
    assert auth.get_user_from_session_id(session_id) is None
    auth.close()


def test_the_default_session_lifetime_is_24_hours_of_use(
    auth: Auth, bob: int, clock: FakeClock
) -> None:
    """Used every half hour (within the idle hour), a session still ends after 24 h."""
    session_id = auth.create_session(EMAIL)
    for _ in range(47):
        clock.advance(1800)
        assert auth.get_user_from_session_id(session_id) is not None
    clock.advance(1799)
    assert auth.get_user_from_session_id(session_id) is not None
    clock.advance(1)
    assert auth.get_user_from_session_id(session_id) is None


def test_destroy_session_ends_every_session_of_the_user(auth: Auth, bob: int) -> None:
    sessions = [auth.create_session(EMAIL) for _ in range(3)]
    assert auth.destroy_session(bob) is None
    assert [auth.get_user_from_session_id(s) for s in sessions] == [None] * 3
    auth.destroy_session(bob)  # twice is fine
    auth.destroy_session(12345)  # so is a user that does not exist


# -- tasks 16, 18: password reset


def test_get_reset_password_token(auth: Auth, bob: int) -> None:
    assert uuid.UUID(auth.get_reset_password_token(EMAIL)).version == 4
    with pytest.raises(UnknownEmail):
        auth.get_reset_password_token("nobody@example.com")
    assert issubclass(UnknownEmail, ValueError)


def test_update_password_sets_the_new_password(auth: Auth, bob: int) -> None:
    token = auth.get_reset_password_token(EMAIL)
    assert auth.update_password(token, "new password", email=EMAIL) is None
    assert auth.valid_login(EMAIL, "new password")
    assert not auth.valid_login(EMAIL, PASSWORD)


def test_update_password_without_email_as_in_the_course(auth: Auth, bob: int) -> None:
    auth.update_password(auth.get_reset_password_token(EMAIL), "new password")
    assert auth.valid_login(EMAIL, "new password")


def test_a_reset_token_works_once(auth: Auth, bob: int) -> None:
    token = auth.get_reset_password_token(EMAIL)
    auth.update_password(token, "first", email=EMAIL)
    with pytest.raises(InvalidToken):
        auth.update_password(token, "second", email=EMAIL)
    assert auth.valid_login(EMAIL, "first")


def test_a_new_reset_token_leaves_the_earlier_ones_usable(auth: Auth, bob: int) -> None:
    """Someone asking again and again cannot make the owner's mailed token useless."""
    first = auth.get_reset_password_token(EMAIL)
    auth.get_reset_password_token(EMAIL)
    auth.update_password(first, "new password", email=EMAIL)
    assert auth.valid_login(EMAIL, "new password")


def test_a_reset_ends_every_other_token_of_the_user(auth: Auth, bob: int) -> None:
    first = auth.get_reset_password_token(EMAIL)
    second = auth.get_reset_password_token(EMAIL)
    auth.update_password(second, "new password", email=EMAIL)
    with pytest.raises(InvalidToken):
        auth.update_password(first, "taken back", email=EMAIL)
    assert auth.valid_login(EMAIL, "new password")


def test_a_reset_token_is_bound_to_its_email(auth: Auth, bob: int) -> None:
    auth.register_user("eve@example.com", "eve's password")
    token = auth.get_reset_password_token(EMAIL)
    with pytest.raises(InvalidToken):
        auth.update_password(token, "taken over", email="eve@example.com")
    assert auth.valid_login(EMAIL, PASSWORD)
    assert auth.valid_login("eve@example.com", "eve's password")


def test_a_reset_token_expires_after_15_minutes(
    auth: Auth, bob: int, clock: FakeClock
) -> None:
    token = auth.get_reset_password_token(EMAIL)
    clock.advance(15 * 60)
    with pytest.raises(InvalidToken):
        auth.update_password(token, "too late", email=EMAIL)
    assert auth.valid_login(EMAIL, PASSWORD)


def test_a_reset_token_works_until_it_expires(
    auth: Auth, bob: int, clock: FakeClock
) -> None:
    token = auth.get_reset_password_token(EMAIL)
    clock.advance(15 * 60 - 1)
    auth.update_password(token, "just in time", email=EMAIL)
    assert auth.valid_login(EMAIL, "just in time")


def test_a_password_reset_ends_every_session(auth: Auth, bob: int) -> None:
    sessions = [auth.create_session(EMAIL) for _ in range(3)]
    auth.update_password(
        auth.get_reset_password_token(EMAIL), "new password", email=EMAIL
    )
    assert [auth.get_user_from_session_id(s) for s in sessions] == [None] * 3


@pytest.mark.parametrize(
    "token", ["", "not-a-token", "00000000-0000-4000-8000-000000000000"]
)
def test_update_password_refuses_unknown_tokens(
    auth: Auth, bob: int, token: str
) -> None:
    auth.get_reset_password_token(EMAIL)
    with pytest.raises(InvalidToken):
        auth.update_password(token, "new password", email=EMAIL)
    assert auth.valid_login(EMAIL, PASSWORD)


def test_auth_built_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Auth() with no arguments, as in the course, reads AUTHSVC_* like the server does."""
    monkeypatch.setenv("AUTHSVC_DB", str(tmp_path / "env.db"))
    auth = Auth()
    auth.register_user(EMAIL, PASSWORD)
    auth.close()
    conn = sqlite3.connect(tmp_path / "env.db")
    assert conn.execute("SELECT email FROM users").fetchall() == [(EMAIL,)]
    conn.close()
