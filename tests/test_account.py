"""SPEC "Account self-service": the account, its password, its email and its end.

In process on both backends with the fake clock (response delivery: codes in the answer,
as the course's reset tokens are), against a real SMTP server for what is mailed, and
under gunicorn for the races: two confirmations of one code, a password change racing a
login, a deletion racing the session's use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import (
    FAST_ROUNDS,
    AuthActions,
    FakeClock,
    assert_error,
    client_for,
    query,
    run_authsvc,
)
from pgserver import free_port
from servers import GunicornServer
from test_smtp import CODE_SUBJECT, SmtpServer, smtp_config, start_smtp
from werkzeug.test import Client, TestResponse

from authsvc import Config

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
NEW_PASSWORD = "n3w s3cret pw"
ELSEWHERE = {"REMOTE_ADDR": "192.0.2.10"}
FIXTURES = Path(__file__).parent / "fixtures"
ACCOUNT_ROUTES = [
    ("GET", "/account"),
    ("DELETE", "/account"),
    ("PUT", "/account/password"),
    ("PUT", "/account/email"),
    ("POST", "/account/verification"),
    ("PUT", "/account/verification"),
    ("POST", "/account/two_factor"),
    ("PUT", "/account/two_factor"),
    ("DELETE", "/account/two_factor"),
    ("POST", "/account/recovery_codes"),
]


@pytest.fixture
def bob(client: Client, actions: AuthActions) -> Client:
    """The test's client with Bob registered and logged in (it holds his cookie)."""
    assert actions.register(EMAIL, PASSWORD).status_code == 200
    assert actions.login(EMAIL, PASSWORD).status_code == 200
    return client


def rows(db: str, table: str) -> list[tuple]:
    return query(db, f"SELECT * FROM {table}")


def ask_code(client: Client, **kwargs: object) -> TestResponse:
    return client.post("/account/verification", **kwargs)


def confirm(client: Client, code: str, **fields: str) -> TestResponse:
    return client.put("/account/verification", data={"code": code, **fields})


# -- GET /account


def test_the_account_of_a_new_sign_up(bob: Client) -> None:
    answer = bob.get("/account")
    assert answer.status_code == 200
    body = answer.json
    assert body == {
        "email": EMAIL,
        "email_verified": False,
        "created_at": body["created_at"],
        "two_factor": False,
        "recovery_codes_left": 0,
        "passkeys": 0,
        "pending_email": None,
    }
    assert len(body["created_at"]) == 20 and body["created_at"].endswith("Z")
    assert bob.get("/profile").json == {"email": EMAIL}  # the course's, unchanged


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ROUTES)
def test_every_account_route_needs_a_live_session(
    client: Client, method: str, path: str
) -> None:
    data = {"password": PASSWORD, "new_password": NEW_PASSWORD, "code": "000000"}
    data |= {"new_email": "x@example.com"}
    cookie = {"HTTP_COOKIE": "session_id=not-a-session"}
    bare = Client(client.application, use_cookies=False)  # sends exactly that cookie
    answer = bare.open(path, method=method, data=data, environ_overrides=cookie)
    assert assert_error(answer, 403) == "no valid session"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Vary"] == "Cookie"


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ROUTES)
def test_every_account_answer_is_no_store_and_varies_by_cookie(
    bob: Client, method: str, path: str
) -> None:
    answer = bob.open(path, method=method, data={"password": "wrong"})
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Vary"] == "Cookie"


@pytest.mark.parametrize(
    ("method", "path"), [route for route in ACCOUNT_ROUTES if route[0] != "GET"]
)
def test_another_sites_page_cannot_change_the_account(
    bob: Client, config: Config, method: str, path: str
) -> None:
    before = {table: rows(config.db, table) for table in ("users", "sessions")}
    answer = bob.open(
        path,
        method=method,
        data={"password": PASSWORD, "new_password": NEW_PASSWORD, "code": "1"},
        headers={"Origin": "http://evil.example"},
    )
    assert assert_error(answer, 403) == "cross-site request refused"
    assert {table: rows(config.db, table) for table in ("users", "sessions")} == before


# -- re-authentication and the stolen cookie


def test_a_wrong_current_password_is_401_and_a_failed_login(bob: Client) -> None:
    answer = bob.put(
        "/account/password", data={"password": "guess", "new_password": NEW_PASSWORD}
    )
    assert assert_error(answer, 401) == "wrong password"
    assert answer.headers["WWW-Authenticate"].startswith("Cookie")


def test_a_stolen_cookie_cannot_be_used_to_guess_the_password(
    bob: Client, config: Config
) -> None:
    """Wrong current passwords count for the lock-out like failed logins: the eleventh
    is refused even when right; the owner, from elsewhere, still logs in."""
    for index in range(config.login_max_failures):
        guess = bob.delete("/account", data={"password": f"guess {index}"})
        assert guess.status_code == 401
    locked = bob.delete("/account", data={"password": PASSWORD})
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert bob.get("/account").status_code == 200  # not deleted
    owner = bob.post(
        "/sessions",
        data={"email": EMAIL, "password": PASSWORD},
        environ_base=ELSEWHERE,
    )
    assert owner.status_code == 200


# -- PUT /account/password


def test_a_password_change_ends_every_other_session_and_token(
    bob: Client, actions: AuthActions, config: Config
) -> None:
    other = client_for(config)
    AuthActions(other).login(EMAIL, PASSWORD)
    token = actions.reset_token(EMAIL)
    old_cookie = bob.get_cookie("session_id").value
    answer = bob.put(
        "/account/password", data={"password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert answer.status_code == 200
    assert answer.json == {"message": "password changed"}
    cookie = bob.get_cookie("session_id")
    assert cookie.value != old_cookie and cookie.http_only and cookie.same_site == "Lax"
    assert bob.get("/account").status_code == 200  # the caller's new session
    assert other.get("/account").status_code == 403  # every other one ended
    stale = Client(bob.application, use_cookies=False)
    gone = {"HTTP_COOKIE": f"session_id={old_cookie}"}
    assert stale.get("/profile", environ_overrides=gone).status_code == 403
    update = {"email": EMAIL, "reset_token": token, "new_password": "third pw"}
    assert bob.put("/reset_password", data=update).status_code == 403
    assert actions.login(EMAIL, PASSWORD).status_code == 401
    assert actions.login(EMAIL, NEW_PASSWORD).status_code == 200


def test_the_new_password_must_differ_and_pass_the_policy(
    bob: Client, config: Config
) -> None:
    same = bob.put(
        "/account/password", data={"password": PASSWORD, "new_password": PASSWORD}
    )
    assert assert_error(same, 400) == "new password must differ from the current one"
    strict = client_for(dataclasses.replace(config, password_min_length=15))
    AuthActions(strict).login(EMAIL, PASSWORD)
    weak = strict.put(
        "/account/password", data={"password": PASSWORD, "new_password": "short one"}
    )
    assert assert_error(weak, 400) == "password must be at least 15 characters"


# -- verification codes


def test_a_code_verifies_the_address_once(bob: Client) -> None:
    sent = ask_code(bob)
    assert sent.status_code == 200
    code = sent.json["verification_code"]
    assert sent.json == {"message": "verification code sent", "verification_code": code}
    assert len(code) == 6 and code.isdigit()
    assert confirm(bob, code).json == {"email": EMAIL, "message": "email verified"}
    assert bob.get("/account").json["email_verified"] is True
    assert assert_error(confirm(bob, code), 403) == "code is not valid"
    assert assert_error(ask_code(bob), 400) == "email is already verified"


def test_the_code_is_stored_only_as_a_keyed_hash(config: Config) -> None:
    key = "s" * 40
    client = client_for(dataclasses.replace(config, secret_key=key))
    AuthActions(client).register(EMAIL, PASSWORD)
    AuthActions(client).login(EMAIL, PASSWORD)
    code = ask_code(client).json["verification_code"]
    (stored,) = query(config.db, "SELECT digest FROM verification_codes")
    assert code not in str(stored)
    assert stored[0] != hashlib.sha256(f"1:{code}".encode()).hexdigest()


def test_the_fifth_wrong_try_ends_the_code(bob: Client) -> None:
    code = ask_code(bob).json["verification_code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert confirm(bob, wrong).status_code == 403
    assert confirm(bob, code).status_code == 403  # ended, even the right one


def test_four_wrong_tries_then_the_right_code_verifies(bob: Client) -> None:
    code = ask_code(bob).json["verification_code"]
    for _ in range(4):
        confirm(bob, "999999" if code != "999999" else "000000")
    assert confirm(bob, code).status_code == 200


def test_a_code_lives_an_hour(bob: Client, clock: FakeClock) -> None:
    code = ask_code(bob).json["verification_code"]
    clock.advance(60 * 60 + 1)
    assert confirm(bob, code).status_code == 403


def test_codes_are_sent_at_most_once_a_minute_and_five_an_hour(
    bob: Client, clock: FakeClock
) -> None:
    assert ask_code(bob).status_code == 200
    again = ask_code(bob)
    assert assert_error(again, 429).startswith("a code was sent less than a minute ago")
    assert 1 <= int(again.headers["Retry-After"]) <= 60
    for _ in range(4):
        clock.advance(61)
        assert ask_code(bob).status_code == 200
    clock.advance(61)
    sixth = ask_code(bob)
    assert assert_error(sixth, 429).startswith("too many codes sent in the last hour")
    waited = int(sixth.headers["Retry-After"])
    assert 60 * 60 - 5 * 61 - 1 <= waited <= 60 * 60 - 5 * 61 + 1
    clock.advance(waited)  # the hour from the first code has passed
    assert ask_code(bob).status_code == 200


def test_without_a_cookie_the_email_is_given(
    client: Client, actions: AuthActions
) -> None:
    """Someone who may not log in yet (a verified email required) still verifies."""
    actions.register(EMAIL, PASSWORD)
    sent = ask_code(client, data={"email": EMAIL})
    code = sent.json["verification_code"]
    assert confirm(client, code, email=EMAIL).json["message"] == "email verified"
    unknown = ask_code(client, data={"email": "nobody@example.com"})
    assert assert_error(unknown, 403) == "email not registered"
    assert assert_error(confirm(client, code, email="nobody@example.com"), 403)
    assert assert_error(ask_code(client), 400) == "email is required"


def test_a_verified_email_can_be_required_to_log_in(config: Config) -> None:
    client = client_for(dataclasses.replace(config, require_verified_email=True))
    actions = AuthActions(client)
    actions.register(EMAIL, PASSWORD)
    wrong = actions.login(EMAIL, "wrong")
    assert assert_error(wrong, 401) == "wrong email or password"  # reveals nothing
    unverified = actions.login(EMAIL, PASSWORD)
    assert assert_error(unverified, 403) == "email not verified"
    assert "Set-Cookie" not in unverified.headers
    code = ask_code(client, data={"email": EMAIL}).json["verification_code"]
    confirm(client, code, email=EMAIL)
    assert actions.login(EMAIL, PASSWORD).status_code == 200


# -- PUT /account/email


def change_email(
    client: Client, new_email: str, password: str = PASSWORD
) -> TestResponse:
    return client.put(
        "/account/email", data={"password": password, "new_email": new_email}
    )


def test_the_email_changes_only_when_the_new_address_confirms(
    bob: Client, config: Config
) -> None:
    other = client_for(config)
    AuthActions(other).login(EMAIL, PASSWORD)
    asked = change_email(bob, "bob@new.example")
    assert asked.json["message"] == "confirm the new address"
    code = asked.json["verification_code"]
    account = bob.get("/account").json
    assert (account["email"], account["pending_email"]) == (EMAIL, "bob@new.example")
    assert AuthActions(other).login(EMAIL, PASSWORD).status_code == 200  # unchanged
    done = confirm(bob, code)
    assert done.json == {"email": "bob@new.example", "message": "email verified"}
    account = bob.get("/account").json
    assert account["email"] == "bob@new.example" and account["email_verified"] is True
    assert account["pending_email"] is None
    assert other.get("/account").status_code == 403  # other sessions ended
    assert AuthActions(other).login("bob@new.example", PASSWORD).status_code == 200
    assert AuthActions(other).login(EMAIL, PASSWORD).status_code == 401


def test_a_taken_address_is_refused_now_and_at_confirmation(
    bob: Client, config: Config
) -> None:
    AuthActions(client_for(config)).register("taken@example.com", "pw")
    assert assert_error(change_email(bob, "TAKEN@example.com"), 400) == (
        "email already registered"
    )
    code = change_email(bob, "free@example.com").json["verification_code"]
    AuthActions(client_for(config)).register("free@example.com", "pw")  # meanwhile
    assert assert_error(confirm(bob, code), 400) == "email already registered"
    assert bob.get("/account").json["email"] == EMAIL


def test_a_bad_new_address_is_a_400(bob: Client) -> None:
    assert assert_error(change_email(bob, "not an address"), 400) == (
        "new_email is not a valid address"
    )


# -- DELETE /account


def test_deleting_the_account_removes_every_row_of_it(
    bob: Client, actions: AuthActions, config: Config
) -> None:
    actions.reset_token(EMAIL)
    ask_code(bob)
    AuthActions(client_for(config)).register("alice@example.com", "pw")
    wrong = bob.delete("/account", data={"password": "nope"})
    assert wrong.status_code == 401
    answer = bob.delete("/account", data={"password": PASSWORD})
    assert answer.json == {"message": "account deleted"}
    assert answer.headers["Set-Cookie"].startswith("session_id=; Expires=")
    assert [row[1] for row in rows(config.db, "users")] == ["alice@example.com"]
    for table in ("sessions", "reset_tokens", "verification_codes"):
        assert rows(config.db, table) == []
    assert bob.get("/account").status_code == 403
    assert actions.register(EMAIL, "again").status_code == 200  # the email is free


def test_the_operator_deletes_a_user(database_url: str) -> None:
    env = {"AUTHSVC_DB": database_url, "AUTHSVC_BCRYPT_ROUNDS": str(FAST_ROUNDS)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return run_authsvc(*args, env=env)

    client = client_for(Config(db=database_url, bcrypt_rounds=FAST_ROUNDS))
    AuthActions(client).register(EMAIL, PASSWORD)
    AuthActions(client).login(EMAIL, PASSWORD)
    deleted = run("delete-user", EMAIL)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "user 1 deleted"
    assert "event=account_delete outcome=ok user=1 client=cli" in deleted.stderr
    assert client.get("/account").status_code == 403
    assert (
        run("delete-user", EMAIL)
        .stderr.strip()
        .endswith(f"delete-user: no user has the email {EMAIL}")
    )


# -- smtp delivery: codes and notices by mail


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A plain SMTP server on loopback (aiosmtpd), stopped after the test."""
    server = start_smtp()
    yield server
    server.controller.stop()


def test_in_smtp_delivery_codes_and_notices_are_mailed(
    config: Config, smtp: SmtpServer, clock: FakeClock
) -> None:
    client = client_for(smtp_config(config, smtp.port), clock)
    actions = AuthActions(client)
    assert actions.register(EMAIL, PASSWORD).json == {
        "email": EMAIL,
        "message": "user created",
    }
    (sign_up,) = smtp.mailbox.codes  # mailed at once
    assert sign_up["To"] == EMAIL and sign_up["Subject"] == CODE_SUBJECT
    code = smtp.mailbox.code_for(EMAIL)
    assert confirm(client, code, email=EMAIL).status_code == 200
    actions.login(EMAIL, PASSWORD)
    clock.advance(61)  # one code a minute
    asked = change_email(client, "bob@new.example")
    assert asked.json == {"message": "confirm the new address"}  # no code in smtp
    confirm(client, smtp.mailbox.code_for("bob@new.example"))
    changed = [m for m in smtp.mailbox.messages if "email was changed" in m["Subject"]]
    assert [m["To"] for m in changed] == [EMAIL]  # the old address learns of it
    assert "bob@new.example" in changed[0].get_content()
    client.put(
        "/account/password", data={"password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    client.delete("/account", data={"password": NEW_PASSWORD})
    subjects = [m["Subject"] for m in smtp.mailbox.messages]
    assert subjects == [
        "Your authsvc email was changed",
        "Your authsvc password was changed",
        "Your authsvc account was deleted",
    ]
    for message in smtp.mailbox.messages:
        body = message.get_content()
        assert PASSWORD not in body and NEW_PASSWORD not in body
        assert not any(m.get_content() in body for m in smtp.mailbox.codes)


def test_in_smtp_delivery_the_cookieless_request_answers_alike(
    config: Config, smtp: SmtpServer
) -> None:
    client = client_for(smtp_config(config, smtp.port))
    AuthActions(client).register(EMAIL, PASSWORD)
    answers = [
        ask_code(client, data={"email": email}, environ_base={"REMOTE_ADDR": address})
        for email, address in (
            ("nobody@example.com", "192.0.2.1"),
            (EMAIL, "192.0.2.2"),
        )
    ]
    assert {(a.status_code, a.json["message"]) for a in answers} == {
        (200, "verification code sent")
    }
    assert all("verification_code" not in a.json for a in answers)
    assert [m["To"] for m in smtp.mailbox.codes] == [EMAIL]  # the sign-up's only:
    # the second request came within the minute; a minute later it would be mailed.


def test_in_smtp_delivery_a_failing_mail_server_tells_nobody_who_is_registered(
    config: Config, clock: FakeClock
) -> None:
    """Only a registered address gets a code mail, so a mail server that is down could
    tell the two apart: the cookieless request answers the usual 200 for both."""
    down = client_for(smtp_config(config, free_port()), clock)  # nothing listens
    assert AuthActions(down).register(EMAIL, PASSWORD).status_code == 200  # logged
    clock.advance(61)
    for email in (EMAIL, "nobody@example.com"):
        answer = ask_code(down, data={"email": email})
        assert (answer.status_code, answer.json) == (
            200,
            {"message": "verification code sent"},
        )


# -- an upgraded database


def test_accounts_of_the_previous_release_count_as_verified(tmp_path: Path) -> None:
    path = tmp_path / "release-3.db"
    shutil.copyfile(FIXTURES / "release-3.db", path)
    config = Config(
        db=str(path), bcrypt_rounds=FAST_ROUNDS, require_verified_email=True
    )
    client = client_for(config)
    login = AuthActions(client).login("dave@example.com", "dave-password")
    assert login.status_code == 200
    account = client.get("/account").json
    assert account["email_verified"] is True and account["created_at"].endswith("Z")
    assert query(str(path), "SELECT COUNT(*) FROM users WHERE email_verified = 0") == [
        (0,)
    ]


# -- races under gunicorn (2 workers x 4 threads)


def at_once(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Run the calls in threads released together; their answers, in order."""
    barrier = threading.Barrier(len(calls))
    answers: list[requests.Response | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return [answer for answer in answers if answer is not None]


def logged_in(url: str, email: str = EMAIL, password: str = PASSWORD) -> dict[str, str]:
    login = requests.post(
        f"{url}/sessions", data={"email": email, "password": password}, timeout=15
    )
    assert login.status_code == 200, login.text
    return {"session_id": login.cookies["session_id"]}


@pytest.fixture
def account_server(start_server: Callable[..., GunicornServer]) -> str:
    """A gunicorn on the defaults with Bob registered; its URL."""
    server = start_server()
    form = {"email": EMAIL, "password": PASSWORD}
    assert requests.post(f"{server.url}/users", data=form, timeout=15).ok
    return server.url


@pytest.mark.e2e
def test_two_confirmations_of_one_code_at_once_make_one_winner(
    account_server: str,
) -> None:
    cookies = logged_in(account_server)
    code = requests.post(
        f"{account_server}/account/verification", cookies=cookies, timeout=15
    ).json()["verification_code"]

    def use() -> requests.Response:
        return requests.put(
            f"{account_server}/account/verification",
            data={"code": code},
            cookies=cookies,
            headers={"Connection": "close"},
            timeout=15,
        )

    statuses = sorted(answer.status_code for answer in at_once([use] * 6))
    assert statuses == [200] + [403] * 5


@pytest.mark.e2e
def test_a_password_change_racing_logins_leaves_no_session_of_the_old_password(
    account_server: str,
) -> None:
    cookies = logged_in(account_server)

    def change() -> requests.Response:
        return requests.put(
            f"{account_server}/account/password",
            data={"password": PASSWORD, "new_password": NEW_PASSWORD},
            cookies=cookies,
            timeout=15,
        )

    def old_login() -> requests.Response:
        return requests.post(
            f"{account_server}/sessions",
            data={"email": EMAIL, "password": PASSWORD},
            headers={"Connection": "close"},
            timeout=15,
        )

    answers = at_once([change] + [old_login] * 5)
    assert answers[0].status_code == 200, answers[0].text
    assert all(answer.status_code in (200, 401) for answer in answers[1:]), [
        (answer.status_code, answer.text) for answer in answers
    ]
    for answer in answers[1:]:
        if answer.status_code == 200:  # logged in before the change: ended by it
            late = {"session_id": answer.cookies["session_id"]}
            assert (
                requests.get(
                    f"{account_server}/profile", cookies=late, timeout=15
                ).status_code
                == 403
            )
    assert (
        requests.post(
            f"{account_server}/sessions",
            data={"email": EMAIL, "password": PASSWORD},
            timeout=15,
        ).status_code
        == 401
    )


@pytest.mark.e2e
def test_a_deletion_racing_the_sessions_use_leaves_nothing_half_done(
    account_server: str, database_url: str
) -> None:
    cookies = logged_in(account_server)

    def delete() -> requests.Response:
        return requests.delete(
            f"{account_server}/account",
            data={"password": PASSWORD},
            cookies=cookies,
            timeout=15,
        )

    def use() -> requests.Response:
        return requests.put(
            f"{account_server}/account/email",
            data={"password": PASSWORD, "new_email": "late@example.com"},
            cookies=cookies,
            headers={"Connection": "close"},
            timeout=15,
        )

    answers = at_once([delete] + [use] * 4)
    assert answers[0].status_code == 200
    # Before the deletion: the code sent (200) or the one-a-minute limit (429); after
    # it: no session (403). Never a half-done change, never a 5xx.
    assert all(answer.status_code in (200, 403, 429) for answer in answers[1:]), [
        (answer.status_code, answer.text) for answer in answers
    ]
    for table in ("users", "sessions", "verification_codes"):
        assert query(database_url, f"SELECT COUNT(*) FROM {table}") == [(0,)]


# -- the bad-input matrix, for the account routes' fields

# (method, path, the fields a good request sends). The code is filled in per test.
BODY_ROUTES = {
    "change_password": (
        "PUT",
        "/account/password",
        {"password": PASSWORD, "new_password": NEW_PASSWORD},
    ),
    "change_email": (
        "PUT",
        "/account/email",
        {"password": PASSWORD, "new_email": "new@example.com"},
    ),
    "verify_email": ("PUT", "/account/verification", {"code": "CODE"}),
    "delete_account": ("DELETE", "/account", {"password": PASSWORD}),
}


def each_field(build: Callable[[dict, str], dict]) -> Callable[[dict], list[dict]]:
    """A case applied to each field of a route in turn."""
    return lambda fields: [build(fields, name) for name in fields]


BAD_INPUT: list[tuple[str, Callable[[dict], list[dict]], int]] = [
    ("no body", lambda f: [{}], 400),
    ("empty form", lambda f: [{"data": {}}], 400),
    (
        "a field missing",
        each_field(lambda f, n: {"data": {k: v for k, v in f.items() if k != n}}),
        400,
    ),
    ("a field empty", each_field(lambda f, n: {"data": {**f, n: ""}}), 400),
    ("a field blank", each_field(lambda f, n: {"data": {**f, n: " \t "}}), 400),
    (
        "a field of 10000 chars",
        each_field(lambda f, n: {"data": {**f, n: "x" * 10_000}}),
        400,
    ),
    (
        "a field sent twice, differently",
        each_field(
            lambda f, n: {
                "data": "&".join([*(f"{k}={v}" for k, v in f.items()), f"{n}=other"]),
                "content_type": "application/x-www-form-urlencoded",
            }
        ),
        400,
    ),
    (
        "a field not UTF-8",
        each_field(
            lambda f, n: {
                "data": f"{n}=%ff%fe".encode(),
                "content_type": "application/x-www-form-urlencoded",
            }
        ),
        400,
    ),
    ("a field a number in JSON", each_field(lambda f, n: {"json": {**f, n: 5}}), 400),
    ("a field null in JSON", each_field(lambda f, n: {"json": {**f, n: None}}), 400),
    ("JSON not an object", lambda f: [{"json": [f]}], 400),
    (
        "JSON that does not parse",
        lambda f: [{"data": b'{"a": ', "content_type": "application/json"}],
        400,
    ),
    (
        "another content type",
        lambda f: [{"data": b"x", "content_type": "text/plain"}],
        415,
    ),
    ("a body over 64 KiB", lambda f: [{"data": {**f, "pad": "x" * 70_000}}], 413),
    (
        "a password over bcrypt's 72 bytes",
        lambda f: [
            {"data": {**f, name: "é" * 37}}
            for name in ("password", "new_password")
            if name in f
        ],
        400,
    ),
    (
        "a new password holding a NUL",
        lambda f: (
            [{"data": {**f, "new_password": "a\0b"}}] if "new_password" in f else []
        ),
        400,
    ),
]


@pytest.mark.parametrize("route", list(BODY_ROUTES))
@pytest.mark.parametrize(
    ("case", "requests_of", "status"), BAD_INPUT, ids=[case[0] for case in BAD_INPUT]
)
def test_bad_input_to_an_account_route_is_a_4xx_and_changes_nothing(
    bob: Client,
    config: Config,
    route: str,
    case: str,
    requests_of: Callable[[dict], list[dict]],
    status: int,
) -> None:
    method, path, fields = BODY_ROUTES[route]
    fields = dict(fields)
    if "code" in fields:
        fields["code"] = ask_code(bob).json["verification_code"]
    tables = ("users", "sessions", "reset_tokens", "verification_codes")
    before = {table: rows(config.db, table) for table in tables}
    for request in requests_of(fields):
        answer = bob.open(path, method=method, **request)
        if case == "a field of 10000 chars" and answer.status_code == 401:
            continue  # a long password is checked, and wrong: a 401, still no change
        assert assert_error(answer, status), (case, request)
    assert {table: rows(config.db, table) for table in tables} == before
    assert bob.get("/account").status_code == 200


@pytest.mark.parametrize("route", list(BODY_ROUTES))
def test_the_good_request_of_each_account_route_works(bob: Client, route: str) -> None:
    method, path, fields = BODY_ROUTES[route]
    fields = dict(fields)
    if "code" in fields:
        fields["code"] = ask_code(bob).json["verification_code"]
    answer = bob.open(path, method=method, data=fields)
    assert answer.status_code == 200, answer.json
