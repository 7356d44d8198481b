"""Configuration: AUTHSVC_* variables read once, validated, and a bad value stops start-up."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import start_gunicorn
from servers import ROOT

from authsvc import Auth, Config, ConfigError


def test_defaults_follow_the_spec() -> None:
    config = Config.from_env({})
    assert config == Config(
        db="authsvc.db",
        bcrypt_rounds=12,
        session_ttl=86400,
        reset_ttl=900,
        cookie_secure=False,
        login_max_failures=10,
        login_window=900,
    )


def test_every_variable_is_read() -> None:
    config = Config.from_env(
        {
            "AUTHSVC_DB": "/var/lib/authsvc/users.db",
            "AUTHSVC_BCRYPT_ROUNDS": "13",
            "AUTHSVC_SESSION_TTL": "3600",
            "AUTHSVC_SESSION_IDLE_TTL": "900",
            "AUTHSVC_MAX_SESSIONS": "5",
            "AUTHSVC_RESET_TTL": "600",
            "AUTHSVC_COOKIE_SECURE": "true",
            "AUTHSVC_LOGIN_MAX_FAILURES": "5",
            "AUTHSVC_LOGIN_WINDOW": "60",
        }
    )
    assert config == Config(
        db="/var/lib/authsvc/users.db",
        bcrypt_rounds=13,
        session_ttl=3600,
        session_idle_ttl=900,
        max_sessions=5,
        reset_ttl=600,
        cookie_secure=True,
        login_max_failures=5,
        login_window=60,
    )


@pytest.mark.parametrize("value", ["1", "yes", "ON", " True "])
def test_cookie_secure_accepts_the_usual_yes(value: str) -> None:
    assert Config.from_env({"AUTHSVC_COOKIE_SECURE": value}).cookie_secure is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTHSVC_DB", ""),
        ("AUTHSVC_BCRYPT_ROUNDS", "abc"),
        ("AUTHSVC_BCRYPT_ROUNDS", "3"),
        ("AUTHSVC_BCRYPT_ROUNDS", "32"),
        ("AUTHSVC_BCRYPT_ROUNDS", "12.5"),
        ("AUTHSVC_SESSION_TTL", "0"),
        ("AUTHSVC_SESSION_TTL", "-5"),
        ("AUTHSVC_SESSION_TTL", "1d"),
        ("AUTHSVC_RESET_TTL", ""),
        ("AUTHSVC_COOKIE_SECURE", "maybe"),
        ("AUTHSVC_LOGIN_MAX_FAILURES", "0"),
        ("AUTHSVC_LOGIN_WINDOW", "soon"),
        ("AUTHSVC_SESSION_IDLE_TTL", "-1"),
        ("AUTHSVC_SESSION_IDLE_TTL", "an hour"),
        ("AUTHSVC_MAX_SESSIONS", "0"),
        ("AUTHSVC_MAX_SESSIONS", "1001"),
        # Values past any sane lifetime, which overflowed the clock arithmetic (a 500 at
        # every login or reset) before they had an upper bound.
        ("AUTHSVC_SESSION_TTL", "1" + "0" * 400),
        ("AUTHSVC_SESSION_IDLE_TTL", "1" + "0" * 400),
        ("AUTHSVC_LOGIN_WINDOW", "1" + "0" * 400),
        ("AUTHSVC_RESET_TTL", "1" + "0" * 400),
        ("AUTHSVC_SESSION_TTL", str(366 * 86400 + 1)),
        ("AUTHSVC_RESET_TTL", str(86400 + 1)),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} "):
        Config.from_env({name: value})


def test_idle_expiry_can_be_turned_off() -> None:
    assert Config.from_env({"AUTHSVC_SESSION_IDLE_TTL": "0"}).session_idle_ttl == 0


def test_the_session_defaults_are_nists_aal2_values() -> None:
    config = Config.from_env({})
    assert (config.session_ttl, config.session_idle_ttl, config.max_sessions) == (
        86400,
        3600,
        20,
    )


def test_python_authsvc_refuses_to_start_on_a_bad_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "authsvc.py"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "AUTHSVC_DB": str(tmp_path / "x.db"),
            "AUTHSVC_SESSION_TTL": "forever",
        },
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "AUTHSVC_SESSION_TTL must be an integer" in result.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.e2e
def test_gunicorn_exits_on_a_bad_value_instead_of_respawning(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="gunicorn exited"):
        start_gunicorn(
            tmp_path / "x.db",
            tmp_path / "gunicorn.log",
            env={"AUTHSVC_BCRYPT_ROUNDS": "lots"},
        )
    log = (tmp_path / "gunicorn.log").read_text()
    assert "AUTHSVC_BCRYPT_ROUNDS must be an integer from 4 to 31, got 'lots'" in log
    assert "Worker failed to boot" in log


@pytest.mark.parametrize(
    ("db", "reason"),
    [
        (":memory:", "is not a file"),
        ("/nonexistent/dir/a.db", "cannot open"),
    ],
)
def test_a_database_that_cannot_serve_stops_start_up_naming_authsvc_db(
    db: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=f"^AUTHSVC_DB=.*{reason}"):
        Auth(Config(db=db, bcrypt_rounds=4))


def test_a_database_file_that_cannot_be_written_stops_start_up() -> None:
    """SQLite opens a read-only file and fails only at the first write: check first.

    Root may write anything, so as root the test takes the effective user id of
    `nobody` while it starts authsvc on a file root owns (mode 644), in a folder that
    nobody may read but not write.
    """
    folder = Path(tempfile.mkdtemp(prefix="authsvc-readonly-"))
    db = folder / "authsvc.db"
    try:
        Auth(Config(db=str(db), bcrypt_rounds=4)).close()
        folder.chmod(0o755)
        db.chmod(0o644 if os.geteuid() == 0 else 0o444)
        with as_nobody(), pytest.raises(ConfigError) as refused:
            Auth(Config(db=str(db), bcrypt_rounds=4))
    finally:
        shutil.rmtree(folder)
    assert str(refused.value).startswith("AUTHSVC_DB=")
    assert "is not writable" in str(refused.value)


@contextlib.contextmanager
def as_nobody() -> Iterator[None]:
    """As root: run the block with the effective user id of `nobody`. Otherwise: as is."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(pwd.getpwnam("nobody").pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
