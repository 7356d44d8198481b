"""Second factors: TOTP codes (RFC 6238) and recovery codes; passkeys (WebAuthn).

What a factor is, how a code or a passkey is checked, how a secret is kept at rest. The
rows live in store.py (tables two_factor, recovery_codes, mfa_tokens, passkeys,
webauthn_challenges); `authsvc.Auth` decides when a factor is asked for. The libraries:
pyotp computes the codes (SHA-1, 6 digits, 30 s steps, as every authenticator app
expects), segno draws the QR code, `cryptography` seals the secret (AES-256-GCM under a
key derived with HKDF from AUTHSVC_SECRET_KEY), py_webauthn (`webauthn`) checks the
passkeys' ceremonies (WebAuthn Level 2/3: client data, authenticator data, signatures).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from store import PasskeyRow, Store

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


# =============================================================================================
# Passkeys (WebAuthn): discoverable credentials with user verification
# =============================================================================================

# A ceremony's challenge lives 5 minutes and is used once; the browser is told the same
# (the options' timeout, in milliseconds).
CHALLENGE_TTL = 5 * 60
CHALLENGE_BYTES = 32
MAX_PASSKEYS = 10
MAX_PASSKEY_NAME_CHARS = 64
# WebAuthn: a credential id is at most 1023 bytes.
MAX_CREDENTIAL_ID_BYTES = 1023
# Course mode's relying party: the browser's one secure context over http, on any port.
COURSE_RP_ID = "localhost"
LOCALHOST_ORIGIN = re.compile(r"https?://localhost(:[0-9]{1,5})?")
REGISTER, LOGIN = "register", "login"
# One answer for every login that does not verify (unknown credential, wrong origin,
# replayed challenge...): which check failed would help nobody but an attacker.
PASSKEY_LOGIN_REFUSED = "the passkey was not accepted"


class PasskeyRefused(Exception):
    """A ceremony that does not verify; its message is the one the client is shown."""


class TooManyPasskeys(Exception):
    """The user already has MAX_PASSKEYS passkeys."""


class UnknownPasskey(LookupError):
    """No passkey of this user has that id."""


@dataclass(frozen=True)
class Ceremony:
    """What an options route hands back: the challenge's id, to send with the answer,
    and the options for navigator.credentials (WebAuthn Level 3's JSON form)."""

    challenge_id: str
    options: dict[str, Any]


def user_handle(user_id: int) -> bytes:
    """The WebAuthn user handle of a user: their id, which is no personal data
    (WebAuthn asks that the handle hold none: no email)."""
    return str(user_id).encode("ascii")


class Passkeys:
    """Passkeys for `Auth`: registration, the passwordless login, the user's list.

    The server makes each challenge and keeps it (a row under its id's digest), bound to
    its ceremony and, for a registration, to the user; spending it is one DELETE, so a
    challenge is used once on any worker or host. The signature counter is stored and
    moved on by one conditional UPDATE.
    """

    def __init__(
        self,
        store: Store,
        rp_id: str,
        origins: tuple[str, ...],
        rp_name: str,
        clock: Callable[[], float],
    ) -> None:
        """Bind passkeys to `rp_id` (course mode: localhost), accept ceremonies from
        `origins` (course mode, when none: any localhost origin)."""
        self._db = store
        self.rp_id = rp_id or COURSE_RP_ID
        self._origins = origins
        self._rp_name = rp_name
        self._clock = clock

    def _new_challenge(self, purpose: str, user_id: int | None) -> tuple[str, bytes]:
        """A random challenge kept for CHALLENGE_TTL: (its id, the challenge)."""
        challenge_id = secrets.token_urlsafe(32)
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        self._db.add_challenge(
            _sha256(challenge_id),
            bytes_to_base64url(challenge),
            purpose,
            user_id,
            self._clock() + CHALLENGE_TTL,
        )
        return challenge_id, challenge

    def _spend_challenge(
        self, challenge_id: str, purpose: str, user_id: int | None
    ) -> bytes | None:
        """The live challenge of this id made for `purpose` (and user), taken; or None."""
        stored = self._db.spend_challenge(
            _sha256(challenge_id), purpose, user_id, self._clock()
        )
        return None if stored is None else base64url_to_bytes(stored)

    def _expected_origins(self, credential: Mapping[str, Any]) -> list[str]:
        """The origins a ceremony may come from: the configured ones; in course mode,
        without any, the origin the client data names when it is on localhost."""
        if self._origins:
            return list(self._origins)
        try:
            client_data = json.loads(
                base64url_to_bytes(credential["response"]["clientDataJSON"])
            )
            origin = client_data["origin"]
        except Exception:  # noqa: BLE001 - any malformed client data: no origin at all
            return []
        if isinstance(origin, str) and LOCALHOST_ORIGIN.fullmatch(origin):
            return [origin]
        return []

    # -- registration

    def registration_options(self, user_id: int, email: str) -> Ceremony:
        """Options to create a passkey for the user: a discoverable credential with user
        verification, attestation none, none of the user's registered ones again.
        TooManyPasskeys at the limit (before a challenge is made)."""
        existing = self._db.passkeys_of(user_id)
        if len(existing) >= MAX_PASSKEYS:
            raise TooManyPasskeys(f"at most {MAX_PASSKEYS} passkeys")
        challenge_id, challenge = self._new_challenge(REGISTER, user_id)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self._rp_name,
            user_name=email,
            user_id=user_handle(user_id),
            user_display_name=email,
            challenge=challenge,
            timeout=CHALLENGE_TTL * 1000,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                require_resident_key=True,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id))
                for p in existing
            ],
        )
        return Ceremony(challenge_id, json.loads(options_to_json(options)))

    def register(
        self,
        user_id: int,
        challenge_id: str,
        credential: Mapping[str, Any],
        name: str,
    ) -> PasskeyRow:
        """Verify a new credential against the user's registration challenge and keep
        it. PasskeyRefused (a challenge not live, not this user's, or a credential that
        does not verify, or is registered already); TooManyPasskeys."""
        challenge = self._spend_challenge(challenge_id, REGISTER, user_id)
        if challenge is None:
            raise PasskeyRefused("the challenge is not valid; ask for new options")
        try:
            verified = verify_registration_response(
                credential=dict(credential),
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self._expected_origins(credential),
                require_user_verification=True,
            )
        except Exception as error:  # noqa: BLE001 - see _refused
            raise _refused(error, "the passkey did not verify") from None
        if len(verified.credential_id) > MAX_CREDENTIAL_ID_BYTES:
            raise PasskeyRefused("the passkey did not verify")
        now = self._clock()
        passkey = PasskeyRow(
            id=0,
            public_id=secrets.token_hex(16),
            user_id=user_id,
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count,
            name=name,
            created_at=now,
            last_used_at=None,
        )
        added = self._db.add_passkey(passkey, MAX_PASSKEYS)
        if added == "limit":
            raise TooManyPasskeys(f"at most {MAX_PASSKEYS} passkeys")
        if added == "taken":
            raise PasskeyRefused("this passkey is already registered")
        return passkey

    # -- the passwordless login

    def login_options(self) -> Ceremony:
        """Options to log in with any passkey of this site: no allowCredentials (the
        authenticator offers the user's discoverable ones), user verification required."""
        challenge_id, challenge = self._new_challenge(LOGIN, None)
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=challenge,
            timeout=CHALLENGE_TTL * 1000,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        as_json = json.loads(options_to_json(options))
        as_json.pop("allowCredentials", None)  # none: any passkey of this site
        return Ceremony(challenge_id, as_json)

    def authenticate(self, challenge_id: str, credential: Mapping[str, Any]) -> int:
        """Verify a login assertion: the id of the passkey's user. The challenge is
        spent first (a replay finds none); the signature is checked with the stored
        public key, the user handle against the passkey's user, the counter against
        the stored one and moved on conditionally. PasskeyRefused, with one message."""
        challenge = self._spend_challenge(challenge_id, LOGIN, None)
        if challenge is None:
            raise PasskeyRefused(PASSKEY_LOGIN_REFUSED)
        passkey = self._passkey_of(credential)
        if passkey is None:
            raise PasskeyRefused(PASSKEY_LOGIN_REFUSED)
        try:
            verified = verify_authentication_response(
                credential=dict(credential),
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self._expected_origins(credential),
                credential_public_key=base64url_to_bytes(passkey.public_key),
                credential_current_sign_count=passkey.sign_count,
                require_user_verification=True,
            )
            handle = credential["response"].get("userHandle")
        except Exception as error:  # noqa: BLE001 - see _refused
            raise _refused(error, PASSKEY_LOGIN_REFUSED) from None
        if handle is not None and (
            not isinstance(handle, str)
            or _base64url_or_none(handle) != user_handle(passkey.user_id)
        ):
            raise PasskeyRefused(PASSKEY_LOGIN_REFUSED)
        if not self._db.use_passkey(
            passkey.id, passkey.sign_count, verified.new_sign_count, self._clock()
        ):
            raise PasskeyRefused(PASSKEY_LOGIN_REFUSED)
        return passkey.user_id

    def _passkey_of(self, credential: Mapping[str, Any]) -> PasskeyRow | None:
        """The registered passkey the assertion names (its rawId), or None."""
        raw_id = credential.get("rawId", credential.get("id"))
        if not isinstance(raw_id, str):
            return None
        raw = _base64url_or_none(raw_id)
        if raw is None or not 0 < len(raw) <= MAX_CREDENTIAL_ID_BYTES:
            return None
        return self._db.passkey_by_credential(bytes_to_base64url(raw))

    # -- the user's list

    def of(self, user_id: int) -> list[PasskeyRow]:
        """The user's passkeys, oldest first."""
        return self._db.passkeys_of(user_id)

    def count(self, user_id: int) -> int:
        """How many passkeys the user has (GET /account)."""
        return self._db.count_passkeys(user_id)

    def rename(self, user_id: int, public_id: str, name: str) -> PasskeyRow:
        """Rename one of the user's passkeys. UnknownPasskey for any other id."""
        renamed = self._db.rename_passkey(user_id, public_id, name)
        if renamed is None:
            raise UnknownPasskey("no such passkey")
        return renamed

    def remove(self, user_id: int, public_id: str) -> None:
        """Remove one of the user's passkeys. UnknownPasskey for any other id."""
        if not self._db.delete_passkey(user_id, public_id):
            raise UnknownPasskey("no such passkey")

    def remove_all(self, user_id: int) -> int:
        """Remove every passkey of the user (the operator's two-factor-off --passkeys)."""
        return self._db.delete_passkeys_of(user_id)


def _refused(error: Exception, message: str) -> PasskeyRefused:
    """A ceremony py_webauthn did not accept, as PasskeyRefused with `message`.

    The library parses what the client sent (JSON, base64url, CBOR, COSE keys) and, on
    bytes it cannot parse, raises whatever its parser raises (its own exceptions, but
    also KeyError, ValueError, TypeError, CBOR errors...): each is a credential that
    does not verify, never a 500. Logged by class, never by text (the text can quote
    the client's bytes)."""
    logger.info("passkey ceremony refused: %s", type(error).__name__)
    return PasskeyRefused(message)


def _base64url_or_none(text: str) -> bytes | None:
    """The bytes of a base64url string (padding optional), or None if it is not one."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        return None
    try:
        return base64url_to_bytes(text)
    except (ValueError, binascii.Error):
        return None
