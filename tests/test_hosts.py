"""Several authsvc hosts on one PostgreSQL database (SPEC "Storage").

Two gunicorn servers (2 workers x 4 threads each) stand for two hosts behind a load
balancer; they share nothing but the database. What one host does, the other sees at
once: sessions, logouts, resets, throttling, and uniqueness under a race.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pgserver
import pytest
import requests
from conftest import query
from servers import GunicornServer

import store

pytestmark = [pytest.mark.e2e, pytest.mark.postgresql_only]

TIMEOUT = 15
PASSWORD = "s3cret pw"


@pytest.fixture
def hosts(start_server: Callable[..., GunicornServer]) -> tuple[GunicornServer, ...]:
    """Two servers on the test's one database."""
    return start_server(), start_server()


def register(url: str, email: str, password: str = PASSWORD) -> int:
    """POST /users; the status."""
    data = {"email": email, "password": password}
    return requests.post(f"{url}/users", data=data, timeout=TIMEOUT).status_code


def log_in(url: str, email: str, password: str = PASSWORD) -> requests.Response:
    """POST /sessions."""
    data = {"email": email, "password": password}
    return requests.post(f"{url}/sessions", data=data, timeout=TIMEOUT)


def profile(url: str, session_id: str) -> int:
    """GET /profile with this cookie; the status."""
    cookies = {"session_id": session_id}
    return requests.get(f"{url}/profile", cookies=cookies, timeout=TIMEOUT).status_code


def test_a_session_made_on_one_host_works_on_the_other(
    hosts: tuple[GunicornServer, ...],
) -> None:
    a, b = hosts
    assert register(a.url, "both@example.com") == 200
    session_id = log_in(b.url, "both@example.com").cookies["session_id"]
    assert {profile(a.url, session_id), profile(b.url, session_id)} == {200}


def test_a_logout_on_one_host_ends_the_session_on_both(
    hosts: tuple[GunicornServer, ...],
) -> None:
    a, b = hosts
    register(a.url, "out@example.com")
    session_id = log_in(a.url, "out@example.com").cookies["session_id"]
    other = log_in(a.url, "out@example.com").cookies["session_id"]
    response = requests.delete(
        f"{b.url}/sessions", cookies={"session_id": session_id}, timeout=TIMEOUT,
        allow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 302
    assert {profile(a.url, session_id), profile(b.url, session_id)} == {403}
    assert {profile(a.url, other), profile(b.url, other)} == {200}


def test_a_reset_on_one_host_ends_every_session_on_both(
    hosts: tuple[GunicornServer, ...],
) -> None:
    a, b = hosts
    email = "reset@example.com"
    register(a.url, email)
    sessions = [log_in(host.url, email).cookies["session_id"] for host in (a, b)]
    token = requests.post(
        f"{a.url}/reset_password", data={"email": email}, timeout=TIMEOUT
    ).json()["reset_token"]
    data = {"email": email, "reset_token": token, "new_password": "n3w pw"}
    assert requests.put(f"{b.url}/reset_password", data=data, timeout=TIMEOUT).ok
    for session_id in sessions:
        assert {profile(a.url, session_id), profile(b.url, session_id)} == {403}
    assert log_in(a.url, email, "n3w pw").status_code == 200


def test_throttling_counts_failures_on_every_host(
    hosts: tuple[GunicornServer, ...],
) -> None:
    email = "guessed@example.com"
    register(hosts[0].url, email)
    statuses = [
        log_in(host.url, email, "a wrong secret").status_code
        for host in itertools.islice(itertools.cycle(hosts), 10)
    ]
    assert statuses == [401] * 10
    for host in hosts:  # the 11th and 12th, one on each host, even with the password
        response = log_in(host.url, email)
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0


def test_racing_registrations_over_both_hosts_make_one_user(
    hosts: tuple[GunicornServer, ...], database_url: str
) -> None:
    urls = [host.url for host in hosts] * 15

    def attempt(index: int) -> int:
        # Different letter cases, one account: the folded key decides on every host.
        email = "RACE@example.com" if index % 2 else "race@Example.com"
        return register(urls[index], email, f"pw{index}")

    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(attempt, range(30)))
    assert sorted(statuses) == [200] + [400] * 29
    assert query(database_url, "SELECT COUNT(*) FROM users") == [(1,)]


def test_users_survive_kill_9_of_every_host(
    hosts: tuple[GunicornServer, ...], start_server: Callable[..., GunicornServer]
) -> None:
    for index, host in enumerate(hosts):
        assert register(host.url, f"kept{index}@example.com") == 200
    for host in hosts:
        host.kill()
    again = start_server()
    for index in range(len(hosts)):
        assert log_in(again.url, f"kept{index}@example.com").status_code == 200


def answers_every_time(host: GunicornServer, session_id: str, count: int = 12) -> bool:
    """`count` GET /profile on new connections (so every worker gets some) all answer 200."""
    return all(profile(host.url, session_id) == 200 for _ in range(count))


@pytest.fixture
def own_postgres() -> Iterator[pgserver.PostgresServer]:
    """A PostgreSQL cluster for this test alone: it is stopped mid-test, which must not
    disturb the servers of other tests."""
    server = pgserver.start_postgres()
    yield server
    store.close_all_pools()
    server.remove()


def test_the_database_going_away_is_503_and_the_hosts_recover(
    own_postgres: pgserver.PostgresServer,
    start_gunicorn_on: Callable[[str], GunicornServer],
) -> None:
    """PostgreSQL stopped mid-run: requests that need it get 503 JSON within seconds,
    GET /health says "unavailable" (503) within a second or two, GET / still answers,
    and once the database is back every worker answers again with no restart."""
    url = own_postgres.url("postgres")
    a, b = start_gunicorn_on(url), start_gunicorn_on(url)
    hosts = (a, b)
    register(a.url, "outage@example.com")
    session_id = log_in(b.url, "outage@example.com").cookies["session_id"]
    own_postgres.stop()
    try:
        for host in hosts:
            started = time.monotonic()
            response = requests.get(
                f"{host.url}/profile", cookies={"session_id": session_id}, timeout=30
            )
            assert time.monotonic() - started < 10
            assert response.status_code == 503
            assert response.headers["Content-Type"] == "application/json"
            assert response.json() == {
                "message": "the database is not answering; try again later"
            }
            assert requests.get(f"{host.url}/", timeout=TIMEOUT).status_code == 200
            assert log_in(host.url, "outage@example.com").status_code == 503
            started = time.monotonic()
            health = requests.get(f"{host.url}/health", timeout=TIMEOUT)
            assert (health.status_code, health.json()) == (
                503,
                {"status": "unavailable"},
            )
            assert time.monotonic() - started < 3  # a load balancer hears it at once
    finally:
        own_postgres.start()
    back = time.monotonic()
    deadline = back + 60
    while not all(answers_every_time(host, session_id) for host in hosts):
        assert time.monotonic() < deadline, "the hosts did not recover within 60 s"
        time.sleep(0.2)
    print(
        f"\nevery worker answered again {time.monotonic() - back:.1f} s after the restart"
    )
    assert log_in(a.url, "outage@example.com").status_code == 200
    for host in hosts:
        health = requests.get(f"{host.url}/health", timeout=TIMEOUT)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
    for host in hosts:
        assert "[ERROR] authsvc: unhandled" not in host.log()
        assert host.process.poll() is None


def test_a_two_factor_code_taken_on_one_host_is_refused_on_the_other(
    start_server: Callable[..., GunicornServer],
) -> None:
    """RFC 6238 section 5.2 across hosts: the last accepted step lives in the shared
    database, so a code one host took is refused by the other, also when both race."""
    from factors import code_at, time_step

    key = {"AUTHSVC_SECRET_KEY": "hosts-" + "k" * 34}  # the hosts share their key
    a, b = start_server(env=key), start_server(env=key)
    assert register(a.url, "totp@example.com") == 200
    cookies = {"session_id": log_in(a.url, "totp@example.com").cookies["session_id"]}
    secret = requests.post(
        f"{a.url}/account/two_factor",
        data={"password": PASSWORD},
        cookies=cookies,
        timeout=TIMEOUT,
    ).json()["secret"]
    enabled = requests.put(
        f"{b.url}/account/two_factor",
        data={"code": code_at(secret, time_step(time.time()))},
        cookies=cookies,
        timeout=TIMEOUT,
    )
    assert enabled.status_code == 200  # b opens what a sealed

    def with_code(url: str, code: str) -> requests.Response:
        data = {"email": "totp@example.com", "password": PASSWORD, "code": code}
        return requests.post(f"{url}/sessions", data=data, timeout=TIMEOUT)

    code = code_at(secret, time_step(time.time()) + 1)  # a step nobody took yet
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(with_code, [a.url, b.url] * 3, [code] * 6))
    assert sorted(answer.status_code for answer in answers) == [200] + [401] * 5
    for url in (a.url, b.url):  # and afterwards, on either host
        replay = with_code(url, code)
        assert replay.status_code == 401
        assert replay.json() == {"message": "wrong two-factor code"}
