"""End to end: real gunicorn servers (2 workers x 4 threads) on 127.0.0.1, driven by requests.

Covers what only a real server shows: the course's own client script, the cookie on the
wire, state shared by workers, simultaneous registrations, no connection forked by
--preload, and users surviving kill -9.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import ROOT, GunicornServer

pytestmark = pytest.mark.e2e

TIMEOUT = 15


def count_users(db_path: Path, email: str) -> int:
    """Rows with this email, any letter case, read straight from the file."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(
            "SELECT COUNT(*) FROM users WHERE email = ? COLLATE NOCASE", (email,)
        ).fetchone()[0]
    finally:
        conn.close()


def test_the_course_client_passes(gunicorn_server: GunicornServer) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "main.py"), gunicorn_server.url],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout == "" and result.stderr == ""
    )  # the course: "you should see no output"


def test_the_cookie_on_the_wire(gunicorn_server: GunicornServer) -> None:
    url = gunicorn_server.url
    data = {"email": "wire@example.com", "password": "pw"}
    assert requests.post(f"{url}/users", data=data, timeout=TIMEOUT).status_code == 200
    response = requests.post(f"{url}/sessions", data=data, timeout=TIMEOUT)
    assert response.headers["Content-Type"] == "application/json"
    header = response.headers["Set-Cookie"]
    name_value, *attributes = [part.strip() for part in header.split(";")]
    assert name_value == f"session_id={response.cookies['session_id']}"
    assert set(attributes) == {"HttpOnly", "Path=/", "SameSite=Lax"}


def test_every_worker_sees_the_same_session(gunicorn_server: GunicornServer) -> None:
    url = gunicorn_server.url
    data = {"email": "shared@example.com", "password": "pw"}
    requests.post(f"{url}/users", data=data, timeout=TIMEOUT)
    session_id = requests.post(f"{url}/sessions", data=data, timeout=TIMEOUT).cookies[
        "session_id"
    ]

    def profile(_: int) -> int:
        # A new connection each time, so gunicorn spreads the requests over both workers.
        return requests.get(
            f"{url}/profile", cookies={"session_id": session_id}, timeout=TIMEOUT
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(profile, range(40))) == {200}


def test_bad_input_over_the_wire_is_json(gunicorn_server: GunicornServer) -> None:
    url = gunicorn_server.url
    response = requests.post(f"{url}/users", data=b"x" * (65 * 1024), timeout=TIMEOUT)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    response = requests.post(
        f"{url}/users", json=["not", "an", "object"], timeout=TIMEOUT
    )
    assert (response.status_code, response.json()) == (
        400,
        {"message": "request body must be a JSON object"},
    )
    response = requests.patch(f"{url}/profile", timeout=TIMEOUT)
    assert response.status_code == 405
    assert {method.strip() for method in response.headers["Allow"].split(",")} == {
        "GET",
        "HEAD",
    }


@pytest.mark.parametrize("preload", [False, True], ids=["workers import", "--preload"])
def test_simultaneous_registrations_of_one_email_make_one_user(
    start_server: Callable[..., GunicornServer], preload: bool
) -> None:
    server = start_server(extra_args=("--preload",) if preload else ())
    attempts = 30
    barrier = threading.Barrier(attempts)

    def register(index: int) -> requests.Response:
        # Different letter cases: the unique index must treat them as one email.
        email = "race@example.com" if index % 2 else "RACE@Example.COM"
        barrier.wait()
        return requests.post(
            f"{server.url}/users",
            data={"email": email, "password": "pw"},
            timeout=TIMEOUT,
        )

    with ThreadPoolExecutor(attempts) as pool:
        responses = list(pool.map(register, range(attempts)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [400] * (attempts - 1)
    rejected = [r.json() for r in responses if r.status_code == 400]
    assert all(body == {"message": "email already registered"} for body in rejected)
    assert count_users(server.db_path, "race@example.com") == 1
    assert "Traceback" not in server.log()


def test_preload_forks_no_database_connection(
    start_server: Callable[..., GunicornServer],
) -> None:
    """With --preload the master imports the app (and applies the schema) before forking:
    afterwards it must hold no descriptor on the database, or every worker would inherit it."""
    server = start_server(extra_args=("--preload",))
    requests.get(f"{server.url}/profile", timeout=TIMEOUT)  # workers open their own
    fd_dir = Path(f"/proc/{server.process.pid}/fd")
    targets = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
    assert not [target for target in targets if str(server.db_path) in target], targets


def test_registered_users_survive_kill_9(
    start_server: Callable[..., GunicornServer],
) -> None:
    server = start_server()
    succeeded: list[str] = []
    lock = threading.Lock()

    def register(index: int) -> None:
        email = f"durable{index}@example.com"
        try:
            response = requests.post(
                f"{server.url}/users",
                data={"email": email, "password": f"pw{index}"},
                timeout=TIMEOUT,
            )
        except requests.ConnectionError:
            return  # the server died under this request: no promise was made
        if response.status_code == 200:
            with lock:
                succeeded.append(email)

    # Kill the master and its workers while registrations are still arriving.
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(register, index) for index in range(200)]
        deadline = time.monotonic() + 30
        while len(succeeded) < 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()
        for future in futures:
            future.result()
    assert len(succeeded) >= 25

    restarted = start_server()
    for email in succeeded:
        index = email.removeprefix("durable").removesuffix("@example.com")
        response = requests.post(
            f"{restarted.url}/sessions",
            data={"email": email, "password": f"pw{index}"},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, (email, response.text)
