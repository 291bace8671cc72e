"""Webhook subscriptions: which URL of which tenant wants which events, and the secret that signs them.

A subscription is one Redis hash (keys.webhook). The signing secret has to be kept in clear because
every delivery is signed with it; it leaves the bridge only in the create and rotate responses.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from ulid import ULID

from bridge.store import keys
from bridge.store.redis import RedisClient, multi
from bridge.webhooks.outbox import EVENT_TYPES

SUBSCRIPTION_PREFIX = "wh_sub_"
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
# "call.*", "ai_session.*", ... are accepted for every family the catalogue has.
EVENT_FAMILIES = tuple(dict.fromkeys(t.split(".", 1)[0] for t in EVENT_TYPES))
LOOPBACK_NAMES = ("localhost",)


class WebhookInputError(ValueError):
    """A subscription request the bridge refuses; the API turns it into a 400 with `code`."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def iso(ts: float) -> str:
    """`2026-05-01T14:37:08.102Z` (UTC, milliseconds, truncated)."""
    ms = round(ts * 1_000_000) // 1000  # as datetime does: to the microsecond, then truncated
    # time.strftime, not datetime.isoformat: three of these per webhook attempt showed in profiles.
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ms // 1000))}.{ms % 1000:03d}Z"


def new_version() -> str:
    # A fresh token, not a counter: a FLUSHDB (or a restored backup) cannot bring back a value a
    # sender still holds with other subscriptions behind it.
    return str(ULID())


def new_secret() -> str:
    return f"{SECRET_PREFIX}{secrets.token_urlsafe(32)}"


def normalize_event_types(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Known types and wildcards (`*`, `family.*`), duplicates dropped, order kept."""
    if not values:
        raise WebhookInputError("invalid_event_types", "event_types must name at least one event type")
    unknown = [v for v in values if not _is_known_pattern(v)]
    if unknown:
        raise WebhookInputError(
            "unknown_event_type",
            f"unknown event type(s): {', '.join(map(str, unknown))}",
            unknown=unknown,
        )
    return tuple(dict.fromkeys(values))


def _is_known_pattern(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value == "*" or value in EVENT_TYPES:
        return True
    return value.endswith(".*") and value[:-2] in EVENT_FAMILIES


def pattern_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: object, *, allow_loopback_http: bool, field: str = "url") -> str:
    """https only; plain http only to this machine, and only when the operator allowed it."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookInputError("invalid_url", f"{field} must be a non-empty URL")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise WebhookInputError("invalid_url", f"{field} is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise WebhookInputError("invalid_url", f"{field} is not a valid URL: {exc}") from exc
    if not host:
        raise WebhookInputError("invalid_url", f"{field} has no host")
    scheme = parts.scheme.lower()
    if scheme == "https":
        return url
    if scheme == "http":
        if allow_loopback_http and is_loopback_host(host):
            return url
        hint = (
            " (plain http is accepted only for 127.0.0.0/8, ::1 and localhost)" if allow_loopback_http else ""
        )
        raise WebhookInputError("insecure_url", f"{field} must use https{hint}")
    raise WebhookInputError("invalid_url", f"{field} must be an https URL")


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    tenant_id: str
    url: str
    test_url: str | None
    event_types: tuple[str, ...]
    is_active: bool
    created_at: str
    secret: str
    previous_secret: str | None = None
    previous_secret_expires_at: float | None = None
    consecutive_failures: int = 0

    def matches(self, event_type: str) -> bool:
        return any(pattern_matches(p, event_type) for p in self.event_types)

    def signing_secrets(self, now: float | None = None) -> list[str]:
        """The secrets a delivery is signed with: the previous one first while its grace lasts."""
        now = time.time() if now is None else now
        out: list[str] = []
        if (
            self.previous_secret
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        ):
            out.append(self.previous_secret)
        out.append(self.secret)
        return out

    def target_url(self, livemode: bool) -> str:
        # Yotel sends test-mode events to test_url when one is set, else to url.
        if not livemode and self.test_url:
            return self.test_url
        return self.url

    def public(self) -> dict[str, Any]:
        expires = self.previous_secret_expires_at
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "url": self.url,
            "test_url": self.test_url,
            "event_types": list(self.event_types),
            "is_active": self.is_active,
            "created_at": self.created_at,
            "consecutive_failures": self.consecutive_failures,
            "previous_secret_expires_at": (
                iso(expires) if expires is not None and expires > time.time() else None
            ),
        }

    def to_hash(self) -> dict[str, str]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "url": self.url,
            "test_url": self.test_url or "",
            "event_types": json.dumps(list(self.event_types)),
            "is_active": "1" if self.is_active else "0",
            "created_at": self.created_at,
            "secret": self.secret,
            "previous_secret": self.previous_secret or "",
            "previous_secret_expires_at": (
                "" if self.previous_secret_expires_at is None else str(self.previous_secret_expires_at)
            ),
            "consecutive_failures": str(self.consecutive_failures),
        }

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Subscription:
        expires = raw.get("previous_secret_expires_at") or ""
        return cls(
            id=raw["id"],
            tenant_id=raw["tenant_id"],
            url=raw["url"],
            test_url=raw.get("test_url") or None,
            event_types=tuple(json.loads(raw.get("event_types") or "[]")),
            is_active=raw.get("is_active", "1") == "1",
            created_at=raw.get("created_at", ""),
            secret=raw["secret"],
            previous_secret=raw.get("previous_secret") or None,
            previous_secret_expires_at=float(expires) if expires else None,
            consecutive_failures=int(raw.get("consecutive_failures") or 0),
        )


# HSET only on a subscription that still exists: a PATCH racing a DELETE must not resurrect
# a half-filled hash.
# KEYS[2] is the version token (keys.webhooks_version), ARGV[1] its new value.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""

# The current secret becomes the previous one; read and write in one step so two concurrent
# rotations cannot both demote the same secret and lose the one in between.
_ROTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], 'secret')
redis.call('HSET', KEYS[1], 'previous_secret', current, 'previous_secret_expires_at', ARGV[2],
           'secret', ARGV[1])
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""


class WebhookStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._update = redis.register_script(_UPDATE)
        self._rotate = redis.register_script(_ROTATE)

    async def create(
        self,
        tenant_id: str,
        *,
        url: str,
        event_types: tuple[str, ...],
        test_url: str | None = None,
        is_active: bool = True,
    ) -> Subscription:
        """The new subscription; its `secret` is what the caller shows the user, once."""
        sub = Subscription(
            id=f"{SUBSCRIPTION_PREFIX}{ULID()}",
            tenant_id=tenant_id,
            url=url,
            test_url=test_url,
            event_types=event_types,
            is_active=is_active,
            created_at=iso(time.time()),
            secret=new_secret(),
        )
        pipe = multi(self.redis)  # {webhooks} and the tenant's slot: a listing skips a missing hash
        pipe.hset(keys.webhook(sub.id), mapping=sub.to_hash())
        pipe.sadd(keys.tenant_webhooks(tenant_id), sub.id)
        await pipe.execute()
        # After both writes, not in their pipeline: on a cluster the set may live on another node,
        # and a sender must not see the new token before the set has the new id.
        await self._changed()
        return sub

    async def _changed(self) -> None:
        await self.redis.set(keys.webhooks_version(), new_version())

    async def version(self) -> str | None:
        """The token every subscription change replaces (SubscriptionCache)."""
        return await self.redis.get(keys.webhooks_version())

    async def get_many(self, sub_ids: list[str]) -> list[Subscription | None]:
        """Each id's subscription (None when missing), in one round trip."""
        if not sub_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for sub_id in sub_ids:
            pipe.hgetall(keys.webhook(sub_id))
        rows = await pipe.execute()
        return [Subscription.from_hash(raw) if raw and "secret" in raw else None for raw in rows]

    async def get(self, sub_id: str, tenant_id: str | None = None) -> Subscription | None:
        """None when missing, or when it belongs to another tenant (callers answer 404 either way)."""
        if not sub_id.startswith(SUBSCRIPTION_PREFIX):
            return None
        raw = await self.redis.hgetall(keys.webhook(sub_id))
        if not raw or "secret" not in raw:
            return None
        sub = Subscription.from_hash(raw)
        if tenant_id is not None and sub.tenant_id != tenant_id:
            return None
        return sub

    async def list(self, tenant_id: str) -> list[Subscription]:
        ids = sorted(await self.redis.smembers(keys.tenant_webhooks(tenant_id)))
        subs = [sub for sub in await self.get_many(ids) if sub is not None]
        return sorted(subs, key=lambda s: (s.created_at, s.id))

    async def update(self, sub: Subscription, **changes: Any) -> Subscription | None:
        updated = replace(sub, **changes)
        fields = {k: v for k, v in updated.to_hash().items() if k in changes}
        if not fields:
            return sub
        argv: list[str] = [new_version()]
        for k, v in fields.items():
            argv += [k, v]
        if not await self._update(keys=[keys.webhook(sub.id), keys.webhooks_version()], args=argv):
            return None
        return await self.get(sub.id)

    async def rotate_secret(self, sub: Subscription, grace_s: float) -> tuple[Subscription, str] | None:
        secret = new_secret()
        expires = time.time() + grace_s
        if not await self._rotate(
            keys=[keys.webhook(sub.id), keys.webhooks_version()], args=[secret, repr(expires), new_version()]
        ):
            return None
        rotated = await self.get(sub.id)
        if rotated is None:
            return None
        return rotated, secret

    async def delete(self, sub: Subscription) -> None:
        # Pending deliveries of a deleted subscription are dropped when they come due.
        pipe = multi(self.redis)
        pipe.delete(keys.webhook(sub.id), keys.webhook_deliveries(sub.id))
        pipe.srem(keys.tenant_webhooks(sub.tenant_id), sub.id)
        await pipe.execute()
        await self._changed()


_UNSEEN = object()
CACHE_MAX_TENANTS = 10_000


class SubscriptionCache:
    """Subscriptions as of one version token, for the webhook senders.

    A sender reads the token once per batch (one GET, or one more command in a pipeline it sends
    anyway) and asks Redis for subscriptions again only when the token moved. It reads the token
    before the subscriptions, so a change that lands in between is cached under the old token and
    replaced at the next batch: a delivery never goes out on a subscription older than the batch
    it was claimed in. consecutive_failures, which every attempt changes, does not move the token:
    the senders do not use it.
    """

    def __init__(self, store: WebhookStore) -> None:
        self.store = store
        self._version: object = _UNSEEN
        self._by_id: dict[str, Subscription | None] = {}
        self._by_tenant: dict[str, list[Subscription]] = {}

    def observe(self, version: str | None) -> None:
        if version != self._version or len(self._by_tenant) > CACHE_MAX_TENANTS:
            self._version = version
            self._by_id.clear()
            self._by_tenant.clear()

    async def refresh(self) -> None:
        self.observe(await self.store.version())

    async def get_many(self, sub_ids: list[str]) -> dict[str, Subscription | None]:
        missing = [i for i in dict.fromkeys(sub_ids) if i not in self._by_id]
        for sub_id, sub in zip(missing, await self.store.get_many(missing), strict=True):
            self._by_id[sub_id] = sub
        return {i: self._by_id[i] for i in sub_ids}

    async def matching(self, tenant_id: str, event_type: str) -> list[Subscription]:
        subs = self._by_tenant.get(tenant_id)
        if subs is None:
            subs = self._by_tenant[tenant_id] = await self.store.list(tenant_id)
        return [s for s in subs if s.is_active and s.matches(event_type)]
