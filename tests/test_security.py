"""SPEC's "Security behaviour", clause by clause, in process.

Each test here would fail if its protection were removed: throttling, equal-time logins,
re-hashing, the response headers, the audit trail, and secrets kept out of errors and logs.
(Tokens, sessions and cookies are covered in test_auth.py and test_http.py; the shared
throttle count, the audit trail of a real server and the schema upgrade in test_e2e.py.)
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from conftest import AuthActions, FakeClock, client_for, query
from werkzeug.test import Client

import authsvc
from authsvc import Auth, Config, _bcrypt_cost

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
WRONG = "not the password"


def stored_hash(db: str, email: str = EMAIL) -> str:
    """The hashed_password column of `email`, read straight from the database."""
    ((hashed,),) = query(
        db, "SELECT hashed_password FROM users WHERE email = ?", (email,)
    )
    return hashed


# -- throttling (ASVS V2.2.1)


def test_the_11th_attempt_is_429_even_with_the_right_password(
    actions: AuthActions, clock: FakeClock
) -> None:
    actions.register(EMAIL, PASSWORD)
    for _ in range(10):
        assert actions.login(EMAIL, WRONG).status_code == 401
    response = actions.login(EMAIL, PASSWORD)
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {
        "message": "too many failed logins for this email; try again later"
    }
    assert response.headers["Retry-After"] == "900"
    assert response.headers.getlist("Set-Cookie") == []


def test_retry_after_counts_down_and_the_window_ends(
    actions: AuthActions, clock: FakeClock
) -> None:
    actions.register(EMAIL, PASSWORD)
    for _ in range(10):
        actions.login(EMAIL, WRONG)
    clock.advance(600.5)
    assert actions.login(EMAIL, PASSWORD).headers["Retry-After"] == "300"
    clock.advance(299.5)
    assert actions.login(EMAIL, PASSWORD).status_code == 200


def test_a_successful_login_resets_the_count(actions: AuthActions) -> None:
    actions.register(EMAIL, PASSWORD)
    for _ in range(9):
        assert actions.login(EMAIL, WRONG).status_code == 401
    assert actions.login(EMAIL, PASSWORD).status_code == 200
    for _ in range(10):
        assert actions.login(EMAIL, WRONG).status_code == 401
    assert actions.login(EMAIL, PASSWORD).status_code == 429


def test_unknown_emails_are_throttled_without_creating_users(
    actions: AuthActions, db_rows: Callable[[], list[tuple]]
) -> None:
    actions.register(EMAIL, PASSWORD)
    before = db_rows()
    statuses = [
        actions.login("nobody@example.com", WRONG).status_code for _ in range(11)
    ]
    assert statuses == [401] * 10 + [429]
    assert db_rows() == before


def test_the_count_is_per_email_in_any_letter_case(actions: AuthActions) -> None:
    actions.register(EMAIL, PASSWORD)
    actions.register("alice@example.com", PASSWORD)
    for _ in range(10):
        actions.login(EMAIL.upper(), WRONG)
    assert actions.login(EMAIL, PASSWORD).status_code == 429
    assert actions.login("alice@example.com", PASSWORD).status_code == 200


def test_throttling_follows_its_settings(config: Config, clock: FakeClock) -> None:
    strict = Config(
        db=config.db, bcrypt_rounds=4, login_max_failures=3, login_window=60
    )
    actions = AuthActions(client_for(strict, clock))
    actions.register(EMAIL, PASSWORD)
    assert [actions.login(EMAIL, WRONG).status_code for _ in range(4)] == [
        401,
        401,
        401,
        429,
    ]
    assert actions.login(EMAIL, PASSWORD).headers["Retry-After"] == "60"
    clock.advance(60)
    assert actions.login(EMAIL, PASSWORD).status_code == 200


def test_a_throttled_attempt_checks_no_password(
    actions: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once throttled, an attacker's requests cost no bcrypt work (and learn nothing)."""
    actions.register(EMAIL, PASSWORD)
    for _ in range(10):
        actions.login(EMAIL, WRONG)
    calls = []
    real_checkpw = bcrypt.checkpw
    monkeypatch.setattr(
        authsvc.bcrypt, "checkpw", lambda *a: calls.append(1) or real_checkpw(*a)
    )
    assert actions.login(EMAIL, PASSWORD).status_code == 429
    assert calls == []


# -- equal-time logins


@pytest.fixture
def bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every hash bcrypt.checkpw is asked to check during the test, in order (the real
    check still runs)."""
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw
    monkeypatch.setattr(
        authsvc.bcrypt,
        "checkpw",
        lambda pw, hashed: checked.append(hashed) or real_checkpw(pw, hashed),
    )
    return checked


def test_an_unknown_email_does_the_same_bcrypt_work(
    auth: Auth, bcrypt_checks: list[bytes]
) -> None:
    auth.register_user(EMAIL, PASSWORD)
    checked = bcrypt_checks
    assert auth.valid_login("nobody@example.com", PASSWORD) is False
    assert auth.valid_login(EMAIL, WRONG) is False
    dummy, real = checked
    assert _bcrypt_cost(dummy.decode()) == _bcrypt_cost(real.decode()) == 4


def test_a_wrong_password_for_an_older_hash_costs_the_configured_time(
    tmp_path: Path, bcrypt_checks: list[bytes]
) -> None:
    """A hash stored at cost 4 under a server at cost 6: a failed check also runs one at
    cost 6, so an old account fails as slowly as any other (and as an unknown email)."""
    auth = Auth(Config(db=str(tmp_path / "old.db"), bcrypt_rounds=6))
    auth._db.add_user(
        EMAIL, bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    )
    checked = bcrypt_checks
    assert auth.valid_login(EMAIL, WRONG) is False
    assert max(_bcrypt_cost(hashed.decode()) for hashed in checked) == 6
    checked.clear()
    assert auth.valid_login("nobody@example.com", WRONG) is False
    assert [_bcrypt_cost(hashed.decode()) for hashed in checked] == [6]


def test_a_password_with_a_nul_is_a_failed_login_in_the_same_time(
    auth: Auth, bcrypt_checks: list[bytes]
) -> None:
    """bcrypt stops at NUL, so "Secret" would accept "Secret\0Secret": refused, after
    the same bcrypt work as any refusal."""
    auth.register_user(EMAIL, PASSWORD)
    checked = bcrypt_checks
    assert auth.valid_login(EMAIL, PASSWORD + "\0" + PASSWORD) is False
    assert auth.valid_login(EMAIL, PASSWORD + "\0") is False
    assert len(checked) == 2


def test_login_timing_does_not_reveal_who_is_registered(tmp_path: Path) -> None:
    """Medians of 15 logins each, at the default cost: unknown email vs wrong password."""
    config = Config(db=str(tmp_path / "timing.db"), login_max_failures=1000)
    actions = AuthActions(client_for(config))
    assert config.bcrypt_rounds == 12
    actions.register(EMAIL, PASSWORD)
    unknown, wrong = [], []
    for _ in range(15):  # interleaved, so machine noise hits both alike
        for email, samples in (("nobody@example.com", unknown), (EMAIL, wrong)):
            start = time.perf_counter()
            assert actions.login(email, WRONG).status_code == 401
            samples.append(time.perf_counter() - start)
    ratio = statistics.median(unknown) / statistics.median(wrong)
    print(
        f"\nlogin timing at cost 12: unknown email median {statistics.median(unknown) * 1000:.1f} ms,"
        f" wrong password median {statistics.median(wrong) * 1000:.1f} ms, ratio {ratio:.3f}"
    )
    assert 0.67 <= ratio <= 1.5


# -- re-hash on login (ASVS V2.4.4)


def test_a_login_rehashes_a_password_stored_at_a_lower_cost(
    config: Config, clock: FakeClock
) -> None:
    Auth(config, clock=clock).register_user(EMAIL, PASSWORD)
    assert stored_hash(config.db).startswith("$2b$04$")
    stronger = Config(db=config.db, bcrypt_rounds=5)
    auth = Auth(stronger, clock=clock)
    with pytest.raises(authsvc.InvalidCredentials):
        auth.log_in(EMAIL, WRONG)
    assert stored_hash(config.db).startswith(
        "$2b$04$"
    )  # a failed login changes nothing
    auth.log_in(EMAIL, PASSWORD)
    rehashed = stored_hash(config.db)
    assert rehashed.startswith("$2b$05$")
    assert bcrypt.checkpw(PASSWORD.encode(), rehashed.encode())
    assert auth.valid_login(EMAIL, PASSWORD)


def test_a_login_never_lowers_the_cost(config: Config, clock: FakeClock) -> None:
    Auth(Config(db=config.db, bcrypt_rounds=5), clock=clock).register_user(
        EMAIL, PASSWORD
    )
    Auth(config, clock=clock).log_in(EMAIL, PASSWORD)
    assert stored_hash(config.db).startswith("$2b$05$")


# -- response headers (ASVS V8.2.1, V14.4.4)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("POST", "/users"),
        ("GET", "/profile"),
        ("GET", "/nope"),
        ("PATCH", "/profile"),
    ],
)
def test_every_response_says_nosniff(client: Client, method: str, path: str) -> None:
    assert (
        client.open(path, method=method).headers["X-Content-Type-Options"] == "nosniff"
    )


@pytest.mark.parametrize(
    ("owner", "method", "path"),
    [
        ("AuthApp", "on_health", "/health"),  # the Werkzeug path
        ("Auth", "live_session_user", "/profile"),  # the hand-written one
    ],
)
def test_a_500_says_nosniff_and_json(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    owner: str,
    method: str,
    path: str,
) -> None:
    import authsvc

    monkeypatch.setattr(getattr(authsvc, owner), method, lambda *_: 1 / 0)
    response = client.get(path)
    assert response.status_code == 500
    assert response.json == {"message": "internal server error"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_responses_with_sessions_or_tokens_are_not_stored(
    actions: AuthActions, client: Client
) -> None:
    actions.register(EMAIL, PASSWORD)
    token = actions.reset_token(EMAIL)
    responses = {
        "login": actions.login(EMAIL, PASSWORD),
        "profile": client.get("/profile"),
        "reset token": client.post("/reset_password", data={"email": EMAIL}),
        "update": client.put(
            "/reset_password",
            data={"email": EMAIL, "reset_token": token, "new_password": "x"},
        ),
        "logout": client.delete("/sessions"),
        "profile, 403": client.get("/profile"),
    }
    for name, response in responses.items():
        assert response.headers.get("Cache-Control") == "no-store", name
    assert "Cookie" in responses["profile"].headers["Vary"]
    assert "Cookie" in responses["profile, 403"].headers["Vary"]


# -- secrets stay out of errors and logs (ASVS V7.1.1)


def test_an_unexpected_error_logs_no_secret(
    actions: AuthActions,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    actions.register(EMAIL, PASSWORD)

    def explode(*args: object) -> None:
        # An exception whose text quotes the request, as gunicorn's InvalidChunkSize does.
        raise RuntimeError(f"cannot parse {PASSWORD!r}")

    monkeypatch.setattr(Auth, "log_in", explode)
    with caplog.at_level(logging.INFO):
        response = actions.login(EMAIL, PASSWORD)
    assert response.status_code == 500
    assert response.json == {"message": "internal server error"}
    assert "unhandled RuntimeError in POST /sessions" in caplog.text
    assert "in explode" in caplog.text  # the traceback's frames are kept
    assert PASSWORD not in caplog.text and PASSWORD not in response.get_data(
        as_text=True
    )


def test_error_messages_carry_no_secret(actions: AuthActions, client: Client) -> None:
    actions.register(EMAIL, PASSWORD)
    token = actions.reset_token(EMAIL)
    bodies = [
        actions.login(EMAIL, WRONG).get_data(as_text=True),
        actions.register(EMAIL, PASSWORD).get_data(as_text=True),
        client.put(
            "/reset_password",
            data={
                "email": "eve@example.com",
                "reset_token": token,
                "new_password": "x",
            },
        ).get_data(as_text=True),
    ]
    for body in bodies:
        assert WRONG not in body and PASSWORD not in body and token not in body


# -- the audit trail (ASVS V7.1.3, V7.2.1)


def test_each_security_event_writes_one_audit_line(
    actions: AuthActions, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="authsvc.audit"):
        actions.register(EMAIL, PASSWORD)
        actions.register(EMAIL, PASSWORD)
        actions.login(EMAIL, WRONG)
        actions.login(EMAIL, PASSWORD)
        client.delete("/sessions")
        client.delete("/sessions")
        token = actions.reset_token(EMAIL)
        client.post("/reset_password", data={"email": "nobody@example.com"})
        client.put(
            "/reset_password",
            data={"email": EMAIL, "reset_token": token, "new_password": "n"},
        )
        client.put(
            "/reset_password",
            data={"email": EMAIL, "reset_token": token, "new_password": "n"},
        )
        for _ in range(10):
            actions.login("nobody@example.com", WRONG)
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "authsvc.audit"
    ]
    bob = authsvc.email_hash(EMAIL)
    nobody = authsvc.email_hash("nobody@example.com")
    assert lines[:10] == [
        "event=register outcome=ok user=1 client=-",
        f"event=register outcome=duplicate email_hash={bob} client=-",
        f"event=login outcome=failed email_hash={bob} client=-",
        "event=login outcome=ok user=1 client=-",
        "event=logout outcome=ok user=1 client=-",
        "event=logout outcome=no_session user=- client=-",
        f"event=reset_request outcome=ok email_hash={bob} client=-",
        f"event=reset_request outcome=unknown_email email_hash={nobody} client=-",
        f"event=password_update outcome=ok email_hash={bob} client=-",
        f"event=password_update outcome=invalid_token email_hash={bob} client=-",
    ]
    assert (
        lines[10:] == [f"event=login outcome=failed email_hash={nobody} client=-"] * 10
    )
    assert actions.login("nobody@example.com", WRONG).status_code == 429


def test_a_throttled_login_is_audited(
    actions: AuthActions, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(10):
        actions.login(EMAIL, WRONG)
    with caplog.at_level(logging.INFO, logger="authsvc.audit"):
        actions.login(EMAIL, WRONG)
    assert caplog.records[-1].getMessage() == (
        f"event=login outcome=throttled email_hash={authsvc.email_hash(EMAIL)} client=-"
    )


# -- reset delivery warning


def test_response_delivery_warns_once_at_start_up(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="authsvc"):
        authsvc.create_app(config)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "AUTHSVC_RESET_DELIVERY" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "AUTHSVC_RESET_DELIVERY=response" in warnings[0]
    assert "AUTHSVC_RESET_DELIVERY=smtp in production" in warnings[0]


def test_a_made_up_reset_token_costs_no_bcrypt(
    actions: AuthActions, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PUT /reset_password checks the token before hashing: no cheap way to burn CPU."""
    actions.register(EMAIL, PASSWORD)
    actions.reset_token(EMAIL)
    calls = []
    real_hashpw = bcrypt.hashpw
    monkeypatch.setattr(
        authsvc.bcrypt, "hashpw", lambda *a: calls.append(1) or real_hashpw(*a)
    )
    data = {
        "email": EMAIL,
        "reset_token": "00000000-0000-4000-8000-000000000000",
        "new_password": "x",
    }
    assert client.put("/reset_password", data=data).status_code == 403
    assert calls == []
