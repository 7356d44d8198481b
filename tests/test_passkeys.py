"""SPEC "Passkeys (WebAuthn)", clause by clause, with a software authenticator.

In process on both backends with the fake clock: registration (re-authenticated), the
list, renaming, removal (re-authenticated), the passwordless login and its session; and
each way a ceremony must fail: another origin, another RP id, a replayed, expired or
other user's challenge, one made for the other ceremony, a counter that goes back, an
unknown credential, a user handle of someone else, no user verification, the 10-passkey
limit, a credential registered twice. `softauthn.SoftPasskey` builds what an
authenticator and a browser would send; the real browser's run is in test_browser.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pgserver
import pytest
import requests
from conftest import (
    FakeClock,
    assert_error,
    client_for,
    postgres_database_of_release,
    query,
    run_authsvc,
)
from servers import GunicornServer
from softauthn import USER_PRESENT, SoftPasskey, b64url, unb64url
from test_account import at_once
from werkzeug.test import Client, TestResponse

import store
from authsvc import Auth, Config
from factors import CHALLENGE_TTL, MAX_PASSKEYS, PASSKEY_LOGIN_REFUSED

EMAIL = "bob@example.com"
OTHER_EMAIL = "alice@example.com"
PASSWORD = "s3cret pw"
ORIGIN = "http://localhost"  # Werkzeug's test client's host: course mode's default


def register_and_log_in(client: Client, email: str = EMAIL) -> Client:
    assert (
        client.post("/users", data={"email": email, "password": PASSWORD}).status_code
        == 200
    )
    assert (
        client.post(
            "/sessions", data={"email": email, "password": PASSWORD}
        ).status_code
        == 200
    )
    return client


@pytest.fixture
def bob(client: Client) -> Client:
    """The test's client with Bob registered and logged in."""
    return register_and_log_in(client)


@pytest.fixture
def alice(config: Config, clock: FakeClock) -> Client:
    """Another user, on a client of her own."""
    return register_and_log_in(client_for(config, clock), OTHER_EMAIL)


def registration_options(
    client: Client, password: str = PASSWORD, **fields: str
) -> dict[str, Any]:
    answer = client.post(
        "/account/passkeys/options", json={"password": password, **fields}
    )
    assert answer.status_code == 200, answer.json
    return answer.json


def add(
    client: Client, key: SoftPasskey, name: str | None = "laptop", **bent: Any
) -> TestResponse:
    """Register `key` for the client's user: options, then the credential."""
    ceremony = registration_options(client)
    body: dict[str, Any] = {
        "challenge_id": ceremony["challenge_id"],
        "credential": key.create(ceremony["options"], **bent),
    }
    if name is not None:
        body["name"] = name
    return client.post("/account/passkeys", json=body)


@pytest.fixture
def key(bob: Client) -> SoftPasskey:
    """A passkey registered for Bob."""
    passkey = SoftPasskey()
    assert add(bob, passkey).status_code == 200
    return passkey


def login_options(client: Client) -> dict[str, Any]:
    answer = client.post("/sessions/passkey/options")
    assert answer.status_code == 200, answer.json
    return answer.json


def passkey_login(client: Client, key: SoftPasskey, **bent: Any) -> TestResponse:
    """Log in with `key`: options, then the signed assertion."""
    ceremony = login_options(client)
    return client.post(
        "/sessions/passkey",
        json={
            "challenge_id": ceremony["challenge_id"],
            "credential": key.get(ceremony["options"], **bent),
        },
    )


@pytest.fixture
def stranger(config: Config, clock: FakeClock) -> Client:
    """A client without any cookie: another device."""
    return client_for(config, clock)


def passkey_rows(config: Config) -> list[tuple]:
    return query(config.db, "SELECT * FROM passkeys ORDER BY id")


# -- registration


def test_the_options_ask_a_discoverable_user_verified_credential(bob: Client) -> None:
    answer = bob.post("/account/passkeys/options", json={"password": PASSWORD})
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert set(answer.json) == {"challenge_id", "options"}
    options = answer.json["options"]
    assert options["rp"] == {"id": "localhost", "name": "authsvc"}
    assert options["user"]["name"] == EMAIL
    assert EMAIL.encode() not in unb64url(options["user"]["id"])  # no personal data
    assert options["attestation"] == "none"
    assert options["timeout"] == CHALLENGE_TTL * 1000 == 300_000
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]
    assert len(options["challenge"]) >= 43  # 32 random bytes in base64url
    assert options["excludeCredentials"] == []


def test_a_passkey_is_registered_listed_and_counted(
    bob: Client, config: Config, clock: FakeClock
) -> None:
    key = SoftPasskey()
    added = add(bob, key, name="  work laptop  ")
    assert added.status_code == 200, added.json
    assert set(added.json) == {"id", "name", "created_at", "last_used_at"}
    assert added.json["name"] == "work laptop"
    listed = bob.get("/account/passkeys")
    assert listed.status_code == 200
    assert listed.headers["Cache-Control"] == "no-store"
    assert listed.json == {"passkeys": [added.json]}
    assert added.json["last_used_at"] is None
    assert bob.get("/account").json["passkeys"] == 1
    (row,) = passkey_rows(config)
    assert key.id in row and added.json["id"] in row
    # The next options leave this one out: the same authenticator is not asked twice.
    again = registration_options(bob)["options"]["excludeCredentials"]
    assert [entry["id"] for entry in again] == [key.id]
    unnamed = add(bob, SoftPasskey(), name=None)
    assert unnamed.json["name"] == "passkey"


def test_registration_asks_the_password_and_counts_wrong_ones(
    bob: Client, config: Config
) -> None:
    wrong = bob.post("/account/passkeys/options", json={"password": "wrong"})
    assert assert_error(wrong, 401) == "wrong password"
    assert "WWW-Authenticate" in wrong.headers
    assert query(config.db, "SELECT * FROM webauthn_challenges") == []
    nobody = client_for(config).post(
        "/account/passkeys/options", json={"password": PASSWORD}
    )
    assert assert_error(nobody, 403) == "no valid session"


def test_registration_asks_the_code_when_two_factor_is_on(
    bob: Client, clock: FakeClock
) -> None:
    from test_two_factor import code_now, turn_on

    secret, _ = turn_on(bob, clock)
    missing = bob.post("/account/passkeys/options", json={"password": PASSWORD})
    assert assert_error(missing, 401) == "two-factor code required"
    ceremony = registration_options(bob, code=code_now(secret, clock))
    assert "challenge_id" in ceremony


def refused_registration(client: Client, config: Config, **bent: Any) -> str:
    """Register a bent credential: the 400's message; no passkey stored."""
    answer = add(client, SoftPasskey(), **bent)
    message = assert_error(answer, 400)
    assert passkey_rows(config) == []
    return message


def test_a_credential_from_another_origin_is_refused(
    bob: Client, config: Config
) -> None:
    assert refused_registration(bob, config, origin="https://evil.example") == (
        "the passkey did not verify"
    )
    assert refused_registration(bob, config, origin="http://localhost.evil.example")


def test_a_credential_for_another_rp_id_is_refused(bob: Client, config: Config) -> None:
    assert refused_registration(bob, config, rp_id="evil.example") == (
        "the passkey did not verify"
    )


def test_a_credential_without_user_verification_is_refused(
    bob: Client, config: Config
) -> None:
    assert refused_registration(bob, config, flags=USER_PRESENT)


def test_a_registration_challenge_is_single_use(bob: Client, config: Config) -> None:
    ceremony = registration_options(bob)
    first = SoftPasskey().create(ceremony["options"])
    body = {"challenge_id": ceremony["challenge_id"], "credential": first}
    assert bob.post("/account/passkeys", json=body).status_code == 200
    again = {**body, "credential": SoftPasskey().create(ceremony["options"])}
    message = assert_error(bob.post("/account/passkeys", json=again), 400)
    assert message == "the challenge is not valid; ask for new options"
    assert len(passkey_rows(config)) == 1


def test_a_registration_challenge_lives_five_minutes(
    bob: Client, config: Config, clock: FakeClock
) -> None:
    for wait, status in ((CHALLENGE_TTL - 1, 200), (CHALLENGE_TTL, 400)):
        ceremony = registration_options(bob)
        clock.advance(wait)
        body = {
            "challenge_id": ceremony["challenge_id"],
            "credential": SoftPasskey().create(ceremony["options"]),
        }
        assert bob.post("/account/passkeys", json=body).status_code == status


def test_another_users_registration_challenge_is_refused(
    bob: Client, alice: Client, config: Config
) -> None:
    ceremony = registration_options(alice)
    body = {
        "challenge_id": ceremony["challenge_id"],
        "credential": SoftPasskey().create(ceremony["options"]),
    }
    message = assert_error(bob.post("/account/passkeys", json=body), 400)
    assert message == "the challenge is not valid; ask for new options"
    assert passkey_rows(config) == []
    # Bob's attempt did not spend it: it is still Alice's.
    assert alice.post("/account/passkeys", json=body).status_code == 200


def test_a_login_challenge_does_not_register_nor_a_registration_one_log_in(
    bob: Client, stranger: Client, config: Config
) -> None:
    login = login_options(stranger)
    options = {
        **registration_options(bob)["options"],
        "challenge": login["options"]["challenge"],
    }
    body = {
        "challenge_id": login["challenge_id"],
        "credential": SoftPasskey().create(options),
    }
    assert assert_error(bob.post("/account/passkeys", json=body), 400)
    key = SoftPasskey()
    assert add(bob, key).status_code == 200
    register = registration_options(bob)
    assertion = key.get({"challenge": register["options"]["challenge"]})
    answer = stranger.post(
        "/sessions/passkey",
        json={"challenge_id": register["challenge_id"], "credential": assertion},
    )
    assert assert_error(answer, 401) == PASSKEY_LOGIN_REFUSED


def test_a_credential_id_belongs_to_one_user(
    bob: Client, alice: Client, config: Config
) -> None:
    key = SoftPasskey()
    assert add(bob, key).status_code == 200
    copy = dataclasses.replace(key)
    message = assert_error(add(alice, copy), 400)
    assert message == "this passkey is already registered"
    assert len(passkey_rows(config)) == 1


def test_at_most_ten_passkeys(bob: Client, config: Config) -> None:
    for _ in range(MAX_PASSKEYS - 1):
        assert add(bob, SoftPasskey()).status_code == 200
    # Two ceremonies begun at nine: the first to finish is the tenth, the other refused.
    first, second = registration_options(bob), registration_options(bob)
    for ceremony, status in ((first, 200), (second, 400)):
        body = {
            "challenge_id": ceremony["challenge_id"],
            "credential": SoftPasskey().create(ceremony["options"]),
        }
        answer = bob.post("/account/passkeys", json=body)
        assert answer.status_code == status
    assert answer.json == {"message": "at most 10 passkeys"}
    refused = bob.post("/account/passkeys/options", json={"password": PASSWORD})
    assert refused.status_code == 400 and refused.json == {
        "message": "at most 10 passkeys"
    }
    assert len(passkey_rows(config)) == MAX_PASSKEYS == 10


def test_registrations_racing_at_the_limit_make_ten(
    bob: Client, config: Config, clock: FakeClock
) -> None:
    for _ in range(MAX_PASSKEYS - 2):
        assert add(bob, SoftPasskey()).status_code == 200
    ceremonies = [registration_options(bob) for _ in range(4)]
    cookie = bob.get_cookie("session_id").value
    statuses: list[int] = []
    barrier = threading.Barrier(len(ceremonies))

    def finish(ceremony: dict[str, Any]) -> None:
        own = client_for(config, clock)
        own.set_cookie("session_id", cookie)
        body = {
            "challenge_id": ceremony["challenge_id"],
            "credential": SoftPasskey().create(ceremony["options"]),
        }
        barrier.wait()
        statuses.append(own.post("/account/passkeys", json=body).status_code)

    threads = [threading.Thread(target=finish, args=(c,)) for c in ceremonies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200, 200, 400, 400]
    assert len(passkey_rows(config)) == MAX_PASSKEYS


# -- the passwordless login


def test_a_passkey_logs_in_without_password_into_a_listed_session(
    key: SoftPasskey,
    bob: Client,
    stranger: Client,
    config: Config,
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = login_options(stranger)["options"]
    assert "allowCredentials" not in options
    assert options["rpId"] == "localhost" and options["userVerification"] == "required"
    with caplog.at_level(logging.INFO, logger="authsvc.audit"):
        answer = passkey_login(stranger, key)
    assert answer.status_code == 200, answer.json
    assert answer.json == {"email": EMAIL, "message": "logged in"}
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert answer.headers["Cache-Control"] == "no-store"
    assert stranger.get("/profile").json == {"email": EMAIL}
    sessions = bob.get("/sessions").json["sessions"]
    assert len(sessions) == 2  # the password's and the passkey's
    (line,) = [
        r.getMessage() for r in caplog.records if "passkey_login" in r.getMessage()
    ]
    assert "outcome=ok" in line and "user=1" in line
    listed = bob.get("/account/passkeys").json["passkeys"][0]
    assert listed["last_used_at"] is not None
    (row,) = query(config.db, "SELECT sign_count FROM passkeys")
    assert row == (key.counter,) == (1,)


def test_a_passkey_is_a_whole_login_with_two_factor_on(
    key: SoftPasskey, bob: Client, stranger: Client, clock: FakeClock
) -> None:
    from test_two_factor import turn_on

    turn_on(bob, clock)
    answer = passkey_login(stranger, key)
    assert answer.status_code == 200 and "mfa_token" not in answer.json
    assert stranger.get("/account").json["two_factor"] is True


def refused_login(client: Client, key: SoftPasskey, **bent: Any) -> str:
    answer = passkey_login(client, key, **bent)
    message = assert_error(answer, 401)
    assert "WWW-Authenticate" in answer.headers
    assert "Set-Cookie" not in answer.headers
    return message


def test_every_login_that_does_not_verify_gets_one_401_message(
    key: SoftPasskey, bob: Client, stranger: Client, config: Config, clock: FakeClock
) -> None:
    assert passkey_login(client_for(config, clock), key).status_code == 200  # count 1
    messages = {
        "another origin": refused_login(stranger, key, origin="https://evil.example"),
        "another rp id": refused_login(stranger, key, rp_id="evil.example"),
        "no user verification": refused_login(stranger, key, flags=USER_PRESENT),
        "an unknown credential": refused_login(stranger, SoftPasskey()),
        "another user's handle": refused_login(stranger, key, user_handle=b"2"),
        "a counter that went back": refused_login(stranger, key, counter=0),
    }
    # A signature by another key over the right credential id.
    forged = dataclasses.replace(SoftPasskey(), credential_id=key.credential_id)
    messages["a forged signature"] = refused_login(stranger, forged)
    assert set(messages.values()) == {PASSKEY_LOGIN_REFUSED}
    assert stranger.get("/profile").status_code == 403
    assert len(bob.get("/sessions").json["sessions"]) == 2  # the password's, the first


def test_a_login_challenge_is_single_use(
    key: SoftPasskey, stranger: Client, config: Config
) -> None:
    ceremony = login_options(stranger)
    body = {
        "challenge_id": ceremony["challenge_id"],
        "credential": key.get(ceremony["options"]),
    }
    assert stranger.post("/sessions/passkey", json=body).status_code == 200
    replay = client_for(config).post("/sessions/passkey", json=body)
    assert assert_error(replay, 401) == PASSKEY_LOGIN_REFUSED
    fresh_counter = {**body, "credential": key.get(ceremony["options"])}
    assert (
        client_for(config).post("/sessions/passkey", json=fresh_counter).status_code
        == 401
    )


def test_a_login_challenge_lives_five_minutes(
    key: SoftPasskey, stranger: Client, clock: FakeClock
) -> None:
    for wait, status in ((CHALLENGE_TTL - 1, 200), (CHALLENGE_TTL, 401)):
        ceremony = login_options(stranger)
        clock.advance(wait)
        body = {
            "challenge_id": ceremony["challenge_id"],
            "credential": key.get(ceremony["options"]),
        }
        assert stranger.post("/sessions/passkey", json=body).status_code == status


def test_the_signature_counter_must_go_up_and_is_stored(
    key: SoftPasskey, stranger: Client, config: Config
) -> None:
    assert passkey_login(stranger, key, counter=5).status_code == 200
    assert query(config.db, "SELECT sign_count FROM passkeys") == [(5,)]
    assert refused_login(stranger, key, counter=5) == PASSKEY_LOGIN_REFUSED
    assert refused_login(stranger, key, counter=3) == PASSKEY_LOGIN_REFUSED
    assert query(config.db, "SELECT sign_count FROM passkeys") == [(5,)]
    assert passkey_login(stranger, key, counter=6).status_code == 200


def test_an_authenticator_that_never_counts_logs_in_each_time(
    bob: Client, stranger: Client
) -> None:
    """Many platform passkeys (synced ones) always send 0: WebAuthn says a counter of
    0 on both sides means the authenticator does not count, and is no clone."""
    key = SoftPasskey()
    assert add(bob, key).status_code == 200
    for _ in range(2):
        assert passkey_login(stranger, key, counter=0).status_code == 200


def test_two_logins_racing_with_one_assertion_make_one_session(
    key: SoftPasskey, bob: Client, config: Config, clock: FakeClock
) -> None:
    ceremony = login_options(bob)
    body = {
        "challenge_id": ceremony["challenge_id"],
        "credential": key.get(ceremony["options"]),
    }
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def log_in() -> None:
        own = client_for(config, clock)
        barrier.wait()
        statuses.append(own.post("/sessions/passkey", json=body).status_code)

    threads = [threading.Thread(target=log_in) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200, 401, 401, 401]
    assert len(bob.get("/sessions").json["sessions"]) == 2


def test_passkey_login_failures_count_per_client(
    database_url: str, clock: FakeClock
) -> None:
    config = Config(db=database_url, bcrypt_rounds=4, client_max_failures=3)
    client = register_and_log_in(client_for(config, clock))
    key = SoftPasskey()
    assert add(client, key).status_code == 200
    stranger = client_for(config, clock)
    assert passkey_login(stranger, key).status_code == 200  # a success is no failure
    for _ in range(3):
        assert passkey_login(stranger, SoftPasskey()).status_code == 401
    throttled = passkey_login(stranger, key)
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    clock.advance(config.login_window)
    assert passkey_login(stranger, key).status_code == 200


def test_the_login_options_count_as_logins_of_the_client(
    database_url: str, clock: FakeClock
) -> None:
    config = Config(db=database_url, bcrypt_rounds=4, client_max_logins=2)
    client = client_for(config, clock)
    assert client.post("/sessions/passkey/options").status_code == 200
    assert client.post("/sessions/passkey/options").status_code == 200
    refused = client.post("/sessions/passkey/options")
    assert refused.status_code == 429 and "Retry-After" in refused.headers


def test_an_unverified_email_does_not_log_in_where_verification_is_required(
    database_url: str, clock: FakeClock
) -> None:
    lax = Config(db=database_url, bcrypt_rounds=4)
    client = register_and_log_in(client_for(lax, clock))
    key = SoftPasskey()
    assert add(client, key).status_code == 200
    strict = dataclasses.replace(lax, require_verified_email=True)
    answer = passkey_login(client_for(strict, clock), key)
    assert assert_error(answer, 403) == "email not verified"


# -- rename, remove


def test_a_passkey_is_renamed_by_its_user_only(
    key: SoftPasskey, bob: Client, alice: Client
) -> None:
    (listed,) = bob.get("/account/passkeys").json["passkeys"]
    path = f"/account/passkeys/{listed['id']}"
    renamed = bob.patch(path, json={"name": "phone"})
    assert renamed.status_code == 200
    assert renamed.json == {**listed, "name": "phone"}
    assert (
        assert_error(alice.patch(path, json={"name": "mine"}), 404) == "no such passkey"
    )
    assert assert_error(bob.patch("/account/passkeys/nope", json={"name": "x"}), 404)
    for bad in ("x" * 65, "two\nlines", " "):
        assert bob.patch(path, json={"name": bad}).status_code == 400
    assert bob.get("/account/passkeys").json["passkeys"][0]["name"] == "phone"


def test_removing_a_passkey_asks_the_password_and_ends_its_logins(
    key: SoftPasskey, bob: Client, alice: Client, stranger: Client, config: Config
) -> None:
    (listed,) = bob.get("/account/passkeys").json["passkeys"]
    path = f"/account/passkeys/{listed['id']}"
    assert (
        assert_error(bob.delete(path, json={"password": "wrong"}), 401)
        == "wrong password"
    )
    assert assert_error(bob.delete(path, json={}), 400) == "password is required"
    assert assert_error(alice.delete(path, json={"password": PASSWORD}), 404)
    assert len(passkey_rows(config)) == 1
    removed = bob.delete(path, json={"password": PASSWORD})
    assert removed.status_code == 200 and removed.json == {"message": "passkey removed"}
    assert passkey_rows(config) == []
    assert bob.get("/account").json["passkeys"] == 0
    assert refused_login(stranger, key) == PASSKEY_LOGIN_REFUSED
    assert assert_error(bob.delete(path, json={"password": PASSWORD}), 404)


def test_deleting_the_account_deletes_its_passkeys_and_challenges(
    key: SoftPasskey, bob: Client, stranger: Client, config: Config
) -> None:
    registration_options(bob)  # a challenge left waiting
    deleted = bob.delete("/account", data={"password": PASSWORD})
    assert deleted.status_code == 200
    assert passkey_rows(config) == []
    assert query(config.db, "SELECT * FROM webauthn_challenges") == []
    assert refused_login(stranger, key) == PASSKEY_LOGIN_REFUSED


def test_the_operator_removes_passkeys_only_when_asked(
    key: SoftPasskey, bob: Client, config: Config
) -> None:
    env = {"AUTHSVC_DB": config.db}
    kept = run_authsvc("two-factor-off", EMAIL, env=env)
    assert kept.returncode == 0, kept.stderr
    assert len(passkey_rows(config)) == 1
    removed = run_authsvc("two-factor-off", "--passkeys", EMAIL, env=env)
    assert removed.returncode == 0, removed.stderr
    assert "1 passkey" in removed.stdout
    assert passkey_rows(config) == []
    assert "event=passkeys_off outcome=ok" in removed.stderr


# -- bad input: JSON only, and no credential shape is a 500


PASSKEY_POSTS = [
    ("POST", "/account/passkeys/options"),
    ("POST", "/account/passkeys"),
    ("PATCH", "/account/passkeys/x"),
    ("DELETE", "/account/passkeys/x"),
    ("POST", "/sessions/passkey/options"),
    ("POST", "/sessions/passkey"),
]


@pytest.mark.parametrize(("method", "path"), PASSKEY_POSTS)
@pytest.mark.parametrize(
    "body",
    [
        {"data": {"password": PASSWORD, "name": "x"}},
        {"data": "password=x", "content_type": "text/plain"},
        {
            "data": {"password": PASSWORD},
            "content_type": "multipart/form-data",
        },
    ],
    ids=["urlencoded", "text", "multipart"],
)
def test_the_passkey_routes_take_json_only(
    bob: Client, config: Config, method: str, path: str, body: dict
) -> None:
    before = query(config.db, "SELECT * FROM webauthn_challenges")
    answer = bob.open(path, method=method, **body)
    assert assert_error(answer, 415) == "send application/json"
    assert query(config.db, "SELECT * FROM webauthn_challenges") == before


def bent_credentials(good: dict[str, Any]) -> list[Any]:
    """Credentials no authenticator sends: every one must be refused, none a 500."""
    response = good["response"]
    return [
        None,
        "a string",
        [],
        {},
        {**good, "id": 5, "rawId": 5},
        {**good, "rawId": "!!not base64!!", "id": "!!"},
        {**good, "rawId": "", "id": ""},
        {**good, "rawId": "A" * 2000, "id": "A" * 2000},
        {**good, "type": "password"},
        {**good, "response": "nope"},
        {**good, "response": {}},
        {**good, "response": {**response, "clientDataJSON": "e30"}},  # {}
        {**good, "response": {**response, "clientDataJSON": b64url(b"not json")}},
        {**good, "response": {**response, "clientDataJSON": "\udcff"}},
        {**good, "response": {**response, "clientDataJSON": 7}},
        {
            **good,
            "response": {
                **response,
                "clientDataJSON": b64url(
                    json.dumps({"type": 1, "challenge": []}).encode()
                ),
            },
        },
        *(
            {**good, "response": {**response, field: value}}
            for field in response
            for value in ("", "AAAA", b64url(b"\xa1\x01\x02" * 40), None, {"a": 1})
        ),
    ]


def test_no_registration_credential_shape_is_a_500(bob: Client, config: Config) -> None:
    good = SoftPasskey().create(registration_options(bob)["options"])
    for credential in bent_credentials(good):
        ceremony = registration_options(bob)
        answer = bob.post(
            "/account/passkeys",
            json={"challenge_id": ceremony["challenge_id"], "credential": credential},
        )
        assert answer.status_code == 400, (credential, answer.json)
    assert passkey_rows(config) == []


def test_no_login_credential_shape_is_a_500(key: SoftPasskey, stranger: Client) -> None:
    good = key.get(login_options(stranger)["options"])
    for credential in bent_credentials(good):
        ceremony = login_options(stranger)
        answer = stranger.post(
            "/sessions/passkey",
            json={"challenge_id": ceremony["challenge_id"], "credential": credential},
        )
        expected = 401 if isinstance(credential, dict) else 400
        assert answer.status_code == expected, (credential, answer.json)
    assert stranger.get("/profile").status_code == 403


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "challenge_id is required"),
        ({"challenge_id": "x"}, "credential is required"),
        ({"challenge_id": "x" * 101, "credential": {}}, "challenge_id is not valid"),
        ({"challenge_id": 5, "credential": {}}, "challenge_id must be a string"),
        ({"challenge_id": "x", "credential": [1]}, "credential must be a JSON object"),
    ],
)
def test_a_login_missing_its_fields_is_a_400(
    stranger: Client, fields: dict, message: str
) -> None:
    assert assert_error(stranger.post("/sessions/passkey", json=fields), 400) == message


# -- settings


def test_configured_origins_are_the_only_ones_accepted(
    database_url: str, clock: FakeClock
) -> None:
    config = Config(
        db=database_url,
        bcrypt_rounds=4,
        webauthn_rp_id="localhost",
        webauthn_origins=("http://localhost:8000",),
    )
    client = register_and_log_in(client_for(config, clock))
    assert add(client, SoftPasskey(), origin="http://localhost:9000").status_code == 400
    key = SoftPasskey(origin="http://localhost:8000")
    assert add(client, key).status_code == 200
    assert passkey_login(client_for(config, clock), key).status_code == 200


def test_the_rp_id_is_the_configured_domain(
    database_url: str, clock: FakeClock
) -> None:
    config = Config(
        db=database_url,
        bcrypt_rounds=4,
        webauthn_rp_id="example.com",
        webauthn_origins=("https://auth.example.com",),
    )
    auth = Auth(config, clock=clock)
    try:
        assert auth.passkeys.rp_id == "example.com"
    finally:
        auth.close()
    client = client_for(config, clock)
    register_and_log_in(client)
    options = registration_options(client)["options"]
    assert options["rp"]["id"] == "example.com"
    key = SoftPasskey(rp_id="example.com", origin="https://auth.example.com")
    assert add(client, key).status_code == 200
    assert (
        add(client, SoftPasskey(origin="https://auth.example.com")).status_code == 400
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"AUTHSVC_WEBAUTHN_RP_ID": "https://example.com"},
        {"AUTHSVC_WEBAUTHN_RP_ID": "192.0.2.1"},
        {"AUTHSVC_WEBAUTHN_RP_ID": "example.com:443"},
        {"AUTHSVC_WEBAUTHN_ORIGINS": "https://example.com"},  # not on localhost
        {
            "AUTHSVC_WEBAUTHN_RP_ID": "example.com",
            "AUTHSVC_WEBAUTHN_ORIGINS": "http://auth.example.com",  # not https
        },
        {
            "AUTHSVC_WEBAUTHN_RP_ID": "example.com",
            "AUTHSVC_WEBAUTHN_ORIGINS": "https://example.com.evil.test",
        },
        {
            "AUTHSVC_WEBAUTHN_RP_ID": "example.com",
            "AUTHSVC_WEBAUTHN_ORIGINS": "https://auth.example.com/path",
        },
    ],
)
def test_bad_webauthn_settings_stop_the_start(settings: dict[str, str]) -> None:
    from config import ConfigError

    name = next(iter(settings)) if len(settings) == 1 else "AUTHSVC_WEBAUTHN_ORIGINS"
    with pytest.raises(ConfigError, match=f"^{name} "):
        Config.from_env(settings)


def test_webauthn_settings_are_read() -> None:
    config = Config.from_env(
        {
            "AUTHSVC_WEBAUTHN_RP_ID": "Example.COM",
            "AUTHSVC_WEBAUTHN_ORIGINS": "https://example.com, https://auth.example.com/",
        }
    )
    assert config.webauthn_rp_id == "example.com"
    assert config.webauthn_origins == (
        "https://example.com",
        "https://auth.example.com",
    )
    course = Config.from_env({})
    assert (course.webauthn_rp_id, course.webauthn_origins) == ("", ())


# -- the previous release's database


FIXTURES = Path(__file__).parent / "fixtures"


def test_the_previous_releases_database_upgrades_and_takes_passkeys(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "release-5.db"
    shutil.copyfile(FIXTURES / "release-5.db", path)
    made = json.loads((FIXTURES / "release-5.json").read_text())
    users_before = query(str(path), "SELECT id, email, hashed_password FROM users")
    config = Config(db=str(path), bcrypt_rounds=4, session_idle_ttl=0)
    for session_id in made["grace_sessions"]:  # logged in before: still logged in
        client = client_for(config, clock)
        client.set_cookie("session_id", session_id)
        account = client.get("/account").json
        assert (account["two_factor"], account["passkeys"]) == (True, 0)
    heidi = client_for(config, clock)
    heidi.set_cookie("session_id", made["heidi_session"])
    assert heidi.get("/profile").json == {"email": "heidi@example.com"}
    assert (
        query(str(path), "SELECT id, email, hashed_password FROM users") == users_before
    )
    assert store.Store(path).schema_version() == store.SCHEMA_VERSION == 11
    # Two-factor still asks its code; and the account now takes a passkey.
    grace = {"email": "grace@example.com", "password": "grace-password"}
    assert "mfa_token" in heidi.post("/sessions", data=grace).json
    code = made["grace_recovery_codes"][0]
    ceremony = registration_options(client, "grace-password", code=code)
    key = SoftPasskey()
    body = {
        "challenge_id": ceremony["challenge_id"],
        "credential": key.create(ceremony["options"]),
    }
    assert client.post("/account/passkeys", json=body).status_code == 200
    assert passkey_login(client_for(config, clock), key).json["email"] == grace["email"]


@pytest.mark.postgresql_only
def test_a_postgresql_database_of_the_previous_release_upgrades(
    backend: str, postgres: pgserver.PostgresServer, clock: FakeClock
) -> None:
    """Schema 10 on PostgreSQL (migrations 1 to 10), holding the fixture's users,
    sessions and two-factor rows; start-up applies migration 11, and every one stays
    logged in with two-factor on."""
    url = postgres_database_of_release(
        postgres,
        FIXTURES / "release-5.db",
        10,
        ("users", "sessions", "two_factor", "recovery_codes"),
    )
    try:
        made = json.loads((FIXTURES / "release-5.json").read_text())
        config = Config(db=url, bcrypt_rounds=4, session_idle_ttl=0)
        for session_id in made["grace_sessions"]:
            client = client_for(config, clock)
            client.set_cookie("session_id", session_id)
            assert client.get("/account").json["two_factor"] is True
        assert query(url, "SELECT version FROM authsvc_schema_version") == [(11,)]
        assert query(url, "SELECT COUNT(*) FROM users") == [(10,)]
        key = SoftPasskey()
        ceremony = registration_options(
            client, "grace-password", code=made["grace_recovery_codes"][0]
        )
        body = {
            "challenge_id": ceremony["challenge_id"],
            "credential": key.create(ceremony["options"]),
        }
        assert client.post("/account/passkeys", json=body).status_code == 200
        logged_in = passkey_login(client_for(config, clock), key)
        assert logged_in.status_code == 200, logged_in.json
    finally:
        store.close_all_pools()
        postgres.sql(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


# -- the bad-input matrix of the JSON-only routes

# (method, path, the fields of a request that gets past the body checks)
JSON_ROUTES = {
    "passkey_options": ("POST", "/account/passkeys/options", {"password": PASSWORD}),
    "add_passkey": (
        "POST",
        "/account/passkeys",
        {"challenge_id": "CHALLENGE", "credential": {"id": "x"}, "name": "laptop"},
    ),
    "rename_passkey": ("PATCH", "/account/passkeys/PASSKEY", {"name": "phone"}),
    "remove_passkey": ("DELETE", "/account/passkeys/PASSKEY", {"password": PASSWORD}),
    "passkey_login": (
        "POST",
        "/sessions/passkey",
        {"challenge_id": "CHALLENGE", "credential": {"id": "x"}},
    ),
}


def each(build: Callable[[dict, str], Any]) -> Callable[[dict], list[dict]]:
    """A case applied to each field of a route in turn."""
    return lambda fields: [{"json": build(fields, name)} for name in fields]


JSON_CASES: list[tuple[str, Callable[[dict], list[dict]], int]] = [
    ("no body", lambda f: [{}], 400),
    ("an empty object", lambda f: [{"json": {}}], 400),
    ("a field missing", each(lambda f, n: {k: v for k, v in f.items() if k != n}), 400),
    ("a field empty", each(lambda f, n: {**f, n: ""}), 400),
    ("a field blank", each(lambda f, n: {**f, n: " \t "}), 400),
    ("a field of 10000 chars", each(lambda f, n: {**f, n: "x" * 10_000}), 400),
    ("a field a number", each(lambda f, n: {**f, n: 5}), 400),
    ("a field null", each(lambda f, n: {**f, n: None}), 400),
    ("a field a list", each(lambda f, n: {**f, n: [f[n]]}), 400),
    ("a lone surrogate", each(lambda f, n: {**f, n: "\udcff"}), 400),
    ("JSON not an object", lambda f: [{"json": [f]}], 400),
    (
        "JSON that does not parse",
        lambda f: [{"data": b'{"a": ', "content_type": "application/json"}],
        400,
    ),
    (
        "a field sent twice, differently",
        lambda f: [
            {
                "data": json.dumps(f)[:-1].encode() + b', "%s": "other"}' % n.encode(),
                "content_type": "application/json",
            }
            for n in f
        ],
        400,
    ),
    ("a body over 64 KiB", lambda f: [{"json": {**f, "pad": "x" * 70_000}}], 413),
    ("a form body", lambda f: [{"data": {"x": "y"}}], 415),
    (
        "another content type",
        lambda f: [{"data": b"{}", "content_type": "text/plain"}],
        415,
    ),
]


@pytest.mark.parametrize("route", list(JSON_ROUTES))
@pytest.mark.parametrize(
    ("case", "requests_of", "status"), JSON_CASES, ids=[c[0] for c in JSON_CASES]
)
def test_bad_input_to_a_passkey_route_is_a_4xx_and_changes_nothing(
    key: SoftPasskey,
    bob: Client,
    config: Config,
    route: str,
    case: str,
    requests_of: Callable[[dict], list[dict]],
    status: int,
) -> None:
    method, path, fields = JSON_ROUTES[route]
    (listed,) = bob.get("/account/passkeys").json["passkeys"]
    path = path.replace("PASSKEY", listed["id"])
    tables = ("users", "sessions", "passkeys", "webauthn_challenges")
    before = {
        table: query(config.db, f"SELECT * FROM {table} ORDER BY 1") for table in tables
    }
    for request in requests_of(fields):
        answer = bob.open(path, method=method, **request)
        if answer.status_code == 415 and status == 415:
            continue
        assert answer.status_code == status, (case, request, answer.json)
        assert list(answer.json) == ["message"]
    after = {
        table: query(config.db, f"SELECT * FROM {table} ORDER BY 1") for table in tables
    }
    assert after == before
    assert bob.get("/account").status_code == 200


# -- the pages


def test_the_login_page_offers_a_passkey_through_its_one_script(client: Client) -> None:
    page = client.get("/ui/login?rd=/ui/account%23passkeys").get_data(as_text=True)
    assert '<button type="button" id="passkey-login" hidden>' in page  # until WebAuthn
    assert 'data-next="/ui/account#passkeys"' in page
    assert '<script src="/ui/passkeys.js" defer></script>' in page
    script = client.get("/ui/passkeys.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    body = script.get_data(as_text=True)
    for call in ("/sessions/passkey/options", "navigator.credentials.get", "toJSON"):
        assert call in body
    assert "eval(" not in body and "innerHTML" not in body
    foreign = client.get("/ui/login?rd=https://evil.example/").get_data(as_text=True)
    assert 'data-next="/ui/account"' in foreign  # the same rd rule as the form's


def test_the_account_page_lists_renames_and_removes_passkeys(
    key: SoftPasskey, bob: Client, config: Config
) -> None:
    (listed,) = bob.get("/account/passkeys").json["passkeys"]
    page = bob.get("/ui/account").get_data(as_text=True)
    assert 'id="account-passkeys">1<' in page and ">laptop</strong>" in page
    assert 'form id="passkey-add"' in page and 'data-passkey="add"' in page
    renamed = bob.post(
        "/ui/account/passkey_rename",
        data={"passkey_id": listed["id"], "name": '"><script>x</script>'},
    )
    assert renamed.status_code == 303
    page = bob.get("/ui/account").get_data(as_text=True)
    assert "&#34;&gt;&lt;script&gt;x&lt;/script&gt;" in page
    assert '"><script>x' not in page
    wrong = bob.post(
        "/ui/account/passkey_remove",
        data={"passkey_id": listed["id"], "password": "wrong"},
    )
    assert wrong.status_code == 401
    assert "wrong password" in wrong.get_data(as_text=True)
    assert len(passkey_rows(config)) == 1
    removed = bob.post(
        "/ui/account/passkey_remove",
        data={"passkey_id": listed["id"], "password": PASSWORD},
    )
    assert removed.status_code == 303 and removed.headers["Location"] == "/ui/account"
    assert passkey_rows(config) == []
    assert "No passkey yet." in bob.get("/ui/account").get_data(as_text=True)


def test_adding_a_passkey_without_the_script_says_it_needs_one(
    bob: Client, config: Config
) -> None:
    answer = bob.post("/ui/account/passkey_add", data={"password": PASSWORD})
    assert answer.status_code == 400
    assert "needs JavaScript" in answer.get_data(as_text=True)
    assert query(config.db, "SELECT * FROM webauthn_challenges") == []


# -- under gunicorn: two workers, one challenge


@pytest.mark.e2e
def test_one_assertion_sent_at_once_over_both_workers_logs_in_once(
    start_server: Callable[..., GunicornServer], database_url: str
) -> None:
    """On the defaults (2 gthread workers): six logins racing with one assertion on new
    connections make one session; the replays after it, on whichever worker, are
    refused; no challenge id or credential id reaches the log."""
    server = start_server()
    url = server.url
    form = {"email": EMAIL, "password": PASSWORD}
    assert requests.post(f"{url}/users", data=form, timeout=15).ok
    cookies = requests.post(f"{url}/sessions", data=form, timeout=15).cookies
    ceremony = requests.post(
        f"{url}/account/passkeys/options", json=form, cookies=cookies, timeout=15
    ).json()
    key = SoftPasskey()
    body = {
        "challenge_id": ceremony["challenge_id"],
        "credential": key.create(ceremony["options"]),
    }
    added = requests.post(
        f"{url}/account/passkeys", json=body, cookies=cookies, timeout=15
    )
    assert added.status_code == 200, added.text
    login = requests.post(f"{url}/sessions/passkey/options", timeout=15).json()
    assertion = {
        "challenge_id": login["challenge_id"],
        "credential": key.get(login["options"]),
    }

    def attempt() -> requests.Response:
        return requests.post(
            f"{url}/sessions/passkey",
            json=assertion,
            headers={"Connection": "close"},  # a new connection: any worker
            timeout=15,
        )

    answers = at_once([attempt] * 6)
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401, 401, 401]
    assert query(database_url, "SELECT COUNT(*) FROM sessions") == [(2,)]
    workers = set()
    for _ in range(40):  # replays, four at once, until both workers have refused one
        assert [a.status_code for a in at_once([attempt] * 4)] == [401] * 4
        workers = {
            line.split("] [")[0].rsplit("[", 1)[-1]
            for line in server.log().splitlines()
            if "event=passkey_login outcome=refused" in line
        }
        if len(workers) == 2:
            break
    assert len(workers) == 2, "one worker answered every replay"
    log = server.log()
    for secret in (ceremony["challenge_id"], login["challenge_id"], key.id):
        assert secret not in log


def test_the_walk_throughs_device_makes_and_signs_through_files(
    bob: Client, stranger: Client, tmp_path: Path
) -> None:
    """docs/passkeys.md's `python tests/softauthn.py create|get KEYFILE`: what the
    walk-through pipes between its curl commands works as it shows."""
    import subprocess
    import sys

    device = [sys.executable, str(Path(__file__).with_name("softauthn.py"))]
    keyfile = str(tmp_path / "laptop.json")

    def run(command: str, ceremony: dict) -> dict:
        done = subprocess.run(
            [*device, command, keyfile, ORIGIN],
            input=json.dumps(ceremony),
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout)

    body = run("create", registration_options(bob))
    assert bob.post("/account/passkeys", json=body).status_code == 200
    body = run("get", login_options(stranger))
    answer = stranger.post("/sessions/passkey", json=body)
    assert answer.json == {"email": EMAIL, "message": "logged in"}
    assert stranger.post("/sessions/passkey", json=body).status_code == 401


# -- the notices (smtp)


def test_adding_and_removing_a_passkey_are_mailed(
    config: Config, clock: FakeClock
) -> None:
    """A real SMTP server on loopback: a notice for each change, naming no key."""
    from test_smtp import smtp_config, start_smtp

    smtp = start_smtp()
    try:
        client = register_and_log_in(client_for(smtp_config(config, smtp.port), clock))
        key = SoftPasskey()
        added = add(client, key, name="work laptop")
        assert added.status_code == 200
        path = f"/account/passkeys/{added.json['id']}"
        assert client.delete(path, json={"password": PASSWORD}).status_code == 200
        subjects = [m["Subject"] for m in smtp.mailbox.messages]
        assert subjects == [
            "A passkey was added to your authsvc account",
            "A passkey was removed from your authsvc account",
        ]
        for message in smtp.mailbox.messages:
            body = message.get_content()
            assert message["To"] == EMAIL
            for text in (PASSWORD, key.id, added.json["id"], "work laptop"):
                assert text not in body
    finally:
        smtp.controller.stop()


def test_passkey_events_are_counted_by_outcome(
    config: Config, clock: FakeClock
) -> None:
    """The metrics count each passkey event as the audit line names it."""
    from test_metrics import figure, scrape

    client = register_and_log_in(
        client_for(dataclasses.replace(config, metrics=True), clock)
    )
    before = scrape(client)
    key = SoftPasskey()
    added = add(client, key)
    refused_registration_answer = add(
        client, SoftPasskey(), origin="https://evil.example"
    )
    assert (added.status_code, refused_registration_answer.status_code) == (200, 400)
    assert passkey_login(client, key).status_code == 200
    assert passkey_login(client, SoftPasskey()).status_code == 401
    path = f"/account/passkeys/{added.json['id']}"
    assert client.delete(path, json={"password": PASSWORD}).status_code == 200
    after = scrape(client)

    def moved(name: str, outcome: str) -> float:
        return figure(after, name, outcome=outcome) - figure(
            before, name, outcome=outcome
        )

    assert moved("authsvc_passkey_registrations_total", "ok") == 1
    assert moved("authsvc_passkey_registrations_total", "refused") == 1
    assert moved("authsvc_passkey_logins_total", "ok") == 1
    assert moved("authsvc_passkey_logins_total", "refused") == 1
    assert moved("authsvc_passkey_removals_total", "ok") == 1


def test_every_page_that_shows_the_login_form_renders_it(bob: Client) -> None:
    """The login form carries the passkey button's next page: a logout refused for its
    Origin shows that form too, and must render it (Hypothesis found a 500 here)."""
    refused = bob.post("/ui/logout", headers={"Origin": ""})
    assert refused.status_code == 403
    assert 'data-next="/ui/account"' in refused.get_data(as_text=True)
