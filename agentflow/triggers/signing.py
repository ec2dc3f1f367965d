"""Standard Webhooks signatures (https://www.standardwebhooks.com): who sent a delivery, and when.

A sender signs `"{webhook-id}.{webhook-timestamp}.{body}"` with HMAC-SHA256 under the secret
(`whsec_` + base64 key) and sends `webhook-signature: v1,<base64>` — several, space-separated,
while a secret is being rotated. A delivery is authentic when one signature matches one of the
trigger's valid secrets and its timestamp is within TOLERANCE_SECONDS of now (older ones are
replays; the delivery id then makes a retried one a no-op). Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping

TOLERANCE_SECONDS = 5 * 60
SECRET_PREFIX = "whsec_"
MAX_ID_CHARS = 200


class SignatureError(Exception):
    """Why a delivery is not authentic (said to the sender: nothing in it helps forge one)."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret; any other string is used as it is (an operator's own secret)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header a sender computes (our tests use the `standardwebhooks` library too)."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(headers: Mapping[str, str], body: bytes, secrets: Iterable[str], *, now: float) -> str:
    """The delivery id of an authentic delivery; SignatureError otherwise."""
    delivery_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (delivery_id and stamp and signatures):
        raise SignatureError("unsigned: webhook-id, webhook-timestamp and webhook-signature are required")
    if len(delivery_id) > MAX_ID_CHARS:
        raise SignatureError(f"webhook-id is longer than {MAX_ID_CHARS} characters")
    if not (stamp.isascii() and stamp.isdigit()):
        raise SignatureError("webhook-timestamp must be unix seconds")
    if abs(now - int(stamp)) > TOLERANCE_SECONDS:
        raise SignatureError(
            f"webhook-timestamp is more than {TOLERANCE_SECONDS} s from now: a replay, or a wrong clock"
        )
    offered = [part.partition(",")[2] for part in signatures.split() if part.startswith("v1,")]
    if not offered:
        raise SignatureError("no v1 signature in webhook-signature")
    for secret in secrets:
        expected = sign(secret, delivery_id, int(stamp), body).partition(",")[2]
        if any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in offered):
            return delivery_id
    raise SignatureError("the signature does not match: wrong secret, or the body was changed")
