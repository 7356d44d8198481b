"""End to end: real gunicorn servers (2 workers x 4 threads) on 127.0.0.1, driven by requests.

Covers what only a real server shows: the course's own client script, the cookie on the
wire, state shared by workers, simultaneous registrations, no connection forked by
--preload, and users surviving kill -9.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import pytest
import requests
from conftest import query, run_course_client
from servers import ROOT, GunicornServer

from authsvc import email_hash
from store import SCHEMA_VERSION

pytestmark = pytest.mark.e2e

TIMEOUT = 15


def count_users(db: Path | str, email: str) -> int:
    """Rows with this email, any letter case, read straight from the database."""
    ((count,),) = query(
        str(db), "SELECT COUNT(*) FROM users WHERE email_key = ?", (email.casefold(),)
    )
    return count


def test_the_course_client_passes(gunicorn_server: GunicornServer) -> None:
    result = run_course_client(gunicorn_server.url)
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
    afterwards it must hold no descriptor on the database (a file, or a socket to the
    PostgreSQL server), or every worker would inherit it."""
    server = start_server(extra_args=("--preload",))
    cookie = {"session_id": "x"}
    requests.get(f"{server.url}/profile", cookies=cookie, timeout=TIMEOUT)
    assert database_handles(server.process.pid, str(server.db_path)) == []
    login = {"email": "a@b.io", "password": "x"}
    for _ in range(10):  # the workers do open their own, on first use
        requests.post(f"{server.url}/sessions", data=login, timeout=TIMEOUT)
    assert any(
        database_handles(pid, str(server.db_path)) for pid in server.worker_pids()
    )


def database_handles(pid: int, db: str) -> list[str]:
    """What process `pid` holds open on the database: descriptors of the SQLite file, or
    TCP connections to the PostgreSQL server's port."""
    fd_dir = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(fd_dir / fd))
        except FileNotFoundError:
            continue  # closed meanwhile
    if not db.startswith("postgresql://"):
        return [target for target in targets if db in target]
    port = f"{int(db.rsplit(':', 1)[1].split('/')[0]):04X}"
    inodes = {
        target[len("socket:[") : -1]
        for target in targets
        if target.startswith("socket:[")
    }
    connections = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if remote.endswith(":" + port) and state == "01" and inode in inodes:
            connections.append(f"tcp to {remote} (inode {inode})")
    return connections


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
        except requests.RequestException:  # refused, reset, or cut mid-answer
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


# -- hardening, against real servers


def worker_pid(session: requests.Session, server: GunicornServer) -> str:
    """The pid of the worker holding this keep-alive connection (from its audit line)."""
    session.delete(
        f"{server.url}/sessions", timeout=TIMEOUT
    )  # audited as logout no_session
    pids = re.findall(r"\[(\d+)\] \[INFO\] authsvc\.audit: event=logout", server.log())
    return pids[-1]


def sessions_on_two_workers(server: GunicornServer) -> list[requests.Session]:
    """Two keep-alive connections that gunicorn gave to two different workers."""
    by_pid: dict[str, requests.Session] = {}
    opened = []
    for _ in range(40):
        session = requests.Session()
        opened.append(session)
        by_pid.setdefault(worker_pid(session, server), session)
        if len(by_pid) == 2:
            return list(by_pid.values())
    pytest.fail("gunicorn never gave a connection to the second worker")


def test_the_failure_count_is_shared_by_the_workers(
    gunicorn_server: GunicornServer,
) -> None:
    url = gunicorn_server.url
    email, password = "throttled@example.com", "right pw"
    requests.post(
        f"{url}/users", data={"email": email, "password": password}, timeout=TIMEOUT
    )
    first, second = sessions_on_two_workers(gunicorn_server)
    wrong = {"email": email, "password": "wrong"}
    for session in (first, second):
        for _ in range(5):
            assert (
                session.post(f"{url}/sessions", data=wrong, timeout=TIMEOUT).status_code
                == 401
            )
    response = first.post(
        f"{url}/sessions", data={"email": email, "password": password}, timeout=TIMEOUT
    )
    print(
        f"\n11th attempt: {response.status_code} Retry-After={response.headers.get('Retry-After')} {response.json()}"
    )
    assert response.status_code == 429
    assert 890 <= int(response.headers["Retry-After"]) <= 900
    assert response.json() == {
        "message": "too many failed logins for this email; try again later"
    }
    assert (
        second.post(f"{url}/sessions", data=wrong, timeout=TIMEOUT).status_code == 429
    )
    failed_on = re.findall(
        rf"\[(\d+)\] \[INFO\] authsvc\.audit: event=login outcome=failed email_hash={email_hash(email)}",
        gunicorn_server.log(),
    )
    assert len(failed_on) == 10 and len(set(failed_on)) == 2


def test_a_reset_token_works_once_under_a_race(gunicorn_server: GunicornServer) -> None:
    url = gunicorn_server.url
    email = "racetoken@example.com"
    requests.post(
        f"{url}/users", data={"email": email, "password": "pw"}, timeout=TIMEOUT
    )
    token = requests.post(
        f"{url}/reset_password", data={"email": email}, timeout=TIMEOUT
    ).json()["reset_token"]
    barrier = threading.Barrier(10)

    def spend(index: int) -> int:
        data = {"email": email, "reset_token": token, "new_password": f"new{index}"}
        barrier.wait()
        return requests.put(
            f"{url}/reset_password", data=data, timeout=TIMEOUT
        ).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(spend, range(10)))
    assert statuses == [200] + [403] * 9


def test_the_logs_hold_every_event_and_no_secret(
    start_server: Callable[..., GunicornServer],
) -> None:
    server = start_server()
    url = server.url
    email, password, new_password = (
        "audited@example.com",
        "first secret pw",
        "second secret pw",
    )
    secrets_used = [password, new_password]
    requests.post(
        f"{url}/users", data={"email": email, "password": password}, timeout=TIMEOUT
    )
    requests.post(
        f"{url}/sessions",
        data={"email": email, "password": "a wrong secret"},
        timeout=TIMEOUT,
    )
    secrets_used.append("a wrong secret")
    login = requests.post(
        f"{url}/sessions", data={"email": email, "password": password}, timeout=TIMEOUT
    )
    session_id = login.cookies["session_id"]
    secrets_used += [session_id, login.headers["Set-Cookie"]]
    requests.get(f"{url}/profile", cookies={"session_id": session_id}, timeout=TIMEOUT)
    requests.delete(
        f"{url}/sessions", cookies={"session_id": session_id}, timeout=TIMEOUT
    )
    token = requests.post(
        f"{url}/reset_password", data={"email": email}, timeout=TIMEOUT
    ).json()["reset_token"]
    secrets_used.append(token)
    data = {"email": email, "reset_token": token, "new_password": new_password}
    requests.put(f"{url}/reset_password", data=data, timeout=TIMEOUT)
    requests.put(f"{url}/reset_password", data=data, timeout=TIMEOUT)
    second = requests.post(
        f"{url}/sessions",
        data={"email": email, "password": new_password},
        timeout=TIMEOUT,
    )
    secrets_used.append(second.cookies["session_id"])
    for _ in range(11):  # ten failures, then the throttle
        requests.post(
            f"{url}/sessions",
            data={"email": email, "password": "a wrong secret"},
            timeout=TIMEOUT,
        )
    stored = query(
        str(server.db_path), "SELECT hashed_password, reset_token FROM users"
    )
    stored += query(str(server.db_path), "SELECT digest FROM sessions")
    secrets_used += [
        value for row in stored for value in row if value
    ]  # hashes and digests
    server.stop()  # flush and close everything the workers had to say

    log = server.log()
    for secret in secrets_used:
        assert secret not in log, f"a secret reached the log: {secret[:4]}..."
    assert email not in log
    who = f"email_hash={email_hash(email)} client=127.0.0.1"
    for line in [
        "event=register outcome=ok user=1 client=127.0.0.1",
        f"event=login outcome=failed {who}",
        "event=login outcome=ok user=1 client=127.0.0.1",
        "event=logout outcome=ok user=1 client=127.0.0.1",
        f"event=reset_request outcome=ok {who}",
        f"event=password_update outcome=ok {who}",
        f"event=password_update outcome=invalid_token {who}",
        f"event=login outcome=throttled {who}",
    ]:
        assert line in log, line


@pytest.mark.sqlite_only
def test_a_database_of_the_first_release_keeps_its_users(
    database_url: str, start_server: Callable[..., GunicornServer]
) -> None:
    """Made with the schema.sql the first release shipped, then served by this one."""
    old_schema = (ROOT / "tests" / "fixtures" / "schema-first-release.sql").read_text()
    db_path = Path(database_url)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(old_schema)
    hashed = bcrypt.hashpw(b"old password", bcrypt.gensalt(4)).decode()
    conn.execute(
        "INSERT INTO users (email, hashed_password) VALUES ('old@example.com', ?)",
        (hashed,),
    )
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()

    server = start_server()
    response = requests.post(
        f"{server.url}/sessions",
        data={"email": "old@example.com", "password": "old password"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    profile = requests.get(
        f"{server.url}/profile", cookies=response.cookies, timeout=TIMEOUT
    )
    assert profile.json() == {"email": "old@example.com"}
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT COUNT(*) FROM login_attempts").fetchone()[0] == 0
    conn.close()


# -- sessions as rows (SPEC "Sessions")


def log_in_as_device(
    url: str, email: str, password: str, agent: str
) -> requests.Session:
    """A requests.Session that logged in with its own User-Agent: one device."""
    device = requests.Session()
    device.headers["User-Agent"] = agent
    response = device.post(
        f"{url}/sessions", data={"email": email, "password": password}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    return device


def statuses(cookie: str, url: str, count: int = 12) -> set[int]:
    """The statuses of `count` GET /profile with this session cookie, on fresh
    connections (so gunicorn spreads them over its workers)."""

    def one(_: int) -> int:
        return requests.get(
            f"{url}/profile", cookies={"session_id": cookie}, timeout=TIMEOUT
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        return set(pool.map(one, range(count)))


def test_two_devices_and_a_logout_on_one(gunicorn_server: GunicornServer) -> None:
    url = gunicorn_server.url
    data = {"email": "devices@example.com", "password": "pw"}
    assert requests.post(f"{url}/users", data=data, timeout=TIMEOUT).status_code == 200
    laptop = log_in_as_device(url, **data, agent="Laptop/1.0")
    phone = log_in_as_device(url, **data, agent="Phone/2.0")
    laptop_id, phone_id = (d.cookies["session_id"] for d in (laptop, phone))
    assert statuses(laptop_id, url) == statuses(phone_id, url) == {200}
    listed = laptop.get(f"{url}/sessions", timeout=TIMEOUT).json()["sessions"]
    assert sorted(s["user_agent"] for s in listed) == ["Laptop/1.0", "Phone/2.0"]
    assert {s["ip"] for s in listed} == {"127.0.0.1"}
    response = phone.delete(f"{url}/sessions", allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302
    assert "session_id" not in phone.cookies  # the logout cleared it
    # Every worker sees the logout at once, and the laptop's session on every worker.
    assert statuses(phone_id, url) == {403}
    assert statuses(laptop_id, url) == {200}
    ended = laptop.delete(f"{url}/sessions/others", timeout=TIMEOUT).json()
    assert ended == {"message": "other sessions ended", "ended": 0}


def test_ending_another_device_ends_it_on_every_worker(
    gunicorn_server: GunicornServer,
) -> None:
    url = gunicorn_server.url
    data = {"email": "stolen@example.com", "password": "pw"}
    requests.post(f"{url}/users", data=data, timeout=TIMEOUT)
    mine = log_in_as_device(url, **data, agent="Mine/1.0")
    thief = log_in_as_device(url, **data, agent="Unknown/6.6")
    listed = mine.get(f"{url}/sessions", timeout=TIMEOUT).json()["sessions"]
    (theirs,) = [s["id"] for s in listed if not s["current"]]
    response = mine.delete(f"{url}/sessions/{theirs}", timeout=TIMEOUT)
    assert response.json() == {"message": "session ended"}
    assert statuses(thief.cookies["session_id"], url) == {403}
    assert statuses(mine.cookies["session_id"], url) == {200}


def test_an_idle_session_ends(start_server: Callable[..., GunicornServer]) -> None:
    """AUTHSVC_SESSION_IDLE_TTL=2: used within 2 s it lives on; left 2 s it ends."""
    server = start_server(env={"AUTHSVC_SESSION_IDLE_TTL": "2"})
    data = {"email": "idle@example.com", "password": "pw"}
    requests.post(f"{server.url}/users", data=data, timeout=TIMEOUT)
    device = log_in_as_device(server.url, **data, agent="Idle/1.0")
    for _ in range(3):  # 3.6 s in all, longer than the idle lifetime
        time.sleep(1.2)
        assert device.get(f"{server.url}/profile", timeout=TIMEOUT).status_code == 200
    time.sleep(2.5)
    assert device.get(f"{server.url}/profile", timeout=TIMEOUT).status_code == 403


@pytest.mark.sqlite_only
def test_a_release_2_database_upgrades_under_gunicorn(
    database_url: str, start_server: Callable[..., GunicornServer]
) -> None:
    """A file the previous release made (tests/fixtures/README.md), served by this one."""
    import json

    fixtures = ROOT / "tests" / "fixtures"
    Path(database_url).write_bytes((fixtures / "release-2.db").read_bytes())
    secrets = json.loads((fixtures / "release-2.json").read_text())
    server = start_server()
    url = server.url

    def profile(session_id: str) -> requests.Response:
        return requests.get(
            f"{url}/profile", cookies={"session_id": session_id}, timeout=TIMEOUT
        )

    assert profile(secrets["alice_session"]).json() == {"email": "alice@example.com"}
    assert profile(secrets["bob_expired_session"]).status_code == 403
    for email, password in secrets["passwords"].items():
        response = requests.post(
            f"{url}/sessions",
            data={"email": email, "password": password},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, email
    # Alice is now on two devices: the one from before the upgrade and the new login.
    listed = requests.get(
        f"{url}/sessions",
        cookies={"session_id": secrets["alice_session"]},
        timeout=TIMEOUT,
    ).json()["sessions"]
    assert len(listed) == 2
    conn = sqlite3.connect(database_url)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 5
    conn.close()
