"""The course's flow on a server started with no settings: the defaults are a product.

Every server here is a real gunicorn started with nothing but the database and bcrypt's
test cost (conftest's `start_server`): the request limits at their defaults, reset
delivery `response`, course mode. The course's client script, a whole course session
played twice for one email, and a classroom behind one address (50 sign-ups, 50 reset
requests) must pass on it, on both backends.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from conftest import run_course_client
from servers import GunicornServer

pytestmark = pytest.mark.e2e

TIMEOUT = 15
EMAIL = "learner@example.com"


@pytest.fixture
def course_server(start_server: Callable[..., GunicornServer]) -> GunicornServer:
    """A gunicorn of 2 workers x 4 threads with no AUTHSVC_* setting but the database
    and bcrypt's cost."""
    server = start_server()
    assert "AUTHSVC_RESET_MAX_PER_EMAIL" not in server.log()
    return server


def test_the_course_client_passes_on_the_defaults(
    course_server: GunicornServer,
) -> None:
    result = run_course_client(course_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


class Course:
    """The course's requests against one server, each checked for its status."""

    def __init__(self, url: str) -> None:
        """Talk to the server at `url`; remember the steps taken."""
        self.url = url
        self.steps: list[str] = []

    def step(
        self, name: str, method: str, path: str, status: int, **kwargs: object
    ) -> requests.Response:
        """One request; its status must be `status`."""
        response = requests.request(
            method, f"{self.url}{path}", timeout=TIMEOUT, **kwargs
        )
        assert response.status_code == status, (name, response.text)
        self.steps.append(name)
        return response

    def round(self, password: str, new_password: str) -> None:
        """One round of the course's tasks for EMAIL: a wrong password, a login, the
        profile, a logout, five reset tokens asked before one is used, the update,
        the same token again, the old password and the new one."""
        form = {"email": EMAIL, "password": password}
        self.step(
            "wrong password", "POST", "/sessions", 401, data={**form, "password": "no"}
        )
        login = self.step("log in", "POST", "/sessions", 200, data=form)
        assert login.json() == {"email": EMAIL, "message": "logged in"}
        cookies = {"session_id": login.cookies["session_id"]}
        profile = self.step("profile", "GET", "/profile", 200, cookies=cookies)
        assert profile.json() == {"email": EMAIL}
        logout = self.step("log out", "DELETE", "/sessions", 200, cookies=cookies)
        assert [r.status_code for r in logout.history] == [302]
        self.step("profile after logout", "GET", "/profile", 403, cookies=cookies)
        tokens = []
        for index in range(5):
            answer = self.step(
                f"reset token {index + 1}", "POST", "/reset_password", 200,
                data={"email": EMAIL},
            )  # fmt: skip
            assert answer.json()["email"] == EMAIL
            tokens.append(answer.json()["reset_token"])
        update = {
            "email": EMAIL,
            "reset_token": tokens[-1],
            "new_password": new_password,
        }
        updated = self.step(
            "update password", "PUT", "/reset_password", 200, data=update
        )
        assert updated.json() == {"email": EMAIL, "message": "Password updated"}
        self.step("token reused", "PUT", "/reset_password", 403, data=update)
        self.step("old password", "POST", "/sessions", 401, data=form)
        new_form = {"email": EMAIL, "password": new_password}
        self.step("new password", "POST", "/sessions", 200, data=new_form)


def test_a_whole_course_session_twice_for_one_email(
    course_server: GunicornServer,
) -> None:
    """Register, a duplicate, then the course's round of tasks twice over for the same
    email: ten reset tokens asked for one email within a minute, each round's update
    working, every reused token refused."""
    course = Course(course_server.url)
    form = {"email": EMAIL, "password": "b4l0u"}
    first = course.step("register", "POST", "/users", 200, data=form)
    assert first.json() == {"email": EMAIL, "message": "user created"}
    duplicate = course.step("register again", "POST", "/users", 400, data=form)
    assert duplicate.json() == {"message": "email already registered"}
    course.round("b4l0u", "t4rt1fl3tt3")
    course.round("t4rt1fl3tt3", "b4l0u again")
    assert len(course.steps) == 2 + 2 * 14


def test_fifty_sign_ups_from_one_address(course_server: GunicornServer) -> None:
    """A class of fifty behind one school router signs up in its first lesson."""
    for index in range(50):
        data = {"email": f"pupil{index}@school.example", "password": "pw"}
        answer = requests.post(f"{course_server.url}/users", data=data, timeout=TIMEOUT)
        assert answer.status_code == 200, (index, answer.text)


def test_fifty_reset_requests_from_one_address(course_server: GunicornServer) -> None:
    """Ten of the class forget their password and ask five times each."""
    for index in range(10):
        data = {"email": f"pupil{index}@school.example", "password": "pw"}
        requests.post(f"{course_server.url}/users", data=data, timeout=TIMEOUT)
    for attempt in range(5):
        for index in range(10):
            data = {"email": f"pupil{index}@school.example"}
            answer = requests.post(
                f"{course_server.url}/reset_password", data=data, timeout=TIMEOUT
            )
            assert answer.status_code == 200, (attempt, index, answer.text)
            assert answer.json()["reset_token"]
