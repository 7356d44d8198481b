"""SPEC "Forward auth": authsvc protects other applications behind a reverse proxy.

In process on both backends: each route's answer for a live, ended, expired and absent
session; the headers of each proxy (nginx's X-Original-URL; Traefik's and Caddy's
X-Forwarded-*, Traefik's as its ForwardAuth documentation lists them); foreign and
malformed original URLs; browsers, XHRs and API clients; HEAD; the cookie's Domain.
Then for real: Debian's nginx and caddy on loopback, with docs/forward-auth.md's own
configurations, in front of a tiny application (tests/echo_app.py) and authsvc's pages;
headless Chromium opens the application, logs in, lands back on it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import echo_app
import proxies
import pytest
import requests
from conftest import AuthActions, FakeClock, client_for
from pgserver import free_port
from servers import GunicornServer
from test_browser import (
    browser,  # noqa: F401 - the fixture, through getfixturevalue
    console_errors,
    forget_cookies,
    on_page,
    submit,
)
from werkzeug.test import Client

from authsvc import Config
from config import ConfigError

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
APP = "https://app.example.com"
NGINX = {"X-Original-URL": f"{APP}/reports?year=2026"}
TRAEFIK = {  # what Traefik's ForwardAuth sends (its documentation's table)
    "X-Forwarded-Method": "GET",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "app.example.com",
    "X-Forwarded-Uri": "/reports?year=2026",
    "X-Forwarded-For": "192.0.2.7",
}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
RD = "rd=https%3A%2F%2Fapp.example.com%2Freports%3Fyear%3D2026"
LOGIN_WITH_RD = f"{APP}/ui/login?{RD}"  # on the application's host


@pytest.fixture
def guarded(config: Config, clock: FakeClock) -> Client:
    """A client of an app that allows the application's origin; Bob is registered."""
    client = client_for(dataclasses.replace(config, allowed_origins=(APP,)), clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    return client


def live(client: Client) -> None:
    assert AuthActions(client).login(EMAIL, PASSWORD).status_code == 200


# -- /auth/request (nginx)


def test_a_live_session_gets_200_with_the_user(guarded: Client) -> None:
    live(guarded)
    for path, headers in (("/auth/request", NGINX), ("/auth/forward", TRAEFIK)):
        answer = guarded.get(path, headers=headers)
        assert answer.status_code == 200
        assert answer.headers["Remote-User"] == "1"
        assert answer.headers["Remote-Email"] == EMAIL
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Vary"] == "Cookie"


def test_no_session_at_auth_request_is_401_naming_the_login_page(
    guarded: Client,
) -> None:
    answer = guarded.get("/auth/request", headers=NGINX)
    assert answer.status_code == 401
    assert answer.headers["Location"] == LOGIN_WITH_RD
    assert answer.headers["WWW-Authenticate"].startswith("Cookie ")
    assert "Remote-User" not in answer.headers and "Remote-Email" not in answer.headers
    assert guarded.get("/auth/request").headers["Location"] == "/ui/login"


def test_an_ended_and_an_expired_session_are_no_session(
    guarded: Client, clock: FakeClock, config: Config
) -> None:
    live(guarded)
    guarded.delete("/sessions")  # ended; the client drops the cookie: send it again
    assert guarded.get("/auth/request", headers=NGINX).status_code == 401
    live(guarded)
    clock.advance(config.session_idle_ttl + 1)
    assert guarded.get("/auth/request", headers=NGINX).status_code == 401
    assert guarded.get("/auth/forward", headers=TRAEFIK).status_code == 401


def test_a_check_counts_as_a_use_of_the_session(
    guarded: Client, clock: FakeClock, config: Config
) -> None:
    """Idle expiry: a user busy in the application stays logged in."""
    live(guarded)
    for _ in range(3):
        clock.advance(config.session_idle_ttl * 0.6)
        assert guarded.get("/auth/request", headers=NGINX).status_code == 200


@pytest.mark.parametrize(
    "original",
    [
        "https://evil.example/",
        "https://app.example.com.evil.example/",
        "https://user@app.example.com/",
        "//app.example.com/",
        "/relative",
        "javascript:alert(1)",
        "https://app.example.com\\@evil.example/",
        "https://app.example.com/" + "x" * 5000,
        "",
        "http://[::1/",  # urlsplit raises on it: Schemathesis found the 500
    ],
)
def test_a_foreign_or_malformed_original_url_is_refused(
    guarded: Client, original: str
) -> None:
    live(guarded)
    refused = guarded.get("/auth/request", headers={"X-Original-URL": original})
    assert refused.status_code == 403 and "Location" not in refused.headers
    host, _, uri = original.partition("://")[2].partition("/")
    forwarded = {
        **TRAEFIK,
        "X-Forwarded-Host": host or "evil.example",
        "X-Forwarded-Uri": "/" + uri,
    }
    if original.startswith("https://app.example.com/"):
        return  # the Traefik form of these is the application's own URL
    answer = guarded.get("/auth/forward", headers={**forwarded, **BROWSER})
    assert answer.status_code == 400 and "Location" not in answer.headers


# -- /auth/forward (Traefik, Caddy)


def test_a_browser_without_a_session_is_sent_to_log_in(guarded: Client) -> None:
    answer = guarded.get("/auth/forward", headers={**TRAEFIK, **BROWSER})
    assert answer.status_code == 302
    assert answer.headers["Location"] == LOGIN_WITH_RD
    posted = guarded.get(
        "/auth/forward", headers={**TRAEFIK, **BROWSER, "X-Forwarded-Method": "POST"}
    )
    assert posted.status_code == 303


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no Accept
        {"Accept": "*/*"},
        {"Accept": "application/json"},
        {**BROWSER, "X-Requested-With": "XMLHttpRequest"},
    ],
)
def test_an_api_client_or_script_without_a_session_gets_401(
    guarded: Client, headers: dict[str, str]
) -> None:
    answer = guarded.get("/auth/forward", headers={**TRAEFIK, **headers})
    assert answer.status_code == 401 and "Location" not in answer.headers


def test_head_answers_the_same_without_a_body(guarded: Client) -> None:
    for path, headers in (("/auth/request", NGINX), ("/auth/forward", TRAEFIK)):
        answer = guarded.head(path, headers=headers)
        assert answer.status_code == 401 and answer.get_data() == b""
    live(guarded)
    answer = guarded.head("/auth/request", headers=NGINX)
    assert answer.status_code == 200 and answer.get_data() == b""
    assert answer.headers["Remote-Email"] == EMAIL


def test_the_public_url_names_the_login_page(config: Config, clock: FakeClock) -> None:
    public = dataclasses.replace(
        config, allowed_origins=(APP,), public_url="https://auth.example.com"
    )
    answer = client_for(public, clock).get("/auth/request", headers=NGINX)
    assert answer.headers["Location"] == f"https://auth.example.com/ui/login?{RD}"
    own = client_for(public, clock).get(
        "/auth/request",
        headers={"X-Original-URL": "https://auth.example.com/ui/account"},
    )
    assert own.status_code == 401  # the service's own origin needs no listing


def test_after_login_the_browser_goes_back_to_the_original_url(guarded: Client) -> None:
    rd = "https://app.example.com/reports?year=2026"
    login = guarded.post(
        "/ui/login",
        data={"email": EMAIL, "password": PASSWORD},
        query_string={"rd": rd},
    )
    assert login.status_code == 303 and login.headers["Location"] == rd


# -- the cookie's Domain, and the settings


def test_a_cookie_domain_reaches_every_subdomain(config: Config) -> None:
    shared = dataclasses.replace(config, cookie_domain="example.com")
    client = client_for(shared)
    AuthActions(client).register(EMAIL, PASSWORD)
    login = client.post("/sessions", data={"email": EMAIL, "password": PASSWORD})
    assert "Domain=example.com" in login.headers["Set-Cookie"]
    logout = client.delete("/sessions", headers={"Host": "example.com"})
    assert "Domain=example.com" in logout.headers["Set-Cookie"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AUTHSVC_COOKIE_DOMAIN": "com."}, "AUTHSVC_COOKIE_DOMAIN must be a domain"),
        (
            {
                "AUTHSVC_COOKIE_DOMAIN": "example.com",
                "AUTHSVC_COOKIE_NAME": "__Host-session",
                "AUTHSVC_COOKIE_SECURE": "true",
            },
            "cannot go with AUTHSVC_COOKIE_NAME=__Host-session",
        ),
        (
            {"AUTHSVC_PUBLIC_URL": "https://auth.example.com/login"},
            "AUTHSVC_PUBLIC_URL must be",
        ),
        (
            {"AUTHSVC_PUBLIC_URL": "ftp://auth.example.com"},
            "AUTHSVC_PUBLIC_URL must be",
        ),
    ],
)
def test_the_settings_are_checked_at_start_up(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_env(environ)


def test_production_with_a_cookie_domain_names_the_cookie_secure() -> None:
    config = Config.from_env(
        {"AUTHSVC_MODE": "production", "AUTHSVC_COOKIE_DOMAIN": "example.com"},
        refuse_unsafe=False,
    )
    assert config.cookie_name == "__Secure-session"
    assert Config.from_env(
        {"AUTHSVC_PUBLIC_URL": "https://auth.example.com/"}
    ).public_url == ("https://auth.example.com")


# -- for real: nginx and caddy, Chromium through them

PROXIES = {"nginx": proxies.start_nginx, "caddy": proxies.start_caddy}


@pytest.fixture(params=list(PROXIES))
def protected(
    request: pytest.FixtureRequest,
    start_server: Callable[..., GunicornServer],
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    """The echo application behind a real proxy that asks authsvc: (the proxy's URL,
    authsvc's URL). Bob is registered."""
    program = request.param
    if proxies.missing(program):
        if os.environ.get("CI"):
            pytest.fail(
                f"the forward-auth tests must run under CI: {program} is missing"
            )
        pytest.skip(
            f"the forward-auth tests need Debian's {program} (apt-get install {program})"
        )
    proxy_port, app_port = free_port(), free_port()
    authsvc = start_server(
        env={
            "AUTHSVC_ALLOWED_ORIGINS": f"http://127.0.0.1:{proxy_port}",
            "AUTHSVC_TRUSTED_PROXIES": "1",
        }
    )
    form = {"email": EMAIL, "password": PASSWORD}
    assert requests.post(f"{authsvc.url}/users", data=form, timeout=15).ok
    app = echo_app.serve(app_port)
    authsvc_port = int(authsvc.url.rsplit(":", 1)[1])
    directory = tmp_path / program
    directory.mkdir()
    proxy = PROXIES[program](directory, proxy_port, authsvc_port, app_port)
    echo_app.RECEIVED.clear()
    yield proxy.url, authsvc.url
    proxy.stop()
    app.shutdown()
    app.server_close()


@pytest.mark.e2e
def test_the_proxy_sends_a_stranger_to_log_in_and_never_to_the_application(
    protected: tuple[str, str],
) -> None:
    proxy, _ = protected
    forged = requests.get(
        f"{proxy}/reports",
        headers={"Remote-Email": "boss@example.com", "Remote-User": "1", **BROWSER},
        allow_redirects=False,
        timeout=15,
    )
    assert forged.status_code == 302
    assert forged.headers["Location"] == (
        f"{proxy}/ui/login?rd=" + quote(f"{proxy}/reports", safe="")
    )
    assert echo_app.RECEIVED == []  # the application never saw the forged header


@pytest.mark.e2e
@pytest.mark.browser
def test_a_browser_logs_in_through_the_proxy_and_lands_back_on_the_application(
    protected: tuple[str, str], request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.by import By

    proxy, _ = protected
    driver = request.getfixturevalue("browser")
    forget_cookies(driver)
    driver.get_log("browser")
    driver.get(f"{proxy}/reports?year=2026")
    on_page(driver, "/ui/login")
    assert "rd=" in driver.current_url
    submit(driver, {"email": EMAIL, "password": PASSWORD}, "password")
    on_page(driver, "/reports")
    assert driver.find_element(By.ID, "who").text == EMAIL
    assert echo_app.RECEIVED[-1]["remote_email"] == EMAIL
    assert echo_app.RECEIVED[-1]["remote_user"] == "1"

    # A forged header next to a real cookie: the proxy sets the real one.
    cookie = {"session_id": driver.get_cookie("session_id")["value"]}
    answer = requests.get(
        f"{proxy}/reports",
        headers={"Remote-Email": "boss@example.com"},
        cookies=cookie,
        timeout=15,
    )
    assert answer.status_code == 200 and EMAIL in answer.text
    assert echo_app.RECEIVED[-1]["remote_email"] == EMAIL

    # Log out on the pages (through the proxy); the next request is sent to log in.
    driver.get(f"{proxy}/ui/account")
    on_page(driver, "/ui/account")
    driver.find_element(By.CSS_SELECTOR, 'form[action="/ui/logout"] button').click()
    on_page(driver, "/ui/login")
    driver.get(f"{proxy}/reports")
    on_page(driver, "/ui/login")
    assert console_errors(driver) == []


def test_with_a_cookie_domain_only_listed_subdomains_are_the_deployments_own(
    config: Config,
) -> None:
    """The cookie reaches every subdomain; a form from one is still another site's
    unless AUTHSVC_ALLOWED_ORIGINS names it."""
    shared = dataclasses.replace(
        config, cookie_domain="example.com", allowed_origins=(APP,)
    )
    client = client_for(shared)
    AuthActions(client).register(EMAIL, PASSWORD)
    form = {"email": EMAIL, "password": PASSWORD}
    other = client.post(
        "/sessions", data=form, headers={"Origin": "https://blog.example.com"}
    )
    assert other.status_code == 403
    listed = client.post("/sessions", data=form, headers={"Origin": APP})
    assert listed.status_code == 200
