"""Every statement the service runs finds its rows through an index, never a table scan.

A full flow runs in process with sqlite3's trace callback on; each SELECT, UPDATE and DELETE
it ran is then put through EXPLAIN QUERY PLAN. A scan would make the cost of a request grow
with the number of users (tests/bench.py --scale-users measures that it does not).
"""

from __future__ import annotations

import pytest
from conftest import AuthActions, FakeClock
from werkzeug.test import Client

from authsvc import Auth

# EXPLAIN QUERY PLAN is SQLite's; PostgreSQL's planner picks by table statistics.
pytestmark = pytest.mark.sqlite_only

EMAIL = "bob@example.com"


@pytest.fixture
def statements(
    auth: Auth, client: Client, actions: AuthActions, clock: FakeClock
) -> list[str]:
    """The SQL of a whole flow: register, fail and succeed to log in (twice: two
    sessions), profile, list, end one and the others, log out, reset the password, and
    get throttled."""
    conn = auth._db._connection()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    actions.register(EMAIL, "pw")
    actions.login(EMAIL, "wrong")
    actions.login(EMAIL, "pw")
    actions.login(EMAIL, "pw")
    actions.login(EMAIL, "pw")
    clock.advance(120)
    client.get("/profile")  # records the use
    sessions = client.get("/sessions").json["sessions"]
    other = next(s["id"] for s in sessions if not s["current"])
    client.delete(f"/sessions/{other}")
    client.delete("/sessions/others")
    client.delete("/sessions")
    token = actions.reset_token(EMAIL)
    client.put(
        "/reset_password",
        data={"email": EMAIL, "reset_token": token, "new_password": "n"},
    )
    for _ in range(11):
        actions.login("nobody@example.com", "wrong")
    two_factor_flow(client, actions, clock)
    passkey_flow(client, actions)
    conn.set_trace_callback(None)
    return seen


def two_factor_flow(client: Client, actions: AuthActions, clock: FakeClock) -> None:
    """Set two-factor up, log in with a code through the mfa_token and with a recovery
    code, ask the proxy's question, turn it off."""
    from factors import code_at, time_step

    actions.register("totp@example.com", "pw")
    actions.login("totp@example.com", "pw")
    secret = client.post("/account/two_factor", data={"password": "pw"}).json["secret"]
    codes = client.put(
        "/account/two_factor", data={"code": code_at(secret, time_step(clock()))}
    ).json["recovery_codes"]
    clock.advance(30)
    token = actions.login("totp@example.com", "pw").json["mfa_token"]
    code = code_at(secret, time_step(clock()))
    client.post("/sessions", data={"mfa_token": token, "code": code})
    client.get("/auth/request")
    data = {"email": "totp@example.com", "password": "pw", "code": codes[0]}
    client.post("/sessions", data=data)
    client.delete("/account/two_factor", data={"password": "pw", "code": codes[1]})
    client.get("/account")


def passkey_flow(client: Client, actions: AuthActions) -> None:
    """Add a passkey, log in with it, list, rename and remove it."""
    from softauthn import SoftPasskey

    actions.register("passkey@example.com", "pw")
    actions.login("passkey@example.com", "pw")
    key = SoftPasskey()
    ceremony = client.post("/account/passkeys/options", json={"password": "pw"}).json
    added = client.post(
        "/account/passkeys",
        json={
            "challenge_id": ceremony["challenge_id"],
            "credential": key.create(ceremony["options"]),
        },
    ).json
    login = client.post("/sessions/passkey/options").json
    logged_in = client.post(
        "/sessions/passkey",
        json={
            "challenge_id": login["challenge_id"],
            "credential": key.get(login["options"]),
        },
    )
    assert logged_in.status_code == 200 and "id" in added
    client.get("/account/passkeys")
    client.patch(f"/account/passkeys/{added['id']}", json={"name": "phone"})
    client.delete(f"/account/passkeys/{added['id']}", json={"password": "pw"})


def plan(auth: Auth, statement: str) -> list[str]:
    """The detail lines of EXPLAIN QUERY PLAN for one statement."""
    rows = auth._db._connection().execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
    return [row[3] for row in rows]


def lookups(statements: list[str]) -> list[str]:
    """The statements that look rows up: SELECT, UPDATE, DELETE (not BEGIN, PRAGMA...)."""
    return [
        s for s in statements if s.split()[0].upper() in {"SELECT", "UPDATE", "DELETE"}
    ]


def test_the_flow_looks_users_up_by_each_key(statements: list[str]) -> None:
    found = " ".join(lookups(statements))
    for where in (
        "WHERE email_digest =",
        "WHERE s.digest =",
        "WHERE digest =",
        "WHERE t.digest =",
        "WHERE id =",
        "WHERE user_id =",
        "WHERE public_id =",
    ):
        assert where in found, where


def test_every_lookup_uses_an_index(auth: Auth, statements: list[str]) -> None:
    """Each table the statement reads is searched through an index, never scanned.

    Lines such as "LIST SUBQUERY 1" only describe the plan's shape; what matters is that
    no line is a SCAN and every statement has at least one indexed SEARCH.
    """
    checked = 0
    for statement in set(lookups(statements)):
        details = plan(auth, statement)
        searches = [detail for detail in details if detail.startswith("SEARCH")]
        assert searches, f"{details}  <-  {statement}"
        for detail in details:
            # A SELECT of subqueries and no table reads one "constant row": no table.
            scan = detail.startswith("SCAN") and detail != "SCAN CONSTANT ROW"
            assert not scan, f"{detail}  <-  {statement}"
        for detail in searches:
            assert "USING" in detail, f"{detail}  <-  {statement}"
        checked += 1
    assert checked >= 12


def test_a_scan_would_be_caught(auth: Auth) -> None:
    """The check above can fail: a lookup on a column without an index is a SCAN."""
    assert plan(auth, "SELECT * FROM users WHERE hashed_password = 'x'") == [
        "SCAN users"
    ]


def test_the_proxys_question_is_one_indexed_read(
    auth: Auth, client: Client, actions: AuthActions
) -> None:
    """GET /auth/request with a session whose use is fresh: one SELECT, no write."""
    actions.register(EMAIL, "pw")
    actions.login(EMAIL, "pw")
    conn = auth._db._connection()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    assert client.get("/auth/request").status_code == 200
    conn.set_trace_callback(None)
    assert len(seen) == 1 and seen[0].split()[0].upper() == "SELECT", seen
    assert plan(auth, seen[0]) and not any(
        line.startswith("SCAN") for line in plan(auth, seen[0])
    )
