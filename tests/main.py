#!/usr/bin/env python3
"""The course's end-to-end client (task 20): one function per step, each asserting the answer.

Run it against any running authsvc; it prints nothing when everything is right:

    python tests/main.py                        # http://localhost:5000 (python authsvc.py)
    python tests/main.py http://127.0.0.1:8000  # e.g. a gunicorn server

tests/test_e2e.py runs it against a real gunicorn server. The email is fixed by the course,
so run it once per fresh database: a second run fails at register_user, as it should.
"""

import sys

import requests

BASE_URL = "http://localhost:5000"
TIMEOUT = 10


def register_user(email: str, password: str) -> None:
    """POST /users creates the account."""
    response = requests.post(
        f"{BASE_URL}/users",
        data={"email": email, "password": password},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"email": email, "message": "user created"}


def log_in_wrong_password(email: str, password: str) -> None:
    """POST /sessions with a wrong password is refused with 401 and sets no cookie."""
    response = requests.post(
        f"{BASE_URL}/sessions",
        data={"email": email, "password": password},
        timeout=TIMEOUT,
    )
    assert response.status_code == 401, response.text
    assert "session_id" not in response.cookies


def log_in(email: str, password: str) -> str:
    """POST /sessions with the right password answers 200 and returns the session cookie."""
    response = requests.post(
        f"{BASE_URL}/sessions",
        data={"email": email, "password": password},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"email": email, "message": "logged in"}
    session_id = response.cookies.get("session_id")
    assert session_id
    return session_id


def profile_unlogged() -> None:
    """GET /profile without a cookie is forbidden."""
    response = requests.get(f"{BASE_URL}/profile", timeout=TIMEOUT)
    assert response.status_code == 403, response.text


def profile_logged(session_id: str) -> None:
    """GET /profile with the session cookie names its owner."""
    response = requests.get(
        f"{BASE_URL}/profile", cookies={"session_id": session_id}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"email": EMAIL}


def log_out(session_id: str) -> None:
    """DELETE /sessions redirects to / (302), which requests follows with a GET."""
    response = requests.delete(
        f"{BASE_URL}/sessions", cookies={"session_id": session_id}, timeout=TIMEOUT
    )
    assert [r.status_code for r in response.history] == [302], response.history
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Bienvenue"}
    after = requests.get(
        f"{BASE_URL}/profile", cookies={"session_id": session_id}, timeout=TIMEOUT
    )
    assert after.status_code == 403, "the session must be over after logging out"


def reset_password_token(email: str) -> str:
    """POST /reset_password returns a reset token for a registered email."""
    response = requests.post(
        f"{BASE_URL}/reset_password", data={"email": email}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["email"] == email
    assert body["reset_token"]
    return body["reset_token"]


def update_password(email: str, reset_token: str, new_password: str) -> None:
    """PUT /reset_password with the token sets the new password."""
    data = {"email": email, "reset_token": reset_token, "new_password": new_password}
    response = requests.put(f"{BASE_URL}/reset_password", data=data, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json() == {"email": email, "message": "Password updated"}


EMAIL = "guillaume@holberton.io"
PASSWD = "b4l0u"
NEW_PASSWD = "t4rt1fl3tt3"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        BASE_URL = sys.argv[1].rstrip("/")

    register_user(EMAIL, PASSWD)
    log_in_wrong_password(EMAIL, NEW_PASSWD)
    profile_unlogged()
    session_id = log_in(EMAIL, PASSWD)
    profile_logged(session_id)
    log_out(session_id)
    reset_token = reset_password_token(EMAIL)
    update_password(EMAIL, reset_token, NEW_PASSWD)
    log_in(EMAIL, NEW_PASSWD)
