"""SPEC "Pages": the /ui/ pages, at the HTTP level, on both backends.

Each page's status and headers (a strict Content-Security-Policy, no framing, no referrer,
no-store), its form's fields and labels, post/redirect/get, errors shown with the API's
status, escaping, `rd`, the cross-site refusal, the API's limits and audit lines, and the
panel ("What just happened"), which never holds a session id or a token. The browser's
run through the same pages is in test_browser.py.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Callable

import pytest
from conftest import FakeClock, client_for, query
from werkzeug.test import Client, TestResponse

from authsvc import Config
from factors import code_at, time_step

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
NEW_PASSWORD = "n3w s3cret pw"
GET_PAGES = [
    "/ui/signup",
    "/ui/login",
    "/ui/reset",
    "/ui/reset/confirm",
    "/ui/verify",
]
UUID4 = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
)


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def panel(response: TestResponse) -> list[str]:
    """The panel's lines: what was sent and answered (the `<code>` of each item)."""
    part = text(response).split('<aside class="panel"', 1)[1]
    return [
        html.unescape(line) for line in re.findall(r"<li><code>([^<]*)</code>", part)
    ]


def sign_up(client: Client, email: str = EMAIL, **query_string: str) -> TestResponse:
    return client.post(
        "/ui/signup",
        data={"email": email, "password": PASSWORD},
        query_string=query_string,
    )


@pytest.fixture
def bob(client: Client) -> Client:
    """A browser-like client (it keeps cookies) with Bob signed up through the page."""
    assert sign_up(client).status_code == 303
    return client


def assert_page_headers(response: TestResponse) -> None:
    """What every page carries."""
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    # Scripts: the service's own files only (the passkey ceremonies), never inline.
    assert "script-src 'self';" in csp and "unsafe-" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def labelled_fields(page: str) -> None:
    """Every visible field has a label naming it (`for` its id)."""
    labels = set(re.findall(r'<label for="([^"]+)"', page))
    for tag in re.findall(r"<input [^>]*>", page):
        if 'type="hidden"' in tag:
            continue
        (field_id,) = re.findall(r'id="([^"]+)"', tag)
        assert field_id in labels, tag


# -- every page


@pytest.mark.parametrize("path", GET_PAGES)
def test_every_page_is_html_with_strict_headers_and_labelled_fields(
    client: Client, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert_page_headers(response)
    page = text(response)
    # Nothing inline: the one script is a file of the service's own.
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.DOTALL)
    assert all(body == "" for body in scripts) and "style=" not in page
    assert re.findall(r"<script[^>]*>", page) in (
        [],
        ['<script src="/ui/passkeys.js" defer>'],
    )
    assert not re.search(r"<[^>]*\son[a-z]+=", page)  # no inline event handler
    assert '<link rel="stylesheet" href="/ui/style.css">' in page
    labelled_fields(page)
    assert panel(response)[0] == f"GET {path} HTTP/1.1"


def test_the_account_page_has_every_section_and_labels(bob: Client) -> None:
    response = bob.get("/ui/account")
    assert response.status_code == 200
    assert_page_headers(response)
    page = text(response)
    for action in (
        "verification",
        "verify",
        "password",
        "email",
        "two_factor",
        "end_session",
        "end_others",
        "delete",
    ):
        assert re.search(f'action="/ui/account/{action}["#]', page), action
    assert 'action="/ui/logout"' in page
    labelled_fields(page)


def test_the_stylesheet_is_one_small_file(client: Client) -> None:
    response = client.get("/ui/style.css")
    assert response.status_code == 200 and response.mimetype == "text/css"
    assert len(response.get_data()) < 8_000


def test_the_account_page_without_a_session_sends_to_the_login(client: Client) -> None:
    response = client.get("/ui/account")
    assert response.status_code == 303
    assert response.headers["Location"] == "/ui/login?rd=/ui/account"


# -- sign-up, login, logout: post/redirect/get and the cookie


def test_sign_up_logs_in_with_a_303_and_the_panel_tells_why(client: Client) -> None:
    response = sign_up(client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/ui/account"
    cookies = response.headers.getlist("Set-Cookie")
    session = next(c for c in cookies if c.startswith("session_id="))
    session_id = session.split("=", 1)[1].split(";")[0]
    assert "HttpOnly" in session and "SameSite=Lax" in session
    account = client.get("/ui/account")
    lines = panel(account)
    assert lines[:3] == [
        "HTTP/1.1 303 See Other",
        "Location: /ui/account",
        "Set-Cookie: session_id=…; HttpOnly; Path=/; SameSite=Lax",
    ]
    assert "Cookie: session_id=…" in lines
    page = text(account)
    assert session_id not in page
    assert "post/redirect/get" in page and "HttpOnly: the page" in page
    assert query(client.application.app.auth._config.db, "SELECT email FROM users") == [
        (EMAIL,)
    ]


def test_the_note_is_shown_once(bob: Client) -> None:
    assert panel(bob.get("/ui/account"))[0] == "HTTP/1.1 303 See Other"
    assert panel(bob.get("/ui/account"))[0] == "GET /ui/account HTTP/1.1"


def test_a_wrong_password_shows_the_form_again_with_the_apis_401(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    sign_up(client)
    client.post("/ui/logout")
    with caplog.at_level("INFO", logger="authsvc.audit"):
        response = client.post("/ui/login", data={"email": EMAIL, "password": "wrong"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Cookie ")
    page = text(response)
    assert "wrong email or password" in page
    assert f'value="{EMAIL}"' in page  # the email typed, kept
    assert "wrong" not in re.findall(r'type="password"[^>]*>', page)[0]
    audit = [r.getMessage() for r in caplog.records if r.name == "authsvc.audit"]
    assert any("event=login outcome=failed" in line for line in audit)


def test_the_pages_are_under_the_apis_limits(client: Client, config: Config) -> None:
    sign_up(client)
    client.post("/ui/logout")
    for _ in range(config.login_max_failures):
        client.post("/ui/login", data={"email": EMAIL, "password": "wrong"})
    response = client.post("/ui/login", data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "too many failed logins" in text(response)


def test_logout_ends_the_session_and_clears_the_cookie(bob: Client) -> None:
    response = bob.post("/ui/logout")
    assert response.status_code == 303 and response.headers["Location"] == "/ui/login"
    assert any(
        c.startswith("session_id=;") and "Max-Age=0" in c
        for c in response.headers.getlist("Set-Cookie")
    )
    login = bob.get("/ui/login")  # the panel tells the 303 before it
    assert "Max-Age=0 and an Expires in 1970" in text(login)
    assert bob.get("/ui/account").status_code == 303


# -- escaping, rd, other sites


def test_what_a_user_typed_is_escaped(client: Client) -> None:
    evil = '"><script>alert(1)</script>@example.com'
    for path in ("/ui/login", "/ui/signup", "/ui/reset"):
        response = client.post(path, data={"email": evil, "password": PASSWORD})
        assert 400 <= response.status_code < 500, path
        page = text(response)
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page or evil not in page


def test_a_pending_address_is_shown_escaped(bob: Client) -> None:
    """An address that passes the shape check but holds markup-like characters."""
    address = "o'neil&co@example.com"
    answer = bob.post(
        "/ui/account/email", data={"password": PASSWORD, "new_email": address}
    )
    assert answer.status_code == 200
    page = text(bob.get("/ui/account"))
    assert "o&#39;neil&amp;co@example.com" in page


@pytest.mark.parametrize(
    ("rd", "location"),
    [
        ("/ui/account", "/ui/account"),
        ("/somewhere/else?x=1", "/somewhere/else?x=1"),
        ("http://localhost/own", "http://localhost/own"),  # the service's own origin
        ("https://app.example.com/home", "https://app.example.com/home"),  # allowed
        ("https://evil.example/", "/ui/account"),
        ("//evil.example/", "/ui/account"),
        ("/\\evil.example/", "/ui/account"),
        ("javascript:alert(1)", "/ui/account"),
        ("http://[evil.example/", "/ui/account"),  # urlsplit raises on it
        ("https://app.example.com.evil.example/", "/ui/account"),
    ],
)
def test_rd_sends_on_only_to_allowed_places(
    config: Config, clock: FakeClock, rd: str, location: str
) -> None:
    allowing = dataclasses.replace(config, allowed_origins=("https://app.example.com",))
    client = client_for(allowing, clock)
    response = sign_up(client, rd=rd)
    assert response.headers["Location"] == location
    client.post("/ui/logout")
    login = client.post(
        "/ui/login",
        data={"email": EMAIL, "password": PASSWORD},
        query_string={"rd": rd},
    )
    assert login.headers["Location"] == location


def test_another_sites_form_is_refused_and_changes_nothing(
    client: Client, config: Config
) -> None:
    for path in ("/ui/signup", "/ui/login"):
        response = client.post(
            path,
            data={"email": EMAIL, "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
        assert response.status_code == 403
        assert "cross-site request refused" in text(response)
    assert query(config.db, "SELECT COUNT(*) FROM users") == [(0,)]
    own = client.post(
        "/ui/signup",
        data={"email": EMAIL, "password": PASSWORD},
        headers={"Origin": "http://localhost"},
    )
    assert own.status_code == 303


# -- the account's forms


def test_verify_the_email_from_the_account_page(bob: Client) -> None:
    sent = bob.post("/ui/account/verification")
    assert sent.status_code == 200
    code = re.search(r'id="verification-code">(\d{6})<', text(sent)).group(1)
    verified = bob.post("/ui/account/verify", data={"code": code})
    assert verified.status_code == 303
    assert 'id="account-verified">yes<' in text(bob.get("/ui/account"))


def test_a_password_change_gives_a_new_cookie(bob: Client) -> None:
    wrong = bob.post(
        "/ui/account/password", data={"password": "nope", "new_password": NEW_PASSWORD}
    )
    assert wrong.status_code == 401 and 'id="error-password"' in text(wrong)
    changed = bob.post(
        "/ui/account/password",
        data={"password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 303
    assert any(
        c.startswith("session_id=") for c in changed.headers.getlist("Set-Cookie")
    )
    assert bob.get("/ui/account").status_code == 200


def test_two_factor_from_the_pages_and_the_code_page(
    bob: Client, config: Config, clock: FakeClock
) -> None:
    begun = bob.post("/ui/account/two_factor", data={"password": PASSWORD})
    page = text(begun)
    secret = re.search(r'id="totp-secret">([A-Z2-7]{32})<', page).group(1)
    assert 'src="data:image/svg+xml;base64,' in page and "<svg" not in page
    on = bob.post(
        "/ui/account/two_factor_confirm",
        data={"code": code_at(secret, time_step(clock()))},
    )
    codes = re.findall(r"<li><code>([a-z2-7]{4}(?:-[a-z2-7]{4}){5})</code>", text(on))
    assert len(codes) == 10
    assert "Recovery codes" not in text(bob.get("/ui/account"))  # shown once
    bob.post("/ui/logout")
    clock.advance(30)

    login = bob.post("/ui/login", data={"email": EMAIL, "password": PASSWORD})
    assert login.status_code == 303 and login.headers["Location"] == "/ui/login/code"
    token_cookie = next(
        c for c in login.headers.getlist("Set-Cookie") if c.startswith("ui_mfa_token=")
    )
    token = token_cookie.split("=", 1)[1].split(";")[0]
    assert "Path=/ui/login/code" in token_cookie and "HttpOnly" in token_cookie
    code_page = bob.get("/ui/login/code")
    assert code_page.status_code == 200 and token not in text(code_page)
    wrong = bob.post("/ui/login/code", data={"code": "000000"})
    assert wrong.status_code == 401 and "wrong two-factor code" in text(wrong)
    done = bob.post("/ui/login/code", data={"code": codes[0]})
    assert done.status_code == 303 and done.headers["Location"] == "/ui/account"
    account = text(bob.get("/ui/account"))
    assert "on, 9 recovery codes left" in account
    assert query(config.db, "SELECT COUNT(*) FROM mfa_tokens") == [(0,)]


def test_the_code_page_without_a_waiting_login_sends_to_the_login(
    client: Client,
) -> None:
    response = client.get("/ui/login/code")
    assert response.status_code == 303 and response.headers["Location"] == "/ui/login"


def test_ending_a_session_and_all_others(
    bob: Client, config: Config, clock: FakeClock
) -> None:
    laptop = client_for(config, clock)
    laptop.post("/ui/login", data={"email": EMAIL, "password": PASSWORD})
    phone = client_for(config, clock)
    phone.post("/ui/login", data={"email": EMAIL, "password": PASSWORD})
    ids = re.findall(
        r'name="public_id" value="([0-9a-f]{32})"', text(bob.get("/ui/account"))
    )
    assert len(ids) == 3
    current = query(config.db, "SELECT public_id FROM sessions ORDER BY id")[0][0]
    other = next(i for i in ids if i != current)
    ended = bob.post("/ui/account/end_session", data={"public_id": other})
    assert ended.status_code == 303
    assert bob.post("/ui/account/end_others").status_code == 303
    assert laptop.get("/ui/account").status_code == 303
    assert phone.get("/ui/account").status_code == 303
    assert bob.get("/ui/account").status_code == 200
    unknown = bob.post("/ui/account/end_session", data={"public_id": "0" * 32})
    assert unknown.status_code == 404


def test_deleting_the_account_from_its_page(bob: Client, config: Config) -> None:
    wrong = bob.post("/ui/account/delete", data={"password": "nope"})
    assert wrong.status_code == 401
    gone = bob.post("/ui/account/delete", data={"password": PASSWORD})
    assert gone.status_code == 303 and gone.headers["Location"] == "/ui/signup"
    assert query(config.db, "SELECT COUNT(*) FROM users") == [(0,)]


def test_reset_from_the_pages(bob: Client) -> None:
    bob.post("/ui/logout")
    asked = bob.post("/ui/reset", data={"email": EMAIL})
    assert asked.status_code == 200
    token = re.search(
        r'name="reset_token" required value="([^"]+)"', text(asked)
    ).group(1)
    done = bob.post(
        "/ui/reset/confirm",
        data={"email": EMAIL, "reset_token": token, "new_password": NEW_PASSWORD},
    )
    assert done.status_code == 303 and done.headers["Location"] == "/ui/login"
    again = bob.post(
        "/ui/reset/confirm",
        data={"email": EMAIL, "reset_token": token, "new_password": "x"},
    )
    assert again.status_code == 403 and "reset token is not valid" in text(again)


def test_verification_without_a_session(config: Config, clock: FakeClock) -> None:
    strict = dataclasses.replace(config, require_verified_email=True)
    client = client_for(strict, clock)
    signed_up = sign_up(client)
    assert signed_up.status_code == 303
    assert (
        signed_up.headers["Location"] == f"/ui/verify?email={EMAIL.replace('@', '%40')}"
    )
    sent = client.post("/ui/verify", data={"email": EMAIL})
    code = re.search(r'id="verification-code">(\d{6})<', text(sent)).group(1)
    verified = client.post("/ui/verify", data={"email": EMAIL, "code": code})
    assert verified.status_code == 303
    login = client.post("/ui/login", data={"email": EMAIL, "password": PASSWORD})
    assert login.status_code == 303 and login.headers["Location"] == "/ui/account"


# -- no secret in any page's panel, and bad input changes nothing


def test_no_page_holds_a_session_id_or_a_token(
    bob: Client, config: Config, clock: FakeClock
) -> None:
    pages = [bob.get(path) for path in [*GET_PAGES, "/ui/account"]]
    pages.append(
        bob.post(
            "/ui/account/password",
            data={"password": PASSWORD, "new_password": NEW_PASSWORD},
        )
    )
    pages.append(bob.get("/ui/account"))
    for response in pages:
        assert not UUID4.search(text(response)), response.request.path


# (path, the fields of a good request)
POST_PAGES: dict[str, dict[str, str]] = {
    "/ui/login": {"email": EMAIL, "password": PASSWORD},
    "/ui/signup": {"email": "new@example.com", "password": PASSWORD},
    "/ui/reset/confirm": {"email": EMAIL, "reset_token": "x" * 36, "new_password": "n"},
    "/ui/account/password": {"password": PASSWORD, "new_password": NEW_PASSWORD},
    "/ui/account/delete": {"password": PASSWORD},
}
BAD_BODIES: list[tuple[str, Callable[[dict[str, str]], dict]]] = [
    ("no body", lambda f: {}),
    ("a field missing", lambda f: {"data": dict(list(f.items())[1:])}),
    ("a field blank", lambda f: {"data": {**f, next(iter(f)): "  "}}),
    ("a field of 10000 chars", lambda f: {"data": {**f, next(iter(f)): "x" * 10_000}}),
    (
        "not UTF-8",
        lambda f: {
            "data": b"email=%ff%fe&password=%ff",
            "content_type": "application/x-www-form-urlencoded",
        },
    ),
    ("JSON not an object", lambda f: {"json": [f]}),
    ("another content type", lambda f: {"data": b"x", "content_type": "text/plain"}),
    ("a body over 64 KiB", lambda f: {"data": {**f, "pad": "x" * 70_000}}),
]


@pytest.mark.parametrize("path", list(POST_PAGES))
@pytest.mark.parametrize(
    ("case", "build"), BAD_BODIES, ids=[case for case, _ in BAD_BODIES]
)
def test_bad_input_to_a_page_is_a_4xx_page_and_changes_nothing(
    bob: Client,
    config: Config,
    path: str,
    case: str,
    build: Callable[[dict[str, str]], dict],
) -> None:
    tables = ("users", "sessions", "reset_tokens", "two_factor")
    before = {t: query(config.db, f"SELECT * FROM {t} ORDER BY 1") for t in tables}
    response = bob.post(path, **build(POST_PAGES[path]))
    assert 400 <= response.status_code < 500, (case, response.status_code)
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert {
        t: query(config.db, f"SELECT * FROM {t} ORDER BY 1") for t in tables
    } == before
