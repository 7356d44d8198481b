"""The HTTP API in process (Werkzeug's test Client): every row of SPEC's route table.

Each test checks the status, the Content-Type, the JSON body and the headers that matter
(cookie attributes, Location, Allow, WWW-Authenticate, Vary).
"""

from __future__ import annotations

import pytest
from conftest import (
    AuthActions,
    FakeClock,
    assert_error,
    assert_json,
    client_for,
    write_lock_held,
)
from werkzeug.test import Client, TestResponse

import store
from authsvc import Config

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"


def set_cookie_headers(response: TestResponse) -> list[str]:
    """The raw Set-Cookie header lines of a response."""
    return response.headers.getlist("Set-Cookie")


# -- GET /


def test_index_says_bienvenue(client: Client) -> None:
    assert_json(client.get("/"), 200, {"message": "Bienvenue"})


# -- POST /users


def test_register_creates_a_user(actions: AuthActions) -> None:
    assert_json(actions.register(), 200, {"email": EMAIL, "message": "user created"})


def test_register_accepts_json_and_multipart(client: Client) -> None:
    response = client.post("/users", json={"email": "j@example.com", "password": "pw"})
    assert_json(response, 200, {"email": "j@example.com", "message": "user created"})
    multipart = {"email": "m@example.com", "password": "pw"}
    response = client.post("/users", data=multipart, content_type="multipart/form-data")
    assert_json(response, 200, {"email": "m@example.com", "message": "user created"})


def test_register_twice_says_email_already_registered(actions: AuthActions) -> None:
    actions.register()
    assert_json(
        actions.register(EMAIL.upper()), 400, {"message": "email already registered"}
    )


def test_register_sets_no_cookie(actions: AuthActions) -> None:
    assert set_cookie_headers(actions.register()) == []


# -- POST /sessions


def test_login_sets_a_hardened_session_cookie(
    actions: AuthActions, client: Client
) -> None:
    actions.register()
    response = actions.login()
    assert_json(response, 200, {"email": EMAIL, "message": "logged in"})
    (header,) = set_cookie_headers(response)
    assert header.startswith("session_id=")
    attributes = {part.strip() for part in header.split(";")[1:]}
    assert attributes == {"Path=/", "HttpOnly", "SameSite=Lax"}
    cookie = client.get_cookie("session_id")
    assert cookie.http_only and cookie.path == "/" and cookie.same_site == "Lax"
    assert not cookie.secure


def test_login_cookie_is_secure_when_configured(config: Config) -> None:
    secure = Config(db=config.db, bcrypt_rounds=4, cookie_secure=True)
    client = client_for(secure)
    actions = AuthActions(client)
    actions.register()
    (header,) = set_cookie_headers(actions.login())
    assert "; Secure" in header


def test_each_login_sets_a_new_session_id(actions: AuthActions, client: Client) -> None:
    actions.register()
    actions.login()
    first = client.get_cookie("session_id").value
    actions.login()
    assert client.get_cookie("session_id").value != first


@pytest.mark.parametrize(
    ("email", "password"),
    [(EMAIL, "wrong password"), ("nobody@example.com", PASSWORD)],
    ids=["wrong password", "unknown email"],
)
def test_login_failure_is_401_with_one_message(
    actions: AuthActions, email: str, password: str
) -> None:
    actions.register()
    response = actions.login(email, password)
    assert_json(response, 401, {"message": "wrong email or password"})
    assert response.headers["WWW-Authenticate"].startswith("Cookie realm=authsvc")
    assert set_cookie_headers(response) == []


def test_login_without_password_is_400(client: Client) -> None:
    assert "password" in assert_error(
        client.post("/sessions", data={"email": EMAIL}), 400
    )


# -- GET /profile


def test_profile_names_the_session_owner(actions: AuthActions, client: Client) -> None:
    actions.register()
    actions.login()
    response = client.get("/profile")
    assert_json(response, 200, {"email": EMAIL})
    assert "Cookie" in response.headers["Vary"]


def test_profile_shows_the_registered_spelling(
    actions: AuthActions, client: Client
) -> None:
    actions.register("Bob.Smith@Example.com")
    actions.login("bob.smith@example.com")
    assert_json(client.get("/profile"), 200, {"email": "Bob.Smith@Example.com"})


@pytest.mark.parametrize(
    "cookie", [None, "", "nope", "00000000-0000-4000-8000-000000000000"]
)
def test_profile_without_a_valid_session_is_403(
    client: Client, cookie: str | None
) -> None:
    if cookie is not None:
        client.set_cookie("session_id", cookie)
    response = client.get("/profile")
    assert_error(response, 403)
    assert "Cookie" in response.headers["Vary"]


def test_profile_after_the_session_expired_is_403(
    config: Config, clock: FakeClock
) -> None:
    client = client_for(config, clock)
    actions = AuthActions(client)
    actions.register()
    actions.login()
    clock.advance(config.session_ttl)
    assert_error(client.get("/profile"), 403)


def test_an_older_session_keeps_working_after_a_new_login(
    actions: AuthActions, client: Client
) -> None:
    """Several devices: a login elsewhere does not log this one out."""
    actions.register()
    actions.login()
    old = client.get_cookie("session_id").value
    actions.login()
    client.set_cookie("session_id", old)
    assert_json(client.get("/profile"), 200, {"email": EMAIL})


# -- DELETE /sessions


def test_logout_redirects_home_and_clears_the_cookie(
    actions: AuthActions, client: Client
) -> None:
    actions.register()
    actions.login()
    session_id = client.get_cookie("session_id").value
    response = client.delete("/sessions")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert response.headers["Content-Type"] == "application/json"
    assert "Cookie" in response.headers["Vary"]
    (header,) = set_cookie_headers(response)
    attributes = {part.strip() for part in header.split(";")}
    # Deleted with the same Path, HttpOnly and SameSite it was set with.
    assert {
        "session_id=",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=0",
    } <= attributes
    assert client.get_cookie("session_id") is None
    client.set_cookie("session_id", session_id)
    assert_error(client.get("/profile"), 403)


def test_logout_follows_to_bienvenue(actions: AuthActions, client: Client) -> None:
    actions.register()
    actions.login()
    response = client.delete("/sessions", follow_redirects=True)
    assert_json(response, 200, {"message": "Bienvenue"})


@pytest.mark.parametrize("cookie", [None, "nope"])
def test_logout_without_a_valid_session_is_403(
    client: Client, cookie: str | None
) -> None:
    if cookie is not None:
        client.set_cookie("session_id", cookie)
    assert_error(client.delete("/sessions"), 403)


# -- POST /reset_password


def test_reset_password_returns_a_token(actions: AuthActions, client: Client) -> None:
    actions.register()
    response = client.post("/reset_password", data={"email": EMAIL})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json["email"] == EMAIL
    assert len(response.json["reset_token"]) == 36


def test_reset_password_for_an_unknown_email_is_403(client: Client) -> None:
    assert_error(
        client.post("/reset_password", data={"email": "nobody@example.com"}), 403
    )


def test_reset_password_without_email_is_400(client: Client) -> None:
    assert "email" in assert_error(client.post("/reset_password", data={}), 400)


# -- PUT /reset_password


def update(
    client: Client, token: str, email: str = EMAIL, password: str = "n3w pw"
) -> TestResponse:
    """PUT /reset_password with a form body."""
    data = {"email": email, "reset_token": token, "new_password": password}
    return client.put("/reset_password", data=data)


def test_update_password_then_log_in_with_it(
    actions: AuthActions, client: Client
) -> None:
    actions.register()
    response = update(client, actions.reset_token())
    assert_json(response, 200, {"email": EMAIL, "message": "Password updated"})
    assert actions.login(EMAIL, "n3w pw").status_code == 200
    assert actions.login(EMAIL, PASSWORD).status_code == 401


def test_update_password_ends_the_session(actions: AuthActions, client: Client) -> None:
    actions.register()
    actions.login()
    update(client, actions.reset_token())
    assert_error(client.get("/profile"), 403)


def test_a_used_token_is_403(actions: AuthActions, client: Client) -> None:
    actions.register()
    token = actions.reset_token()
    update(client, token)
    assert_error(update(client, token, password="again"), 403)


def test_a_token_of_another_email_is_403(actions: AuthActions, client: Client) -> None:
    actions.register()
    actions.register("eve@example.com", "eve pw")
    assert_error(update(client, actions.reset_token(), email="eve@example.com"), 403)
    assert actions.login("eve@example.com", "eve pw").status_code == 200


def test_an_expired_token_is_403(config: Config, clock: FakeClock) -> None:
    client = client_for(config, clock)
    actions = AuthActions(client)
    actions.register()
    token = actions.reset_token()
    clock.advance(config.reset_ttl)
    assert_error(update(client, token), 403)


@pytest.mark.parametrize("missing", ["email", "reset_token", "new_password"])
def test_update_password_missing_field_is_400(
    actions: AuthActions, client: Client, missing: str
) -> None:
    actions.register()
    data = {"email": EMAIL, "reset_token": actions.reset_token(), "new_password": "pw"}
    del data[missing]
    assert missing in assert_error(client.put("/reset_password", data=data), 400)


# -- routing


@pytest.mark.parametrize(
    "path", ["/nope", "/users/", "/users/1", "/sessions/x/y", "/PROFILE"]
)
def test_unknown_paths_are_404(client: Client, path: str) -> None:
    assert_error(client.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/", {"GET", "HEAD"}),
        ("GET", "/users", {"POST"}),
        ("PUT", "/sessions", {"GET", "HEAD", "POST", "DELETE"}),
        ("GET", "/sessions/abc", {"DELETE"}),
        ("POST", "/sessions/others", {"DELETE"}),
        ("POST", "/profile", {"GET", "HEAD"}),
        ("DELETE", "/reset_password", {"POST", "PUT"}),
        ("GET", "/reset_password", {"POST", "PUT"}),
    ],
)
def test_wrong_method_is_405_with_allow(
    client: Client, method: str, path: str, allowed: set[str]
) -> None:
    response = client.open(path, method=method)
    assert_error(response, 405)
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed


def test_head_of_index_has_no_body(client: Client) -> None:
    response = client.head("/")
    assert response.status_code == 200
    assert response.get_data() == b""


def test_a_busy_database_is_503_not_500(
    actions: AuthActions,
    client: Client,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_SECONDS", 0.05)
    client.application.app.auth.close()  # reconnect with the short timeout
    with write_lock_held(config.db):  # e.g. a long bulk load in another process
        response = actions.register()
    assert_json(
        response, 503, {"message": "the service is busy; try again in a moment"}
    )
    assert actions.register().status_code == 200


# -- GET /health


def test_health_is_ok_when_the_database_answers(client: Client) -> None:
    response = client.get("/health")
    assert_json(response, 200, {"status": "ok"})
    assert response.headers["Cache-Control"] == "no-store"


def test_health_takes_only_get(client: Client) -> None:
    response = client.post("/health")
    assert_error(response, 405)
    assert {m.strip() for m in response.headers["Allow"].split(",")} == {"GET", "HEAD"}
