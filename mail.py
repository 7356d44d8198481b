"""Every message authsvc sends, and the SMTP client that sends it (stdlib smtplib).

Used only with AUTHSVC_RESET_DELIVERY=smtp: the reset token, the notice that a reset was
asked for an address no account uses, and the notice of a password change. Each message
says what happened and what to do if it was not you; no message holds a password, and only
the reset mail holds a token (the one it exists to deliver).

Imported by authsvc.py, which decides when to send; it imports only config.py.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage

from config import Config

logger = logging.getLogger("authsvc.mail")


class DeliveryFailed(Exception):
    """The SMTP server could not be reached or refused the message."""


# Every character str.splitlines() breaks a line at: the email package refuses a header
# value holding any of them, ASCII or not (U+0085, U+2028, U+2029 included).
LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def is_single_mailbox(email: str) -> bool:
    """True when the mailer would send to exactly this one mailbox.

    The standard library's address parser is the one smtplib's messages go through: an
    address it cannot parse would crash the mailer, and one it parses differently
    ("a,b@c.d" is two recipients, "a:b@c.d" a group) would mail someone else. Letters
    beyond ASCII (SMTPUTF8: "josé@x.io") stand in as "a" for the check, since the parser
    flags them as a defect although SMTPUTF8 servers take them.
    """
    if LINE_BREAKS.search(email):
        return False  # a mail header cannot hold it (and a To: line must not break)
    ascii_shape = re.sub(r"[^\x00-\x7f]", "a", email)
    try:
        parsed = Address(addr_spec=ascii_shape).addr_spec
    # Besides its own errors, the parser raises IndexError and AttributeError on some
    # malformed input ("a@[b.c"): all of them mean it is not an address to mail.
    except (HeaderParseError, ValueError, IndexError, AttributeError):
        return False
    return parsed == ascii_shape


SMTP_TIMEOUT_SECONDS = 10.0


class Mailer:
    """Sends reset tokens through an SMTP server with the stdlib smtplib.

    One connection per message: a reset request is rare, and a fresh connection cannot
    be left half-broken by an earlier failure.
    """

    def __init__(self, config: Config) -> None:
        """Use the AUTHSVC_SMTP_* settings of `config`."""
        self._config = config

    @contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        """An SMTP session, after STARTTLS and login when configured; QUIT at the end.

        Raises DeliveryFailed when the server cannot be reached or refuses us. The
        underlying error is logged by class only: its text can echo what we sent.
        """
        config = self._config
        try:
            with smtplib.SMTP(
                config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT_SECONDS
            ) as smtp:
                if config.smtp_starttls:
                    # Verifies the server's certificate and host name against the system's CAs.
                    smtp.starttls(context=ssl.create_default_context())
                if config.smtp_user:
                    smtp.login(config.smtp_user, config.smtp_password)
                yield smtp
        except (OSError, smtplib.SMTPException) as error:
            logger.error(
                "SMTP delivery to %s:%s failed: %s",
                config.smtp_host,
                config.smtp_port,
                type(error).__name__,
            )
            raise DeliveryFailed("could not deliver the reset email") from None

    def _send(
        self, to: str, body: str, subject: str = "Your authsvc password reset"
    ) -> None:
        """Mail `body` to `to`. Raises DeliveryFailed."""
        message = EmailMessage()
        message["From"] = self._config.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        with self._session() as smtp:
            smtp.send_message(message)

    def send_reset_token(self, to: str, reset_token: str) -> None:
        """Mail `reset_token` to `to`. Raises DeliveryFailed."""
        self._send(
            to,
            "Someone (hopefully you) asked to reset the password of your authsvc account.\n\n"
            f"Reset token: {reset_token}\n\n"
            f"It works once, within {self._config.reset_ttl // 60} minutes, together with this email\n"
            "address (PUT /reset_password). If you did not ask, ignore this message.\n",
        )

    def send_password_changed(self, to: str) -> None:
        """Tell `to` that the account's password was just changed (ASVS 2.5.5): no token,
        no password; if the owner did not do it, they learn it now. Raises DeliveryFailed."""
        self._send(
            to,
            "The password of your authsvc account was just changed, and every session of\n"
            "the account was ended. If you did this, nothing more is needed. If you did\n"
            "not, ask for a password reset with this address now.\n",
            subject="Your authsvc password was changed",
        )

    def send_verification_code(self, to: str, code: str, ttl: int) -> None:
        """Mail the code that proves `to` is the user's (at sign-up, on request, or for
        a new address). Raises DeliveryFailed."""
        self._send(
            to,
            "Your authsvc verification code is:\n\n"
            f"    {code}\n\n"
            f"It works once, within {ttl // 60} minutes (PUT /account/verification). If\n"
            "you did not ask for it, ignore this message: nothing changes without it.\n",
            subject="Your authsvc verification code",
        )

    def send_email_changed(self, to: str, new_email: str) -> None:
        """Tell the old address `to` that the account's email is now `new_email` (the
        new address proved itself with a code). Raises DeliveryFailed."""
        self._send(
            to,
            "The email of your authsvc account was just changed to\n\n"
            f"    {new_email}\n\n"
            "and every other session of the account was ended. If you did this, nothing\n"
            "more is needed. If you did not, someone else holds your account: contact the\n"
            "service's operator now.\n",
            subject="Your authsvc email was changed",
        )

    def send_account_deleted(self, to: str) -> None:
        """Tell `to` that its account was deleted. Raises DeliveryFailed."""
        self._send(
            to,
            "Your authsvc account and everything it held (sessions, tokens, codes) were\n"
            "just deleted. If you did this, nothing more is needed; the address can sign\n"
            "up again. If you did not, someone had your password: contact the service's\n"
            "operator now, and change that password wherever else you use it.\n",
            subject="Your authsvc account was deleted",
        )

    def send_two_factor_changed(self, to: str, now_on: bool) -> None:
        """Tell `to` that two-factor was just turned on, or off. Raises DeliveryFailed."""
        if now_on:
            what = (
                "Two-factor login was just turned on for your authsvc account, and every\n"
                "other session of the account was ended."
            )
        else:
            what = (
                "Two-factor login was just turned off for your authsvc account: the password\n"
                "alone logs in again."
            )
        self._send(
            to,
            f"{what} If you did this, nothing more is needed. If you did\n"
            "not, someone else holds your account: contact the service's operator now.\n",
            subject=f"Your authsvc two-factor login was turned {'on' if now_on else 'off'}",
        )

    def send_passkey_changed(self, to: str, added: bool) -> None:
        """Tell `to` that a passkey was just added to its account, or removed (never
        which key or device). Raises DeliveryFailed."""
        what = "added to" if added else "removed from"
        self._send(
            to,
            f"A passkey was just {what} your authsvc account. If you did this, nothing\n"
            "more is needed. If you did not, someone else holds your account: contact\n"
            "the service's operator now.\n",
            subject=f"A passkey was {what} your authsvc account",
        )

    def send_recovery_code_used(self, to: str, codes_left: int) -> None:
        """Tell `to` that one of its recovery codes was just used, and how many are left
        (never which one). Raises DeliveryFailed."""
        self._send(
            to,
            "One of the recovery codes of your authsvc account was just used in place of\n"
            f"a two-factor code. {codes_left} unused codes are left. If you did this, set\n"
            "up your authenticator again or make new codes (POST /account/recovery_codes)\n"
            "before they run out. If you did not, someone has your password and a code:\n"
            "change the password and make new codes now.\n",
            subject="A recovery code of your authsvc account was used",
        )

    def send_no_account_notice(self, to: str) -> None:
        """Tell `to` that a reset was asked for it but no account uses it. Raises DeliveryFailed.

        Sending a mail for an unknown address too is what makes the two cases look
        alike from outside: the same SMTP dialogue takes the same time, and fails the
        same way when the server is down. Only the owner of the mailbox learns that
        there is no account, never the person who asked.
        """
        self._send(
            to,
            "Someone (hopefully you) asked to reset the password of an authsvc account\n"
            "with this email address, but no account uses it. Perhaps you signed up with\n"
            "another address. If you did not ask, ignore this message.\n",
        )
