"""Bad input, as SPEC lists it: a clear 4xx JSON error, never a 500, and no stored change.

Every route that reads a body is crossed with every kind of bad body. Before each request
the database holds a user with a live session and a live reset token; afterwards every row
must be exactly as it was.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import AuthActions
from werkzeug.test import Client

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"

# (method, path, the fields a good request sends). PUT's token is filled in per test.
ROUTES = {
    "register": ("POST", "/users", {"email": "new@example.com", "password": "pw"}),
    "login": ("POST", "/sessions", {"email": EMAIL, "password": PASSWORD}),
    "reset_token": ("POST", "/reset_password", {"email": EMAIL}),
    "update_password": (
        "PUT",
        "/reset_password",
        {"email": EMAIL, "reset_token": "TOKEN", "new_password": "n3w pw"},
    ),
}

Request = dict[str, Any]  # keyword arguments for Client.open


def form(fields: dict[str, str]) -> Request:
    """A urlencoded body."""
    return {"data": fields}


def raw(body: bytes, content_type: str) -> Request:
    """A body of exactly these bytes."""
    return {"data": body, "content_type": content_type}


def urlencoded(fields: dict[str, str]) -> bytes:
    """Encode fields by hand, so a test can splice in bytes a library would refuse."""
    from urllib.parse import urlencode

    return urlencode(fields).encode()


def multipart(parts: list[tuple[str, bytes]]) -> Request:
    """A multipart/form-data body from raw part values."""
    boundary = "----authsvc-test"
    body = b"".join(
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (boundary.encode(), name.encode(), value)
        for name, value in parts
    )
    body += b"--%s--\r\n" % boundary.encode()
    return raw(body, f"multipart/form-data; boundary={boundary}")


def with_field(fields: dict[str, str], name: str, value: Any) -> dict[str, Any]:
    """The fields with one value replaced."""
    return {**fields, name: value}


def without(fields: dict[str, str], name: str) -> dict[str, str]:
    """The fields with one left out."""
    return {key: value for key, value in fields.items() if key != name}


def first_field(fields: dict[str, str]) -> str:
    """The first field of a route (email for all four)."""
    return next(iter(fields))


def password_field(fields: dict[str, str]) -> str | None:
    """The route's password field, if it has one."""
    return next((name for name in ("password", "new_password") if name in fields), None)


# Each case: (id, build the request from the good fields, expected status, either one
# for every route or one per route). A builder returns None when the case does not
# apply to a route.
Case = tuple[str, Callable[[dict[str, str]], Request | None], int | dict[str, int]]

# SPEC: only registration checks an email's shape. The routes that look an email up
# answer an address nobody could have registered as they answer any unknown one.
NOT_AN_ADDRESS = {
    "register": 400,
    "login": 401,
    "reset_token": 403,
    "update_password": 403,
}

CASES: list[Case] = [
    # missing, empty, blank
    ("no body", lambda f: {}, 400),
    ("empty form", lambda f: form({}), 400),
    ("missing email", lambda f: form(without(f, "email")), 400),
    ("missing last field", lambda f: form(without(f, list(f)[-1])), 400),
    ("empty email", lambda f: form(with_field(f, "email", "")), 400),
    ("whitespace email", lambda f: form(with_field(f, "email", " \t ")), 400),
    ("empty last field", lambda f: form(with_field(f, list(f)[-1], "")), 400),
    ("whitespace last field", lambda f: form(with_field(f, list(f)[-1], "   ")), 400),
    # malformed email
    (
        "email without @",
        lambda f: form(with_field(f, "email", "bob.example.com")),
        NOT_AN_ADDRESS,
    ),
    (
        "email without domain",
        lambda f: form(with_field(f, "email", "bob@")),
        NOT_AN_ADDRESS,
    ),
    (
        "email without local part",
        lambda f: form(with_field(f, "email", "@example.com")),
        NOT_AN_ADDRESS,
    ),
    (
        "email with two @",
        lambda f: form(with_field(f, "email", "bob@@example.com")),
        NOT_AN_ADDRESS,
    ),
    (
        "email with a space",
        lambda f: form(with_field(f, "email", "bo b@example.com")),
        NOT_AN_ADDRESS,
    ),
    (
        "email with a NUL",
        lambda f: form(with_field(f, "email", "bob\x00@example.com")),
        NOT_AN_ADDRESS,
    ),
    (
        "email with a newline",
        lambda f: form(with_field(f, "email", "bob@example.com\nX: y")),
        NOT_AN_ADDRESS,
    ),
    (
        "email of 255 chars",
        lambda f: form(with_field(f, "email", "a" * 243 + "@example.com")),
        400,
    ),
    (
        "email of 10000 chars",
        lambda f: form(with_field(f, "email", "a" * 9988 + "@example.com")),
        400,
    ),
    (
        "sql in email",
        lambda f: form(with_field(f, "email", "' OR '1'='1")),
        NOT_AN_ADDRESS,
    ),
    (
        "sql comment in email",
        lambda f: form(with_field(f, "email", "x@x.io' --")),
        NOT_AN_ADDRESS,
    ),
    # an address registration refuses because the mailer would send elsewhere
    (
        "email that is two recipients",
        lambda f: form(with_field(f, "email", "a,b@c.io")),
        NOT_AN_ADDRESS,
    ),
    (
        "email that is a group",
        lambda f: form(with_field(f, "email", "a:b@c.io")),
        NOT_AN_ADDRESS,
    ),
    (
        "email the mailer cannot parse",
        lambda f: form(with_field(f, "email", "a@[b.c")),
        NOT_AN_ADDRESS,
    ),
    # passwords bcrypt cannot take
    (
        "password holding a NUL",
        lambda f: (
            password_field(f) and form(with_field(f, password_field(f), "pw\x00pw"))
        ),
        {"register": 400, "login": 401, "update_password": 400},
    ),
    (
        "password of 73 ascii bytes",
        lambda f: (
            password_field(f) and form(with_field(f, password_field(f), "p" * 73))
        ),
        400,
    ),
    (
        "password of 37 chars = 74 utf-8 bytes",
        lambda f: (
            password_field(f) and form(with_field(f, password_field(f), "é" * 37))
        ),
        400,
    ),
    (
        "token of 10000 chars",
        lambda f: (
            "reset_token" in f and form(with_field(f, "reset_token", "t" * 10000))
        ),
        400,
    ),
    # sent twice
    (
        "email twice, different values",
        lambda f: raw(
            urlencoded(f) + b"&email=other%40example.com",
            "application/x-www-form-urlencoded",
        ),
        400,
    ),
    (
        "json key twice, different values",
        lambda f: raw(
            json.dumps(f)[:-1].encode() + b', "email": "x@example.com"}',
            "application/json",
        ),
        400,
    ),
    # not UTF-8
    (
        "urlencoded %FF",
        lambda f: raw(
            urlencoded(without(f, "email")) + b"&email=%FF%FE%40example.com",
            "application/x-www-form-urlencoded",
        ),
        400,
    ),
    (
        "urlencoded raw 0xFF",
        lambda f: raw(
            b"email=\xff\xfe@example.com&" + urlencoded(without(f, "email")),
            "application/x-www-form-urlencoded",
        ),
        400,
    ),
    (
        "multipart 0xFF",
        lambda f: multipart(
            [("email", b"\xff\xfe@example.com")]
            + [(k, v.encode()) for k, v in without(f, "email").items()]
        ),
        400,
    ),
    (
        "json 0xFF",
        lambda f: raw(b'{"email": "\xff@example.com"}', "application/json"),
        400,
    ),
    (
        "json lone surrogate",
        lambda f: raw(
            json.dumps(with_field(f, "email", "\udcff@example.com")).encode(),
            "application/json",
        ),
        400,
    ),
    # JSON that is not an object of strings
    (
        "json array",
        lambda f: raw(json.dumps(list(f.items())).encode(), "application/json"),
        400,
    ),
    ("json string", lambda f: raw(b'"email=bob@example.com"', "application/json"), 400),
    ("json null", lambda f: raw(b"null", "application/json"), 400),
    ("json number", lambda f: raw(b"42", "application/json"), 400),
    ("json does not parse", lambda f: raw(b'{"email": ', "application/json"), 400),
    ("json empty body", lambda f: raw(b"", "application/json"), 400),
    (
        "json number value",
        lambda f: raw(
            json.dumps(with_field(f, "email", 42)).encode(), "application/json"
        ),
        400,
    ),
    (
        "json null value",
        lambda f: raw(
            json.dumps(with_field(f, "email", None)).encode(), "application/json"
        ),
        400,
    ),
    (
        "json list value",
        lambda f: raw(
            json.dumps(with_field(f, "email", [EMAIL])).encode(), "application/json"
        ),
        400,
    ),
    # size and type
    (
        "body over 64 KiB",
        lambda f: raw(
            urlencoded(with_field(f, "pad", "x" * 70_000)),
            "application/x-www-form-urlencoded",
        ),
        413,
    ),
    (
        "json over 64 KiB",
        lambda f: raw(
            json.dumps(with_field(f, "pad", "x" * 70_000)).encode(), "application/json"
        ),
        413,
    ),
    ("text/plain", lambda f: raw(urlencoded(f), "text/plain"), 415),
    (
        "application/xml",
        lambda f: raw(b"<email>bob@example.com</email>", "application/xml"),
        415,
    ),
    ("no content type, a body", lambda f: raw(urlencoded(f), ""), 415),
    (
        "multipart without boundary",
        lambda f: raw(urlencoded(f), "multipart/form-data"),
        400,
    ),
]


@pytest.fixture
def seeded(actions: AuthActions, client: Client) -> dict[str, str]:
    """Bob registered and logged in, holding a reset token; the good fields of each route."""
    assert actions.register(EMAIL, PASSWORD).status_code == 200
    assert actions.login(EMAIL, PASSWORD).status_code == 200
    token = actions.reset_token(EMAIL)
    good = {name: dict(fields) for name, (_, _, fields) in ROUTES.items()}
    good["update_password"]["reset_token"] = token
    return good


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize(
    ("case", "build", "status"), CASES, ids=[case[0] for case in CASES]
)
def test_bad_input_is_a_4xx_json_error_and_changes_nothing(
    client: Client,
    seeded: dict[str, str],
    db_state: Callable[[], dict[str, list[tuple]]],
    route: str,
    case: str,
    build: Callable[[dict[str, str]], Request | None],
    status: int,
) -> None:
    method, path, _ = ROUTES[route]
    request = build(seeded[route])
    if not request and request != {}:
        pytest.skip(f"{case} does not apply to {route}")
    before = db_state()
    response = client.open(path, method=method, **request)
    expected = status if isinstance(status, int) else status[route]
    assert response.status_code == expected, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    assert list(response.json) == ["message"]
    assert db_state() == before


@pytest.mark.parametrize("route", list(ROUTES))
def test_the_good_request_of_each_route_works(
    client: Client, seeded: dict[str, str], route: str
) -> None:
    """The matrix's baseline: without the damage, each request succeeds."""
    method, path, _ = ROUTES[route]
    response = client.open(path, method=method, data=seeded[route])
    assert response.status_code == 200, response.json


def test_a_missing_field_is_named(client: Client) -> None:
    response = client.post("/users", data={"email": EMAIL})
    assert response.json == {"message": "password is required"}


def test_a_long_password_gets_a_message_about_the_password(client: Client) -> None:
    response = client.post("/users", data={"email": EMAIL, "password": "p" * 73})
    assert response.status_code == 400
    assert (
        "password" in response.json["message"]
        and "72 bytes" in response.json["message"]
    )


def test_a_long_password_at_login_is_400_not_500(actions: AuthActions) -> None:
    actions.register()
    assert actions.login(EMAIL, "p" * 73).status_code == 400


def test_a_password_of_exactly_72_bytes_works(actions: AuthActions) -> None:
    password = "é" * 36  # 72 bytes
    assert actions.register(EMAIL, password).status_code == 200
    assert actions.login(EMAIL, password).status_code == 200


def test_a_field_sent_twice_with_the_same_value_is_fine(client: Client) -> None:
    body = b"email=bob%40example.com&email=bob%40example.com&password=pw"
    response = client.post(
        "/users", data=body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200


def test_unknown_fields_are_ignored(client: Client) -> None:
    response = client.post(
        "/users", data={"email": EMAIL, "password": "pw", "admin": "1"}
    )
    assert response.status_code == 200


def test_an_apostrophe_email_is_stored_literally(
    actions: AuthActions, db_rows: Callable[[], list[tuple]]
) -> None:
    email = "o'brien+tag@example.com"
    assert actions.register(email, "pw").status_code == 200
    assert db_rows()[0][1] == email
    assert actions.login(email, "pw").status_code == 200


def test_unicode_emails_and_passwords_work(
    actions: AuthActions, client: Client
) -> None:
    email, password = "josé.müller@exemple.fr", "mot de passe 🔑"
    response = client.post("/users", json={"email": email, "password": password})
    assert response.json == {"email": email, "message": "user created"}
    assert actions.login(email, password).status_code == 200
    assert client.get("/profile").json == {"email": email}


def test_surrounding_spaces_around_an_email_are_dropped(
    actions: AuthActions, client: Client
) -> None:
    assert actions.register(f"  {EMAIL} ", "pw").json == {
        "email": EMAIL,
        "message": "user created",
    }
    assert actions.login(EMAIL, "pw").status_code == 200


def test_a_password_keeps_its_spaces(actions: AuthActions) -> None:
    actions.register(EMAIL, " pw ")
    assert actions.login(EMAIL, "pw").status_code == 401
    assert actions.login(EMAIL, " pw ").status_code == 200


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded", "json"])
def test_a_real_replacement_character_in_a_password_works_in_every_encoding(
    client: Client, encoding: str
) -> None:
    """U+FFFD is a character like any other; only bytes that are not UTF-8 are refused."""
    email, password = f"{encoding}@example.com", "pass\ufffdword"
    fields = {"email": email, "password": password}
    if encoding == "multipart":
        request = multipart([(k, v.encode()) for k, v in fields.items()])
    elif encoding == "json":
        request = raw(json.dumps(fields).encode(), "application/json")
    else:
        request = raw(urlencoded(fields), "application/x-www-form-urlencoded")
    assert client.post("/users", **request).status_code == 200
    assert client.post("/sessions", **request).status_code == 200


def test_multipart_bytes_that_are_not_utf8_are_refused(client: Client) -> None:
    response = client.post(
        "/users", **multipart([("email", b"a@example.com"), ("password", b"pw\xff")])
    )
    assert response.status_code == 400
    assert response.json == {"message": "password is not valid UTF-8"}


@pytest.mark.parametrize("depth", [1_000, 60_000])
def test_json_nested_too_deeply_is_400(client: Client, depth: int) -> None:
    """60,000 "[" fit in 64 KiB and made the parser raise RecursionError (a 500)."""
    response = client.post("/users", data=b"[" * depth, content_type="application/json")
    assert response.status_code == 400
    assert response.json["message"] in {
        "request body is nested too deeply",
        "request body is not valid JSON",
    }


def test_a_multipart_file_part_is_not_a_field(client: Client) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\nf@example.com\r\n'
        b'--b\r\nContent-Disposition: form-data; name="password"; filename="p.txt"\r\n'
        b"\r\nsecret\r\n--b--\r\n"
    )
    response = client.post(
        "/users", data=body, content_type="multipart/form-data; boundary=b"
    )
    assert response.json == {"message": "password is required"}


def test_a_body_shorter_than_its_content_length_is_400(client: Client) -> None:
    response = client.post(
        "/users",
        input_stream=io.BytesIO(b"email=a%40b.io"),
        content_type="application/x-www-form-urlencoded",
        content_length=100,
    )
    assert response.status_code == 400
