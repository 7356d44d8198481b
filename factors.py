"""Second factors: TOTP codes (RFC 6238) and recovery codes.

What a factor is, how a code is checked, how a secret is kept at rest. The rows live in
store.py (tables two_factor, recovery_codes, mfa_tokens); `authsvc.Auth` decides when a
code is asked for. The libraries: pyotp computes the codes (SHA-1, 6 digits, 30 s steps,
as every authenticator app expects), segno draws the QR code, `cryptography` seals the
secret (AES-256-GCM under a key derived with HKDF from AUTHSVC_SECRET_KEY).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from store import Store

logger = logging.getLogger("authsvc")

# RFC 6238 as the apps implement it: HMAC-SHA-1, 6 digits, 30-second steps; one step of
# clock drift accepted either way (RFC 6238 section 6 recommends at most one).
TOTP_DIGITS = 6
TOTP_STEP_SECONDS = 30
TOTP_DRIFT_STEPS = 1
# A 160-bit secret (RFC 4226 section 4 recommends 160), as 32 base32 characters.
SECRET_BASE32_CHARS = 32
# A set-up not confirmed within this time is forgotten.
PENDING_TTL = 10 * 60
# Recovery codes: 10 of 120 random bits each (ASVS 6.5.2 asks at least 112 bits to store
# them as a plain SHA-256), written as 24 base32 letters in groups of four.
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_BYTES = 15
# A login whose password was right waits this long for its code, and takes this many
# wrong codes; the fifth ends it.
MFA_TOKEN_TTL = 5 * 60
MFA_TOKEN_MAX_TRIES = 5

TOTP_CODE_SHAPE = re.compile(r"[0-9]{6}")
# What a typed recovery code may hold besides its letters: the dashes it is shown with,
# spaces a person adds.
RECOVERY_CODE_SEPARATORS = re.compile(r"[\s-]+")


class CodeRequired(Exception):
    """The account has two-factor on and no code was given (401). At login it carries
    the `mfa_token` with which the code can follow."""

    def __init__(self, mfa_token: str | None = None) -> None:
        super().__init__("two-factor code required")
        self.mfa_token = mfa_token


class WrongCode(Exception):
    """The code is not the account's: wrong, already used (its time step, or a spent
    recovery code), or the secret cannot be opened with this server's key (401)."""


class InvalidMfaToken(Exception):
    """The `mfa_token` is unknown, used, expired or ended by wrong codes (401)."""


class TwoFactorAlreadyOn(Exception):
    """Setting up two-factor on an account that has it (400): turn it off first."""


class NoPendingSetUp(Exception):
    """Confirming a set-up that is not there or is older than PENDING_TTL (400)."""


class TwoFactorOff(Exception):
    """Turning off, or renewing the recovery codes of, an account without two-factor (400)."""


# ----------------------------------------------------------------------------- TOTP


def new_secret() -> str:
    """A new TOTP secret: 160 bits from the OS's CSPRNG, in base32 (pyotp draws it with
    `secrets`)."""
    return pyotp.random_base32(SECRET_BASE32_CHARS)


def time_step(now: float) -> int:
    """The RFC 6238 time step of a Unix time: T = floor(now / 30)."""
    return int(now // TOTP_STEP_SECONDS)


def code_at(secret: str, step: int) -> str:
    """The 6-digit code of `secret` for time step `step` (what the app shows then)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS).generate_otp(step)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step, within one step of `now` either way, whose code is `code`; the
    latest if several are; None if none is. Compared in constant time."""
    current = time_step(now)
    for step in range(current + TOTP_DRIFT_STEPS, current - TOTP_DRIFT_STEPS - 1, -1):
        if hmac.compare_digest(code_at(secret, step), code):
            return step
    return None


def otpauth_uri(secret: str, email: str, issuer: str) -> str:
    """The `otpauth://totp/...` URI an authenticator app reads (Google's Key Uri Format):
    the issuer and the email as the label, the secret and the issuer as parameters."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS).provisioning_uri(
        name=email, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """The URI as a QR code in SVG: no XML declaration, so it can go inside a page as
    it is, and the SVG namespace, so it also opens as a file of its own."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(
        out, kind="svg", xmldecl=False, svgns=True, nl=False, scale=4, border=4
    )
    return out.getvalue().decode("utf-8")


# ----------------------------------------------------------------------------- at rest

SEALED_PREFIX = "aesgcm:"
PLAIN_PREFIX = "plain:"
NONCE_BYTES = 12  # AES-GCM's standard nonce; random, so never reused under one key


class SecretBox:
    """Seals TOTP secrets for the database, and opens them again.

    With AUTHSVC_SECRET_KEY: AES-256-GCM (authenticated encryption) under a key derived
    from it with HKDF-SHA-256, the user's id as associated data, so a sealed secret moved
    to another user's row, or read with another key, opens nothing. Without a key
    (course mode only; the start-up warning says so) the secret is stored as it is.
    """

    def __init__(self, secret_key: str) -> None:
        """Derive the sealing key from `secret_key` ("" for none)."""
        self._aead = None
        if secret_key:
            key = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=b"authsvc two-factor secret v1",
            ).derive(secret_key.encode("utf-8"))
            self._aead = AESGCM(key)

    def seal(self, secret: str, user_id: int) -> str:
        """What the database keeps of `secret`, the TOTP secret of user `user_id`."""
        if self._aead is None:
            return PLAIN_PREFIX + secret
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode("ascii"), _bound_to(user_id))
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str, user_id: int) -> str | None:
        """The secret `seal` made `stored` from; None when this key cannot open it (a
        database copied without its key, another user's row), logged without the value."""
        if stored.startswith(PLAIN_PREFIX):
            return stored[len(PLAIN_PREFIX) :]
        if self._aead is not None and stored.startswith(SEALED_PREFIX):
            try:
                raw = base64.urlsafe_b64decode(stored[len(SEALED_PREFIX) :])
                nonce, sealed = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
                return self._aead.decrypt(nonce, sealed, _bound_to(user_id)).decode(
                    "ascii"
                )
            except (InvalidTag, ValueError, binascii.Error):
                pass
        logger.error(
            "the two-factor secret of user %d cannot be opened with this "
            "AUTHSVC_SECRET_KEY (a database copied without its key?)",
            user_id,
        )
        return None


def _bound_to(user_id: int) -> bytes:
    """The associated data of a sealed secret: whose it is."""
    return f"two_factor:{user_id}".encode("ascii")


# ----------------------------------------------------------------------------- recovery codes


def new_recovery_codes() -> list[str]:
    """RECOVERY_CODE_COUNT new codes, each 120 random bits as xxxx-xxxx-...-xxxx."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        letters = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES))
        text = letters.decode("ascii").lower()
        codes.append("-".join(text[i : i + 4] for i in range(0, len(text), 4)))
    return codes


def recovery_code_digest(code: str) -> str:
    """What the database keeps of a recovery code: the SHA-256 of its letters, in lower
    case without dashes or spaces (so the code may be typed either way)."""
    letters = RECOVERY_CODE_SEPARATORS.sub("", code).lower()
    return hashlib.sha256(letters.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- the logic


@dataclass(frozen=True)
class Enrolment:
    """What POST /account/two_factor hands back: the pending secret, three ways."""

    secret: str
    otpauth_uri: str
    qr_svg: str


class TwoFactor:
    """Two-factor for `Auth`: set-up, codes, recovery codes, half-finished logins.

    Every check that must happen once is one conditional statement in the store, so it
    holds on every worker and host: a time step is taken by an UPDATE that only succeeds
    when the step is later than the last one taken; a recovery code by a DELETE that
    only one request can make.
    """

    def __init__(
        self, store: Store, secret_key: str, issuer: str, clock: Callable[[], float]
    ) -> None:
        """Keep rows in `store`, seal secrets under `secret_key`; `issuer` names the
        service in the apps."""
        self._db = store
        self._box = SecretBox(secret_key)
        self._issuer = issuer
        self._clock = clock

    def status(self, user_id: int) -> tuple[bool, int]:
        """(two-factor on, recovery codes left) for GET /account and the login."""
        return self._db.two_factor_status(user_id)

    def is_on(self, user_id: int) -> bool:
        """True when the user has a confirmed TOTP secret."""
        row = self._db.two_factor_of(user_id)
        return row is not None and row.secret is not None

    def begin(self, user_id: int, email: str) -> Enrolment:
        """A new pending secret for the user (replacing any earlier pending one), good
        for PENDING_TTL. TwoFactorAlreadyOn when two-factor is on."""
        secret = new_secret()
        now = self._clock()
        if not self._db.put_pending_secret(
            user_id, self._box.seal(secret, user_id), now + PENDING_TTL
        ):
            raise TwoFactorAlreadyOn("two-factor is already on; turn it off first")
        uri = otpauth_uri(secret, email, self._issuer)
        return Enrolment(secret=secret, otpauth_uri=uri, qr_svg=qr_svg(uri))

    def confirm(self, user_id: int, code: str) -> list[str]:
        """Turn two-factor on with a code of the pending secret: the new recovery codes.

        The accepted code's step counts as used. TwoFactorAlreadyOn, NoPendingSetUp (none,
        or expired), WrongCode.
        """
        now = self._clock()
        row = self._db.two_factor_of(user_id)
        if row is not None and row.secret is not None:
            raise TwoFactorAlreadyOn("two-factor is already on; turn it off first")
        if row is None or row.pending_secret is None or row.pending_expires_at <= now:
            raise NoPendingSetUp("no two-factor set-up is waiting; start one first")
        secret = self._box.open(row.pending_secret, user_id)
        step = None if secret is None else matching_step(secret, code, now)
        if step is None:
            raise WrongCode("wrong two-factor code")
        codes = new_recovery_codes()
        digests = [recovery_code_digest(code) for code in codes]
        with self._db.transaction():
            if not self._db.enable_two_factor(user_id, row.pending_secret, step, now):
                raise NoPendingSetUp("no two-factor set-up is waiting; start one first")
            self._db.replace_recovery_codes(user_id, digests)
        return codes

    def use_code(self, user_id: int, code: str) -> str:
        """Use a code of the user's: "totp" or "recovery", whichever it was.

        Six digits are a TOTP code, taken only if its step is later than the last one
        taken (one conditional UPDATE); anything else is a recovery code, taken by
        deleting it. WrongCode when neither takes.
        """
        if TOTP_CODE_SHAPE.fullmatch(code):
            row = self._db.two_factor_of(user_id)
            secret = None
            if row is not None and row.secret is not None:
                secret = self._box.open(row.secret, user_id)
            step = (
                None if secret is None else matching_step(secret, code, self._clock())
            )
            if step is not None and self._db.take_time_step(user_id, step):
                return "totp"
        elif self._db.use_recovery_code(user_id, recovery_code_digest(code)):
            return "recovery"
        raise WrongCode("wrong two-factor code")

    def renew_recovery_codes(self, user_id: int) -> list[str]:
        """A new set of recovery codes; the earlier ones stop working. TwoFactorOff."""
        codes = new_recovery_codes()
        with self._db.transaction():
            if not self.is_on(user_id):
                raise TwoFactorOff("two-factor is not on")
            self._db.replace_recovery_codes(
                user_id, [recovery_code_digest(code) for code in codes]
            )
        return codes

    def turn_off(self, user_id: int) -> bool:
        """Forget the user's secret and recovery codes; False if two-factor was off."""
        return self._db.delete_two_factor(user_id)

    # -- the login's second step

    def new_mfa_token(self, user_id: int) -> str:
        """A token for the code to follow the right password: 122 random bits (a uuid4,
        as session ids), kept only as its SHA-256, for MFA_TOKEN_TTL."""
        token = str(uuid.uuid4())
        self._db.add_mfa_token(_sha256(token), user_id, self._clock() + MFA_TOKEN_TTL)
        return token

    def mfa_token_holder(self, token: str) -> int | None:
        """The id of the user whose live token this is, or None; nothing changes."""
        return self._db.mfa_token_holder(
            _sha256(token), self._clock(), MFA_TOKEN_MAX_TRIES
        )

    def spend_mfa_token(self, token: str) -> int:
        """Inside the login's transaction: take the token (single use) and return its
        user's id. InvalidMfaToken when it is unknown, used, expired or ended. The
        caller's transaction puts it back if the code then turns out wrong."""
        user_id = self._db.spend_mfa_token(
            _sha256(token), self._clock(), MFA_TOKEN_MAX_TRIES
        )
        if user_id is None:
            raise InvalidMfaToken("mfa_token is not valid; log in again")
        return user_id

    def count_wrong_code(self, token: str) -> None:
        """Count a wrong code against the token; the MFA_TOKEN_MAX_TRIES-th ends it."""
        self._db.count_wrong_mfa_code(_sha256(token), MFA_TOKEN_MAX_TRIES)


def _sha256(text: str) -> str:
    """SHA-256 in hex: what the database keeps of an mfa_token."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
