"""The password policy: what a new password must be, as a list of small checks.

NIST SP 800-63B-4 (section 3.1.1.2): a minimum length counted in characters, no
composition rules and no expiry, a blocklist of commonly used passwords, and the reason
told to whoever chose a refused one. Like Django's `password_validation`, each check is
one function that returns the reason a person reads (or None), and the policy is the list
of them the settings ask for, with one entry point (`PasswordPolicy.check`) used by
registration, reset and change alike. A login never checks a password against the
policy: a password set under an older policy still logs in.

The common passwords are zxcvbn's list of 30,000 (its `passwords` frequency list, from
leaked password corpora), read from the installed package at first use and never copied
here; compared case-insensitively. zxcvbn is imported only when the blocklist is on.

Imported by authsvc.py; imports only config.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from config import Config

# bcrypt reads at most 72 bytes, and bcrypt 5 raises above that (authsvc.py checks it).
MAX_PASSWORD_BYTES = 72

# The email rule looks for the part before the "@" only from this length on: a one- or
# two-letter name would refuse half of all passwords.
MIN_LOCAL_PART_CHARS = 3

# A check: (password, email) -> the reason a person reads, or None when it passes.
Check = Callable[[str, str], str | None]


class WeakPassword(ValueError):
    """A new password the policy refuses; the message is the reason, for a person."""


@functools.cache
def common_passwords() -> frozenset[str]:
    """zxcvbn's 30,000 most common passwords, case-folded (loaded once per process)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(password.casefold() for password in FREQUENCY_LISTS["passwords"])


def at_least(minimum: int) -> Check:
    """The check of a minimum length, in Unicode code points (so "ééé" is 3)."""

    def long_enough(password: str, email: str) -> str | None:
        if len(password) < minimum:
            return f"password must be at least {minimum} characters"
        return None

    return long_enough


def not_common(password: str, email: str) -> str | None:
    """The blocklist: not one of the commonly used passwords, whatever its letter case."""
    if password.casefold() in common_passwords():
        return "password is too common"
    return None


def not_the_email(password: str, email: str) -> str | None:
    """Not the account's email, nor the part before its "@", nor holding either."""
    folded = password.casefold()
    address = email.strip().casefold()
    local_part = address.partition("@")[0]
    if address and address in folded:
        return "password must not contain your email"
    if len(local_part) >= MIN_LOCAL_PART_CHARS and local_part in folded:
        return "password must not contain your email"
    return None


class PasswordPolicy:
    """The checks the settings ask for, in order: length first, then the blocklist and
    the email rule (both on with AUTHSVC_PASSWORD_BLOCKLIST)."""

    def __init__(self, min_length: int, blocklist: bool) -> None:
        """At least `min_length` characters; with `blocklist`, not a common password
        and not the email."""
        self.min_length = min_length
        self.blocklist = blocklist
        self.checks: list[Check] = [at_least(min_length)]
        if blocklist:
            self.checks += [not_common, not_the_email]

    @classmethod
    def from_config(cls, config: Config) -> PasswordPolicy:
        """The policy of AUTHSVC_PASSWORD_MIN_LENGTH and AUTHSVC_PASSWORD_BLOCKLIST."""
        return cls(config.password_min_length or 1, bool(config.password_blocklist))

    def check(self, password: str, email: str) -> None:
        """Raise WeakPassword with the first reason a check gives, if any.

        `email` is the account's: the one registering, or the one whose password is
        reset or changed.
        """
        for check in self.checks:
            reason = check(password, email)
            if reason is not None:
                raise WeakPassword(reason)

    def describe(self) -> dict[str, int | bool]:
        """The rules in force, for GET /account/password_policy: a page can tell the
        user before they submit."""
        return {
            "min_length": self.min_length,
            "max_bytes": MAX_PASSWORD_BYTES,
            "blocklist": self.blocklist,
            "email_rule": self.blocklist,
        }
