"""Property-based: whatever the bytes of a request, no 5xx, no exception, and a 4xx changes nothing.

Hypothesis draws requests for every route: any method, header sets, `Cookie` headers of
any bytes, content types with parameters, and bodies of any bytes or near misses of each
encoding (urlencoded, multipart, JSON) built around the fields the routes read. Each is
sent in process to an app whose database holds a user with live sessions and a pending
reset token; an answer of 4xx must leave the accounts and sessions as they were.

The example budget keeps the suite within its time. For a longer run:

    AUTHSVC_TEST_HYPOTHESIS_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_properties.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_ROUNDS, FakeClock, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from authsvc import URL_MAP, Auth, AuthApp, Config

DOCS_TYPES = {"text/html", "text/css", "text/javascript", "image/png"}
EXAMPLES = int(os.environ.get("AUTHSVC_TEST_HYPOTHESIS_EXAMPLES", "300"))
EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
FIELDS = [
    "email",
    "password",
    "reset_token",
    "new_password",
    "code",
    "new_email",
    "mfa_token",
    "challenge_id",
    "credential",
    "name",
    "pad",
]
PATHS = [
    "/",
    "/users",
    "/sessions",
    "/sessions/others",
    "/sessions/0123456789abcdef",
    "/profile",
    "/reset_password",
    "/account/password_policy",
    "/account",
    "/account/password",
    "/account/email",
    "/account/verification",
    "/account/two_factor",
    "/account/recovery_codes",
    "/account/passkeys",
    "/account/passkeys/options",
    "/account/passkeys/0123456789abcdef",
    "/sessions/passkey",
    "/sessions/passkey/options",
    "/ui/signup",
    "/ui/login",
    "/ui/login/code",
    "/ui/logout",
    "/ui/reset",
    "/ui/reset/confirm",
    "/ui/verify",
    "/ui/account",
    "/ui/account/password",
    "/ui/style.css",
    "/auth/request",
    "/auth/forward",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]
# The routes that read a body: where most of the bytes below matter.
BODY_ROUTES = [
    ("POST", "/users"),
    ("POST", "/sessions"),
    ("POST", "/reset_password"),
    ("PUT", "/reset_password"),
    ("POST", "/account/two_factor"),
    ("PUT", "/account/two_factor"),
    ("DELETE", "/account/two_factor"),
    ("POST", "/account/recovery_codes"),
    ("POST", "/account/passkeys/options"),
    ("POST", "/account/passkeys"),
    ("PATCH", "/account/passkeys/0123456789abcdef"),
    ("DELETE", "/account/passkeys/0123456789abcdef"),
    ("POST", "/sessions/passkey/options"),
    ("POST", "/sessions/passkey"),
    ("POST", "/ui/signup"),
    ("POST", "/ui/login"),
    ("POST", "/ui/login/code"),
    ("POST", "/ui/reset/confirm"),
    ("POST", "/ui/verify"),
    ("POST", "/ui/account/password"),
    ("POST", "/ui/account/delete"),
]
# Every (method, path) of the service's URL map, a variable part filled in.
ROUTES = [
    (
        method,
        rule.rule.replace("<public_id>", "0123456789abcdef").replace(
            "<action>", "password"
        ),
    )
    for rule in URL_MAP.iter_rules()
    for method in sorted(rule.methods or ())
]


class Service:
    """One app for the whole module, seeded once; the state every example starts from."""

    def __init__(self, tmp: Path) -> None:
        """Bob registered, logged in twice, holding a reset token."""
        self.config = Config(db=str(tmp / "props.db"), bcrypt_rounds=FAST_ROUNDS)
        self.clock = FakeClock()
        self.auth = Auth(self.config, clock=self.clock)
        # No cookie jar: each example sends exactly the Cookie header it drew.
        self.client = Client(AuthApp(self.auth, self.config), use_cookies=False)
        self.auth.register_user(EMAIL, PASSWORD)
        self.session_id = self.auth.create_session(EMAIL)
        self.auth.create_session(EMAIL)
        self.reset_token = self.auth.get_reset_password_token(EMAIL)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The module's service (module-scoped: Hypothesis runs many examples per test)."""
    instance = Service(tmp_path_factory.mktemp("properties"))
    yield instance
    instance.auth.close()


# -- strategies


def latin1(data: bytes) -> str:
    """WSGI carries header bytes as the str that Latin-1 decodes them to."""
    return data.decode("latin-1")


header_bytes = st.binary(max_size=200).map(latin1)
field_values = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [EMAIL, PASSWORD, "", " ", "\x00", "p" * 73, "é" * 37, "' OR 1=1 --", "a@[b.c"]
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | field_values,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def urlencoded(draw: st.DrawFn) -> tuple[str, bytes]:
    """A form body, possibly with raw or broken percent-escapes spliced in."""
    pairs = draw(st.lists(st.tuples(st.sampled_from(FIELDS), field_values), max_size=5))
    from urllib.parse import urlencode

    body = urlencode(pairs).encode("utf-8", "surrogatepass")
    body += draw(st.sampled_from([b"", b"&email=%FF", b"&%", b"&=&&", b"\xff\xfe"]))
    return "application/x-www-form-urlencoded", body


@st.composite
def multipart(draw: st.DrawFn) -> tuple[str, bytes]:
    """A multipart body: parts of any bytes, sometimes a file, sometimes cut short."""
    boundary = draw(st.sampled_from(["xyz", "----b", "a b", ""]))
    parts = draw(
        st.lists(
            st.tuples(st.sampled_from(FIELDS), st.binary(max_size=40), st.booleans()),
            max_size=4,
        )
    )
    body = b""
    for name, value, is_file in parts:
        filename = b'; filename="f.txt"' if is_file else b""
        body += b'--%s\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n%s\r\n' % (
            boundary.encode(),
            name.encode(),
            filename,
            value,
        )
    body += draw(st.sampled_from([b"--%s--\r\n" % boundary.encode(), b"", b"--"]))
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
            ]
        )
    )
    return content_type, body


@st.composite
def json_body(draw: st.DrawFn) -> tuple[str, bytes]:
    """JSON of any shape, sometimes cut or nested very deeply."""
    text = json.dumps(draw(json_values))
    text = draw(
        st.sampled_from(
            [text, text[: len(text) // 2], "[" * 50_000, '{"email": "\\udcff"}']
        )
    )
    charset = draw(st.sampled_from(["", "; charset=utf-8", "; charset=latin-1"]))
    return f"application/json{charset}", text.encode("utf-8", "surrogatepass")


raw_body = st.tuples(
    st.one_of(header_bytes, st.sampled_from(["text/plain", "", "application/xml"])),
    st.binary(max_size=300),
)
bodies = st.one_of(urlencoded(), multipart(), json_body(), raw_body)


any_route = st.one_of(
    st.sampled_from(ROUTES),
    st.tuples(
        st.one_of(st.sampled_from(METHODS), st.text("ABCXYZ", min_size=1, max_size=8)),
        st.one_of(st.sampled_from(PATHS), st.text(max_size=30).map(lambda p: "/" + p)),
    ),
)
body_route = st.sampled_from(BODY_ROUTES)


@st.composite
def requests_(draw: st.DrawFn, routes: st.SearchStrategy) -> dict[str, Any]:
    """Keyword arguments for Client.open: method, path, headers, cookie and body."""
    method, path = draw(routes)
    content_type, body = draw(bodies)
    environ: dict[str, str] = {}
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    cookie = draw(
        st.one_of(
            st.none(),
            header_bytes,
            st.sampled_from(
                ["session_id=", "session_id=SESSION", "a=\xff; session_id=SESSION"]
            ),
        )
    )
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "HTTP_USER_AGENT",
                    "HTTP_ORIGIN",
                    "HTTP_ACCEPT",
                    "HTTP_X_FORWARDED_FOR",
                ]
            ),
            max_size=3,
        )
    ):
        environ[name] = draw(header_bytes)
    return {"method": method, "path": path, "data": body, "environ_overrides": environ}


# -- the property


def accounts(service: Service) -> dict[str, list[tuple]]:
    """What a refused request must not change: users and sessions, as stored."""
    return snapshot(service.config.db)


PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(request=requests_(body_route))
def test_no_body_gets_a_5xx_and_a_4xx_changes_nothing(
    service: Service, request: dict[str, Any]
) -> None:
    check(service, request)


@PROPERTY_SETTINGS
@given(request=requests_(any_route))
def test_no_request_gets_a_5xx_and_a_4xx_changes_nothing(
    service: Service, request: dict[str, Any]
) -> None:
    check(service, request)


def check(service: Service, request: dict[str, Any]) -> None:
    """Send `request`: never a 5xx, always JSON, and a 4xx leaves accounts as they were."""
    if service.auth.get_session(service.session_id) is None:  # an example logged out
        service.session_id = service.auth.create_session(EMAIL)
    environ = request["environ_overrides"]
    if "HTTP_COOKIE" in environ:
        environ["HTTP_COOKIE"] = environ["HTTP_COOKIE"].replace(
            "SESSION", service.session_id
        )
    before = accounts(service)
    response = service.client.open(
        request["path"],
        method=request["method"],
        data=request["data"],
        environ_overrides=environ,
    )
    body = response.get_data()
    response.close()  # a docs file's handle with it
    assert response.status_code < 500, body
    if request["method"] == "HEAD" or response.status_code == 304:
        pass  # no body, so no type to check
    elif request["path"].startswith("/docs") and response.status_code == 200:
        # The docs page and its files (openapi.json, test_openapi.py): never JSON.
        assert response.mimetype in DOCS_TYPES
    elif request["path"].startswith("/ui/") and response.status_code != 405:
        # The pages: HTML (or a 303 to the next one), the stylesheet CSS, the script.
        assert response.mimetype in ("text/html", "text/css", "text/javascript") or (
            response.status_code == 303 and response.headers["Location"]
        )
    else:
        assert response.headers["Content-Type"] == "application/json"
        json.loads(response.get_data())
    if 400 <= response.status_code < 500:
        assert accounts(service) == before
