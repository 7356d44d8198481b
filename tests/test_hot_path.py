"""The hand-written answers (authsvc.HotPath) are the Werkzeug path's, byte for byte.

`GET /`, `GET /profile` and `GET /auth/request` with a live session are answered without
Werkzeug's Request and Response (issue 25). Each request here is sent twice, to the same
app with the hot path on and off: the status, every header (names, values, order) and
the body must be the same. The answers the hot path declines (no session, an ended one,
a foreign original URL, a HEAD) go the Werkzeug way whichever is on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from authsvc import Auth, AuthApp, Config, cookie_in

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"


@pytest.fixture
def app_and_cookie(config: Config, clock: FakeClock) -> Iterator[tuple[AuthApp, str]]:
    """An app (no lint middleware: the bytes themselves are compared) and Bob's live
    session id."""
    auth = Auth(config, clock=clock)
    app = AuthApp(auth, config)
    auth.register_user(EMAIL, PASSWORD)
    session_id = auth.create_session(EMAIL)
    yield app, session_id
    auth.close()


def both_ways(app: AuthApp, **request: object) -> tuple[tuple, tuple]:
    """The answer to `request` with the hot path, then without it: (status, headers as
    sent, body) each."""
    answers = []
    for hot in (True, False):
        routes = app.hot.routes
        if not hot:
            app.hot.routes = {}
        try:
            response = Client(app, use_cookies=False).open(**request)
            answers.append(
                (response.status, list(response.headers.items()), response.get_data())
            )
        finally:
            app.hot.routes = routes
    return answers[0], answers[1]


LIVE = [
    {"path": "/"},
    {"path": "/", "query_string": "a=1"},
    {"path": "/profile"},
    {"path": "/profile", "headers": {"Accept": "text/html"}},
    {"path": "/auth/request"},
    {
        "path": "/auth/request",
        "headers": {"X-Original-URL": "http://localhost/app?q=1"},
    },
]


@pytest.mark.parametrize("request_of", LIVE, ids=lambda r: f"{r['path']} {sorted(r)}")
def test_the_hot_answers_are_the_werkzeug_answers(
    app_and_cookie: tuple[AuthApp, str], request_of: dict
) -> None:
    app, session_id = app_and_cookie
    headers = {
        **request_of.get("headers", {}),
        "Cookie": f"other=1; session_id={session_id}",
    }
    hot, werkzeug = both_ways(app, method="GET", **{**request_of, "headers": headers})
    assert hot == werkzeug
    assert hot[0] == "200 OK"


def test_the_hot_path_answers_them_itself(app_and_cookie: tuple[AuthApp, str]) -> None:
    """Not a test that cannot fail: the hot path does answer these (it is no decline)."""
    app, session_id = app_and_cookie
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/auth/request",
        "HTTP_COOKIE": f"session_id={session_id}",
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
    }
    endpoint, status, headers, body = app.hot.answer(environ)
    assert (endpoint, status, body) == (
        "auth_request",
        "200 OK",
        b'{"email": "bob@example.com"}',
    )
    assert ("Remote-Email", EMAIL) in headers and ("Vary", "Cookie") in headers


DECLINED = [
    {"method": "GET", "path": "/profile"},
    {"method": "GET", "path": "/profile", "headers": {"Cookie": "session_id=unknown"}},
    {"method": "GET", "path": "/auth/request"},
    {"method": "HEAD", "path": "/profile", "live": True},
    {
        "method": "GET",
        "path": "/auth/request",
        "live": True,
        "headers": {"X-Original-URL": "https://evil.example/"},
    },
    {"method": "POST", "path": "/profile", "live": True},
]


@pytest.mark.parametrize(
    "request_of", DECLINED, ids=lambda r: f"{r['method']} {r['path']} {sorted(r)}"
)
def test_what_the_hot_path_declines_is_answered_the_werkzeug_way(
    app_and_cookie: tuple[AuthApp, str], request_of: dict
) -> None:
    app, session_id = app_and_cookie
    request_of = dict(request_of)
    headers = dict(request_of.pop("headers", {}))
    if request_of.pop("live", False):
        headers["Cookie"] = f"session_id={session_id}"
    hot, werkzeug = both_ways(app, headers=headers, **request_of)
    assert hot == werkzeug
    assert hot[0][:3] != "200" or request_of["method"] == "HEAD"


def test_an_ended_session_is_declined(
    app_and_cookie: tuple[AuthApp, str], clock: FakeClock
) -> None:
    app, session_id = app_and_cookie
    clock.advance(2 * 86400)  # past the absolute lifetime
    hot, werkzeug = both_ways(
        app,
        method="GET",
        path="/profile",
        headers={"Cookie": f"session_id={session_id}"},
    )
    assert hot == werkzeug and hot[0] == "403 FORBIDDEN"


@settings(max_examples=2000, deadline=None)
@given(
    header=st.lists(
        st.one_of(
            st.sampled_from(["session_id", "session_id=", "a", "", " ", "\t", "="]),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
        ),
        max_size=6,
    ).map(lambda parts: ";".join(parts))
)
def test_the_cookie_is_read_as_werkzeugs_parser_reads_it(header: str) -> None:
    """The hot path's loop and Werkzeug's parse_cookie agree on every header, the
    ones the loop hands to the parser (quotes, backslashes) included."""
    from werkzeug.sansio.http import parse_cookie

    expected = parse_cookie(header).get("session_id")
    if expected is not None and not expected.isascii():
        expected = None
    assert cookie_in({"HTTP_COOKIE": header}, "session_id") == expected


@pytest.mark.parametrize("path", ["/profile", "/auth/request"])
def test_a_database_failing_under_the_check_is_the_same_503_asked_once(
    app_and_cookie: tuple[AuthApp, str], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The database going away under the hot path's check: the Werkzeug path's 503,
    after one wait for the database, not two (test_hosts.py's outage: within 10 s)."""
    from store import DatabaseUnavailable

    app, session_id = app_and_cookie
    calls = []

    def unavailable(session: str | None) -> None:
        calls.append(session)
        raise DatabaseUnavailable("the database does not answer")

    monkeypatch.setattr(app.auth, "get_session", unavailable)  # the Werkzeug path's
    monkeypatch.setattr(app.auth, "live_session_user", unavailable)  # the hot path's
    hot, werkzeug = both_ways(
        app, method="GET", path=path, headers={"Cookie": f"session_id={session_id}"}
    )
    assert hot == werkzeug
    assert hot[0] == "503 SERVICE UNAVAILABLE"
    assert len(calls) == 2  # one per request: each path asked once


def test_a_host_no_host_has_is_declined_to_the_werkzeug_path(
    app_and_cookie: tuple[AuthApp, str],
) -> None:
    app, session_id = app_and_cookie
    headers = {
        "Cookie": f"session_id={session_id}",
        "Host": "bad host\x7f",
        "X-Original-URL": "http://localhost/",
    }
    hot, werkzeug = both_ways(app, method="GET", path="/auth/request", headers=headers)
    assert hot == werkzeug and hot[0][:1] == "4"


@settings(max_examples=1000, deadline=None)
@given(email=st.text())
def test_the_hand_made_body_is_json_dumps_own(email: str) -> None:
    import json

    from authsvc import email_body

    assert email_body(email) == json.dumps({"email": email}).encode()
