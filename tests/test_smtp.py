"""Reset tokens by mail (AUTHSVC_RESET_DELIVERY=smtp), against a real SMTP server on loopback.

aiosmtpd runs in a thread of the test process and keeps every message it receives; the
tests take the token out of the mail, as a user would, and spend it.
"""

from __future__ import annotations

import logging
import re
import shutil
import ssl
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from conftest import GENEROUS_LIMITS, AuthActions, FakeClock, client_for
from pgserver import free_port  # aiosmtpd needs a port number up front
from servers import GunicornServer
from werkzeug.test import Client

from authsvc import RESET_MAILED_MESSAGE, Config, ConfigError

EMAIL = "bob@example.com"
PASSWORD = "s3cret pw"
SENDER = "authsvc@example.com"
TOKEN_IN_MAIL = re.compile(r"Reset token: ([0-9a-f-]{36})")


CODE_SUBJECT = "Your authsvc verification code"


@dataclass
class Mailbox:
    """What the SMTP server received, parsed.

    `messages` holds every mail but the verification codes (a sign-up in smtp delivery
    mails one at once, which the tests of resets do not count); `codes` holds those
    (tests/test_account.py reads them); `everything` both, in order.
    """

    messages: list[EmailMessage] = field(default_factory=list)
    codes: list[EmailMessage] = field(default_factory=list)
    everything: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Keep the message."""
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.everything.append(message)
        if message["Subject"] == CODE_SUBJECT:
            self.codes.append(message)
        else:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def code_for(self, email: str) -> str:
        """The verification code in the last code mail to `email`."""
        message = [m for m in self.codes if m["To"] == email][-1]
        return re.search(r"\b(\d{6})\b", message.get_content()).group(1)

    def token_for(self, email: str) -> str:
        """The reset token in the last message to `email`."""
        message = [m for m in self.messages if m["To"] == email][-1]
        return TOKEN_IN_MAIL.search(message.get_content()).group(1)


@dataclass
class SmtpServer:
    """A running aiosmtpd server and its mailbox."""

    port: int
    mailbox: Mailbox
    controller: Controller


def start_smtp(**controller_options: object) -> SmtpServer:
    """Start aiosmtpd on 127.0.0.1."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, **controller_options
    )
    controller.start()
    return SmtpServer(port=port, mailbox=mailbox, controller=controller)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A plain SMTP server on loopback, stopped after the test."""
    server = start_smtp()
    yield server
    server.controller.stop()


def smtp_config(config: Config, port: int, **overrides: object) -> Config:
    """The test's config, delivering reset tokens through 127.0.0.1:`port`."""
    settings = {
        "db": config.db,
        "bcrypt_rounds": 4,
        "reset_delivery": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_from": SENDER,
        **overrides,
    }
    return Config(**settings)


@pytest.fixture
def mail_client(config: Config, clock: FakeClock, smtp: SmtpServer) -> Client:
    """A client of an app that mails reset tokens to the `smtp` server; Bob is registered."""
    mail_config = smtp_config(config, smtp.port)
    client = client_for(mail_config, clock)
    assert AuthActions(client).register(EMAIL, PASSWORD).status_code == 200
    return client


def ask_reset(client: Client, email: str = EMAIL) -> object:
    """POST /reset_password."""
    return client.post("/reset_password", data={"email": email})


def spend(
    client: Client, token: str, password: str = "n3w pw", email: str = EMAIL
) -> object:
    """PUT /reset_password."""
    data = {"email": email, "reset_token": token, "new_password": password}
    return client.put("/reset_password", data=data)


def test_the_token_arrives_by_mail_and_resets_the_password(
    mail_client: Client, smtp: SmtpServer
) -> None:
    response = ask_reset(mail_client)
    assert response.status_code == 200
    assert response.json == {
        "message": RESET_MAILED_MESSAGE
    }  # no token in the response
    (message,) = smtp.mailbox.messages
    assert (message["From"], message["To"]) == (SENDER, EMAIL)
    token = smtp.mailbox.token_for(EMAIL)
    assert spend(mail_client, token).status_code == 200
    assert AuthActions(mail_client).login(EMAIL, "n3w pw").status_code == 200
    assert spend(mail_client, token, "again").status_code == 403


def test_an_unknown_email_gets_the_same_answer_and_a_notice_without_token(
    mail_client: Client, smtp: SmtpServer, db_rows: Callable[[], list[tuple]]
) -> None:
    before = db_rows()
    known = ask_reset(mail_client)
    unknown = ask_reset(mail_client, "nobody@example.com")
    assert (unknown.status_code, unknown.json) == (known.status_code, known.json)
    assert [m["To"] for m in smtp.mailbox.messages] == [EMAIL, "nobody@example.com"]
    assert [m["Subject"] for m in smtp.mailbox.messages] == [
        "Your authsvc password reset"
    ] * 2
    notice = smtp.mailbox.messages[1].get_content()
    assert "no account uses it" in notice
    assert not TOKEN_IN_MAIL.search(notice)
    assert len(db_rows()) == 1  # no user was created
    assert db_rows()[0][:4] == before[0][:4]  # only Bob's reset columns changed


@pytest.mark.parametrize(
    "email", [EMAIL, "nobody@example.com"], ids=["registered", "unknown"]
)
def test_smtp_down_is_503_and_changes_nothing(
    config: Config, clock: FakeClock, db_rows: Callable[[], list[tuple]], email: str
) -> None:
    down = smtp_config(config, free_port())  # nothing listens there
    client = client_for(down, clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    before = db_rows()
    response = ask_reset(client, email)
    assert response.status_code == 503
    assert response.json == {"message": "could not send the email; try again later"}
    assert db_rows() == before


def test_a_failed_delivery_leaves_the_new_token_unusable(
    mail_client: Client,
    smtp: SmtpServer,
    config: Config,
    clock: FakeClock,
    db_rows: Callable[[], list[tuple]],
) -> None:
    """The earlier token stays as it was; the one that could not be sent never works."""
    ask_reset(mail_client)
    earlier = smtp.mailbox.token_for(EMAIL)
    before = db_rows()
    down = smtp_config(
        config, free_port()
    )  # the same database, an SMTP server that is down
    assert ask_reset(client_for(down, clock)).status_code == 503
    assert db_rows() == before
    assert spend(mail_client, earlier).status_code == 200


def test_a_reset_request_takes_the_same_time_registered_or_not(
    config: Config, clock: FakeClock, smtp: SmtpServer
) -> None:
    """Medians of 51 each, interleaved, which goes first alternating, after one warm-up
    pair: a token mail vs a no-account notice (the per-email limits lifted: past them
    nothing is sent at all, for either).

    The bound allows this shared machine's noise; what makes the two equal is the same
    SMTP dialogue and the same one commit (test_a_registered_and_an_unknown_address_do_
    the_same_work checks that exactly).
    """
    mail_client = client_for(smtp_config(config, smtp.port, **GENEROUS_LIMITS), clock)
    assert AuthActions(mail_client).register(EMAIL, PASSWORD).status_code == 200
    timings: dict[str, list[float]] = {EMAIL: [], "nobody@example.com": []}
    for email in timings:  # warm-up: first connections, first statements prepared
        assert ask_reset(mail_client, email).status_code == 200
    for round_number in range(51):
        order = list(timings) if round_number % 2 else list(reversed(timings))
        for email in order:
            start = time.perf_counter()
            assert ask_reset(mail_client, email).status_code == 200
            timings[email].append(time.perf_counter() - start)
    known, unknown = (statistics.median(samples) for samples in timings.values())
    print(
        f"\nreset request: registered {known * 1000:.2f} ms, unknown {unknown * 1000:.2f} ms"
    )
    assert 0.8 <= unknown / known <= 1.25


def test_smtp_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="^AUTHSVC_RESET_DELIVERY "):
        Config.from_env({"AUTHSVC_RESET_DELIVERY": "pigeon"})
    with pytest.raises(ConfigError, match="^AUTHSVC_SMTP_FROM "):
        Config.from_env({"AUTHSVC_RESET_DELIVERY": "smtp"})
    with pytest.raises(ConfigError, match="^AUTHSVC_SMTP_PORT "):
        Config.from_env({"AUTHSVC_SMTP_PORT": "70000"})
    with pytest.raises(
        ConfigError, match="^AUTHSVC_SMTP_USER and AUTHSVC_SMTP_PASSWORD "
    ):
        Config.from_env({"AUTHSVC_SMTP_USER": "mailer"})
    config = Config.from_env(
        {
            "AUTHSVC_RESET_DELIVERY": "smtp",
            "AUTHSVC_SMTP_HOST": "mail.example.com",
            "AUTHSVC_SMTP_PORT": "587",
            "AUTHSVC_SMTP_FROM": SENDER,
            "AUTHSVC_SMTP_USER": "mailer",
            "AUTHSVC_SMTP_PASSWORD": "hunter2",
            "AUTHSVC_SMTP_STARTTLS": "yes",
        }
    )
    assert (config.smtp_host, config.smtp_port, config.smtp_starttls) == (
        "mail.example.com",
        587,
        True,
    )
    assert "hunter2" not in repr(config)


# -- STARTTLS and AUTH


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the test's own CA)."""
    if shutil.which("openssl") is None:
        pytest.fail(
            "openssl is needed to make a test certificate (.ci/run installs it)"
        )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def check_login(
    server: SMTP,
    session: Session,
    envelope: Envelope,
    mechanism: str,
    auth_data: object,
) -> AuthResult:
    """aiosmtpd authenticator: only mailer / hunter2."""
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login,
        auth_data.password,
    ) == (
        b"mailer",
        b"hunter2",
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


def test_starttls_and_login(
    config: Config,
    clock: FakeClock,
    tls_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = start_smtp(
        tls_context=server_tls,
        require_starttls=True,
        authenticator=check_login,
        auth_require_tls=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test CA, as a system CA
    try:
        secure = smtp_config(
            config,
            server.port,
            smtp_starttls=True,
            smtp_user="mailer",
            smtp_password="hunter2",
        )
        client = client_for(secure, clock)
        AuthActions(client).register(EMAIL, PASSWORD)
        assert ask_reset(client).status_code == 200
        assert spend(client, server.mailbox.token_for(EMAIL)).status_code == 200

        wrong = smtp_config(
            config,
            server.port,
            smtp_starttls=True,
            smtp_user="mailer",
            smtp_password="wrong",
        )
        assert ask_reset(client_for(wrong, clock)).status_code == 503
        plain = smtp_config(config, server.port)  # no STARTTLS: the server refuses
        assert ask_reset(client_for(plain, clock)).status_code == 503
    finally:
        server.controller.stop()


def test_starttls_refuses_an_untrusted_certificate(
    config: Config, clock: FakeClock, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = start_smtp(tls_context=server_tls, require_starttls=True)
    try:
        secure = smtp_config(config, server.port, smtp_starttls=True)
        client = client_for(secure, clock)
        AuthActions(client).register(EMAIL, PASSWORD)
        assert ask_reset(client).status_code == 503
        assert server.mailbox.messages == []
    finally:
        server.controller.stop()


# -- end to end


@pytest.mark.e2e
def test_mailed_reset_through_gunicorn(
    start_server: Callable[..., GunicornServer], smtp: SmtpServer
) -> None:
    server = start_server(
        env={
            "AUTHSVC_RESET_DELIVERY": "smtp",
            "AUTHSVC_SMTP_HOST": "127.0.0.1",
            "AUTHSVC_SMTP_PORT": str(smtp.port),
            "AUTHSVC_SMTP_FROM": SENDER,
        }
    )
    url = server.url
    requests.post(
        f"{url}/users", data={"email": EMAIL, "password": PASSWORD}, timeout=10
    )
    response = requests.post(f"{url}/reset_password", data={"email": EMAIL}, timeout=10)
    assert response.json() == {"message": RESET_MAILED_MESSAGE}
    token = smtp.mailbox.token_for(EMAIL)
    data = {"email": EMAIL, "reset_token": token, "new_password": "n3w pw"}
    assert (
        requests.put(f"{url}/reset_password", data=data, timeout=10).status_code == 200
    )
    login = requests.post(
        f"{url}/sessions", data={"email": EMAIL, "password": "n3w pw"}, timeout=10
    )
    assert login.status_code == 200
    assert (
        "AUTHSVC_RESET_DELIVERY=response" not in server.log()
    )  # no warning in smtp mode


# -- addresses the mailer cannot take, and the same work for every address


@pytest.mark.parametrize(
    "email", ["a@[b.c", "(@a.b)<", "=?utf-8?b?@,().,,]", "a,b@c.io", "a:b@c.io"]
)
def test_an_address_the_mailer_cannot_take_gets_the_usual_answer_and_no_mail(
    mail_client: Client, smtp: SmtpServer, email: str
) -> None:
    """Such an address cannot be registered either, so it is one nobody has."""
    before = len(smtp.mailbox.messages)
    response = ask_reset(mail_client, email)
    assert (response.status_code, response.json) == (
        200,
        {"message": RESET_MAILED_MESSAGE},
    )
    assert len(smtp.mailbox.messages) == before
    refused = AuthActions(mail_client).register(email, PASSWORD)
    assert refused.status_code == 400


def test_a_unicode_address_gets_its_mail(config: Config, clock: FakeClock) -> None:
    """An SMTPUTF8 server takes "josé@..." as it is."""
    server = start_smtp(enable_SMTPUTF8=True)
    try:
        client = client_for(smtp_config(config, server.port), clock)
        AuthActions(client).register("josé@example.com", PASSWORD)
        assert ask_reset(client, "josé@example.com").status_code == 200
        assert server.mailbox.token_for("josé@example.com")
    finally:
        server.controller.stop()


@pytest.mark.sqlite_only  # counts COMMITs with sqlite3's trace callback
def test_a_registered_and_an_unknown_address_do_the_same_work(
    mail_client: Client, smtp: SmtpServer
) -> None:
    """One mail and one write transaction each: the statements differ only in what
    they write, not in how many commits (each an fsync) they cost."""
    auth = mail_client.application.app.auth
    conn = auth._db._connection()

    def work(email: str) -> tuple[int, int]:
        seen: list[str] = []
        mails = len(smtp.mailbox.messages)
        conn.set_trace_callback(seen.append)
        try:
            assert ask_reset(mail_client, email).status_code == 200
        finally:
            conn.set_trace_callback(None)
        commits = sum(statement.strip().upper() == "COMMIT" for statement in seen)
        return commits, len(smtp.mailbox.messages) - mails

    assert work(EMAIL) == work("nobody@example.com") == (1, 1)


# -- Hardening II: limits on what the service mails, and the notice after a change


def test_past_the_per_email_limit_the_answer_is_the_same_and_nothing_is_sent(
    config: Config, clock: FakeClock, smtp: SmtpServer
) -> None:
    """Nobody learns of the limit from the answer, and nobody can flood a mailbox: from
    one client, 3 mails an hour per address (AUTHSVC_RESET_MAX_PER_EMAIL)."""
    client = client_for(smtp_config(config, smtp.port), clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    for email in (EMAIL, "nobody@example.com"):
        answers = [ask_reset(client, email) for _ in range(5)]
        assert {(a.status_code, a.json["message"]) for a in answers} == {
            (200, RESET_MAILED_MESSAGE)
        }
    assert [m["To"] for m in smtp.mailbox.messages] == [EMAIL] * 3 + [
        "nobody@example.com"
    ] * 3
    clock.advance(60 * 60 + 1)  # a new hour
    assert ask_reset(client).status_code == 200
    assert len(smtp.mailbox.messages) == 7


def ask_reset_from(client: Client, address: str, email: str = EMAIL) -> object:
    """POST /reset_password from the client at `address`."""
    return client.post(
        "/reset_password", data={"email": email}, environ_base={"REMOTE_ADDR": address}
    )


def test_a_strangers_requests_do_not_silence_the_owners(
    config: Config, clock: FakeClock, smtp: SmtpServer
) -> None:
    """Counted per (email, client): a stranger's three requests (and thirty more) spend
    only their own budget for Bob's address; Bob's own request is still mailed."""
    client = client_for(smtp_config(config, smtp.port), clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    for _ in range(33):
        assert ask_reset_from(client, "198.51.100.66").status_code == 200
    assert len(smtp.mailbox.messages) == 3
    assert ask_reset_from(client, "192.0.2.10").status_code == 200
    assert len(smtp.mailbox.messages) == 4
    token = smtp.mailbox.token_for(EMAIL)
    assert spend(client, token).status_code == 200


def test_the_per_email_ceiling_holds_from_many_clients(
    config: Config, clock: FakeClock, smtp: SmtpServer
) -> None:
    """AUTHSVC_EMAIL_MAX_RESETS (10) mails an hour to one address, whoever asks."""
    client = client_for(smtp_config(config, smtp.port), clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    for index in range(20):
        assert ask_reset_from(client, f"198.51.100.{index}").status_code == 200
    assert len(smtp.mailbox.messages) == 10
    clock.advance(60 * 60 + 1)
    assert ask_reset_from(client, "192.0.2.10").status_code == 200
    assert len(smtp.mailbox.messages) == 11


@pytest.mark.parametrize("line_break", ["\x85", "\u2028", "\u2029"])
def test_an_unknown_address_with_a_unicode_line_break_gets_the_usual_answer(
    mail_client: Client, smtp: SmtpServer, line_break: str
) -> None:
    """No mail header can hold such an address, and it is no single mailbox: the
    usual 200, and nothing sent (it was a 500: the To header refused it)."""
    answer = ask_reset(mail_client, f"bob{line_break}x@example.com")
    assert answer.status_code == 200
    assert answer.json == {"message": RESET_MAILED_MESSAGE}
    assert smtp.mailbox.messages == []


def test_every_mailed_token_stays_usable_until_one_is_spent(
    mail_client: Client, smtp: SmtpServer
) -> None:
    ask_reset(mail_client)
    first = smtp.mailbox.token_for(EMAIL)
    ask_reset(mail_client)  # someone asks again: the first mail still works
    second = smtp.mailbox.token_for(EMAIL)
    assert first != second
    assert spend(mail_client, first).status_code == 200
    assert spend(mail_client, second, "again").status_code == 403  # the reset ended it


def test_past_the_per_client_limit_smtp_delivery_answers_429(
    config: Config, clock: FakeClock, smtp: SmtpServer
) -> None:
    client = client_for(smtp_config(config, smtp.port, client_max_resets=2), clock)
    for index in range(2):
        assert ask_reset(client, f"user{index}@example.com").status_code == 200
    refused = ask_reset(client, "user2@example.com")
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers
    assert len(smtp.mailbox.messages) == 2


def test_a_password_change_mails_a_notice_without_secrets(
    mail_client: Client, smtp: SmtpServer
) -> None:
    """ASVS 2.5.5: the owner learns of a change they did not make."""
    ask_reset(mail_client)
    token = smtp.mailbox.token_for(EMAIL)
    assert spend(mail_client, token, "n3w pw").status_code == 200
    notice = smtp.mailbox.messages[-1]
    assert (notice["To"], notice["Subject"]) == (
        EMAIL,
        "Your authsvc password was changed",
    )
    body = notice.get_content()
    assert "password" in body and token not in body and "n3w pw" not in body
    assert not TOKEN_IN_MAIL.search(body)


def test_a_notice_that_cannot_be_sent_does_not_undo_the_change(
    config: Config, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_smtp()  # its own, stopped halfway through
    client = client_for(smtp_config(config, server.port), clock)
    AuthActions(client).register(EMAIL, PASSWORD)
    ask_reset(client)
    token = server.mailbox.token_for(EMAIL)
    server.controller.stop()  # the mail server goes away before the change
    with caplog.at_level(logging.WARNING, logger="authsvc"):
        assert spend(client, token, "n3w pw").status_code == 200
    assert AuthActions(client).login(EMAIL, "n3w pw").status_code == 200
    assert any(
        "password-change notice" in record.getMessage() for record in caplog.records
    )
