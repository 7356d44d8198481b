"""The request limits: who is counted, under which key, in what order, and when to refuse.

Every limit is a counter in the database (so every gunicorn worker and every host counts
the same requests) over a window that starts at its first request. README.md,
"Configuration", says what each protects and where its default comes from.

- A client is an IPv4 address, or an IPv6 /64 (one host can pick a new address in it
  for every request), and then also its /48 (one site) under IPV6_SITE_FACTOR times the
  limit.
- A refused request counts nowhere (SPEC "Limits cannot be turned against the owner"):
  every count of one request is made in the caller's one write transaction, and a
  refusal raises out of it, which rolls the counts before it back. So an address past its
  own limit spends no email's ceiling, and writes no throttle row.

`Auth` (authsvc.py) owns one `Limits` and calls it inside its transactions; this module
imports only config.py and store.py.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable

from config import Config
from store import LoginAttempts, Store


class Throttled(Exception):
    """Too many attempts of one kind in the current window (logins, resets, sign-ups)."""

    def __init__(self, retry_after: int, message: str) -> None:
        """`retry_after`: whole seconds until the window ends and attempts count anew.
        `message`: what the client is told (whose attempts were too many)."""
        super().__init__(message)
        self.retry_after = retry_after
        self.message = message


class LoginThrottled(Throttled):
    """Too many login attempts for this email, or from this client, in the window."""


class MailboxLimited(Exception):
    """A mailbox's limit of reset mails is reached: nothing is sent, nobody is told."""


# Reset requests and sign-ups are counted per client (and mails per email) over an hour.
CLIENT_COUNT_WINDOW = 60 * 60

# An IPv6 site (a /48) holds 65,536 /64s: counted by /64 alone, one site would have as
# many budgets. So a /48 is counted too, under this many times each limit.
IPV6_SITE_FACTOR = 4


def client_key(address: str) -> str:
    """The key a client's attempts are counted under: its address; for IPv6, its /64.

    One IPv6 host usually holds a whole /64 and can pick a new address in it for each
    request, so counting single IPv6 addresses would count nothing. Anything that is no
    address (a Unix socket's peer, the CLI) shares the key "unknown".
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def client_keys(address: str) -> list[tuple[str, int]]:
    """Every key a client's request is counted under, with the multiple of the limit
    that applies to it: `client_key` at 1, and for IPv6 also the /48 at IPV6_SITE_FACTOR.
    """
    key = client_key(address)
    if not key.endswith("/64"):
        return [(key, 1)]
    site = ipaddress.ip_network(key).supernet(new_prefix=48)
    return [(key, 1), (str(site), IPV6_SITE_FACTOR)]


def retry_after(tally: LoginAttempts, window: float, now: float) -> int:
    """Whole seconds, at least 1, until the window of `tally` ends."""
    return max(1, math.ceil(tally.window_started_at + window - now))


FROM_HERE = "too many failed logins from this address; try again later"
FOR_EMAIL = "too many failed logins for this email; try again later"


class Limits:
    """The counters of one store, checked against one configuration's limits.

    Every method but `windows` must run inside the caller's `store.transaction()`.
    """

    def __init__(self, db: Store, config: Config, clock: Callable[[], float]) -> None:
        """Count in `db`, against `config`'s limits, at `clock`'s times."""
        self._db = db
        self._config = config
        self._clock = clock

    def count_login(self, email: str, address: str) -> None:
        """Count a login attempt, or refuse it (LoginThrottled) and count nothing.

        The limits are checked in this order, each refusal taking back the counts made
        before it:
        - per client, AUTHSVC_CLIENT_MAX_LOGINS (1,000) attempts of any outcome: one
          account gives nobody unlimited bcrypt work;
        - per client, AUTHSVC_CLIENT_MAX_FAILURES (300): one address trying one
          password on many emails (password spraying), OWASP ASVS 2.2.1;
        - per (email, client), AUTHSVC_LOGIN_MAX_FAILURES (10): the lock-out. Someone
          guessing at an account from their own address locks only that address out;
          the owner, from their usual one, still logs in;
        - per email, AUTHSVC_EMAIL_MAX_FAILURES (100): a ceiling against guessing one
          account from many addresses, spent only by attempts the others let through.
        Counted before the password is checked, so a burst of simultaneous guesses is
        counted whole.
        """
        config = self._config
        window = config.login_window
        self.count_client_login(address)
        self.count_client_failure(address)
        now = self._clock()
        pair = self._db.count_client_attempt(
            "login_pair", client_key(address), now, window, email=email
        )
        if pair.attempts > config.login_max_failures:
            raise LoginThrottled(retry_after(pair, window, now), FOR_EMAIL)
        per_email = self._db.count_login_attempt(email, now, window)
        if per_email.attempts > config.email_max_failures:
            raise LoginThrottled(retry_after(per_email, window, now), FOR_EMAIL)

    def forget_login_failures(self, email: str, address: str) -> None:
        """After a login that succeeded: forget the email's counts from every client,
        and take this attempt back from the client's failures (it was none). The
        client's count of all logins keeps it."""
        # In the order count_login takes these rows (client_attempts, then
        # login_attempts): opposite orders would deadlock on PostgreSQL.
        self.forget_client_failure(address)
        self._db.clear_login_attempts(email)

    def count_client_login(self, address: str) -> None:
        """Count a login attempt of the client, any outcome (a passwordless login's
        start too: its options make a challenge row): AUTHSVC_CLIENT_MAX_LOGINS,
        LoginThrottled past it."""
        self.count_client(
            "login_all",
            address,
            self._config.client_max_logins,
            self._config.login_window,
            "too many logins from this address; try again later",
            LoginThrottled,
        )

    def count_client_failure(self, address: str) -> None:
        """Count a login as a failure of the client before it is checked
        (AUTHSVC_CLIENT_MAX_FAILURES, LoginThrottled past it); `forget_client_failure`
        takes it back when it succeeds. A passkey login counts only this and the
        options' `count_client_login`: no email is known, so no per-email count."""
        self.count_client(
            "login_client",
            address,
            self._config.client_max_failures,
            self._config.login_window,
            FROM_HERE,
            LoginThrottled,
        )

    def forget_client_failure(self, address: str) -> None:
        """Take a login that succeeded back from the client's failures."""
        for key, _ in client_keys(address):
            self._db.uncount_client_attempt("login_client", key)

    def count_sign_up(self, address: str) -> None:
        """Count a sign-up from the client; Throttled past
        AUTHSVC_CLIENT_MAX_REGISTRATIONS an hour."""
        self.count_client(
            "register",
            address,
            self._config.client_max_registrations,
            CLIENT_COUNT_WINDOW,
            "too many sign-ups from this address; try again later",
        )

    def count_reset_request(self, address: str) -> None:
        """Count a reset request from the client; Throttled past
        AUTHSVC_CLIENT_MAX_RESETS an hour."""
        self.count_client(
            "reset",
            address,
            self._config.client_max_resets,
            CLIENT_COUNT_WINDOW,
            "too many reset requests from this address; try again later",
        )

    def count_mail_to(self, email: str, address: str) -> None:
        """Count a request that sends mail to `email` from the client: per (email,
        client), AUTHSVC_RESET_MAX_PER_EMAIL an hour, so a stranger's requests do not
        silence the owner's; then per email from every client, AUTHSVC_EMAIL_MAX_RESETS.
        MailboxLimited past either (the caller sends nothing and answers as usual)."""
        now = self._clock()
        pair = self._db.count_client_attempt(
            "reset_pair", client_key(address), now, CLIENT_COUNT_WINDOW, email=email
        )
        if pair.attempts > self._config.reset_max_per_email:
            raise MailboxLimited
        per_email = self._db.count_reset_request(email, now, CLIENT_COUNT_WINDOW)
        if per_email.attempts > self._config.email_max_resets:
            raise MailboxLimited

    def count_client(
        self,
        kind: str,
        address: str,
        limit: int,
        window: int,
        message: str,
        refusal: type[Throttled] = Throttled,
    ) -> None:
        """Count one request of `kind` from the client at `address` under each of its
        keys (`client_keys`), and raise `refusal` (with `message`) past `limit` for any
        of them."""
        now = self._clock()
        for key, factor in client_keys(address):
            tally = self._db.count_client_attempt(kind, key, now, window)
            if tally.attempts > limit * factor:
                raise refusal(retry_after(tally, window, now), message)

    def windows(self) -> tuple[dict[str, float], dict[str, float]]:
        """How long each counter's window lasts: (per-email tables, per-client kinds),
        for `purge`."""
        login, hour = self._config.login_window, CLIENT_COUNT_WINDOW
        per_email = {"login_attempts": login, "reset_attempts": hour}
        per_client = {
            "login_all": login,
            "login_client": login,
            "login_pair": login,
            "reset": hour,
            "reset_pair": hour,
            "register": hour,
        }
        return per_email, per_client
