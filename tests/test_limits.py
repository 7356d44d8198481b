"""Hardening II (docs/security.md): per-client limits, the login lock per (email, client),
reset and sign-up limits, several live reset tokens, cross-site refusal, the cookie's
name, the keyed audit hash. In process with a hand-driven clock, on both backends; the
proxy header under gunicorn in test_e2e.py, the mail cases in test_smtp.py, the browser
case in test_browser.py."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Callable

import pytest
import requests
from conftest import AuthActions, FakeClock, client_for, query
from servers import GunicornServer
from werkzeug.test import Client, TestResponse

import authsvc
import limits
from authsvc import Auth, Config, ConfigError
from limits import client_key

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
ATTACKER = "198.51.100.66"
OWNER = "192.0.2.10"


def from_address(
    client: Client, address: str, method: str, path: str, **kwargs: object
) -> TestResponse:
    """A request from `address` (the socket's peer, REMOTE_ADDR)."""
    return client.open(
        path, method=method, environ_base={"REMOTE_ADDR": address}, **kwargs
    )


def log_in(
    client: Client, address: str, email: str = EMAIL, password: str = PASSWORD
) -> TestResponse:
    return from_address(
        client,
        address,
        "POST",
        "/sessions",
        data={"email": email, "password": password},
    )


def register(client: Client, address: str, email: str) -> TestResponse:
    return from_address(
        client, address, "POST", "/users", data={"email": email, "password": PASSWORD}
    )


def ask_reset(client: Client, address: str, email: str = EMAIL) -> TestResponse:
    return from_address(
        client, address, "POST", "/reset_password", data={"email": email}
    )


def snapshot_all(db: str) -> dict[str, list[tuple]]:
    """Every row of every table a request could write."""
    return {
        table: query(db, f"SELECT * FROM {table} ORDER BY 1")
        for table in (
            "users", "sessions", "reset_tokens", "client_attempts",
            "login_attempts", "reset_attempts",
        )
    }  # fmt: skip


def app_with(config: Config, clock: FakeClock, **settings: object) -> Client:
    """A client of an app on `config` with `settings`, Bob registered."""
    client = client_for(dataclasses.replace(config, **settings), clock)
    assert register(client, "203.0.113.1", EMAIL).status_code == 200
    return client


def test_the_defaults_are_the_documented_ones() -> None:
    defaults = Config()
    assert (defaults.login_max_failures, defaults.email_max_failures) == (10, 100)
    assert (defaults.client_max_failures, defaults.client_max_logins) == (300, 1000)
    assert (defaults.reset_max_per_email, defaults.email_max_resets) == (3, 10)
    assert (defaults.client_max_resets, defaults.client_max_registrations) == (360, 360)
    assert limits.IPV6_SITE_FACTOR == 4
    assert (defaults.trusted_proxies, defaults.allowed_origins) == (0, ())
    assert defaults.cookie_name == "session_id"


# -- logins


def test_one_client_guessing_across_emails_is_stopped_for_every_email(
    config: Config, clock: FakeClock
) -> None:
    """Password spraying: one password on many emails from one address (ASVS 2.2.1)."""
    client = app_with(config, clock, client_max_failures=5)
    for index in range(5):
        assert (
            log_in(
                client, ATTACKER, f"user{index}@example.com", "Summer2026!"
            ).status_code
            == 401
        )
    refused = log_in(client, ATTACKER, EMAIL, PASSWORD)  # even a right password
    assert refused.status_code == 429
    assert refused.json == {
        "message": "too many failed logins from this address; try again later"
    }
    assert 1 <= int(refused.headers["Retry-After"]) <= config.login_window
    assert log_in(client, OWNER).status_code == 200  # another address is not affected
    clock.advance(config.login_window + 1)
    assert log_in(client, ATTACKER).status_code == 200


def test_a_success_does_not_wipe_the_clients_failures(
    config: Config, clock: FakeClock
) -> None:
    """A sprayer with one account of their own cannot log in to it to start over: a
    success takes back only its own attempt."""
    client = app_with(config, clock, client_max_failures=3)
    assert log_in(client, ATTACKER, "a@example.com", "x").status_code == 401
    assert log_in(client, ATTACKER, "b@example.com", "x").status_code == 401
    assert log_in(client, ATTACKER).status_code == 200
    assert log_in(client, ATTACKER, "c@example.com", "x").status_code == 401
    assert log_in(client, ATTACKER, "d@example.com", "x").status_code == 429


def test_the_lock_out_is_per_email_and_client(config: Config, clock: FakeClock) -> None:
    """Eleven wrong guesses lock the guesser's address out of Bob's account, not Bob's."""
    client = app_with(config, clock)
    for _ in range(config.login_max_failures):
        assert log_in(client, ATTACKER, password="wrong").status_code == 401
    locked = log_in(client, ATTACKER)
    assert locked.status_code == 429
    assert locked.json == {
        "message": "too many failed logins for this email; try again later"
    }
    assert log_in(client, OWNER).status_code == 200


def test_the_per_email_ceiling_stops_guessing_from_many_addresses(
    config: Config, clock: FakeClock
) -> None:
    client = app_with(config, clock, email_max_failures=6)
    for index in range(6):
        assert (
            log_in(client, f"198.51.100.{index}", password="wrong").status_code == 401
        )
    assert log_in(client, OWNER).status_code == 429  # the ceiling holds for everyone
    clock.advance(config.login_window + 1)
    assert log_in(client, OWNER).status_code == 200


def test_a_password_reset_lifts_every_lock_on_the_email(
    config: Config, clock: FakeClock
) -> None:
    client = app_with(config, clock, email_max_failures=6)
    for index in range(6):
        log_in(client, f"198.51.100.{index}", password="wrong")
    token = ask_reset(client, OWNER).json["reset_token"]
    update = {"email": EMAIL, "reset_token": token, "new_password": "n3w pw"}
    assert (
        from_address(client, OWNER, "PUT", "/reset_password", data=update).status_code
        == 200
    )
    assert log_in(client, "198.51.100.0", password="n3w pw").status_code == 200


def test_ipv6_clients_are_counted_by_their_64() -> None:
    """One IPv6 host can pick a new address in its /64 for every request."""
    assert (
        client_key("2001:db8:1:2::1")
        == client_key("2001:db8:1:2:ffff::9")
        == "2001:db8:1:2::/64"
    )
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("") == client_key("not an address") == "unknown"


def test_addresses_in_one_ipv6_64_share_a_count(
    config: Config, clock: FakeClock
) -> None:
    client = app_with(config, clock, client_max_failures=2)
    assert log_in(client, "2001:db8::1", "a@example.com", "x").status_code == 401
    assert log_in(client, "2001:db8::2", "b@example.com", "x").status_code == 401
    assert log_in(client, "2001:db8::3").status_code == 429
    assert log_in(client, "2001:db8:0:1::3").status_code == 200


def test_guesses_refused_by_the_pair_lock_do_not_spend_the_emails_ceiling(
    config: Config, clock: FakeClock
) -> None:
    """101 guesses from one address (2.6 s at cost 12): the first 10 lock that address
    out of Bob's account, and the other 91, refused without a password check, add to
    nothing. So Bob, from anywhere else, still logs in (SPEC "Limits cannot be turned
    against the owner"; it was 429 from everywhere for the window)."""
    client = app_with(config, clock)
    answers = [
        log_in(client, ATTACKER, password="guess").status_code for _ in range(101)
    ]
    assert answers == [401] * 10 + [429] * 91
    assert log_in(client, OWNER).status_code == 200


def test_a_client_past_its_own_limit_spends_no_emails_ceiling(
    config: Config, clock: FakeClock
) -> None:
    """An address past its failure limit cannot lock accounts out, one every 0.2 s with
    no bcrypt, by spending their per-email ceilings; and a refused request writes no
    throttle row at all."""
    client = app_with(config, clock, client_max_failures=5, email_max_failures=3)
    for index in range(5):
        assert log_in(client, ATTACKER, f"u{index}@example.com", "x").status_code == 401
    before = snapshot_all(config.db)
    for _ in range(10):
        assert log_in(client, ATTACKER, password="x").status_code == 429
    assert snapshot_all(config.db) == before
    assert log_in(client, OWNER).status_code == 200


def test_logins_that_succeed_are_limited_per_client_too(
    config: Config, clock: FakeClock
) -> None:
    """AUTHSVC_CLIENT_MAX_LOGINS: one account does not give a client unlimited bcrypt
    work; the ceiling counts every attempt, far above the failure limit by default."""
    client = app_with(config, clock, client_max_logins=5)
    for _ in range(5):
        assert log_in(client, ATTACKER).status_code == 200
    refused = log_in(client, ATTACKER)
    assert refused.status_code == 429
    assert refused.json == {
        "message": "too many logins from this address; try again later"
    }
    assert 1 <= int(refused.headers["Retry-After"]) <= config.login_window
    assert log_in(client, OWNER).status_code == 200
    clock.advance(config.login_window + 1)
    assert log_in(client, ATTACKER).status_code == 200


def test_ipv6_clients_are_also_counted_by_their_48() -> None:
    assert limits.client_keys("2001:db8:1:2::1") == [
        ("2001:db8:1:2::/64", 1),
        ("2001:db8:1::/48", limits.IPV6_SITE_FACTOR),
    ]
    assert limits.client_keys("192.0.2.1") == [("192.0.2.1", 1)]
    assert limits.client_keys("") == [("unknown", 1)]


def test_sign_ups_from_a_hundred_64s_of_one_48_are_one_sites_budget(
    config: Config, clock: FakeClock
) -> None:
    """One site holds 65,536 /64s; counted by /64 alone it would have as many budgets."""
    client = app_with(config, clock, client_max_registrations=10)
    answers = [
        register(
            client, f"2001:db8:1:{index:x}::1", f"u{index}@example.com"
        ).status_code
        for index in range(100)
    ]
    site_budget = 10 * limits.IPV6_SITE_FACTOR
    assert answers == [200] * site_budget + [429] * (100 - site_budget)
    assert register(client, "2001:db8:2::1", "other@example.com").status_code == 200


# -- sign-ups and resets


def test_sign_ups_are_limited_per_client(config: Config, clock: FakeClock) -> None:
    client = app_with(config, clock, client_max_registrations=2)
    assert register(client, ATTACKER, "one@example.com").status_code == 200
    assert register(client, ATTACKER, "two@example.com").status_code == 200
    refused = register(client, ATTACKER, "three@example.com")
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers
    assert register(client, OWNER, "three@example.com").status_code == 200
    clock.advance(limits.CLIENT_COUNT_WINDOW + 1)
    assert register(client, ATTACKER, "four@example.com").status_code == 200


def test_response_delivery_has_no_per_email_limit(
    config: Config, clock: FakeClock, db_state: object
) -> None:
    """In response delivery no mail goes anywhere: the course asks for a token for one
    email again and again, and every answer is a usable token."""
    client = app_with(config, clock)
    tokens = []
    for _ in range(10):
        answer = ask_reset(client, OWNER)
        assert answer.status_code == 200, answer.json
        tokens.append(answer.json["reset_token"])
    assert len(set(tokens)) == 10
    for index, token in enumerate(tokens):
        update = {"email": EMAIL, "reset_token": token, "new_password": f"n3w {index}"}
        put = from_address(client, OWNER, "PUT", "/reset_password", data=update)
        assert put.status_code == 200, put.json
        # The reset ended the other tokens; ask again, as the course's client does.
        if index < 9:
            tokens[index + 1] = ask_reset(client, OWNER).json["reset_token"]


def test_resets_are_limited_per_client(config: Config, clock: FakeClock) -> None:
    client = app_with(config, clock, client_max_resets=2)
    assert ask_reset(client, ATTACKER, "a@example.com").status_code == 403
    assert ask_reset(client, ATTACKER, "b@example.com").status_code == 403
    refused = ask_reset(client, ATTACKER, EMAIL)
    assert refused.status_code == 429
    assert refused.json == {
        "message": "too many reset requests from this address; try again later"
    }
    assert ask_reset(client, OWNER).status_code == 200


def test_a_repeated_request_cannot_spoil_the_owners_token(auth: Auth) -> None:
    """Someone asking again and again (within the limit) leaves the mailed token usable."""
    auth.register_user(EMAIL, PASSWORD)
    owners = auth.get_reset_password_token(EMAIL)
    auth.get_reset_password_token(EMAIL)
    auth.get_reset_password_token(EMAIL)
    auth.update_password(owners, "mine again", email=EMAIL)
    assert auth.valid_login(EMAIL, "mine again")


def test_an_expired_token_is_refused_and_purged(auth: Auth, clock: FakeClock) -> None:
    auth.register_user(EMAIL, PASSWORD)
    token = auth.get_reset_password_token(EMAIL)
    clock.advance(auth._config.reset_ttl + 1)
    with pytest.raises(authsvc.InvalidToken):
        auth.update_password(token, "late", email=EMAIL)
    assert auth.purge()["reset_tokens"] == 1


# -- cross-site requests


ORIGIN_CHECKED = [
    ("POST", "/users"),
    ("POST", "/reset_password"),
    ("PUT", "/reset_password"),
    ("POST", "/sessions"),
    ("DELETE", "/sessions"),
    ("DELETE", "/sessions/others"),
    ("DELETE", "/sessions/0123456789abcdef0123456789abcdef"),
]


@pytest.mark.parametrize(("method", "path"), ORIGIN_CHECKED)
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "https://localhost"},  # another scheme is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"},
    ],
)
def test_a_request_from_another_site_is_refused_and_changes_nothing(
    client: Client, method: str, path: str, headers: dict[str, str], db_state: object
) -> None:
    client.post("/users", data={"email": EMAIL, "password": PASSWORD})
    assert (
        client.post(
            "/sessions", data={"email": EMAIL, "password": PASSWORD}
        ).status_code
        == 200
    )
    before = db_state()
    response = client.open(
        path,
        method=method,
        headers=headers,
        data={"email": EMAIL, "password": PASSWORD},
    )
    assert response.status_code == 403
    assert response.json == {"message": "cross-site request refused"}
    assert db_state() == before
    assert client.get("/profile").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, requests, the course's script: no such headers
        {"Origin": "http://localhost"},  # the service's own origin (Host: localhost)
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
        # A form of the service's own pages (Referrer-Policy: no-referrer): the
        # browser sends Origin: null, and says same-origin in a header no page can set.
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    ],
)
def test_a_request_from_the_services_own_pages_or_no_browser_passes(
    client: Client, headers: dict[str, str]
) -> None:
    client.post("/users", data={"email": EMAIL, "password": PASSWORD})
    data = {"email": EMAIL, "password": PASSWORD}
    assert client.post("/sessions", data=data, headers=headers).status_code == 200
    assert client.delete("/sessions", headers=headers).status_code == 302


def test_an_allowed_origin_may_log_in(config: Config) -> None:
    client = client_for(
        dataclasses.replace(config, allowed_origins=("https://app.example.com",))
    )
    client.post("/users", data={"email": EMAIL, "password": PASSWORD})
    data = {"email": EMAIL, "password": PASSWORD}
    allowed = client.post(
        "/sessions", data=data, headers={"Origin": "https://app.example.com"}
    )
    assert allowed.status_code == 200
    other = client.post(
        "/sessions", data=data, headers={"Origin": "https://evil.example.com"}
    )
    assert other.status_code == 403


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/users", {"email": "new@example.com", "password": PASSWORD}),
        ("/reset_password", {"email": EMAIL}),
    ],
)
def test_sign_ups_and_reset_requests_from_another_site_are_refused(
    client: Client, path: str, data: dict[str, str], config: Config
) -> None:
    """A hostile page would spread sign-ups and reset mails over its visitors'
    addresses, past every per-client limit: refused, and nothing is stored."""
    client.post("/users", data={"email": EMAIL, "password": PASSWORD})
    before = snapshot_all(config.db)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        refused = client.post(path, data=data, headers=headers)
        assert refused.status_code == 403
        assert refused.json == {"message": "cross-site request refused"}
    assert snapshot_all(config.db) == before
    assert (
        client.get("/profile", headers={"Origin": "http://evil.example"}).status_code
        == 403
    )


def test_a_password_update_from_another_site_is_refused(
    client: Client, actions: AuthActions
) -> None:
    actions.register(EMAIL, PASSWORD)
    token = actions.reset_token(EMAIL)
    update = {"email": EMAIL, "reset_token": token, "new_password": "n3w pw"}
    refused = client.put(
        "/reset_password", data=update, headers={"Origin": "http://evil.example"}
    )
    assert refused.status_code == 403
    assert client.put("/reset_password", data=update).status_code == 200


def test_allowed_origins_are_checked_at_start_up() -> None:
    assert Config.from_env(
        {"AUTHSVC_ALLOWED_ORIGINS": "https://a.example.com, http://b.example:8080"}
    ).allowed_origins == ("https://a.example.com", "http://b.example:8080")
    with pytest.raises(ConfigError, match="AUTHSVC_ALLOWED_ORIGINS"):
        Config.from_env({"AUTHSVC_ALLOWED_ORIGINS": "app.example.com"})
    with pytest.raises(ConfigError, match="AUTHSVC_ALLOWED_ORIGINS"):
        Config.from_env({"AUTHSVC_ALLOWED_ORIGINS": "https://a.example.com/path"})


# -- the cookie's name


def test_a_host_prefixed_cookie_needs_secure() -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_env({"AUTHSVC_COOKIE_NAME": "__Host-session"})
    assert "AUTHSVC_COOKIE_NAME" in str(refused.value)
    assert "AUTHSVC_COOKIE_SECURE" in str(refused.value)
    with pytest.raises(ConfigError, match="AUTHSVC_COOKIE_SECURE"):
        Config.from_env({"AUTHSVC_COOKIE_NAME": "__Secure-session"})
    with pytest.raises(ConfigError, match="AUTHSVC_COOKIE_NAME"):
        Config.from_env({"AUTHSVC_COOKIE_NAME": "session id"})
    config = Config.from_env(
        {"AUTHSVC_COOKIE_NAME": "__Host-session", "AUTHSVC_COOKIE_SECURE": "true"}
    )
    assert (config.cookie_name, config.cookie_secure) == ("__Host-session", True)


def test_the_configured_cookie_name_is_set_read_and_cleared(config: Config) -> None:
    config = dataclasses.replace(
        config, cookie_name="__Host-session", cookie_secure=True
    )
    client = client_for(config)
    client.post("/users", data={"email": EMAIL, "password": PASSWORD})
    login = client.post("/sessions", data={"email": EMAIL, "password": PASSWORD})
    cookie = login.headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=")
    assert "; Secure" in cookie and "; Path=/" in cookie and "Domain" not in cookie
    assert (
        "cookie-name=__Host-session"
        in client.post("/sessions", data={"email": EMAIL, "password": "wrong"}).headers[
            "WWW-Authenticate"
        ]
    )
    session_id = cookie.split(";")[0].split("=", 1)[1]
    # Cookies sent by hand, from a client with no jar of its own.
    bare = Client(client.application, use_cookies=False)
    by_name = {"HTTP_COOKIE": f"__Host-session={session_id}"}
    assert bare.get("/profile", environ_overrides=by_name).status_code == 200
    other = {"HTTP_COOKIE": f"session_id={session_id}"}
    assert bare.get("/profile", environ_overrides=other).status_code == 403
    logout = bare.delete("/sessions", environ_overrides=by_name)
    assert logout.status_code == 302
    assert logout.headers["Set-Cookie"].startswith("__Host-session=; Expires=")
    assert bare.get("/profile", environ_overrides=by_name).status_code == 403


# -- the audit trail's email hash


def test_with_a_secret_key_the_email_hash_is_keyed(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    key = "k" * 40
    client = client_for(dataclasses.replace(config, secret_key=key))
    with caplog.at_level(logging.INFO, logger="authsvc.audit"):
        client.post("/sessions", data={"email": "Guess@Example.com", "password": "x"})
    line = caplog.records[-1].getMessage()
    keyed = hmac.new(key.encode(), b"guess@example.com", hashlib.sha256).hexdigest()[
        :16
    ]
    plain = hashlib.sha256(b"guess@example.com").hexdigest()[:16]
    assert f"email_hash={keyed}" in line
    assert plain not in line


def test_without_a_secret_key_start_up_warns(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="authsvc"):
        authsvc.create_app(config)
    assert any("AUTHSVC_SECRET_KEY" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="authsvc"):
        authsvc.create_app(dataclasses.replace(config, secret_key="s" * 32))
    assert not any("AUTHSVC_SECRET_KEY" in r.getMessage() for r in caplog.records)


def test_a_short_secret_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_SECRET_KEY"):
        Config.from_env({"AUTHSVC_SECRET_KEY": "short"})


# -- behind a proxy (in process; under gunicorn in test_e2e.py)


@pytest.mark.parametrize(
    ("forwarded_for", "seen"),
    [
        ("203.0.113.7", "203.0.113.7"),  # the proxy's own entry
        ("6.6.6.6, 203.0.113.7", "203.0.113.7"),  # the client's own claim is skipped
        ("not-an-address", ""),  # no proxy writes this: no address
    ],
)
def test_behind_one_trusted_proxy_the_last_forwarded_address_is_the_client(
    config: Config, forwarded_for: str, seen: str
) -> None:
    client = client_for(dataclasses.replace(config, trusted_proxies=1))
    client.post("/users", data={"email": EMAIL, "password": PASSWORD})
    headers = {"X-Forwarded-For": forwarded_for}
    client.post(
        "/sessions", data={"email": EMAIL, "password": PASSWORD}, headers=headers
    )
    (session,) = client.get("/sessions").json["sessions"]
    assert session["ip"] == seen


def test_without_trusted_proxies_forwarded_for_is_ignored(client: Client) -> None:
    client.post("/users", data={"email": EMAIL, "password": PASSWORD})
    headers = {"X-Forwarded-For": "203.0.113.7"}
    client.post(
        "/sessions",
        data={"email": EMAIL, "password": PASSWORD},
        headers=headers,
        environ_base={"REMOTE_ADDR": "192.0.2.55"},
    )
    (session,) = client.get("/sessions").json["sessions"]
    assert session["ip"] == "192.0.2.55"


# -- under gunicorn: two workers sharing the counts, one trusted proxy in front


@pytest.mark.e2e
def test_behind_a_trusted_proxy_limits_and_the_audit_use_the_forwarded_client(
    start_server: Callable[..., GunicornServer],
) -> None:
    """A gunicorn of 2 workers with AUTHSVC_TRUSTED_PROXIES=1, as behind one nginx:
    the per-client count follows the proxy's X-Forwarded-For entry across workers, an
    address the client itself puts in front of it changes nothing, and the audit line
    and the session listing show the forwarded address."""
    server = start_server(
        env={"AUTHSVC_TRUSTED_PROXIES": "1", "AUTHSVC_CLIENT_MAX_FAILURES": "4"}
    )
    url = server.url

    def login(forwarded_for: str, email: str, password: str) -> requests.Response:
        # A new connection each time, so both workers answer some of them.
        return requests.post(
            f"{url}/sessions",
            data={"email": email, "password": password},
            headers={"X-Forwarded-For": forwarded_for, "Connection": "close"},
            timeout=15,
        )

    account = {"email": EMAIL, "password": PASSWORD}
    assert requests.post(f"{url}/users", data=account, timeout=15).status_code == 200
    for index in range(4):
        # The attacker varies the address it claims; the proxy's entry stays its own.
        claimed = f"10.0.0.{index}, {ATTACKER}"
        assert login(claimed, f"user{index}@example.com", "x").status_code == 401
    refused = login(f"10.9.9.9, {ATTACKER}", EMAIL, PASSWORD)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    owner = login(OWNER, EMAIL, PASSWORD)
    assert owner.status_code == 200
    listing = requests.get(
        f"{url}/sessions",
        cookies={"session_id": owner.cookies["session_id"]},
        timeout=15,
    )
    assert [session["ip"] for session in listing.json()["sessions"]] == [OWNER]
    log = server.log()
    assert (
        f"event=login outcome=throttled email_hash={authsvc.email_hash(EMAIL)} client={ATTACKER}"
        in log
    )
    assert f"client={OWNER}" in log
    assert "client=10.9.9.9" not in log and "client=10.0.0.1" not in log


@pytest.mark.e2e
def test_without_trusted_proxies_a_forwarded_for_header_is_ignored(
    start_server: Callable[..., GunicornServer],
) -> None:
    server = start_server(env={"AUTHSVC_CLIENT_MAX_FAILURES": "2"})
    for index in range(2):
        headers = {"X-Forwarded-For": f"203.0.113.{index}"}
        data = {"email": f"user{index}@example.com", "password": "x"}
        response = requests.post(
            f"{server.url}/sessions", data=data, headers=headers, timeout=15
        )
        assert response.status_code == 401
    # Every request came from 127.0.0.1, whatever the header said: that client is done.
    data = {"email": "user9@example.com", "password": "x"}
    headers = {"X-Forwarded-For": "203.0.113.99"}
    response = requests.post(
        f"{server.url}/sessions", data=data, headers=headers, timeout=15
    )
    assert response.status_code == 429
