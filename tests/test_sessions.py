"""Sessions as rows (SPEC "Sessions"): several devices, lifetimes, the bound, listing and ending.

The store's session methods, then `Auth`'s, then the HTTP routes in process, with a clock
the test moves (no sleeping). End-to-end checks against gunicorn are in test_e2e.py.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    FAST_ROUNDS,
    AuthActions,
    FakeClock,
    assert_error,
    assert_json,
    query,
)
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

import store
from authsvc import (
    Auth,
    AuthApp,
    Config,
    InvalidCredentials,
    UnknownSession,
    _digest,
    _hash_password,
)
from store import Session, Store, User

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def session_rows(db: str) -> list[dict]:
    """Every row of the sessions table, read on a connection of the test's own."""
    columns = ", ".join(store.SESSION_COLUMNS)
    rows = query(db, f"SELECT {columns} FROM sessions ORDER BY id")
    return [dict(zip(store.SESSION_COLUMNS, row, strict=True)) for row in rows]


# ----------------------------------------------------------------------------- store


@pytest.fixture
def db(tmp_path: Path) -> Store:
    """A store on a fresh file with the schema applied."""
    instance = Store(tmp_path / "store.db")
    instance.initialize()
    yield instance
    instance.close()


def a_session(user: User, digest: str, now: float, **fields: object) -> Session:
    """A Session to add for `user`, made at `now`, one day long."""
    values = {
        "id": 0,
        "public_id": f"pub-{digest}",
        "user_id": user.id,
        "digest": digest,
        "created_at": now,
        "last_used_at": now,
        "expires_at": now + 86400,
        "user_agent": "curl/8",
        "ip": "127.0.0.1",
    }
    return Session(**{**values, **fields})


def add(db: Store, session: Session, user: User, max_sessions: int = 20) -> bool:
    """add_session with the user's current hash and no idle expiry."""
    return db.add_session(
        session,
        password_hash=user.hashed_password,
        max_sessions=max_sessions,
        live_after=float("-inf"),
    )


def test_add_session_stores_a_row_found_by_its_digest(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    assert add(db, a_session(user, "d1", 1000.0), user)
    session, owner = db.find_session("d1")
    assert owner == user
    assert (session.public_id, session.user_agent, session.ip) == (
        "pub-d1",
        "curl/8",
        "127.0.0.1",
    )
    assert db.find_session("d2") is None


def test_add_session_refuses_when_the_password_changed_meanwhile(db: Store) -> None:
    user = db.add_user("a@example.com", "old hash")
    db.update_user(user.id, hashed_password="new hash")
    assert not add(db, a_session(user, "d1", 1000.0), user)
    assert session_rows(db.path) == []


def test_add_session_deletes_the_users_ended_sessions(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    add(db, a_session(user, "old", 1000.0, expires_at=1500.0), user)
    add(db, a_session(user, "new", 2000.0), user)
    assert [row["digest"] for row in session_rows(db.path)] == ["new"]


def test_add_session_ends_the_least_recently_used_beyond_the_bound(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    add(db, a_session(user, "first", 1000.0, last_used_at=1500.0), user, 2)
    add(db, a_session(user, "second", 1100.0), user, 2)
    add(db, a_session(user, "third", 1200.0), user, 2)
    assert [row["digest"] for row in session_rows(db.path)] == ["first", "third"]


def test_touch_session_writes_only_a_stale_time(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    add(db, a_session(user, "d", 1000.0), user)
    session, _ = db.find_session("d")
    db.touch_session(session.id, now=1030.0, stale_before=990.0)
    assert db.find_session("d")[0].last_used_at == 1000.0
    db.touch_session(session.id, now=1070.0, stale_before=1010.0)
    assert db.find_session("d")[0].last_used_at == 1070.0


def test_user_sessions_are_the_live_ones_most_recent_first(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    add(db, a_session(user, "a", 1000.0, last_used_at=1300.0), user)
    add(db, a_session(user, "b", 1100.0, last_used_at=1400.0), user)
    add(db, a_session(user, "idle", 1100.0, last_used_at=1150.0), user)
    add(db, a_session(user, "over", 1100.0, expires_at=1450.0), user)
    listed = db.user_sessions(user.id, now=1500.0, live_after=1200.0)
    assert [session.digest for session in listed] == ["b", "a"]


def test_delete_session_takes_only_the_users_own_live_session(db: Store) -> None:
    alice = db.add_user("a@example.com", "h")
    bob = db.add_user("b@example.com", "h")
    add(db, a_session(alice, "alice", 1000.0), alice)
    assert db.delete_session(bob.id, "pub-alice", 1000.0, float("-inf")) is None
    assert db.delete_session(alice.id, "pub-alice", 1000.0, float("-inf")).digest == (
        "alice"
    )
    assert db.delete_session(alice.id, "pub-alice", 1000.0, float("-inf")) is None


def test_delete_user_sessions_keeps_one_and_counts_the_live(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    for digest in ("keep", "x", "y"):
        add(db, a_session(user, digest, 1000.0), user)
    add(db, a_session(user, "ended", 1000.0, expires_at=1001.0), user)
    keep = db.find_session("keep")[0]
    assert db.delete_user_sessions(user.id, 1500.0, float("-inf"), keep=keep.id) == 2
    assert [row["digest"] for row in session_rows(db.path)] == ["keep"]


def test_deleting_a_user_deletes_their_sessions(db: Store) -> None:
    user = db.add_user("a@example.com", "h")
    add(db, a_session(user, "d", 1000.0), user)
    with db.transaction():
        db._connection().execute("DELETE FROM users WHERE id = ?", (user.id,))
    assert session_rows(db.path) == []


# ----------------------------------------------------------------------------- Auth


@pytest.fixture
def bob(auth: Auth) -> int:
    """Bob registered; his user id."""
    return auth.register_user(EMAIL, PASSWORD).id


def auth_with(tmp_path: Path, clock: FakeClock, **settings: object) -> Auth:
    """An Auth on a fresh database with Bob registered, and these settings."""
    config = Config(db=str(tmp_path / "s.db"), bcrypt_rounds=FAST_ROUNDS, **settings)
    auth = Auth(config, clock=clock)
    auth.register_user(EMAIL, PASSWORD)
    return auth


def test_a_session_ends_after_an_idle_hour_by_default(
    auth: Auth, bob: int, clock: FakeClock
) -> None:
    session_id = auth.create_session(EMAIL)
    clock.advance(3599)
    assert auth.get_user_from_session_id(session_id) is not None
    clock.advance(3599)  # the use above restarted the idle clock
    assert auth.get_user_from_session_id(session_id) is not None
    clock.advance(3600)
    assert auth.get_user_from_session_id(session_id) is None


def test_idle_expiry_off_keeps_an_unused_session_to_its_end(
    tmp_path: Path, clock: FakeClock
) -> None:
    auth = auth_with(tmp_path, clock, session_idle_ttl=0)
    session_id = auth.create_session(EMAIL)
    clock.advance(86399)
    assert auth.get_user_from_session_id(session_id) is not None
    clock.advance(1)
    assert auth.get_user_from_session_id(session_id) is None


@pytest.mark.parametrize(("idle", "grain"), [(3600, 60), (100, 10), (0, 60)])
def test_a_use_is_written_only_once_the_recorded_one_is_a_grain_old(
    tmp_path: Path, clock: FakeClock, idle: int, grain: int
) -> None:
    """SPEC: the recorded use is never more than min(60 s, idle / 10) behind."""
    auth = auth_with(tmp_path, clock, session_idle_ttl=idle)
    session_id = auth.create_session(EMAIL)
    made = clock.now
    clock.advance(grain)
    auth.get_user_from_session_id(session_id)
    assert session_rows(auth._config.db)[0]["last_used_at"] == made
    clock.advance(0.5)
    auth.get_user_from_session_id(session_id)
    assert session_rows(auth._config.db)[0]["last_used_at"] == made + grain + 0.5


def test_at_most_max_sessions_the_least_recently_used_ends(
    tmp_path: Path, clock: FakeClock
) -> None:
    auth = auth_with(tmp_path, clock, max_sessions=3)
    first, second, third = (auth.create_session(EMAIL) for _ in range(3))
    clock.advance(120)
    auth.get_user_from_session_id(first)  # now the second is the least recently used
    fourth = auth.create_session(EMAIL)
    alive = [auth.get_user_from_session_id(s) is not None for s in (first, second)]
    assert alive == [True, False]
    assert auth.get_user_from_session_id(third) is not None
    assert auth.get_user_from_session_id(fourth) is not None


def test_the_default_bound_is_20_sessions(auth: Auth, bob: int) -> None:
    sessions = [auth.create_session(EMAIL) for _ in range(21)]
    assert auth.get_user_from_session_id(sessions[0]) is None
    assert all(auth.get_user_from_session_id(s) for s in sessions[1:])
    assert len(auth.list_sessions(bob)) == 20


def test_log_out_ends_only_the_current_session(auth: Auth, bob: int) -> None:
    laptop, phone = auth.create_session(EMAIL), auth.create_session(EMAIL)
    assert auth.log_out(laptop).id == bob
    assert auth.get_user_from_session_id(laptop) is None
    assert auth.get_user_from_session_id(phone).id == bob
    assert auth.log_out(laptop) is None


def test_list_end_and_end_others(auth: Auth, bob: int, clock: FakeClock) -> None:
    laptop = auth.create_session(EMAIL, "Firefox", "10.0.0.1")
    clock.advance(120)
    phone = auth.create_session(EMAIL, "Safari", "10.0.0.2")
    clock.advance(120)
    tablet = auth.create_session(EMAIL, "Chrome", "10.0.0.3")
    listed = auth.list_sessions(bob)
    assert [s.user_agent for s in listed] == ["Chrome", "Safari", "Firefox"]
    auth.end_session(bob, listed[1].public_id)
    assert auth.get_user_from_session_id(phone) is None
    with pytest.raises(UnknownSession):
        auth.end_session(bob, listed[1].public_id)
    _, current = auth.get_session(tablet)
    assert auth.end_other_sessions(bob, current) == 1
    assert auth.get_user_from_session_id(laptop) is None
    assert auth.get_user_from_session_id(tablet).id == bob


def test_another_users_session_cannot_be_ended(auth: Auth, bob: int) -> None:
    auth.register_user("eve@example.com", "pw")
    auth.create_session(EMAIL)
    eve = auth.get_user_from_session_id(auth.create_session("eve@example.com"))
    (bobs,) = auth.list_sessions(bob)
    with pytest.raises(UnknownSession):
        auth.end_session(eve.id, bobs.public_id)
    assert len(auth.list_sessions(bob)) == 1


def test_the_user_agent_is_cut_to_256_characters(auth: Auth, bob: int) -> None:
    auth.create_session(EMAIL, "x" * 1000, "127.0.0.1")
    assert auth.list_sessions(bob)[0].user_agent == "x" * 256


def test_a_login_checked_against_a_password_reset_meanwhile_is_refused(
    auth: Auth, bob: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of a login in flight while a reset lands: the login must not win."""
    verify = auth._verify

    def verify_then_reset(email: str, password: str) -> User | None:
        user = verify(email, password)  # bcrypt said yes for the old password...
        token = auth.get_reset_password_token(EMAIL)  # ...then the reset lands
        auth.update_password(token, "the new one", email=EMAIL)
        return user

    monkeypatch.setattr(auth, "_verify", verify_then_reset)
    with pytest.raises(InvalidCredentials):
        auth.log_in(EMAIL, PASSWORD)
    monkeypatch.undo()
    assert session_rows(auth._config.db) == []
    assert not auth.valid_login(EMAIL, PASSWORD)
    assert auth.valid_login(EMAIL, "the new one")


def test_a_rehash_cannot_write_an_old_password_back_over_a_reset(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored hash of a lower cost is re-hashed at login; not if a reset came between."""
    auth = Auth(Config(db=str(tmp_path / "r.db"), bcrypt_rounds=5), clock=clock)
    user = auth._db.add_user(EMAIL, _hash_password(PASSWORD, 4).decode())
    verify = auth._verify

    def verify_then_reset(email: str, password: str) -> User | None:
        found = verify(email, password)
        auth.update_password(auth.get_reset_password_token(EMAIL), "new!", email=EMAIL)
        return found

    monkeypatch.setattr(auth, "_verify", verify_then_reset)
    with pytest.raises(InvalidCredentials):
        auth.log_in(EMAIL, PASSWORD)
    monkeypatch.undo()
    assert auth.valid_login(EMAIL, "new!")
    assert not auth.valid_login(EMAIL, PASSWORD)
    assert auth._db.find_user_by(id=user.id).hashed_password.startswith("$2b$05$")


def test_a_password_reset_ends_every_session_and_the_lockout(
    tmp_path: Path, clock: FakeClock
) -> None:
    auth = auth_with(tmp_path, clock, login_max_failures=3)
    sessions = [auth.create_session(EMAIL) for _ in range(3)]
    for _ in range(4):
        with pytest.raises(Exception):  # noqa: B017 - failed, then throttled
            auth.log_in(EMAIL, "wrong")
    auth.update_password(auth.get_reset_password_token(EMAIL), "fresh pw", email=EMAIL)
    assert [auth.get_user_from_session_id(s) for s in sessions] == [None] * 3
    user, _ = auth.log_in(EMAIL, "fresh pw")
    assert user.email == EMAIL


def test_the_session_table_stores_only_the_digest(auth: Auth, bob: int) -> None:
    session_id = auth.create_session(EMAIL)
    (row,) = session_rows(auth._config.db)
    assert row["digest"] == _digest(session_id)
    assert session_id not in {str(value) for value in row.values()}
    assert row["public_id"] != session_id and row["public_id"] != row["digest"]


# ----------------------------------------------------------------------------- HTTP


@pytest.fixture
def devices(auth: Auth, config: Config, clock: FakeClock) -> tuple[Client, Client]:
    """Two clients on one app, as a laptop and a phone, each keeping its own cookie."""
    app = AuthApp(auth, config)
    laptop, phone = Client(LintMiddleware(app)), Client(LintMiddleware(app))
    AuthActions(laptop).register(EMAIL, PASSWORD)
    for client, agent in ((laptop, "Laptop/1.0"), (phone, "Phone/2.0")):
        clock.advance(1)
        response = client.post(
            "/sessions",
            data={"email": EMAIL, "password": PASSWORD},
            headers={"User-Agent": agent},
            environ_overrides={"REMOTE_ADDR": "192.0.2.10"},
        )
        assert response.status_code == 200
    return laptop, phone


def other_session_id(client: Client) -> str:
    """The listing id of the one session that is not the client's own."""
    (other,) = [s for s in client.get("/sessions").json["sessions"] if not s["current"]]
    return other["id"]


def assert_session_headers(response: object) -> None:
    """Answers that depend on the session cookie: never stored, keyed on the cookie."""
    assert response.headers["Cache-Control"] == "no-store"
    assert "Cookie" in response.headers["Vary"]


def test_two_devices_each_have_a_working_session(
    devices: tuple[Client, Client],
) -> None:
    for client in devices:
        assert_json(client.get("/profile"), 200, {"email": EMAIL})


def test_get_sessions_lists_every_device(
    devices: tuple[Client, Client], clock: FakeClock
) -> None:
    laptop, phone = devices
    clock.advance(61)
    laptop.get("/profile")  # the laptop is now the most recently used
    response = laptop.get("/sessions")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert_session_headers(response)
    sessions = response.json["sessions"]
    assert [s["user_agent"] for s in sessions] == ["Laptop/1.0", "Phone/2.0"]
    assert [s["current"] for s in sessions] == [True, False]
    for session in sessions:
        assert set(session) == {
            "id",
            "created_at",
            "last_used_at",
            "expires_at",
            "user_agent",
            "ip",
            "current",
        }
        for key in ("created_at", "last_used_at", "expires_at"):
            assert ISO_UTC.fullmatch(session[key]), session[key]
        assert session["ip"] == "192.0.2.10"
        assert session["id"] not in {
            laptop.get_cookie("session_id").value,
            phone.get_cookie("session_id").value,
        }
    assert sessions[0]["last_used_at"] > sessions[1]["last_used_at"]
    (phones,) = [s for s in phone.get("/sessions").json["sessions"] if s["current"]]
    assert phones["user_agent"] == "Phone/2.0"


def test_a_listed_expiry_is_when_an_unused_session_ends(
    devices: tuple[Client, Client], clock: FakeClock
) -> None:
    """Idle hour by default: the listing says last use + 1 h, and it is true."""
    laptop, phone = devices
    sessions = laptop.get("/sessions").json["sessions"]
    assert sessions[0]["expires_at"] == _iso(clock.now + 3600)
    clock.advance(3600)
    assert_error(phone.get("/profile"), 403)


def _iso(unix_seconds: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(unix_seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_ending_another_device_logs_it_out(devices: tuple[Client, Client]) -> None:
    laptop, phone = devices
    phone_id = other_session_id(laptop)
    response = laptop.delete(f"/sessions/{phone_id}")
    assert_json(response, 200, {"message": "session ended"})
    assert_session_headers(response)
    assert response.headers.getlist("Set-Cookie") == []
    assert_error(phone.get("/profile"), 403)
    assert_json(laptop.get("/profile"), 200, {"email": EMAIL})


def test_ending_the_current_session_by_id_clears_the_cookie(
    devices: tuple[Client, Client],
) -> None:
    laptop, phone = devices
    current = next(s for s in laptop.get("/sessions").json["sessions"] if s["current"])
    response = laptop.delete(f"/sessions/{current['id']}")
    assert response.status_code == 200
    (header,) = response.headers.getlist("Set-Cookie")
    assert header.startswith("session_id=;")
    assert "Max-Age=0" in header and "HttpOnly" in header and "Path=/" in header
    assert laptop.get_cookie("session_id") is None
    assert_json(phone.get("/profile"), 200, {"email": EMAIL})


def test_an_unknown_an_ended_and_anothers_session_get_the_same_404(
    devices: tuple[Client, Client], auth: Auth, config: Config
) -> None:
    laptop, _ = devices
    eve = Client(LintMiddleware(AuthApp(auth, config)))
    AuthActions(eve).register("eve@example.com", "pw")
    AuthActions(eve).login("eve@example.com", "pw")
    eves_id = eve.get("/sessions").json["sessions"][0]["id"]
    phone_id = other_session_id(laptop)
    assert laptop.delete(f"/sessions/{phone_id}").status_code == 200
    answers = [
        laptop.delete(f"/sessions/{target}")
        for target in (eves_id, phone_id, "0123456789abcdef", "x" * 300)
    ]
    for response in answers:
        assert_json(response, 404, {"message": "no such session"})
        assert_session_headers(response)
    assert_json(eve.get("/profile"), 200, {"email": "eve@example.com"})


def test_end_other_sessions_keeps_only_this_one(
    devices: tuple[Client, Client], auth: Auth, config: Config
) -> None:
    laptop, phone = devices
    third = Client(LintMiddleware(AuthApp(auth, config)))
    AuthActions(third).login(EMAIL, PASSWORD)
    response = laptop.delete("/sessions/others")
    assert_json(response, 200, {"message": "other sessions ended", "ended": 2})
    assert_session_headers(response)
    assert_error(phone.get("/profile"), 403)
    assert_error(third.get("/profile"), 403)
    assert_json(laptop.get("/profile"), 200, {"email": EMAIL})
    assert laptop.delete("/sessions/others").json["ended"] == 0


def test_logout_ends_only_this_device(devices: tuple[Client, Client]) -> None:
    laptop, phone = devices
    assert laptop.delete("/sessions").status_code == 302
    assert_error(laptop.get("/profile"), 403)
    assert_json(phone.get("/profile"), 200, {"email": EMAIL})


def test_a_password_reset_logs_every_device_out(
    devices: tuple[Client, Client],
) -> None:
    laptop, _ = devices
    token = laptop.post("/reset_password", data={"email": EMAIL}).json["reset_token"]
    response = laptop.put(
        "/reset_password",
        data={"email": EMAIL, "reset_token": token, "new_password": "n3w pw"},
    )
    assert response.status_code == 200
    for client in devices:
        assert_error(client.get("/profile"), 403)
        assert_error(client.get("/sessions"), 403)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sessions"),
        ("DELETE", "/sessions/0123456789abcdef"),
        ("DELETE", "/sessions/others"),
    ],
)
@pytest.mark.parametrize(
    "cookie", [None, "", "nope", "00000000-0000-4000-8000-000000000000"]
)
def test_the_session_routes_need_a_live_session(
    client: Client, method: str, path: str, cookie: str | None
) -> None:
    if cookie is not None:
        client.set_cookie("session_id", cookie)
    response = client.open(path, method=method)
    assert_error(response, 403)
    assert_session_headers(response)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/profile"),
        ("DELETE", "/sessions"),
        ("GET", "/sessions"),
        ("DELETE", "/sessions/others"),
    ],
)
@pytest.mark.parametrize(
    "header", [b"session_id=\xff\xfe", b"a=\xff; session_id=\xc3\x28", b"\xff\xff\xff"]
)
def test_a_cookie_that_is_not_utf8_is_no_session(
    config: Config, clock: FakeClock, method: str, path: str, header: bytes
) -> None:
    """WSGI hands header bytes over as Latin-1; they must not turn into a 500."""
    app = AuthApp(Auth(config, clock=clock), config)
    client = Client(LintMiddleware(app))
    response = client.open(
        path, method=method, environ_overrides={"HTTP_COOKIE": header.decode("latin-1")}
    )
    assert_error(response, 403)


def test_another_cookie_that_is_not_utf8_does_not_hide_the_session(
    devices: tuple[Client, Client],
) -> None:
    laptop, _ = devices
    value = laptop.get_cookie("session_id").value
    header = b"other=\xff\xfe; session_id=" + value.encode()
    response = laptop.get(
        "/profile", environ_overrides={"HTTP_COOKIE": header.decode("latin-1")}
    )
    assert_json(response, 200, {"email": EMAIL})


def test_an_unprintable_user_agent_is_shown_safely(
    client: Client, actions: AuthActions
) -> None:
    actions.register()
    client.post(
        "/sessions",
        data={"email": EMAIL, "password": PASSWORD},
        environ_overrides={"HTTP_USER_AGENT": "Bad\x00Agent\x1b[31m\xff"},
    )
    (session,) = client.get("/sessions").json["sessions"]
    assert session["user_agent"] == "Bad?Agent?[31m\xff"


# ----------------------------------------------------------------------------- upgrade

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def release_2_db(tmp_path: Path) -> Path:
    """A copy of a database made by the previous release (tests/fixtures/README.md)."""
    path = tmp_path / "release-2.db"
    path.write_bytes((FIXTURES / "release-2.db").read_bytes())
    return path


def test_a_release_2_database_upgrades_and_keeps_its_logins(
    release_2_db: Path,
) -> None:
    import json
    import time

    secrets = json.loads((FIXTURES / "release-2.json").read_text())
    auth = Auth(Config(db=str(release_2_db), bcrypt_rounds=FAST_ROUNDS), time.time)
    assert auth._db.schema_version() == store.SCHEMA_VERSION
    for email, password in secrets["passwords"].items():
        assert auth.valid_login(email, password), email
    alice = auth.get_user_from_session_id(secrets["alice_session"])
    assert alice is not None and alice.email == "alice@example.com"
    assert auth.get_user_from_session_id(secrets["lower_jose_session"]) is not None
    assert auth.get_user_from_session_id(secrets["bob_expired_session"]) is None
    (listed,) = auth.list_sessions(alice.id)
    assert listed.digest == _digest(secrets["alice_session"])
    # The old column is no longer used: the digests moved out of it.
    conn = sqlite3.connect(release_2_db)
    assert conn.execute("SELECT COUNT(session_id) FROM users").fetchone()[0] == 0
    conn.close()
    auth.update_password(secrets["carol_reset_token"], "carol new", "carol@example.com")
    assert auth.valid_login("carol@example.com", "carol new")


def test_an_upgrade_runs_once_and_a_restart_changes_nothing(
    release_2_db: Path, db_snapshot: Callable[[str], object]
) -> None:
    Store(release_2_db).initialize()
    first = db_snapshot(str(release_2_db))
    Store(release_2_db).initialize()
    assert db_snapshot(str(release_2_db)) == first
