"""SPEC "Modes" and "Passwords": course and production, the password policy, `check`.

A server started with no settings is in course mode and serves the course's clients as
before; production mode refuses to start without its settings, naming each, and changes
its defaults; `python authsvc.py check` is the operator's checklist. A new password
(registration, reset, the operator's set-password) passes one policy, with the reason in
every refusal; a login never checks it.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
from pathlib import Path

import pytest
from conftest import (
    FAST_ROUNDS,
    AuthActions,
    assert_json,
    client_for,
    run_authsvc,
    snapshot,
)
from servers import ROOT
from werkzeug.test import Client

import authsvc
import passwords
from authsvc import Auth, Config, ConfigError
from passwords import PasswordPolicy, WeakPassword

EMAIL = "bob@example.com"
# What production needs to start (SPEC "Modes"), and nothing more.
PRODUCTION = {
    "AUTHSVC_MODE": "production",
    "AUTHSVC_SECRET_KEY": "k" * 64,
    "AUTHSVC_COOKIE_SECURE": "true",
    "AUTHSVC_RESET_DELIVERY": "smtp",
    "AUTHSVC_SMTP_FROM": "no-reply@example.com",
    "AUTHSVC_WEBAUTHN_RP_ID": "example.com",
    "AUTHSVC_WEBAUTHN_ORIGINS": "https://auth.example.com",
}
REFUSED_WITHOUT_SETTINGS = [
    "AUTHSVC_SECRET_KEY",
    "AUTHSVC_COOKIE_SECURE",
    "AUTHSVC_RESET_DELIVERY",
    "AUTHSVC_SMTP_FROM",
    "AUTHSVC_WEBAUTHN_RP_ID",
    "AUTHSVC_WEBAUTHN_ORIGINS",
]
LONG_PASSWORD = "a long enough passphrase"  # 24 characters, in no list


# -- the modes


def test_course_mode_is_the_default_and_keeps_the_course() -> None:
    config = Config.from_env({})
    assert config.mode == "course"
    assert (config.password_min_length, config.password_blocklist) == (1, False)
    assert config.cookie_name == "session_id"


def test_production_changes_the_defaults() -> None:
    config = Config.from_env(PRODUCTION)
    assert config.mode == "production"
    assert (config.password_min_length, config.password_blocklist) == (15, True)
    assert config.cookie_name == "__Host-session"
    assert Config(mode="production").password_min_length == 15


def test_every_production_default_can_be_set_explicitly() -> None:
    config = Config.from_env(
        {
            **PRODUCTION,
            "AUTHSVC_PASSWORD_MIN_LENGTH": "8",
            "AUTHSVC_PASSWORD_BLOCKLIST": "false",
            "AUTHSVC_COOKIE_NAME": "session_id",
        }
    )
    assert (config.password_min_length, config.password_blocklist) == (8, False)
    assert config.cookie_name == "session_id"
    course = Config.from_env(
        {"AUTHSVC_PASSWORD_MIN_LENGTH": "12", "AUTHSVC_PASSWORD_BLOCKLIST": "yes"}
    )
    assert (course.password_min_length, course.password_blocklist) == (12, True)


def test_production_refuses_to_start_naming_each_variable() -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_env({"AUTHSVC_MODE": "production"})
    message = str(refused.value)
    assert message.startswith("AUTHSVC_MODE=production refuses to start: ")
    for name in REFUSED_WITHOUT_SETTINGS:
        assert name in message
    for missing in REFUSED_WITHOUT_SETTINGS:
        almost = {k: v for k, v in PRODUCTION.items() if k != missing}
        if missing == "AUTHSVC_RESET_DELIVERY":  # smtp needs its sender: keep it
            almost["AUTHSVC_SMTP_FROM"] = PRODUCTION["AUTHSVC_SMTP_FROM"]
        with pytest.raises(ConfigError) as one:
            Config.from_env(almost)
        assert missing in str(one.value)
        others = set(REFUSED_WITHOUT_SETTINGS) - {missing}
        assert not any(f"{name} " in str(one.value) for name in others)


@pytest.mark.parametrize(("length", "starts"), [("7", False), ("8", True)])
def test_production_may_lower_the_minimum_length_to_eight_and_no_further(
    length: str, starts: bool
) -> None:
    settings = {**PRODUCTION, "AUTHSVC_PASSWORD_MIN_LENGTH": length}
    if starts:
        assert Config.from_env(settings).password_min_length == 8
    else:
        with pytest.raises(ConfigError, match="AUTHSVC_PASSWORD_MIN_LENGTH"):
            Config.from_env(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTHSVC_MODE", "staging"), ("AUTHSVC_PASSWORD_MIN_LENGTH", "0")],
)
def test_a_bad_mode_or_length_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} "):
        Config.from_env({name: value})


def test_an_app_built_in_python_is_refused_too(config: Config) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_SECRET_KEY"):
        authsvc.create_app(dataclasses.replace(config, mode="production"))


def test_course_mode_warns_once_with_what_production_would_refuse(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="authsvc"):
        authsvc.create_app(config)
    warnings = [
        r.getMessage() for r in caplog.records if "AUTHSVC_MODE" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert warnings[0].startswith("AUTHSVC_MODE=course")
    for name in REFUSED_WITHOUT_SETTINGS:
        assert name in warnings[0]
    assert "15 characters" in warnings[0]


def test_production_starts_and_says_nothing_of_modes(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config.from_env({**PRODUCTION, "AUTHSVC_DB": database_url})
    with caplog.at_level(logging.WARNING, logger="authsvc"):
        authsvc.create_app(dataclasses.replace(config, bcrypt_rounds=FAST_ROUNDS))
    assert not [r for r in caplog.records if "AUTHSVC_MODE" in r.getMessage()]


@pytest.mark.e2e
def test_gunicorn_in_production_without_its_settings_exits_naming_them(
    tmp_path: Path,
) -> None:
    from conftest import start_gunicorn

    with pytest.raises(pytest.fail.Exception, match="gunicorn exited"):
        start_gunicorn(
            tmp_path / "x.db",
            tmp_path / "gunicorn.log",
            env={"AUTHSVC_MODE": "production"},
        )
    log = (tmp_path / "gunicorn.log").read_text()
    assert "AUTHSVC_MODE=production refuses to start" in log
    for name in REFUSED_WITHOUT_SETTINGS:
        assert name in log


# -- python authsvc.py check


def check(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python authsvc.py check` with exactly these AUTHSVC_* settings."""
    return run_authsvc("check", env=env)


def test_check_lists_course_mode_and_everything_production_would_refuse() -> None:
    result = check({})
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "AUTHSVC_MODE",
        *REFUSED_WITHOUT_SETTINGS,
    ]
    assert all(": " in line and len(line.split(": ", 1)[1]) > 10 for line in lines)
    assert result.stderr.strip().endswith(
        "check: 7 thing(s) stand between these settings and a production start"
    )


def test_check_passes_only_on_production_settings_that_are_complete() -> None:
    done = check(PRODUCTION)
    assert (done.returncode, done.stdout) == (
        0,
        "these settings start in production mode\n",
    )
    almost = check({**PRODUCTION, "AUTHSVC_COOKIE_SECURE": "false"})
    assert almost.returncode == 1
    assert almost.stdout.startswith("AUTHSVC_COOKIE_SECURE: must be true")
    course_but_complete = check(
        {k: v for k, v in PRODUCTION.items() if k != "AUTHSVC_MODE"}
    )
    assert course_but_complete.returncode == 1
    assert course_but_complete.stdout.splitlines()[0].startswith(
        "AUTHSVC_MODE: is course"
    )
    assert len(course_but_complete.stdout.splitlines()) == 1


def test_check_names_a_bad_value_in_one_line() -> None:
    result = check({"AUTHSVC_SESSION_TTL": "forever"})
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("check: AUTHSVC_SESSION_TTL must be an integer")
    )


# -- the password policy


def test_the_blocklist_is_read_from_the_package_and_large() -> None:
    common = passwords.common_passwords()
    assert len(common) >= 10_000
    assert {"password", "123456", "qwerty"} <= common
    assert not (ROOT / "common-passwords.txt").exists()


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "password must be at least 15 characters"),
        ("ééééééééééééééé", None),  # 15 code points (30 bytes): long enough
        ("QWERTYUIOP12345", "password is too common"),  # in the list, any case
        ("bob@example.com is mine", "password must not contain your email"),
        ("my name is Bob!!", "password must not contain your email"),  # the local part
        (LONG_PASSWORD, None),
    ],
)
def test_each_rule_gives_its_reason(password: str, reason: str | None) -> None:
    policy = PasswordPolicy(min_length=15, blocklist=True)
    passwords.common_passwords.cache_clear()
    if reason is None:
        policy.check(password, EMAIL)
    else:
        with pytest.raises(WeakPassword) as refused:
            policy.check(password, EMAIL)
        assert str(refused.value) == reason


def test_the_course_policy_takes_any_non_empty_password() -> None:
    policy = PasswordPolicy.from_config(Config())
    for password in ("a", "password", EMAIL):
        policy.check(password, EMAIL)
    assert policy.describe() == {
        "min_length": 1,
        "max_bytes": 72,
        "blocklist": False,
        "email_rule": False,
    }


def test_a_two_letter_local_part_refuses_no_password() -> None:
    PasswordPolicy(min_length=1, blocklist=True).check("bonjour à tous", "bo@x.io")


@pytest.fixture
def strict(config: Config) -> Config:
    """Course mode with production's password policy (so no SMTP is needed)."""
    return dataclasses.replace(config, password_min_length=15, password_blocklist=True)


def test_get_password_policy_says_the_rules_in_force(
    client: Client, strict: Config
) -> None:
    assert_json(
        client.get("/account/password_policy"),
        200,
        {"min_length": 1, "max_bytes": 72, "blocklist": False, "email_rule": False},
    )
    answer = client_for(strict).get("/account/password_policy")
    assert_json(
        answer,
        200,
        {"min_length": 15, "max_bytes": 72, "blocklist": True, "email_rule": True},
    )
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "password must be at least 15 characters"),
        ("qwerty123456789", "password is too common"),
        ("bob@example.com-1", "password must not contain your email"),
    ],
)
def test_a_refused_sign_up_says_why_and_stores_nothing(
    strict: Config, password: str, reason: str
) -> None:
    passwords.common_passwords.cache_clear()
    if reason == "password is too common":
        assert password in passwords.common_passwords()
    client = client_for(strict)
    refused = AuthActions(client).register(EMAIL, password)
    assert_json(refused, 400, {"message": reason})
    assert snapshot(strict.db) == {"users": [], "sessions": []}
    assert AuthActions(client).register(EMAIL, LONG_PASSWORD).status_code == 200


def test_a_refused_reset_says_why_and_the_token_still_works(strict: Config) -> None:
    client = client_for(strict)
    actions = AuthActions(client)
    actions.register(EMAIL, LONG_PASSWORD)
    token = actions.reset_token(EMAIL)
    weak = {"email": EMAIL, "reset_token": token, "new_password": "password"}
    assert_json(
        client.put("/reset_password", data=weak),
        400,
        {"message": "password must be at least 15 characters"},
    )
    strong = {**weak, "new_password": "another long passphrase"}
    assert client.put("/reset_password", data=strong).status_code == 200


def test_a_login_never_checks_the_policy(config: Config, strict: Config) -> None:
    """A password set under a looser policy still logs in after the policy tightens."""
    AuthActions(client_for(config)).register(EMAIL, "pw")
    assert AuthActions(client_for(strict)).login(EMAIL, "pw").status_code == 200


def test_the_python_api_uses_the_same_policy(strict: Config) -> None:
    auth = Auth(strict)
    with pytest.raises(WeakPassword, match="at least 15 characters"):
        auth.register_user(EMAIL, "short")
    auth.close()


def run_with_password(
    *args: str, db: str, password: str
) -> subprocess.CompletedProcess:
    """A command reading a password from stdin, with production's policy in course mode."""
    env = {
        "AUTHSVC_DB": db,
        "AUTHSVC_BCRYPT_ROUNDS": str(FAST_ROUNDS),
        "AUTHSVC_PASSWORD_MIN_LENGTH": "15",
        "AUTHSVC_PASSWORD_BLOCKLIST": "true",
    }
    return run_authsvc(*args, env=env, stdin=password + "\n")


def test_the_commands_refuse_a_weak_password_saying_why(database_url: str) -> None:
    created = run_with_password("create-user", EMAIL, db=database_url, password="short")
    assert created.returncode == 1
    assert created.stderr.strip().endswith(
        "create-user: password must be at least 15 characters"
    )
    ok = run_with_password(
        "create-user", EMAIL, db=database_url, password=LONG_PASSWORD
    )
    assert ok.returncode == 0, ok.stderr
    weak = run_with_password(
        "set-password", EMAIL, db=database_url, password="1qaz2wsx3edc4rfv"
    )
    assert weak.stderr.strip().endswith("set-password: password is too common")
