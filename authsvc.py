#!/usr/bin/env python3
"""authsvc: register, log in, stay logged in through a cookie, recover a password.

A hand-routed Werkzeug WSGI application: every header, cookie and status code is set in
this file, and every SQL statement is in store.py. Run it with

    gunicorn authsvc:app      # production (see README.md for workers and threads)
    python authsvc.py         # development server on http://127.0.0.1:5000
    python authsvc.py --help  # the operator's commands (admin.py)

This file is the API's request path, top to bottom in the order a request travels once
the settings are read: the errors `Auth` raises, passwords and tokens, `Auth` (the logic
the course asks for), reading a request, writing a response, the URL map, `AuthApp` (the
HTTP layer), `create_app`, and the development server. What a request does not pass
through lives beside it, one module per part: config.py (the settings), mail.py (every
message sent), store.py (every SQL statement), metrics.py, admin.py (the commands, the
only module that imports this one).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import importlib.util
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import bcrypt
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    NotFound,
    RequestEntityTooLarge,
    RequestTimeout,
    SecurityError,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import Map, Rule
from werkzeug.sansio.http import parse_cookie as parse_cookie_text
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder
from werkzeug.sansio.utils import get_current_url
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import get_host

from config import Config, ConfigError, course_mode_warning, refuse_unsafe_production
from factors import (
    MAX_PASSKEY_NAME_CHARS,
    MAX_PASSKEYS,
    PASSKEY_LOGIN_REFUSED,
    Ceremony,
    CodeRequired,
    Enrolment,
    InvalidMfaToken,
    NoPendingSetUp,
    PasskeyRefused,
    Passkeys,
    TooManyPasskeys,
    TwoFactor,
    TwoFactorAlreadyOn,
    TwoFactorOff,
    UnknownPasskey,
    WrongCode,
)
from limits import (
    Limits,
    LoginThrottled,
    MailboxLimited,
    Throttled,
)
from mail import DeliveryFailed, Mailer, is_single_mailbox
from pages import Pages
from passwords import PasswordPolicy, WeakPassword
from store import (
    DatabaseBusy,
    DatabaseUnavailable,
    DatabaseUnusable,
    DuplicateEmail,
    InvalidValue,
    PasskeyRow,
    Session,
    Store,
    User,
    UserNotFound,
    email_key,
)

logger = logging.getLogger("authsvc")
# One line per security event (see AuthApp.audit); a logger of its own, so a deployment
# can route the audit trail somewhere else than the errors.
audit_logger = logging.getLogger("authsvc.audit")


# =============================================================================================
# Domain errors
# =============================================================================================
# Auth raises these; AuthApp turns each into one status through DOMAIN_ERRORS below.
# They subclass ValueError because the course's Auth raises ValueError, but the HTTP layer
# never catches ValueError as such: a ValueError from anywhere else is a bug, and a 500.


class UnknownEmail(ValueError):
    """No user has this email (asked for a reset token)."""


class InvalidToken(ValueError):
    """The reset token is unknown, already used, expired, or belongs to another email."""


class InvalidPassword(ValueError):
    """The password cannot be a password: over bcrypt's 72 bytes, or holding a NUL."""


class UnknownSession(LookupError):
    """No live session of this user has that public id (another user's, ended, unknown)."""


class InvalidCredentials(Exception):
    """Login refused: unknown email or wrong password (deliberately not saying which)."""


class EmailNotVerified(Exception):
    """The right password, but AUTHSVC_REQUIRE_VERIFIED_EMAIL and an unproved address."""


class WrongPassword(Exception):
    """Re-authentication refused: the current password given is not the user's."""


class SamePassword(ValueError):
    """A password change to the password the account already has."""


class InvalidCode(Exception):
    """The verification code is wrong, used, expired, or was ended by wrong tries."""


class AlreadyVerified(Exception):
    """A verification code asked for an address already proved, with no change pending."""


# =============================================================================================
# Passwords and tokens
# =============================================================================================

DEFAULT_BCRYPT_ROUNDS = Config.bcrypt_rounds
BCRYPT_MAX_PASSWORD_BYTES = 72


def _password_bytes(password: str) -> bytes:
    """Encode a password for bcrypt, refusing what bcrypt 5 would raise on.

    bcrypt reads at most 72 bytes; bcrypt 5 raises ValueError above that in both hashpw
    and checkpw. Checking first lets every path answer a clear 400 instead of a 500.
    """
    encoded = password.encode("utf-8")
    if len(encoded) > BCRYPT_MAX_PASSWORD_BYTES:
        raise InvalidPassword(
            f"password must be at most {BCRYPT_MAX_PASSWORD_BYTES} bytes in UTF-8"
        )
    return encoded


def _new_password_bytes(password: str) -> bytes:
    """Encode a password about to be stored, refusing a NUL character as well.

    bcrypt treats its input as a NUL-terminated string: a hash of "\0" accepts "\0\0\0"
    and "", and a hash of "Secret" accepts "Secret\0Secret". A password holding a NUL
    would not be the password its owner thinks it is.
    """
    if "\0" in password:
        raise InvalidPassword("password must not contain a NUL character")
    return _password_bytes(password)


def _hash_password(password: str, rounds: int = DEFAULT_BCRYPT_ROUNDS) -> bytes:
    """Return a salted bcrypt hash of `password` (the cost and salt are inside the hash).

    Raises InvalidPassword past 72 bytes or for a NUL character.
    """
    return bcrypt.hashpw(_new_password_bytes(password), bcrypt.gensalt(rounds))


def _bcrypt_cost(hashed_password: str) -> int:
    """The cost a bcrypt hash was made with: "$2b$12$..." -> 12."""
    return int(hashed_password.split("$")[2])


def _generate_uuid() -> str:
    """Return a new random UUID string: uuid4 draws its 122 random bits from os.urandom."""
    return str(uuid.uuid4())


def keyed_sha256(data: bytes, key: str) -> str:
    """HMAC-SHA-256 of `data` under `key` (AUTHSVC_SECRET_KEY), in hex; a plain SHA-256
    without a key (course mode only: anyone can then compute it for a guess)."""
    if key:
        return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def _digest(secret: str) -> str:
    """SHA-256 of a session id or reset token: what the database stores instead of it.

    The secrets are random 122-bit values, so a fast unsalted hash is enough: nobody can
    guess one from its digest. Lookups go by digest through an index, so no Python code
    ever compares a secret byte by byte (and so no timing side channel).
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# =============================================================================================
# Auth: the course's logic
# =============================================================================================


def open_store(path: str, pool_size: int = Config.db_pool_size) -> Store:
    """The store at `path` (a SQLite file or a postgresql:// URL), its schema up to date.

    Raises ConfigError naming AUTHSVC_DB when the file cannot serve (":memory:", a
    missing folder, a file this process cannot write), so start-up stops with a message
    that says which setting to fix.
    """
    try:
        store = Store(path, pool_size)
        store.initialize()
    except DatabaseUnusable as error:
        raise ConfigError(f"AUTHSVC_DB={path!r} cannot be used: {error}") from None
    return store


# GET /health waits this long for the database, so a load balancer learns within a
# second that this host cannot serve.
HEALTH_TIMEOUT_SECONDS = 1.0

# Verification codes (SPEC "Account self-service"): six digits, an hour, five wrong tries
# end one; at most one sent a minute and five an hour per user (Kratos' figures).
CODE_DIGITS = 6
CODE_TTL = 60 * 60
CODE_MAX_TRIES = 5
CODE_INTERVAL = 60
CODES_PER_HOUR = 5
CODE_WINDOW = 60 * 60

# A session's public id as `_start_session` makes it: 32 hexadecimal digits.
PUBLIC_ID_SHAPE = re.compile(r"[0-9a-f]{32}")

# What a session keeps of its login's User-Agent header, for the listing.
MAX_USER_AGENT_CHARS = 256


class NoMetrics:
    """Where authsvc reports what it measures while metrics are off (the default): nowhere.

    metrics.PrometheusMetrics (AUTHSVC_METRICS=true) has the same methods and records
    each call; `Auth` and `AuthApp` call them without knowing which of the two they hold.
    """

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request: its route (a URL_MAP endpoint), method, status, time."""

    def event(self, event: str, outcome: str) -> None:
        """One audited event, as the audit line names it."""

    def bcrypt(self, seconds: float) -> None:
        """One bcrypt hash or check."""


def metrics_for(config: Config) -> NoMetrics:
    """Prometheus metrics when AUTHSVC_METRICS=true (metrics.py, imported only then)."""
    if not config.metrics:
        return NoMetrics()
    import metrics

    if not config.metrics_dir:
        logger.warning(
            "AUTHSVC_METRICS=true without PROMETHEUS_MULTIPROC_DIR: GET /metrics shows "
            "the figures of the one process that answers it. Under gunicorn with several "
            "workers, set PROMETHEUS_MULTIPROC_DIR (docs/operations.md, 'Metrics')."
        )
    return metrics.PrometheusMetrics()


class Auth:
    """Registration, login, sessions and password resets, on top of the store.

    The HTTP layer calls only this class; this class calls only the store's public methods.
    """

    def __init__(
        self,
        config: Config | None = None,
        clock: Callable[[], float] = time.time,
        metrics: NoMetrics | None = None,
    ) -> None:
        """Open the store named by the configuration and apply the schema to it.

        Also hashes a random password once at the configured cost: checking a password
        for an unknown email against it costs what checking a real one does (see
        `_verify`). `clock` returns Unix seconds; tests pass their own to step past
        expiry times. `metrics` is told each bcrypt's time; by
        default, Prometheus metrics when AUTHSVC_METRICS=true, else none.
        """
        self._config = config or Config.from_env(os.environ)
        self._clock = clock
        self.metrics = metrics or metrics_for(self._config)
        self._db = open_store(self._config.db, self._config.db_pool_size)
        self._limits = Limits(self._db, self._config, clock)
        self.password_policy = PasswordPolicy.from_config(self._config)
        self._dummy_hash = _hash_password(_generate_uuid(), self._config.bcrypt_rounds)
        self._mailer = (
            Mailer(self._config) if self._config.reset_delivery == "smtp" else None
        )
        self.two_factor = TwoFactor(
            self._db, self._config.secret_key, self._config.totp_issuer, clock
        )
        self.passkeys = Passkeys(
            self._db,
            self._config.webauthn_rp_id,
            self._config.webauthn_origins,
            self._config.totp_issuer,
            clock,
        )
        # How stale a session's recorded last use may get before a request records a new
        # one (SPEC: at most min(60 s, idle lifetime / 10) behind the real use). Writing
        # at every request would make every GET /profile a write transaction.
        idle = self._config.session_idle_ttl
        self._use_grain = min(60.0, idle / 10) if idle else 60.0

    def close(self) -> None:
        """Close this thread's database connection (the next call opens a new one)."""
        self._db.close()

    def database_answers(self) -> bool:
        """True when the database answers a trivial query within HEALTH_TIMEOUT_SECONDS."""
        return self._db.answers(HEALTH_TIMEOUT_SECONDS)

    # -- bcrypt, timed

    def _hash(self, password: str) -> str:
        """A bcrypt hash of `password` at the configured cost (`_hash_password`), timed."""
        started = time.perf_counter()
        hashed = _hash_password(password, self._config.bcrypt_rounds)
        self.metrics.bcrypt(time.perf_counter() - started)
        return hashed.decode("ascii")

    def _check(self, encoded_password: bytes, hashed_password: bytes) -> bool:
        """bcrypt's check of a password against a hash, timed."""
        started = time.perf_counter()
        matches = bcrypt.checkpw(encoded_password, hashed_password)
        self.metrics.bcrypt(time.perf_counter() - started)
        return matches

    # -- registration and login

    def register_user(
        self, email: str, password: str, client: str | None = None
    ) -> User:
        """Create a user with a bcrypt hash of `password`.

        Raises DuplicateEmail, a ValueError "User <email> already exists", when the email
        is taken (the database's unique index decides); InvalidPassword past 72 bytes or
        for a NUL character; WeakPassword when the policy refuses it (before anything
        is counted or stored). With a `client` address (the HTTP layer's), the sign-up
        is counted for it first: Throttled past AUTHSVC_CLIENT_MAX_REGISTRATIONS an hour.
        """
        _new_password_bytes(password)
        self.password_policy.check(password, email)
        if client is not None:
            with self._db.transaction():
                self._limits.count_sign_up(client)
        user = self._db.add_user(email, self._hash(password), self._clock())
        if self._mailer is not None:  # smtp delivery: the code goes at once
            try:
                self._mail_code(user.email, self._issue_code(user, user.email))
            except DeliveryFailed:
                logger.warning(
                    "the sign-up code for user %d could not be mailed", user.id
                )
        return user

    def _verify(self, email: str, password: str) -> User | None:
        """The user if `password` is right for `email`, else None, in the same time either way.

        Every refusal costs one bcrypt check at the configured cost: for an unknown
        email, a password holding NUL (no stored password has one) or a hash stored at a
        lower cost, the password is (also) checked against a dummy hash of that cost, so
        timing does not tell who is registered, nor whose hash is old. Raises
        InvalidPassword past 72 bytes.
        """
        encoded = _password_bytes(password)
        try:
            user = self._db.find_user_by(email=email)
        except UserNotFound:
            user = None
        if user is None or "\0" in password:
            self._check(encoded, self._dummy_hash)
            return None
        if self._check(encoded, user.hashed_password.encode("ascii")):
            return user
        if _bcrypt_cost(user.hashed_password) < self._config.bcrypt_rounds:
            self._check(encoded, self._dummy_hash)
        return None

    def valid_login(self, email: str, password: str) -> bool:
        """True when `email` is registered and `password` is its password."""
        return self._verify(email, password) is not None

    def log_in(
        self,
        email: str,
        password: str,
        user_agent: str = "",
        ip: str = "",
        code: str | None = None,
    ) -> tuple[User, str]:
        """Check a login attempt and start a session: (the user, the new session id).

        Every attempt is counted before the password is checked, in order, in one write
        transaction (`Limits.count_login`); past a limit it raises LoginThrottled, even
        with the right password, until that window ends. Raises InvalidCredentials for a
        wrong email or password, and also when a password reset replaced the password
        while this one was being checked.

        With two-factor on, the right password is not enough: without `code` it raises
        CodeRequired carrying an `mfa_token` (`log_in_with_mfa_token` finishes the
        login); with a wrong one, WrongCode. Either way the attempt stays counted, as a
        failed login counts; only a whole login forgets the failures. A wrong password
        is answered before two-factor is looked at, so it looks the same for every
        account.

        A success is one write transaction: the code taken, the new session (only if
        the stored hash is still the one checked), a re-hash if the configured cost has
        risen since the password was stored (conditional on that same hash), forgetting
        the email's counts, and taking this attempt back from the client's failures.
        """
        with self._db.transaction():
            self._limits.count_login(email, ip)
        user = self._verify(email, password)
        if user is None:
            raise InvalidCredentials("wrong email or password")
        if self._config.require_verified_email and not user.email_verified:
            # Only the right password learns this: it was no failed login.
            with self._db.transaction():
                self._limits.forget_login_failures(email, ip)
            raise EmailNotVerified("email not verified")
        if code is None and self.two_factor.is_on(user.id):
            raise CodeRequired(self.two_factor.new_mfa_token(user.id))
        rehashed = None
        if _bcrypt_cost(user.hashed_password) < self._config.bcrypt_rounds:
            rehashed = self._hash(password)
        return user, self._finish_login(user, user_agent, ip, code, rehashed=rehashed)

    def log_in_with_mfa_token(
        self, mfa_token: str, code: str, user_agent: str = "", ip: str = ""
    ) -> tuple[User, str]:
        """The login's second step: the `mfa_token` a right password got, and a code.

        Counted as a login attempt of the token's user (LoginThrottled past the limits,
        so codes cannot be guessed faster than passwords). InvalidMfaToken for an
        unknown, used, expired or ended token; WrongCode for a wrong code, which also
        counts a try against the token (the MFA_TOKEN_MAX_TRIES-th ends it).
        """
        user_id = self.two_factor.mfa_token_holder(mfa_token)
        if user_id is None:
            raise InvalidMfaToken("mfa_token is not valid; log in again")
        try:
            user = self._db.find_user_by(id=user_id)
        except UserNotFound:
            raise InvalidMfaToken("mfa_token is not valid; log in again") from None
        with self._db.transaction():
            self._limits.count_login(user.email, ip)
        try:
            session_id = self._finish_login(
                user, user_agent, ip, code, mfa_token=mfa_token
            )
        except WrongCode:
            self.two_factor.count_wrong_code(mfa_token)
            raise
        return user, session_id

    def _finish_login(
        self,
        user: User,
        user_agent: str,
        ip: str,
        code: str | None,
        *,
        rehashed: str | None = None,
        mfa_token: str | None = None,
    ) -> str:
        """The login's write transaction, once the password is right: spend the
        `mfa_token` if one came, take the code if two-factor is on (with the user's row
        locked: of two logins racing with one code, one takes it), start the session,
        forget the failures. Any refusal rolls all of it back (the token stays for the
        next try). Raises InvalidMfaToken, CodeRequired, WrongCode, InvalidCredentials.
        """
        with self._db.transaction():
            self._db.lock_user(user.id)
            if mfa_token is not None and (
                self.two_factor.spend_mfa_token(mfa_token) != user.id
            ):
                raise InvalidMfaToken("mfa_token is not valid; log in again")
            used = None
            if self.two_factor.is_on(user.id):
                if code is None:  # turned on while this login checked the password
                    raise CodeRequired(None)
                used = self.two_factor.use_code(user.id, code)
            session_id = self._start_session(user, user_agent, ip)
            if session_id is None:
                raise InvalidCredentials("the password changed during the login")
            if rehashed is not None:
                self._db.update_user(user.id, hashed_password=rehashed)
            self._limits.forget_login_failures(user.email, ip)
        self._after_code(user, used, ip)
        return session_id

    # -- sessions: one row per login, several per user

    def _live_after(self, now: float) -> float:
        """The last-use time at or before which a session has been idle too long."""
        idle = self._config.session_idle_ttl
        return now - idle if idle else -math.inf

    def session_ends_at(self, session: Session) -> float:
        """When the session ends if it is not used again (Unix seconds)."""
        idle = self._config.session_idle_ttl
        if not idle:
            return session.expires_at
        return min(session.expires_at, session.last_used_at + idle)

    def _start_session(self, user: User, user_agent: str, ip: str) -> str | None:
        """Store a new session for `user` and return its id; None if the password the
        caller read in `user` is no longer the stored one (see Store.add_session).

        A fresh id at every login (no session fixation); the user's other sessions stay,
        up to `max_sessions`, beyond which the least recently used one ends.
        """
        now = self._clock()
        session_id = _generate_uuid()
        session = Session(
            id=0,
            public_id=secrets.token_hex(16),
            user_id=user.id,
            digest=_digest(session_id),
            created_at=now,
            last_used_at=now,
            expires_at=now + self._config.session_ttl,
            user_agent=user_agent[:MAX_USER_AGENT_CHARS],
            ip=ip,
        )
        started = self._db.add_session(
            session,
            password_hash=user.hashed_password,
            max_sessions=self._config.max_sessions,
            live_after=self._live_after(now),
        )
        return session_id if started else None

    def create_session(
        self, email: str, user_agent: str = "", ip: str = ""
    ) -> str | None:
        """Start a new session for `email` and return its id, or None for an unknown email.

        The user's other sessions keep working (several devices). `user_agent` and `ip`
        describe the device, for the listing.
        """
        try:
            user = self._db.find_user_by(email=email)
        except UserNotFound:
            return None
        return self._start_session(user, user_agent, ip)

    def get_session(self, session_id: str | None) -> tuple[User, Session] | None:
        """The user and the live session this id opens, or None; records the use.

        None for no id, an unknown id, and a session past its absolute or idle lifetime.
        The use is written only when the recorded one is older than the grain, with a
        conditional UPDATE (Store.touch_session), so most requests only read.
        """
        if not session_id:
            return None
        found = self._db.find_session(_digest(session_id))
        if found is None:
            return None
        session, user = found
        if not self._live_and_noted(
            session.id, session.expires_at, session.last_used_at
        ):
            return None
        return user, session

    def live_session_user(self, session_id: str | None) -> tuple[int, str] | None:
        """`get_session` for the hot path: (the user's id, email) of a live session, or
        None; records the use the same way, from a five-column read."""
        if not session_id:
            return None
        found = self._db.session_check(_digest(session_id))
        if found is None:
            return None
        row_id, expires_at, last_used_at, user_id, email = found
        if not self._live_and_noted(row_id, expires_at, last_used_at):
            return None
        return user_id, email

    def _live_and_noted(
        self, row_id: int, expires_at: float, last_used_at: float
    ) -> bool:
        """True while a session is within both lifetimes; then, if its recorded use is
        older than the grain, record this one (a conditional UPDATE: Store.touch_session)."""
        now = self._clock()
        if not (now < expires_at and last_used_at > self._live_after(now)):
            return False
        stale_before = now - self._use_grain
        if last_used_at < stale_before:
            self._db.touch_session(row_id, now, stale_before)
        return True

    def get_user_from_session_id(self, session_id: str | None) -> User | None:
        """The user whose live session this is, or None (no id, unknown id, or ended)."""
        found = self.get_session(session_id)
        return found[0] if found else None

    def list_sessions(self, user_id: int) -> list[Session]:
        """The user's live sessions, most recently used first."""
        now = self._clock()
        return self._db.user_sessions(user_id, now, self._live_after(now))

    def end_session(self, user_id: int, public_id: str) -> Session:
        """End the user's live session with this public id and return it.

        Raises UnknownSession alike for another user's session, an ended one and an
        unknown id, so the answer tells nobody which sessions exist.
        """
        if not PUBLIC_ID_SHAPE.fullmatch(public_id):  # not one we ever made
            raise UnknownSession("no such session")
        now = self._clock()
        ended = self._db.delete_session(user_id, public_id, now, self._live_after(now))
        if ended is None:
            raise UnknownSession("no such session")
        return ended

    def end_other_sessions(self, user_id: int, current: Session) -> int:
        """End every session of the user but `current`; return how many live ones ended."""
        return self.end_all_sessions(user_id, keep=current)

    def log_out(self, session_id: str | None) -> User | None:
        """End the session this id opens (only that one); the user, or None if none."""
        found = self.get_session(session_id)
        if found is None:
            return None
        user, session = found
        self._db.delete_session_by_digest(session.digest)
        return user

    def destroy_session(self, user_id: int) -> None:
        """End every session of the user (the course's "log the user out").

        Logging out twice, or a user that does not exist, is not an error.
        """
        self.end_all_sessions(user_id)

    def end_all_sessions(self, user_id: int, keep: Session | None = None) -> int:
        """End every session of the user (but `keep`, if given); how many were live."""
        now = self._clock()
        with self._db.transaction():
            self._db.delete_mfa_tokens_of(user_id)  # and logins waiting for a code
            return self._db.delete_user_sessions(
                user_id, now, self._live_after(now), keep=keep.id if keep else None
            )

    def find_user(self, email: str) -> User:
        """The user registered with `email` (any letter case); UnknownEmail if none."""
        try:
            return self._db.find_user_by(email=email)
        except UserNotFound:
            raise UnknownEmail("no user has this email") from None

    def set_password(self, email: str, password: str) -> tuple[User, int]:
        """Set a user's password without a token (an operator's command), like a reset:
        every session of the user ends and the failed-login count is cleared.

        Returns the user and how many live sessions ended. Raises UnknownEmail,
        InvalidPassword past 72 bytes or for a NUL character, WeakPassword when the
        policy refuses it.
        """
        user = self.find_user(email)
        _new_password_bytes(password)
        self.password_policy.check(password, user.email)
        hashed = self._hash(password)
        with self._db.transaction():
            self._db.lock_user(user.id)
            self._db.update_user(user.id, hashed_password=hashed)
            self._db.delete_reset_tokens_of(user.id)
            ended = self.end_all_sessions(user.id)
            self._db.clear_login_attempts(user.email)
        self._notify_password_changed(user)
        return user, ended

    def purge(self) -> dict[str, int]:
        """Delete what has ended: sessions, reset tokens, throttle windows (`purge`)."""
        now = self._clock()
        per_email, per_client = self._limits.windows()
        return self._db.purge(now, self._live_after(now), per_email, per_client)

    def count_live_sessions(self) -> int:
        """How many sessions are live now, over every user (the metrics' gauge)."""
        now = self._clock()
        return self._db.count_live_sessions(now, self._live_after(now))

    def count_users(self) -> int:
        """How many accounts there are."""
        return self._db.count_users()

    def users_with_live_sessions(self) -> Iterator[tuple[str, int]]:
        """(email, live sessions) of every user, in registration order, streamed."""
        now = self._clock()
        return self._db.iter_users_with_sessions(now, self._live_after(now))

    # -- password reset

    def _record_reset_request(
        self, email: str, user: User | None, reset_token: str, client: str | None
    ) -> bool:
        """Count a reset request and, within the limits, store `reset_token` for `user`.

        One write transaction either way, so a registered and an unknown address cost
        the same (one commit, one fsync). In order: the client's limit
        (AUTHSVC_CLIENT_MAX_RESETS an hour: Throttled), then, only where a reset sends
        mail (smtp delivery), the limits that protect a mailbox: per (email, client)
        AUTHSVC_RESET_MAX_PER_EMAIL an hour, so a stranger's requests do not silence
        the owner's, and per email from every client AUTHSVC_EMAIL_MAX_RESETS. Past one
        of those it stores nothing and returns False (the caller answers as usual). A
        refused request is counted nowhere: the transaction is rolled back. True when
        the token was stored (or there is no user to store it for). Earlier tokens
        stay usable.
        """
        now = self._clock()
        config = self._config
        try:
            with self._db.transaction():
                if client is not None:
                    self._limits.count_reset_request(client)
                if self._mailer is not None:
                    self._limits.count_mail_to(email, client or "")
                if user is not None:
                    self._db.add_reset_token(
                        user.id, _digest(reset_token), now + config.reset_ttl
                    )
        except MailboxLimited:
            return False
        return True

    def issue_reset_token(
        self, email: str, client: str | None = None
    ) -> tuple[User, str]:
        """Issue a reset token for `email`: (its user, the token), the course's delivery.

        Raises UnknownEmail when no user has this email; Throttled past the client's
        limit of requests (see `_record_reset_request`). In response delivery there is
        no per-email limit: no mail goes anywhere, and the course asks for tokens for
        one email again and again.
        """
        try:
            user = self._db.find_user_by(email=email)
        except UserNotFound:
            user = None
        reset_token = _generate_uuid()
        self._record_reset_request(email, user, reset_token, client)
        if user is None:
            raise UnknownEmail("no user has this email")
        return user, reset_token

    def get_reset_password_token(self, email: str, client: str | None = None) -> str:
        """Issue a reset token for `email` and return it (the course's method).

        Raises UnknownEmail, a ValueError, when no user has this email; Throttled past
        the client's limit (`issue_reset_token`).
        """
        return self.issue_reset_token(email, client)[1]

    def mail_reset_token(
        self, email: str, client: str | None = None
    ) -> tuple[str, User | None]:
        """Mail a new reset token to `email` if it is registered.

        Returns what happened, for the audit line ("mailed", "unknown_email", "limited"),
        and the user or None. An unknown email gets a notice instead (see
        Mailer.send_no_account_notice). Past the email's limit of requests nothing is
        sent at all ("limited"): the caller answers as usual, so nobody learns of the
        limit, and nobody can flood a mailbox. The token is stored before the mail goes
        and deleted if the SMTP server refuses it, so a failed delivery leaves no usable
        token. Raises DeliveryFailed;
        Throttled past the client's limit; RuntimeError when delivery is not smtp.
        """
        if self._mailer is None:
            raise RuntimeError("mail_reset_token needs AUTHSVC_RESET_DELIVERY=smtp")
        try:
            user = self._db.find_user_by(email=email)
        except UserNotFound:
            user = None
        reset_token = _generate_uuid()
        if not self._record_reset_request(email, user, reset_token, client):
            return "limited", None
        if not is_single_mailbox(email):
            return "unknown_email", None  # nobody could have it; no mail can go there
        try:
            if user is None:
                self._mailer.send_no_account_notice(email)
            else:
                self._mailer.send_reset_token(user.email, reset_token)
        except DeliveryFailed:
            if user is not None:
                self._db.delete_reset_token(_digest(reset_token))
            raise
        return ("mailed", user) if user else ("unknown_email", None)

    def update_password(
        self, reset_token: str, password: str, email: str | None = None
    ) -> None:
        """Set a new password with a reset token, which is then used up (the course's
        method; `reset_password` also returns the user)."""
        self.reset_password(reset_token, password, email)

    def reset_password(
        self, reset_token: str, password: str, email: str | None = None
    ) -> User:
        """Set a new password with a reset token, which is then used up; the user.

        When `email` is given (the HTTP layer always gives it) the token must have been
        issued for that email. In the same transaction the change ends every reset token
        and every session of the user and clears the email's failed-login count (the
        owner has just proved who they are, so a lock-out someone else caused ends with
        it). Then, in smtp delivery, the address gets a notice of the change.
        Raises InvalidToken, a ValueError, for an unknown, used, expired or foreign
        token; InvalidPassword past 72 bytes or for a NUL character; WeakPassword when
        the policy refuses the new password (the token stays usable).
        """
        # Refuse a password bcrypt cannot take before anything else.
        _new_password_bytes(password)
        digest = _digest(reset_token)
        # Check first, hash after: a made-up token costs a lookup, not a quarter second
        # of bcrypt. And hash outside the write lock, which bcrypt would hold that long.
        holder = self._live_reset_holder(digest, email)
        self.password_policy.check(password, holder.email)
        hashed = self._hash(password)
        # Check again inside one transaction, with the user's row locked, and spend the
        # token with a conditional DELETE: of two requests racing with one token (on any
        # workers or hosts), exactly one still finds it there.
        with self._db.transaction():
            user = self._live_reset_holder(digest, email)
            self._db.lock_user(user.id)
            if not self._db.spend_reset_token(user.id, digest, self._clock(), hashed):
                raise InvalidToken("reset token is not valid")
            self.destroy_session(user.id)
            self._db.clear_login_attempts(user.email)
        self._notify_password_changed(user)
        return user

    def _live_reset_holder(self, digest: str, email: str | None) -> User:
        """The user holding the unexpired reset token of this digest, issued for `email`
        when one is given; InvalidToken if there is none."""
        found = self._db.reset_token_holder(digest)
        if found is None or found[1] <= self._clock():
            raise InvalidToken("reset token is not valid")
        user = found[0]
        if email is not None:
            try:
                owner = self._db.find_user_by(email=email)
            except UserNotFound:
                raise InvalidToken("reset token is not valid") from None
            if owner.id != user.id:
                raise InvalidToken("reset token is not valid")
        return user

    # -- account self-service (SPEC v3 "Account self-service")

    def reauthenticate(
        self, user: User, password: str, address: str, code: str | None = None
    ) -> None:
        """Check the current `password` of `user`, and a current two-factor `code` when
        two-factor is on, before a change that needs them (OWASP ASVS 5.0 V7.5.1),
        counted as a login attempt from `address`: LoginThrottled past the login limits,
        WrongPassword when the password is wrong, CodeRequired / WrongCode when the code
        is missing or wrong (each a failed login for the lock-out, so a stolen cookie
        cannot be used to guess). InvalidPassword past 72 bytes."""
        with self._db.transaction():
            self._limits.count_login(user.email, address)
        encoded = _password_bytes(password)
        if "\0" in password or not self._check(
            encoded, user.hashed_password.encode("ascii")
        ):
            raise WrongPassword("wrong password")
        used = None
        with self._db.transaction():
            if self.two_factor.is_on(user.id):
                if code is None:
                    raise CodeRequired(None)
                self._db.lock_user(user.id)
                used = self.two_factor.use_code(user.id, code)
            self._limits.forget_login_failures(user.email, address)
        self._after_code(user, used, address)

    def _after_code(self, user: User, used: str | None, address: str) -> None:
        """Once a code is taken and committed: a recovery code gets an audit line and
        a notice mail saying how many are left (SPEC: a notice on each use)."""
        if used != "recovery":
            return
        audit(
            "recovery_code",
            "used",
            address or "-",
            user=user,
            key=self._config.secret_key,
        )
        self.metrics.event("recovery_code", "used")
        left = self.two_factor.status(user.id)[1]
        self._notify(
            f"recovery-code notice for user {user.id}",
            lambda mailer: mailer.send_recovery_code_used(user.email, left),
        )

    def change_password(
        self,
        user: User,
        password: str,
        new_password: str,
        user_agent: str = "",
        ip: str = "",
        code: str | None = None,
    ) -> str:
        """Change the password of `user`, who gives the current one; the caller's new
        session id.

        Every session of the user ends and the caller gets a new one (ASVS 7.2.4: a
        new session id after a change of credentials); every reset token ends; smtp
        delivery mails a notice. Raises what `reauthenticate` raises, SamePassword,
        InvalidPassword, WeakPassword; InvalidCredentials when the password changed
        meanwhile (a reset raced this change).
        """
        self.reauthenticate(user, password, ip, code)
        if new_password == password:
            raise SamePassword("new password must differ from the current one")
        _new_password_bytes(new_password)
        self.password_policy.check(new_password, user.email)
        hashed = self._hash(new_password)
        with self._db.transaction():
            self._db.lock_user(user.id)
            current = self._db.find_user_by(id=user.id)
            if current.hashed_password != user.hashed_password:
                raise InvalidCredentials("the password changed meanwhile")
            self._db.update_user(user.id, hashed_password=hashed)
            self._db.delete_reset_tokens_of(user.id)
            self.end_all_sessions(user.id)
            changed = dataclasses.replace(current, hashed_password=hashed)
            session_id = self._start_session(changed, user_agent, ip)
            assert session_id is not None, "the hash it checks was just written"
            self._db.clear_login_attempts(user.email)
        self._notify_password_changed(user)
        return session_id

    def _code_digest(self, user_id: int, code: str) -> str:
        """What the database keeps of a verification code: an HMAC-SHA-256 under
        AUTHSVC_SECRET_KEY (without a key, course mode only, a plain SHA-256: six digits
        are a million guesses, so a copy of the database would open them)."""
        return keyed_sha256(f"{user_id}:{code}".encode(), self._config.secret_key)

    def _issue_code(
        self, user: User, email: str, pending_email: str | None = None
    ) -> str:
        """A new code proving `email` for `user`, which replaces any earlier one; with
        `pending_email`, also record it as the address an email change waits for (one
        transaction). Throttled past one code a minute or CODES_PER_HOUR an hour."""
        now = self._clock()
        with self._db.transaction():
            self._db.lock_user(user.id)
            self._db.find_user_by(id=user.id)  # UserNotFound: deleted meanwhile
            sent = self._db.code_sends(user.id)
            if sent is not None and sent.last_sent_at > now - CODE_INTERVAL:
                raise Throttled(
                    math.ceil(sent.last_sent_at + CODE_INTERVAL - now),
                    "a code was sent less than a minute ago; try again later",
                )
            hour_open = sent is not None and sent.started_at > now - CODE_WINDOW
            if hour_open and sent.sends >= CODES_PER_HOUR:
                raise Throttled(
                    math.ceil(sent.started_at + CODE_WINDOW - now),
                    "too many codes sent in the last hour; try again later",
                )
            code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
            digest = self._code_digest(user.id, code)
            self._db.put_code(user.id, digest, email, now + CODE_TTL, now, CODE_WINDOW)
            if pending_email is not None:
                self._db.update_user(user.id, pending_email=pending_email)
        return code

    def _mail_code(self, to: str, code: str) -> None:
        """In smtp delivery, mail the code to `to`. Raises DeliveryFailed."""
        if self._mailer is not None:
            self._mailer.send_verification_code(to, code, CODE_TTL)

    def request_verification(self, user: User) -> tuple[str, str]:
        """A code for the user's pending new address, else for the current one: (the
        address, the code), mailed there in smtp delivery. AlreadyVerified when there is
        nothing to prove; Throttled past the code limits; DeliveryFailed; UserNotFound
        when the account was deleted meanwhile."""
        if user.pending_email:
            target = user.pending_email
        elif user.email_verified:
            raise AlreadyVerified("email is already verified")
        else:
            target = user.email
        code = self._issue_code(user, target)
        self._mail_code(target, code)
        return target, code

    def request_verification_for(
        self, email: str, client: str | None
    ) -> tuple[User, str] | None:
        """Without a session, given the email: as `request_verification` for its user,
        counted per client like a reset request (Throttled past the client's limit).
        UnknownEmail when nobody has it; in smtp delivery None instead, and for an
        address already verified, past its code limits or whose mail failed too, so
        the answer is the same for every address."""
        if client is not None:
            with self._db.transaction():
                self._limits.count_reset_request(client)
        try:
            user = self._db.find_user_by(email=email)
        except UserNotFound:
            if self._mailer is not None:
                return None
            raise UnknownEmail("no user has this email") from None
        try:
            return user, self.request_verification(user)[1]
        except (AlreadyVerified, Throttled, DeliveryFailed):
            # In smtp delivery the answer is the same for every address: a user's own
            # limit (a code a minute), or a mail server that fails only for addresses
            # that get a mail, must not tell that the address is registered.
            if self._mailer is not None:
                return None
            raise

    def confirm_code(
        self, user: User, code: str, keep: Session | None = None
    ) -> tuple[User, str | None]:
        """Use a verification code of `user`: (the user as now stored, the old email if
        the code confirmed an email change, else None).

        A code for the current address marks it verified. A code for the pending new
        address makes it the email, verified, and ends every other session (all of them
        without `keep`); DuplicateEmail if the address was taken meanwhile (nothing
        changes; the code stays). InvalidCode for a wrong, used or expired code, or one
        for an address no longer current or pending; each wrong one counts a try.
        """
        digest = self._code_digest(user.id, code)
        try:
            with self._db.transaction():
                self._db.lock_user(user.id)
                proved = self._db.spend_code(
                    user.id, digest, self._clock(), CODE_MAX_TRIES
                )
                if proved is None:
                    raise InvalidCode("code is not valid")
                current = self._db.find_user_by(id=user.id)
                if email_key(proved) == email_key(current.email):
                    changes: dict[str, Any] = {"email_verified": True}
                elif current.pending_email and email_key(proved) == email_key(
                    current.pending_email
                ):
                    changes = {
                        "email": current.pending_email,
                        "email_verified": True,
                        "pending_email": None,
                    }
                    self.end_all_sessions(user.id, keep=keep)
                else:
                    raise InvalidCode("code is not valid")
                self._db.update_user(user.id, **changes)
        except InvalidCode:
            self._db.count_wrong_code(user.id, CODE_MAX_TRIES)
            raise
        if "email" in changes:  # update_user keys the new email as it stores it
            changes["email_key"] = email_key(changes["email"])
        confirmed = dataclasses.replace(current, **changes)
        if "email" not in changes:
            return confirmed, None
        self._notify(
            f"email-change notice for user {user.id}",
            lambda mailer: mailer.send_email_changed(current.email, confirmed.email),
        )
        return confirmed, current.email

    def request_email_change(
        self,
        user: User,
        password: str,
        new_email: str,
        ip: str = "",
        code: str | None = None,
    ) -> str:
        """Start changing the user's email to `new_email`: the code sent to it (mailed
        in smtp delivery). Nothing changes until that code comes back
        (`confirm_code`). Raises what `reauthenticate` raises; DuplicateEmail when the
        address is taken; Throttled past the code limits."""
        self.reauthenticate(user, password, ip, code)
        try:
            self._db.find_user_by(email=new_email)
        except UserNotFound:
            pass
        else:
            raise DuplicateEmail("email already registered")
        code = self._issue_code(user, new_email, pending_email=new_email)
        self._mail_code(new_email, code)
        return code

    def delete_account(
        self, user: User, password: str, ip: str = "", code: str | None = None
    ) -> None:
        """Delete the account of `user`, who gives the current password (and code):
        every session, token, code, factor of theirs goes with it, in one statement (ON
        DELETE CASCADE); the email can register again. smtp delivery mails a notice."""
        self.reauthenticate(user, password, ip, code)
        self.delete_user(user)

    # -- two-factor (SPEC v3 "Two-factor"): the rules are factors.TwoFactor's

    def begin_two_factor(
        self, user: User, password: str, ip: str = "", code: str | None = None
    ) -> Enrolment:
        """Start setting up two-factor: a pending secret, shown once, that
        `enable_two_factor` confirms. TwoFactorAlreadyOn (before anything is counted:
        the caller holds a session and learns nothing new); what `reauthenticate`
        raises."""
        if self.two_factor.is_on(user.id):
            raise TwoFactorAlreadyOn("two-factor is already on; turn it off first")
        self.reauthenticate(user, password, ip, code)
        return self.two_factor.begin(user.id, user.email)

    def enable_two_factor(
        self, user: User, code: str, keep: Session | None = None
    ) -> list[str]:
        """Turn two-factor on with a code of the pending secret: the 10 recovery codes,
        shown this once. Every other session ends (ASVS 7.4.3), and any login waiting
        for a code. NoPendingSetUp, TwoFactorAlreadyOn, WrongCode (not a failed login:
        the caller holds a session, and a set-up is not a way in)."""
        codes = self.two_factor.confirm(user.id, code)
        self.end_all_sessions(user.id, keep=keep)
        self._notify_two_factor(user, now_on=True)
        return codes

    def disable_two_factor(
        self, user: User, password: str, code: str | None, ip: str = ""
    ) -> None:
        """Turn two-factor off, given the password and a code: secret and recovery codes
        go; smtp delivery mails a notice. TwoFactorOff; what `reauthenticate` raises."""
        if not self.two_factor.is_on(user.id):
            raise TwoFactorOff("two-factor is not on")
        self.reauthenticate(user, password, ip, code)
        self.two_factor_off(user)

    def two_factor_off(self, user: User) -> bool:
        """Turn the user's two-factor off without a code (the operator's
        `two-factor-off`, for a lost device); False if it was off. A notice mail."""
        was_on = self.two_factor.turn_off(user.id)
        if was_on:
            self._notify_two_factor(user, now_on=False)
        return was_on

    def _notify_two_factor(self, user: User, now_on: bool) -> None:
        """Mail the user that two-factor was just turned on, or off."""
        self._notify(
            f"two-factor notice for user {user.id}",
            lambda mailer: mailer.send_two_factor_changed(user.email, now_on=now_on),
        )

    def renew_recovery_codes(
        self, user: User, password: str, code: str | None, ip: str = ""
    ) -> list[str]:
        """New recovery codes, given the password and a code; the earlier ones stop
        working. TwoFactorOff; what `reauthenticate` raises."""
        if not self.two_factor.is_on(user.id):
            raise TwoFactorOff("two-factor is not on")
        self.reauthenticate(user, password, ip, code)
        return self.two_factor.renew_recovery_codes(user.id)

    # -- passkeys (SPEC v3 "Passkeys"): the ceremonies are factors.Passkeys'

    def passkey_options(
        self, user: User, password: str, ip: str = "", code: str | None = None
    ) -> Ceremony:
        """Options to register a passkey, after the password (and code): a challenge
        for this user's registration alone. TooManyPasskeys at the limit (before
        anything is counted); what `reauthenticate` raises."""
        if self.passkeys.count(user.id) >= MAX_PASSKEYS:
            raise TooManyPasskeys(f"at most {MAX_PASSKEYS} passkeys")
        self.reauthenticate(user, password, ip, code)
        return self.passkeys.registration_options(user.id, user.email)

    def add_passkey(
        self, user: User, challenge_id: str, credential: Mapping[str, Any], name: str
    ) -> PasskeyRow:
        """Keep the new passkey the browser made for the user's challenge; a notice
        mail. PasskeyRefused, TooManyPasskeys."""
        passkey = self.passkeys.register(user.id, challenge_id, credential, name)
        self._notify(
            f"passkey notice for user {user.id}",
            lambda mailer: mailer.send_passkey_changed(user.email, added=True),
        )
        return passkey

    def remove_passkey(
        self,
        user: User,
        public_id: str,
        password: str,
        ip: str = "",
        code: str | None = None,
    ) -> None:
        """Remove one of the user's passkeys, after the password (and code); a notice
        mail. UnknownPasskey (before anything is counted); what `reauthenticate`
        raises."""
        if not any(p.public_id == public_id for p in self.passkeys.of(user.id)):
            raise UnknownPasskey("no such passkey")
        self.reauthenticate(user, password, ip, code)
        self.passkeys.remove(user.id, public_id)
        self._notify(
            f"passkey notice for user {user.id}",
            lambda mailer: mailer.send_passkey_changed(user.email, added=False),
        )

    def passkey_login_options(self, ip: str = "") -> Ceremony:
        """Options for a passwordless login: counted as a login attempt of the client
        (AUTHSVC_CLIENT_MAX_LOGINS), since each makes a challenge row."""
        with self._db.transaction():
            self._limits.count_client_login(ip)
        return self.passkeys.login_options()

    def log_in_with_passkey(
        self,
        challenge_id: str,
        credential: Mapping[str, Any],
        user_agent: str = "",
        ip: str = "",
    ) -> tuple[User, str]:
        """A whole login with a passkey: no password, no code (the passkey is two
        factors in itself, SPEC "Passkeys"). Counted as a failure of the client first,
        taken back on success, so failures count per client like wrong passwords.
        PasskeyRefused for anything that does not verify; LoginThrottled;
        EmailNotVerified as a password login."""
        with self._db.transaction():
            self._limits.count_client_failure(ip)
        user_id = self.passkeys.authenticate(challenge_id, credential)
        try:
            user = self._db.find_user_by(id=user_id)
        except UserNotFound:
            raise PasskeyRefused(PASSKEY_LOGIN_REFUSED) from None
        if self._config.require_verified_email and not user.email_verified:
            raise EmailNotVerified("email not verified")
        with self._db.transaction():
            session_id = self._start_session(user, user_agent, ip)
            if session_id is None:  # the password changed this very moment: try again
                raise PasskeyRefused(PASSKEY_LOGIN_REFUSED)
            self._limits.forget_client_failure(ip)
        return user, session_id

    def passkeys_off(self, user: User) -> int:
        """Remove every passkey of the user (the operator's `two-factor-off
        --passkeys`, for a lost device); how many. A notice mail when there were any."""
        removed = self.passkeys.remove_all(user.id)
        if removed:
            self._notify(
                f"passkey notice for user {user.id}",
                lambda mailer: mailer.send_passkey_changed(user.email, added=False),
            )
        return removed

    def delete_user(self, user: User) -> None:
        """Delete `user` and everything of theirs (the operator's delete-user too)."""
        self._db.delete_user(user.id)
        self._notify(
            f"deletion notice for user {user.id}",
            lambda mailer: mailer.send_account_deleted(user.email),
        )

    def _notify(self, notice: str, send: Callable[[Mailer], None]) -> None:
        """In smtp delivery, mail a notice with `send`, after the change it tells of is
        committed: a mail server that fails does not undo the change, and is logged
        (Mailer logs the error's class; this says which `notice` was lost)."""
        if self._mailer is None:
            return
        try:
            send(self._mailer)
        except DeliveryFailed:
            logger.warning("the %s could not be mailed", notice)

    def _notify_password_changed(self, user: User) -> None:
        """Mail the user a notice that the password changed (ASVS 2.5.5)."""
        self._notify(
            f"password-change notice for user {user.id}",
            lambda mailer: mailer.send_password_changed(user.email),
        )


# =============================================================================================
# Requests: size limit, body parsing, field validation
# =============================================================================================

MAX_BODY_BYTES = 64 * 1024
MAX_EMAIL_CHARS = 254  # RFC 5321's limit on a forward path
MAX_TOKEN_CHARS = 64  # a uuid4 string has 36

# One "@", something on each side, a dot in the domain, and no spaces or control
# characters. Deliberately loose: the only real test of an address is mail reaching it.
EMAIL_SHAPE = re.compile(
    r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+"
)


class ApiRequest(Request):
    """A Werkzeug request that refuses bodies over 64 KiB with 413 before reading them.

    The body itself is read by `read_body`, which also enforces that limit on a chunked
    body (one without Content-Length) and a deadline on a slow one.
    """

    max_content_length = MAX_BODY_BYTES
    # The URL_MAP endpoint the request matched, once routed: the metrics' route label
    # (a fixed set of names, where the raw path would be anything a client sends).
    route = "unmatched"
    # The body, once `read_body` has read it: a page (pages.py) may run two handlers on
    # one request (a sign-up, then its login), and the stream can be read only once.
    body: bytes | None = None


def read_body(request: ApiRequest, timeout: float) -> bytes:
    """The whole request body: at most 64 KiB, within `timeout` seconds, or a 4xx.

    - Content-Length over 64 KiB: 413 before reading a byte. A chunked body (no length)
      is read up to one byte past the limit: a byte too many is a 413, never a body cut
      short and used as if it were whole.
    - Framing that does not parse (a chunk size like "zz"), or a body shorter than its
      Content-Length: 400. The server's reader raises its own exception classes here,
      whose text holds the offending bytes, so none of it is logged or echoed.
    - A body still incomplete after `timeout` seconds: 408. A client that sends headers
      and then trickles bytes would otherwise hold one of the worker's threads for as
      long as it likes. gunicorn hands its client socket over as `gunicorn.socket`;
      its timeout is set for each read and put back after.
    """
    environ = request.environ
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
    if length is None and not environ.get("wsgi.input_terminated"):
        return b""  # neither a length nor chunked: WSGI says there is no body
    wanted = MAX_BODY_BYTES + 1 if length is None else length
    sock = environ.get("gunicorn.socket")
    previous_timeout = sock.gettimeout() if sock is not None else None
    deadline = time.monotonic() + timeout
    body = bytearray()
    try:
        while len(body) < wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if sock is not None:
                sock.settimeout(remaining)
            chunk = environ["wsgi.input"].read(min(16384, wanted - len(body)))
            if not chunk:
                break
            body += chunk
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time") from None
    except Exception:  # noqa: BLE001 - see the docstring: malformed framing, never logged
        raise BadRequest("the request body is malformed") from None
    finally:
        if sock is not None:
            sock.settimeout(previous_timeout)
    if len(body) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
    if length is not None and len(body) < length:
        raise BadRequest("the request body is shorter than its Content-Length")
    return bytes(body)


class _JsonPairs(list):
    """The key/value pairs of a JSON object, duplicates kept (see `_parse_json`)."""


def _parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    """Parse `a=1&b=2`, refusing bytes that are not UTF-8.

    Werkzeug's own form parser silently drops a body with invalid UTF-8 escapes, which
    would turn into a misleading "email is required"; parsing it here says what is wrong.
    """
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None


def _parse_multipart(body: bytes, boundary: str | None) -> list[tuple[str, str]]:
    """The text fields of a multipart/form-data body (file parts are ignored).

    Werkzeug's own form parser decodes each part with errors="replace", so a password
    that really holds U+FFFD could not be told from bytes that are not UTF-8. Its
    sans-I/O decoder hands over each part's bytes instead, decoded strictly here.
    """
    if not boundary:
        raise BadRequest("multipart/form-data needs a boundary parameter")
    decoder = MultipartDecoder(boundary.encode("latin-1", "replace"))
    decoder.receive_data(body)
    decoder.receive_data(None)
    pairs: list[tuple[str, str]] = []
    name: str | None = None
    value = bytearray()
    try:
        event = decoder.next_event()
        while not isinstance(event, Epilogue):
            if isinstance(event, Field):
                name, value = event.name, bytearray()
            elif isinstance(event, File):
                name = None  # a file part is no field of ours
            elif isinstance(event, Data) and name is not None:
                value += event.data
                if not event.more_data:
                    pairs.append((name, value.decode("utf-8")))
            event = decoder.next_event()
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not valid UTF-8") from None
    except ValueError:
        raise BadRequest("the multipart body is malformed") from None
    return pairs


def _parse_json(body: bytes) -> list[tuple[str, Any]]:
    """The members of a JSON object body, in order, duplicates kept."""
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_JsonPairs)
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    except RecursionError:  # "[[[[..." tens of thousands deep
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(document, _JsonPairs):
        raise BadRequest("request body must be a JSON object")
    return document


def _body_pairs(request: ApiRequest, body: bytes) -> list[tuple[str, Any]]:
    """Every (name, value) pair in the body, whichever of the three encodings it uses."""
    mimetype = request.mimetype
    if mimetype == "application/x-www-form-urlencoded":
        return _parse_urlencoded(body)
    if mimetype == "multipart/form-data":
        return _parse_multipart(body, request.mimetype_params.get("boundary"))
    if mimetype == "application/json":
        return _parse_json(body)
    if not mimetype and not body:
        return []  # no body at all: every field is missing
    raise UnsupportedMediaType(
        "send application/x-www-form-urlencoded, multipart/form-data or application/json"
    )


def _text_field(name: str, value: Any) -> str:
    """Check one field's value: a string, not blank, encodable as UTF-8."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if not value.strip():
        raise BadRequest(f"{name} is required")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. JSON "\udcff"
        raise BadRequest(f"{name} is not valid UTF-8") from None
    return value


def read_fields(
    request: ApiRequest, body: bytes, *names: str, optional: tuple[str, ...] = ()
) -> dict[str, str]:
    """Read the named fields from a urlencoded, multipart or JSON body.

    Each must be present, a non-blank string, and sent once (or twice with the same
    value); one of `optional` may be left out (or blank), and is then not in the answer.
    Other fields are ignored. Raises a 4xx HTTPException naming the field.
    """
    names = names + optional
    received: dict[str, Any] = {}
    for name, value in _body_pairs(request, body):
        if name not in names:
            continue
        if name in received and received[name] != value:
            raise BadRequest(f"{name} was sent more than once with different values")
        received[name] = value
    fields = {}
    for name in names:
        value = received.get(name)
        if name in optional and (
            value is None
            or value == ""
            or (isinstance(value, str) and not value.strip())
        ):
            continue
        if name not in received:
            raise BadRequest(f"{name} is required")
        fields[name] = _text_field(name, received[name])
    return fields


def _plain_json(value: Any) -> Any:
    """A JSON value with `_parse_json`'s pair lists made dicts again (a member sent
    twice: the last one, as JSON parsers do)."""
    if isinstance(value, _JsonPairs):
        return {name: _plain_json(member) for name, member in value}
    if isinstance(value, list):
        return [_plain_json(item) for item in value]
    return value


def read_object_field(request: ApiRequest, body: bytes, name: str) -> dict[str, Any]:
    """The JSON object `name` of a JSON body (a WebAuthn credential): present, an
    object, sent once (or twice the same). Other encodings: 415."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send application/json")
    values = [value for key, value in _parse_json(body) if key == name]
    if not values:
        raise BadRequest(f"{name} is required")
    if any(value != values[0] for value in values):
        raise BadRequest(f"{name} was sent more than once with different values")
    if not isinstance(values[0], _JsonPairs):
        raise BadRequest(f"{name} must be a JSON object")
    try:
        return _plain_json(values[0])
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None


MAX_CHALLENGE_ID_CHARS = 100
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def valid_challenge_id(challenge_id: str) -> str:
    """A challenge id as the options gave it: at most 100 characters."""
    if len(challenge_id) > MAX_CHALLENGE_ID_CHARS:
        raise BadRequest("challenge_id is not valid")
    return challenge_id


def passkey_name(name: str | None) -> str:
    """A passkey's name: what the user typed, trimmed, 1 to 64 characters, one line;
    "passkey" when none was given."""
    if name is None:
        return "passkey"
    name = name.strip()
    if len(name) > MAX_PASSKEY_NAME_CHARS:
        raise BadRequest(f"name may be at most {MAX_PASSKEY_NAME_CHARS} characters")
    if CONTROL_CHARACTERS.search(name):
        raise BadRequest("name may not hold control characters")
    return name


def passkey_json(passkey: PasskeyRow) -> dict[str, Any]:
    """A passkey as the API shows it: its handle, name and times, nothing of the key."""
    return {
        "id": passkey.public_id,
        "name": passkey.name,
        "created_at": iso_utc(passkey.created_at),
        "last_used_at": (
            None if passkey.last_used_at is None else iso_utc(passkey.last_used_at)
        ),
    }


def lookup_email(email: str) -> str:
    """An email to look an account up by: without surrounding spaces, at most 254 characters.

    Only registration checks the shape of an address. The routes that look one up treat
    an address nobody could have registered like any unregistered one (401 at login, 403
    for a reset token), as the course and its clients expect.
    """
    email = email.strip()
    if len(email) > MAX_EMAIL_CHARS:
        raise BadRequest(f"email must be at most {MAX_EMAIL_CHARS} characters")
    return email


def new_email(email: str, name: str = "email") -> str:
    """An email to register (or change to): `lookup_email`, and the shape of exactly one
    mailbox (400 naming the field `name` if not)."""
    email = lookup_email(email)
    if not EMAIL_SHAPE.fullmatch(email) or not is_single_mailbox(email):
        raise BadRequest(f"{name} is not a valid address")
    return email


def valid_password(name: str, password: str) -> str:
    """A password to check, unchanged (spaces are part of it); 400 past bcrypt's 72 bytes."""
    try:
        _password_bytes(password)
    except InvalidPassword:
        raise BadRequest(
            f"{name} must be at most {BCRYPT_MAX_PASSWORD_BYTES} bytes in UTF-8"
        ) from None
    return password


def new_password(name: str, password: str) -> str:
    """A password to store: `valid_password`, and no NUL character (400 saying why)."""
    if "\0" in password:
        raise BadRequest(
            f"{name} must not contain a NUL character (bcrypt would ignore what follows it)"
        )
    return valid_password(name, password)


def valid_code(code: str) -> str:
    """A verification code as typed (spaces around it dropped); 400 when it is far
    longer than any code we send. Any other wrong code is a 403 that counts a try."""
    code = code.strip()
    if len(code) > MAX_TOKEN_CHARS:
        raise BadRequest(f"code must be at most {MAX_TOKEN_CHARS} characters")
    return code


def optional_code(fields: Mapping[str, str]) -> str | None:
    """The two-factor `code` of a re-authenticated route, if one came (`valid_code`)."""
    return valid_code(fields["code"]) if "code" in fields else None


def valid_mfa_token(token: str) -> str:
    """The login's `mfa_token`, or a 400 when it is far longer than any we issue."""
    if len(token) > MAX_TOKEN_CHARS:
        raise BadRequest(f"mfa_token must be at most {MAX_TOKEN_CHARS} characters")
    return token


def valid_token(token: str) -> str:
    """The reset token, or a 400 when it is far longer than any token we issue."""
    if len(token) > MAX_TOKEN_CHARS:
        raise BadRequest(f"reset_token must be at most {MAX_TOKEN_CHARS} characters")
    return token


# =============================================================================================
# Responses
# =============================================================================================


def login_challenge(cookie_name: str) -> WWWAuthenticate:
    """The `WWW-Authenticate` of a 401 at login.

    RFC 9110 requires a challenge on every 401. There is no registered scheme for "log
    in with a form and get a cookie"; this one follows the expired
    draft-broyer-http-cookie-auth and tells a client where to log in and which cookie it
    will get.
    """
    return WWWAuthenticate(
        "Cookie",
        {"realm": "authsvc", "form-action": "/sessions", "cookie-name": cookie_name},
    )


# Each domain error Auth can raise, and what the client sees. The one place that decides.
# (InvalidCredentials is answered in on_login, Throttled in dispatch_request: they carry
# headers.)
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    DuplicateEmail: (400, "email already registered"),
    SamePassword: (400, "new password must differ from the current one"),
    AlreadyVerified: (400, "email is already verified"),
    InvalidCode: (403, "code is not valid"),
    EmailNotVerified: (403, "email not verified"),
    # The session's user was deleted while the request ran (DELETE /account raced it).
    UserNotFound: (403, "no valid session"),
    # A value the database cannot hold: every field is checked before it gets there,
    # so this is a last line, never a 500.
    InvalidValue: (400, "a value is not one the service can store"),
    UnknownSession: (404, "no such session"),
    UnknownEmail: (403, "email not registered"),
    InvalidToken: (403, "reset token is not valid"),
    TwoFactorAlreadyOn: (400, "two-factor is already on; turn it off first"),
    TwoFactorOff: (400, "two-factor is not on"),
    TooManyPasskeys: (400, f"at most {MAX_PASSKEYS} passkeys"),
    UnknownPasskey: (404, "no such passkey"),
    NoPendingSetUp: (400, "no two-factor set-up is waiting; start one first"),
    DeliveryFailed: (503, "could not send the email; try again later"),
    DatabaseBusy: (503, "the service is busy; try again in a moment"),
    DatabaseUnavailable: (503, "the database is not answering; try again later"),
}

# What POST /reset_password answers in smtp mode, registered email or not.
RESET_MAILED_MESSAGE = (
    "if this email is registered, a reset token has been mailed to it"
)


def json_response(body: Mapping[str, Any], status: int = 200) -> Response:
    """A response whose body is `body` as JSON, with Content-Type application/json."""
    return Response(json.dumps(body), status=status, content_type="application/json")


def http_error_response(error: HTTPException, environ: Mapping[str, Any]) -> Response:
    """Werkzeug's response for an HTTP error, with the HTML body replaced by JSON.

    Starting from `get_response` keeps the headers the error carries: `Allow` on a 405,
    `WWW-Authenticate` on a 401, `Retry-After` on a 429.
    """
    response = error.get_response(environ)
    response.set_data(json.dumps({"message": error.description}))
    response.mimetype = "application/json"
    return response


# An original URL longer than this is refused (a proxy passes the whole request URI).
MAX_ORIGINAL_URL_CHARS = 4096


def forwarded_url(request: ApiRequest) -> str | None:
    """The URL a Traefik or Caddy proxy is asking about, from its X-Forwarded-Proto,
    -Host and -Uri; None when it sent no X-Forwarded-Host."""
    host = request.headers.get("X-Forwarded-Host")
    if host is None:
        return None
    scheme = request.headers.get("X-Forwarded-Proto", "http").lower()
    uri = request.headers.get("X-Forwarded-Uri", "/")
    if not uri.startswith("/"):
        uri = "/" + uri
    return f"{scheme}://{host}{uri}"


def is_browser(request: ApiRequest) -> bool:
    """A browser's page load: it names text/html in Accept and is no script's XHR
    (`*/*` alone, or no Accept, is not a browser: an API client gets its 401)."""
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return False
    accept = request.headers.get("Accept", "")
    return "text/html" in accept.lower()


def session_cookie(request: ApiRequest, name: str = "session_id") -> str | None:
    """The session cookie (`name`, AUTHSVC_COOKIE_NAME) the browser sent, or None.

    A browser sends its cookies in one header, `Cookie: session_id=...; other=...`, which
    WSGI hands over as `environ["HTTP_COOKIE"]`. Reading that one key is much cheaper
    than `request.cookies`, whose header view walks the whole environ: this runs on
    every authenticated request.

    WSGI hands header bytes over decoded as Latin-1; Werkzeug's `parse_cookie` turns
    them back into bytes and decodes those as UTF-8, strictly, so a byte like 0xff in
    anyone's cookie would raise. Decoding here with replacement keeps the other cookies
    readable, and a session id is ASCII: a value that is not is no session.
    """
    return cookie_in(request.environ, name)


def cookie_in(environ: Mapping[str, Any], name: str) -> str | None:
    """`session_cookie`, from the WSGI environ itself (the hot path has no request).

    A header without quotes or backslashes is plain `name=value` pairs split by `;`:
    read here in a loop, the first pair of that name, as Werkzeug's parser would
    (a quoted value may hold a `;`, which only that parser reads right)."""
    header = environ.get("HTTP_COOKIE", "")
    if '"' not in header and "\\" not in header and header.isascii():
        for pair in header.split(";"):
            key, _, value = pair.partition("=")
            if key.strip() == name:
                return value.strip()
        return None
    text = header.encode("latin-1", "replace").decode("utf-8", "replace")
    value = parse_cookie_text(text).get(name)
    if value is None or not value.isascii():
        return None
    return value


def client_address(request: ApiRequest) -> str:
    """The client's address: the socket's peer, or behind AUTHSVC_TRUSTED_PROXIES
    proxies the X-Forwarded-For entry the nearest trusted one added (ProxyFix has put
    it in REMOTE_ADDR). Whatever is not an IP address (a Unix socket's peer, or a
    header value no proxy would write) is "": no address to store or show, and counted
    under the key "unknown" (`client_key`).
    """
    address = request.remote_addr or ""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return ""


def device_of(request: ApiRequest) -> tuple[str, str]:
    """The (User-Agent, client address) a session records about the device that logs in.

    The agent is cut to 256 characters and anything unprintable in it (a header's bytes
    arrive as Latin-1) becomes "?": it is shown back to the user in the listing.
    """
    agent = request.environ.get("HTTP_USER_AGENT", "")[:MAX_USER_AGENT_CHARS]
    agent = "".join(char if char.isprintable() else "?" for char in agent)
    return agent, client_address(request)


def iso_utc(unix_seconds: float) -> str:
    """A Unix time as an ISO 8601 UTC string to the second: "2026-11-23T10:35:47Z"."""
    moment = datetime.datetime.fromtimestamp(unix_seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def audit(
    event: str,
    outcome: str,
    client: str,
    *,
    user: User | None = None,
    email: str | None = None,
    key: str = "",
) -> None:
    """Write one audit line: event, outcome, who (user id, else an email hash), from where.

    The HTTP layer passes the client's address; the admin commands pass "cli". `key`:
    AUTHSVC_SECRET_KEY, which makes the email hash keyed. Never a password, token, hash
    or cookie.
    """
    if user is not None:
        who = f"user={user.id}"
    else:
        who = f"email_hash={email_hash(email, key)}" if email else "user=-"
    audit_logger.info("event=%s outcome=%s %s client=%s", event, outcome, who, client)


def email_hash(email: str, key: str = "") -> str:
    """A short hash of the lower-cased email: lets the audit trail follow one address
    without writing the address itself into the logs.

    With `key` (AUTHSVC_SECRET_KEY) an HMAC-SHA-256: a reader of the logs who guesses an
    address cannot check the guess without the key. Without it a plain SHA-256, which
    anyone can compute for a guessed address (start-up warns).
    """
    return keyed_sha256(email.strip().lower().encode("utf-8"), key)[:16]


# =============================================================================================
# Routes
# =============================================================================================

# One rule per (path, method), named for the action. `match()` answers 404 for any other
# path and 405, with an `Allow` header listing the methods, for a known path.
URL_MAP = Map(
    [
        Rule("/", methods=["GET"], endpoint="index"),
        Rule("/health", methods=["GET"], endpoint="health"),
        Rule("/metrics", methods=["GET"], endpoint="metrics"),
        Rule("/openapi.json", methods=["GET"], endpoint="openapi"),
        Rule("/docs", methods=["GET"], endpoint="docs"),
        Rule("/docs/<asset>", methods=["GET"], endpoint="docs_asset"),
        Rule("/users", methods=["POST"], endpoint="register"),
        Rule("/sessions", methods=["POST"], endpoint="login"),
        Rule("/sessions", methods=["DELETE"], endpoint="logout"),
        Rule("/sessions", methods=["GET"], endpoint="list_sessions"),
        # A fixed path outranks a <variable> one, so "others" never reaches end_session.
        Rule("/sessions/others", methods=["DELETE"], endpoint="end_other_sessions"),
        Rule("/sessions/<public_id>", methods=["DELETE"], endpoint="end_session"),
        Rule("/profile", methods=["GET"], endpoint="profile"),
        # Forward auth: a reverse proxy asks whether the browser's session is live.
        Rule("/auth/request", methods=["GET"], endpoint="auth_request"),
        Rule("/auth/forward", methods=["GET"], endpoint="auth_forward"),
        Rule("/reset_password", methods=["POST"], endpoint="reset_token"),
        Rule("/reset_password", methods=["PUT"], endpoint="update_password"),
        Rule("/account", methods=["GET"], endpoint="account"),
        Rule("/account", methods=["DELETE"], endpoint="delete_account"),
        Rule("/account/password", methods=["PUT"], endpoint="change_password"),
        Rule(
            "/account/verification", methods=["POST"], endpoint="request_verification"
        ),
        Rule("/account/verification", methods=["PUT"], endpoint="verify_email"),
        Rule("/account/email", methods=["PUT"], endpoint="change_email"),
        Rule("/account/password_policy", methods=["GET"], endpoint="password_policy"),
        Rule("/account/two_factor", methods=["POST"], endpoint="begin_two_factor"),
        Rule("/account/two_factor", methods=["PUT"], endpoint="enable_two_factor"),
        Rule("/account/two_factor", methods=["DELETE"], endpoint="disable_two_factor"),
        Rule(
            "/account/recovery_codes", methods=["POST"], endpoint="renew_recovery_codes"
        ),
        Rule("/account/passkeys/options", methods=["POST"], endpoint="passkey_options"),
        Rule("/account/passkeys", methods=["POST"], endpoint="add_passkey"),
        Rule("/account/passkeys", methods=["GET"], endpoint="list_passkeys"),
        Rule(
            "/account/passkeys/<public_id>",
            methods=["PATCH"],
            endpoint="rename_passkey",
        ),
        Rule(
            "/account/passkeys/<public_id>",
            methods=["DELETE"],
            endpoint="remove_passkey",
        ),
        Rule(
            "/sessions/passkey/options",
            methods=["POST"],
            endpoint="passkey_login_options",
        ),
        Rule("/sessions/passkey", methods=["POST"], endpoint="passkey_login"),
        # The pages (pages.py): HTML forms over the routes above.
        Rule("/ui/style.css", methods=["GET"], endpoint="ui_style"),
        Rule("/ui/passkeys.js", methods=["GET"], endpoint="ui_script"),
        Rule("/ui/signup", methods=["GET"], endpoint="ui_signup_form"),
        Rule("/ui/signup", methods=["POST"], endpoint="ui_signup"),
        Rule("/ui/login", methods=["GET"], endpoint="ui_login_form"),
        Rule("/ui/login", methods=["POST"], endpoint="ui_login"),
        Rule("/ui/login/code", methods=["GET"], endpoint="ui_login_code_form"),
        Rule("/ui/login/code", methods=["POST"], endpoint="ui_login_code"),
        Rule("/ui/logout", methods=["POST"], endpoint="ui_logout"),
        Rule("/ui/reset", methods=["GET"], endpoint="ui_reset_form"),
        Rule("/ui/reset", methods=["POST"], endpoint="ui_reset"),
        Rule("/ui/reset/confirm", methods=["GET"], endpoint="ui_reset_confirm_form"),
        Rule("/ui/reset/confirm", methods=["POST"], endpoint="ui_reset_confirm"),
        Rule("/ui/verify", methods=["GET"], endpoint="ui_verify_form"),
        Rule("/ui/verify", methods=["POST"], endpoint="ui_verify"),
        Rule("/ui/account", methods=["GET"], endpoint="ui_account"),
        Rule("/ui/account/<action>", methods=["POST"], endpoint="ui_account_action"),
    ]
)

# The API document, and the docs page with the files it loads: Swagger UI's from the
# pinned swagger-ui-py package (found without importing it: only its files are used),
# authsvc's own page and start script from docs/. No other name is served.
HERE = Path(__file__).resolve().parent
OPENAPI_PATH = HERE / "openapi.json"
DOCS_PAGE_PATH = HERE / "docs" / "index.html"
SWAGGER_UI_FILES = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)
# What the docs page may load or talk to: its own files and this service, nothing else.
# No inline script, no eval, no frames; images also as data: URLs (Swagger UI's icons).
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_ASSET_MAX_AGE = 24 * 60 * 60  # the files change only with the pinned package


def docs_assets() -> dict[str, Path]:
    """The files GET /docs/<asset> serves, by name."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        return {}  # not installed: the page's files are 404s, the API is unaffected
    swagger_ui = Path(spec.origin).parent / "static"
    return {
        **{name: swagger_ui / name for name in SWAGGER_UI_FILES},
        "authsvc-docs.js": HERE / "docs" / "authsvc-docs.js",
    }


# Methods that only read: a page of another site may make these requests (a link, an
# image); any other method changes state, and is refused from another site's page
# (AuthApp.refuse_other_sites): a login (login CSRF), a logout, a sign-up or a reset
# request (a hostile page would spread them over its visitors' addresses, past every
# per-client limit).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The passkey routes take JSON bodies only (SPEC "Passkeys"): a credential is a JSON
# document (WebAuthn's toJSON()), which no form encoding carries. The pages call the
# handlers with their forms directly (rename, remove); the API refuses the rest with 415.
JSON_ONLY_ENDPOINTS = frozenset(
    {
        "passkey_options",
        "add_passkey",
        "rename_passkey",
        "remove_passkey",
        "passkey_login_options",
        "passkey_login",
    }
)

# Endpoints whose answer carries or depends on a session or a token: `Cache-Control:
# no-store`, so neither the browser nor a proxy keeps a copy of it on disk.
# Endpoints whose answer depends on the session cookie: `Vary: Cookie`, so no cache
# serves one user's answer to another.
COOKIE_ENDPOINTS = frozenset(
    {
        "logout",
        "profile",
        "auth_request",
        "auth_forward",
        "list_sessions",
        "end_session",
        "end_other_sessions",
        "account",
        "delete_account",
        "change_password",
        "request_verification",
        "verify_email",
        "change_email",
        "begin_two_factor",
        "enable_two_factor",
        "disable_two_factor",
        "renew_recovery_codes",
        "passkey_options",
        "add_passkey",
        "list_passkeys",
        "rename_passkey",
        "remove_passkey",
    }
)
NO_STORE_ENDPOINTS = COOKIE_ENDPOINTS | {
    "login",
    "passkey_login_options",  # a challenge, for one ceremony
    "passkey_login",
    "reset_token",
    "update_password",
    "health",  # a stale "ok" from a cache would hide an outage from the load balancer
    "metrics",  # each scrape must see the figures of that moment
}


# On every answer: what it is, it says itself (JSON; a page's HTML), and nosniff stops a
# browser from guessing otherwise (and, say, running a body as script).
NOSNIFF = ("X-Content-Type-Options", "nosniff")


def caching_headers(endpoint: str) -> list[tuple[str, str]]:
    """The headers an endpoint's every answer carries besides its own: `no-store` and
    `Vary: Cookie` where they apply. The one source of both paths' headers: the
    Werkzeug one (`dispatch_request`) and the hand-written one (`HotPath`)."""
    headers = []
    if endpoint in NO_STORE_ENDPOINTS:
        headers.append(("Cache-Control", "no-store"))
    if endpoint in COOKIE_ENDPOINTS:
        headers.append(("Vary", "Cookie"))
    return headers


# =============================================================================================
# The application
# =============================================================================================


def static_routes(url_map: Map) -> dict[tuple[str, str], str]:
    """(path, method) -> endpoint for every rule without a variable part: one dict
    lookup where `Map.match` would walk its state machine (Werkzeug adds HEAD to
    every GET rule; so does this)."""
    found = {}
    for rule in url_map.iter_rules():
        if not rule.arguments:
            for method in rule.methods or ():
                found[(rule.rule, method)] = rule.endpoint
    return found


# The paths the hot path answers, and their URL_MAP endpoints (HotPath's method names).
HOT_ENDPOINTS = {"/": "index", "/profile": "profile", "/auth/request": "auth_request"}


class HotPath:
    """The answers every protected request waits for, written out by hand.

    `GET /profile` and, behind a proxy, `GET /auth/request` for every request of every
    application: a live session's 200 is the service's most frequent answer, and its
    cost is added to all of them (issue 25). Werkzeug's `Request` and `Response` do
    general work per request (header objects, cookie jars, lazy properties,
    `get_wsgi_headers`); here the one cookie is read from `environ`, the one query
    runs, and the answer is what Werkzeug would write, in WSGI's own terms: a status
    line, a list of headers, the body's bytes. Everything else (a missing or ended
    session, a foreign original URL, an error) is declined, None, and answered by the
    Werkzeug path, so there is one way to refuse. The headers come from
    `caching_headers` and NOSNIFF, as the Werkzeug path's do; tests/test_hot_path.py
    compares the two answers header by header.
    """

    def __init__(self, app: AuthApp) -> None:
        """Answer for `app`: its Auth, its cookie name, its deployment's URLs."""
        self.app = app
        self.cookie_name = app.config.cookie_name
        # Each path's answer is the method named for its endpoint.
        self.routes: dict[str, Callable[[dict[str, Any]], tuple | None]] = {
            path: getattr(self, endpoint) for path, endpoint in HOT_ENDPOINTS.items()
        }
        greeting = json.dumps({"message": "Bienvenue"}).encode()
        self.greeting = ("index", "200 OK", self.headers("index", greeting), greeting)

    def answer(self, environ: dict[str, Any]) -> tuple | None:
        """(endpoint, status line, headers, body) for a request it answers, else None.

        The database's errors leave as they are (`AuthApp.database_failure` answers
        them); anything else unexpected reaches the catch-all, as on the other path."""
        if environ.get("REQUEST_METHOD") != "GET":
            return None
        route = self.routes.get(environ.get("PATH_INFO", ""))
        return None if route is None else route(environ)

    def endpoint(self, environ: dict[str, Any]) -> str:
        """The endpoint of a path the hot path answers ("profile" for /profile)."""
        return HOT_ENDPOINTS[environ.get("PATH_INFO", "")]

    @staticmethod
    def headers(endpoint: str, body: bytes) -> list[tuple[str, str]]:
        """The headers of a JSON answer of `endpoint`, in Werkzeug's order."""
        return [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *caching_headers(endpoint),
            NOSNIFF,
        ]

    def index(self, environ: dict[str, Any]) -> tuple:
        """GET /: the greeting, made once."""
        return self.greeting

    def live_user(self, environ: dict[str, Any]) -> tuple[int, str] | None:
        """(id, email) of the user of the request's live session, or None."""
        return self.app.auth.live_session_user(cookie_in(environ, self.cookie_name))

    def profile(self, environ: dict[str, Any]) -> tuple | None:
        """GET /profile with a live session: the email."""
        user = self.live_user(environ)
        if user is None:
            return None
        body = email_body(user[1])
        return "profile", "200 OK", self.headers("profile", body), body

    def auth_request(self, environ: dict[str, Any]) -> tuple | None:
        """GET /auth/request with a live session (and an original URL of this
        deployment, when the proxy names one): 200 with Remote-User, Remote-Email."""
        original = environ.get("HTTP_X_ORIGINAL_URL")
        if original is not None:
            try:
                origin = own_origin(environ)
            except SecurityError:  # a Host of characters no host has: the 400's path
                return None
            if not self.app.is_deployment_url(original, origin):
                return None
        user = self.live_user(environ)
        if user is None:
            return None
        user_id, email = user
        body = email_body(email)
        headers = self.headers("auth_request", body)
        headers[2:2] = [("Remote-User", str(user_id)), ("Remote-Email", email)]
        return "auth_request", "200 OK", headers, body


def email_body(email: str) -> bytes:
    """`json.dumps({"email": email})`'s bytes, with the string alone through the encoder
    (the same escaping, without the walk over a dict)."""
    return b'{"email": ' + json.dumps(email).encode() + b"}"


def own_origin(environ: dict[str, Any]) -> str:
    """The origin this request came to: `Request.host_url` without its slash, from
    the same two Werkzeug functions."""
    return get_current_url(environ["wsgi.url_scheme"], get_host(environ)).rstrip("/")


class AuthApp:
    """The WSGI application: routes each request to an `on_<endpoint>` handler."""

    def __init__(self, auth: Auth, config: Config) -> None:
        """Serve `auth`; `config` decides the cookie's `Secure` flag and reset delivery.

        Reports what it measures to `auth.metrics` (NoMetrics unless AUTHSVC_METRICS).
        """
        self.auth = auth
        self.config = config
        self.metrics = auth.metrics
        self.login_challenge = login_challenge(config.cookie_name)
        if config.trusted_proxies:
            # Behind N proxies, each appends the address it got the request from to
            # X-Forwarded-For (and the scheme to X-Forwarded-Proto): the Nth entry from
            # the right is the one the nearest trusted proxy saw. Entries further left
            # are whatever the client wrote, and are never used.
            self.wsgi_app = ProxyFix(  # type: ignore[method-assign]
                self.wsgi_app,
                x_for=config.trusted_proxies,
                x_proto=config.trusted_proxies,
            )
        # Bound once: routing looks only at the path and the method, so the per-request
        # `bind_to_environ` (host, scheme, script name) would be work thrown away.
        self.routes = URL_MAP.bind("authsvc")
        self.static_routes = static_routes(URL_MAP)
        self.hot = HotPath(self)
        # Read once: they change only with a new release.
        self.openapi_document = OPENAPI_PATH.read_bytes()
        self.docs_page = DOCS_PAGE_PATH.read_bytes()
        self.docs_assets = docs_assets()
        self.pages = Pages(self, config)

    def audit(
        self,
        request: ApiRequest,
        event: str,
        outcome: str,
        *,
        user: User | None = None,
        email: str | None = None,
    ) -> None:
        """Write one audit line: event, outcome, who (user id, else an email hash), and from where.

        Never a password, token, hash or cookie. The address is `client_address`'s: behind
        AUTHSVC_TRUSTED_PROXIES proxies, the client's as the nearest proxy saw it.
        """
        audit(
            event,
            outcome,
            client_address(request) or "-",
            user=user,
            email=email,
            key=self.config.secret_key,
        )
        self.metrics.event(event, outcome)  # counts it: logins by outcome, ...

    def request_body(self, request: ApiRequest) -> bytes:
        """The request's body, read once (`read_body`) and kept on the request."""
        if request.body is None:
            request.body = read_body(request, self.config.body_timeout)
        return request.body

    def body_fields(
        self, request: ApiRequest, *names: str, optional: tuple[str, ...] = ()
    ) -> dict[str, str]:
        """The named fields of the request's body (`read_body`, then `read_fields`)."""
        return read_fields(
            request, self.request_body(request), *names, optional=optional
        )

    def refuse_unless_json(self, request: ApiRequest) -> None:
        """415 for a body that is not JSON (the passkey routes); no body at all passes."""
        if request.mimetype != "application/json" and (
            request.mimetype or self.request_body(request)
        ):
            raise UnsupportedMediaType("send application/json")

    # -- handlers, one per rule of URL_MAP

    def on_index(self, request: ApiRequest) -> Response:
        """GET /: a greeting, to show the service is up."""
        return json_response({"message": "Bienvenue"})

    def on_health(self, request: ApiRequest) -> Response:
        """GET /health: readiness for a load balancer: can this host reach its database?"""
        if self.auth.database_answers():
            return json_response({"status": "ok"})
        # 503: take this host out of rotation until it answers 200 again.
        return json_response({"status": "unavailable"}, 503)

    def on_metrics(self, request: ApiRequest) -> Response:
        """GET /metrics: the figures for Prometheus when AUTHSVC_METRICS=true, else 404.

        The same 404 as an unknown path: with metrics off, /metrics does not exist.
        """
        if not self.config.metrics:
            raise NotFound()
        body, content_type = self.metrics.exposition(self.auth)
        return Response(body, content_type=content_type)

    def on_openapi(self, request: ApiRequest) -> Response:
        """GET /openapi.json: the API document, the repository's openapi.json as it is."""
        response = Response(self.openapi_document, content_type="application/json")
        response.headers["Cache-Control"] = "no-cache"  # revalidate: it is small
        return response

    def on_docs(self, request: ApiRequest) -> Response:
        """GET /docs: the page that renders the document (Swagger UI), with its CSP."""
        response = Response(self.docs_page, content_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def on_docs_asset(self, request: ApiRequest, asset: str) -> Response:
        """GET /docs/<asset>: one of the page's files, cacheable for a day.

        Werkzeug's send_file adds an ETag and Last-Modified and answers a conditional
        request that still matches with 304 and no body.
        """
        path = self.docs_assets.get(asset)
        if path is None:
            raise NotFound()
        response = send_file(
            path, request.environ, max_age=DOCS_ASSET_MAX_AGE, conditional=True
        )
        response.cache_control.public = True
        return response

    def on_register(self, request: ApiRequest) -> Response:
        """POST /users: create a user."""
        fields = self.body_fields(request, "email", "password")
        email = new_email(fields["email"])
        password = new_password("password", fields["password"])
        try:
            user = self.auth.register_user(email, password, client_address(request))
        except Throttled:
            self.audit(request, "register", "throttled", email=email)
            raise
        except DuplicateEmail:
            self.audit(request, "register", "duplicate", email=email)
            raise
        except WeakPassword:
            self.audit(request, "register", "weak_password", email=email)
            raise
        self.audit(request, "register", "ok", user=user)
        return json_response({"email": email, "message": "user created"})

    def on_login(self, request: ApiRequest) -> Response:
        """POST /sessions: check the password and hand out a new session cookie; with
        two-factor on, the code too, in this request or after it with the `mfa_token`."""
        fields = self.body_fields(
            request, optional=("email", "password", "code", "mfa_token")
        )
        if "mfa_token" in fields:
            return self.on_login_with_mfa_token(request, fields)
        for name in ("email", "password"):
            if name not in fields:
                raise BadRequest(f"{name} is required")
        email = lookup_email(fields["email"])
        password = valid_password("password", fields["password"])
        code = valid_code(fields["code"]) if "code" in fields else None
        user_agent, ip = device_of(request)
        try:
            user, session_id = self.auth.log_in(email, password, user_agent, ip, code)
        except LoginThrottled:
            self.audit(request, "login", "throttled", email=email)
            raise  # 429 with Retry-After (dispatch_request)
        except EmailNotVerified:
            self.audit(request, "login", "unverified", email=email)
            raise
        except InvalidCredentials:
            self.audit(request, "login", "failed", email=email)
            # One message for an unknown email and a wrong password: which one it was
            # would tell an attacker who is registered.
            raise Unauthorized(
                "wrong email or password", www_authenticate=self.login_challenge
            ) from None
        except (CodeRequired, WrongCode) as refused:
            return self._code_refused(request, refused, email=email)
        return self._logged_in(request, user, session_id)

    def on_login_with_mfa_token(
        self, request: ApiRequest, fields: Mapping[str, str]
    ) -> Response:
        """POST /sessions with `mfa_token` and `code`: the login's second step (also
        the code page's, which keeps the token in a cookie rather than in the form)."""
        if "code" not in fields:
            raise BadRequest("code is required")
        token = valid_mfa_token(fields["mfa_token"])
        code = valid_code(fields["code"])
        user_agent, ip = device_of(request)
        try:
            user, session_id = self.auth.log_in_with_mfa_token(
                token, code, user_agent, ip
            )
        except InvalidMfaToken:
            self.audit(request, "login", "invalid_mfa_token")
            return self._unauthorized(
                {"message": "mfa_token is not valid; log in again"}
            )
        except LoginThrottled:
            self.audit(request, "login", "throttled")
            raise
        except (CodeRequired, WrongCode) as refused:
            return self._code_refused(request, refused)
        return self._logged_in(request, user, session_id)

    def _code_refused(
        self, request: ApiRequest, refused: Exception, email: str | None = None
    ) -> Response:
        """The 401 of a login whose password was right but whose code is missing (with
        the `mfa_token` to send it with) or wrong."""
        if isinstance(refused, CodeRequired):
            self.audit(request, "login", "code_required", email=email)
            body: dict[str, Any] = {"message": "two-factor code required"}
            if refused.mfa_token is not None:
                body["mfa_token"] = refused.mfa_token
            return self._unauthorized(body)
        self.audit(request, "login", "wrong_code", email=email)
        return self._unauthorized({"message": "wrong two-factor code"})

    def _unauthorized(self, body: dict[str, Any]) -> Response:
        """A 401 JSON answer with the login challenge (RFC 9110: every 401 has one)."""
        response = json_response(body, 401)
        response.headers["WWW-Authenticate"] = self.login_challenge.to_header()
        return response

    def _logged_in(
        self, request: ApiRequest, user: User, session_id: str, event: str = "login"
    ) -> Response:
        """The 200 of a login (a password's, or `event` "passkey_login"), with the
        session cookie."""
        self.audit(request, event, "ok", user=user)
        # The stored email, not the typed one: the answer names the account it opened.
        response = json_response({"email": user.email, "message": "logged in"})
        self.set_session_cookie(response, session_id)
        return response

    def set_session_cookie(self, response: Response, session_id: str) -> None:
        """Hand the browser its session cookie.

        HttpOnly: page scripts cannot read it, so an XSS bug cannot steal the session.
        SameSite=Lax: other sites' forms and scripts cannot send it along (CSRF), while
        following a link to us still does. Path=/: sent to every route of the service.
        """
        response.set_cookie(
            self.config.cookie_name,
            session_id,
            path="/",
            domain=self.config.cookie_domain or None,
            httponly=True,
            samesite="Lax",
            secure=self.config.cookie_secure,
        )

    def clear_session_cookie(self, response: Response) -> None:
        """Tell the browser to drop its session cookie.

        A cookie is deleted by setting it again, expired, with the same name, path and
        attributes: a browser treats a cookie with another path as a different cookie.
        """
        response.delete_cookie(
            self.config.cookie_name,
            path="/",
            domain=self.config.cookie_domain or None,
            httponly=True,
            samesite="Lax",
            secure=self.config.cookie_secure,
        )

    def current_session(self, request: ApiRequest) -> tuple[User, Session]:
        """The user and live session of the request's cookie; 403 when there is none."""
        found = self.auth.get_session(session_cookie(request, self.config.cookie_name))
        if found is None:
            raise Forbidden("no valid session")
        return found

    def on_logout(self, request: ApiRequest) -> Response:
        """DELETE /sessions: end this session (the user's others stay) and send the browser home."""
        user = self.auth.log_out(session_cookie(request, self.config.cookie_name))
        if user is None:
            self.audit(request, "logout", "no_session")
            raise Forbidden("no valid session")
        self.audit(request, "logout", "ok", user=user)
        # 302 Found: "look at / instead". Browsers and requests follow it with a GET.
        response = json_response({"message": "logged out"}, status=302)
        response.headers["Location"] = "/"
        self.clear_session_cookie(response)
        return response

    def on_list_sessions(self, request: ApiRequest) -> Response:
        """GET /sessions: where the user is logged in, most recently used first."""
        user, current = self.current_session(request)
        sessions = [
            {
                "id": session.public_id,
                "created_at": iso_utc(session.created_at),
                "last_used_at": iso_utc(session.last_used_at),
                "expires_at": iso_utc(self.auth.session_ends_at(session)),
                "user_agent": session.user_agent,
                "ip": session.ip,
                "current": session.id == current.id,
            }
            for session in self.auth.list_sessions(user.id)
        ]
        return json_response({"sessions": sessions})

    def on_end_session(self, request: ApiRequest, public_id: str) -> Response:
        """DELETE /sessions/<id>: end one of the user's sessions (404 for any other id)."""
        user, current = self.current_session(request)
        try:
            ended = self.auth.end_session(user.id, public_id)
        except UnknownSession:
            self.audit(request, "end_session", "unknown", user=user)
            raise
        self.audit(request, "end_session", "ok", user=user)
        response = json_response({"message": "session ended"})
        if ended.id == current.id:
            self.clear_session_cookie(response)
        return response

    def on_end_other_sessions(self, request: ApiRequest) -> Response:
        """DELETE /sessions/others: end every session of the user but this one."""
        user, current = self.current_session(request)
        ended = self.auth.end_other_sessions(user.id, current)
        self.audit(request, "end_other_sessions", "ok", user=user)
        return json_response({"message": "other sessions ended", "ended": ended})

    def on_profile(self, request: ApiRequest) -> Response:
        """GET /profile: who the session cookie belongs to."""
        user, _ = self.current_session(request)
        return json_response({"email": user.email})

    # -- forward auth (SPEC v3): a proxy asks, for each request to an application
    #    behind it, whether the cookie it passes on opens a live session

    def on_auth_request(self, request: ApiRequest) -> Response:
        """GET /auth/request, for nginx's `auth_request`: 200 with the user in
        `Remote-User` and `Remote-Email`, else 401 with the login page in `Location`
        (nginx's `error_page 401` turns it into the browser's redirect). nginx takes
        only 2xx, 401 and 403 from here: an original URL not of this deployment is 403."""
        original = request.headers.get("X-Original-URL")
        if original is not None and not self.is_deployment_url(
            original, own_origin(request.environ)
        ):
            raise Forbidden("the original URL is not one of this deployment's")
        found = self.auth.get_session(session_cookie(request, self.config.cookie_name))
        if found is not None:
            return self.session_is_live(found[0])
        response = self._unauthorized({"message": "log in first"})
        response.headers["Location"] = self.login_page(original)
        return response

    def on_auth_forward(self, request: ApiRequest) -> Response:
        """GET /auth/forward, for Traefik's ForwardAuth and Caddy's forward_auth: 200
        with the user's headers, else a browser is sent to the login page (302, or 303
        after another method than GET or HEAD) and anything else gets 401. The
        original URL comes from X-Forwarded-Proto, -Host and -Uri: 400 if it is not
        of this deployment (never an open redirect)."""
        original = forwarded_url(request)
        if original is not None and not self.is_deployment_url(
            original, own_origin(request.environ)
        ):
            raise BadRequest("the original URL is not one of this deployment's")
        found = self.auth.get_session(session_cookie(request, self.config.cookie_name))
        if found is not None:
            return self.session_is_live(found[0])
        if not is_browser(request):
            return self._unauthorized({"message": "log in first"})
        method = request.headers.get("X-Forwarded-Method", "GET").upper()
        status = 302 if method in ("GET", "HEAD") else 303
        response = json_response({"message": "log in first"}, status)
        response.headers["Location"] = self.login_page(original)
        return response

    def session_is_live(self, user: User) -> Response:
        """The 200 a proxy passes on: who the user is, in the headers it copies."""
        response = json_response({"email": user.email})
        response.headers["Remote-User"] = str(user.id)
        response.headers["Remote-Email"] = user.email
        return response

    def login_page(self, original: str | None) -> str:
        """The login page's address, with `?rd=` the URL to come back to: on
        AUTHSVC_PUBLIC_URL when set, else on the original URL's own host (whose proxy
        routes /ui/ to authsvc). Absolute either way: nginx's `error_page` takes a
        relative one for a URI of its own and would serve it instead of redirecting.
        The original URL was checked to be of this deployment, so this sends nobody
        anywhere else."""
        if original is None:
            return f"{self.config.public_url}/ui/login"
        parts = urlsplit(original)
        base = self.config.public_url or f"{parts.scheme}://{parts.netloc}"
        return f"{base}/ui/login?rd={quote(original, safe='')}"

    def is_deployment_url(self, url: str, request_origin: str) -> bool:
        """True for an absolute http(s) URL whose origin is the service's own (its
        public one, or `request_origin`, the one the request came to) or one of
        AUTHSVC_ALLOWED_ORIGINS."""
        if len(url) > MAX_ORIGINAL_URL_CHARS or any(c in url for c in "\\\r\n\t "):
            return False
        try:
            parts = urlsplit(url)
        except ValueError:  # "Invalid IPv6 URL": a "[" it cannot close
            return False
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or "@" in parts.netloc
        ):
            return False
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        own = {request_origin.lower(), self.config.public_url.lower()}
        return origin in own or origin in self.config.allowed_origins

    # -- account self-service (SPEC v3): every route needs the session cookie, but the
    #    two verification routes, which also take the email instead

    @contextmanager
    def reauthentication(
        self, request: ApiRequest, user: User, event: str
    ) -> Iterator[None]:
        """Around an `Auth` call that re-authenticates `user` (`Auth.reauthenticate`):
        a wrong current password, or a missing or wrong two-factor code, is a 401 with
        the login challenge, past the login limits a 429; each audited as `event`."""
        try:
            yield
        except WrongPassword:
            self.audit(request, event, "wrong_password", user=user)
            raise Unauthorized(
                "wrong password", www_authenticate=self.login_challenge
            ) from None
        except CodeRequired:
            self.audit(request, event, "code_required", user=user)
            raise Unauthorized(
                "two-factor code required", www_authenticate=self.login_challenge
            ) from None
        except WrongCode:
            self.audit(request, event, "wrong_code", user=user)
            raise Unauthorized(
                "wrong two-factor code", www_authenticate=self.login_challenge
            ) from None
        except LoginThrottled:
            self.audit(request, event, "throttled", user=user)
            raise

    def on_account(self, request: ApiRequest) -> Response:
        """GET /account: the profile that grows (GET /profile stays the course's)."""
        user, _ = self.current_session(request)
        two_factor, codes_left = self.auth.two_factor.status(user.id)
        return json_response(
            {
                "email": user.email,
                "email_verified": user.email_verified,
                "created_at": iso_utc(user.created_at or 0),
                "two_factor": two_factor,
                "recovery_codes_left": codes_left,
                "passkeys": self.auth.passkeys.count(user.id),
                "pending_email": user.pending_email,
            }
        )

    def on_change_password(self, request: ApiRequest) -> Response:
        """PUT /account/password: the current password and a new one; a new cookie."""
        user, _ = self.current_session(request)
        fields = self.body_fields(
            request, "password", "new_password", optional=("code",)
        )
        password = valid_password("password", fields["password"])
        new = new_password("new_password", fields["new_password"])
        code = optional_code(fields)
        user_agent, ip = device_of(request)
        try:
            with self.reauthentication(request, user, "password_change"):
                session_id = self.auth.change_password(
                    user, password, new, user_agent, ip, code
                )
        except (SamePassword, WeakPassword):
            self.audit(request, "password_change", "refused", user=user)
            raise
        except InvalidCredentials:
            self.audit(request, "password_change", "raced", user=user)
            raise Forbidden("no valid session") from None
        self.audit(request, "password_change", "ok", user=user)
        response = json_response({"message": "password changed"})
        self.set_session_cookie(response, session_id)
        return response

    def session_if_any(self, request: ApiRequest) -> tuple[User | None, Session | None]:
        """The two verification routes: the cookie's user and session, or (None, None)
        with no cookie at all (the route then takes the `email` from the body). A
        cookie that opens no session is a 403, as on every cookie route."""
        if session_cookie(request, self.config.cookie_name) is None:
            return None, None
        return self.current_session(request)

    def on_request_verification(self, request: ApiRequest) -> Response:
        """POST /account/verification: a code for the current address, or the pending
        new one; without a cookie, for the `email` given (as POST /reset_password)."""
        user, _ = self.session_if_any(request)
        if user is None:
            email = lookup_email(self.body_fields(request, "email")["email"])
            return self._request_verification_for(request, email)
        try:
            _, code = self.auth.request_verification(user)
        except Throttled:
            self.audit(request, "verification_request", "throttled", user=user)
            raise
        except AlreadyVerified:
            self.audit(request, "verification_request", "already_verified", user=user)
            raise
        self.audit(request, "verification_request", "ok", user=user)
        return self.code_sent({"message": "verification code sent"}, code)

    def _request_verification_for(self, request: ApiRequest, email: str) -> Response:
        """POST /account/verification without a cookie: smtp delivery answers the same
        200 for every address; response delivery the code, or 403 for an unknown one."""
        try:
            found = self.auth.request_verification_for(email, client_address(request))
        except Throttled:
            self.audit(request, "verification_request", "throttled", email=email)
            raise
        except UnknownEmail:
            self.audit(request, "verification_request", "unknown_email", email=email)
            raise
        if found is None:
            self.audit(request, "verification_request", "not_sent", email=email)
            return json_response({"message": "verification code sent"})
        user, code = found
        self.audit(request, "verification_request", "ok", user=user)
        return self.code_sent({"message": "verification code sent"}, code)

    def code_sent(self, body: dict[str, Any], code: str) -> Response:
        """An answer that sent a code: in response delivery (the course's) the code is
        in it, as the reset token is; in smtp delivery only in the mail."""
        if self.config.reset_delivery == "response":
            body = {**body, "verification_code": code}
        return json_response(body)

    def on_verify_email(self, request: ApiRequest) -> Response:
        """PUT /account/verification: the code comes back; the address is proved (and
        an email change waiting for it happens)."""
        user, session = self.session_if_any(request)
        if user is None:
            fields = self.body_fields(request, "email", "code")
            email = lookup_email(fields["email"])
            try:
                user = self.auth.find_user(email)
            except UnknownEmail:
                self.audit(request, "verification", "unknown_email", email=email)
                raise InvalidCode("code is not valid") from None
        else:
            fields = self.body_fields(request, "code")
        code = valid_code(fields["code"])
        try:
            confirmed, old_email = self.auth.confirm_code(user, code, keep=session)
        except InvalidCode:
            self.audit(request, "verification", "invalid_code", user=user)
            raise
        except DuplicateEmail:
            self.audit(request, "email_change", "duplicate", user=user)
            raise
        if old_email is not None:
            self.audit(request, "email_change", "ok", user=user)
        self.audit(request, "verification", "ok", user=user)
        return json_response({"email": confirmed.email, "message": "email verified"})

    def on_change_email(self, request: ApiRequest) -> Response:
        """PUT /account/email: the current password and a new address, which gets a
        code; the email changes only when that code comes back."""
        user, _ = self.current_session(request)
        fields = self.body_fields(request, "password", "new_email", optional=("code",))
        password = valid_password("password", fields["password"])
        address = new_email(fields["new_email"], "new_email")
        factor_code = optional_code(fields)
        try:
            with self.reauthentication(request, user, "email_change_request"):
                code = self.auth.request_email_change(
                    user, password, address, client_address(request), factor_code
                )
        except DuplicateEmail:
            self.audit(request, "email_change_request", "duplicate", user=user)
            raise
        except Throttled:
            self.audit(request, "email_change_request", "throttled", user=user)
            raise
        self.audit(request, "email_change_request", "ok", user=user)
        return self.code_sent({"message": "confirm the new address"}, code)

    def on_delete_account(self, request: ApiRequest) -> Response:
        """DELETE /account: the current password; the account and all it held go."""
        user, _ = self.current_session(request)
        password, code = self.reauthenticated_fields(request)
        with self.reauthentication(request, user, "account_delete"):
            self.auth.delete_account(user, password, client_address(request), code)
        self.audit(request, "account_delete", "ok", user=user)
        response = json_response({"message": "account deleted"})
        self.clear_session_cookie(response)
        return response

    # -- two-factor (SPEC v3 "Two-factor")

    def reauthenticated_fields(self, request: ApiRequest) -> tuple[str, str | None]:
        """The (R) routes' `password`, and `code` when one came."""
        fields = self.body_fields(request, "password", optional=("code",))
        return valid_password("password", fields["password"]), optional_code(fields)

    def on_begin_two_factor(self, request: ApiRequest) -> Response:
        """POST /account/two_factor: the password; a pending secret, its otpauth URI
        and a QR code of it, for an authenticator app."""
        user, _ = self.current_session(request)
        password, code = self.reauthenticated_fields(request)
        with self.reauthentication(request, user, "two_factor_enrol"):
            enrolment = self.auth.begin_two_factor(
                user, password, client_address(request), code
            )
        self.audit(request, "two_factor_enrol", "ok", user=user)
        return json_response(
            {
                "secret": enrolment.secret,
                "otpauth_uri": enrolment.otpauth_uri,
                "qr_svg": enrolment.qr_svg,
            }
        )

    def on_enable_two_factor(self, request: ApiRequest) -> Response:
        """PUT /account/two_factor: a code from the pending secret turns two-factor on;
        the recovery codes, this once."""
        user, session = self.current_session(request)
        code = valid_code(self.body_fields(request, "code")["code"])
        try:
            codes = self.auth.enable_two_factor(user, code, keep=session)
        except WrongCode:
            self.audit(request, "two_factor_on", "wrong_code", user=user)
            raise Forbidden("wrong two-factor code") from None
        except NoPendingSetUp:
            self.audit(request, "two_factor_on", "no_set_up", user=user)
            raise
        self.audit(request, "two_factor_on", "ok", user=user)
        return json_response({"message": "two-factor on", "recovery_codes": codes})

    def on_disable_two_factor(self, request: ApiRequest) -> Response:
        """DELETE /account/two_factor: the password and a code turn two-factor off."""
        user, _ = self.current_session(request)
        password, code = self.reauthenticated_fields(request)
        with self.reauthentication(request, user, "two_factor_off"):
            self.auth.disable_two_factor(user, password, code, client_address(request))
        self.audit(request, "two_factor_off", "ok", user=user)
        return json_response({"message": "two-factor off"})

    def on_renew_recovery_codes(self, request: ApiRequest) -> Response:
        """POST /account/recovery_codes: the password and a code; 10 new recovery codes,
        and the earlier ones stop working."""
        user, _ = self.current_session(request)
        password, code = self.reauthenticated_fields(request)
        with self.reauthentication(request, user, "recovery_codes"):
            codes = self.auth.renew_recovery_codes(
                user, password, code, client_address(request)
            )
        self.audit(request, "recovery_codes", "ok", user=user)
        return json_response({"recovery_codes": codes})

    # -- passkeys (SPEC v3 "Passkeys")

    def object_field(self, request: ApiRequest, name: str) -> dict[str, Any]:
        """The JSON object `name` of the request's body (`read_object_field`)."""
        return read_object_field(request, self.request_body(request), name)

    def on_passkey_options(self, request: ApiRequest) -> Response:
        """POST /account/passkeys/options: the password (and code); a challenge and
        the options for navigator.credentials.create()."""
        user, _ = self.current_session(request)
        password, code = self.reauthenticated_fields(request)
        try:
            with self.reauthentication(request, user, "passkey_options"):
                ceremony = self.auth.passkey_options(
                    user, password, client_address(request), code
                )
        except TooManyPasskeys:
            self.audit(request, "passkey_options", "limit", user=user)
            raise
        self.audit(request, "passkey_options", "ok", user=user)
        return json_response(
            {"challenge_id": ceremony.challenge_id, "options": ceremony.options}
        )

    def on_add_passkey(self, request: ApiRequest) -> Response:
        """POST /account/passkeys: the challenge's id and the credential the browser
        made; the new passkey."""
        user, _ = self.current_session(request)
        fields = self.body_fields(request, "challenge_id", optional=("name",))
        challenge_id = valid_challenge_id(fields["challenge_id"])
        name = passkey_name(fields.get("name"))
        credential = self.object_field(request, "credential")
        try:
            passkey = self.auth.add_passkey(user, challenge_id, credential, name)
        except PasskeyRefused as refused:
            self.audit(request, "passkey_add", "refused", user=user)
            return json_response({"message": str(refused)}, 400)
        except TooManyPasskeys:
            self.audit(request, "passkey_add", "limit", user=user)
            raise
        self.audit(request, "passkey_add", "ok", user=user)
        return json_response(passkey_json(passkey))

    def on_list_passkeys(self, request: ApiRequest) -> Response:
        """GET /account/passkeys: the user's passkeys, oldest first."""
        user, _ = self.current_session(request)
        passkeys = self.auth.passkeys.of(user.id)
        return json_response({"passkeys": [passkey_json(p) for p in passkeys]})

    def on_rename_passkey(self, request: ApiRequest, public_id: str) -> Response:
        """PATCH /account/passkeys/<id>: a new name (404 for another user's)."""
        user, _ = self.current_session(request)
        name = passkey_name(self.body_fields(request, "name")["name"])
        renamed = self.auth.passkeys.rename(user.id, public_id, name)
        self.audit(request, "passkey_rename", "ok", user=user)
        return json_response(passkey_json(renamed))

    def on_remove_passkey(self, request: ApiRequest, public_id: str) -> Response:
        """DELETE /account/passkeys/<id>: the password (and code); the passkey goes."""
        user, _ = self.current_session(request)
        password, code = self.reauthenticated_fields(request)
        try:
            with self.reauthentication(request, user, "passkey_remove"):
                self.auth.remove_passkey(
                    user, public_id, password, client_address(request), code
                )
        except UnknownPasskey:
            self.audit(request, "passkey_remove", "unknown", user=user)
            raise
        self.audit(request, "passkey_remove", "ok", user=user)
        return json_response({"message": "passkey removed"})

    def on_passkey_login_options(self, request: ApiRequest) -> Response:
        """POST /sessions/passkey/options: a challenge and the options for
        navigator.credentials.get(), no cookie needed."""
        try:
            ceremony = self.auth.passkey_login_options(client_address(request))
        except LoginThrottled:
            self.audit(request, "passkey_login", "throttled")
            raise
        return json_response(
            {"challenge_id": ceremony.challenge_id, "options": ceremony.options}
        )

    def on_passkey_login(self, request: ApiRequest) -> Response:
        """POST /sessions/passkey: the challenge's id and the signed assertion; the
        session cookie, as a password login gives."""
        fields = self.body_fields(request, "challenge_id")
        challenge_id = valid_challenge_id(fields["challenge_id"])
        credential = self.object_field(request, "credential")
        user_agent, ip = device_of(request)
        try:
            user, session_id = self.auth.log_in_with_passkey(
                challenge_id, credential, user_agent, ip
            )
        except PasskeyRefused:
            self.audit(request, "passkey_login", "refused")
            return self._unauthorized({"message": PASSKEY_LOGIN_REFUSED})
        except LoginThrottled:
            self.audit(request, "passkey_login", "throttled")
            raise
        except EmailNotVerified:
            self.audit(request, "passkey_login", "unverified")
            raise
        return self._logged_in(request, user, session_id, event="passkey_login")

    def on_password_policy(self, request: ApiRequest) -> Response:
        """GET /account/password_policy: the rules a new password must pass, so a page
        can tell the user before they submit (no cookie needed)."""
        return json_response(self.auth.password_policy.describe())

    def on_reset_token(self, request: ApiRequest) -> Response:
        """POST /reset_password: issue a reset token, in the response or by mail."""
        email = lookup_email(self.body_fields(request, "email")["email"])
        if self.config.reset_delivery == "smtp":
            return self._mail_reset_token(request, email)
        try:
            user, reset_token = self.auth.issue_reset_token(
                email, client_address(request)
            )
        except Throttled:
            self.audit(request, "reset_request", "throttled", email=email)
            raise
        except UnknownEmail:
            self.audit(request, "reset_request", "unknown_email", email=email)
            raise
        self.audit(request, "reset_request", "ok", email=email)
        return json_response({"email": user.email, "reset_token": reset_token})

    def _mail_reset_token(self, request: ApiRequest, email: str) -> Response:
        """smtp delivery: the same 200 for every address, the token only in the mail."""
        try:
            outcome, user = self.auth.mail_reset_token(email, client_address(request))
        except Throttled:
            self.audit(request, "reset_request", "throttled", email=email)
            raise
        except DeliveryFailed:
            self.audit(request, "reset_request", "mail_failed", email=email)
            raise
        self.audit(request, "reset_request", outcome, user=user, email=email)
        return json_response({"message": RESET_MAILED_MESSAGE})

    def on_update_password(self, request: ApiRequest) -> Response:
        """PUT /reset_password: set a new password with a reset token."""
        fields = self.body_fields(request, "email", "reset_token", "new_password")
        email = lookup_email(fields["email"])
        reset_token = valid_token(fields["reset_token"])
        password = new_password("new_password", fields["new_password"])
        try:
            user = self.auth.reset_password(reset_token, password, email=email)
        except InvalidToken:
            self.audit(request, "password_update", "invalid_token", email=email)
            raise
        except WeakPassword:
            self.audit(request, "password_update", "weak_password", email=email)
            raise
        self.audit(request, "password_update", "ok", email=email)
        return json_response({"email": user.email, "message": "Password updated"})

    # -- plumbing

    def refuse_other_sites(self, request: ApiRequest) -> None:
        """403 for a request a browser says comes from a page of another site.

        OWASP's CSRF cheat sheet, "verifying origin with standard headers": a browser
        sends `Origin` with every POST and DELETE it makes for a page (scripts and
        forms), and `Sec-Fetch-Site` with every request. SameSite=Lax already keeps the
        cookie off such requests; this is the second wall, and the only one for a login
        (a page that logs the visitor in as the attacker, "login CSRF", sends no cookie
        at all). Clients that are not browsers (curl, requests, the course's script)
        send neither header and pass. `Origin: null` (a sandboxed or file: page) is no
        origin of ours, unless the browser also says `Sec-Fetch-Site: same-origin`:
        a form of our own pages sends `Origin: null`, because they ask for
        `Referrer-Policy: no-referrer`, and a page cannot forge a `Sec-` header.
        """
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site == "cross-site":
            raise Forbidden("cross-site request refused")
        if fetch_site == "same-origin":
            return
        origin = request.headers.get("Origin")
        if origin is None:
            return
        own = request.host_url.rstrip("/")  # scheme and Host of this request
        if origin != own and origin not in self.config.allowed_origins:
            raise Forbidden("cross-site request refused")

    def dispatch_request(self, request: ApiRequest) -> Response:
        """Route the request: a page (`/ui/...`) to pages.py, anything else to its
        `on_<endpoint>` handler through `answer`; then the caching headers."""
        endpoint = self.static_routes.get((request.path, request.method))
        arguments: Mapping[str, Any] = {}
        if endpoint is None:  # a path with a variable part, or none of ours
            try:
                endpoint, arguments = self.routes.match(request.path, request.method)
            except HTTPException as error:  # 404, 405
                return http_error_response(error, request.environ)
        request.route = endpoint
        if endpoint.startswith("ui_"):
            response = self.pages.show(request, endpoint, arguments)
        else:
            response = self.answer(request, endpoint, arguments)
        for name, value in caching_headers(endpoint):
            response.headers[name] = value
        return response

    def answer(
        self,
        request: ApiRequest,
        endpoint: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> Response:
        """The API's answer to the request from the handler of `endpoint`: every expected
        failure turned into its JSON error. The pages call this too, so a page gets
        exactly the API's checks, limits, audit lines and answers."""
        try:
            if request.method not in SAFE_METHODS:
                self.refuse_other_sites(request)
            if endpoint in JSON_ONLY_ENDPOINTS and not request.route.startswith("ui_"):
                self.refuse_unless_json(request)
            return getattr(self, f"on_{endpoint}")(request, **(arguments or {}))
        except HTTPException as error:
            return http_error_response(error, request.environ)
        except WeakPassword as weak:
            # 400 with the policy's reason: NIST asks that whoever chose a refused
            # password be told why.
            return json_response({"message": str(weak)}, 400)
        except Throttled as throttled:
            # 429 with Retry-After: how many seconds until the window ends.
            return http_error_response(
                TooManyRequests(throttled.message, retry_after=throttled.retry_after),
                request.environ,
            )
        except tuple(DOMAIN_ERRORS) as error:
            status, message = DOMAIN_ERRORS[type(error)]
            return json_response({"message": message}, status)

    def wsgi_app(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """The WSGI entry point, and the one place that catches unexpected errors."""
        started = time.perf_counter()
        request = None
        try:
            try:
                written = self.hot.answer(environ)
            except (DatabaseBusy, DatabaseUnavailable) as error:
                # The database failed under the session check: its 503 now, as the
                # Werkzeug path answers it, rather than a second wait for the database.
                request = ApiRequest(environ)
                response = self.database_failure(
                    request, self.hot.endpoint(environ), error
                )
            else:
                if written is not None:
                    endpoint, status, headers, body = written
                    start_response(status, headers)
                    self.metrics.request(
                        endpoint, "GET", int(status[:3]), time.perf_counter() - started
                    )
                    return [body]
                request = ApiRequest(environ)
                response = self.dispatch_request(request)
        except Exception as error:  # noqa: BLE001 - the one catch-all, at the boundary
            request = request or ApiRequest(environ)
            # Log where and which class, never the exception's text: it can quote the
            # request (a password, a token). The traceback's frames say where it arose.
            logger.error(
                "unhandled %s in %s %s; traceback, most recent call last:\n%s",
                type(error).__name__,
                request.method,
                request.path,
                "".join(traceback.format_tb(error.__traceback__)).rstrip(),
            )
            response = json_response({"message": "internal server error"}, 500)
        response.headers[NOSNIFF[0]] = NOSNIFF[1]
        self.metrics.request(
            request.route,
            request.method,
            response.status_code,
            time.perf_counter() - started,
        )
        return response(environ, start_response)

    def database_failure(
        self, request: ApiRequest, endpoint: str, error: Exception
    ) -> Response:
        """The 503 of a database that failed under the hot path's session check: the
        status and message DOMAIN_ERRORS gives it, the endpoint's caching headers, as
        the Werkzeug path would answer (test_hot_path.py compares them)."""
        request.route = endpoint
        status, message = DOMAIN_ERRORS[type(error)]
        response = json_response({"message": message}, status)
        for name, value in caching_headers(endpoint):
            response.headers[name] = value
        return response

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Make the instance itself the WSGI callable, so `gunicorn authsvc:app` finds it."""
        return self.wsgi_app(environ, start_response)


def configure_logging() -> None:
    """Send authsvc's log lines (audit trail, warnings, errors) to stderr, with the pid.

    Only when nothing has configured logging yet: gunicorn leaves Python's logging alone,
    so without this the INFO audit lines would be dropped. Under gunicorn stderr goes to
    its error log; an application that configures logging itself keeps its own setup.
    """
    if logging.getLogger().handlers or logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
        )
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def create_app(config: Config | None = None) -> AuthApp:
    """Build the application from `config`, or from the environment when none is given.

    Applies the schema on a connection it closes again: nothing stays open, so a
    `gunicorn --preload` master forks no database connection into its workers.
    Raises ConfigError naming the variable when a setting is bad, or every variable
    production mode refuses.
    """
    config = config or Config.from_env(os.environ)
    refuse_unsafe_production(config)  # a Config built in Python, not from_env, too
    configure_logging()
    warning = course_mode_warning(config)
    if warning:
        logger.warning("%s", warning)
    return AuthApp(Auth(config), config)


def __getattr__(name: str) -> AuthApp:
    """`authsvc.app`, built from the environment on first access (PEP 562).

    gunicorn's `authsvc:app` looks the name up with getattr, so the app is made when the
    server loads it (in the master with --preload, else in each worker), exactly as a
    module-level `app = create_app()` would. Importing authsvc for its parts (the admin
    commands, the tests) builds nothing and opens no database.
    """
    if name == "app":
        globals()["app"] = built = create_app()
        return built
    raise AttributeError(f"module 'authsvc' has no attribute {name!r}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1:  # an operator's command: admin.py
        import admin

        sys.exit(admin.main(sys.argv[1:]))
    from werkzeug.serving import run_simple

    # 127.0.0.1, not 0.0.0.0: a development server should not be reachable from the network.
    run_simple("127.0.0.1", 5000, create_app(), threaded=True)
