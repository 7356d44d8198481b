"""SPEC "Two-factor: TOTP and recovery codes", clause by clause.

In process on both backends with the fake clock: enrolment, login with a code (in the
same request or after it with the `mfa_token`), drift, once-only steps, the token's
limits, recovery codes, the routes that re-authenticate, a reset, the secret at rest, the
migration from the previous release. Against a real SMTP server for the notices; under
gunicorn with two workers for what must hold on every worker: a code replayed on the
other worker, two logins racing with one code.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pgserver
import pyotp
import pytest
import requests
from conftest import (
    FAST_ROUNDS,
    AuthActions,
    FakeClock,
    assert_error,
    client_for,
    postgres_database_of_release,
    query,
    run_authsvc,
)
from servers import GunicornServer
from test_account import BAD_INPUT, at_once
from test_smtp import SmtpServer, smtp_config, start_smtp
from werkzeug.test import Client, TestResponse

import store
from authsvc import Auth, Config
from factors import (
    MFA_TOKEN_MAX_TRIES,
    MFA_TOKEN_TTL,
    PENDING_TTL,
    RECOVERY_CODE_COUNT,
    SecretBox,
    WrongCode,
    code_at,
    time_step,
)

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
NEW_PASSWORD = "n3w s3cret pw"
FIXTURES = Path(__file__).parent / "fixtures"
RECOVERY_CODE_SHAPE = re.compile(r"[a-z2-7]{4}(-[a-z2-7]{4}){5}")
TWO_FACTOR_TABLES = ("users", "sessions", "two_factor", "recovery_codes", "mfa_tokens")


def code_now(secret: str, clock: Callable[[], float], offset: int = 0) -> str:
    """What the authenticator app shows at the clock's time, `offset` steps away."""
    return code_at(secret, time_step(clock()) + offset)


def log_in(client: Client, **fields: str) -> TestResponse:
    return client.post(
        "/sessions", data={"email": EMAIL, "password": PASSWORD, **fields}
    )


def fresh_login(config: Config, clock: FakeClock, **fields: str) -> TestResponse:
    """A login from a client of its own (another device: no cookie yet)."""
    return log_in(client_for(config, clock), **fields)


def turn_on(client: Client, clock: FakeClock) -> tuple[str, list[str]]:
    """Set up and confirm two-factor for the client's user: (the secret, the recovery
    codes). The clock then moves a step on, so the next code is a new one."""
    enrolment = client.post("/account/two_factor", data={"password": PASSWORD})
    assert enrolment.status_code == 200, enrolment.json
    secret = enrolment.json["secret"]
    confirmed = client.put(
        "/account/two_factor", data={"code": code_now(secret, clock)}
    )
    assert confirmed.status_code == 200, confirmed.json
    clock.advance(30)
    return secret, confirmed.json["recovery_codes"]


@pytest.fixture
def bob(client: Client, actions: AuthActions) -> Client:
    """The test's client with Bob registered and logged in, two-factor off."""
    assert actions.register(EMAIL, PASSWORD).status_code == 200
    assert actions.login(EMAIL, PASSWORD).status_code == 200
    return client


@pytest.fixture
def secured(bob: Client, clock: FakeClock) -> tuple[Client, str, list[str]]:
    """Bob with two-factor on: his client (still logged in), his secret, his codes."""
    secret, codes = turn_on(bob, clock)
    return bob, secret, codes


def rows(db: str, table: str) -> list[tuple]:
    return query(db, f"SELECT * FROM {table} ORDER BY 1")


# -- enrolment


def test_enrolment_gives_the_secret_three_ways_and_confirms_with_a_code(
    bob: Client, clock: FakeClock
) -> None:
    enrolment = bob.post("/account/two_factor", data={"password": PASSWORD})
    assert enrolment.status_code == 200
    assert enrolment.headers["Cache-Control"] == "no-store"
    body = enrolment.json
    assert set(body) == {"secret", "otpauth_uri", "qr_svg"}
    secret = body["secret"]
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)  # 160 bits in base32
    assert len(base64.b32decode(secret)) == 20
    parsed = pyotp.parse_uri(body["otpauth_uri"])  # what an app reads
    assert parsed.secret == secret and parsed.issuer == "authsvc"
    assert parsed.name == EMAIL and parsed.digits == 6 and parsed.interval == 30
    assert body["qr_svg"].startswith("<svg") and body["qr_svg"].endswith("</svg>")
    assert bob.get("/account").json["two_factor"] is False  # pending until confirmed

    confirmed = bob.put("/account/two_factor", data={"code": code_now(secret, clock)})
    assert confirmed.status_code == 200
    assert confirmed.json["message"] == "two-factor on"
    codes = confirmed.json["recovery_codes"]
    assert len(codes) == len(set(codes)) == RECOVERY_CODE_COUNT == 10
    assert all(RECOVERY_CODE_SHAPE.fullmatch(code) for code in codes)
    account = bob.get("/account").json
    assert account["two_factor"] is True and account["recovery_codes_left"] == 10
    # The confirming code's step counts as used: it does not log in again.
    assert log_in(bob, code=code_now(secret, clock)).json == {
        "message": "wrong two-factor code"
    }


def test_the_issuer_is_the_configured_one(config: Config, clock: FakeClock) -> None:
    client = client_for(dataclasses.replace(config, totp_issuer="Acme Web"), clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    AuthActions(client).login(EMAIL, PASSWORD)
    uri = client.post("/account/two_factor", data={"password": PASSWORD}).json[
        "otpauth_uri"
    ]
    assert pyotp.parse_uri(uri).issuer == "Acme Web"


def test_enrolment_needs_the_password(bob: Client, config: Config) -> None:
    before = rows(config.db, "two_factor")
    answer = bob.post("/account/two_factor", data={"password": "wrong"})
    assert assert_error(answer, 401) == "wrong password"
    assert "WWW-Authenticate" in answer.headers
    assert rows(config.db, "two_factor") == before == []


def test_asking_again_replaces_the_pending_secret(
    bob: Client, clock: FakeClock
) -> None:
    first = bob.post("/account/two_factor", data={"password": PASSWORD}).json["secret"]
    second = bob.post("/account/two_factor", data={"password": PASSWORD}).json["secret"]
    assert first != second
    answer = bob.put("/account/two_factor", data={"code": code_now(first, clock)})
    assert assert_error(answer, 403) == "wrong two-factor code"
    assert (
        bob.put(
            "/account/two_factor", data={"code": code_now(second, clock)}
        ).status_code
        == 200
    )


def test_a_pending_secret_lives_ten_minutes(bob: Client, clock: FakeClock) -> None:
    secret = bob.post("/account/two_factor", data={"password": PASSWORD}).json["secret"]
    clock.advance(PENDING_TTL)
    answer = bob.put("/account/two_factor", data={"code": code_now(secret, clock)})
    assert assert_error(answer, 400) == (
        "no two-factor set-up is waiting; start one first"
    )
    assert bob.get("/account").json["two_factor"] is False


def test_confirming_without_a_set_up_or_twice_is_a_400(
    secured: tuple[Client, str, list[str]], clock: FakeClock
) -> None:
    client, secret, _ = secured
    answer = client.put("/account/two_factor", data={"code": code_now(secret, clock)})
    assert assert_error(answer, 400) == "two-factor is already on; turn it off first"
    again = client.post("/account/two_factor", data={"password": PASSWORD})
    assert assert_error(again, 400) == "two-factor is already on; turn it off first"


def test_wrong_set_up_codes_are_403_and_no_failed_login(
    bob: Client, clock: FakeClock
) -> None:
    """The caller holds a session: a wrong code at set-up is not a guess at a way in,
    so it is not counted against the login (which stays open after 20 of them)."""
    secret = bob.post("/account/two_factor", data={"password": PASSWORD}).json["secret"]
    wrong = f"{(int(code_now(secret, clock)) + 1) % 10**6:06d}"
    for _ in range(20):
        answer = bob.put("/account/two_factor", data={"code": wrong})
        assert assert_error(answer, 403) == "wrong two-factor code"
    assert log_in(bob).status_code == 200


def test_turning_two_factor_on_ends_every_other_session(
    config: Config, clock: FakeClock, bob: Client
) -> None:
    laptop = client_for(config, clock)
    assert AuthActions(laptop).login(EMAIL, PASSWORD).status_code == 200
    turn_on(bob, clock)
    assert laptop.get("/profile").status_code == 403  # ASVS 7.4.3
    assert bob.get("/profile").status_code == 200  # the caller's stays


# -- login


def test_the_right_password_alone_gets_an_mfa_token_and_no_session(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    _, secret, _ = secured
    fresh = client_for(config, clock)
    answer = log_in(fresh)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Cookie ")
    assert answer.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in answer.headers
    assert set(answer.json) == {"message", "mfa_token"}
    assert answer.json["message"] == "two-factor code required"
    token = answer.json["mfa_token"]
    assert fresh.get("/profile").status_code == 403

    done = fresh.post(
        "/sessions", data={"mfa_token": token, "code": code_now(secret, clock)}
    )
    assert done.status_code == 200
    assert done.json == {"email": EMAIL, "message": "logged in"}  # as always
    assert fresh.get("/profile").json == {"email": EMAIL}


def test_email_password_and_code_log_in_in_one_request(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    _, secret, _ = secured
    fresh = client_for(config, clock)
    answer = log_in(fresh, code=code_now(secret, clock))
    assert answer.status_code == 200 and answer.json["message"] == "logged in"
    assert "session_id=" in answer.headers["Set-Cookie"]


def test_a_wrong_password_looks_the_same_with_or_without_two_factor(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    client, _, _ = secured
    AuthActions(client).register("plain@example.com", PASSWORD)
    answers = [
        client.post("/sessions", data={"email": email, "password": "wrong"})
        for email in (EMAIL, "plain@example.com", "nobody@example.com")
    ]
    seen = {
        (a.status_code, a.get_data(), a.headers["WWW-Authenticate"]) for a in answers
    }
    assert len(seen) == 1 and answers[0].json == {"message": "wrong email or password"}
    assert rows(config.db, "mfa_tokens") == []
    # With a code too: still only the password speaks.
    with_code = log_in(client, password="wrong", code="123456")
    assert with_code.json == {"message": "wrong email or password"}


def test_a_wrong_password_costs_one_bcrypt_with_or_without_two_factor(
    secured: tuple[Client, str, list[str]], auth: Auth
) -> None:
    """Same time: a wrong password is refused by the same single bcrypt check, before
    anything about two-factor is read (counted with the bcrypt metric's hook)."""
    client, _, _ = secured
    AuthActions(client).register("plain@example.com", PASSWORD)
    timings: list[float] = []
    auth.metrics.bcrypt = timings.append  # type: ignore[method-assign]
    for email in (EMAIL, "plain@example.com"):
        timings.clear()
        client.post("/sessions", data={"email": email, "password": "wrong"})
        assert len(timings) == 1


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_one_step_of_drift_either_way_is_accepted(
    secured: tuple[Client, str, list[str]],
    config: Config,
    clock: FakeClock,
    offset: int,
) -> None:
    _, secret, _ = secured
    clock.advance(90)  # well past the step the set-up used
    answer = fresh_login(config, clock, code=code_now(secret, clock, offset))
    assert answer.status_code == 200


@pytest.mark.parametrize("offset", [-2, 2])
def test_two_steps_of_drift_are_refused(
    secured: tuple[Client, str, list[str]],
    config: Config,
    clock: FakeClock,
    offset: int,
) -> None:
    _, secret, _ = secured
    clock.advance(120)
    answer = fresh_login(config, clock, code=code_now(secret, clock, offset))
    assert answer.status_code == 401
    assert answer.json == {"message": "wrong two-factor code"}


def test_a_code_works_once_and_the_next_step_works(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    """RFC 6238 section 5.2: a code whose step is not later than the last accepted one
    is refused, even within its 30 seconds; the next step's code is accepted."""
    _, secret, _ = secured
    code = code_now(secret, clock)
    assert fresh_login(config, clock, code=code).status_code == 200
    clock.advance(10)  # same step still
    replay = fresh_login(config, clock, code=code)
    assert (
        replay.status_code == 401 and replay.json["message"] == "wrong two-factor code"
    )
    # An earlier step, still inside the drift window, is refused too.
    earlier = code_now(secret, clock, -1)
    assert fresh_login(config, clock, code=earlier).status_code == 401
    clock.advance(30)
    assert fresh_login(config, clock, code=code_now(secret, clock)).status_code == 200


def test_the_last_step_is_one_conditional_update(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    _, secret, _ = secured
    assert fresh_login(config, clock, code=code_now(secret, clock)).status_code == 200
    (last_step,) = query(config.db, "SELECT last_step FROM two_factor")[0]
    assert last_step == time_step(clock())


def test_an_mfa_token_lives_five_minutes(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    _, secret, _ = secured
    fresh = client_for(config, clock)
    token = log_in(fresh).json["mfa_token"]
    clock.advance(MFA_TOKEN_TTL)
    answer = fresh.post(
        "/sessions", data={"mfa_token": token, "code": code_now(secret, clock)}
    )
    assert answer.status_code == 401
    assert answer.json == {"message": "mfa_token is not valid; log in again"}
    assert "WWW-Authenticate" in answer.headers


def test_an_mfa_token_is_single_use(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    _, secret, _ = secured
    fresh = client_for(config, clock)
    token = log_in(fresh).json["mfa_token"]
    assert (
        fresh.post(
            "/sessions", data={"mfa_token": token, "code": code_now(secret, clock)}
        ).status_code
        == 200
    )
    clock.advance(30)
    again = fresh.post(
        "/sessions", data={"mfa_token": token, "code": code_now(secret, clock)}
    )
    assert again.json == {"message": "mfa_token is not valid; log in again"}


def wrong_code(secret: str, clock: FakeClock) -> str:
    """Six digits that are none of the codes within the drift window."""
    window = {code_now(secret, clock, offset) for offset in (-1, 0, 1)}
    return next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in window)


def test_the_fifth_wrong_code_ends_the_mfa_token(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    _, secret, _ = secured
    fresh = client_for(config, clock)
    token = log_in(fresh).json["mfa_token"]
    for _ in range(MFA_TOKEN_MAX_TRIES):
        answer = fresh.post(
            "/sessions", data={"mfa_token": token, "code": wrong_code(secret, clock)}
        )
        assert answer.json == {"message": "wrong two-factor code"}
    right = fresh.post(
        "/sessions", data={"mfa_token": token, "code": code_now(secret, clock)}
    )
    assert right.json == {"message": "mfa_token is not valid; log in again"}
    assert rows(config.db, "mfa_tokens") == []


def test_four_wrong_codes_then_the_right_one_log_in(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    _, secret, _ = secured
    fresh = client_for(config, clock)
    token = log_in(fresh).json["mfa_token"]
    for _ in range(MFA_TOKEN_MAX_TRIES - 1):
        fresh.post(
            "/sessions", data={"mfa_token": token, "code": wrong_code(secret, clock)}
        )
    right = fresh.post(
        "/sessions", data={"mfa_token": token, "code": code_now(secret, clock)}
    )
    assert right.status_code == 200


def test_an_mfa_token_is_stored_only_as_its_digest(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    token = fresh_login(config, clock).json["mfa_token"]
    stored = query(config.db, "SELECT digest FROM mfa_tokens")
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(),)]
    assert token not in str(rows(config.db, "mfa_tokens"))


def test_wrong_codes_count_as_failed_logins_for_the_lock_out(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    """Ten wrong codes (AUTHSVC_LOGIN_MAX_FAILURES) lock the email as ten wrong
    passwords do: then even the right password and code get 429."""
    _, secret, _ = secured
    fresh = client_for(config, clock)
    for _ in range(config.login_max_failures):
        log_in(fresh, code=wrong_code(secret, clock))
    locked = log_in(fresh, code=code_now(secret, clock))
    assert locked.status_code == 429 and "Retry-After" in locked.headers


def test_a_session_of_a_login_waiting_for_its_code_ends_with_a_reset(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    """A password reset keeps two-factor on (ASVS 6.4.3), ends the logins waiting for
    a code, and the next login still asks one."""
    client, secret, _ = secured
    waiting = fresh_login(config, clock).json["mfa_token"]
    token = AuthActions(client).reset_token(EMAIL)
    reset = client.put(
        "/reset_password",
        data={"email": EMAIL, "reset_token": token, "new_password": NEW_PASSWORD},
    )
    assert reset.status_code == 200
    fresh = client_for(config, clock)
    after = fresh.post(
        "/sessions", data={"mfa_token": waiting, "code": code_now(secret, clock)}
    )
    assert after.json == {"message": "mfa_token is not valid; log in again"}
    login = log_in(fresh, password=NEW_PASSWORD)
    assert login.status_code == 401 and "mfa_token" in login.json
    assert fresh.get("/account").status_code == 403
    assert (
        log_in(fresh, password=NEW_PASSWORD, code=code_now(secret, clock)).status_code
        == 200
    )
    assert fresh.get("/account").json["two_factor"] is True


# -- recovery codes


def test_each_recovery_code_logs_in_once(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    client, _, codes = secured
    for used, code in enumerate(codes[:3], start=1):
        assert fresh_login(config, clock, code=code).status_code == 200
        assert client.get("/account").json["recovery_codes_left"] == 10 - used
        again = fresh_login(config, clock, code=code)
        assert again.json == {"message": "wrong two-factor code"}
    # Typed without dashes and in capitals, with the mfa_token: the same code.
    fresh = client_for(config, clock)
    token = log_in(fresh).json["mfa_token"]
    typed = codes[3].replace("-", "").upper()
    assert (
        fresh.post("/sessions", data={"mfa_token": token, "code": typed}).status_code
        == 200
    )


def test_recovery_codes_are_stored_as_sha256_of_120_bits(
    secured: tuple[Client, str, list[str]], config: Config
) -> None:
    _, _, codes = secured
    stored = {
        digest for (digest,) in query(config.db, "SELECT digest FROM recovery_codes")
    }
    letters = [code.replace("-", "") for code in codes]
    assert stored == {hashlib.sha256(text.encode()).hexdigest() for text in letters}
    assert all(len(base64.b32decode(text.upper())) * 8 >= 112 for text in letters)


def test_new_recovery_codes_void_the_old_ones(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    client, secret, old = secured
    renewed = client.post(
        "/account/recovery_codes",
        data={"password": PASSWORD, "code": code_now(secret, clock)},
    )
    assert renewed.status_code == 200 and set(renewed.json) == {"recovery_codes"}
    new = renewed.json["recovery_codes"]
    assert len(new) == 10 and not set(new) & set(old)
    assert fresh_login(config, clock, code=old[0]).status_code == 401
    assert fresh_login(config, clock, code=new[0]).status_code == 200


# -- the routes that re-authenticate: wrong, missing and right code

# (method, path, fields besides password and code, expected 200 body keys)
REAUTHENTICATED = {
    "change_password": ("PUT", "/account/password", {"new_password": NEW_PASSWORD}),
    "change_email": ("PUT", "/account/email", {"new_email": "new@example.com"}),
    "delete_account": ("DELETE", "/account", {}),
    "disable_two_factor": ("DELETE", "/account/two_factor", {}),
    "renew_recovery_codes": ("POST", "/account/recovery_codes", {}),
}


@pytest.mark.parametrize("route", list(REAUTHENTICATED))
def test_every_reauthenticated_route_asks_the_code(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock, route: str
) -> None:
    client, secret, _ = secured
    method, path, fields = REAUTHENTICATED[route]
    fields = {"password": PASSWORD, **fields}
    before = {table: rows(config.db, table) for table in TWO_FACTOR_TABLES}
    missing = client.open(path, method=method, data=fields)
    assert assert_error(missing, 401) == "two-factor code required"
    assert "WWW-Authenticate" in missing.headers
    wrong = client.open(
        path, method=method, data={**fields, "code": wrong_code(secret, clock)}
    )
    assert assert_error(wrong, 401) == "wrong two-factor code"
    after = {table: rows(config.db, table) for table in TWO_FACTOR_TABLES}
    assert after == before  # nothing changed
    right = client.open(
        path, method=method, data={**fields, "code": code_now(secret, clock)}
    )
    assert right.status_code == 200, right.json


@pytest.mark.parametrize("route", list(REAUTHENTICATED))
def test_a_stolen_cookie_cannot_guess_codes_on_a_reauthenticated_route(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock, route: str
) -> None:
    """Each wrong code is a failed login: the tenth locks the route and the login."""
    client, secret, _ = secured
    method, path, fields = REAUTHENTICATED[route]
    data = {"password": PASSWORD, **fields, "code": wrong_code(secret, clock)}
    for _ in range(config.login_max_failures):
        assert client.open(path, method=method, data=data).status_code == 401
    right = {**data, "code": code_now(secret, clock)}
    assert client.open(path, method=method, data=right).status_code == 429
    assert fresh_login(config, clock, code=code_now(secret, clock)).status_code == 429


def test_turning_off_forgets_secret_and_codes_and_the_password_logs_in_alone(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    client, _, codes = secured
    answer = client.delete(
        "/account/two_factor", data={"password": PASSWORD, "code": codes[0]}
    )
    assert answer.json == {"message": "two-factor off"}
    for table in ("two_factor", "recovery_codes", "mfa_tokens"):
        assert rows(config.db, table) == []
    assert fresh_login(config, clock).status_code == 200
    again = client.delete("/account/two_factor", data={"password": PASSWORD})
    assert assert_error(again, 400) == "two-factor is not on"
    renew = client.post("/account/recovery_codes", data={"password": PASSWORD})
    assert assert_error(renew, 400) == "two-factor is not on"


def test_deleting_the_account_takes_its_factor_with_it(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    client, secret, _ = secured
    fresh_login(config, clock)  # a login waiting for its code
    answer = client.delete(
        "/account", data={"password": PASSWORD, "code": code_now(secret, clock)}
    )
    assert answer.status_code == 200
    for table in TWO_FACTOR_TABLES:
        assert rows(config.db, table) == []


# -- the secret at rest


def test_with_a_key_the_secret_is_sealed_and_another_key_opens_nothing(
    config: Config, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keyed = dataclasses.replace(config, secret_key="k" * 40)
    client = client_for(keyed, clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    AuthActions(client).login(EMAIL, PASSWORD)
    secret, _ = turn_on(client, clock)
    ((stored,),) = query(config.db, "SELECT secret FROM two_factor")
    raw = base64.b32decode(secret)
    for form in (secret, secret.lower(), raw.hex(), base64.b64encode(raw).decode()):
        assert form not in stored
    assert stored.startswith("aesgcm:")
    assert SecretBox("k" * 40).open(stored, 1) == secret
    assert SecretBox("k" * 40).open(stored, 2) is None  # bound to its user

    # The row copied into a database whose server has another key: no code opens it.
    other_db = str(tmp_path / "other.db")
    other = Auth(
        Config(db=other_db, bcrypt_rounds=FAST_ROUNDS, secret_key="o" * 40), clock
    )
    other.register_user(EMAIL, PASSWORD)
    columns = ", ".join(store.TWO_FACTOR_COLUMNS)
    (row,) = query(config.db, f"SELECT {columns} FROM two_factor")
    query(
        other_db, f"INSERT INTO two_factor ({columns}) VALUES (?, ?, ?, ?, ?, ?)", row
    )
    clock.advance(60)
    with pytest.raises(WrongCode):
        other.log_in(EMAIL, PASSWORD, code=code_now(secret, clock))
    assert "cannot be opened" in caplog.text and secret not in caplog.text
    other.close()


def test_without_a_key_the_secret_is_kept_as_is(
    secured: tuple[Client, str, list[str]], config: Config
) -> None:
    """Course mode only (production refuses to start without a key), and the start-up
    warning says so (test_modes)."""
    _, secret, _ = secured
    assert query(config.db, "SELECT secret FROM two_factor") == [(f"plain:{secret}",)]


# -- the operator's way back


def test_the_operator_turns_two_factor_off_and_it_is_audited(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    env = {"AUTHSVC_DB": config.db, "AUTHSVC_BCRYPT_ROUNDS": str(FAST_ROUNDS)}
    result = run_authsvc("two-factor-off", EMAIL, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "two-factor turned off for user 1; the password alone logs in"
    )
    assert "event=two_factor_off outcome=ok user=1 client=cli" in result.stderr
    assert fresh_login(config, clock).status_code == 200
    again = run_authsvc("two-factor-off", EMAIL, env=env)
    assert again.stdout.strip() == "two-factor was not on for user 1: nothing changed"
    unknown = run_authsvc("two-factor-off", "nobody@example.com", env=env)
    assert unknown.returncode == 1
    assert "no user has the email nobody@example.com" in unknown.stderr


# -- audit lines and metrics


def test_logins_are_audited_by_outcome_without_secrets(
    secured: tuple[Client, str, list[str]],
    config: Config,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, secret, codes = secured
    fresh = client_for(config, clock)
    caplog.clear()
    with caplog.at_level("INFO", logger="authsvc.audit"):
        token = log_in(fresh).json["mfa_token"]
        fresh.post(
            "/sessions", data={"mfa_token": token, "code": wrong_code(secret, clock)}
        )
        fresh.post("/sessions", data={"mfa_token": "made-up", "code": "123456"})
        fresh.post("/sessions", data={"mfa_token": token, "code": codes[0]})
    lines = [r.getMessage() for r in caplog.records if r.name == "authsvc.audit"]
    outcomes = [
        re.search(r"event=(\S+) outcome=(\S+)", line).groups() for line in lines
    ]
    assert outcomes == [
        ("login", "code_required"),
        ("login", "wrong_code"),
        ("login", "invalid_mfa_token"),
        ("recovery_code", "used"),
        ("login", "ok"),
    ]
    for text in (token, secret, codes[0], PASSWORD):
        assert not any(text in line for line in lines)


# -- bad input: every new field and route joins the matrix

# (method, path, fields of a good request; CODE is filled in with a current code)
BODY_ROUTES = {
    "login_with_code": (
        "POST",
        "/sessions",
        {"email": EMAIL, "password": PASSWORD, "code": "CODE"},
    ),
    "login_with_token": ("POST", "/sessions", {"mfa_token": "TOKEN", "code": "CODE"}),
    "disable_two_factor": (
        "DELETE",
        "/account/two_factor",
        {"password": PASSWORD, "code": "CODE"},
    ),
    "renew_recovery_codes": (
        "POST",
        "/account/recovery_codes",
        {"password": PASSWORD, "code": "CODE"},
    ),
    "change_password": (
        "PUT",
        "/account/password",
        {"password": PASSWORD, "new_password": NEW_PASSWORD, "code": "CODE"},
    ),
}


def filled(
    fields: dict[str, str], client: Client, secret: str, clock: FakeClock
) -> dict:
    """The route's good fields with a current code and a live mfa_token."""
    fields = dict(fields)
    if fields.get("code") == "CODE":
        fields["code"] = code_now(secret, clock)
    if fields.get("mfa_token") == "TOKEN":
        fields["mfa_token"] = log_in(client).json["mfa_token"]
    return fields


@pytest.mark.parametrize("route", list(BODY_ROUTES))
@pytest.mark.parametrize(
    ("case", "requests_of", "status"), BAD_INPUT, ids=[case[0] for case in BAD_INPUT]
)
def test_bad_input_to_a_two_factor_route_is_a_4xx_and_changes_nothing(
    secured: tuple[Client, str, list[str]],
    config: Config,
    clock: FakeClock,
    route: str,
    case: str,
    requests_of: Callable[[dict], list[dict]],
    status: int,
) -> None:
    client, secret, _ = secured
    method, path, fields = BODY_ROUTES[route]
    fields = filled(fields, client, secret, clock)
    # A login without its code is no bad input: it gets its mfa_token row.
    tables = [
        t
        for t in TWO_FACTOR_TABLES
        if not (route.startswith("login") and t == "mfa_tokens")
    ]
    before = {table: rows(config.db, table) for table in tables}
    for request in requests_of(fields):
        answer = client.open(path, method=method, **request)
        if answer.status_code == 401 and case in (
            "a field missing",
            "a field empty",
            "a field blank",
            "a field of 10000 chars",
            "a field null in JSON",
        ):
            # A missing code (or mfa_token) is "two-factor code required", a long
            # password is checked and wrong: 401s, and still no change.
            continue
        assert assert_error(answer, status), (case, request, answer.json)
    assert {table: rows(config.db, table) for table in tables} == before


@pytest.mark.parametrize("route", list(BODY_ROUTES))
def test_the_good_request_of_each_two_factor_route_works(
    secured: tuple[Client, str, list[str]], clock: FakeClock, route: str
) -> None:
    client, secret, _ = secured
    method, path, fields = BODY_ROUTES[route]
    answer = client.open(
        path, method=method, data=filled(fields, client, secret, clock)
    )
    assert answer.status_code == 200, answer.json


def test_a_code_of_the_wrong_shape_is_just_wrong(
    secured: tuple[Client, str, list[str]], config: Config, clock: FakeClock
) -> None:
    for code in ("12345", "1234567", "abcdef", "١٢٣٤٥٦", "x" * 64):
        answer = fresh_login(config, clock, code=code)
        assert answer.json == {"message": "wrong two-factor code"}, code
    too_long = fresh_login(config, clock, code="x" * 65)
    assert assert_error(too_long, 400) == "code must be at most 64 characters"


# -- the notices (smtp)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback (test_smtp's), stopped after the test."""
    server = start_smtp()
    yield server
    server.controller.stop()


def test_two_factor_changes_and_recovery_code_use_are_mailed(
    config: Config, smtp: SmtpServer, clock: FakeClock
) -> None:
    client = client_for(smtp_config(config, smtp.port), clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    AuthActions(client).login(EMAIL, PASSWORD)
    secret, codes = turn_on(client, clock)
    assert (
        log_in(
            client_for(smtp_config(config, smtp.port), clock), code=codes[0]
        ).status_code
        == 200
    )
    client.delete("/account/two_factor", data={"password": PASSWORD, "code": codes[1]})
    subjects = [m["Subject"] for m in smtp.mailbox.messages]
    assert subjects == [
        "Your authsvc two-factor login was turned on",
        "A recovery code of your authsvc account was used",
        "A recovery code of your authsvc account was used",
        "Your authsvc two-factor login was turned off",
    ]
    used = smtp.mailbox.messages[1].get_content()
    assert "9 unused codes are left" in used
    for message in smtp.mailbox.messages:
        body = message.get_content()
        assert message["To"] == EMAIL
        for text in (secret, PASSWORD, *codes):
            assert text not in body


# -- the previous release's database


def test_the_previous_releases_database_upgrades_without_two_factor(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "release-4.db"
    shutil.copyfile(FIXTURES / "release-4.db", path)
    made = json.loads((FIXTURES / "release-4.json").read_text())
    users_before = query(str(path), "SELECT id, email, hashed_password FROM users")
    # No idle expiry: the fixture's sessions were last used when it was made.
    config = Config(db=str(path), bcrypt_rounds=FAST_ROUNDS, session_idle_ttl=0)
    client = client_for(config, clock)
    for session_id in made["erin_sessions"]:  # logged in before: still logged in
        client.set_cookie("session_id", session_id)
        assert client.get("/account").json["two_factor"] is False
    assert (
        query(str(path), "SELECT id, email, hashed_password FROM users") == users_before
    )
    assert store.Store(path).schema_version() == store.SCHEMA_VERSION
    fresh = client_for(config, clock)
    erin = {
        "email": "erin@example.com",
        "password": made["passwords"]["erin@example.com"],
    }
    assert fresh.post("/sessions", data=erin).status_code == 200  # no code asked


@pytest.mark.postgresql_only
def test_a_postgresql_database_of_the_previous_release_upgrades(
    backend: str, postgres: pgserver.PostgresServer, clock: FakeClock
) -> None:
    """Schema 9 on PostgreSQL (migrations 1 to 9), holding the fixture's users and
    sessions; start-up applies migration 10 and every one stays logged in."""
    url = postgres_database_of_release(
        postgres, FIXTURES / "release-4.db", 9, ("users", "sessions")
    )
    try:
        made = json.loads((FIXTURES / "release-4.json").read_text())
        config = Config(db=url, bcrypt_rounds=FAST_ROUNDS, session_idle_ttl=0)
        client = client_for(config, clock)
        for session_id in made["erin_sessions"]:
            client.set_cookie("session_id", session_id)
            assert client.get("/account").json["two_factor"] is False
        assert query(url, "SELECT version FROM authsvc_schema_version") == [
            (store.SCHEMA_VERSION,)
        ]
        assert query(url, "SELECT COUNT(*) FROM users") == [(8,)]
    finally:
        store.close_all_pools()
        postgres.sql(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


# -- under gunicorn, two workers: once only on every worker


def server_login(url: str, **fields: str) -> requests.Response:
    return requests.post(
        f"{url}/sessions",
        data={"email": EMAIL, "password": PASSWORD, **fields},
        headers={"Connection": "close"},  # a new connection: any worker may take it
        timeout=15,
    )


@pytest.fixture
def secured_server(
    start_server: Callable[..., GunicornServer],
) -> tuple[GunicornServer, str]:
    """A gunicorn (2 workers) on the defaults, with a secret key, and Bob with
    two-factor on; the server and his secret."""
    # The limits lifted: the replays below are failed logins, and the kernel may give
    # one worker many connections in a row before the other gets one.
    server = start_server(generous=True, env={"AUTHSVC_SECRET_KEY": "e2e-" + "k" * 36})
    form = {"email": EMAIL, "password": PASSWORD}
    assert requests.post(f"{server.url}/users", data=form, timeout=15).ok
    cookies = {"session_id": server_login(server.url).cookies["session_id"]}
    secret = requests.post(
        f"{server.url}/account/two_factor",
        data={"password": PASSWORD},
        cookies=cookies,
        timeout=15,
    ).json()["secret"]
    confirmed = requests.put(
        f"{server.url}/account/two_factor",
        data={"code": code_now(secret, time.time)},
        cookies=cookies,
        timeout=15,
    )
    assert confirmed.status_code == 200, confirmed.text
    return server, secret


def next_fresh_code(secret: str) -> str:
    """A code no login has used: the next time step's, which one step of drift lets
    in now (the set-up took the current step or the one before)."""
    return code_at(secret, time_step(time.time()) + 1)


def worker_of(line: str) -> str:
    return re.search(r"\[(\d+)\] \[INFO\]", line).group(1)


@pytest.mark.e2e
def test_a_code_replayed_on_the_other_worker_is_refused(
    secured_server: tuple[GunicornServer, str], database_url: str
) -> None:
    server, secret = secured_server
    ((stored,),) = query(database_url, "SELECT secret FROM two_factor")
    assert secret not in stored and base64.b32decode(secret).hex() not in stored
    code = next_fresh_code(secret)
    assert server_login(server.url, code=code).status_code == 200
    workers_refusing: set[str] = set()
    for _ in range(30):  # new connections until both workers have refused it
        replay = server_login(server.url, code=code)
        assert replay.status_code == 401 and replay.json() == {
            "message": "wrong two-factor code"
        }
        time.sleep(0.05)
        refusals = [l for l in server.log().splitlines() if "outcome=wrong_code" in l]
        workers_refusing = {worker_of(line) for line in refusals}
        accepted = [
            l for l in server.log().splitlines() if "event=login outcome=ok" in l
        ]
        if workers_refusing - {worker_of(accepted[-1])}:
            break
    assert workers_refusing - {worker_of(accepted[-1])}, (
        "the other worker never answered"
    )


@pytest.mark.e2e
def test_two_logins_racing_with_one_code_make_one_session(
    secured_server: tuple[GunicornServer, str], database_url: str
) -> None:
    server, secret = secured_server
    sessions_before = query(database_url, "SELECT COUNT(*) FROM sessions")[0][0]
    code = next_fresh_code(secret)
    answers = at_once([lambda: server_login(server.url, code=code)] * 6)
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [401] * 5, [a.text for a in answers]
    assert (
        query(database_url, "SELECT COUNT(*) FROM sessions")[0][0]
        == sessions_before + 1
    )


@pytest.mark.e2e
def test_one_mfa_token_racing_with_two_codes_makes_one_session(
    secured_server: tuple[GunicornServer, str], database_url: str
) -> None:
    server, secret = secured_server
    token = server_login(server.url).json()["mfa_token"]
    code = next_fresh_code(secret)

    def finish() -> requests.Response:
        return requests.post(
            f"{server.url}/sessions",
            data={"mfa_token": token, "code": code},
            headers={"Connection": "close"},
            timeout=15,
        )

    answers: list[Any] = at_once([finish] * 4)
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401]


def test_the_course_warning_says_secrets_are_unencrypted_without_a_key() -> None:
    from config import course_mode_warning

    warning = course_mode_warning(Config())
    assert warning is not None
    assert "two-factor secrets are stored unencrypted" in warning
    keyed = course_mode_warning(Config(secret_key="k" * 40))
    assert keyed is not None and "two-factor" not in keyed
