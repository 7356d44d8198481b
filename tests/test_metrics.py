"""GET /metrics (SPEC "Operations"; docs/operations.md "Metrics"): off by default, Prometheus' text
format when AUTHSVC_METRICS=true, the figures of every gunicorn worker added up, and
nothing in it that names a person."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from conftest import FakeClock, client_for
from prometheus_client.parser import text_string_to_metric_families
from servers import GunicornServer
from werkzeug.test import Client

from authsvc import Config, ConfigError

PASSWORD = "s3cret pw"
TIMEOUT = 15

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Figures:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def figure(figures: Figures, name: str, **labels: str) -> float:
    """One sample's value, 0 when it has not appeared yet (a counter never incremented)."""
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: Client) -> Figures:
    """GET /metrics in process."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.get_data(as_text=True))


@pytest.fixture
def metrics_config(config: Config) -> Config:
    """The test's settings with metrics on (one process: no multiprocess directory)."""
    return dataclasses.replace(config, metrics=True)


def test_metrics_are_off_by_default(client: Client) -> None:
    """Off, /metrics is exactly an unknown path: nothing tells a scanner it could exist."""
    response = client.get("/metrics")
    unknown = client.get("/no-such-path")
    assert response.status_code == unknown.status_code == 404
    assert response.get_json() == unknown.get_json()


def test_the_account_events_are_counted_by_outcome(metrics_config: Config) -> None:
    """Every event of account self-service is in the metrics as in the audit trail."""
    client = client_for(metrics_config)
    before = scrape(client)
    account = {"email": "acct@example.com", "password": PASSWORD}
    client.post("/users", data=account)
    client.post("/sessions", data=account)
    code = client.post("/account/verification").get_json()["verification_code"]
    assert client.put("/account/verification", data={"code": "x"}).status_code == 403
    assert client.put("/account/verification", data={"code": code}).status_code == 200
    wrong = {"password": "wrong", "new_password": "n3w pw"}
    assert client.put("/account/password", data=wrong).status_code == 401
    right = {"password": PASSWORD, "new_password": "n3w pw"}
    assert client.put("/account/password", data=right).status_code == 200
    assert client.delete("/account", data={"password": "n3w pw"}).status_code == 200
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return figure(after, name, **labels) - figure(before, name, **labels)

    assert moved("authsvc_verification_requests_total", outcome="ok") == 1
    assert moved("authsvc_verifications_total", outcome="invalid_code") == 1
    assert moved("authsvc_verifications_total", outcome="ok") == 1
    assert moved("authsvc_password_changes_total", outcome="wrong_password") == 1
    assert moved("authsvc_password_changes_total", outcome="ok") == 1
    assert moved("authsvc_account_deletions_total", outcome="ok") == 1


def test_requests_and_events_are_counted_by_route_status_and_outcome(
    metrics_config: Config,
) -> None:
    """A known mix of requests moves each counter by exactly its share (the registry is
    the process's, so the test compares before and after)."""
    client = client_for(metrics_config)
    before = scrape(client)
    account = {"email": "mix@example.com", "password": PASSWORD}
    assert client.post("/users", data=account).status_code == 200
    assert client.post("/users", data=account).status_code == 400  # duplicate
    assert client.post("/sessions", data=account).status_code == 200
    wrong = {**account, "password": "wrong"}
    for _ in range(2):
        assert client.post("/sessions", data=wrong).status_code == 401
    for _ in range(3):
        assert client.get("/profile").status_code == 200
    token = client.post("/reset_password", data={"email": account["email"]}).get_json()
    update = {
        "email": account["email"],
        "reset_token": token["reset_token"],
        "new_password": "n3w pw",
    }
    assert client.put("/reset_password", data=update).status_code == 200
    assert client.put("/reset_password", data=update).status_code == 403  # spent
    assert client.get("/nowhere").status_code == 404
    assert client.open("/profile", method="BREW").status_code == 405
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return figure(after, name, **labels) - figure(before, name, **labels)

    requests_total = "authsvc_http_requests_total"
    assert moved(requests_total, route="register", method="POST", status="200") == 1
    assert moved(requests_total, route="register", method="POST", status="400") == 1
    assert moved(requests_total, route="login", method="POST", status="401") == 2
    assert moved(requests_total, route="profile", method="GET", status="200") == 3
    assert moved(requests_total, route="unmatched", method="GET", status="404") == 1
    # A made-up method is "other": a label per method a client invents would never end.
    assert moved(requests_total, route="unmatched", method="other", status="405") == 1
    assert moved("authsvc_http_request_duration_seconds_count", route="profile") == 3
    assert moved("authsvc_logins_total", outcome="ok") == 1
    assert moved("authsvc_logins_total", outcome="failed") == 2
    assert moved("authsvc_registrations_total", outcome="ok") == 1
    assert moved("authsvc_registrations_total", outcome="duplicate") == 1
    assert moved("authsvc_reset_requests_total", outcome="ok") == 1
    assert moved("authsvc_password_updates_total", outcome="ok") == 1
    assert moved("authsvc_password_updates_total", outcome="invalid_token") == 1
    # bcrypt: the registration's hash, three checks, the new password's hash (the
    # duplicate registration hashed too, before the unique index refused it).
    assert moved("authsvc_bcrypt_duration_seconds_count") == 2 + 3 + 1
    assert moved("authsvc_bcrypt_duration_seconds_sum") > 0
    # Measured once per scrape, not per query (see metrics._ScrapeTimeFigures).
    assert figure(after, "authsvc_database_up") == 1
    assert 0 < figure(after, "authsvc_database_answer_seconds") < 1


def test_throttled_logins_are_counted(config: Config) -> None:
    config = dataclasses.replace(config, metrics=True, login_max_failures=2)
    client = client_for(config)
    before = scrape(client)
    wrong = {"email": "nobody@example.com", "password": "wrong"}
    statuses = [client.post("/sessions", data=wrong).status_code for _ in range(4)]
    assert statuses == [401, 401, 429, 429]
    after = scrape(client)
    name = "authsvc_logins_total"
    assert (
        figure(after, name, outcome="throttled")
        - figure(before, name, outcome="throttled")
        == 2
    )


def test_live_sessions_is_the_database_count_at_scrape_time(config: Config) -> None:
    """The gauge follows logins, logouts and idle expiry, whichever process made them."""
    config = dataclasses.replace(config, metrics=True, session_idle_ttl=600)
    clock = FakeClock()
    client = client_for(config, clock)
    other_device = client_for(config, clock)

    def live() -> float:
        return figure(scrape(client), "authsvc_live_sessions")

    assert live() == 0
    account = {"email": "gauge@example.com", "password": PASSWORD}
    client.post("/users", data=account)
    client.post("/sessions", data=account)
    other_device.post("/sessions", data=account)
    assert live() == 2
    other_device.delete("/sessions")
    assert live() == 1
    clock.advance(601)  # idle past AUTHSVC_SESSION_IDLE_TTL
    assert live() == 0


def test_metrics_name_no_person(metrics_config: Config) -> None:
    """No email, user id, session id, public session id, token or address in the text."""
    client = client_for(metrics_config)
    email = "private.person@example.com"
    client.post("/users", data={"email": email, "password": PASSWORD})
    login = client.post("/sessions", data={"email": email, "password": PASSWORD})
    session_id = login.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    public_id = client.get("/sessions").get_json()["sessions"][0]["id"]
    token = client.post("/reset_password", data={"email": email}).get_json()
    text = client.get("/metrics").get_data(as_text=True)
    for secret in (
        email,
        "private.person",
        session_id,
        public_id,
        token["reset_token"],
    ):
        assert secret not in text
    labels = {
        name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for name in sample.labels
    }
    assert labels <= {"route", "method", "status", "outcome", "le"}


def test_a_multiprocess_directory_must_exist(tmp_path: Path) -> None:
    environ = {
        "AUTHSVC_METRICS": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing"),
    }
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        Config.from_env(environ)
    environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    assert Config.from_env(environ).metrics_dir == str(tmp_path)
    # Off, the directory is not authsvc's business.
    assert Config.from_env({"PROMETHEUS_MULTIPROC_DIR": "/nowhere"}).metrics is False


# -- under gunicorn: two workers, one sum


def scrape_url(url: str) -> Figures:
    """GET /metrics over HTTP, on a new connection (so any worker may answer)."""
    response = requests.get(f"{url}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Cache-Control"] == "no-store"
    return parse(response.text)


@pytest.fixture
def metrics_server(
    start_server: Callable[..., GunicornServer], tmp_path: Path
) -> Callable[[], GunicornServer]:
    """Start a 2-worker gunicorn with metrics on, its multiprocess directory in tmp_path."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir(exist_ok=True)
    env = {"AUTHSVC_METRICS": "true", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    return lambda: start_server(workers=2, env=env)


@pytest.mark.e2e
def test_two_workers_figures_add_up(
    metrics_server: Callable[[], GunicornServer], tmp_path: Path
) -> None:
    """Every request on a new connection, so both workers serve some; every scrape, by
    whichever worker, shows the whole server's totals, also after a worker is killed."""
    server = metrics_server()
    url = server.url
    emails = [f"worker{i}@example.com" for i in range(6)]
    for email in emails:
        data = {"email": email, "password": PASSWORD}
        assert requests.post(f"{url}/users", data=data, timeout=TIMEOUT).ok
    cookies = []
    for email in emails[:4]:
        data = {"email": email, "password": PASSWORD}
        login = requests.post(f"{url}/sessions", data=data, timeout=TIMEOUT)
        cookies.append(login.cookies["session_id"])
    for email in emails[4:]:
        data = {"email": email, "password": "wrong"}
        assert (
            requests.post(f"{url}/sessions", data=data, timeout=TIMEOUT).status_code
            == 401
        )
    for session_id in cookies * 5:
        response = requests.get(
            f"{url}/profile", cookies={"session_id": session_id}, timeout=TIMEOUT
        )
        assert response.status_code == 200

    # Both workers counted something: each wrote its own counter file. The kernel may hand
    # every connection above to one worker, so cookieless profile requests (403s, which the
    # figures below do not look at) go on, bounded, until each worker has served one.
    def counter_files() -> set[str]:
        return {path.name for path in (tmp_path / "prometheus").iterdir()}

    for _ in range(400):
        if all(f"counter_{pid}.db" in counter_files() for pid in server.worker_pids()):
            break
        requests.get(f"{url}/profile", timeout=TIMEOUT)
    for pid in server.worker_pids():
        assert f"counter_{pid}.db" in counter_files()

    def expected(figures: Figures) -> None:
        name = "authsvc_http_requests_total"
        assert figure(figures, name, route="register", method="POST", status="200") == 6
        assert figure(figures, name, route="login", method="POST", status="200") == 4
        assert figure(figures, name, route="login", method="POST", status="401") == 2
        assert figure(figures, name, route="profile", method="GET", status="200") == 20
        assert figure(figures, "authsvc_logins_total", outcome="ok") == 4
        assert figure(figures, "authsvc_logins_total", outcome="failed") == 2
        assert figure(figures, "authsvc_registrations_total", outcome="ok") == 6
        assert figure(figures, "authsvc_bcrypt_duration_seconds_count") == 12
        assert figure(figures, "authsvc_live_sessions") == 4

    for _ in range(4):
        expected(scrape_url(url))

    # A worker killed mid-run: gunicorn starts another; the dead one's counts still count.
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if victim not in pids and len(pids) == 2:
            break
        time.sleep(0.1)
    for _ in range(4):
        expected(scrape_url(url))
    server.stop()

    # A new run starts from zero: gunicorn.conf.py empties the directory at start.
    restarted = metrics_server()
    figures = scrape_url(restarted.url)
    name = "authsvc_http_requests_total"
    assert figure(figures, name, route="register", method="POST", status="200") == 0
    assert figure(figures, "authsvc_live_sessions") == 4  # the database's, kept
