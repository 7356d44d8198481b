"""A software authenticator: the tests' passkey, built by hand from the WebAuthn spec.

It does what a phone or a security key does in a ceremony, in the open: a P-256 key pair
per credential, the authenticator data (RP id hash, flags, signature counter, the
attested credential with its COSE key), attestation "none", the client data a browser
would write (type, challenge, origin), and the ES256 signature over authenticator data
and the client data's hash. Every field can be bent (another origin, another RP id, a
counter that goes back) so a test can show the service refusing each.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# Authenticator data flags (WebAuthn section 6.1).
USER_PRESENT = 0x01
USER_VERIFIED = 0x04
ATTESTED_CREDENTIAL = 0x40


def b64url(data: bytes) -> str:
    """base64url without padding, as WebAuthn's JSON forms write bytes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """The bytes of a base64url string without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftPasskey:
    """One discoverable credential, as an authenticator holds it."""

    rp_id: str = "localhost"
    origin: str = "http://localhost"
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    counter: int = 0
    user_handle: bytes = b""

    @property
    def id(self) -> str:
        """The credential id as the JSON forms carry it."""
        return b64url(self.credential_id)

    def cose_public_key(self) -> bytes:
        """The public key as a COSE_Key (RFC 9053): EC2, ES256, P-256, x and y."""
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def client_data(
        self, kind: str, challenge: str, origin: str | None = None
    ) -> bytes:
        """clientDataJSON as a browser writes it for `kind` (webauthn.create/get)."""
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()

    def authenticator_data(
        self, flags: int, rp_id: str | None = None, attested: bool = False
    ) -> bytes:
        """RP id hash, flags, counter, and (for a registration) the credential."""
        data = hashlib.sha256((rp_id or self.rp_id).encode()).digest()
        data += bytes([flags | (ATTESTED_CREDENTIAL if attested else 0)])
        data += struct.pack(">I", self.counter)
        if attested:
            data += bytes(16)  # AAGUID: none, as attestation "none" says
            data += struct.pack(">H", len(self.credential_id)) + self.credential_id
            data += self.cose_public_key()
        return data

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int = USER_PRESENT | USER_VERIFIED,
    ) -> dict[str, Any]:
        """navigator.credentials.create() answering these creation options: the
        RegistrationResponseJSON a browser's toJSON() gives."""
        self.user_handle = unb64url(options["user"]["id"])
        client_data = self.client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor2.dumps(
            {
                "fmt": "none",
                "attStmt": {},
                "authData": self.authenticator_data(flags, rp_id, attested=True),
            }
        )
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int = USER_PRESENT | USER_VERIFIED,
        counter: int | None = None,
        user_handle: bytes | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.get() answering these request options: the
        AuthenticationResponseJSON, signed. The counter goes up by one (or is set)."""
        self.counter = self.counter + 1 if counter is None else counter
        client_data = self.client_data("webauthn.get", options["challenge"], origin)
        auth_data = self.authenticator_data(flags, rp_id)
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        handle = self.user_handle if user_handle is None else user_handle
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    # -- kept in a file, for the walk-through (docs/passkeys.md)

    def save(self, path: str) -> None:
        """Write the credential (its private key too: a test key, nothing else) to a
        JSON file, so a later command can sign with it."""
        from cryptography.hazmat.primitives import serialization

        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        state = {
            "rp_id": self.rp_id,
            "origin": self.origin,
            "credential_id": self.id,
            "counter": self.counter,
            "user_handle": b64url(self.user_handle),
            "private_key": pem,
        }
        with open(path, "w", encoding="utf-8") as out:
            json.dump(state, out, indent=2)

    @classmethod
    def load(cls, path: str) -> SoftPasskey:
        """The credential `save` wrote."""
        from cryptography.hazmat.primitives import serialization

        with open(path, encoding="utf-8") as source:
            state = json.load(source)
        key = serialization.load_pem_private_key(state["private_key"].encode(), None)
        return cls(
            rp_id=state["rp_id"],
            origin=state["origin"],
            credential_id=unb64url(state["credential_id"]),
            key=key,
            counter=state["counter"],
            user_handle=unb64url(state["user_handle"]),
        )


def main(argv: list[str]) -> int:
    """`python tests/softauthn.py create|get KEYFILE [ORIGIN]`: read an options route's
    answer on stdin, print the JSON body of the route that finishes the ceremony (what
    a browser would post after the authenticator signed); KEYFILE keeps the key."""
    import sys

    if len(argv) not in (2, 3) or argv[0] not in ("create", "get"):
        print(main.__doc__, file=sys.stderr)
        return 2
    command, path = argv[0], argv[1]
    ceremony = json.load(sys.stdin)
    if command == "create":
        key = SoftPasskey(origin=argv[2] if len(argv) == 3 else "http://localhost:5000")
        credential = key.create(ceremony["options"])
    else:
        key = SoftPasskey.load(path)
        credential = key.get(ceremony["options"])
    key.save(path)
    print(
        json.dumps({"challenge_id": ceremony["challenge_id"], "credential": credential})
    )
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
