"""Scheme A signatures, the one the official SDK's `yotel.webhook.verify` accepts.

`X-Yotel-Signature: sha256=<hex>` where hex = HMAC-SHA256(secret, f"{timestamp}." + raw body), and
the timestamp travels in `X-Yotel-Timestamp`. During a rotation grace window the header carries one
token per secret, comma-separated; the SDK passes when any of them matches.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "X-Yotel-Signature"
TIMESTAMP_HEADER = "X-Yotel-Timestamp"
EVENT_HEADER = "X-Yotel-Event"
EVENT_ID_HEADER = "X-Yotel-Event-Id"
DELIVERY_HEADER = "X-Yotel-Delivery"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_header(secrets: Iterable[str], timestamp: int, body: bytes) -> str:
    return ",".join(sign(s, timestamp, body) for s in secrets)
